/**
 * The "dev" sandbox driver of `stratus dev`: each instance is `node runtime.cjs` as a plain child process
 * of the dev server — no bubblewrap, no cgroups, no network rules, running as the user who runs
 * `stratus dev`, on the user's own files. It exists so that `stratus dev` serves through the real gateway
 * (src/gateway/gateway.ts) and the real runtime with the same protocol as production; only *where* the
 * runtime runs differs. Never a node's driver: the platform config cannot select it.
 *
 * What it keeps of the contract (src/sandbox/driver.ts, checked by src/sandbox/conformance.ts): the
 * READY/exit/timeout race and its error mapping, a clean explicit environment (never the dev server's
 * own), the heap sized to 75 % of `memory`, exit reasons (V8's heap abort is "out-of-memory", the
 * runtime's exit 71 before READY is "load-failed"), idempotent close/destroy, `exited` once after
 * everything is released, discovery in a child process parsed by the shared parser
 * (src/sandbox/discovery-output.ts), reconcile of a killed run's leftovers. What it cannot enforce: the
 * memory limit outside the V8 heap, a process limit, filesystem, process and network isolation.
 *
 * Each child leads its own process group (spawned detached), so destroying an instance also ends the
 * processes it started, unless they left the group themselves (setsid, detached spawns).
 *
 * The lifecycle is the shared core (../driver-core.ts); this file is its backend (and has no pool).
 *
 * Invariants: every starting or live instance is in the core's `live` and has its pid file; its socket
 * and pid file are removed, and it is deleted from `live`, before its `exited` resolves.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { DiscoveredFunction, DiscoverySpec, InstanceSpec, InstanceStats, SandboxDriver } from "../driver";
import { StratusError } from "../../shared/errors";
import { ENV } from "../../shared/protocol";
import { createSilentLogger } from "../../shared/logger";
import { parseDiscoveryRun } from "../discovery-output";
import {
  childExit, childOutputDrained, createDriverCore, DISCOVERY_MEMORY_MB, heapFlagOf, instanceNodeArgs, signalExitCode, specEnv, watchDiscoveryChild,
  type Launched, type RawExit, type SandboxBackend, type SandboxDriverOptions,
} from "../driver-core";

/**
 * Options of createDevDriver: the shared ones (SandboxDriverOptions; `runtimePath` and `stateDir` are
 * required here: instance sockets and pid files, created if missing). startTimeoutMs defaults to 10 000
 * as the process driver; `prewarm`, `pidsMax`, `tmpSizeMb` and `blockedCidrs` have no effect: nothing
 * is sandboxed (see the file comment).
 */
export interface DevDriverOptions extends SandboxDriverOptions {
  readonly runtimePath: string;
  readonly stateDir: string;
}

/** The dev driver, plus what the dev server needs to know about it. */
export interface DevDriver extends SandboxDriver {
  /** True while a starting or live instance runs code from `artifactDir` (the dev server keeps it until then). */
  inUse(artifactDir: string): boolean;
  /**
   * Synchronous last resort for a process `exit` handler: SIGKILL to every instance's and discovery
   * run's process group (children are detached, so they would outlive a dev server that dies).
   */
  killAllNow(): void;
}

/** The environment every child starts from: nothing of the dev server's own leaks in. */
const BASE_ENV = { PATH: "/usr/local/bin:/usr/bin:/bin", NODE_ENV: "development" } as const;

/** One runtime child process (the backend's handle). */
interface Child {
  readonly spec: InstanceSpec;
  readonly child: ChildProcess;
  readonly socketPath: string;
}

