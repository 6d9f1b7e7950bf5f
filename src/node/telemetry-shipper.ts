/**
 * The node's side of telemetry: the gateway's observer hook (GatewayObserver) turned into protocol
 * batches (TelemetryBatch) POSTed to the control plane, which caps lines, writes records and logs to the
 * store, feeds live tails and metrics (src/observe/).
 *
 * Invariants: every observer call returns at once (a push into one bounded FIFO, never a wait); at most
 * `maxBuffered` items wait, beyond that new items are dropped and counted, and the count travels with
 * the next accepted batch; one batch is in flight at a time, of at most `maxBatch` items (and
 * MAX_BATCH_CHARS of text), sent every
 * `flushIntervalMs` (or at once when a batch is full); a batch the control plane did not accept goes back
 * to the head of the buffer (the part of it that no longer fits, its newest items, is counted as dropped), so a control plane that is down
 * for a while loses only what the bound cannot hold; a batch refused as invalid or too large (4xx) is
 * dropped and counted rather than retried.
 */
import type { GatewayObserver } from "../shared/gateway-observer";
import type { Logger } from "../shared/logger";
import type { PoolSamples, TelemetryBatch, TelemetryItem } from "../shared/node-protocol";

/**
 * Most text in one batch, characters: at most 6 bytes each once JSON-escaped (`\u0001`), so a batch
 * stays under the protocol's 16 MiB body cap (12 MiB worst case, ~2-6 MiB for real output).
 */
const MAX_BATCH_CHARS = 2 * 1024 * 1024;

/** Longest gap between two pool samples sent to the control plane, ms. */
const POOL_SAMPLE_MS = 2_000;

export interface TelemetryShipperOptions {
  readonly nodeId: string;
  /** Sends one batch; rejects when the control plane did not take it. */
  readonly send: (batch: TelemetryBatch) => Promise<void>;
  /** The node's pool counters, sampled with every batch. */
  readonly pools: () => PoolSamples;
  readonly logger: Logger;
  /** Longest wait before a batch goes, ms. Default 100 (live tails see a line within about this). */
  readonly flushIntervalMs?: number;
  /** Items per batch. Default 1000. */
  readonly maxBatch?: number;
  /** Items buffered at most. Default 20,000. */
  readonly maxBuffered?: number;
}

export interface TelemetryShipper {
  readonly observer: GatewayObserver;
  /** Items dropped so far because the buffer was full. */
  readonly droppedTotal: number;
  /** Sends everything buffered now (best effort; bounded by the buffer). */
  flush(): Promise<void>;
  /** Flushes once more and stops the timer. Idempotent. */
  close(): Promise<void>;
}

/** Creates the shipper (see the file comment). Starts one unref'd timer. */
export function createTelemetryShipper(options: TelemetryShipperOptions): TelemetryShipper {
  const flushIntervalMs = options.flushIntervalMs ?? 100;
  const maxBatch = options.maxBatch ?? 1000;
  const maxBuffered = options.maxBuffered ?? 20_000;
  let buffer: TelemetryItem[] = [];
  let dropped = 0; // not yet reported
  let droppedTotal = 0;
  let sending: Promise<void> | null = null;
  let closed = false;
  let failures = 0;
  let lastSent = 0;

  function push(item: TelemetryItem): void {
    if (buffer.length >= maxBuffered) {
      dropped++;
      droppedTotal++;
      return;
    }
    buffer.push(item);
    if (buffer.length >= maxBatch && sending === null) void sendOne();
  }

  function sendOne(): Promise<void> {
    if (sending !== null) return sending;
    // With nothing to say, a pool sample still goes every POOL_SAMPLE_MS (the control plane's gauges).
    if (buffer.length === 0 && dropped === 0 && Date.now() - lastSent < POOL_SAMPLE_MS) return Promise.resolve();
    lastSent = Date.now();
    // A batch ends at maxBatch items or MAX_BATCH_CHARS of text, whichever comes first (at least one item):
    // lines are up to 16 Ki chars each, and a batch must stay far below the protocol's 16 MiB body cap.
    let n = 0;
    let chars = 0;
    while (n < buffer.length && n < maxBatch) {
      const item = buffer[n]!;
      chars += item.kind === "line" ? item.line.message.length + 200 : item.kind === "event" ? item.event.message.length + 200 : 600;
      if (n > 0 && chars > MAX_BATCH_CHARS) break;
      n++;
    }
    const items = n === buffer.length ? buffer : buffer.slice(0, n);
    buffer = n === buffer.length ? [] : buffer.slice(n);
    const reported = dropped;
    dropped = 0;
    sending = options.send({ nodeId: options.nodeId, items, dropped: reported, pools: options.pools() }).then(
      () => {
        failures = 0;
      },
      (err: unknown) => {
        const code = (err as { code?: unknown }).code;
        if (code === "INVALID_ARGUMENT" || code === "PAYLOAD_TOO_LARGE") {
          // Refused for what it is, not for when it came: retrying would block the buffer forever.
          dropped += reported + items.length;
          droppedTotal += items.length;
          options.logger.error({ err, items: items.length }, "telemetry batch refused by the control plane; dropped");
          return;
        }
        // Put the batch back in front; what the bound no longer holds (its tail) is dropped.
        const room = Math.max(0, maxBuffered - buffer.length);
        const back = items.length <= room ? items : items.slice(0, room);
        const lost = items.length - back.length;
        buffer = back.concat(buffer);
        dropped += reported + lost;
        droppedTotal += lost;
        if (failures++ % 50 === 0) options.logger.warn({ err, buffered: buffer.length }, "telemetry not accepted by the control plane; will retry");
      },
    ).finally(() => {
      sending = null;
    });
    return sending;
  }

  const timer = setInterval(() => void sendOne(), flushIntervalMs);
  timer.unref();

  const observer: GatewayObserver = {
    onInvocation: (record) => push({ kind: "invocation", record }),
    onInstanceLog: (functionName, line) => push({ kind: "line", functionName, line }),
    onPlatformEvent: (event) => push({ kind: "event", event }),
  };

  return {
    observer,
    get droppedTotal() {
      return droppedTotal;
    },
    async flush() {
      // Bounded: every round sends at least one item or stops (no progress: the control plane refused).
      for (let i = buffer.length + 1; i > 0; i--) {
        const before = buffer.length;
        await sendOne();
        if (buffer.length === 0 || buffer.length >= before) break;
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      await this.flush().catch(() => {});
    },
  };
}
