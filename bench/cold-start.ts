// Cold start: time to first byte through the gateway for a function never started on the node (its
// artifact present), process driver: without the pool, with the pool (a slot idle), and with the pool
// exhausted (the only slot was just taken and is being refilled). Baseline in the same run: a bare
// `node` http server spawned and asked for its first byte (no sandbox, no platform).
// Docker driver, the same three rows: needs dockerd + the registry (`bash scripts/services.sh`); images are
// prepared before timing, so the no-pool row measures container create + start + READY + first byte, and the
// pool rows a slot's specialisation (artifact mount + one message on its one-shot socket + load) + first byte,
// beside round two's attach channel (message on stdin) in the same run.
// Usage: npm run build && npx tsx bench/cold-start.ts [starts=30] [process]. Writes bench/results/cold-start.md
// (both drivers, ~3 min), or with `process` only the process driver's rows to bench/results/cold-start-process.md.
// BENCH_COLD_DRIVERS=docker measures the Docker rows only (and the bare baseline); =docker-pool only the Docker pool rows.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { request } from "undici";
import { setTimeout as delay } from "node:timers/promises";
import { spawnGateway, type BenchFunction, type BenchGateway } from "./lib/spawn-gateway";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const STARTS = Number(process.argv[2] ?? 30);
/** `process`: the process driver's rows only (written to results/cold-start-process.md); default both drivers. */
const ONLY_PROCESS = process.argv[3] === "process";
/** Which drivers' rows to measure (`BENCH_COLD_DRIVERS`, default both; `process` as argv[3] means process only). */
const DRIVERS = ONLY_PROCESS ? ["process"] : (process.env.BENCH_COLD_DRIVERS ?? "process,docker").split(",");
const ROUNDS = 5;
/** Pause between a slot becoming idle and the pooled start that takes it, ms. */
const SETTLE_MS = 250;
/**
 * The "slot idle for seconds" row (a real pool's slot has usually waited that long): how long the slot
 * waits before its start (`BENCH_COLD_IDLE_MS`, default 12 000; V8's memory reducer runs ~8 s after the
 * slot's boot) and how many such starts (`BENCH_COLD_IDLE_STARTS`, default half of `starts`; 0 skips the row).
 */
const IDLE_MS = Number(process.env.BENCH_COLD_IDLE_MS ?? 12_000);
const IDLE_STARTS = Number(process.env.BENCH_COLD_IDLE_STARTS ?? Math.ceil(STARTS / 2));
/**
 * Docker pool rows: wait before each start until the previous starts' containers are gone (default on;
 * BENCH_COLD_TEARDOWN=overlap measures with their teardown running beside the start, as round three did).
 */
const SETTLE_TEARDOWN = process.env.BENCH_COLD_TEARDOWN !== "overlap";
const fn = (name: string): BenchFunction => ({ name, dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: { idleTimeout: 120_000 } });
/** Docker rows: instances idle out after 1 s, so the run's containers do not pile up on the node. */
const dockerFn = (name: string): BenchFunction => ({ ...fn(name), config: { idleTimeout: 1000 } });

