// The public API against a real platform (process driver, SQLite, gateway): every refusal
// (authentication, hostile archives, names, config, build failures, crash on load) with its code,
// and the OpenAPI document listing every route of the router.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { gzipSync } from "node:zlib";
import { createApiApp } from "../src/control/api";
import type { ApiContext } from "../src/control/api-context";
import { createSilentLogger } from "../src/shared/logger";
import { readFile } from "node:fs/promises";
import { createNodeClient } from "../src/control/node-client";
import { deriveLinkKeys } from "../src/shared/node-protocol";
import { createLinkClient } from "../src/shared/node-link";
import { deploy, project, startPlatform, type PlatformFixture } from "./helpers/platform-fixture";
import { makeTarGz, type TarEntry } from "./helpers/make-tar-gz";

const MAX_ARCHIVE = 64 * 1024;
let fx: PlatformFixture;

before(async () => {
  fx = await startPlatform({ "build.maxArchiveBytes": MAX_ARCHIVE });
});
after(async () => {
  await fx?.close();
});

async function api(method: string, path: string, options: { token?: string | null; body?: unknown } = {}) {
  const token = options.token === undefined ? fx.token : options.token;
  const res = await fetch(fx.url + path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(options.body === undefined ? {} : { "content-type": "application/json" }) },
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
}

function assertError(r: { status: number; headers: Headers; body: { error?: { code?: string; requestId?: string } } }, status: number, code: string) {
  assert.equal(r.status, status, JSON.stringify(r.body));
  assert.equal(r.body.error?.code, code);
  assert.equal(typeof r.body.error?.requestId, "string");
  assert.equal(r.headers.get("x-stratus-error-source"), code === "BUILD_FAILED" ? "function" : "platform");
}

async function invoke(name: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`${fx.url}/fn/${name}/`);
  return { status: res.status, text: await res.text() };
}

test("health is public; everything else needs a valid token", async () => {
  assert.equal((await api("GET", "/healthz", { token: null })).status, 200);
  assert.equal((await api("GET", "/readyz", { token: null })).status, 200);
  assertError(await api("GET", "/api/v1/functions", { token: null }), 401, "UNAUTHENTICATED");
  assertError(await api("GET", "/api/v1/functions", { token: "stx_nope_bad" }), 401, "UNAUTHENTICATED");
  assertError(await api("GET", "/api/v1/tokens", { token: fx.token.slice(0, -1) + (fx.token.endsWith("A") ? "B" : "A") }), 401, "UNAUTHENTICATED");
  const res = await fetch(`${fx.url}/api/v1/deployments`, { method: "POST", headers: { "content-type": "application/gzip" }, body: gzipSync("x") });
  assert.equal(res.status, 401, "an upload without a token is refused before anything is read");
  assert.equal((await api("GET", "/api/v1/functions")).status, 200);
});

test("a revoked token is refused at once; the secret is shown only at creation", async () => {
  const created = await api("POST", "/api/v1/tokens", { body: { name: "ci" } });
  assert.equal(created.status, 201);
  assert.match(created.body.token, /^stx_/);
  const t = created.body.token as string;
  assert.equal((await api("GET", "/api/v1/functions", { token: t })).status, 200);
  const listed = await api("GET", "/api/v1/tokens");
  assert.ok(listed.body.tokens.some((x: { id: string }) => x.id === created.body.id));
  assert.ok(!JSON.stringify(listed.body).includes(t), "listing never shows secrets");
  assert.equal((await api("DELETE", `/api/v1/tokens/${created.body.id}`)).status, 200);
  assertError(await api("GET", "/api/v1/functions", { token: t }), 401, "UNAUTHENTICATED");
  assertError(await api("DELETE", "/api/v1/tokens/doesnotexist"), 404, "NOT_FOUND");
});

