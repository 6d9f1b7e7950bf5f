import { test } from "node:test";
import assert from "node:assert/strict";
import { KeyedTokenBuckets } from "./keyed-token-buckets";

test("take spends a token while there is one, then answers the whole seconds to wait; refill is capped at the burst", () => {
  let t = 0;
  const b = new KeyedTokenBuckets({ burst: 2, perMinute: 30, maxKeys: 10 }, () => t);
  assert.equal(b.take("k"), 0);
  assert.equal(b.take("k"), 0);
  assert.equal(b.take("k"), 2); // one token per 2 s
  assert.equal(b.waitSeconds("other"), 0);
  assert.equal(b.size, 1, "waitSeconds of an unknown key adds nothing");
  t = 1500;
  assert.equal(b.take("k"), 1);
  t = 2000;
  assert.equal(b.take("k"), 0);
  t = 1e9;
  assert.equal(b.take("k"), 0);
  assert.equal(b.take("k"), 0);
  assert.equal(b.take("k"), 2, "never more than the burst");
});

test("charge never goes below zero", () => {
  const b = new KeyedTokenBuckets({ burst: 1, perMinute: 60, maxKeys: 10 }, () => 0);
  for (let i = 0; i < 100; i++) b.charge("k");
  assert.equal(b.waitSeconds("k"), 1);
});
