// Integration: functions written for Google Cloud Functions, Firebase and Vercel, bundled by the real
// bundler (src/builder/bundle.ts) and served by the real dist/runtime.cjs (run `npm run build` first).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Readable } from "node:stream";
import { tmpdir } from "node:os";
import { basename, dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { bundleProject } from "../src/builder/bundle";
import { buildProject } from "../src/builder/build";
import { createProcessDriver } from "../src/sandbox/process/process-driver";
import { createSilentLogger } from "../src/shared/logger";
import { DISCOVERY_PREFIX, ENV, EXIT } from "../src/shared/protocol";
import { runtimePath, startRuntime, type RuntimeProcess } from "./helpers/runtime-process";

let root: string;
const running: RuntimeProcess[] = [];

before(() => {
  runtimePath();
  root = mkdtempSync(join(tmpdir(), "stratus-rt-compat-"));
});
after(async () => {
  await Promise.all(running.map((r) => r.stop()));
  rmSync(root, { recursive: true, force: true });
});

/** This checkout's node_modules: real npm packages (express 5, raw-body…) copied into the fixtures to bundle. */
const REPO_NODE_MODULES = fileURLToPath(new URL("../node_modules", import.meta.url));

/**
 * Copies `packages` and everything they depend on (as Node resolves it from this checkout's node_modules)
 * into `dest`/node_modules: a project of its own, inside which the bundler's confinement holds (a symlink
 * to the checkout's node_modules would be an import from outside the project, BUILD_IMPORT_OUTSIDE_PROJECT).
 */
function copyDependencies(dest: string, packages: readonly string[]): void {
  const repo = dirname(REPO_NODE_MODULES);
  // Node's lookup: <dir>/node_modules/<name> for `from` and each folder above it, up to the checkout.
  const resolveDir = (name: string, from: string): string | undefined => {
    for (let at = from; at.startsWith(repo); at = dirname(at)) {
      const candidate = join(at, "node_modules", name);
      if (basename(at) !== "node_modules" && existsSync(join(candidate, "package.json"))) return candidate;
      if (at === repo) return undefined;
    }
    return undefined;
  };
  const topLevel = new Set<string>();
  const seen = new Set<string>();
  const queue: Array<{ name: string; from: string }> = packages.map((name) => ({ name, from: repo }));
  // Bounded: each package directory is expanded once, and node_modules holds finitely many.
  while (queue.length > 0) {
    const { name, from } = queue.shift()!;
    const dir = resolveDir(name, from);
    assert.ok(dir, `${name} is not installed in ${REPO_NODE_MODULES} (a fixture needs it)`);
    if (seen.has(dir)) continue;
    seen.add(dir);
    const rel = relative(REPO_NODE_MODULES, dir).split(sep);
    topLevel.add(rel[0]!.startsWith("@") ? `${rel[0]}/${rel[1]}` : rel[0]!);
    const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { dependencies?: Record<string, string> };
    for (const dep of Object.keys(pkg.dependencies ?? {})) queue.push({ name: dep, from: dir });
  }
  for (const name of topLevel) cpSync(join(REPO_NODE_MODULES, name), join(dest, "node_modules", name), { recursive: true });
}

/** Writes a project (with `deps` and their dependencies copied into its node_modules), bundles it, returns the bundle's dir and entry. */
async function bundled(name: string, files: Record<string, string>, deps: readonly string[] = []): Promise<{ dir: string; entry: string }> {
  const src = join(root, name);
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(join(src, file, ".."), { recursive: true });
    writeFileSync(join(src, file), text);
  }
  if (deps.length > 0) copyDependencies(src, deps);
  const out = join(root, `${name}-out`);
  const b = await bundleProject(src, out, { sourcemap: false });
  return { dir: out, entry: b.outFile };
}

function discover(entry: string): { status: number | null; functions: Array<{ name: string; exportName: string; config?: unknown; error?: { code: string; message: string }; warnings?: string[] }> } {
  const run = spawnSync(process.execPath, [runtimePath()], { env: { [ENV.discover]: "1", [ENV.entry]: entry }, encoding: "utf8" });
  const line = run.stdout.split("\n").find((l) => l.startsWith(DISCOVERY_PREFIX));
  assert.ok(line, `no discovery line: ${run.stdout} ${run.stderr}`);
  return { status: run.status, functions: JSON.parse(line.slice(DISCOVERY_PREFIX.length)).functions };
}

