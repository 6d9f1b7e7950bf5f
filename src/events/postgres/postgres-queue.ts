/**
 * The cluster job queue: tables in the platform's PostgreSQL database (beside the store's, with their
 * own version table `event_schema_migrations`), leased with `FOR UPDATE SKIP LOCKED` so any number of
 * control planes poll one table without blocking each other or leasing one job twice
 * (/work/shared/CLUSTER-NOTES.md §3). Every write is one statement or one transaction, committed before
 * the method returns (the server's `synchronous_commit`, default on, makes that durable).
 *
 * Why not pg-boss: its completion is by job id, not by a lease token, so a late completion from an
 * expired lease would be accepted; and its retry/backoff and dead-letter model would differ from the
 * embedded queue's. Here both implementations share the rules (src/events/queue-rules.ts) and pass one
 * conformance suite.
 */
import pg from "pg";
import { isSerializationFailure, runTransaction, withClient } from "../../store/postgres/pg-tx";
import { StratusError } from "../../shared/errors";
import { JOB_COLUMNS, jobToValues, patchValues, rowToJob, type JobRow, type QueuePersistence } from "../queue-persistence";
import type { JobQueue, JobRecord } from "../queue";
import { createJobQueue, type JobQueueOptions } from "../queue-rules";

const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE event_jobs (
    id text PRIMARY KEY,
    function_name text NOT NULL,
    status text NOT NULL,
    origin text NOT NULL,
    request text NOT NULL,
    attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    run_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    lease_token text,
    lease_expires_at bigint,
    history text NOT NULL,
    result text,
    error text,
    idempotency_key text,
    payload_hash text NOT NULL,
    retry_delay_ms integer NOT NULL,
    finished_at bigint,
    replayed_as text
  );
  CREATE INDEX event_jobs_due ON event_jobs (function_name, status, run_at);
  CREATE INDEX event_jobs_finished ON event_jobs (finished_at) WHERE finished_at IS NOT NULL;
  CREATE UNIQUE INDEX event_jobs_idempotency ON event_jobs (function_name, idempotency_key) WHERE idempotency_key IS NOT NULL;
  CREATE TABLE event_slots (
    trigger_id text NOT NULL,
    slot_time bigint NOT NULL,
    job_id text,
    claimed_at bigint NOT NULL,
    PRIMARY KEY (trigger_id, slot_time)
  );
  `,
];

/** Advisory lock key of the queue's migrations ("events" in ASCII). */
const MIGRATION_LOCK = 0x6576656e7473;
const TX_ATTEMPTS = 5;

/** Options of `openPostgresQueue`. */
export interface PostgresQueueOptions extends JobQueueOptions {
  readonly connectionString: string;
  /** Connections, default 5. */
  readonly poolSize?: number;
}

/** Connects, migrates and returns the queue. A connection failure is the pg error. */
export async function openPostgresQueue(options: PostgresQueueOptions): Promise<JobQueue> {
  return createJobQueue(await openPostgresQueuePersistence(options), options);
}

/** Serialization failure, deadlock, or a unique race of an insert-if-absent path (23505). */
const isRetryable = (err: unknown): boolean => isSerializationFailure(err) || (err as { code?: string } | null)?.code === "23505";

export async function openPostgresQueuePersistence(options: PostgresQueueOptions): Promise<QueuePersistence> {
  const pool = new pg.Pool({ connectionString: options.connectionString, max: options.poolSize ?? 5 });
  pool.on("error", () => {});
  try {
    await withClient(pool, async (c) => {
      await c.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
      try {
        await c.query("CREATE TABLE IF NOT EXISTS event_schema_migrations (version integer PRIMARY KEY, applied_at bigint NOT NULL)");
        const current = (await c.query<{ v: number | null }>("SELECT MAX(version) AS v FROM event_schema_migrations")).rows[0]?.v ?? 0;
        if (current > MIGRATIONS.length) throw new StratusError("INTERNAL", `The event queue schema (version ${current}) is newer than this Stratus (${MIGRATIONS.length})`);
        for (let v = current + 1; v <= MIGRATIONS.length; v++) {
          await c.query("BEGIN");
          try {
            await c.query(MIGRATIONS[v - 1] as string);
            await c.query("INSERT INTO event_schema_migrations (version, applied_at) VALUES ($1, $2)", [v, Date.now()]);
            await c.query("COMMIT");
          } catch (err) {
            await c.query("ROLLBACK");
            throw err;
          }
        }
      } finally {
        await c.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK]);
      }
    });
  } catch (err) {
    await pool.end();
    throw err;
  }

  /** One transaction; retried on serialization failure, deadlock or a unique race (the insert-if-absent paths). */
  const tx = <T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> => runTransaction(pool, fn, { attempts: TX_ATTEMPTS, retryable: isRetryable });

  const insertSql = `INSERT INTO event_jobs (${JOB_COLUMNS.join(", ")}) VALUES (${JOB_COLUMNS.map((_, i) => `$${i + 1}`).join(", ")})`;
  const insert = (c: pg.ClientBase, job: JobRecord) => c.query(insertSql, jobToValues(job));
  const one = async (sql: string, params: unknown[]): Promise<JobRecord | null> => {
    const { rows } = await pool.query<JobRow>(sql, params);
    return rows[0] === undefined ? null : rowToJob(rows[0]);
  };
  let closed = false;

  return {
    insertJob: (job, since) => tx(async (c) => {
      if (job.idempotencyKey !== null) {
        // Locks the holder (if any) so a concurrent insert with the same key waits, then sees it.
        const { rows } = await c.query<JobRow>("SELECT * FROM event_jobs WHERE function_name = $1 AND idempotency_key = $2 FOR UPDATE", [job.functionName, job.idempotencyKey]);
        const held = rows[0];
        if (held !== undefined) {
          if (Number(held.created_at) >= since) return { job: rowToJob(held), created: false };
          await c.query("UPDATE event_jobs SET idempotency_key = NULL WHERE id = $1", [held.id]);
        }
      }
      // A concurrent first insert of the same key fails with 23505 here; the retry then finds it above.
      await insert(c, job);
      return { job, created: true };
    }),

    async claimJobs(fn, limit, now, until) {
      const { rows } = await pool.query<JobRow>(
        `WITH picked AS (
           SELECT id FROM event_jobs WHERE function_name = $1
             AND ((status = 'queued' AND run_at <= $2) OR (status = 'running' AND lease_expires_at <= $2))
           ORDER BY run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
         UPDATE event_jobs j SET status = 'running', lease_token = gen_random_uuid()::text, lease_expires_at = $4, attempts = j.attempts + 1, updated_at = $2
         FROM picked WHERE j.id = picked.id RETURNING j.*`,
        [fn, now, limit, until],
      );
      return rows.map((r) => ({ job: rowToJob(r), token: r.lease_token as string })).sort((a, b) => a.job.runAt - b.job.runAt || (a.job.id < b.job.id ? -1 : 1));
    },

    settle: (id, token, now, patch) => one(
      `UPDATE event_jobs SET status = $1, run_at = $2, history = $3, result = $4, error = $5, finished_at = $6, updated_at = $7, lease_token = NULL, lease_expires_at = NULL
       WHERE id = $8 AND lease_token = $9 AND status = 'running' AND lease_expires_at > $7 RETURNING *`,
      [...patchValues(patch), now, id, token],
    ),
    getJob: (id) => one("SELECT * FROM event_jobs WHERE id = $1", [id]),
    async listDead(fn, limit) {
      const { rows } = await pool.query<JobRow>("SELECT * FROM event_jobs WHERE function_name = $1 AND status = 'dead' ORDER BY finished_at DESC, id LIMIT $2", [fn, limit]);
      return rows.map(rowToJob);
    },
    replayDead: (id, fresh, now) => tx(async (c) => {
      const r = await c.query("UPDATE event_jobs SET status = 'replayed', replayed_as = $1, updated_at = $2 WHERE id = $3 AND status = 'dead'", [fresh.id, now, id]);
      if (r.rowCount === 0) return null;
      await insert(c, fresh);
      return fresh;
    }),
    async purgeDead(fn) {
      return (await pool.query("DELETE FROM event_jobs WHERE function_name = $1 AND status = 'dead'", [fn])).rowCount ?? 0;
    },
    async counts(fn) {
      const { rows } = await pool.query<{ status: string; n: string }>("SELECT status, COUNT(*) AS n FROM event_jobs WHERE function_name = $1 GROUP BY status", [fn]);
      return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
    },
    async activeFunctions() {
      const { rows } = await pool.query<{ function_name: string }>("SELECT DISTINCT function_name FROM event_jobs WHERE status IN ('queued', 'running') ORDER BY function_name");
      return rows.map((r) => r.function_name);
    },
    claimSlot: (trigger, slot, job, now) => tx(async (c) => {
      const r = await c.query("INSERT INTO event_slots (trigger_id, slot_time, job_id, claimed_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", [trigger, slot, job?.id ?? null, now]);
      if (r.rowCount === 0) return false;
      if (job !== null) await insert(c, job);
      return true;
    }),
    async lastSlot(trigger) {
      const { rows } = await pool.query<{ t: string | null }>("SELECT MAX(slot_time) AS t FROM event_slots WHERE trigger_id = $1", [trigger]);
      return rows[0]?.t == null ? null : Number(rows[0].t);
    },
    async purgeFinished(olderThan) {
      return (await pool.query("DELETE FROM event_jobs WHERE status IN ('succeeded', 'replayed') AND finished_at IS NOT NULL AND finished_at < $1", [olderThan])).rowCount ?? 0;
    },
    async close() {
      if (closed) return;
      closed = true;
      await pool.end();
    },
  };
}
