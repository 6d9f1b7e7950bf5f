/**
 * NATS JetStream trigger source (`nats`): a durable pull consumer on one stream.
 *
 *  - The consumer (`consumer`, default `stratus-<fn>-<index>`) is created when missing with explicit
 *    acks, deliver policy `all` (a new trigger consumes what the stream holds), `ack_wait` = the lease
 *    (function timeout + events.leaseMarginMs), `max_deliver` = maxAttempts + 1 and the trigger's
 *    `subject` as filter; an existing one gets `ack_wait` and `max_deliver` updated. The extra delivery
 *    beyond maxAttempts is the runner's last word when the outcome of the last attempt was lost: it
 *    dead-letters the message without dispatching it.
 *  - Fetch: `consumer.fetch({ max_messages, expires })`, at most the free delivery slots at once.
 *  - Success: `ackAck()` (acknowledged by the server before the message counts as done). Failure:
 *    `nak(delayMs)` — JetStream redelivers after the delay. Dead: `term()`.
 *  - The client does not reconnect by itself (the shared core does, with backoff): a broker restart
 *    ends the session; unacked messages are redelivered by JetStream after `ack_wait` or the nak delay.
 *
 * ce-id is the `Nats-Msg-Id` header when the publisher set one (JetStream's de-duplication id), else
 * `<stream>:<stream sequence>`; ce-source `nats://<stream>/<subject>`; ce-time the stream timestamp;
 * the attempt is JetStream's delivery count.
 */
import { AckPolicy, DeliverPolicy, connect, nanos, type Consumer, type JsMsg, type NatsConnection } from "nats";
import type { QueueTriggerConfig } from "../../shared/function-config";
import { createSourceCore, type Broker, type BrokerSession } from "./source-core";
import type { EventSource, SourceContext, SourceMessage } from "./source";

/** CloudEvents type of a NATS JetStream message. */
export const NATS_EVENT_TYPE = "io.stratus.queue.nats.message";

/** The source for a `{ queue: { type: "nats", … } }` trigger. */
export function createNatsSource(config: QueueTriggerConfig, ctx: SourceContext): EventSource {
  const stream = config.stream as string;
  const durable = config.consumer ?? ctx.consumerName;

  function toMessage(m: JsMsg): SourceMessage {
    const msgId = m.headers?.get("Nats-Msg-Id") ?? "";
    const contentType = m.headers?.get("content-type") ?? m.headers?.get("Content-Type") ?? "";
    return {
      id: msgId !== "" ? msgId : `${stream}:${m.info.streamSequence}`,
      source: `nats://${stream}/${m.subject}`, type: NATS_EVENT_TYPE, subject: m.subject,
      time: Math.floor(m.info.timestampNanos / 1e6), attempt: m.info.deliveryCount, body: Buffer.from(m.data),
      ...(contentType !== "" ? { contentType } : {}),
    };
  }

  async function ensureConsumer(nc: NatsConnection): Promise<Consumer> {
    const jsm = await nc.jetstreamManager();
    const wanted = { ack_wait: nanos(ctx.leaseMs), max_deliver: ctx.maxAttempts + 1 };
    const info = await jsm.consumers.info(stream, durable).catch((err: unknown) => {
      if (/consumer not found/i.test(String((err as Error).message))) return null;
      throw err;
    });
    if (info === null) {
      await jsm.consumers.add(stream, {
        durable_name: durable, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, ...wanted,
        ...(config.subject !== undefined ? { filter_subject: config.subject } : {}),
      });
    } else if (info.config.ack_wait !== wanted.ack_wait || info.config.max_deliver !== wanted.max_deliver) {
      await jsm.consumers.update(stream, durable, wanted);
    }
    return nc.jetstream().consumers.get(stream, durable);
  }

  const broker: Broker<JsMsg> = {
    async connect(): Promise<BrokerSession<JsMsg>> {
      const nc = await connect({ servers: ctx.url, reconnect: false, timeout: 5_000, name: `stratus ${ctx.triggerId}` });
      let consumer: Consumer;
      try {
        consumer = await ensureConsumer(nc);
      } catch (err) {
        await nc.close().catch(() => {});
        throw err;
      }
      const lost = (): boolean => nc.isClosed();
      return {
        async fetch(max, waitMs) {
          if (lost()) throw new Error("NATS connection closed");
          const out: Array<{ message: SourceMessage; raw: JsMsg }> = [];
          const iter = await consumer.fetch({ max_messages: max, expires: Math.max(1_000, waitMs) });
          for await (const m of iter) {
            out.push({ message: toMessage(m), raw: m });
            if (out.length >= max) break;
          }
          if (out.length === 0 && lost()) throw new Error("NATS connection closed");
          return out;
        },
        async settle(m, outcome) {
          if (lost()) throw new Error("NATS connection closed");
          if (outcome.kind === "ack") {
            await m.ackAck();
            return;
          }
          if (outcome.kind === "retry") m.nak(Math.max(1, Math.round(outcome.delayMs)));
          else m.term("dead-lettered by Stratus");
          await nc.flush();
        },
        async close() {
          await nc.close().catch(() => {});
        },
      };
    },
  };
  return createSourceCore(broker, ctx);
}
