/**
 * Runs the runtime in discovery mode as a child process (never loading user code in this process) and
 * returns the functions it reports. Clean, explicit environment, like every instance.
 */
import { spawn } from "node:child_process";
import { StratusError } from "../shared/errors";
import { DISCOVERY_PREFIX, ENV, LOG_PREFIX } from "../shared/protocol";
import type { FunctionEntry } from "../runtime/loader";

/**
 * @param timeoutMs kill the child after this long (default 10 000 ms).
 * @throws StratusError FUNCTION_LOAD_FAILED with the module's error (file:line when known), or when the
 *   child ends without a discovery line.
 */
export async function runDiscovery(runtimePath: string, entry: string, timeoutMs = 10_000): Promise<FunctionEntry[]> {
  const child = spawn(process.execPath, [runtimePath], {
    env: { PATH: "/usr/local/bin:/usr/bin:/bin", NODE_ENV: "development", [ENV.discover]: "1", [ENV.entry]: entry },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
  child.stderr.setEncoding("utf8").on("data", (c: string) => (out += c));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once("close", (c) => resolve(c)));
  clearTimeout(timer);
  const lines = out.split("\n");
  const marker = lines.find((l) => l.startsWith(DISCOVERY_PREFIX));
  if (marker !== undefined) {
    const result = JSON.parse(marker.slice(DISCOVERY_PREFIX.length)) as { functions: FunctionEntry[]; error?: { message: string } };
    if (!result.error) return result.functions;
    throw new StratusError("FUNCTION_LOAD_FAILED", result.error.message);
  }
  // No discovery line: show what the module printed (log lines decoded) to say why.
  const shown = lines
    .filter((l) => l !== "")
    .map((l) => (l.startsWith(LOG_PREFIX) ? (JSON.parse(l.slice(LOG_PREFIX.length)) as { msg: string }).msg : l))
    .slice(-10)
    .join("\n");
  throw new StratusError("FUNCTION_LOAD_FAILED", `Discovery ended (exit ${code ?? "killed"}) without listing functions${shown ? `:\n${shown}` : ""}`);
}
