/**
 * `createJobQueue`: the queue's rules over a QueuePersistence (src/events/queue-persistence.ts) — the
 * one place that decides backoff, dead-lettering, idempotency and what a refused fence means, so the
 * SQLite and PostgreSQL implementations cannot drift apart.
 *
 * Backoff: attempt n (1-based) that failed waits `retryDelayMs × 2^(n-1)`, capped at BACKOFF_CAP_MS,
 * then "equal jitter" (a uniform draw from half to all of it), so a burst of failures spreads out
 * instead of retrying in lock-step. A job whose next attempt would start after `expiresAt`, or that
 * is out of attempts, goes to the DLQ.
 */
import { createHash, randomUUID } from "node:crypto";
import { StratusError } from "../shared/errors";
import type { QueuePersistence, SettlePatch } from "./queue-persistence";
import {
  IDEMPOTENCY_WINDOW_MS, JOB_STATUSES, RESULT_BODY_MAX, type JobAttempt, type JobQueue, type JobRecord,
  type JobStatus, type LeasedJob, type NewJob,
} from "./queue";

/** Longest wait between two attempts, ms (15 min, as Lambda's async retries top out in minutes). */
export const BACKOFF_CAP_MS = 15 * 60_000;

/** Options of `createJobQueue`. */
export interface JobQueueOptions {
  /** Clock, epoch ms (default Date.now). Tests pass a fake one. */
  readonly now?: () => number;
  /** Uniform [0, 1) (default Math.random), for the jitter. */
  readonly random?: () => number;
}

const KEY_OK = /^[\x21-\x7e]{1,255}$/;

/** sha256 hex over method, path and body: what "the same payload" means for an idempotency key. */
export function payloadHashOf(request: NewJob["request"]): string {
  return createHash("sha256").update(request.method).update("\n").update(request.path).update("\n").update(request.bodyBase64).digest("hex");
}

