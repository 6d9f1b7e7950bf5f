// Cost of logging: a function printing 1,000 lines per invocation vs. a silent one, under load, through
// the real gateway + process driver + observability pipeline + SQLite store. One run, interleaved.
// Usage: npm run build && npx tsx bench/logging.ts [seconds=8] [connections=8]. Needs root + bubblewrap.
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, release, totalmem, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { AddressInfo } from "node:net";
import autocannon from "autocannon";
import { createProcessDriver } from "../src/sandbox/process/process-driver";
import { parseFunctionConfig } from "../src/shared/function-config";
import { createSilentLogger } from "../src/shared/logger";
import { createGateway } from "../src/gateway/gateway";
import { openSqliteStore } from "../src/store/sqlite/sqlite-store";
import { createObservability } from "../src/observe/observer";

const SECONDS = Number(process.argv[2] ?? 8);
const CONNECTIONS = Number(process.argv[3] ?? 8);
const dir = mkdtempSync(join(tmpdir(), "slb-"));
const driver = createProcessDriver({ runtimePath: resolve("dist/runtime.cjs"), stateDir: join(dir, "r"), cgroupRoot: "stratus-logbench" });
void driver.open(); // nothing runs before open(); the pool starts filling now
const store = openSqliteStore({ file: join(dir, "s.db"), masterKey: new Uint8Array(32).fill(3) });
const observe = createObservability({ store, logger: createSilentLogger(), defaultMetrics: false });
const gateway = createGateway({ driver, logger: createSilentLogger(), observer: observe.observer });
for (const name of ["loud", "silent"]) {
  gateway.setFunction({
    name, version: "1", artifactDir: resolve("test/fixtures/observe"), entry: "functions.js", exportName: name,
    config: parseFunctionConfig(name, { maxInstances: 2, maxQueue: 1000, timeout: 30_000 }), env: {},
  });
}
await new Promise<void>((r) => gateway.server.listen(0, "127.0.0.1", r));
const url = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}`;

async function run(path: string, seconds: number): Promise<{ rps: number; p50: number; p99: number; non2xx: number }> {
  const r = await autocannon({ url: url + path, connections: CONNECTIONS, duration: seconds });
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx };
}

console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB, kernel ${release()}, Node ${process.version}`);
console.log(`load average before: ${loadavg().map((n) => n.toFixed(2)).join(" ")}`);
await run("/fn/silent", 2); // warm-up: start instances
await run("/fn/loud", 2);
const rounds: Record<string, Array<Awaited<ReturnType<typeof run>>>> = { silent: [], loud: [] };
// Interleaved halves so background load (a shared machine) hits both alike.
for (let i = 0; i < 2; i++) {
  rounds.silent!.push(await run("/fn/silent", SECONDS / 2));
  rounds.loud!.push(await run("/fn/loud", SECONDS / 2));
}
await observe.flush();
const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
for (const [name, rs] of Object.entries(rounds)) {
  console.log(`${name.padEnd(6)}: ${avg(rs.map((r) => r.rps)).toFixed(0)} req/s, p50 ${avg(rs.map((r) => r.p50)).toFixed(1)} ms, p99 ${avg(rs.map((r) => r.p99)).toFixed(1)} ms, non-2xx ${rs.reduce((n, r) => n + r.non2xx, 0)}`);
}
const ratio = avg(rounds.loud!.map((r) => r.rps)) / avg(rounds.silent!.map((r) => r.rps));
const metrics = await observe.metrics.render();
const dropped = /stratus_log_lines_dropped_total\{reason="buffer_full"\} (\d+)/.exec(metrics)?.[1];
const stored = (await store.queryLogs("loud", { limit: 1 }))[0]?.seq ?? 0;
console.log(`throughput ratio loud/silent: ${ratio.toFixed(3)}; log rows written: ~${stored}; dropped (buffer full): ${dropped}`);
console.log(`load average after: ${loadavg().map((n) => n.toFixed(2)).join(" ")}`);
await gateway.close();
await driver.close();
await observe.close();
await store.close();
rmSync(dir, { recursive: true, force: true });
