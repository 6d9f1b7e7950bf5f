// The Lambda function URL adapter: the event a request becomes, the response a result becomes (tables),
// and the adapter behind the real instance server (Express) on a TCP port 0.
import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import { pathToFileURL } from "node:url";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseFunctionConfig } from "../shared/function-config";
import { SDK_RUNTIME_SOURCE } from "../builder/sdk-source";
import { defineLambdaHandler, FUNCTION_BRAND } from "../sdk/index";
import { adaptLambdaHandler, fromLambdaResult, toFunctionUrlEvent, type FunctionUrlEvent } from "./lambda-adapter";
import { createFunctionServer, type FunctionServer } from "./function-server";

function fakeReq(method: string, url: string, rawHeaders: string[], extra: Record<string, unknown> = {}): IncomingMessage {
  const headers: Record<string, string> = {};
  for (let i = 0; i < rawHeaders.length; i += 2) headers[rawHeaders[i]!.toLowerCase()] = rawHeaders[i + 1]!;
  return { method, url, rawHeaders, headers, httpVersion: "1.1", ...extra } as unknown as IncomingMessage;
}

const NOW = new Date(Date.UTC(2022, 3, 29, 18, 28, 33, 211));

test("toFunctionUrlEvent: the payload format 2.0 fields of a function URL", () => {
  const req = fakeReq("POST", "/my/path?a=1&b=x%20y&a=2", [
    "Host", "fn.example.test:8080", "User-Agent", "curl/8", "Content-Type", "application/json", "Cookie", "s=1; t=2",
    "X-Forwarded-For", "10.0.0.1, 192.0.2.7", "Accept", "a/b", "accept", "c/d", "x-stratus-request-id", "rid-1",
  ]);
  const e = toFunctionUrlEvent(req, Buffer.from('{"x":1}'), "rid-1", NOW);
  assert.deepEqual(e, {
    version: "2.0",
    routeKey: "$default",
    rawPath: "/my/path",
    rawQueryString: "a=1&b=x%20y&a=2",
    cookies: ["s=1", "t=2"],
    headers: { host: "fn.example.test:8080", "user-agent": "curl/8", "content-type": "application/json", "x-forwarded-for": "10.0.0.1, 192.0.2.7", accept: "a/b,c/d" },
    queryStringParameters: { a: "1,2", b: "x y" },
    requestContext: {
      accountId: "anonymous",
      apiId: "fn",
      domainName: "fn.example.test",
      domainPrefix: "fn",
      http: { method: "POST", path: "/my/path", protocol: "HTTP/1.1", sourceIp: "192.0.2.7", userAgent: "curl/8" },
      requestId: "rid-1",
      routeKey: "$default",
      stage: "$default",
      time: "29/Apr/2022:18:28:33 +0000",
      timeEpoch: NOW.getTime(),
    },
    body: '{"x":1}',
    isBase64Encoded: false,
  } satisfies FunctionUrlEvent);
});

test("toFunctionUrlEvent: absent keys stay absent; binary bodies are base64; req.ip wins over the header", () => {
  const bare = toFunctionUrlEvent(fakeReq("GET", "/", ["Host", "h"], { ip: "203.0.113.9" }), Buffer.alloc(0), "r", NOW);
  assert.equal("cookies" in bare, false);
  assert.equal("queryStringParameters" in bare, false);
  assert.equal("body" in bare, false);
  assert.equal(bare.isBase64Encoded, false);
  assert.equal(bare.requestContext.http.sourceIp, "203.0.113.9");
  const table: Array<[string | undefined, boolean]> = [
    ["text/plain; charset=utf-8", false], ["application/xml", false], ["application/vnd.api+json", false],
    ["application/x-www-form-urlencoded", false], ["application/octet-stream", true], ["image/png", true], [undefined, true],
  ];
  for (const [type, base64] of table) {
    const raw = type === undefined ? ["Host", "h"] : ["Host", "h", "Content-Type", type];
    const e = toFunctionUrlEvent(fakeReq("POST", "/", raw), Buffer.from([0x68, 0x69]), "r", NOW);
    assert.equal(e.isBase64Encoded, base64, String(type));
    assert.equal(e.body, base64 ? "aGk=" : "hi", String(type));
  }
});

