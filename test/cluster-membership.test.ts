// Cluster membership with real OS processes on loopback addresses: one PostgreSQL (private port), two
// control planes sharing it (A on 127.0.0.2, B on 127.0.0.5, same master key), node agents that join
// with admin-issued join tokens (127.0.0.3, 127.0.0.4). Covers: join tokens (API, CLI, OpenAPI); wrong,
// expired and revoked join tokens and wrong or revoked credentials refused with their codes and given
// nothing; a stable numeric id kept across restarts; the credential file (0600); secrets only in memory
// (the node's data dir is grepped for a canary); heartbeats with load, `stratus nodes`, lost after
// ~10 s; drain (`/readyz` 404) through either control plane; a change made through A served by a node
// connected to B within 1 s (LISTEN/NOTIFY); a removed node refused at once and dropping what it held;
// a node that refuses an impostor control plane. Needs root (bubblewrap, cgroups), PostgreSQL and `npm run build`.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer as createHttpServer } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { STRATUS_BIN } from "./helpers/stratus-cli";
import { deploy, project } from "./helpers/platform-fixture";
import { startPostgres, type PostgresServer } from "./helpers/postgres-server";

let root = "";
let pgServer: PostgresServer | undefined;
let storeUrl = "";
const children = new Set<ChildProcess>();
const output: string[] = [];
let urlA = "";
let urlB = "";
let admin = "";

function baseEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: join(root, "home"), STRATUS_CONFIG_DIR: join(root, "cfg"), STRATUS_LOG_LEVEL: "warn", ...extra };
}

/** Starts `stratus <args>`; resolves with its first JSON stdout line. */
function startJson(args: string[], env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; info: Record<string, unknown>; stderr: () => string }> {
  const child = spawn(process.execPath, [STRATUS_BIN, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  child.once("exit", () => children.delete(child));
  let out = "";
  let err = "";
  child.stderr!.on("data", (c: Buffer) => {
    err += c.toString();
    output.push(c.toString());
  });
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`stratus ${args[0]} did not start in 60 s:\n${err}`)), 60_000);
    // Log lines (JSON with a `level`) share stdout; the start-up line is the first without one.
    let done = false;
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      for (let nl = out.indexOf("\n"); nl !== -1 && !done; nl = out.indexOf("\n")) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(line) as Record<string, unknown>;
        } catch (e) {
          done = true;
          clearTimeout(timer);
          return rej(e as Error);
        }
        if ("level" in parsed) {
          output.push(line + "\n");
          continue;
        }
        done = true;
        clearTimeout(timer);
        res({ child, info: parsed, stderr: () => err });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      rej(Object.assign(new Error(`stratus ${args[0]} exited with ${code}:\n${err}`), { code, stderr: err }));
    });
  });
}

/** Runs `stratus <args>` to completion (bounded). */
async function run(args: string[], env: NodeJS.ProcessEnv, ms = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [STRATUS_BIN, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  const [code] = (await once(child, "exit")) as [number | null];
  clearTimeout(timer);
  children.delete(child);
  return { code, stdout, stderr };
}

async function stop(child: ChildProcess | undefined, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await once(child, "exit").catch(() => {});
  clearTimeout(timer);
}

async function api(base: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${base}${path}`, {
    method, headers: { authorization: `Bearer ${admin}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text === "" ? null : JSON.parse(text) };
}

/** Polls `check` every `stepMs` for at most `ms`. */
async function eventually<T>(what: string, ms: number, check: () => Promise<T | undefined>, stepMs = 100): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms\n${output.join("").slice(-3000)}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

let subnet = 0;
/** Starts a node agent joining `control`; each gets its own data dir and sandbox subnet. */
function startNode(name: string, host: string, control: string, extra: string[], env: Record<string, string> = {}) {
  const dataDir = join(root, name);
  return {
    dataDir,
    started: startJson(["node", "--control", control, "--listen", `${host}:0`, "--data-dir", dataDir, "--node-id", name, "--json", ...extra],
      baseEnv({ STRATUS_PROCESS_SANDBOX_SUBNET: `10.${210 + subnet++}.0.0/16`, ...env })),
  };
}

