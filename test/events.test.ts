// Async invocation, retries, the DLQ and schedules on a real platform (process driver, SQLite store and
// queue, real gateway and API, port 0): 202 only after the commit, the invocation id and attempt reach
// the function (and cannot be forged), idempotency keys, dead-lettering with every attempt and replay,
// asyncConcurrency, 1,000 jobs against a function failing 30 % of attempts, and a rate schedule across
// a restart firing each slot once. Needs root (bubblewrap, cgroups) and `npm run build`.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import Database from "better-sqlite3";
import { deploy, project, startPlatform, type PlatformFixture } from "./helpers/platform-fixture";

/** 30 % of attempts fail, decided by a hash of the job's body and the attempt number (so the test can predict it). */
const failsAttempt = (body: string, attempt: number): boolean => parseInt(createHash("sha256").update(`${body}:${attempt}`).digest("hex").slice(0, 8), 16) % 100 < 30;

const SOURCE = `
const { createHash } = require("node:crypto");
const failsAttempt = ${failsAttempt.toString()};
let running = 0, peak = 0;
module.exports.echo = {
  func: async (req, res) => {
    console.log("echo attempt", req.get("x-stratus-attempt"));
    res.json({ id: req.get("x-stratus-invocation-id") ?? null, attempt: req.get("x-stratus-attempt") ?? null, trigger: req.get("x-stratus-trigger") ?? null,
      ceId: req.get("ce-id") ?? null, path: req.originalUrl, method: req.method, body: req.rawBody ? req.rawBody.toString() : "", auth: req.get("authorization") ?? null });
  },
  config: { timeout: 5000, retryDelayMs: 10 },
};
module.exports.private = { func: (req, res) => res.send("private ok"), config: { public: false } };
module.exports.failing = {
  func: (req, res) => { console.log("failing attempt " + req.get("x-stratus-attempt")); res.status(500).send("nope " + req.get("x-stratus-attempt")); },
  config: { maxAttempts: 2, retryDelayMs: 10 },
};
module.exports.slow = {
  func: async (req, res) => {
    running++; peak = Math.max(peak, running);
    await new Promise((r) => setTimeout(r, 150));
    running--;
    res.json({ peak });
  },
  config: { asyncConcurrency: 2, concurrency: 10, maxInstances: 1, retryDelayMs: 10 },
};
module.exports.flaky = {
  func: (req, res) => {
    const body = req.rawBody ? req.rawBody.toString() : "";
    if (failsAttempt(body, Number(req.get("x-stratus-attempt")))) return res.status(500).send("fail");
    res.send("ok");
  },
  config: { maxAttempts: 3, retryDelayMs: 1, asyncConcurrency: 16, concurrency: 16, maxInstances: 1, maxQueue: 1000, timeout: 10000 },
};
`;

let fx: PlatformFixture;
before(async () => {
  fx = await startPlatform({ "events.pollIntervalMs": 50, "events.scheduleIntervalMs": 100 });
  const d = await deploy(fx, await project({ "package.json": JSON.stringify({ name: "ev", main: "index.js" }), "index.js": SOURCE }));
  assert.equal(d.final?.type, "result", JSON.stringify(d.events));
});
after(async () => {
  await fx?.close();
});

const auth = () => ({ authorization: `Bearer ${fx.token}` });
const api = async (path: string, init: RequestInit = {}) => {
  const r = await fetch(`${fx.url}${path}`, { ...init, headers: { ...auth(), ...(init.headers as Record<string, string> | undefined) } });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> & { error?: { code: string } } };
};
const sendAsync = (fn: string, path = "", body = "", headers: Record<string, string> = {}) =>
  fetch(`${fx.url}/fn/${fn}${path}`, { method: "POST", headers: { "x-stratus-invocation-type": "async", "content-type": "text/plain", ...headers }, body });