test("fromLambdaResult: the response a function URL sends for each result form", () => {
  const rows: Array<[unknown, number, Record<string, string | string[]>, string]> = [
    [{ statusCode: 200, body: "Hello World" }, 200, { "content-type": "application/json" }, "Hello World"],
    [{ statusCode: "404", headers: { "Content-Type": "text/plain", "X-N": 3 }, body: "no" }, 404, { "content-type": "text/plain", "x-n": "3" }, "no"],
    [{ statusCode: 201, cookies: ["a=1", "b=2; Path=/"], body: "" }, 201, { "content-type": "application/json", "set-cookie": ["a=1", "b=2; Path=/"] }, ""],
    [{ statusCode: 200, headers: { "content-type": "image/gif" }, body: "R0lGOA==", isBase64Encoded: true }, 200, { "content-type": "image/gif" }, "GIF8"],
    [{ message: "hi" }, 200, { "content-type": "application/json" }, '{"message":"hi"}'],
    ["plain", 200, { "content-type": "application/json" }, "plain"],
    [42, 200, { "content-type": "application/json" }, "42"],
    [undefined, 200, { "content-type": "application/json" }, ""],
  ];
  for (const [result, status, headers, body] of rows) {
    const r = fromLambdaResult(result);
    assert.equal(r.status, status, JSON.stringify(result));
    assert.deepEqual(r.headers, headers, JSON.stringify(result));
    assert.equal(r.body.toString("latin1"), body, JSON.stringify(result));
  }
  assert.throws(() => fromLambdaResult({ statusCode: 99 }), { code: "FUNCTION_ERROR" });
  assert.throws(() => fromLambdaResult({ statusCode: 200, body: { x: 1 } }), { code: "FUNCTION_ERROR", message: /body must be a string/ });
});

test("adaptLambdaHandler: callback-style handlers, context.succeed/fail, a thrown error", async () => {
  const res = () => {
    const out = { status: 0, headers: {} as Record<string, unknown>, body: "" };
    return {
      out,
      headersSent: false,
      getHeader: () => "rid",
      setHeader: (k: string, v: unknown) => void (out.headers[k] = v),
      set statusCode(s: number) { out.status = s; },
      end: (b?: Buffer) => void (out.body = b ? b.toString() : ""),
    };
  };
  const req = () => Object.assign(fakeReq("GET", "/cb", ["Host", "h"]), { rawBody: Buffer.alloc(0), readable: false });
  const opts = { functionName: "f", memoryMb: 128, timeoutMs: 1000, maxBodyBytes: 10 };
  const cases: Array<[string, (e: FunctionUrlEvent, c: { succeed(v: unknown): void; fail(e: unknown): void }, cb: (err: unknown, v?: unknown) => void) => unknown, number | Error]> = [
    ["callback", (_e, _c, cb) => void setImmediate(() => cb(null, { statusCode: 202, body: "cb" })), 202],
    ["context.succeed", (_e, c) => void setImmediate(() => c.succeed({ statusCode: 203, body: "ok" })), 203],
    ["callback error", (_e, _c, cb) => void setImmediate(() => cb(new Error("bad"))), new Error("bad")],
    ["context.fail", (_e, c) => void c.fail(new Error("failed")), new Error("failed")],
    ["sync throw", () => { throw new Error("thrown"); }, new Error("thrown")],
  ];
  for (const [name, fn, want] of cases) {
    const r = res();
    const run = adaptLambdaHandler(fn, opts)(req(), r);
    if (want instanceof Error) await assert.rejects(run, { message: want.message }, name);
    else {
      await run;
      assert.equal(r.out.status, want, name);
    }
  }
});

