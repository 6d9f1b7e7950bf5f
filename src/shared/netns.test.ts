// Sandbox network namespaces: CIDR parsing, and two managers of one process on one subnet never
// sharing a /30 (real `ip`, needs root; no packet is sent).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { createSilentLogger } from "./logger";
import { createSandboxNetworks, parseIPv4Cidr } from "./netns";

test("parseIPv4Cidr: network and prefix, prefix 8-28 only", () => {
  assert.deepEqual(parseIPv4Cidr("10.200.0.0/16"), [0x0ac80000, 16]);
  assert.deepEqual(parseIPv4Cidr("10.200.7.9/16"), [0x0ac80000, 16], "host bits are masked");
  assert.deepEqual(parseIPv4Cidr("192.168.4.0/24"), [0xc0a80400, 24]);
  for (const bad of ["10.200.0.0", "10.200.0.0/7", "10.200.0.0/29", "256.1.1.1/16", "a.b.c.d/16", "fd00::/64"]) assert.throws(() => parseIPv4Cidr(bad), /invalid sandbox subnet/, bad);
});

test("two managers of one process on one subnet get distinct blocks; remove leaves nothing", { skip: process.getuid?.() !== 0 ? "needs root (ip netns)" : false }, async () => {
  const subnet = `10.${210 + (process.pid % 40)}.0.0/24`;
  const a = createSandboxNetworks({ tag: `ta${(process.pid % 4096).toString(16)}`, subnet, logger: createSilentLogger() });
  const b = createSandboxNetworks({ tag: `tb${(process.pid % 4096).toString(16)}`, subnet, logger: createSilentLogger() });
  try {
    const [x, y] = await Promise.all([a.create("x"), b.create("y")]);
    assert.notEqual(x.hostAddress, y.hostAddress);
    assert.notEqual(x.sandboxAddress, y.sandboxAddress);
    assert.ok(existsSync(x.path) && existsSync(y.path));
    assert.deepEqual(a.list(), ["x"]);
  } finally {
    await a.remove("x");
    await b.remove("y");
  }
  assert.deepEqual(a.list(), []);
  assert.deepEqual(b.list(), []);
  assert.deepEqual(readdirSync("/sys/class/net").filter((n) => n.startsWith(`sxta${(process.pid % 4096).toString(16)}`) || n.startsWith(`sxtb${(process.pid % 4096).toString(16)}`)), [], "no veth left");
});
