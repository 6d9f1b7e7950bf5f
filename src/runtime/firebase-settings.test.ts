import { test } from "node:test";
import assert from "node:assert/strict";
import { firebaseSettingsOf } from "./firebase-settings";
import { listFunctions } from "./loader";
import { parseFunctionConfig } from "../shared/function-config";

// The shapes firebase-functions 7.4.0 attaches (recorded from the real package: `onRequest(opts, h).__endpoint`).
class ResetValue {}
class IntParam {
  constructor(readonly name: string) {}
  toCEL() {
    return `{{ params.${this.name} }}`;
  }
}
const reset = new ResetValue();
const withEndpoint = (endpoint: object) => Object.assign((_req: unknown, res: { send(s: string): void }) => res.send("hi"), { __endpoint: endpoint });
const base = { availableMemoryMb: null, timeoutSeconds: null, minInstances: null, maxInstances: null, ingressSettings: reset, concurrency: null, serviceAccountEmail: reset, vpc: reset, platform: "gcfv2", labels: {} };

test("firebase settings: what maps, what warns, what is not HTTP", () => {
  assert.equal(firebaseSettingsOf(() => undefined), null, "a plain function carries none");
  assert.equal(firebaseSettingsOf({ __endpoint: {} }), null, "only functions");
  assert.deepEqual(firebaseSettingsOf(withEndpoint({ ...base, httpsTrigger: {} })), { config: {}, warnings: [] }, "onRequest(handler): nothing set");
  // onRequest({ timeoutSeconds: 120, memory: "1GiB", minInstances: 1, maxInstances: 5, concurrency: 20, cpu: 2, secrets: ["X"], invoker: "public" }) after setGlobalOptions({ region: "europe-west1" })
  const full = firebaseSettingsOf(withEndpoint({
    ...base, availableMemoryMb: 1024, timeoutSeconds: 120, minInstances: 1, maxInstances: 5, concurrency: 20, region: ["europe-west1"], cpu: 2,
    secretEnvironmentVariables: [{ key: "X" }], httpsTrigger: { invoker: ["public"] },
  }))!;
  assert.deepEqual(full.config, { timeout: 120_000, memory: 1024, minInstances: 1, maxInstances: 5, concurrency: 20, public: true });
  assert.equal(full.warnings.length, 3);
  assert.match(full.warnings[0]!, /^region \["europe-west1"\]: .*regions do not apply/);
  assert.match(full.warnings[1]!, /^cpu 2 has no Stratus equivalent/);
  assert.match(full.warnings[2]!, /^secrets \[\{"key":"X"\}\] has no Stratus equivalent/);
  // onRequest({ timeoutSeconds: defineInt("T"), invoker: "private", omit: true, serviceAccount, vpcConnector, ingressSettings, labels })
  const odd = firebaseSettingsOf(withEndpoint({
    ...base, timeoutSeconds: new IntParam("T"), ingressSettings: "ALLOW_ALL", serviceAccountEmail: "x@y", vpc: { connector: "c" }, omit: true, labels: { a: "b" },
    httpsTrigger: { invoker: ["private"] },
  }))!;
  assert.deepEqual(odd.config, { public: false });
  assert.deepEqual(odd.warnings.map((w) => w.split(" ")[0]), ["timeoutSeconds", "invoker", "ingressSettings", "serviceAccount", "vpcConnector", "labels", "omit"]);
  assert.match(odd.warnings[0]!, /parameter expression/);
  assert.match(odd.warnings[1]!, /no IAM.*bearer token/);
  // onCall: HTTP too.
  assert.deepEqual(firebaseSettingsOf(withEndpoint({ ...base, callableTrigger: {} })), { config: {}, warnings: [] });
  for (const trigger of ["scheduleTrigger", "eventTrigger", "taskQueueTrigger", "blockingTrigger"]) {
    assert.match(firebaseSettingsOf(withEndpoint({ ...base, [trigger]: {} }))!.notHttp!, /Stratus serves HTTPS functions/, trigger);
  }
  // firebase-functions before 4: __trigger only.
  const old = firebaseSettingsOf(Object.assign(() => undefined, { __trigger: { timeout: "30s", availableMemoryMb: 512, httpsTrigger: {}, regions: ["us-central1"] } }))!;
  assert.deepEqual(old.config, { timeout: 30_000, memory: 512 });
  assert.equal(old.warnings.length, 1);
});

