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
 * Invariants: every starting or live instance is in `live` and has its pid file; its socket and pid
 * file are removed, and it is deleted from `live`, before its `exited` resolves.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { constants as osConstants, availableParallelism } from "node:os";
import { join } from "node:path";
import { once } from "node:events";
import type { DiscoveredFunction, DiscoverySpec, Instance, InstanceExit, InstanceLogLine, InstanceSpec, InstanceStats, SandboxDriver, StartOptions, ExitReason } from "../driver";
import { StratusError } from "../../shared/errors";
import { DISCOVERY_PREFIX, ENV, EXIT } from "../../shared/protocol";
import { createSilentLogger, type Logger } from "../../shared/logger";
import { parseOutputLine, splitLines } from "../output-lines";
import { parseDiscoveryRun } from "../discovery-output";
import { createStartGate } from "../start-gate";

/** Options of createDevDriver. Only `runtimePath` and `stateDir` are required. */
export interface DevDriverOptions {
  /** Path of dist/runtime.cjs. */
  readonly runtimePath: string;
  /** Directory for instance sockets and pid files (created if missing); keep it short (socket paths ≤ 107 bytes). */
  readonly stateDir: string;
  /** Node binary (default process.execPath). */
  readonly nodePath?: string;
  /** Longest wait for READY, ms (default 10 000, as the process driver). */
  readonly startTimeoutMs?: number;
  /** Runtimes booting at the same time (default: the number of CPU cores, at least 2, as the process driver). */
  readonly maxConcurrentStarts?: number;
  readonly logger?: Logger;
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

/** Memory of a discovery run, MB (as the process driver: its heap is sized from it). */
const DISCOVERY_MEMORY_MB = 256;
/** Lines of output kept to explain a failed start. */
const TAIL_LINES = 20;
/** The environment every child starts from: nothing of the dev server's own leaks in. */
const BASE_ENV = { PATH: "/usr/local/bin:/usr/bin:/bin", NODE_ENV: "development" } as const;

interface Child {
  readonly id: string;
  readonly spec: InstanceSpec;
  readonly child: ChildProcess;
  readonly socketPath: string;
  readonly pidFile: string;
  /** Why we stopped it (null: it ended on its own) and, once gone, how it ended. */
  readonly state: { reason: ExitReason | null; exitedValue: InstanceExit | null };
  ready: boolean;
  initMs: number | null;
  readonly tail: string[];
  readonly readyPromise: Promise<void>;
  exited: Promise<InstanceExit>;
}

/** Creates the dev driver. @throws Error when the runtime or node is missing. */
export function createDevDriver(options: DevDriverOptions): DevDriver {
  const log = options.logger ?? createSilentLogger();
  const nodePath = options.nodePath ?? process.execPath;
  const startTimeoutMs = options.startTimeoutMs ?? 10_000;
  const bootGate = createStartGate(options.maxConcurrentStarts ?? Math.max(2, availableParallelism()));
  for (const [what, p] of [["runtime", options.runtimePath], ["node", nodePath]] as const) {
    if (!existsSync(p)) throw new Error(`dev driver: ${what} not found at ${p}`);
  }
  const stateDir = options.stateDir;
  const live = new Map<string, Child>();
  /** Pids of discovery runs in progress, for close(). */
  const discovering = new Set<ChildProcess>();
  let closed = false;

  function launch(spec: InstanceSpec, onLog: (line: InstanceLogLine) => void): Child {
    const socketPath = join(stateDir, `${spec.instanceId}.sock`);
    const pidFile = join(stateDir, `${spec.instanceId}.pid`);
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    rmSync(socketPath, { force: true });
    const env: Record<string, string> = {
      ...BASE_ENV,
      ...spec.env,
      [ENV.socket]: socketPath,
      [ENV.entry]: join(spec.artifactDir, spec.entry),
      [ENV.exportName]: spec.exportName,
      [ENV.functionName]: spec.functionName,
      [ENV.config]: JSON.stringify(spec.config),
      [ENV.instanceId]: spec.instanceId,
      // Stacks (source-mapped) in error bodies: the point of running locally.
      [ENV.dev]: "1",
    };
    // No cgroup tells Node the limit: size the heap as production does, so a heap hog fails the same way.
    const heapMb = Math.max(32, Math.floor(spec.config.memory * 0.75));
    const child = spawn(nodePath, [`--max-old-space-size=${heapMb}`, options.runtimePath], { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    child.once("error", () => undefined); // 'exit' follows (or 'close' for a spawn failure)
    let resolveReady!: () => void;
    const c: Child = {
      id: spec.instanceId, spec, child, socketPath, pidFile,
      state: { reason: null, exitedValue: null },
      ready: false, initMs: null, tail: [],
      readyPromise: new Promise<void>((r) => (resolveReady = r)),
      exited: null as unknown as Promise<InstanceExit>,
    };
    if (child.pid !== undefined) writeFileSync(pidFile, `${child.pid}\n`);
    const handle = (raw: string, stream: "stdout" | "stderr"): void => {
      const parsed = parseOutputLine(raw, stream, c.id);
      if (parsed.kind === "ready") {
        c.ready = true;
        c.initMs = parsed.initMs;
        resolveReady();
        return;
      }
      if (!c.ready) {
        c.tail.push(parsed.line.message);
        if (c.tail.length > TAIL_LINES) c.tail.shift();
      }
      try {
        onLog(parsed.line);
      } catch (err) {
        log.warn({ err }, "onLog threw");
      }
    };
    splitLines(child.stdout!, (l) => handle(l, "stdout"));
    splitLines(child.stderr!, (l) => handle(l, "stderr"));
    c.exited = (async (): Promise<InstanceExit> => {
      const { code, signal } = await exitOf(child);
      // Output still in the pipes belongs to this instance; then whatever it left in its group goes.
      if (!child.stdout!.readableEnded) await Promise.race([once(child, "close"), new Promise((r) => setTimeout(r, 1000))]);
      killGroup(child.pid);
      rmSync(socketPath, { force: true });
      rmSync(pidFile, { force: true });
      live.delete(c.id);
      const exitCode = code ?? signalExitCode(signal);
      let reason = c.state.reason;
      if (reason === null) {
        // V8's "heap out of memory" aborts (SIGABRT = 134); without a cgroup no OOM kill can be told apart.
        if (exitCode === 134 || exitCode === 139) reason = "out-of-memory";
        else if (!c.ready && code === EXIT.loadFailed) reason = "load-failed";
        else reason = "crashed";
      }
      const value: InstanceExit = { reason, exitCode: code, signal };
      c.state.exitedValue = value;
      log.debug({ instanceId: c.id, ...value }, "instance exited");
      return value;
    })();
    return c;
  }

  const destroyChild = (c: Child): Promise<InstanceExit> => {
    if (c.state.exitedValue) return Promise.resolve(c.state.exitedValue);
    c.state.reason ??= "destroyed";
    killGroup(c.child.pid);
    c.child.kill("SIGKILL");
    return c.exited;
  };

  async function start(spec: InstanceSpec, startOptions: StartOptions = {}): Promise<Instance> {
    if (closed) throw new StratusError("SHUTTING_DOWN");
    if (!/^[a-z0-9-]{1,64}$/.test(spec.instanceId)) throw new StratusError("INSTANCE_START_FAILED", `invalid instance id "${spec.instanceId}"`);
    if (live.has(spec.instanceId)) throw new StratusError("INSTANCE_START_FAILED", `instance ${spec.instanceId} already exists`);
    if (Buffer.byteLength(join(stateDir, `${spec.instanceId}.sock`)) > 107) throw new StratusError("INSTANCE_START_FAILED", "socket path too long: use a shorter stateDir");
    const t0 = performance.now();
    const aborted = (): StratusError => new StratusError("INSTANCE_START_FAILED", "start aborted", { cause: startOptions.signal?.reason });
    if (startOptions.signal?.aborted) throw aborted();
    const release = await bootGate();
    let c: Child;
    try {
      if (closed) throw new StratusError("SHUTTING_DOWN");
      if (startOptions.signal?.aborted) throw aborted();
      c = launch(spec, startOptions.onLog ?? (() => {}));
    } catch (err) {
      release();
      if (err instanceof StratusError) throw err;
      throw new StratusError("INSTANCE_START_FAILED", `cannot start the runtime: ${(err as Error).message}`, { cause: err });
    }
    live.set(c.id, c);
    void Promise.race([c.readyPromise, c.exited]).finally(release);

    let timer: NodeJS.Timeout | undefined;
    const abort = (): void => void destroyChild(c);
    try {
      startOptions.signal?.addEventListener("abort", abort, { once: true });
      const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), startTimeoutMs)));
      const outcome = await Promise.race([c.readyPromise.then(() => "ready" as const), c.exited.then(() => "exited" as const), timeout]);
      if (outcome !== "ready") {
        if (outcome === "timeout") c.state.reason = "load-failed";
        const exit = await destroyChild(c);
        const output = c.tail.join("\n").trim();
        const shown = output ? `:\n${output}` : "";
        if (startOptions.signal?.aborted) throw aborted();
        if (outcome === "timeout") throw new StratusError("FUNCTION_LOAD_FAILED", `the function did not become ready within ${startTimeoutMs} ms${shown}`);
        if (exit.reason === "load-failed") throw new StratusError("FUNCTION_LOAD_FAILED", output || undefined);
        if (exit.reason === "out-of-memory") throw new StratusError("FUNCTION_LOAD_FAILED", `the function ran out of memory while loading${shown}`);
        throw new StratusError("INSTANCE_START_FAILED", `the instance exited before it was ready (exit code ${exit.exitCode ?? exit.signal})${shown}`);
      }
      if (startOptions.signal?.aborted) throw aborted();
    } catch (err) {
      await destroyChild(c);
      throw err;
    } finally {
      clearTimeout(timer);
      startOptions.signal?.removeEventListener("abort", abort);
    }
    const startMs = performance.now() - t0;

