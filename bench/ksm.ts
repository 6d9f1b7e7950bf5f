// KSM (kernel same-page merging) A/B for idle instances, the runtime alone: runs bench/instance-memory.mjs
// with a row whose instances start through the KSM launcher (dist/stratus-ksm-exec: prctl(PR_SET_MEMORY_MERGE),
// inherited across exec) while ksmd runs at the given rate, and reports ksmd's CPU and the host's merge
// counters every 10 s. ksmd's knobs are HOST-GLOBAL: bench/lib/ksmd.ts restores them at the end. Root only.
// The sandboxed A/B through the gateway (bwrap included) is bench/density-ksm.ts.
// Usage: npm run build && npx tsx bench/ksm.ts [N=10] [pages_to_scan=1000] [sleep_millisecs=20]
//   BENCH_IDLE_MS (default 90000 here): KSM merges a page on its second full scan, so the idle time must
//   cover a few scans at the chosen rate. BENCH_VARIANTS=file.json: instance-memory.mjs's variants (the
//   KSM row is added to them).
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { ksmCounters, ksmdCpuSeconds, ksmdOn } from "./lib/ksmd";

const N = process.argv[2] ?? "10";
const PAGES = process.argv[3] ?? "1000";
const SLEEP = process.argv[4] ?? "20";
const launcher = resolve(process.env.BENCH_KSM_LAUNCHER ?? "dist/stratus-ksm-exec");
if (!existsSync(launcher)) throw new Error(`${launcher} missing: npm run build compiles it (needs cc)`);

const { saved, restore } = ksmdOn(PAGES, SLEEP);
const load0 = readFileSync("/proc/loadavg", "utf8").trim();
const t0 = Date.now();
const cpu0 = ksmdCpuSeconds();
const scans0 = ksmCounters().fullScans;
const samples: Array<{ s: number; cpu: number; sharing: number; shared: number; fullScans: number }> = [];
const timer = setInterval(() => {
  const c = ksmCounters();
  samples.push({ s: Math.round((Date.now() - t0) / 1000), cpu: ksmdCpuSeconds() - cpu0, ...c, fullScans: c.fullScans - scans0 });
}, 10_000);
const child = spawn(process.execPath, ["bench/instance-memory.mjs", N, process.env.BENCH_VARIANTS ?? ""].filter(Boolean), {
  env: { ...process.env, BENCH_KSM_LAUNCHER: launcher, BENCH_IDLE_MS: process.env.BENCH_IDLE_MS ?? "90000" },
  stdio: ["ignore", "inherit", "inherit"],
});
const code = await new Promise<number | null>((r) => child.on("exit", r));
clearInterval(timer);
const wall = (Date.now() - t0) / 1000;
const cpu = ksmdCpuSeconds() - cpu0;
restore();
console.log(`\nksmd: pages_to_scan ${PAGES}, sleep_millisecs ${SLEEP} (host had ${JSON.stringify(saved)}, restored); load before ${load0}, after ${readFileSync("/proc/loadavg", "utf8").trim()}`);
console.log(`ksmd CPU ${cpu.toFixed(1)} s over ${wall.toFixed(0)} s wall (${((100 * cpu) / wall).toFixed(1)} % of one core)`);
console.log("| t (s) | ksmd CPU s (cumulative) | pages_sharing | pages_shared | full scans (this run) |\n|---|---|---|---|---|");
for (const x of samples) console.log(`| ${x.s} | ${x.cpu.toFixed(1)} | ${x.sharing} | ${x.shared} | ${x.fullScans} |`);
process.exitCode = code ?? 1;
