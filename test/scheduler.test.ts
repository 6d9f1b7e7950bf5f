// The scheduler on a fake clock over a real SQLite queue: cron with a time zone, rate, the catchUp
// policies after downtime, a restart (a new scheduler over the same file) and two schedulers racing —
// each slot fires at most once. No test waits for the wall clock.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { CatalogEntry, FunctionCatalog } from "../src/events/catalog";
import { HTTP, type CloudEvent } from "cloudevents";
import { createScheduler, triggerId } from "../src/events/scheduler";
import { openSqliteQueue } from "../src/events/sqlite/sqlite-queue";
import type { JobQueue } from "../src/events/queue";
import { parseFunctionConfig } from "../src/shared/function-config";
import { createSilentLogger } from "../src/shared/logger";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function freshFile(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "stratus-sched-"));
  dirs.push(d);
  return join(d, "q.db");
}

const MIN = 60_000;
const T0 = Date.UTC(2026, 2, 1, 12, 0, 0); // a Sunday, 12:00 UTC = 13:00 in Berlin (CET)

function catalogOf(triggers: unknown[], activatedAt = T0): { catalog: FunctionCatalog; entry: CatalogEntry } {
  const entry: CatalogEntry = { name: "job", version: "v1", config: parseFunctionConfig("job", { triggers }), activatedAt };
  return { entry, catalog: { get: async (n) => (n === "job" ? entry : null), list: async () => [entry], exists: async (n) => n === "job" } };
}

function clock(start: number) {
  let t = start;
  return { now: () => t, set: (x: number) => void (t = x), advance: (ms: number) => void (t += ms) };
}

async function slotsOf(q: JobQueue): Promise<string[]> {
  // Every job the scheduler enqueued, as its slot time (from the CloudEvents id).
  const c = await q.counts("job");
  const out: string[] = [];
  for (let i = 0; i < c.queued; i++) {
    const [l] = await q.lease("job", 1, 60_000);
    assert.ok(l);
    assert.equal(l.job.request.headers["ce-type"], "io.stratus.schedule.fired");
    out.push(l.job.request.headers["ce-time"] as string);
    await q.complete(l, { status: 200, contentType: null, bodyBase64: "", startedAt: null });
  }
  return out.sort();
}

test("cron with a time zone: slots follow local time; each tick fires only what is new", async () => {
  const c = clock(T0);
  const q = openSqliteQueue(await freshFile(), { now: c.now });
  const { catalog } = catalogOf([{ schedule: "30 13 * * *", timezone: "Europe/Berlin" }]);
  const s = createScheduler({ queue: q, catalog, logger: createSilentLogger(), now: c.now });
  assert.equal(await s.tick(), 0, "13:00 Berlin: nothing due yet");
  c.advance(30 * MIN);
  assert.equal(await s.tick(), 1, "13:30 Berlin = 12:30 UTC");
  assert.equal(await s.tick(), 0, "the same slot never twice");
  const first = await slotsOf(q);
  c.advance(24 * 60 * MIN);
  assert.equal(await s.tick(), 1);
  const second = await slotsOf(q);
  // 29 March: Berlin switches to CEST, so 13:30 local is 11:30 UTC.
  c.set(Date.UTC(2026, 2, 29, 11, 30, 0));
  assert.equal(await s.tick(), 1, "catchUp latest: only the newest of the missed days");
  assert.deepEqual([...first, ...second, ...(await slotsOf(q))], ["2026-03-01T12:30:00.000Z", "2026-03-02T12:30:00.000Z", "2026-03-29T11:30:00.000Z"]);
  await q.close();
});

