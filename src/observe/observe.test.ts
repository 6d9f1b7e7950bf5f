import { test, mock } from "node:test";
import assert from "node:assert/strict";
import { fingerprint, messageShape, topStackFrame, errorMessageOfStack } from "./fingerprint";
import { Batcher } from "./batcher";
import { isValidTraceparent, newTraceparent, resolveTraceparent } from "../shared/traceparent";
import { InvocationLogCap } from "./invocation-log-cap";

test("messageShape normalizes numbers, ids, hex and quoted strings", () => {
  const cases: Array<[string, string]> = [
    ["order 17 not found", "order <n> not found"],
    ["order 99999 not found", "order <n> not found"],
    ["user 3fa85f64-5717-4562-b3fc-2c963f66afa6 missing", "user <uuid> missing"],
    ["object deadbeef42 at 0x7ffd1a2b", "object <hex> at <hex>"],
    ['cannot read "foo.bar" of undefined', "cannot read <str> of undefined"],
    ["took 12.5 ms\n    at x (a.js:1:2)", "took <n> ms"],
    ["facade   broken", "facade broken"],
  ];
  for (const [input, want] of cases) assert.equal(messageShape(input), want, input);
});

test("topStackFrame skips runtime and node frames and drops the column", () => {
  const stack = `Function "f" threw: Error: boom
    at Object.func (/srv/artifacts/sha256-abc/functions.js:35:11)
    at invoke (/opt/stratus/runtime.cjs:100:3)`;
  assert.equal(topStackFrame(stack), "Object.func (sha256-abc/functions.js:35)");
  assert.equal(topStackFrame("Error: x\n    at node:internal/process/task_queues:95:5\n    at /a/b/c.js:3:4"), "b/c.js:3");
  assert.equal(topStackFrame("no stack here"), null);
  assert.equal(errorMessageOfStack(stack), "Error: boom");
  assert.equal(errorMessageOfStack("Uncaught TypeError: x"), "TypeError: x");
});

test("fingerprint: same code + shape + frame → same; any difference → different", () => {
  const a = fingerprint("f", "FUNCTION_ERROR", messageShape("order 1 not found"), "x.js:1");
  assert.equal(a, fingerprint("f", "FUNCTION_ERROR", messageShape("order 22 not found"), "x.js:1"));
  assert.notEqual(a, fingerprint("f", "FUNCTION_ERROR", messageShape("order 1 not found"), "x.js:2"));
  assert.notEqual(a, fingerprint("f", "FUNCTION_TIMEOUT", messageShape("order 1 not found"), "x.js:1"));
  assert.notEqual(a, fingerprint("g", "FUNCTION_ERROR", messageShape("order 1 not found"), "x.js:1"));
  assert.match(a, /^[0-9a-f]{16}$/);
});

test("batcher: flushes after the interval, at maxBatch at once, drops and counts when full", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const batches: number[][] = [];
    const dropped: number[] = [];
    let release!: () => void;
    let block = false;
    const b = new Batcher<number>({
      flushIntervalMs: 100, maxBatch: 3, maxBuffered: 4,
      flush: async (items) => {
        batches.push(items);
        if (block) await new Promise<void>((r) => (release = r));
      },
      onDrop: (n) => dropped.push(n),
    });
    b.push(1);
    mock.timers.tick(99);
    await Promise.resolve();
    assert.deepEqual(batches, []);
    mock.timers.tick(1);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(batches, [[1]]);
    // maxBatch: written without waiting for the timer.
    block = true;
    b.push(2); b.push(3); b.push(4);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(batches, [[1], [2, 3, 4]]);
    // The sink is stuck: the buffer fills to maxBuffered (4), then items are dropped, never awaited.
    for (let i = 5; i <= 10; i++) b.push(i);
    assert.equal(b.size, 4);
    assert.deepEqual(dropped, [9, 10]);
    block = false;
    release();
    await b.close();
    assert.deepEqual(batches.flat(), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(b.push(11), false);
  } finally {
    mock.timers.reset();
  }
});

