// The Docker driver against the real engine and a real registry (started by scripts/services.sh),
// with the real runtime (dist/runtime.cjs, from `npm run build`).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { connect, createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import Docker from "dockerode";
import { createDockerDriver, type DockerDriver } from "../src/sandbox/docker/docker-driver";
import { INSTANCE_MALLOC_TUNABLES, instanceNodeArgs } from "../src/sandbox/driver-core";
import type { InstanceLogLine, InstanceSpec } from "../src/sandbox/driver";
import { runDriverConformance } from "../src/sandbox/conformance";
import { parseFunctionConfig, type FunctionConfigInput } from "../src/shared/function-config";

const REGISTRY = process.env.STRATUS_REGISTRY ?? "127.0.0.1:5000";
const RUNTIME = join(process.cwd(), "dist", "runtime.cjs");
const docker = new Docker();
const nodeId = `test-${process.pid}`;
const work = mkdtempSync(join(tmpdir(), "stratus-docker-test-"));
const socketRoot = join(work, "s");
let driver: DockerDriver;
let seq = 0;

const SOURCES = {
  hello: `module.exports.hello = { func: async (req, res) => { console.log("hello called"); res.send("Hello"); }, config: { timeout: 10_000 } };`,
  probe: `
const fs = require("node:fs"), net = require("node:net"), os = require("node:os");
// A TCP listener inside the instance, so another instance can try to reach it.
net.createServer((s) => { s.on("error", () => {}); s.end("inside"); }).listen(8080);
const tryConnect = (host, port) => new Promise((resolve) => {
  const s = net.connect({ host, port, timeout: 1500 });
  s.on("connect", () => { s.destroy(); resolve("connected"); });
  s.on("timeout", () => { s.destroy(); resolve("timeout"); });
  s.on("error", (e) => resolve(e.code));
});
const tryWrite = (p) => { try { fs.writeFileSync(p, "x"); return "ok"; } catch (e) { return e.code; } };
module.exports.probe = { func: async (req, res) => {
  const host = req.query.host, port = Number(req.query.port);
  res.json({
    uid: process.getuid(), gid: process.getgid(),
    rootWrite: tryWrite("/x"), fnWrite: tryWrite("/srv/function/x"), tmpWrite: tryWrite("/tmp/x"),
    interfaces: Object.keys(os.networkInterfaces()).sort(),
    connect: host ? await tryConnect(host, port) : null,
    self: await tryConnect("127.0.0.1", 8080),
    env: Object.keys(process.env).filter((k) => k.startsWith("STRATUS_") || k === "GREETING"),
    greeting: process.env.GREETING,
    dockerSock: fs.existsSync("/var/run/docker.sock"),
  });
} };`,
  hog: `const keep = [];
module.exports.hog = { func: async (req, res) => {
  // Off-heap memory, touched page by page: the kernel's cgroup OOM killer acts, not V8.
  for (;;) { keep.push(Buffer.alloc(8 * 1024 * 1024, 1)); await new Promise((r) => setImmediate(r)); }
} };`,
  broken: `throw new Error("broken at load time");`,
  pair: `module.exports.one = { func: (req, res) => res.send("1"), config: { memory: 128 } };
module.exports.two = { func: (req, res) => res.send("2") };`,
} as const;

function artifact(name: keyof typeof SOURCES, extra = ""): string {
  const dir = mkdtempSync(join(work, `${name}-`));
  writeFileSync(join(dir, "index.js"), SOURCES[name] + extra);
  return dir;
}

function specOf(fn: string, exportName: string, artifactDir: string, config: FunctionConfigInput = {}, env: Record<string, string> = {}): InstanceSpec {
  return {
    instanceId: `t${process.pid}-${++seq}`,
    functionName: fn,
    version: "1",
    artifactDir,
    entry: "index.js",
    exportName,
    config: parseFunctionConfig(fn, config),
    env,
  };
}

function get(socketPath: string, path = "/"): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    request({ socketPath, path, headers: { host: "fn" } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    })
      .on("error", reject)
      .end();
  });
}

async function ourContainers(): Promise<Docker.ContainerInfo[]> {
  return docker.listContainers({ all: true, filters: { label: [`stratus.node=${nodeId}`] } });
}

// Start dockerd and the registry (idempotent, quick when they run) before any case.
try {
  execFileSync("bash", ["scripts/services.sh"], { stdio: ["ignore", "ignore", "pipe"], timeout: 300_000 });
} catch (err) {
  throw new Error(`Docker and the registry are needed: scripts/services.sh failed (run it as root to see why): ${(err as Error).message}`);
}
if (!existsSync(RUNTIME)) throw new Error(`${RUNTIME} is missing: run \`npm run build\` first`);


