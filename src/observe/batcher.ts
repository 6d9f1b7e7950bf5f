/**
 * A bounded write-behind buffer: items are pushed synchronously (never blocking the caller) and handed
 * to `flush` in batches, after `flushIntervalMs` or as soon as `maxBatch` items wait, whichever comes
 * first. When `maxBuffered` items are already waiting (the sink is slower than the producers), new
 * items are dropped and counted through `onDrop` — the gateway must never wait on its logs.
 *
 * A batch whose write failed with an error `retryable` accepts (the store is unreachable for a while)
 * goes back to the head of the buffer and is written again after `flushIntervalMs`; what no longer fits
 * under `maxBuffered` (the newest items) is dropped and counted. So an outage of the store loses only
 * what the bound cannot hold.
 *
 * With `maxWriteItems`, one write of many items is split into `flush` calls (transactions) of at most that
 * many, with a turn of the event loop between them (setImmediate): a synchronous store (SQLite) then never
 * blocks the gateway's loop for a whole batch at once — 500 records and their REPORT lines are ~13 ms here,
 * which one request in every batch interval waited for (bench/tail.ts; issue 16, target 8).
 *
 * Invariants: at most one `flush` runs at a time; `buffer.length <= maxBuffered`; every pushed item is
 * either flushed once, or dropped and counted once; no timer runs while the buffer is empty.
 */

export interface BatcherOptions<T> {
  /** Longest time an item waits before its batch is written, ms (default 250). */
  readonly flushIntervalMs?: number;
  /** A batch is written as soon as this many items wait (default 500). */
  readonly maxBatch?: number;
  /** Most items waiting; beyond it new items are dropped (default 50,000). */
  readonly maxBuffered?: number;
  /**
   * Most items per `flush` call (default: no limit, the whole batch). A larger batch is written in slices,
   * oldest first, yielding to the event loop between slices.
   */
  readonly maxWriteItems?: number;
  /** Writes one batch (one transaction). A throw is reported to `onError`, the batch is lost. */
  readonly flush: (items: T[]) => void | Promise<void>;
  /** Called with each dropped item (buffer full). Must not throw. */
  readonly onDrop?: (item: T) => void;
  /** Called when `flush` failed and the batch is lost (not retryable, or closing). Must not throw. */
  readonly onError?: (err: unknown, lost: number) => void;
  /** A failed write this accepts is retried (the batch kept at the head of the buffer). Default: none. */
  readonly retryable?: (err: unknown) => boolean;
  /** Called once per failed write that will be retried, with the items kept. Must not throw. */
  readonly onRetry?: (err: unknown, kept: number) => void;
}

/** See the file comment. */
export class Batcher<T> {
  private buffer: T[] = [];
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private closed = false;
  /** After a retried failure, no write before this (epoch ms), even when a full batch waits. */
  private backoffUntil = 0;
  private readonly intervalMs: number;
  private readonly maxBatch: number;
  private readonly maxBuffered: number;
  private readonly maxWrite: number;

  constructor(private readonly options: BatcherOptions<T>) {
    this.intervalMs = options.flushIntervalMs ?? 250;
    this.maxBatch = options.maxBatch ?? 500;
    this.maxBuffered = options.maxBuffered ?? 50_000;
    this.maxWrite = Math.max(1, options.maxWriteItems ?? Number.POSITIVE_INFINITY);
  }

  /** Items waiting to be written. */
  get size(): number {
    return this.buffer.length;
  }

  /** Queues an item; returns false (and counts it through `onDrop`) when the buffer is full or closed. */
  push(item: T): boolean {
    if (this.closed || this.buffer.length >= this.maxBuffered) {
      this.options.onDrop?.(item);
      return false;
    }
    this.buffer.push(item);
    if (this.buffer.length >= this.maxBatch && Date.now() >= this.backoffUntil) {
      if (this.running === null) void this.flushNow();
    } else if (this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        void this.flushNow();
      }, this.intervalMs);
      this.timer.unref(); // pending logs never keep the process alive; close() flushes them
    }
    return true;
  }

  /** Writes everything waiting now (after a flush in progress). Resolves when the buffer was written. */
  async flushNow(): Promise<void> {
    while (this.running !== null) await this.running;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.buffer.length === 0) return;
    const batch = this.buffer;
    this.buffer = [];
    let retry = false;
    this.running = (async () => {
      let written = 0;
      try {
        while (written < batch.length) {
          // Between slices the loop serves what waits (requests); a single slice is the old, one-call write.
          if (written > 0) await new Promise<void>((r) => setImmediate(r));
          const slice = written === 0 && batch.length <= this.maxWrite ? batch : batch.slice(written, written + this.maxWrite);
          try {
            await this.options.flush(slice);
          } catch (err) {
            if (!this.closed && this.options.retryable?.(err) === true) throw err;
            this.options.onError?.(err, slice.length);
          }
          written += slice.length;
        }
        this.backoffUntil = 0;
      } catch (err) {
        // Retryable: this slice and what was not written yet go back to the head, oldest first; the newest
        // items beyond the bound are dropped and counted.
        retry = true;
        this.backoffUntil = Date.now() + this.intervalMs;
        const all = batch.slice(written).concat(this.buffer);
        this.buffer = all.slice(0, this.maxBuffered);
        for (const item of all.slice(this.maxBuffered)) this.options.onDrop?.(item);
        this.options.onRetry?.(err, this.buffer.length);
      }
    })();
    try {
      await this.running;
    } finally {
      this.running = null;
    }
    if (retry) {
      // Wait one interval before writing again (no tight loop while the store is down).
      if (this.timer === null && !this.closed) {
        this.timer = setTimeout(() => {
          this.timer = null;
          void this.flushNow();
        }, this.intervalMs);
        this.timer.unref();
      }
      return;
    }
    // Items that arrived during the write get their own timer (or an immediate flush when many).
    if (this.buffer.length >= this.maxBatch) await this.flushNow();
    else if (this.buffer.length > 0 && this.timer === null && !this.closed) {
      this.timer = setTimeout(() => {
        this.timer = null;
        void this.flushNow();
      }, this.intervalMs);
      this.timer.unref();
    }
  }

  /** Flushes what waits, then refuses new items (they are dropped and counted). Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    await this.flushNow();
  }
}