test("invalid input: names, unknown fields, bad JSON, unknown routes", async () => {
  assertError(await api("GET", "/api/v1/functions/9bad"), 400, "INVALID_FUNCTION_NAME");
  assertError(await api("GET", `/api/v1/functions/${"a".repeat(64)}`), 400, "INVALID_FUNCTION_NAME");
  assertError(await api("GET", "/api/v1/functions/ghost"), 404, "FUNCTION_NOT_FOUND");
  assertError(await api("PATCH", "/api/v1/functions/ghost/env", { body: { set: { A: "1" } } }), 404, "FUNCTION_NOT_FOUND");
  assertError(await api("POST", "/api/v1/tokens", { body: { name: "x", admin: true } }), 400, "INVALID_ARGUMENT");
  const bad = await fetch(`${fx.url}/api/v1/tokens`, { method: "POST", headers: { authorization: `Bearer ${fx.token}`, "content-type": "application/json" }, body: "{nope" });
  assert.equal(bad.status, 400);
  assert.equal(((await bad.json()) as { error: { code: string } }).error.code, "INVALID_ARGUMENT");
  assertError(await api("GET", "/api/v1/nothing"), 404, "NOT_FOUND");
  assertError(await api("PUT", "/api/v1/tokens"), 405, "METHOD_NOT_ALLOWED");
  const d = await deploy(fx, await project({ "index.js": "module.exports.x = () => 1" }), "?only=bad.name");
  assertError({ status: d.status, headers: new Headers({ "x-stratus-error-source": "platform" }), body: d.body as never }, 400, "INVALID_FUNCTION_NAME");
  const wrongType = await fetch(`${fx.url}/api/v1/deployments`, { method: "POST", headers: { authorization: `Bearer ${fx.token}`, "content-type": "text/plain" }, body: "x" });
  assert.equal(wrongType.status, 415);
});

const hostile: Array<{ title: string; entries: TarEntry[] }> = [
  { title: "absolute path", entries: [{ name: "/tmp/stratus-api-evil" }] },
  { title: "dot-dot", entries: [{ name: "index.js" }, { name: "../../stratus-api-evil" }] },
  { title: "symlink", entries: [{ name: "link", type: "symlink", linkname: "/etc/passwd" }] },
  { title: "symlink then write through it", entries: [{ name: "d", type: "symlink", linkname: ".." }, { name: "d/stratus-api-evil" }] },
  { title: "hardlink", entries: [{ name: "h", type: "link", linkname: "/etc/passwd" }] },
  { title: "character device", entries: [{ name: "null", type: "character-device" }] },
  { title: "fifo", entries: [{ name: "pipe", type: "fifo" }] },
];

test("hostile archives are refused with 400 INVALID_ARCHIVE and nothing is written outside a temp dir", async () => {
  const tmpBefore = await readdir(join(fx.dataDir, "tmp"));
  for (const h of hostile) {
    const d = await deploy(fx, await makeTarGz(h.entries));
    assert.equal(d.status, 400, h.title);
    assert.equal((d.body as { error: { code: string } }).error.code, "INVALID_ARCHIVE", h.title);
  }
  const garbage = await deploy(fx, Buffer.from("definitely not gzip"));
  assert.equal((garbage.body as { error: { code: string } }).error.code, "INVALID_ARCHIVE");
  assert.deepEqual(await readdir(join(fx.dataDir, "tmp")), tmpBefore, "the fresh temp dirs are removed");
  for (const dir of [tmpdir(), "/tmp", fx.dataDir]) assert.ok(!(await readdir(dir)).includes("stratus-api-evil"), dir);
});

test("oversized uploads: 413 ARCHIVE_TOO_LARGE from Content-Length and while streaming; gzip bombs too", async () => {
  const big = Buffer.alloc(MAX_ARCHIVE + 1024, 7);
  const declared = await deploy(fx, big);
  assert.equal(declared.status, 413);
  assert.equal((declared.body as { error: { code: string } }).error.code, "ARCHIVE_TOO_LARGE");
  // No Content-Length: a chunked stream counted as it arrives.
  const res = await fetch(`${fx.url}/api/v1/deployments`, {
    method: "POST",
    headers: { authorization: `Bearer ${fx.token}`, "content-type": "application/gzip" },
    body: new ReadableStream({ start(c) { for (let i = 0; i < 20; i++) c.enqueue(new Uint8Array(8192).fill(1)); c.close(); } }),
    duplex: "half",
  } as RequestInit);
  assert.ok(res.status === 413 || res.status === 400, `status ${res.status}`);
  // A small gzip that inflates past the unpacked cap (200 MiB default): refused while inflating.
  const bomb = await makeTarGz([{ name: "zeros.bin", body: "\0".repeat(64 * 1024 * 1024) }]);
  assert.ok(bomb.length < MAX_ARCHIVE, `bomb is ${bomb.length} bytes`);
  const small = await startPlatform({ "build.maxArchiveBytes": MAX_ARCHIVE, "build.maxUnpackedBytes": 1024 * 1024 });
  try {
    const d = await deploy(small, bomb);
    assert.equal(d.status, 413);
    assert.equal((d.body as { error: { code: string } }).error.code, "ARCHIVE_TOO_LARGE");
  } finally {
    await small.close();
  }
});