/** Server-Timing entries (`start`, `handler`, …) of a response, ms. */
function timings(header: string | string[] | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of String(header ?? "").matchAll(/([a-z-]+);dur=([0-9.]+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

async function ttfb(gw: BenchGateway, name: string): Promise<{ ms: number; cold: boolean; timing: Record<string, number> }> {
  const t0 = performance.now();
  const r = await request(`http://127.0.0.1:${gw.port}/fn/${name}/`);
  const ms = performance.now() - t0; // headers received = first byte
  const body = await r.body.text();
  if (r.statusCode !== 200 || body !== "Hello") throw new Error(`${name}: ${r.statusCode} ${body}`);
  return { ms, cold: r.headers["x-stratus-cold-start"] === "true", timing: timings(r.headers["server-timing"]) };
}

async function until(cond: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error("timed out waiting for the pool");
    await delay(20);
  }
}

async function bareNode(n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const child = spawn(process.execPath, ["bench/fixtures/bare-server.cjs", "0"], { stdio: ["ignore", "pipe", "inherit"], env: { PATH: "/usr/bin:/bin" } });
    const [line] = (await once(child.stdout!, "data")) as [Buffer];
    const port = Number(/listening (\d+)/.exec(line.toString())![1]);
    const r = await request(`http://127.0.0.1:${port}/`);
    out.push(performance.now() - t0);
    await r.body.text();
    child.kill();
    await once(child, "exit");
  }
  return out;
}

const before = load();
const names = (prefix: string) => Array.from({ length: STARTS + 1 }, (_, i) => `${prefix}-${i}`);

// Process driver, alternated: ROUNDS rounds, each with STARTS / ROUNDS starts of every row (a bare node
// spawn, no pool, a pool slot, the pool exhausted), so load that comes and goes hits every row alike. Both
// nodes run side by side; before each start the other one is quiet (its pool full, nothing booting).
const fresh: number[] = [];
const pooled: number[] = [];
const exhausted: number[] = [];
const baseline: number[] = [];
const pooledStart: number[] = [];
const pooledHandler: number[] = [];
const idlePooled: number[] = [];
const idleStart: number[] = [];
const idleHandler: number[] = [];
let idleHits = 0;
let pooledHits = 0;
let exhaustedHits = 0;
if (DRIVERS.includes("process")) {
  const per = Math.max(1, Math.round(STARTS / ROUNDS));
  const off = await spawnGateway({ prewarm: 0, cgroupRoot: "stratus-bench-cold-off", functions: names("f").map(fn) });
  const on = await spawnGateway({ prewarm: 1, cgroupRoot: "stratus-bench-cold-on", functions: [...names("p"), ...names("x"), ...names("q")].map(fn) });
  const idle = async () => (await on.stats()).prewarm.idle >= 1;
  let i = 0;
  for (let round = 0; round < ROUNDS; round++) {
    await until(idle);
    baseline.push(...(await bareNode(per)));
    for (let k = 0; k < per && i + k < STARTS; k++) {
      await until(idle);
      const r = await ttfb(off, `f-${i + k}`);
      if (!r.cold) throw new Error("expected a cold start");
      fresh.push(r.ms);
    }
    for (let k = 0; k < per && i < STARTS; k++, i++) {
      await until(idle);
      // An idle slot, not one that finished booting this instant (its boot's tail, and the start of the
      // previous iteration, would be measured too).
      await delay(SETTLE_MS);
      let s = await on.stats();
      const hits0 = s.prewarm.hits;
      const p = await ttfb(on, `p-${i}`);
      pooled.push(p.ms);
      pooledStart.push(p.timing.start ?? NaN);
      pooledHandler.push(p.timing.handler ?? NaN);
      s = await on.stats();
      pooledHits += s.prewarm.hits - hits0;
      // Exhausted: the one slot was just taken by p-i and its replacement is still starting.
      const x = await ttfb(on, `x-${i}`);
      exhausted.push(x.ms);
      exhaustedHits += (await on.stats()).prewarm.hits - s.prewarm.hits;
    }
  }
  // A slot idle for seconds (IDLE_MS), after the rounds: inside them, the long waits would lower the pool's
  // recent cold-start rate, so it would keep fewer slots for the next round's "pool exhausted" starts.
  while (idlePooled.length < IDLE_STARTS) {
    await until(idle);
    await delay(IDLE_MS);
    const hits0 = (await on.stats()).prewarm.hits;
    const q = await ttfb(on, `q-${idlePooled.length}`);
    idlePooled.push(q.ms);
    idleStart.push(q.timing.start ?? NaN);
    idleHandler.push(q.timing.handler ?? NaN);
    idleHits += (await on.stats()).prewarm.hits - hits0;
  }
  await off.close();
  await on.close();
}
// Docker driver, no pool: every start is a fresh container from the function's image (already pulled).
const dockerStarts: number[] = [];
if (DRIVERS.includes("docker")) {
  const gw = await spawnGateway({ driver: "docker", prewarm: 0, cgroupRoot: "unused", functions: names("d").map(dockerFn) });
  for (const name of names("d").slice(0, STARTS)) {
    const r = await ttfb(gw, name);
    if (!r.cold) throw new Error("expected a cold start");
    dockerStarts.push(r.ms);
  }
  await gw.close();
}
// Docker driver with the pool: as the process rows (an idle slot, then the pool exhausted), with the
// slots' one-shot Unix socket (the default) — and, as the same-run baseline, with round two's channel
// (the container's stdin and stdout through dockerd's attach stream). The two gateways run side by side;
// before every pooled start both pools are full again (no slot boots beside the start being measured),
// and which of the two goes first alternates.
const dockerPooled: number[] = [];
const dockerExhausted: number[] = [];
const dockerAttachPooled: number[] = [];
let dockerPooledHits = 0;
let dockerExhaustedHits = 0;
let dockerAttachHits = 0;
if (DRIVERS.includes("docker") || DRIVERS.includes("docker-pool")) {
  const gw = await spawnGateway({ driver: "docker", prewarm: 1, cgroupRoot: "unused", functions: [...names("dp"), ...names("dx")].map(dockerFn) });
  const gwAttach = await spawnGateway({ driver: "docker", prewarm: 1, cgroupRoot: "unused", specializeChannel: "attach", functions: names("da").map(dockerFn) });
  /** No instance of either gateway is left: the previous starts' containers idled out and were removed. */
  const noneLeft = async () => (await Promise.all([gw.stats(), gwAttach.stats()])).every((s) => Object.values(s.gateway).every((f) => f.total === 0));
  const bothIdle = async () => {
    await until(async () => (await gwAttach.stats()).prewarm.idle >= 1 && (await gw.stats()).prewarm.idle >= 1);
    // The previous starts' instances idle out after 1 s; their teardown (SIGTERM, the container's exit,
    // dockerd's removal: ~0.1–0.3 s of engine CPU each) must not run beside the start being measured.
    if (SETTLE_TEARDOWN) await until(noneLeft);
    await delay(150); // the new slot's start-up output and the engine's work for it have settled
  };
  const attachStart = async (i: number) => {
    await bothIdle();
    const a0 = (await gwAttach.stats()).prewarm.hits;
    dockerAttachPooled.push((await ttfb(gwAttach, `da-${i}`)).ms);
    dockerAttachHits += (await gwAttach.stats()).prewarm.hits - a0;
  };
  const socketStart = async (i: number) => {
    await bothIdle();
    let s = await gw.stats();
    const hits0 = s.prewarm.hits;
    dockerPooled.push((await ttfb(gw, `dp-${i}`)).ms);
    s = await gw.stats();
    dockerPooledHits += s.prewarm.hits - hits0;
    // Exhausted: the one slot was just taken by dp-i and its replacement is still starting.
    const x = await ttfb(gw, `dx-${i}`);
    dockerExhausted.push(x.ms);
    dockerExhaustedHits += (await gw.stats()).prewarm.hits - s.prewarm.hits;
  };
  for (let i = 0; i < STARTS; i++) {
    if (i % 2 === 0) {
      await attachStart(i);
      await socketStart(i);
    } else {
      await socketStart(i);
      await attachStart(i);
    }
  }
  await gw.close();
  await gwAttach.close();
}
// The bare baseline runs inside the process rounds; without them, on its own.
if (baseline.length === 0) baseline.push(...(await bareNode(15)));
const after = load();

const row = (label: string, xs: number[], note: string) => {
  if (xs.length === 0) return `| ${label} | – | – | – | – | not measured in this run (BENCH_COLD_DRIVERS) |`;
  const s = sorted(xs);
  const b = pct(sorted(baseline), 0.5);
  return `| ${label} | ${pct(s, 0.5).toFixed(1)} ms | ${pct(s, 0.9).toFixed(1)} ms | ${pct(s, 0.99).toFixed(1)} ms | ${(pct(s, 0.5) / b).toFixed(2)} | ${note} |`;
};
const p50 = (xs: number[]): string => pct(sorted(xs.filter((x) => !Number.isNaN(x))), 0.5).toFixed(1);
const dockerRows = ONLY_PROCESS ? "" : `
${row("docker driver, no pool (image present)", dockerStarts, "container create + start + READY")}
${row("docker driver, pool with an idle slot, attach channel (round two: same-run baseline)", dockerAttachPooled, `${dockerAttachHits}/${STARTS} served from the pool; message on stdin, READY on stdout, both through dockerd`)}
${row("docker driver, pool with an idle slot", dockerPooled, `${dockerPooledHits}/${STARTS} served from the pool; one-shot Unix socket + ready file in the slot's socket dir${dockerAttachPooled.length ? ` — p50 ${(pct(sorted(dockerPooled), 0.5) / pct(sorted(dockerAttachPooled), 0.5)).toFixed(2)} × the attach channel's` : ""}`)}
${row("docker driver, pool exhausted", dockerExhausted, `${dockerExhaustedHits}/${STARTS} served from the pool; the refill runs beside it`)}`;
const md = `# Cold start — time to first byte for a function never started on the node

