import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { parseOutputLine, splitLines } from "./output-lines";
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
  assert.deepEqual(parseOutputLine(READY_LINE, "stdout", "i1"), { kind: "ready", initMs: null });
  assert.deepEqual(parseOutputLine(`${READY_LINE} {"initMs":12.5}`, "stdout", "i1"), { kind: "ready", initMs: 12.5 });
  assert.deepEqual(parseOutputLine(`${READY_LINE} {"initMs":-1}`, "stdout", "i1"), { kind: "ready", initMs: null });
  assert.deepEqual(parseOutputLine(`${READY_LINE} not json`, "stdout", "i1"), { kind: "ready", initMs: null });
  const structured = parseOutputLine(`${LOG_PREFIX}{"ts":5,"level":"warn","rid":"r1","msg":"hi"}`, "stdout", "i1");
  assert.deepEqual(structured, { kind: "log", line: { ts: 5, stream: "stdout", level: "warn", message: "hi", instanceId: "i1", requestId: "r1" } });
  const raw = parseOutputLine("plain", "stderr", "i1");
  assert.equal(raw.kind === "log" && raw.line.level, "error");
  assert.equal(raw.kind === "log" && raw.line.requestId, undefined);
  const bad = parseOutputLine(`${LOG_PREFIX}{not json`, "stdout", "i1");
  assert.equal(bad.kind === "log" && bad.line.message, `${LOG_PREFIX}{not json`);
});
