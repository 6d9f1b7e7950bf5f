// The pre-warm pool of the Docker driver: the driver conformance suite with the pool on, the one-shot
// guarantee of specialisation over the slot's one-shot Unix socket (CVE-2018-11757), the read-only artifact mount
// propagated into a running container, replacement of a slot killed while idle, and that closing leaves no
// container, mount or dir behind. Needs root, perl, a real engine and registry (scripts/services.sh starts
// both) and `npm run build`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import Docker from "dockerode";
import { runDriverConformance, invokeInstance } from "../src/sandbox/conformance";
import { createDockerDriver, type DockerDriver, type SpecializeChannel } from "../src/sandbox/docker/docker-driver";
import { parseFunctionConfig, type FunctionConfigInput } from "../src/shared/function-config";
import type { Instance, InstanceSpec } from "../src/sandbox/driver";

const REGISTRY = process.env.STRATUS_REGISTRY ?? "127.0.0.1:5000";
const RUNTIME = resolve("dist/runtime.cjs");
const prewarmFixtures = resolve("test/fixtures/prewarm");
const docker = new Docker();
if (!existsSync(RUNTIME)) throw new Error(`${RUNTIME} is missing: run \`npm run build\` first`);
if (process.getuid?.() !== 0) throw new Error("the Docker pre-warm tests need root (the slots' code mounts)");
try {
  execFileSync("bash", ["scripts/services.sh"], { stdio: ["ignore", "ignore", "pipe"], timeout: 300_000 });
} catch (err) {
  throw new Error(`Docker and the registry are needed: scripts/services.sh failed (run it as root to see why): ${(err as Error).message}`);
}

function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4] ?? "").filter((p) => p.startsWith(dir));
}

function newDriver(suffix: string, prewarm: number, specializeChannel?: SpecializeChannel): { driver: DockerDriver; socketRoot: string; nodeId: string; cleanup: () => Promise<void> } {
  const socketRoot = mkdtempSync(join(tmpdir(), "spd-"));
  const nodeId = `pwd-${suffix}-${process.pid}`;
  const driver = createDockerDriver({ registry: REGISTRY, runtimePath: RUNTIME, stateDir: socketRoot, nodeId, prewarm, ...(specializeChannel ? { specializeChannel } : {}) });
  void driver.open(); // nothing runs before open(); the pool starts filling now
  return {
    driver,
    socketRoot,
    nodeId,
    cleanup: async () => {
      await driver.close();
      await driver.reconcile();
      assert.deepEqual(mountsUnder(socketRoot), [], "closing the driver leaves no mount behind");
      const left = await docker.listContainers({ all: true, filters: { label: [`stratus.node=${nodeId}`] } });
      assert.deepEqual(left.map((c) => c.Names[0]), [], "closing the driver leaves no container behind");
      rmSync(socketRoot, { recursive: true, force: true });
    },
  };
}

/** Waits (the pool has no event) until it holds `n` idle slots; generous: Docker starts take seconds under load. */
async function poolFilled(driver: DockerDriver, n: number, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (driver.prewarm.idleCount() < n) {
    if (Date.now() > deadline) throw new Error(`the pool did not reach ${n} idle slots within ${timeoutMs} ms (has ${driver.prewarm.idleCount()})`);
    await delay(25);
  }
}


