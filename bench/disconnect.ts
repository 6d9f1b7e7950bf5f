// Disconnects (issue 16, target 4): clients that leave with requests in flight, as a load generator stopping
// or browsers navigating away. Each round: 10 requests (each on its own connection) to a function whose
// handler works 200 ms unless its req.signal aborts; all 10 clients disconnect 50 ms after all reached an instance; right away 10
// new requests follow. Measured on the followers: how many were cold starts, their latency p50/p99, errors.
// Same run, same node: `disconnectGraceMs` 3000 (round two: the aborted handler returns, its instance is
// reused) against `disconnectGraceMs` 0 (the baseline: every disconnect retires its instance, as before).
// Process driver, pool of 2 (a node's default). Usage: npm run build && npx tsx bench/disconnect.ts [rounds=10].
// Writes bench/results/disconnect.md. ~1 min.
import { Agent, request } from "undici";
import { setTimeout as delay } from "node:timers/promises";
import { spawnGateway } from "./lib/spawn-gateway";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const ROUNDS = Number(process.argv[2] ?? 10);
const WIDTH = 10;
const agent = new Agent({ connections: 4 * WIDTH });

interface ModeResult { followers: number[]; cold: number; errors: number; started: number }

async function runMode(graceMs: number): Promise<ModeResult> {
  const gw = await spawnGateway({
    prewarm: 2, cgroupRoot: `stratus-bench-disc-${graceMs}`, limits: { disconnectGraceMs: graceMs },
    functions: [{ name: "abortable", dir: "bench/fixtures", file: "functions.js", exportName: "abortable", config: { maxInstances: WIDTH, idleTimeout: 600_000 } }],
  });
  const url = `http://127.0.0.1:${gw.port}/fn/abortable/`;
  const one = async (query: string): Promise<{ ms: number; cold: boolean; ok: boolean }> => {
    const t0 = performance.now();
    try {
      const r = await request(url + query, { dispatcher: agent });
      const body = await r.body.text();
      return { ms: performance.now() - t0, cold: r.headers["x-stratus-cold-start"] === "true", ok: r.statusCode === 200 && body === "done" };
    } catch {
      return { ms: performance.now() - t0, cold: false, ok: false };
    }
  };
  // Warm-up: WIDTH instances.
  await Promise.all(Array.from({ length: WIDTH }, () => one("?ms=300")));
  const res: ModeResult = { followers: [], cold: 0, errors: 0, started: 0 };
  const startedBefore = (await gw.stats()).prewarm;
  for (let round = 0; round < ROUNDS; round++) {
    const acs = Array.from({ length: WIDTH }, () => new AbortController());
    const leaving = acs.map((ac) => request(url + "?ms=200", { dispatcher: agent, signal: ac.signal }).then((r) => r.body.text()).catch(() => undefined));
    // Leave once every request reached an instance (bounded), plus 50 ms of handler time.
    for (let i = 0; i < 500 && ((await gw.stats()).gateway.abortable as { busy?: number } | undefined)?.busy !== WIDTH; i++) await delay(10);
    await delay(50);
    for (const ac of acs) ac.abort();
    await Promise.all(leaving);
    const followers = await Promise.all(Array.from({ length: WIDTH }, () => one("?ms=0")));
    for (const f of followers) {
      res.followers.push(f.ms);
      if (f.cold) res.cold++;
      if (!f.ok) res.errors++;
    }
    await delay(300);
  }
  const s = await gw.stats();
  res.started = s.prewarm.hits + s.prewarm.misses - startedBefore.hits - startedBefore.misses;
  await gw.close();
  return res;
}

const before = load();
const baseline = await runMode(0);
const roundTwo = await runMode(3000);
const after = load();
await agent.close();

const n = ROUNDS * WIDTH;
const row = (label: string, r: ModeResult) => {
  const s = sorted(r.followers);
  return `| ${label} | ${r.cold}/${n} | ${r.started} | ${pct(s, 0.5).toFixed(1)} ms | ${pct(s, 0.99).toFixed(1)} ms | ${r.errors} |`;
};
const b50 = pct(sorted(baseline.followers), 0.5);
const t50 = pct(sorted(roundTwo.followers), 0.5);
const md = `# Disconnects — requests right after clients left with requests in flight

\`npx tsx bench/disconnect.ts\` · process driver, pool 2 · ${ROUNDS} rounds × ${WIDTH}: ${WIDTH} clients start a request to a
handler that works 200 ms unless \`req.signal\` aborts, all leave 50 ms after the last one reached an instance, then ${WIDTH} new requests follow at once
(\`maxInstances: ${WIDTH}\`, concurrency 1). Latency of the followers, from the client.

${machine(before, after)}

| setup | followers that were cold starts | instances started | p50 | p99 | errors |
|---|---|---|---|---|---|
${row("baseline: `disconnectGraceMs: 0` (every disconnect retires its instance, as before)", baseline)}
${row("round two: `disconnectGraceMs: 3000` (reused once the handler returns)", roundTwo)}

Follower p50, round two / baseline: **${(t50 / b50).toFixed(2)}**.
`;
writeResult("disconnect", md);
