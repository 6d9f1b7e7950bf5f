// Pooled cold start, this checkout against another one in the SAME run: two nodes side by side (each a
// gateway + driver from its own checkout's sources, each instance runtime from its own checkout's
// dist/runtime.cjs), both pools full and no instance of either left before every start, the order of the
// two alternating. Time to first byte through the gateway, as bench/cold-start.ts measures it, with the
// gateway's Server-Timing `start` (driver.start) and `handler` (the first request) columns.
// Usage: npm run build && BENCH_BASELINE_TREE=<another checkout, built, with node_modules> npx tsx bench/cold-ab.ts [starts=20] [process|docker]
// (e.g. `git worktree add`, or `git archive <commit> | tar -x -C <dir>` + a node_modules link + its dist/).
// Writes bench/results/cold-ab-<driver>.md (-idle<ms>ms with BENCH_SLOT_IDLE_MS).
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { request } from "undici";
import { spawnGateway, type BenchFunction, type BenchGateway } from "./lib/spawn-gateway";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const STARTS = Number(process.argv[2] ?? 20);
const DRIVER = (process.argv[3] ?? "process") as "process" | "docker";
const baseTree = process.env.BENCH_BASELINE_TREE;
if (baseTree === undefined || !existsSync(join(baseTree, "bench/lib/spawn-gateway.ts")) || !existsSync(join(baseTree, "dist/runtime.cjs"))) {
  throw new Error("BENCH_BASELINE_TREE must name a built checkout (bench/lib/spawn-gateway.ts and dist/runtime.cjs)");
}
/**
 * Pause after both pools are full and nothing is left, before a start, ms (`BENCH_SLOT_IDLE_MS`, default 250:
 * a slot idle that long; 12000 measures a slot idle for seconds, as a real pool's usually is, after V8's
 * memory reducer ran in it ~8 s after its boot).
 */
const SETTLE_MS = Number(process.env.BENCH_SLOT_IDLE_MS ?? 250);
// Docker instances idle out after 1 s so containers do not pile up; the process driver's stay.
const fn = (name: string): BenchFunction => ({ name, dir: resolve("bench/fixtures"), file: "functions.js", exportName: "hello", config: { idleTimeout: DRIVER === "docker" ? 1000 : 2000 } });
const names = (prefix: string) => Array.from({ length: STARTS }, (_, i) => `${prefix}-${i}`);

function timings(header: string | string[] | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of String(header ?? "").matchAll(/([a-z-]+);dur=([0-9.]+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

async function until(cond: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error("timed out waiting for the pools");
    await delay(20);
  }
}

const { spawnGateway: spawnBaseline } = (await import(resolve(baseTree, "bench/lib/spawn-gateway.ts"))) as { spawnGateway: typeof spawnGateway };
const before = load();
const sides: Array<{ label: string; gw: BenchGateway; prefix: string; ms: number[]; start: number[]; handler: number[]; hits: number }> = [
  { label: "this checkout", gw: await spawnGateway({ driver: DRIVER, prewarm: 1, cgroupRoot: `stratus-bench-ab-a-${process.pid}`, runtimePath: resolve("dist/runtime.cjs"), functions: names("a").map(fn) }), prefix: "a", ms: [], start: [], handler: [], hits: 0 },
  { label: `baseline (${baseTree})`, gw: await spawnBaseline({ driver: DRIVER, prewarm: 1, cgroupRoot: `stratus-bench-ab-b-${process.pid}`, runtimePath: resolve(baseTree, "dist/runtime.cjs"), functions: names("b").map(fn) }), prefix: "b", ms: [], start: [], handler: [], hits: 0 },
];
/** Both pools hold an idle slot and neither node has an instance left (no boot, no teardown beside the start). */
const quiet = async () => {
  await until(async () => {
    const all = await Promise.all(sides.map((s) => s.gw.stats()));
    return all.every((st) => st.prewarm.idle >= 1 && Object.values(st.gateway).every((f) => f.total === 0));
  });
  await delay(SETTLE_MS);
};
try {
  for (let i = 0; i < STARTS; i++) {
    for (const side of i % 2 === 0 ? sides : [...sides].reverse()) {
      await quiet();
      const hits0 = (await side.gw.stats()).prewarm.hits;
      const t0 = performance.now();
      const r = await request(`http://127.0.0.1:${side.gw.port}/fn/${side.prefix}-${i}/`);
      const ms = performance.now() - t0;
      const body = await r.body.text();
      if (r.statusCode !== 200 || body !== "Hello") throw new Error(`${side.prefix}-${i}: ${r.statusCode} ${body}`);
      const t = timings(r.headers["server-timing"]);
      side.ms.push(ms);
      side.start.push(t.start ?? NaN);
      side.handler.push(t.handler ?? NaN);
      side.hits += (await side.gw.stats()).prewarm.hits - hits0;
    }
  }
} finally {
  for (const s of sides) await s.gw.close();
}
const after = load();
const p = (xs: number[], q: number) => pct(sorted(xs.filter((x) => !Number.isNaN(x))), q);
const [mine, base] = sides as [typeof sides[0], typeof sides[0]];
const row = (s: typeof mine) =>
  `| ${s.label} | ${p(s.ms, 0.5).toFixed(1)} ms | ${p(s.ms, 0.9).toFixed(1)} ms | ${p(s.start, 0.5).toFixed(1)} ms | ${p(s.handler, 0.5).toFixed(1)} ms | ${s.hits}/${STARTS} |`;
writeResult(`cold-ab-${DRIVER}${SETTLE_MS === 250 ? "" : `-idle${SETTLE_MS}ms`}`, `# Pooled cold start, this checkout vs a baseline checkout in the same run (${DRIVER} driver${SETTLE_MS === 250 ? "" : `, slots idle ${SETTLE_MS / 1000} s`})

\`${SETTLE_MS === 250 ? "" : `BENCH_SLOT_IDLE_MS=${SETTLE_MS} `}BENCH_BASELINE_TREE=… npx tsx bench/cold-ab.ts ${STARTS} ${DRIVER}\` · two nodes side by side, ${STARTS} pooled starts each,
alternating which goes first; before every start both pools hold an idle slot and neither node has an
instance left (no boot and no teardown beside the start), then ${SETTLE_MS} ms pass. Time to first byte from the client through the gateway.

${machine(before, after)}

| build | p50 | p90 | Server-Timing start p50 | handler p50 | from the pool |
|---|---|---|---|---|---|
${row(mine)}
${row(base)}

p50 ratio (this / baseline): **${(p(mine.ms, 0.5) / p(base.ms, 0.5)).toFixed(2)}**
`);
