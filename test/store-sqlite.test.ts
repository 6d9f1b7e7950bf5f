// The store conformance suite against a real SQLite file, plus SQLite-specific checks:
// secrets are not stored in plaintext, a wrong master key cannot read them, the key file is 0600.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { runStoreConformance } from "../src/store/conformance";
import { openStore } from "../src/store/open-store";
import { parseStoreLocation } from "../src/shared/store-location";
import { loadOrCreateMasterKey } from "../src/store/secret-box";
import { MIGRATIONS, openSqliteStore } from "../src/store/sqlite/sqlite-store";

runStoreConformance("sqlite", async () => {
  const dir = await mkdtemp(join(tmpdir(), "stratus-store-"));
  const file = join(dir, "stratus.db");
  const masterKey = randomBytes(32);
  let store = openSqliteStore({ file, masterKey });
  return {
    store,
    reopen: async () => {
      await store.close();
      store = openSqliteStore({ file, masterKey });
      return store;
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

test("sqlite: secrets are encrypted at rest and need the right master key", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "stratus-store-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, "stratus.db");
  const masterKey = await loadOrCreateMasterKey(dir);
  assert.equal((await stat(join(dir, "master.key"))).mode & 0o777, 0o600);
  assert.deepEqual(await loadOrCreateMasterKey(dir), masterKey, "the key file is reused, not regenerated");

  const store = openSqliteStore({ file, masterKey });
  await store.ensureFunction("fn");
  await store.setSecret("fn", "TOKEN", "plain-secret-value-123");
  await store.close();

  const raw = new Database(file, { readonly: true });
  const row = raw.prepare("SELECT ciphertext FROM secrets").get() as { ciphertext: string };
  raw.close();
  assert.ok(!row.ciphertext.includes("plain-secret-value-123"));
  for (const f of ["stratus.db", "stratus.db-wal"]) {
    const bytes = await readFile(join(dir, f)).catch(() => Buffer.alloc(0));
    assert.ok(!bytes.includes("plain-secret-value-123"), `${f} holds the plaintext`);
  }

  const wrong = openSqliteStore({ file, masterKey: randomBytes(32) });
  t.after(() => wrong.close());
  await assert.rejects(wrong.getSecretValues("fn"), { code: "INTERNAL" });
  assert.deepEqual(await wrong.listSecretNames("fn"), ["TOKEN"]);
});

test("sqlite: WAL mode and a recorded schema version", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "stratus-store-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, "s.db");
  const store = openSqliteStore({ file, masterKey: randomBytes(32) });
  await store.close();
  await store.close(); // idempotent
  const raw = new Database(file, { readonly: true });
  t.after(() => raw.close());
  assert.equal(raw.pragma("journal_mode", { simple: true }), "wal");
  assert.deepEqual(raw.prepare("SELECT version FROM schema_migrations").all(), MIGRATIONS.map((_, i) => ({ version: i + 1 })));
  assert.equal(MIGRATIONS.length, 4);
});

test("sqlite: a database of the previous schema (3) gains the invocation event columns; its old records read with nulls", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "stratus-store-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, "old.db");
  const old = new Database(file);
  old.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)");
  for (const [i, m] of MIGRATIONS.slice(0, 3).entries()) {
    old.exec(m);
    old.prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)").run(i + 1, 0);
  }
  old.prepare(`INSERT INTO invocations (request_id, function_name, version, instance_id, node_id, cold, queue_ms, start_ms, init_ms, handler_ms,
    total_ms, status, error_code, bytes_in, bytes_out, peak_memory_bytes, traceparent, ts) VALUES ('old', 'fn', 'v1', NULL, 'n', 0, 0, 0, NULL, 1, 1, 200, NULL, 0, 0, NULL, '00-x', 1000)`).run();
  old.close();
  const store = openSqliteStore({ file, masterKey: randomBytes(32) });
  t.after(() => store.close());
  const rec = { requestId: "new", functionName: "fn", version: "v1", instanceId: null, nodeId: "n", coldStart: false, queueMs: 0, startMs: 0, initMs: null,
    handlerMs: 1, totalMs: 1, status: 202, errorCode: null, bytesIn: 0, bytesOut: 0, peakMemoryBytes: null, traceparent: "00-x", ts: 2000,
    trigger: "fn#0:abc", eventId: "fn#0:abc@2026-03-01T12:00:00.000Z", attempt: 3 };
  await store.writeTelemetry({ logs: [], invocations: [rec], errors: [] });
  const [newer, older] = await store.queryInvocations("fn");
  assert.deepEqual(newer, rec);
  assert.deepEqual([older?.requestId, older?.trigger, older?.eventId, older?.attempt], ["old", null, null, null]);
});

test("openStore picks the implementation from the location", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "stratus-store-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  assert.deepEqual(parseStoreLocation("postgres://u:pw@h:5432/db"), { kind: "postgres", connectionString: "postgres://u:pw@h:5432/db" });
  assert.deepEqual(parseStoreLocation("postgresql://h/db"), { kind: "postgres", connectionString: "postgresql://h/db" });
  assert.deepEqual(parseStoreLocation("sqlite:/x/s.db"), { kind: "sqlite", file: "/x/s.db" });
  assert.deepEqual(parseStoreLocation("/x/s.db"), { kind: "sqlite", file: "/x/s.db" });
  for (const bad of ["", "sqlite:", "mysql://u:secretpw@h/db"]) {
    assert.throws(() => parseStoreLocation(bad), (err: { code?: string; message: string }) => {
      assert.equal(err.code, "INVALID_ARGUMENT");
      assert.ok(!err.message.includes("secretpw"), "the location (and its password) is not echoed");
      return true;
    });
  }
  const masterKey = randomBytes(32);
  const file = join(dir, "a.db");
  const s = await openStore(`sqlite:${file}`, { masterKey });
  await s.ensureFunction("fn");
  await s.close();
  const again = await openStore(file, { masterKey });
  t.after(() => again.close());
  assert.deepEqual((await again.listFunctions()).map((f) => f.name), ["fn"]);
});
