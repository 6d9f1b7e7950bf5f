/**
 * The "process" sandbox driver: each instance is `node runtime.cjs` inside its own bubblewrap sandbox
 * (PID, mount, IPC, UTS, cgroup and network namespaces), under a seccomp filter, running as an
 * unprivileged uid with no capabilities, limited by its own cgroup (memory, pids, CPU weight) and
 * RLIMIT_NOFILE, with noexec writable paths. See docs/sandbox.md.
 *
 * Invariants: every live or starting instance is in `live`; its cgroup, socket dir, instance box and
 * (under "outbound") network namespace exist exactly while it is there; `exited` resolves after all
 * are removed.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import type { Writable } from "node:stream";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { once } from "node:events";
import { createHash, randomBytes } from "node:crypto";
import { availableParallelism } from "node:os";
import type { DiscoveredFunction, DiscoverySpec, Instance, InstanceExit, InstanceLogLine, InstanceSpec, InstanceStats, SandboxDriver, StartOptions, ExitReason } from "../driver";
import { StratusError } from "../../shared/errors";
import { DISCOVERY_PREFIX, ENV, EXIT, GENERIC_READY_LINE, type SpecializeMessage } from "../../shared/protocol";
import type { Logger } from "../../shared/logger";
import { createSilentLogger } from "../../shared/logger";
import { OUTPUT_RATE_DEFAULTS, OutputLimiter, outputDroppedLine, parseOutputLine, splitLines, type OutputRateLimits } from "../output-lines";
import { parseDiscoveryRun } from "../discovery-output";
import { buildSandboxCommand, SANDBOX_PATHS } from "./bwrap-args";
import { CgroupManager, detectCgroupLayout, type CgroupMode, type InstanceCgroup } from "./cgroups";
import { createSandboxNetworks, type SandboxNetns } from "./netns";
import { buildSeccompFilter, encodeSeccompFilter } from "./seccomp";
import { createInstanceBoxes, type InstanceBox } from "./instance-box";
import { createSlotMounts } from "../slot-mounts";
import { PrewarmPool, type PrewarmStatus } from "../prewarm-pool";
import { createStartGate, untilAborted } from "../start-gate";

/** Default uid/gid of instances. Pick one no other software on the host uses (instances share it). */
export const DEFAULT_SANDBOX_UID = 60500;

/** Options of createProcessDriver. Only `runtimePath` and `stateDir` are required. */
export interface ProcessDriverOptions {
  /** Host path of dist/runtime.cjs. */
  readonly runtimePath: string;
  /** Per-node directory for instance socket dirs (`<stateDir>/sockets/<id>`); keep it short (socket paths ≤ 107 bytes). */
  readonly stateDir: string;
  /** Node binary (default process.execPath). Outside /usr, its install prefix is bound read-only. */
  readonly nodePath?: string;
  /** Uid/gid instances run as (default 60500/60500). */
  readonly uid?: number;
  readonly gid?: number;
  /** Name of our cgroup subtree (default "stratus"); reconcile kills everything in it. */
  readonly cgroupRoot?: string;
  /**
   * Reconcile removes empty cgroup roots named `<prefix>…` beside ours (leftovers of other data dirs);
   * default: our root name up to its last "-" (`stratus-<hash>` → `stratus-`), "" to turn it off.
   */
  readonly leftoverCgroupPrefix?: string;
  /** Where cgroups are mounted (default /sys/fs/cgroup). */
  readonly cgroupFsRoot?: string;
  /** Tasks (processes + threads) per instance (default 128; Node itself uses ~11). */
  readonly pidsMax?: number;
  /** Size of the private /tmp, MB (default 64; its pages count against the memory limit). */
  readonly tmpSizeMb?: number;
  /** Longest wait for READY, ms (default 10000). */
  readonly startTimeoutMs?: number;
  /**
   * Output rate per instance, stdout + stderr (default 1 MiB/s and 1000 lines/s, the platform config's
   * `observe.instanceOutput*`): past it the driver stops reading the pipes and drops, with a marker line.
   */
  readonly outputLimits?: OutputRateLimits;
  /** Prefix of the iptables chains of the outbound policy (default "STRATUS-NET": STRATUS-NET-IN, STRATUS-NET-FWD). */
  readonly iptablesChain?: string;
  /**
   * IPv4 subnet carved into one /30 per "outbound" sandbox (its own network namespace, veth, NAT; see
   * ./netns.ts). Default 10.200.0.0/16. Two nodes on one host need disjoint subnets.
   */
  readonly sandboxSubnet?: string;
  /** Extra CIDRs instances may not reach under "outbound" (e.g. the cluster's private network). */
  readonly blockedCidrs?: readonly string[];
  readonly bwrapPath?: string;
  readonly setprivPath?: string;
  readonly logger?: Logger;
  /**
   * Pre-warm pool: idle generic sandboxes kept for the default limits (memory `prewarmMemoryMb`, network
   * "outbound"); 0 disables the pool. Default 0 here (tests and tools that only discover pay nothing);
   * the platform config's `prewarm` (default 2) is what a node runs with. Other limits get slots only
   * from recent demand. See docs/prewarm.md.
   */
  readonly prewarm?: number;
  /** Most idle slots per limits key (default 4 × prewarm, at most 32). */
  readonly prewarmMax?: number;
  /** Memory size, MB, of the default pool (default 256, the function config default). */
  readonly prewarmMemoryMb?: number;
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
}

