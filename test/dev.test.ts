// Integration: the real `stratus dev` (dist/cli.js, run `npm run build` first) on port 0, driven over HTTP.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { request } from "undici";
import { HEADERS } from "../src/shared/protocol";

const repo = fileURLToPath(new URL("..", import.meta.url));
const cli = join(repo, "dist/cli.js");
const running: DevProcess[] = [];
let tmp: string;

interface DevProcess {
  child: ChildProcess;
  base: string;
  lines: string[];
  waitForLine(re: RegExp, after?: number): Promise<string>;
}

async function startDev(dir: string): Promise<DevProcess> {
  const child = spawn(process.execPath, [cli, "dev", dir, "--port", "0"], { stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; from: number; resolve: (l: string) => void }> = [];
  const onLine = (line: string) => {
    lines.push(line);
    for (const w of [...waiters]) {
      if (lines.length > w.from && w.re.test(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  };
  for (const s of [child.stdout!, child.stderr!]) {
    let buf = "";
    s.setEncoding("utf8").on("data", (c: string) => {
      buf += c;
      let nl;
      while ((nl = buf.indexOf("\n")) !== -1) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    });
  }
  const waitForLine = (re: RegExp, from = 0) => {
    const found = lines.slice(from).find((l) => re.test(l));
    if (found) return Promise.resolve(found);
    return new Promise<string>((resolve, reject) => {
      // Bounded: a line that never comes fails the test with what was printed instead of hanging it.
      const timer = setTimeout(() => reject(new Error(`no line matching ${re} within 60 s:\n${lines.join("\n")}`)), 60_000);
      waiters.push({ re, from, resolve: (l) => (clearTimeout(timer), resolve(l)) });
      child.once("exit", (code) => (clearTimeout(timer), reject(new Error(`stratus dev exited (${code}) while waiting for ${re}:\n${lines.join("\n")}`))));
    });
  };
  const listening = await waitForLine(/^Stratus dev server: http:\/\/localhost:(\d+)\//);
  const port = /localhost:(\d+)/.exec(listening)![1];
  const p: DevProcess = { child, base: `http://127.0.0.1:${port}`, lines, waitForLine };
  running.push(p);
  return p;
}

async function get(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) {
  const res = await request(url, { method: (init.method ?? "GET") as "GET", headers: init.headers, body: init.body });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) };
}

before(() => {
  if (!existsSync(cli) || !existsSync(join(repo, "dist/runtime.cjs"))) throw new Error("dist/ is missing: run `npm run build` first");
  for (const ex of ["npm-dependency", "express-middleware"]) {
    const dir = join(repo, "examples", ex);
    if (existsSync(join(dir, "node_modules"))) continue;
    const r = spawnSync("npm", ["ci", "--no-audit", "--no-fund", "--prefer-offline"], { cwd: dir, stdio: "inherit" });
    assert.equal(r.status, 0, `npm ci failed in ${dir}`);
  }
  tmp = mkdtempSync(join(tmpdir(), "stratus-devtest-"));
});

after(async () => {
  await Promise.all(
    running.map((p) => {
      if (p.child.exitCode !== null) return undefined;
      const exited = new Promise((r) => p.child.once("exit", r));
      p.child.kill("SIGTERM");
      return exited;
    }),
  );
  rmSync(tmp, { recursive: true, force: true });
});

test("all four examples are served by stratus dev", async () => {
  const [hello, ts, npmDep, mw] = await Promise.all(["hello", "typescript", "npm-dependency", "express-middleware"].map((ex) => startDev(join(repo, "examples", ex))));
  const h = await get(`${hello!.base}/fn/myFunction/`);
  assert.equal(h.status, 200);
  assert.equal(h.text, "Hello");
  assert.equal(h.headers[HEADERS.coldStart], "true");
  assert.deepEqual((await get(`${hello!.base}/fn/counter`)).json(), { calls: 1 });
  const again = await get(`${hello!.base}/fn/counter`);
  assert.deepEqual(again.json(), { calls: 2 });
  assert.equal(again.headers[HEADERS.coldStart], "false");
  await hello!.waitForLine(/^GET \/fn\/counter 200 [\d.]+ms warm$/);

  assert.deepEqual((await get(`${ts!.base}/fn/greet/x/y?name=Ann`)).json(), { message: "Hello, Ann!", method: "GET", path: "/x/y" });
  assert.deepEqual((await get(`${npmDep!.base}/fn/duration?d=2h`)).json(), { input: "2h", ms: 7_200_000 });

  assert.equal((await get(`${mw!.base}/fn/notes/notes`)).status, 401);
  const auth = { authorization: "Bearer demo" };
  const created = await get(`${mw!.base}/fn/notes/notes`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: '{"text":"hi"}' });
  assert.equal(created.status, 201);
  assert.equal(created.headers.location, "/notes/1");
  assert.deepEqual((await get(`${mw!.base}/fn/notes/notes/1`, { headers: auth })).json(), { id: 1, text: "hi" });
  const noRoute = await get(`${mw!.base}/fn/notes/elsewhere`, { headers: auth });
  assert.equal(noRoute.status, 404);
  assert.equal(noRoute.json().error.code, "NOT_FOUND");
  const big = await get(`${mw!.base}/fn/notes/notes`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ text: "x".repeat(70_000) }) });
  assert.equal(big.status, 413);
  assert.equal(big.json().error.code, "PAYLOAD_TOO_LARGE");

  const missing = await get(`${hello!.base}/fn/nope/`);
  assert.equal(missing.status, 404);
  assert.equal(missing.json().error.code, "FUNCTION_NOT_FOUND");
  assert.equal(missing.headers[HEADERS.errorSource], "platform");
  const badName = await get(`${hello!.base}/fn/9bad/`);
  assert.equal(badName.status, 400);
  assert.equal(badName.json().error.code, "INVALID_FUNCTION_NAME");
});

