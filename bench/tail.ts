// Warm-path tail attribution at one connection: which stalls make the slow requests.
//  1. The runtime alone (dist/runtime.cjs on a Unix socket, no sandbox, no gateway) under Node flag variants
//     (`BENCH_TAIL_VARIANTS`, JSON [{ name, args, runtime? }]: `runtime` another build of runtime.cjs for an
//     A/B of runtime changes), alternated round by round with a bare Node server on a
//     socket: p50/p99 and, from `--trace-gc`, how many GCs of each kind ran and their pauses per 1,000 requests.
//  2. The gateway (process driver, one warm hello instance, its own process with BENCH_TRACE=1; one node per
//     entry of BENCH_TAIL_GATEWAYS, JSON [{ name, runtimePath?, observe? }], default without and with the
//     observer): p50/p99, and
//     for the requests slower than the bare server's p99, the share that overlapped a GC pause of the gateway
//     process (perf_hooks `gc` entries, epoch-aligned), with the gateway's event-loop delay.
// Usage: npm run build && npx tsx bench/tail.ts [requests=3000] [rounds=3]. Prints; writes bench/results/tail.md
// unless BENCH_PRINT_ONLY=1. ~2 min.
import { spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Client } from "undici";
import { spawnBareServer } from "./lib/load";
import { spawnGateway } from "./lib/spawn-gateway";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const N = Number(process.argv[2] ?? 3000);
const ROUNDS = Number(process.argv[3] ?? 3);
const HEAP = "--max-old-space-size=192";
const variants: Array<{ name: string; args: string[]; runtime?: string }> = process.env.BENCH_TAIL_VARIANTS
  ? JSON.parse(process.env.BENCH_TAIL_VARIANTS)
  : [
    { name: "the drivers' flags (heap limit)", args: [HEAP] },
    { name: "+ --single-threaded-gc", args: [HEAP, "--single-threaded-gc"] },
    { name: "+ --min-semi-space-size=4", args: [HEAP, "--min-semi-space-size=4"] },
    { name: "+ --optimize-for-size", args: [HEAP, "--optimize-for-size"] },
  ];
const dir = mkdtempSync(join(tmpdir(), "stratus-tail-"));
const entry = join(dir, "functions.cjs");
copyFileSync("bench/fixtures/functions.js", entry);
const config = { timeout: 10000, memory: 256, concurrency: 1, minInstances: 0, maxInstances: 10, idleTimeout: 300000, maxBodyBytes: 6291456, maxQueue: 100, queueTimeout: 30000, env: {}, public: true, network: "outbound", handlerType: "express", maxOpenFiles: 1024, maxAttempts: 3, maxEventAgeS: 21600, retryDelayMs: 5000, asyncConcurrency: 2, triggers: [] };

interface Runtime { child: ChildProcess; socket: string; gcLines: string[] }
async function startRuntime(args: string[], i: number, runtime = "dist/runtime.cjs"): Promise<Runtime> {
  const socket = join(dir, `r${i}.sock`);
  const child = spawn(process.execPath, ["--trace-gc", ...args, resolve(runtime)], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { PATH: "/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8", GLIBC_TUNABLES: "glibc.malloc.trim_threshold=524288", STRATUS_SOCKET: socket, STRATUS_ENTRY: entry, STRATUS_EXPORT: "hello", STRATUS_FUNCTION: "hello", STRATUS_CONFIG: JSON.stringify(config), STRATUS_INSTANCE_ID: `t${i}` },
  });
  const gcLines: string[] = [];
  let buf = "";
  let ready: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf("\n")) !== -1) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.includes("stratus:ready")) ready();
      else if (/ ms: (Scavenge|Mark-Compact|Mark-sweep|Minor)/.test(line) && gcLines.length < 100_000) gcLines.push(line);
    }
  });
  await Promise.race([isReady, new Promise((_, fail) => setTimeout(() => fail(new Error("runtime did not start")), 10_000))]);
  return { child, socket, gcLines };
}

/** `n` sequential GETs over one connection after 200 warm-up: [start epoch ms, µs] each. */
async function run(client: Client, path: string, n: number): Promise<Array<[number, number]>> {
  const out: Array<[number, number]> = [];
  for (let i = 0; i < n + 200; i++) {
    const start = performance.timeOrigin + performance.now();
    const t0 = performance.now();
    const r = await client.request({ method: "GET", path });
    const body = await r.body.text();
    if (r.statusCode !== 200 || body !== "Hello") throw new Error(`${path}: ${r.statusCode} ${body}`);
    if (i >= 200) out.push([start, (performance.now() - t0) * 1000]);
  }
  return out;
}

