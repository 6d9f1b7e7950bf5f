/**
 * The control plane's trigger-source runner: one EventSource per queue trigger of every active function,
 * started, restarted and stopped as functions are deployed, changed and deleted (a sync every
 * `syncIntervalMs` over the catalog), and the one `deliver` every source uses (`createTriggerDeliverer`):
 *
 *   message → CloudEvents 1.0 binary-mode request (the `cloudevents` SDK: ce-id = the broker's message
 *   id, ce-source, ce-type, ce-subject, ce-time; the body as published) → dispatched to the function
 *   through a node's gateway exactly like an async job (src/events/dispatch.ts: dispatch token,
 *   x-stratus-trigger, x-stratus-attempt = the broker's delivery count, x-stratus-request-id
 *   `ev-<hash of trigger and message id>-<attempt>`) → 2xx: `ack`; failure before `maxAttempts`:
 *   `retry` after the async path's backoff (retryDelayMs × 2^(n-1), capped, equal jitter); failure at
 *   `maxAttempts` (or past maxEventAgeS, or a delivery arriving beyond maxAttempts because the last
 *   one's outcome was lost): recorded in the platform's DLQ (JobQueue.recordDead, once per message) and
 *   then `dead` (the source removes it from the broker). When the DLQ cannot be written, the message is
 *   retried instead: nothing is dropped.
 *
 * Several control planes sharing one store each run the same sources; the brokers' consumer groups /
 * durable consumers hand each message to one of them at a time (at-least-once), so there is no leader.
 *
 * A source's identity (what a change restarts) is the trigger config, the resolved URL, and the
 * function settings it uses (timeout, maxAttempts, retryDelayMs, maxEventAgeS, concurrency limits);
 * a deploy that changes none of them leaves the source running.
 */
import { createHash } from "node:crypto";
import { CloudEvent, HTTP } from "cloudevents";
import { Agent, type Dispatcher } from "undici";
import { queueUrlProblem, type FunctionConfig, type QueueTriggerConfig, type QueueType } from "../../shared/function-config";
import type { Logger } from "../../shared/logger";
import type { CatalogEntry, FunctionCatalog } from "../catalog";
import { dispatchEvent } from "../dispatch";
import type { JobAttempt, JobQueue } from "../queue";
import { backoffMs } from "../queue-rules";
import { createNatsSource } from "./nats";
import { createRabbitmqSource } from "./rabbitmq";
import { createRedisSource } from "./redis";
import type { Deliver, DeliveryOutcome, EventSource, EventSourceFactory, SourceMessage, SourceStatus } from "./source";
import { postgresTriggerId, postgresUrlProblem, type PostgresTriggerConfig } from "../../shared/data-triggers";
import { createPostgresChangesSource, postgresSourceConfig } from "./postgres-changes";

/** The source module of each broker type. */
export const SOURCE_FACTORIES: Readonly<Record<QueueType, EventSourceFactory<QueueTriggerConfig>>> = {
  nats: createNatsSource,
  rabbitmq: createRabbitmqSource,
  redis: createRedisSource,
};

/** Longest wait of a delivery for a connected node before it fails (DISPATCH_FAILED), ms (and at most half the dispatch grace). */
const NO_NODE_WAIT_MS = 10_000;

/** The id of queue trigger `index` of function `name`: `<fn>#<index>:<hash of the queue config>`. */
export function queueTriggerId(name: string, index: number, q: QueueTriggerConfig): string {
  const { batchSize: _b, concurrency: _c, ...identity } = q;
  return `${name}#${index}:${createHash("sha256").update(JSON.stringify(identity)).digest("hex").slice(0, 8)}`;
}

/** The request id of one delivery: stable per (trigger, message), with the attempt. */
export const deliveryRequestId = (triggerId: string, messageId: string, attempt: number): string =>
  `ev-${createHash("sha256").update(`${triggerId}\n${messageId}`).digest("hex").slice(0, 20)}-${attempt}`;

