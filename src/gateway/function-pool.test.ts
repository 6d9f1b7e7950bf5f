// Pool decisions with a fake clock and an in-memory fake driver (pure unit tests: no process runs).
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Dispatcher } from "undici";
import type { Instance, InstanceExit, InstanceSpec, SandboxDriver, StartOptions } from "../sandbox/driver";
import { StratusError } from "../shared/errors";
import { parseFunctionConfig, type FunctionConfigInput } from "../shared/function-config";
import { createSilentLogger } from "../shared/logger";
import type { Deployment } from "./deployment";
import { FunctionPool, type Lease } from "./function-pool";

interface FakeStart {
  spec: InstanceSpec;
  options: StartOptions | undefined;
  succeed(): FakeInstance;
  fail(err: unknown): void;
}
interface FakeInstance extends Instance {
  closedWith: "close" | "destroy" | null;
  crash(reason: InstanceExit["reason"]): void;
}

function fakeDriver() {
  const pending: FakeStart[] = [];
  const instances: FakeInstance[] = [];
  const driver: SandboxDriver = {
    name: "process",
    start(spec, options) {
      return new Promise<Instance>((resolve, reject) => {
        pending.push({
          spec,
          options,
          succeed() {
            let exit!: (e: InstanceExit) => void;
            const exited = new Promise<InstanceExit>((r) => (exit = r));
            const inst: FakeInstance = {
              id: spec.instanceId,
              spec,
              initMs: null,
              endpoint: { socketPath: "/nonexistent" },
              startMs: 40,
              exited,
              closedWith: null,
              close: async () => {
                inst.closedWith ??= "close";
                exit({ reason: "closed", exitCode: 0, signal: null });
                return exited;
              },
              destroy: async () => {
                inst.closedWith ??= "destroy";
                exit({ reason: "destroyed", exitCode: null, signal: "SIGKILL" });
                return exited;
              },
              stats: async () => null,
              crash: (reason) => exit({ reason, exitCode: 137, signal: null }),
            };
            instances.push(inst);
            resolve(inst);
            return inst;
          },
          fail: reject,
        });
      });
    },
    prepare: async () => ({}),
    discover: async () => [],
    reconcile: async () => ({ removed: 0 }),
    open: async () => {},
    close: async () => undefined,
  };
  return { driver, pending, instances };
}

function deployment(config: FunctionConfigInput, version = "v1"): Deployment {
  return { name: "f", version, artifactDir: "/a", entry: "index.js", exportName: "f", config: parseFunctionConfig("f", config), env: {} };
}

const tick = () => new Promise<void>((r) => setImmediate(r));

function setup(config: FunctionConfigInput, widthFloor = 1, idleCores?: () => number) {
  let clock = 1_000;
  const fake = fakeDriver();
  const pool = new FunctionPool({
    deployment: deployment(config),
    driver: fake.driver,
    logger: createSilentLogger(),
    now: () => clock,
    connect: () => ({ destroy: async () => undefined }) as unknown as Dispatcher,
    widthFloor,
    ...(idleCores === undefined ? {} : { idleCores }),
  });
  return { ...fake, pool, advance: (ms: number) => (clock += ms), now: () => clock };
}

/** tryAcquire, else wait; returns the pending promise. */
function acquire(pool: FunctionPool): Promise<Lease> {
  const lease = pool.tryAcquire();
  return lease ? Promise.resolve(lease) : pool.wait().promise;
}

test("pool: parallel requests start one instance each, then reuse the most recently used", async () => {
  const { pool, pending } = setup({ maxInstances: 5 });
  const waits = [0, 1, 2].map(() => acquire(pool));
  assert.equal(pending.length, 3, "one start per parallel request");
  pending.forEach((p) => p.succeed());
  const leases = await Promise.all(waits);
  assert.equal(new Set(leases.map((l) => l.slot)).size, 3, "never two requests on one instance");
  assert.ok(leases.every((l) => l.coldStart && l.startMs === 40));
  pool.release(leases[0]!, "reuse");
  pool.release(leases[2]!, "reuse");
  const warm = pool.tryAcquire();
  assert.ok(warm);
  assert.equal(warm.slot, leases[2]!.slot, "most recently used first");
  assert.equal(warm.coldStart, false);
  assert.equal(pending.length, 3, "no new start for a warm hit");
});