function gcSummary(lines: string[], requests: number): string {
  const kinds = new Map<string, { n: number; ms: number[] }>();
  for (const l of lines) {
    const m = / ms: (Scavenge|Mark-Compact|Mark-sweep|Minor Mark-Sweep)[^,]*, ([\d.]+) \/ ([\d.]+) ms/.exec(l);
    if (!m) continue;
    const k = kinds.get(m[1]!) ?? { n: 0, ms: [] };
    k.n++;
    k.ms.push(Number(m[2]));
    kinds.set(m[1]!, k);
  }
  return [...kinds].map(([k, v]) => `${k} ${(v.n * 1000 / requests).toFixed(1)}/1k req, pause p50 ${pct(sorted(v.ms), 0.5).toFixed(2)} ms max ${Math.max(...v.ms).toFixed(2)} ms`).join("; ") || "none";
}

const before = load();
// 1. The runtime alone vs. a bare server, alternated.
const bareSock = join(dir, "bare.sock");
const bare = await spawnBareServer(bareSock);
const bareClient = new Client("http://localhost", { socketPath: bareSock, pipelining: 1 });
const runtimes = await Promise.all(variants.map((v, i) => startRuntime(v.args, i, v.runtime)));
const clients = runtimes.map((r) => new Client("http://localhost", { socketPath: r.socket, pipelining: 1 }));
const bareTimes: number[] = [];
const times: number[][] = variants.map(() => []);
const gcBefore = runtimes.map(() => 0);
for (let round = 0; round < ROUNDS; round++) {
  bareTimes.push(...(await run(bareClient, "/", N)).map((x) => x[1]));
  for (let v = 0; v < variants.length; v++) {
    if (round === 0) gcBefore[v] = runtimes[v]!.gcLines.length; // leave start-up GCs out
    times[v]!.push(...(await run(clients[v]!, "/", N)).map((x) => x[1]));
  }
}
const bareSorted = sorted(bareTimes);
const rows1 = variants.map((v, i) => {
  const t = sorted(times[i]!);
  return `| ${v.name} (\`${v.args.join(" ")}\`${v.runtime ? `, ${v.runtime}` : ""}) | ${pct(t, 0.5).toFixed(0)} µs | ${pct(t, 0.99).toFixed(0)} µs | ${gcSummary(runtimes[i]!.gcLines.slice(gcBefore[i]), t.length)} |`;
});
for (const c of [bareClient, ...clients]) await c.close();
for (const r of runtimes) r.child.kill();
bare.child.kill();

// 2. Through the gateway, with the gateway's GC pauses; one node per entry of BENCH_TAIL_GATEWAYS (JSON
// [{ name, runtimePath?, observe? }], default: without and with the observer), alternated round by round with
// a bare server.
process.env.BENCH_TRACE = "1";
const gwSetups: Array<{ name: string; runtimePath?: string; observe?: boolean }> = process.env.BENCH_TAIL_GATEWAYS
  ? JSON.parse(process.env.BENCH_TAIL_GATEWAYS)
  : [{ name: "no observer" }, { name: "observer on, records batched into SQLite (as `stratus up`)", observe: true }];
const gws = [];
for (const [i, g] of gwSetups.entries()) {
  gws.push(await spawnGateway({ prewarm: 0, cgroupRoot: `stratus-bench-tail${i}`, runtimePath: g.runtimePath, observe: g.observe ?? false, functions: [{ name: "hello", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: {} }] }));
}
const bare2 = await spawnBareServer("0");
const gwClients = gws.map((gw) => new Client(`http://127.0.0.1:${gw.port}`, { pipelining: 1 }));
const bare2Client = new Client(`http://127.0.0.1:${bare2.port}`, { pipelining: 1 });
for (const c of gwClients) await run(c, "/fn/hello/", 300);
// Idle event-loop delay: the first gateway (its instance resident, no requests) beside an idle bare Node
// process over the same 5 s — what the machine's scheduling alone does to a timer.
await gws[0]!.trace();
const idleBare = spawn(process.execPath, ["-e", "const h=require('perf_hooks').monitorEventLoopDelay({resolution:1});h.enable();setTimeout(()=>{process.stdout.write(JSON.stringify({p50:h.percentile(50)/1e6,p99:h.percentile(99)/1e6,max:h.max/1e6}))},5000)"], { stdio: ["ignore", "pipe", "inherit"] });
let idleBareOut = "";
idleBare.stdout!.setEncoding("utf8").on("data", (d: string) => (idleBareOut += d));
await new Promise((r) => idleBare.once("exit", r));
const idleGw = (await gws[0]!.trace()).delay;
const idleBareDelay = JSON.parse(idleBareOut || "null") as { p50: number; p99: number; max: number } | null;
for (const gw of gws) await gw.trace();
const gwRuns: Array<Array<[number, number]>> = gws.map(() => []);
const bare2Times: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  bare2Times.push(...(await run(bare2Client, "/", N)).map((x) => x[1]));
  for (const [i, c] of gwClients.entries()) gwRuns[i]!.push(...(await run(c, "/fn/hello/", N)));
}
const traces = [];
for (const gw of gws) traces.push(await gw.trace());
for (const c of [...gwClients, bare2Client]) await c.close();
bare2.child.kill();
for (const gw of gws) await gw.close();
rmSync(dir, { recursive: true, force: true });
const after = load();