async function start(b: { dir: string; entry: string }, exportName: string, extra: { config?: object; env?: Record<string, string> } = {}) {
  const r = await startRuntime({ dir: b.dir, entry: b.entry, exportName, ...extra });
  running.push(r);
  return r;
}

async function call(r: RuntimeProcess, path: string, init: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}) {
  const res = await r.client.request({ path, method: (init.method ?? "GET") as "GET", headers: init.headers, body: init.body });
  const buf = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, text: buf.toString(), buf, json: () => JSON.parse(buf.toString()) };
}

const FF_PROJECT = {
  "package.json": JSON.stringify({ name: "ff-sample", main: "index.js", dependencies: { "@google-cloud/functions-framework": "^3.0.0" } }),
  // As in Google's samples (functions/helloworld): the framework is required, not installed here: the
  // bundler resolves it to Stratus's registration shim either way.
  "index.js": `
const functions = require('@google-cloud/functions-framework');
functions.http('helloHttp', (req, res) => {
  res.send(\`Hello \${req.query.name || 'World'}!\`);
});
functions.cloudEvent('helloEvent', (cloudEvent) => {
  console.log('event', cloudEvent.type);
  return { got: cloudEvent.type, data: cloudEvent.data };
});
exports.exported = (req, res) => res.send('exported too');
exports.lookup = (req, res) => res.send(typeof functions.getFunction('helloHttp') + ' ' + typeof functions.getFunction('nope'));
`,
};

test("functions-framework: http() and cloudEvent() registrations are discovered beside exports and served", async () => {
  const b = await bundled("ff", FF_PROJECT);
  const d = discover(b.entry);
  assert.equal(d.status, EXIT.ok);
  assert.deepEqual(d.functions.map((f) => [f.name, f.exportName, f.error?.code ?? null]).sort(), [
    ["exported", "exported", null],
    ["helloEvent", "functions-framework:helloEvent", null],
    ["helloHttp", "functions-framework:helloHttp", null],
    ["lookup", "lookup", null],
  ]);
  const r = await start(b, "functions-framework:helloHttp");
  const res = await call(r, "/?name=Stratus");
  assert.equal(res.status, 200);
  assert.equal(res.text, "Hello Stratus!");
  assert.equal((await call(await start(b, "lookup"), "/")).text, "function undefined");
  const e = await start(b, "functions-framework:helloEvent");
  const binary = await call(e, "/", {
    method: "POST",
    headers: { "content-type": "application/json", "ce-id": "1", "ce-source": "//test", "ce-type": "com.example.created", "ce-specversion": "1.0" },
    body: '{"k":1}',
  });
  assert.equal(binary.status, 200);
  assert.deepEqual(binary.json(), { got: "com.example.created", data: { k: 1 } });
  const structured = await call(e, "/", { method: "POST", headers: { "content-type": "application/cloudevents+json" }, body: JSON.stringify({ id: "2", source: "s", type: "t.structured", specversion: "1.0", data: "x" }) });
  assert.deepEqual(structured.json(), { got: "t.structured", data: "x" });
});

test("functions-framework from ESM / TypeScript: default, named and namespace imports; top-level await (an ESM bundle)", async () => {
  const b = await bundled("ff-esm", {
    "index.ts": `
import functions from "@google-cloud/functions-framework";
import { http } from "@google-cloud/functions-framework";
import * as ff from "@google-cloud/functions-framework";
const greeting: string = await Promise.resolve("hey");
functions.http("viaDefault", (req: { query: { n?: string } }, res: { send(s: string): void }) => res.send(greeting + " " + (req.query.n ?? "")));
http("viaNamed", (_req: unknown, res: { send(s: string): void }) => res.send("named"));
ff.http("viaNamespace", (_req: unknown, res: { send(s: string): void }) => res.send("namespace"));
`,
  });
  assert.match(b.entry, /\.mjs$/);
  const d = discover(b.entry);
  assert.deepEqual(d.functions.map((f) => f.name).sort(), ["viaDefault", "viaNamed", "viaNamespace"]);
  assert.equal((await call(await start(b, "functions-framework:viaDefault"), "/?n=1")).text, "hey 1");
  assert.equal((await call(await start(b, "functions-framework:viaNamespace"), "/")).text, "namespace");
});

