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

test("a value the platform accepts is never refused later by the gateway (gateway.headersTimeoutMs=1000000)", async () => {
  // The gateway allows headersTimeoutMs up to 600 000; the platform must refuse what the gateway refuses,
  // at start-up, before the store is opened.
  assert.throws(() => resolvePlatformConfig({ flags: { "gateway.headersTimeoutMs": 1_000_000 } }), (err: Error & { code?: string }) => {
    assert.equal(err.code, "INVALID_ARGUMENT");
    assert.match(err.message, /gateway\.headersTimeoutMs/);
    return true;
  });
});

test("every setting is documented, its env name derived from its key (registry.address keeps STRATUS_REGISTRY)", () => {
  const envs = new Set<string>();
  for (const f of PLATFORM_CONFIG_FIELDS) {
    assert.ok(f.doc.length > 10, f.key);
    assert.ok(!envs.has(f.env), `${f.env} twice`);
    envs.add(f.env);
  }
  const env = (k: string) => PLATFORM_CONFIG_FIELDS.find((f) => f.key === k)?.env;
  assert.equal(env("gateway.maxHeaderBytes"), "STRATUS_GATEWAY_MAX_HEADER_BYTES");
  assert.equal(env("dataDir"), "STRATUS_DATA_DIR");
  assert.equal(env("registry.address"), "STRATUS_REGISTRY");
  assert.equal(env("process.blockedCidrs"), "STRATUS_PROCESS_BLOCKED_CIDRS");
});

test("driver settings are settable: lists, numbers and booleans from the environment; bad ones refused at once", () => {
  const c = resolvePlatformConfig({
    env: {
      STRATUS_PROCESS_BLOCKED_CIDRS: "10.0.0.0/8, 192.168.0.0/16", STRATUS_PROCESS_START_TIMEOUT_MS: "20000", STRATUS_DOCKER_PIDS_MAX: "512",
      STRATUS_OBSERVE_PUBLIC_METRICS: "1", STRATUS_GATEWAY_TIMEOUT_GRACE_MS: "500",
    },
  });
  assert.deepEqual(c.process.blockedCidrs, ["10.0.0.0/8", "192.168.0.0/16"]);
  assert.equal(c.process.startTimeoutMs, 20_000);
  assert.equal(c.process.pidsMax, 128);
  assert.equal(c.docker.pidsMax, 512);
  assert.equal(c.docker.startTimeoutMs, 30_000);
  assert.equal(c.observe.publicMetrics, true);
  assert.equal(c.gateway.timeoutGraceMs, 500);
  assert.ok(Object.isFrozen(c.process.blockedCidrs));
  assert.throws(
    () => resolvePlatformConfig({ env: { STRATUS_PROCESS_BLOCKED_CIDRS: "10.0.0.0/33,fe80::/10", STRATUS_DOCKER_TMP_SIZE_MB: "lots", STRATUS_OBSERVE_PUBLIC_METRICS: "yes" } }),
    (err: Error & { details?: string[] }) => {
      for (const s of ["process.blockedCidrs.0", "process.blockedCidrs.1", "docker.tmpSizeMb", "STRATUS_DOCKER_TMP_SIZE_MB", "observe.publicMetrics"]) assert.match(err.message, new RegExp(s.replace(/\./g, "\\.")));
      return true;
    },
  );
  assert.throws(() => resolvePlatformConfig({ file: { gateway: { headersTimeoutMs: 20_000, requestTimeoutMs: 10_000 } } }), /gateway\.requestTimeoutMs: must be >= headersTimeoutMs/);
});

test("gateway.queueFullStatus: 429 by default, 503 from the environment, anything else refused", () => {
  assert.equal(resolvePlatformConfig({}).gateway.queueFullStatus, 429);
  assert.equal(resolvePlatformConfig({ env: { STRATUS_GATEWAY_QUEUE_FULL_STATUS: "503" } }).gateway.queueFullStatus, 503);
  assert.throws(() => resolvePlatformConfig({ file: { gateway: { queueFullStatus: 500 } } }), /gateway\.queueFullStatus/);
});

test("auth limiter defaults equal the platform's auth.* defaults; trusted proxies parse from a list or a comma string", async () => {
  const { AUTH_FAILURE_DEFAULTS } = await import("../shared/auth-failure-limiter");
  assert.deepEqual({ ...resolvePlatformConfig({}).auth }, { ...AUTH_FAILURE_DEFAULTS });
  assert.deepEqual(resolvePlatformConfig({ env: { STRATUS_GATEWAY_TRUSTED_PROXIES: "10.0.0.0/8, ::1" } }).gateway.trustedProxies, ["10.0.0.0/8", "::1"]);
  assert.deepEqual(resolvePlatformConfig({ file: { gateway: { trustedProxies: ["127.0.0.1"] } } }).gateway.trustedProxies, ["127.0.0.1"]);
  assert.throws(() => resolvePlatformConfig({ env: { STRATUS_GATEWAY_TRUSTED_PROXIES: "10.0.0.0/99,bogus" } }), (err: Error) => {
    assert.match(err.message, /gateway\.trustedProxies\.0/);
    assert.match(err.message, /gateway\.trustedProxies\.1/);
    return true;
  });
});
