// package.json `engines.node` against the Node that runs functions: table-driven.
import assert from "node:assert/strict";
import { test } from "node:test";
import { checkEnginesNode } from "./install-deps";

const cases: { range: string | undefined; node: string; ok: boolean }[] = [
  { range: undefined, node: "v20.20.2", ok: true },
  { range: ">=20", node: "v20.20.2", ok: true },
  { range: "20.x", node: "v20.20.2", ok: true },
  { range: "^18 || ^20", node: "v20.20.2", ok: true },
  { range: ">=18.0.0 <21", node: "v20.20.2", ok: true },
  { range: "*", node: "v20.20.2", ok: true },
  { range: ">=22", node: "v20.20.2", ok: false },
  { range: "22", node: "v20.20.2", ok: false },
  { range: "^18", node: "v20.20.2", ok: false },
  { range: ">=20.21", node: "v20.20.2", ok: false },
  { range: ">=20", node: "v20.0.0-pre", ok: true },
  { range: "not a range", node: "v20.20.2", ok: false },
];

for (const c of cases) {
  test(`engines.node ${JSON.stringify(c.range)} on ${c.node}: ${c.ok ? "accepted" : "refused"}`, () => {
    if (c.ok) {
      checkEnginesNode(c.range, c.node);
      return;
    }
    assert.throws(() => checkEnginesNode(c.range, c.node), (err: { code?: string; status?: number; message?: string }) => {
      assert.equal(err.code, "UNSUPPORTED_NODE_VERSION");
      assert.equal(err.status, 422);
      assert.match(err.message ?? "", /engines\.node/);
      return true;
    });
  });
}
