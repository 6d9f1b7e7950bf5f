// PostgreSQL table-change triggers on a real platform (process driver, SQLite store, port 0) against a
// real private PostgreSQL 15 with wal_level=logical and wal2json: the function receives each insert,
// update and delete as a CloudEvent in binary mode; changes made while the platform is down arrive after
// it starts again; a failing function's changes are retried and then recorded in the platform's DLQ;
// `triggers ls` data shows the slot and the source state. Needs root (bubblewrap, cgroups), `npm run build`,
// `postgresql` and `postgresql-15-wal2json`.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import { deploy, project, startPlatform, type PlatformFixture } from "./helpers/platform-fixture";
import { startPostgres, type PostgresServer } from "./helpers/postgres-server";

const SOURCE = `
module.exports.onBid = {
  func: (req, res) => {
    const ce = Object.fromEntries(Object.entries(req.headers).filter(([k]) => k.startsWith("ce-")));
    console.log("BID " + JSON.stringify({ ce, data: JSON.parse(req.rawBody.toString()), attempt: req.get("x-stratus-attempt"), trigger: req.get("x-stratus-trigger") }));
    res.sendStatus(204);
  },
  config: { retryDelayMs: 10, triggers: [{ postgres: { connectionSecret: "SHOP_DB", table: "public.bids" } }] },
};
module.exports.failing = {
  func: (req, res) => { console.log("FAIL attempt " + req.get("x-stratus-attempt")); res.status(500).send("no"); },
  config: { maxAttempts: 2, retryDelayMs: 10, triggers: [{ postgres: { connectionSecret: "SHOP_DB", table: "bids", events: ["insert"], slot: "failing_bids" } }] },
};
`;

