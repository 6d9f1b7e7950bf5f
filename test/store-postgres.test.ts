// The store conformance suite against a real PostgreSQL server that this test starts itself
// (test/helpers/postgres-server.ts: Debian's postgresql, initdb + pg_ctl on a private port and socket
// dir, as an unprivileged user), one fresh database per case; plus what is PostgreSQL-specific:
// versioned migrations, daily partitions of telemetry and retention by dropping them, multi-row
// writes of large batches, secrets encrypted at rest; and the whole platform (`stratus up --store
// postgres://…`, process driver) keeping its state there.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import type { InvocationRecord, LogEntry } from "../src/shared/invocation";
import { runStoreConformance } from "../src/store/conformance";
import { openPostgresStore, partitionOf } from "../src/store/postgres/postgres-store";
import { MIGRATIONS } from "../src/store/postgres/migrations";
import { runTransaction, withClient } from "../src/store/postgres/pg-tx";
import { openStore } from "../src/store/open-store";
import type { Store } from "../src/store/store";
import { deploy, project, startPlatform } from "./helpers/platform-fixture";
import { startPostgres, type PostgresServer } from "./helpers/postgres-server";
import { bindStratus, killUp, startUpInTempRoot } from "./helpers/stratus-cli";

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
  trigger: null, eventId: null, attempt: null,
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

  test("config revision: a bump through one store is NOTIFYed to another's LISTEN; a dropped LISTEN connection comes back and says so", async () => {
    const other = await openPostgresStore({ connectionString: url, masterKey: randomBytes(32) });
    const heard: Array<number | null> = [];
    const stop = await other.watchConfig((rev) => heard.push(rev));
    try {
      const wait = async (what: string, ok: () => boolean) => {
        const deadline = Date.now() + 5000;
        while (!ok()) {
          if (Date.now() > deadline) throw new Error(`${what}: not within 5 s (heard ${JSON.stringify(heard)})`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      const r1 = await store.bumpConfigRevision();
      await wait("the first notification", () => heard.includes(r1));
      assert.equal(await other.configRevision(), r1);
      // Kill the listener's session: it reconnects and reports null ("resync, something may be lost").
      await raw.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN stratus_config' AND pid <> pg_backend_pid()");
      await wait("the reconnect signal", () => heard.includes(null));
      const r2 = await store.bumpConfigRevision();
      await wait("a notification after the reconnect", () => heard.includes(r2));
    } finally {
      await stop();
      await other.close();
    }
    const before = heard.length;
    await store.bumpConfigRevision();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(heard.length, before, "nothing is heard after stop()");
  });

  test("a database of the previous schema (2) gains the invocation event columns on its partitions; old records read with nulls", async () => {
    const { url: oldUrl, name } = await freshDatabase();
    const c = new pg.Client({ connectionString: oldUrl });
    await c.connect();
    try {
      await c.query("CREATE TABLE schema_migrations (version integer PRIMARY KEY, applied_at bigint NOT NULL)");
      for (const [i, m] of MIGRATIONS.slice(0, 2).entries()) {
        await c.query(m);
        await c.query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)", [i + 1]);
      }
      const ts = Date.UTC(2026, 0, 5, 10);
      const day = partitionOf("invocations", ts);
      await c.query(`CREATE TABLE ${day.name} PARTITION OF invocations FOR VALUES FROM (${day.from}) TO (${day.to})`);
      await c.query(`INSERT INTO invocations (request_id, function_name, version, instance_id, node_id, cold, queue_ms, start_ms, init_ms, handler_ms,
        total_ms, status, error_code, bytes_in, bytes_out, peak_memory_bytes, traceparent, ts) VALUES ('old', 'fn', 'v1', NULL, 'n', false, 0, 0, NULL, 1, 1, 200, NULL, 0, 0, NULL, '00-x', $1)`, [ts]);
      const s = await openPostgresStore({ connectionString: oldUrl, masterKey: randomBytes(32) });
      try {
        const cols = (await c.query<{ column_name: string }>("SELECT column_name FROM information_schema.columns WHERE table_name = $1 AND column_name IN ('trigger_id', 'event_id', 'attempt') ORDER BY 1", [day.name])).rows;
        assert.deepEqual(cols.map((r) => r.column_name), ["attempt", "event_id", "trigger_id"], "the existing partition has the columns");
        const rec = { ...inv("new", ts + 1000), trigger: "fn#0:abc", eventId: "fn#0:abc@2026-01-05T10:00:00.000Z", attempt: 2 };
        await s.writeTelemetry({ logs: [], invocations: [rec], errors: [] });
        const [newer, older] = await s.queryInvocations("fn");
        assert.deepEqual(newer, rec);
        assert.deepEqual([older?.requestId, older?.trigger, older?.eventId, older?.attempt], ["old", null, null, null]);
        assert.deepEqual((await s.queryInvocations("fn", { eventId: rec.eventId })).map((r) => r.requestId), ["new"]);
      } finally {
        await s.close();
      }
    } finally {
      await c.end();
      await server.dropDatabase(name);
    }
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

  test("a connection dropped while a transaction holds it: the transaction fails, the process lives, the pool serves again", async () => {
    // node-postgres emits 'error' on a checked-out client whose connection ends; with no listener that
    // event would end this process (the control plane died this way when PostgreSQL stopped under load).
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    pool.on("error", () => {});
    try {
      let pid = 0;
      let hold!: () => void;
      const held = new Promise<void>((r) => (hold = r));
      const inTx = runTransaction(pool, async (c) => {
        pid = (await c.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
        hold();
        await new Promise((r) => setTimeout(r, 300)); // between queries: no query to fail, only the client's 'error'
        await c.query("SELECT 1");
      });
      await held;
      await raw.query("SELECT pg_terminate_backend($1)", [pid]);
      await assert.rejects(inTx, /terminat|Connection/i);
      // The same with a plain held client.
      const plain = withClient(pool, async (c) => {
        const p = (await c.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
        await raw.query("SELECT pg_terminate_backend($1)", [p]);
        await new Promise((r) => setTimeout(r, 300));
        await c.query("SELECT 1");
      });
      await assert.rejects(plain, /terminat|Connection/i);
      // The broken clients were destroyed, not handed out again.
      for (let i = 0; i < 4; i++) assert.equal((await pool.query<{ one: number }>("SELECT 1 AS one")).rows[0]!.one, 1);
      assert.equal(await runTransaction(pool, async (c) => (await c.query<{ two: number }>("SELECT 2 AS two")).rows[0]!.two), 2);
    } finally {
      await pool.end();
    }
  });

  test("an unreachable server fails the open with the connection error", async () => {
    await assert.rejects(openPostgresStore({ connectionString: `postgres://x@127.0.0.1:1/none`, masterKey: randomBytes(32) }), /ECONNREFUSED/);
    await assert.rejects(openPostgresStore({ connectionString: url, masterKey: randomBytes(8) }), { code: "INTERNAL" });
  });
});

describe("the platform on PostgreSQL (store = postgres://…)", () => {
  test("deploy, invoke, env, secrets, logs, records, rollback and tokens persist in PostgreSQL, across a restart", async (t) => {
    const { url, name } = await freshDatabase();
    const fx = await startPlatform({ store: url, "observe.flushIntervalMs": 50 });
    const c = new pg.Client({ connectionString: url });
    t.after(async () => {
      await c.end().catch(() => {});
      await fx.close();
      await server.dropDatabase(name);
    });
    const api = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(fx.url + path, {
        method, headers: { authorization: `Bearer ${fx.token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() as Record<string, unknown> };
    };
    const invoke = async (fn: string) => (await fetch(`${fx.url}/fn/${fn}/`)).text();
    const src = (tag: string) => project({
      "index.js": `module.exports.pgfn = { handler: async () => { console.log("hello from ${tag}"); return { v: "${tag}", mode: process.env.MODE ?? null, s: process.env.S ?? null }; } };`,
    });

    const d1 = await deploy(fx, await src("one"));
    assert.equal(d1.final?.type, "result", JSON.stringify(d1.events));
    const d2 = await deploy(fx, await src("two"));
    assert.equal(d2.final?.type, "result", JSON.stringify(d2.events));
    assert.equal((await api("PATCH", "/api/v1/functions/pgfn/env", { set: { MODE: "blue" } })).status, 200);
    assert.equal((await api("PATCH", "/api/v1/functions/pgfn/secrets", { set: { S: "pg-secret-value" } })).status, 200);
    assert.deepEqual(JSON.parse(await invoke("pgfn")), { v: "two", mode: "blue", s: "pg-secret-value" });

    // The rows are in PostgreSQL, the secret as ciphertext, and no SQLite file was made.
    await c.connect();
    assert.equal((await c.query("SELECT v.version FROM versions v JOIN functions f ON f.id = v.function_id WHERE f.name = 'pgfn'")).rowCount, 2);
    const { rows: sec } = await c.query<{ ciphertext: string }>("SELECT ciphertext FROM secrets");
    assert.ok(sec.length === 1 && !sec[0]!.ciphertext.includes("pg-secret-value"));
    assert.equal(existsSync(join(fx.dataDir, "stratus.db")), false, "no SQLite store beside PostgreSQL");

    // Telemetry reaches the partitioned tables (the observer flushes every 50 ms; bounded wait).
    let logged = 0;
    for (let i = 0; i < 50 && logged === 0; i++) {
      logged = (await c.query("SELECT 1 FROM logs WHERE function_name = 'pgfn' AND message LIKE 'hello from two%'")).rowCount ?? 0;
      if (logged === 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(logged > 0, `the function's log line is stored in PostgreSQL; stored: ${JSON.stringify((await c.query("SELECT message FROM logs LIMIT 20")).rows)}`);
    const records = await api("GET", "/api/v1/functions/pgfn/invocations");
    assert.ok((records.body.invocations as unknown[]).length >= 1, JSON.stringify(records.body));

    const rb = await api("POST", "/api/v1/functions/pgfn/rollback", {});
    assert.equal(rb.status, 200, JSON.stringify(rb.body));
    assert.equal(JSON.parse(await invoke("pgfn")).v, "one");

    const created = await api("POST", "/api/v1/tokens", { name: "ci" });
    assert.equal(created.status, 201, JSON.stringify(created.body));

    await fx.restart();
    assert.equal(JSON.parse(await invoke("pgfn")).v, "one", "after a restart the active version comes from PostgreSQL");
    const tokens = (await api("GET", "/api/v1/tokens")).body.tokens as Array<{ name: string }>;
    assert.deepEqual(tokens.map((x) => x.name).sort(), ["admin", "ci"]);
  });

  test("`stratus up --store postgres://…` from the CLI: deploy, invoke, tokens; SIGTERM closes the store", async (t) => {
    const { url, name } = await freshDatabase();
    const up = await startUpInTempRoot("st-pg-", ["--store", url]);
    t.after(async () => {
      await killUp(up.child);
      await rm(up.root, { recursive: true, force: true });
      await server.dropDatabase(name);
    });
    const { ok } = bindStratus(() => ({ env: up.env, cwd: up.root }), 120_000, () => `\n--- stratus up:\n${up.output()}`);
    const dir = join(up.root, "proj");
    await mkdir(dir);
    await writeFile(join(dir, "index.js"), `module.exports.clifn = { handler: async () => "from the cli" };`);
    await ok("deploy", dir);
    assert.equal(await (await fetch(`${up.url}/fn/clifn/`)).text(), "from the cli");
    await ok("token", "create", "--name", "cli-made");
    assert.match(await ok("token", "ls"), /cli-made/);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      assert.deepEqual((await c.query<{ name: string }>("SELECT name FROM tokens ORDER BY seq")).rows.map((r) => r.name), ["admin", "cli-made"]);
      assert.equal((await c.query("SELECT 1 FROM functions WHERE name = 'clifn' AND active_version IS NOT NULL")).rowCount, 1);
    } finally {
      await c.end();
    }
    assert.equal(existsSync(join(up.dataDir, "stratus.db")), false);
    up.child.kill("SIGTERM");
    const [code] = await once(up.child, "exit");
    assert.equal(code, 0, up.output());
    // Closed means the pool's sessions are gone (bounded wait: the backend exits right after the client).
    let sessions = -1;
    for (let i = 0; i < 50 && sessions !== 0; i++) {
      sessions = (await server.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1", [name])).rows[0]!.n;
      if (sessions !== 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(sessions, 0, "stratus up left sessions open on PostgreSQL");
  });

  test("a bad store location stops start-up with the other config problems, without echoing it", async () => {
    await assert.rejects(startPlatform({ store: "mysql://u:topsecret@h/db" }), (err: { code?: string; message: string }) => {
      assert.equal(err.code, "INVALID_ARGUMENT");
      assert.match(err.message, /store: a store location is/);
      assert.ok(!err.message.includes("topsecret"));
      return true;
    });
  });
});
