/**
 * The observability pipeline of a platform: receives what the gateway reports (GatewayObserver),
 * and turns it into
 *  - the log stream of each function (its output line by line, tagged with request and instance, with
 *    a per-line and a per-invocation cap; platform events and a REPORT line per invocation beside it),
 *  - invocation records and error groups in the store,
 *  - Prometheus metrics, and live tails (LogHub).
 *
 * Write path: every call returns at once after a push into one bounded Batcher; a flush (every
 * `flushIntervalMs` or `flushMaxEntries` items) writes one store transaction. When the store falls
 * behind and the buffer is full, items are dropped and counted (`stratus_log_lines_dropped_total`),
 * never waited for. One unref'd timer (1 s) ends per-invocation caps and runs the retention purge.
 */
import type { GatewayObserver } from "../shared/gateway-observer";
import type { InstanceLogLine } from "../shared/instance-output";
import type { ErrorOccurrence, InvocationRecord, LogEntry, PlatformEvent } from "../shared/invocation";
import { normalizeLevel } from "../shared/invocation";
import type { Logger } from "../shared/logger";
import { OBSERVE_DEFAULTS, ObserveSettingsSchema, type ObserveSettings } from "../shared/config/observe-settings";
import { StratusError } from "../shared/errors";
import type { Store } from "../store/store";
import { Batcher } from "./batcher";
import { isStratusError } from "../shared/errors";
import { errorMessageOfStack, fingerprint, messageShape, topStackFrame } from "./fingerprint";
import { InvocationLogCap, truncationMessage } from "./invocation-log-cap";
import { LogHub } from "./log-hub";
import { PlatformMetrics, type PoolStatsByFunction } from "./metrics";
import { formatReportLine } from "./report-line";

export { OBSERVE_DEFAULTS, type ObserveSettings };

export interface ObservabilityOptions {
  readonly store: Pick<Store, "writeTelemetry" | "purgeTelemetry">;
  readonly logger: Logger;
  readonly settings?: Partial<ObserveSettings>;
  /** Pool counters for the queue-depth and instance gauges, read at scrape time. */
  readonly poolStats?: () => PoolStatsByFunction;
  /** Export prom-client's default process metrics (default true). */
  readonly defaultMetrics?: boolean;
  /** Most telemetry items per store transaction (default TELEMETRY_WRITE_SLICE; Infinity: one per batch, for A/B benches). */
  readonly telemetryWriteSlice?: number;
  /** Clock, epoch ms (default Date.now). */
  readonly now?: () => number;
}

/** What the platform holds: the gateway hook, the live tail hub, the metrics, and the lifecycle. */
export interface Observability {
  readonly observer: GatewayObserver;
  readonly hub: LogHub;
  readonly metrics: PlatformMetrics;
  readonly settings: Readonly<ObserveSettings>;
  /** Lets the gauges read the gateway's pool counters once it exists. */
  setPoolStats(read: () => PoolStatsByFunction): void;
  /** Writes everything buffered now. */
  flush(): Promise<void>;
  /** Runs the retention purge now; resolves with what was deleted. */
  purge(): Promise<{ logs: number; invocations: number; errorGroups: number }>;
  /** Flushes and stops the timer. Idempotent. */
  close(): Promise<void>;
}

type Item =
  | { readonly kind: "log"; readonly entry: LogEntry }
  | { readonly kind: "invocation"; readonly record: InvocationRecord };

/** Error lines of the runtime that carry a stack: kept (bounded) until the invocation's record is flushed. */
const MAX_PENDING_STACKS = 1000;

/** Cuts `msg` to `maxBytes` UTF-8 bytes with a marker saying how much was dropped. */
export function capLine(msg: string, maxBytes: number): string {
  if (msg.length * 3 <= maxBytes) return msg; // cannot exceed: skip the byte count
  const buf = Buffer.from(msg, "utf8");
  if (buf.length <= maxBytes) return msg;
  return `${buf.subarray(0, maxBytes).toString("utf8")}… [truncated ${buf.length - maxBytes} bytes]`;
}

