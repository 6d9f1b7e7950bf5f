// The trigger-source runner over a real SQLite store, a real Redis server and a loopback HTTP server
// standing in for a node's gateway: a queue trigger runs only once its URL secret is set and a node is
// connected, keeps running
// across a deploy that changes nothing it uses, restarts on one that does, and stops (closing its broker
// connections) when the function is deleted.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Redis } from "ioredis";
import { createFunctionCatalog } from "../src/events/catalog";
import { openSqliteQueue } from "../src/events/sqlite/sqlite-queue";
import { createSourceRunner, type SourceRunner } from "../src/events/sources/runner";
import type { JobQueue } from "../src/events/queue";
import { parseFunctionConfig, type FunctionConfigInput } from "../src/shared/function-config";
import { createSilentLogger } from "../src/shared/logger";
import { openSqliteStore } from "../src/store/sqlite/sqlite-store";
import type { Store } from "../src/store/store";
import { startRedis, type BrokerServer } from "./helpers/brokers";

let redis: BrokerServer;
let dir: string;
let store: Store;
let queue: JobQueue;
let gateway: Server;
let gatewayUrl: string;
let nodeConnected = true;
const seen: Array<{ path: string; ceId: string }> = [];
let runner: SourceRunner;

before(async () => {
  redis = await startRedis();
  dir = mkdtempSync(join(tmpdir(), "stratus-runner-"));
  store = openSqliteStore({ file: join(dir, "stratus.db"), masterKey: randomBytes(32) });
  queue = openSqliteQueue(join(dir, "stratus.db"));
  gateway = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      seen.push({ path: req.url ?? "", ceId: String(req.headers["ce-id"]) });
      res.writeHead(req.headers["x-stratus-dispatch-token"] === "tok" ? 200 : 401).end();
    });
  });
  await new Promise<void>((r) => gateway.listen(0, "127.0.0.1", r));
  gatewayUrl = `http://127.0.0.1:${(gateway.address() as AddressInfo).port}`;
  runner = createSourceRunner({
    queue, catalog: createFunctionCatalog(store, createSilentLogger(), 0), secrets: (fn) => store.getSecretValues(fn), logger: createSilentLogger(),
    gatewayUrl: () => (nodeConnected ? gatewayUrl : null), dispatchToken: "tok", leaseMarginMs: 2000, syncIntervalMs: 600_000,
  });
});
after(async () => {
  await runner?.stop(2000);
  await queue?.close();
  await store?.close();
  await new Promise((r) => gateway?.close(r));
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

let v = 0;
async function deploy(name: string, config: FunctionConfigInput): Promise<void> {
  const version = `v${++v}`;
  await store.addVersion({
    functionName: name, version, digest: `sha256-${String(v).padStart(64, "0")}`, entry: "index.js", exportName: name,
    config: parseFunctionConfig(name, config), sourceDigest: `sha256-${"a".repeat(64)}`,
  });
  await store.activateVersions([{ functionName: name, version }]);
}
const view = async (name: string) => {
  const entry = await createFunctionCatalog(store, createSilentLogger(), 0).get(name);
  assert.ok(entry, `${name} is active`);
  const [t, ...rest] = runner.describe(entry);
  assert.equal(rest.length, 0);
  assert.ok(t);
  return t;
};
async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`timed out waiting for ${what}`);
}
async function publish(stream: string, body: string): Promise<string> {
  const r = new Redis(redis.url);
  try {
    return (await r.xadd(stream, "*", "data", body)) as string;
  } finally {
    r.disconnect();
  }
}

test("runner: waits for the URL secret, survives an unrelated deploy, restarts on a change, stops on delete", { timeout: 120_000 }, async () => {
  const trigger = { queue: { type: "redis" as const, urlSecret: "REDIS_URL", stream: "runner-orders" } };
  const baseline = redis.connections();
  await deploy("orders", { triggers: [trigger] });
  await runner.sync();
  let t = await view("orders");
  assert.equal(t.status, null);
  assert.match(t.problem ?? "", /secret REDIS_URL is not set/);
  assert.equal(t.from, "redis://runner-orders");

  // A secret that is not a URL for this type is refused by name, without echoing it.
  await store.setSecret("orders", "REDIS_URL", "amqp://user:hunter2@127.0.0.1");
  await runner.sync();
  t = await view("orders");
  assert.match(t.problem ?? "", /must start with redis:\/\/ or rediss:\/\//);
  assert.doesNotMatch(t.problem ?? "", /hunter2/);

  await store.setSecret("orders", "REDIS_URL", redis.url);
  // No node connected yet (the platform is starting): the source waits for one, spending no attempt.
  nodeConnected = false;
  await runner.sync();
  t = await view("orders");
  assert.equal(t.problem, null);
  assert.equal(t.status, null, "not started without a node");
  nodeConnected = true;
  await runner.sync();
  t = await view("orders");
  assert.notEqual(t.status, null);
  const id1 = await publish("runner-orders", "one");
  await until("the first message dispatched to the function", () => seen.some((s) => s.ceId === id1));
  assert.equal(seen.find((s) => s.ceId === id1)?.path, "/fn/orders/");
  await until("acked", async () => (await view("orders")).status?.settled.ack === 1);

  // A deploy that changes nothing the source uses (memory) keeps it: its counters carry on.
  await deploy("orders", { memory: 512, triggers: [trigger] });
  await runner.sync();
  assert.equal((await view("orders")).status?.settled.ack, 1, "the same source");

  // A change it uses (maxAttempts) restarts it: fresh counters, and the acked message is not redelivered.
  await deploy("orders", { memory: 512, maxAttempts: 5, triggers: [trigger] });
  await runner.sync();
  assert.equal((await view("orders")).status?.settled.ack, 0, "a new source");
  const id2 = await publish("runner-orders", "two");
  await until("the second message acked", async () => (await view("orders")).status?.settled.ack === 1);
  assert.deepEqual(seen.map((s) => s.ceId), [id1, id2], "each message once");
  assert.ok(redis.connections() > baseline, "connected while running");

  await store.deleteFunction("orders");
  await runner.sync();
  await until("its broker connections closed", () => redis.connections() === baseline);
});

test("the queue-consumer example's triggers validate", async () => {
  const { createRequire } = await import("node:module");
  const example = createRequire(import.meta.url)("../examples/queue-consumer/index.js") as Record<string, { config: unknown }>;
  assert.deepEqual(parseFunctionConfig("orders", example.orders?.config).triggers.map((t) => t.queue?.type), ["nats"]);
  assert.deepEqual(parseFunctionConfig("clicks", example.clicks?.config).triggers.map((t) => t.queue?.type), ["redis"]);
});