/** The delay before the attempt after failed attempt `attempt`, ms, with `r` ∈ [0, 1) the jitter draw. */
export function backoffMs(retryDelayMs: number, attempt: number, r: number): number {
  const full = Math.min(BACKOFF_CAP_MS, retryDelayMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(full / 2 + (full / 2) * r);
}

/** The request id of attempt `attempt` of job `id`. */
export const attemptRequestId = (id: string, attempt: number): string => `${id}-${attempt}`;

/** Builds the queue over `persistence` (which it closes on `close`). */
export function createJobQueue(persistence: QueuePersistence, options: JobQueueOptions = {}): JobQueue {
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  let closed = false;

  /** History with an entry for every attempt that started but never ended (its lease expired). */
  function withLostAttempts(job: JobRecord, upTo: number, at: number): JobAttempt[] {
    const history = [...job.history];
    for (let n = (history.at(-1)?.attempt ?? 0) + 1; n <= upTo; n++) {
      history.push({
        attempt: n, requestId: attemptRequestId(job.id, n), startedAt: null, endedAt: at, status: null,
        errorCode: "LEASE_EXPIRED", errorMessage: "The worker's lease expired before the attempt ended (platform restart or a stuck worker)",
      });
    }
    return history;
  }

  function newRecord(job: NewJob, at: number, id = randomUUID()): JobRecord {
    if (!Number.isInteger(job.maxAttempts) || job.maxAttempts < 1) throw new StratusError("INVALID_ARGUMENT", "maxAttempts must be a positive integer");
    if (!(job.maxEventAgeS > 0)) throw new StratusError("INVALID_ARGUMENT", "maxEventAgeS must be positive");
    const key = job.idempotencyKey ?? null;
    if (key !== null && !KEY_OK.test(key)) throw new StratusError("INVALID_ARGUMENT", "Idempotency-Key must be 1–255 printable ASCII characters");
    return {
      id, functionName: job.functionName, status: "queued", origin: job.origin, request: job.request, attempts: 0, maxAttempts: job.maxAttempts,
      createdAt: at, updatedAt: at, runAt: job.runAt ?? at, expiresAt: at + job.maxEventAgeS * 1000, leaseExpiresAt: null, history: [], result: null,
      error: null, idempotencyKey: key, payloadHash: payloadHashOf(job.request), retryDelayMs: job.retryDelayMs, finishedAt: null, replayedAs: null,
    };
  }

  async function settle(leased: LeasedJob, patch: SettlePatch): Promise<JobRecord> {
    const done = await persistence.settle(leased.job.id, leased.token, now(), patch);
    if (done === null) throw new StratusError("LEASE_LOST", `The lease on invocation ${leased.job.id} (attempt ${leased.attempt}) expired or was taken over; the result is discarded`);
    return done;
  }

  function open(): void {
    if (closed) throw new StratusError("INTERNAL", "The job queue is closed");
  }

  return {
    async enqueue(job) {
      open();
      const at = now();
      const record = newRecord(job, at);
      const r = await persistence.insertJob(record, at - IDEMPOTENCY_WINDOW_MS);
      if (!r.created && r.job.payloadHash !== record.payloadHash) {
        throw new StratusError("IDEMPOTENCY_CONFLICT", `Idempotency-Key "${record.idempotencyKey}" was used within 24 h with a different request (invocation ${r.job.id})`);
      }
      return r;
    },

    async lease(functionName, limit, visibilityMs) {
      open();
      if (limit <= 0) return [];
      const at = now();
      const claimed = await persistence.claimJobs(functionName, limit, at, at + visibilityMs);
      const out: LeasedJob[] = [];
      for (const { job, token } of claimed) {
        const attempt = job.attempts;
        const leased: LeasedJob = { job, token, attempt, requestId: attemptRequestId(job.id, attempt) };
        // Out of attempts (the last one's lease expired) or too old: dead-letter instead of running it.
        if (attempt > job.maxAttempts || at > job.expiresAt) {
          const history = withLostAttempts(job, attempt - 1, at);
          const last = history.at(-1);
          const error = at > job.expiresAt
            ? { code: "MAX_EVENT_AGE", message: "The job is older than its function's maxEventAgeS" }
            : { code: last?.errorCode ?? "LEASE_EXPIRED", message: last?.errorMessage ?? "Out of attempts" };
          await settle(leased, { status: "dead", runAt: job.runAt, history, result: null, error, finishedAt: at }).catch((err: unknown) => {
            if ((err as { code?: string }).code !== "LEASE_LOST") throw err;
          });
          continue;
        }
        out.push(leased);
      }
      return out;
    },

    async complete(leased, result) {
      open();
      const at = now();
      const body = Buffer.from(result.bodyBase64, "base64");
      const kept = body.length > RESULT_BODY_MAX ? body.subarray(0, RESULT_BODY_MAX) : body;
      const history = withLostAttempts(leased.job, leased.attempt - 1, at);
      history.push({ attempt: leased.attempt, requestId: leased.requestId, startedAt: result.startedAt, endedAt: at, status: result.status, errorCode: null, errorMessage: null });
      return settle(leased, {
        status: "succeeded", runAt: leased.job.runAt, history, error: null, finishedAt: at,
        result: { status: result.status, contentType: result.contentType, bodyBase64: kept.toString("base64"), truncated: kept.length < body.length },
      });
    },

    async fail(leased, failure) {
      open();
      const at = now();
      const job = leased.job;
      const history = withLostAttempts(job, leased.attempt - 1, at);
      history.push({
        attempt: leased.attempt, requestId: leased.requestId, startedAt: failure.startedAt, endedAt: at, status: failure.status,
        errorCode: failure.errorCode, errorMessage: failure.errorMessage.slice(0, 2000),
      });
      const runAt = at + backoffMs(job.retryDelayMs, leased.attempt, random());
      const error = { code: failure.errorCode, message: failure.errorMessage.slice(0, 2000) };
      if (leased.attempt >= job.maxAttempts || runAt > job.expiresAt) {
        const why = leased.attempt >= job.maxAttempts ? error : { code: "MAX_EVENT_AGE", message: `The next attempt would start after maxEventAgeS (last error ${failure.errorCode})` };
        return { next: "dead", job: await settle(leased, { status: "dead", runAt: job.runAt, history, result: null, error: why, finishedAt: at }) };
      }
      return { next: "retry", job: await settle(leased, { status: "queued", runAt, history, result: null, error, finishedAt: null }) };
    },

    async recordDead(event) {
      open();
      const last = event.history.at(-1);
      if (last === undefined) throw new StratusError("INVALID_ARGUMENT", "A dead event needs at least one attempt");
      const at = now();
      const base = newRecord({
        functionName: event.functionName, request: event.request, origin: event.origin, maxAttempts: event.maxAttempts,
        maxEventAgeS: event.maxEventAgeS, retryDelayMs: event.retryDelayMs, idempotencyKey: event.dedupKey,
      }, at);
      const record: JobRecord = {
        ...base, status: "dead", attempts: last.attempt, history: event.history.map((a) => ({ ...a, errorMessage: a.errorMessage?.slice(0, 2000) ?? null })),
        error: { code: event.error.code, message: event.error.message.slice(0, 2000) }, finishedAt: at,
      };
      // The same persistence insert as enqueue: one atomic step, with the same key rule (here: dedup).
      const r = await persistence.insertJob(record, at - IDEMPOTENCY_WINDOW_MS);
      if (r.created || r.job.status === "dead") return r;
      // The earlier entry was replayed (or purged into another state): this failure is a new one, and
      // must be visible in the DLQ — take the key over (any holder is "older" than +∞).
      return persistence.insertJob(record, Number.MAX_SAFE_INTEGER);
    },

    get: (id) => persistence.getJob(id),
    listDead: (functionName, limit = 100) => persistence.listDead(functionName, Math.max(1, Math.min(1000, limit))),

    async replay(id) {
      open();
      const dead = await persistence.getJob(id);
      if (dead === null || dead.status !== "dead") throw new StratusError("NOT_FOUND", `No dead-lettered invocation ${id}`);
      const at = now();
      const fresh = newRecord({
        functionName: dead.functionName, request: dead.request, origin: { ...dead.origin, kind: "replay", trigger: dead.id }, maxAttempts: dead.maxAttempts,
        maxEventAgeS: Math.max(1, Math.round((dead.expiresAt - dead.createdAt) / 1000)), retryDelayMs: dead.retryDelayMs,
      }, at);
      const r = await persistence.replayDead(id, fresh, at);
      if (r === null) throw new StratusError("NOT_FOUND", `No dead-lettered invocation ${id}`);
      return r;
    },

    purgeDead: (functionName) => persistence.purgeDead(functionName),

    async counts(functionName) {
      const c = await persistence.counts(functionName);
      return Object.fromEntries(JOB_STATUSES.map((s) => [s, c[s] ?? 0])) as Record<JobStatus, number>;
    },

    activeFunctions: () => persistence.activeFunctions(),

    async claimSlot(triggerId, slotTime, job) {
      open();
      const at = now();
      const record = job === null ? null : newRecord(job, at);
      const claimed = await persistence.claimSlot(triggerId, slotTime, record, at);
      return { claimed, job: claimed ? record : null };
    },

    lastSlot: (triggerId) => persistence.lastSlot(triggerId),
    purgeFinished: (olderThan) => persistence.purgeFinished(olderThan),

    async close() {
      if (closed) return;
      closed = true;
      await persistence.close();
    },
  };
}
