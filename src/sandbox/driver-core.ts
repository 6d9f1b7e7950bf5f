/**
 * The one lifecycle every sandbox driver shares (in the spirit of undici's DispatcherBase): validating
 * a start, the pre-warm pool and its wiring, the boot gate, reading an instance's output, the
 * ready/timeout/exit/abort race and its error mapping, exit classification, the specialisation message
 * and environment, graceful and immediate stops, `open()` and `close()`. A driver keeps only a small
 * backend (SandboxBackend): launch a fresh or a generic sandbox, attach code to a generic one, signal
 * it, tell how it exited, read its stats — plus its own prepare/discover/reconcile.
 *
 * Lifecycle of a driver: created (nothing runs, nothing touches the engine) → `reconcile()` (removes a
 * killed run's leftovers) → `open()` (the pool starts filling; `start()` is allowed) → `close()`
 * (graceful for the driver: refuses new starts, destroys every instance and idle slot; idempotent).
 * An instance's `close()` is graceful (SIGTERM, then SIGKILL after the grace) and idempotent, its
 * `destroy()` is immediate (SIGKILL) and idempotent; `exited` resolves once, after the backend released
 * everything.
 *
 * Invariants: every starting or live sandbox is in `live` under its current id (null while its
 * launch is in progress, so reconcile leaves its resources alone); an entry leaves `live` only when
 * its `exited` settles (or its launch failed and the backend cleaned up). A sandbox's `stopReason` is
 * set at most once.
 */
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { availableParallelism, constants as osConstants } from "node:os";
import { performance } from "node:perf_hooks";
import type { Readable } from "node:stream";
import type { ExitReason, Instance, InstanceExit, InstanceLogLine, InstanceSpec, InstanceStats, SandboxDriverName, StartOptions } from "./driver";
import { StratusError, isStratusError } from "../shared/errors";
import { DISCOVERY_PREFIX, ENV, EXIT, GENERIC_READY_LINE, type CodeCacheState, type SpecializeMessage } from "../shared/protocol";
import { createSilentLogger, type Logger } from "../shared/logger";
import { OUTPUT_RATE_DEFAULTS, OutputLimiter, outputDroppedLine, parseOutputLine, splitLines, type OutputRateLimits } from "./output-lines";
import { PrewarmPool, type PrewarmRefillMode, type PrewarmStatus } from "./prewarm-pool";
import { createStartGate, untilAborted, type BootPriority } from "./start-gate";

/**
 * Options every driver takes, with one set of names (each driver adds its own, see its file). Units in
 * the names; every field but the ones a driver says it needs has a default.
 */
export interface SandboxDriverOptions {
  /** Host path of dist/runtime.cjs (Docker: put in the base image; default there `dist/runtime.cjs` under the cwd). */
  readonly runtimePath?: string;
  /**
   * Per-node state directory: instance socket dirs live below it (process: `<stateDir>/sockets/<id>`,
   * Docker: `<stateDir>/<id>`, dev: `<stateDir>/<id>.sock`). Keep it short: socket paths ≤ 107 bytes.
   */
  readonly stateDir?: string;
  /** Node binary (default process.execPath). */
  readonly nodePath?: string;
  /** Longest wait for READY, ms (default 10 000; Docker 30 000). */
  readonly startTimeoutMs?: number;
  /**
   * Sandboxes booting at the same time (fresh starts and pool refills; specialising a slot does not
   * count). Default: the number of CPU cores, at least 2. Measured (bench/burst.ts): 100 unbounded
   * concurrent starts on 2 cores each took longer than startTimeoutMs, so every one failed; bounded, they
   * finish one after another and the first ones already serve. A boot is mostly CPU, so one per core
   * finishes each sooner than two per core, for the same throughput: burst p99 without a pool 7.4–13.4 s
   * with 2 vs 14.3–15.7 s with 4 on 2 cores (3 alternated runs, load 8–15). Time waiting here does not
   * count against startTimeoutMs.
   */
  readonly maxConcurrentStarts?: number;
  /** Tasks (processes + threads) per instance (default 128 process, 256 Docker; Node itself uses ~11). */
  readonly pidsMax?: number;
  /** Size of the private /tmp, MB (default 64; its pages count against the memory limit). */
  readonly tmpSizeMb?: number;
  /** Extra CIDRs instances may not reach under "outbound" (e.g. the cluster's private network). */
  readonly blockedCidrs?: readonly string[];
  /**
   * Pre-warm pool: idle generic sandboxes kept for the default limits (memory `prewarmMemoryMb`, network
   * "outbound"); 0 disables the pool. Default 0 here (tests and tools that only discover pay nothing);
   * the platform config's `prewarm` (default 2) is what a node runs with. Other limits get slots only
   * from recent demand. Filling starts at `open()`. See docs/prewarm.md.
   */
  readonly prewarm?: number;
  /** Most idle slots per key that demand may grow the pool to (default 4 × prewarm, at most 32; never below prewarm). */
  readonly prewarmMax?: number;
  /** Memory size, MB, of the default pool (default 256, the function config default). */
  readonly prewarmMemoryMb?: number;
  /** When the pool refills (default `demand`; `quiet` is round one's policy). See PrewarmPool. */
  readonly prewarmRefill?: PrewarmRefillMode;
  /** Ask a start's StartOptions.stillNeeded when its fresh boot leaves the boot gate (default true; false: round three, every queued boot runs). */
  readonly cancelUnneededBoots?: boolean;
  /** `demand`: how long refills wait after a burst's last take, ms (default 1500; 0: off). See PrewarmPool's burstHoldMs. */
  readonly prewarmBurstHoldMs?: number;
  /**
   * Output rate per instance, stdout + stderr (default 1 MiB/s and 1000 lines/s, the platform config's
   * `observe.instanceOutput*`): past it the driver stops reading the instance's output (its pipe, or the
   * container's attach stream, fills and its writes block) and drops, with a marker line
   * (src/sandbox/output-lines.ts, OutputLimiter).
   */
  readonly outputLimits?: OutputRateLimits;
  readonly logger?: Logger;
}

