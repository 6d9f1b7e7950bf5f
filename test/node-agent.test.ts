// The node agent composes the real process driver and the gateway: reconcile before serving, drain.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { request } from "undici";
import { createProcessDriver } from "../src/sandbox/process/process-driver";
import { parseFunctionConfig } from "../src/shared/function-config";
import { createSilentLogger } from "../src/shared/logger";
import { createNodeAgent } from "../src/node/node-agent";

test("node agent: reconciles, serves the original-form hello function, drains", async () => {
  const runtimePath = resolve("dist/runtime.cjs");
  assert.ok(existsSync(runtimePath), "dist/runtime.cjs missing: run `npm run build` first");
  const stateDir = mkdtempSync(join(tmpdir(), "sna-"));
  const driver = createProcessDriver({ runtimePath, stateDir, cgroupRoot: `stratus-natest-${process.pid}` });
  let reconciled = false;
  const order: string[] = [];
  const reconcile = driver.reconcile.bind(driver);
  driver.reconcile = async () => {
    reconciled = true;
    order.push("reconcile");
    return reconcile();
  };
  const open = driver.open.bind(driver);
  driver.open = async () => {
    order.push("open");
    return open();
  };
  const agent = createNodeAgent({ driver, logger: createSilentLogger() });
  try {
    assert.equal(agent.gateway.server.listening, false, "not listening before start()");
    const { port } = await agent.start({ port: 0 });
    assert.ok(reconciled, "reconcile ran before serving");
    assert.deepEqual(order, ["reconcile", "open"], "the driver is opened once, after reconcile");
    agent.gateway.setFunction({
      name: "hello",
      version: "1",
      artifactDir: resolve("test/fixtures/gateway"),
      entry: "hello.js",
      exportName: "hello",
      config: parseFunctionConfig("hello", { timeout: 10_000 }),
      env: {},
    });
    const r = await request(`http://127.0.0.1:${port}/fn/hello`);
    const text = await r.body.text();
    assert.equal(r.statusCode, 200, text);
    assert.equal(text, "Hello");
    assert.equal(r.headers["x-stratus-cold-start"], "true");
    await agent.drain(5000);
    assert.equal(agent.gateway.server.listening, false);
  } finally {
    await agent.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
});
