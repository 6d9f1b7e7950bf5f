// The job queue conformance suite against a real SQLite file (src/events/conformance.ts), plus what is
// SQLite-specific: the queue's connection commits with synchronous = FULL.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { runQueueConformance } from "../src/events/conformance";
import { openSqliteQueue, openSqliteQueuePersistence } from "../src/events/sqlite/sqlite-queue";
import { openSqliteStore } from "../src/store/sqlite/sqlite-store";
import { randomBytes } from "node:crypto";

runQueueConformance("sqlite", async (options) => {
  const dir = await mkdtemp(join(tmpdir(), "stratus-queue-"));
  const file = join(dir, "stratus.db");
  return {
    queue: openSqliteQueue(file, options),
    open: async (o) => openSqliteQueue(file, o),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

test("sqlite queue: its own connection runs synchronous = FULL; it shares the store's file and leaves the store's tables alone", async () => {
  const dir = await mkdtemp(join(tmpdir(), "stratus-queue-"));
  try {
    const file = join(dir, "stratus.db");
    const store = openSqliteStore({ file, masterKey: randomBytes(32) });
    await store.ensureFunction("fn");
    const p = openSqliteQueuePersistence(file);
    assert.equal(p.synchronous(), 2, "FULL is 2");
    await p.close();
    assert.equal((await store.listFunctions()).length, 1);
    await store.close();
    const db = new Database(file, { readonly: true });
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all().map((r) => (r as { name: string }).name);
    db.close();
    assert.ok(tables.includes("event_jobs") && tables.includes("functions"));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