test("defineLambdaHandler: src/sdk and the SDK served to bundles agree", async () => {
  const dir = mkdtempSync(join(tmpdir(), "st-sdk-"));
  try {
    const file = join(dir, "sdk.mjs");
    writeFileSync(file, SDK_RUNTIME_SOURCE);
    const served = (await import(pathToFileURL(file).href)) as { defineLambdaHandler: typeof defineLambdaHandler };
    const h = async () => ({ statusCode: 200 });
    for (const define of [served.defineLambdaHandler, defineLambdaHandler]) {
      const def = define(h, { memory: 128 });
      assert.deepEqual(def, { handler: h, config: { memory: 128, handlerType: "lambda" } });
      assert.equal((def as unknown as Record<symbol, unknown>)[FUNCTION_BRAND], true);
      assert.deepEqual(define(h).config, { handlerType: "lambda" });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("handlerType: express by default, lambda accepted, anything else refused", () => {
  assert.equal(parseFunctionConfig("f", {}).handlerType, "express");
  assert.equal(parseFunctionConfig("f", { handlerType: "lambda" }).handlerType, "lambda");
  assert.throws(() => parseFunctionConfig("f", { handlerType: "aws" }), { code: "INVALID_CONFIG", message: /handlerType/ });
});

// Behind the real instance server.
let fs: FunctionServer;
let base: string;
const seen: FunctionUrlEvent[] = [];
before(async () => {
  const config = parseFunctionConfig("lam", { handlerType: "lambda", timeout: 2000, maxBodyBytes: 1024 });
  const handler = adaptLambdaHandler(async (event: FunctionUrlEvent, context: { getRemainingTimeInMillis(): number; awsRequestId: string }) => {
    seen.push(event);
    if (event.rawPath === "/throw") throw new Error("boom");
    if (event.rawPath === "/callback") return undefined;
    return {
      statusCode: event.requestContext.http.method === "POST" ? 201 : 200,
      headers: { "content-type": "application/json", "x-remaining-ok": String(context.getRemainingTimeInMillis() > 0 && context.getRemainingTimeInMillis() <= 2000) },
      cookies: ["seen=1"],
      body: JSON.stringify({ path: event.rawPath, body: event.body ?? null, b64: event.isBase64Encoded, rid: context.awsRequestId }),
    };
  }, { functionName: "lam", memoryMb: config.memory, timeoutMs: config.timeout, maxBodyBytes: config.maxBodyBytes });
  fs = createFunctionServer({ functionName: "lam", handler, config, emit: () => {} });
  await new Promise<void>((r) => fs.server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(fs.server.address() as AddressInfo).port}`;
});
after(async () => {
  await fs?.drain();
});

test("adapter behind the instance server: GET, POST with a JSON body, binary body, errors", async () => {
  const get = await fetch(`${base}/a/b?x=1`, { headers: { cookie: "k=v", "x-stratus-request-id": "rid-get" } });
  assert.equal(get.status, 200);
  assert.equal(get.headers.get("x-remaining-ok"), "true");
  assert.deepEqual(get.headers.getSetCookie(), ["seen=1"]);
  assert.deepEqual(await get.json(), { path: "/a/b", body: null, b64: false, rid: "rid-get" });
  assert.deepEqual(seen.at(-1)!.cookies, ["k=v"]);
  assert.deepEqual(seen.at(-1)!.queryStringParameters, { x: "1" });

  const post = await fetch(`${base}/p`, { method: "POST", headers: { "content-type": "application/json" }, body: '{ "greetings":"foobar"}' });
  assert.equal(post.status, 201);
  assert.equal(((await post.json()) as { body: string }).body, '{ "greetings":"foobar"}', "the body reaches the handler byte for byte (needs req.rawBody, branch compat-runtime)");

  const bin = await fetch(`${base}/bin`, { method: "POST", headers: { "content-type": "application/octet-stream" }, body: new Uint8Array([0, 1, 2, 255]) });
  assert.deepEqual(await bin.json(), { path: "/bin", body: "AAEC/w==", b64: true, rid: bin.headers.get("x-stratus-request-id") });

  const thrown = await fetch(`${base}/throw`);
  assert.equal(thrown.status, 500);
  assert.equal(thrown.headers.get("x-stratus-error-source"), "function");
  await thrown.arrayBuffer();

  const empty = await fetch(`${base}/callback`);
  assert.equal(empty.status, 200);
  assert.equal(await empty.text(), "");
});
