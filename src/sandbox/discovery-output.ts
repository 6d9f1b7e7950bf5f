/**
 * Reads the outcome of a discovery run (the runtime started with STRATUS_DISCOVER=1), the same way for
 * every driver: the one DISCOVERY_PREFIX line on stdout (src/shared/protocol.ts), the exit code and the
 * last lines of output. Drivers only differ in how they run the sandbox and collect those.
 */
import { StratusError, isErrorCode } from "../shared/errors";
import { DISCOVERY_PREFIX, EXIT } from "../shared/protocol";
import type { DiscoveredFunction } from "./driver";

/** What a driver collected from one discovery run. */
export interface DiscoveryRun {
  /** The JSON after DISCOVERY_PREFIX, or null when the runtime printed no discovery line. */
  readonly payload: string | null;
  /** The sandbox's exit code (null when unknown, e.g. killed without a status). */
  readonly exitCode: number | null;
  /** The last lines of the run's other output (stderr, untagged stdout), to explain a failure. */
  readonly output: string;
  /** The memory limit of the run, MB, named in the out-of-memory message. */
  readonly memoryMb: number;
}

/** Longest part of the run's output quoted in an error message, characters. */
const MAX_OUTPUT_CHARS = 4000;

/** The JSON part of the first DISCOVERY_PREFIX line of `stdout`, or null when there is none. */
export function findDiscoveryPayload(stdout: string): string | null {
  for (const line of stdout.split("\n")) {
    if (line.startsWith(DISCOVERY_PREFIX)) return line.slice(DISCOVERY_PREFIX.length);
  }
  return null;
}

type RawProblem = { code?: unknown; message?: unknown; details?: unknown };
type RawFunction = { name?: unknown; exportName?: unknown; config?: unknown; error?: RawProblem | null; warnings?: unknown };

/**
 * Turns a discovery run into the functions the module exports. A function the runtime found unusable
 * (handler not a function, bad name, bad config) is passed through with its `error` (an unknown code
 * becomes FUNCTION_LOAD_FAILED), not thrown: the builder reports every problem at once.
 * @throws StratusError FUNCTION_LOAD_FAILED when the module itself failed to load, ran out of memory
 *   (exit 137, 134 or 139), exited non-zero, or printed no (or a malformed) function list; the message
 *   carries the module's error or the run's last output.
 */
export function parseDiscoveryRun(run: DiscoveryRun): DiscoveredFunction[] {
  const output = run.output.trim().slice(-MAX_OUTPUT_CHARS);
  // The kernel's OOM kill (137) or V8's heap-limit abort (134; 139 without an init): no line to trust.
  if (run.exitCode === 137 || run.exitCode === 134 || run.exitCode === 139) {
    throw new StratusError("FUNCTION_LOAD_FAILED", `the module ran out of memory while loading (${run.memoryMb} MB)`);
  }
  let parsed: { functions?: unknown; error?: RawProblem } = {};
  if (run.payload !== null) {
    try {
      parsed = (JSON.parse(run.payload) as typeof parsed | null) ?? {};
    } catch {
      parsed = {};
    }
  }
  if (parsed.error !== undefined || run.exitCode !== EXIT.ok || !Array.isArray(parsed.functions)) {
    const fallback = output !== "" ? output : run.payload === null ? `the module printed no function list (exit code ${String(run.exitCode)})` : `discovery exited with code ${String(run.exitCode)}`;
    const message = typeof parsed.error?.message === "string" ? parsed.error.message : fallback;
    throw new StratusError("FUNCTION_LOAD_FAILED", message);
  }
  return (parsed.functions as RawFunction[]).map((f) => {
    const name = String(f.name);
    const warnings = Array.isArray(f.warnings) ? f.warnings.filter((w): w is string => typeof w === "string") : [];
    const fn = { name, exportName: typeof f.exportName === "string" ? f.exportName : name, config: f.config, ...(warnings.length > 0 ? { warnings } : {}) };
    if (f.error === undefined || f.error === null) return fn;
    const error = {
      code: isErrorCode(f.error.code) ? f.error.code : "FUNCTION_LOAD_FAILED",
      message: typeof f.error.message === "string" ? f.error.message : "this function cannot be loaded",
      ...(f.error.details === undefined ? {} : { details: f.error.details }),
    };
    return { ...fn, error };
  });
}
