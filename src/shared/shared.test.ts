import { test } from "node:test";
import assert from "node:assert/strict";
import { parseFunctionConfig } from "./function-config";
import { isValidFunctionName, toLowerSafeName } from "./names";
import { ERROR_CODES, StratusError, toErrorResponse } from "./errors";

test("function names: table", () => {
  const cases: Array<[string, boolean]> = [
    ["myFunction", true], ["a", true], ["a-b_c9", true], ["A".repeat(63), true],
    ["", false], ["9a", false], ["-a", false], ["a.b", false], ["a/b", false], ["A".repeat(64), false], ["é", false], ["a b", false],
  ];
  for (const [name, ok] of cases) assert.equal(isValidFunctionName(name), ok, name);
});

test("lower-safe names never collide", () => {
  const names = ["myFunction", "my_function", "my_Function", "myfunction", "MyFunction"];
  const mapped = new Set(names.map(toLowerSafeName));
  assert.equal(mapped.size, names.length);
  for (const m of mapped) assert.equal(m, m.toLowerCase());
});

test("config: defaults applied and frozen", () => {
  const c = parseFunctionConfig("f", { timeout: 10_000 });
  assert.equal(c.timeout, 10_000);
  assert.equal(c.concurrency, 1);
  assert.equal(c.public, true);
  assert.ok(Object.isFrozen(c));
});

test("config: every problem reported at once, naming function and field", () => {
  try {
    parseFunctionConfig("myFunction", { timeout: "10", memory: 1, bogus: true, env: { STRATUS_X: "1" } });
    assert.fail("should throw");
  } catch (err) {
    assert.ok(err instanceof StratusError);
    assert.equal(err.code, "INVALID_CONFIG");
    assert.match(err.message, /myFunction/);
    for (const f of ["timeout", "memory", "bogus", "env.STRATUS_X"]) assert.match(err.message, new RegExp(f.replace(".", "\\.")));
  }
});

test("config: minInstances above maxInstances refused", () => {
  assert.throws(() => parseFunctionConfig("f", { minInstances: 5, maxInstances: 2 }), /minInstances/);
});

test("config: event defaults like Lambda (3 attempts, 6 h); triggers validated, every problem at once", () => {
  const c = parseFunctionConfig("f", { triggers: [{ schedule: "*/5 * * * *", timezone: "Europe/Berlin" }, { rate: "5 minutes" }, { rate: "rate(1 hour)", catchUp: "all" }] });
  assert.equal(c.maxAttempts, 3);
  assert.equal(c.maxEventAgeS, 21_600);
  assert.equal(c.asyncConcurrency, 2);
  assert.deepEqual(c.triggers, [
    { schedule: "*/5 * * * *", timezone: "Europe/Berlin", catchUp: "latest" }, { rate: "5 minutes", catchUp: "latest" }, { rate: "rate(1 hour)", catchUp: "all" },
  ]);
  assert.deepEqual(parseFunctionConfig("f", { triggers: [{ schedule: "0 0 3 * * *" }] }).triggers, [{ schedule: "0 0 3 * * *", catchUp: "latest" }], "6 fields: seconds first");
  try {
    parseFunctionConfig("f", {
      maxAttempts: 0, maxEventAgeS: 99_999,
      triggers: [{ schedule: "* * *" }, { schedule: "99 * * * *", timezone: "Mars/Base" }, { rate: "5 weeks" }, { rate: "1 minute", catchUp: "some" },
        { queue: { type: "nats", url: "nats://127.0.0.1:4222", stream: "s" }, rate: "1 minute" }, {}, { rate: "1 minute", timezone: "UTC" }, { schedule: "* * * * * * * *" }],
    });
    assert.fail("should throw");
  } catch (err) {
    assert.ok(err instanceof StratusError);
    const paths = (err.details as Array<{ path: string }>).map((d) => d.path);
    for (const p of ["maxAttempts", "maxEventAgeS", "triggers.0.schedule", "triggers.1.timezone", "triggers.1.schedule", "triggers.2.rate", "triggers.3.catchUp", "triggers.4", "triggers.5", "triggers.6.timezone", "triggers.7.schedule"]) {
      assert.ok(paths.includes(p), `${p} reported in ${JSON.stringify(paths)}`);
    }
  }
});