test("pool: maxInstances bounds starts, the queue is FIFO, full queue is QUEUE_FULL with Retry-After", async () => {
  const { pool, pending, advance } = setup({ maxInstances: 2, maxQueue: 2 });
  const a = acquire(pool);
  const b = acquire(pool);
  const c = acquire(pool);
  const d = acquire(pool);
  assert.equal(pending.length, 2);
  assert.throws(() => pool.wait(), (err: StratusError) => err.code === "QUEUE_FULL" && err.headers?.["retry-after"] === "1");
  pending[0]!.succeed();
  pending[1]!.succeed();
  const [la, lb] = await Promise.all([a, b]);
  assert.notEqual(la.slot, lb.slot);
  advance(25);
  pool.release(la, "reuse");
  const lc = await c;
  assert.equal(lc.slot, la.slot, "the freed instance serves the head of the queue");
  assert.equal(lc.coldStart, false);
  assert.equal(lc.queueMs, 25);
  pool.release(lb, "reuse");
  assert.equal((await d).slot, lb.slot);
  assert.equal(pending.length, 2, "never more than maxInstances");
});

test("pool: waiters past queueTimeout get QUEUE_TIMEOUT from the sweep", async () => {
  const { pool, pending, advance, now } = setup({ maxInstances: 1, queueTimeout: 500 });
  const first = acquire(pool);
  pending[0]!.succeed();
  const held = await first;
  const waiting = acquire(pool);
  const rejected = assert.rejects(waiting, (err: StratusError) => err.code === "QUEUE_TIMEOUT");
  advance(499);
  pool.sweep(now());
  assert.equal(pool.stats().waiting, 1);
  advance(1);
  pool.sweep(now());
  await rejected;
  assert.equal(pool.stats().waiting, 0);
  pool.release(held, "reuse");
});

test("pool: a failed start rejects the waiters it would have served; the next request starts again", async () => {
  const { pool, pending } = setup({ maxInstances: 1 });
  const a = acquire(pool);
  const b = acquire(pool);
  assert.equal(pending.length, 1);
  pending[0]!.fail(new StratusError("FUNCTION_LOAD_FAILED", "boom"));
  await assert.rejects(a, (err: StratusError) => err.code === "FUNCTION_LOAD_FAILED");
  // b is then uncovered, so the pool starts another instance for it instead of leaving it hanging.
  await tick();
  assert.equal(pending.length, 2);
  pending[1]!.fail(new Error("spawn failed"));
  await assert.rejects(b, (err: StratusError) => err.code === "INSTANCE_START_FAILED");
  assert.deepEqual({ ...pool.stats() }, { ready: 0, starting: 0, busy: 0, idle: 0, retiring: 0, waiting: 0, total: 0 });
});

test("pool: idle instances are reaped after idleTimeout, minInstances stay warm and are replaced", async () => {
  const { pool, pending, instances, advance, now } = setup({ minInstances: 1, maxInstances: 3, idleTimeout: 1000 });
  assert.equal(pending.length, 1, "minInstances started at once");
  pending[0]!.succeed();
  await tick();
  const leases = [acquire(pool), acquire(pool)];
  const l0 = await leases[0]!;
  assert.equal(l0.coldStart, false, "a pre-warmed instance is not a cold start");
  pending[1]!.succeed();
  const l1 = await leases[1]!;
  pool.release(l0, "reuse");
  pool.release(l1, "reuse");
  advance(999);
  pool.sweep(now());
  assert.equal(pool.stats().ready, 2);
  advance(1);
  pool.sweep(now());
  assert.equal(pool.stats().ready, 1, "one reaped, minInstances kept");
  assert.equal(instances.filter((i) => i.closedWith === "close").length, 1);
  // The kept one dies: the pool replaces it.
  const kept = instances.find((i) => i.closedWith === null)!;
  kept.crash("crashed");
  await tick();
  assert.equal(pending.length, 3, "replacement started");
});

test("pool: concurrency > 1 shares an instance up to the limit", async () => {
  const { pool, pending } = setup({ concurrency: 3, maxInstances: 2 });
  const ws = [1, 2, 3, 4].map(() => acquire(pool));
  assert.equal(pending.length, 2, "3 waiters covered by one start, the 4th starts another");
  pending[0]!.succeed();
  const first3 = await Promise.all(ws.slice(0, 3));
  assert.equal(new Set(first3.map((l) => l.slot)).size, 1);
  pending[1]!.succeed();
  const fourth = await ws[3]!;
  assert.notEqual(fourth.slot, first3[0]!.slot);
});

