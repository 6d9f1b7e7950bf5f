/**
 * The conformance suite every Store implementation runs: registers node:test cases against stores
 * made by `factory`. Each case gets a fresh, empty store and closes it afterwards.
 *
 * Usage (in a test file): `runStoreConformance("sqlite", async () => ({ store, reopen, cleanup }))`.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { NewVersion, Store } from "./store";

/** What a factory returns: a fresh store; `reopen` (optional) closes it and opens the same data again. */
export interface StoreHarness {
  readonly store: Store;
  /** Closes `store` and opens a new store over the same data (with the same master key). */
  readonly reopen?: () => Promise<Store>;
  /** Removes whatever the harness created. */
  readonly cleanup?: () => Promise<void>;
}

const digest = (c: string) => `sha256-${c.repeat(64).slice(0, 64)}`;
const version = (functionName: string, v: string, d = digest(v[0] ?? "a"), extra: Partial<NewVersion> = {}): NewVersion => ({
  functionName, version: v, digest: d, entry: "index.cjs", exportName: functionName, config: { timeout: 1000 }, sourceDigest: digest("f"), ...extra,
});

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: { code?: string }) => {
    assert.equal(err.code, code);
    return true;
  });
}

/** Registers the suite under `describe(name)`. */
export function runStoreConformance(name: string, factory: () => Promise<StoreHarness>): void {
  describe(`store conformance: ${name}`, () => {
    const withStore = (title: string, fn: (store: Store, h: StoreHarness) => Promise<Store | void>) =>
      test(title, async () => {
        const h = await factory();
        let store = h.store;
        try {
          store = (await fn(store, h)) ?? store;
        } finally {
          await store.close();
          await h.cleanup?.();
        }
      });

    withStore("functions: created once, names as written, unique regardless of case", async (s) => {
      const a = await s.ensureFunction("myFunction");
      assert.equal(a.name, "myFunction");
      assert.equal(a.activeVersion, null);
      assert.deepEqual(await s.ensureFunction("myFunction"), a);
      await expectCode(s.ensureFunction("MyFunction"), "CONFLICT");
      await expectCode(s.ensureFunction("1bad"), "INVALID_FUNCTION_NAME");
      await s.ensureFunction("another");
      assert.deepEqual((await s.listFunctions()).map((f) => f.name), ["another", "myFunction"]);
      assert.equal(await s.getFunction("myfunction"), null);
      await s.deleteFunction("another");
      assert.equal(await s.getFunction("another"), null);
      await expectCode(s.deleteFunction("another"), "FUNCTION_NOT_FOUND");
    });

    withStore("versions: immutable, idempotent for the same digest, newest first", async (s) => {
      const v1 = await s.addVersion(version("fn", "aaa"));
      assert.equal(v1.status, "ready");
      assert.deepEqual(v1.config, { timeout: 1000 });
      assert.equal(v1.image, null);
      assert.deepEqual(await s.addVersion(version("fn", "aaa")), v1);
      await expectCode(s.addVersion(version("fn", "aaa", digest("9"))), "CONFLICT");
      await expectCode(s.addVersion(version("FN", "bbb")), "CONFLICT");
      await s.addVersion(version("fn", "bbb"));
      assert.deepEqual((await s.listVersions("fn")).map((v) => v.version), ["bbb", "aaa"]);
      assert.equal((await s.getVersion("fn", "aaa"))?.digest, digest("a"));
      assert.equal(await s.getVersion("fn", "zzz"), null);
      await expectCode(s.listVersions("nope"), "FUNCTION_NOT_FOUND");
      const up = await s.updateVersion("fn", "bbb", { image: "reg/fn@sha256:1" });
      assert.equal(up.image, "reg/fn@sha256:1");
      await expectCode(s.updateVersion("fn", "zzz", { status: "failed" }), "VERSION_NOT_FOUND");
    });

    withStore("activation: atomic switch, rollback, compare-and-swap, all or nothing", async (s) => {
      await s.addVersion(version("a", "a1"));
      await s.addVersion(version("a", "a2"));
      await s.addVersion(version("b", "b1"));
      await s.addVersion(version("b", "bf", digest("e"), { status: "failed" }));
      assert.equal(await s.getActiveVersion("a"), null);

      const [fa] = await s.activateVersions([{ functionName: "a", version: "a1", expectedActive: null }]);
      assert.equal(fa?.activeVersion, "a1");
      assert.equal(typeof fa?.activatedAt, "number");
      await s.activateVersions([{ functionName: "a", version: "a2", expectedActive: "a1" }]);
      assert.equal((await s.getActiveVersion("a"))?.version, "a2");
      // Rollback is a switch to an older version.
      await s.activateVersions([{ functionName: "a", version: "a1" }]);
      assert.equal((await s.getActiveVersion("a"))?.version, "a1");

      await expectCode(s.activateVersions([{ functionName: "a", version: "a2", expectedActive: "a2" }]), "CONFLICT");
      await expectCode(s.activateVersions([{ functionName: "b", version: "bf" }]), "CONFLICT");
      await expectCode(s.activateVersions([{ functionName: "a", version: "b1" }]), "VERSION_NOT_FOUND");
      await expectCode(s.activateVersions([{ functionName: "zz", version: "a1" }]), "FUNCTION_NOT_FOUND");
      await expectCode(s.activateVersions([]), "INVALID_ARGUMENT");

      // The second activation fails, so the first must not have happened.
      await expectCode(s.activateVersions([{ functionName: "a", version: "a2" }, { functionName: "b", version: "nope" }]), "VERSION_NOT_FOUND");
      assert.equal((await s.getFunction("a"))?.activeVersion, "a1");
      assert.equal((await s.getFunction("b"))?.activeVersion, null);

      const both = await s.activateVersions([{ functionName: "a", version: "a2" }, { functionName: "b", version: "b1" }]);
      assert.deepEqual(both.map((f) => f.activeVersion), ["a2", "b1"]);
    });

    withStore("env vars: patch semantics and name rules", async (s) => {
      await s.ensureFunction("fn");
      assert.deepEqual(await s.getEnvVars("fn"), {});
      assert.deepEqual(await s.setEnvVars("fn", { A: "1", B: "2" }), { A: "1", B: "2" });
      assert.deepEqual(await s.setEnvVars("fn", { A: null, C: "3" }), { B: "2", C: "3" });
      await expectCode(s.setEnvVars("fn", { "bad-name": "x" }), "INVALID_ARGUMENT");
      await expectCode(s.setEnvVars("fn", { STRATUS_X: "x" }), "INVALID_ARGUMENT");
      // A rejected patch changes nothing, even the valid keys before the bad one.
      await expectCode(s.setEnvVars("fn", { D: "4", "1x": "y" }), "INVALID_ARGUMENT");
      assert.deepEqual(await s.getEnvVars("fn"), { B: "2", C: "3" });
      await expectCode(s.getEnvVars("nope"), "FUNCTION_NOT_FOUND");
    });

    withStore("secrets: names listed, values decrypt, deleted with the function", async (s) => {
      await s.ensureFunction("fn");
      await s.setSecret("fn", "DB_PASSWORD", "hunter2 ünïcode");
      await s.setSecret("fn", "API_KEY", "k1");
      await s.setSecret("fn", "API_KEY", "k2");
      assert.deepEqual(await s.listSecretNames("fn"), ["API_KEY", "DB_PASSWORD"]);
      assert.deepEqual(await s.getSecretValues("fn"), { API_KEY: "k2", DB_PASSWORD: "hunter2 ünïcode" });
      await s.deleteSecret("fn", "API_KEY");
      await expectCode(s.deleteSecret("fn", "API_KEY"), "NOT_FOUND");
      await expectCode(s.setSecret("fn", "no-dash", "x"), "INVALID_ARGUMENT");
      await expectCode(s.setSecret("nope", "A", "x"), "FUNCTION_NOT_FOUND");
      await s.deleteFunction("fn");
      await s.ensureFunction("fn");
      assert.deepEqual(await s.listSecretNames("fn"), []);
    });

    withStore("tokens: plaintext once, verify, immediate revocation", async (s) => {
      const { token, record } = await s.createToken("ci");
      assert.match(token, /^stx_/);
      assert.equal(record.revokedAt, null);
      assert.deepEqual(await s.verifyToken(token), record);
      assert.equal(await s.verifyToken(token.slice(0, -1) + (token.endsWith("A") ? "B" : "A")), null);
      assert.equal(await s.verifyToken("garbage"), null);
      assert.equal(await s.verifyToken(""), null);
      const listed = await s.listTokens();
      assert.deepEqual(listed, [record]);
      assert.ok(!JSON.stringify(listed).includes(token.slice(-20)), "listing must not reveal the token");
      const revoked = await s.revokeToken(record.id);
      assert.equal(typeof revoked.revokedAt, "number");
      assert.equal(await s.verifyToken(token), null);
      assert.deepEqual(await s.revokeToken(record.id), revoked);
      await expectCode(s.revokeToken("nope"), "NOT_FOUND");
      await expectCode(s.createToken(""), "INVALID_ARGUMENT");
    });

    withStore("builds: log in order, finish once, lookup by source digest", async (s) => {
      const b = await s.createBuild();
      assert.equal(b.status, "running");
      await s.appendBuildLog(b.id, ["one", "two"]);
      await s.appendBuildLog(b.id, ["three"]);
      assert.deepEqual(await s.getBuildLog(b.id), ["one", "two", "three"]);
      assert.deepEqual(await s.getBuildLog(b.id, 2), ["three"]);
      await s.setBuildSource(b.id, digest("c"));
      assert.equal(await s.findSucceededBuild(digest("c")), null);
      const done = await s.finishBuild(b.id, { status: "succeeded", result: [{ name: "fn" }] });
      assert.equal(done.status, "succeeded");
      assert.deepEqual(done.result, [{ name: "fn" }]);
      assert.equal(typeof done.finishedAt, "number");
      await expectCode(s.finishBuild(b.id, { status: "failed", error: { code: "INTERNAL", message: "x" } }), "CONFLICT");
      assert.equal((await s.findSucceededBuild(digest("c")))?.id, b.id);

      const f = await s.createBuild();
      const failed = await s.finishBuild(f.id, { status: "failed", error: { code: "BUILD_FAILED", message: "syntax" } });
      assert.deepEqual(failed.error, { code: "BUILD_FAILED", message: "syntax" });
      await expectCode(s.appendBuildLog("nope", ["x"]), "NOT_FOUND");
      assert.equal(await s.getBuild("nope"), null);
    });

    withStore("reopening keeps every kind of data", async (s, h) => {
      if (h.reopen === undefined) {
        // Stated, not silent: an implementation without persistence cannot run this case.
        assert.fail("this harness cannot reopen its store; pass `reopen` to run the persistence case");
      }
      await s.addVersion(version("fn", "v1"));
      await s.activateVersions([{ functionName: "fn", version: "v1" }]);
      await s.setEnvVars("fn", { A: "1" });
      await s.setSecret("fn", "S", "secret-value");
      const { token } = await s.createToken("t");
      const b = await s.createBuild();
      await s.appendBuildLog(b.id, ["line"]);
      const s2 = await h.reopen();
      assert.equal((await s2.getActiveVersion("fn"))?.version, "v1");
      assert.deepEqual(await s2.getEnvVars("fn"), { A: "1" });
      assert.deepEqual(await s2.getSecretValues("fn"), { S: "secret-value" });
      assert.notEqual(await s2.verifyToken(token), null);
      assert.deepEqual(await s2.getBuildLog(b.id), ["line"]);
      return s2;
    });
  });
}