test("functions-framework: an invalid registered name fails the load with the framework's message", async () => {
  const b = await bundled("ff-bad", { "index.js": "require('@google-cloud/functions-framework').http('9bad', () => {});" });
  const run = spawnSync(process.execPath, [runtimePath()], { env: { [ENV.discover]: "1", [ENV.entry]: b.entry }, encoding: "utf8" });
  assert.equal(run.status, EXIT.loadFailed);
  assert.match(run.stdout, /Invalid function name: 9bad/);
});

async function callStream(r: RuntimeProcess, path: string, headers: Record<string, string>, parts: string[]) {
  // A body sent in pieces with Transfer-Encoding: chunked.
  const res = await r.client.request({ path, method: "POST", headers, body: Readable.from(parts.map((p) => Buffer.from(p))) });
  return { status: res.statusCode, text: await res.body.text() };
}

const BODY_DEPS = ["express", "raw-body"];
const BODY_PROJECT = {
  "package.json": JSON.stringify({ name: "bodies", dependencies: { express: "*", "raw-body": "*" } }),
  "index.js": `
const crypto = require("crypto");
const express = require("express");
const getRawBody = require("raw-body");
const functions = require("@google-cloud/functions-framework");

// Cloud Functions style: req.body.name on a GET (needs {}), rawBody for a signature check.
functions.http("greet", (req, res) => res.send("Hello " + (req.query.name || req.body.name || "World")));
exports.signed = (req, res) => {
  const mac = crypto.createHmac("sha256", "secret").update(req.rawBody).digest("hex");
  if (mac !== req.get("x-signature")) return res.status(401).send("bad signature");
  res.json({ ok: true, body: req.body, rawIsBuffer: Buffer.isBuffer(req.rawBody), rawLength: req.rawBody.length });
};
exports.shape = (req, res) => res.json({ body: Buffer.isBuffer(req.body) ? "buffer:" + req.body.length : req.body, raw: req.rawBody.toString("base64") });
// Code that reads the stream itself.
exports.rawBody = async (req, res) => {
  const buf = await getRawBody(req, { limit: "1mb" });
  res.json({ length: buf.length, same: buf.equals(req.rawBody), text: buf.toString() });
};
exports.iterate = async (req) => {
  let n = 0;
  for await (const chunk of req) n += chunk.length;
  return { n };
};
exports.piped = (req, res) => {
  const hash = crypto.createHash("sha256");
  req.pipe(hash).on("finish", () => res.send(hash.digest("hex")));
};
// An Express app with its own body parser, called as Firebase's onRequest(app) calls it.
const app = express();
app.use(express.json());
app.post("/items", (req, res) => res.status(201).json({ created: req.body }));
exports.app = (req, res) => app(req, res);
`,
};

