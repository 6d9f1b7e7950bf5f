// The platform schema is composed from the component schemas (src/shared/config/): what `stratus up`
// accepts, the gateway and the observer accept too, and their defaults are the same.
import { test } from "node:test";
import assert from "node:assert/strict";
import { resolvePlatformConfig } from "../src/shared/platform-config";
import { resolveGatewayLimits } from "../src/gateway/limits";
import { GATEWAY_LIMITS_SHAPE } from "../src/shared/config/gateway-settings";
import { createObservability } from "../src/observe/observer";
import { OBSERVE_SETTINGS_SHAPE } from "../src/shared/config/observe-settings";
import { createSilentLogger } from "../src/shared/logger";

test("the gateway's own defaults equal the platform's gateway.* defaults", () => {
  const g = resolveGatewayLimits(undefined);
  const p = resolvePlatformConfig({}).gateway;
  assert.equal(g.maxHeaderBytes, p.maxHeaderBytes);
  assert.equal(g.maxHeaderCount, p.maxHeaderCount);
  assert.equal(g.headersTimeoutMs, p.headersTimeoutMs);
  assert.equal(g.requestTimeoutMs, p.requestTimeoutMs);
  assert.equal(g.sweepIntervalMs, p.sweepIntervalMs);
  assert.equal(g.queueFullStatus, p.queueFullStatus);
});

/** Whether `f` runs without throwing. */
const accepts = (f: () => unknown): boolean => {
  try {
    f();
    return true;
  } catch {
    return false;
  }
};
const PROBES = [-1, 0, 1, 5, 10, 100, 256, 999, 1000, 1024, 60_000, 600_000, 600_001, 1_000_000, 3_600_000, 3_600_001, 1.5];

test("composed: for every gateway limit and observe setting, the platform accepts exactly what the component accepts", async () => {
  let checked = 0;
  for (const key of Object.keys(GATEWAY_LIMITS_SHAPE)) {
    for (const v of PROBES) {
      // requestTimeoutMs must stay >= headersTimeoutMs: probe each with the other at its extreme.
      const other = key === "headersTimeoutMs" ? { requestTimeoutMs: 3_600_000 } : key === "requestTimeoutMs" ? { headersTimeoutMs: 100 } : {};
      const platform = accepts(() => resolvePlatformConfig({ file: { gateway: { ...other, [key]: v } } }));
      const gateway = accepts(() => resolveGatewayLimits({ ...other, [key]: v }));
      assert.equal(platform, gateway, `gateway.${key}=${v}: platform ${platform}, gateway ${gateway}`);
      checked++;
    }
  }
  const store = { writeTelemetry: async () => {}, purgeTelemetry: async () => ({ logs: 0, invocations: 0, errorGroups: 0 }) };
  for (const key of Object.keys(OBSERVE_SETTINGS_SHAPE)) {
    for (const v of PROBES) {
      const platform = accepts(() => resolvePlatformConfig({ file: { observe: { [key]: v } } }));
      let observer = false;
      try {
        const o = createObservability({ store, logger: createSilentLogger(), settings: { [key]: v }, defaultMetrics: false });
        observer = true;
        await o.close();
      } catch {
        observer = false;
      }
      assert.equal(platform, observer, `observe.${key}=${v}: platform ${platform}, observer ${observer}`);
      checked++;
    }
  }
  assert.ok(checked > 200, `probed ${checked} values`);
});


test("the drivers' output budget defaults equal the platform's observe.instanceOutput* defaults", async () => {
  const { OUTPUT_RATE_DEFAULTS } = await import("../src/sandbox/output-lines");
  const o = resolvePlatformConfig({}).observe;
  assert.deepEqual({ bytesPerSecond: o.instanceOutputBytesPerSecond, linesPerSecond: o.instanceOutputLinesPerSecond }, { ...OUTPUT_RATE_DEFAULTS });
});