/** What one trigger's deliverer needs. */
export interface DelivererOptions {
  readonly functionName: string;
  readonly triggerId: string;
  /** The function's settings (timeout, maxAttempts, retryDelayMs, maxEventAgeS). */
  readonly config: Pick<FunctionConfig, "timeout" | "maxAttempts" | "retryDelayMs" | "maxEventAgeS">;
  readonly queue: JobQueue;
  readonly gatewayUrl: () => string | null;
  readonly dispatchToken: string;
  readonly dispatcher: Dispatcher;
  /** Dispatch deadline = timeout + this, ms (half the lease margin, like the async worker). */
  readonly graceMs: number;
  readonly logger: Logger;
  readonly now?: () => number;
  readonly random?: () => number;
  /** Aborts running dispatches (the runner's stop past its deadline). */
  readonly signal?: AbortSignal;
}

/** The CloudEvents binary-mode request of a message (headers lower-case, the body as published). */
export function cloudEventRequest(m: SourceMessage): { headers: Record<string, string>; body: Buffer } {
  const ce = new CloudEvent({
    id: m.id, source: m.source, type: m.type, datacontenttype: m.contentType ?? "application/octet-stream", data: m.body,
    ...(m.subject !== undefined ? { subject: m.subject } : {}), ...(m.time !== undefined ? { time: new Date(m.time).toISOString() } : {}),
  }, false);
  const msg = HTTP.binary(ce);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(msg.headers)) if (v !== undefined) headers[k.toLowerCase()] = String(v);
  return { headers, body: Buffer.isBuffer(msg.body) ? msg.body : Buffer.from(String(msg.body ?? "")) };
}

/** The `deliver` of one trigger (see the file comment). Never rejects. */
export function createTriggerDeliverer(o: DelivererOptions): Deliver {
  const now = o.now ?? Date.now;
  const random = o.random ?? Math.random;
  const { config: c, logger } = o;

  async function dead(m: SourceMessage, request: { headers: Record<string, string>; body: Buffer }, history: JobAttempt[], error: { code: string; message: string }): Promise<DeliveryOutcome> {
    try {
      const { job, created } = await o.queue.recordDead({
        functionName: o.functionName, request: { method: "POST", path: "/", headers: request.headers, bodyBase64: request.body.toString("base64") },
        origin: { kind: "event", trigger: o.triggerId, eventId: m.id }, history, error,
        maxAttempts: c.maxAttempts, maxEventAgeS: c.maxEventAgeS, retryDelayMs: c.retryDelayMs,
        dedupKey: `event:${createHash("sha256").update(`${o.triggerId}\n${m.id}`).digest("hex")}`,
      });
      if (created) logger.warn({ fn: o.functionName, trigger: o.triggerId, eventId: m.id, invocationId: job.id, attempts: m.attempt, code: error.code }, "queue message dead-lettered");
      return { kind: "dead" };
    } catch (err) {
      logger.error({ err, fn: o.functionName, trigger: o.triggerId, eventId: m.id }, "could not record a dead-lettered message; it stays at the broker and is retried");
      return { kind: "retry", delayMs: c.retryDelayMs };
    }
  }

  return async (m) => {
    const request = cloudEventRequest(m);
    const requestId = deliveryRequestId(o.triggerId, m.id, m.attempt);
    if (m.attempt > c.maxAttempts) {
      // The last allowed attempt's outcome never reached the broker (a crash, a lost connection).
      const lost: JobAttempt = { attempt: m.attempt - 1, requestId: deliveryRequestId(o.triggerId, m.id, m.attempt - 1), startedAt: null, endedAt: now(), status: null, errorCode: "DELIVERY_LOST", errorMessage: "The outcome of the last attempt never reached the broker (a platform restart or a lost connection)" };
      return dead(m, request, [lost], { code: "DELIVERY_LOST", message: lost.errorMessage as string });
    }
    // No node connected (the platform is starting, or every node drains): wait a little rather than
    // spend an attempt the broker counts anyway.
    // Bounded so that wait + dispatch (timeout + graceMs) stays inside the lease (timeout + 2 × graceMs).
    const maxWait = Math.min(NO_NODE_WAIT_MS, o.graceMs / 2);
    for (let waited = 0; o.gatewayUrl() === null && waited < maxWait && o.signal?.aborted !== true; waited += 100) await new Promise((r) => setTimeout(r, 100));
    const startedAt = now();
    const r = await dispatchEvent(o.dispatcher, {
      gatewayUrl: o.gatewayUrl(), functionName: o.functionName, method: "POST", path: "/", headers: request.headers, body: request.body,
      dispatchToken: o.dispatchToken, requestId, attempt: m.attempt, trigger: o.triggerId, timeoutMs: c.timeout + o.graceMs,
      ...(o.signal !== undefined ? { signal: o.signal } : {}),
    });
    if (r.failure === null) return { kind: "ack" };
    const at = now();
    const attempt: JobAttempt = { attempt: m.attempt, requestId, startedAt, endedAt: at, status: r.status, errorCode: r.failure.code, errorMessage: r.failure.message.slice(0, 2000) };
    const tooOld = m.time !== undefined && at - m.time > c.maxEventAgeS * 1000;
    if (m.attempt >= c.maxAttempts || tooOld) {
      return dead(m, request, [attempt], tooOld && m.attempt < c.maxAttempts ? { code: "MAX_EVENT_AGE", message: `The message is older than maxEventAgeS (last error ${r.failure.code})` } : r.failure);
    }
    return { kind: "retry", delayMs: backoffMs(c.retryDelayMs, m.attempt, random()) };
  };
}

