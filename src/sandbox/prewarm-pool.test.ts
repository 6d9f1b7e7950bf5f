// PrewarmPool bookkeeping with a fake slot factory whose creations the test resolves by hand.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PrewarmPool } from "./prewarm-pool";

/** `gated`: creations wait (as in the driver's boot gate) until the test calls their `boot()`. */
function fakeFactory(gated = false) {
  const creations: Array<{ key: string; resolve: (s: string) => void; reject: (e: Error) => void; boot: () => void }> = [];
  const destroyed: string[] = [];
  const factory = {
    create: (key: string, booting?: () => void) => new Promise<string>((resolve, reject) => {
      creations.push({ key, resolve, reject, boot: () => booting?.() });
      if (!gated) booting?.();
    }),
    destroy: async (s: string) => void destroyed.push(s),
    alive: () => true,
  };
  return { factory, creations, destroyed };
}
const tick = () => new Promise((r) => setImmediate(r));

test("a start that finds no idle slot claims the one booting; it never becomes idle", async () => {
  const { factory, creations } = fakeFactory();
  const pool = new PrewarmPool(factory, { size: 1, defaultKey: "k" });
  pool.refill();
  assert.equal(creations.length, 1);
  assert.equal(pool.take("k"), undefined);
  const claimed = pool.claimBooting("k");
  assert.ok(claimed, "the booting slot can be claimed");
  assert.equal(pool.claimBooting("k"), undefined, "at most one claimer per booting slot");
  creations[0]!.resolve("slot-1");
  assert.equal(await claimed, "slot-1");
  await tick();
  assert.equal(pool.idleCount(), 0, "a claimed slot is not idle");
  assert.equal(creations.length, 1, "no refill before the claimer's start is done");
  pool.refill();
  assert.equal(creations.length, 2, "the claimer's refill replaces it");
  creations[1]!.resolve("slot-2");
  await tick();
  assert.equal(pool.idleCount("k"), 1);
  assert.equal(pool.claimBooting("k"), undefined, "nothing is booting now");
  assert.equal(pool.take("k"), "slot-2");
  await pool.close();
});

test("a claim resolves undefined when the creation fails or the pool closes", async () => {
  const { factory, creations, destroyed } = fakeFactory();
  const pool = new PrewarmPool(factory, { size: 1, defaultKey: "k", retryMs: 60_000 });
  pool.refill();
  const failed = pool.claimBooting("k")!;
  creations[0]!.reject(new Error("boot failed"));
  assert.equal(await failed, undefined);

  const other = new PrewarmPool(factory, { size: 1, defaultKey: "k" });
  other.refill();
  const claim = other.claimBooting("k")!;
  const closing = other.close();
  creations[1]!.resolve("late");
  assert.equal(await claim, undefined);
  await closing;
  assert.deepEqual(destroyed, ["late"], "a slot finished after close is destroyed");
  await pool.close();
});

test("quiet mode (round one): refillAfterStart waits for a quiet time after the last start, then refills", async (t) => {
  const { factory, creations } = fakeFactory();
  const pool = new PrewarmPool(factory, { size: 1, defaultKey: "k", refillDelayMs: 40, refill: "quiet" });
  pool.refill();
  creations[0]!.resolve("a");
  await tick();
  assert.equal(pool.take("k"), "a");
  t.mock.timers.enable({ apis: ["setTimeout"] });
  pool.refillAfterStart();
  t.mock.timers.tick(25);
  pool.refillAfterStart(); // a second start within the delay pushes the refill back
  t.mock.timers.tick(25);
  assert.equal(creations.length, 1, "no boot while starts keep coming");
  t.mock.timers.tick(15);
  assert.equal(creations.length, 2, "refilled once the starts stopped");
  t.mock.timers.reset();
  creations[1]!.resolve("b");
  await pool.close();
});

test("demand mode: a steady stream of starts refills settleMs after a start, not pushed back by later ones", async (t) => {
  const { factory, creations } = fakeFactory();
  const pool = new PrewarmPool(factory, { size: 1, defaultKey: "k", settleMs: 40 });
  pool.refill();
  creations[0]!.resolve("a");
  await tick();
  assert.equal(pool.take("k"), "a");
  t.mock.timers.enable({ apis: ["setTimeout"] });
  pool.refillAfterStart();
  t.mock.timers.tick(25);
  pool.refillAfterStart(); // the next start of the stream: the pending refill stays where it was
  t.mock.timers.tick(15);
  assert.equal(creations.length, 2, "refilled while starts keep coming");
  t.mock.timers.reset();
  creations[1]!.resolve("b");
  await pool.close();
});

