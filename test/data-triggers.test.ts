// The storage and postgres trigger kinds of the function config: accepted forms, every problem reported
// by field, the derived slot names and the shipped example's config.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { test } from "node:test";
import { parseFunctionConfig } from "../src/shared/function-config";
import { dataTriggerViews, postgresSlotName, postgresUrlProblem } from "../src/shared/data-triggers";
import { matchesS3Events } from "../src/events/storage/s3-notifications";

const problems = (triggers: unknown[]): string[] => {
  try {
    parseFunctionConfig("fn", { triggers });
    return [];
  } catch (err) {
    return ((err as { details: Array<{ path: string; message: string }> }).details).map((d) => `${d.path}: ${d.message}`);
  }
};

test("storage and postgres triggers parse; defaults stay unset", () => {
  const c = parseFunctionConfig("fn", { triggers: [
    { storage: { type: "s3", bucket: "images", secret: "TOKEN" } },
    { storage: { type: "s3", bucket: "images", name: "thumbs", secret: "TOKEN", events: ["s3:ObjectCreated:*", "ObjectRemoved:Delete"], prefix: "in/", suffix: ".jpg" } },
    { postgres: { connectionSecret: "DB", table: "bids" } },
    { postgres: { connectionSecret: "DB", table: "sales.orders", events: ["insert"], slot: "orders_slot" } },
  ] });
  assert.equal(c.triggers.length, 4);
  assert.equal(c.triggers[0]?.storage?.events, undefined);
});

test("every problem is reported by field", () => {
  assert.deepEqual(problems([{ storage: { type: "gcs", bucket: "b", secret: "S" } }]).length, 1);
  assert.match(problems([{ storage: { type: "s3", bucket: "b", secret: "S", extra: 1 } }]).join(), /triggers\.0\.storage/);
  assert.match(problems([{ storage: { type: "s3", bucket: "b" } }]).join(), /triggers\.0\.storage\.secret/);
  assert.match(problems([{ storage: { type: "s3", bucket: "b", secret: "not a name" } }]).join(), /must name one of the function's secrets/);
  assert.match(problems([{ storage: { type: "s3", bucket: "b", secret: "S", events: ["ObjectCreated:*:x"] } }]).join(), /triggers\.0\.storage\.events\.0/);
  assert.match(problems([{ storage: { type: "s3", bucket: "b", secret: "S" } }, { storage: { type: "s3", bucket: "b", secret: "T" } }]).join(), /triggers\.1\.storage\.name: storage trigger name "b" is also used by trigger 0/);
  assert.match(problems([{ postgres: { connectionSecret: "DB", table: "a.b.c" } }]).join(), /triggers\.0\.postgres\.table/);
  assert.match(problems([{ postgres: { connectionSecret: "DB", table: "t", events: ["insert", "insert"] } }]).join(), /lists an operation twice/);
  assert.match(problems([{ postgres: { connectionSecret: "DB", table: "t", slot: "Bad-Slot" } }]).join(), /replication slot name/);
  assert.match(problems([{ postgres: { connectionSecret: "DB", table: "t" } }, { postgres: { connectionSecret: "DB", table: "public.t" } }]).join(), /triggers\.1\.postgres\.slot/);
  assert.match(problems([{ postgres: { connectionSecret: "DB", table: "t" }, rate: "5 minutes" }]).join(), /exactly one of schedule, rate, queue, storage or postgres/);
  assert.match(problems([{ postgres: { connectionSecret: "DB", table: "t" }, timezone: "UTC" }]).join(), /timezone applies to schedule only/);
});

test("slot names: stable, per function, table and connection; explicit slot wins", () => {
  const t = { connectionSecret: "DB", table: "bids" };
  const a = postgresSlotName("onBid", t);
  assert.match(a, /^stratus_onbid_[0-9a-f]{12}$/);
  assert.equal(postgresSlotName("onBid", { ...t, table: "public.bids" }), a, "public is the default schema");
  assert.notEqual(postgresSlotName("onBid", { ...t, table: "asks" }), a);
  assert.notEqual(postgresSlotName("onBid", { ...t, connectionSecret: "OTHER" }), a);
  assert.notEqual(postgresSlotName("on-bid", t), a);
  assert.match(postgresSlotName("x".repeat(63), t), /^[a-z0-9_]{1,63}$/);
  assert.equal(postgresSlotName("onBid", { ...t, slot: "mine" }), "mine");
  const views = dataTriggerViews("onBid", [{ postgres: t }, { storage: { type: "s3", bucket: "my bucket.x", secret: "S" } } as never], "http://h");
  assert.deepEqual(views.map((v) => v.id), [`onBid#postgres:${a}`, "onBid#storage:my bucket.x"]);
});

test("S3 event patterns", () => {
  for (const [patterns, name, want] of [
    [undefined, "ObjectRemoved:Delete", true], [["s3:ObjectCreated:*"], "ObjectCreated:Put", true], [["ObjectCreated:*"], "s3:ObjectCreated:Copy", true],
    [["s3:ObjectCreated:Put"], "ObjectCreated:Post", false], [["s3:*"], "ObjectRemoved:DeleteMarkerCreated", true], [["s3:ObjectCreated:*"], "ObjectRemoved:Delete", false],
  ] as const) assert.equal(matchesS3Events(patterns, name), want, `${JSON.stringify(patterns)} ${name}`);
});

test("examples/table-change-handler's config is valid", () => {
  const mod = createRequire(import.meta.url)("../examples/table-change-handler/index.js") as { onBid: { config: unknown } };
  const c = parseFunctionConfig("onBid", mod.onBid.config);
  assert.equal(c.triggers[0]?.postgres?.table, "public.bids");
});

test("postgres connection URLs: scheme, host, never link-local", () => {
  assert.equal(postgresUrlProblem("postgres://u:p@db.example:5432/shop"), null);
  assert.equal(postgresUrlProblem("postgresql://u@127.0.0.1/shop?sslmode=disable"), null);
  assert.equal(postgresUrlProblem("postgres:///shop?host=/var/run/postgresql"), null);
  assert.match(postgresUrlProblem("mysql://u@h/db") ?? "", /postgres:\/\//);
  assert.match(postgresUrlProblem("not a url") ?? "", /not a URL/);
  assert.match(postgresUrlProblem("postgres:///shop") ?? "", /no host/);
  for (const bad of ["postgres://u@169.254.169.254/db", "postgres://u@[fe80::1]/db", "postgres://u@[fd00:ec2::254]/db", "postgres://u@ok.example/db?host=169.254.169.254"]) {
    assert.match(postgresUrlProblem(bad) ?? "", /link-local/, bad);
  }
});
