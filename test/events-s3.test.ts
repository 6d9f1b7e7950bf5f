// S3-compatible bucket notifications on a real platform (process driver, SQLite store and queue, real
// gateway and API, port 0): the exact bodies MinIO, Ceph RGW and AWS document (test/fixtures/s3-events/)
// become CloudEvents delivered through the async worker; the trigger secret is checked (Bearer and
// Basic), malformed or oversized bodies are refused with nothing enqueued, a resend is one job, filters
// skip, a failing function is retried and dead-lettered. Needs root (bubblewrap, cgroups) and `npm run build`.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import Database from "better-sqlite3";
import { deploy, project, startPlatform, type PlatformFixture } from "./helpers/platform-fixture";
import { S3_NOTIFICATION_MAX_BYTES } from "../src/events/storage/s3-notifications";

const fixture = (name: string) => readFileSync(join("test/fixtures/s3-events", name));

const SOURCE = `
module.exports.onUpload = {
  func: (req, res) => {
    const ce = Object.fromEntries(Object.entries(req.headers).filter(([k]) => k.startsWith("ce-") || k === "content-type" || k === "x-stratus-trigger"));
    res.json({ headers: ce, body: req.rawBody ? req.rawBody.toString() : "" });
  },
  config: {
    retryDelayMs: 10,
    triggers: [
      { storage: { type: "s3", bucket: "images", secret: "MINIO_TOKEN" } },
      { storage: { type: "s3", bucket: "mybucket1", name: "ceph", secret: "CEPH_TOKEN" } },
      { storage: { type: "s3", bucket: "amzn-s3-demo-bucket", name: "aws", secret: "AWS_TOKEN", events: ["s3:ObjectCreated:*"], suffix: ".jpg" } },
    ],
  },
};
module.exports.unset = { func: (req, res) => res.send("x"), config: { triggers: [{ storage: { type: "s3", bucket: "images", secret: "NOT_SET" } }] } };
module.exports.failing = {
  func: (req, res) => res.status(500).send("nope"),
  config: { maxAttempts: 2, retryDelayMs: 10, triggers: [{ storage: { type: "s3", bucket: "images", secret: "MINIO_TOKEN" } }] },
};
`;

let fx: PlatformFixture;
before(async () => {
  fx = await startPlatform({ "events.pollIntervalMs": 50 });
  const d = await deploy(fx, await project({ "package.json": JSON.stringify({ name: "s3ev", main: "index.js" }), "index.js": SOURCE }));
  assert.equal(d.final?.type, "result", JSON.stringify(d.events));
  for (const [fn, set] of [["onUpload", { MINIO_TOKEN: "minio-secret-1", CEPH_TOKEN: "ceph-secret-2", AWS_TOKEN: "aws-secret-3" }], ["failing", { MINIO_TOKEN: "minio-secret-1" }]] as const) {
    const r = await fetch(`${fx.url}/api/v1/functions/${fn}/secrets`, { method: "PATCH", headers: { authorization: `Bearer ${fx.token}`, "content-type": "application/json" }, body: JSON.stringify({ set, unset: [] }) });
    assert.equal(r.status, 200, await r.text());
  }
});
after(async () => {
  await fx?.close();
});

const notify = (fn: string, trigger: string, body: Buffer | string, authorization?: string) =>
  fetch(`${fx.url}/api/v1/events/s3/${fn}/${trigger}`, { method: "POST", headers: { "content-type": "application/json", ...(authorization !== undefined ? { authorization } : {}) }, body });
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;

