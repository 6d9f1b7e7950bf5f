// Adversarial section E: reliability faults (catalogue: docs/security.md). Real drivers, the real
// runtime, a real SQLite store; faults injected with SIGKILL, a drain under load, a small tmpfs over
// the data dir, a store locked by another process or deleted, a sandbox binary or image that is gone.
// The async and cron cases (E3, E7–E10) need the events system, which does not exist yet: they are
// registered as TODO with that reason (visible in the test summary), not skipped silently.
// E6 (the Docker daemon restarting) is not done: restarting dockerd would hit every other engineer's
// containers on this shared machine, and the proxy variant (the engine's API socket dropped by a
// loopback proxy) is not built yet — TODO with that reason.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { assertInvariants, closeAndAssertNothingLeft, median, startStack, waitFor, type Stack } from "./harness";
import { deploy, project, startPlatform, type PlatformFixture } from "../helpers/platform-fixture";

const PENDING_EVENTS = "pending: needs the async invocation / events system (queue, workers, cron), not built yet";
const FUNCTIONS_JS = readFileSync("test/fixtures/adversarial/gateway-functions.js", "utf8");
const pkg = JSON.stringify({ name: "adv", version: "1.0.0", main: "index.js" });

describe("E: reliability faults (process driver)", () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack("process");
    for (const name of ["canary", "suicide", "slow"]) await stack.deploy(name);
    assert.equal((await stack.call("/fn/canary/")).status, 200);
  });
  after(async () => {
    if (stack) await closeAndAssertNothingLeft(stack);
  });

  test("E1: an instance SIGKILLed mid-request: the caller gets 502 FUNCTION_CRASHED, no retry; the next request is served", async () => {
    assert.equal((await stack.call("/fn/suicide/")).text, "alive");
    const before = (await spyHitsOf("suicide")).length;
    const r = await stack.call("/fn/suicide/?kill=1");
    assert.equal(r.status, 502, r.text);
    assert.equal(JSON.parse(r.text).error.code, "FUNCTION_CRASHED");
    assert.equal(r.headers.get("x-stratus-error-source"), "function");
    await new Promise((r) => setTimeout(r, 300)); // its line comes through the pipe
    const hits = (await spyHitsOf("suicide")).length - before;
    assert.equal(hits, 1, "a sync request is delivered at most once: no platform retry");
    const next = await stack.call("/fn/suicide/");
    assert.equal(next.status, 200);
    assert.equal(next.text, "alive");
    await assertInvariants(stack);
  });

  async function spyHitsOf(name: string) {
    await stack.observe.flush();
    return (await stack.store.queryLogs(name, { limit: 10_000 })).filter((l) => l.message.startsWith(`${name}-hit `));
  }

  test("E1 (async part): an async invocation is retried", { todo: PENDING_EVENTS }, () => {});
  test("E3: gateway kill -9 then restart: every accepted async job runs at least once", { todo: PENDING_EVENTS }, () => {});
  test("E7: clock jumps and DST: each cron slot fires at most once", { todo: PENDING_EVENTS }, () => {});
  test("E8: a worker killed after success, before the ack: redelivered with attempt=2", { todo: PENDING_EVENTS }, () => {});
  test("E9: a function that always fails: N attempts with jittered backoff, then a DLQ record", { todo: PENDING_EVENTS }, () => {});
  test("E10: a poison or huge message: no head-of-line blocking", { todo: PENDING_EVENTS }, () => {});
  test("E6: the Docker daemon restarts, or its API socket drops", {
    todo: "not done: restarting dockerd on this shared machine would kill other engineers' containers; the loopback proxy in front of the engine socket is not built yet",
  }, () => {});

  test("E5: the store locked by another process, then its file deleted: warm requests keep being served quickly", async () => {
    const baseline = median(await times(20));
    // Another process holds the write lock for 3 s (longer than a telemetry flush interval).
    const holder = spawn(process.execPath, ["-e", `
      const db = new (require("better-sqlite3"))(process.argv[1]);
      db.exec("BEGIN IMMEDIATE"); db.exec("CREATE TABLE IF NOT EXISTS e5_lock (x)");
      process.stdout.write("locked\\n");
      setTimeout(() => { db.exec("ROLLBACK"); process.exit(0); }, 3000);
    `, join(stack.dataDir, "stratus.db")], { stdio: ["ignore", "pipe", "inherit"], cwd: process.cwd() });
    const holderExited = new Promise((r) => holder.once("exit", r));
    await new Promise<void>((resolve, reject) => {
      holder.stdout.once("data", () => resolve());
      holder.once("exit", (code) => reject(new Error(`the lock holder exited early (${code})`)));
    });
    const locked = await times(20);
    console.log(`# E5: canary p50 ${baseline.toFixed(1)} ms, while the store is locked ${median(locked).toFixed(1)} ms, max ${Math.max(...locked).toFixed(0)} ms`);
    assert.ok(median(locked) < baseline * 5 + 50, `p50 ${median(locked).toFixed(1)} ms while the store is locked`);
    // No request may wait for the lock: telemetry writes give up after 20 ms (before: one 3 s stall).
    assert.ok(Math.max(...locked) < 1000, `a request took ${Math.max(...locked).toFixed(0)} ms while the store was locked`);
    await holderExited;
    // The store file removed under the running platform: SQLite keeps its open file; serving goes on.
    rmSync(join(stack.dataDir, "stratus.db"));
    const gone = await times(10);
    assert.ok(median(gone) < baseline * 5 + 50, `p50 ${median(gone).toFixed(1)} ms with the store file gone`);
    await assertInvariants(stack);
  });

  async function times(n: number): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const r = await stack.call("/fn/canary/");
      assert.equal(r.status, 200);
      out.push(performance.now() - t0);
    }
    return out;
  }

  // Last: the drain leaves the stack unable to serve.
  test("E2: SIGTERM's drain under load: new requests 503 SHUTTING_DOWN, in-flight and queued ones served", async () => {
    // slow: maxInstances 2, maxQueue 3 → 2 running + 3 queued.
    const inflight = Array.from({ length: 5 }, () => stack.call("/fn/slow/?ms=1500"));
    assert.ok(await waitFor(() => stack.gateway.inFlight() === 5, 10_000), `in-flight ${stack.gateway.inFlight()}`);
    const drained = stack.gateway.drain(20_000);
    const late = await stack.call("/fn/slow/?ms=1");
    assert.equal(late.status, 503);
    assert.equal(JSON.parse(late.text).error.code, "SHUTTING_DOWN");
    const results = await Promise.all(inflight);
    assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200, 200]);
    await drained;
    assert.equal(stack.gateway.inFlight(), 0);
  });
});

