// The store conformance suite against a real PostgreSQL server that this test starts itself
// (test/helpers/postgres-server.ts: Debian's postgresql, initdb + pg_ctl on a private port and socket
// dir, as an unprivileged user), one fresh database per case; plus what is PostgreSQL-specific:
// versioned migrations, daily partitions of telemetry and retention by dropping them, multi-row
// writes of large batches, secrets encrypted at rest.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import type { InvocationRecord, LogEntry } from "../src/shared/invocation";
import { runStoreConformance } from "../src/store/conformance";
import { openPostgresStore, partitionOf } from "../src/store/postgres/postgres-store";
import { MIGRATIONS } from "../src/store/postgres/migrations";
import { openStore } from "../src/store/open-store";
import type { Store } from "../src/store/store";
import { startPostgres, type PostgresServer } from "./helpers/postgres-server";

let server: PostgresServer;
before(async () => {
  server = await startPostgres();
});
after(async () => {
  await server?.stop();
});

let n = 0;
/** A fresh database and a store over it; `drop` closes nothing, it removes the database. */
async function freshDatabase(): Promise<{ url: string; name: string }> {
  const name = `conf_${process.pid}_${++n}`;
  return { url: await server.createDatabase(name), name };
}

runStoreConformance("postgres", async () => {
  const { url, name } = await freshDatabase();
  const masterKey = randomBytes(32);
  let store = await openPostgresStore({ connectionString: url, masterKey });
  return {
    store,
    reopen: async () => {
      await store.close();
      store = await openPostgresStore({ connectionString: url, masterKey });
      return store;
    },
    cleanup: () => server.dropDatabase(name),
  };
});

const DAY = 86_400_000;
const line = (ts: number, message: string): LogEntry =>
  ({ ts, functionName: "fn", level: "info", source: "function", stream: "stdout", requestId: "r", instanceId: "i", message });
const inv = (requestId: string, ts: number): InvocationRecord => ({
  requestId, functionName: "fn", version: "v1", instanceId: "i1", nodeId: "n1", coldStart: false, queueMs: 0, startMs: 0, initMs: null,
  handlerMs: 5, totalMs: 6, status: 200, errorCode: null, bytesIn: 0, bytesOut: 2, peakMemoryBytes: null, traceparent: "00-x", ts,
});