test("demand mode: the target follows the recent cold-start rate times the measured boot time, within size..maxSize", async (t) => {
  const { factory, creations } = fakeFactory();
  t.mock.timers.enable({ apis: ["Date"], now: 1_000_000 });
  const pool = new PrewarmPool(factory, { size: 1, maxSize: 6, defaultKey: "k", rateWindowMs: 10_000 });
  assert.equal(pool.target("k"), 1, "no demand: the configured size");
  assert.equal(pool.target("other"), 0);
  assert.equal(pool.expectedBootMs(), 300, "assumed before any boot was measured");
  // One start is no stream: one per window, the configured size stays.
  pool.take("k");
  assert.equal(pool.target("k"), 1);
  // A stream, 200 ms apart: 5 per second × 300 ms × 2 = 3 slots.
  for (let i = 0; i < 4; i++) {
    t.mock.timers.tick(200);
    pool.take("k");
  }
  assert.equal(pool.target("k"), 3);
  // A burst of 50 on top: far more than maxSize.
  for (let i = 0; i < 50; i++) pool.take("k");
  assert.equal(pool.target("k"), 6);
  // The rate window passes: the burst is still remembered (burstMemoryMs, default 5 min), then the configured size.
  t.mock.timers.tick(10_001); // the last takes were 10 s ago
  assert.equal(pool.target("k"), 6, "a burst's size outlives the rate window");
  t.mock.timers.tick(300_000);
  assert.equal(pool.target("k"), 1);
  t.mock.timers.reset();
  pool.refill();
  creations[0]!.resolve("a");
  await pool.close();
});

test("a creation still waiting in the boot gate is not claimed (the start boots fresh instead)", async () => {
  const { factory, creations } = fakeFactory(true);
  const pool = new PrewarmPool(factory, { size: 1, defaultKey: "k" });
  pool.refill();
  assert.equal(pool.claimBooting("k"), undefined, "queued behind other boots: not claimable");
  creations[0]!.boot();
  const claim = pool.claimBooting("k");
  assert.ok(claim, "booting now: claimable");
  creations[0]!.resolve("s");
  assert.equal(await claim, "s");
  await pool.close();
});

test("demand mode: two creations at once when one at a time cannot keep up with the rate; quiet mode always one", async () => {
  for (const refill of ["demand", "quiet"] as const) {
    const { factory, creations } = fakeFactory();
    const pool = new PrewarmPool(factory, { size: 1, maxSize: 6, defaultKey: "k", refill });
    pool.refill();
    assert.equal(creations.length, 1, `${refill}: no demand, one boot`);
    for (let i = 0; i < 5; i++) pool.take("k"); // a burst: 16/s × 300 ms ≈ 5 boots in flight needed, capped at 2
    pool.refill();
    assert.equal(creations.length, refill === "demand" ? 2 : 1, refill);
    for (const c of creations) c.resolve("s");
    await pool.close();
  }
});