/** Creates the dev driver. @throws Error when the runtime or node is missing. */
export function createDevDriver(options: DevDriverOptions): DevDriver {
  const log = options.logger ?? createSilentLogger();
  const nodePath = options.nodePath ?? process.execPath;
  for (const [what, p] of [["runtime", options.runtimePath], ["node", nodePath]] as const) {
    if (!existsSync(p)) throw new Error(`dev driver: ${what} not found at ${p}`);
  }
  const stateDir = options.stateDir;
  /** Discovery runs in progress, for close(). */
  const discovering = new Set<ChildProcess>();

  const backend: SandboxBackend<Child> = {
    name: "dev",
    defaultStartTimeoutMs: 10_000,
    pool: false,
    codeDir: "",
    socketPathOf: (id) => join(stateDir, `${id}.sock`),
    socketPath: (c) => c.socketPath,
    async launch(mode, io): Promise<Launched<Child>> {
      if (mode.kind !== "fresh") throw new StratusError("INSTANCE_START_FAILED", "the dev driver has no pre-warm pool");
      const { spec } = mode;
      const socketPath = join(stateDir, `${spec.instanceId}.sock`);
      const pidFile = join(stateDir, `${spec.instanceId}.pid`);
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      rmSync(socketPath, { force: true });
      const env: Record<string, string> = {
        ...BASE_ENV,
        ...spec.env,
        [ENV.socket]: socketPath,
        ...specEnv(spec, spec.artifactDir),
        // Stacks (source-mapped) in error bodies: the point of running locally.
        [ENV.dev]: "1",
      };
      // No cgroup tells Node the limit: the heap is sized as production does, so a heap hog fails the same way.
      const child = spawn(nodePath, [...instanceNodeArgs(spec.config.memory), options.runtimePath], { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
      child.once("error", () => undefined); // 'exit' follows (or 'close' for a spawn failure)
      if (child.pid !== undefined) writeFileSync(pidFile, `${child.pid}\n`);
      io.output(child.stdout!, child.stderr!);
      const exit = (async (): Promise<RawExit> => {
        const { code, signal } = await childExit(child);
        // Output still in the pipes belongs to this instance; then whatever it left in its group goes.
        await childOutputDrained(child);
        killGroup(child.pid);
        rmSync(socketPath, { force: true });
        rmSync(pidFile, { force: true });
        // Without a cgroup no OOM kill can be told apart (V8's heap abort still is, by its code).
        return { exitCode: code, signal, oomKilled: false };
      })();
      return { handle: { spec, child, socketPath }, exit };
    },
    attach: async () => {
      throw new StratusError("INSTANCE_START_FAILED", "the dev driver has no pre-warm pool");
    },
    send: () => {},
    signal(c, signal) {
      if (signal === "SIGKILL") killGroup(c.child.pid);
      c.child.kill(signal);
    },
    stats: async (c) => readProcessMemory(c.child.pid),
  };
  const core = createDriverCore(backend, { ...options, logger: log });

  /**
   * Runs the runtime in discovery mode as a child process (never in the dev server's own process), with
   * the heap of a 256 MB instance, and parses its output with the shared parser.
   * @throws StratusError FUNCTION_LOAD_FAILED
   */
  async function discover(spec: DiscoverySpec): Promise<DiscoveredFunction[]> {
    core.assertOpen();
    const env = { ...BASE_ENV, [ENV.discover]: "1", [ENV.entry]: join(spec.artifactDir, spec.entry) };
    const child = spawn(nodePath, [heapFlagOf(DISCOVERY_MEMORY_MB), options.runtimePath], { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    child.once("error", () => undefined);
    discovering.add(child);
    let run: Awaited<ReturnType<typeof watchDiscoveryChild>>;
    try {
      run = await watchDiscoveryChild(child, spec.timeoutMs, () => killGroup(child.pid));
    } finally {
      killGroup(child.pid);
      discovering.delete(child);
    }
    if (run.timedOut) throw new StratusError("FUNCTION_LOAD_FAILED", `loading the module took longer than ${spec.timeoutMs} ms`);
    return parseDiscoveryRun({ payload: run.payload, exitCode: run.code ?? signalExitCode(run.signal), output: run.output, memoryMb: DISCOVERY_MEMORY_MB });
  }

  /** Kills the process groups and removes the sockets and pid files a killed run of the dev server left in `stateDir`. */
  async function reconcile(): Promise<{ removed: number }> {
    let names: string[] = [];
    try {
      names = readdirSync(stateDir);
    } catch {
      return { removed: 0 };
    }
    const removed = new Set<string>();
    for (const name of names) {
      const m = /^(.+)\.(pid|sock)$/.exec(name);
      if (m === null || core.live.has(m[1]!)) continue;
      if (m[2] === "pid") {
        const pid = Number(readFileSync(join(stateDir, name), "utf8").trim());
        // Only a process that still runs our runtime: a pid may have been reused since.
        if (Number.isInteger(pid) && pid > 1 && cmdlineOf(pid).includes(options.runtimePath)) killGroup(pid);
      }
      rmSync(join(stateDir, name), { force: true });
      removed.add(m[1]!);
    }
    return { removed: removed.size };
  }

  async function close(): Promise<void> {
    for (const child of discovering) killGroup(child.pid);
    await core.close();
  }

  return {
    name: "dev",
    start: core.start,
    open: core.open,
    prepare: async () => ({}),
    discover,
    reconcile,
    close,
    // A launch in progress (null in `live`) has no artifact to keep yet: its spec is still the caller's.
    inUse: (artifactDir) => [...core.live.values()].some((c) => c?.handle.spec.artifactDir === artifactDir),
    killAllNow() {
      void core.close();
      for (const c of core.live.values()) if (c) killGroup(c.handle.child.pid);
      for (const child of discovering) killGroup(child.pid);
    },
  };
}

/** SIGKILL to a whole process group (the child leads it: spawned detached). */
function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // already gone
  }
}

function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

/** Resident and peak resident memory of one process from /proc, bytes; null when it is gone. */
function readProcessMemory(pid: number | undefined): InstanceStats | null {
  if (pid === undefined) return null;
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return null;
  }
  const kb = (field: string): number => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
    return m ? Number(m[1]) * 1024 : 0;
  };
  return { memoryBytes: kb("VmRSS"), peakMemoryBytes: kb("VmHWM") };
}
