// A node (process or docker driver + gateway) in its own process, so the load generator does not share its CPU.
// Spawned by bench/lib/spawn-gateway.ts with an IPC channel. argv[2]: JSON { driver?, prewarm, cgroupRoot, functions: [{ name, file, exportName, config }] }.
// Docker: dockerd and the registry must run (scripts/services.sh); every function's image is prepared before listening.
// Messages in: { type: "stats" } → { type: "stats", gateway, prewarm: { idle, hits, misses } }; { type: "close" };
// { type: "trace" } → { type: "trace", gcs: [{ at, ms, kind }], delay: { p50, p99, max } } (epoch ms; BENCH_TRACE=1 only:
// the gateway process's GC pauses from perf_hooks and its event-loop delay, for bench/tail.ts).
import { mkdtempSync, rmSync } from "node:fs";
import { monitorEventLoopDelay, PerformanceObserver, performance } from "node:perf_hooks";
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { createObservability } from "../../src/observe/observer";
import { openSqliteStore } from "../../src/store/sqlite/sqlite-store";
import type { AddressInfo } from "node:net";
import { createProcessDriver } from "../../src/sandbox/process/process-driver";
import { parseFunctionConfig, type FunctionConfigInput } from "../../src/shared/function-config";
import { createSilentLogger } from "../../src/shared/logger";
import { createGateway } from "../../src/gateway/gateway";
import type { GatewayLimitsInput } from "../../src/gateway/limits";
import type { SandboxDriver } from "../../src/sandbox/driver";
import type { PrewarmStatus } from "../../src/sandbox/prewarm-pool";

interface Setup {
  driver?: "process" | "docker";
  /** Docker only: how pool slots are specialised (default the driver's, `socket`; `attach` is round two's). */
  specializeChannel?: "socket" | "attach";
  /** Another build of the instance runtime (default dist/runtime.cjs), for an A/B of runtime changes. */
  runtimePath?: string;
  /** The full observability pipeline (default: BENCH_OBSERVE=1). */
  observe?: boolean;
  /** Pre-warm refill policy (default: the driver's, `demand`). */
  prewarmRefill?: "demand" | "quiet";
  /** false: every queued boot runs (round three); default: the driver's (cancel boots no longer needed). */
  cancelUnneededBoots?: boolean;
  /** The pool's hold after a burst, ms (default: the driver's; 0: refill during bursts, round three). */
  prewarmBurstHoldMs?: number;
  /** Most idle slots per key (default here max(4, prewarm); a node's default is 4 × prewarm, ≤ 32). */
  prewarmMax?: number;
  /** The driver's boot gate width (default: the driver's, one per core, at least 2). */
  maxConcurrentStarts?: number;
  /** Gateway limits beyond the bench's `sweepIntervalMs: 200` (e.g. disconnectGraceMs). */
  limits?: GatewayLimitsInput;
  prewarm: number;
  /** Process driver: the Node instances run on (default the platform's) and the runtime's startup snapshot (default off). */
  instanceNode?: string;
  runtimeSnapshot?: boolean;
  /** Process driver: instances start mergeable by KSM (option `ksm`; bench/density-ksm.ts). */
  ksm?: boolean;
  /** Process driver: false compiles the runtime from source (option `codeCache`, default on). */
  codeCache?: boolean;
  cgroupRoot: string;
  functions: Array<{ name: string; dir: string; file: string; exportName: string; config: FunctionConfigInput }>;
}
const setup = JSON.parse(process.argv[2]!) as Setup;
// BENCH_TRACE=1: GC pauses (bounded list) and event-loop delay of this process.
const gcs: Array<{ at: number; ms: number; kind: number }> = [];
const delay = process.env.BENCH_TRACE === "1" ? monitorEventLoopDelay({ resolution: 1 }) : null;
if (delay !== null) {
  delay.enable();
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (gcs.length < 100_000) gcs.push({ at: performance.timeOrigin + e.startTime, ms: e.duration, kind: ((e as unknown as { detail?: { kind?: number } }).detail)?.kind ?? 0 });
  }).observe({ entryTypes: ["gc"] });
}
const stateDir = mkdtempSync("/tmp/sbn-");
const processDriver = setup.driver === "docker"
  ? null
  : createProcessDriver({ runtimePath: resolve(setup.runtimePath ?? "dist/runtime.cjs"), stateDir, cgroupRoot: setup.cgroupRoot, prewarm: setup.prewarm, prewarmMax: setup.prewarmMax ?? Math.max(4, setup.prewarm), ...(setup.prewarmRefill ? { prewarmRefill: setup.prewarmRefill } : {}), ...(setup.prewarmBurstHoldMs === undefined ? {} : { prewarmBurstHoldMs: setup.prewarmBurstHoldMs }), ...(setup.cancelUnneededBoots === undefined ? {} : { cancelUnneededBoots: setup.cancelUnneededBoots }), ...(setup.instanceNode ? { nodePath: resolve(setup.instanceNode) } : {}), runtimeSnapshot: setup.runtimeSnapshot === true, ksm: setup.ksm === true, ...(setup.maxConcurrentStarts === undefined ? {} : { maxConcurrentStarts: setup.maxConcurrentStarts }), ...(setup.codeCache === undefined ? {} : { codeCache: setup.codeCache }) });
