import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { classifyExit, createDriverCore, heapMbOf, parsePoolKey, poolKeyOf, signalExitCode, signalOfExitCode, specEnv, specializeMessage, type Launched, type RawExit, type SandboxBackend } from "./driver-core";
import type { InstanceSpec } from "./driver";
import { parseFunctionConfig } from "../shared/function-config";
import { ENV, EXIT, GENERIC_READY_LINE, READY_LINE } from "../shared/protocol";

const spec = (instanceId = "i-1"): InstanceSpec => ({
  instanceId, functionName: "f", version: "1", artifactDir: "/a", entry: "index.js", exportName: "f", config: parseFunctionConfig("f", {}), env: { A: "1" },
});

test("pool keys round-trip", () => {
  const k = { memoryMb: 512, network: "none" as const, maxOpenFiles: 128 };
  assert.equal(poolKeyOf(k), "512:none:128");
  assert.deepEqual(parsePoolKey(poolKeyOf(k)), k);
});

test("heap: 75 % of memory, at least 16 MB", () => {
  assert.equal(heapMbOf(256), 192);
  assert.equal(heapMbOf(64), 48);
  assert.equal(heapMbOf(10), 16);
});

test("signal names and shell-style exit codes", () => {
  assert.equal(signalExitCode("SIGKILL"), 137);
  assert.equal(signalExitCode(null), null);
  assert.equal(signalOfExitCode(134), "SIGABRT");
  assert.equal(signalOfExitCode(1), null);
});

test("classifyExit: one rule for every driver", () => {
  const raw = (exitCode: number | null, oomKilled = false, signal: string | null = null): RawExit => ({ exitCode, signal, oomKilled });
  const rows: Array<[RawExit, Parameters<typeof classifyExit>[1], boolean, string]> = [
    [raw(137, true), "destroyed", true, "destroyed"],
    [raw(137), "load-failed", false, "load-failed"],
    [raw(137, true), null, true, "out-of-memory"],
    [raw(134), null, true, "out-of-memory"],
    [raw(139), "closed", true, "out-of-memory"],
    [raw(null, false, "SIGABRT"), null, true, "out-of-memory"],
    [raw(0), "closed", true, "closed"],
    [raw(EXIT.loadFailed), null, false, "load-failed"],
    [raw(EXIT.loadFailed), null, true, "crashed"],
    [raw(1), null, true, "crashed"],
  ];
  for (const [r, stop, ready, want] of rows) assert.equal(classifyExit(r, stop, ready), want, JSON.stringify({ r, stop, ready }));
});

test("the fresh env and the specialisation message carry the same fields", () => {
  const s = spec();
  const env = specEnv(s, "/fn");
  const m = specializeMessage(s, "/fn");
  assert.equal(env[ENV.entry], "/fn/index.js");
  assert.equal(m.entry, env[ENV.entry]);
  assert.equal(m.exportName, env[ENV.exportName]);
  assert.equal(m.functionName, env[ENV.functionName]);
  assert.equal(m.instanceId, env[ENV.instanceId]);
  assert.deepEqual(m.config, JSON.parse(env[ENV.config]!));
  assert.deepEqual(m.env, s.env);
});

/** A backend whose "sandboxes" are two PassThrough streams; `ready` prints READY at once. */
function fakeBackend(opts: { ready: boolean }): { backend: SandboxBackend<{ out: PassThrough; err: PassThrough; end: (r: RawExit) => void }>; launches: () => number } {
  let launches = 0;
  return {
    launches: () => launches,
    backend: {
      name: "dev", defaultStartTimeoutMs: 2000, pool: false, codeDir: "/fn",
      socketPathOf: (id) => `/tmp/${"d".repeat(40)}/${id}.sock`,
      socketPath: () => "/tmp/x/s.sock",
      async launch(mode, io): Promise<Launched<{ out: PassThrough; err: PassThrough; end: (r: RawExit) => void }>> {
        launches++;
        const out = new PassThrough();
        const err = new PassThrough();
        io.output(out, err);
        let end!: (r: RawExit) => void;
        const exit = new Promise<RawExit>((r) => (end = r));
        if (opts.ready) setImmediate(() => out.write(`${READY_LINE}\n`));
        else setImmediate(() => {
          err.write("boom at load\n");
          setImmediate(() => end({ exitCode: EXIT.loadFailed, signal: null, oomKilled: false }));
        });
        void mode;
        return { handle: { out, err, end }, exit };
      },
      attach: async () => {},
      send: () => {},
      signal: (h, sig) => h.end({ exitCode: sig === "SIGKILL" ? 137 : 0, signal: null, oomKilled: false }),
      stats: async () => ({ memoryBytes: 1, peakMemoryBytes: 1 }),
    },
  };
}