test("demand mode: after a burst the pool refills only once the burst's takes stopped for burstHoldMs; a stream is no burst", async (t) => {
  t.mock.timers.enable({ apis: ["Date", "setTimeout"], now: 1_000_000 });
  const closeAll = async (pool: PrewarmPool<string>, creations: Array<{ resolve: (s: string) => void }>) => {
    const closing = pool.close();
    for (const c of creations) c.resolve("s");
    await closing;
  };
  // A stream of 7 starts per second (the cold-tail bench): refilled as it comes, never held.
  const a = fakeFactory();
  const stream = new PrewarmPool(a.factory, { size: 2, maxSize: 8, defaultKey: "k", burstHoldMs: 1500 });
  for (let i = 0; i < 14; i++) {
    stream.take("k");
    t.mock.timers.tick(150);
  }
  assert.ok(stream.burstHoldUntil("k") <= Date.now(), "a stream is not a burst");
  stream.refill();
  assert.equal(a.creations.length, 2, "the stream refills at once");
  await closeAll(stream, a.creations);

  // A burst: 100 takes within 100 ms, far more than two boots at a time replace.
  const b = fakeFactory();
  const pool = new PrewarmPool(b.factory, { size: 2, maxSize: 8, defaultKey: "k", burstHoldMs: 1500 });
  for (let i = 0; i < 100; i++) {
    if (i % 10 === 9) t.mock.timers.tick(10);
    pool.take("k");
  }
  assert.equal(pool.burstHoldUntil("k"), Date.now() + 1500);
  pool.refill();
  assert.equal(b.creations.length, 0, "no boot while the burst's queue drains");
  t.mock.timers.tick(1000);
  pool.take("k"); // a late start of the same burst pushes the hold back
  assert.equal(pool.burstHoldUntil("k"), Date.now() + 1500);
  pool.refill();
  t.mock.timers.tick(1000);
  assert.equal(b.creations.length, 0, "still held: 1.5 s after the last take");
  t.mock.timers.tick(501);
  assert.equal(b.creations.length, 2, "refilled by the hold's timer, up to the creation limit");
  assert.equal(pool.target("k"), 8, "sized from the burst, up to maxSize");
  t.mock.timers.tick(6000);
  pool.take("k"); // a single start after the hold ended starts none
  assert.ok(pool.burstHoldUntil("k") < Date.now());
  await closeAll(pool, b.creations);

  const c = fakeFactory();
  const noHold = new PrewarmPool(c.factory, { size: 2, maxSize: 8, defaultKey: "k", burstHoldMs: 0 });
  for (let i = 0; i < 100; i++) noHold.take("k");
  noHold.refill();
  assert.equal(c.creations.length, 2, "burstHoldMs 0: refills during the burst (round three)");
  await closeAll(noHold, c.creations);
  t.mock.timers.reset();
});

test("demand mode: a burst sizes the pool for the next one (up to maxSize) for burstMemoryMs; then idle slots above the target are destroyed, oldest first", async (t) => {
  t.mock.timers.enable({ apis: ["Date", "setTimeout"], now: 1_000_000 });
  const { factory, creations, destroyed } = fakeFactory();
  const pool = new PrewarmPool(factory, { size: 2, maxSize: 8, defaultKey: "k", burstHoldMs: 100, rateWindowMs: 10_000, burstMemoryMs: 60_000 });
  for (let i = 0; i < 30; i++) pool.take("k");
  pool.refillAfterStart(); // as the driver does after each start
  t.mock.timers.tick(60); // settleMs: the refill finds the hold and waits for its end
  assert.equal(creations.length, 0);
  t.mock.timers.tick(41); // the hold ends: refilled by its timer
  let resolved = 0;
  for (let round = 0; round < 20 && pool.idleCount("k") < 8; round++) {
    while (resolved < creations.length) creations[resolved]!.resolve(`s${resolved++}`);
    await tick();
  }
  assert.equal(pool.idleCount("k"), 8, "refilled to the burst's size, capped at maxSize");
  assert.equal(creations.length, 8, "and no further");
  t.mock.timers.tick(10_000);
  await tick();
  assert.deepEqual(destroyed, [], "the rate window passed, the burst is remembered: nothing shrinks");
  t.mock.timers.tick(50_000);
  await tick();
  assert.deepEqual(destroyed, ["s0", "s1", "s2", "s3", "s4", "s5"], "after burstMemoryMs: back to `size`, the oldest destroyed");
  assert.equal(pool.idleCount("k"), 2);
  t.mock.timers.tick(60_000);
  assert.equal(destroyed.length, 6, "never below `size`");
  t.mock.timers.reset();
  await pool.close();
});

test("a pool larger than the default cap keeps its size: maxSize is never below size", async () => {
  const { factory, creations } = fakeFactory();
  const pool = new PrewarmPool(factory, { size: 100, defaultKey: "k" });
  assert.equal(pool.target("k"), 100, "prewarm 100 keeps 100 (the default cap of 32 used to cut it)");
  const capped = new PrewarmPool(factory, { size: 4, maxSize: 2, defaultKey: "k" });
  assert.equal(capped.target("k"), 4);
  assert.equal(creations.length, 0);
  await pool.close();
  await capped.close();
});