test("config: queue triggers (nats, rabbitmq, redis): defaults, secrets for credentials, every problem at once", () => {
  const c = parseFunctionConfig("f", { triggers: [
    { queue: { type: "nats", urlSecret: "NATS_URL", stream: "ORDERS", subject: "orders.>" } },
    { queue: { type: "rabbitmq", url: "amqp://127.0.0.1:5672/vh", queue: "jobs", concurrency: 4 } },
    { queue: { type: "redis", url: "redis://127.0.0.1:6379/0", stream: "events", consumer: "workers", batchSize: 50 } },
  ] });
  assert.deepEqual(c.triggers.map((t) => t.queue), [
    { type: "nats", urlSecret: "NATS_URL", stream: "ORDERS", subject: "orders.>", batchSize: 10 },
    { type: "rabbitmq", url: "amqp://127.0.0.1:5672/vh", queue: "jobs", concurrency: 4, batchSize: 10 },
    { type: "redis", url: "redis://127.0.0.1:6379/0", stream: "events", consumer: "workers", batchSize: 50 },
  ]);
  try {
    parseFunctionConfig("f", { triggers: [
      { queue: { type: "redis", url: "redis://:hunter2@127.0.0.1:6379", stream: "s" } },
      { queue: { type: "rabbitmq", url: "amqp://guest:guest@127.0.0.1", queue: "q" } },
      { queue: { type: "nats", url: "nats://127.0.0.1", urlSecret: "X" } },
      { queue: { type: "nats", urlSecret: "X", stream: "s", queue: "q" } },
      { queue: { type: "kafka", url: "kafka://x" } },
      { queue: { type: "redis", url: "amqp://127.0.0.1", stream: "s", batchSize: 0, concurrency: 1001 } },
      { queue: { type: "redis", urlSecret: "X", stream: "s", extra: 1 } },
      { queue: { type: "nats", urlSecret: "X", stream: "s", consumer: "a.b" }, timezone: "UTC" },
      { queue: { type: "redis", url: "redis://169.254.169.254:80", stream: "s" } },
    ] });
    assert.fail("should throw");
  } catch (err) {
    assert.ok(err instanceof StratusError);
    const problems = err.details as Array<{ path: string; message: string }>;
    const paths = problems.map((d) => d.path);
    for (const p of ["triggers.0.queue.url", "triggers.1.queue.url", "triggers.2.queue.url", "triggers.2.queue.stream", "triggers.3.queue.queue", "triggers.4.queue.type",
      "triggers.5.queue.url", "triggers.5.queue.batchSize", "triggers.5.queue.concurrency", "triggers.6.queue", "triggers.7.queue.consumer", "triggers.7.timezone", "triggers.8.queue.url"]) {
      assert.ok(paths.includes(p), `${p} reported in ${JSON.stringify(paths)}`);
    }
    const cred = problems.find((p) => p.path === "triggers.0.queue.url");
    assert.match(cred?.message ?? "", /credentials.*urlSecret/);
    assert.doesNotMatch(err.message, /hunter2/, "the refused password is not echoed");
  }
});

test("errors: unknown errors become a generic INTERNAL", () => {
  const r = toErrorResponse(new Error("secret path /etc/x"), "rid1");
  assert.equal(r.status, 500);
  assert.deepEqual(r.body, { error: { code: "INTERNAL", message: ERROR_CODES.INTERNAL.message, requestId: "rid1" } });
  const q = toErrorResponse(new StratusError("QUEUE_FULL", undefined, { headers: { "retry-after": "1" } }));
  assert.equal(q.status, 429);
  assert.equal(q.headers["retry-after"], "1");
});

test("docs/errors.md lists every code (regenerate with scripts/gen-error-docs.mjs)", async () => {
  const { readFileSync } = await import("node:fs");
  const { renderErrorDocs } = await import("./error-docs");
  assert.equal(readFileSync(new URL("../../docs/errors.md", import.meta.url), "utf8"), renderErrorDocs());
});
