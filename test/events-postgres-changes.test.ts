// The PostgreSQL table-change trigger source (src/events/sources/postgres-changes.ts) against a real
// private PostgreSQL 15 with wal_level=logical and Debian's wal2json: insert/update/delete delivered in
// order with their rows; the slot moves only after delivery; a trigger stopped while rows change loses
// nothing when it starts again; an unsettled delivery is redelivered after a restart; retry redelivers
// the same change, dead moves past it; missing privileges give a clear POSTGRES_TRIGGER_UNUSABLE; the
// slot is dropped on request. Needs `postgresql` and `postgresql-15-wal2json` (scripts/test.sh installs them).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { createSilentLogger } from "../src/shared/logger";
import { createPostgresChangesSource, dropPostgresSlot, postgresSourceConfig, preparePostgresSlot, type TableChangeData } from "../src/events/sources/postgres-changes";
import type { DeliveryOutcome, EventSource, SourceContext, SourceMessage } from "../src/events/sources/source";
import { startPostgres, type PostgresServer } from "./helpers/postgres-server";

let server: PostgresServer;
let url: string;
before(async () => {
  server = await startPostgres({ logicalReplication: true });
  url = await server.createDatabase("shop");
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query("CREATE TABLE bids (id int PRIMARY KEY, amount int NOT NULL, bidder text)");
  await c.query("ALTER TABLE bids REPLICA IDENTITY FULL");
  await c.query("CREATE TABLE other (id int PRIMARY KEY)");
  await c.end();
});
after(async () => {
  await server?.stop();
});

async function sql(text: string, params: unknown[] = []): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(text, params);
  } finally {
    await c.end();
  }
}

function contextOf(u: string, slot: string): SourceContext {
  return { functionName: "onBid", triggerId: `onBid#postgres:${slot}`, url: u, consumerName: slot, concurrency: 1, batchSize: 10, leaseMs: 60_000, maxAttempts: 3, logger: createSilentLogger() };
}

/** A running source and what it delivered; `decide` picks each outcome (default ack). */
function run(slot: string, decide: (m: SourceMessage) => DeliveryOutcome | Promise<DeliveryOutcome> = () => ({ kind: "ack" }), u = url, table = "public.bids") {
  const seen: SourceMessage[] = [];
  const src: EventSource = createPostgresChangesSource(postgresSourceConfig("onBid", { connectionSecret: "DB_URL", table, slot }), contextOf(u, slot));
  src.start(async (m) => {
    seen.push(m);
    return decide(m);
  });
  return { src, seen, data: () => seen.map((m) => JSON.parse(m.body.toString()) as TableChangeData) };
}

