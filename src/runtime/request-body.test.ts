// bufferBody / exposeBody against a real http server on port 0 (the interception depends on Node's parser).
import { test } from "node:test";
import assert from "node:assert/strict";
import http, { type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { bufferBody, EMPTY_BODY, exposeBody, exposeNoBody, isBodyError } from "./request-body";

/** Serves one request with `onRequest`, sends `body`, resolves with the response text. */
async function exchange(onRequest: (req: IncomingMessage, reply: (text: string) => void) => void, body: string | string[], headers: Record<string, string> = {}): Promise<string> {
  const server = http.createServer((req, res) => onRequest(req, (text) => res.end(text)));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const { port } = server.address() as AddressInfo;
    return await new Promise<string>((resolve, reject) => {
      const parts = Array.isArray(body) ? body : [body];
      const req = http.request({ port, host: "127.0.0.1", method: "POST", headers: Array.isArray(body) ? headers : { ...headers, "content-length": String(Buffer.byteLength(body)) } }, (res) => {
        let t = "";
        res.setEncoding("utf8").on("data", (c: string) => (t += c)).on("end", () => resolve(t));
      });
      req.on("error", reject);
      // Pieces of a chunked body, a tick apart.
      const send = (i: number) => (i < parts.length ? req.write(parts[i], () => setTimeout(() => send(i + 1), 5)) : req.end());
      send(0);
    });
  } finally {
    server.close();
  }
}

const readAll = async (req: IncomingMessage) => {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
};

test("bufferBody: the bytes, and the stream still holds them unread (sized and chunked bodies)", async () => {
  for (const body of ["hello", ["chunk-1 ", "chunk-2 ", "chunk-3"]]) {
    const out = await exchange((req, reply) => {
      bufferBody(req, 1000, (raw) => {
        void readAll(req).then((streamed) => reply(`${raw!.toString()}|${streamed}`));
      });
    }, body);
    const text = Array.isArray(body) ? body.join("") : body;
    assert.equal(out, `${text}|${text}`);
  }
});

test("bufferBody: called after the body reached the stream, it still gets the bytes (the stream is consumed)", async () => {
  const out = await exchange((req, reply) => {
    setTimeout(() => bufferBody(req, 1000, (raw) => reply(`${raw!.toString()}|${req.readableEnded}`)), 30);
  }, "late body");
  assert.equal(out, "late body|true");
});

test("bufferBody: past the limit, declared or sent, done gets null once the message is complete", async () => {
  const declared = await exchange((req, reply) => bufferBody(req, 4, (raw) => reply(String(raw))), "12345");
  assert.equal(declared, "null");
  const chunked = await exchange((req, reply) => bufferBody(req, 4, (raw) => reply(String(raw))), ["123", "45"]);
  assert.equal(chunked, "null");
  const exact = await exchange((req, reply) => bufferBody(req, 4, (raw) => reply(String(raw))), ["12", "34"]);
  assert.equal(exact, "1234");
});

test("exposeBody: rawBody, req.body parsed once on first read, assignable; a body that does not parse throws a body error", () => {
  const req = { headers: { "content-type": "application/json" } } as unknown as IncomingMessage & { body: unknown; rawBody: Buffer };
  exposeBody(req, Buffer.from('{"a":1}'), 100);
  assert.equal(req.rawBody.toString(), '{"a":1}');
  const first = req.body;
  assert.deepEqual(first, { a: 1 });
  assert.equal(req.body, first, "parsed once");
  req.body = "replaced";
  assert.equal(req.body, "replaced");
  const bad = { headers: { "content-type": "application/json" } } as unknown as IncomingMessage & { body: unknown };
  exposeBody(bad, Buffer.from("{x"), 100);
  let thrown: unknown;
  try {
    void bad.body;
  } catch (err) {
    thrown = err;
  }
  assert.ok(isBodyError(thrown));
  assert.equal((thrown as { code: string }).code, "INVALID_ARGUMENT");
  assert.ok(!isBodyError(new Error("other")));
  const none = {} as IncomingMessage & { body: unknown; rawBody: Buffer };
  exposeNoBody(none);
  assert.deepEqual(none.body, {});
  assert.equal(none.rawBody, EMPTY_BODY);
});