async function createJoinToken(base: string, ttlSeconds = 3600): Promise<{ id: string; token: string }> {
  const r = await api(base, "POST", "/api/v1/join-tokens", { name: "test", ttlSeconds });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body as { id: string; token: string };
}

/** Every file under `dir` (bounded depth), for the canary grep. */
function filesUnder(dir: string, depth = 0): string[] {
  if (depth > 12 || !existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p, depth + 1));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

const FN = `module.exports.greet = { handler: async () => "hello " + (process.env.GREETING ?? "none") };
module.exports.vault = { handler: async () => "secret=" + (process.env.CANARY ?? "missing") };`;

before(async () => {
  if (!existsSync(resolve("dist/cli.js")) || !existsSync(resolve("dist/runtime.cjs"))) throw new Error("dist/ is missing: run `npm run build` first");
  root = await mkdtemp(join(tmpdir(), "st-members-"));
  pgServer = await startPostgres();
  storeUrl = await pgServer.createDatabase(`members_${process.pid}`);
  const cpEnv = baseEnv({ STRATUS_NODE_TOKEN: "membership-test-shared-secret-0123456789" });
  const a = await startJson(["control", "--host", "127.0.0.2", "--port", "0", "--data-dir", join(root, "cA"), "--store", storeUrl, "--json"], cpEnv);
  urlA = String(a.info.url);
  admin = String(a.info.adminToken);
  // B shares the store, so it needs A's master key (secrets are encrypted under it).
  await mkdir(join(root, "cB"), { recursive: true, mode: 0o700 });
  await copyFile(join(root, "cA", "master.key"), join(root, "cB", "master.key"));
  const b = await startJson(["control", "--host", "127.0.0.5", "--port", "0", "--data-dir", join(root, "cB"), "--store", storeUrl, "--json"], cpEnv);
  urlB = String(b.info.url);
  assert.equal(b.info.adminToken, null, "the second control plane found the first one's tokens in the shared store");
});

after(async () => {
  for (const c of [...children]) await stop(c);
  await pgServer?.stop();
  if (root !== "") {
    // A SIGKILLed node leaves its driver's mounts behind (the next start's reconcile would remove them):
    // unmount ours, deepest first, then remove the tree.
    const mounts = readFileSync("/proc/self/mounts", "utf8").split("\n").map((l) => l.split(" ")[1] ?? "").filter((m) => m.startsWith(`${root}/`));
    for (const m of mounts.sort((a, b) => b.length - a.length)) spawnSync("umount", ["-l", m]);
    await rm(root, { recursive: true, force: true });
  }
});

test("join tokens: created, listed and revoked through the API and the CLI, documented in OpenAPI", async () => {
  const doc = (await (await fetch(`${urlA}/api/v1/openapi.json`)).json()) as { paths: Record<string, unknown> };
  for (const p of ["/api/v1/join-tokens", "/api/v1/join-tokens/{id}", "/api/v1/nodes", "/api/v1/nodes/{id}/drain", "/api/v1/nodes/{id}"]) assert.ok(doc.paths[p], `${p} is in the OpenAPI document`);
  const cli = await run(["node", "token", "create", "--ttl", "2h", "--name", "rack", "--json"], baseEnv({ STRATUS_URL: urlA, STRATUS_TOKEN: admin }));
  assert.equal(cli.code, 0, cli.stderr);
  const t = JSON.parse(cli.stdout) as { id: string; token: string; createdAt: number; expiresAt: number };
  assert.match(t.token, /^sjt_/);
  assert.equal(t.expiresAt - t.createdAt, 2 * 3600_000);
  // Listed through the OTHER control plane (one store), never with the secret.
  const listed = await api(urlB, "GET", "/api/v1/join-tokens");
  assert.ok((listed.body.joinTokens as Array<{ id: string }>).some((x) => x.id === t.id));
  assert.ok(!JSON.stringify(listed.body).includes(t.token.slice(-20)));
  const ls = await run(["node", "token", "ls"], baseEnv({ STRATUS_URL: urlA, STRATUS_TOKEN: admin }));
  assert.match(ls.stdout, new RegExp(t.id));
  const revoke = await run(["node", "token", "revoke", t.id], baseEnv({ STRATUS_URL: urlA, STRATUS_TOKEN: admin }));
  assert.equal(revoke.code, 0, revoke.stderr);
  assert.equal(typeof (await api(urlA, "GET", "/api/v1/join-tokens")).body.joinTokens.find((x: { id: string }) => x.id === t.id).revokedAt, "number");
  assert.equal((await run(["node", "token", "create", "--ttl", "forever"], baseEnv({ STRATUS_URL: urlA, STRATUS_TOKEN: admin }))).code, 1);
});

