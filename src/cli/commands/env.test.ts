import assert from "node:assert/strict";
import { test } from "node:test";
import { parseAssignments } from "./env";

test("NAME=value pairs: the value may hold '=' or be empty; a missing '=' is refused", () => {
  assert.deepEqual(parseAssignments(["A=1", "B=x=y", "C="]), { A: "1", B: "x=y", C: "" });
  for (const bad of ["A", "=1", ""]) assert.throws(() => parseAssignments([bad]), { code: "INVALID_ARGUMENT" }, bad);
});
