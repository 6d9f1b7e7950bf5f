// The pre-warm pool of the process driver: the driver conformance suite with the pool on, the one-shot
// guarantee of specialisation (CVE-2018-11757), the read-only artifact mount, fallback for other limits,
// refill, and that closing leaves no mount, cgroup or dir behind. Needs root, bubblewrap, setpriv, perl
// (Debian: bubblewrap util-linux perl-base) and `npm run build`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { runDriverConformance, invokeInstance } from "../src/sandbox/conformance";
import { createProcessDriver, type ProcessDriver } from "../src/sandbox/process/process-driver";
import { parseFunctionConfig, type FunctionConfigInput } from "../src/shared/function-config";
import type { Instance, InstanceSpec } from "../src/sandbox/driver";
import { defaultConnect } from "../src/gateway/function-pool";
import type { Deployment } from "../src/gateway/deployment";

const runtimePath = resolve("dist/runtime.cjs");
const fixtures = resolve("test/fixtures/functions");
const prewarmFixtures = resolve("test/fixtures/prewarm");
if (!existsSync(runtimePath)) throw new Error(`${runtimePath} is missing: run \`npm run build\` first`);
if (process.getuid?.() !== 0) throw new Error("the pre-warm tests need root (cgroups, mounts, bwrap binding host paths)");

const rootName = `stratus-pwtest-${process.pid}`;
function newDriver(suffix: string, prewarm = 2): { driver: ProcessDriver; stateDir: string; cleanup: () => Promise<void> } {
  const stateDir = mkdtempSync("/tmp/spw-");
  const driver = createProcessDriver({ runtimePath, stateDir, cgroupRoot: `${rootName}-${suffix}`, prewarm });
  void driver.open(); // nothing runs before open(); the pool starts filling now
  return {
    driver,
    stateDir,
    cleanup: async () => {
      await driver.close();
      assert.deepEqual(mountsUnder(stateDir), [], "closing the driver leaves no mount behind");
      for (const d of driver.cgroups.rootDirs()) if (existsSync(d)) rmdirSync(d);
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4] ?? "").filter((p) => p.startsWith(dir));
}

/** Waits (event-free: the pool has no event) until the pool holds `n` idle slots; generous for a loaded machine. */
async function poolFilled(driver: ProcessDriver, n: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (driver.prewarm.idleCount() < n) {
    if (Date.now() > deadline) throw new Error(`the pool did not reach ${n} idle slots within ${timeoutMs} ms (has ${driver.prewarm.idleCount()})`);
    await delay(25);
  }
}

let seq = 0;
const spec = (exportName: string, config: FunctionConfigInput = {}, extra: Partial<InstanceSpec> = {}): InstanceSpec => ({
  instanceId: `pw-test-${++seq}`.replace(/^pw-/, "p-"),
  functionName: exportName,
  version: "1",
  artifactDir: prewarmFixtures,
  entry: "oneshot.js",
  exportName,
  config: parseFunctionConfig(exportName, config),
  env: {},
  ...extra,
});