/** Most telemetry items per store transaction (see the batcher's `maxWriteItems`). */
export const TELEMETRY_WRITE_SLICE = 32;

/**
 * Builds the pipeline (see the file comment). Starts one unref'd timer.
 * @throws StratusError INVALID_CONFIG when a setting is out of range (the platform schema is composed
 *   from the same schema, src/shared/config/observe-settings.ts, so `stratus up` refuses it first).
 */
export function createObservability(options: ObservabilityOptions): Observability {
  const parsed = ObserveSettingsSchema.safeParse({ ...OBSERVE_DEFAULTS, ...options.settings });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => ({ path: i.path.map(String).join(".") || "(settings)", message: i.message }));
    throw new StratusError("INVALID_CONFIG", `Invalid observe settings: ${problems.map((p) => `${p.path}: ${p.message}`).join("; ")}`, { details: problems });
  }
  const settings: ObserveSettings = Object.freeze(parsed.data);
  const now = options.now ?? Date.now;
  const { store, logger } = options;
  let readPools: (() => PoolStatsByFunction) | null = options.poolStats ?? null;
  const metrics = new PlatformMetrics(() => (readPools === null ? {} : readPools()), { defaultMetrics: options.defaultMetrics ?? true });
  const hub = new LogHub();
  const caps = new InvocationLogCap(settings.maxLinesPerInvocation);
  const stacks = new Map<string, string>();

  let storeDown = false;
  const batcher = new Batcher<Item>({
    flushIntervalMs: settings.flushIntervalMs,
    maxBatch: settings.flushMaxEntries,
    // A write of a whole batch in one transaction (SQLite is synchronous) blocked the gateway's event loop
    // ~13 ms per 500 items here, once per flush interval; slices of 32 keep each block under ~1 ms.
    maxWriteItems: options.telemetryWriteSlice ?? TELEMETRY_WRITE_SLICE,
    maxBuffered: settings.bufferMaxEntries,
    flush: (items) => {
      const logs: LogEntry[] = [];
      const invocations: InvocationRecord[] = [];
      const errors: ErrorOccurrence[] = [];
      for (const item of items) {
        if (item.kind === "log") logs.push(item.entry);
        else {
          invocations.push(item.record);
          if (item.record.errorCode !== null) errors.push(occurrenceOf(item.record));
        }
      }
      return Promise.resolve(store.writeTelemetry({ logs, invocations, errors })).then(() => {
        if (storeDown) logger.info("the store is reachable again; kept telemetry written");
        storeDown = false;
      });
    },
    onDrop: (item) => {
      if (item.kind === "log") metrics.countDropped("buffer_full");
    },
    onError: (err, lost) => logger.error({ err, lost }, "writing telemetry failed; the batch is lost"),
    // The store unreachable (PostgreSQL restarting): keep the batch and write it again.
    retryable: (err) => isStratusError(err) && err.code === "STORE_UNAVAILABLE",
    onRetry: (err, kept) => {
      if (!storeDown) logger.warn({ err, kept }, "the store is unreachable; telemetry is kept (bounded) and written when it is back");
      storeDown = true;
    },
  });

  function occurrenceOf(r: InvocationRecord): ErrorOccurrence {
    const stack = stacks.get(r.requestId);
    if (stack !== undefined) stacks.delete(r.requestId);
    const shape = stack === undefined ? "" : messageShape(errorMessageOfStack(stack));
    const frame = stack === undefined ? null : topStackFrame(stack);
    return {
      functionName: r.functionName, fingerprint: fingerprint(r.functionName, r.errorCode!, shape, frame),
      code: r.errorCode!, messageShape: shape, topFrame: frame, requestId: r.requestId, ts: r.ts,
    };
  }

  function write(entry: LogEntry): void {
    if (batcher.push({ kind: "log", entry })) metrics.countLine(entry.functionName, entry.source);
    hub.publish(entry);
  }

  function platformLine(functionName: string, level: LogEntry["level"], message: string, requestId: string | null, instanceId: string | null): void {
    write({ ts: now(), functionName, level, source: "platform", stream: null, requestId, instanceId, message });
  }

  const observer: GatewayObserver = {
    onInstanceLog(functionName: string, line: InstanceLogLine) {
      if (line.dropped !== undefined) {
        // The driver's marker for output over the instance's rate limit: a platform line, never capped.
        metrics.countDropped("instance_rate", line.dropped.lines);
        platformLine(functionName, "warn", line.message, null, line.instanceId);
        return;
      }
      const rid = line.requestId ?? null;
      const t = now();
      if (rid !== null && !caps.admit(functionName, rid, t)) {
        metrics.countDropped("invocation_cap");
        return;
      }
      const level = normalizeLevel(line.level);
      if (rid !== null && level === "error" && (line.message.includes(" threw: ") || line.message.startsWith("Uncaught "))) {
        if (stacks.size >= MAX_PENDING_STACKS) stacks.delete(stacks.keys().next().value!);
        stacks.set(rid, line.message);
      }
      write({
        ts: line.ts, functionName, level, source: "function", stream: line.stream, requestId: rid, instanceId: line.instanceId,
        message: capLine(line.message, settings.maxLineBytes),
      });
    },
    onPlatformEvent(event: PlatformEvent) {
      if (event.kind === "instance-out-of-memory") metrics.countOom(event.functionName);
      else if (event.kind === "instance-crashed") metrics.countCrash(event.functionName);
      write({
        ts: event.ts, functionName: event.functionName, level: event.level, source: "platform", stream: null,
        requestId: event.requestId, instanceId: event.instanceId, message: `[${event.kind}] ${event.message}`,
      });
    },
    onInvocation(record: InvocationRecord) {
      metrics.observeInvocation(record);
      const fn = record.functionName;
      const dropped = caps.end(record.requestId, now());
      if (dropped > 0) platformLine(fn, "warn", truncationMessage(dropped), record.requestId, record.instanceId);
      if (record.errorCode === "FUNCTION_TIMEOUT") {
        platformLine(fn, "error", `[invocation-timed-out] request ${record.requestId} ran past the function's timeout (${Math.round(record.totalMs)} ms in the gateway)`, record.requestId, record.instanceId);
      }
      platformLine(fn, record.errorCode === null ? "info" : "warn", formatReportLine(record), record.requestId, record.instanceId);
      if (!batcher.push({ kind: "invocation", record })) logger.warn({ rid: record.requestId }, "invocation record dropped: telemetry buffer full");
    },
  };

  let nextPurge = now() + settings.purgeIntervalMs;
  let purging: Promise<unknown> | null = null;
  async function purge() {
    const r = await store.purgeTelemetry({
      olderThan: now() - settings.retentionMs, maxLogRows: settings.maxLogRows, maxInvocationRows: settings.maxInvocationRows,
    });
    if (r.logs + r.invocations + r.errorGroups > 0) logger.debug(r, "telemetry purged");
    return r;
  }
  const timer = setInterval(() => {
    const t = now();
    for (const m of caps.sweep(t)) platformLine(m.functionName, "warn", truncationMessage(m.dropped, true), m.requestId, null);
    if (t >= nextPurge && purging === null) {
      nextPurge = t + settings.purgeIntervalMs;
      purging = purge().catch((err) => logger.error({ err }, "telemetry purge failed")).finally(() => (purging = null));
    }
  }, 1000);
  timer.unref();

  let closed: Promise<void> | null = null;
  return {
    observer,
    hub,
    metrics,
    settings,
    setPoolStats(read) {
      readPools = read;
    },
    flush: () => batcher.flushNow(),
    purge: async () => {
      await batcher.flushNow();
      return purge();
    },
    close() {
      return (closed ??= (async () => {
        clearInterval(timer);
        await purging;
        await batcher.close();
      })());
    },
  };
}
