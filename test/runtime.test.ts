// Integration: the real dist/runtime.cjs on a Unix socket in a temp dir (run `npm run build` first).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { DISCOVERY_PREFIX, ENV, EXIT, HEADERS } from "../src/shared/protocol";
import { LOG_LINE_MAX_BYTES } from "../src/runtime/output-capture";
import { runtimePath, startRuntime, type RuntimeProcess } from "./helpers/runtime-process";

const FIXTURE = `
let n = 0;
module.exports.hello = { func: async (req, res) => res.send("Hello"), config: { timeout: 10_000 } };
module.exports.state = { handler: async () => ({ n: ++n }) };
module.exports.echo = async (req) => ({
  path: req.path, query: req.query, body: Buffer.isBuffer(req.body) ? "buffer:" + req.body.length : req.body,
  stratusEnv: Object.keys(process.env).filter((k) => k.startsWith("STRATUS_")), fnEnv: process.env.GREETING,
});
module.exports.str = async () => "text";
module.exports.buf = async () => Buffer.from([1, 2, 3]);
module.exports.nothing = async () => {};
module.exports.resolvesFirst = async (req, res) => { await null; setTimeout(() => res.status(202).send("answered after the promise"), 30); };
module.exports.sendsThenResolvesValue = async (req, res) => { res.send("sent"); return "ignored"; };
module.exports.callback = (req, res) => { setTimeout(() => res.status(201).set("x-custom", "yes").json({ later: true }), 5); };
module.exports.slow = async (req) => { console.log("started"); await new Promise((r) => setTimeout(r, Number(req.query.ms))); return "slept"; };
module.exports.throws = async () => { throw new Error("boom secret"); };
module.exports.crash = async () => { setTimeout(() => { throw new Error("crash!"); }, 5); await new Promise(() => {}); };
module.exports.logs = async (req) => {
  console.log("hello from", req.query.tag);
  console.error("an error line");
  process.stdout.write("raw1\\nraw2\\n");
  console.log("x".repeat(${LOG_LINE_MAX_BYTES} + 100));
  return "ok";
};
module.exports.tagged = (req, res) => res.set("etag", '"v1"').send("cached");
module.exports.helperValue = 42;
// What Express's app.handle and router give a request (the runtime's fast path must give the same).
module.exports.expressSurface = (req, res) => res.json({
  baseUrl: req.baseUrl, originalUrl: req.originalUrl, url: req.url, params: req.params, next: typeof req.next,
  locals: Object.getPrototypeOf(res.locals) === null, reqRes: req.res === res, resReq: res.req === req,
  app: typeof req.app?.get, incoming: req instanceof require("node:http").IncomingMessage,
  response: res instanceof require("node:http").ServerResponse, query: req.query, path: req.path, hostname: req.hostname,
  json: typeof res.json, sendFile: typeof res.sendFile, accepts: req.accepts(["text/plain", "application/json"]),
});
// next() in its forms: not-found (none, "route"), the error handler (an error), Express's final handler ("router").
module.exports.nexts = (req, res, next) => {
  const to = req.query.to;
  if (to === "error") return next(new Error("passed to next"));
  if (to === "route" || to === "router") return next(to);
  if (to === "later") return void setTimeout(() => next(), 5);
  return next();
};
// Disconnects: what the handler of the last request saw (req events, req.signal), reported by ?report=1.
let seen = null;
module.exports.abortable = async (req, res) => {
  if (req.query.report) return seen;
  const mine = { aborted: false, closed: false, signalAborted: false, reason: null, signalType: typeof req.signal, early: req.signal.aborted };
  seen = mine;
  req.on("aborted", () => (mine.aborted = true));
  req.on("close", () => (mine.closed = true));
  console.log("started");
  await new Promise((resolve) => req.signal.addEventListener("abort", resolve, { once: true }));
  mine.signalAborted = true;
  mine.reason = req.signal.reason.name;
  console.log("aborted: " + mine.reason);
  // Answering after the disconnect is harmless: it ends the request.
  if (!req.query.silent) res.end("too late");
};
module.exports.ignoresAbort = async (req, res) => {
  console.log("started");
  await new Promise((r) => setTimeout(r, Number(req.query.ms)));
  res.send("done");
};
module.exports.syncIgnoresAbort = (req, res) => {
  console.log("started");
  setTimeout(() => res.send("done"), Number(req.query.ms));
};
`;

