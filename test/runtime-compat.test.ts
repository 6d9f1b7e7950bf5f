// Integration: functions written for Google Cloud Functions, Firebase and Vercel, bundled by the real
// bundler (src/builder/bundle.ts) and served by the real dist/runtime.cjs (run `npm run build` first).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundleProject } from "../src/builder/bundle";
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

/** Writes a project, bundles it, returns the bundle's dir and entry. */
async function bundled(name: string, files: Record<string, string>): Promise<{ dir: string; entry: string }> {
  const src = join(root, name);
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(join(src, file, ".."), { recursive: true });
    writeFileSync(join(src, file), text);
  }
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
  ]);
  const r = await start(b, "functions-framework:helloHttp");
  const res = await call(r, "/?name=Stratus");
  assert.equal(res.status, 200);
  assert.equal(res.text, "Hello Stratus!");
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

test("functions-framework: an invalid registered name fails the load with the framework's message", async () => {
  const b = await bundled("ff-bad", { "index.js": "require('@google-cloud/functions-framework').http('9bad', () => {});" });
  const run = spawnSync(process.execPath, [runtimePath()], { env: { [ENV.discover]: "1", [ENV.entry]: b.entry }, encoding: "utf8" });
  assert.equal(run.status, EXIT.loadFailed);
  assert.match(run.stdout, /Invalid function name: 9bad/);
});
