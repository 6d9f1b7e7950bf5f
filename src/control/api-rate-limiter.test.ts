import { test } from "node:test";
import assert from "node:assert/strict";
import { ApiRateLimiter, isDeployRequest, RATE_LIMIT_DEFAULTS } from "./api-rate-limiter";
import { PlatformConfigSchema } from "../shared/platform-config";
import type { StratusError } from "../shared/errors";

test("the defaults equal the platform config's rateLimit defaults", () => {
  assert.deepEqual({ ...RATE_LIMIT_DEFAULTS }, PlatformConfigSchema.parse({}).rateLimit);
});

test("deploy requests: deployments and rollbacks only", () => {
  for (const [m, p, want] of [
    ["POST", "/api/v1/deployments", true], ["POST", "/api/v1/deployments/", true], ["GET", "/api/v1/deployments", false],
    ["POST", "/api/v1/functions/a/rollback", true], ["POST", "/api/v1/functions/a/b/rollback", false], ["POST", "/api/v1/functions/a/env", false],
    ["PATCH", "/api/v1/functions/a/rollback", false],
  ] as const) assert.equal(isDeployRequest(m, p), want, `${m} ${p}`);
});

test("a caller may deploy `deployBurst` times, then 429 API_RATE_LIMITED with Retry-After until its bucket refills; others are unaffected", () => {
  let t = 0;
  const l = new ApiRateLimiter({ deployBurst: 2, deploysPerMinute: 6, requestBurst: 100, requestsPerMinute: 600, maxTrackedCallers: 100 }, () => t);
  l.admit("t:a", "POST", "/api/v1/deployments");
  l.admit("t:a", "POST", "/api/v1/functions/f/rollback");
  assert.throws(() => l.admit("t:a", "POST", "/api/v1/deployments"), (err: StratusError) => {
    assert.equal(err.code, "API_RATE_LIMITED");
    assert.equal(err.status, 429);
    assert.equal(err.headers?.["retry-after"], "10");
    return true;
  });
  l.admit("t:a", "GET", "/api/v1/functions"); // other requests still pass
  l.admit("t:b", "POST", "/api/v1/deployments"); // another token has its own bucket
  t = 10_000;
  l.admit("t:a", "POST", "/api/v1/deployments");
  assert.throws(() => l.admit("t:a", "POST", "/api/v1/deployments"));
});

test("every request counts against the request bucket; a refused request charges nothing", () => {
  let t = 0;
  const l = new ApiRateLimiter({ deployBurst: 100, deploysPerMinute: 100, requestBurst: 3, requestsPerMinute: 60, maxTrackedCallers: 100 }, () => t);
  for (let i = 0; i < 3; i++) l.admit("a:1.2.3.4", "GET", "/metrics");
  for (let i = 0; i < 5; i++) assert.throws(() => l.admit("a:1.2.3.4", "GET", "/metrics"), (err: StratusError) => err.headers?.["retry-after"] === "1");
  t = 1000;
  l.admit("a:1.2.3.4", "GET", "/metrics"); // the refusals spent nothing: one token after 1 s
  assert.throws(() => l.admit("a:1.2.3.4", "GET", "/metrics"));
});

test("the tables are bounded", () => {
  const l = new ApiRateLimiter({ deployBurst: 1, deploysPerMinute: 1, requestBurst: 1, requestsPerMinute: 1, maxTrackedCallers: 10 }, () => 0);
  for (let i = 0; i < 1000; i++) l.admit(`t:${i}`, "POST", "/api/v1/deployments");
  assert.equal(l.size, 10);
});