test("req.body is {} and req.rawBody an empty Buffer without a body; rawBody holds the exact bytes", async () => {
  const b = await bundled("bodies", BODY_PROJECT, BODY_DEPS);
  const greet = await start(b, "functions-framework:greet");
  assert.equal((await call(greet, "/")).text, "Hello World");
  assert.equal((await call(greet, "/", { method: "POST", headers: { "content-type": "application/json" }, body: '{"name":"Ada"}' })).text, "Hello Ada");
  // A POST with zero bytes and no content-type is a request without a body.
  assert.equal((await call(greet, "/", { method: "POST", headers: { "content-length": "0" } })).text, "Hello World");

  const shape = await start(b, "shape");
  assert.deepEqual((await call(shape, "/")).json(), { body: {}, raw: "" });
  const bytes = Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x20, 0x31, 0x7d, 0x0a]); // '{"a": 1}\n', spacing kept
  assert.deepEqual((await call(shape, "/", { method: "POST", headers: { "content-type": "application/json" }, body: bytes })).json(), { body: { a: 1 }, raw: bytes.toString("base64") });
  assert.deepEqual((await call(shape, "/", { method: "POST", headers: { "content-type": "application/octet-stream" }, body: Buffer.from([0, 255, 1]) })).json(), { body: "buffer:3", raw: "AP8B" });

  const signed = await start(b, "signed");
  const payload = '{"event":"charge.succeeded",  "amount":100}';
  const sig = createHmac("sha256", "secret").update(payload).digest("hex");
  const ok = await call(signed, "/", { method: "POST", headers: { "content-type": "application/json", "x-signature": sig }, body: payload });
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.json(), { ok: true, body: { event: "charge.succeeded", amount: 100 }, rawIsBuffer: true, rawLength: Buffer.byteLength(payload) });
  const bad = await call(signed, "/", { method: "POST", headers: { "content-type": "application/json", "x-signature": "00" }, body: payload });
  assert.equal(bad.status, 401);
});

test("the request stream stays readable: raw-body, for await, pipe, an app's own express.json(); chunked bodies; keep-alive", async () => {
  const b = await bundled("bodies-stream", BODY_PROJECT, BODY_DEPS);
  const raw = await start(b, "rawBody");
  for (let i = 0; i < 2; i++) {
    // Twice on one kept-alive connection: the first request's body did not leak into the second.
    const res = await call(raw, "/", { method: "POST", headers: { "content-type": "text/plain" }, body: `body number ${i}` });
    assert.equal(res.status, 200);
    assert.deepEqual(res.json(), { length: 13, same: true, text: `body number ${i}` });
  }
  // A handler that reads the stream itself is not refused for a body its content-type would not parse.
  const notJson = await call(raw, "/", { method: "POST", headers: { "content-type": "application/json" }, body: "not json" });
  assert.deepEqual(notJson.json(), { length: 8, same: true, text: "not json" });
  const chunked = await callStream(raw, "/", { "content-type": "application/xml" }, ["<a>", "some", "</a>"]);
  assert.deepEqual(JSON.parse(chunked.text), { length: 11, same: true, text: "<a>some</a>" });

  const iterate = await start(b, "iterate");
  const big = "x".repeat(300_000);
  assert.deepEqual((await call(iterate, "/", { method: "POST", headers: { "content-type": "application/octet-stream" }, body: big })).json(), { n: 300_000 });
  const piped = await start(b, "piped");
  assert.equal((await call(piped, "/", { method: "POST", body: big })).text, createHash("sha256").update(big).digest("hex"));

  const app = await start(b, "app");
  const created = await call(app, "/items", { method: "POST", headers: { "content-type": "application/json" }, body: '{"name":"x"}' });
  assert.equal(created.status, 201);
  assert.deepEqual(created.json(), { created: { name: "x" } });
});

test("maxBodyBytes still bounds a body read by the stream, and a bad JSON body read as req.body is a platform 400", async () => {
  const b = await bundled("bodies-limit", BODY_PROJECT, BODY_DEPS);
  const raw = await start(b, "rawBody", { config: { timeout: 5000, maxBodyBytes: 100 } });
  const declared = await call(raw, "/", { method: "POST", headers: { "content-type": "text/plain" }, body: "y".repeat(101) });
  assert.equal(declared.status, 413);
  assert.equal(declared.json().error.code, "PAYLOAD_TOO_LARGE");
  const chunked = await callStream(raw, "/", { "content-type": "text/plain" }, ["z".repeat(60), "z".repeat(60)]);
  assert.equal(chunked.status, 413);
  const shape = await start(b, "shape");
  const bad = await call(shape, "/", { method: "POST", headers: { "content-type": "application/json" }, body: "{nope" });
  assert.equal(bad.status, 400);
  assert.equal(bad.headers["x-stratus-error-source"], "platform");
  assert.equal(bad.json().error.code, "INVALID_ARGUMENT");
  assert.ok(!shape.logs.some((e) => /threw/.test(e.msg)), "a body that does not parse is not logged as a function error");
});