let server: PostgresServer;
let dbUrl: string;
let fx: PlatformFixture;
const auth = () => ({ authorization: `Bearer ${fx.token}` });
const api = async <T>(path: string): Promise<T> => {
  const r = await fetch(`${fx.url}${path}`, { headers: auth() });
  assert.equal(r.status, 200, `${path}: ${r.status}`);
  return (await r.json()) as T;
};
async function sql(text: string): Promise<void> {
  const c = new pg.Client({ connectionString: dbUrl });
  await c.connect();
  try {
    await c.query(text);
  } finally {
    await c.end();
  }
}
async function until<T>(get: () => Promise<T>, ok: (v: T) => boolean, what: string, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v).slice(0, 2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
interface Bid { ce: Record<string, string>; data: { op: string; new: { id: number; amount: number } | null; old: { id: number; amount: number } | null }; attempt: string; trigger: string }
const bids = async (): Promise<Bid[]> =>
  (await api<{ lines: Array<{ message: string }> }>("/api/v1/functions/onBid/logs?limit=1000")).lines
    .filter((l) => l.message.startsWith("BID ")).map((l) => JSON.parse(l.message.slice(4)) as Bid);
interface TriggerView { id: string; kind: string; slot?: string; status?: { connected: boolean } | null; problem?: string | null }
const triggersOf = (fn: string) => api<{ triggers: TriggerView[] }>(`/api/v1/functions/${fn}/triggers`).then((r) => r.triggers);

before(async () => {
  server = await startPostgres({ logicalReplication: true });
  dbUrl = await server.createDatabase("auction");
  await sql("CREATE TABLE bids (id int PRIMARY KEY, amount int NOT NULL); ALTER TABLE bids REPLICA IDENTITY FULL");
  fx = await startPlatform({ "events.pollIntervalMs": 50, "events.sourceSyncIntervalMs": 200 });
  const d = await deploy(fx, await project({ "package.json": JSON.stringify({ name: "pgev", main: "index.js" }), "index.js": SOURCE }));
  assert.equal(d.final?.type, "result", JSON.stringify(d.events));
});
after(async () => {
  await fx?.close();
  await server?.stop();
});

describe("postgres table-change triggers on the platform", () => {
  test("without its secret the trigger says so; with it, it connects", async () => {
    const [t] = await until(() => triggersOf("onBid"), (ts) => ts.some((x) => x.kind === "postgres" && typeof x.problem === "string"), "the missing-secret problem");
    assert.match(t?.problem ?? "", /secret SHOP_DB is not set/);
    for (const fn of ["onBid", "failing"]) {
      const r = await fetch(`${fx.url}/api/v1/functions/${fn}/secrets`, { method: "PATCH", headers: { ...auth(), "content-type": "application/json" }, body: JSON.stringify({ set: { SHOP_DB: dbUrl }, unset: [] }) });
      assert.equal(r.status, 200);
    }
    const ts = await until(() => triggersOf("onBid"), (v) => v.some((x) => x.kind === "postgres" && x.status?.connected === true), "the source to connect");
    assert.match(ts[0]?.slot ?? "", /^stratus_onbid_[0-9a-f]{12}$/);
    await until(() => triggersOf("failing"), (v) => v.some((x) => x.kind === "postgres" && x.status?.connected === true && x.slot === "failing_bids"), "the failing trigger's source");
  });

  test("insert, update and delete reach the function as CloudEvents", async () => {
    await sql("INSERT INTO bids VALUES (1, 100)");
    await sql("UPDATE bids SET amount = 150 WHERE id = 1");
    await sql("DELETE FROM bids WHERE id = 1");
    const got = await until(bids, (b) => b.length >= 3, "three deliveries");
    assert.deepEqual(got.map((b) => b.ce["ce-type"]), ["io.stratus.postgres.insert", "io.stratus.postgres.update", "io.stratus.postgres.delete"]);
    assert.deepEqual(got.map((b) => b.ce["ce-subject"]), ["public.bids", "public.bids", "public.bids"]);
    assert.equal(got[0]?.ce["ce-source"], `postgres://127.0.0.1:${server.port}/auction/public.bids`);
    assert.equal(got[0]?.ce["ce-specversion"], "1.0");
    assert.deepEqual([got[0]?.data.new, got[1]?.data.old, got[1]?.data.new, got[2]?.data.old, got[2]?.data.new], [{ id: 1, amount: 100 }, { id: 1, amount: 100 }, { id: 1, amount: 150 }, { id: 1, amount: 150 }, null]);
    assert.match(got[0]?.trigger ?? "", /^onBid#postgres:stratus_onbid_/);
    assert.equal(got[0]?.attempt, "1");
  });

  test("changes made while the platform is down are delivered after it starts again", async () => {
    const before = (await bids()).length;
    await fx.platform.close();
    await sql("INSERT INTO bids VALUES (2, 200), (3, 300)");
    await sql("UPDATE bids SET amount = 201 WHERE id = 2");
    await fx.restart();
    const got = await until(bids, (b) => b.length >= before + 3, "the three changes made while down");
    assert.deepEqual(got.slice(before).map((b) => [b.data.op, b.data.new?.id, b.data.new?.amount]), [["insert", 2, 200], ["insert", 3, 300], ["update", 2, 201]]);
  });

  test("a failing function: each change is retried, then recorded in the DLQ with its CloudEvent", async () => {
    const { entries } = await until(
      () => api<{ entries: Array<{ invocationId: string }> }>("/api/v1/functions/failing/dlq"),
      (r) => r.entries.length >= 3, "three dead-lettered inserts (ids 2 and 3 while down, 1 before)",
    );
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await api<{ entries: unknown[] }>("/api/v1/functions/failing/dlq")).entries.length, 3, "one DLQ entry per insert, none twice");
    const one = await api<{ origin: { kind: string; trigger: string }; request: { headers: Record<string, string> }; error: { code: string } }>(`/api/v1/functions/failing/dlq/${entries[0]?.invocationId}`);
    assert.equal(one.origin.kind, "event");
    assert.equal(one.origin.trigger, "failing#postgres:failing_bids");
    assert.equal(one.request.headers["ce-type"], "io.stratus.postgres.insert");
    assert.equal(one.error.code, "FUNCTION_ERROR");
    const lines = (await api<{ lines: Array<{ message: string }> }>("/api/v1/functions/failing/logs?limit=1000")).lines.map((l) => l.message).filter((m) => m.startsWith("FAIL"));
    assert.ok(lines.includes("FAIL attempt 1") && lines.includes("FAIL attempt 2"), lines.join("\n"));
    assert.ok(!lines.includes("FAIL attempt 3"), "maxAttempts 2 bounds the attempts");
  });

  test("deleting the function drops its replication slot", async () => {
    const slots = async () => (await server.query<{ slot_name: string }>("SELECT slot_name FROM pg_replication_slots ORDER BY slot_name")).rows.map((r) => r.slot_name);
    assert.ok((await slots()).includes("failing_bids"));
    const r = await fetch(`${fx.url}/api/v1/functions/failing`, { method: "DELETE", headers: auth() });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { deleted: "failing", replicationSlots: [{ slot: "failing_bids", result: "dropped" }] });
    assert.ok(!(await slots()).includes("failing_bids"));
    // Not re-created by a source still running (this control plane stopped it before the drop).
    await new Promise((res) => setTimeout(res, 1500));
    const left = await slots();
    assert.ok(!left.includes("failing_bids"), left.join(","));
    assert.ok(left.some((s) => s.startsWith("stratus_onbid_")), "the other function's slot stays");
  });
});