const driver: SandboxDriver = processDriver
  ?? (await import("../../src/sandbox/docker/docker-driver")).createDockerDriver({
    runtimePath: resolve(setup.runtimePath ?? "dist/runtime.cjs"), stateDir: stateDir, nodeId: `bench-${process.pid}`, prewarm: setup.prewarm, prewarmMax: setup.prewarmMax ?? Math.max(4, setup.prewarm), ...(setup.prewarmRefill ? { prewarmRefill: setup.prewarmRefill } : {}),
    ...(setup.prewarmBurstHoldMs === undefined ? {} : { prewarmBurstHoldMs: setup.prewarmBurstHoldMs }), ...(setup.cancelUnneededBoots === undefined ? {} : { cancelUnneededBoots: setup.cancelUnneededBoots }),
    ...(setup.specializeChannel ? { specializeChannel: setup.specializeChannel } : {}),
    ...(setup.maxConcurrentStarts === undefined ? {} : { maxConcurrentStarts: setup.maxConcurrentStarts }),
  });
await driver.reconcile();
await driver.open();
// BENCH_OBSERVE=1: the full observability pipeline of `stratus up` (records, REPORT lines, metrics,
// batched into a real SQLite store), so the gateway's observer path is measured too.
const observability = (setup.observe ?? process.env.BENCH_OBSERVE === "1")
  ? createObservability({ store: openSqliteStore({ file: join(stateDir, "bench.db"), masterKey: randomBytes(32) }), logger: createSilentLogger(), defaultMetrics: false })
  : null;
const gateway = createGateway({ driver, logger: createSilentLogger(), limits: { sweepIntervalMs: 200, ...setup.limits }, ...(observability === null ? {} : { observer: observability.observer }) });
for (const f of setup.functions) {
  const d = { name: f.name, version: "1", artifactDir: resolve(f.dir), entry: f.file, exportName: f.exportName, config: parseFunctionConfig(f.name, f.config), env: {} };
  const { image } = await driver.prepare({ ...d, functionName: f.name, instanceId: "prepare" });
  gateway.setFunction(image === undefined ? d : { ...d, image });
}
await new Promise<void>((r) => gateway.server.listen(0, "127.0.0.1", r));
const send = (m: unknown): void => void process.send!(m);
process.on("message", (m: { type: string }) => {
  if (m.type === "stats") {
    const pool = "prewarm" in driver ? (driver as { prewarm: PrewarmStatus }).prewarm : null;
    const prewarm = pool ? { idle: pool.idleCount(), ...pool.counts() } : { idle: 0, hits: 0, misses: 0 };
    send({ type: "stats", gateway: gateway.stats(), prewarm });
  } else if (m.type === "trace") {
    const d = delay === null ? null : { p50: delay.percentile(50) / 1e6, p99: delay.percentile(99) / 1e6, max: delay.max / 1e6 };
    send({ type: "trace", gcs: gcs.splice(0), delay: d });
    delay?.reset();
  } else if (m.type === "close") {
    void (async () => {
      await gateway.close();
      await driver.close();
      await observability?.close();
      // After a burst on a loaded machine an instance box can still be mounted for a moment (a start the
      // close raced with): retry, bounded, then leave the dir rather than fail the run.
      for (let i = 0; ; i++) {
        try {
          rmSync(stateDir, { recursive: true, force: true });
          break;
        } catch (err) {
          if (i >= 40) {
            process.stderr.write(`gateway-child: leaving ${stateDir}: ${(err as Error).message}\n`);
            break;
          }
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      send({ type: "closed" });
      process.disconnect();
    })();
  }
});
send({ type: "ready", port: (gateway.server.address() as AddressInfo).port });
