import { test } from "node:test";
import assert from "node:assert/strict";
import { FixedQueue } from "./fixed-queue";

test("FixedQueue: FIFO order across several segments", () => {
  const q = new FixedQueue<number>();
  assert.equal(q.isEmpty(), true);
  assert.equal(q.shift(), undefined);
  assert.equal(q.peek(), undefined);
  const n = 2048 * 3 + 17;
  for (let i = 0; i < n; i++) q.push(i);
  assert.equal(q.length, n);
  assert.equal(q.peek(), 0);
  for (let i = 0; i < n; i++) assert.equal(q.shift(), i);
  assert.equal(q.length, 0);
  assert.equal(q.shift(), undefined);
});

test("FixedQueue: interleaved push and shift keep order and count", () => {
  const q = new FixedQueue<string>();
  const model: string[] = [];
  let next = 0;
  for (let round = 0; round < 10_000; round++) {
    // Push two, shift one: grows slowly past a segment boundary while wrapping indexes.
    for (let k = 0; k < 2; k++) {
      const v = `v${next++}`;
      q.push(v);
      model.push(v);
    }
    assert.equal(q.shift(), model.shift());
    assert.equal(q.length, model.length);
    assert.equal(q.peek(), model[0]);
  }
  while (model.length > 0) assert.equal(q.shift(), model.shift());
  assert.equal(q.isEmpty(), true);
});