/** The message of a start cancelled by its StartOptions.stillNeeded before it booted. */
export const START_NOT_NEEDED = "start not needed";

/** Lines of output kept to explain a failed start. */
const TAIL_LINES = 20;
/** Longest output quoted in a start error, chars. */
const MAX_QUOTED_OUTPUT = 4000;
/** Instance ids: they name sockets, cgroups and containers. `pw-` names pool slots. */
const INSTANCE_ID = /^[a-z0-9-]{1,64}$/;
/** Longest Unix socket path (sun_path is 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;

/** Memory limit of a discovery run, MB (its heap is sized from it). */
export const DISCOVERY_MEMORY_MB = 256;
/** RLIMIT_NOFILE of a discovery run (the function config default). */
export const DISCOVERY_MAX_OPEN_FILES = 1024;

/** What is fixed when a sandbox starts, and so keys a pre-warm slot. */
export interface PoolKey {
  readonly memoryMb: number;
  readonly network: "outbound" | "none";
  readonly maxOpenFiles: number;
}

/** The pool key of a set of limits, as a string (`<memoryMb>:<network>:<maxOpenFiles>`). */
export function poolKeyOf(k: PoolKey): string {
  return `${k.memoryMb}:${k.network}:${k.maxOpenFiles}`;
}

/** Inverse of poolKeyOf. */
export function parsePoolKey(key: string): PoolKey {
  const [memory, network, nofile] = key.split(":") as [string, "outbound" | "none", string];
  return { memoryMb: Number(memory), network, maxOpenFiles: Number(nofile) };
}

/**
 * Heap limit of an instance, MB: ~75 % of its memory. Node inside a sandbox cannot see the limit (no
 * /sys; no cgroup at all for the dev driver), so V8 fails with a clear heap OOM before the kernel kills it.
 */
export function heapMbOf(memoryMb: number): number {
  return Math.max(16, Math.floor(memoryMb * 0.75));
}

/** The `--max-old-space-size` flag of `memoryMb`. */
export function heapFlagOf(memoryMb: number): string {
  return `--max-old-space-size=${heapMbOf(memoryMb)}`;
}

/**
 * Node flags of every instance and pre-warm slot, in every driver: the heap limit. (The runtime's idle
 * collection, src/runtime/idle-gc.ts, needs no flag.) Measured and left out (bench/results/instance-memory.md):
 * `--v8-pool-size=1`, `--max-semi-space-size=1`, `--single-threaded`, a malloc arena limit: each within
 * ±0.2 MiB of an idle instance, i.e. within noise; `--lite-mode` saves ~0.5 MiB but turns the optimising
 * compiler off.
 */
export function instanceNodeArgs(memoryMb: number): string[] {
  return [heapFlagOf(memoryMb)];
}

/**
 * glibc malloc settings of every instance, in every driver (a function's own env may override them).
 * Setting the trim threshold at all turns off glibc's dynamic thresholds, which after start-up's large
 * frees let an idle instance keep ~0.5 MiB of freed heap it never returns; 512 KiB keeps trimming rare on
 * the hot path. Measured: private memory after one request 11.2 → 10.6 MiB, warm p50/p99 within noise.
 */
export const INSTANCE_MALLOC_TUNABLES = "glibc.malloc.trim_threshold=524288";

/**
 * The protocol variables of a fresh start (a pre-warm slot gets the same fields in its
 * SpecializeMessage). `codeDir` is where the sandbox sees the artifact.
 */
export function specEnv(spec: InstanceSpec, codeDir: string): Record<string, string> {
  return {
    [ENV.entry]: `${codeDir}/${spec.entry}`,
    [ENV.exportName]: spec.exportName,
    [ENV.functionName]: spec.functionName,
    [ENV.config]: JSON.stringify(spec.config),
    [ENV.instanceId]: spec.instanceId,
  };
}

