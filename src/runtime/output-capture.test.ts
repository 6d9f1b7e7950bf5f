import { test } from "node:test";
import assert from "node:assert/strict";
import { capMessage, createEmitter, LOG_LINE_MAX_BYTES } from "./output-capture";
import { LOG_PREFIX } from "../shared/protocol";

test("capMessage: short messages unchanged, long ones cut to the byte cap with a marker", () => {
  assert.equal(capMessage("hi"), "hi");
  const exact = "a".repeat(LOG_LINE_MAX_BYTES);
  assert.equal(capMessage(exact), exact);
  const long = capMessage("é".repeat(LOG_LINE_MAX_BYTES));
  assert.match(long, /… \[truncated 16384 bytes\]$/);
  assert.ok(Buffer.byteLength(long) <= LOG_LINE_MAX_BYTES + 40);
});

test("emitter writes one prefixed JSON line, with rid only inside a request", () => {
  const lines: string[] = [];
  const emit = createEmitter((l) => lines.push(l));
  emit("warn", "a\nb", "r1");
  emit("log", "x");
  assert.ok(lines.every((l) => l.startsWith(LOG_PREFIX) && l.endsWith("\n") && l.split("\n").length === 2));
  const [a, b] = lines.map((l) => JSON.parse(l.slice(LOG_PREFIX.length)));
  assert.deepEqual({ ...a, ts: 0 }, { ts: 0, level: "warn", rid: "r1", msg: "a\nb" });
  assert.equal("rid" in b, false);
});