let dir: string;
let entry: string;
const running: RuntimeProcess[] = [];

before(() => {
  runtimePath();
  dir = mkdtempSync(join(tmpdir(), "stratus-rt-"));
  entry = join(dir, "index.cjs");
  writeFileSync(entry, FIXTURE);
});
after(async () => {
  await Promise.all(running.map((r) => r.stop()));
  rmSync(dir, { recursive: true, force: true });
});

async function start(exportName: string, extra: { config?: object; dev?: boolean; env?: Record<string, string> } = {}) {
  const r = await startRuntime({ dir, entry, exportName, ...extra });
  running.push(r);
  return r;
}

async function call(r: RuntimeProcess, path: string, init: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}) {
  const res = await r.client.request({ path, method: (init.method ?? "GET") as "GET", headers: init.headers, body: init.body });
  const buf = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, text: buf.toString(), buf, json: () => JSON.parse(buf.toString()) };
}

test("the original CJS form answers, echoes the request id and keeps module state across calls", async () => {
  const r = await start("hello");
  const a = await call(r, "/", { headers: { [HEADERS.requestId]: "rid-123" } });
  assert.equal(a.status, 200);
  assert.equal(a.text, "Hello");
  assert.equal(a.headers[HEADERS.requestId], "rid-123");
  const s = await start("state");
  assert.deepEqual((await call(s, "/")).json(), { n: 1 });
  assert.deepEqual((await call(s, "/")).json(), { n: 2 });
  const generated = await call(s, "/");
  assert.match(String(generated.headers[HEADERS.requestId]), /^[0-9a-f-]{36}$/);
});

test("no automatic ETag; a function's own ETag still gets 304 for a matching If-None-Match", async () => {
  const r = await start("hello");
  assert.equal((await call(r, "/")).headers.etag, undefined);
  const t = await start("tagged");
  const first = await call(t, "/");
  assert.equal(first.status, 200);
  assert.equal(first.headers.etag, '"v1"');
  const again = await call(t, "/", { headers: { "if-none-match": '"v1"' } });
  assert.equal(again.status, 304);
  assert.equal(again.text, "");
});

test("req: path, query, JSON / form / text / raw bodies; STRATUS_* env removed, function env kept", async () => {
  const r = await start("echo", { env: { GREETING: "hi" } });
  const j = (await call(r, "/a/b?x=1&y[z]=2", { method: "POST", headers: { "content-type": "application/json" }, body: '{"k":[1,2]}' })).json();
  assert.deepEqual(j, { path: "/a/b", query: { x: "1", y: { z: "2" } }, body: { k: [1, 2] }, stratusEnv: [], fnEnv: "hi" });
  const form = (await call(r, "/", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "a=1&b=two" })).json();
  assert.deepEqual(form.body, { a: "1", b: "two" });
  const text = (await call(r, "/", { method: "POST", headers: { "content-type": "text/plain" }, body: "plain" })).json();
  assert.equal(text.body, "plain");
  const raw = (await call(r, "/", { method: "POST", headers: { "content-type": "application/octet-stream" }, body: Buffer.alloc(10) })).json();
  assert.equal(raw.body, "buffer:10");
  const bad = await call(r, "/", { method: "POST", headers: { "content-type": "application/json" }, body: "{nope" });
  assert.equal(bad.status, 400);
  assert.equal(bad.json().error.code, "INVALID_ARGUMENT");
});

test("return values: string, Buffer; callback style answers later", async () => {
  const s = await call(await start("str"), "/");
  assert.equal(s.status, 200);
  assert.equal(s.text, "text");
  assert.match(String(s.headers["content-type"]), /^text\/plain/);
  const b = await call(await start("buf"), "/");
  assert.deepEqual([...b.buf], [1, 2, 3]);
  assert.match(String(b.headers["content-type"]), /octet-stream/);
  const c = await call(await start("callback"), "/");
  assert.equal(c.status, 201);
  assert.equal(c.headers["x-custom"], "yes");
  assert.deepEqual(c.json(), { later: true });
});