test("deploy, then a build failure, a bad config and a crash on load all keep the old version serving", async () => {
  const v1 = await deploy(fx, await project({
    "package.json": JSON.stringify({ name: "keep", main: "index.js" }),
    "index.js": `module.exports.keeper = { func: async (req, res) => res.send("v1"), config: { timeout: 5000 } };`,
  }));
  assert.equal(v1.final?.type, "result", JSON.stringify(v1.events));
  assert.equal(v1.final?.functions?.[0]?.status, "activated");
  assert.ok(v1.events.some((e) => e.type === "log"));
  assert.equal((await invoke("keeper")).text, "v1");

  const syntax = await deploy(fx, await project({ "index.js": "module.exports.keeper = { func: (req, res) => { res.send('v2' }" }));
  assert.equal(syntax.final?.type, "error");
  assert.equal(syntax.final?.error?.code, "BUILD_FAILED");
  assert.equal((await invoke("keeper")).text, "v1");

  const badConfig = await deploy(fx, await project({ "index.js": `module.exports.keeper = { func: async (req, res) => res.send("v3"), config: { timeout: "soon", bogus: 1 } };` }));
  assert.equal(badConfig.final?.error?.code, "INVALID_CONFIG");
  assert.match(badConfig.final?.error?.message ?? "", /keeper/);
  assert.match(badConfig.final?.error?.message ?? "", /timeout/);
  assert.equal((await invoke("keeper")).text, "v1");

  // Discovery runs without the function's env, so this version loads there and crashes only in a
  // real instance: the verification start catches it before the switch.
  assert.equal((await api("PATCH", "/api/v1/functions/keeper/env", { body: { set: { CRASH_ON_LOAD: "1" } } })).status, 200);
  const crash = await deploy(fx, await project({
    "index.js": `if (process.env.CRASH_ON_LOAD === "1") throw new Error("boom at load");\nmodule.exports.keeper = { func: async (req, res) => res.send("v4") };`,
  }));
  assert.equal(crash.final?.type, "error", JSON.stringify(crash.events));
  assert.equal(crash.final?.error?.code, "FUNCTION_LOAD_FAILED");
  assert.equal((await invoke("keeper")).text, "v1");
  const fn = await api("GET", "/api/v1/functions/keeper");
  assert.equal(fn.body.activeVersion, v1.final?.functions?.[0]?.version);
  assert.equal(fn.body.url, `${fx.url}/fn/keeper`);
});

test("secrets are never returned and reach only their function; env changes roll instances", async () => {
  const d = await deploy(fx, await project({
    "index.js": `module.exports.peek = { handler: async () => ({ s: process.env.TOKEN_X ?? null, e: process.env.MODE ?? null }) };\nmodule.exports.other = { handler: async () => ({ s: process.env.TOKEN_X ?? null }) };`,
  }));
  assert.equal(d.final?.type, "result", JSON.stringify(d.events));
  const set = await api("PATCH", "/api/v1/functions/peek/secrets", { body: { set: { TOKEN_X: "hunter2-very-secret" } } });
  assert.equal(set.status, 200);
  assert.deepEqual(set.body, { secrets: [{ name: "TOKEN_X" }] });
  assert.ok(!JSON.stringify((await api("GET", "/api/v1/functions/peek/secrets")).body).includes("hunter2"));
  await api("PATCH", "/api/v1/functions/peek/env", { body: { set: { MODE: "blue" } } });
  assert.deepEqual(JSON.parse((await invoke("peek")).text), { s: "hunter2-very-secret", e: "blue" });
  assert.deepEqual(JSON.parse((await invoke("other")).text), { s: null });
  assertError(await api("PATCH", "/api/v1/functions/peek/env", { body: { set: { STRATUS_X: "1" } } }), 400, "INVALID_ARGUMENT");
  await api("PATCH", "/api/v1/functions/peek/secrets", { body: { unset: ["TOKEN_X"] } });
  assert.deepEqual(JSON.parse((await invoke("peek")).text), { s: null, e: "blue" });
});

test("non-public functions need a valid token at the gateway", async () => {
  const d = await deploy(fx, await project({ "index.js": `module.exports.private1 = { handler: async () => "inside", config: { public: false } };` }));
  assert.equal(d.final?.type, "result", JSON.stringify(d.events));
  assert.equal((await invoke("private1")).status, 401);
  const ok = await fetch(`${fx.url}/fn/private1/`, { headers: { authorization: `Bearer ${fx.token}` } });
  assert.equal(ok.status, 200);
  assert.equal(await ok.text(), "inside");
});

test("a restart serves what was deployed (the control plane pushes every active version)", async () => {
  const before = (await api("GET", "/api/v1/functions")).body.functions.map((f: { name: string }) => f.name);
  assert.ok(before.includes("keeper"));
  await fx.restart();
  assert.equal((await invoke("keeper")).text, "v1");
  assert.equal((await api("GET", "/readyz", { token: null })).status, 200);
});