interface JobView {
  invocationId: string; status: string; attempts: number; origin: { kind: string; trigger?: string; eventId?: string };
  result: { status: number; body: string } | null; error: { code: string } | null;
}
async function settled(id: string, timeoutMs = 30_000): Promise<JobView> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const r = await fetch(`${fx.url}/api/v1/invocations/${id}`, { headers: { authorization: `Bearer ${fx.token}` } });
    assert.equal(r.status, 200);
    const v = (await r.json()) as JobView;
    if (v.status === "succeeded" || v.status === "dead") return v;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`invocation ${id} did not finish within ${timeoutMs} ms`);
}
/** Jobs of a function in the queue (the SQLite file beside the store). */
function jobCount(fn: string): number {
  const db = new Database(join(fx.dataDir, "stratus.db"), { readonly: true });
  try {
    return (db.prepare("SELECT COUNT(*) AS n FROM event_jobs WHERE function_name = ?").get(fn) as { n: number }).n;
  } finally {
    db.close();
  }
}
interface Seen { headers: Record<string, string>; body: string }
const seenOf = (v: JobView): Seen => JSON.parse(v.result?.body ?? "{}") as Seen;

describe("bucket notifications", () => {
  test("MinIO's webhook body (Bearer auth_token) → one CloudEvent in binary mode through the async worker", async () => {
    const r = await notify("onUpload", "images", fixture("minio-put.json"), "Bearer minio-secret-1");
    assert.equal(r.status, 200);
    const body = (await r.json()) as { accepted: number; duplicates: number; skipped: number; invocations: string[] };
    assert.deepEqual({ ...body, invocations: body.invocations.length }, { accepted: 1, duplicates: 0, skipped: 0, invocations: 1 });
    const done = await settled(body.invocations[0] as string);
    assert.equal(done.status, "succeeded");
    assert.equal(done.origin.kind, "storage");
    assert.equal(done.origin.trigger, "onUpload#storage:images");
    const seen = seenOf(done);
    assert.equal(seen.headers["ce-specversion"], "1.0");
    assert.equal(seen.headers["ce-type"], "com.amazonaws.s3.ObjectCreated:Put");
    assert.equal(seen.headers["ce-source"], "s3://images");
    assert.equal(seen.headers["ce-subject"], "myphoto.jpg");
    assert.equal(seen.headers["ce-time"], "2019-09-10T17:41:54.000Z");
    assert.match(seen.headers["ce-id"] ?? "", /^[0-9a-f]{40}$/);
    assert.equal(seen.headers["ce-id"], done.origin.eventId);
    assert.equal(seen.headers["x-stratus-trigger"], "onUpload#storage:images");
    assert.match(seen.headers["content-type"] ?? "", /^application\/json/);
    const data = JSON.parse(seen.body) as Record<string, unknown>;
    assert.equal(data.bucket, "images");
    assert.equal(data.key, "myphoto.jpg");
    assert.equal(data.size, 6474);
    assert.equal(data.etag, "430f89010c77aa34fc8760696da62d08-1");
    assert.equal(data.eventName, "ObjectCreated:Put");
    assert.equal(data.eventTime, "2019-09-10T17:41:54Z");
    assert.equal(data.eventSource, "minio:s3");
    assert.equal(data.sequencer, "15C32494527B46C5");
    assert.equal((data.record as { source: { host: string } }).source.host, "192.168.56.192");
  });

  test("a resent notification is the same job: 200, duplicates 1, the function ran once", async () => {
    const before = jobCount("onUpload");
    const a = (await (await notify("onUpload", "images", fixture("minio-put.json"), "Bearer minio-secret-1")).json()) as { accepted: number; duplicates: number; invocations: string[] };
    assert.equal(a.accepted, 0);
    assert.equal(a.duplicates, 1);
    const b = (await (await notify("onUpload", "images", fixture("minio-put.json"), "Bearer minio-secret-1")).json()) as { invocations: string[] };
    assert.deepEqual(b.invocations, a.invocations);
    assert.equal(jobCount("onUpload"), before);
    assert.equal((await settled(a.invocations[0] as string)).attempts, 1);
  });

  test("Ceph RGW's documented body (Basic auth, size as a string, no s3: prefix)", async () => {
    const r = await notify("onUpload", "ceph", fixture("ceph-put.json"), basic("stratus", "ceph-secret-2"));
    assert.equal(r.status, 200);
    const { invocations } = (await r.json()) as { invocations: string[] };
    const seen = seenOf(await settled(invocations[0] as string));
    assert.equal(seen.headers["ce-type"], "com.amazonaws.s3.ObjectCreated:Put");
    assert.equal(seen.headers["ce-source"], "s3://mybucket1");
    const data = JSON.parse(seen.body) as Record<string, unknown>;
    assert.deepEqual([data.key, data.size, data.etag, data.region], ["myimage1.jpg", 1024, "37b51d194a7513e45b56f6524f2d51f2", "zonegroup1"]);
  });

  test("AWS's documented body; URL-encoded keys are decoded; events and suffix filters skip; s3:TestEvent is accepted empty", async () => {
    const aws = JSON.parse(fixture("aws-put.json").toString()) as { Records: Array<{ eventName: string; s3: { object: { key: string; sequencer: string } } }> };
    const r = await notify("onUpload", "aws", fixture("aws-put.json"), "Bearer aws-secret-3");
    assert.equal(r.status, 200);
    const first = (await r.json()) as { accepted: number; invocations: string[] };
    assert.equal(first.accepted, 1);
    assert.equal(JSON.parse(seenOf(await settled(first.invocations[0] as string)).body).key, "HappyFace.jpg");

    const encoded = structuredClone(aws);
    encoded.Records[0]!.s3.object.key = "photos/Happy+Face%3D1.jpg";
    encoded.Records[0]!.s3.object.sequencer = "0055AED6DCD90281E6";
    const png = structuredClone(aws);
    png.Records[0]!.s3.object.key = "photos/face.png";
    const removed = structuredClone(aws);
    removed.Records[0]!.eventName = "ObjectRemoved:Delete";
    const mixed = { Records: [encoded.Records[0], png.Records[0], removed.Records[0]] };
    const m = (await (await notify("onUpload", "aws", JSON.stringify(mixed), "Bearer aws-secret-3")).json()) as { accepted: number; skipped: number; invocations: string[] };
    assert.equal(m.accepted, 1);
    assert.equal(m.skipped, 2);
    const seen = seenOf(await settled(m.invocations[0] as string));
    assert.equal(seen.headers["ce-subject"], "photos/Happy Face=1.jpg");

    const t = await notify("onUpload", "aws", fixture("aws-test-event.json"), "Bearer aws-secret-3");
    assert.equal(t.status, 200);
    assert.deepEqual(await t.json(), { accepted: 0, duplicates: 0, skipped: 0, invocations: [] });
  });

  test("a wrong, missing or malformed secret, or an unknown trigger or function: 401 UNAUTHENTICATED, nothing enqueued", async () => {
    const before = jobCount("onUpload");
    for (const [fn, trigger, auth] of [
      ["onUpload", "images", "Bearer wrong"], ["onUpload", "images", undefined], ["onUpload", "images", "Bearer"], ["onUpload", "images", basic("x", "wrong")],
      ["onUpload", "images", "Bearer ceph-secret-2"], ["onUpload", "images", `Bearer ${fx.token}`], ["onUpload", "nope", "Bearer minio-secret-1"], ["nosuchfn", "images", "Bearer minio-secret-1"],
    ] as const) {
      const r = await notify(fn, trigger, fixture("minio-put.json"), auth);
      assert.equal(r.status, 401, `${fn}/${trigger} ${auth ?? "(none)"}`);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, "UNAUTHENTICATED");
    }
    assert.equal(jobCount("onUpload"), before);
    assert.equal(jobCount("nosuchfn"), 0);
  });

  test("the trigger's secret not set: 503 TRIGGER_SECRET_MISSING (the sender retries)", async () => {
    const r = await notify("unset", "images", fixture("minio-put.json"), "Bearer anything");
    assert.equal(r.status, 503);
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, "TRIGGER_SECRET_MISSING");
    assert.equal(jobCount("unset"), 0);
  });

  test("malformed bodies: 400 S3_NOTIFICATION_INVALID with nothing enqueued, even when only one record is bad; oversized: 413", async () => {
    const before = jobCount("onUpload");
    const good = JSON.parse(fixture("minio-put.json").toString()) as { Records: Array<Record<string, unknown> & { s3: { bucket: { name: string }; object: Record<string, unknown> } }> };
    const fresh = structuredClone(good.Records[0]!);
    (fresh.s3.object as { sequencer: string }).sequencer = "FFFF0000";
    const noKey = structuredClone(good.Records[0]!);
    delete noKey.s3.object.key;
    const otherBucket = structuredClone(good.Records[0]!);
    otherBucket.s3.bucket.name = "other";
    const badKey = structuredClone(good.Records[0]!);
    (badKey.s3.object as { key: string; sequencer: string }).key = "bad%zz";
    for (const [what, body] of [
      ["not JSON", "{nope"], ["no Records", "{}"], ["empty Records", `{"Records":[]}`], ["Records not an array", `{"Records":{}}`],
      ["a good record then one without a key", JSON.stringify({ Records: [fresh, noKey] })],
      ["bad eventTime", JSON.stringify({ Records: [{ ...fresh, eventTime: "2016–09–08T22:34:38.226Z" }] })],
      ["negative size", JSON.stringify({ Records: [{ ...fresh, s3: { ...fresh.s3, object: { ...fresh.s3.object, size: -1 } } }] })],
      ["another bucket", JSON.stringify({ Records: [fresh, otherBucket] })], ["a malformed %-escape in the key", JSON.stringify({ Records: [badKey] })],
    ] as const) {
      const r = await notify("onUpload", "images", body, "Bearer minio-secret-1");
      assert.equal(r.status, 400, what);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, "S3_NOTIFICATION_INVALID", what);
    }
    const big = await notify("onUpload", "images", JSON.stringify({ Records: [fresh], pad: "x".repeat(S3_NOTIFICATION_MAX_BYTES) }), "Bearer minio-secret-1");
    assert.equal(big.status, 413);
    assert.equal(((await big.json()) as { error: { code: string } }).error.code, "PAYLOAD_TOO_LARGE");
    assert.equal(jobCount("onUpload"), before);
  });

  test("a failing function: retried, then dead-lettered with the CloudEvent kept for replay", async () => {
    const r = await notify("failing", "images", fixture("minio-put.json"), "Bearer minio-secret-1");
    assert.equal(r.status, 200);
    const { invocations } = (await r.json()) as { invocations: string[] };
    const dead = await settled(invocations[0] as string);
    assert.equal(dead.status, "dead");
    assert.equal(dead.attempts, 2);
    const dlq = await fetch(`${fx.url}/api/v1/functions/failing/dlq/${dead.invocationId}`, { headers: { authorization: `Bearer ${fx.token}` } });
    assert.equal(dlq.status, 200);
    const entry = (await dlq.json()) as { request: { headers: Record<string, string> } };
    assert.equal(entry.request.headers["ce-type"], "com.amazonaws.s3.ObjectCreated:Put");
  });

  test("stratus triggers ls data: the storage triggers with their notification URLs", async () => {
    const r = await fetch(`${fx.url}/api/v1/functions/onUpload/triggers`, { headers: { authorization: `Bearer ${fx.token}` } });
    assert.equal(r.status, 200);
    const { triggers } = (await r.json()) as { triggers: Array<{ id: string; kind: string; url?: string; bucket?: string }> };
    assert.deepEqual(triggers.map((t) => [t.id, t.kind, t.bucket, t.url]), [
      ["onUpload#storage:images", "storage", "images", `${fx.url}/api/v1/events/s3/onUpload/images`],
      ["onUpload#storage:ceph", "storage", "mybucket1", `${fx.url}/api/v1/events/s3/onUpload/ceph`],
      ["onUpload#storage:aws", "storage", "amzn-s3-demo-bucket", `${fx.url}/api/v1/events/s3/onUpload/aws`],
    ]);
  });
});
