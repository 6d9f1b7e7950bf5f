/**
 * The conformance suite every trigger source runs (test/event-sources.test.ts: Redis Streams, NATS
 * JetStream and RabbitMQ, each a real broker the test started). Each case gets a fresh stream / queue at
 * the broker, a fresh SQLite job queue (the platform's DLQ) and a real HTTP server on loopback standing in
 * for a node's gateway (it checks the dispatch token and answers as the case says), and runs the real
 * source with the real deliverer of the runner (src/events/sources/runner.ts). Every wait is bounded.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Agent } from "undici";
import type { QueueTriggerConfig } from "../../shared/function-config";
import { createSilentLogger } from "../../shared/logger";
import type { JobQueue } from "../queue";
import { openSqliteQueue } from "../sqlite/sqlite-queue";
import { createTriggerDeliverer, queueTriggerId, SOURCE_FACTORIES } from "./runner";
import type { EventSource } from "./source";

/** The broker a harness runs (test/helpers/brokers.ts). */
export interface ConformanceBroker {
  /** SIGKILLs the broker, keeping its data. */
  kill(): Promise<void>;
  /** Starts it again on the same port and data. */
  restart(): Promise<void>;
  /** Established client connections to the broker. */
  connections(): number;
}

/** One fresh place to consume from (a new stream or queue), and how to publish to it. */
export interface ConformanceTopic {
  /** The trigger config (url included, plain: test brokers carry the guest credentials in it — fine here, the schema is not in the loop). */
  readonly config: QueueTriggerConfig;
  /** The broker URL the source is given. */
  readonly url: string;
  /** Publishes one message durably (a fresh connection each time, so it works across a broker restart); resolves the CloudEvent id the source will report. */
  publish(body: string): Promise<string>;
  readonly expectedSource: string;
  readonly expectedType: string;
}

export interface SourceHarness {
  readonly name: string;
  readonly broker: () => ConformanceBroker;
  /** Sets up a fresh topic at the broker. */
  topic(): Promise<ConformanceTopic>;
}

interface Seen {
  readonly ceId: string;
  readonly attempt: number;
  readonly body: string;
  readonly headers: IncomingMessage["headers"];
}

/** The stand-in gateway: records every dispatch, answers with `respond`. */
interface FakeGateway {
  readonly url: string;
  readonly seen: Seen[];
  inFlight: number;
  peak: number;
  respond: (s: Seen) => Promise<number> | number;
  close(): Promise<void>;
}

const TOKEN = "conformance-dispatch-token";
const FN = "consumer";