test("catchUp after downtime: all fires every missed slot, latest only the newest, none skips them", async () => {
  const file = await freshFile();
  const c = clock(T0);
  const q = openSqliteQueue(file, { now: c.now });
  const { catalog } = catalogOf([{ rate: "5 minutes", catchUp: "all" }, { rate: "5 minutes" }, { rate: "5 minutes", catchUp: "none" }]);
  const s = createScheduler({ queue: q, catalog, logger: createSilentLogger(), now: c.now, graceMs: 30_000 });
  c.advance(5 * MIN + 1000);
  assert.equal(await s.tick(), 3, "a normal tick: every policy fires the slot just due");
  c.advance(32 * MIN); // down for 32 min: slots 10…35 missed, the newest (35) already 2 min old
  assert.equal(await s.tick(), 6 + 1 + 0);
  c.advance(3 * MIN);
  assert.equal(await s.tick(), 3, "after catching up, all three fire on time again (slot 40, 1 s late)");
  assert.equal((await q.counts("job")).queued, 3 + 7 + 3);
  await q.close();
});

test("a restart (a new scheduler over the same store) and two racing schedulers fire each slot once", async () => {
  const file = await freshFile();
  const c = clock(T0);
  const trigger = { rate: "1 minute", catchUp: "all" };
  const { catalog } = catalogOf([trigger]);
  const q1 = openSqliteQueue(file, { now: c.now });
  const q2 = openSqliteQueue(file, { now: c.now });
  const a = createScheduler({ queue: q1, catalog, logger: createSilentLogger(), now: c.now });
  const b = createScheduler({ queue: q2, catalog, logger: createSilentLogger(), now: c.now });
  const fired: number[] = [];
  for (let i = 0; i < 10; i++) {
    c.advance(MIN);
    fired.push(...(await Promise.all([a.tick(), b.tick()])));
  }
  await a.stop();
  await q1.close();
  // "Restart": a third scheduler on a fresh connection after 5 minutes of downtime.
  c.advance(5 * MIN);
  const q3 = openSqliteQueue(file, { now: c.now });
  const r = createScheduler({ queue: q3, catalog, logger: createSilentLogger(), now: c.now });
  fired.push(await Promise.all([r.tick(), b.tick()]).then(([x, y]) => x + y));
  const total = fired.reduce((x, y) => x + y, 0);
  assert.equal(total, 15, "15 minutes, 15 slots, whoever fired them");
  const slots = await slotsOf(q3);
  assert.equal(slots.length, 15);
  assert.equal(new Set(slots).size, 15);
  for (let i = 1; i < slots.length; i++) assert.equal(Date.parse(slots[i] as string) - Date.parse(slots[i - 1] as string), MIN, "contiguous");
  assert.equal(await q3.lastSlot(triggerId("job", 0, parseFunctionConfig("job", { triggers: [trigger] }).triggers[0]!)), T0 + 15 * MIN);
  const view = await r.describe(catalogOf([trigger]).entry);
  assert.equal(view[0]?.kind, "rate");
  assert.equal(view[0]?.nextSlot, T0 + 16 * MIN);
  await q2.close();
  await q3.close();
});

test("a slot is a CloudEvents 1.0 event in binary mode; a retried slot keeps its id", async () => {
  const c = clock(T0);
  const q = openSqliteQueue(await freshFile(), { now: c.now });
  const trigger = { schedule: "*/5 * * * *", timezone: "Europe/Berlin" };
  const { catalog } = catalogOf([{ rate: "1 hour" }, trigger]);
  const s = createScheduler({ queue: q, catalog, logger: createSilentLogger(), now: c.now });
  c.advance(5 * MIN);
  assert.equal(await s.tick(), 1, "only the cron trigger (index 1) is due");
  const [l] = await q.lease("job", 1, 60_000);
  assert.ok(l);
  const id = triggerId("job", 1, parseFunctionConfig("job", { triggers: [trigger] }).triggers[0]!);
  const slot = new Date(T0 + 5 * MIN).toISOString();
  const r = l.job.request;
  assert.equal(r.method, "POST");
  assert.equal(r.path, "/");
  assert.deepEqual(r.headers, {
    "content-type": "application/json", "ce-specversion": "1.0", "ce-id": `${id}@${slot}`, "ce-source": "stratus://functions/job/triggers/1",
    "ce-type": "io.stratus.schedule.fired", "ce-time": slot, "ce-subject": id,
  });
  assert.deepEqual(l.job.origin, { kind: "schedule", trigger: id, eventId: `${id}@${slot}` });
  // What the cloudevents SDK reads back from that request, validated against the 1.0 schema.
  const parsed = HTTP.toEvent({ headers: r.headers, body: Buffer.from(r.bodyBase64, "base64").toString() });
  assert.ok(!Array.isArray(parsed));
  const event = parsed as CloudEvent<unknown>;
  assert.equal(event.validate(), true);
  assert.deepEqual(event.data, { trigger: { id, index: 1, schedule: "*/5 * * * *", timezone: "Europe/Berlin", catchUp: "latest" }, slot });
  // The stored request is what every attempt sends: a retry has the same ce-id.
  await q.fail(l, { status: 500, errorCode: "FUNCTION_ERROR", errorMessage: "x", startedAt: null });
  c.advance(MIN);
  const [again] = await q.lease("job", 1, 60_000);
  assert.equal(again?.attempt, 2);
  assert.deepEqual(again?.job.request, r);
  await q.close();
});