const b2 = sorted(bare2Times);
const slowAbove = pct(b2, 0.99);
const KIND: Record<number, string> = { 1: "minor", 2: "major", 4: "incremental", 8: "weak callbacks" };
const gwRows: string[] = [];
const gwNotes: string[] = [];
for (const [i, runs] of gwRuns.entries()) {
  const g = sorted(runs.map((x) => x[1]));
  const trace = traces[i]!;
  const slow = runs.filter((x) => x[1] > slowAbove);
  const overlaps = (x: [number, number]) => trace.gcs.some((e) => e.at < x[0] + x[1] / 1000 && e.at + e.ms > x[0]);
  const gcMs = sorted(trace.gcs.map((e) => e.ms));
  const byKind = new Map<number, number>();
  for (const e of trace.gcs) byKind.set(e.kind, (byKind.get(e.kind) ?? 0) + 1);
  gwRows.push(`| gateway → instance: ${gwSetups[i]!.name} | ${pct(g, 0.5).toFixed(0)} µs | ${pct(g, 0.99).toFixed(0)} µs | ${(pct(g, 0.99) / pct(b2, 0.99)).toFixed(2)} |`);
  gwNotes.push(`- ${gwSetups[i]!.name}: gateway process GC pauses during the measured requests ${trace.gcs.length} (${[...byKind].map(([k, n]) => `${KIND[k] ?? k} ${n}`).join(", ") || "none"}), ${(trace.gcs.length * 1000 / runs.length).toFixed(1)} per 1,000 requests, pause p50 ${gcMs.length ? pct(gcMs, 0.5).toFixed(2) : "-"} ms, max ${gcMs.length ? gcMs[gcMs.length - 1]!.toFixed(2) : "-"} ms; requests slower than the bare server's p99 (${slowAbove.toFixed(0)} µs): ${slow.length} of ${runs.length}, of these ${slow.filter(overlaps).length} overlapped a gateway GC pause; gateway event-loop delay (1 ms resolution) p50 ${trace.delay?.p50.toFixed(2)} ms, p99 ${trace.delay?.p99.toFixed(2)} ms, max ${trace.delay?.max.toFixed(2)} ms`);
}

const md = `# Warm-path tail at one connection — where the slow requests come from

\`npx tsx bench/tail.ts ${N} ${ROUNDS}\` · ${ROUNDS} rounds × ${N} sequential requests per target, alternated.

${machine(before, after)}

## The runtime alone on its Unix socket (no sandbox, no gateway), by Node flags

| target | p50 | p99 | GCs in the instance during the measured requests (\`--trace-gc\`) |
|---|---|---|---|
| bare Node http server on a socket (baseline) | ${pct(bareSorted, 0.5).toFixed(0)} µs | ${pct(bareSorted, 0.99).toFixed(0)} µs | |
${rows1.join("\n")}

## Through the gateway (process driver, one warm instance; gateway in its own process)

| target | p50 | p99 | p99 / bare p99 |
|---|---|---|---|
| bare Node http server (baseline) | ${pct(b2, 0.5).toFixed(0)} µs | ${pct(b2, 0.99).toFixed(0)} µs | 1.00 |
${gwRows.join("\n")}

${gwNotes.join("\n")}

Idle, over the same 5 s before the rounds (event-loop delay, 1 ms resolution): ${gwSetups[0]!.name}, its instance resident, p50 ${idleGw?.p50.toFixed(2)} ms, p99 ${idleGw?.p99.toFixed(2)} ms, max ${idleGw?.max.toFixed(2)} ms; a bare idle Node process p50 ${idleBareDelay?.p50.toFixed(2)} ms, p99 ${idleBareDelay?.p99.toFixed(2)} ms, max ${idleBareDelay?.max.toFixed(2)} ms.
`;
console.log(md);
if (process.env.BENCH_PRINT_ONLY !== "1") writeResult("tail", md);