let conf: ReturnType<typeof newDriver> | undefined;
runDriverConformance(
  "docker with the pre-warm pool",
  async () => {
    conf = newDriver("conf", 3);
    await poolFilled(conf.driver, 3);
    return {
      driver: conf.driver,
      cleanup: async () => {
        const { hits } = conf!.driver.prewarm.counts();
        await conf!.cleanup();
        // The suite must really have run on specialised slots, not only on fresh starts.
        assert.ok(hits >= 3, `starts served from the pool: ${hits}`);
      },
    };
  },
  {
    fixturesDir: resolve("test/fixtures/functions"),
    hostSecretPaths: ["/root", "/work", "/var/lib"],
    // Node and its libraries only in the image: the seccomp case asserts per-thread status (see sandbox-docker.test.ts).
    hostTools: false,
    writableDirs: ["/run/stratus"],
    leftovers: async (inst: Instance) => {
      const out: string[] = [];
      // A specialised slot carries the slot's labels; it is renamed to the instance's container name.
      const byLabel = await docker.listContainers({ all: true, filters: { label: [`stratus.instance=${inst.id}`] } });
      const byName = await docker.listContainers({ all: true, filters: { name: [`^/stratus-${inst.id}$`] } });
      for (const c of [...byLabel, ...byName]) out.push(`container ${c.Names.join(",")} (${c.State})`);
      if (existsSync(join(conf!.socketRoot, inst.id))) out.push(`socket dir of ${inst.id}`);
      return out;
    },
    timeoutMs: 90_000,
  },
);

let seq = 0;
const spec = (exportName: string, config: FunctionConfigInput = {}, extra: Partial<InstanceSpec> = {}): InstanceSpec => ({
  instanceId: `pwd${process.pid}-${++seq}`,
  functionName: exportName,
  version: "1",
  artifactDir: prewarmFixtures,
  entry: "oneshot.js",
  exportName,
  config: parseFunctionConfig(exportName, config),
  env: {},
  ...extra,
});

test("docker: specialisation is one-shot (stdin closed for good), the code is read-only, a killed idle slot is replaced", { timeout: 240_000 }, async () => {
  const { driver, nodeId, cleanup } = newDriver("oneshot", 1);
  try {
    const { image } = await driver.prepare(spec("oneshot"));
    await poolFilled(driver, 1);
    const inst = await driver.start({ ...spec("oneshot", {}, { env: { SECRET_A: "from-spec" } }), image });
    assert.deepEqual(driver.prewarm.counts(), { hits: 1, misses: 0 }, "served from the pool");
    assert.equal(inst.codeCache, "accepted", "the slot compiled the runtime from the code cache open() produced (docker.codeCache)");
    const r = await invokeInstance(inst, "/");
    assert.equal(r.status, 200, r.body);
    const seen = JSON.parse(r.body) as {
      fds: string[]; environ: string[]; env: { SECRET_A?: string; STRATUS: string[] }; writeCode: { ok: boolean; code?: string };
      mounts: string[]; codeFiles: string[]; cwd: string; initStdin: { target: string | null; read: string };
      sockets: string[]; runDir: string[]; channelConnect: string;
    };
    // The channel is a Unix socket in /run/stratus: the runtime stopped listening at the driver's one
    // connection, removed the path and closed that connection before user code ran.
    assert.equal(seen.channelConnect, "ENOENT", "nothing listens on the specialisation socket any more");
    assert.ok(!seen.runDir.includes("specialize.sock"), `the socket dir: ${seen.runDir.join(" ")}`);
    assert.ok(seen.runDir.includes("http.sock"), `the socket dir: ${seen.runDir.join(" ")}`);
    const serverSockets = seen.sockets.filter((s) => s.endsWith(":/run/stratus/http.sock"));
    assert.ok(serverSockets.length >= 1, `the function's server socket is open; sockets: ${seen.sockets.join(" ")}`);
    assert.deepEqual(seen.sockets.filter((s) => /specialize/.test(s)), [], `the function holds no end of the channel; sockets: ${seen.sockets.join(" ")}`);
    // No container stdin at all: fd 0 of the runtime and of tini (PID 1) is /dev/null.
    assert.ok(seen.fds.includes("0:/dev/null"), `fd 0 is /dev/null; fds: ${seen.fds.join(" ")}`);
    assert.equal(seen.initStdin.target, "/dev/null", JSON.stringify(seen.initStdin));
    assert.equal(seen.initStdin.read, "eof", "there is no stdin to write to"); 
    assert.equal(seen.env.SECRET_A, "from-spec", "the function's env arrives with the message");
    assert.deepEqual(seen.env.STRATUS, [], "no protocol variable is left for user code");
    assert.ok(!seen.environ.includes("SECRET_A"), "the function's env was not on the container's environment");
    assert.deepEqual(seen.writeCode, { ok: false, code: "EROFS" }, "the artifact is mounted read-only");
    assert.ok(seen.mounts.length >= 2 && / ro[, ]/.test(seen.mounts.at(-1)!), `mounts on the code dir: ${seen.mounts.join(" | ")}`);
    assert.deepEqual(seen.codeFiles, ["oneshot.js"], "the code dir shows the artifact");
    assert.equal(seen.cwd, "/srv/function", "the cwd is the code dir, as after a fresh start");
    // The runtime serves exactly the export it was given; another export of the same module is unreachable.
    const other = await invokeInstance(inst, "/other");
    assert.notEqual(other.body, "other code");
    const info = await docker.listContainers({ all: true, filters: { label: [`stratus.node=${nodeId}`] } });
    const own = info.find((c) => c.Names[0] === `/stratus-${inst.id}`) ?? info.find((c) => c.Labels["stratus.slot"] !== undefined && c.State === "running");
    assert.ok(own, "the instance's container");
    const config = await docker.getContainer(own.Id).inspect();
    assert.ok(!config.Config.Env.some((e) => e.startsWith("SECRET_A=")), "the function's env is not in the container's config");
    assert.equal(config.HostConfig.ReadonlyRootfs, true);
    assert.deepEqual(config.HostConfig.CapDrop, ["ALL"]);
    assert.equal(config.Config.User, "65534:65534");
    assert.equal(config.Config.OpenStdin, false, "no stdin: the channel does not go through dockerd");
    await inst.close(2000);

    // A slot killed while idle is replaced.
    await poolFilled(driver, 1);
    const idle = (await docker.listContainers({ filters: { label: [`stratus.node=${nodeId}`, "stratus.slot"] } }));
    assert.equal(idle.length, 1, "one idle slot container");
    await docker.getContainer(idle[0]!.Id).kill();
    const deadline = Date.now() + 90_000;
    for (;;) {
      const now = await docker.listContainers({ filters: { label: [`stratus.node=${nodeId}`, "stratus.slot"] } });
      if (driver.prewarm.idleCount() === 1 && now.length === 1 && now[0]!.Id !== idle[0]!.Id) break;
      if (Date.now() > deadline) throw new Error("the killed slot was not replaced within 90 s");
      await delay(50);
    }
    const next = await driver.start({ ...spec("oneshot"), image });
    assert.equal(driver.prewarm.counts().hits, 2, "the replacement serves the next start");
    assert.equal((await invokeInstance(next, "/")).status, 200);
    await next.destroy();
  } finally {
    await cleanup();
  }
});