interface JobView {
  invocationId: string; status: string; attempts: number; origin: { kind: string; trigger?: string; eventId?: string };
  result: { status: number; body: string } | null; error: { code: string } | null;
  history: Array<{ attempt: number; status: number | null; errorCode: string | null; requestId: string }>;
}
/** Polls the status URL until the job is finished (bounded). */
async function settled(id: string, timeoutMs = 30_000): Promise<JobView> {
  const until = Date.now() + timeoutMs;
  for (let i = 0; Date.now() < until; i++) {
    const r = await api(`/api/v1/invocations/${id}`);
    assert.equal(r.status, 200);
    const v = r.body as unknown as JobView;
    if (v.status === "succeeded" || v.status === "dead") return v;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`invocation ${id} did not finish within ${timeoutMs} ms`);
}

describe("async invocation", () => {
  test("202 with an invocation id and status URL; the function gets the id and attempt; the result is readable", async () => {
    const r = await sendAsync("echo", "/sub?x=1", "hello", { authorization: "Bearer not-for-the-function" });
    assert.equal(r.status, 202);
    const body = (await r.json()) as { invocationId: string; statusUrl: string; status: string };
    assert.equal(body.status, "queued");
    assert.match(body.invocationId, /^[0-9a-f-]{36}$/);
    assert.equal(body.statusUrl, `${fx.url}/api/v1/invocations/${body.invocationId}`);
    assert.equal(r.headers.get("location"), body.statusUrl);
    const done = await settled(body.invocationId);
    assert.equal(done.status, "succeeded");
    assert.equal(done.attempts, 1);
    assert.deepEqual(done.origin, { kind: "async" });
    assert.equal(done.result?.status, 200);
    const seen = JSON.parse(done.result?.body ?? "{}") as Record<string, unknown>;
    assert.deepEqual(seen, { id: body.invocationId, attempt: "1", trigger: null, ceId: null, path: "/sub?x=1", method: "POST", body: "hello", auth: null });
    assert.equal(done.history[0]?.requestId, `${body.invocationId}-1`);
    assert.equal((await api(`/api/v1/invocations/nope`)).body.error?.code, "NOT_FOUND");
  });

  test("a client cannot forge the event headers or the dispatch token; sync calls are unchanged", async () => {
    const r = await fetch(`${fx.url}/fn/echo`, { headers: { "x-stratus-invocation-id": "forged", "x-stratus-attempt": "9", "x-stratus-trigger": "echo#0:forged", "ce-id": "forged-event" } });
    assert.equal(r.status, 200);
    const seen = (await r.json()) as Record<string, unknown>;
    assert.equal(seen.id, null);
    assert.equal(seen.attempt, null);
    assert.equal(seen.trigger, null);
    assert.equal(seen.ceId, "forged-event", "a client's own CloudEvent headers reach the function");
    // …but its record does not claim a trigger, an event or an attempt: only a dispatch (valid token) does.
    const rid = r.headers.get("x-stratus-request-id");
    let records: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 100 && records.length === 0; i++) {
      records = (await api(`/api/v1/functions/echo/invocations?request=${rid}`)).body.invocations as typeof records;
      if (records.length === 0) await new Promise((res) => setTimeout(res, 50));
    }
    assert.deepEqual(records.map((x) => [x.trigger, x.eventId, x.attempt]), [[null, null, null]]);
    const bad = await fetch(`${fx.url}/fn/echo`, { headers: { "x-stratus-dispatch-token": "guess" } });
    assert.equal(bad.status, 401);
    assert.equal(((await bad.json()) as { error: { code: string } }).error.code, "UNAUTHENTICATED");
  });

  test("a non-public function needs a token for async too", async () => {
    const refused = await sendAsync("private");
    assert.equal(refused.status, 401);
    const ok = await sendAsync("private", "", "", auth());
    assert.equal(ok.status, 202);
    const done = await settled(((await ok.json()) as { invocationId: string }).invocationId);
    assert.equal(done.result?.body, "private ok");
  });

  test("Idempotency-Key: the same key → the original id; another payload → 409 IDEMPOTENCY_CONFLICT", async () => {
    const key = { "idempotency-key": `order-${Date.now()}` };
    const a = (await (await sendAsync("echo", "", "one", key)).json()) as { invocationId: string; created: boolean };
    assert.equal(a.created, true);
    const again = await sendAsync("echo", "", "one", key);
    assert.equal(again.status, 202);
    const b = (await again.json()) as { invocationId: string; created: boolean };
    assert.equal(b.invocationId, a.invocationId);
    assert.equal(b.created, false);
    const conflict = await sendAsync("echo", "", "two", key);
    assert.equal(conflict.status, 409);
    assert.equal(((await conflict.json()) as { error: { code: string } }).error.code, "IDEMPOTENCY_CONFLICT");
    await settled(a.invocationId);
  });

  test("a body over maxBodyBytes is refused before anything is queued", async () => {
    const r = await sendAsync("echo", "", "x".repeat(7 * 1024 * 1024));
    assert.equal(r.status, 413);
  });

  test("asyncConcurrency bounds a backlog: at most 2 of 8 jobs run at once", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push(((await (await sendAsync("slow", "", String(i))).json()) as { invocationId: string }).invocationId);
    let peak = 0;
    for (const id of ids) {
      const v = await settled(id);
      assert.equal(v.status, "succeeded");
      peak = Math.max(peak, (JSON.parse(v.result?.body ?? "{}") as { peak: number }).peak);
    }
    assert.equal(peak, 2, "the instance saw at most 2 concurrent async requests (and did see 2)");
  });
});

