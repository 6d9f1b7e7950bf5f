// Cost of the node protocol on the telemetry path: invocation records and output lines handed to the
// observability pipeline directly (what `stratus up` did before the seam) vs. through the node's
// telemetry shipper, JSON, the protocol's zod schema and the control plane's intake (what it does now;
// the HTTP hop over the Unix socket is left out: measured as CPU per invocation on this process).
// Usage: npx tsx bench/telemetry-link.ts [invocations=50000]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createObservability } from "../src/observe/observer";
import { openSqliteStore } from "../src/store/sqlite/sqlite-store";
import { createSilentLogger } from "../src/shared/logger";
import { createTelemetryShipper } from "../src/node/telemetry-shipper";
import { TelemetryBatchSchema, parseWire, type TelemetryBatch } from "../src/shared/node-protocol";
import type { InvocationRecord } from "../src/shared/invocation";
import type { GatewayObserver } from "../src/shared/gateway-observer";

const N = Number(process.argv[2] ?? 50_000);
const dir = mkdtempSync(join(tmpdir(), "stl-"));

function record(i: number): InvocationRecord {
  return {
    requestId: `req-${i}`, functionName: "f", version: "v1", instanceId: "i1", nodeId: "n1", coldStart: false, queueMs: 0.1, startMs: 0,
    initMs: null, handlerMs: 1.2, totalMs: 1.5, status: 200, errorCode: null, bytesIn: 0, bytesOut: 5, peakMemoryBytes: null,
    traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ts: Date.now(), trigger: null, eventId: null, attempt: null,
  };
}

function drive(observer: GatewayObserver): void {
  for (let i = 0; i < N; i++) {
    observer.onInstanceLog("f", { ts: Date.now(), stream: "stdout", level: "info", requestId: `req-${i}`, message: `hello ${i}`, instanceId: "i1" });
    observer.onInvocation(record(i));
  }
}

async function run(label: string, viaProtocol: boolean): Promise<number> {
  const store = openSqliteStore({ file: join(dir, `${label}.db`), masterKey: new Uint8Array(32).fill(7) });
  const obs = createObservability({ store, logger: createSilentLogger(), defaultMetrics: false, settings: { bufferMaxEntries: 10 * N } });
  const t0 = process.cpuUsage();
  if (!viaProtocol) drive(obs.observer);
  else {
    const shipper = createTelemetryShipper({
      nodeId: "n1", logger: createSilentLogger(), pools: () => ({}), maxBuffered: 10 * N, flushIntervalMs: 100,
      send: async (batch) => {
        const parsed = parseWire(TelemetryBatchSchema, JSON.parse(JSON.stringify(batch)), "telemetry batch") as TelemetryBatch;
        for (const item of parsed.items) {
          if (item.kind === "invocation") obs.observer.onInvocation(item.record);
          else if (item.kind === "line") obs.observer.onInstanceLog(item.functionName, item.line);
          else obs.observer.onPlatformEvent(item.event);
        }
      },
    });
    drive(shipper.observer);
    await shipper.close();
  }
  await obs.close();
  const u = process.cpuUsage(t0);
  await store.close();
  return (u.user + u.system) / N;
}

// Interleaved, twice each, after a warm-up.
await run("warm", true);
const direct: number[] = [];
const proto: number[] = [];
for (let r = 0; r < 2; r++) {
  direct.push(await run(`d${r}`, false));
  proto.push(await run(`p${r}`, true));
}
const fmt = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(", ");
console.log(`invocations per run: ${N} (1 output line + 1 record each; store writes included)`);
console.log(`direct observer:       ${fmt(direct)} µs CPU per invocation`);
console.log(`via the node protocol: ${fmt(proto)} µs CPU per invocation (shipper + JSON + zod + intake)`);
rmSync(dir, { recursive: true, force: true });