test("the promise rule: a promise resolving undefined before the response waits for it; one that never answers times out", async () => {
  const later = await start("resolvesFirst");
  const a = await call(later, "/");
  assert.equal(a.status, 202);
  assert.equal(a.text, "answered after the promise");
  // No ERR_HTTP_HEADERS_SENT: the late answer was the only one.
  assert.ok(!later.logs.some((e) => /ERR_HTTP_HEADERS_SENT|Uncaught/.test(e.msg)), JSON.stringify(later.logs));
  const sent = await call(await start("sendsThenResolvesValue"), "/");
  assert.equal(sent.text, "sent");
  const n = await start("nothing", { config: { timeout: 300, maxBodyBytes: 1000 } });
  const res = await call(n, "/", { headers: { [HEADERS.requestId]: "rid-nothing" } });
  assert.equal(res.status, 504);
  assert.equal(res.json().error.code, "FUNCTION_TIMEOUT");
  const logged = await n.waitForLog((e) => e.rid === "rid-nothing" && e.level === "error");
  assert.match(logged.msg, /promise resolved undefined without sending a response/);
});

test("a body above maxBodyBytes gets 413 PAYLOAD_TOO_LARGE in the common error body", async () => {
  const r = await start("echo", { config: { timeout: 5000, maxBodyBytes: 100 } });
  const res = await call(r, "/", { method: "POST", headers: { "content-type": "application/json", [HEADERS.requestId]: "rid-413" }, body: JSON.stringify({ s: "x".repeat(200) }) });
  assert.equal(res.status, 413);
  assert.equal(res.headers[HEADERS.errorSource], "platform");
  assert.deepEqual(res.json(), { error: { code: "PAYLOAD_TOO_LARGE", message: "The request body is larger than this function's maxBodyBytes (100 bytes)", requestId: "rid-413" } });
});

test("past the timeout: 504 FUNCTION_TIMEOUT with the unusable header, then the runtime exits", async () => {
  const r = await start("slow", { config: { timeout: 300, maxBodyBytes: 1000 } });
  const t0 = performance.now();
  const res = await call(r, "/?ms=20000");
  assert.equal(res.status, 504);
  assert.ok(performance.now() - t0 < 10_000);
  assert.equal(res.headers[HEADERS.instanceUnusable], "1");
  assert.equal(res.headers[HEADERS.errorSource], "function");
  assert.equal(res.json().error.code, "FUNCTION_TIMEOUT");
  // The slow handler is still running; the runtime exits only after it drained the rest (its own deadline).
  const exit = await r.exited;
  assert.equal(exit.code, EXIT.ok);
});

test("each request's deadline counts from its own start (one timer for all deadlines)", async () => {
  const r = await start("slow", { config: { timeout: 800, maxBodyBytes: 1000 } });
  // Two requests back to back, each well within its own deadline but together past the first one's.
  for (let i = 0; i < 2; i++) {
    const ok = await call(r, "/?ms=500");
    assert.equal(ok.status, 200, `request ${i}: ${ok.text}`);
    assert.equal(ok.text, "slept");
  }
  const t0 = performance.now();
  const late = await call(r, "/?ms=20000");
  const took = performance.now() - t0;
  assert.equal(late.status, 504);
  assert.ok(took >= 750 && took < 10_000, `answered after ${took} ms, deadline 800 ms`);
});