/** One queue trigger as `stratus triggers ls` shows it. */
export interface QueueTriggerView {
  readonly id: string;
  readonly index: number;
  readonly kind: "queue";
  readonly type: QueueType;
  /** Where it consumes: `nats://<stream>/<subject>`, `amqp://<queue>`, `redis://<stream>`. */
  readonly from: string;
  /** Null when this control plane runs no source for it (its URL secret is missing…). */
  readonly status: SourceStatus | null;
  /** Why it does not run, when it does not. */
  readonly problem: string | null;
}

export interface SourceRunnerOptions {
  readonly queue: JobQueue;
  readonly catalog: FunctionCatalog;
  /** The function's decrypted secrets (store.getSecretValues). */
  readonly secrets: (functionName: string) => Promise<Record<string, string>>;
  readonly logger: Logger;
  readonly gatewayUrl: () => string | null;
  readonly dispatchToken: string;
  /** events.leaseMarginMs: the broker's redelivery timeout is the function's timeout + this. */
  readonly leaseMarginMs: number;
  /** How often the runner compares the running sources with the catalog, ms (events.sourceSyncIntervalMs). */
  readonly syncIntervalMs: number;
  /** Source modules (default SOURCE_FACTORIES). */
  readonly factories?: Readonly<Record<QueueType, EventSourceFactory<QueueTriggerConfig>>>;
}

export interface SourceRunner {
  /** Syncs now and then every `syncIntervalMs`. */
  start(): void;
  /** One sync: starts missing sources, restarts changed ones, stops those whose trigger is gone. */
  sync(): Promise<void>;
  /** A function's queue triggers with their sources' state. */
  describe(entry: CatalogEntry): QueueTriggerView[];
  /** The state of any trigger's source (postgres triggers: `<fn>#postgres:<slot>`). */
  statusOf(triggerId: string): { status: SourceStatus | null; problem: string | null };
  /** Stops syncing and every source (each gets `deadlineMs` for its in-flight deliveries). Idempotent. */
  stop(deadlineMs: number): Promise<void>;
}

/** Where a queue trigger consumes from, for views and logs (never the URL). */
export function queueLocation(q: QueueTriggerConfig): string {
  if (q.type === "nats") return `nats://${q.stream}/${q.subject ?? ">"}`;
  if (q.type === "rabbitmq") return `amqp://${q.queue}`;
  return `redis://${q.stream}`;
}