test("core lifecycle: start needs open(); ids validated before anything launches; close is idempotent and final", async () => {
  const { backend, launches } = fakeBackend({ ready: true });
  const core = createDriverCore(backend, {});
  await assert.rejects(core.start(spec()), { code: "INSTANCE_START_FAILED", message: /not open/ });
  await core.open();
  await core.open();
  for (const id of ["Bad", "pw-1", "a/b", "x".repeat(65)]) await assert.rejects(core.start(spec(id)), { code: "INSTANCE_START_FAILED", message: /invalid instance id/ });
  await assert.rejects(core.start(spec("y".repeat(64))), { message: /socket path too long/ }, "the socket path is checked for every driver");
  assert.equal(launches(), 0, "nothing launched for a refused start");
  const inst = await core.start(spec());
  await assert.rejects(core.start(spec()), { message: /already exists/ });
  assert.deepEqual(await inst.stats(), { memoryBytes: 1, peakMemoryBytes: 1 });
  const [a, b] = await Promise.all([core.close(), core.close()]);
  assert.equal(a, b);
  assert.equal((await inst.exited).reason, "destroyed");
  assert.equal(await inst.stats(), null);
  await assert.rejects(core.start(spec("i-2")), { code: "SHUTTING_DOWN" });
  await assert.rejects(core.open(), { code: "SHUTTING_DOWN" });
});

test("core: a load failure is FUNCTION_LOAD_FAILED with the output; graceful close then destroy return one exit", async () => {
  const failing = createDriverCore(fakeBackend({ ready: false }).backend, {});
  await failing.open();
  await assert.rejects(failing.start(spec()), { code: "FUNCTION_LOAD_FAILED", message: /boom at load/ });
  assert.equal(failing.live.size, 0, "nothing tracked after a failed start");
  const core = createDriverCore(fakeBackend({ ready: true }).backend, {});
  await core.open();
  const inst = await core.start(spec());
  const c = await inst.close(1000);
  assert.equal(c.reason, "closed");
  assert.deepEqual(await inst.destroy(), c);
  await core.close();
});

/** A pool backend: slots print GENERIC_READY_LINE, fresh starts READY; the channel calls are recorded. */
function poolBackend(failAttach: boolean): { backend: SandboxBackend<{ out: PassThrough; end: (r: RawExit) => void; kind: string }>; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    backend: {
      name: "dev", defaultStartTimeoutMs: 2000, pool: true, codeDir: "/fn",
      socketPathOf: (id) => `/tmp/x/${id}.sock`,
      socketPath: () => "/tmp/x/s.sock",
      async launch(mode, io) {
        calls.push(`launch ${mode.kind}`);
        const out = new PassThrough();
        io.output(out, new PassThrough());
        let end!: (r: RawExit) => void;
        const exit = new Promise<RawExit>((r) => (end = r));
        setImmediate(() => out.write(`${mode.kind === "generic" ? GENERIC_READY_LINE : READY_LINE}\n`));
        return { handle: { out, end, kind: mode.kind }, exit };
      },
      async attach(h) {
        calls.push("attach");
        if (failAttach) throw new Error("mount failed");
        setImmediate(() => h.out.write(`${READY_LINE}\n`)); // the runtime: READY once its message ended
      },
      send: () => void calls.push("send"),
      begin: (_h, message) => void calls.push(`begin ${JSON.parse(message).instanceId as string}`),
      commit: () => void calls.push("commit"),
      signal: (h, sig) => {
        calls.push(`${sig} ${h.kind}`);
        h.end({ exitCode: sig === "SIGKILL" ? 137 : 0, signal: null, oomKilled: false });
      },
      stats: async () => null,
    },
  };
}