describe("postgres specifics", () => {
  let url: string;
  let dbName: string;
  let store: Store;
  let raw: pg.Client;
  before(async () => {
    ({ url, name: dbName } = await freshDatabase());
    store = await openPostgresStore({ connectionString: url, masterKey: randomBytes(32) });
    raw = new pg.Client({ connectionString: url });
    await raw.connect();
  });
  after(async () => {
    await raw?.end();
    await store?.close();
    await server.dropDatabase(dbName);
  });
  const partitions = async (table: string) =>
    (await raw.query<{ name: string }>("SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass ORDER BY 1", [table])).rows.map((r) => r.name);

  test("migrations are recorded, and rerun at open without effect", async () => {
    const rows = (await raw.query<{ version: number }>("SELECT version FROM schema_migrations ORDER BY version")).rows.map((r) => r.version);
    assert.deepEqual(rows, MIGRATIONS.map((_, i) => i + 1));
    const again = await openPostgresStore({ connectionString: url, masterKey: randomBytes(32) });
    await again.close();
    await again.close(); // idempotent
    assert.equal((await raw.query("SELECT * FROM schema_migrations")).rowCount, MIGRATIONS.length);
  });

  test("a database newer than the code refuses to open", async () => {
    const { url: u, name } = await freshDatabase();
    try {
      const s = await openPostgresStore({ connectionString: u, masterKey: randomBytes(32) });
      await s.close();
      const c = new pg.Client({ connectionString: u });
      await c.connect();
      await c.query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)", [MIGRATIONS.length + 1]);
      await c.end();
      await assert.rejects(openPostgresStore({ connectionString: u, masterKey: randomBytes(32) }), { code: "INTERNAL", message: /newer than this Stratus/ });
    } finally {
      await server.dropDatabase(name);
    }
  });

  test("today's and the next days' partitions exist from the start", async () => {
    for (const table of ["logs", "invocations"] as const) {
      const names = await partitions(table);
      for (let d = 0; d <= 3; d++) assert.ok(names.includes(partitionOf(table, Date.now() + d * DAY).name), `${table} day +${d} in ${names.join(",")}`);
    }
  });

  test("telemetry lands in daily partitions; retention drops whole old days and trims the cut-off day", async () => {
    const day0 = Date.UTC(2020, 0, 10);
    // Three days of rows, 2 per day, written in one batch (partitions created on the way).
    const logs = [0, 1, 2].flatMap((d) => [line(day0 + d * DAY + 1000, `d${d}a`), line(day0 + d * DAY + 50_000, `d${d}b`)]);
    const invs = [0, 1, 2].flatMap((d) => [inv(`r${d}a`, day0 + d * DAY + 1000), inv(`r${d}b`, day0 + d * DAY + 50_000)]);
    await store.writeTelemetry({ logs, invocations: invs, errors: [] });
    for (const d of [0, 1, 2]) {
      const p = partitionOf("logs", day0 + d * DAY).name;
      assert.ok((await partitions("logs")).includes(p), p);
      assert.equal((await raw.query(`SELECT * FROM ${p}`)).rowCount, 2, `${p} holds its day's rows`);
    }
    // Cut-off inside day 1: day 0's partition goes whole, day 1 loses its first row.
    const r = await store.purgeTelemetry({ olderThan: day0 + DAY + 10_000 });
    assert.deepEqual(r, { logs: 3, invocations: 3, errorGroups: 0 });
    const names = await partitions("logs");
    assert.ok(!names.includes(partitionOf("logs", day0).name), "day 0's partition was dropped");
    assert.ok(names.includes(partitionOf("logs", day0 + DAY).name), "day 1's partition stays");
    assert.ok(!(await partitions("invocations")).includes(partitionOf("invocations", day0).name));
    assert.deepEqual((await store.queryLogs("fn")).map((l) => l.message), ["d1b", "d2a", "d2b"]);
    assert.deepEqual((await store.queryInvocations("fn")).map((x) => x.requestId), ["r2b", "r2a", "r1b"]);
    // Rows: keep the newest 2 — day 1's partition (all older) is dropped whole.
    assert.deepEqual(await store.purgeTelemetry({ olderThan: 0, maxLogRows: 2, maxInvocationRows: 2 }), { logs: 1, invocations: 1, errorGroups: 0 });
    assert.ok(!(await partitions("logs")).includes(partitionOf("logs", day0 + DAY).name));
    assert.deepEqual((await store.queryLogs("fn")).map((l) => l.message), ["d2a", "d2b"]);
    // A write to a day whose partition was dropped re-creates it.
    await store.writeTelemetry({ logs: [line(day0 + 5, "back")], invocations: [], errors: [] });
    assert.ok((await partitions("logs")).includes(partitionOf("logs", day0).name), "day 0's partition is back");
    assert.deepEqual((await store.queryLogs("fn")).map((l) => l.message), ["d2a", "d2b", "back"]);
    await store.purgeTelemetry({ olderThan: day0 + 3 * DAY });
  });

  test("a batch larger than one INSERT (multi-row chunks) is written whole and in order", async () => {
    const t0 = Date.now();
    const count = 2500;
    const logs = Array.from({ length: count }, (_, i) => line(t0 + i, `m${i}`));
    const invs = Array.from({ length: count }, (_, i) => inv(`b${i}`, t0 + i));
    const errors = Array.from({ length: 10 }, (_, i) => ({ functionName: "fn", fingerprint: "same", code: "FUNCTION_ERROR", messageShape: "x", topFrame: null, requestId: `e${i}`, ts: t0 + i }));
    await store.writeTelemetry({ logs, invocations: invs, errors });
    const got = await store.queryLogs("fn", { since: t0, limit: count });
    assert.equal(got.length, count);
    assert.deepEqual(got.map((l) => l.message), logs.map((l) => l.message), "seq follows the batch order");
    assert.equal((await store.queryInvocations("fn", { since: t0, limit: count })).length, count);
    // Ten occurrences of one group in one batch fold into one upsert.
    const [g] = await store.listErrorGroups("fn");
    assert.equal(g?.count, 10);
    assert.equal(g?.sampleRequestId, "e9");
    assert.equal(g?.firstSeen, t0);
  });

  test("secrets are ciphertext in the database", async () => {
    await store.ensureFunction("sec");
    await store.setSecret("sec", "TOKEN", "plain-secret-value-123");
    const { rows } = await raw.query<{ ciphertext: string }>("SELECT ciphertext FROM secrets");
    assert.equal(rows.length, 1);
    assert.ok(rows[0]!.ciphertext.startsWith("v1."));
    assert.ok(!rows[0]!.ciphertext.includes("plain-secret-value-123"));
    const wrong = await openPostgresStore({ connectionString: url, masterKey: randomBytes(32) });
    try {
      await assert.rejects(wrong.getSecretValues("sec"), { code: "INTERNAL" });
      assert.deepEqual(await wrong.listSecretNames("sec"), ["TOKEN"]);
    } finally {
      await wrong.close();
    }
  });

  test("openStore opens PostgreSQL for a postgres:// location", async () => {
    const s = await openStore(url, { masterKey: randomBytes(32) });
    try {
      await s.ensureFunction("viaOpenStore");
      assert.equal((await raw.query("SELECT 1 FROM functions WHERE name = 'viaOpenStore'")).rowCount, 1);
    } finally {
      await s.close();
    }
  });

  test("a server restart: the pool reconnects, later calls work", async () => {
    await store.ensureFunction("beforeRestart");
    await raw.end();
    await server.restart();
    raw = new pg.Client({ connectionString: url });
    await raw.connect();
    // The pool's idle connections died with the server; a call may fail once while it notices.
    let ok = false;
    for (let attempt = 0; attempt < 3 && !ok; attempt++) {
      ok = await store.listFunctions().then((fns) => fns.some((f) => f.name === "beforeRestart"), () => false);
    }
    assert.ok(ok, "the store serves again after the restart");
    await store.ensureFunction("afterRestart");
    assert.equal((await raw.query("SELECT 1 FROM functions WHERE name = 'afterRestart'")).rowCount, 1);
  });

  test("an unreachable server fails the open with the connection error", async () => {
    await assert.rejects(openPostgresStore({ connectionString: `postgres://x@127.0.0.1:1/none`, masterKey: randomBytes(32) }), /ECONNREFUSED/);
    await assert.rejects(openPostgresStore({ connectionString: url, masterKey: randomBytes(8) }), { code: "INTERNAL" });
  });
});
