/**
 * The job queue contract: durable async invocations with leases, retries, a dead-letter queue and
 * schedule-slot claims. Callers use `JobQueue`; the rules (backoff, idempotency window, fencing, what an
 * expired lease means) live once in src/events/queue-rules.ts (`createJobQueue`) over a
 * `QueuePersistence` that only persists: SQLite (embedded, src/events/sqlite/) and PostgreSQL
 * (src/events/postgres/). Both run src/events/conformance.ts.
 *
 * Invariants every implementation keeps:
 *  - `enqueue` returns only after the job is committed durably (SQLite `synchronous = FULL`; PostgreSQL
 *    commit with the server's `synchronous_commit`, default on);
 *  - a job is in exactly one state: `queued` (waiting for `runAt`), `running` (leased until
 *    `leaseExpiresAt`), `succeeded`, `dead` (in the dead-letter queue) or `replayed` (a dead job that
 *    was re-enqueued as a new job, `replayedAs`);
 *  - a lease is a random token; `complete` / `fail` take effect only while that token holds an
 *    unexpired lease (fencing): a worker whose lease expired, or was taken over, is refused with
 *    LEASE_LOST and changes nothing;
 *  - an expired lease makes the job leasable again (at-least-once): the lost attempt counts, and is
 *    recorded with error LEASE_EXPIRED;
 *  - `(functionName, idempotencyKey)` names at most one job created within the idempotency window (24 h);
 *  - `(triggerId, slotTime)` is claimed at most once, and a claim that enqueues a job does both in one
 *    transaction.
 *
 * Times are epoch ms from the clock given to `createJobQueue`. Bodies are bytes (base64 in JSON).
 */