test("/favicon.ico and /robots.txt get 404 with an empty body without reaching the function", async () => {
  const b = await bundled("ignored", { "index.js": "let n = 0; exports.count = (req, res) => res.send(String(++n));" });
  const r = await start(b, "count");
  for (const path of ["/favicon.ico", "/robots.txt", "/robots.txt?x=1"]) {
    const res = await call(r, path);
    assert.equal(res.status, 404, path);
    assert.equal(res.text, "", path);
    assert.equal(res.headers["x-stratus-error-source"], "platform");
  }
  assert.equal((await call(r, "/favicon.ico", { method: "POST", body: "x" })).status, 404);
  // Other paths reach it; the ignored ones never did.
  assert.equal((await call(r, "/robots.txt.bak")).text, "1");
  assert.equal((await call(r, "/a/favicon.ico")).text, "2");
});

test("a function error follows Accept: text for browsers, */* and without Accept (as Cloud Functions), the JSON envelope for JSON callers", async () => {
  const b = await bundled("errors", { "index.js": "exports.boom = async () => { throw new Error('secret detail'); };\nexports.bad = (req) => req.body;" });
  const r = await start(b, "boom");
  const cases: Array<[string | undefined, "text" | "json"]> = [
    // Changed deliberately (issue 11.8): no Accept was JSON; Cloud Functions (and the Functions Framework's table) answer text.
    [undefined, "text"],
    ["", "text"],
    ["application/json", "json"],
    ["application/json, text/plain, */*", "json"],
    ["application/json;q=0.5, text/html", "json"],
    ["*/*", "text"],
    ["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text"],
    ["text/plain", "text"],
    ["text/plain, application/json", "text"],
    ["image/png", "text"],
  ];
  for (const [accept, kind] of cases) {
    const res = await call(r, "/", { headers: { ...(accept === undefined ? {} : { accept }), "x-stratus-request-id": "rid-accept" } });
    assert.equal(res.status, 500, String(accept));
    assert.equal(res.headers["x-stratus-error-source"], "function");
    if (kind === "json") {
      assert.deepEqual(res.json(), { error: { code: "FUNCTION_ERROR", message: "The function threw an error", requestId: "rid-accept" } }, String(accept));
    } else {
      assert.match(String(res.headers["content-type"]), /^text\/plain/, String(accept));
      assert.equal(res.text, "FUNCTION_ERROR: The function threw an error (request rid-accept)\n", String(accept));
    }
  }
  // Platform errors keep the envelope whatever the Accept.
  const bad = await start(b, "bad");
  const platform = await call(bad, "/", { method: "POST", headers: { accept: "*/*", "content-type": "application/json" }, body: "{x" });
  assert.equal(platform.status, 400);
  assert.equal(platform.json().error.code, "INVALID_ARGUMENT");
});

test("trust proxy: req.ip, req.protocol, req.hostname come from the gateway's X-Forwarded-* (one hop trusted)", async () => {
  const b = await bundled("proxy", { "index.js": "exports.who = (req) => ({ ip: req.ip ?? null, ips: req.ips, protocol: req.protocol, secure: req.secure, hostname: req.hostname });" });
  const r = await start(b, "who");
  const behind = await call(r, "/", { headers: { host: "instance.local", "x-forwarded-for": "6.6.6.6, 203.0.113.7", "x-forwarded-proto": "https", "x-forwarded-host": "api.example.com" } });
  // The client wrote 6.6.6.6 itself; the gateway appended the address it saw: only that one is trusted.
  assert.deepEqual(behind.json(), { ip: "203.0.113.7", ips: ["203.0.113.7"], protocol: "https", secure: true, hostname: "api.example.com" });
  const direct = await call(r, "/", { headers: { host: "instance.local" } });
  assert.deepEqual(direct.json(), { ip: null, ips: [], protocol: "http", secure: false, hostname: "instance.local" });
});

