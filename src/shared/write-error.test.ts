// The one error writer and the one request-id rule (src/shared/write-error.ts, request-id.ts), against a
// real HTTP server on port 0.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, request, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { StratusError } from "./errors";
import { HEADERS } from "./protocol";
import { isSaneRequestId, pickRequestId } from "./request-id";
import { renderError, writeError } from "./write-error";

/** Serves one request with `answer`, returns what the client got (or the client's error). */
async function roundTrip(answer: (res: ServerResponse) => void): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string } | Error> {
  const server = createServer((_req, res) => answer(res));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    return await new Promise((resolve) => {
      const req = request({ host: "127.0.0.1", port: (server.address() as AddressInfo).port, path: "/" }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on("error", resolve);
      });
      req.on("error", resolve);
      req.end();
    });
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
}

test("writeError: one head and body for every kind of error", async () => {
  const cases: Array<{ name: string; err: unknown; rid?: string; extra?: Record<string, string>; status: number; code: string; source: string; message?: string; headers?: Record<string, string> }> = [
    { name: "platform error with request id", err: new StratusError("FUNCTION_NOT_FOUND", 'Function "x" not found'), rid: "rid-1", status: 404, code: "FUNCTION_NOT_FOUND", source: "platform", message: 'Function "x" not found' },
    { name: "function error", err: new StratusError("FUNCTION_TIMEOUT"), rid: "rid-2", status: 504, code: "FUNCTION_TIMEOUT", source: "function" },
    { name: "the error's own headers", err: new StratusError("QUEUE_FULL", undefined, { headers: { "retry-after": "1" } }), rid: "rid-3", status: 429, code: "QUEUE_FULL", source: "platform", headers: { "retry-after": "1" } },
    { name: "extra headers win", err: new StratusError("SHUTTING_DOWN"), rid: "rid-4", extra: { connection: "close", [HEADERS.coldStart]: "false" }, status: 503, code: "SHUTTING_DOWN", source: "platform", headers: { connection: "close", [HEADERS.coldStart]: "false" } },
    { name: "unknown error: generic 500, no cause leaked", err: new Error("secret database password"), rid: "rid-5", status: 500, code: "INTERNAL", source: "platform", message: "Internal error" },
    { name: "no request id", err: new StratusError("NOT_READY"), status: 503, code: "NOT_READY", source: "platform" },
  ];
  for (const c of cases) {
    const got = await roundTrip((res) => {
      const sent = writeError(res, c.err, c.rid, c.extra);
      assert.equal(sent?.code, c.code, c.name);
    });
    assert.ok(!(got instanceof Error), `${c.name}: ${String(got)}`);
    assert.equal(got.status, c.status, c.name);
    assert.equal(got.headers["content-type"], "application/json; charset=utf-8", c.name);
    assert.equal(got.headers["content-length"], String(Buffer.byteLength(got.body)), c.name);
    assert.equal(got.headers[HEADERS.errorSource], c.source, c.name);
    assert.equal(got.headers[HEADERS.requestId], c.rid, c.name);
    for (const [k, v] of Object.entries(c.headers ?? {})) assert.equal(got.headers[k], v, `${c.name}: ${k}`);
    const body = JSON.parse(got.body) as { error: { code: string; message: string; requestId?: string } };
    assert.equal(body.error.code, c.code, c.name);
    assert.equal(body.error.requestId, c.rid, c.name);
    if (c.message !== undefined) assert.equal(body.error.message, c.message, c.name);
    assert.ok(!got.body.includes("secret"), c.name);
  }
});

test("writeError: after a head went out the response is destroyed, not given a second head", async () => {
  let sent: unknown = "unset";
  const got = await roundTrip((res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.write("partial");
    sent = writeError(res, new StratusError("FUNCTION_CRASHED"), "rid");
  });
  assert.equal(sent, null);
  assert.ok(got instanceof Error || got.body === "partial", "the client sees a cut response, never an error body");
  if (!(got instanceof Error)) assert.equal(got.status, 200);
});

test("renderError: the same head for a raw socket", () => {
  const r = renderError(new StratusError("HEADERS_TOO_LARGE"), "rid-raw", { connection: "close" });
  assert.equal(r.status, 431);
  assert.equal(r.code, "HEADERS_TOO_LARGE");
  assert.equal(r.headers[HEADERS.requestId], "rid-raw");
  assert.equal(r.headers.connection, "close");
  assert.equal(r.headers["content-length"], String(Buffer.byteLength(r.body)));
});

test("request ids: kept when [A-Za-z0-9._:-]{1,128}, else a fresh UUID", () => {
  const table: Array<[string, boolean]> = [
    ["abc-123_x.y:z", true], ["A".repeat(128), true], ["", false], ["a b", false], ["x".repeat(129), false],
    ["evil\nvalue", false], ["<script>", false], ["é", false], ["a;b", false],
  ];
  for (const [id, sane] of table) {
    assert.equal(isSaneRequestId(id), sane, JSON.stringify(id));
    const picked = pickRequestId({ [HEADERS.requestId]: id });
    if (sane) assert.equal(picked, id);
    else assert.match(picked, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, JSON.stringify(id));
  }
  assert.match(pickRequestId({}), /^[0-9a-f-]{36}$/, "none given: a fresh one");
  assert.match(pickRequestId({ [HEADERS.requestId]: ["a", "b"] as unknown as string }), /^[0-9a-f-]{36}$/, "a repeated header is not a request id");
});
