// The gateway's integration cases (test/helpers/gateway-cases.ts) against the real Docker driver: a real
// engine and registry (scripts/services.sh starts both) and the real runtime (dist/runtime.cjs).
// Deployments get their image the way the control plane's activation does: prepare() once per version.
// The pre-warm pool is on (as test/gateway.test.ts does for the process driver).
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createDockerDriver } from "../src/sandbox/docker/docker-driver";
import { runGatewayCases } from "./helpers/gateway-cases";

try {
  execFileSync("bash", ["scripts/services.sh"], { stdio: ["ignore", "ignore", "pipe"], timeout: 300_000 });
} catch (err) {
  throw new Error(`Docker and the registry are needed: scripts/services.sh failed (run it as root to see why): ${(err as Error).message}`);
}

runGatewayCases(
  async () => {
    const work = mkdtempSync(join(tmpdir(), "sgwd-"));
    const driver = createDockerDriver({
      registry: process.env.STRATUS_REGISTRY ?? "127.0.0.1:5000",
      runtimePath: resolve("dist/runtime.cjs"),
      stateDir: work,
      nodeId: `gwtest-${process.pid}`,
      pidsMax: 64, // as the process driver's case: the fork bomb must hit it
      // The pre-warm pool is on, as on a real node: every cold start below may take a slot.
      prewarm: 2,
    });
    await driver.reconcile();
    await driver.open();
    const images = new Map<string, Promise<string>>();
    return {
      driver,
      prepare: async (d) => {
        const key = `${d.name}@${d.version}`;
        let image = images.get(key);
        if (image === undefined) {
          image = driver.prepare({ ...d, instanceId: "prepare", functionName: d.name }).then((r) => r.image);
          images.set(key, image);
        }
        return { ...d, image: await image };
      },
      cleanup: async () => {
        await driver.close();
        await driver.reconcile();
        rmSync(work, { recursive: true, force: true });
      },
    };
  },
  // Docker starts take 0.5–1.5 s idle here and several seconds while other jobs load both cores.
  { slowMs: 10_000 },
);