const confNodeId = `conf-${process.pid}`;
const confSocketRoot = join(work, "c");
let confDriver: DockerDriver | undefined;
runDriverConformance(
  "docker",
  async () => {
    confDriver = createDockerDriver({ registry: REGISTRY, runtimePath: RUNTIME, stateDir: confSocketRoot, nodeId: confNodeId });
    void confDriver.open();
    return {
      driver: confDriver,
      cleanup: async () => {
        await confDriver?.close();
        await confDriver?.reconcile();
      },
    };
  },
  {
    fixturesDir: resolve("test/fixtures/functions"),
    hostSecretPaths: ["/root", "/work", "/var/lib"],
    // The image has node and its libraries only: no perl or unshare to probe syscalls with (and so no way
    // for function code to issue one raw); the seccomp case asserts the status fields of every thread.
    hostTools: false,
    writableDirs: ["/run/stratus"],
    leftovers: async (inst) => {
      const out: string[] = [];
      const left = await docker.listContainers({ all: true, filters: { label: [`stratus.instance=${inst.id}`] } });
      for (const c of left) out.push(`container ${c.Names.join(",")} (${c.State})`);
      if (existsSync(join(confSocketRoot, inst.id))) out.push(`socket dir of ${inst.id}`);
      return out;
    },
    timeoutMs: 90_000,
  },
);

before(() => {
  driver = createDockerDriver({ registry: REGISTRY, runtimePath: RUNTIME, stateDir: socketRoot, nodeId });
  void driver.open();
});

after(async () => {
  await driver?.close();
  await driver?.reconcile();
  rmSync(work, { recursive: true, force: true });
});