test("TypeScript changes reload; a syntax error answers 502 FUNCTION_LOAD_FAILED with file:line and the server survives", async () => {
  const dir = join(tmp, "reload");
  const write = (body: string) => writeFileSync(join(dir, "index.ts"), body);
  spawnSync("mkdir", ["-p", dir]);
  writeFileSync(join(dir, "package.json"), '{"name":"reload"}');
  write('export const v = async (): Promise<string> => "v1";\n');
  const dev = await startDev(dir);
  assert.equal((await get(`${dev.base}/fn/v/`)).text, "v1");

  let mark = dev.lines.length;
  write('export const v = async (): Promise<string> => "v2";\n');
  await dev.waitForLine(/^reloaded in/, mark);
  assert.equal((await get(`${dev.base}/fn/v/`)).text, "v2");

  mark = dev.lines.length;
  write('export const v = async (): Promise<string> => "v3";\nexport const w = (;\n');
  await dev.waitForLine(/index\.ts:2:\d+/, mark);
  const broken = await get(`${dev.base}/fn/v/`);
  assert.equal(broken.status, 502);
  assert.equal(broken.json().error.code, "FUNCTION_LOAD_FAILED");
  assert.match(broken.json().error.message, /index\.ts:2:\d+/);

  mark = dev.lines.length;
  write('export const v = { handler: async () => "v4", config: { timeout: "soon" } };\n');
  await dev.waitForLine(/✗ v: .*timeout/, mark);
  const badConfig = await get(`${dev.base}/fn/v/`);
  assert.equal(badConfig.status, 502);
  assert.match(badConfig.json().error.message, /Invalid config for function "v": timeout/);

  mark = dev.lines.length;
  write('export const v = async (): Promise<string> => "v5";\n');
  await dev.waitForLine(/^reloaded in/, mark);
  assert.equal((await get(`${dev.base}/fn/v/`)).text, "v5");
});

test("a timed-out or crashed child answers 504 / 502 and is replaced on the next request", async () => {
  const dir = join(tmp, "faults");
  spawnSync("mkdir", ["-p", dir]);
  writeFileSync(
    join(dir, "index.js"),
    `module.exports.slow = { func: async (req) => { if (req.query.wait) await new Promise(() => {}); return "fast"; }, config: { timeout: 300 } };
module.exports.crashy = async (req) => { if (req.query.crash) { setImmediate(() => { throw new Error("kaboom"); }); await new Promise(() => {}); } return "alive"; };
module.exports.thrower = async () => { throw new Error("visible in dev"); };\n`,
  );
  writeFileSync(join(dir, "package.json"), '{"name":"faults"}');
  const dev = await startDev(dir);
  const t = await get(`${dev.base}/fn/slow/?wait=1`);
  assert.equal(t.status, 504);
  assert.equal(t.json().error.code, "FUNCTION_TIMEOUT");
  const t2 = await get(`${dev.base}/fn/slow/`);
  assert.equal(t2.text, "fast");
  assert.equal(t2.headers[HEADERS.coldStart], "true");

  const c = await get(`${dev.base}/fn/crashy/?crash=1`);
  assert.equal(c.status, 502);
  assert.equal(c.json().error.code, "FUNCTION_CRASHED");
  const c2 = await get(`${dev.base}/fn/crashy/`);
  assert.equal(c2.text, "alive");

  // A JSON caller gets the envelope with the stack; without Accept the body is text (as on Cloud Functions), stack included.
  const e = await get(`${dev.base}/fn/thrower/`, { headers: { accept: "application/json" } });
  assert.equal(e.status, 500);
  assert.match(e.json().error.details.stack, /visible in dev[\s\S]*index\.js:3/);
  const eText = await get(`${dev.base}/fn/thrower/`);
  assert.equal(eText.status, 500);
  assert.match(eText.text, /^FUNCTION_ERROR: The function threw an error: [\s\S]*visible in dev[\s\S]*index\.js:3/);
  await dev.waitForLine(/\[thrower [0-9a-f]{8}\] error Function "thrower" threw/);
});

