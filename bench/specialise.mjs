// The runtime's own part of a pooled cold start, without sandbox or gateway: a generic runtime
// (STRATUS_GENERIC=1, as in a pool slot) is given one SpecializeMessage on fd 3; timed from the message
// to READY, then the first and a second request over the instance's Unix socket (each on a new
// connection, as the gateway's first request is), and the runtime's CPU time (schedstat of its
// threads) for message → first response, and the slot's boot (spawn → GENERIC_READY, and its CPU). Usage: npm run build && node bench/specialise.mjs [runs=20]
// (BENCH_RUNTIME=<another runtime.cjs> measures that build instead, for an A/B; BENCH_IDLE_MS how long the slot waits
// before its message, default 200; BENCH_NODE_FLAGS extra node flags for the runtime, space-separated;
// BENCH_BATCH=n boots n slots together, lets them idle, then specialises them one after another — n samples
// per idle wait, for long waits — default 1; BENCH_ENV=k=v,… extra environment for the runtime).
import { spawn } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { request } from "node:http";

const runs = Number(process.argv[2] ?? 20);
const root = fileURLToPath(new URL("..", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "stratus-bench-"));
// A copy outside the repository: its package.json says "type": "module", a function's dir does not.
copyFileSync(join(root, "bench/fixtures/functions.js"), join(dir, "functions.js"));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** CPU time of all of `pid`'s threads so far, ms (schedstat: ns on a CPU). */
const cpuMs = (pid) => readdirSync(`/proc/${pid}/task`).reduce((sum, t) => {
  try {
    return sum + Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]) / 1e6;
  } catch {
    return sum; // a thread that just ended
  }
}, 0);
const get = (socketPath) => new Promise((resolve, reject) => {
  const t0 = performance.now();
  const req = request({ socketPath, path: "/", headers: { connection: "close" } }, (res) => {
    const ms = performance.now() - t0;
    res.resume();
    res.on("end", () => resolve(ms));
  });
  req.on("error", reject);
  req.end();
});
const minflt = (pid) => Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")[7]);
const extraEnv = Object.fromEntries((process.env.BENCH_ENV ?? "").split(",").filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
const batch = Math.max(1, Number(process.env.BENCH_BATCH ?? 1));
const rows = { ready: [], first: [], second: [], cpu: [], cpuReady: [], cpuFirst: [], cpuSecond: [], faults: [] };
/** Boots slot `i` and resolves once it waits for its message. */
async function boot(i) {
  const socket = join(dir, `s${i}.sock`);
  const c = spawn(process.execPath, [...(process.env.BENCH_NODE_FLAGS ?? "").split(" ").filter(Boolean), process.env.BENCH_RUNTIME ?? join(root, "dist/runtime.cjs")], {
    env: { PATH: "/usr/bin:/bin", HOME: dir, ...extraEnv, STRATUS_SOCKET: socket, STRATUS_GENERIC: "1" },
    stdio: ["ignore", "pipe", "inherit", "pipe"], cwd: dir,
  });
  let buf = "";
  const lines = [];
  let wake = null;
  c.stdout.on("data", (d) => {
    buf += d;
    let n;
    while ((n = buf.indexOf("\n")) >= 0) { if (process.env.SHOW_TRACE && buf.startsWith("RTRACE")) console.log(buf.slice(0, n)); lines.push(buf.slice(0, n)); buf = buf.slice(n + 1); wake?.(); }
  });
  c.once("exit", (code) => { lines.push(`exit ${code}`); wake?.(); });
  const until = async (needle) => {
    for (;;) {
      if (lines.some((l) => l.startsWith("exit "))) throw new Error(`runtime exited: ${lines.join("\n")}`);
      const k = lines.findIndex((l) => l.includes(needle));
      if (k >= 0) return lines.splice(0, k + 1);
      await new Promise((r) => (wake = r));
    }
  };
  const tb = performance.now();
  await until("stratus:generic-ready");
  (rows.boot ??= []).push(performance.now() - tb);
  (rows.bootCpu ??= []).push(cpuMs(c.pid));
  return { c, until, socket, i };
}
/** Specialises a booted slot and measures it (then kills it). */
async function measure({ c, until, socket, i }) {
  const cpu0 = cpuMs(c.pid);
  const f0 = minflt(c.pid);
  const t0 = performance.now();
  if (process.env.SHOW_TRACE) console.log(`RTRACE ${(performance.timeOrigin + t0).toFixed(3)} rt.msgRead cpu=0`);
  // Newline-ended, as the process driver sends it.
  c.stdio[3].end(`${JSON.stringify({ entry: join(dir, "functions.js"), exportName: "hello", functionName: "hello", config: { timeout: 10000, memory: 256, concurrency: 1, maxBodyBytes: 6291456, handlerType: "express" }, instanceId: `i${i}`, env: {} })}\n`);
  await until("stratus:ready");
  rows.ready.push(performance.now() - t0);
  const cpu1 = cpuMs(c.pid);
  rows.first.push(await get(socket));
  const cpu2 = cpuMs(c.pid);
  rows.faults.push(minflt(c.pid) - f0);
  rows.second.push(await get(socket));
  const cpu3 = cpuMs(c.pid);
  rows.cpu.push(cpu2 - cpu0);
  rows.cpuReady.push(cpu1 - cpu0);
  rows.cpuFirst.push(cpu2 - cpu1);
  rows.cpuSecond.push(cpu3 - cpu2);
  await new Promise((r) => setTimeout(r, 20));
  c.kill("SIGKILL");
  await new Promise((r) => c.once("exit", r));
}
for (let i = 0; i < runs; i += batch) {
  const slots = await Promise.all(Array.from({ length: Math.min(batch, runs - i) }, (_, k) => boot(i + k)));
  await new Promise((r) => setTimeout(r, Number(process.env.BENCH_IDLE_MS ?? 200))); // idle slots (BENCH_IDLE_MS, default 200)
  for (const slot of slots) await measure(slot);
}
rmSync(dir, { recursive: true, force: true });
const f = (xs) => median(xs).toFixed(2);
console.log(`message → READY ${f(rows.ready)} ms; first request ${f(rows.first)} ms; second ${f(rows.second)} ms; runtime CPU message → first response ${f(rows.cpu)} ms (to READY ${f(rows.cpuReady)}, first request ${f(rows.cpuFirst)}, second ${f(rows.cpuSecond)}) (medians of ${runs}); minor page faults message → first response ${f(rows.faults)}; slot boot ${f(rows.boot)} ms, its CPU ${f(rows.bootCpu)} ms`);