test("docker: the attach channel (round two's, the benchmarks' baseline) is one-shot too: stdin closed for good (StdinOnce)", { timeout: 180_000 }, async () => {
  const { driver, cleanup } = newDriver("attach", 1, "attach");
  try {
    const { image } = await driver.prepare(spec("oneshot"));
    await poolFilled(driver, 1);
    const inst = await driver.start({ ...spec("oneshot", {}, { env: { SECRET_A: "from-spec" } }), image });
    assert.deepEqual(driver.prewarm.counts(), { hits: 1, misses: 0 }, "served from the pool");
    const r = await invokeInstance(inst, "/");
    assert.equal(r.status, 200, r.body);
    const seen = JSON.parse(r.body) as { fds: string[]; env: { SECRET_A?: string }; initStdin: { target: string | null; read: string }; runDir: string[] };
    // The runtime closed its stdin (the channel) and put /dev/null in its place before user code ran.
    assert.ok(seen.fds.includes("0:/dev/null"), `fd 0 is /dev/null; fds: ${seen.fds.join(" ")}`);
    // tini (PID 1) still holds the container's stdin: its writer is closed (StdinOnce), so it only gives EOF.
    assert.match(seen.initStdin.target ?? "", /^pipe:\[\d+\]$/, JSON.stringify(seen.initStdin));
    assert.equal(seen.initStdin.read, "eof", "the channel's writer is closed for good");
    assert.ok(!seen.fds.some((f) => f.endsWith(`:${seen.initStdin.target}`)), `the function holds no end of the channel; fds: ${seen.fds.join(" ")}`);
    assert.equal(seen.env.SECRET_A, "from-spec", "the function's env arrives with the message");
    assert.ok(!seen.runDir.includes("specialize.sock"), "no specialisation socket on this channel");
    await inst.destroy();
  } finally {
    await cleanup();
  }
});

