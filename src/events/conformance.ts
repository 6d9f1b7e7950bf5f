/**
 * The conformance suite every JobQueue implementation runs (test/queue-sqlite.test.ts against a real
 * SQLite file, test/queue-postgres.test.ts against a real PostgreSQL). Each case gets a fresh, empty
 * queue on a fake clock it controls, and closes what it opened.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { IDEMPOTENCY_WINDOW_MS, RESULT_BODY_MAX, type JobQueue, type NewJob } from "./queue";
import type { JobQueueOptions } from "./queue-rules";

/** What a factory returns. `open` opens another queue over the same data (a second control plane, or a restart). */
export interface QueueHarness {
  readonly queue: JobQueue;
  readonly open: (options: JobQueueOptions) => Promise<JobQueue>;
  readonly cleanup?: () => Promise<void>;
}

/** A clock the cases move by hand. */
export interface FakeClock {
  now: () => number;
  advance: (ms: number) => void;
}

function fakeClock(start = 1_750_000_000_000): FakeClock {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

const body = (s: string) => Buffer.from(s).toString("base64");
const job = (extra: Partial<NewJob> = {}): NewJob => ({
  functionName: "fn",
  request: { method: "POST", path: "/work?x=1", headers: { "content-type": "text/plain" }, bodyBase64: body("hello") },
  origin: { kind: "async" },
  maxAttempts: 3,
  maxEventAgeS: 3600,
  retryDelayMs: 1000,
  ...extra,
});
const ok = { status: 200, contentType: "text/plain", bodyBase64: body("done"), startedAt: null };
const boom = { status: 500, errorCode: "FUNCTION_ERROR", errorMessage: "boom", startedAt: null };

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: { code?: string }) => {
    assert.equal(err.code, code);
    return true;
  });
}