test("Express's request surface: baseUrl, originalUrl, params, locals, req.next, req.res / res.req, the app's prototypes", async () => {
  const r = await start("expressSurface");
  const res = await call(r, "/a/b?x=1&y[z]=2", { headers: { accept: "application/json", "x-forwarded-host": "fn.example" } });
  assert.equal(res.status, 200);
  assert.deepEqual(res.json(), {
    baseUrl: "", originalUrl: "/a/b?x=1&y[z]=2", url: "/a/b?x=1&y[z]=2", params: {}, next: "function", locals: true, reqRes: true, resReq: true,
    app: "function", incoming: true, response: true, query: { x: "1", y: { z: "2" } }, path: "/a/b", hostname: "fn.example",
    json: "function", sendFile: "function", accepts: "application/json",
  });
  // Twice on one connection: the second request gets fresh values, not the first one's.
  const again = await call(r, "/c", { headers: { accept: "application/json" } });
  assert.equal(again.json().originalUrl, "/c");
  assert.deepEqual(again.json().query, {});
});

test("next() from the handler: none / 'route' / later → 404 NOT_FOUND, an error → 500 FUNCTION_ERROR, 'router' → Express's final 404", async () => {
  const r = await start("nexts");
  for (const to of ["", "route", "later"]) {
    const res = await call(r, `/x?to=${to}`, { headers: { [HEADERS.requestId]: `rid-next-${to}` } });
    assert.equal(res.status, 404, to);
    assert.deepEqual(res.json(), { error: { code: "NOT_FOUND", message: "The function has no route for GET /x", requestId: `rid-next-${to}` } }, to);
    assert.equal(res.headers[HEADERS.requestId], `rid-next-${to}`);
  }
  const err = await call(r, "/?to=error", { headers: { accept: "application/json", [HEADERS.requestId]: "rid-next-error" } });
  assert.equal(err.status, 500);
  assert.equal(err.json().error.code, "FUNCTION_ERROR");
  await r.waitForLog((e) => e.rid === "rid-next-error" && e.level === "error" && /passed to next/.test(e.msg));
  const router = await call(r, "/y?to=router");
  assert.equal(router.status, 404);
  assert.match(router.text, /Cannot GET \/y/);
  // The instance keeps serving after every form.
  assert.equal((await call(r, "/z?to=route")).status, 404);
});

test("a thrown error: 500 FUNCTION_ERROR, no stack in production, stack in dev; the stack goes to the logs", async () => {
  const prod = await start("throws");
  // A JSON caller gets the envelope. (Changed deliberately, issue 11.8: without Accept the body is now text,
  // as on Cloud Functions — asserted below and in test/runtime-compat.test.ts.)
  const p = await call(prod, "/", { headers: { [HEADERS.requestId]: "rid-err", accept: "application/json" } });
  assert.equal(p.status, 500);
  assert.equal(p.headers[HEADERS.errorSource], "function");
  assert.deepEqual(p.json(), { error: { code: "FUNCTION_ERROR", message: "The function threw an error", requestId: "rid-err" } });
  const bare = await call(prod, "/", { headers: { [HEADERS.requestId]: "rid-err-text" } });
  assert.equal(bare.status, 500);
  assert.equal(bare.headers[HEADERS.errorSource], "function");
  assert.equal(bare.text, "FUNCTION_ERROR: The function threw an error (request rid-err-text)\n");
  assert.doesNotMatch(bare.text, /boom secret/);
  const logged = await prod.waitForLog((e) => e.rid === "rid-err" && e.level === "error");
  assert.match(logged.msg, /boom secret[\s\S]*at /);
  const dev = await start("throws", { dev: true });
  const d = (await call(dev, "/", { headers: { accept: "application/json" } })).json();
  assert.equal(d.error.code, "FUNCTION_ERROR");
  assert.match(d.error.message, /boom secret/);
  assert.match(d.error.details.stack, /index\.cjs:\d+/);
});

test("an uncaught exception: in-flight requests get 502 FUNCTION_CRASHED, the process exits with EXIT.crashed", async () => {
  const r = await start("crash");
  const res = await call(r, "/");
  assert.equal(res.status, 502);
  assert.equal(res.json().error.code, "FUNCTION_CRASHED");
  assert.equal(res.headers[HEADERS.instanceUnusable], "1");
  assert.equal((await r.exited).code, EXIT.crashed);
  assert.ok(r.logs.some((e) => e.level === "error" && /crash!/.test(e.msg)));
});