describe("E11: a sandbox binary or an image that is gone: a fast 503 with a reason, no hang", () => {
  test("process driver: bwrap removed after start-up", async () => {
    const dir = mkdtempSync(join(tmpdir(), "se11-"));
    const bwrap = join(dir, "bwrap");
    copyFileSync("/usr/bin/bwrap", bwrap);
    execFileSync("chmod", ["755", bwrap]);
    const stack = await startStack("process", { driverOptions: { bwrapPath: bwrap } });
    try {
      await stack.deploy("canary");
      assert.equal((await stack.call("/fn/canary/")).status, 200);
      rmSync(bwrap);
      await stack.deploy("slow");
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        const r = await stack.call("/fn/slow/?ms=1");
        const ms = performance.now() - t0;
        assert.equal(r.status, 503, r.text);
        assert.equal(JSON.parse(r.text).error.code, "INSTANCE_START_FAILED");
        assert.ok(ms < 3000, `took ${ms.toFixed(0)} ms`);
      }
      await assertInvariants(stack); // the warm canary still serves
    } finally {
      await closeAndAssertNothingLeft(stack);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("docker driver: an image that is in no registry", async () => {
    const stack = await startStack("docker");
    try {
      await stack.deploy("canary");
      assert.equal((await stack.call("/fn/canary/")).status, 200);
      await stack.deploy("slow", { image: "127.0.0.1:5000/stratus-e11-missing@sha256:0000000000000000000000000000000000000000000000000000000000000000" });
      const t0 = performance.now();
      const r = await stack.call("/fn/slow/?ms=1");
      const ms = performance.now() - t0;
      assert.equal(r.status, 503, r.text);
      assert.equal(JSON.parse(r.text).error.code, "INSTANCE_START_FAILED");
      assert.ok(ms < 10_000, `took ${ms.toFixed(0)} ms`);
      await assertInvariants(stack);
    } finally {
      await closeAndAssertNothingLeft(stack);
    }
  });
});

describe("E4: the disk is full (a small tmpfs over the data dir)", () => {
  let fullDiskAnswer: { status: number; code: string; body: string } | null = null;
  let mountDir: string;
  let fx: PlatformFixture | null = null;
  before(() => {
    mountDir = mkdtempSync(join(tmpdir(), "se4-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", mountDir]);
  });
  after(async () => {
    if (fx) await fx.close().catch(() => {});
    execFileSync("umount", ["-l", mountDir]);
    rmSync(mountDir, { recursive: true, force: true });
  });

  test("E4: deploys fail with a 5xx platform error, warm functions keep serving, the store is intact after freeing space", async () => {
    fx = await startPlatform({ dataDir: join(mountDir, "d"), prewarm: 0 });
    const out = await deploy(fx, await project({ "index.js": FUNCTIONS_JS, "package.json": pkg }));
    assert.equal(out.final?.type, "result", JSON.stringify(out.final));
    assert.equal((await fetch(`${fx.url}/fn/canary`)).status, 200);
    // Fill the disk: one file takes whatever is left.
    const filler = join(mountDir, "filler");
    try {
      execFileSync("dd", ["if=/dev/zero", `of=${filler}`, "bs=1M", "count=100"], { stdio: "ignore" });
    } catch {
      // dd stops at ENOSPC: the disk is full, as wanted
    }
    const changed = FUNCTIONS_JS.replace("res.send(\"n\")", "res.send(\"n2\")");
    const full = await deploy(fx, await project({ "index.js": changed, "package.json": pkg }));
    const failure = full.status === 200 ? full.final : (full.body as { error?: { code: string } });
    const code = (failure as { error?: { code: string } } | null)?.error?.code ?? "";
    assert.notEqual(full.final?.type, "result", "a deploy succeeded on a full disk");
    fullDiskAnswer = { status: full.status, code, body: JSON.stringify(failure) };
    for (let i = 0; i < 5; i++) {
      const c = await fetch(`${fx.url}/fn/canary`);
      assert.equal(c.status, 200, "warm functions keep serving on a full disk");
      assert.equal(await (await fetch(`${fx.url}/fn/neighbour`)).text(), "n", "the previous version still serves");
    }
    rmSync(filler);
    writeFileSync(join(mountDir, "probe"), "ok"); // space is back
    rmSync(join(mountDir, "probe"));
    await fx.close();
    fx = null;
    const db = new Database(join(mountDir, "d", "stratus.db"), { readonly: true });
    try {
      assert.equal(db.pragma("integrity_check", { simple: true }), "ok");
    } finally {
      db.close();
    }
    mkdirSync(join(mountDir, "after"), { recursive: true });
  });

  // Issue 12.2's second half belongs to the builder's branch: until it lands, a full disk while
  // unpacking is reported as 400 INVALID_ARCHIVE. The check runs (and shows in the summary as TODO).
  test("E4: the full-disk deploy is a 5xx platform error with its own code, not INVALID_ARCHIVE", {
    todo: "pending issue 12.2 (builder branch): a server-side failure while unpacking is still answered 400 INVALID_ARCHIVE",
  }, () => {
    assert.ok(fullDiskAnswer !== null, "the E4 case above did not run");
    assert.notEqual(fullDiskAnswer.code, "INVALID_ARCHIVE", `a full disk was blamed on the upload: ${fullDiskAnswer.body}`);
    assert.ok(fullDiskAnswer.status >= 500 || fullDiskAnswer.code === "", fullDiskAnswer.body);
  });
});