test("a wrong, expired or revoked join token is refused with its own code; the node exits 1 having received nothing", async () => {
  const revoked = await createJoinToken(urlA);
  assert.equal((await api(urlA, "DELETE", `/api/v1/join-tokens/${revoked.id}`)).status, 200);
  const expired = await createJoinToken(urlA, 1);
  await new Promise((r) => setTimeout(r, 1100));
  const wrong = `${revoked.token.slice(0, -4)}AAAA`;
  for (const [token, code] of [[wrong, "JOIN_TOKEN_INVALID"], ["sjt_nope_x", "JOIN_TOKEN_INVALID"], [expired.token, "JOIN_TOKEN_EXPIRED"], [revoked.token, "JOIN_TOKEN_REVOKED"]] as const) {
    const dir = join(root, `refused-${code}-${token.length}`);
    const r = await run(["node", "--control", urlB, "--listen", "127.0.0.3:0", "--data-dir", dir, "--node-id", "refused", "--join-token", token],
      baseEnv({ STRATUS_PROCESS_SANDBOX_SUBNET: "10.230.0.0/16" }));
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^${code}: `, "m"));
    assert.ok(!existsSync(join(dir, "node-credential.json")), "no credential");
    assert.ok(!existsSync(join(dir, "artifacts")) || readdirSync(join(dir, "artifacts")).length === 0, "no artifact");
    // The raw answer carries the error and nothing else.
    const raw = await fetch(`${urlB}/internal/v1/nodes/join`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ joinToken: token, nodeId: "refused", url: "http://127.0.0.3:1", driver: "process" }),
    });
    assert.equal(raw.status, 401);
    const body = (await raw.json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(body), ["error"]);
    assert.equal((body.error as { code: string }).code, code);
  }
  assert.deepEqual((await api(urlA, "GET", "/api/v1/nodes")).body.nodes, [], "no node was registered");
});

// State shared by the remaining tests, which run in order.
let n1: { child: ChildProcess; url: string; dataDir: string; stderr: () => string } | undefined;
let joinToken = "";

test("a node joins through control plane B: id 1, credential file 0600, listed with its load by A and B; `stratus nodes`", async () => {
  const jt = await createJoinToken(urlA);
  joinToken = jt.token;
  const { dataDir, started } = startNode("node-one", "127.0.0.3", urlB, [], { STRATUS_JOIN_TOKEN: joinToken });
  const s = await started;
  n1 = { child: s.child, url: String(s.info.url), dataDir, stderr: s.stderr };
  assert.equal(s.info.id, 1, JSON.stringify(s.info));
  assert.match(n1.url, /^http:\/\/127\.0\.0\.3:\d+$/);
  const credFile = join(dataDir, "node-credential.json");
  assert.equal(statSync(credFile).mode & 0o777, 0o600);
  const cred = JSON.parse(readFileSync(credFile, "utf8")) as { id: number; credential: string; controlKey: string };
  assert.equal(cred.id, 1);
  assert.match(cred.credential, /^snc_/);
  assert.equal((await fetch(`${n1.url}/readyz`)).status, 200);

  const seen = await eventually("a heartbeat with load", 10_000, async () => {
    const nodes = (await api(urlA, "GET", "/api/v1/nodes")).body.nodes as Array<{ id: number; state: string; load: unknown; connected: boolean; url: string }>;
    return nodes.length === 1 && nodes[0]!.load !== null ? nodes[0] : undefined;
  });
  assert.equal(seen.state, "ready");
  assert.equal(seen.url, n1.url);
  assert.equal(seen.connected, false, "connected to B, not A");
  const viaB = (await api(urlB, "GET", "/api/v1/nodes")).body.nodes as Array<{ connected: boolean; load: { memFreeBytes: number; instances: number } }>;
  assert.equal(viaB[0]!.connected, true);
  assert.ok(viaB[0]!.load.memFreeBytes > 0);
  const cli = await run(["nodes"], baseEnv({ STRATUS_URL: urlA, STRATUS_TOKEN: admin }));
  assert.equal(cli.code, 0, cli.stderr);
  assert.match(cli.stdout, /^ID\s+NAME\s+STATE/m);
  assert.match(cli.stdout, /^1\s+node-one\s+ready\s+http:\/\/127\.0\.0\.3/m);
});

test("a change made through control plane A is served by the node connected to B within 1 s; warm functions are listed", async () => {
  const d = await deploy({ url: urlB, token: admin }, await project({ "package.json": JSON.stringify({ name: "members" }), "index.js": FN }));
  assert.equal(d.final?.type, "result", JSON.stringify(d.events));
  const first = await fetch(`${n1!.url}/fn/greet/`);
  assert.equal(await first.text(), "hello none");
  for (const greeting of ["one", "two"]) {
    const t0 = Date.now();
    assert.equal((await api(urlA, "PATCH", "/api/v1/functions/greet/env", { set: { GREETING: greeting } })).status, 200);
    const text = await eventually(`GREETING=${greeting} on the node`, 1000, async () => {
      const t = await (await fetch(`${n1!.url}/fn/greet/`)).text();
      return t === `hello ${greeting}` ? t : undefined;
    }, 20);
    assert.equal(text, `hello ${greeting}`);
    assert.ok(Date.now() - t0 <= 1500, `served within about 1 s (${Date.now() - t0} ms)`);
  }
  await eventually("greet listed warm on node 1", 10_000, async () => {
    const nodes = (await api(urlA, "GET", "/api/v1/nodes")).body.nodes as Array<{ load: { warm: string[] } | null }>;
    return nodes[0]?.load?.warm.includes("greet") ? true : undefined;
  });
});

test("secrets reach the node only over the link and live only in its memory (its data dir holds no canary)", async () => {
  const canary = `canary-${process.pid}-${Date.now()}-7c1f`;
  assert.equal((await api(urlA, "PATCH", "/api/v1/functions/vault/secrets", { set: { CANARY: canary } })).status, 200);
  await eventually("the secret served", 2000, async () => {
    const t = await (await fetch(`${n1!.url}/fn/vault/`)).text();
    return t === `secret=${canary}` ? true : undefined;
  }, 50);
  const files = filesUnder(n1!.dataDir);
  assert.ok(files.length > 0 && files.some((f) => f.includes(`${join(n1!.dataDir, "artifacts")}`)), "the node cached artifacts on disk");
  const needle = Buffer.from(canary);
  for (const f of files) {
    let data: Buffer;
    try {
      data = await readFile(f);
    } catch {
      continue; // a socket or a file removed meanwhile
    }
    assert.equal(data.indexOf(needle), -1, `${f} holds the secret in plain text`);
  }
});

test("a wrong credential, or a caller without the control key, gets nothing", async () => {
  for (const [path, method] of [["/internal/v1/desired-state?have=-1", "GET"], ["/internal/v1/nodes/hello", "POST"], ["/internal/v1/nodes/heartbeat", "POST"], [`/internal/v1/artifacts/sha256-${"0".repeat(64)}`, "GET"]] as const) {
    const res = await fetch(`${urlB}${path}`, {
      method, headers: { authorization: "Bearer snc_bogus_0123456789", "content-type": "application/json" },
      ...(method === "POST" ? { body: JSON.stringify({ nodeId: "node-one", url: "http://127.0.0.3:1", driver: "process" }) } : {}),
    });
    assert.equal(res.status, 401, path);
    const body = (await res.json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(body), ["error"], path);
    assert.equal((body.error as { code: string }).code, "NODE_CREDENTIAL_INVALID", path);
  }
  const cred = JSON.parse(readFileSync(join(n1!.dataDir, "node-credential.json"), "utf8")) as { credential: string };
  // The right credential may only speak as its own node.
  const other = await fetch(`${urlB}/internal/v1/nodes/hello`, {
    method: "POST", headers: { authorization: `Bearer ${cred.credential}`, "content-type": "application/json" },
    body: JSON.stringify({ nodeId: "someone-else", url: "http://127.0.0.3:1", driver: "process" }),
  });
  assert.equal(other.status, 403);
  // The node refuses pushes not signed with its control key (the credential itself is not that key).
  const push = await fetch(`${n1!.url}/internal/v1/desired-state`, { method: "PUT", headers: { authorization: `Bearer ${cred.credential}` }, body: "{}" });
  assert.equal(push.status, 401);
  const drain = await fetch(`${n1!.url}/internal/v1/node-state`, { method: "PUT", headers: { authorization: `Bearer ${admin}` }, body: JSON.stringify({ state: "draining" }) });
  assert.equal(drain.status, 401);
  assert.equal((await fetch(`${n1!.url}/readyz`)).status, 200);
});

test("a node refuses an impostor control plane that does not hold the master key", async () => {
  const impostor = createHttpServer((req, res) => {
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ controlId: "evil", revision: 1, functions: [], tokenHashes: [] }));
  });
  await new Promise<void>((r) => impostor.listen(0, "127.0.0.6", r));
  try {
    const dir = join(root, "impostor-node");
    await mkdir(dir, { recursive: true });
    await copyFile(join(n1!.dataDir, "node-credential.json"), join(dir, "node-credential.json"));
    const r = await run(["node", "--control", `http://127.0.0.6:${(impostor.address() as { port: number }).port}`, "--listen", "127.0.0.3:0", "--data-dir", dir, "--node-id", "node-one"],
      baseEnv({ STRATUS_PROCESS_SANDBOX_SUBNET: "10.231.0.0/16" }));
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^CONTROL_PLANE_UNVERIFIED: /m);
  } finally {
    await new Promise((r) => impostor.close(r));
  }
});