describe("retries and the dead-letter queue", () => {
  test("a failing job is retried, dead-lettered with every attempt, inspectable with its logs, replayed and purged", async () => {
    const r = await sendAsync("failing", "/x", "payload");
    const { invocationId: id } = (await r.json()) as { invocationId: string };
    const dead = await settled(id);
    assert.equal(dead.status, "dead");
    assert.equal(dead.attempts, 2);
    assert.deepEqual(dead.history.map((a) => [a.attempt, a.status, a.errorCode, a.requestId]), [[1, 500, "FUNCTION_ERROR", `${id}-1`], [2, 500, "FUNCTION_ERROR", `${id}-2`]]);

    const list = await api("/api/v1/functions/failing/dlq");
    const entries = list.body.entries as Array<{ invocationId: string; lastRequestId: string }>;
    assert.deepEqual(entries.map((e) => e.invocationId), [id]);
    const shown = await api(`/api/v1/functions/failing/dlq/${id}`);
    assert.equal(shown.status, 200);
    const request = shown.body.request as { method: string; path: string; body: string; headers: Record<string, string> };
    assert.equal(request.method, "POST");
    assert.equal(request.path, "/x");
    assert.equal(request.body, "payload");
    assert.equal(request.headers["x-stratus-invocation-type"], undefined, "platform headers are not stored");
    // Each attempt's request id finds its invocation record and its REPORT log line.
    let records: Array<{ status: number; requestId: string }> = [];
    let lines: Array<{ message: string }> = [];
    for (let i = 0; i < 100 && (records.length === 0 || lines.length === 0); i++) {
      records = (await api(`/api/v1/functions/failing/invocations?request=${id}-2`)).body.invocations as typeof records;
      lines = (await api(`/api/v1/functions/failing/logs?request=${id}-2`)).body.lines as typeof lines;
      if (records.length === 0 || lines.length === 0) await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(records[0]?.status, 500);
    assert.deepEqual(records.map((r) => [(r as { attempt?: unknown }).attempt, (r as { trigger?: unknown }).trigger, (r as { eventId?: unknown }).eventId]), [[2, null, null]], "the record says which attempt");
    assert.ok(lines.some((l) => l.message.startsWith(`REPORT RequestId: ${id}-2`) && l.message.includes("\tAttempt: 2")), JSON.stringify(lines));
    assert.equal((await api(`/api/v1/functions/echo/dlq/${id}`)).status, 404, "a DLQ entry belongs to its function");

    const replay = await api(`/api/v1/functions/failing/dlq/${id}/replay`, { method: "POST" });
    assert.equal(replay.status, 202);
    const fresh = replay.body.invocationId as string;
    assert.notEqual(fresh, id);
    assert.equal(((await api(`/api/v1/invocations/${id}`)).body as { status: string }).status, "replayed");
    const again = await settled(fresh);
    assert.equal(again.status, "dead");
    assert.deepEqual(again.origin, { kind: "replay", trigger: id });
    assert.equal((await api(`/api/v1/functions/failing/dlq/${id}/replay`, { method: "POST" })).status, 404, "replayed once");
    const purged = await api("/api/v1/functions/failing/dlq", { method: "DELETE" });
    assert.deepEqual(purged.body, { purged: 1 });
    assert.deepEqual((await api("/api/v1/functions/failing/dlq")).body.entries, []);
  });

  test("1,000 jobs, 30 % of attempts failing: none lost, the DLQ holds exactly the jobs that failed all 3 attempts", async () => {
    const N = 1000;
    const bodies = Array.from({ length: N }, (_, i) => `job-${i}`);
    const expectedDead = bodies.filter((b) => [1, 2, 3].every((a) => failsAttempt(b, a))).length;
    const ids: string[] = [];
    // 20 clients at once.
    for (let i = 0; i < N; i += 20) {
      const batch = await Promise.all(bodies.slice(i, i + 20).map(async (b) => {
        const r = await sendAsync("flaky", "", b);
        assert.equal(r.status, 202);
        return ((await r.json()) as { invocationId: string }).invocationId;
      }));
      ids.push(...batch);
    }
    assert.equal(new Set(ids).size, N);
    const file = join(fx.dataDir, "stratus.db");
    const db = new Database(file, { readonly: true });
    try {
      const count = () => Object.fromEntries((db.prepare("SELECT status, COUNT(*) AS n FROM event_jobs WHERE function_name = 'flaky' GROUP BY status").all() as Array<{ status: string; n: number }>).map((r) => [r.status, r.n]));
      const until = Date.now() + 240_000;
      let c = count();
      while (Date.now() < until && (c.succeeded ?? 0) + (c.dead ?? 0) < N) {
        await new Promise((res) => setTimeout(res, 200));
        c = count();
      }
      assert.equal((c.succeeded ?? 0) + (c.dead ?? 0), N, `every job finished: ${JSON.stringify(c)}`);
      assert.equal(c.dead ?? 0, expectedDead, "DLQ count = jobs that exhausted their retries");
      assert.ok(expectedDead > 0, "the hash makes some jobs exhaust their retries");
      // Each job's attempts match the prediction exactly: the first passing attempt, or 3 failures.
      const rows = db.prepare("SELECT request, attempts, status FROM event_jobs WHERE function_name = 'flaky'").all() as Array<{ request: string; attempts: number; status: string }>;
      for (const row of rows) {
        const b = Buffer.from((JSON.parse(row.request) as { bodyBase64: string }).bodyBase64, "base64").toString();
        const firstOk = [1, 2, 3].find((a) => !failsAttempt(b, a));
        assert.equal(row.attempts, firstOk ?? 3, b);
        assert.equal(row.status, firstOk === undefined ? "dead" : "succeeded", b);
      }
      const dlq = await api("/api/v1/functions/flaky/dlq?limit=1000");
      assert.equal((dlq.body.entries as unknown[]).length, expectedDead);
    } finally {
      db.close();
    }
  });
});

describe("a deleted function", () => {
  test("its queued jobs are not stuck: they fail with FUNCTION_NOT_FOUND and end in the DLQ", async () => {
    const d = await deploy(fx, await project({
      "package.json": JSON.stringify({ name: "gone", main: "index.js" }),
      "index.js": `module.exports.gone = { func: async (req, res) => { await new Promise((r) => setTimeout(r, 500)); res.send("ok"); }, config: { asyncConcurrency: 1 } };`,
    }));
    assert.equal(d.final?.type, "result", JSON.stringify(d.events));
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(((await (await sendAsync("gone", "", String(i))).json()) as { invocationId: string }).invocationId);
    assert.equal((await api("/api/v1/functions/gone", { method: "DELETE" })).status, 200);
    const ends = await Promise.all(ids.map((id) => settled(id, 60_000)));
    const dead = ends.filter((e) => e.status === "dead");
    assert.ok(dead.length >= 2, `at most the one running at the delete can have succeeded: ${JSON.stringify(ends.map((e) => e.status))}`);
    for (const e of dead) assert.equal(e.error?.code, "FUNCTION_NOT_FOUND");
    assert.equal(((await api("/api/v1/functions/gone/dlq")).body.entries as unknown[]).length, dead.length, "a deleted function's DLQ stays readable");
  });
});

describe("schedules", () => {
  test("a rate trigger across a restart fires each slot once (catchUp all), through the async path", async () => {
    const d = await deploy(fx, await project({
      "package.json": JSON.stringify({ name: "tick", main: "index.js" }),
      "index.js": `module.exports.ticker = { func: (req, res) => res.json({ ce: req.get("ce-id"), trigger: req.get("x-stratus-trigger"), type: req.get("ce-type") }),
        config: { triggers: [{ rate: "1 second", catchUp: "all" }], retryDelayMs: 10 } };`,
    }));
    assert.equal(d.final?.type, "result", JSON.stringify(d.events));
    const triggers = (await api("/api/v1/functions/ticker/triggers")).body.triggers as Array<{ id: string; kind: string; rate: string; catchUp: string }>;
    assert.equal(triggers.length, 1);
    assert.equal(triggers[0]?.kind, "rate");
    assert.equal(triggers[0]?.catchUp, "all");
    const file = join(fx.dataDir, "stratus.db");
    const slots = () => {
      const db = new Database(file, { readonly: true });
      try {
        return db.prepare(`SELECT s.slot_time AS slot, s.job_id AS job, j.status AS status, j.origin AS origin, j.result AS result
          FROM event_slots s LEFT JOIN event_jobs j ON j.id = s.job_id WHERE s.trigger_id = ? ORDER BY s.slot_time`).all(triggers[0]?.id) as
          Array<{ slot: number; job: string | null; status: string | null; origin: string | null; result: string | null }>;
      } finally {
        db.close();
      }
    };
    const waitFor = async (pred: () => boolean, what: string) => {
      for (let i = 0; i < 300 && !pred(); i++) await new Promise((res) => setTimeout(res, 50));
      assert.ok(pred(), what);
    };
    await waitFor(() => slots().length >= 2, "two slots before the restart");
    await fx.restart();
    const downAt = Date.now();
    await waitFor(() => slots().filter((s) => s.slot > downAt + 2000).length >= 2 && slots().every((s) => s.status === "succeeded"), "slots after the restart, all done");
    const all = slots();
    for (let i = 1; i < all.length; i++) assert.equal((all[i]?.slot ?? 0) - (all[i - 1]?.slot ?? 0), 1000, "contiguous: no slot lost over the restart, none twice");
    for (const s of all) {
      assert.ok(s.job !== null);
      const origin = JSON.parse(s.origin ?? "{}") as { kind: string; trigger: string; eventId: string };
      assert.equal(origin.kind, "schedule");
      assert.equal(origin.trigger, triggers[0]?.id);
      const seen = JSON.parse(Buffer.from((JSON.parse(s.result ?? "{}") as { bodyBase64: string }).bodyBase64, "base64").toString()) as { ce: string; trigger: string; type: string };
      assert.equal(seen.ce, origin.eventId);
      assert.equal(seen.ce, `${triggers[0]?.id}@${new Date(s.slot).toISOString()}`);
      assert.equal(seen.trigger, triggers[0]?.id);
      assert.equal(seen.type, "io.stratus.schedule.fired");
    }
    // The invocation records say which trigger, event and attempt (the API's filters find them).
    const eventId = (JSON.parse(all[0]?.origin ?? "{}") as { eventId: string }).eventId;
    let recs: Array<{ trigger: string | null; eventId: string | null; attempt: number | null; status: number }> = [];
    for (let i = 0; i < 100 && recs.length === 0; i++) {
      recs = (await api(`/api/v1/functions/ticker/invocations?event=${encodeURIComponent(eventId)}`)).body.invocations as typeof recs;
      if (recs.length === 0) await new Promise((res) => setTimeout(res, 50));
    }
    assert.deepEqual(recs.map((x) => [x.trigger, x.eventId, x.attempt, x.status]), [[triggers[0]?.id, eventId, 1, 200]]);
    const byTrigger = (await api(`/api/v1/functions/ticker/invocations?trigger=${encodeURIComponent(triggers[0]?.id ?? "")}&limit=1000`)).body.invocations as typeof recs;
    assert.ok(byTrigger.length >= 2 && byTrigger.every((x) => x.trigger === triggers[0]?.id), "every slot's record carries the trigger");
  });
});
