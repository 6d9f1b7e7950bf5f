import { test } from "node:test";
import assert from "node:assert/strict";
import { findDiscoveryPayload, parseDiscoveryRun, type DiscoveryRun } from "./discovery-output";
import { DISCOVERY_PREFIX } from "../shared/protocol";

const run = (payload: unknown, exitCode: number | null = 0, output = ""): DiscoveryRun => ({
  payload: payload === null ? null : JSON.stringify(payload),
  exitCode,
  output,
  memoryMb: 256,
});

test("findDiscoveryPayload takes the first discovery line among other output", () => {
  assert.equal(findDiscoveryPayload(`noise\n${DISCOVERY_PREFIX}{"functions":[]}\n${DISCOVERY_PREFIX}{}\n`), '{"functions":[]}');
  assert.equal(findDiscoveryPayload("no line here\n"), null);
  assert.equal(findDiscoveryPayload(`x${DISCOVERY_PREFIX}{}`), null, "only at the start of a line");
});

test("parseDiscoveryRun lists functions and passes per-function errors through", () => {
  const found = parseDiscoveryRun(run({
    functions: [
      { name: "a", exportName: "a", config: { memory: 64 } },
      { name: "b", config: {}, error: { code: "INVALID_CONFIG", message: "timeout: too small", details: [{ path: "timeout" }] } },
      { name: "c", exportName: "default", error: { code: "NOT_A_CODE", message: 5 } },
      { name: "d", exportName: "d", error: null },
      { name: "e", exportName: "e", config: { timeout: 1000 }, warnings: ["cpu 2 has no Stratus equivalent: ignored", 7] },
    ],
  }));
  assert.deepEqual(found, [
    { name: "a", exportName: "a", config: { memory: 64 } },
    { name: "b", exportName: "b", config: {}, error: { code: "INVALID_CONFIG", message: "timeout: too small", details: [{ path: "timeout" }] } },
    { name: "c", exportName: "default", config: undefined, error: { code: "FUNCTION_LOAD_FAILED", message: "this function cannot be loaded" } },
    { name: "d", exportName: "d", config: undefined },
    { name: "e", exportName: "e", config: { timeout: 1000 }, warnings: ["cpu 2 has no Stratus equivalent: ignored"] },
  ]);
});

test("parseDiscoveryRun throws FUNCTION_LOAD_FAILED for a module that did not load", () => {
  const cases: Array<[string, DiscoveryRun, RegExp]> = [
    ["module error", run({ functions: [], error: { code: "FUNCTION_LOAD_FAILED", message: "kaboom at index.js:3" } }, 71, "ignored"), /^kaboom at index\.js:3$/],
    ["no line, output explains", run(null, 1, "SyntaxError: x\n"), /^SyntaxError: x$/],
    ["no line, no output", run(null, 1), /printed no function list \(exit code 1\)/],
    ["non-zero exit with a list", run({ functions: [] }, 2), /exited with code 2/],
    ["malformed JSON", { payload: "{not json", exitCode: 0, output: "", memoryMb: 256 }, /exited with code 0/],
    ["functions not an array", run({ functions: {} }), /exited with code 0/],
    ["kernel OOM", run(null, 137, "Killed"), /out of memory while loading \(256 MB\)/],
    ["V8 heap abort", run(null, 134), /out of memory/],
    ["V8 heap abort, no init", run(null, 139), /out of memory/],
  ];
  for (const [what, r, message] of cases) {
    assert.throws(() => parseDiscoveryRun(r), { code: "FUNCTION_LOAD_FAILED", message }, what);
  }
  const long = run(null, 1, "x".repeat(10_000));
  assert.throws(() => parseDiscoveryRun(long), (err: Error) => err.message.length === 4000);
});