test("docker: other limits fall back to a fresh start from the image; an unreadable artifact too", { timeout: 180_000 }, async () => {
  const { driver, cleanup } = newDriver("sizes", 1);
  try {
    const { image } = await driver.prepare(spec("oneshot"));
    await poolFilled(driver, 1);
    const big = await driver.start({ ...spec("oneshot", { memory: 512 }), image });
    assert.deepEqual(driver.prewarm.counts(), { hits: 0, misses: 1 }, "512 MB does not use the 256 MB slot (its limit and heap flag are fixed)");
    assert.equal(big.codeCache, null, "a fresh start runs the runtime directly, not through the boot loader (its image may predate it)");
    assert.equal((await invokeInstance(big, "/")).status, 200);
    await big.destroy();
    const privateDir = mkdtempSync(join(tmpdir(), "spd-art-")); // 0700: nobody cannot read it in place
    try {
      execFileSync("cp", [join(prewarmFixtures, "oneshot.js"), privateDir]);
      const inst = await driver.start({ ...spec("oneshot", {}, { artifactDir: privateDir }), image });
      assert.equal(driver.prewarm.counts().misses, 2, "started from the image");
      assert.equal((await invokeInstance(inst, "/")).status, 200);
      await inst.destroy();
    } finally {
      rmSync(privateDir, { recursive: true, force: true });
    }
  } finally {
    await cleanup();
  }
});

test("docker: reconcile() after a SIGKILL of the node removes its slots (idle and specialised), mounts and dirs", { timeout: 240_000 }, async () => {
  const socketRoot = mkdtempSync(join(tmpdir(), "spk-"));
  const nodeId = `pwd-killed-${process.pid}`;
  const child = spawn(process.execPath, ["--import", "tsx", "test/helpers/docker-pool-node.ts", JSON.stringify({ socketRoot, nodeId, registry: REGISTRY, runtimeFile: RUNTIME, artifactDir: prewarmFixtures })], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.setEncoding("utf8");
  await new Promise<void>((resolveReady, reject) => {
    child.stdout.on("data", (c: string) => {
      out += c;
      if (out.includes("ready ")) resolveReady();
    });
    child.once("exit", (code) => reject(new Error(`the node exited (${code}) before it was ready: ${out}`)));
  });
  child.kill("SIGKILL");
  await once(child, "exit");
  const ours = () => docker.listContainers({ all: true, filters: { label: [`stratus.node=${nodeId}`] } });
  assert.equal((await ours()).length, 2, "control: one specialised and one idle slot survive the node");
  assert.ok(mountsUnder(socketRoot).length >= 3, `control: the pool's mounts survive too: ${mountsUnder(socketRoot).join(" ")}`);

  const driver = createDockerDriver({ registry: REGISTRY, runtimePath: RUNTIME, stateDir: socketRoot, nodeId });
  void driver.open(); // nothing runs before open(); the pool starts filling now
  try {
    const { removed } = await driver.reconcile();
    assert.equal(removed, 2);
    assert.deepEqual((await ours()).map((c) => c.Names[0]), [], "no container left");
    assert.deepEqual(readdirSync(socketRoot).filter((d) => d !== ".pool"), [], "no socket dir left (the specialised one was renamed to its instance)");
    assert.deepEqual(readdirSync(join(socketRoot, ".pool", "slots")), [], "no slot dir left");
  } finally {
    await driver.close();
    assert.deepEqual(mountsUnder(socketRoot), [], "no mount left once the new driver closed");
    rmSync(socketRoot, { recursive: true, force: true });
  }
});
