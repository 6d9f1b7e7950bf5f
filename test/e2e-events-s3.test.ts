// End to end through the CLI and `stratus up` (a child process, real process driver, SQLite): a function
// with a storage trigger is deployed, its secret set with `stratus secrets set`, `stratus triggers ls`
// shows the notification URL; MinIO's documented webhook body posted there with its auth_token reaches
// the function through the async worker as a CloudEvent in binary mode (ce-* headers, JSON data), and a
// resend does not run it twice. Needs root (bubblewrap, cgroups) and `npm run build`.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { bindStratus, stopSuitePlatform, startUpInTempRoot, type SuitePlatform } from "./helpers/stratus-cli";

const SOURCE = `
module.exports.thumbnail = {
  func: (req, res) => {
    const ce = Object.fromEntries(Object.entries(req.headers).filter(([k]) => k.startsWith("ce-")));
    console.log("EVENT " + JSON.stringify({ ce, data: JSON.parse(req.rawBody.toString()), trigger: req.get("x-stratus-trigger"), attempt: req.get("x-stratus-attempt") }));
    res.json({ ce, key: JSON.parse(req.rawBody.toString()).key });
  },
  config: { retryDelayMs: 50, triggers: [{ storage: { type: "s3", bucket: "images", events: ["s3:ObjectCreated:*"], suffix: ".jpg", secret: "MINIO_WEBHOOK_TOKEN" } }] },
};
`;

let p: SuitePlatform;
const { ok } = bindStratus(() => ({ env: p.env, cwd: p.root }), 120_000, () => `\n--- stratus up ---\n${p?.output() ?? ""}`);

before(async () => {
  p = await startUpInTempRoot("st-s3e-", [], { STRATUS_EVENTS_POLL_INTERVAL_MS: "50" });
  const dir = join(p.root, "proj");
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "package.json"), JSON.stringify({ name: "s3e2e", main: "index.js" }));
  await writeFile(join(dir, "index.js"), SOURCE);
  await ok("deploy", dir);
  await ok("secrets", "set", "thumbnail", "MINIO_WEBHOOK_TOKEN=tok-3f9a");
});
after(async () => {
  await stopSuitePlatform(p);
});

test("a MinIO webhook notification reaches the function as a CloudEvent through stratus up", async () => {
  const ls = JSON.parse(await ok("triggers", "ls", "thumbnail", "--json")) as { triggers: Array<{ kind: string; url?: string }> };
  const url = ls.triggers.find((t) => t.kind === "storage")?.url;
  assert.equal(url, `${p.url}/api/v1/events/s3/thumbnail/images`);
  assert.match(await ok("triggers", "ls", "thumbnail"), /storage\s+bucket images → http:\/\/\S+\/api\/v1\/events\/s3\/thumbnail\/images/);

  const body = readFileSync("test/fixtures/s3-events/minio-put.json");
  const refused = await fetch(url as string, { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer wrong" }, body });
  assert.equal(refused.status, 401);
  const r = await fetch(url as string, { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer tok-3f9a" }, body });
  assert.equal(r.status, 200, await r.clone().text());
  const accepted = (await r.json()) as { accepted: number; invocations: string[] };
  assert.equal(accepted.accepted, 1);
  const id = accepted.invocations[0] as string;

  interface View { status: string; result: { body: string } | null; origin: { kind: string; trigger: string } }
  let view: View | null = null;
  for (let i = 0; i < 300; i++) {
    view = JSON.parse(await ok("invocation", id, "--json")) as View;
    if (view?.status === "succeeded" || view?.status === "dead") break;
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.equal(view?.status, "succeeded", JSON.stringify(view));
  assert.deepEqual(view?.origin.kind, "storage");
  const seen = JSON.parse(view?.result?.body ?? "{}") as { ce: Record<string, string>; key: string };
  assert.equal(seen.key, "myphoto.jpg");
  assert.equal(seen.ce["ce-type"], "com.amazonaws.s3.ObjectCreated:Put");
  assert.equal(seen.ce["ce-source"], "s3://images");
  assert.equal(seen.ce["ce-subject"], "myphoto.jpg");
  assert.equal(seen.ce["ce-specversion"], "1.0");

  // The storage system retries (say its answer was lost): the same invocation, not a second run.
  const again = (await (await fetch(url as string, { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer tok-3f9a" }, body })).json()) as { accepted: number; duplicates: number; invocations: string[] };
  assert.deepEqual([again.accepted, again.duplicates, again.invocations[0]], [0, 1, id]);
  await new Promise((res) => setTimeout(res, 500));
  const logs = await ok("logs", "thumbnail");
  assert.equal(logs.split("\n").filter((l) => l.includes("EVENT ")).length, 1, logs);
  assert.match(logs, /"trigger":"thumbnail#storage:images"/);
});
