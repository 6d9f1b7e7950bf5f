// Event-loop stalls from writing telemetry: the observability pipeline with a real SQLite store fed one
// invocation record (+ its REPORT line) every 0.5 ms for 4 s (one connection at ~2,000 req/s), written in one
// transaction per batch vs. in slices of TELEMETRY_WRITE_SLICE items (src/observe/batcher.ts maxWriteItems),
// alternated 3 times. Counts loop turns that took > 2 ms (what a request arriving then waits for); the
// CPU of the process is reported too (slices cost commits).
// Usage: npx tsx bench/telemetry-stall.ts. Prints; one run recorded in results/tail.md.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createObservability, TELEMETRY_WRITE_SLICE } from "../src/observe/observer";
import { openSqliteStore } from "../src/store/sqlite/sqlite-store";
import { createSilentLogger } from "../src/shared/logger";
import type { InvocationRecord } from "../src/shared/invocation";
import { load, machine, writeResult } from "./lib/report";

const dir = mkdtempSync(join(tmpdir(), "stf-"));
const rec = (i: number): InvocationRecord => ({ requestId: `req-${i}`, functionName: "f", version: "v1", instanceId: "i1", nodeId: "n1", coldStart: false, queueMs: 0.1, startMs: 0, initMs: null, handlerMs: 1.2, totalMs: 1.5, status: 200, errorCode: null, bytesIn: 0, bytesOut: 5, peakMemoryBytes: null, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ts: Date.now(), trigger: null, eventId: null, attempt: null });

let cpuMs = 0;
let lastWrites = { n: 0, p50: 0, max: 0 };
async function run(slice: number, k: number): Promise<{ records: number; stalls: number; max: number; p99: number }> {
  const store = openSqliteStore({ file: join(dir, `t${k}.db`), masterKey: new Uint8Array(32).fill(7) });
  // Each store write's duration: SQLite writes synchronously, so this is how long it holds the event loop.
  const writes: number[] = [];
  const write = store.writeTelemetry.bind(store);
  store.writeTelemetry = (batch) => {
    const t0 = performance.now();
    const p = write(batch);
    writes.push(performance.now() - t0);
    return p;
  };
  const obs = createObservability({ store, logger: createSilentLogger(), defaultMetrics: false, telemetryWriteSlice: slice });
  const turns: number[] = [];
  let i = 0;
  const start = performance.now();
  const end = start + 4000;
  const cpu0 = process.cpuUsage();
  await new Promise<void>((done) => {
    let last = performance.now();
    const tick = () => {
      const t = performance.now();
      turns.push(t - last);
      last = t;
      // Paced: one record per 0.5 ms slot (several if the loop fell behind).
      while (i < (t - start) * 2) obs.observer.onInvocation(rec(i++));
      if (t < end) setImmediate(tick);
      else done();
    };
    tick();
  });
  await obs.close();
  const cpu = process.cpuUsage(cpu0);
  cpuMs = (cpu.user + cpu.system) / 1000;
  turns.sort((a, b) => a - b);
  writes.sort((a, b) => a - b);
  lastWrites = { n: writes.length, p50: writes[Math.floor(writes.length / 2)] ?? 0, max: writes[writes.length - 1] ?? 0 };
  return { records: i, stalls: turns.filter((x) => x > 2).length, max: turns[turns.length - 1]!, p99: turns[Math.floor(turns.length * 0.99)]! };
}

const before = load();
const rows: string[] = [];
for (let round = 0; round < 3; round++) {
  for (const slice of [Number.POSITIVE_INFINITY, TELEMETRY_WRITE_SLICE]) {
    const r = await run(slice, round * 2 + (slice === TELEMETRY_WRITE_SLICE ? 1 : 0));
    rows.push(`| ${slice === Number.POSITIVE_INFINITY ? "one transaction per batch (before)" : `slices of ${slice} (now)`} | ${round + 1} | ${r.records} | ${r.stalls} | ${r.p99.toFixed(3)} ms | ${r.max.toFixed(1)} ms | ${Math.round(cpuMs)} ms | ${lastWrites.n} | ${lastWrites.p50.toFixed(2)} ms | ${lastWrites.max.toFixed(2)} ms |`);
  }
}
const table = "| write | round | records in 4 s | loop turns > 2 ms | turn p99 | longest turn | CPU (busy-polling loop included) | store writes | write p50 (loop held) | write max |\n|---|---|---|---|---|---|---|---|---|---|\n" + rows.join("\n");
const md = `# Telemetry writes and the event loop — one transaction per batch vs. slices

\`npx tsx bench/telemetry-stall.ts\` · the observability pipeline with a real SQLite store (WAL, synchronous = NORMAL),
one invocation record (+ its REPORT line) every 0.5 ms for 4 s — one connection at ~2,000 req/s — alternated 3 times.
better-sqlite3 writes synchronously: a store write's duration is how long the gateway's event loop is held.
"Loop turns > 2 ms" counts every long turn, the machine's own scheduling stalls included.

${machine(before, load())}

${table}
`;
console.log(md);
if (process.env.BENCH_PRINT_ONLY !== "1") writeResult("telemetry-stall", md);
rmSync(dir, { recursive: true, force: true });