test("pool: destroy/retire outcomes, and a new version retires the old instances", async () => {
  const { pool, pending, instances } = setup({ maxInstances: 3 });
  const ws = [acquire(pool), acquire(pool), acquire(pool)];
  pending.forEach((p) => p.succeed());
  const [a, b, c] = await Promise.all(ws);
  pool.release(a!, "destroy");
  assert.equal(instances[0]!.closedWith, "destroy");
  pool.release(b!, "reuse");
  pool.setDeployment(deployment({ maxInstances: 3 }, "v2"));
  assert.equal(instances[1]!.closedWith, "close", "idle old instance closed at once");
  assert.equal(instances[2]!.closedWith, null, "busy old instance kept until released");
  const next = acquire(pool);
  assert.equal(pending.length, 4, "a new-version instance starts");
  assert.equal(pending[3]!.spec.version, "v2");
  pool.release(c!, "reuse");
  assert.equal(instances[2]!.closedWith, "close", "old instance closed after its request");
  pending[3]!.succeed();
  assert.equal((await next).slot.deployment.version, "v2");
});

test("pool: close fails waiters with SHUTTING_DOWN and closes instances", async () => {
  const { pool, pending, instances } = setup({ maxInstances: 1 });
  const a = acquire(pool);
  pending[0]!.succeed();
  await a;
  const b = acquire(pool);
  const closing = pool.close(1000);
  await assert.rejects(b, (err: StratusError) => err.code === "SHUTTING_DOWN");
  await closing;
  assert.equal(instances[0]!.closedWith, "close");
  assert.throws(() => pool.wait(), (err: StratusError) => err.code === "SHUTTING_DOWN");
});

test("pool: a fast handler's waiter waits for the busy instance rather than starting one; a slow handler's starts at once", async () => {
  const { pool, pending, advance } = setup({ maxInstances: 5 });
  const first = acquire(pool);
  pending[0]!.succeed(); // startMs 40
  const l1 = await first;
  advance(2);
  pool.release(l1, "reuse"); // service time 2 ms
  const busy = pool.tryAcquire();
  assert.ok(busy);
  const queued = pool.wait();
  assert.equal(pending.length, 1, "expected wait (1 × 2 ms) is below a start (40 ms): no start");
  advance(2);
  pool.release(busy, "reuse");
  const l2 = await queued.promise;
  assert.equal(l2.slot, l1.slot, "the busy instance served it once free");
  assert.equal(pending.length, 1);

  // Left waiting longer than a start (the instance is stuck): the re-check starts one after a start time.
  const stuck = pool.wait();
  assert.equal(pending.length, 1);
  advance(45);
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(pending.length, 2, "an overdue waiter starts an instance");
  pending[1]!.succeed();
  const l3 = await stuck.promise;
  assert.notEqual(l3.slot, l1.slot);
  pool.release(l2, "reuse");
  pool.release(l3, "reuse");

  // Slow service: the estimate says waiting is worse than starting.
  const a = pool.tryAcquire()!;
  const b = pool.tryAcquire()!;
  advance(1_000);
  pool.release(a, "reuse");
  pool.release(b, "reuse");
  const c = pool.tryAcquire()!;
  const d = pool.tryAcquire()!;
  assert.ok(c && d);
  const third = pool.wait();
  assert.equal(pending.length, 3, "expected wait (≈ 1 × 200+ ms ÷ 2) exceeds a start: start now");
  pending[2]!.succeed();
  await third.promise;
  await pool.destroy();
});

test("pool: when the estimate declines a start, maxQueue still bounds the waiters (a full queue starts one while capacity is left, then refuses)", async () => {
  const { pool, pending, advance } = setup({ maxInstances: 2, maxQueue: 2 });
  const first = acquire(pool);
  pending[0]!.succeed(); // startMs 40
  const l1 = await first;
  advance(1);
  pool.release(l1, "reuse"); // service time 1 ms: waiting looks cheaper than a start
  const busy = pool.tryAcquire()!;
  const w1 = pool.wait();
  const w2 = pool.wait();
  assert.equal(pending.length, 1, "two waiters fit the queue: no start");
  const w3 = pool.wait();
  assert.equal(pending.length, 2, "the queue is full and capacity is left: start rather than refuse");
  assert.throws(() => pool.wait(), (err: StratusError) => err.code === "QUEUE_FULL", "at maxInstances with the queue full: refused");
  pending[1]!.succeed();
  pool.release(busy, "reuse");
  const leases = await Promise.all([w1.promise, w2.promise]);
  for (const l of leases) pool.release(l, "reuse");
  pool.release(await w3.promise, "reuse");
  await pool.destroy();
});

