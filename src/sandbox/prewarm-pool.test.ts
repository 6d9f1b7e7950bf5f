// PrewarmPool bookkeeping with a fake slot factory whose creations the test resolves by hand.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PrewarmPool } from "./prewarm-pool";

function fakeFactory() {
  const creations: Array<{ key: string; resolve: (s: string) => void; reject: (e: Error) => void }> = [];
  const destroyed: string[] = [];
  const factory = {
    create: (key: string) => new Promise<string>((resolve, reject) => creations.push({ key, resolve, reject })),
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

test("refillAfterStart waits for a quiet time after the last start, then refills", async (t) => {
  const { factory, creations } = fakeFactory();
  const pool = new PrewarmPool(factory, { size: 1, defaultKey: "k", refillDelayMs: 40 });
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