test("SIGTERM drains: an in-flight request finishes, then exit 0", async () => {
  const r = await start("slow");
  const pending = call(r, "/?ms=400", { headers: { [HEADERS.requestId]: "rid-drain" } });
  await r.waitForLog((e) => e.rid === "rid-drain" && e.msg === "started");
  r.child.kill("SIGTERM");
  const res = await pending;
  assert.equal(res.status, 200);
  assert.equal(res.text, "slept");
  assert.equal((await r.exited).code, EXIT.ok);
});

test("console and stdout writes become structured lines tagged with the request id, capped at 16 KiB", async () => {
  const r = await start("logs");
  const res = await call(r, "/?tag=t1", { headers: { [HEADERS.requestId]: "rid-log" } });
  assert.equal(res.text, "ok");
  await r.waitForLog((e) => e.rid === "rid-log" && e.msg.startsWith("xxx"));
  const mine = r.logs.filter((e) => e.rid === "rid-log");
  assert.deepEqual(mine.slice(0, 4).map((e) => [e.level, e.msg]), [["log", "hello from t1"], ["error", "an error line"], ["log", "raw1"], ["log", "raw2"]]);
  const long = mine[4]!;
  assert.ok(Buffer.byteLength(long.msg) < LOG_LINE_MAX_BYTES + 100);
  assert.match(long.msg, /… \[truncated 100 bytes\]$/);
});

test("discovery lists the functions with raw config; a module that throws at load exits EXIT.loadFailed with file:line", () => {
  const ok = spawnSync(process.execPath, [runtimePath()], { env: { [ENV.discover]: "1", [ENV.entry]: entry }, encoding: "utf8" });
  assert.equal(ok.status, EXIT.ok);
  const line = ok.stdout.split("\n").find((l) => l.startsWith(DISCOVERY_PREFIX))!;
  const { functions } = JSON.parse(line.slice(DISCOVERY_PREFIX.length));
  const hello = functions.find((f: { name: string }) => f.name === "hello");
  assert.deepEqual(hello, { name: "hello", exportName: "hello", config: { timeout: 10_000 } });
  assert.ok(!functions.some((f: { name: string }) => f.name === "helperValue"));
  const broken = join(dir, "broken.cjs");
  writeFileSync(broken, "const x = 1;\nthrow new Error('bad module');\n");
  const bad = spawnSync(process.execPath, [runtimePath()], { env: { [ENV.discover]: "1", [ENV.entry]: broken }, encoding: "utf8" });
  assert.equal(bad.status, EXIT.loadFailed);
  const badLine = bad.stdout.split("\n").find((l) => l.startsWith(DISCOVERY_PREFIX))!;
  const err = JSON.parse(badLine.slice(DISCOVERY_PREFIX.length)).error;
  assert.equal(err.code, "FUNCTION_LOAD_FAILED");
  assert.match(err.message, /bad module.*broken\.cjs:2/);
});

test("a missing export fails the start with EXIT.loadFailed", async () => {
  await assert.rejects(start("doesNotExist"), /exited before READY.*"code":71/);
});

// iconv-lite and zod are compiled on first use from compressed strings (scripts/lazy-packages.mjs):
// these cases go through both lazy paths of the shipped bundle.
test("lazily compiled packages: a latin1 / UTF-16 body is decoded, an unknown charset is 415; discovery validates configs", async () => {
  const r = await start("echo");
  const latin1 = (await call(r, "/", { method: "POST", headers: { "content-type": "text/plain; charset=iso-8859-1" }, body: Buffer.from([0x63, 0x61, 0x66, 0xe9]) })).json();
  assert.equal(latin1.body, "café");
  const utf16 = (await call(r, "/", { method: "POST", headers: { "content-type": "application/json; charset=utf-16le" }, body: Buffer.from('{"k":"é"}', "utf16le") })).json();
  assert.deepEqual(utf16.body, { k: "é" });
  const unknown = await call(r, "/", { method: "POST", headers: { "content-type": "text/plain; charset=klingon" }, body: "x" });
  assert.equal(unknown.status, 415);
  assert.equal(unknown.json().error.code, "UNSUPPORTED_MEDIA_TYPE");

  const bad = join(dir, "bad-config.cjs");
  writeFileSync(bad, "module.exports.f = { func: async () => 'x', config: { timeout: 'soon' } };\n");
  const run = spawnSync(process.execPath, [runtimePath()], { env: { [ENV.discover]: "1", [ENV.entry]: bad }, encoding: "utf8" });
  assert.equal(run.status, EXIT.ok);
  const line = run.stdout.split("\n").find((l) => l.startsWith(DISCOVERY_PREFIX))!;
  const [f] = JSON.parse(line.slice(DISCOVERY_PREFIX.length)).functions;
  assert.equal(f.error.code, "INVALID_CONFIG");
  assert.match(f.error.message, /timeout/);
});

