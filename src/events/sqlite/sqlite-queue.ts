/**
 * The embedded job queue: tables in a SQLite file (the store's own file in `stratus up`, on a
 * connection of its own), better-sqlite3, WAL, and `synchronous = FULL` on this connection: a commit
 * is fsynced before `enqueue` returns, so a 202 survives an OS crash, not only a process crash (the
 * store's connection keeps NORMAL; the pragma is per connection).
 *
 * better-sqlite3 is synchronous and one process owns the file, so each method's transaction is atomic
 * by construction; `BEGIN IMMEDIATE` (`.immediate`) takes the write lock up front so a second process
 * on the same file waits (busy_timeout) rather than failing mid-transaction.
 */
import Database from "better-sqlite3";
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { StratusError } from "../../shared/errors";
import { JOB_COLUMNS, jobToValues, patchValues, rowToJob, type JobRow, type QueuePersistence } from "../queue-persistence";
import type { JobQueue, JobRecord } from "../queue";
import { createJobQueue, type JobQueueOptions } from "../queue-rules";

/** Ordered migrations of the queue's tables (own version table: the store's migrations are separate). */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE event_jobs (
    id TEXT PRIMARY KEY,
    function_name TEXT NOT NULL,
    status TEXT NOT NULL,
    origin TEXT NOT NULL,
    request TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    lease_token TEXT,
    lease_expires_at INTEGER,
    history TEXT NOT NULL,
    result TEXT,
    error TEXT,
    idempotency_key TEXT,
    payload_hash TEXT NOT NULL,
    retry_delay_ms INTEGER NOT NULL,
    finished_at INTEGER,
    replayed_as TEXT
  );
  CREATE INDEX event_jobs_due ON event_jobs (function_name, status, run_at);
  CREATE INDEX event_jobs_finished ON event_jobs (finished_at) WHERE finished_at IS NOT NULL;
  CREATE UNIQUE INDEX event_jobs_idempotency ON event_jobs (function_name, idempotency_key) WHERE idempotency_key IS NOT NULL;
  CREATE TABLE event_slots (
    trigger_id TEXT NOT NULL,
    slot_time INTEGER NOT NULL,
    job_id TEXT,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (trigger_id, slot_time)
  );
  `,
];

/** Opens the queue in `file` (created and migrated as needed). @throws StratusError INTERNAL for a newer schema. */
export function openSqliteQueue(file: string, options: JobQueueOptions = {}): JobQueue {
  return createJobQueue(openSqliteQueuePersistence(file), options);
}

/** The persistence alone (tests of the rules use it). */
export function openSqliteQueuePersistence(file: string): QueuePersistence & { readonly synchronous: () => number } {
  if (file !== ":memory:") mkdirSync(dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.pragma("busy_timeout = 5000");
  db.exec("CREATE TABLE IF NOT EXISTS event_schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)");
  db.transaction(() => {
    const current = (db.prepare("SELECT MAX(version) AS v FROM event_schema_migrations").get() as { v: number | null }).v ?? 0;
    if (current > MIGRATIONS.length) throw new StratusError("INTERNAL", `The event queue schema (version ${current}) is newer than this Stratus (${MIGRATIONS.length})`);
    for (let v = current + 1; v <= MIGRATIONS.length; v++) {
      db.exec(MIGRATIONS[v - 1] as string);
      db.prepare("INSERT INTO event_schema_migrations (version, applied_at) VALUES (?, ?)").run(v, Date.now());
    }
  }).immediate();

  const placeholders = JOB_COLUMNS.map(() => "?").join(", ");
  const q = {
    insert: db.prepare(`INSERT INTO event_jobs (${JOB_COLUMNS.join(", ")}) VALUES (${placeholders})`),
    byKey: db.prepare<[string, string], JobRow>("SELECT * FROM event_jobs WHERE function_name = ? AND idempotency_key = ?"),
    dropKey: db.prepare<[string]>("UPDATE event_jobs SET idempotency_key = NULL WHERE id = ?"),
    get: db.prepare<[string], JobRow>("SELECT * FROM event_jobs WHERE id = ?"),
    due: db.prepare<[string, number, number, number], JobRow>(`SELECT * FROM event_jobs WHERE function_name = ?
      AND ((status = 'queued' AND run_at <= ?) OR (status = 'running' AND lease_expires_at <= ?)) ORDER BY run_at, id LIMIT ?`),
    lease: db.prepare<[string, number, number, string]>("UPDATE event_jobs SET status = 'running', lease_token = ?, lease_expires_at = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?"),
    settle: db.prepare(`UPDATE event_jobs SET status = ?, run_at = ?, history = ?, result = ?, error = ?, finished_at = ?, updated_at = ?, lease_token = NULL, lease_expires_at = NULL
      WHERE id = ? AND lease_token = ? AND status = 'running' AND lease_expires_at > ?`),
    dead: db.prepare<[string, number], JobRow>("SELECT * FROM event_jobs WHERE function_name = ? AND status = 'dead' ORDER BY finished_at DESC, id LIMIT ?"),
    markReplayed: db.prepare<[string, number, string]>("UPDATE event_jobs SET status = 'replayed', replayed_as = ?, updated_at = ? WHERE id = ? AND status = 'dead'"),
    purgeDead: db.prepare<[string]>("DELETE FROM event_jobs WHERE function_name = ? AND status = 'dead'"),
    counts: db.prepare<[string], { status: string; n: number }>("SELECT status, COUNT(*) AS n FROM event_jobs WHERE function_name = ? GROUP BY status"),
    active: db.prepare<[], { function_name: string }>("SELECT DISTINCT function_name FROM event_jobs WHERE status IN ('queued', 'running') ORDER BY function_name"),
    slotInsert: db.prepare<[string, number, string | null, number]>("INSERT INTO event_slots (trigger_id, slot_time, job_id, claimed_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"),
    lastSlot: db.prepare<[string], { t: number | null }>("SELECT MAX(slot_time) AS t FROM event_slots WHERE trigger_id = ?"),
    purgeFinished: db.prepare<[number]>("DELETE FROM event_jobs WHERE status IN ('succeeded', 'replayed') AND finished_at IS NOT NULL AND finished_at < ?"),
  };

  const insertJob = db.transaction((job: JobRecord, since: number): { job: JobRecord; created: boolean } => {
    if (job.idempotencyKey !== null) {
      const held = q.byKey.get(job.functionName, job.idempotencyKey);
      if (held !== undefined) {
        if (Number(held.created_at) >= since) return { job: rowToJob(held), created: false };
        q.dropKey.run(held.id);
      }
    }
    q.insert.run(...jobToValues(job));
    return { job, created: true };
  });
  const claim = db.transaction((fn: string, limit: number, now: number, until: number) => {
    const rows = q.due.all(fn, now, now, limit);
    return rows.map((r) => {
      const token = randomUUID();
      q.lease.run(token, until, now, r.id);
      return { job: rowToJob({ ...r, status: "running", attempts: Number(r.attempts) + 1, lease_token: token, lease_expires_at: until, updated_at: now }), token };
    });
  });
  const replay = db.transaction((id: string, fresh: JobRecord, now: number): JobRecord | null => {
    if (q.markReplayed.run(fresh.id, now, id).changes === 0) return null;
    q.insert.run(...jobToValues(fresh));
    return fresh;
  });
  const claimSlot = db.transaction((trigger: string, slot: number, job: JobRecord | null, now: number): boolean => {
    if (q.slotInsert.run(trigger, slot, job?.id ?? null, now).changes === 0) return false;
    if (job !== null) q.insert.run(...jobToValues(job));
    return true;
  });
  let closed = false;

  return {
    /** The connection's `synchronous` pragma (2 = FULL), for the test that holds us to it. */
    synchronous: () => db.pragma("synchronous", { simple: true }) as number,
    insertJob: async (job, since) => insertJob.immediate(job, since),
    claimJobs: async (fn, limit, now, until) => claim.immediate(fn, limit, now, until),
    async settle(id, token, now, patch) {
      if (q.settle.run(...patchValues(patch), now, id, token, now).changes === 0) return null;
      const row = q.get.get(id);
      return row === undefined ? null : rowToJob(row);
    },
    getJob: async (id) => {
      const row = q.get.get(id);
      return row === undefined ? null : rowToJob(row);
    },
    listDead: async (fn, limit) => q.dead.all(fn, limit).map(rowToJob),
    replayDead: async (id, fresh, now) => replay.immediate(id, fresh, now),
    purgeDead: async (fn) => q.purgeDead.run(fn).changes,
    counts: async (fn) => Object.fromEntries(q.counts.all(fn).map((r) => [r.status, Number(r.n)])),
    activeFunctions: async () => q.active.all().map((r) => r.function_name),
    claimSlot: async (trigger, slot, job, now) => claimSlot.immediate(trigger, slot, job, now),
    lastSlot: async (trigger) => q.lastSlot.get(trigger)?.t ?? null,
    purgeFinished: async (olderThan) => q.purgeFinished.run(olderThan).changes,
    async close() {
      if (closed) return;
      closed = true;
      db.close();
    },
  };
}
