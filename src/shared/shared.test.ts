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