test("triggers of other kinds (queue, postgres, storage…): never fired by the scheduler, described by their redacted config", async () => {
  const c = clock(T0);
  const q = openSqliteQueue(await freshFile(), { now: c.now });
  const { entry } = catalogOf([{ rate: "1 minute" }]);
  // This branch's TriggerSchema knows only schedule and rate; the event sources add kinds to it.
  const queueTrigger = { queue: { type: "nats", url: "nats://app:pw-123@127.0.0.1:4222", subject: "bids" } };
  const mixed: CatalogEntry = { ...entry, config: { ...entry.config, triggers: [queueTrigger as never, ...entry.config.triggers] } };
  const warned: unknown[] = [];
  const logger = { ...createSilentLogger(), warn: (...a: unknown[]) => void warned.push(a) } as unknown as ReturnType<typeof createSilentLogger>;
  const s = createScheduler({ queue: q, catalog: { get: async () => mixed, list: async () => [mixed], exists: async () => true }, logger, now: c.now });
  c.advance(MIN);
  assert.equal(await s.tick(), 1, "the rate trigger (index 1) fired; the queue trigger is not the scheduler's");
  assert.deepEqual(warned, []);
  const view = await s.describe(mixed);
  assert.deepEqual(view.map((v) => [v.kind, v.lastSlot, v.nextSlot]), [["queue", null, null], ["rate", T0 + MIN, T0 + 2 * MIN]]);
  assert.deepEqual(view[0]?.config, { queue: { type: "nats", url: "nats://app:<redacted>@127.0.0.1:4222", subject: "bids" } });
  assert.equal(view[0]?.catchUp, undefined);
  assert.ok(!JSON.stringify(view).includes("pw-123"));
  await q.close();
});

test("a trigger never seen starts after the function's activation, not at the epoch", async () => {
  const c = clock(T0 + 10 * MIN + 5000);
  const q = openSqliteQueue(await freshFile(), { now: c.now });
  const { catalog } = catalogOf([{ rate: "1 minute", catchUp: "all" }], T0 + 7 * MIN + 1);
  const s = createScheduler({ queue: q, catalog, logger: createSilentLogger(), now: c.now });
  assert.equal(await s.tick(), 3, "slots 8, 9 and 10 min");
  await q.close();
});

test("the examples' event configs validate", async () => {
  const { createRequire } = await import("node:module");
  const req = createRequire(import.meta.url);
  const scheduled = req("../examples/scheduled-job/index.js") as Record<string, { config: unknown }>;
  const consumer = req("../examples/async-consumer/index.js") as Record<string, { config: unknown }>;
  assert.equal(parseFunctionConfig("nightly", scheduled.nightly?.config).triggers.length, 2);
  assert.equal(parseFunctionConfig("resize", consumer.resize?.config).asyncConcurrency, 4);
});