let conf: ReturnType<typeof newDriver> | undefined;
runDriverConformance(
  "process with the pre-warm pool",
  async () => {
    conf = newDriver("conf", 3);
    await poolFilled(conf.driver, 3);
    return {
      driver: conf.driver,
      cleanup: async () => {
        const { hits } = conf!.driver.prewarm.counts();
        // The suite must really have run on specialised slots, not only on fresh starts.
        assert.ok(hits >= 3, `starts served from the pool: ${hits}`);
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

test("specialisation is one-shot: the channel is closed before user code runs, the code is read-only", { timeout: 120_000 }, async () => {
  const { driver, stateDir, cleanup } = newDriver("oneshot", 1);
  try {
    await poolFilled(driver, 1);
    const inst = await driver.start(spec("oneshot", {}, { env: { SECRET_A: "from-spec" } }));
    assert.equal(driver.prewarm.counts().hits, 1, "served from the pool");
    const r = await invokeInstance(inst, "/");
    assert.equal(r.status, 200, r.body);
    const seen = JSON.parse(r.body) as Record<string, { ok: boolean; code?: string } & Record<string, unknown>> & { unnamedSockets: string[]; fds: string[]; environ: string[]; env: { SECRET_A?: string; STRATUS: string[] }; mounts: string[] };
    // The channel was an unnamed Unix socket; every socket the function holds is named (the server's).
    assert.deepEqual(seen.unnamedSockets, [], `no unnamed socket (the channel) is open; fds: ${seen.fds.join(" ")}`);
    assert.equal(seen.env.SECRET_A, "from-spec", "the function's env arrives with the message");
    assert.deepEqual(seen.env.STRATUS, [], "no protocol variable is left for user code");
    assert.ok(!seen.environ.includes("SECRET_A"), "the function's env was not on the sandbox's command environment");
    assert.deepEqual(seen.writeCode, { ok: false, code: "EROFS" }, "the artifact is mounted read-only");
    assert.equal(seen.mounts.length >= 1 && seen.mounts.every((m) => / ro,/.test(m) || m.includes(" ro ")), true, `mounts on /fn: ${seen.mounts.join(" | ")}`);
    // The runtime serves exactly the export it was given; another export of the same module is unreachable.
    const other = await invokeInstance(inst, "/other");
    assert.notEqual(other.body, "other code");
    await inst.close(2000);
    assert.deepEqual(readdirSync(join(stateDir, "slots")).filter((d) => !d.startsWith("pw-")), [], "slot dirs only");
  } finally {
    await cleanup();
  }
});

test("a pooled instance's first connection is opened while its slot waits: handed out once, and a request on it reaches the function", { timeout: 120_000 }, async () => {
  const { driver, cleanup } = newDriver("early", 1);
  try {
    await poolFilled(driver, 1);
    const inst = await driver.start(spec("oneshot"));
    assert.equal(driver.prewarm.counts().hits, 1, "served from the pool");
    const socket = inst.endpoint.takeConnection?.() ?? null;
    assert.ok(socket !== null, "the driver opened a connection while the slot loaded");
    assert.equal(inst.endpoint.takeConnection!(), null, "handed out once");
    if (socket.connecting) await new Promise<void>((r, j) => socket.once("connect", () => r()).once("error", j));
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    const ended = new Promise<void>((r) => socket.once("end", () => r()));
    socket.write("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    await ended;
    socket.destroy();
    assert.match(Buffer.concat(chunks).toString("latin1"), /^HTTP\/1\.1 200 /, "the function answered on it");
    assert.equal((await invokeInstance(inst, "/")).status, 200, "and on a connection of its own");
    await inst.destroy();
    // The gateway's client of an instance takes it for its first connection, and its first request is
    // answered at once on it (undici's connect path once left it unsent when handed a socket synchronously).
    await poolFilled(driver, 1);
    const second = await driver.start(spec("oneshot"));
    assert.equal(driver.prewarm.counts().hits, 2, "served from the pool");
    const client = defaultConnect(second, { config: second.spec.config } as Deployment);
    const answered = client.request({ method: "GET", path: "/" }).then(async (r) => ({ status: r.statusCode, body: await r.body.text() }));
    const res = await Promise.race([answered, delay(5000).then(() => null)]);
    assert.ok(res !== null, "the first request on the handed-over connection was answered within 5 s");
    assert.equal(res.status, 200, res.body);
    assert.equal(second.endpoint.takeConnection!(), null, "the client took the driver's connection");
    await client.close();
    await second.destroy();
    // A fresh start (512 MB: no slot of that size) has none.
    const fresh = await driver.start(spec("oneshot", { memory: 512 }));
    assert.equal(fresh.endpoint.takeConnection?.() ?? null, null, "a fresh start opens none");
    await fresh.destroy();
  } finally {
    await cleanup();
  }
});

test("other limits fall back to a fresh start; the pool refills and follows demand", { timeout: 120_000 }, async () => {
  const { driver, cleanup } = newDriver("sizes", 1);
  try {
    await poolFilled(driver, 1);
    const big = await driver.start(spec("oneshot", { memory: 512 }));
    assert.deepEqual(driver.prewarm.counts(), { hits: 0, misses: 1 }, "512 MB does not use the 256 MB slot (its heap flag is fixed)");
    assert.equal((await invokeInstance(big, "/")).status, 200);
    await big.destroy();
    // Demand for 512 MB makes the pool keep one of those too: the next 512 MB start is pre-warmed.
    await poolFilled(driver, 2);
    const again = await driver.start(spec("oneshot", { memory: 512 }));
    assert.equal(driver.prewarm.counts().hits, 1);
    assert.equal((await invokeInstance(again, "/")).status, 200);
    const stats = await again.stats();
    assert.ok(stats && stats.memoryBytes > 0, "the slot's cgroup is the instance's cgroup");
    await again.destroy();
  } finally {
    await cleanup();
  }
});

test("pooled starts are faster than fresh ones", { timeout: 180_000 }, async (t) => {
  const { driver, cleanup } = newDriver("speed", 1);
  const fresh = newDriver("speed-fresh", 0);
  try {
    const pooled: number[] = [];
    const unpooled: number[] = [];
    for (let i = 0; i < 5; i++) {
      await poolFilled(driver, 1);
      const a = await driver.start(spec("oneshot"));
      pooled.push(a.startMs);
      await a.destroy();
      const b = await fresh.driver.start(spec("oneshot"));
      unpooled.push(b.startMs);
      await b.destroy();
    }
    const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    t.diagnostic(`start→ready median: pooled ${med(pooled).toFixed(1)} ms, fresh ${med(unpooled).toFixed(1)} ms`);
    assert.ok(med(pooled) < med(unpooled), `pooled ${pooled.join(",")} vs fresh ${unpooled.join(",")}`);
  } finally {
    await cleanup();
    await fresh.cleanup();
  }
});
