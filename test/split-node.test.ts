// The control plane and a node agent as two OS processes on two loopback addresses (127.0.0.2 and
// 127.0.0.3), with separate data dirs; the node runs in a private mount namespace where the control
// plane's data dir is an empty tmpfs, so it can only work through the node protocol. Covers deploy,
// invoke, logs (stored and live), invocation records, env change, redeploy, rollback, a private function
// with a token (revocation immediate), an async invocation through the node (handed to the control plane
// over the protocol, dispatched back to the node; 503 while the control plane is down), and a node restarted with an empty cache converging again.
// Needs root (bubblewrap, cgroups, mount namespaces) and `npm run build`.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { STRATUS_BIN } from "./helpers/stratus-cli";
import { deploy, project } from "./helpers/platform-fixture";
import { deriveLinkKeys } from "../src/shared/node-protocol";

const SECRET = "split-node-test-secret-0123456789abcdef";
let root = "";
let controlDir = "";
let nodeDir = "";
let control: ChildProcess | undefined;
let node: ChildProcess | undefined;
let controlUrl = "";
let nodeUrl = "";
let adminToken = "";
let controlPort = 0;
const output: string[] = [];

/** Starts `stratus <args>` and resolves with its first JSON stdout line. */
function startJson(args: string[], wrap: string[] = []): Promise<{ child: ChildProcess; info: Record<string, unknown> }> {
  const env = { PATH: process.env.PATH, HOME: join(root, "home"), STRATUS_CONFIG_DIR: join(root, "cfg"), STRATUS_LOG_LEVEL: "warn", STRATUS_NODE_TOKEN: SECRET };
  const cmd = wrap.length > 0 ? wrap[0]! : process.execPath;
  const argv = wrap.length > 0 ? [...wrap.slice(1), process.execPath, STRATUS_BIN, ...args] : [STRATUS_BIN, ...args];
  const child = spawn(cmd, argv, { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stderr!.on("data", (c: Buffer) => output.push(c.toString()));
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`stratus ${args[0]} did not start in 60 s:\n${output.join("")}`)), 60_000);
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      const nl = out.indexOf("\n");
      if (nl === -1) return;
      clearTimeout(timer);
      try {
        res({ child, info: JSON.parse(out.slice(0, nl)) as Record<string, unknown> });
      } catch (err) {
        rej(err as Error);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      rej(new Error(`stratus ${args[0]} exited with ${code}:\n${output.join("")}`));
    });
  });
}

/**
 * The node, in a private mount namespace where the control plane's data dir is hidden under an empty
 * tmpfs: anything it reads from there would be missing.
 */
async function startNode(): Promise<void> {
  const hide = ["unshare", "--mount", "--propagation", "private", "sh", "-c", `mount -t tmpfs -o size=1m,mode=0700 none '${controlDir}' && exec "$@"`, "sh"];
  const { child, info } = await startJson(["node", "--control", controlUrl, "--listen", "127.0.0.3:0", "--data-dir", nodeDir, "--node-id", "split-a", "--resync-ms", "500", "--json"], hide);
  node = child;
  nodeUrl = String(info.url);
}

async function startControl(): Promise<Record<string, unknown>> {
  const c = await startJson(["control", "--host", "127.0.0.2", "--port", String(controlPort), "--data-dir", controlDir, "--json"]);
  control = c.child;
  controlUrl = String(c.info.url);
  return c.info;
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await once(child, "exit").catch(() => {});
  clearTimeout(timer);
}