describe("Docker driver", { timeout: 240_000 }, () => {
  let helloImage = "";

  test("prepare builds the function image and pushes it; the registry serves it by digest", async () => {
    const spec = specOf("helloWorld_x", "hello", artifact("hello"));
    const log: string[] = [];
    const { image } = await driver.prepare(spec, { onLog: (l) => log.push(l) });
    helloImage = image;
    const m = /^127\.0\.0\.1:5000\/stratus\/hello_world__x@(sha256:[0-9a-f]{64})$/.exec(image);
    assert.ok(m, `unexpected image reference ${image}`);
    const res = await fetch(`http://${REGISTRY}/v2/stratus/hello_world__x/manifests/${m[1]}`, {
      method: "HEAD",
      headers: { accept: "application/vnd.docker.distribution.manifest.v2+json" },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("docker-content-digest"), m[1]);
    assert.ok(log.length > 0, "the build log reaches onLog");
    const info = await docker.getImage(image).inspect();
    assert.equal(info.Config.Labels["stratus.function"], "helloWorld_x");
    assert.equal(info.Config.Labels["stratus.version"], "1");
    assert.match(info.Config.Labels["stratus.digest"] ?? "", /^sha256:/);
    assert.equal(info.Config.User, "65534:65534");

    // An identical artifact is not rebuilt.
    const again: string[] = [];
    const second = await driver.prepare({ ...spec, artifactDir: artifact("hello") }, { onLog: (l) => again.push(l) });
    assert.equal(second.image, image);
    assert.ok(again.some((l) => l.startsWith("Reusing")), again.join("\n"));
  });

  test("start serves over the host socket; the container is hardened (engine's inspect data)", async (t) => {
    const spec = specOf("helloWorld_x", "hello", artifact("hello"), { memory: 128 });
    const lines: InstanceLogLine[] = [];
    const inst = await driver.start({ ...spec, image: helloImage }, { onLog: (l) => lines.push(l) });
    t.after(() => inst.destroy()); // idempotent: a failed assertion below must not leave the container to later tests
    t.diagnostic(`start to READY: ${inst.startMs.toFixed(0)} ms`);
    assert.equal(inst.endpoint.socketPath, join(socketRoot, spec.instanceId, "http.sock"));
    const res = await get(inst.endpoint.socketPath);
    assert.equal(res.status, 200);
    assert.equal(res.body, "Hello");
    // Output travels on the attach stream, independent of the HTTP response: it may arrive just after it.
    const logged = () => lines.some((l) => l.message === "hello called" && l.stream === "stdout");
    for (let waited = 0; !logged() && waited < 10_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    assert.ok(logged(), JSON.stringify(lines));

    const [c] = await docker.listContainers({ filters: { label: [`stratus.instance=${spec.instanceId}`] } });
    assert.ok(c !== undefined, "the container is labelled with its instance");
    const info = await docker.getContainer(c.Id).inspect();
    assert.equal(info.Config.Labels["stratus.function"], "helloWorld_x");
    assert.equal(info.Config.Labels["stratus.node"], nodeId);
    assert.equal(info.Config.User, "65534:65534");
    const h = info.HostConfig;
    assert.equal(h.ReadonlyRootfs, true);
    assert.deepEqual(h.CapDrop, ["ALL"]);
    assert.deepEqual(h.CapAdd ?? null, null);
    assert.ok(h.SecurityOpt?.includes("no-new-privileges"), String(h.SecurityOpt));
    // No seccomp= option: the engine's default profile applies (the conformance "seccomp" case sees Seccomp: 2 inside).
    assert.ok(!((h.SecurityOpt ?? []) as string[]).some((o) => o.startsWith("seccomp")), String(h.SecurityOpt));
    assert.deepEqual(h.Ulimits, [{ Name: "nofile", Soft: 1024, Hard: 1024 }]);
    assert.equal(h.Privileged, false);
    assert.equal(h.Memory, 128 * 1024 * 1024);
    assert.equal(h.MemorySwap, 128 * 1024 * 1024);
    assert.ok((h.PidsLimit ?? 0) > 0);
    assert.ok((h.CpuShares ?? 0) > 0);
    assert.deepEqual(h.Binds, [`${join(socketRoot, spec.instanceId)}:/run/stratus:rw`]);
    assert.deepEqual(info.Mounts.map((m) => [m.Type, m.Source, m.Destination]), [["bind", join(socketRoot, spec.instanceId), "/run/stratus"]]);
    assert.match(h.Tmpfs?.["/tmp"] ?? "", /\bnoexec\b/);
    assert.match(h.Tmpfs?.["/tmp"] ?? "", /\bnosuid\b/);
    assert.match(h.Tmpfs?.["/tmp"] ?? "", /\bnodev\b/);
    // The socket dirs' source is a noexec tmpfs: the bind inherits noexec (conformance "noexec").
    const rootMount = readFileSync("/proc/self/mountinfo", "utf8").split("\n").find((l) => l.split(" ")[4] === socketRoot);
    assert.ok(rootMount?.includes("noexec") && rootMount.includes(" - tmpfs "), `socket root mount: ${rootMount}`);
    assert.match(info.Config.Cmd?.join(" ") ?? "", /--max-old-space-size=96\b/);
    // The same instance flags and malloc settings as the process driver (driver-core).
    assert.deepEqual(info.Config.Cmd?.slice(0, -1), instanceNodeArgs(128));
    assert.ok(info.Config.Env?.includes(`GLIBC_TUNABLES=${INSTANCE_MALLOC_TUNABLES}`), JSON.stringify(info.Config.Env));

    const stats = await inst.stats();
    assert.ok(stats !== null && stats.memoryBytes > 1_000_000, JSON.stringify(stats));
    const exit = await inst.close(5000);
    assert.equal(exit.reason, "closed");
    assert.equal(await inst.stats(), null);
    assert.equal((await docker.listContainers({ all: true, filters: { label: [`stratus.instance=${spec.instanceId}`] } })).length, 0, "removed");
    assert.equal(existsSync(join(socketRoot, spec.instanceId)), false, "socket dir removed");
    assert.equal(await inst.destroy(), exit, "idempotent");
  });

  test("inside: non-root, read-only root and code, writable /tmp, no host env, no Docker socket, no reach to host or other instances", async () => {
    const dir = artifact("probe");
    const base = specOf("probe", "probe", dir, {}, { GREETING: "hi" });
    const { image } = await driver.prepare(base);
    const host = createServer((s) => {
      s.on("error", () => undefined); // the probes reset their connections
      s.end("host");
    });
    await new Promise<void>((r) => host.listen(0, "0.0.0.0", r));
    let hostConnections = 0;
    host.on("connection", () => hostConnections++);
    const port = (host.address() as AddressInfo).port;
    const logs: string[] = [];
    const a = await driver.start({ ...base, image }, { onLog: (l) => logs.push(`${l.stream} ${l.message}`) });
    void a.exited.then((e) => logs.push(`exit ${JSON.stringify(e)}`));
    const b = await driver.start({ ...specOf("probe", "probe", dir), image });
    try {
      const net = (await docker.getNetwork("stratus-functions").inspect()) as { IPAM?: { Config?: { Gateway?: string }[] } };
      const gateway = net.IPAM?.Config?.[0]?.Gateway;
      assert.ok(gateway !== undefined, "the functions network has a gateway address");
      // Positive control: the host itself reaches its server on that address.
      assert.equal(await tryConnect(gateway, port), "connected");
      hostConnections = 0;

      const ra = JSON.parse(
        (await get(a.endpoint.socketPath, `/?host=${gateway}&port=${port}`).catch((e: unknown) => {
          throw new Error(`probe failed: ${String(e)}\n${logs.join("\n")}`);
        })).body,
      ) as Record<string, unknown>;
      assert.equal(ra.uid, 65534);
      assert.equal(ra.gid, 65534);
      assert.equal(ra.rootWrite, "EROFS");
      assert.equal(ra.fnWrite, "EROFS");
      assert.equal(ra.tmpWrite, "ok");
      assert.equal(ra.greeting, "hi");
      assert.deepEqual(ra.env, ["GREETING"], "STRATUS_* removed by the runtime, nothing of the host");
      assert.equal(ra.dockerSock, false);
      assert.equal(ra.self, "connected", "control: the instance reaches its own listener");
      assert.equal(ra.connect, "ECONNREFUSED", "the host's addresses are rejected");
      assert.equal(hostConnections, 0);

      const [cb] = await docker.listContainers({ filters: { label: [`stratus.instance=${b.id}`] } });
      const ipB = cb?.NetworkSettings.Networks["stratus-functions"]?.IPAddress;
      assert.ok(ipB !== undefined);
      const rb = JSON.parse(
        (await get(a.endpoint.socketPath, `/?host=${ipB}&port=8080`).catch((e: unknown) => {
          throw new Error(`probe B failed: ${String(e)}\n${logs.join("\n")}`);
        })).body,
      ) as Record<string, unknown>;
      assert.notEqual(rb.connect, "connected", "instances cannot reach each other");
    } finally {
      await Promise.all([a.destroy(), b.destroy()]);
      host.close();
    }

    const noneLogs: string[] = [];
    const none = await driver.start({ ...specOf("probe", "probe", dir, { network: "none" }), image }, { onLog: (l) => noneLogs.push(`${l.stream} ${l.message}`) });
    void none.exited.then((e) => noneLogs.push(`exit ${JSON.stringify(e)}`));
    try {
      const r = JSON.parse(
        (await get(none.endpoint.socketPath).catch((e: unknown) => {
          throw new Error(`probe none failed: ${String(e)}\n${noneLogs.join("\n")}`);
        })).body,
      ) as Record<string, unknown>;
      assert.deepEqual(r.interfaces, ["lo"]);
    } finally {
      await none.destroy();
    }
  });

  test("out of memory: the engine's OOMKilled gives exit reason out-of-memory", async () => {
    const spec = specOf("hog", "hog", artifact("hog"), { memory: 64 });
    const { image } = await driver.prepare(spec);
    const inst = await driver.start({ ...spec, image });
    await assert.rejects(get(inst.endpoint.socketPath));
    const exit = await inst.exited;
    assert.equal(exit.reason, "out-of-memory");
    assert.equal(exit.exitCode, 137);
  });

  test("a module that throws at load: FUNCTION_LOAD_FAILED with its message, nothing left behind", async () => {
    const spec = specOf("broken", "broken", artifact("broken"));
    const { image } = await driver.prepare(spec);
    await assert.rejects(driver.start({ ...spec, image }), (err: { code?: string; message?: string }) => {
      assert.equal(err.code, "FUNCTION_LOAD_FAILED");
      assert.match(err.message ?? "", /broken at load time/);
      return true;
    });
    assert.equal((await docker.listContainers({ all: true, filters: { label: [`stratus.instance=${spec.instanceId}`] } })).length, 0);
  });

  test("discover lists the module's functions from a sandboxed container", async () => {
    const found = await driver.discover({ artifactDir: artifact("pair"), entry: "index.js", timeoutMs: 20_000 });
    assert.deepEqual(found.map((f) => f.name).sort(), ["one", "two"]);
    assert.deepEqual((found.find((f) => f.name === "one")?.config as { memory?: number }).memory, 128);
    await assert.rejects(driver.discover({ artifactDir: artifact("broken"), entry: "index.js", timeoutMs: 20_000 }), { code: "FUNCTION_LOAD_FAILED" });
  });

  test("reconcile removes labelled containers this driver does not track", async (t) => {
    // A driver of an earlier run of this node, which died without cleaning up.
    const previous = createDockerDriver({ registry: REGISTRY, runtimePath: RUNTIME, stateDir: socketRoot, nodeId });
    await previous.open();
    const orphan = await previous.start({ ...specOf("helloWorld_x", "hello", artifact("hello")), image: helloImage });
    const mine = await driver.start({ ...specOf("helloWorld_x", "hello", artifact("hello")), image: helloImage });
    t.after(() => Promise.all([mine.destroy(), orphan.destroy()]));
    const { removed } = await driver.reconcile();
    assert.equal(removed, 1);
    const left = (await ourContainers()).map((c) => c.Labels["stratus.instance"]);
    assert.deepEqual(left, [mine.id]);
    assert.equal((await orphan.exited).reason, "crashed", "the orphan's owner learns it is gone");
    assert.equal((await get(mine.endpoint.socketPath)).body, "Hello");
    await mine.destroy();
  });

  test("pruneImages removes unreferenced function images and keeps the ones asked for", async () => {
    const spec = specOf("pruneMe", "hello", artifact("hello", "\n// prune"));
    const { image } = await driver.prepare(spec);
    // A dangling function image (what a rebuilt tag leaves behind): listed as `<none>:<none>`.
    const ctx = mkdtempSync(join(work, "dangling-"));
    writeFileSync(join(ctx, "Dockerfile"), `FROM ${helloImage}\nLABEL stratus.test-dangling="${Date.now()}"\n`);
    const build = await docker.buildImage({ context: ctx, src: ["Dockerfile"] }, { rm: true, forcerm: true });
    const built = await new Promise<unknown[]>((res, rej) => docker.modem.followProgress(build, (err: Error | null, out: unknown[]) => (err ? rej(err) : res(out))));
    const danglingId = built.map((e) => (e as { aux?: { ID?: string } }).aux?.ID).find((id) => id !== undefined);
    assert.ok(danglingId, `the build reported an image id: ${JSON.stringify(built).slice(-300)}`);
    const { removed } = await driver.pruneImages([helloImage]);
    assert.ok(removed >= 2);
    await assert.rejects(docker.getImage(image).inspect(), (e: { statusCode?: number }) => e.statusCode === 404);
    await assert.rejects(docker.getImage(danglingId).inspect(), (e: { statusCode?: number }) => e.statusCode === 404, "the dangling image is removed too");
    await docker.getImage(helloImage).inspect();
    // Pulled back by digest from the registry before the first start on this engine.
    const inst = await driver.start({ ...spec, image });
    assert.equal((await get(inst.endpoint.socketPath)).body, "Hello");
    await inst.destroy();
  });

  test("a prune racing a fresh start never makes the start fail (the start pulls the image again if needed)", async () => {
    const spec = specOf("pruneRace", "hello", artifact("hello", "\n// prune race"));
    const { image } = await driver.prepare(spec);
    for (let i = 0; i < 4; i++) {
      // Nothing keeps the image: the prune removes it whenever no start is between its pull and create.
      const [inst] = await Promise.all([driver.start({ ...spec, instanceId: `${spec.instanceId}-r${i}`, image }), driver.pruneImages([helloImage])]);
      assert.equal((await get(inst.endpoint.socketPath)).body, "Hello");
      await inst.destroy();
    }
  });
});

describe("Docker driver across an engine restart", { timeout: 180_000 }, () => {
  test("instances whose containers died with the engine resolve exited; new starts work once it is back", async () => {
    const spec = specOf("helloWorld_x", "hello", artifact("hello"));
    const { image } = await driver.prepare(spec);
    const inst = await driver.start({ ...spec, image });
    assert.equal((await get(inst.endpoint.socketPath)).body, "Hello");
    const pid = Number(readFileSync("/var/run/docker.pid", "utf8"));
    process.kill(pid, "SIGTERM");
    try {
      const exit = await inst.exited;
      assert.equal(exit.reason, "crashed", JSON.stringify(exit));
      await assert.rejects(get(inst.endpoint.socketPath), "in-flight and later requests to it fail at once");
    } finally {
      execFileSync("bash", ["scripts/services.sh"], { stdio: ["ignore", "ignore", "pipe"], timeout: 120_000 });
    }
    const next = await driver.start({ ...specOf("helloWorld_x", "hello", artifact("hello")), image });
    assert.equal((await get(next.endpoint.socketPath)).body, "Hello");
    await next.destroy();
    // The dead instance's container could not be removed while the engine was down.
    const { removed } = await driver.reconcile();
    assert.ok(removed <= 1);
    assert.equal((await ourContainers()).length, 0);
  });
});

function tryConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: 1500 });
    s.on("connect", () => {
      s.destroy();
      resolve("connected");
    });
    s.on("timeout", () => {
      s.destroy();
      resolve("timeout");
    });
    s.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"));
  });
}
