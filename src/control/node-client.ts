/**
 * The control plane's client of the internal node API (HTTP over a Unix socket or a loopback URL),
 * implementing NodeApi. Errors from the node keep their code; an unreachable node is UNAVAILABLE.
 */
import { Client } from "undici";
import { StratusError, isErrorCode } from "../shared/errors";
import type { FunctionDeployment, FunctionNodeStatus, NodeApi } from "./node-api";

/** Options: exactly one of `socketPath` (Unix socket) or `url` (e.g. http://127.0.0.1:9001). */
export interface NodeClientOptions {
  readonly socketPath?: string;
  readonly url?: string;
  /** The node token (sent as a bearer token). */
  readonly token: string;
}

/** A NodeApi over HTTP, plus `close()` for its connection pool. */
export function createNodeClient(options: NodeClientOptions): NodeApi & { close(): Promise<void> } {
  const client = options.socketPath !== undefined
    ? new Client("http://node", { socketPath: options.socketPath })
    : new Client(options.url ?? "http://127.0.0.1");

  async function call<T>(method: "GET" | "PUT" | "POST" | "DELETE", path: string, body?: unknown): Promise<T> {
    let res;
    try {
      res = await client.request({
        method,
        path,
        headers: { authorization: `Bearer ${options.token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (cause) {
      throw new StratusError("UNAVAILABLE", "The node agent could not be reached", { cause });
    }
    const text = await res.body.text();
    if (res.statusCode >= 400) {
      let parsed: { error?: { code?: unknown; message?: unknown; details?: unknown } } = {};
      try {
        parsed = JSON.parse(text);
      } catch {
        // fall through: a non-JSON error is reported as INTERNAL below
      }
      const code = isErrorCode(parsed.error?.code) ? parsed.error!.code : "INTERNAL";
      const message = typeof parsed.error?.message === "string" ? parsed.error.message : `node answered ${res.statusCode}`;
      throw new StratusError(code, message, parsed.error?.details === undefined ? {} : { details: parsed.error.details });
    }
    return (text === "" ? undefined : JSON.parse(text)) as T;
  }

  const fn = (name: string) => `/internal/v1/functions/${encodeURIComponent(name)}`;
  return {
    setFunction: (d: FunctionDeployment) => call<void>("PUT", fn(d.name), d),
    removeFunction: (name: string) => call<void>("DELETE", fn(name)),
    prepare: (d: FunctionDeployment) => call<{ image?: string; log: string[] }>("POST", "/internal/v1/prepare", d),
    verify: (d: FunctionDeployment) => call<{ startMs: number }>("POST", "/internal/v1/verify", d),
    status: (name: string) => call<FunctionNodeStatus>("GET", `${fn(name)}/status`),
    close: () => client.close(),
  };
}