interface Running {
  readonly key: string;
  readonly source: EventSource;
  readonly abort: AbortController;
}

export function createSourceRunner(o: SourceRunnerOptions): SourceRunner {
  const factories = o.factories ?? SOURCE_FACTORIES;
  const running = new Map<string, Running>();
  const problems = new Map<string, string>();
  const agent = new Agent({ connections: 256, keepAliveTimeout: 10_000 });
  const graceMs = Math.floor(o.leaseMarginMs / 2);
  let timer: NodeJS.Timeout | null = null;
  let syncing: Promise<void> | null = null;
  let stopped: Promise<void> | null = null;

  async function stopOne(id: string, deadlineMs: number): Promise<void> {
    const r = running.get(id);
    if (r === undefined) return;
    running.delete(id);
    await r.source.stop(deadlineMs);
    r.abort.abort();
  }

  /**
   * A postgres (table-change) trigger: one source per replication slot (src/events/sources/postgres-changes.ts),
   * its connection URL from the function secret `connectionSecret`, the same deliverer as queue triggers.
   */
  async function syncPostgres(entry: CatalogEntry, t: PostgresTriggerConfig, secrets: Record<string, string>, wanted: Set<string>, canStart: boolean): Promise<void> {
    const c = entry.config;
    const id = postgresTriggerId(entry.name, t);
    wanted.add(id);
    const url = secrets[t.connectionSecret] ?? null;
    const urlProblem = url === null ? null : postgresUrlProblem(url);
    if (url === null || urlProblem !== null) {
      const problem = url === null ? `secret ${t.connectionSecret} is not set (stratus secrets set ${entry.name} ${t.connectionSecret} postgres://…)` : `secret ${t.connectionSecret} ${urlProblem ?? ""}`;
      if (problems.get(id) !== problem) o.logger.warn({ fn: entry.name, trigger: id, problem }, "table-change trigger not started");
      problems.set(id, problem);
      await stopOne(id, 5_000);
      return;
    }
    problems.delete(id);
    const leaseMs = c.timeout + o.leaseMarginMs;
    const key = createHash("sha256").update(JSON.stringify(["postgres", t, url, c.timeout, c.maxAttempts, c.retryDelayMs, c.maxEventAgeS, leaseMs])).digest("hex");
    const current = running.get(id);
    if (current?.key === key) return;
    if (!canStart) return; // as queue triggers: start once a node can take the deliveries
    if (current !== undefined) await stopOne(id, c.timeout + graceMs);
    const config = postgresSourceConfig(entry.name, t);
    const logger = o.logger.child({ fn: entry.name, trigger: id, table: t.table });
    const abort = new AbortController();
    const source = createPostgresChangesSource(config, {
      functionName: entry.name, triggerId: id, url, consumerName: config.slot, concurrency: 1, batchSize: 1, leaseMs, maxAttempts: c.maxAttempts, logger,
    });
    running.set(id, { key, source, abort });
    source.start(createTriggerDeliverer({
      functionName: entry.name, triggerId: id, config: c, queue: o.queue, gatewayUrl: o.gatewayUrl, dispatchToken: o.dispatchToken,
      dispatcher: agent, graceMs, logger, signal: abort.signal,
    }));
    logger.info("table-change trigger source started");
  }

  async function syncOnce(): Promise<void> {
    const wanted = new Set<string>();
    // Sources start once a node can take their deliveries (running ones keep going; a delivery waits
    // NO_NODE_WAIT_MS for a node).
    const canStart = o.gatewayUrl() !== null;
    for (const entry of await o.catalog.list()) {
      const c = entry.config;
      let secrets: Record<string, string> | null = null;
      for (const [index, t] of c.triggers.entries()) {
        if (t.postgres !== undefined) {
          secrets ??= await o.secrets(entry.name).catch(() => ({}));
          await syncPostgres(entry, t.postgres, secrets, wanted, canStart);
          continue;
        }
        const q = t.queue;
        if (q === undefined) continue;
        const id = queueTriggerId(entry.name, index, q);
        wanted.add(id);
        let url = q.url ?? null;
        if (q.urlSecret !== undefined) {
          secrets ??= await o.secrets(entry.name).catch((err: unknown) => {
            o.logger.warn({ err, fn: entry.name }, "could not read the function's secrets for its queue triggers");
            return {};
          });
          url = secrets[q.urlSecret] ?? null;
          const problem = url === null ? `secret ${q.urlSecret} is not set (stratus secrets set ${entry.name} ${q.urlSecret} <url>)` : queueUrlProblem(q.type, url, false);
          if (problem !== null) {
            if (problems.get(id) !== problem) o.logger.warn({ fn: entry.name, trigger: id, problem }, "queue trigger not started");
            problems.set(id, problem);
            await stopOne(id, 5_000);
            continue;
          }
        }
        problems.delete(id);
        const concurrency = Math.min(q.concurrency ?? c.asyncConcurrency, c.maxInstances * c.concurrency);
        const leaseMs = c.timeout + o.leaseMarginMs;
        const key = createHash("sha256").update(JSON.stringify([q, url, c.timeout, c.maxAttempts, c.retryDelayMs, c.maxEventAgeS, concurrency, leaseMs])).digest("hex");
        const current = running.get(id);
        if (current?.key === key) continue;
        if (!canStart) continue;
        if (current !== undefined) await stopOne(id, c.timeout + graceMs);
        const logger = o.logger.child({ fn: entry.name, trigger: id, from: queueLocation(q) });
        const abort = new AbortController();
        const source = factories[q.type](q, {
          functionName: entry.name, triggerId: id, url: url as string, consumerName: `stratus-${entry.name}-${index}`,
          concurrency, batchSize: q.batchSize, leaseMs, maxAttempts: c.maxAttempts, logger,
        });
        running.set(id, { key, source, abort });
        source.start(createTriggerDeliverer({
          functionName: entry.name, triggerId: id, config: c, queue: o.queue, gatewayUrl: o.gatewayUrl, dispatchToken: o.dispatchToken,
          dispatcher: agent, graceMs, logger, signal: abort.signal,
        }));
        logger.info("queue trigger source started");
      }
    }
    for (const id of [...running.keys()]) if (!wanted.has(id)) await stopOne(id, 30_000);
    for (const id of [...problems.keys()]) if (!wanted.has(id)) problems.delete(id);
  }

  const sync = async (): Promise<void> => {
    while (syncing !== null) await syncing;
    if (stopped !== null) return;
    syncing = syncOnce().finally(() => {
      syncing = null;
    });
    await syncing;
  };

  return {
    start() {
      if (timer !== null || stopped !== null) return;
      const tick = () => void sync().catch((err: unknown) => o.logger.warn({ err }, "trigger source sync failed; will retry"));
      timer = setInterval(tick, o.syncIntervalMs);
      timer.unref();
      tick();
    },
    sync,
    statusOf: (triggerId) => ({ status: running.get(triggerId)?.source.status() ?? null, problem: problems.get(triggerId) ?? null }),
    describe(entry) {
      const out: QueueTriggerView[] = [];
      for (const [index, t] of entry.config.triggers.entries()) {
        if (t.queue === undefined) continue;
        const id = queueTriggerId(entry.name, index, t.queue);
        out.push({ id, index, kind: "queue", type: t.queue.type, from: queueLocation(t.queue), status: running.get(id)?.source.status() ?? null, problem: problems.get(id) ?? null });
      }
      return out;
    },
    stop: (deadlineMs) => (stopped ??= (async () => {
      if (timer !== null) clearInterval(timer);
      await syncing?.catch(() => {});
      await Promise.allSettled([...running.keys()].map((id) => stopOne(id, deadlineMs)));
      await agent.close().catch(() => {});
    })()),
  };
}
