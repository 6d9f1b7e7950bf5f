// KSM for sandboxes (process driver option `ksm`, platform setting process.ksm; docs/security.md "Memory
// deduplication"): the launcher (src/sandbox/ksm/ksm-exec.c, built to dist/stratus-ksm-exec) marks the
// process mergeable and the flag survives exec; with the setting every process of an instance's sandbox
// (a fresh start and a pre-warm slot) runs with PR_SET_MEMORY_MERGE, without it none does; the driver
// refuses to start without a launcher or a kernel with KSM, and warns when ksmd is not running. These
// tests never write /sys/kernel/mm/ksm (host-wide): whether ksmd then merges is measured by bench/ksm.ts and bench/density-ksm.ts.
// Needs root, bubblewrap, setpriv, Linux >= 6.4 with KSM and `npm run build` (with a C compiler).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Writable } from "node:stream";
import { invokeInstance } from "../src/sandbox/conformance";
import { createProcessDriver, type ProcessDriver } from "../src/sandbox/process/process-driver";
import { buildSandboxCommand } from "../src/sandbox/process/bwrap-args";
import { checkKsm, KSM_LAUNCHER_NAME, ksmLauncherBeside, processKsmState } from "../src/sandbox/ksm/ksm";
import { parseFunctionConfig } from "../src/shared/function-config";
import { createLogger } from "../src/shared/logger";
import { resolvePlatformConfig } from "../src/shared/platform-config";
import type { Instance } from "../src/sandbox/driver";

const runtimePath = resolve("dist/runtime.cjs");
const launcher = resolve("dist", KSM_LAUNCHER_NAME);
const fixtures = resolve("test/fixtures/functions");
if (!existsSync(runtimePath)) throw new Error(`${runtimePath} is missing: run \`npm run build\` first`);
if (!existsSync(launcher)) throw new Error(`${launcher} is missing: \`npm run build\` compiles it with cc (Debian: gcc, libc6-dev; scripts/lib/ensure-deps.sh installs them)`);
if (process.getuid?.() !== 0) throw new Error("the KSM sandbox tests need root (cgroups, bwrap binding host paths)");
if (!existsSync("/sys/kernel/mm/ksm/run")) throw new Error("this kernel has no KSM (/sys/kernel/mm/ksm): the KSM tests need Linux >= 6.4 with CONFIG_KSM");

const rootName = `stratus-ksmtest-${process.pid}`;

