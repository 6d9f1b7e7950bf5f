// The gateway against the real process driver (bubblewrap + cgroups) and the real runtime (dist/runtime.cjs).
// Needs root, bubblewrap and util-linux setpriv (Debian: apt-get install bubblewrap util-linux) and `npm run build`.
// The cases live in test/helpers/gateway-cases.ts; test/gateway-docker.test.ts runs them on Docker.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createProcessDriver } from "../src/sandbox/process/process-driver";
import { runGatewayCases } from "./helpers/gateway-cases";

runGatewayCases(
  async () => {
    // The pre-warm pool is on, as on a real node: every cold start below may take a slot.
    // Short: socket paths must stay under 108 bytes. A cgroup root of its own: reconcile() kills
    // everything under it, and other checkouts may run this file at the same time on this machine.
    const stateDir = mkdtempSync(join(tmpdir(), "sgw-"));
    const driver = createProcessDriver({ runtimePath: resolve("dist/runtime.cjs"), stateDir, cgroupRoot: `stratus-gwtest-${process.pid}`, pidsMax: 64, prewarm: 2 });
    void driver.open(); // nothing runs before open(); the pool starts filling now
    await driver.reconcile();
    return {
      driver,
      prepare: async (d) => d, // nothing to prepare: the sandbox mounts the artifact directory
      cleanup: async () => {
        await driver.close();
        rmSync(stateDir, { recursive: true, force: true });
      },
    };
  },
  // A cold start here is ~50 ms idle, a few hundred under heavy load.
  { slowMs: 3000 },
);
