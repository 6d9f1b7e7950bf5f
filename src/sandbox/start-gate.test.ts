// The boot gate: a counting semaphore served by priority (a function's first instance, other on-demand
// boots, pre-warm refills), FIFO within one, whose queued waiters can be aborted.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createStartGate, type BootPriority } from "./start-gate";

const tick = () => new Promise((r) => setImmediate(r));

test("start gate: at most `limit` holders; ordinary waiters before refills, each FIFO; double release is a no-op", async () => {
  const gate = createStartGate(1);
  const order: string[] = [];
  const releases = new Map<string, () => void>();
  const first = await gate();
  const wait = (name: string, priority: BootPriority) => void gate(priority).then((r) => {
    order.push(name);
    releases.set(name, r);
  });
  wait("low-1", "refill");
  wait("fresh-1", "more");
  wait("low-2", "refill");
  wait("fresh-2", "more");
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
  const again = await gate("refill");
  again();
});

test("start gate: a function's first instance goes ahead of additional instances queued before it, both ahead of refills", async () => {
  const gate = createStartGate(2);
  const held = [await gate("more"), await gate("more")];
  const order: string[] = [];
  const releases: Array<() => void> = [];
  const wait = (name: string, priority: BootPriority) => void gate(priority).then((r) => {
    order.push(name);
    releases.push(r);
  });
  // As after a failover: function A's requests queued three boots, then B's and C's first ones arrive.
  wait("refill-1", "refill");
  wait("A-2", "more");
  wait("A-3", "more");
  wait("B-1", "first");
  wait("A-4", "more");
  wait("C-1", "first");
  await tick();
  assert.deepEqual(order, [], "held places are never pre-empted");
  held[0]!();
  await tick();
  assert.deepEqual(order, ["B-1"], "the first waiting first instance, though queued after A's");
  held[1]!();
  await tick();
  assert.deepEqual(order, ["B-1", "C-1"]);
  for (let i = 0; i < 4; i++) {
    releases[i]!();
    await tick();
  }
  assert.deepEqual(order, ["B-1", "C-1", "A-2", "A-3", "A-4", "refill-1"], "then the others FIFO, the refill last");
  for (const r of releases) r();
});

test("start gate: a waiter aborted while queued leaves the queue and takes no place; an abort after the grant changes nothing", async () => {
  const gate = createStartGate(1);
  const holder = await gate();
  const ac = new AbortController();
  const aborted = gate("first", ac.signal);
  let nextGranted: (() => void) | null = null;
  void gate("more").then((r) => (nextGranted = r));
  ac.abort(new Error("not needed"));
  await assert.rejects(aborted, { code: "INSTANCE_START_FAILED", message: "start aborted" });
  await tick();
  assert.equal(nextGranted, null, "the place is still held");
  holder();
  await tick();
  assert.notEqual(nextGranted, null, "the next waiter got the place, not the aborted one");
  await assert.rejects(gate("more", AbortSignal.abort()), { code: "INSTANCE_START_FAILED" }, "an already aborted signal never queues");
  nextGranted!();
  const late = new AbortController();
  const r = await gate("more", late.signal);
  late.abort();
  let other = false;
  void gate("more").then((x) => {
    other = true;
    x();
  });
  await tick();
  assert.equal(other, false, "aborting a granted boot does not free its place");
  r();
  await tick();
  assert.equal(other, true);
});

test("start gate: refills never take the last free place, so an on-demand boot starts at once", async () => {
  const gate = createStartGate(2);
  const refill1 = await gate("refill");
  let refill2Granted = false;
  void gate("refill").then((r) => {
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
  const r = await single("refill");
  r(); // a gate of one still lets refills through
});
