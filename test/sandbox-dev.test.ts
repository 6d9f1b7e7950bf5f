// The dev driver (src/sandbox/dev/, what `stratus dev` runs on) against the shared conformance suite,
// minus the isolation cases it cannot pass by design (each skip says why), plus what only this driver
// has: the clean environment it does keep, and reconcile after the dev server was SIGKILLed.
// Needs `npm run build` (dist/runtime.cjs); no root.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { once } from "node:events";
import { runDriverConformance, invokeInstance } from "../src/sandbox/conformance";
import { createDevDriver, type DevDriver } from "../src/sandbox/dev/dev-driver";
import { parseFunctionConfig } from "../src/shared/function-config";
import type { Instance } from "../src/sandbox/driver";

const runtimePath = resolve("dist/runtime.cjs");
const fixtures = resolve("test/fixtures/functions");
if (!existsSync(runtimePath)) throw new Error(`${runtimePath} is missing: run \`npm run build\` first`);

const newDriver = (): { driver: DevDriver; stateDir: string; cleanup: () => Promise<void> } => {
  const stateDir = mkdtempSync(join(tmpdir(), "sdv-"));
  const driver = createDevDriver({ runtimePath, stateDir });
  void driver.open(); // nothing runs before open(); the pool starts filling now
  return {
    driver,
    stateDir,
    cleanup: async () => {
      await driver.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
};

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

let conf: ReturnType<typeof newDriver> | undefined;
runDriverConformance(
  "dev",
  async () => {
    conf = newDriver();
    return { driver: conf.driver, cleanup: conf.cleanup };
  },
  {
    fixturesDir: fixtures,
    leftovers: async (inst: Instance) => {
      const out: string[] = [];
      for (const ext of ["sock", "pid"]) if (existsSync(join(conf!.stateDir, `${inst.id}.${ext}`))) out.push(`${ext} file of ${inst.id}`);
      return out;
    },
    // The dev driver runs the function as a plain child process of `stratus dev`, as the developer, on
    // their own machine: it has no sandbox to hold these cases to. The process and Docker drivers pass them.
    skip: {
      "memory-limit": "no cgroup: the dev driver caps only the V8 heap (--max-old-space-size, see heap-limit); off-heap memory is not limited",
      "pids-limit": "no cgroup: a fork bomb would run unbounded on the developer's machine",
      "isolation-fs-env": "no mount namespace or separate uid: a dev function reads and writes what the developer can (the clean environment is tested below)",
      "isolation-processes": "no PID namespace: kill(-1) in a dev function signals every process of the developer (as root: the machine)",
      "network-outbound": "no network rules: a dev function reaches the host's ports like any local program",
      "network-none": "no network namespace: network \"none\" is not enforced in dev",
      // These three came with the sandbox hardening and failed on main for the dev driver since both merged.
      seccomp: "no seccomp filter: a dev function makes any syscall the developer's own processes can",
      noexec: "no private noexec /tmp: a dev function writes and runs binaries where the developer can",
      nofile: "no RLIMIT_NOFILE of its own: a dev function inherits the dev server's open-file limit",
    },
  },
);

test("dev driver: the function sees its env and nothing of the dev server's", { timeout: 30_000 }, async () => {
  const { driver, cleanup } = newDriver();
  process.env.DEV_DRIVER_HOST_VAR = "host";
  try {
    const inst = await driver.start({ instanceId: "env-probe", functionName: "isolation", version: "1", artifactDir: fixtures, entry: "probe.js", exportName: "isolation", config: parseFunctionConfig("isolation", {}), env: { FN_VAR: "visible" } });
    const r = await invokeInstance(inst, "/");
    assert.equal(r.status, 200, r.body);
    const out = JSON.parse(r.body) as { env: string[] };
    assert.ok(out.env.includes("FN_VAR"), "the function's env is visible");
    assert.ok(!out.env.includes("DEV_DRIVER_HOST_VAR"), "the dev server's env is not visible");
    assert.ok(!out.env.some((k) => k.startsWith("STRATUS_")), "no platform variables reach user code");
    assert.equal(driver.inUse(fixtures), true, "the artifact dir is in use while the instance lives");
    await inst.destroy();
    assert.equal(driver.inUse(fixtures), false);
  } finally {
    delete process.env.DEV_DRIVER_HOST_VAR;
    await cleanup();
  }
});

test("dev driver: reconcile after the dev server was SIGKILLed kills its runtimes and removes sockets and pid files", { timeout: 60_000 }, async () => {
  const { driver, stateDir, cleanup } = newDriver();
  try {
    const child = spawn(process.execPath, ["--import", "tsx", "test/fixtures/sandbox/dev-start-two-and-wait.ts", runtimePath, stateDir, fixtures], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.setEncoding("utf8");
    const pids = await new Promise<number[]>((resolveStarted, reject) => {
      child.stdout.on("data", (c: string) => {
        out += c;
        const m = /started (\d+) (\d+)\n/.exec(out);
        if (m) resolveStarted([Number(m[1]), Number(m[2])]);
      });
      child.on("exit", (code) => reject(new Error(`child exited early (${code})`)));
    });
    child.kill("SIGKILL");
    await once(child, "exit");
    assert.ok(pids.every(alive), "the runtimes outlive the killed dev server");
    const { removed } = await driver.reconcile();
    assert.equal(removed, 2);
    const deadline = Date.now() + 5000;
    while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(!pids.some(alive), "reconcile killed the orphaned runtimes");
    for (const n of [1, 2]) {
      assert.equal(existsSync(join(stateDir, `orphan-${n}.sock`)), false, "stale sockets are removed");
      assert.equal(existsSync(join(stateDir, `orphan-${n}.pid`)), false, "stale pid files are removed");
    }
    assert.deepEqual(await driver.reconcile(), { removed: 0 }, "reconcile is idempotent");
  } finally {
    await cleanup();
  }
});

test("dev driver: killAllNow ends every instance synchronously (the dev server's exit handler)", { timeout: 30_000 }, async () => {
  const { driver, stateDir, cleanup } = newDriver();
  try {
    const spec = (id: string) => ({ instanceId: id, functionName: "hello", version: "1", artifactDir: fixtures, entry: "probe.js", exportName: "hello", config: parseFunctionConfig("hello", {}), env: {} });
    const insts = await Promise.all([driver.start(spec("k-1")), driver.start(spec("k-2"))]);
    const pids = ["k-1", "k-2"].map((id) => Number(readFileSync(join(stateDir, `${id}.pid`), "utf8")));
    driver.killAllNow();
    const exits = await Promise.all(insts.map((i) => i.exited));
    assert.deepEqual(exits.map((e) => e.signal), ["SIGKILL", "SIGKILL"]);
    assert.ok(!pids.some(alive));
    await assert.rejects(driver.start(spec("k-3")), { code: "SHUTTING_DOWN" }, "a killed driver starts nothing more");
  } finally {
    await cleanup();
  }
});