test("the internal node API needs the node token and validates deployments", async () => {
  const socketPath = join(fx.dataDir, "node.sock");
  const secret = (await readFile(join(fx.dataDir, "node.token"), "utf8")).trim();
  const keys = deriveLinkKeys(secret);
  const wrong = createNodeClient(`unix:${socketPath}`, "not-the-control-key");
  // The node's own key is not the control plane's: a node cannot be driven with the key it presents.
  const swapped = createNodeClient(`unix:${socketPath}`, keys.node);
  const right = createNodeClient(`unix:${socketPath}`, keys.control);
  try {
    await assert.rejects(wrong.status("keeper"), { code: "UNAUTHENTICATED" });
    await assert.rejects(swapped.status("keeper"), { code: "UNAUTHENTICATED" });
    const st = await right.status("keeper");
    assert.equal(typeof st.instances, "number");
    assert.equal(st.version, (await api("GET", "/api/v1/functions/keeper")).body.activeVersion);
    await assert.rejects(right.verify({ name: "x" } as never), { code: "INVALID_ARGUMENT" });
    await assert.rejects(right.status("bad.name"), { code: "INVALID_FUNCTION_NAME" });
    await assert.rejects(right.applyState({ controlId: "x", revision: -1 } as never), { code: "INVALID_ARGUMENT" });
    const health = await right.health();
    assert.equal(health.ok, true);
    assert.equal(typeof health.revision, "number");
  } finally {
    await wrong.close();
    await swapped.close();
    await right.close();
  }
});

test("the control plane's side of the protocol needs the node key, serves artifacts by digest only", async () => {
  const socketPath = join(fx.dataDir, "control.sock");
  const secret = (await readFile(join(fx.dataDir, "node.token"), "utf8")).trim();
  const keys = deriveLinkKeys(secret);
  const bad = createLinkClient(`unix:${socketPath}`, keys.control, "control plane");
  const good = createLinkClient(`unix:${socketPath}`, keys.node, "control plane");
  try {
    await assert.rejects(bad.call("GET", "/internal/v1/desired-state"), { code: "UNAUTHENTICATED" });
    const state = await good.call<{ revision: number; functions: Array<{ name: string; digest: string; artifactDir?: string }>; tokenHashes: string[] }>("GET", "/internal/v1/desired-state");
    const keeper = state.functions.find((f) => f.name === "keeper");
    assert.ok(keeper, "the desired state lists the active function");
    assert.match(keeper.digest, /^sha256-[0-9a-f]{64}$/);
    assert.equal(keeper.artifactDir, undefined, "no host path crosses the protocol");
    assert.ok(state.tokenHashes.length >= 1);
    const body = await good.stream(`/internal/v1/artifacts/${keeper.digest}`);
    let bytes = 0;
    for await (const chunk of body) bytes += (chunk as Buffer).length;
    assert.ok(bytes > 0);
    await assert.rejects(good.call("GET", "/internal/v1/artifacts/..%2F..%2Fstratus.db"), { code: "INVALID_ARGUMENT" });
    await assert.rejects(good.call("GET", `/internal/v1/artifacts/sha256-${"0".repeat(64)}`), { code: "NOT_FOUND" });
  } finally {
    await bad.close();
    await good.close();
  }
});

test("the OpenAPI document lists every route of the router", async () => {
  const doc = (await api("GET", "/api/v1/openapi.json", { token: null })).body as { openapi: string; paths: Record<string, Record<string, unknown>> };
  assert.match(doc.openapi, /^3\./);
  const app = createApiApp({ logger: createSilentLogger() } as unknown as ApiContext);
  const routes: Array<[string, string]> = [];
  const walk = (stack: Array<{ route?: { path: string; methods: Record<string, boolean> }; handle?: { stack?: unknown } }>) => {
    for (const layer of stack) {
      if (layer.route) for (const m of Object.keys(layer.route.methods)) routes.push([m, layer.route.path]);
      else if (Array.isArray(layer.handle?.stack)) walk(layer.handle.stack as never);
    }
  };
  walk((app as unknown as { router: { stack: never } }).router.stack);
  assert.ok(routes.length >= 15, `found ${routes.length} routes`);
  for (const [method, path] of routes) {
    const openapiPath = path.replace(/:([A-Za-z]+)/g, "{$1}");
    assert.ok(doc.paths[openapiPath]?.[method], `${method.toUpperCase()} ${path} is missing from openapi.json`);
  }
});