/** States of a job (see the invariants). */
export const JOB_STATUSES = ["queued", "running", "succeeded", "dead", "replayed"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

/** The HTTP request a job replays to the function. Headers are the client's, already filtered. */
export interface JobRequest {
  readonly method: string;
  /** Path below the function root, with the query (`/a?x=1`). */
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  /** Base64 of the body bytes. */
  readonly bodyBase64: string;
}

/**
 * What started a job: an API call (`async`), a schedule trigger, a bucket notification (`storage`),
 * a replay from the DLQ, or an event of a trigger source (`event`: a queue message or table change that
 * was dispatched by its source and dead-lettered here).
 */
export interface JobOrigin {
  readonly kind: "async" | "schedule" | "storage" | "replay" | "event";
  /** Trigger id (`<fn>#<index>:<hash>`, `<fn>#storage:<name>`) for schedule, storage and event jobs; the replayed job's id for replays. */
  readonly trigger?: string;
  /** CloudEvents `id` of an event-originated job. */
  readonly eventId?: string;
}

/** One attempt, as recorded when it ended. */
export interface JobAttempt {
  /** 1-based. */
  readonly attempt: number;
  /** Request id the gateway used (`<jobId>-<attempt>`): find its logs with `stratus logs --request`. */
  readonly requestId: string;
  readonly startedAt: number | null;
  readonly endedAt: number;
  /** HTTP status the function (or the gateway) answered; null when there was no response. */
  readonly status: number | null;
  /** Error code (`FUNCTION_ERROR`, `FUNCTION_TIMEOUT`, `LEASE_EXPIRED`, `HTTP_<status>`…); null on success. */
  readonly errorCode: string | null;
  readonly errorMessage: string | null;
}

/** The final response of a succeeded job, bounded (RESULT_BODY_MAX bytes kept). */
export interface JobResult {
  readonly status: number;
  readonly contentType: string | null;
  readonly bodyBase64: string;
  /** True when the body was longer than what is kept. */
  readonly truncated: boolean;
}

/** Bytes of a result body kept. */
export const RESULT_BODY_MAX = 64 * 1024;
/** How long an idempotency key maps to its job, ms. */
export const IDEMPOTENCY_WINDOW_MS = 24 * 3_600_000;

export interface JobRecord {
  /** The invocation id. */
  readonly id: string;
  readonly functionName: string;
  readonly status: JobStatus;
  readonly origin: JobOrigin;
  readonly request: JobRequest;
  /** Attempts started so far (including one running now). */
  readonly attempts: number;
  readonly maxAttempts: number;
  readonly createdAt: number;
  readonly updatedAt: number;
  /** Earliest time of the next attempt (queued jobs). */
  readonly runAt: number;
  /** No attempt starts after this (createdAt + maxEventAgeS). */
  readonly expiresAt: number;
  readonly leaseExpiresAt: number | null;
  /** Every ended attempt, oldest first. */
  readonly history: readonly JobAttempt[];
  readonly result: JobResult | null;
  /** Why a dead job died (the last attempt's error, or MAX_EVENT_AGE). */
  readonly error: { readonly code: string; readonly message: string } | null;
  readonly idempotencyKey: string | null;
  /** sha256 hex of method, path and body (the idempotency check). */
  readonly payloadHash: string;
  /** Base retry delay, ms (function config `retryDelayMs`). */
  readonly retryDelayMs: number;
  readonly finishedAt: number | null;
  /** Set on a dead job that was replayed: the new job's id. */
  readonly replayedAs: string | null;
}

/** What `enqueue` takes. */
export interface NewJob {
  readonly functionName: string;
  readonly request: JobRequest;
  readonly origin: JobOrigin;
  readonly maxAttempts: number;
  readonly maxEventAgeS: number;
  readonly retryDelayMs: number;
  readonly idempotencyKey?: string | null;
  /** Not before this time (default: now). */
  readonly runAt?: number;
}

/**
 * An event that failed every attempt outside the queue (a trigger source's message, retried by its
 * broker), for `recordDead`: it enters the DLQ directly, with its attempts, so `stratus dlq` lists,
 * shows and replays it like any other.
 */
export interface DeadEvent {
  readonly functionName: string;
  /** The request that was dispatched (CloudEvent headers and body): what a replay sends. */
  readonly request: JobRequest;
  readonly origin: JobOrigin;
  /** Every attempt, oldest first; `attempts` = the newest attempt's number. */
  readonly history: readonly JobAttempt[];
  readonly error: { readonly code: string; readonly message: string };
  /** For a replay: the function's settings at the time. */
  readonly maxAttempts: number;
  readonly maxEventAgeS: number;
  readonly retryDelayMs: number;
  /**
   * At most one entry per key and function within 24 h (the idempotency window): a message whose
   * broker-side settle was lost after it was recorded is not recorded twice. An entry that left the
   * DLQ (replayed) does not hide a new failure: that one is recorded. 1–255 printable ASCII.
   */
  readonly dedupKey: string;
}

/** A job handed to a worker. */
export interface LeasedJob {
  readonly job: JobRecord;
  /** The fencing token; pass it back to `complete` / `fail`. */
  readonly token: string;
  /** This attempt's number (1-based). */
  readonly attempt: number;
  /** `<jobId>-<attempt>`. */
  readonly requestId: string;
}

/** How one attempt ended, for `fail`. */
export interface AttemptFailure {
  readonly status: number | null;
  readonly errorCode: string;
  readonly errorMessage: string;
  readonly startedAt: number | null;
}

/** What `fail` did. */
export interface FailOutcome {
  readonly job: JobRecord;
  /** `retry`: queued again at job.runAt; `dead`: moved to the DLQ. */
  readonly next: "retry" | "dead";
}

export interface JobQueue {
  /**
   * Commits a job durably and returns it. With an idempotency key seen within 24 h for the same
   * function: the original job (`created: false`) when the payload hash matches.
   * @throws StratusError IDEMPOTENCY_CONFLICT when the key was used with another payload; INVALID_ARGUMENT
   *   for a bad key (1–255 printable ASCII) or limits.
   */
  enqueue(job: NewJob): Promise<{ job: JobRecord; created: boolean }>;
  /**
   * Leases up to `limit` due jobs of one function (queued with runAt ≤ now, or running with an expired
   * lease), oldest runAt first, for `visibilityMs`. Jobs that are out of attempts or past their age
   * after an expired lease go to the DLQ here instead of being returned.
   */
  lease(functionName: string, limit: number, visibilityMs: number): Promise<LeasedJob[]>;
  /**
   * Marks the job succeeded with its (bounded) result.
   * @throws StratusError LEASE_LOST when the token no longer holds an unexpired lease.
   */
  complete(leased: LeasedJob, result: Omit<JobResult, "truncated"> & { startedAt: number | null }): Promise<JobRecord>;
  /**
   * Records a failed attempt: queued again after backoff with jitter, or dead when out of attempts
   * or past `expiresAt`.
   * @throws StratusError LEASE_LOST when the token no longer holds an unexpired lease.
   */
  fail(leased: LeasedJob, failure: AttemptFailure): Promise<FailOutcome>;
  /**
   * Commits a dead event straight into the DLQ (status `dead`, its attempts and history). With a
   * `dedupKey` seen within 24 h for the same function on an entry still in the DLQ: that entry (`created: false`).
   * @throws StratusError INVALID_ARGUMENT for an empty history, a bad key or limits.
   */
  recordDead(event: DeadEvent): Promise<{ job: JobRecord; created: boolean }>;
  /** Null when absent. */
  get(id: string): Promise<JobRecord | null>;
  /** Dead jobs of a function, newest first (at most `limit`, default 100, at most 1000). */
  listDead(functionName: string, limit?: number): Promise<JobRecord[]>;
  /**
   * Re-enqueues a dead job as a new job (fresh attempts and age; origin `replay`) and marks the dead
   * one `replayed`, in one transaction. @throws StratusError NOT_FOUND when no such dead job exists.
   */
  replay(id: string): Promise<JobRecord>;
  /** Deletes every dead job of a function; returns how many. */
  purgeDead(functionName: string): Promise<number>;
  /** Job counts of a function by status. */
  counts(functionName: string): Promise<Record<JobStatus, number>>;
  /** Function names with queued or running jobs (what a worker polls). */
  activeFunctions(): Promise<string[]>;
  /**
   * Claims `(triggerId, slotTime)`; when the claim is new and `job` is given, enqueues it in the same
   * transaction. Returns the job, or null when the slot was already claimed (or `job` was null: a skip).
   */
  claimSlot(triggerId: string, slotTime: number, job: NewJob | null): Promise<{ claimed: boolean; job: JobRecord | null }>;
  /** The newest claimed slot of a trigger, or null. */
  lastSlot(triggerId: string): Promise<number | null>;
  /** Deletes finished jobs (succeeded, replayed) that ended before `olderThan`; returns how many. */
  purgeFinished(olderThan: number): Promise<number>;
  /** Idempotent. */
  close(): Promise<void>;
}