test("Vercel's request helpers: req.cookies parsed (and assignable), req.query, res.status().json() / send()", async () => {
  const b = await bundled("vercel", {
    "api/index.js": `
module.exports = function handler(req, res) {
  const { name = "World" } = req.query;
  if (req.query.assign) req.cookies = { replaced: "yes" };
  res.status(200).json({ message: "Hello " + name + "!", cookies: req.cookies, method: req.method });
};`,
    "package.json": JSON.stringify({ name: "vercel-fn", main: "api/index.js" }),
  });
  const r = await start(b, "default");
  const withCookies = await call(r, "/?name=Vercel", { headers: { cookie: "session=abc%20def; theme=dark" } });
  assert.deepEqual(withCookies.json(), { message: "Hello Vercel!", cookies: { session: "abc def", theme: "dark" }, method: "GET" });
  assert.deepEqual((await call(r, "/")).json().cookies, {});
  assert.deepEqual((await call(r, "/?assign=1", { headers: { cookie: "a=1" } })).json().cookies, { replaced: "yes" });
});

// What firebase-functions 7.4.0's onRequest(options, handler) returns, reduced to what Stratus reads: the
// handler with the `__endpoint` the real package computes (recorded from it; ResetValue is its class for
// "unset"). The compatibility suite (test/compat*) runs the real package.
const FIREBASE_SHAPED = `
class ResetValue {}
function onRequest(opts, handler) {
  const f = (req, res) => Promise.resolve(handler(req, res));
  f.__endpoint = {
    availableMemoryMb: opts.memory === "1GiB" ? 1024 : null, timeoutSeconds: opts.timeoutSeconds ?? null,
    minInstances: opts.minInstances ?? null, maxInstances: opts.maxInstances ?? null, ingressSettings: new ResetValue(),
    concurrency: opts.concurrency ?? null, serviceAccountEmail: new ResetValue(), vpc: new ResetValue(), platform: "gcfv2",
    region: ["europe-west1"], ...(opts.cpu ? { cpu: opts.cpu } : {}), labels: {}, httpsTrigger: {},
  };
  return f;
}
module.exports = { onRequest };
`;

test("deploy-time discovery: Firebase onRequest options become the config, the rest are build-log warnings; registrations build too", async () => {
  const dataDir = join(root, "build-data");
  const driver = createProcessDriver({ runtimePath: runtimePath(), stateDir: join(root, "st"), cgroupRoot: `stratus-compattest-${process.pid}` });
  void driver.open(); // nothing runs before open(); the pool starts filling now
  try {
    const dir = join(root, "firebase-project");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "fb", main: "index.js" }));
    writeFileSync(join(dir, "firebase-shaped.js"), FIREBASE_SHAPED);
    writeFileSync(join(dir, "index.js"), `
const { onRequest } = require("./firebase-shaped");
exports.api = onRequest({ timeoutSeconds: 120, memory: "1GiB", minInstances: 1, maxInstances: 5, concurrency: 20, cpu: 2 }, async (req, res) => {
  setTimeout(() => res.send("ok"), 5);
});
require("@google-cloud/functions-framework").http("ffHello", (req, res) => res.send("hi"));
`);
    const lines: string[] = [];
    const result = await buildProject({ dir, dataDir, driver, logger: createSilentLogger(), onLog: (l) => lines.push(l) });
    const byName = new Map(result.functions.map((f) => [f.name, f]));
    const api = byName.get("api")!;
    assert.equal(api.config.timeout, 120_000);
    assert.equal(api.config.memory, 1024);
    assert.equal(api.config.minInstances, 1);
    assert.equal(api.config.maxInstances, 5);
    assert.equal(api.config.concurrency, 20);
    assert.equal(byName.get("ffHello")!.exportName, "functions-framework:ffHello");
    const warnings = lines.filter((l) => l.startsWith("warning: api: "));
    assert.equal(warnings.length, 2, lines.join("\n"));
    assert.match(warnings[0]!, /region \["europe-west1"\]/);
    assert.match(warnings[1]!, /cpu 2 has no Stratus equivalent/);
    // The built Firebase handler answers though its promise resolves before the response (the promise rule).
    const r = await start({ dir: api.artifactDir, entry: join(api.artifactDir, api.entry) }, api.exportName, { config: api.config });
    assert.equal((await call(r, "/")).text, "ok");
  } finally {
    await driver.close();
  }
});
