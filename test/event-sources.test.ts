// The trigger-source conformance suite (src/events/sources/conformance.ts) against real brokers started
// here (test/helpers/brokers.ts): Redis Streams, NATS JetStream and RabbitMQ, each on free loopback
// ports with its own data dir. Each broker is started once for its suite and stopped after it.
import { randomBytes } from "node:crypto";
import { after, before } from "node:test";
import { connect as amqpConnect } from "amqplib";
import { Redis } from "ioredis";
import { connect as natsConnect, RetentionPolicy, StorageType } from "nats";
import { runSourceConformance } from "../src/events/sources/conformance";
import { NATS_EVENT_TYPE } from "../src/events/sources/nats";
import { RABBITMQ_EVENT_TYPE } from "../src/events/sources/rabbitmq";
import { REDIS_EVENT_TYPE } from "../src/events/sources/redis";
import { startNats, startRabbitmq, startRedis, type BrokerServer } from "./helpers/brokers";

const fresh = (prefix: string) => `${prefix}${randomBytes(4).toString("hex")}`;

let redis: BrokerServer;
let nats: BrokerServer;
let rabbit: BrokerServer;
before(async () => {
  [redis, nats, rabbit] = await Promise.all([startRedis(), startNats(), startRabbitmq()]);
}, { timeout: 180_000 });
after(async () => {
  await Promise.all([redis?.stop(), nats?.stop(), rabbit?.stop()]);
});

runSourceConformance({
  name: "redis streams",
  broker: () => redis,
  async topic() {
    const stream = fresh("events-");
    return {
      config: { type: "redis", url: redis.url, stream, batchSize: 10 }, url: redis.url, expectedSource: `redis://${stream}`, expectedType: REDIS_EVENT_TYPE,
      async publish(body) {
        const r = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
        await r.connect();
        try {
          return (await r.xadd(stream, "*", "data", body)) as string;
        } finally {
          r.disconnect();
        }
      },
    };
  },
});

runSourceConformance({
  name: "nats jetstream",
  broker: () => nats,
  async topic() {
    const stream = fresh("ORDERS_");
    const subject = `${stream.toLowerCase()}.created`;
    const nc = await natsConnect({ servers: nats.url });
    try {
      await (await nc.jetstreamManager()).streams.add({ name: stream, subjects: [`${stream.toLowerCase()}.>`], storage: StorageType.File, retention: RetentionPolicy.Limits });
    } finally {
      await nc.close();
    }
    let n = 0;
    return {
      config: { type: "nats", url: nats.url, stream, subject: `${stream.toLowerCase()}.>`, batchSize: 10 }, url: nats.url,
      expectedSource: `nats://${stream}/${subject}`, expectedType: NATS_EVENT_TYPE,
      async publish(body) {
        const c = await natsConnect({ servers: nats.url });
        try {
          // Half the messages carry a Nats-Msg-Id (used as ce-id), half do not (ce-id = <stream>:<seq>).
          const msgID = n++ % 2 === 0 ? fresh("msg-") : undefined;
          const ack = await c.jetstream().publish(subject, Buffer.from(body), msgID !== undefined ? { msgID } : {});
          return msgID ?? `${stream}:${ack.seq}`;
        } finally {
          await c.close();
        }
      },
    };
  },
});

runSourceConformance({
  name: "rabbitmq",
  broker: () => rabbit,
  async topic() {
    const queue = fresh("jobs-");
    const conn = await amqpConnect(rabbit.url);
    try {
      const ch = await conn.createChannel();
      await ch.assertQueue(queue, { durable: true });
    } finally {
      await conn.close();
    }
    return {
      config: { type: "rabbitmq", url: rabbit.url, queue, batchSize: 10 }, url: rabbit.url, expectedSource: `amqp://${queue}`, expectedType: RABBITMQ_EVENT_TYPE,
      async publish(body) {
        const c = await amqpConnect(rabbit.url);
        try {
          const ch = await c.createConfirmChannel();
          const messageId = fresh("m-");
          ch.sendToQueue(queue, Buffer.from(body), { persistent: true, messageId, timestamp: Math.floor(Date.now() / 1000) });
          await ch.waitForConfirms();
          return messageId;
        } finally {
          await c.close();
        }
      },
    };
  },
});
