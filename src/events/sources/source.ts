/**
 * The trigger source contract: something outside the platform (a broker's queue or stream, a database's
 * change feed, a bucket) that hands the platform messages one at a time and is told, per message, what
 * became of it. Every source has the same lifecycle and the same delivery rules; the runner
 * (src/events/sources/runner.ts) turns a message into a CloudEvent, dispatches it to the function and
 * answers with the outcome. Implementations: src/events/sources/redis.ts (Redis Streams),
 * nats.ts (NATS JetStream), rabbitmq.ts (RabbitMQ). All run src/events/sources/conformance.ts against
 * the real broker.
 *
 * Rules every implementation keeps:
 *  - at-least-once: a message is settled at the broker (acked, or terminated after `dead`) only after
 *    `deliver` resolved for it; a message whose delivery did not finish (a crash, a lost connection,
 *    `stop()` past its deadline) is redelivered by the broker later;
 *  - `SourceMessage.id` is the broker's id of the message, the same on every redelivery (the CloudEvent `id`);
 *    `attempt` is the broker's delivery count (1 on the first delivery) — never reset by a redelivery;
 *  - at most `concurrency` deliveries run at once; at most `batchSize` messages are fetched in one call;
 *  - `retry` makes the broker deliver the message again no sooner than `delayMs` from now (as near as the
 *    broker allows: see each implementation), `dead` removes it from the broker for good (after the
 *    runner recorded it in the platform's dead-letter queue), `ack` removes it;
 *  - a message held by a consumer that died is redelivered after `leaseMs` (the broker's ack wait /
 *    visibility timeout), so `leaseMs` must exceed the longest `deliver` (the function's timeout + margin);
 *  - several consumers of one trigger (several control planes on one store) are safe: the broker's
 *    consumer group / durable consumer hands each message to one of them at a time;
 *  - connection loss is not fatal: the source reconnects with a bounded backoff until `stop()`.
 */
import type { Logger } from "../../shared/logger";

/** One message as a source hands it to `deliver`. */
export interface SourceMessage {
  /** The broker's id of the message, stable across redeliveries (the CloudEvent `id`). */
  readonly id: string;
  /** The CloudEvent `source`: `nats://<stream>/<subject>`, `amqp://<queue>`, `redis://<stream>`… */
  readonly source: string;
  /** The CloudEvent `type`: `io.stratus.queue.nats.message`… */
  readonly type: string;
  /** The CloudEvent `subject` (the NATS subject, the routing key…), when the broker has one. */
  readonly subject?: string;
  /** When the broker took the message, epoch ms, when it knows (the CloudEvent `time`). */
  readonly time?: number;
  /** The broker's delivery count, 1-based. */
  readonly attempt: number;
  /** The message body, as published. */
  readonly body: Buffer;
  /** The body's media type when the publisher gave one. */
  readonly contentType?: string;
}

/** What became of one delivery: the source settles the message at the broker accordingly. */
export type DeliveryOutcome =
  | { readonly kind: "ack" }
  | { readonly kind: "retry"; readonly delayMs: number }
  | { readonly kind: "dead" };

/**
 * Handles one message; resolves with its outcome. Never rejects (a rejection is treated as
 * `retry` after the source's own minimum delay, and logged).
 */
export type Deliver = (message: SourceMessage) => Promise<DeliveryOutcome>;

/** What a source reports about itself (`stratus triggers ls`). */
export interface SourceStatus {
  /** True while connected to the broker and consuming. */
  readonly connected: boolean;
  /** Deliveries running now. */
  readonly inFlight: number;
  /** Messages settled since start, by outcome. */
  readonly settled: { readonly ack: number; readonly retry: number; readonly dead: number };
  /** The last connection or broker error, or null. */
  readonly lastError: string | null;
}

/** What every source is created with, beside its own validated trigger config. */
export interface SourceContext {
  /** The function the trigger belongs to. */
  readonly functionName: string;
  /** The trigger id (`<fn>#<index>:<hash>`). */
  readonly triggerId: string;
  /** The broker URL, credentials included (resolved from the function's secrets, or the plain `url`). Never logged. */
  readonly url: string;
  /** Default consumer / group name when the trigger names none (`stratus-<fn>-<index>`). */
  readonly consumerName: string;
  /** Deliveries at once (≥ 1). */
  readonly concurrency: number;
  /** Messages fetched per call (≥ 1). */
  readonly batchSize: number;
  /** Redelivery timeout of an unsettled message, ms: the function's timeout + the lease margin. */
  readonly leaseMs: number;
  /** The function's maxAttempts (sources that let the broker bound deliveries use it, with room for the runner's last word). */
  readonly maxAttempts: number;
  readonly logger: Logger;
}

/** A running (or not yet started) source. */
export interface EventSource {
  /**
   * Starts connecting and consuming in the background; returns at once (a broker that is down is retried
   * with backoff; see `status()`). Called once.
   */
  start(deliver: Deliver): void;
  /**
   * Stops fetching, waits for in-flight deliveries up to `deadlineMs` and settles them, then closes the
   * connection. Deliveries still running after the deadline are left unsettled (the broker redelivers
   * them). Idempotent.
   */
  stop(deadlineMs: number): Promise<void>;
  status(): SourceStatus;
}

/** Builds a source from its validated config; nothing connects before `start`. */
export type EventSourceFactory<Config> = (config: Config, context: SourceContext) => EventSource;
