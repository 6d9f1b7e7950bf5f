// Where one process-driver boot spends its time: wall and CPU of each layer, measured by stripping the
// sandbox command down (sh + cgroup join + bwrap + setpriv + /bin/true, then `node -e 0`, then the
// runtime to READY), plus full driver starts (fresh, and from a pool slot). CPU is the sum of
// /proc/<pid>/task/*/schedstat over the sandbox's processes (fresh starts: read at READY) or the
// children's rusage (bare node; not for the sandboxed commands, whose inner processes are reaped in the sandbox). Usage: npm run build && npx tsx bench/boot-profile.ts [runs=15]
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createProcessDriver } from "../src/sandbox/process/process-driver";
import { buildSandboxCommand } from "../src/sandbox/process/bwrap-args";
import { parseFunctionConfig } from "../src/shared/function-config";
import { load } from "./lib/report";

const runs = Number(process.argv[2] ?? 15);
const runtimePath = resolve("dist/runtime.cjs");
const stateDir = mkdtempSync(join(tmpdir(), "sbp-"));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Wall ms of one command, run to its exit. */
async function timed(file: string, args: string[], env: Record<string, string>): Promise<{ wall: number }> {
  const t0 = performance.now();
  const c = spawn(file, args, { env, stdio: "ignore" });
  await once(c, "exit");
  return { wall: performance.now() - t0 };
}
/** CPU ms of this process's reaped children so far (/proc/self/stat cutime + cstime, 10 ms ticks: averaged below). */
const childCpuMs = (): number => {
  const f = readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ");
  return (Number(f[13]) + Number(f[14])) * 10; // cutime + cstime, clock ticks of 10 ms
};

const baseEnv = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8" };
const layers: Record<string, { wall: number[]; cpu: number[] }> = {};
const add = (k: string, wall: number, cpu: number): void => {
  layers[k] ??= { wall: [], cpu: [] };
  layers[k]!.wall.push(wall);
  layers[k]!.cpu.push(cpu);
};

const driver = createProcessDriver({ runtimePath, stateDir, cgroupRoot: "stratus-bench-bootprof", prewarm: 0 });
void driver.open(); // nothing runs before open(); the pool starts filling now
await driver.reconcile();
const config = parseFunctionConfig("hello", { timeout: 10_000 });
const spec = (i: number, kind: string) => ({ instanceId: `bp-${kind}-${i}`, functionName: "hello", version: "1", artifactDir: resolve("bench/fixtures"), entry: "functions.js", exportName: "hello", config, env: {} });
const sandboxCpu = (cg: string): number => {
  let ns = 0;
  for (const pid of readFileSync(`/sys/fs/cgroup/pids/stratus-bench-bootprof/${cg}/cgroup.procs`, "utf8").split("\n").filter(Boolean)) {
    try {
      for (const t of readdirSync(`/proc/${pid}/task`)) ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // gone
    }
  }
  return ns / 1e6;
};

const before = load();
for (let i = 0; i < runs; i++) {
  // 1. cgroup create + remove (what launch() does before spawning)
  let t0 = performance.now();
  const cg = driver.cgroups.create(`bp-cg-${i}`, { memoryMb: 256, pidsMax: 128, cpuWeight: 100 });
  add("cgroup create", performance.now() - t0, 0);
  t0 = performance.now();
  // 2. the sandbox command with /bin/true, then with node -e 0 instead of the runtime
  for (const [label, tail] of [["sh+bwrap+setpriv, /bin/true", ["/bin/true"]], ["… + node -e 0", [process.execPath, "-e", "0"]]] as const) {
    const [file, args] = buildSandboxCommand({ bwrapPath: "/usr/bin/bwrap", setprivPath: "/usr/bin/setpriv", nodePath: process.execPath, runtimePath, artifactDir: resolve("bench/fixtures"), socketDir: stateDir, uid: 60500, gid: 60500, procsFiles: cg.procsFiles, network: "outbound", tmpDir: stateDir, seccompPath: join(stateDir, "seccomp.bpf"), maxOpenFiles: 1024, nodeArgs: [] });
    const rt = args.lastIndexOf(process.execPath);
    const cmd = [...args.slice(0, rt), ...tail];
    // No CPU figure: the sandbox's inner processes are reaped inside its PID namespace, so this process's
    // children rusage misses them (measured: the same figure with and without node -e 0).
    add(label, (await timed(file, cmd, baseEnv)).wall, Number.NaN);
  }
  t0 = performance.now();
  await cg.remove();
  add("cgroup remove", performance.now() - t0, 0);
  // 3. bare node
  {
    const c0 = childCpuMs();
    const r = await timed(process.execPath, ["-e", "0"], baseEnv);
    add("bare node -e 0 (no sandbox)", r.wall, childCpuMs() - c0);
  }
  // 4. a full fresh start to READY (driver.start), CPU of the sandbox's processes at READY
  {
    const cpu0 = process.cpuUsage();
    t0 = performance.now();
    const inst = await driver.start(spec(i, "fresh"));
    const wall = performance.now() - t0;
    const own = process.cpuUsage(cpu0);
    add("driver.start fresh → READY (sandbox CPU)", wall, sandboxCpu(inst.id));
    add("  … of which the driver's own CPU", 0, (own.user + own.system) / 1000);
    await inst.close(1000);
  }
}
const pooled = createProcessDriver({ runtimePath, stateDir: join(stateDir, "p"), cgroupRoot: "stratus-bench-bootprof", prewarm: 1 });
void pooled.open(); // nothing runs before open(); the pool starts filling now
for (let i = 0; i < runs; i++) {
  while (pooled.prewarm.idleCount() < 1) await new Promise((r) => setTimeout(r, 20));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const inst = await pooled.start(spec(i, "slot"));
  const own = process.cpuUsage(cpu0);
  add("driver.start from a slot → READY (driver CPU)", performance.now() - t0, (own.user + own.system) / 1000);
  await inst.close(1000);
}
await pooled.close();
await driver.close();
rmSync(stateDir, { recursive: true, force: true });
const after = load();
console.log(`load before ${before}, after ${after}; ${runs} runs`);
console.log("| layer | wall p50 ms | CPU mean ms |\n|---|---|---|");
for (const [k, v] of Object.entries(layers)) console.log(`| ${k} | ${median(v.wall).toFixed(1)} | ${Number.isNaN(v.cpu[0]) ? "–" : mean(v.cpu).toFixed(1)} |`);
