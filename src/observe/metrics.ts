/**
 * The platform's Prometheus metrics (prom-client), on a registry of their own so several platforms
 * (tests) can live in one process. Counters and histograms are fed by the observer; gauges of queue
 * depth and instance states are read from the gateway when scraped, so they cost nothing between
 * scrapes. Names follow Prometheus conventions: `stratus_` prefix, `_total` counters, base units
 * (`_seconds`, `_bytes`). docs/observability.md lists every metric.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { InvocationRecord } from "../shared/invocation";

/** Pool counters per function, as the gateway reports them (`gateway.stats()`). */
export type PoolStatsByFunction = Record<string, { starting: number; busy: number; idle: number; retiring: number; waiting: number }>;

/** Instance states exported by `stratus_instances`. */
export const INSTANCE_STATES = ["starting", "idle", "busy", "retiring"] as const;

/** Why log lines were dropped (`reason` label of `stratus_log_lines_dropped_total`). */
export const DROP_REASONS = ["buffer_full", "invocation_cap", "instance_rate"] as const;
export type DropReason = (typeof DROP_REASONS)[number];

// Seconds; from a 5 ms warm hit to a 60 s timeout.
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const QUEUE_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** `2xx`…`5xx`; `none` when no status was sent (client left). */
function statusClass(status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : "none";
}

/** The metrics of one platform. */
export class PlatformMetrics {
  /** The registry to serve at `/metrics`. */
  readonly registry = new Registry();
  private readonly invocations: Counter<"function" | "status_class" | "code">;
  private readonly duration: Histogram<"function">;
  private readonly handlerDuration: Histogram<"function">;
  private readonly coldStarts: Counter<"function">;
  private readonly startDuration: Histogram<"function">;
  private readonly queueWait: Histogram<"function">;
  private readonly oom: Counter<"function">;
  private readonly timeouts: Counter<"function">;
  private readonly crashes: Counter<"function">;
  private readonly dropped: Counter<"reason">;
  private readonly logLines: Counter<"function" | "source">;
  private readonly bytesOut: Counter<"function">;

  /** @param poolStats read at scrape time for queue depth and instance states (null: not exported). */
  constructor(poolStats: (() => PoolStatsByFunction) | null, options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.invocations = new Counter({ name: "stratus_invocations_total", help: "Requests to deployed functions, by status class and error code (`none`: success).", labelNames: ["function", "status_class", "code"], registers });
    this.duration = new Histogram({ name: "stratus_invocation_duration_seconds", help: "Total time in the gateway, from request to end of response (queue + start + handler).", labelNames: ["function"], buckets: DURATION_BUCKETS, registers });
    this.handlerDuration = new Histogram({ name: "stratus_handler_duration_seconds", help: "Time in the instance, from sending the request to the end of its response.", labelNames: ["function"], buckets: DURATION_BUCKETS, registers });
    this.coldStarts = new Counter({ name: "stratus_cold_starts_total", help: "Requests that waited for the instance they ran on to start.", labelNames: ["function"], registers });
    this.startDuration = new Histogram({ name: "stratus_cold_start_duration_seconds", help: "Instance start time seen by cold-start requests.", labelNames: ["function"], buckets: DURATION_BUCKETS, registers });
    this.queueWait = new Histogram({ name: "stratus_queue_wait_seconds", help: "Time requests waited for capacity (excluding instance start).", labelNames: ["function"], buckets: QUEUE_BUCKETS, registers });
    this.oom = new Counter({ name: "stratus_instance_oom_total", help: "Instances killed for exceeding their memory limit.", labelNames: ["function"], registers });
    this.timeouts = new Counter({ name: "stratus_invocation_timeouts_total", help: "Requests that ran past the function's timeout (FUNCTION_TIMEOUT).", labelNames: ["function"], registers });
    this.crashes = new Counter({ name: "stratus_instance_crashes_total", help: "Instances that exited on their own (crash or load failure), not counting out-of-memory kills.", labelNames: ["function"], registers });
    this.dropped = new Counter({ name: "stratus_log_lines_dropped_total", help: "Log lines not stored: `buffer_full` (the store fell behind), `invocation_cap` (past the per-invocation cap) or `instance_rate` (past the per-instance output rate, dropped before parsing).", labelNames: ["reason"], registers });
    this.logLines = new Counter({ name: "stratus_log_lines_total", help: "Log lines accepted into the log stream, by source (function, platform).", labelNames: ["function", "source"], registers });
    this.bytesOut = new Counter({ name: "stratus_response_bytes_total", help: "Response body bytes sent to clients.", labelNames: ["function"], registers });
    for (const r of DROP_REASONS) this.dropped.inc({ reason: r }, 0);

    if (poolStats !== null) {
      new Gauge({
        name: "stratus_queue_depth", help: "Requests waiting for capacity now.", labelNames: ["function"], registers,
        collect() {
          this.reset();
          for (const [fn, s] of Object.entries(poolStats())) this.set({ function: fn }, s.waiting);
        },
      });
      new Gauge({
        name: "stratus_instances", help: "Instances by state: starting, idle (ready, no request), busy (serving), retiring (old version or recycled, finishing).", labelNames: ["function", "state"], registers,
        collect() {
          this.reset();
          for (const [fn, s] of Object.entries(poolStats())) for (const state of INSTANCE_STATES) this.set({ function: fn, state }, s[state]);
        },
      });
    }
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** Counts one finished request. */
  observeInvocation(r: InvocationRecord): void {
    const fn = r.functionName;
    this.invocations.inc({ function: fn, status_class: statusClass(r.status), code: r.errorCode ?? "none" });
    this.duration.observe({ function: fn }, r.totalMs / 1000);
    if (r.instanceId !== null) {
      this.handlerDuration.observe({ function: fn }, r.handlerMs / 1000);
      this.queueWait.observe({ function: fn }, r.queueMs / 1000);
    }
    if (r.coldStart) {
      this.coldStarts.inc({ function: fn });
      this.startDuration.observe({ function: fn }, r.startMs / 1000);
    }
    if (r.errorCode === "FUNCTION_TIMEOUT") this.timeouts.inc({ function: fn });
    this.bytesOut.inc({ function: fn }, r.bytesOut);
  }

  /** Counts an instance killed for memory. */
  countOom(functionName: string): void {
    this.oom.inc({ function: functionName });
  }

  /** Counts an instance that crashed. */
  countCrash(functionName: string): void {
    this.crashes.inc({ function: functionName });
  }

  /** Counts dropped log lines. */
  countDropped(reason: DropReason, n = 1): void {
    this.dropped.inc({ reason }, n);
  }

  /** Counts accepted log lines. */
  countLine(functionName: string, source: "function" | "platform"): void {
    this.logLines.inc({ function: functionName, source });
  }

  /** The text exposition format for `/metrics`. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  /** Content type of `render()`. */
  get contentType(): string {
    return this.registry.contentType;
  }
}
