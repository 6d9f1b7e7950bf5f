import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import type { IncomingMessage } from "node:http";
import { ASYNC_MAX_BODY_BYTES, readBoundedBody, storedHeaders } from "./async-request";
import { MAX_PROTOCOL_BODY_BYTES } from "./node-protocol";
import { StratusError } from "./errors";

test("async: the largest body still fits the node protocol once base64-encoded (with room for the headers)", () => {
  assert.ok(Math.ceil(ASYNC_MAX_BODY_BYTES / 3) * 4 + 1024 * 1024 < MAX_PROTOCOL_BODY_BYTES);
});

test("async: stored headers drop credentials, hop-by-hop, the idempotency key and every x-stratus-*", () => {
  assert.deepEqual(storedHeaders({
    "content-type": "application/json", "x-custom": "1", accept: ["a", "b"] as unknown as string, authorization: "Bearer t", cookie: "c=1",
    host: "h", "content-length": "3", connection: "keep-alive", "transfer-encoding": "chunked", "idempotency-key": "k",
    "x-stratus-dispatch-token": "forged", "x-stratus-attempt": "9",
  }), { "content-type": "application/json", "x-custom": "1", accept: "a, b" });
});

function fakeRequest(headers: Record<string, string>, chunks: string[]): IncomingMessage {
  const s = new PassThrough();
  for (const c of chunks) s.write(c);
  s.end();
  return Object.assign(s, { headers }) as unknown as IncomingMessage;
}

test("async: the body is read up to the limit; a declared or streamed excess is PAYLOAD_TOO_LARGE", async () => {
  assert.equal((await readBoundedBody(fakeRequest({}, ["ab", "cd"]), 4)).toString(), "abcd");
  await assert.rejects(readBoundedBody(fakeRequest({ "content-length": "5" }, ["abcde"]), 4), (e) => e instanceof StratusError && e.code === "PAYLOAD_TOO_LARGE");
  await assert.rejects(readBoundedBody(fakeRequest({}, ["abc", "de"]), 4), (e) => e instanceof StratusError && e.code === "PAYLOAD_TOO_LARGE");
});
