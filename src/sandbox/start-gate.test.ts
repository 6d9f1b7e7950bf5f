// The boot gate: a counting semaphore, FIFO, with pre-warm refills (low) served after ordinary boots.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createStartGate } from "./start-gate";

const tick = () => new Promise((r) => setImmediate(r));

test("start gate: at most `limit` holders; ordinary waiters before low ones, each FIFO; double release is a no-op", async () => {
  const gate = createStartGate(1);
  const order: string[] = [];
  const releases = new Map<string, () => void>();
  const first = await gate();
  const wait = (name: string, low: boolean) => void gate(low).then((r) => {
    order.push(name);
    releases.set(name, r);
  });
  wait("low-1", true);
  wait("fresh-1", false);
  wait("low-2", true);
  wait("fresh-2", false);
  await tick();
  assert.deepEqual(order, [], "nothing passes while the one place is held");
  first();
  first(); // no-op: must not let a second waiter through
  for (let i = 0; i < 4; i++) {
    await tick();
    assert.equal(order.length, i + 1, "one holder at a time");
    releases.get(order[i]!)!();
  }
  assert.deepEqual(order, ["fresh-1", "fresh-2", "low-1", "low-2"]);
  const again = await gate(true);
  again();
});

test("start gate: refills never take the last free place, so an on-demand boot starts at once", async () => {
  const gate = createStartGate(2);
  const refill1 = await gate(true);
  let refill2Granted = false;
  void gate(true).then((r) => {
    refill2Granted = true;
    r();
  });
  await tick();
  assert.equal(refill2Granted, false, "a second refill waits: one place stays free");
  const fresh = await gate(); // resolves at once
  fresh();
  refill1();
  await tick();
  assert.equal(refill2Granted, true, "the second refill follows the first");
  const single = createStartGate(1);
  const r = await single(true);
  r(); // a gate of one still lets refills through
});