async function api(method: string, path: string, body?: unknown) {
  const res = await fetch(`${controlUrl}${path}`, {
    method, headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text === "" ? null : JSON.parse(text) };
}

async function invoke(name: string, token?: string) {
  const res = await fetch(`${nodeUrl}/fn/${name}/`, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  return { status: res.status, text: await res.text(), requestId: res.headers.get("x-stratus-request-id") };
}

/** Polls `check` every 100 ms for at most `ms`. */
async function eventually<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms\n${output.join("").slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const V1 = `module.exports.greet = { handler: async () => { console.log("greeting " + (process.env.GREETING ?? "hi")); return "v1 " + (process.env.GREETING ?? "hi"); } };
module.exports.vault = { handler: async () => "inside", config: { public: false } };
module.exports.later = { func: (req, res) => res.json({ attempt: req.get("x-stratus-attempt"), id: req.get("x-stratus-invocation-id"), body: String(req.body ?? "") }), config: { public: false } };`;
const V2 = V1.replace(/"v1 "/, '"v2 "');

before(async () => {
  if (!existsSync(resolve("dist/cli.js")) || !existsSync(resolve("dist/runtime.cjs"))) throw new Error("dist/ is missing: run `npm run build` first");
  root = await mkdtemp(join(tmpdir(), "st-split-"));
  controlDir = join(root, "c");
  nodeDir = join(root, "n");
  await mkdir(controlDir, { recursive: true });
  // A port of our own on 127.0.0.2, so the control plane can come back on the same URL.
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.2", r));
  controlPort = (probe.address() as { port: number }).port;
  await new Promise((r) => probe.close(r));
  const c = await startControl();
  adminToken = String(c.adminToken);
  assert.match(controlUrl, /^http:\/\/127\.0\.0\.2:\d+$/);
  await startNode();
  assert.match(nodeUrl, /^http:\/\/127\.0\.0\.3:\d+$/);
});

after(async () => {
  await stop(node);
  await stop(control);
  if (root !== "") await rm(root, { recursive: true, force: true });
});

test("the control plane refuses a node with the wrong secret, and the node refuses a caller without the control key", async () => {
  const hello = await fetch(`${controlUrl}/internal/v1/nodes/hello`, {
    method: "POST", headers: { authorization: "Bearer wrong", "content-type": "application/json" },
    body: JSON.stringify({ nodeId: "intruder", url: "http://127.0.0.9:1", driver: "process" }),
  });
  assert.equal(hello.status, 401);
  assert.equal(((await hello.json()) as { error: { code: string } }).error.code, "UNAUTHENTICATED");
  const keys = deriveLinkKeys(SECRET);
  const unixHello = await fetch(`${controlUrl}/internal/v1/nodes/hello`, {
    method: "POST", headers: { authorization: `Bearer ${keys.node}`, "content-type": "application/json" },
    body: JSON.stringify({ nodeId: "sneaky", url: "unix:/run/docker.sock", driver: "process" }),
  });
  assert.equal(unixHello.status, 400, "a node on the network cannot point the control plane at a local socket");
  const artifacts = await fetch(`${controlUrl}/internal/v1/artifacts/sha256-${"0".repeat(64)}`);
  assert.equal(artifacts.status, 401, "artifacts need the node key");
  const push = await fetch(`${nodeUrl}/internal/v1/desired-state`, { method: "PUT", headers: { authorization: `Bearer ${adminToken}` }, body: "{}" });
  assert.equal(push.status, 401, "an API token is not the control plane's key");
  assert.equal((await fetch(`${nodeUrl}/api/v1/functions`)).status, 404, "the node serves no API");
  assert.equal((await api("GET", "/readyz")).status, 200, "ready once a node said hello");
});

test("a node with the wrong secret is refused with a clear error and exits", async () => {
  const env = { PATH: process.env.PATH, HOME: join(root, "home"), STRATUS_LOG_LEVEL: "warn", STRATUS_NODE_TOKEN: "not-the-secret-of-this-control-plane" };
  const child = spawn(process.execPath, [STRATUS_BIN, "node", "--control", controlUrl, "--listen", "127.0.0.3:0", "--data-dir", join(root, "intruder"), "--node-id", "intruder"], { env, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr!.on("data", (c: Buffer) => (err += c.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const [code] = (await once(child, "exit")) as [number | null];
  clearTimeout(timer);
  assert.equal(code, 1, err);
  assert.match(err, /UNAUTHENTICATED: The control plane refused this node's link secret/);
  assert.ok(!existsSync(join(root, "intruder", "artifacts")), "it received no artifact");
});

test("deploy, invoke, logs, records, env change, redeploy, rollback — across the two processes", async () => {
  const d1 = await deploy({ url: controlUrl, token: adminToken }, await project({ "package.json": JSON.stringify({ name: "split" }), "index.js": V1 }));
  assert.equal(d1.final?.type, "result", JSON.stringify(d1.events));
  assert.ok(d1.events.some((e) => e.type === "log" && /verified greet@/.test(String(e.line))), "verification ran on the node");
  const v1 = d1.final!.functions!.find((f) => f.name === "greet")!.version;
  const first = await invoke("greet");
  assert.equal(first.status, 200, first.text);
  assert.equal(first.text, "v1 hi");
  assert.ok(readdirSync(join(nodeDir, "artifacts")).some((n) => /^sha256-[0-9a-f]{64}$/.test(n)), "the node cached the artifact in its own data dir");

  // Telemetry reached the control plane: the record and the function's own line, tagged with the request.
  const record = await eventually("invocation record", 10_000, async () => {
    const r = await api("GET", "/api/v1/functions/greet/invocations");
    return (r.body.invocations as Array<{ requestId: string; nodeId: string; coldStart: boolean }>).find((x) => x.requestId === first.requestId);
  });
  assert.equal(record.nodeId, "split-a");
  assert.equal(record.coldStart, true);
  await eventually("log line", 10_000, async () => {
    const r = await api("GET", `/api/v1/functions/greet/logs?request=${first.requestId}`);
    const lines = r.body.lines as Array<{ message: string; source: string }>;
    return lines.some((l) => l.source === "function" && l.message.includes("greeting hi")) && lines.some((l) => l.message.startsWith("REPORT")) ? true : undefined;
  });

  // Metrics on the control plane: counters from the records, instance gauges from the node's pool samples.
  await eventually("metrics from the node", 10_000, async () => {
    const res = await fetch(`${controlUrl}/metrics`, { headers: { authorization: `Bearer ${adminToken}` } });
    const text = await res.text();
    const idle = /stratus_instances\{function="greet",state="idle"\} (\d+)/.exec(text);
    return /stratus_invocations_total\{function="greet"/.test(text) && idle !== null && Number(idle[1]) >= 1 ? true : undefined;
  });

  // A live tail through the control plane sees a line the node produced after it opened.
  const ac = new AbortController();
  const tail = await fetch(`${controlUrl}/api/v1/functions/greet/logs?follow=1`, { headers: { authorization: `Bearer ${adminToken}` }, signal: ac.signal });
  assert.equal(tail.status, 200);
  const reader = tail.body!.getReader();
  const tailed = (async () => {
    let seen = "";
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += Buffer.from(value).toString();
      if (seen.includes("greeting tail")) return true;
    }
    return false;
  })();
  await new Promise((r) => setTimeout(r, 200));
  assert.equal((await api("PATCH", "/api/v1/functions/greet/env", { set: { GREETING: "tail" } })).status, 200);
  // The env change is served as soon as the API answered (pushed, applied before the answer).
  assert.equal((await invoke("greet")).text, "v1 tail");
  assert.equal(await tailed, true, "the live tail saw the node's line");
  ac.abort();

  const d2 = await deploy({ url: controlUrl, token: adminToken }, await project({ "package.json": JSON.stringify({ name: "split" }), "index.js": V2 }));
  assert.equal(d2.final?.type, "result", JSON.stringify(d2.events));
  assert.equal((await invoke("greet")).text, "v2 tail");
  const rb = await api("POST", "/api/v1/functions/greet/rollback", { to: v1 });
  assert.equal(rb.status, 200, JSON.stringify(rb.body));
  assert.equal((await invoke("greet")).text, "v1 tail");
  const fn = await api("GET", "/api/v1/functions/greet");
  assert.equal(fn.body.activeVersion, v1);
  assert.equal(fn.body.instances.version, v1, "the node reports the version it serves");
});

test("a private function needs a token; a revoked token stops working at once", async () => {
  assert.equal((await invoke("vault")).status, 401);
  const created = await api("POST", "/api/v1/tokens", { name: "caller" });
  assert.equal(created.status, 201);
  const token = String(created.body.token);
  const ok = await invoke("vault", token);
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.text, "inside");
  assert.equal((await invoke("vault", `${token}x`)).status, 401);
  assert.equal((await api("DELETE", `/api/v1/tokens/${created.body.id}`)).status, 200);
  assert.equal((await invoke("vault", token)).status, 401, "revocation is immediate on the node");
  assert.equal((await invoke("vault", adminToken)).status, 200, "other tokens still work");
});

/** POST /fn/<name>/ on the node with x-stratus-invocation-type: async. */
async function invokeAsync(name: string, token: string, body: string, key?: string) {
  const res = await fetch(`${nodeUrl}/fn/${name}/`, {
    method: "POST", body,
    headers: { authorization: `Bearer ${token}`, "content-type": "text/plain", "x-stratus-invocation-type": "async", ...(key ? { "idempotency-key": key } : {}) },
  });
  const text = await res.text();
  return { status: res.status, body: text === "" ? null : JSON.parse(text) as Record<string, unknown> & { error?: { code: string } } };
}

test("async invocation through the node: committed by the control plane, dispatched back to the node", async () => {
  assert.equal((await invokeAsync("later", "wrong", "x")).status, 401, "authorized on the node like a synchronous call");
  const a = await invokeAsync("later", adminToken, "payload-1", "split-key-1");
  assert.equal(a.status, 202, JSON.stringify(a.body));
  const id = String(a.body!.invocationId);
  assert.equal(a.body!.created, true);
  assert.equal(a.body!.statusUrl, `${controlUrl}/api/v1/invocations/${id}`);
  const again = await invokeAsync("later", adminToken, "payload-1", "split-key-1");
  assert.equal(again.status, 202);
  assert.deepEqual([again.body!.invocationId, again.body!.created], [id, false], "the idempotency key returns the first job");
  const done = await eventually("async job succeeded", 30_000, async () => {
    const r = await api("GET", `/api/v1/invocations/${id}`);
    return r.body.status === "succeeded" ? r.body as { result: { status: number; body: string } } : undefined;
  });
  assert.equal(done.result.status, 200);
  assert.deepEqual(JSON.parse(done.result.body), { attempt: "1", id, body: "payload-1" }, "the node's gateway let the worker's event headers through");
  const forged = await fetch(`${nodeUrl}/fn/later/`, { headers: { authorization: `Bearer ${adminToken}`, "x-stratus-dispatch-token": "forged" } });
  assert.equal(forged.status, 401, "a forged dispatch token is refused");
});

test("the node serves while the control plane is down, buffers telemetry, and reconnects when it returns", async () => {
  await stop(control);
  const refused = await invokeAsync("later", adminToken, "while-down");
  assert.equal(refused.status, 503, "no 202 without the control plane's commit");
  assert.equal(refused.body?.error?.code, "ASYNC_INTAKE_UNAVAILABLE");
  const during = await invoke("greet");
  assert.equal(during.status, 200, during.text);
  assert.equal(during.text, "v1 tail", "warm and cold starts need no control plane");
  assert.equal((await invoke("vault", adminToken)).status, 200, "token hashes are held by the node");
  const again = await startControl();
  assert.equal(again.adminToken, null, "a restart mints no admin token");
  await eventually("node reconnected (readyz)", 15_000, async () => ((await api("GET", "/readyz")).status === 200 ? true : undefined));
  await eventually("the record buffered while the control plane was down", 15_000, async () => {
    const r = await api("GET", "/api/v1/functions/greet/invocations");
    return (r.body.invocations as Array<{ requestId: string }>).some((x) => x.requestId === during.requestId) ? true : undefined;
  });
  assert.equal((await api("PATCH", "/api/v1/functions/greet/env", { set: { GREETING: "back" } })).status, 200);
  assert.equal((await invoke("greet")).text, "v1 back", "pushes reach the node again");
});

test("a node restarted with an empty cache converges on the desired state and serves again", async () => {
  await stop(node);
  await rm(nodeDir, { recursive: true, force: true });
  // A change while the node is away: it must see it on hello, not by a push.
  assert.equal((await api("PATCH", "/api/v1/functions/greet/env", { set: { GREETING: "again" } })).status, 200);
  await startNode();
  const r = await invoke("greet");
  assert.equal(r.status, 200, r.text);
  assert.equal(r.text, "v1 again");
  assert.ok(readdirSync(join(nodeDir, "artifacts")).some((n) => n.startsWith("sha256-")), "refetched by digest into the fresh cache");
  assert.equal((await invoke("vault", adminToken)).status, 200, "token hashes came with the state");
});