\`npx tsx bench/cold-start.ts ${STARTS}${ONLY_PROCESS ? " process" : ""}\` · process driver (bubblewrap + cgroups)${ONLY_PROCESS ? "" : " and docker driver"} · ${STARTS} starts per row, each a
different function name (so each is a real first start), hello function, artifact on disk. Measured from the
client: request sent → response headers received, through the gateway (which runs in its own process).
The process rows are alternated: ${ROUNDS} rounds of ${Math.max(1, Math.round(STARTS / ROUNDS))} starts of each row (bare spawn, no pool, pool, pool exhausted)
; after them, ${IDLE_STARTS} starts from a slot idle for ${IDLE_MS / 1000} s (\`BENCH_COLD_IDLE_MS\`, \`BENCH_COLD_IDLE_STARTS\`: a pool's slot usually waits seconds).

${machine(before, after)}

| setup | p50 | p90 | p99 (= max at n=${STARTS}) | p50 / baseline | notes |
|---|---|---|---|---|---|
${row("bare `node` http server, spawned (baseline, no sandbox)", baseline, `spawn → first byte, ${baseline.length} runs`)}
${row("process driver, no pool", fresh, "bwrap + cgroup + node start + load")}
${row(`process driver, pool with an idle slot (idle ${SETTLE_MS} ms)`, pooled, `${pooledHits}/${STARTS} served from the pool; Server-Timing p50: start ${p50(pooledStart)} ms, handler (first request, gateway → instance → headers) ${p50(pooledHandler)} ms`)}
${row(`process driver, pool with a slot idle ${IDLE_MS / 1000} s`, idlePooled, `${idleHits}/${idlePooled.length} served from the pool (n = ${idlePooled.length}); Server-Timing p50: start ${p50(idleStart)} ms, handler ${p50(idleHandler)} ms`)}
${row("process driver, pool exhausted", exhausted, `${exhaustedHits}/${STARTS} served from the pool (the start waits for the slot being refilled)`)}${dockerRows}
`;
writeResult(ONLY_PROCESS ? "cold-start-process" : "cold-start", md);