/** Sends a request to the runtime and disconnects once its handler logged "started". */
async function disconnectMidRequest(r: RuntimeProcess, path: string, requestId: string): Promise<void> {
  const req = httpRequest({ socketPath: r.socketPath, path, headers: { [HEADERS.requestId]: requestId } });
  req.on("error", () => undefined);
  req.end();
  await r.waitForLog((e) => e.rid === requestId && e.msg === "started");
  req.destroy();
}

/** The gateway's control request: waits up to `ms` for the handler of `requestId` (HEADERS.awaitRequest). */
async function awaitHandler(r: RuntimeProcess, requestId: string, ms: number) {
  const res = await call(r, "/", { headers: { [HEADERS.awaitRequest]: requestId, [HEADERS.awaitMs]: String(ms) } });
  assert.equal(res.status, 204);
  return res.headers[HEADERS.requestState];
}

test("a client disconnect: req emits aborted and close, req.signal aborts (AbortError), the control request says finished", async () => {
  const r = await start("abortable");
  assert.equal(await awaitHandler(r, "rid-unknown", 5000), "finished", "no such request in flight: finished at once");
  await disconnectMidRequest(r, "/", "rid-abort-1");
  assert.equal(await awaitHandler(r, "rid-abort-1", 10_000), "finished");
  const seen = (await call(r, "/?report=1")).json();
  assert.deepEqual(seen, { aborted: true, closed: true, signalAborted: true, reason: "AbortError", signalType: "object", early: false });
  // Reused: the same process serves the next requests, nothing was logged as an error.
  assert.equal(r.child.exitCode, null);
  assert.ok(!r.logs.some((e) => e.level === "error"), JSON.stringify(r.logs));
});

test("after a disconnect the request stays in flight until the handler ends the response (async and callback style)", async () => {
  for (const name of ["ignoresAbort", "syncIgnoresAbort"]) {
    const r = await start(name);
    await disconnectMidRequest(r, "/?ms=1500", `rid-${name}`);
    assert.equal(await awaitHandler(r, `rid-${name}`, 100), "running", name);
    assert.equal(await awaitHandler(r, `rid-${name}`, 20_000), "finished", name);
    assert.equal((await call(r, "/?ms=0")).text, "done", name);
  }
});

test("a handler that never finishes after a disconnect: its deadline makes the instance unusable and it exits", async () => {
  const r = await start("abortable", { config: { timeout: 400 } });
  await disconnectMidRequest(r, "/?silent=1", "rid-silent");
  // The signal aborted at the disconnect and the handler returned without answering: its promise settled.
  assert.equal(await awaitHandler(r, "rid-silent", 10_000), "finished");
  const r2 = await start("ignoresAbort", { config: { timeout: 400 } });
  await disconnectMidRequest(r2, "/?ms=20000", "rid-forever");
  assert.equal(await awaitHandler(r2, "rid-forever", 20_000), "unusable");
  assert.equal((await r2.exited).code, EXIT.ok);
});

test("req.signal aborts at the function's deadline with a TimeoutError", async () => {
  const r = await start("abortable", { config: { timeout: 300 } });
  const res = await call(r, "/?silent=1", { headers: { [HEADERS.requestId]: "rid-deadline" } });
  assert.equal(res.status, 504);
  await r.waitForLog((e) => e.rid === "rid-deadline" && e.msg === "aborted: TimeoutError");
  assert.equal((await r.exited).code, EXIT.ok);
});