test("dev serves through the production gateway: Host kept, client x-stratus-* stripped, request id sanitised, name not decoded, production error heads", async () => {
  const dir = join(tmp, "parity");
  spawnSync("mkdir", ["-p", dir]);
  writeFileSync(join(dir, "package.json"), '{"name":"parity"}');
  writeFileSync(
    join(dir, "index.js"),
    `module.exports.echo = async (req) => ({ host: req.headers.host, rid: req.headers["x-stratus-request-id"],
  stratus: Object.keys(req.headers).filter((k) => k.startsWith("x-stratus-")).sort(), deadline: req.headers["x-stratus-deadline-ms"] });
module.exports.secret = { func: async () => "private ok", config: { public: false } };\n`,
  );
  const dev = await startDev(dir);

  const r = await get(`${dev.base}/fn/echo/`, { headers: { host: "api.example.test:8443", "x-stratus-forged": "1", "x-stratus-deadline-ms": "1", "x-stratus-cold-start": "false" } });
  assert.equal(r.status, 200, r.text);
  const seen = r.json();
  assert.equal(seen.host, "api.example.test:8443", "the function sees the Host it was called by");
  assert.deepEqual(seen.stratus, [HEADERS.deadlineMs, HEADERS.requestId], "only the gateway's own x-stratus-* headers reach the function");
  assert.notEqual(seen.deadline, "1", "a client cannot set the deadline header");
  assert.equal(r.headers[HEADERS.requestId], seen.rid, "the response names the id the function saw");
  assert.ok(r.headers["server-timing"], "Server-Timing as in production");

  const sane = await get(`${dev.base}/fn/echo/`, { headers: { [HEADERS.requestId]: "client-id_1.2:3" } });
  assert.equal(sane.json().rid, "client-id_1.2:3", "a sane client request id is kept");
  assert.equal(sane.headers[HEADERS.requestId], "client-id_1.2:3");
  const insane = await get(`${dev.base}/fn/echo/`, { headers: { [HEADERS.requestId]: "not sane; <script>" } });
  assert.match(insane.json().rid, /^[0-9a-f-]{36}$/, "an insane client request id is replaced by a fresh one");
  assert.equal(insane.headers[HEADERS.requestId], insane.json().rid);
  const tooLong = await get(`${dev.base}/fn/echo/`, { headers: { [HEADERS.requestId]: "a".repeat(129) } });
  assert.match(tooLong.json().rid, /^[0-9a-f-]{36}$/, "an over-long request id is replaced");

  const secret = await get(`${dev.base}/fn/secret/`);
  assert.equal(secret.status, 200, "a non-public function needs no token in dev (there is no control plane to issue one)");
  assert.equal(secret.text, "private ok");

  const encoded = await get(`${dev.base}/fn/%65cho/`);
  assert.equal(encoded.status, 400, "the function name is not percent-decoded");
  assert.equal(encoded.json().error.code, "INVALID_FUNCTION_NAME");

  const missing = await get(`${dev.base}/fn/nope/`, { headers: { [HEADERS.requestId]: "rid-404" } });
  assert.equal(missing.status, 404);
  assert.equal(missing.json().error.requestId, "rid-404");
  assert.equal(missing.headers[HEADERS.requestId], "rid-404");
  assert.equal(missing.headers[HEADERS.coldStart], "false", "platform errors carry the gateway's headers");
  assert.ok(missing.headers["server-timing"]);
  const outside = await get(`${dev.base}/elsewhere`);
  assert.equal(outside.status, 404);
  assert.equal(outside.json().error.code, "NOT_FOUND");
  await dev.waitForLine(/^GET \/fn\/nope\/ 404 [\d.]+ms$/);
  await dev.waitForLine(/^GET \/fn\/echo\/ 200 [\d.]+ms warm$/);
});

