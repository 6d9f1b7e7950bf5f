/**
 * The conformance suite every Store implementation runs: registers node:test cases against stores
 * made by `factory`. Each case gets a fresh, empty store and closes it afterwards.
 *
 * Usage (in a test file): `runStoreConformance("sqlite", async () => ({ store, reopen, cleanup }))`.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { InvocationRecord, LogEntry } from "../shared/invocation";
import type { NewVersion, Store } from "./store";
import { hashToken } from "./secret-box";

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
      await expectCode(s.updateVersion("fn", "bbb", { status: "gone" as never }), "INVALID_ARGUMENT");
      await expectCode(s.addVersion(version("fn", "ccc", digest("c"), { status: "gone" as never })), "INVALID_ARGUMENT");
      assert.equal((await s.updateVersion("fn", "bbb", { status: "failed" })).image, "reg/fn@sha256:1", "a patch keeps what it does not name");
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

    withStore("membership: join tokens, node credentials, stable lowest-free ids, heartbeats, drain, removal, config revision", async (s) => {
      const { token, record } = await s.createJoinToken("rack-1", 60_000);
      assert.match(token, /^sjt_/);
      assert.equal(record.expiresAt - record.createdAt, 60_000);
      assert.deepEqual(await s.listJoinTokens(), [record]);
      assert.ok(!JSON.stringify(await s.listJoinTokens()).includes(token.slice(-20)), "listing must not reveal the join token");
      await expectCode(s.joinNode(token.slice(0, -1) + (token.endsWith("A") ? "B" : "A"), { name: "n", url: "http://127.0.0.9:1", driver: "process" }), "JOIN_TOKEN_INVALID");
      await expectCode(s.joinNode("garbage", { name: "n", url: "http://127.0.0.9:1", driver: "process" }), "JOIN_TOKEN_INVALID");
      await expectCode(s.createJoinToken("x", 10), "INVALID_ARGUMENT");

      const a = await s.joinNode(token, { name: "node-a", url: "http://127.0.0.2:1", driver: "process" });
      const b = await s.joinNode(token, { name: "node-b", url: "http://127.0.0.3:1", driver: "docker" });
      assert.deepEqual([a.record.id, b.record.id], [1, 2]);
      assert.match(a.credential, /^snc_/);
      assert.equal(a.record.state, "ready");
      assert.equal(a.record.lastSeen, null);
      assert.deepEqual(await s.verifyNodeCredential(a.credential), a.record);
      await expectCode(s.verifyNodeCredential(a.credential + "x"), "NODE_CREDENTIAL_INVALID");
      await expectCode(s.verifyNodeCredential("snc_nope_x"), "NODE_CREDENTIAL_INVALID");

      // Re-joining under the same name keeps the id and replaces the credential.
      const a2 = await s.joinNode(token, { name: "node-a", url: "http://127.0.0.2:2", driver: "process" });
      assert.equal(a2.record.id, 1);
      assert.equal(a2.record.url, "http://127.0.0.2:2");
      await expectCode(s.verifyNodeCredential(a.credential), "NODE_CREDENTIAL_INVALID");
      assert.equal((await s.verifyNodeCredential(a2.credential)).id, 1);

      const load = { inFlight: 2, queued: 1, instances: 3, memUsedBytes: 100, memFreeBytes: 200, warm: ["f"] };
      const beat = await s.recordHeartbeat(2, load);
      assert.deepEqual(beat?.load, load);
      assert.equal(typeof beat?.lastSeen, "number");
      assert.equal((await s.recordHeartbeat(2, load, "http://127.0.0.3:9"))?.url, "http://127.0.0.3:9");
      assert.equal(await s.recordHeartbeat(99, load), null);
      assert.equal((await s.setNodeState(2, "draining")).state, "draining");
      await expectCode(s.setNodeState(99, "draining"), "NOT_FOUND");
      await expectCode(s.setNodeState(2, "lost" as "ready"), "INVALID_ARGUMENT");

      // Removal: the credential is refused as revoked at once; the id is free for the next new node.
      await s.removeNode(1);
      await expectCode(s.verifyNodeCredential(a2.credential), "NODE_CREDENTIAL_REVOKED");
      await expectCode(s.removeNode(1), "NOT_FOUND");
      assert.deepEqual((await s.listNodes()).map((n) => n.name), ["node-b"]);
      assert.equal(await s.recordHeartbeat(1, load), null, "a removed node's heartbeat is not recorded");
      const c = await s.joinNode(token, { name: "node-c", url: "http://127.0.0.4:1", driver: "process" });
      assert.equal(c.record.id, 1, "the lowest free id");
      assert.deepEqual((await s.listNodes()).map((n) => [n.id, n.name]), [[1, "node-c"], [2, "node-b"]]);

      const revoked = await s.revokeJoinToken(record.id);
      assert.equal(typeof revoked.revokedAt, "number");
      await expectCode(s.joinNode(token, { name: "node-d", url: "http://127.0.0.5:1", driver: "process" }), "JOIN_TOKEN_REVOKED");
      await expectCode(s.revokeJoinToken("nope"), "NOT_FOUND");

      const r0 = await s.configRevision();
      assert.equal(await s.bumpConfigRevision(), r0 + 1);
      assert.equal(await s.configRevision(), r0 + 1);
    });

    withStore("membership: an expired join token is refused", async (s) => {
      const { token } = await s.createJoinToken("short", 1000);
      await new Promise((r) => setTimeout(r, 1100));
      await expectCode(s.joinNode(token, { name: "late", url: "http://127.0.0.9:1", driver: "process" }), "JOIN_TOKEN_EXPIRED");
      assert.deepEqual(await s.listNodes(), []);
    });

    withStore("tokens: plaintext once, verify, immediate revocation", async (s) => {
      const { token, record } = await s.createToken("ci");
      assert.match(token, /^stx_/);
      assert.equal(record.revokedAt, null);
      assert.deepEqual(await s.verifyToken(token), record);
      assert.ok((await s.listTokenHashes()).includes(hashToken(token)), "listTokenHashes holds the new token's hash");
      assert.equal(await s.verifyToken(token.slice(0, -1) + (token.endsWith("A") ? "B" : "A")), null);
      assert.equal(await s.verifyToken("garbage"), null);
      assert.equal(await s.verifyToken(""), null);
      const listed = await s.listTokens();
      assert.deepEqual(listed, [record]);
      assert.ok(!JSON.stringify(listed).includes(token.slice(-20)), "listing must not reveal the token");
      const revoked = await s.revokeToken(record.id);
      assert.equal(typeof revoked.revokedAt, "number");
      assert.equal(await s.verifyToken(token), null);
      assert.ok(!(await s.listTokenHashes()).includes(hashToken(token)), "a revoked token's hash is gone from listTokenHashes");
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
      await expectCode(s.getBuildLog(b.id, -1), "INVALID_ARGUMENT");
      await s.setBuildSource(b.id, digest("c"));
      assert.equal((await s.getBuild(b.id))?.sourceDigest, digest("c"));
      const done = await s.finishBuild(b.id, { status: "succeeded", result: [{ name: "fn" }] });
      assert.equal(done.status, "succeeded");
      assert.deepEqual(done.result, [{ name: "fn" }]);
      assert.equal(typeof done.finishedAt, "number");
      await expectCode(s.finishBuild(b.id, { status: "failed", error: { code: "INTERNAL", message: "x" } }), "CONFLICT");
      assert.deepEqual(await s.getBuild(b.id), done);

      const f = await s.createBuild();
      const failed = await s.finishBuild(f.id, { status: "failed", error: { code: "BUILD_FAILED", message: "syntax" } });
      assert.deepEqual(failed.error, { code: "BUILD_FAILED", message: "syntax" });
      await expectCode(s.appendBuildLog("nope", ["x"]), "NOT_FOUND");
      assert.equal(await s.getBuild("nope"), null);
    });

    withStore("telemetry: logs, invocations and error groups written per batch, filtered, purged", async (s) => {
      const EVENT = { trigger: "fn#0:0a1b2c3d", eventId: "fn#0:0a1b2c3d@2026-03-01T12:00:00.000Z" };
      const line = (ts: number, level: LogEntry["level"], message: string, requestId: string | null = "r1", functionName = "fn"): LogEntry =>
        ({ ts, functionName, level, source: "function", stream: "stdout", requestId, instanceId: "i1", message });
      const inv = (requestId: string, ts: number, extra: Partial<InvocationRecord> = {}): InvocationRecord => ({
        requestId, functionName: "fn", version: "v1", instanceId: "i1", nodeId: "n1", coldStart: false, queueMs: 0, startMs: 0, initMs: null,
        handlerMs: 5, totalMs: 6, status: 200, errorCode: null, bytesIn: 0, bytesOut: 2, peakMemoryBytes: 1024, traceparent: "00-x", ts,
        trigger: null, eventId: null, attempt: null, ...extra,
      });
      await s.writeTelemetry({
        logs: [line(1000, "info", "a"), line(1001, "error", "b"), line(1002, "debug", "c", "r2"), line(1003, "warn", "other fn", null, "g")],
        invocations: [inv("r1", 1000, { coldStart: true, startMs: 50, totalMs: 70 }), inv("r2", 1002, { status: 500, errorCode: "FUNCTION_ERROR", totalMs: 700, ...EVENT, attempt: 1 })],
        errors: [{ functionName: "fn", fingerprint: "fp1", code: "FUNCTION_ERROR", messageShape: "boom <n>", topFrame: "f (a.js:1)", requestId: "r2", ts: 1002 }],
      });
      await s.writeTelemetry({
        logs: [line(5000, "info", "d", "r3")],
        invocations: [inv("r3", 5000, { ...EVENT, attempt: 2 })],
        errors: [{ functionName: "fn", fingerprint: "fp1", code: "FUNCTION_ERROR", messageShape: "boom <n>", topFrame: "f (a.js:1)", requestId: "r3", ts: 5000 }],
      });
      const all = await s.queryLogs("fn");
      assert.deepEqual(all.map((l) => l.message), ["a", "b", "c", "d"]);
      assert.ok(all[0]!.seq < all[1]!.seq);
      assert.deepEqual(all[1], { ...line(1001, "error", "b"), seq: all[1]!.seq });
      assert.deepEqual((await s.queryLogs("fn", { minLevel: "warn" })).map((l) => l.message), ["b"]);
      assert.deepEqual((await s.queryLogs("fn", { requestId: "r2" })).map((l) => l.message), ["c"]);
      assert.deepEqual((await s.queryLogs("fn", { since: 1001, limit: 2 })).map((l) => l.message), ["c", "d"]);
      assert.deepEqual((await s.queryLogs("fn", { afterSeq: all[2]!.seq })).map((l) => l.message), ["d"]);
      await expectCode(s.queryLogs("fn", { limit: 0 }), "INVALID_ARGUMENT");

      const invs = await s.queryInvocations("fn");
      assert.deepEqual(invs.map((r) => r.requestId), ["r3", "r2", "r1"]);
      assert.deepEqual(invs[2], inv("r1", 1000, { coldStart: true, startMs: 50, totalMs: 70 }));
      assert.deepEqual((await s.queryInvocations("fn", { statusClass: 5 })).map((r) => r.requestId), ["r2"]);
      assert.deepEqual((await s.queryInvocations("fn", { cold: true })).map((r) => r.requestId), ["r1"]);
      assert.deepEqual((await s.queryInvocations("fn", { slowerThanMs: 100 })).map((r) => r.requestId), ["r2"]);
      assert.deepEqual((await s.queryInvocations("fn", { failed: true })).map((r) => r.requestId), ["r2"]);
      // Which trigger, event and attempt: kept, and filterable (every attempt of one event).
      assert.deepEqual(invs[1], inv("r2", 1002, { status: 500, errorCode: "FUNCTION_ERROR", totalMs: 700, ...EVENT, attempt: 1 }));
      assert.deepEqual(invs.map((r) => [r.trigger, r.eventId, r.attempt]), [[EVENT.trigger, EVENT.eventId, 2], [EVENT.trigger, EVENT.eventId, 1], [null, null, null]]);
      assert.deepEqual((await s.queryInvocations("fn", { eventId: EVENT.eventId })).map((r) => r.requestId), ["r3", "r2"]);
      assert.deepEqual((await s.queryInvocations("fn", { trigger: EVENT.trigger })).map((r) => r.requestId), ["r3", "r2"]);
      assert.deepEqual(await s.queryInvocations("fn", { eventId: "other" }), []);

      const [group] = await s.listErrorGroups("fn");
      assert.deepEqual(group, {
        functionName: "fn", fingerprint: "fp1", code: "FUNCTION_ERROR", messageShape: "boom <n>", topFrame: "f (a.js:1)",
        count: 2, firstSeen: 1002, lastSeen: 5000, sampleRequestId: "r3",
      });

      // Age: everything before 2000 goes (the group was seen at 5000, it stays).
      assert.deepEqual(await s.purgeTelemetry({ olderThan: 2000 }), { logs: 4, invocations: 2, errorGroups: 0 });
      assert.deepEqual((await s.queryLogs("fn")).map((l) => l.message), ["d"]);
      assert.deepEqual((await s.queryInvocations("fn")).map((r) => r.requestId), ["r3"]);
      // Rows: keep the newest one of each.
      await s.writeTelemetry({ logs: [line(6000, "info", "e")], invocations: [inv("r4", 6000)], errors: [] });
      assert.deepEqual(await s.purgeTelemetry({ olderThan: 0, maxLogRows: 1, maxInvocationRows: 1 }), { logs: 1, invocations: 1, errorGroups: 0 });
      assert.deepEqual((await s.queryLogs("fn")).map((l) => l.message), ["e"]);
      assert.equal((await s.purgeTelemetry({ olderThan: 10_000 })).errorGroups, 1);
      assert.deepEqual(await s.listErrorGroups("fn"), []);
    });

    withStore("telemetry: fractional times are stored as whole milliseconds", async (s) => {
      const ts = 1_700_000_000_123.6;
      await s.writeTelemetry({
        logs: [{ ts, functionName: "fn", level: "info", source: "function", stream: "stdout", requestId: "r", instanceId: "i", message: "m" }],
        invocations: [{
          requestId: "r", functionName: "fn", version: "v1", instanceId: "i", nodeId: "n", coldStart: false, queueMs: 0.25, startMs: 0, initMs: null,
          handlerMs: 1.5, totalMs: 1.75, status: 200, errorCode: null, bytesIn: 0, bytesOut: 0, peakMemoryBytes: null, traceparent: "00-x", ts,
          trigger: null, eventId: null, attempt: null,
        }],
        errors: [{ functionName: "fn", fingerprint: "f", code: "FUNCTION_ERROR", messageShape: "x", topFrame: null, requestId: "r", ts }],
      });
      assert.equal((await s.queryLogs("fn"))[0]?.ts, 1_700_000_000_124);
      const [r] = await s.queryInvocations("fn");
      assert.equal(r?.ts, 1_700_000_000_124);
      assert.equal(r?.totalMs, 1.75, "durations keep their fraction");
      assert.equal((await s.listErrorGroups("fn"))[0]?.lastSeen, 1_700_000_000_124);
    });

    // Concurrency: N callers at once (Promise.allSettled), so an implementation with a connection pool
    // really runs them in parallel. Each rule that needs "read then write" must hold under the race.
    const RACERS = 8;
    const settle = <T>(n: number, fn: (i: number) => Promise<T>) => Promise.allSettled(Array.from({ length: n }, (_, i) => fn(i)));
    const fulfilled = <T>(rs: PromiseSettledResult<T>[]) => rs.filter((r): r is PromiseFulfilledResult<T> => r.status === "fulfilled").map((r) => r.value);
    const rejectedCodes = (rs: PromiseSettledResult<unknown>[]) =>
      rs.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => (r.reason as { code?: string }).code ?? String(r.reason));

    withStore("race: compare-and-swap activations, exactly one writer wins", async (s) => {
      for (let i = 0; i < RACERS; i++) await s.addVersion(version("fn", `v${i}`, digest(String(i))));
      const rs = await settle(RACERS, (i) => s.activateVersions([{ functionName: "fn", version: `v${i}`, expectedActive: null }]));
      const won = fulfilled(rs);
      assert.equal(won.length, 1, `exactly one activation wins, got ${won.length}`);
      assert.deepEqual(rejectedCodes(rs), Array(RACERS - 1).fill("CONFLICT"));
      assert.equal((await s.getActiveVersion("fn"))?.version, won[0]![0]!.activeVersion);
      // Without a guard every switch succeeds and the pointer ends on one of them.
      const free = await settle(RACERS, (i) => s.activateVersions([{ functionName: "fn", version: `v${i}` }]));
      assert.equal(fulfilled(free).length, RACERS);
      assert.match((await s.getActiveVersion("fn"))?.version ?? "", /^v\d$/);
    });

    withStore("race: multi-function activations in opposite orders neither deadlock nor mix", async (s) => {
      for (const fn of ["a", "b"]) {
        await s.addVersion(version(fn, `${fn}1`, digest("1")));
        await s.addVersion(version(fn, `${fn}2`, digest("2")));
      }
      const rs = await settle(RACERS, (i) => s.activateVersions(i % 2 === 0
        ? [{ functionName: "a", version: "a1" }, { functionName: "b", version: "b1" }]
        : [{ functionName: "b", version: "b2" }, { functionName: "a", version: "a2" }]));
      assert.deepEqual(rejectedCodes(rs), [], "no activation may fail (a deadlock would)");
      const a = (await s.getFunction("a"))?.activeVersion, b = (await s.getFunction("b"))?.activeVersion;
      // All or nothing: the last writer set both, so both pointers come from the same deploy.
      assert.ok((a === "a1" && b === "b1") || (a === "a2" && b === "b2"), `mixed deploys: a=${a} b=${b}`);
    });

    withStore("race: concurrent revocations all return the one revocation time", async (s) => {
      const { token, record } = await s.createToken("ci");
      const rs = await settle(RACERS, () => s.revokeToken(record.id));
      const all = fulfilled(rs);
      assert.equal(all.length, RACERS);
      assert.equal(new Set(all.map((r) => r.revokedAt)).size, 1, "one revocation time");
      assert.equal(typeof all[0]!.revokedAt, "number");
      assert.equal(await s.verifyToken(token), null);
      assert.deepEqual(await s.listTokens(), [all[0]]);
    });

    withStore("race: a build finishes exactly once", async (s) => {
      const b = await s.createBuild();
      const rs = await settle(RACERS, (i) => s.finishBuild(b.id, i % 2 === 0
        ? { status: "succeeded", result: { by: i } }
        : { status: "failed", error: { code: "BUILD_FAILED", message: `by ${i}` } }));
      const won = fulfilled(rs);
      assert.equal(won.length, 1, `exactly one finish wins, got ${won.length}`);
      assert.deepEqual(rejectedCodes(rs), Array(RACERS - 1).fill("CONFLICT"));
      assert.deepEqual(await s.getBuild(b.id), won[0]);
    });

    withStore("race: build log appends keep each call's lines together and lose none", async (s) => {
      const b = await s.createBuild();
      const rs = await settle(RACERS, (i) => s.appendBuildLog(b.id, [`w${i} 0`, `w${i} 1`, `w${i} 2`]));
      assert.deepEqual(rejectedCodes(rs), []);
      const log = await s.getBuildLog(b.id);
      assert.equal(log.length, RACERS * 3);
      for (let k = 0; k < log.length; k += 3) {
        const w = log[k]!.split(" ")[0];
        assert.deepEqual(log.slice(k, k + 3), [`${w} 0`, `${w} 1`, `${w} 2`]);
      }
    });

    withStore("race: names and versions stay unique under concurrent writers", async (s) => {
      const names = ["Race", "race", "RACE", "rAce"];
      const fns = await settle(RACERS, (i) => s.ensureFunction(names[i % names.length]!));
      const winner = fulfilled(fns)[0]?.name;
      assert.ok(winner !== undefined);
      assert.equal(fulfilled(fns).length, RACERS / names.length, "only calls with the winning spelling succeed");
      assert.deepEqual(rejectedCodes(fns), Array(RACERS - RACERS / names.length).fill("CONFLICT"));
      assert.deepEqual((await s.listFunctions()).map((f) => f.name), [winner]);

      const same = fulfilled(await settle(RACERS, () => s.addVersion(version("fn", "v1"))));
      assert.equal(same.length, RACERS, "identical redeploys all succeed");
      assert.ok(same.every((v) => JSON.stringify(v) === JSON.stringify(same[0])), "and return the one stored record");
      const clash = await settle(RACERS, (i) => s.addVersion(version("fn", "v2", digest(String(i)))));
      assert.equal(fulfilled(clash).length, 1);
      assert.deepEqual(rejectedCodes(clash), Array(RACERS - 1).fill("CONFLICT"));
      assert.equal((await s.getVersion("fn", "v2"))?.digest, fulfilled(clash)[0]!.digest);

      await settle(RACERS, (i) => s.setEnvVars("fn", { [`K${i}`]: String(i) }));
      assert.equal(Object.keys(await s.getEnvVars("fn")).length, RACERS, "concurrent patches of different keys all land");
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