/** The process driver, plus what tests and operators may inspect. */
export interface ProcessDriver extends SandboxDriver {
  readonly cgroupMode: CgroupMode;
  readonly cgroups: CgroupManager;
  /** The pre-warm pool (inspection for tests and metrics). */
  readonly prewarm: PrewarmStatus;
}

/**
 * glibc malloc settings of every instance (a function's own env may override them). Setting the trim
 * threshold at all turns off glibc's dynamic thresholds, which after start-up's large frees let an idle
 * instance keep ~0.5 MiB of freed heap it never returns; 512 KiB keeps trimming rare on the hot path.
 * Measured: private memory after one request 11.2 → 10.6 MiB, warm p50/p99 within noise.
 */
const MALLOC_TUNABLES = "glibc.malloc.trim_threshold=524288";
/** Memory limit of a discovery run, MB. */
const DISCOVERY_MEMORY_MB = 256;
/** RLIMIT_NOFILE of a discovery run (the function config default). */
const DISCOVERY_MAX_OPEN_FILES = 1024;
/** Lines of output kept to explain a failed start. */
const TAIL_LINES = 20;

/** One sandbox process: a fresh instance, or a pre-warm slot (then specialised into an instance). */
interface Sandbox {
  /** Name of the slot it started as (= the instance id for a fresh start); names its slot dirs. */
  readonly internalId: string;
  /** Current name of its cgroup and socket dir (the instance id once specialised on cgroup v1). */
  id: string;
  cgroup: InstanceCgroup;
  socketDir: string;
  readonly child: ChildProcess;
  /** The slot's code mount point (`<stateDir>/slots/<id>`), null for a fresh start. */
  readonly slotDir: string | null;
  /** Why we stopped it (null: it ended on its own) and, once gone, how it ended. */
  readonly state: { reason: ExitReason | null; exitedValue: InstanceExit | null };
  ready: boolean;
  /** Module load time the runtime reported on its READY line, ms. */
  initMs: number | null;
  /** Last output lines before READY, to explain a failed start. */
  readonly tail: string[];
  onLog: (line: InstanceLogLine) => void;
  readyPromise: Promise<void>;
  genericPromise: Promise<void>;
  exited: Promise<InstanceExit>;
  kill(): void;
}

/**
 * Creates the driver; detects the cgroup layout now and fails fast.
 * @throws Error when no usable cgroup hierarchy exists or bwrap/setpriv are missing.
 */
