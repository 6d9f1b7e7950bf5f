/**
 * The sandbox driver contract. A driver decides only *where* an instance runs (bubblewrap + cgroups,
 * a Docker container, …); the gateway speaks the same HTTP protocol (src/shared/protocol.ts) to every
 * instance over a Unix socket on the host.
 *
 * Lifecycle (shared by every driver, checked by src/sandbox/conformance.ts):
 *  - `start()` resolves once the runtime inside printed its READY line; it rejects with a
 *    StratusError (FUNCTION_LOAD_FAILED when the user's module failed to load, INSTANCE_START_FAILED
 *    otherwise) and leaves nothing behind.
 *  - `close()` is graceful and idempotent: SIGTERM, wait up to `graceMs` for in-flight work, then kill.
 *  - `destroy()` is immediate and idempotent: kill and clean up.
 *  - `exited` resolves exactly once, after all resources of the instance are released.
 *  - A driver is created idle: nothing runs and nothing touches the engine until `open()`.
 *    `driver.reconcile()` (before `open()`) removes what a previous, killed run of the node left behind
 *    (processes, cgroups, containers, sockets); `open()` starts the pre-warm pool and allows `start()`;
 *    `driver.close()` refuses new starts and destroys every instance. All three are idempotent.
 *  - The lifecycle itself is shared code: src/sandbox/driver-core.ts; a driver supplies a backend.
 */
import type { ServedVersion } from "../shared/function-version";
import type { DiscoveredFunction, DiscoverySpec } from "../shared/discovery";
import type { InstanceLogLine } from "../shared/instance-output";
import type { CodeCacheState } from "../shared/protocol";

// Both sides of the control/node line use these (the builder asks for a discovery, the observer reads
// output lines), so they live in src/shared/; re-exported here as part of the driver contract.
export type { DiscoveredFunction, DiscoverySpec, InstanceLogLine };

import { DRIVER_NAMES, type DriverName } from "../shared/config/driver-settings";

/** Drivers a node can run (the platform config's `driver`; the list lives with the platform's driver settings). */
export { DRIVER_NAMES, type DriverName };
/** Every driver's name: a node's, or "dev", the unsandboxed driver of `stratus dev` (src/sandbox/dev/). */
export type SandboxDriverName = DriverName | "dev";

/**
 * Everything a driver needs to start one instance of one function version: the version as the node
 * serves it (src/shared/function-version.ts) with the instance's id. `functionName` is the version's
 * `name` (the drivers' spelling: labels, env, image names).
 */
export type InstanceSpec = Omit<ServedVersion, "name"> & {
  /** Unique id, `[a-z0-9-]{1,64}`; names sockets, cgroups and containers. */
  readonly instanceId: string;
  readonly functionName: string;
};



/** Why an instance ended. */
export const EXIT_REASONS = ["closed", "destroyed", "crashed", "out-of-memory", "load-failed"] as const;
export type ExitReason = (typeof EXIT_REASONS)[number];

export interface InstanceExit {
  readonly reason: ExitReason;
  /** Process exit code, when known. */
  readonly exitCode: number | null;
  /** Terminating signal, when known. */
  readonly signal: string | null;
}

/** Where the gateway reaches an instance. */
export interface InstanceEndpoint {
  /** Unix socket path on the host. */
  readonly socketPath: string;
  /**
   * A connection to `socketPath` the driver opened before the instance was ready (the process driver, for an
   * instance made from a pre-warm slot, whose server listens — holding requests — before its message), handed
   * out once: the first call returns it, or null when there is none (or it failed or closed); later calls
   * return null. The caller owns what it gets. Optional: connect to `socketPath` without it.
   */
  readonly takeConnection?: () => import("node:net").Socket | null;
}

export interface InstanceStats {
  /** Current memory use of the sandbox, bytes. */
  readonly memoryBytes: number;
  /** Peak memory use since start, bytes (0 when the driver cannot tell). */
  readonly peakMemoryBytes: number;
}

export interface Instance {
  readonly id: string;
  readonly spec: InstanceSpec;
  readonly endpoint: InstanceEndpoint;
  /** Milliseconds from start() to ready. */
  readonly startMs: number;
  /** Milliseconds the runtime spent loading the function's module (part of startMs), when it reported it. */
  readonly initMs: number | null;
  /**
   * Whether the runtime was compiled from the driver's V8 code cache (src/sandbox/code-cache.ts), when it
   * said so on its READY line; absent or null for drivers and starts that do not use one.
   */
  readonly codeCache?: CodeCacheState | null;
  /** Resolves once, when the instance is gone and its resources released. */
  readonly exited: Promise<InstanceExit>;
  /** Graceful stop: SIGTERM, then kill after `graceMs` (default: the function's timeout). Idempotent. */
  close(graceMs?: number): Promise<InstanceExit>;
  /** Immediate stop. Idempotent. */
  destroy(): Promise<InstanceExit>;
  /** Resource use; resolves null when the instance is gone. */
  stats(): Promise<InstanceStats | null>;
}

export interface StartOptions {
  /** Receives every output line of the instance. Must not throw. */
  readonly onLog?: (line: InstanceLogLine) => void;
  /** Aborting cancels a start in progress (the promise rejects, nothing is left behind). */
  readonly signal?: AbortSignal;
  /**
   * The function (this version) has no other instance ready or starting: a fresh boot for it goes ahead of
   * other functions' additional instances in the driver's boot gate (docs/prewarm.md, "The boot gate").
   * Default false.
   */
  readonly firstInstance?: boolean;
  /**
   * Asked once, when a fresh boot for this start reaches the front of the driver's boot gate (nothing booted
   * yet), with the driver's estimate of a boot's duration, ms: false cancels the start, which then rejects
   * with INSTANCE_START_FAILED "start not needed" having cost nothing (docs/prewarm.md, "Bursts"). Must not throw.
   */
  readonly stillNeeded?: (bootMs: number) => boolean;
}

export interface SandboxDriver {
  readonly name: SandboxDriverName;
  /**
   * Starts an instance and resolves when it is ready to serve.
   * @throws StratusError FUNCTION_LOAD_FAILED | INSTANCE_START_FAILED (also: not open yet, invalid or taken
   *   instance id, socket path too long, aborted) | SHUTTING_DOWN
   */
  start(spec: InstanceSpec, options?: StartOptions): Promise<Instance>;
  /**
   * Turns a built artifact into what this driver runs, once per function version, at deploy time
   * (Docker: build the image from a generated Dockerfile and push it; process: nothing).
   * @throws StratusError BUILD_FAILED
   */
  prepare(spec: InstanceSpec, options?: { onLog?: (line: string) => void }): Promise<{ image?: string }>;
  /**
   * Loads a module inside a sandbox (never in the platform's own process) and lists its functions,
   * each with the runtime's `error` when it found one (not thrown: the builder reports all at once).
   * @throws StratusError FUNCTION_LOAD_FAILED (the message carries the module's error, with file:line when known)
   */
  discover(spec: DiscoverySpec): Promise<DiscoveredFunction[]>;
  /** Removes leftovers of earlier runs of this node (call before open()). Resolves with how many were removed. */
  reconcile(): Promise<{ removed: number }>;
  /**
   * Starts the driver's background work (the pre-warm pool) and allows start(); before it nothing
   * touches the engine. Idempotent.
   * @throws StratusError SHUTTING_DOWN after close()
   */
  open(): Promise<void>;
  /** Destroys every instance this driver started. Idempotent. */
  close(): Promise<void>;
}