test("traceparent validation (W3C Trace Context)", () => {
  const ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  assert.ok(isValidTraceparent(ok));
  assert.ok(isValidTraceparent(newTraceparent()));
  assert.ok(isValidTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"), "later versions may be longer");
  for (const bad of [
    "", ok.toUpperCase(), ok + "-x", "ff" + ok.slice(2), "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", ok.replace(/-/g, "_"),
  ]) assert.equal(isValidTraceparent(bad), false, bad);
  assert.deepEqual(resolveTraceparent(ok), { traceparent: ok, fresh: false });
  assert.equal(resolveTraceparent("garbage").fresh, true);
});

test("per-invocation cap: counts drops, marks at the end, catches late lines, forgets", () => {
  const cap = new InvocationLogCap(2, 1000, 5000);
  assert.equal(cap.admit("f", "r", 0), true);
  assert.equal(cap.admit("f", "r", 0), true);
  assert.equal(cap.admit("f", "r", 0), false);
  assert.equal(cap.end("r", 10), 1);
  assert.equal(cap.admit("f", "r", 20), false); // late line after the response
  assert.deepEqual(cap.sweep(500), []);
  assert.deepEqual(cap.sweep(1010), [{ requestId: "r", dropped: 1, functionName: "f" }]);
  assert.equal(cap.size, 0);
  cap.admit("f", "never-ends", 0);
  assert.deepEqual(cap.sweep(5000), []);
  assert.equal(cap.size, 0);
});

test("Batcher: a retryable failed write keeps the batch (bounded, overflow counted) and writes it after the interval, in order", async () => {
  const written: number[][] = [];
  const dropped: number[] = [];
  let down = true;
  const b = new Batcher<number>({
    flushIntervalMs: 20, maxBatch: 100, maxBuffered: 5,
    flush: (items) => {
      if (down) throw Object.assign(new Error("down"), { transient: true });
      written.push(items);
    },
    retryable: (err) => (err as { transient?: boolean }).transient === true,
    onDrop: (n) => dropped.push(n),
  });
  for (const n of [1, 2, 3]) b.push(n);
  await b.flushNow(); // fails: kept
  assert.equal(b.size, 3);
  for (const n of [4, 5, 6, 7]) b.push(n); // 6 and 7 do not fit
  assert.deepEqual(dropped, [6, 7]);
  down = false;
  const deadline = Date.now() + 2000;
  while (written.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(written, [[1, 2, 3, 4, 5]]);
  assert.equal(b.size, 0);
  await b.close();
});

test("Batcher maxWriteItems: a large batch is written in slices, oldest first, with the event loop served in between", async () => {
  const written: number[][] = [];
  const between: string[] = [];
  let fail: "transient" | "hard" | null = null;
  let errors = 0;
  let lost = 0;
  const b = new Batcher<number>({
    flushIntervalMs: 10_000, maxBatch: 1000, maxWriteItems: 3,
    flush: (items) => {
      if (fail !== null && items[0] === 4) {
        const f = fail;
        fail = null;
        throw Object.assign(new Error(f), { transient: f === "transient" });
      }
      written.push(items);
      between.push(`write ${items[0]}`);
    },
    retryable: (err) => (err as { transient?: boolean }).transient === true,
    onError: (_err, n) => {
      errors++;
      lost += n;
    },
  });
  for (let n = 1; n <= 10; n++) b.push(n);
  // An I/O-phase callback queued before the flush runs between two slices, not after the whole batch.
  setImmediate(() => between.push("immediate"));
  await b.flushNow();
  assert.deepEqual(written, [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]);
  assert.ok(between.indexOf("immediate") > 0 && between.indexOf("immediate") < between.length - 1, between.join(", "));
  // A batch within the limit is still one call with the same array.
  written.length = 0;
  for (const n of [11, 12]) b.push(n);
  await b.flushNow();
  assert.deepEqual(written, [[11, 12]]);
  // A retryable failure of a slice keeps it and the slices not yet written, in order; the written one is not repeated.
  written.length = 0;
  fail = "transient";
  for (let n = 1; n <= 7; n++) b.push(n);
  await b.flushNow();
  assert.deepEqual(written, [[1, 2, 3]]);
  assert.equal(b.size, 4);
  await b.flushNow(); // the backoff applies to pushes; flushNow writes what was kept
  assert.deepEqual(written, [[1, 2, 3], [4, 5, 6], [7]]);
  // A hard failure loses only its slice (counted); the rest is written.
  written.length = 0;
  fail = "hard";
  for (let n = 1; n <= 7; n++) b.push(n);
  await b.flushNow();
  assert.deepEqual(written, [[1, 2, 3], [7]]);
  assert.equal(errors, 1);
  assert.equal(lost, 3);
  await b.close();
});
