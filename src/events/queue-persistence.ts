/**
 * What a queue implementation provides: persistence only, each method one atomic step even with
 * several callers (and, for PostgreSQL, several processes) at once. The rules — backoff, idempotency,
 * fencing outcomes, expired-lease accounting — are in src/events/queue-rules.ts.
 *
 * Rows are JobRecords (src/events/queue.ts); `jobToRow` / `rowToJob` are the one mapping every SQL
 * implementation shares (JSON columns as TEXT, times as integers).
 */
import type { JobAttempt, JobOrigin, JobRecord, JobRequest, JobResult, JobStatus } from "./queue";

/** The fields `settle` changes. */
export interface SettlePatch {
  readonly status: JobStatus;
  readonly runAt: number;
  readonly history: readonly JobAttempt[];
  readonly result: JobResult | null;
  readonly error: { readonly code: string; readonly message: string } | null;
  readonly finishedAt: number | null;
}

export interface QueuePersistence {
  /**
   * Atomically: when `job.idempotencyKey` is set and a job of the same function holds that key and was
   * created at or after `idempotentSince`, returns it (`created: false`); otherwise takes the key from
   * any older holder and inserts `job`.
   */
  insertJob(job: JobRecord, idempotentSince: number): Promise<{ job: JobRecord; created: boolean }>;
  /**
   * Atomically leases up to `limit` jobs of the function that are queued with `runAt ≤ now` or running
   * with `leaseExpiresAt ≤ now`, oldest `runAt` first: status `running`, a fresh random token,
   * `leaseExpiresAt = leaseUntil`, attempts + 1. Concurrent callers never lease the same job.
   */
  claimJobs(functionName: string, limit: number, now: number, leaseUntil: number): Promise<Array<{ job: JobRecord; token: string }>>;
  /**
   * Applies `patch` only if the job is `running` under `token` with `leaseExpiresAt > now` (one
   * compare-and-set), clearing the lease. Null when the fence refused.
   */
  settle(id: string, token: string, now: number, patch: SettlePatch): Promise<JobRecord | null>;
  getJob(id: string): Promise<JobRecord | null>;
  /** Newest first. */
  listDead(functionName: string, limit: number): Promise<JobRecord[]>;
  /** In one transaction: marks the dead job `replayed` (replayedAs = fresh.id) and inserts `fresh`. Null when no dead job has that id. */
  replayDead(id: string, fresh: JobRecord, now: number): Promise<JobRecord | null>;
  purgeDead(functionName: string): Promise<number>;
  counts(functionName: string): Promise<Partial<Record<JobStatus, number>>>;
  /** Distinct function names of queued or running jobs. */
  activeFunctions(): Promise<string[]>;
  /** In one transaction: inserts the slot unless present; when inserted and `job` is given, inserts the job. */
  claimSlot(triggerId: string, slotTime: number, job: JobRecord | null, now: number): Promise<boolean>;
  lastSlot(triggerId: string): Promise<number | null>;
  purgeFinished(olderThan: number): Promise<number>;
  close(): Promise<void>;
}

/** A job row as SQL stores it (both implementations use these columns). */
export interface JobRow {
  id: string;
  function_name: string;
  status: string;
  origin: string;
  request: string;
  attempts: number | string;
  max_attempts: number | string;
  created_at: number | string;
  updated_at: number | string;
  run_at: number | string;
  expires_at: number | string;
  lease_token: string | null;
  lease_expires_at: number | string | null;
  history: string;
  result: string | null;
  error: string | null;
  idempotency_key: string | null;
  payload_hash: string;
  retry_delay_ms: number | string;
  finished_at: number | string | null;
  replayed_as: string | null;
}

/** Column list in insert order. */
export const JOB_COLUMNS = [
  "id", "function_name", "status", "origin", "request", "attempts", "max_attempts", "created_at", "updated_at", "run_at", "expires_at",
  "lease_token", "lease_expires_at", "history", "result", "error", "idempotency_key", "payload_hash", "retry_delay_ms", "finished_at", "replayed_as",
] as const;

const num = (v: number | string): number => (typeof v === "number" ? v : Number(v));
const numOrNull = (v: number | string | null): number | null => (v === null ? null : num(v));

export function rowToJob(r: JobRow): JobRecord {
  return {
    id: r.id,
    functionName: r.function_name,
    status: r.status as JobStatus,
    origin: JSON.parse(r.origin) as JobOrigin,
    request: JSON.parse(r.request) as JobRequest,
    attempts: num(r.attempts),
    maxAttempts: num(r.max_attempts),
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
    runAt: num(r.run_at),
    expiresAt: num(r.expires_at),
    leaseExpiresAt: numOrNull(r.lease_expires_at),
    history: JSON.parse(r.history) as JobAttempt[],
    result: r.result === null ? null : (JSON.parse(r.result) as JobResult),
    error: r.error === null ? null : (JSON.parse(r.error) as { code: string; message: string }),
    idempotencyKey: r.idempotency_key,
    payloadHash: r.payload_hash,
    retryDelayMs: num(r.retry_delay_ms),
    finishedAt: numOrNull(r.finished_at),
    replayedAs: r.replayed_as,
  };
}

/** The row values of a job in JOB_COLUMNS order (lease columns empty). */
export function jobToValues(j: JobRecord): unknown[] {
  return [
    j.id, j.functionName, j.status, JSON.stringify(j.origin), JSON.stringify(j.request), j.attempts, j.maxAttempts, j.createdAt, j.updatedAt, j.runAt,
    j.expiresAt, null, null, JSON.stringify(j.history), j.result === null ? null : JSON.stringify(j.result), j.error === null ? null : JSON.stringify(j.error),
    j.idempotencyKey, j.payloadHash, j.retryDelayMs, j.finishedAt, j.replayedAs,
  ];
}

/** The values `settle` writes: status, run_at, history, result, error, finished_at. */
export function patchValues(p: SettlePatch): unknown[] {
  return [p.status, p.runAt, JSON.stringify(p.history), p.result === null ? null : JSON.stringify(p.result), p.error === null ? null : JSON.stringify(p.error), p.finishedAt];
}