let n2: { child: ChildProcess; url: string } | undefined;

test("drain through A (heartbeat) and through B (push): /readyz answers 404; undrain; `stratus node drain`", async () => {
  const env = baseEnv({ STRATUS_URL: urlA, STRATUS_TOKEN: admin });
  const d = await run(["node", "drain", "1"], env);
  assert.equal(d.code, 0, d.stderr);
  assert.match(d.stdout, /Node 1 \(node-one\) is draining/);
  await eventually("/readyz 404 via the heartbeat (the node is connected to B)", 6000, async () => ((await fetch(`${n1!.url}/readyz`)).status === 404 ? true : undefined));
  assert.equal((await fetch(`${n1!.url}/fn/greet/`)).status, 200, "draining only stops new work from the load balancer");
  const listed = (await api(urlA, "GET", "/api/v1/nodes")).body.nodes as Array<{ state: string }>;
  assert.equal(listed[0]!.state, "draining");
  assert.equal((await run(["node", "undrain", "1"], env)).code, 0);
  await eventually("/readyz 200 again", 6000, async () => ((await fetch(`${n1!.url}/readyz`)).status === 200 ? true : undefined));
  // Through B, which holds the node's connection: pushed, so at once.
  assert.equal((await api(urlB, "POST", "/api/v1/nodes/1/drain")).status, 200);
  assert.equal((await fetch(`${n1!.url}/readyz`)).status, 404, "pushed before the API answered");
  assert.equal((await api(urlB, "POST", "/api/v1/nodes/1/undrain")).status, 200);
  assert.equal((await fetch(`${n1!.url}/readyz`)).status, 200);
  assert.equal((await api(urlA, "POST", "/api/v1/nodes/42/drain")).status, 404);
  assert.equal((await api(urlA, "POST", "/api/v1/nodes/x/drain")).status, 400);
});

