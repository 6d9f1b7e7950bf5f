import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { OUTPUT_RATE_DEFAULTS, OutputLimiter, parseOutputLine, splitLines } from "./output-lines";
import { LOG_PREFIX, READY_LINE } from "../shared/protocol";

const collect = async (chunks: string[], max?: number): Promise<string[]> => {
  const s = new PassThrough();
  const lines: string[] = [];
  splitLines(s, (l) => lines.push(l), max);
  for (const c of chunks) s.write(c);
  s.end();
  await new Promise((r) => s.on("end", r));
  return lines;
};

test("splitLines: lines across chunks, the unterminated tail, and the cap", async () => {
  const cases: Array<[string[], number | undefined, string[]]> = [
    [["a\nb", "c\n", "d"], undefined, ["a", "bc", "d"]],
    [["\n\n"], undefined, ["", ""]],
    [["0123456789", "abc\nok\n"], 5, ["01234 …[truncated]", "ok"]],
    [["01234567"], 5, ["01234 …[truncated]"]],
  ];
  for (const [chunks, max, expected] of cases) assert.deepEqual(await collect(chunks, max), expected, JSON.stringify(chunks));
});

test("parseOutputLine: ready, structured with request id, raw, malformed", () => {
  assert.deepEqual(parseOutputLine(READY_LINE, "stdout", "i1"), { kind: "ready", initMs: null, codeCache: null });
  assert.deepEqual(parseOutputLine(`${READY_LINE} {"initMs":12.5}`, "stdout", "i1"), { kind: "ready", initMs: 12.5, codeCache: null });
  assert.deepEqual(parseOutputLine(`${READY_LINE} {"initMs":-1}`, "stdout", "i1"), { kind: "ready", initMs: null, codeCache: null });
  assert.deepEqual(parseOutputLine(`${READY_LINE} not json`, "stdout", "i1"), { kind: "ready", initMs: null, codeCache: null });
  assert.deepEqual(parseOutputLine(`${READY_LINE} {"initMs":3,"codeCache":"accepted"}`, "stdout", "i1"), { kind: "ready", initMs: 3, codeCache: "accepted" });
  assert.deepEqual(parseOutputLine(`${READY_LINE} {"initMs":3,"codeCache":"rejected"}`, "stdout", "i1"), { kind: "ready", initMs: 3, codeCache: "rejected" });
  assert.deepEqual(parseOutputLine(`${READY_LINE} {"initMs":3,"codeCache":"forged"}`, "stdout", "i1"), { kind: "ready", initMs: 3, codeCache: null }, "an unknown state is dropped");
  const structured = parseOutputLine(`${LOG_PREFIX}{"ts":5,"level":"warn","rid":"r1","msg":"hi"}`, "stdout", "i1");
  assert.deepEqual(structured, { kind: "log", line: { ts: 5, stream: "stdout", level: "warn", message: "hi", instanceId: "i1", requestId: "r1" } });
  const raw = parseOutputLine("plain", "stderr", "i1");
  assert.equal(raw.kind === "log" && raw.line.level, "error");
  assert.equal(raw.kind === "log" && raw.line.requestId, undefined);
  const bad = parseOutputLine(`${LOG_PREFIX}{not json`, "stdout", "i1");
  assert.equal(bad.kind === "log" && bad.line.message, `${LOG_PREFIX}{not json`);
});

test("OutputLimiter: lines within the budget pass; past it the rest is dropped, counted, and the stream paused", async () => {
  let t = 0;
  const s = new PassThrough();
  const lines: string[] = [];
  const markers: Array<[number, number]> = [];
  const limits = { bytesPerSecond: 1_000_000, linesPerSecond: 5 }; // bucket: 10 lines
  const l = new OutputLimiter(limits, (n, b) => markers.push([n, b]), { now: () => t });
  l.read(s, (x) => lines.push(x));
  s.write(Array.from({ length: 25 }, (_, i) => `line${i}\n`).join(""));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(lines, Array.from({ length: 10 }, (_, i) => `line${i}`));
  assert.equal(s.isPaused(), true, "backpressure: reading stopped");
  // After the pause: one marker with exact counts (15 lines of 6-7 bytes each), and reading resumes.
  t = 1000; // 5 lines back
  await new Promise((r) => setTimeout(r, 150));
  assert.deepEqual(markers, [[15, 15 * 7]]);
  assert.equal(s.isPaused(), false);
  s.write("a\nb\n");
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(lines.slice(10), ["a", "b"]);
  l.close();
});

test("OutputLimiter: the byte budget, protocol lines exempt a few times only, fake READY floods dropped", async () => {
  const s = new PassThrough();
  const lines: string[] = [];
  let dropped = 0;
  const l = new OutputLimiter({ bytesPerSecond: 1024, linesPerSecond: 1_000_000 }, (n) => (dropped += n), { now: () => 0 });
  l.read(s, (x) => lines.push(x));
  const big = "x".repeat(1023);
  // The bucket holds 2048 bytes: exactly two lines fit, then it is empty.
  s.end(`${big}\n${big}\n${big}\n${READY_LINE}\n${`${READY_LINE}\n`.repeat(10)}`);
  await new Promise((r) => s.on("end", r));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(lines.slice(0, 2), [big, big]);
  const readies = lines.filter((x) => x === READY_LINE).length;
  assert.equal(readies, 4, "at most 4 protocol lines pass an empty bucket");
  assert.equal(dropped, 1 + 11 - 4);
  l.close();
});

test("OutputLimiter: a line longer than the whole bucket still passes once, cut as by splitLines", async () => {
  const s = new PassThrough();
  const lines: string[] = [];
  const l = new OutputLimiter({ bytesPerSecond: 1024, linesPerSecond: 100 }, () => {}, { now: () => 0 });
  l.read(s, (x) => lines.push(x), 4096);
  s.end(`${"y".repeat(10_000)}\n`);
  await new Promise((r) => s.on("end", r));
  assert.equal(lines.length, 1);
  assert.ok(lines[0]!.startsWith("y".repeat(4096)) && lines[0]!.endsWith("[truncated]"));
  l.close();
});

test("output rate defaults equal the platform config's", async () => {
  const { resolvePlatformConfig } = await import("../shared/platform-config");
  const o = resolvePlatformConfig({}).observe;
  assert.deepEqual(OUTPUT_RATE_DEFAULTS, { bytesPerSecond: o.instanceOutputBytesPerSecond, linesPerSecond: o.instanceOutputLinesPerSecond });
});