/** The one message that turns a generic runtime into `spec`'s instance. */
export function specializeMessage(spec: InstanceSpec, codeDir: string): SpecializeMessage {
  return { entry: `${codeDir}/${spec.entry}`, exportName: spec.exportName, functionName: spec.functionName, config: spec.config, instanceId: spec.instanceId, env: spec.env };
}

/** 128 + the signal's number, as a shell reports a signalled process (SIGABRT → 134); null without a signal. */
export function signalExitCode(signal: string | null): number | null {
  if (signal === null) return null;
  const n = (osConstants.signals as Record<string, number | undefined>)[signal];
  return n === undefined ? null : 128 + n;
}

/** Signal names by number; the first name wins (6 is SIGABRT, not its alias SIGIOT). */
const SIGNAL_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(osConstants.signals)) if (!SIGNAL_NAMES.has(n)) SIGNAL_NAMES.set(n, name);
/** The name of the signal a shell-style exit code > 128 stands for, or null. */
export function signalOfExitCode(code: number | null): string | null {
  return code !== null && code > 128 ? (SIGNAL_NAMES.get(code - 128) ?? null) : null;
}

/** A child's exit code and signal, once it exited (at once if it already did); never rejects. */
export async function childExit(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode };
  if (child.pid === undefined) {
    // spawn failed: no 'exit' comes, only 'error' and 'close'
    await once(child, "close").catch(() => undefined);
    return { code: child.exitCode ?? 1, signal: child.signalCode };
  }
  const [code, signal] = (await once(child, "exit").catch(() => [null, null])) as [number | null, NodeJS.Signals | null];
  return { code, signal };
}

/** Waits (at most 1 s) for a child's pipes to close after its exit: output still in them belongs to it. */
export async function childOutputDrained(child: ChildProcess): Promise<void> {
  if (child.stdout && !child.stdout.readableEnded) await Promise.race([once(child, "close"), new Promise((r) => setTimeout(r, 1000))]);
}

/**
 * Follows a discovery run in a child process: collects its output, calls `kill` after `timeoutMs`,
 * resolves once it exited and its output is read. The caller cleans up and parses.
 */
export async function watchDiscoveryChild(child: ChildProcess, timeoutMs: number, kill: () => void): Promise<{ timedOut: boolean; code: number | null; signal: NodeJS.Signals | null; payload: string | null; output: string }> {
  const out = collectDiscoveryOutput();
  out.read(child.stdout!, "stdout");
  out.read(child.stderr!, "stderr");
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, timeoutMs);
  try {
    const { code, signal } = await childExit(child);
    await childOutputDrained(child);
    return { timedOut, code, signal, payload: out.payload(), output: out.output() };
  } finally {
    clearTimeout(timer);
  }
}

/** How a sandbox ended, as the backend saw it. */
export interface RawExit {
  /** Exit code (shell style: 128 + signal when the backend reports it so), null when unknown. */
  readonly exitCode: number | null;
  readonly signal: string | null;
  /** The kernel's OOM killer killed something in the sandbox. */
  readonly oomKilled: boolean;
}

/**
 * Why an instance ended: what the driver stopped it for, else out-of-memory (the OOM killer, or V8's
 * heap abort: 134 = SIGABRT, 139 = SIGSEGV seen when node is PID 1), else load-failed (the runtime's
 * exit code before READY), else crashed. A destroy wins over an OOM kill; an OOM kill over a close.
 */
export function classifyExit(raw: RawExit, stopReason: ExitReason | null, ready: boolean): ExitReason {
  if (stopReason === "destroyed" || stopReason === "load-failed") return stopReason;
  const code = raw.exitCode ?? signalExitCode(raw.signal);
  if (raw.oomKilled || code === 134 || code === 139) return "out-of-memory";
  if (stopReason !== null) return stopReason;
  if (!ready && code === EXIT.loadFailed) return "load-failed";
  return "crashed";
}

/** An "INSTANCE_START_FAILED: start aborted" with the signal's reason as its cause. */
function startAborted(signal: AbortSignal | undefined): StratusError {
  return new StratusError("INSTANCE_START_FAILED", "start aborted", { cause: signal?.reason });
}

/**
 * Output of a discovery run: the DISCOVERY_PREFIX payload (the first one), and the last lines of the
 * rest to explain a module that failed. `read` follows one stream.
 */
export function collectDiscoveryOutput(): { read(stream: Readable, name: "stdout" | "stderr"): void; payload(): string | null; output(): string } {
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
  return {
    // The discovery line can be large (many functions): allow 4 MiB for it.
    read: (stream, name) => splitLines(stream, (l) => keep(l, name), name === "stdout" ? 4 * 1024 * 1024 : undefined),
    payload: () => payload,
    output: () => tail.join("\n"),
  };
}

/** What a backend launches: a fresh sandbox for `spec`, or a generic one (a pre-warm slot) for `key`. */
export type LaunchMode = { readonly kind: "fresh"; readonly spec: InstanceSpec } | { readonly kind: "generic"; readonly key: PoolKey };