/** A driver whose log lines are kept (JSON objects). */
function newDriver(suffix: string, o: { ksm: boolean; prewarm?: number }): { driver: ProcessDriver; logs: Record<string, unknown>[]; cleanup: () => Promise<void> } {
  const stateDir = mkdtempSync("/tmp/skt-");
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, cb) { for (const l of chunk.toString("utf8").split("\n")) if (l) logs.push(JSON.parse(l) as Record<string, unknown>); cb(); } });
  const driver = createProcessDriver({ runtimePath, stateDir, cgroupRoot: `${rootName}-${suffix}`, ksm: o.ksm, prewarm: o.prewarm ?? 0, logger: createLogger({ level: "info" }, sink) });
  void driver.open();
  return {
    driver,
    logs,
    cleanup: async () => {
      await driver.close();
      for (const d of driver.cgroups.rootDirs()) if (existsSync(d)) rmdirSync(d);
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** Every pid in the instance cgroups under the driver's root (bwrap, its init, setpriv's node, …). */
function sandboxPids(driver: ProcessDriver): number[] {
  const pids = new Set<number>();
  for (const root of driver.cgroups.rootDirs()) {
    if (!existsSync(root)) continue;
    for (const e of readdirSync(root, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      for (const p of readFileSync(join(root, e.name, "cgroup.procs"), "utf8").split("\n").filter(Boolean)) pids.add(Number(p));
    }
  }
  return [...pids];
}

let seq = 0;
/** `memory` other than the pool's 256 MB key makes the start fresh (no slot fits). */
const spec = (memory = 256): Parameters<ProcessDriver["start"]>[0] => ({
  instanceId: `ksm-${process.pid}-${++seq}`, functionName: "hello", version: "1", artifactDir: fixtures, entry: "probe.js", exportName: "hello", config: parseFunctionConfig("hello", { memory }), env: {},
});

/** Waits (bounded) until the driver's pool holds `n` idle slots. */
async function poolHolds(driver: ProcessDriver, n: number): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (driver.prewarm.idleCount() >= n) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the pool did not reach ${n} idle slots in 30 s`);
}

test("the launcher sets PR_SET_MEMORY_MERGE and it survives exec; plain processes do not have it; usage and exec errors exit 2 / 127", () => {
  const withKsm = spawnSync(launcher, ["/bin/cat", "/proc/self/ksm_stat"], { encoding: "utf8" });
  assert.equal(withKsm.status, 0, withKsm.stderr);
  assert.match(withKsm.stdout, /^ksm_merge_any: yes$/m, "cat, exec'd by the launcher, runs with merge-any");
  // Through a second exec too (the driver's chain is launcher → nsenter → bwrap → setpriv → node).
  const twice = spawnSync(launcher, ["/bin/sh", "-c", "exec /bin/cat /proc/self/ksm_stat"], { encoding: "utf8" });
  assert.match(twice.stdout, /^ksm_merge_any: yes$/m);
  const plain = spawnSync("/bin/cat", ["/proc/self/ksm_stat"], { encoding: "utf8" });
  assert.match(plain.stdout, /^ksm_merge_any: no$/m, "without the launcher: no merge-any");
  assert.equal(spawnSync(launcher, [], { encoding: "utf8" }).status, 2);
  const missing = spawnSync(launcher, ["/nonexistent/program"], { encoding: "utf8" });
  assert.equal(missing.status, 127);
  assert.match(missing.stderr, /\/nonexistent\/program: No such file or directory/);
});

test("the sandbox command runs the launcher after the cgroup join and before nsenter and bwrap, and only when asked", () => {
  const input = {
    bwrapPath: "/usr/bin/bwrap", setprivPath: "/usr/bin/setpriv", nodePath: "/usr/bin/node", runtimePath: "/x/runtime.cjs", artifactDir: "/x/fn", socketDir: "/x/run",
    uid: 60500, gid: 60500, procsFiles: ["/sys/fs/cgroup/a/cgroup.procs"], network: "outbound" as const, netnsPath: "/run/netns/n1", tmpDir: "/x/tmp", nodeArgs: [], maxOpenFiles: 1024, seccompPath: "/x/seccomp.bpf",
  };
  const [, withKsm] = buildSandboxCommand({ ...input, ksmLauncherPath: launcher });
  const at = withKsm.indexOf(launcher);
  assert.ok(at > withKsm.indexOf("/sys/fs/cgroup/a/cgroup.procs"), "after the cgroup files");
  assert.equal(withKsm[at + 1], "/usr/bin/nsenter", "right before nsenter");
  assert.ok(withKsm.indexOf("/usr/bin/bwrap") > at);
  const [, without] = buildSandboxCommand(input);
  assert.equal(without.includes(launcher), false);
  assert.deepEqual(withKsm.filter((a) => a !== launcher), without, "nothing else changes");
});

test("process.ksm: off by default, a boolean setting (env STRATUS_PROCESS_KSM)", () => {
  assert.equal(resolvePlatformConfig({}).process.ksm, false);
  assert.equal(resolvePlatformConfig({ env: { STRATUS_PROCESS_KSM: "true" } }).process.ksm, true);
  assert.throws(() => resolvePlatformConfig({ env: { STRATUS_PROCESS_KSM: "maybe" } }), /process\.ksm/);
});

test("checkKsm: refuses a missing launcher and a kernel without KSM; reads ksmd's state without writing it", () => {
  assert.throws(() => checkKsm("/nonexistent/stratus-ksm-exec"), /launcher \/nonexistent\/stratus-ksm-exec is missing.*gcc/);
  assert.throws(() => checkKsm(launcher, "/nonexistent/ksm"), /this kernel has no KSM/);
  assert.throws(() => createProcessDriver({ runtimePath, stateDir: mkdtempSync("/tmp/skt-"), cgroupRoot: `${rootName}-nolauncher`, ksm: true, ksmLauncherPath: "/nonexistent/stratus-ksm-exec" }), /launcher .* is missing/);
  assert.equal(ksmLauncherBeside(runtimePath), launcher);
  // A sysfs-shaped directory: the state is read from the files, ksmd counts as running only at run = 1.
  const fake = mkdtempSync("/tmp/skt-sys-");
  try {
    for (const [k, v] of [["run", "0\n"], ["pages_to_scan", "100\n"], ["sleep_millisecs", "20\n"]]) writeFileSync(join(fake, k!), v!);
    assert.deepEqual(checkKsm(launcher, fake), { ksmdRunning: false, run: "0", pagesToScan: "100", sleepMillisecs: "20" });
    writeFileSync(join(fake, "run"), "1\n");
    assert.equal(checkKsm(launcher, fake).ksmdRunning, true);
    assert.equal(readFileSync(join(fake, "run"), "utf8"), "1\n", "not written");
  } finally {
    rmSync(fake, { recursive: true, force: true });
  }
  const before = readFileSync("/sys/kernel/mm/ksm/run", "utf8");
  checkKsm(launcher);
  assert.equal(readFileSync("/sys/kernel/mm/ksm/run", "utf8"), before, "the host's ksmd setting is left as it was");
});

test("with process.ksm every process of a fresh instance's and a pre-warm slot's sandbox runs mergeable; the instance serves", { timeout: 120_000 }, async () => {
  const { driver, logs, cleanup } = newDriver("on", { ksm: true, prewarm: 1 });
  const insts: Instance[] = [];
  try {
    await poolHolds(driver, 1);
    const slotPids = sandboxPids(driver);
    assert.ok(slotPids.length >= 3, `a slot has bwrap, its init and node: ${slotPids.join(",")}`);
    for (const pid of slotPids) assert.equal(processKsmState(pid)?.mergeAny, true, `slot process ${pid} (${readFileSync(`/proc/${pid}/comm`, "utf8").trim()}) is mergeable`);
    insts.push(await driver.start(spec()));
    assert.equal(driver.prewarm.counts().hits, 1, "the first start was specialised from the slot");
    insts.push(await driver.start(spec(128)));
    assert.equal(driver.prewarm.counts().misses, 1, "the 128 MB start was fresh");
    for (const inst of insts) assert.equal((await invokeInstance(inst, "/")).body, "Hello");
    const pids = sandboxPids(driver);
    assert.ok(pids.length >= 6, `two sandboxes' processes: ${pids.join(",")}`);
    const comms = new Set<string>();
    for (const pid of pids) {
      const s = processKsmState(pid);
      if (s === null) continue; // exited meanwhile (a pool refill's boot)
      comms.add(readFileSync(`/proc/${pid}/comm`, "utf8").trim());
      assert.equal(s.mergeAny, true, `process ${pid} is mergeable`);
    }
    assert.ok(comms.has("node") && comms.has("bwrap"), `node and bwrap both checked: ${[...comms].join(",")}`);
    // The driver says whether ksmd will merge anything (it never starts ksmd itself).
    const running = readFileSync("/sys/kernel/mm/ksm/run", "utf8").trim() === "1";
    const warned = logs.some((l) => l.level === 40 && String(l.msg).includes("ksmd is not running"));
    assert.equal(warned, !running, `warned iff ksmd is off (run=${running ? 1 : 0})`);
  } finally {
    for (const inst of insts) await inst.close(5000).catch(() => {});
    await cleanup();
  }
});

test("without process.ksm no process of the sandbox is mergeable (what the test above would see without the prctl)", { timeout: 60_000 }, async () => {
  const { driver, logs, cleanup } = newDriver("off", { ksm: false });
  try {
    const inst = await driver.start(spec());
    assert.equal((await invokeInstance(inst, "/")).body, "Hello");
    const pids = sandboxPids(driver);
    assert.ok(pids.length >= 3);
    for (const pid of pids) assert.equal(processKsmState(pid)?.mergeAny, false, `process ${pid} is not mergeable`);
    assert.equal(logs.some((l) => String(l.msg).includes("ksm")), false, "nothing said about KSM");
    await inst.close(5000);
  } finally {
    await cleanup();
  }
});