/** Registers the suite under `describe(name)`. `factory` gets the options (clock, jitter) the queue must use. */
export function runQueueConformance(name: string, factory: (options: JobQueueOptions) => Promise<QueueHarness>): void {
  describe(`queue conformance: ${name}`, () => {
    const withQueue = (title: string, fn: (q: JobQueue, clock: FakeClock, h: QueueHarness, extra: JobQueue[]) => Promise<void>, random = () => 0.5) =>
      test(title, async () => {
        const clock = fakeClock();
        const h = await factory({ now: clock.now, random });
        const extra: JobQueue[] = [];
        try {
          await fn(h.queue, clock, h, extra);
        } finally {
          for (const q of extra) await q.close();
          await h.queue.close();
          await h.cleanup?.();
        }
      });

    withQueue("enqueue is durable: a job survives a reopen, queued, with its request", async (q, clock, h, extra) => {
      const { job: j, created } = await q.enqueue(job());
      assert.equal(created, true);
      assert.equal(j.status, "queued");
      assert.equal(j.attempts, 0);
      assert.equal(j.expiresAt, clock.now() + 3_600_000);
      const other = await h.open({ now: clock.now });
      extra.push(other);
      const seen = await other.get(j.id);
      assert.deepEqual(seen, j);
      assert.deepEqual(await other.activeFunctions(), ["fn"]);
      assert.equal(await other.get("nope"), null);
    });

    withQueue("lease → complete: succeeded with a bounded result and one attempt in the history", async (q, clock) => {
      const { job: j } = await q.enqueue(job());
      const [leased, ...more] = await q.lease("fn", 10, 30_000);
      assert.equal(more.length, 0);
      assert.ok(leased);
      assert.equal(leased.attempt, 1);
      assert.equal(leased.requestId, `${j.id}-1`);
      assert.equal(leased.job.status, "running");
      assert.deepEqual(await q.lease("fn", 10, 30_000), [], "a leased job is not leased twice");
      clock.advance(10);
      const big = Buffer.alloc(RESULT_BODY_MAX + 10, 0x61).toString("base64");
      const done = await q.complete(leased, { status: 201, contentType: "text/plain", bodyBase64: big, startedAt: clock.now() - 5 });
      assert.equal(done.status, "succeeded");
      assert.equal(done.result?.status, 201);
      assert.equal(done.result?.truncated, true);
      assert.equal(Buffer.from(done.result?.bodyBase64 ?? "", "base64").length, RESULT_BODY_MAX);
      assert.equal(done.history.length, 1);
      assert.equal(done.history[0]?.status, 201);
      assert.equal(done.finishedAt, clock.now());
      assert.deepEqual(await q.activeFunctions(), []);
      const c = await q.counts("fn");
      assert.equal(c.succeeded, 1);
      assert.equal(c.queued + c.running + c.dead, 0);
    });

    withQueue("a late completion from an expired lease is refused; the job is leased again and the lost attempt recorded", async (q, clock) => {
      await q.enqueue(job());
      const [first] = await q.lease("fn", 1, 1000);
      assert.ok(first);
      clock.advance(999);
      assert.deepEqual(await q.lease("fn", 1, 1000), [], "still leased 1 ms before expiry");
      clock.advance(1);
      await expectCode(q.complete(first, ok), "LEASE_LOST");
      const [second] = await q.lease("fn", 1, 1000);
      assert.ok(second);
      assert.equal(second.attempt, 2);
      assert.notEqual(second.token, first.token);
      await expectCode(q.complete(first, ok), "LEASE_LOST");
      await expectCode(q.fail(first, boom), "LEASE_LOST");
      const done = await q.complete(second, ok);
      assert.equal(done.status, "succeeded");
      assert.deepEqual(done.history.map((a) => [a.attempt, a.errorCode]), [[1, "LEASE_EXPIRED"], [2, null]]);
    });

    withQueue("failures back off exponentially with jitter, then the job is dead-lettered with every attempt", async (q, clock) => {
      const { job: j } = await q.enqueue(job());
      const delays: number[] = [];
      for (let attempt = 1; attempt <= 3; attempt++) {
        const [l] = await q.lease("fn", 1, 10_000);
        assert.ok(l, `attempt ${attempt} leased`);
        assert.equal(l.attempt, attempt);
        const r = await q.fail(l, { ...boom, status: 500 + attempt });
        if (attempt < 3) {
          assert.equal(r.next, "retry");
          assert.equal(r.job.status, "queued");
          delays.push(r.job.runAt - clock.now());
          clock.advance(r.job.runAt - clock.now() - 1);
          assert.deepEqual(await q.lease("fn", 1, 10_000), [], "not before runAt");
          clock.advance(1);
        } else {
          assert.equal(r.next, "dead");
          assert.equal(r.job.status, "dead");
          assert.equal(r.job.error?.code, "FUNCTION_ERROR");
        }
      }
      // random() = 0.5: 3/4 of 1000 × 2^(n-1).
      assert.deepEqual(delays, [750, 1500]);
      const [dead, ...rest] = await q.listDead("fn");
      assert.equal(rest.length, 0);
      assert.equal(dead?.id, j.id);
      assert.deepEqual(dead?.history.map((a) => [a.attempt, a.status, a.errorCode, a.requestId]), [
        [1, 501, "FUNCTION_ERROR", `${j.id}-1`], [2, 502, "FUNCTION_ERROR", `${j.id}-2`], [3, 503, "FUNCTION_ERROR", `${j.id}-3`]]);
      assert.deepEqual(dead?.request, j.request);

      const fresh = await q.replay(j.id);
      assert.notEqual(fresh.id, j.id);
      assert.equal(fresh.status, "queued");
      assert.deepEqual(fresh.origin, { kind: "replay", trigger: j.id });
      assert.equal((await q.get(j.id))?.status, "replayed");
      assert.equal((await q.get(j.id))?.replayedAs, fresh.id);
      assert.deepEqual(await q.listDead("fn"), []);
      await expectCode(q.replay(j.id), "NOT_FOUND");
      const [again] = await q.lease("fn", 1, 10_000);
      assert.equal(again?.job.id, fresh.id);
      assert.equal(again?.attempt, 1);
    });

    withQueue("jitter spans half to all of the delay; the delay is capped", async (q, clock) => {
      await q.enqueue(job({ retryDelayMs: 3_600_000, maxAttempts: 5, maxEventAgeS: 21_600 }));
      const [l] = await q.lease("fn", 1, 10_000);
      assert.ok(l);
      const r = await q.fail(l, boom);
      assert.equal(r.job.runAt - clock.now(), 15 * 60_000, "random() = 0.999…: the cap, 15 min");
    }, () => 0.9999999999);

    withQueue("maxEventAgeS: a retry that would start too late dead-letters at once; an old queued job is not run", async (q, clock) => {
      await q.enqueue(job({ maxEventAgeS: 2, retryDelayMs: 5000 }));
      const [l] = await q.lease("fn", 1, 10_000);
      assert.ok(l);
      const r = await q.fail(l, boom);
      assert.equal(r.next, "dead");
      assert.equal(r.job.error?.code, "MAX_EVENT_AGE");
      const { job: late } = await q.enqueue(job({ maxEventAgeS: 1, runAt: clock.now() + 5000 }));
      clock.advance(5000);
      assert.deepEqual(await q.lease("fn", 1, 10_000), []);
      const dead = await q.get(late.id);
      assert.equal(dead?.status, "dead");
      assert.equal(dead?.error?.code, "MAX_EVENT_AGE");
    });

    withQueue("an expired lease on the last attempt dead-letters the job when it is next leased", async (q, clock) => {
      const { job: j } = await q.enqueue(job({ maxAttempts: 1 }));
      const [l] = await q.lease("fn", 1, 1000);
      assert.ok(l);
      clock.advance(1000);
      assert.deepEqual(await q.lease("fn", 1, 1000), []);
      const dead = await q.get(j.id);
      assert.equal(dead?.status, "dead");
      assert.equal(dead?.error?.code, "LEASE_EXPIRED");
      assert.deepEqual(dead?.history.map((a) => a.errorCode), ["LEASE_EXPIRED"]);
      await expectCode(q.complete(l, ok), "LEASE_LOST");
    });

    withQueue("idempotency: same key and payload → the original job; another payload → IDEMPOTENCY_CONFLICT; a new job after 24 h", async (q, clock) => {
      const a = await q.enqueue(job({ idempotencyKey: "order-1" }));
      const b = await q.enqueue(job({ idempotencyKey: "order-1" }));
      assert.equal(b.created, false);
      assert.equal(b.job.id, a.job.id);
      await expectCode(q.enqueue(job({ idempotencyKey: "order-1", request: { ...job().request, bodyBase64: body("other") } })), "IDEMPOTENCY_CONFLICT");
      const otherFn = await q.enqueue(job({ idempotencyKey: "order-1", functionName: "fn2" }));
      assert.equal(otherFn.created, true, "keys are per function");
      await expectCode(q.enqueue(job({ idempotencyKey: "bad key\n" })), "INVALID_ARGUMENT");
      clock.advance(IDEMPOTENCY_WINDOW_MS + 1);
      const c = await q.enqueue(job({ idempotencyKey: "order-1" }));
      assert.equal(c.created, true);
      assert.notEqual(c.job.id, a.job.id);
      assert.equal((await q.get(a.job.id))?.idempotencyKey, null, "the old job gave the key up");
    });

    withQueue("concurrent enqueues with one key create one job", async (q) => {
      const results = await Promise.all(Array.from({ length: 8 }, () => q.enqueue(job({ idempotencyKey: "k" }))));
      assert.equal(new Set(results.map((r) => r.job.id)).size, 1);
      assert.equal(results.filter((r) => r.created).length, 1);
    });

    withQueue("concurrent leases from two queues never hand out one job twice", async (q, clock, h, extra) => {
      const other = await h.open({ now: clock.now });
      extra.push(other);
      for (let i = 0; i < 40; i++) await q.enqueue(job());
      const batches = await Promise.all([q.lease("fn", 15, 10_000), other.lease("fn", 15, 10_000), q.lease("fn", 15, 10_000), other.lease("fn", 15, 10_000)]);
      const ids = batches.flat().map((l) => l.job.id);
      assert.equal(ids.length, 40);
      assert.equal(new Set(ids).size, 40);
      assert.deepEqual(await q.lease("fn", 10, 10_000), []);
      assert.deepEqual(await q.lease("other", 10, 10_000), [], "leases are per function");
    });

    withQueue("schedule slots: claimed once across queues; a skip claims without a job; lastSlot", async (q, clock, h, extra) => {
      const other = await h.open({ now: clock.now });
      extra.push(other);
      assert.equal(await q.lastSlot("t1"), null);
      const claims = await Promise.all([q.claimSlot("t1", 60_000, job()), other.claimSlot("t1", 60_000, job()), q.claimSlot("t1", 60_000, job())]);
      assert.equal(claims.filter((c) => c.claimed).length, 1);
      const winner = claims.find((c) => c.claimed);
      assert.ok(winner?.job);
      assert.equal((await q.get(winner.job.id))?.status, "queued");
      assert.equal((await q.counts("fn")).queued, 1, "losers enqueued nothing");
      const skip = await q.claimSlot("t1", 120_000, null);
      assert.deepEqual(skip, { claimed: true, job: null });
      assert.equal(await other.lastSlot("t1"), 120_000);
      assert.equal(await q.lastSlot("t2"), null);
    });

    withQueue("recordDead: an event dead-lettered outside the queue enters the DLQ with its attempts, once per key; it replays", async (q, clock, h, extra) => {
      const request = { method: "POST", path: "/", headers: { "ce-id": "orders:7", "ce-specversion": "1.0" }, bodyBase64: body("msg") };
      const attempt = (n: number) => ({ attempt: n, requestId: `ev-abc-${n}`, startedAt: clock.now() - 5, endedAt: clock.now(), status: 500, errorCode: "FUNCTION_ERROR", errorMessage: `boom ${n}` });
      const event = {
        functionName: "fn", request, origin: { kind: "event" as const, trigger: "fn#0:abcd", eventId: "orders:7" }, history: [attempt(1), attempt(2), attempt(3)],
        error: { code: "FUNCTION_ERROR", message: "boom 3" }, maxAttempts: 3, maxEventAgeS: 3600, retryDelayMs: 1000, dedupKey: "event:fn#0:abcd:orders:7",
      };
      const { job: dead, created } = await q.recordDead(event);
      assert.equal(created, true);
      assert.equal(dead.status, "dead");
      assert.equal(dead.attempts, 3);
      assert.equal(dead.finishedAt, clock.now());
      assert.deepEqual(dead.origin, event.origin);
      const other = await h.open({ now: clock.now });
      extra.push(other);
      const again = await other.recordDead(event);
      assert.equal(again.created, false, "the same key within 24 h: the entry recorded before");
      assert.equal(again.job.id, dead.id);
      const [listed, ...rest] = await other.listDead("fn");
      assert.equal(rest.length, 0);
      assert.equal(listed?.id, dead.id);
      assert.deepEqual(listed?.history.map((a) => [a.attempt, a.status, a.errorCode, a.requestId]), [[1, 500, "FUNCTION_ERROR", "ev-abc-1"], [2, 500, "FUNCTION_ERROR", "ev-abc-2"], [3, 500, "FUNCTION_ERROR", "ev-abc-3"]]);
      assert.deepEqual(listed?.request, request);
      assert.deepEqual(await q.activeFunctions(), [], "a dead entry is not work");
      assert.equal((await q.counts("fn")).dead, 1);
      await expectCode(q.recordDead({ ...event, history: [] }), "INVALID_ARGUMENT");
      const fresh = await q.replay(dead.id);
      assert.deepEqual(fresh.origin, { kind: "replay", trigger: dead.id, eventId: "orders:7" });
      assert.deepEqual(fresh.request, request);
      const [l] = await q.lease("fn", 1, 1000);
      assert.equal(l?.job.id, fresh.id);
      assert.equal(l?.attempt, 1);
      // Once the entry was replayed, the same message failing again is a new DLQ entry, not hidden by the key.
      const later = await q.recordDead(event);
      assert.equal(later.created, true);
      assert.notEqual(later.job.id, dead.id);
      assert.deepEqual((await q.listDead("fn")).map((j) => j.id), [later.job.id]);
    });

    withQueue("purgeDead removes the DLQ of one function; purgeFinished removes old finished jobs", async (q, clock) => {
      for (const fn of ["fn", "fn", "fn2"]) {
        await q.enqueue(job({ functionName: fn, maxAttempts: 1 }));
        const [l] = await q.lease(fn, 1, 1000);
        assert.ok(l);
        await q.fail(l, boom);
      }
      await q.enqueue(job());
      const [l] = await q.lease("fn", 1, 1000);
      assert.ok(l);
      await q.complete(l, ok);
      assert.equal(await q.purgeDead("fn"), 2);
      assert.equal((await q.listDead("fn2")).length, 1);
      clock.advance(10);
      assert.equal(await q.purgeFinished(clock.now()), 1);
      assert.equal((await q.counts("fn")).succeeded, 0);
    });
  });
}