test("listFunctions: Firebase settings become the config (a written config wins), warnings ride along, non-HTTP triggers are errors", () => {
  const f = withEndpoint({ ...base, timeoutSeconds: 60, availableMemoryMb: 512, cpu: 1, httpsTrigger: {} });
  const [plain] = listFunctions({ api: f }, "p", parseFunctionConfig);
  assert.deepEqual(plain, { name: "api", exportName: "api", config: { timeout: 60_000, memory: 512 }, warnings: ["cpu 1 has no Stratus equivalent: ignored"] });
  const [written] = listFunctions({ api: { func: f, config: { memory: 128 } } }, "p", parseFunctionConfig);
  assert.deepEqual(written!.config, { timeout: 60_000, memory: 128 });
  // Changed deliberately (issue 11.9): a Firebase value beyond Stratus's range was INVALID_CONFIG; it is now
  // clamped to the limit with a warning. A Stratus config out of range stays an error.
  const [tooLong] = listFunctions({ api: withEndpoint({ ...base, timeoutSeconds: 3600, availableMemoryMb: 32768, concurrency: 0, httpsTrigger: {} }) }, "p", parseFunctionConfig);
  assert.equal(tooLong!.error, undefined, JSON.stringify(tooLong));
  assert.deepEqual(tooLong!.config, { timeout: 900_000, memory: 16_384, concurrency: 1 });
  assert.deepEqual(tooLong!.warnings, [
    "timeoutSeconds 3600 s is above Stratus's maximum timeout (900 s): clamped to 900 s (config.timeout 900000 ms)",
    "memory 32768 MB is above Stratus's maximum memory (16384 MB): clamped to 16384 MB (config.memory 16384 MB)",
    "concurrency 0 is below Stratus's minimum concurrency (1): clamped to 1 (config.concurrency 1)",
  ]);
  assert.equal(parseFunctionConfig("api", tooLong!.config).timeout, 900_000, "the clamped config is valid");
  const [nativeTooLong] = listFunctions({ api: { func: (_req: unknown, res: { send(s: string): void }) => res.send("hi"), config: { timeout: 3_600_000 } } }, "p", parseFunctionConfig);
  assert.equal(nativeTooLong!.error!.code, "INVALID_CONFIG", "a Stratus config out of range is never clamped");
  assert.match(nativeTooLong!.error!.message, /timeout/);
  // A written Stratus config beside Firebase's options: that field is not read from Firebase, so no clamp warning.
  const [overridden] = listFunctions({ api: { func: withEndpoint({ ...base, timeoutSeconds: 1200, region: ["us-central1"], httpsTrigger: {} }), config: { timeout: 60_000 } } }, "p", parseFunctionConfig);
  assert.equal(overridden!.error, undefined);
  assert.deepEqual(overridden!.config, { timeout: 60_000 });
  assert.deepEqual(overridden!.warnings!.map((w) => w.split(" ")[0]), ["region"]);
  // Too large in a written Stratus config, even with Firebase's options beside it: an error.
  const [writtenTooLong] = listFunctions({ api: { func: withEndpoint({ ...base, timeoutSeconds: 60, httpsTrigger: {} }), config: { timeout: 1_200_000 } } }, "p", parseFunctionConfig);
  assert.equal(writtenTooLong!.error!.code, "INVALID_CONFIG");
  // firebase-functions before 4 (`__trigger`): the same clamp.
  const oldTooLong = firebaseSettingsOf(Object.assign(() => undefined, { __trigger: { timeout: "1200s", httpsTrigger: {} } }))!;
  assert.deepEqual(oldTooLong.config, { timeout: 900_000 });
  assert.match(oldTooLong.warnings[0]!, /^timeoutSeconds 1200 s is above .*clamped to 900 s/);
  const [sched] = listFunctions({ nightly: withEndpoint({ ...base, scheduleTrigger: { schedule: "every day" } }) }, "p", parseFunctionConfig);
  assert.equal(sched!.error!.code, "FUNCTION_LOAD_FAILED");
  assert.match(sched!.error!.message, /nightly.*schedule function/);
});