test("pool: below the width floor (cores + 1 by default) a waiter always starts an instance", async () => {
  const { pool, pending, advance } = setup({ maxInstances: 5 }, 2);
  const first = acquire(pool);
  pending[0]!.succeed();
  const l1 = await first;
  advance(1);
  pool.release(l1, "reuse"); // a fast handler: the estimate alone would not start
  const busy = pool.tryAcquire()!;
  const w1 = pool.wait();
  assert.equal(pending.length, 2, "one instance, floor 2: start");
  const w2 = pool.wait();
  assert.equal(pending.length, 2, "the second waiter is covered by the start, and at the floor the estimate decides");
  pending[1]!.succeed();
  pool.release(busy, "reuse");
  for (const l of await Promise.all([w1.promise, w2.promise])) pool.release(l, "reuse");
  await pool.destroy();
});

test("pool: above the width floor a start also needs idle CPU (half a core); below the floor it does not", async () => {
  let idle = 0.2; // cores: the node's CPU is saturated
  const { pool, pending, advance } = setup({ maxInstances: 5 }, 2, () => idle);
  const first = acquire(pool);
  pending[0]!.succeed(); // startMs 40
  const l1 = await first;
  advance(1_000);
  pool.release(l1, "reuse"); // service time 1 s: the estimate says start
  const a = pool.tryAcquire()!;
  const w1 = pool.wait();
  assert.equal(pending.length, 2, "one instance, floor 2: starts whatever the CPU");
  pending[1]!.succeed();
  const b = await w1.promise;
  const w2 = pool.wait();
  assert.equal(pending.length, 2, "at the floor, a saturated CPU: no start although the estimate (1 s wait) says start");
  // The re-check after one start time does not start either while the CPU stays saturated.
  advance(100);
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(pending.length, 2, "the overdue re-check holds back on a saturated CPU too");
  idle = 0.6;
  advance(100);
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(pending.length, 3, "the CPU has room again: the overdue waiter starts an instance");
  pending[2]!.succeed();
  const c = await w2.promise;
  idle = 1.5;
  const w3 = pool.wait();
  assert.equal(pending.length, 4, "idle CPU and a long expected wait: start at once");
  pending[3]!.succeed();
  for (const l of [a, b, c, await w3.promise]) pool.release(l, "reuse");
  await pool.destroy();
});

test("pool: on a saturated CPU, a waiter that waited more than twice its expected wait (slow work, not short of CPU) still starts an instance after one start time", async () => {
  const { pool, pending, advance } = setup({ maxInstances: 5 }, 1, () => 0);
  const first = acquire(pool);
  pending[0]!.succeed(); // startMs 40
  const l1 = await first;
  advance(1);
  pool.release(l1, "reuse"); // service time 1 ms: the averages say fast
  const busy = pool.tryAcquire()!; // ... but this request turns out slow (a handler waiting on I/O)
  const w = pool.wait();
  assert.equal(pending.length, 1, "expected wait 1 ms: no start");
  advance(45); // waited 45 ms, more than a start and far more than twice the 1 ms expected
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(pending.length, 2, "misjudged by the estimate: starts although the CPU is saturated");
  pending[1]!.succeed();
  pool.release(await w.promise, "reuse");
  pool.release(busy, "reuse");
  await pool.destroy();
});

test("pool: the first start of a function says so; a start whose boot is no longer needed is cancelled without failing its waiters", async () => {
  const { pool, pending, advance } = setup({ maxInstances: 10 });
  const waits = [0, 1, 2].map(() => acquire(pool));
  assert.equal(pending.length, 3);
  assert.deepEqual(pending.map((p) => p.options?.firstInstance), [true, false, false], "only the first of the function is a first instance");
  const l1 = await (pending[0]!.succeed(), waits[0]!);
  advance(30);
  pool.release(l1, "reuse"); // service time 30 ms (a start takes 40 here); the instance serves the second waiter
  const l2 = await waits[1]!;
  assert.equal(l2.slot, l1.slot);
  // One waiter left, two starts: the first of them is covered by the other.
  assert.equal(pending[1]!.options!.stillNeeded!(1000), false, "its waiter is covered by the other start");
  pending[1]!.fail(new StratusError("INSTANCE_START_FAILED", "start not needed"));
  await tick();
  // The last start: one waiter, one busy instance at 30 ms per request.
  assert.equal(pending[2]!.options!.stillNeeded!(20), true, "a boot of 20 ms would serve it sooner than the busy instance");
  assert.equal(pending[2]!.options!.stillNeeded!(1000), false, "a boot of 1 s would not");
  pending[2]!.fail(new StratusError("INSTANCE_START_FAILED", "start not needed"));
  await tick();
  assert.equal(pool.stats().waiting, 1, "the waiter was not failed with the cancelled starts");
  advance(30);
  pool.release(l2, "reuse");
  const l3 = await waits[2]!;
  assert.equal(l3.slot, l1.slot, "the ready instance serves it");
  assert.equal(pending.length, 3, "nothing started again");
  pool.release(l3, "reuse");
});