test("a restarted node keeps its id without a join token (the token revoked meanwhile); a second node takes id 2; a SIGKILLed node reads as lost", async () => {
  const jtId = ((await api(urlA, "GET", "/api/v1/join-tokens")).body.joinTokens as Array<{ id: string; revokedAt: number | null }>).filter((t) => t.revokedAt === null).map((t) => t.id);
  for (const id of jtId) assert.equal((await api(urlA, "DELETE", `/api/v1/join-tokens/${id}`)).status, 200);
  await stop(n1!.child);
  const again = startNode("node-one", "127.0.0.3", urlB, []);
  const s = await again.started;
  n1 = { child: s.child, url: String(s.info.url), dataDir: again.dataDir, stderr: s.stderr };
  assert.equal(s.info.id, 1, `the same numeric id: ${JSON.stringify(s.info)}`);
  assert.equal(await (await fetch(`${n1.url}/fn/greet/`)).text(), "hello two", "converged on the desired state");

  // Joined with a token made through B, through B: artifacts are kept in the data dir of the control
  // plane that built them (docs/cluster.md, "Limits"), and greet was deployed through B.
  const jt = await createJoinToken(urlB);
  const second = startNode("node-two", "127.0.0.4", urlB, ["--join-token", jt.token]);
  const s2 = await second.started;
  n2 = { child: s2.child, url: String(s2.info.url) };
  assert.equal(s2.info.id, 2, JSON.stringify(s2.info));
  assert.equal(await (await fetch(`${n2.url}/fn/greet/`)).text(), "hello two");

  await stop(n2.child, "SIGKILL");
  const lost = await eventually("node 2 lost", 20_000, async () => {
    const nodes = (await api(urlB, "GET", "/api/v1/nodes")).body.nodes as Array<{ id: number; state: string; lastSeen: number }>;
    const n = nodes.find((x) => x.id === 2);
    return n?.state === "lost" ? n : undefined;
  }, 250);
  assert.ok(Date.now() - lost.lastSeen >= 10_000, "lost after 10 s of silence");
  const cli = await run(["nodes"], baseEnv({ STRATUS_URL: urlA, STRATUS_TOKEN: admin }));
  assert.match(cli.stdout, /^2\s+node-two\s+lost/m);
  assert.match(cli.stdout, /^1\s+node-one\s+ready/m);
});