/** What the core hands a launch: where the sandbox's output goes. */
export interface LaunchIo {
  /** The sandbox's id (the instance id, or the slot id `pw-…`). */
  readonly id: string;
  /**
   * Follows the sandbox's stdout and stderr within its output budget (call once, before the sandbox can
   * write). `pause`: the streams to pause when the budget runs out (default stdout and stderr; Docker
   * pauses the attach stream, its demultiplexed copies are written without backpressure).
   */
  output(stdout: Readable, stderr: Readable, pause?: readonly Readable[]): void;
  /**
   * READY learned another way than the line on stdout (Docker: the ready file, SpecializeMessage.readyFile);
   * `line` is the READY line. The first of the two counts; anything else is ignored.
   */
  ready(line: string): void;
}

/** A launched sandbox: the backend's handle and how it ends. */
export interface Launched<H> {
  readonly handle: H;
  /**
   * Resolves once the sandbox is gone and the backend released everything of it (socket dir, cgroup,
   * container, mounts). Must not reject.
   */
  readonly exit: Promise<RawExit>;
}

/** What a driver provides to the core: where and how a sandbox runs. */
export interface SandboxBackend<H> {
  readonly name: SandboxDriverName;
  /** startTimeoutMs when the options do not set it, ms. */
  readonly defaultStartTimeoutMs: number;
  /** Whether the backend has generic sandboxes at all (false: `prewarm` is ignored). */
  readonly pool: boolean;
  /** Where the sandbox sees the function's artifact (the entry path prefix). */
  readonly codeDir: string;
  /** Host path of the socket an instance `id` will listen on (checked for length before a start). */
  socketPathOf(id: string): string;
  /** Host path of a launched sandbox's socket now (a slot's moves to its instance's at attach). */
  socketPath(handle: H): string;
  /** Extra checks of a spec before anything starts (Docker: the image is set). @throws StratusError */
  check?(spec: InstanceSpec): void;
  /** Whether a spec may use a pool slot at all (default yes). */
  poolable?(spec: InstanceSpec): boolean;
  /**
   * Starts one sandbox and resolves once it runs (its output followed through `io`); on failure it has
   * cleaned up after itself. Runs inside the boot gate.
   * @throws StratusError INSTANCE_START_FAILED (other errors are wrapped)
   */
  launch(mode: LaunchMode, io: LaunchIo, signal?: AbortSignal): Promise<Launched<H>>;
  /**
   * Gives a ready generic sandbox `spec`'s code (mount the artifact, rename what carries the instance's
   * name) — everything before the message is sent; throws when the slot cannot be used (the core
   * destroys it and starts fresh).
   */
  attach(handle: H, spec: InstanceSpec): Promise<void>;
  /** Sends the one SpecializeMessage (JSON) and closes the channel. Must not throw. */
  send(handle: H, message: string): void;
  /**
   * Where the runtime should also announce READY (SpecializeMessage.readyFile, a path inside the sandbox);
   * unset: the READY line on stdout only.
   */
  readonly readyFile?: string;
  /**
   * Optional, with `commit` (used instead of `send` when both exist): writes the message *without* what
   * ends it, before `attach`, so the runtime wakes and reads it while the code is being mounted; it acts
   * on a message only once it has ended. Must not throw.
   */
  begin?(handle: H, message: string): void;
  /** Ends the message `begin` wrote (after `attach` succeeded) and closes the channel. Must not throw. */
  commit?(handle: H): void;
  /**
   * Right after the message was sent (`send`, or `commit`), while the runtime loads the code: what may follow the message (the process
   * driver renames the slot's cgroups and socket dir after the instance here, off the cold path's
   * critical path). Must not throw: the slot is committed to `spec` by now.
   */
  afterSend?(handle: H, spec: InstanceSpec): void;
  /** A slot just became idle (its GENERIC_READY_LINE came): the process driver opens its early connection. Must not throw. */
  slotReady?(handle: H): void;
  /** InstanceEndpoint.takeConnection of a sandbox (the process driver's connection opened while its slot waited). */
  takeConnection?(handle: H): import("node:net").Socket | null;
  /** SIGTERM asks the runtime to drain; SIGKILL ends the sandbox and everything in it. Must not throw. */
  signal(handle: H, signal: "SIGTERM" | "SIGKILL"): void;
  /** Resource use of a live sandbox, or null. */
  stats(handle: H): Promise<InstanceStats | null>;
  /** Whether an idle slot's sandbox still runs (default: until its exit settles). */
  alive?(handle: H): boolean;
  /** Releases what the backend shares (mounts, roots), once every sandbox is gone, at close(). */
  release?(): Promise<void>;
}

/** One sandbox as the core tracks it. */
export interface CoreSandbox<H> {
  /** The current id: the instance id, or the slot id until specialised. */
  id: string;
  /** The id it started with (a slot's `pw-…`, the instance id for a fresh start). */
  readonly internalId: string;
  /** Started as a pre-warm slot. */
  readonly slot: boolean;
  /** False while a slot waits for its message (its GENERIC_READY_LINE is expected then). */
  specialised: boolean;
  handle: H;
  onLog: (line: InstanceLogLine) => void;
  ready: boolean;
  /** Module load time the runtime reported on its READY line, ms. */
  initMs: number | null;
  /** Whether the runtime said it was compiled from a code cache (READY line), null when it did not say. */
  codeCache: CodeCacheState | null;
  /** Last output lines before READY, to explain a failed start. */
  readonly tail: string[];
  readonly readyPromise: Promise<void>;
  readonly genericPromise: Promise<void>;
  exited: Promise<InstanceExit>;
  /** Why the driver stopped it (null: it ended on its own). */
  stopReason: ExitReason | null;
  exitedValue: InstanceExit | null;
}

