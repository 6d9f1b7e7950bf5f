// The platform's driver settings reach the driver a node runs (src/node/driver-factory.ts): a real
// process driver (bubblewrap + cgroups; needs root and dist/runtime.cjs) built from a resolved platform
// config with `process.startTimeoutMs` and `process.tmpSizeMb` set from the environment.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { resolvePlatformConfig } from "../src/shared/platform-config";
import { createNodeDriver } from "../src/node/driver-factory";
import { createSilentLogger } from "../src/shared/logger";
import { parseFunctionConfig } from "../src/shared/function-config";
import { invokeInstance } from "../src/sandbox/conformance";
import type { Instance, InstanceSpec, SandboxDriver } from "../src/sandbox/driver";

const RUNTIME = resolve("dist/runtime.cjs");
let root = "";
let driver: SandboxDriver | null = null;
const started: Instance[] = [];

before(async () => {
  assert.ok(existsSync(RUNTIME), `${RUNTIME} is missing: run \`npm run build\` first`);
  assert.equal(process.getuid?.(), 0, "the process driver needs root (bubblewrap, cgroups)");
  // Short: instance socket paths must stay under 107 bytes.
  root = await mkdtemp(join(tmpdir(), "sds-"));
  await chmod(root, 0o755);
  const code = join(root, "code");
  await mkdir(code, { mode: 0o755 });
  await chmod(code, 0o755);
  // Blocks its event loop while loading, longer than the start timeout set below.
  await writeFile(join(code, "slow.js"), "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 6000);\nmodule.exports.slow = (req, res) => res.send('late');\n", { mode: 0o644 });
  // Writes 3 MiB to the private /tmp and answers with the outcome.
  await writeFile(join(code, "tmp.js"), "const fs = require('node:fs');\nmodule.exports.tmp = (req, res) => {\n  try { fs.writeFileSync('/tmp/big', Buffer.alloc(3 * 1024 * 1024, 1)); res.send('written'); }\n  catch (err) { res.send(String(err.code)); }\n};\n", { mode: 0o644 });
  const config = resolvePlatformConfig({
    flags: { dataDir: join(root, "d"), prewarm: 0 },
    env: { STRATUS_PROCESS_START_TIMEOUT_MS: "1500", STRATUS_PROCESS_TMP_SIZE_MB: "2" },
  });
  assert.equal(config.process.startTimeoutMs, 1500);
  driver = await createNodeDriver(config, { dataDir: join(root, "d"), nodeId: "sds", nodeSuffix: randomBytes(4).toString("hex"), runtimePath: RUNTIME, logger: createSilentLogger() });
  // As a node does: leftovers removed, then open.
  await driver.reconcile();
  await driver.open();
});

after(async () => {
  for (const i of started) await i.destroy().catch(() => {});
  await driver?.close();
  if (root !== "") await rm(root, { recursive: true, force: true });
});

const spec = (entry: string, exportName: string): InstanceSpec => ({
  instanceId: `sds-${randomBytes(4).toString("hex")}`, functionName: exportName, version: "1", artifactDir: join(root, "code"),
  entry, exportName, config: parseFunctionConfig(exportName, { timeout: 10_000 }), env: {},
});

test("process.startTimeoutMs: a start that takes longer fails after the configured time", async () => {
  const t0 = performance.now();
  await assert.rejects(driver!.start(spec("slow.js", "slow")), (err: Error & { code?: string }) => {
    assert.equal(err.code, "FUNCTION_LOAD_FAILED");
    assert.match(err.message, /within 1500 ms/);
    return true;
  });
  const took = performance.now() - t0;
  assert.ok(took < 5500, `gave up after ${Math.round(took)} ms, before the 6 s load ended (the default would wait 10 s)`);
});

test("process.tmpSizeMb: the instance's /tmp holds no more than the configured size", async () => {
  const inst = await driver!.start(spec("tmp.js", "tmp"));
  started.push(inst);
  const r = await invokeInstance(inst, "/");
  assert.equal(r.status, 200);
  assert.equal(r.body, "ENOSPC", "3 MiB do not fit a 2 MB /tmp (the 64 MB default would take them)");
});