    let closing: Promise<InstanceExit> | null = null;
    const close = (graceMs = spec.config.timeout): Promise<InstanceExit> => {
      if (c.state.exitedValue) return Promise.resolve(c.state.exitedValue);
      closing ??= (async () => {
        c.state.reason ??= "closed";
        c.child.kill("SIGTERM");
        const t = setTimeout(() => void destroyChild(c), graceMs);
        try {
          return await c.exited;
        } finally {
          clearTimeout(t);
        }
      })();
      return closing;
    };
    return {
      id: spec.instanceId,
      spec,
      endpoint: { socketPath: c.socketPath },
      startMs,
      initMs: c.initMs,
      exited: c.exited,
      close,
      destroy: () => destroyChild(c),
      stats: async (): Promise<InstanceStats | null> => (c.state.exitedValue ? null : readProcessMemory(c.child.pid)),
    };
  }

  /**
   * Runs the runtime in discovery mode as a child process (never in the dev server's own process), with
   * the heap of a 256 MB instance, and parses its output with the shared parser.
   * @throws StratusError FUNCTION_LOAD_FAILED
   */
  async function discover(spec: DiscoverySpec): Promise<DiscoveredFunction[]> {
    if (closed) throw new StratusError("SHUTTING_DOWN");
    const env = { ...BASE_ENV, [ENV.discover]: "1", [ENV.entry]: join(spec.artifactDir, spec.entry) };
    const child = spawn(nodePath, [`--max-old-space-size=${Math.floor(DISCOVERY_MEMORY_MB * 0.75)}`, options.runtimePath], { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    child.once("error", () => undefined);
    discovering.add(child);
    let payload: string | null = null;
    const tail: string[] = [];
    const keep = (raw: string, stream: "stdout" | "stderr"): void => {
      if (stream === "stdout" && payload === null && raw.startsWith(DISCOVERY_PREFIX)) {
        payload = raw.slice(DISCOVERY_PREFIX.length);
        return;
      }
      const parsed = parseOutputLine(raw, stream, "discovery");
      if (parsed.kind !== "log") return;
      tail.push(parsed.line.message);
      if (tail.length > TAIL_LINES) tail.shift();
    };
    // The discovery line can be large (many functions): allow 4 MiB for it, as the process driver.
    splitLines(child.stdout, (l) => keep(l, "stdout"), 4 * 1024 * 1024);
    splitLines(child.stderr, (l) => keep(l, "stderr"));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, spec.timeoutMs);
    let exit: { code: number | null; signal: NodeJS.Signals | null };
    try {
      exit = await exitOf(child);
      if (!child.stdout.readableEnded) await Promise.race([once(child, "close"), new Promise((r) => setTimeout(r, 1000))]);
    } finally {
      clearTimeout(timer);
      killGroup(child.pid);
      discovering.delete(child);
    }
    if (timedOut) throw new StratusError("FUNCTION_LOAD_FAILED", `loading the module took longer than ${spec.timeoutMs} ms`);
    return parseDiscoveryRun({ payload, exitCode: exit.code ?? signalExitCode(exit.signal), output: tail.join("\n"), memoryMb: DISCOVERY_MEMORY_MB });
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
      if (m === null || live.has(m[1]!)) continue;
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
    closed = true;
    for (const child of discovering) killGroup(child.pid);
    await Promise.all([...live.values()].map((c) => destroyChild(c)));
  }

  return {
    name: "dev",
    start,
    prepare: async () => ({}),
    discover,
    reconcile,
    close,
    inUse: (artifactDir) => [...live.values()].some((c) => c.spec.artifactDir === artifactDir),
    killAllNow() {
      closed = true;
      for (const c of live.values()) killGroup(c.child.pid);
      for (const child of discovering) killGroup(child.pid);
    },
  };
}

/** The child's exit code and signal, once it exited (at once if it already did). */
async function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode };
  if (child.pid === undefined) {
    // spawn failed: no 'exit' comes, only 'error' and 'close'
    await once(child, "close").catch(() => undefined);
    return { code: child.exitCode ?? 1, signal: child.signalCode };
  }
  const [code, signal] = (await once(child, "exit").catch(() => [null, null])) as [number | null, NodeJS.Signals | null];
  return { code, signal };
}

/** 128 + the signal's number, as a shell reports a signalled process (SIGABRT → 134); null without a signal. */
function signalExitCode(signal: NodeJS.Signals | null): number | null {
  if (signal === null) return null;
  const n = (osConstants.signals as Record<string, number | undefined>)[signal];
  return n === undefined ? null : 128 + n;
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
