// The deploy pipeline's one route for build log lines: the builder's lines and activation's lines reach
// the store through the deployer alone, in order, before the build is finished; the source digest is
// recorded once. Real SQLite store; the build and activation steps are the deployer's injected seams
// (the real builder and activator run in test/build.test.ts and test/api.test.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDeployer } from "../src/control/deployer";
import type { Activator } from "../src/control/activation";
import { openSqliteStore } from "../src/store/sqlite/sqlite-store";
import type { Store } from "../src/store/store";
import { createSilentLogger } from "../src/shared/logger";
import { parseFunctionConfig } from "../src/shared/function-config";

test("build and activation lines reach the store by one route, in order; the source digest is recorded", async () => {
  const dir = await mkdtemp(join(tmpdir(), "stratus-deployer-"));
  const real = openSqliteStore({ file: join(dir, "s.db"), masterKey: new Uint8Array(32).fill(3) });
  const buildIds: string[] = [];
  // The real store, noting the id of the build the deployer creates.
  const store: Store = Object.create(real, { createBuild: { value: async () => { const b = await real.createBuild(); buildIds.push(b.id); return b; } } }) as Store;
  const activator = {
    async activate(versions, onLog) {
      onLog?.("verified a@1");
      await store.activateVersions(versions.map((v) => ({ functionName: v.functionName, version: v.version, expectedActive: null })));
      onLog?.("activated a@1");
    },
  } as Pick<Activator, "activate"> as Activator;
  const streamed: string[] = [];
  const deployer = createDeployer({
    store, activator, logger: createSilentLogger(), functionUrl: (n) => `http://x/fn/${n}`,
    unpack: async () => { throw new Error("not used"); },
    build: async (_project, o) => {
      for (let i = 0; i < 50; i++) o.onLog(`build line ${i}`);
      await o.onSource("sha256-" + "a".repeat(64));
      return [{ name: "a", version: "1", digest: "sha256-" + "b".repeat(64), entry: "index.js", exportName: "a", config: parseFunctionConfig("a", {}), sourceDigest: "sha256-" + "a".repeat(64) }];
    },
  });
  try {
    const result = await deployer.deploy({ dir, fileCount: 0, unpackedBytes: 0, cleanup: async () => {} }, { onLog: (l) => streamed.push(l) });
    assert.deepEqual(result.map((r) => r.status), ["activated"]);
    const expected = [...Array.from({ length: 50 }, (_, i) => `build line ${i}`), "verified a@1", "activated a@1"];
    assert.deepEqual(streamed, expected, "streamed to the client");
    assert.equal(buildIds.length, 1);
    assert.deepEqual(await real.getBuildLog(buildIds[0]!), expected, "recorded on the build, same lines, same order, no duplicates");
    const build = await real.getBuild(buildIds[0]!);
    assert.equal(build?.status, "succeeded");
    assert.equal(build?.sourceDigest, "sha256-" + "a".repeat(64));
  } finally {
    await real.close();
    await rm(dir, { recursive: true, force: true });
  }
});