/** Waits (bounded) until `cond` holds. */
async function until(cond: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
async function slotRow(slot: string): Promise<{ confirmed: string | null; active: boolean } | null> {
  const r = await server.query<{ confirmed: string | null; active: boolean }>("SELECT confirmed_flush_lsn::text AS confirmed, active FROM pg_replication_slots WHERE slot_name = $1", [slot]);
  return r.rows[0] ?? null;
}

describe("postgres table changes", () => {
  test("insert, update and delete arrive in order as CloudEvent fields with the rows; other tables are not delivered; the slot moves after delivery", async () => {
    const s = run("t_basic");
    await until(() => s.src.status().connected, "the stream");
    await sql("INSERT INTO bids VALUES (1, 100, 'ann')");
    await sql("INSERT INTO other VALUES (1)");
    await sql("UPDATE bids SET amount = 120 WHERE id = 1");
    await sql("DELETE FROM bids WHERE id = 1");
    await until(() => s.seen.length >= 3, "three changes");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(s.seen.length, 3, JSON.stringify(s.data()));
    assert.deepEqual(s.seen.map((m) => m.type), ["io.stratus.postgres.insert", "io.stratus.postgres.update", "io.stratus.postgres.delete"]);
    assert.deepEqual(s.seen.map((m) => m.subject), ["public.bids", "public.bids", "public.bids"]);
    assert.equal(s.seen[0]?.source, `postgres://127.0.0.1:${server.port}/shop/public.bids`);
    assert.equal(s.seen[0]?.contentType, "application/json");
    assert.equal(s.seen[0]?.attempt, 1);
    assert.ok(typeof s.seen[0]?.time === "number" && Math.abs((s.seen[0]?.time ?? 0) - Date.now()) < 120_000, `time ${s.seen[0]?.time}`);
    assert.match(s.seen[0]?.id ?? "", /^[0-9A-F]+\/[0-9A-F]+\/0$/);
    assert.equal(new Set(s.seen.map((m) => m.id)).size, 3);
    const [ins, upd, del] = s.data();
    assert.deepEqual(ins, { op: "insert", schema: "public", table: "bids", new: { id: 1, amount: 100, bidder: "ann" }, old: null, lsn: ins?.lsn, committedAt: ins?.committedAt });
    assert.deepEqual([upd?.op, upd?.new, upd?.old], ["update", { id: 1, amount: 120, bidder: "ann" }, { id: 1, amount: 100, bidder: "ann" }]);
    assert.deepEqual([del?.op, del?.new, del?.old], ["delete", null, { id: 1, amount: 120, bidder: "ann" }]);
    await until(() => s.src.status().settled.ack === 3, "three acks");
    const lastLsn = del?.lsn as string;
    // The slot's confirmed position passed the last delivered transaction.
    const lsnValue = (l: string) => l.split("/").reduce((a, p) => a * 2 ** 32 + parseInt(p, 16), 0);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const row = await slotRow("t_basic");
      if (row?.confirmed !== null && row !== null && lsnValue(row.confirmed as string) > lsnValue(lastLsn)) break;
      if (Date.now() > deadline) assert.fail(`the slot did not move past ${lastLsn}: ${JSON.stringify(row)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await s.src.stop(5_000);
    assert.equal(s.src.status().connected, false);
  });

  test("a trigger stopped while rows change loses nothing: the slot holds the changes until it starts again", async () => {
    const first = run("t_down");
    await until(() => first.src.status().connected, "the stream");
    await sql("INSERT INTO bids VALUES (10, 1, 'a')");
    await until(() => first.seen.length === 1, "the first change");
    await until(() => first.src.status().settled.ack === 1, "its ack");
    await first.src.stop(5_000);
    assert.equal((await slotRow("t_down"))?.active, false);
    // While no one streams: 25 changes in 5 transactions.
    for (let t = 0; t < 5; t++) {
      const values = Array.from({ length: 5 }, (_, i) => `(${100 + t * 5 + i}, ${t}, 'down')`).join(",");
      await sql(`INSERT INTO bids VALUES ${values}`);
    }
    await sql("UPDATE bids SET amount = amount + 1 WHERE bidder = 'down' AND id < 105");
    await sql("DELETE FROM bids WHERE id = 10");
    const second = run("t_down");
    await until(() => second.seen.length >= 31, "the 31 changes made while down");
    await new Promise((r) => setTimeout(r, 300));
    const d = second.data();
    assert.equal(d.length, 31, "the first change is not redelivered (it was acknowledged), and nothing is missing");
    assert.deepEqual(d.filter((x) => x.op === "insert").map((x) => x.new?.id), Array.from({ length: 25 }, (_, i) => 100 + i));
    assert.deepEqual(d.filter((x) => x.op === "update").map((x) => x.new?.id), [100, 101, 102, 103, 104]);
    assert.deepEqual(d.filter((x) => x.op === "delete").map((x) => x.old?.id), [10]);
    await second.src.stop(5_000);
  });

  test("a delivery that did not finish before stop is delivered again after a restart (same id)", async () => {
    let release: (() => void) | null = null;
    const first = run("t_unsettled", () => new Promise<DeliveryOutcome>((res) => (release = () => res({ kind: "ack" }))));
    await until(() => first.src.status().connected, "the stream");
    await sql("INSERT INTO bids VALUES (200, 5, 'slow')");
    await until(() => first.seen.length === 1, "the delivery");
    await first.src.stop(200); // the function is still running at the deadline
    (release as (() => void) | null)?.();
    const second = run("t_unsettled");
    await until(() => second.seen.length === 1, "the redelivery");
    assert.equal(second.seen[0]?.id, first.seen[0]?.id);
    assert.equal(second.data()[0]?.new?.id, 200);
    await until(() => second.src.status().settled.ack === 1, "the ack");
    await second.src.stop(5_000);
    const third = run("t_unsettled");
    await until(() => third.src.status().connected, "the stream");
    await sql("INSERT INTO bids VALUES (201, 5, 'next')");
    await until(() => third.seen.length >= 1, "the next change");
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(third.data().map((x) => x.new?.id), [201], "the acknowledged change is not delivered a third time");
    await third.src.stop(5_000);
  });

  test("retry delivers the same change again (attempt counts up); dead moves past it, in order", async () => {
    const s = run("t_retry", (m) => {
      const id = (JSON.parse(m.body.toString()) as TableChangeData).new?.id;
      if (id === 300) return m.attempt < 3 ? { kind: "retry", delayMs: 20 } : { kind: "dead" };
      return { kind: "ack" };
    });
    await until(() => s.src.status().connected, "the stream");
    await sql("INSERT INTO bids VALUES (300, 1, 'bad')");
    await sql("INSERT INTO bids VALUES (301, 1, 'good')");
    await until(() => s.seen.length >= 4, "three attempts and the next change");
    assert.deepEqual(s.seen.map((m) => [(JSON.parse(m.body.toString()) as TableChangeData).new?.id, m.attempt]), [[300, 1], [300, 2], [300, 3], [301, 1]]);
    assert.equal(new Set(s.seen.slice(0, 3).map((m) => m.id)).size, 1);
    await until(() => s.src.status().settled.ack === 1, "the ack");
    assert.deepEqual(s.src.status().settled, { ack: 1, retry: 2, dead: 1 });
    await s.src.stop(5_000);
    // Dead and acknowledged changes are settled: a restart does not deliver them again.
    const again = run("t_retry");
    await until(() => again.src.status().connected, "the stream");
    await sql("INSERT INTO bids VALUES (302, 1, 'later')");
    await until(() => again.seen.length >= 1, "the later change");
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(again.data().map((x) => x.new?.id), [302]);
    await again.src.stop(5_000);
  });

  test("the database restarting: the source reconnects and delivers what was committed meanwhile; a redelivery keeps its id", async () => {
    const s = run("t_restart");
    await until(() => s.src.status().connected, "the stream");
    await sql("INSERT INTO bids VALUES (400, 1, 'before')");
    await until(() => s.src.status().settled.ack === 1, "the first ack");
    await server.restart();
    await sql("INSERT INTO bids VALUES (401, 1, 'after')");
    await until(() => s.seen.length >= 2, "the change after the restart", 60_000);
    await new Promise((r) => setTimeout(r, 300));
    // PostgreSQL 15 does not write a slot's confirmed position at shutdown unless something else made the
    // slot dirty (fixed in 17), so the last acknowledged transaction may come again: at-least-once, with
    // the same CloudEvent id.
    const ids = new Map<number, string>();
    for (const m of s.seen) {
      const row = (JSON.parse(m.body.toString()) as TableChangeData).new?.id as number;
      if (ids.has(row)) assert.equal(m.id, ids.get(row), "a redelivery has the first delivery's id");
      ids.set(row, m.id);
    }
    assert.deepEqual([...ids.keys()], [400, 401]);
    assert.ok(s.seen.length <= 3, JSON.stringify(s.data()));
    await s.src.stop(5_000);
  });

  test("missing privileges: a clear POSTGRES_TRIGGER_UNUSABLE saying what to grant; granting it is enough", async () => {
    await server.query("CREATE ROLE plain LOGIN");
    await sql("GRANT SELECT ON bids TO plain");
    const plainUrl = url.replace(/\/\/[^@]+@/, "//plain@");
    await assert.rejects(preparePostgresSlot(plainUrl, postgresSourceConfig("onBid", { connectionSecret: "DB_URL", table: "bids", slot: "t_priv" })), (err: Error & { code?: string }) => {
      assert.equal(err.code, "POSTGRES_TRIGGER_UNUSABLE");
      assert.match(err.message, /role plain may not use replication: ALTER ROLE plain REPLICATION/);
      return true;
    });
    const s = run("t_priv", undefined, plainUrl);
    await until(() => /POSTGRES_TRIGGER_UNUSABLE: .*REPLICATION/.test(s.src.status().lastError ?? ""), "the error in status()");
    assert.equal(s.src.status().connected, false);
    await server.query("ALTER ROLE plain REPLICATION");
    await until(() => s.src.status().connected, "the stream after the grant");
    await s.src.stop(5_000);

    await server.query("CREATE ROLE repl_only LOGIN REPLICATION");
    const replUrl = url.replace(/\/\/[^@]+@/, "//repl_only@");
    await assert.rejects(preparePostgresSlot(replUrl, postgresSourceConfig("onBid", { connectionSecret: "DB_URL", table: "bids", slot: "t_priv2" })), /no SELECT on public\.bids: GRANT SELECT ON public\.bids TO repl_only/);
    await assert.rejects(preparePostgresSlot(url, postgresSourceConfig("onBid", { connectionSecret: "DB_URL", table: "public.nope", slot: "t_priv3" })), /table public\.nope does not exist/);
    assert.equal(await slotRow("t_priv2"), null, "no slot is created when the checks fail");
  });

  test("wal_level replica: the error names wal_level = logical", async () => {
    const plain = await startPostgres();
    try {
      const u = await plain.createDatabase("x");
      await new pg.Client({ connectionString: u }).connect().then(async (c) => {
        await c.query("CREATE TABLE bids (id int)");
        await c.end();
      });
      await assert.rejects(preparePostgresSlot(u, postgresSourceConfig("onBid", { connectionSecret: "DB_URL", table: "bids" })), /wal_level is replica: logical replication needs wal_level = logical/);
    } finally {
      await plain.stop();
    }
  });

  test("dropPostgresSlot drops the slot, also while a source streams from it", async () => {
    const s = run("t_drop");
    await until(() => s.src.status().connected, "the stream");
    assert.notEqual(await slotRow("t_drop"), null);
    assert.equal(await dropPostgresSlot(url, "t_drop"), true);
    await s.src.stop(2_000);
    // The source may have re-created the slot before it stopped; drop again and check it is gone.
    await dropPostgresSlot(url, "t_drop");
    assert.equal(await slotRow("t_drop"), null);
    assert.equal(await dropPostgresSlot(url, "t_drop"), false);
  });
});
