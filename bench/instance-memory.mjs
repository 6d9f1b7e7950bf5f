// Instance memory by Node flag / environment variant: the runtime alone (no sandbox, no gateway), so a
// variant's effect on the node process is measured without bwrap's processes around it.
// Starts N instances of each variant, interleaved (variant A, B, C, A, B, C, …) so that load and page
// cache treat them alike, sends each one request (or `BENCH_REQUESTS`), waits `BENCH_IDLE_MS` (15 s),
// then sums PSS and Private_Dirty from /proc/<pid>/smaps_rollup per variant. Baseline: bare Node http
// servers (bench/fixtures/bare-server.cjs), the same count, interleaved with the rest.
// Usage: npm run build && [BENCH_RUNTIME_A=old/runtime.cjs] node bench/instance-memory.mjs [N=8] [variants.json]
//   BENCH_RUNTIME_A adds a row for another build of the runtime (an A/B of runtime changes, same flags).
//   variants.json: [{ "name": "…", "args": ["--flag"], "env": { "K": "V" }, "runtime": "path (optional)",
//                     "wrap": ["/path/to/launcher", "…"] (optional: argv put before node, e.g. the KSM launcher) }, …]
//   BENCH_KSM_LAUNCHER=path adds a row "+ KSM (prctl PR_SET_MEMORY_MERGE)" run through that launcher
//   (dist/stratus-ksm-exec, built by `npm run build`); ksmd must be running for it to merge anything
//   (bench/ksm.ts turns it on for a run and restores the host's settings).
//   (default: the built-in list)
// Prints a table; writes no file (runs are recorded in bench/results/instance-memory.md by hand).
import { spawn } from "node:child_process";
import { once } from "node:events";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const N = Number(process.argv[2] ?? 8);
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 15_000);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 1);
const runtime = resolve(process.env.BENCH_RUNTIME ?? "dist/runtime.cjs");
const config = { timeout: 10000, memory: 256, concurrency: 1, minInstances: 0, maxInstances: 10, idleTimeout: 300000, maxBodyBytes: 6291456, maxQueue: 100, queueTimeout: 30000, env: {}, public: true, network: "outbound", handlerType: "express", maxOpenFiles: 1024, maxAttempts: 3, maxEventAgeS: 21600, retryDelayMs: 5000, asyncConcurrency: 2, triggers: [] };
const HEAP = "--max-old-space-size=192";
const TUNE = { GLIBC_TUNABLES: "glibc.malloc.trim_threshold=524288" };
// The runtime's idle collection (src/runtime/idle-gc.ts) is on unless BENCH_RUNTIME_A names another build.
const OLD = process.env.BENCH_RUNTIME_A;
const variants = process.argv[3] ? JSON.parse(readFileSync(process.argv[3], "utf8")) : [
  ...(OLD ? [{ name: `build A (${OLD})`, runtime: OLD, args: [HEAP], env: TUNE }] : []),
  { name: "heap flag, trim threshold (the drivers' settings)", args: [HEAP], env: TUNE },
  { name: "+ --v8-pool-size=1", args: [HEAP, "--v8-pool-size=1"], env: TUNE },
  { name: "+ --max-semi-space-size=1", args: [HEAP, "--max-semi-space-size=1"], env: TUNE },
  { name: "+ --single-threaded", args: [HEAP, "--single-threaded"], env: TUNE },
  { name: "+ malloc arena_max=1", args: [HEAP], env: { GLIBC_TUNABLES: `${TUNE.GLIBC_TUNABLES}:glibc.malloc.arena_max=1` } },
];
if (process.env.BENCH_KSM_LAUNCHER) variants.push({ name: "+ KSM (prctl PR_SET_MEMORY_MERGE)", wrap: [resolve(process.env.BENCH_KSM_LAUNCHER)], args: [HEAP], env: TUNE });

const dir = mkdtempSync(join(tmpdir(), "stratus-instmem-"));
const MiB = 1024 * 1024;
// The fixture is CommonJS; this package is "type": "module".
const entry = join(dir, "functions.cjs");
copyFileSync("bench/fixtures/functions.js", entry);

