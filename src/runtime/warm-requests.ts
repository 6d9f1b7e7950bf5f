// The warm-up's HTTP client (src/runtime/main.ts): the requests a pre-warm slot sends its own server before
// its message. A module of its own: main.ts creates no HTTP server, only the specialisation socket.
// Imported statically: code the boot loader compiles (vm.Script) has no dynamic-import callback of Node's.
import { request } from "node:http";

/**
 * Sends the warm-up's requests to `path` (a JSON POST and a plain GET, each on its own connection with the
 * headers the gateway sends, as a first request arrives), `requestId` as their request id; resolves once
 * both were answered (or failed).
 */
export async function warmRequests(path: string, requestId: string): Promise<void> {
  const headers = {
    host: "localhost", "x-stratus-request-id": requestId, "x-stratus-deadline-ms": "5000", "x-forwarded-for": "127.0.0.1",
    "x-forwarded-proto": "http", "x-forwarded-host": "localhost", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", connection: "close",
  };
  for (const [method, body] of [["POST", '{"warm":true}'], ["GET", undefined]] as const) {
    await new Promise<void>((resolve) => {
      const req = request({ socketPath: path, method, path: "/warm?x=1", headers: body === undefined ? headers : { ...headers, "content-type": "application/json" } }, (res) => {
        res.resume();
        res.on("end", resolve);
        res.on("error", () => resolve());
      });
      req.on("error", () => resolve());
      req.end(body);
    });
  }
}
