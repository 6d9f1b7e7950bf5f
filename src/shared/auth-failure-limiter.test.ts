import { test } from "node:test";
import assert from "node:assert/strict";
import { AuthFailureLimiter, limitAuthFailures } from "./auth-failure-limiter";
import { StratusError } from "../shared/errors";

test("a client may fail `failureBurst` times, then is refused with Retry-After until its bucket refills", () => {
  let t = 0;
  const l = new AuthFailureLimiter({ failureBurst: 3, failuresPerMinute: 6, maxTrackedClients: 100 }, () => t);
  for (let i = 0; i < 3; i++) {
    l.check("a");
    l.fail("a");
  }
  assert.throws(() => l.check("a"), (err: StratusError) => {
    assert.equal(err.code, "TOO_MANY_AUTH_FAILURES");
    assert.equal(err.status, 429);
    assert.equal(err.headers?.["retry-after"], "10"); // one failure per 10 s
    return true;
  });
  l.check("b"); // other clients are unaffected
  t = 9_000;
  assert.throws(() => l.check("a"), (err: StratusError) => err.headers?.["retry-after"] === "1");
  t = 10_000;
  l.check("a");
  l.fail("a");
  assert.throws(() => l.check("a"));
  t = 1e9; // refills to the burst, never past it
  for (let i = 0; i < 3; i++) l.fail("a");
  assert.throws(() => l.check("a"));
});

test("the table is bounded: the least recently failed address is forgotten first", () => {
  const l = new AuthFailureLimiter({ failureBurst: 1, failuresPerMinute: 1, maxTrackedClients: 10 }, () => 0);
  for (let i = 0; i < 1000; i++) l.fail(`c${i}`);
  assert.equal(l.size, 10);
  assert.throws(() => l.check("c999"));
  l.check("c0"); // forgotten: full bucket again
});

test("limitAuthFailures counts only UNAUTHENTICATED and checks before verifying", async () => {
  const l = new AuthFailureLimiter({ failureBurst: 2, failuresPerMinute: 1, maxTrackedClients: 10 }, () => 0);
  let verified = 0;
  const bad = () => limitAuthFailures(l, "x", async () => {
    verified++;
    throw new StratusError("UNAUTHENTICATED");
  });
  await assert.rejects(bad(), { code: "UNAUTHENTICATED" });
  await assert.rejects(limitAuthFailures(l, "x", async () => {
    throw new StratusError("INTERNAL");
  }), { code: "INTERNAL" });
  await assert.rejects(bad(), { code: "UNAUTHENTICATED" });
  await assert.rejects(bad(), { code: "TOO_MANY_AUTH_FAILURES" });
  assert.equal(verified, 2, "the third attempt never reached the token check");
  assert.equal(await limitAuthFailures(undefined, "x", async () => 7), 7);
});
