// Bucket notifications with the PostgreSQL store (cluster mode): the records' jobs are committed in the
// platform's PostgreSQL before the 200, a resend maps to the same job (one row), and the function runs.
// Needs root (bubblewrap, cgroups), `npm run build` and `postgresql`.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import pg from "pg";
import { deploy, project, startPlatform, type PlatformFixture } from "./helpers/platform-fixture";
import { startPostgres, type PostgresServer } from "./helpers/postgres-server";

const SOURCE = `
module.exports.onUpload = {
  func: (req, res) => res.json({ type: req.get("ce-type"), key: JSON.parse(req.rawBody.toString()).key }),
  config: { retryDelayMs: 10, triggers: [{ storage: { type: "s3", bucket: "images", secret: "MINIO_TOKEN" } }] },
};
`;

let server: PostgresServer;
let fx: PlatformFixture;
let storeUrl: string;
before(async () => {
  server = await startPostgres();
  storeUrl = await server.createDatabase("s3store");
  fx = await startPlatform({ store: storeUrl, "events.pollIntervalMs": 50 });
  const d = await deploy(fx, await project({ "package.json": JSON.stringify({ name: "s3pg", main: "index.js" }), "index.js": SOURCE }));
  assert.equal(d.final?.type, "result", JSON.stringify(d.events));
  const r = await fetch(`${fx.url}/api/v1/functions/onUpload/secrets`, { method: "PATCH", headers: { authorization: `Bearer ${fx.token}`, "content-type": "application/json" }, body: JSON.stringify({ set: { MINIO_TOKEN: "pg-secret" }, unset: [] }) });
  assert.equal(r.status, 200);
});
after(async () => {
  await fx?.close();
  await server?.stop();
});

test("PostgreSQL store: committed before the 200, a resend is the same job, the function gets the CloudEvent", async () => {
  const post = () => fetch(`${fx.url}/api/v1/events/s3/onUpload/images`, { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer pg-secret" }, body: readFileSync("test/fixtures/s3-events/minio-put.json") });
  const first = (await (await post()).json()) as { accepted: number; invocations: string[] };
  assert.equal(first.accepted, 1);
  // The 200 came after the commit: the job is a row in the platform's PostgreSQL already.
  const jobs = async () => {
    const c = new pg.Client({ connectionString: storeUrl });
    await c.connect();
    try {
      return (await c.query<{ id: string }>("SELECT id FROM event_jobs WHERE function_name = 'onUpload'")).rows.map((r) => r.id);
    } finally {
      await c.end();
    }
  };
  assert.deepEqual(await jobs(), [first.invocations[0]]);
  const second = (await (await post()).json()) as { accepted: number; duplicates: number; invocations: string[] };
  assert.deepEqual([second.accepted, second.duplicates, second.invocations[0]], [0, 1, first.invocations[0]]);
  assert.deepEqual(await jobs(), [first.invocations[0]], "one row after the resend");
  const until = Date.now() + 30_000;
  interface View { status: string; origin: { kind: string }; result: { body: string } | null }
  let view: View | null = null;
  while (Date.now() < until) {
    view = (await (await fetch(`${fx.url}/api/v1/invocations/${first.invocations[0]}`, { headers: { authorization: `Bearer ${fx.token}` } })).json()) as View;
    if (view?.status === "succeeded" || view?.status === "dead") break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(view?.status, "succeeded");
  assert.equal(view?.origin.kind, "storage");
  assert.deepEqual(JSON.parse(view?.result?.body ?? "{}"), { type: "com.amazonaws.s3.ObjectCreated:Put", key: "myphoto.jpg" });
});