test("dev lists functions with the shared discovery parser", async () => {
  const dir = join(tmp, "discovery");
  spawnSync("mkdir", ["-p", dir]);
  writeFileSync(join(dir, "package.json"), '{"name":"discovery"}');
  writeFileSync(join(dir, "index.js"), 'module.exports.f = async () => "ok";\n');
  const dev = await startDev(dir);
  assert.equal((await get(`${dev.base}/fn/f/`)).text, "ok");
  // A module that exits while loading prints no function list: the message is the shared parser's
  // (src/sandbox/discovery-output.ts), the same a deploy reports.
  const mark = dev.lines.length;
  writeFileSync(join(dir, "index.js"), 'process.exit(0);\nmodule.exports.f = async () => "never";\n');
  await dev.waitForLine(/^✗ the module printed no function list \(exit code 0\)$/, mark);
  const r = await get(`${dev.base}/fn/f/`);
  assert.equal(r.status, 502);
  assert.equal(r.json().error.code, "FUNCTION_LOAD_FAILED");
  assert.equal(r.json().error.message, "the module printed no function list (exit code 0)");
});

test("missing npm dependencies: the exact command to run without a lockfile, installed from the lockfile with one", async () => {
  const dir = join(tmp, "deps");
  spawnSync("mkdir", ["-p", join(dir, "vendor", "greeting")]);
  writeFileSync(join(dir, "vendor", "greeting", "package.json"), '{"name":"greeting","version":"1.0.0","main":"index.js"}');
  writeFileSync(join(dir, "vendor", "greeting", "index.js"), "module.exports = (n) => `hi ${n}`;\n");
  writeFileSync(join(dir, "package.json"), '{"name":"deps","version":"1.0.0","dependencies":{"greeting":"file:./vendor/greeting"}}');
  writeFileSync(join(dir, "index.js"), 'const greet = require("greeting");\nmodule.exports.hi = async () => greet("dev");\n');
  const dev = await startDev(dir);
  const noLock = await dev.waitForLine(/^✗ /);
  assert.equal(noLock, `✗ package.json lists dependencies that are not installed (greeting) and there is no package-lock.json: run \`npm install\` in ${dir}`);
  assert.ok(!dev.lines.some((l) => /Could not resolve/.test(l)), "never the bundler's bare error");

  // What `npm install` would write: the dev server reloads on the lockfile and installs from it.
  const mark = dev.lines.length;
  writeFileSync(
    join(dir, "package-lock.json"),
    JSON.stringify({
      name: "deps", version: "1.0.0", lockfileVersion: 3, requires: true,
      packages: {
        "": { name: "deps", version: "1.0.0", dependencies: { greeting: "file:./vendor/greeting" } },
        "node_modules/greeting": { resolved: "vendor/greeting", link: true },
        "vendor/greeting": { version: "1.0.0" },
      },
    }),
  );
  await dev.waitForLine(/^installing dependencies from the lockfile \(missing: greeting\)$/, mark);
  await dev.waitForLine(/^\s+\$ npm ci --no-audit/, mark);
  await dev.waitForLine(/^(re)?loaded in|^built in/, mark);
  assert.ok(existsSync(join(dir, "node_modules", "greeting", "package.json")), "npm ci installed the dependency");
  const r = await get(`${dev.base}/fn/hi/`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.text, "hi dev");
});

test("dev: a dependency that reads its own files (left external) loads from the project's node_modules", async () => {
  const dir = join(tmp, "own-files");
  const files: Record<string, string> = {
    "package.json": '{"name":"own-files"}',
    "index.js": 'const cows = require("cowlike");\nmodule.exports.moo = (req, res) => res.send(cows);\n',
    "node_modules/cowlike/package.json": '{"name":"cowlike","main":"lib/index.js"}',
    "node_modules/cowlike/lib/index.js": 'module.exports = require("fs").readFileSync(require("path").join(__dirname, "../cows/default.cow"), "utf8");\n',
    "node_modules/cowlike/cows/default.cow": "(oo) from the package's own folder",
  };
  for (const [file, text] of Object.entries(files)) {
    spawnSync("mkdir", ["-p", join(dir, file, "..")]);
    writeFileSync(join(dir, file), text);
  }
  const dev = await startDev(dir);
  await dev.waitForLine(/packages reading their own files left external: cowlike/);
  const r = await get(`${dev.base}/fn/moo/`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.text, "(oo) from the package's own folder");
});