export function createProcessDriver(options: ProcessDriverOptions): ProcessDriver {
  const log = options.logger ?? createSilentLogger();
  const nodePath = options.nodePath ?? process.execPath;
  const uid = options.uid ?? DEFAULT_SANDBOX_UID;
  const gid = options.gid ?? uid;
  const bwrapPath = options.bwrapPath ?? "/usr/bin/bwrap";
  const setprivPath = options.setprivPath ?? "/usr/bin/setpriv";
  const pidsMax = options.pidsMax ?? 128;
  const tmpSizeBytes = (options.tmpSizeMb ?? 64) * 1024 * 1024;
  const startTimeoutMs = options.startTimeoutMs ?? 10_000;
  const outputLimits = options.outputLimits ?? OUTPUT_RATE_DEFAULTS;
  const bootGate = createStartGate(options.maxConcurrentStarts ?? Math.max(2, availableParallelism()));
  for (const [what, p] of [["bwrap", bwrapPath], ["setpriv", setprivPath], ["runtime", options.runtimePath], ["node", nodePath], ["nsenter", "/usr/bin/nsenter"], ["ip", "/usr/sbin/ip"]] as const) {
    if (!existsSync(p)) throw new Error(`process driver: ${what} not found at ${p} (Debian: apt-get install bubblewrap util-linux iproute2)`);
  }
  if (!setprivPath.startsWith("/usr/")) throw new Error("process driver: setpriv must live under /usr (it runs inside the sandbox)");
  // The seccomp program every sandbox loads (throws on an architecture without a syscall table: no
  // sandbox ever runs unfiltered). Written once; bwrap reads it through fd 9 at each start.
  const seccompPath = join(options.stateDir, "seccomp.bpf");
  mkdirSync(options.stateDir, { recursive: true, mode: 0o700 });
  writeFileSync(seccompPath, encodeSeccompFilter(buildSeccompFilter()), { mode: 0o600 });
  const layout = detectCgroupLayout(options.cgroupFsRoot);
  const cgroups = new CgroupManager(layout, options.cgroupRoot ?? "stratus");
  const socketsRoot = join(options.stateDir, "sockets");
  /** Sibling cgroup roots reconcile may remove when empty: `stratus-<hash>` → `stratus-`. */
  const leftoverRootPrefix = options.leftoverCgroupPrefix ?? cgroups.rootName.slice(0, cgroups.rootName.lastIndexOf("-") + 1);
  /** Every sandbox by its current id; null while its cgroup is being created (reconcile must leave it alone). */
  const live = new Map<string, Sandbox | null>();
  const slotMounts = createSlotMounts(options.stateDir, log);
  /** Per-sandbox noexec tmpfs holding /tmp and the socket dir; `sockets/<id>` is a symlink into it. */
  const boxes = createInstanceBoxes(options.stateDir, log);
  /** The runtime as sandboxes bind it: a copy on a tmpfs, so mountinfo inside does not name its install path. */
  let sharedRuntime: Promise<string> | null = null;
  const runtimeCopy = (): Promise<string> => {
    sharedRuntime ??= boxes.shareFile(options.runtimePath).catch((err: unknown) => {
      sharedRuntime = null;
      throw new StratusError("INSTANCE_START_FAILED", `cannot prepare the runtime copy: ${(err as Error).message}`, { cause: err });
    });
    return sharedRuntime;
  };
  /** Ids of discovery runs in progress (reconcile must not take their cgroups). */
  const discovering = new Set<string>();
  let closed = false;
  // Namespaces and veths carry a tag of this state dir, so reconcile finds a killed run's and no one else's.
  const networks = createSandboxNetworks({
    subnet: options.sandboxSubnet, tag: createHash("sha256").update(options.stateDir).digest("hex").slice(0, 6),
    blockedCidrs: options.blockedCidrs, chain: options.iptablesChain, logger: log,
  });
  log.debug({ cgroupMode: layout.mode, cgroupRoot: cgroups.rootName }, "process driver created");

  /** Everything fixed when a sandbox process starts: the pool key of a slot. */
  const poolKeyOf = (memoryMb: number, network: "outbound" | "none", maxOpenFiles: number): string => `${memoryMb}:${network}:${maxOpenFiles}`;

  /**
   * Starts one sandbox process: socket dir, cgroup, bwrap. `fresh` loads the function from the start;
   * `generic` starts a pre-warm slot (code dir = an empty, per-slot mount point, specialisation fd 3).
   * The caller waits on `sb.readyPromise` / `sb.genericPromise` and `sb.exited`.
   */
  async function launch(internalId: string, memoryMb: number, network: "outbound" | "none", maxOpenFiles: number, mode: { kind: "fresh"; spec: InstanceSpec } | { kind: "generic"; codeDir: string }): Promise<Sandbox> {
    const socketDir = join(socketsRoot, internalId);
    let netns: SandboxNetns | null = null;
    if (network === "outbound") {
      try {
        await networks.ensureRules();
        netns = await networks.create(internalId);
      } catch (err) {
        throw new StratusError("INSTANCE_START_FAILED", `cannot set up the sandbox network: ${(err as Error).message}`, { cause: err });
      }
    }
    const limits = { memoryMb, pidsMax, cpuWeight: Math.min(10_000, Math.max(1, Math.round((memoryMb / 256) * 100))) };
    let cgroup: InstanceCgroup;
    let box: InstanceBox;
    try {
      box = await prepareBox(internalId, socketDir);
    } catch (err) {
      await networks.remove(internalId);
      throw new StratusError("INSTANCE_START_FAILED", `cannot prepare the sandbox: ${(err as Error).message}`, { cause: err });
    }
    try {
      cgroup = cgroups.create(internalId, limits);
    } catch (err) {
      rmSync(socketDir, { force: true });
      await boxes.remove(internalId);
      await networks.remove(internalId);
      throw new StratusError("INSTANCE_START_FAILED", `cannot prepare the sandbox: ${(err as Error).message}`, { cause: err });
    }
    const runtimePath = await runtimeCopy().catch(async (err: unknown) => {
      rmSync(socketDir, { force: true });
      await boxes.remove(internalId);
      await networks.remove(internalId);
      await cgroup.remove().catch(() => undefined);
      throw err;
    });
    const [file, args] = buildSandboxCommand({
      bwrapPath, setprivPath, nodePath, runtimePath, artifactDir: mode.kind === "fresh" ? mode.spec.artifactDir : mode.codeDir, socketDir: box.run,
      uid, gid, procsFiles: cgroup.procsFiles, network, netnsPath: netns?.path, tmpDir: box.tmp, seccompPath, maxOpenFiles,
      // Node inside the sandbox cannot see the cgroup limit (no /sys): size the heap to ~75 % of it so V8
      // fails with a clear heap OOM before the kernel kills it. Fixed at start: one reason pool slots are keyed by memory.
      nodeArgs: [`--max-old-space-size=${Math.max(16, Math.floor(memoryMb * 0.75))}`],
    });
    // A clean, explicit environment: never the platform's own (it leaks secrets, and NODE_EXTRA_CA_CERTS
    // alone doubles start time, see MEASURED.md). Protocol variables win over the function's env.
    const base = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8", GLIBC_TUNABLES: MALLOC_TUNABLES };
    const socketEnv = `${SANDBOX_PATHS.socketDir}/${SANDBOX_PATHS.socketName}`;
    const env: Record<string, string> = mode.kind === "generic"
      ? { ...base, [ENV.socket]: socketEnv, [ENV.generic]: "1" }
      : { ...base, ...mode.spec.env, [ENV.socket]: socketEnv, ...specEnv(mode.spec) };
    // Generic slots get fd 3, the one-shot specialisation channel; the driver holds its only other end.
    const child = spawn(file, args, { env, stdio: mode.kind === "generic" ? ["ignore", "pipe", "pipe", "pipe"] : ["ignore", "pipe", "pipe"] });

    const sb: Sandbox = {
      internalId, id: internalId, cgroup, child, socketDir, slotDir: mode.kind === "generic" ? mode.codeDir : null,
      state: { reason: null, exitedValue: null },
      ready: false, initMs: null, tail: [], onLog: () => {},
      readyPromise: null as unknown as Promise<void>,
      genericPromise: null as unknown as Promise<void>,
      exited: null as unknown as Promise<InstanceExit>,
      kill: () => {
        void sb.cgroup.killAll().catch(() => {});
        child.kill("SIGKILL");
      },
    };
    let resolveReady!: () => void;
    let resolveGeneric!: () => void;
    sb.readyPromise = new Promise<void>((r) => (resolveReady = r));
    sb.genericPromise = new Promise<void>((r) => (resolveGeneric = r));
    const handle = (raw: string, stream: "stdout" | "stderr"): void => {
      if (stream === "stdout" && raw === GENERIC_READY_LINE && sb.slotDir !== null) {
        resolveGeneric();
        return;
      }
      const parsed = parseOutputLine(raw, stream, sb.id);
      if (parsed.kind === "ready") {
        sb.ready = true;
        sb.initMs = parsed.initMs;
        resolveReady();
        return;
      }
      if (!sb.ready) {
        sb.tail.push(parsed.line.message);
        if (sb.tail.length > TAIL_LINES) sb.tail.shift();
      }
      try {
        sb.onLog(parsed.line);
      } catch (err) {
        log.warn({ err }, "onLog threw");
      }
    };
    // One budget for both pipes; when it runs out both are paused, so the function's writes block.
    const limiter = new OutputLimiter(outputLimits, (lines, bytes) => {
      try {
        sb.onLog(outputDroppedLine(sb.id, lines, bytes, outputLimits));
      } catch (err) {
        log.warn({ err }, "onLog threw");
      }
    });
    if (child.stdout) limiter.read(child.stdout, (l) => handle(l, "stdout"));
    if (child.stderr) limiter.read(child.stderr, (l) => handle(l, "stderr"));
    // A write to the channel of a slot that died must not become an uncaught error.
    (child.stdio[3] as Writable | null | undefined)?.on("error", () => {});

    sb.exited = (async (): Promise<InstanceExit> => {
      let code: number | null = null;
      let signal: string | null = null;
      if (child.exitCode === null && child.signalCode === null) {
        const [c, sig] = (await once(child, "exit").catch(() => [null, null])) as [number | null, NodeJS.Signals | null];
        code = c;
        signal = sig;
      } else {
        code = child.exitCode;
        signal = child.signalCode;
      }
      // Whatever is left (forks that left the sandbox's process tree) dies with the cgroup.
      const oom = sb.cgroup.oomKills();
      await sb.cgroup.killAll().catch((err: unknown) => log.error({ err, instanceId: sb.id }, "killing the cgroup failed"));
      if (child.stdout && !child.stdout.readableEnded) await Promise.race([once(child, "close"), new Promise((r) => setTimeout(r, 1000))]);
      limiter.close();
      await sb.cgroup.remove().catch((err: unknown) => log.error({ err, instanceId: sb.id }, "removing the cgroup failed"));
      rmSync(sb.socketDir, { recursive: true, force: true });
      await boxes.remove(sb.internalId);
      await networks.remove(sb.internalId);
      if (sb.slotDir !== null) await removeSlotDir(sb.internalId);
      live.delete(sb.id);
      let reason = sb.state.reason;
      if (reason === null) {
        // bwrap reports a signalled child as 128 + signal: 137 = SIGKILL (the OOM killer when oom > 0),
        // 134 = SIGABRT (V8's "heap out of memory"), 139 = SIGSEGV (heap OOM seen when node is PID 1).
        if (oom > 0 || code === 134 || code === 139) reason = "out-of-memory";
        else if (!sb.ready && code === EXIT.loadFailed) reason = "load-failed";
        else reason = "crashed";
      }
      const value: InstanceExit = { reason, exitCode: code, signal };
      sb.state.exitedValue = value;
      log.debug({ instanceId: sb.id, ...value }, "instance exited");
      return value;
    })();
    return sb;
  }

  /** Mounts `id`'s box and points the socket dir path (`sockets/<id>`, what the endpoint names) at its run/. */
  async function prepareBox(id: string, socketDir: string): Promise<InstanceBox> {
    mkdirSync(socketsRoot, { recursive: true, mode: 0o700 });
    rmSync(socketDir, { recursive: true, force: true });
    await boxes.remove(id);
    const box = await boxes.create(id, tmpSizeBytes, uid, gid);
    try {
      symlinkSync(box.run, socketDir);
    } catch (err) {
      await boxes.remove(id);
      throw err;
    }
    return box;
  }

  const destroySandbox = async (sb: Sandbox): Promise<InstanceExit> => {
    if (sb.state.exitedValue) return sb.state.exitedValue;
    sb.state.reason ??= "destroyed";
    sb.kill();
    return sb.exited;
  };

  /** Creates a pre-warm slot for `key`: a generic sandbox whose /fn is an empty per-slot mount point. */
  async function createSlot(key: string): Promise<Sandbox> {
    if (closed) throw new StratusError("SHUTTING_DOWN");
    const [memory, network, nofile] = key.split(":") as [string, "outbound" | "none", string];
    const slotId = `pw-${randomBytes(6).toString("hex")}`;
    const codeDir = await slotMounts.create(slotId);
    live.set(slotId, null);
    const release = await bootGate();
    let sb: Sandbox;
    try {
      sb = await launch(slotId, Number(memory), network, Number(nofile), { kind: "generic", codeDir });
    } catch (err) {
      release();
      live.delete(slotId);
      await removeSlotDir(slotId);
      throw err;
    }
    void Promise.race([sb.genericPromise, sb.exited]).finally(release);
    live.set(slotId, sb);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), startTimeoutMs)));
    const outcome = await Promise.race([sb.genericPromise.then(() => "ready" as const), sb.exited.then(() => "exited" as const), timeout]);
    clearTimeout(timer);
    if (outcome !== "ready") {
      await destroySandbox(sb);
      throw new StratusError("INSTANCE_START_FAILED", `a pre-warm slot did not start (${outcome}): ${sb.tail.join("\n")}`);
    }
    return sb;
  }

  /** Unmounts (propagating into the sandbox, if still alive) and removes a slot's code dir and stage dir. */
  const removeSlotDir = (slotId: string): Promise<void> => slotMounts.remove(slotId);

  const counts = { hits: 0, misses: 0 };
  const pool = new PrewarmPool<Sandbox>(
    {
      create: createSlot,
      destroy: async (sb) => void (await destroySandbox(sb)),
      alive: (sb) => sb.state.exitedValue === null && sb.child.exitCode === null && sb.child.signalCode === null,
    },
    {
      size: options.prewarm ?? 0,
      maxSize: options.prewarmMax,
      defaultKey: poolKeyOf(options.prewarmMemoryMb ?? 256, "outbound", 1024),
      onError: (err) => log.warn({ err }, "starting a pre-warm slot failed"),
    },
  );
  // Fill the pool in the background from the start: the first cold start should already find a slot.
  if (pool.enabled) setImmediate(() => pool.refill());

  /**
   * Turns a ready slot into `spec`'s instance: bind the artifact read-only onto the slot's /fn (the
   * mount propagates into the sandbox), name its cgroup and socket dir after the instance, send the one
   * SpecializeMessage and close the channel. Resolves when the runtime printed READY.
   */
  async function specialise(sb: Sandbox, spec: InstanceSpec, onLog: (l: InstanceLogLine) => void): Promise<void> {
    await slotMounts.attach(sb.internalId, spec.artifactDir);
    // Name everything after the instance, as a fresh start does (operators and reconcile see one name).
    // cgroup v1 allows renaming within the parent; v2 does not (the slot name then stays).
    if (cgroups.layout.mode === "v1") {
      const dirs = cgroups.rootDirs();
      const done: string[] = [];
      try {
        for (const d of dirs) {
          renameSync(join(d, sb.internalId), join(d, spec.instanceId));
          done.push(d);
        }
        renameSync(sb.socketDir, join(socketsRoot, spec.instanceId));
        live.delete(sb.id);
        sb.id = spec.instanceId;
        sb.cgroup = cgroups.open(spec.instanceId);
        sb.socketDir = join(socketsRoot, spec.instanceId);
        live.set(sb.id, sb);
      } catch (err) {
        for (const d of done) renameSync(join(d, spec.instanceId), join(d, sb.internalId));
        throw err;
      }
    }
    sb.onLog = onLog;
    sb.tail.length = 0;
    const message: SpecializeMessage = {
      entry: `${SANDBOX_PATHS.code}/${spec.entry}`,
      exportName: spec.exportName,
      functionName: spec.functionName,
      config: spec.config,
      instanceId: spec.instanceId,
      env: spec.env,
    };
    const channel = sb.child.stdio[3] as Writable;
    channel.end(JSON.stringify(message));
  }

  async function start(spec: InstanceSpec, startOptions: StartOptions = {}): Promise<Instance> {
    if (closed) throw new StratusError("SHUTTING_DOWN");
    if (!/^[a-z0-9-]{1,64}$/.test(spec.instanceId) || spec.instanceId.startsWith("pw-")) throw new StratusError("INSTANCE_START_FAILED", `invalid instance id "${spec.instanceId}"`);
    if (live.has(spec.instanceId)) throw new StratusError("INSTANCE_START_FAILED", `instance ${spec.instanceId} already exists`);
    const t0 = performance.now();
    if (Buffer.byteLength(join(socketsRoot, spec.instanceId, SANDBOX_PATHS.socketName)) > 107) throw new StratusError("INSTANCE_START_FAILED", `socket path too long: use a shorter stateDir`);
    startOptions.signal?.throwIfAborted();

    const key = poolKeyOf(spec.config.memory, spec.config.network, spec.config.maxOpenFiles);
    try {
      let sb: Sandbox | undefined = pool.take(key);
      const booting = sb ? undefined : pool.claimBooting(key);
      if (booting) sb = await untilAborted(booting, startOptions.signal, (late) => void (late && destroySandbox(late)));
      return await startOn(sb, spec, startOptions, t0);
    } finally {
      // Refill only later (see PrewarmPool.take, refillAfterStart): a booting slot would slow this start
      // and the instance's first requests down.
      pool.refillAfterStart();
    }
  }

  async function startOn(taken: Sandbox | undefined, spec: InstanceSpec, startOptions: StartOptions, t0: number): Promise<Instance> {
    const onLog = startOptions.onLog ?? (() => {});
    const socketPathOf = (dir: string): string => join(dir, SANDBOX_PATHS.socketName);
    let sb = taken;
    let prewarmed = false;
    if (sb) {
      try {
        await specialise(sb, spec, onLog);
        prewarmed = true;
      } catch (err) {
        // The slot is spoiled (e.g. the mount failed): discard it and start fresh.
        log.warn({ err, instanceId: spec.instanceId }, "specialising a pre-warm slot failed; starting fresh");
        await destroySandbox(sb);
        sb = undefined;
      }
    }
    if (!sb) {
      live.set(spec.instanceId, null);
      const release = await bootGate();
      try {
        if (closed) throw new StratusError("SHUTTING_DOWN");
        startOptions.signal?.throwIfAborted();
        sb = await launch(spec.instanceId, spec.config.memory, spec.config.network, spec.config.maxOpenFiles, { kind: "fresh", spec });
      } catch (err) {
        release();
        live.delete(spec.instanceId);
        if ((err as { code?: unknown }).code === "ABORT_ERR") throw new StratusError("INSTANCE_START_FAILED", "start aborted", { cause: err });
        throw err;
      }
      void Promise.race([sb.readyPromise, sb.exited]).finally(release);
      sb.onLog = onLog;
      live.set(spec.instanceId, sb);
    }
    const inst = sb;

    let timer: NodeJS.Timeout | undefined;
    const abort = (): void => void destroySandbox(inst);
    try {
      startOptions.signal?.throwIfAborted();
      startOptions.signal?.addEventListener("abort", abort, { once: true });
      const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), startTimeoutMs)));
      const outcome = await Promise.race([inst.readyPromise.then(() => "ready" as const), inst.exited.then(() => "exited" as const), timeout]);
      if (outcome !== "ready") {
        if (outcome === "timeout") inst.state.reason = "load-failed";
        const exit = await destroySandbox(inst);
        const output = inst.tail.join("\n").trim();
        if (startOptions.signal?.aborted) throw new StratusError("INSTANCE_START_FAILED", "start aborted", { cause: startOptions.signal.reason });
        if (outcome === "timeout") throw new StratusError("FUNCTION_LOAD_FAILED", `the function did not become ready within ${startTimeoutMs} ms${output ? `:\n${output}` : ""}`);
        if (exit.reason === "load-failed") throw new StratusError("FUNCTION_LOAD_FAILED", output || undefined);
        if (exit.reason === "out-of-memory") throw new StratusError("FUNCTION_LOAD_FAILED", `the function ran out of memory while loading${output ? `:\n${output}` : ""}`);
        throw new StratusError("INSTANCE_START_FAILED", `the instance exited before it was ready (exit code ${exit.exitCode ?? exit.signal})${output ? `:\n${output}` : ""}`);
      }
    } catch (err) {
      if (!inst.state.exitedValue) await destroySandbox(inst);
      if ((err as { code?: unknown }).code === "ABORT_ERR") throw new StratusError("INSTANCE_START_FAILED", "start aborted", { cause: err });
      throw err;
    } finally {
      clearTimeout(timer);
      startOptions.signal?.removeEventListener("abort", abort);
    }
    const startMs = performance.now() - t0;
    log.debug({ instanceId: spec.instanceId, startMs, prewarmed }, "instance ready");
    counts[prewarmed ? "hits" : "misses"]++;

    let closing: Promise<InstanceExit> | null = null;
    const close = (graceMs = spec.config.timeout): Promise<InstanceExit> => {
      if (inst.state.exitedValue) return Promise.resolve(inst.state.exitedValue);
      closing ??= (async () => {
        inst.state.reason ??= "closed";
        const pid = findRuntimePid(inst.cgroup);
        if (pid === null) inst.kill();
        else {
          try {
            process.kill(pid, "SIGTERM");
          } catch {
            inst.kill();
          }
        }
        const t = setTimeout(() => inst.kill(), graceMs);
        try {
          return await inst.exited;
        } finally {
          clearTimeout(t);
        }
      })();
      return closing;
    };

    return {
      id: spec.instanceId,
      spec,
      endpoint: { socketPath: socketPathOf(inst.socketDir) },
      startMs,
      initMs: inst.initMs,
      exited: inst.exited,
      close,
      destroy: () => destroySandbox(inst),
      stats: async (): Promise<InstanceStats | null> => {
        if (inst.state.exitedValue) return null;
        const m = inst.cgroup.memory();
        return m ? { memoryBytes: m.currentBytes, peakMemoryBytes: m.peakBytes } : null;
      },
    };
  }

  /**
   * Runs the runtime in discovery mode inside the same sandbox and limits as an instance, with no
   * network and 256 MB, and parses its DISCOVERY_PREFIX line (src/sandbox/discovery-output.ts): a
   * function the runtime reports with an error is passed through with it.
   */
  async function discover(spec: DiscoverySpec): Promise<DiscoveredFunction[]> {
    if (closed) throw new StratusError("SHUTTING_DOWN");
    const id = `discover-${randomBytes(6).toString("hex")}`;
    discovering.add(id);
    try {
      return await runDiscovery(id, spec);
    } finally {
      discovering.delete(id);
    }
  }

  async function runDiscovery(id: string, spec: DiscoverySpec): Promise<DiscoveredFunction[]> {
    const socketDir = join(socketsRoot, id);
    let cgroup: InstanceCgroup;
    let box: InstanceBox;
    try {
      box = await prepareBox(id, socketDir);
    } catch (err) {
      throw new StratusError("INSTANCE_START_FAILED", `cannot prepare the discovery sandbox: ${(err as Error).message}`, { cause: err });
    }
    try {
      cgroup = cgroups.create(id, { memoryMb: DISCOVERY_MEMORY_MB, pidsMax, cpuWeight: 100 });
    } catch (err) {
      rmSync(socketDir, { force: true });
      await boxes.remove(id);
      throw new StratusError("INSTANCE_START_FAILED", `cannot prepare the discovery sandbox: ${(err as Error).message}`, { cause: err });
    }
    const runtimePath = await runtimeCopy().catch(async (err: unknown) => {
      rmSync(socketDir, { force: true });
      await boxes.remove(id);
      await cgroup.remove().catch(() => undefined);
      throw err;
    });
    const [file, args] = buildSandboxCommand({
      bwrapPath, setprivPath, nodePath, runtimePath, artifactDir: spec.artifactDir, socketDir: box.run,
      uid, gid, procsFiles: cgroup.procsFiles, network: "none", tmpDir: box.tmp, seccompPath, maxOpenFiles: DISCOVERY_MAX_OPEN_FILES,
      nodeArgs: [`--max-old-space-size=${Math.floor(DISCOVERY_MEMORY_MB * 0.75)}`],
    });
    const env = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8", [ENV.discover]: "1", [ENV.entry]: `${SANDBOX_PATHS.code}/${spec.entry}` };
    const child = spawn(file, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let result: string | null = null;
    const tail: string[] = [];
    const keep = (raw: string, stream: "stdout" | "stderr"): void => {
      if (stream === "stdout" && raw.startsWith(DISCOVERY_PREFIX)) {
        result = raw.slice(DISCOVERY_PREFIX.length);
        return;
      }
      const parsed = parseOutputLine(raw, stream, id);
      if (parsed.kind !== "log") return;
      tail.push(parsed.line.message);
      if (tail.length > TAIL_LINES) tail.shift();
    };
    // The discovery line can be large (many functions): allow 4 MiB for it.
    if (child.stdout) splitLines(child.stdout, (l) => keep(l, "stdout"), 4 * 1024 * 1024);
    if (child.stderr) splitLines(child.stderr, (l) => keep(l, "stderr"));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void cgroup.killAll().catch(() => {});
    }, spec.timeoutMs);
    let code: number | null = null;
    try {
      if (child.exitCode === null && child.signalCode === null) [code] = (await once(child, "exit").catch(() => [null])) as [number | null];
      else code = child.exitCode;
      if (child.stdout && !child.stdout.readableEnded) await Promise.race([once(child, "close"), new Promise((r) => setTimeout(r, 1000))]);
    } finally {
      clearTimeout(timer);
      const oom = cgroup.oomKills();
      await cgroup.killAll().catch(() => {});
      await cgroup.remove().catch((err: unknown) => log.error({ err, id }, "removing the discovery cgroup failed"));
      rmSync(socketDir, { recursive: true, force: true });
      await boxes.remove(id);
      if (oom > 0) code = 137;
    }
    if (timedOut) throw new StratusError("FUNCTION_LOAD_FAILED", `loading the module took longer than ${spec.timeoutMs} ms`);
    return parseDiscoveryRun({ payload: result, exitCode: code, output: tail.join("\n"), memoryMb: DISCOVERY_MEMORY_MB });
  }

  async function reconcile(): Promise<{ removed: number }> {
    const removed = new Set<string>();
    for (const id of cgroups.list()) {
      if (live.has(id) || discovering.has(id)) continue;
      const cg = cgroups.open(id);
      const killed = await cg.killAll();
      await cg.remove();
      removed.add(id);
      log.info({ instanceId: id, killed }, "reconcile: removed a leftover instance cgroup");
    }
    let dirs: string[] = [];
    try {
      dirs = readdirSync(socketsRoot);
    } catch {
      // nothing yet
    }
    for (const id of dirs) {
      if (live.has(id) || discovering.has(id)) continue;
      rmSync(join(socketsRoot, id), { recursive: true, force: true });
      removed.add(id);
    }
    // Boxes of a killed run (or of a failed cleanup): unmount and remove.
    const owned = new Set<string>([...live.keys(), ...discovering]);
    for (const sb of live.values()) if (sb) owned.add(sb.internalId);
    for (const id of boxes.list()) {
      if (owned.has(id)) continue;
      await boxes.remove(id);
      removed.add(id);
    }
    for (const id of networks.list()) {
      if (owned.has(id)) continue;
      await networks.remove(id);
      removed.add(id);
    }
    await networks.removeOrphanVeths();
    // Slot mount points of a killed run: unmount whatever is mounted there, then remove them.
    for (const id of slotMounts.list()) {
      if (live.has(id)) continue;
      await removeSlotDir(id);
    }
    // Empty cgroup roots of other data dirs or killed runs (`stratus-<hash>` next to ours).
    const gone = cgroups.removeEmptySiblings(leftoverRootPrefix);
    if (gone.length > 0) log.info({ dirs: gone }, "reconcile: removed empty cgroup roots");
    return { removed: removed.size };
  }

  async function close(): Promise<void> {
    closed = true;
    await pool.close();
    await Promise.all([...live.values()].map(async (inst) => {
      if (!inst) return;
      inst.state.reason ??= "destroyed";
      inst.kill();
      await inst.exited;
    }));
    // Leave no mount behind on the host: the state dir must stay removable.
    await slotMounts.close();
    await boxes.close();
    // Nor an empty cgroup root (a discovery still running keeps it: rmdir refuses a busy cgroup).
    if (discovering.size === 0) cgroups.removeRoot();
  }

  return {
    name: "process",
    cgroupMode: layout.mode,
    cgroups,
    prewarm: { get enabled() { return pool.enabled; }, idleCount: () => pool.idleCount(), refill: () => pool.refill(), counts: () => ({ ...counts }) },
    start,
    prepare: async () => ({}),
    discover,
    reconcile,
    close,
  };
}

/** The protocol variables of a fresh start (a pre-warm slot gets the same fields in its SpecializeMessage). */
function specEnv(spec: InstanceSpec): Record<string, string> {
  return {
    [ENV.entry]: `${SANDBOX_PATHS.code}/${spec.entry}`,
    [ENV.exportName]: spec.exportName,
    [ENV.functionName]: spec.functionName,
    [ENV.config]: JSON.stringify(spec.config),
    [ENV.instanceId]: spec.instanceId,
  };
}

/**
 * The runtime's host pid: inside the sandbox bwrap's init is PID 1 and the command it runs is PID 2,
 * so it is the cgroup member whose NSpid is `<host> 2` (exactly two levels; deeper nesting is user code).
 */
function findRuntimePid(cgroup: InstanceCgroup): number | null {
  for (const pid of cgroup.pids()) {
    let status = "";
    try {
      status = readFileSync(`/proc/${pid}/status`, "utf8");
    } catch {
      continue;
    }
    const m = /^NSpid:\s+(\d+)\s+(\d+)\s*$/m.exec(status);
    if (m && m[2] === "2") return pid;
  }
  return null;
}