test("a removed node's credential stops working at once; the node drops what it held and exits 1", async () => {
  const cred = JSON.parse(readFileSync(join(n1!.dataDir, "node-credential.json"), "utf8")) as { credential: string };
  const exited = once(n1!.child, "exit") as Promise<[number | null]>;
  const rm1 = await run(["node", "rm", "1"], baseEnv({ STRATUS_URL: urlA, STRATUS_TOKEN: admin }));
  assert.equal(rm1.code, 0, rm1.stderr);
  // Through either control plane, at once (every request checks the store).
  for (const base of [urlA, urlB]) {
    const res = await fetch(`${base}/internal/v1/desired-state?have=-1`, { headers: { authorization: `Bearer ${cred.credential}` } });
    assert.equal(res.status, 401);
    const body = (await res.json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(body), ["error"]);
    assert.equal((body.error as { code: string }).code, "NODE_CREDENTIAL_REVOKED");
  }
  const timer = setTimeout(() => n1!.child.kill("SIGKILL"), 15_000);
  const [code] = await exited;
  clearTimeout(timer);
  assert.equal(code, 1, n1!.stderr());
  assert.match(n1!.stderr(), /^NODE_CREDENTIAL_REVOKED: /m);
  const nodes = (await api(urlA, "GET", "/api/v1/nodes")).body.nodes as Array<{ id: number }>;
  assert.deepEqual(nodes.map((n) => n.id), [2]);
  // The id is free for the next new node.
  const jt = await createJoinToken(urlA);
  const third = startNode("node-three", "127.0.0.3", urlB, ["--join-token", jt.token]);
  assert.equal((await third.started).info.id, 1, "the lowest free id");
});