async function startGateway(): Promise<FakeGateway> {
  const gw: FakeGateway = {
    url: "", seen: [], inFlight: 0, peak: 0, respond: () => 200,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.headers["x-stratus-dispatch-token"] !== TOKEN || req.url !== `/fn/${FN}/`) {
        res.writeHead(401).end();
        return;
      }
      const s: Seen = { ceId: String(req.headers["ce-id"]), attempt: Number(req.headers["x-stratus-attempt"]), body: Buffer.concat(chunks).toString(), headers: req.headers };
      gw.seen.push(s);
      gw.inFlight++;
      gw.peak = Math.max(gw.peak, gw.inFlight);
      void Promise.resolve(gw.respond(s)).then((status) => {
        gw.inFlight--;
        res.writeHead(status, { "content-type": "text/plain" }).end(status < 300 ? "ok" : "failed");
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  (gw as { url: string }).url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return gw;
}

/** Polls `check` every 25 ms until true; fails with `what` after `timeoutMs`. */
async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`timed out after ${timeoutMs} ms waiting for: ${what}`);
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Settings {
  readonly maxAttempts?: number;
  readonly concurrency?: number;
  readonly batchSize?: number;
}

/** Lease (redelivery timeout) of the cases, ms: short, so a dead consumer's messages come back quickly. */
const LEASE_MS = 3_000;
const TIMEOUT_MS = 2_000;

/** Registers the suite under `describe(source conformance: <name>)`. */
export function runSourceConformance(h: SourceHarness): void {
  describe(`source conformance: ${h.name}`, () => {
    let gw: FakeGateway;
    let dir: string;
    let jobs: JobQueue;
    const agent = new Agent();
    const running: EventSource[] = [];
    before(async () => {
      gw = await startGateway();
      dir = mkdtempSync(join(tmpdir(), "stratus-sources-"));
    });
    after(async () => {
      for (const s of running) await s.stop(1000);
      await gw?.close();
      await agent.close();
      rmSync(dir, { recursive: true, force: true });
    });

    let n = 0;
    /** A source on `topic` with the real deliverer. */
    function consume(topic: ConformanceTopic, s: Settings = {}): EventSource {
      const config = { ...topic.config, batchSize: s.batchSize ?? 10 };
      const triggerId = queueTriggerId(FN, 0, config);
      const source = SOURCE_FACTORIES[config.type](config, {
        functionName: FN, triggerId, url: topic.url, consumerName: `stratus-${FN}-0`, concurrency: s.concurrency ?? 4, batchSize: config.batchSize,
        leaseMs: LEASE_MS, maxAttempts: s.maxAttempts ?? 3, logger: createSilentLogger(),
      });
      source.start(createTriggerDeliverer({
        functionName: FN, triggerId, config: { timeout: TIMEOUT_MS, maxAttempts: s.maxAttempts ?? 3, retryDelayMs: 50, maxEventAgeS: 3600 },
        queue: jobs, gatewayUrl: () => gw.url, dispatchToken: TOKEN, dispatcher: agent, graceMs: 500, logger: createSilentLogger(),
      }));
      running.push(source);
      return source;
    }
    const stopSource = async (s: EventSource, deadlineMs = 10_000) => {
      await s.stop(deadlineMs);
      running.splice(running.indexOf(s), 1);
    };

    /** Each case: a fresh job queue and gateway behaviour. */
    const withTopic = (title: string, fn: (topic: ConformanceTopic) => Promise<void>, timeout = 60_000) =>
      test(title, { timeout }, async () => {
        jobs = openSqliteQueue(join(dir, `q${n++}.db`));
        gw.seen.length = 0;
        gw.peak = 0;
        gw.respond = () => 200;
        try {
          await fn(await h.topic());
        } finally {
          for (const s of [...running]) await stopSource(s, 2_000);
          await jobs.close();
        }
      });

    withTopic("deliver: each message arrives once as a CloudEvent (binary mode) with the broker's id, and is acked (not redelivered)", async (topic) => {
      const ids = [await topic.publish("one"), await topic.publish(JSON.stringify({ n: 2 })), await topic.publish("three")];
      const source = consume(topic);
      await until("3 deliveries", () => gw.seen.length >= 3);
      await until("3 acks", () => source.status().settled.ack === 3);
      assert.deepEqual(gw.seen.map((s) => s.ceId).sort(), [...ids].sort());
      assert.deepEqual(gw.seen.map((s) => s.body).sort(), ["one", "three", JSON.stringify({ n: 2 })].sort());
      const first = gw.seen.find((s) => s.ceId === ids[0]);
      assert.ok(first);
      assert.equal(first.headers["ce-specversion"], "1.0");
      assert.equal(first.headers["ce-source"], topic.expectedSource);
      assert.equal(first.headers["ce-type"], topic.expectedType);
      assert.ok(typeof first.headers["ce-time"] === "string" && !Number.isNaN(Date.parse(first.headers["ce-time"])), "ce-time is a timestamp");
      assert.equal(first.attempt, 1);
      assert.match(String(first.headers["x-stratus-trigger"]), new RegExp(`^${FN}#0:[0-9a-f]{8}$`));
      assert.match(String(first.headers["x-stratus-request-id"]), /^ev-[0-9a-f]{20}-1$/);
      assert.equal(source.status().connected, true);
      // Past the lease: an acked message is never handed out again.
      await sleep(LEASE_MS + 1_000);
      assert.equal(gw.seen.length, 3, "no redelivery after ack");
      assert.deepEqual(await jobs.listDead(FN), []);
    });

    withTopic("redeliver on failure: a failed attempt comes back with the same id and the next attempt number", async (topic) => {
      const ids = [await topic.publish("a"), await topic.publish("b")];
      gw.respond = (s) => (s.attempt === 1 ? 500 : 200);
      const source = consume(topic, { maxAttempts: 3 });
      await until("2 acks after a retry each", () => source.status().settled.ack === 2);
      for (const id of ids) assert.deepEqual(gw.seen.filter((s) => s.ceId === id).map((s) => s.attempt), [1, 2], `attempts of ${id}`);
      assert.equal(source.status().settled.retry, 2);
      assert.deepEqual(await jobs.listDead(FN), []);
    });

    withTopic("DLQ after maxAttempts: an entry with every attempt counted, the CloudEvent request kept for a replay, removed from the broker", async (topic) => {
      const id = await topic.publish("poison");
      gw.respond = () => 503;
      const source = consume(topic, { maxAttempts: 2 });
      await until("dead-lettered", () => source.status().settled.dead === 1);
      assert.deepEqual(gw.seen.map((s) => [s.ceId, s.attempt]), [[id, 1], [id, 2]]);
      const [dead, ...more] = await jobs.listDead(FN);
      assert.equal(more.length, 0);
      assert.ok(dead);
      assert.equal(dead.attempts, 2);
      assert.equal(dead.origin.kind, "event");
      assert.equal(dead.origin.eventId, id);
      assert.equal(dead.error?.code, "FUNCTION_ERROR");
      assert.equal(dead.history.at(-1)?.status, 503);
      assert.equal(dead.request.headers["ce-id"], id);
      assert.equal(Buffer.from(dead.request.bodyBase64, "base64").toString(), "poison");
      await sleep(LEASE_MS + 1_000);
      assert.equal(gw.seen.length, 2, "not delivered again once dead");
    });

    withTopic("concurrency: at most `concurrency` deliveries at once, and the bound is reached", async (topic) => {
      for (let i = 0; i < 8; i++) await topic.publish(`m${i}`);
      gw.respond = () => sleep(300).then(() => 200);
      const source = consume(topic, { concurrency: 2, batchSize: 5 });
      await until("8 acks", () => source.status().settled.ack === 8);
      assert.equal(gw.peak, 2);
      assert.equal(gw.seen.length, 8);
    });

    withTopic("stop: waits for in-flight deliveries and settles them, closes its connections; a new consumer gets only the rest", async (topic) => {
      const baseline = h.broker().connections();
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) ids.push(await topic.publish(`s${i}`));
      gw.respond = () => sleep(700).then(() => 200);
      const first = consume(topic, { concurrency: 2, batchSize: 2 });
      await until("2 in flight", () => gw.inFlight === 2);
      await stopSource(first);
      assert.equal(first.status().settled.ack, 2, "both in-flight deliveries finished and were acked");
      assert.equal(first.status().connected, false);
      await until("connections closed", () => h.broker().connections() === baseline, 5_000);
      assert.equal(gw.seen.length, 2, "nothing fetched after stop");
      const done = gw.seen.map((s) => s.ceId);
      gw.respond = () => 200;
      const second = consume(topic);
      await until("the other 2 acked", () => second.status().settled.ack === 2);
      await sleep(500);
      assert.deepEqual(gw.seen.slice(2).map((s) => s.ceId).sort(), ids.filter((id) => !done.includes(id)).sort(), "the rest, and not the acked ones");
    });

    withTopic("resume after a broker restart (SIGKILL, same data): reconnects, and nothing is lost", async (topic) => {
      const before = [await topic.publish("r0"), await topic.publish("r1")];
      let hold = true;
      gw.respond = (s) => (s.body === "r1" && hold ? sleep(1_500).then(() => 200) : 200);
      const source = consume(topic, { concurrency: 2 });
      await until("r0 acked and r1 in flight", () => source.status().settled.ack === 1 && gw.inFlight === 1);
      await h.broker().kill();
      await until("disconnect noticed", () => !source.status().connected, 15_000);
      hold = false;
      await h.broker().restart();
      await until("reconnected", () => source.status().connected, 30_000);
      const later = [await topic.publish("r2"), await topic.publish("r3")];
      const answered = () => new Set(gw.seen.map((s) => s.ceId));
      await until("every message delivered after the restart", () => [...before, ...later].every((id) => answered().has(id)), 30_000);
      // r1's ack could not reach the killed broker: it comes again, and then succeeds.
      await until("r1 redelivered", () => gw.seen.filter((s) => s.body === "r1").length >= 2, 30_000);
      await until("settled", () => source.status().settled.ack >= 4, 30_000);
      assert.deepEqual(await jobs.listDead(FN), []);
    }, 120_000);
  });
}
