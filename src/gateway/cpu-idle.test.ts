// The node's idle-CPU sampler with a fake times source (pure unit test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { CpuIdle } from "./cpu-idle";

test("cpu-idle: idle cores over the last interval, unknown (+Infinity) before two samples, an empty interval keeps the last value", () => {
  let t = { busyMs: 1_000, idleMs: 1_000 };
  const cpu = new CpuIdle(2, () => t);
  assert.equal(cpu.idleCores(), Number.POSITIVE_INFINITY);
  cpu.sample();
  assert.equal(cpu.idleCores(), Number.POSITIVE_INFINITY, "one sample is no interval");
  t = { busyMs: 1_300, idleMs: 1_100 }; // 300 busy + 100 idle of 400 ms: a quarter of 2 cores idle
  cpu.sample();
  assert.equal(cpu.idleCores(), 0.5);
  t = { busyMs: 1_300, idleMs: 1_500 }; // all idle
  cpu.sample();
  assert.equal(cpu.idleCores(), 2);
  cpu.sample(); // nothing elapsed
  assert.equal(cpu.idleCores(), 2);
  t = { busyMs: 1_200, idleMs: 1_400 }; // counters went backwards (cannot happen on Linux): ignored
  cpu.sample();
  assert.equal(cpu.idleCores(), 2);
});

test("cpu-idle: the real source reads something between 0 and the cores", async () => {
  const cpu = new CpuIdle(2);
  cpu.sample();
  const until = Date.now() + 60;
  while (Date.now() < until) Math.sqrt(Math.random()); // bounded busy wait: some time passes
  cpu.sample();
  const idle = cpu.idleCores();
  assert.ok(Number.isFinite(idle) && idle >= 0 && idle <= 2, `idle ${idle}: 60 ms on every core is an interval`);
});
