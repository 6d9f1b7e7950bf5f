// Discovery for tests that run before the process driver's discover() exists: spawns the real
// runtime (dist/runtime.cjs) in discovery mode with a clean environment — a separate process, but
// NOT sandboxed. Replace with the process driver once it implements discover().
import { spawn } from "node:child_process";
import { join } from "node:path";
import { StratusError } from "../../src/shared/errors";
import { DISCOVERY_PREFIX, ENV } from "../../src/shared/protocol";
import type { DiscoveredFunction, SandboxDriver } from "../../src/sandbox/driver";

export function createDiscoveryDriver(runtimePath: string): Pick<SandboxDriver, "discover"> {
  return {
    discover: (spec) =>
      new Promise<DiscoveredFunction[]>((resolve, reject) => {
        const child = spawn(process.execPath, [runtimePath], {
          env: { [ENV.discover]: "1", [ENV.entry]: join(spec.artifactDir, spec.entry) },
          stdio: ["ignore", "pipe", "pipe"],
          timeout: spec.timeoutMs,
        });
        let out = "";
        child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
        child.stderr.resume();
        child.on("close", () => {
          const line = out.split("\n").find((l) => l.startsWith(DISCOVERY_PREFIX));
          if (line === undefined) return reject(new StratusError("FUNCTION_LOAD_FAILED", "discovery printed nothing"));
          const parsed = JSON.parse(line.slice(DISCOVERY_PREFIX.length)) as { functions: DiscoveredFunction[]; error?: { message: string } };
          if (parsed.error) return reject(new StratusError("FUNCTION_LOAD_FAILED", parsed.error.message));
          resolve(parsed.functions);
        });
      }),
  };
}
