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
  const [tooLong] = listFunctions({ api: withEndpoint({ ...base, timeoutSeconds: 3600, httpsTrigger: {} }) }, "p", parseFunctionConfig);
  assert.equal(tooLong!.error!.code, "INVALID_CONFIG", "Stratus's own range applies (timeout ≤ 900 s)");
  const [sched] = listFunctions({ nightly: withEndpoint({ ...base, scheduleTrigger: { schedule: "every day" } }) }, "p", parseFunctionConfig);
  assert.equal(sched!.error!.code, "FUNCTION_LOAD_FAILED");
  assert.match(sched!.error!.message, /nightly.*schedule function/);
});
