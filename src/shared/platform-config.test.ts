import { test } from "node:test";
import assert from "node:assert/strict";
import { resolvePlatformConfig, PLATFORM_CONFIG_FIELDS, PlatformConfigSchema } from "./platform-config";

test("defaults match the documented defaults", () => {
  const c = resolvePlatformConfig({}) as unknown as Record<string, unknown>;
  for (const f of PLATFORM_CONFIG_FIELDS) {
    const v = f.key.split(".").reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], c);
    assert.deepEqual(v, f.default, f.key);
  }
});

test("precedence: flag > env > file > default", () => {
  const file = { port: 1, gateway: { drainTimeoutMs: 1 }, logLevel: "debug" };
  const env = { STRATUS_PORT: "2", STRATUS_GATEWAY_DRAIN_TIMEOUT_MS: "2" };
  const c = resolvePlatformConfig({ file, env, flags: { port: 3 } });
  assert.equal(c.port, 3);
  assert.equal(c.gateway.drainTimeoutMs, 2);
  assert.equal(c.logLevel, "debug");
  assert.equal(c.gateway.sweepIntervalMs, 250);
  assert.ok(Object.isFrozen(c.gateway));
});

test("every problem reported at once, never a silent fallback", () => {
  assert.throws(
    () => resolvePlatformConfig({ env: { STRATUS_PORT: "http" }, file: { driver: "kvm", bogus: 1 } }),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, "INVALID_ARGUMENT");
      for (const s of ["port", "driver", "bogus", "STRATUS_PORT"]) assert.match(err.message, new RegExp(s));
      return true;
    },
  );
});

test("~ in dataDir expands to the home dir given", () => {
  assert.equal(resolvePlatformConfig({ homeDir: "/home/x" }).dataDir, "/home/x/.stratus/data");
  assert.ok(PlatformConfigSchema);
});

test("the gateway's own defaults equal the platform's gateway.* defaults", async () => {
  const { resolveGatewayLimits } = await import("../gateway/limits");
  const g = resolveGatewayLimits(undefined);
  const p = resolvePlatformConfig({}).gateway;
  assert.equal(g.maxHeaderSize, p.maxHeaderBytes);
  assert.equal(g.headersTimeoutMs, p.headersTimeoutMs);
  assert.equal(g.requestTimeoutMs, p.requestTimeoutMs);
  assert.equal(g.tickMs, p.sweepIntervalMs);
});

test("a value the platform accepts is never refused later by the gateway (gateway.headersTimeoutMs=1000000)", async () => {
  // The gateway allows headersTimeoutMs up to 600 000; the platform must refuse what the gateway refuses,
  // at start-up, before the store is opened.
  assert.throws(() => resolvePlatformConfig({ flags: { "gateway.headersTimeoutMs": 1_000_000 } }), (err: Error & { code?: string }) => {
    assert.equal(err.code, "INVALID_ARGUMENT");
    assert.match(err.message, /gateway\.headersTimeoutMs/);
    return true;
  });
});
