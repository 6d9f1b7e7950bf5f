import { test } from "node:test";
import assert from "node:assert/strict";
import { toSlot } from "./lb-sync";
import { isConnectionFailure } from "../store/postgres/postgres-store";

test("toSlot: ready → ready, draining → drain, lost → maint (the slot leaves the ring)", () => {
  assert.deepEqual(toSlot({ id: 1, addr: "10.0.0.2", port: 8080, state: "ready" }), { id: 1, addr: "10.0.0.2", port: 8080, state: "ready" });
  assert.equal(toSlot({ id: 2, addr: "10.0.0.3", port: 8080, state: "draining" }).state, "drain");
  assert.equal(toSlot({ id: 3, addr: "10.0.0.4", port: 8080, state: "lost" }).state, "maint");
});

test("isConnectionFailure: socket errors, SQLSTATE 08xxx and 57P01–03, a terminated connection; not a statement's error", () => {
  for (const e of [{ code: "ECONNREFUSED" }, { code: "08006" }, { code: "57P01" }, { code: "57P03" }, new Error("Connection terminated unexpectedly")]) assert.ok(isConnectionFailure(e), JSON.stringify(e));
  for (const e of [{ code: "23505" }, { code: "40001" }, new Error("syntax error"), null, undefined]) assert.ok(!isConnectionFailure(e), JSON.stringify(e));
});