async function idleSlot(core: ReturnType<typeof createDriverCore>): Promise<void> {
  for (let i = 0; i < 200 && core.prewarm.idleCount() < 1; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(core.prewarm.idleCount(), 1, "the pool holds a slot");
}

test("core: with begin/commit the message is written before the attach and ended after it; a failed attach never ends it", async () => {
  const ok = poolBackend(false);
  const core = createDriverCore(ok.backend, { prewarm: 1 });
  await core.open();
  await idleSlot(core);
  await core.start(spec("i-ok"));
  assert.deepEqual(ok.calls, ["launch generic", "begin i-ok", "attach", "commit"], "begin, attach, commit; never send");
  await core.close();

  const bad = poolBackend(true);
  const failing = createDriverCore(bad.backend, { prewarm: 1 });
  await failing.open();
  await idleSlot(failing);
  const inst = await failing.start(spec("i-bad"));
  assert.deepEqual(bad.calls.slice(0, 5), ["launch generic", "begin i-bad", "attach", "SIGKILL generic", "launch fresh"],
    "the spoiled slot is destroyed without its message ever ending, and the start boots fresh");
  assert.ok(!bad.calls.includes("commit") && !bad.calls.includes("send"));
  assert.equal(inst.id, "i-bad");
  await failing.close();
});

/** A backend whose fresh sandboxes print READY only when the test says so; launches are recorded by id. */
function heldBackend(): { backend: SandboxBackend<{ out: PassThrough; end: (r: RawExit) => void }>; launched: string[]; ready(id: string): void } {
  const launched: string[] = [];
  const outs = new Map<string, PassThrough>();
  return {
    launched,
    ready: (id) => void outs.get(id)!.write(`${READY_LINE}\n`),
    backend: {
      name: "dev", defaultStartTimeoutMs: 5000, pool: false, codeDir: "/fn",
      socketPathOf: (id) => `/tmp/x/${id}.sock`,
      socketPath: () => "/tmp/x/s.sock",
      async launch(_mode, io) {
        launched.push(io.id);
        const out = new PassThrough();
        outs.set(io.id, out);
        io.output(out, new PassThrough());
        let end!: (r: RawExit) => void;
        const exit = new Promise<RawExit>((r) => (end = r));
        return { handle: { out, end }, exit };
      },
      attach: async () => {},
      send: () => {},
      signal: (h, sig) => h.end({ exitCode: sig === "SIGKILL" ? 137 : 0, signal: null, oomKilled: false }),
      stats: async () => null,
    },
  };
}

test("core: a function's first instance boots ahead of additional instances queued before it; a start aborted in the gate boots nothing", async () => {
  const { backend, launched, ready } = heldBackend();
  const core = createDriverCore(backend, { maxConcurrentStarts: 1 });
  await core.open();
  const tick = () => new Promise((r) => setImmediate(r));
  const hold = core.start(spec("hold"));
  await tick();
  assert.deepEqual(launched, ["hold"], "the one place is taken");
  const more1 = core.start(spec("a-2"));
  const more2 = core.start(spec("a-3"), { firstInstance: false });
  const ac = new AbortController();
  const cancelled = core.start(spec("c-1"), { firstInstance: true, signal: ac.signal });
  const first = core.start(spec("b-1"), { firstInstance: true });
  await tick();
  ac.abort();
  await assert.rejects(cancelled, { code: "INSTANCE_START_FAILED", message: "start aborted" });
  assert.equal(core.live.has("c-1"), false, "an aborted queued start leaves nothing tracked");
  ready("hold");
  await hold;
  await tick();
  assert.deepEqual(launched, ["hold", "b-1"], "the first instance goes first, the aborted one never launches");
  ready("b-1");
  await first;
  await tick();
  ready("a-2");
  await more1;
  await tick();
  ready("a-3");
  await more2;
  assert.deepEqual(launched, ["hold", "b-1", "a-2", "a-3"]);
  await core.close();
});

test("core: a start whose stillNeeded says no when its boot leaves the gate boots nothing; asked with the boot estimate, once", async () => {
  const { backend, launched, ready } = heldBackend();
  const core = createDriverCore(backend, { maxConcurrentStarts: 1 });
  await core.open();
  const tick = () => new Promise((r) => setImmediate(r));
  const hold = core.start(spec("hold"));
  await tick();
  const asked: number[] = [];
  let answer = false;
  const cancelled = core.start(spec("x-1"), { stillNeeded: (bootMs) => (asked.push(bootMs), answer) });
  const kept = core.start(spec("x-2"), { stillNeeded: (bootMs) => (asked.push(bootMs), (answer = true)) });
  await tick();
  assert.deepEqual(asked, [], "not asked while the boot waits in the gate");
  ready("hold");
  await hold;
  await assert.rejects(cancelled, { code: "INSTANCE_START_FAILED", message: "start not needed" });
  await tick();
  assert.deepEqual(asked, [300, 300], "each asked once, with the driver's boot estimate (300 ms before any boot was measured)");
  assert.deepEqual(launched, ["hold", "x-2"], "the cancelled start launched nothing; the next one took its place");
  assert.equal(core.live.has("x-1"), false);
  ready("x-2");
  await kept;
  const off = createDriverCore(heldBackend().backend, { maxConcurrentStarts: 1, cancelUnneededBoots: false });
  await off.open();
  let offAsked = false;
  const p = off.start(spec("y-1"), { stillNeeded: () => (offAsked = true, false) });
  await tick();
  assert.equal(offAsked, false, "cancelUnneededBoots: false never asks (round three)");
  await off.close();
  await assert.rejects(p);
  await core.close();
});
