// Instance width: 50 connections against the hello function with concurrency 1 and maxInstances
// 1, 2, 3, 5, 10 (all warm), each measured with autocannon in interleaved rounds; the bare Node server is the
// baseline. It answers "how many concurrency-1 instances does this machine's CPU use well?", the input of the
// gateway's scale-out decision (docs/gateway.md, "When a queued request starts an instance").
// Usage: npm run build && npx tsx bench/instance-width.ts   (prints a table; ~1.5 min)
import { spawnBareServer, throughput, warmInstances } from "./lib/load";
import { spawnGateway } from "./lib/spawn-gateway";
import { load, machine } from "./lib/report";

const WIDTHS = (process.env.BENCH_WIDTHS ?? "1,2,3,5,10").split(",").map(Number);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const before = load();
const { child: bare, port: barePort } = await spawnBareServer("0");
const gw = await spawnGateway({
  prewarm: 0,
  cgroupRoot: "stratus-bench-width",
  functions: WIDTHS.map((w) => ({ name: `w${w}`, dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: { maxInstances: w, ...(process.env.BENCH_FIXED === "1" ? { minInstances: w } : {}) } })),
});

const run = async (url: string) => (await throughput(url, DURATION_S)).rps;
const res: Record<string, number[]> = { bare: [] };
for (const w of WIDTHS) res[`w${w}`] = [];
for (let r = 0; r < ROUNDS; r++) {
  res.bare!.push(await run(`http://127.0.0.1:${barePort}/`));
  for (const w of WIDTHS) {
    // As far as the pool starts instances (its estimate may rightly run fewer than maxInstances).
    // Fixed (BENCH_FIXED=1): minInstances holds w warm. Else the pool may refuse to go that wide on a busy CPU
    // (docs/gateway.md): give up warming after 5 s rather than the default 30.
    await warmInstances(gw, `w${w}`, w, { required: false, timeoutMs: process.env.BENCH_FIXED === "1" ? 30_000 : 5_000 });
    res[`w${w}`]!.push(await run(`http://127.0.0.1:${gw.port}/fn/w${w}/`));
  }
}
const stats = await gw.stats();
await gw.close();
bare.kill();
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const bareRps = med(res.bare!);
console.log(machine(before, load()));
console.log("| target | req/s (median) | runs | ratio to bare |\n|---|---|---|---|");
for (const [k, xs] of Object.entries(res)) console.log(`| ${k === "bare" ? "bare Node http" : `maxInstances ${k.slice(1)}`} | ${Math.round(med(xs))} | ${xs.map(Math.round).join(", ")} | ${(med(xs) / bareRps).toFixed(3)} |`);
console.log("instances at the end:", JSON.stringify(Object.fromEntries(Object.entries(stats.gateway).map(([k, v]) => [k, (v as { total: number }).total]))));