/** The shared part of a driver, built by createDriverCore. */
export interface DriverCore<H> {
  /** Every starting or live sandbox by current id (null while launching). Read-only for backends. */
  readonly live: ReadonlyMap<string, CoreSandbox<H> | null>;
  readonly prewarm: PrewarmStatus;
  /** True once close() was called. */
  readonly closed: boolean;
  /** SandboxDriver.start. */
  start(spec: InstanceSpec, options?: StartOptions): Promise<Instance>;
  /**
   * SandboxDriver.open: start() is allowed from now on, and the pool starts filling — at once, or once
   * the promise `fillAfter` returns settled (the backend's preparation of what its slots boot with; called
   * by the first open() only, never after close()). Resolves then. Idempotent.
   */
  open(fillAfter?: () => Promise<unknown>): Promise<void>;
  /** Closes the pool and destroys every sandbox; the backend then releases what it shares. Idempotent. */
  close(): Promise<void>;
  /** Immediate stop of one sandbox. Idempotent. */
  destroy(sb: CoreSandbox<H>): Promise<InstanceExit>;
  /** @throws StratusError SHUTTING_DOWN once closed */
  assertOpen(): void;
}


/** Builds the shared lifecycle over one backend. */
export function createDriverCore<H>(backend: SandboxBackend<H>, options: SandboxDriverOptions): DriverCore<H> {
  const log = options.logger ?? createSilentLogger();
  const startTimeoutMs = options.startTimeoutMs ?? backend.defaultStartTimeoutMs;
  const outputLimits = options.outputLimits ?? OUTPUT_RATE_DEFAULTS;
  /** Each sandbox's output budget (one for its stdout and stderr together). */
  const limiters = new WeakMap<CoreSandbox<H>, OutputLimiter>();
  const bootGate = createStartGate(options.maxConcurrentStarts ?? Math.max(2, availableParallelism()));
  /** A rejected code cache is worth one warning per driver, not one per instance. */
  let codeCacheRejectionLogged = false;
  const live = new Map<string, CoreSandbox<H> | null>();
  /** Launches under way (each settles once its sandbox is ready, gone or failed). */
  const launching = new Set<Promise<void>>();
  const counts = { hits: 0, misses: 0 };
  let opened = false;
  let closed = false;
  let closing: Promise<void> | null = null;

  const shuttingDown = (): StratusError => new StratusError("SHUTTING_DOWN", `The ${backend.name} driver is closed`);

  /** Creates the core state of a sandbox about to launch, with its output handling. */
  function track(id: string, slot: boolean, onLog: (line: InstanceLogLine) => void): { sb: CoreSandbox<H>; io: LaunchIo } {
    let resolveReady!: () => void;
    let resolveGeneric!: () => void;
    const sb: CoreSandbox<H> = {
      id, internalId: id, slot, specialised: !slot, handle: null as unknown as H, onLog,
      ready: false, initMs: null, codeCache: null, tail: [],
      readyPromise: new Promise<void>((r) => (resolveReady = r)),
      genericPromise: new Promise<void>((r) => (resolveGeneric = r)),
      exited: null as unknown as Promise<InstanceExit>,
      stopReason: null, exitedValue: null,
    };
    const emit = (line: InstanceLogLine): void => {
      try {
        sb.onLog(line);
      } catch (err) {
        // onLog must not throw; a faulty listener must not take the instance down.
        log.warn({ err }, "onLog threw");
      }
    };
    /** READY, from stdout or the backend's own channel (LaunchIo.ready): the first one counts. */
    const becameReady = (parsed: { initMs: number | null; codeCache: CodeCacheState | null }): void => {
      if (sb.ready) return;
      sb.ready = true;
      sb.initMs = parsed.initMs;
      sb.codeCache = parsed.codeCache;
      if (parsed.codeCache === "rejected" && !codeCacheRejectionLogged) {
        codeCacheRejectionLogged = true;
        log.warn({ instanceId: sb.id }, "V8 rejected the runtime's code cache (another Node binary or other flags than it was made with): instances compile the runtime from source");
      }
      resolveReady();
    };
    const handle = (raw: string, stream: "stdout" | "stderr"): void => {
      if (stream === "stdout" && raw === GENERIC_READY_LINE && !sb.specialised) {
        resolveGeneric();
        return;
      }
      const parsed = parseOutputLine(raw, stream, sb.id);
      if (parsed.kind === "ready") {
        becameReady(parsed);
        return;
      }
      if (!sb.ready) {
        sb.tail.push(parsed.line.message);
        if (sb.tail.length > TAIL_LINES) sb.tail.shift();
      }
      emit(parsed.line);
    };
    const io: LaunchIo = {
      id,
      ready: (line) => {
        if (!sb.specialised) return;
        const parsed = parseOutputLine(line, "stdout", sb.id);
        if (parsed.kind === "ready") becameReady(parsed);
      },
      output: (stdout, stderr, pause) => {
        // One budget for both streams; when it runs out they are paused, so the function's writes block.
        const limiter = new OutputLimiter(outputLimits, (lines, bytes) => emit(outputDroppedLine(sb.id, lines, bytes, outputLimits)), pause ? { sources: pause } : {});
        limiters.set(sb, limiter);
        limiter.read(stdout, (l) => handle(l, "stdout"));
        limiter.read(stderr, (l) => handle(l, "stderr"));
      },
    };
    return { sb, io };
  }

  /** Wires a launched sandbox's exit into the core: `exited` resolves once, after the backend cleaned up. */
  function settle(sb: CoreSandbox<H>, launched: Launched<H>): void {
    sb.handle = launched.handle;
    sb.exited = launched.exit.then((raw) => {
      limiters.get(sb)?.close();
      if (live.get(sb.id) === sb) live.delete(sb.id);
      const value: InstanceExit = { reason: classifyExit(raw, sb.stopReason, sb.ready), exitCode: raw.exitCode, signal: raw.signal };
      sb.exitedValue = value;
      log.debug({ instanceId: sb.id, ...value }, "instance exited");
      // An idle slot that died (killed from outside) is replaced now, not at the next cold start.
      if (sb.slot && !sb.specialised && sb.stopReason === null && !closed) pool.refill();
      return value;
    });
  }

  function destroy(sb: CoreSandbox<H>): Promise<InstanceExit> {
    if (sb.exitedValue) return Promise.resolve(sb.exitedValue);
    sb.stopReason ??= "destroyed";
    // Read the rest unparsed: a paused stream would not end, and its end is how an exit is seen.
    limiters.get(sb)?.close();
    backend.signal(sb.handle, "SIGKILL");
    return sb.exited;
  }

  /**
   * Launches one sandbox (see launchNow), tracked until it settled: close() waits for launches under
   * way, which destroy their own sandbox once they see `closed`, before it releases the backend.
   */
  function launch(id: string, mode: LaunchMode, onLog: (line: InstanceLogLine) => void, signal?: AbortSignal, booting?: () => void, priority: BootPriority = "more", stillNeeded?: (bootMs: number) => boolean): Promise<CoreSandbox<H>> {
    const p = launchNow(id, mode, onLog, signal, booting, priority, stillNeeded);
    const settled: Promise<void> = p.then(() => undefined, () => undefined);
    launching.add(settled);
    void settled.then(() => launching.delete(settled));
    return p;
  }

  /** Launches one sandbox through the boot gate; the gate is released once it is ready or gone. */
  async function launchNow(id: string, mode: LaunchMode, onLog: (line: InstanceLogLine) => void, signal: AbortSignal | undefined, booting: (() => void) | undefined, priority: BootPriority, stillNeeded?: (bootMs: number) => boolean): Promise<CoreSandbox<H>> {
    live.set(id, null);
    // Pool refills queue behind on-demand boots, additional instances behind a function's first (docs/prewarm.md,
    // "The boot gate"); a start aborted while it waits leaves the queue without booting.
    let release: () => void;
    try {
      release = await bootGate(mode.kind === "generic" ? "refill" : priority, signal);
    } catch (err) {
      live.delete(id);
      throw err;
    }
    // A boot that waited in the gate may have become unnecessary meanwhile (ready instances drained the
    // queue it was for): cancelled here, before anything boots, it has cost nothing.
    if (stillNeeded !== undefined && !closed && !stillNeeded(pool.expectedBootMs())) {
      release();
      live.delete(id);
      throw new StratusError("INSTANCE_START_FAILED", START_NOT_NEEDED);
    }
    booting?.();
    const { sb, io } = track(id, mode.kind === "generic", onLog);
    let launched: Launched<H>;
    try {
      if (closed) throw shuttingDown();
      if (signal?.aborted) throw startAborted(signal);
      launched = await backend.launch(mode, io, signal);
    } catch (err) {
      release();
      live.delete(id);
      if (signal?.aborted || (err as { name?: unknown }).name === "AbortError") throw startAborted(signal);
      if (isStratusError(err)) throw err;
      throw new StratusError("INSTANCE_START_FAILED", `cannot start the sandbox: ${(err as Error).message}`, { cause: err });
    }
    settle(sb, launched);
    live.set(id, sb);
    if (closed) {
      // close() ran while this sandbox was launching: it did not see it.
      release();
      await destroy(sb);
      throw shuttingDown();
    }
    void Promise.race([mode.kind === "generic" ? sb.genericPromise : sb.readyPromise, sb.exited]).finally(release);
    return sb;
  }

  /** Creates a pre-warm slot for `key`: a generic sandbox, ready to be specialised. */
  async function createSlot(key: string, booting?: () => void): Promise<CoreSandbox<H>> {
    if (closed) throw shuttingDown();
    const sb = await launch(`pw-${randomBytes(6).toString("hex")}`, { kind: "generic", key: parsePoolKey(key) }, () => {}, undefined, booting);
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      sb.genericPromise.then(() => "ready" as const),
      sb.exited.then(() => "exited" as const),
      new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), startTimeoutMs))),
    ]).finally(() => clearTimeout(timer));
    if (outcome !== "ready") {
      await destroy(sb);
      throw new StratusError("INSTANCE_START_FAILED", `a pre-warm slot did not start (${outcome}): ${sb.tail.join("\n")}`);
    }
    backend.slotReady?.(sb.handle);
    return sb;
  }

  const pool = new PrewarmPool<CoreSandbox<H>>(
    {
      create: createSlot,
      destroy: async (sb) => void (await destroy(sb)),
      alive: (sb) => sb.exitedValue === null && sb.stopReason === null && (backend.alive?.(sb.handle) ?? true),
    },
    {
      size: backend.pool ? (options.prewarm ?? 0) : 0,
      maxSize: options.prewarmMax,
      ...(options.prewarmRefill === undefined ? {} : { refill: options.prewarmRefill }),
      ...(options.prewarmBurstHoldMs === undefined ? {} : { burstHoldMs: options.prewarmBurstHoldMs }),
      defaultKey: poolKeyOf({ memoryMb: options.prewarmMemoryMb ?? 256, network: "outbound", maxOpenFiles: 1024 }),
      onError: (err) => log.warn({ err }, "starting a pre-warm slot failed"),
    },
  );

  /**
   * Turns a ready slot into `spec`'s instance: the backend attaches the code, the core renames it in
   * `live` and sends the one SpecializeMessage (or, with begin/commit, writes it before the attach and
   * ends it after), then the backend does what may follow the message (afterSend). Resolves before READY
   * (awaitReady waits for it).
   */
  async function specialise(sb: CoreSandbox<H>, spec: InstanceSpec, onLog: (l: InstanceLogLine) => void): Promise<void> {
    const base = specializeMessage(spec, backend.codeDir);
    const message = JSON.stringify(backend.readyFile === undefined ? base : { ...base, readyFile: backend.readyFile });
    // The runtime's wake-up and read overlap the mount; a failed attach never ends the message (the
    // caller destroys the slot), so the runtime never acts on it.
    const early = backend.begin !== undefined && backend.commit !== undefined;
    if (early) backend.begin!(sb.handle, message);
    await backend.attach(sb.handle, spec);
    if (live.get(sb.id) === sb) live.delete(sb.id);
    sb.id = spec.instanceId;
    live.set(sb.id, sb);
    sb.specialised = true;
    sb.onLog = onLog;
    sb.tail.length = 0;
    if (early) backend.commit!(sb.handle);
    else backend.send(sb.handle, message);
    backend.afterSend?.(sb.handle, spec);
  }

  /** Waits for READY (or exit, timeout, abort) and returns the instance; on failure the sandbox is gone. */
  async function awaitReady(sb: CoreSandbox<H>, spec: InstanceSpec, t0: number, signal: AbortSignal | undefined): Promise<Instance> {
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const outcome = await Promise.race([
      sb.readyPromise.then(() => "ready" as const),
      sb.exited.then(() => "exited" as const),
      new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), startTimeoutMs))),
      new Promise<"aborted">((r) => {
        onAbort = () => r("aborted");
        if (signal?.aborted === true) onAbort();
        else signal?.addEventListener("abort", onAbort, { once: true });
      }),
    ]).finally(() => {
      clearTimeout(timer);
      if (onAbort !== undefined) signal?.removeEventListener("abort", onAbort);
    });
    if (outcome === "ready") return instanceOf(sb, spec, performance.now() - t0);
    if (outcome === "timeout") sb.stopReason ??= "load-failed";
    const exit = await destroy(sb);
    // The function's fault is FUNCTION_LOAD_FAILED, the platform's INSTANCE_START_FAILED.
    const output = sb.tail.join("\n").trim().slice(-MAX_QUOTED_OUTPUT);
    const withOutput = (m: string): string => (output === "" ? m : `${m}:\n${output}`);
    if (outcome === "aborted" || signal?.aborted) throw startAborted(signal);
    if (outcome === "timeout") throw new StratusError("FUNCTION_LOAD_FAILED", withOutput(`the function did not become ready within ${startTimeoutMs} ms`));
    if (exit.reason === "load-failed") throw new StratusError("FUNCTION_LOAD_FAILED", output === "" ? undefined : output);
    if (exit.reason === "out-of-memory") throw new StratusError("FUNCTION_LOAD_FAILED", withOutput("the function ran out of memory while loading"));
    throw new StratusError("INSTANCE_START_FAILED", withOutput(`the instance exited before it was ready (exit code ${String(exit.exitCode ?? exit.signal)})`));
  }

  function instanceOf(sb: CoreSandbox<H>, spec: InstanceSpec, startMs: number): Instance {
    let closingInst: Promise<InstanceExit> | null = null;
    const close = (graceMs = spec.config.timeout): Promise<InstanceExit> => {
      if (sb.exitedValue) return Promise.resolve(sb.exitedValue);
      closingInst ??= (async () => {
        sb.stopReason ??= "closed";
        backend.signal(sb.handle, "SIGTERM");
        const t = setTimeout(() => backend.signal(sb.handle, "SIGKILL"), graceMs);
        try {
          return await sb.exited;
        } finally {
          clearTimeout(t);
        }
      })();
      return closingInst;
    };
    return {
      id: spec.instanceId,
      spec,
      endpoint: backend.takeConnection === undefined ? { socketPath: backend.socketPath(sb.handle) } : { socketPath: backend.socketPath(sb.handle), takeConnection: () => backend.takeConnection!(sb.handle) },
      startMs,
      initMs: sb.initMs,
      codeCache: sb.codeCache,
      exited: sb.exited,
      close,
      destroy: () => destroy(sb),
      stats: async () => (sb.exitedValue ? null : backend.stats(sb.handle)),
    };
  }

  function assertOpen(): void {
    if (closed) throw shuttingDown();
  }

  async function start(spec: InstanceSpec, startOptions: StartOptions = {}): Promise<Instance> {
    const t0 = performance.now();
    const { signal } = startOptions;
    assertOpen();
    if (!opened) throw new StratusError("INSTANCE_START_FAILED", `the ${backend.name} driver is not open: call open() (after reconcile()) first`);
    if (!INSTANCE_ID.test(spec.instanceId) || spec.instanceId.startsWith("pw-")) throw new StratusError("INSTANCE_START_FAILED", `invalid instance id "${spec.instanceId}" ([a-z0-9-]{1,64}; pw- names pool slots)`);
    if (live.has(spec.instanceId)) throw new StratusError("INSTANCE_START_FAILED", `instance ${spec.instanceId} already exists`);
    if (Buffer.byteLength(backend.socketPathOf(spec.instanceId)) > MAX_SOCKET_PATH) throw new StratusError("INSTANCE_START_FAILED", "socket path too long: use a shorter stateDir");
    backend.check?.(spec);
    if (signal?.aborted) throw startAborted(signal);
    const onLog = startOptions.onLog ?? (() => {});
    const key = poolKeyOf({ memoryMb: spec.config.memory, network: spec.config.network, maxOpenFiles: spec.config.maxOpenFiles });
    const poolable = pool.enabled && (backend.poolable?.(spec) ?? true);
    try {
      let sb = poolable ? pool.take(key) : undefined;
      // No idle slot: a slot already booting is ready sooner than a fresh sandbox would be.
      const booting = poolable && sb === undefined ? pool.claimBooting(key) : undefined;
      if (booting) sb = await untilAborted(booting, signal, (late) => void (late && destroy(late)));
      let prewarmed = false;
      if (sb) {
        try {
          await specialise(sb, spec, onLog);
          prewarmed = true;
        } catch (err) {
          // The slot is spoiled (e.g. the mount failed): discard it and start fresh.
          log.warn({ err, instanceId: spec.instanceId }, "specialising a pre-warm slot failed; starting fresh");
          await destroy(sb);
          sb = undefined;
        }
      }
      sb ??= await launch(spec.instanceId, { kind: "fresh", spec }, onLog, signal, undefined, startOptions.firstInstance === true ? "first" : "more", options.cancelUnneededBoots === false ? undefined : startOptions.stillNeeded);
      const inst = await awaitReady(sb, spec, t0, signal);
      log.debug({ instanceId: spec.instanceId, startMs: inst.startMs, prewarmed }, "instance ready");
      counts[prewarmed ? "hits" : "misses"]++;
      return inst;
    } finally {
      // Refill only later (see PrewarmPool.take, refillAfterStart): a booting slot would slow this start
      // and the instance's first requests down.
      pool.refillAfterStart();
    }
  }

  return {
    live,
    get closed() {
      return closed;
    },
    prewarm: { get enabled() { return pool.enabled; }, idleCount: () => pool.idleCount(), refill: () => pool.refill(), counts: () => ({ ...counts }) },
    start,
    async open(fillAfter) {
      assertOpen();
      if (opened) return;
      opened = true;
      // Fill the pool in the background from now on: the first cold start should already find a slot.
      if (fillAfter === undefined) pool.refill();
      else {
        await fillAfter().catch(() => undefined);
        if (!closed) pool.refill();
      }
    },
    close() {
      closing ??= (async () => {
        closed = true;
        await pool.close();
        await Promise.all([...live.values()].map((sb) => (sb ? destroy(sb) : undefined)));
        // A launch still under way destroys its sandbox when it sees `closed`: wait for it, or the backend
        // would release (cgroup roots, mounts) while that sandbox still holds them.
        await Promise.all([...launching]);
        await backend.release?.();
      })();
      return closing;
    },
    destroy,
    assertOpen,
  };
}
