/**
 * The lifecycle every trigger source shares (src/events/sources/source.ts), so each broker module only
 * says how to connect, fetch and settle: `createSourceCore(broker, context)` is the EventSource.
 *
 * One loop per source: connect (on failure wait and retry, the wait doubling from RECONNECT_MIN_MS up to
 * RECONNECT_MAX_MS), then repeatedly wait for a free delivery slot and fetch at most
 * min(batchSize, free slots) messages, waiting at most `fetchWaitMs` for the first (so `stop()` is
 * noticed within that bound). Each message runs `deliver` and then `session.settle(outcome)`; a settle
 * that fails (the connection dropped meanwhile) is logged and left to the broker, which redelivers.
 * When a fetch fails (connection lost), the session is closed and the loop reconnects.
 *
 * Invariants: inFlight ≤ concurrency at all times (a slot is taken before a message is fetched for it);
 * the loop is bounded by `stop()` (every wait is woken by it) and each fetch by `fetchWaitMs`.
 */
import type { DeliveryOutcome, Deliver, EventSource, SourceContext, SourceMessage, SourceStatus } from "./source";

/** First and longest wait between two connection attempts, ms. */
export const RECONNECT_MIN_MS = 200;
export const RECONNECT_MAX_MS = 5_000;
/** Delay of a retry when `deliver` itself threw (it should not), ms. */
const FALLBACK_RETRY_MS = 1_000;

/** A message as a broker module fetched it: the message and the broker's own handle for settling it. */
export interface Fetched<Raw> {
  readonly message: SourceMessage;
  readonly raw: Raw;
}

/** One connection to the broker, with the consumer (group, durable, channel) set up. */
export interface BrokerSession<Raw> {
  /**
   * Up to `max` messages (never more), waiting at most about `waitMs` for the first; [] when none came.
   * Rejects when the connection is lost (the core reconnects).
   */
  fetch(max: number, waitMs: number): Promise<Array<Fetched<Raw>>>;
  /** Settles one message at the broker. Rejects when it could not (the broker redelivers the message later). */
  settle(raw: Raw, outcome: DeliveryOutcome): Promise<void>;
  /** Closes the connection; never rejects. Called once, after the last settle of this session. */
  close(): Promise<void>;
}

/** A broker module: how to open a session. */
export interface Broker<Raw> {
  /** Connects and sets the consumer up. Rejects when the broker cannot be reached or refuses. */
  connect(): Promise<BrokerSession<Raw>>;
}

/** Options of `createSourceCore`. */
export interface SourceCoreOptions {
  /** Longest wait of one fetch, ms (default 1000): how late `stop()` may be noticed by the loop. */
  readonly fetchWaitMs?: number;
}

/** The EventSource over `broker`. */
export function createSourceCore<Raw>(broker: Broker<Raw>, ctx: SourceContext, options: SourceCoreOptions = {}): EventSource {
  const fetchWaitMs = options.fetchWaitMs ?? 1_000;
  const log = ctx.logger;
  const settled = { ack: 0, retry: 0, dead: 0 };
  const tasks = new Set<Promise<void>>();
  let inFlight = 0;
  let connected = false;
  let lastError: string | null = null;
  let stopping = false;
  let started = false;
  let loop: Promise<void> | null = null;
  let session: BrokerSession<Raw> | null = null;
  let stopped: Promise<void> | null = null;
  /** Wakes the loop: a slot freed, or stop. */
  let wake: (() => void) | null = null;

  const nudge = (): void => {
    const w = wake;
    wake = null;
    w?.();
  };
  /** Resolves after `ms`, or at once on a nudge. */
  const pause = (ms: number): Promise<void> => new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      wake = null;
      resolve();
    }, ms);
    wake = () => {
      clearTimeout(t);
      resolve();
    };
  });
  const describe = (err: unknown): string => (err instanceof Error ? err.message : String(err)).slice(0, 500);

  function launch(item: Fetched<Raw>, s: BrokerSession<Raw>, deliver: Deliver): void {
    inFlight++;
    const task = (async () => {
      let outcome: DeliveryOutcome;
      try {
        outcome = await deliver(item.message);
      } catch (err) {
        log.error({ err, messageId: item.message.id }, "delivering an event failed unexpectedly; it will be redelivered");
        outcome = { kind: "retry", delayMs: FALLBACK_RETRY_MS };
      }
      try {
        await s.settle(item.raw, outcome);
        settled[outcome.kind]++;
      } catch (err) {
        log.warn({ err: describe(err), messageId: item.message.id, outcome: outcome.kind }, "could not settle a message at the broker; it will be redelivered");
      }
    })().finally(() => {
      inFlight--;
      tasks.delete(task);
      nudge();
    });
    tasks.add(task);
  }

  async function run(deliver: Deliver): Promise<void> {
    let backoff = RECONNECT_MIN_MS;
    while (!stopping) {
      let s: BrokerSession<Raw>;
      try {
        s = await broker.connect();
      } catch (err) {
        lastError = describe(err);
        log.warn({ err: lastError, retryInMs: backoff }, "trigger source cannot connect to its broker; retrying");
        await pause(backoff);
        backoff = Math.min(RECONNECT_MAX_MS, backoff * 2);
        continue;
      }
      if (stopping) {
        await s.close();
        return;
      }
      session = s;
      connected = true;
      backoff = RECONNECT_MIN_MS;
      log.info("trigger source connected");
      try {
        while (!stopping) {
          const free = ctx.concurrency - inFlight;
          if (free <= 0) {
            await pause(fetchWaitMs);
            continue;
          }
          const batch = await s.fetch(Math.min(ctx.batchSize, free), fetchWaitMs);
          for (const item of batch) launch(item, s, deliver);
        }
        return; // stopping: stop() closes the session after the in-flight deliveries
      } catch (err) {
        lastError = describe(err);
        connected = false;
        session = null;
        log.warn({ err: lastError }, "trigger source lost its broker connection; reconnecting");
        // In-flight deliveries of the lost session finish; their settles fail and the broker redelivers.
        await s.close();
        if (!stopping) await pause(backoff);
      }
    }
  }

  return {
    start(deliver) {
      if (started) return;
      started = true;
      loop = run(deliver).catch((err: unknown) => log.error({ err }, "trigger source loop failed"));
    },
    stop: (deadlineMs) => (stopped ??= (async () => {
      stopping = true;
      nudge();
      await loop;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...tasks]),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, deadlineMs);
          timer.unref();
        }),
      ]);
      clearTimeout(timer);
      if (tasks.size > 0) log.warn({ inFlight: tasks.size }, "trigger source stopped with deliveries still running; the broker will redeliver them");
      const s = session;
      session = null;
      connected = false;
      if (s !== null) await s.close();
    })()),
    status: (): SourceStatus => ({ connected, inFlight, settled: { ...settled }, lastError }),
  };
}
