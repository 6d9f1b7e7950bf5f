// KSM (kernel same-page merging) A/B for idle instances: runs bench/instance-memory.mjs with a row whose
// instances are started through the KSM launcher (prctl(PR_SET_MEMORY_MERGE), inherited across exec), with
// ksmd switched on for the run, and reports ksmd's CPU and the host's merge counters while the instances idle.
// ksmd's knobs are HOST-GLOBAL: this saves run / pages_to_scan / sleep_millisecs and restores them at the end
// (also on an error or SIGINT/SIGTERM). Root only.
// Usage: npm run build && node bench/ksm.mjs [N=10] [pages_to_scan=1000] [sleep_millisecs=20]
//   BENCH_IDLE_MS (default 90000 here) is how long the instances idle before PSS is read: KSM needs two
//   full scans over a page before it merges it, so this must cover a few scans at the chosen rate.
import { spawn } from "node:child_process";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";

const N = process.argv[2] ?? "10";
const PAGES = process.argv[3] ?? "1000";
const SLEEP = process.argv[4] ?? "20";
const KSM = "/sys/kernel/mm/ksm";
const launcher = resolve(process.env.BENCH_KSM_LAUNCHER ?? "bin/stratus-ksm-exec");
if (!existsSync(`${KSM}/run`)) throw new Error("this kernel has no KSM (/sys/kernel/mm/ksm)");
if (!existsSync(launcher)) throw new Error(`${launcher} missing: npm run build compiles it (needs gcc)`);
const knob = (k) => readFileSync(`${KSM}/${k}`, "utf8").trim();
const set = (k, v) => writeFileSync(`${KSM}/${k}`, String(v));
const saved = { run: knob("run"), pages_to_scan: knob("pages_to_scan"), sleep_millisecs: knob("sleep_millisecs") };
let restored = false;
function restore() {
  if (restored) return;
  restored = true;
  // run first, so ksmd stops before its rate goes back.
  set("run", saved.run);
  set("pages_to_scan", saved.pages_to_scan);
  set("sleep_millisecs", saved.sleep_millisecs);
  console.error(`ksm: restored ${JSON.stringify(saved)}`);
}
process.on("exit", restore);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));

const ksmdPid = readdirSync("/proc").filter((d) => /^\d+$/.test(d)).find((d) => {
  try {
    return readFileSync(`/proc/${d}/comm`, "utf8").trim() === "ksmd";
  } catch {
    return false;
  }
});
const TICK = 100; // USER_HZ on Linux
const ksmdCpuS = () => {
  if (!ksmdPid) return NaN;
  const f = readFileSync(`/proc/${ksmdPid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / TICK; // utime + stime, fields 14 and 15
};
const counters = () => ({ sharing: Number(knob("pages_sharing")), shared: Number(knob("pages_shared")), scans: Number(knob("full_scans")) });

set("pages_to_scan", PAGES);
set("sleep_millisecs", SLEEP);
set("run", "1");
const load0 = readFileSync("/proc/loadavg", "utf8").trim();
const t0 = Date.now();
const cpu0 = ksmdCpuS();
const samples = [];
const timer = setInterval(() => samples.push({ s: Math.round((Date.now() - t0) / 1000), cpu: ksmdCpuS() - cpu0, ...counters() }), 10_000);
const child = spawn(process.execPath, ["bench/instance-memory.mjs", N, process.env.BENCH_VARIANTS ?? ""].filter(Boolean), {
  env: { ...process.env, BENCH_KSM_LAUNCHER: launcher, BENCH_IDLE_MS: process.env.BENCH_IDLE_MS ?? "90000" },
  stdio: ["ignore", "inherit", "inherit"],
});
const code = await new Promise((r) => child.on("exit", r));
clearInterval(timer);
const wall = (Date.now() - t0) / 1000;
const cpu = ksmdCpuS() - cpu0;
restore();
console.log(`\nksmd: pages_to_scan ${PAGES}, sleep_millisecs ${SLEEP} (host had ${JSON.stringify(saved)}); load before ${load0}, after ${readFileSync("/proc/loadavg", "utf8").trim()}`);
console.log(`ksmd CPU ${cpu.toFixed(1)} s over ${wall.toFixed(0)} s wall (${((100 * cpu) / wall).toFixed(1)} % of one core)`);
console.log("| t (s) | ksmd CPU s (cumulative) | pages_sharing | pages_shared | full_scans |\n|---|---|---|---|---|");
for (const x of samples) console.log(`| ${x.s} | ${x.cpu.toFixed(1)} | ${x.sharing} | ${x.shared} | ${x.scans} |`);
process.exitCode = code ?? 1;
