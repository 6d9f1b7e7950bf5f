// How triggers are shown, every kind (schedule, rate, kinds this code does not know), and that
// credentials never are: the shared rules, the CLI's two renderings, and the scheduler's view.
import assert from "node:assert/strict";
import { test } from "node:test";
import { triggerLines } from "./commands/describe";
import { whenOf } from "./commands/triggers";
import { REDACTED, describeTrigger, redactConfigTriggers, redactTrigger, triggerKind } from "../shared/trigger-view";

const NATS = { queue: { type: "nats", url: "nats://app:s3cret-pw@127.0.0.1:4222", subject: "bids", maxDeliver: 5 } };
const PG = { postgres: { connection: "postgres://repl:pg-pw@db:5432/shop?sslmode=require&password=also-secret", table: "bids", events: ["insert"], passwordSecret: "PG_PASSWORD" } };
const S3 = { storage: { type: "s3", bucket: "photos", secret: "webhook-shared-secret", token: "tkn-123", events: ["put"] } };
const SECRETS = ["s3cret-pw", "pg-pw", "also-secret", "PG_PASSWORD", "webhook-shared-secret", "tkn-123"];

test("triggerKind: schedule, rate, else the key naming the source", () => {
  const table: Array<[unknown, string]> = [
    [{ schedule: "*/5 * * * *", timezone: "Europe/Berlin", catchUp: "latest" }, "schedule"],
    [{ rate: "5 minutes", catchUp: "none" }, "rate"],
    [NATS, "queue"], [PG, "postgres"], [S3, "storage"],
    [{ catchUp: "all", webhook: { path: "/x" } }, "webhook"],
    [{ future: "x" }, "future"],
    [{}, "unknown"], [null, "unknown"], ["rate", "unknown"],
  ];
  for (const [t, kind] of table) assert.equal(triggerKind(t), kind, JSON.stringify(t));
});

test("redactTrigger: credential-like keys, URL passwords and credential query parameters; nothing else changes", () => {
  const out = JSON.stringify([redactTrigger(NATS), redactTrigger(PG), redactTrigger(S3)]);
  for (const s of SECRETS) assert.ok(!out.includes(s), `${s} is not shown: ${out}`);
  assert.deepEqual(redactTrigger(NATS), { queue: { type: "nats", url: `nats://app:${REDACTED}@127.0.0.1:4222`, subject: "bids", maxDeliver: 5 } });
  const pg = redactTrigger(PG) as { postgres: { connection: string; table: string; passwordSecret: string } };
  assert.match(pg.postgres.connection, /^postgres:\/\/repl:.*@db:5432\/shop\?sslmode=require&password=/);
  assert.equal(pg.postgres.table, "bids");
  assert.equal(pg.postgres.passwordSecret, REDACTED);
  assert.deepEqual(redactTrigger({ rate: "5 minutes", catchUp: "none" }), { rate: "5 minutes", catchUp: "none" });
  assert.equal(redactTrigger("amqp://guest:guest@[::1"), `amqp://guest:${REDACTED}@[::1`, "a URL that does not parse still loses its password");
  assert.deepEqual(redactTrigger({ a: [{ apiKey: "k" }] }), { a: [{ apiKey: REDACTED }] });
  const config = { timeout: 1000, triggers: [NATS] };
  assert.equal(JSON.stringify(redactConfigTriggers(config)).includes("s3cret-pw"), false);
  assert.equal(config.triggers[0], NATS, "the input is not changed");
  assert.equal(redactConfigTriggers(null), null);
});

test("describe and triggers ls render every kind, unknown ones by their JSON, never a credential", () => {
  assert.equal(describeTrigger({ schedule: "0 3 * * *", timezone: "Europe/Berlin", catchUp: "latest" }), 'schedule "0 3 * * *" (Europe/Berlin), catchUp latest');
  assert.equal(describeTrigger({ rate: "5 minutes", catchUp: "none" }), "rate 5 minutes, catchUp none");
  assert.equal(describeTrigger(NATS), `queue {"queue":{"type":"nats","url":"nats://app:${REDACTED}@127.0.0.1:4222","subject":"bids","maxDeliver":5}}`);
  const lines = triggerLines([{ rate: "1 second", catchUp: "all" }, NATS, PG, S3]).join("\n");
  assert.match(lines, /^triggers:\n {2}- rate 1 second, catchUp all\n {2}- queue \{"queue"/);
  assert.match(lines, /- postgres \{"postgres":\{"connection":"postgres:\/\/repl:/);
  assert.match(lines, /- storage \{"storage":\{"type":"s3","bucket":"photos"/);
  for (const s of SECRETS) assert.ok(!lines.includes(s), `describe hides ${s}`);
  const base = { lastSlot: null, nextSlot: null };
  assert.equal(whenOf({ id: "f#0:x", kind: "rate", rate: "5 minutes", catchUp: "latest", ...base }), "every 5 minutes");
  assert.equal(whenOf({ id: "f#0:x", kind: "schedule", schedule: "0 3 * * *", ...base }), "0 3 * * * (UTC)");
  const when = whenOf({ id: "f#1:x", kind: "storage", config: S3, ...base });
  assert.match(when, /^\{"storage":\{"type":"s3","bucket":"photos"/);
  for (const s of SECRETS) assert.ok(!when.includes(s));
  // An older control plane without `config`: the other fields, redacted too.
  assert.equal(whenOf({ id: "f#1:x", kind: "queue", ...base, ...({ queue: { url: "nats://a:b@h" } } as object) }), `{"queue":{"url":"nats://a:${REDACTED}@h"}}`);
});
