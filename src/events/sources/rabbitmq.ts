/**
 * RabbitMQ trigger source (`amqplib`): a consumer with manual acks on one existing queue.
 *
 *  - One connection and one confirm channel per session; `prefetch` = the trigger's concurrency, so the
 *    broker never pushes more unacknowledged messages than can be delivered at once (batchSize has no
 *    role here: RabbitMQ pushes).
 *  - Success: `ack`. Dead (after the runner recorded it in the platform DLQ): `nack` without requeue —
 *    the broker dead-letters it to the queue's own dead-letter exchange when the queue has one
 *    (`x-dead-letter-exchange`), else drops it.
 *  - Failure: RabbitMQ has no delayed requeue, so the message is republished, persistent, to the retry
 *    queue `stratus.retry.<queue>` with a per-message TTL of the retry delay, the next attempt number in
 *    `x-stratus-attempt` and its id in `x-stratus-message-id`; that queue dead-letters expired messages
 *    back to `<queue>` through the default exchange. The original is acked only after the broker
 *    confirmed the copy (a crash in between leaves a duplicate, never a loss). RabbitMQ expires
 *    per-message TTLs at the head of a queue only, so a long delay ahead of a short one can hold the
 *    short one back: a retry waits at least its delay.
 *  - A message left unacked by a lost connection is requeued by the broker (`redelivered`); its attempt
 *    then counts one more (quorum queues' `x-delivery-count` is used when present).
 *
 * ce-id is the message's `message_id` property (set it when publishing), else the id Stratus gave it on
 * its first failure (`x-stratus-message-id`), else a fresh UUID — without a `message_id`, a message
 * redelivered after a lost connection gets a new id. ce-source `amqp://<queue>`, ce-subject the routing
 * key, ce-time the `timestamp` property when set.
 */
import { randomUUID } from "node:crypto";
import { connect, type ConfirmChannel, type ConsumeMessage } from "amqplib";
import type { QueueTriggerConfig } from "../../shared/function-config";
import { createSourceCore, type Broker, type BrokerSession, type Fetched } from "./source-core";
import type { EventSource, SourceContext, SourceMessage } from "./source";

/** CloudEvents type of a RabbitMQ message. */
export const RABBITMQ_EVENT_TYPE = "io.stratus.queue.rabbitmq.message";

/** The retry queue of `queue`. */
export const retryQueueOf = (queue: string): string => `stratus.retry.${queue}`;

interface RabbitRaw {
  readonly msg: ConsumeMessage;
  readonly id: string;
  readonly attempt: number;
}

/** The source for a `{ queue: { type: "rabbitmq", … } }` trigger. */
export function createRabbitmqSource(config: QueueTriggerConfig, ctx: SourceContext): EventSource {
  const queue = config.queue as string;
  const retryQueue = retryQueueOf(queue);

  function describe(msg: ConsumeMessage): { message: SourceMessage; raw: RabbitRaw } {
    const h = msg.properties.headers ?? {};
    const given = msg.properties.messageId ?? h["x-stratus-message-id"];
    const id = typeof given === "string" && given !== "" ? given : randomUUID();
    const base = Number(h["x-stratus-attempt"] ?? 1);
    const returned = msg.fields.redelivered ? Math.max(1, Number(h["x-delivery-count"] ?? 1)) : 0;
    const attempt = (Number.isInteger(base) && base >= 1 ? base : 1) + returned;
    const ts = typeof msg.properties.timestamp === "number" ? msg.properties.timestamp * 1000 : undefined;
    const ct = msg.properties.contentType;
    return {
      message: {
        id, source: `amqp://${queue}`, type: RABBITMQ_EVENT_TYPE, subject: msg.fields.routingKey, attempt, body: msg.content,
        ...(ts !== undefined ? { time: ts } : {}), ...(typeof ct === "string" && ct !== "" ? { contentType: ct } : {}),
      },
      raw: { msg, id, attempt },
    };
  }

  const broker: Broker<RabbitRaw> = {
    async connect(): Promise<BrokerSession<RabbitRaw>> {
      const conn = await connect(ctx.url, { timeout: 5_000, clientProperties: { connection_name: `stratus ${ctx.triggerId}` } });
      let broken: Error | null = null;
      const buffer: ConsumeMessage[] = [];
      let arrived: (() => void) | null = null;
      const notify = (): void => {
        const a = arrived;
        arrived = null;
        a?.();
      };
      conn.on("error", (err: Error) => {
        broken = err;
      });
      conn.on("close", () => {
        broken ??= new Error("RabbitMQ connection closed");
        notify();
      });
      let ch: ConfirmChannel;
      try {
        ch = await conn.createConfirmChannel();
        ch.on("error", (err: Error) => {
          broken = err;
        });
        ch.on("close", () => {
          broken ??= new Error("RabbitMQ channel closed");
          notify();
        });
        await ch.checkQueue(queue);
        await ch.assertQueue(retryQueue, { durable: true, arguments: { "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue } });
        await ch.prefetch(ctx.concurrency);
        await ch.consume(queue, (msg) => {
          if (msg === null) broken ??= new Error(`The consumer on ${queue} was cancelled by the broker`);
          else buffer.push(msg);
          notify();
        }, { noAck: false });
      } catch (err) {
        await conn.close().catch(() => {});
        throw err;
      }
      return {
        async fetch(max, waitMs) {
          if (buffer.length === 0 && broken === null) {
            await new Promise<void>((resolve) => {
              const t = setTimeout(() => {
                arrived = null;
                resolve();
              }, waitMs);
              arrived = () => {
                clearTimeout(t);
                resolve();
              };
            });
          }
          if (broken !== null && buffer.length === 0) throw broken;
          return buffer.splice(0, max).map((m): Fetched<RabbitRaw> => describe(m));
        },
        async settle(raw, outcome) {
          if (broken !== null) throw broken;
          if (outcome.kind === "ack") return ch.ack(raw.msg);
          if (outcome.kind === "dead") return ch.nack(raw.msg, false, false);
          const p = raw.msg.properties;
          ch.sendToQueue(retryQueue, raw.msg.content, {
            persistent: true, expiration: String(Math.max(1, Math.round(outcome.delayMs))), messageId: raw.id,
            ...(p.contentType !== undefined ? { contentType: p.contentType as string } : {}), ...(p.timestamp !== undefined ? { timestamp: p.timestamp as number } : {}),
            headers: { ...(p.headers ?? {}), "x-stratus-attempt": raw.attempt + 1, "x-stratus-message-id": raw.id },
          });
          await ch.waitForConfirms();
          ch.ack(raw.msg);
        },
        async close() {
          await ch.close().catch(() => {});
          await conn.close().catch(() => {});
        },
      };
    },
  };
  return createSourceCore(broker, ctx);
}