function smaps(pid) {
  const t = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB$`, "m").exec(t)?.[1] ?? 0) * 1024;
  let ksm = 0;
  try {
    ksm = Number(readFileSync(`/proc/${pid}/ksm_merging_pages`, "utf8")) * 4096;
  } catch {
    // kernel without KSM: nothing merged
  }
  return { pss: kb("Pss"), priv: kb("Private_Dirty") + kb("Private_Clean"), rss: kb("Rss"), ksm };
}

function get(socketPath, port) {
  return new Promise((ok, fail) => {
    const r = request({ socketPath, port, host: "127.0.0.1", path: "/", agent: false }, (res) => {
      let b = "";
      res.setEncoding("utf8").on("data", (d) => (b += d)).on("end", () => (res.statusCode === 200 ? ok(b) : fail(new Error(`${res.statusCode} ${b}`))));
    });
    r.on("error", fail).end();
  });
}

async function startInstance(v, i) {
  const socket = join(dir, `${i}.sock`);
  const env = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8", ...v.env,
    STRATUS_SOCKET: socket, STRATUS_ENTRY: entry, STRATUS_EXPORT: "hello", STRATUS_FUNCTION: "hello",
    STRATUS_CONFIG: JSON.stringify(config), STRATUS_INSTANCE_ID: `m-${i}` };
  // A relative path in `wrap` (dist/stratus-ksm-exec) is from the repository root, like `runtime`.
  const wrap = (v.wrap ?? []).map((w) => (w.includes("/") && !w.startsWith("/") ? resolve(w) : w));
  const argv = [...wrap, process.execPath, ...v.args, v.runtime ? resolve(v.runtime) : runtime];
  const child = spawn(argv[0], argv.slice(1), { env, stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.setEncoding("utf8");
  for await (const chunk of child.stdout) {
    out += chunk;
    if (out.includes("stratus:ready")) break;
    if (out.length > 100_000) break;
  }
  if (!out.includes("stratus:ready")) throw new Error(`instance did not start: ${out}`);
  child.stdout.resume();
  for (let k = 0; k < REQUESTS; k++) await get(socket);
  return child;
}

async function startBare() {
  const child = spawn(process.execPath, ["bench/fixtures/bare-server.cjs", "0"], { stdio: ["ignore", "pipe", "inherit"], env: { PATH: "/usr/bin:/bin" } });
  const [line] = await once(child.stdout, "data");
  const port = Number(/listening (\d+)/.exec(line.toString())[1]);
  child.stdout.resume();
  for (let k = 0; k < REQUESTS; k++) await get(undefined, port);
  return child;
}

const all = [{ name: "baseline: bare Node http server", bare: true }, ...variants];
const children = all.map(() => []);
let idx = 0;
for (let n = 0; n < N; n++) {
  for (let v = 0; v < all.length; v++) {
    children[v].push(all[v].bare ? await startBare() : await startInstance(all[v], idx++));
  }
}
await new Promise((r) => setTimeout(r, IDLE_MS));
const rows = all.map((v, i) => {
  const s = children[i].map((c) => smaps(c.pid));
  const avg = (k) => s.reduce((a, x) => a + x[k], 0) / s.length / MiB;
  return { name: v.name, pss: avg("pss"), priv: avg("priv"), rss: avg("rss"), ksm: avg("ksm") };
});
for (const list of children) for (const c of list) c.kill("SIGKILL");
rmSync(dir, { recursive: true, force: true });
const base = rows.find((r) => r.name.startsWith("baseline"));
console.log(`N = ${N} per variant, ${REQUESTS} request(s) each, ${IDLE_MS / 1000} s idle; runtime ${runtime}; node ${process.version}`);
console.log("| variant | PSS MiB | private MiB | RSS MiB | KSM-merged MiB | per GiB (PSS) |\n|---|---|---|---|---|---|");
for (const r of rows) console.log(`| ${r.name} | ${r.pss.toFixed(2)} | ${r.priv.toFixed(2)} | ${r.rss.toFixed(1)} | ${r.ksm.toFixed(2)} | ${Math.floor(1024 / r.pss)} |`);
console.log(`(baseline PSS ${base.pss.toFixed(2)} MiB)`);
