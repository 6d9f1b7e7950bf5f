import { test } from "node:test";
import assert from "node:assert/strict";
import { lbMembers } from "./membership";
import type { MemberView } from "./node-fleet";

const m = (id: number | null, url: string, state: MemberView["state"] = "ready"): MemberView => ({
  id, name: `n${id}`, url, driver: "process", state, lastSeen: 0, load: null, connected: false,
});

test("lbMembers: registered http(s) nodes as { id, addr, port, state }, by id; the shared-secret node and socket URLs left out", () => {
  assert.deepEqual(lbMembers([
    m(3, "http://127.0.0.4:8081", "lost"), m(1, "http://127.0.0.2:9000"), m(null, "http://127.0.0.9:1"), m(2, "https://[::1]/", "draining"), m(4, "unix:/run/x.sock"),
  ]), [
    { id: 1, addr: "127.0.0.2", port: 9000, state: "ready" },
    { id: 2, addr: "::1", port: 443, state: "draining" },
    { id: 3, addr: "127.0.0.4", port: 8081, state: "lost" },
  ]);
});
