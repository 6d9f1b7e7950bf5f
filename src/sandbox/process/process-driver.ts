/**
 * The "process" sandbox driver: each instance is `node runtime.cjs` inside its own bubblewrap sandbox
 * (PID, mount, IPC, UTS, cgroup namespaces; optionally network), running as an unprivileged uid with no
 * capabilities, limited by its own cgroup (memory, pids, CPU weight). See docs/sandbox.md.
 *
 * Invariants: every live or starting instance is in `live`; its cgroup and socket dir exist exactly
 * while it is there; `exited` resolves after both are removed.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chownSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { once } from "node:events";
import { randomBytes } from "node:crypto";
import type { DiscoveredFunction, DiscoverySpec, Instance, InstanceExit, InstanceSpec, InstanceStats, SandboxDriver, StartOptions, ExitReason } from "../driver";
import { StratusError } from "../../shared/errors";
import { DISCOVERY_PREFIX, ENV, EXIT } from "../../shared/protocol";
import type { Logger } from "../../shared/logger";
import { createSilentLogger } from "../../shared/logger";
import { parseOutputLine, splitLines } from "../output-lines";
import { parseDiscoveryRun } from "../discovery-output";
import { buildSandboxCommand, SANDBOX_PATHS } from "./bwrap-args";
import { CgroupManager, detectCgroupLayout, type CgroupMode, type InstanceCgroup } from "./cgroups";
import { installOutboundRules } from "./network";

/** Default uid/gid of instances. Pick one no other software on the host uses: network rules match on it. */
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
  /** Where cgroups are mounted (default /sys/fs/cgroup). */
  readonly cgroupFsRoot?: string;
  /** Tasks (processes + threads) per instance (default 128; Node itself uses ~11). */
  readonly pidsMax?: number;
  /** Size of the private /tmp, MB (default 64; its pages count against the memory limit). */
  readonly tmpSizeMb?: number;
  /** Longest wait for READY, ms (default 10000). */
  readonly startTimeoutMs?: number;
  /** iptables chain of the outbound policy (default "STRATUS-SANDBOX"). */
  readonly iptablesChain?: string;
  /** Extra CIDRs instances may not reach under "outbound" (e.g. the cluster's private network). */
  readonly blockedCidrs?: readonly string[];
  readonly bwrapPath?: string;
  readonly setprivPath?: string;
  readonly logger?: Logger;
}

/** The process driver, plus what tests and operators may inspect. */
export interface ProcessDriver extends SandboxDriver {
  readonly cgroupMode: CgroupMode;
  readonly cgroups: CgroupManager;
}

/** Memory limit of a discovery run, MB. */
const DISCOVERY_MEMORY_MB = 256;
/** Lines of output kept to explain a failed start. */
const TAIL_LINES = 20;

interface LiveInstance {
  readonly id: string;
  readonly cgroup: InstanceCgroup;
  readonly child: ChildProcess;
  /** Why we stopped it (null: it ended on its own) and, once gone, how it ended. */
  readonly state: { reason: ExitReason | null; exitedValue: InstanceExit | null };
  readonly exited: Promise<InstanceExit>;
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
  for (const [what, p] of [["bwrap", bwrapPath], ["setpriv", setprivPath], ["runtime", options.runtimePath], ["node", nodePath]] as const) {
    if (!existsSync(p)) throw new Error(`process driver: ${what} not found at ${p} (Debian: apt-get install bubblewrap util-linux)`);
  }
  if (!setprivPath.startsWith("/usr/")) throw new Error("process driver: setpriv must live under /usr (it runs inside the sandbox)");
  const layout = detectCgroupLayout(options.cgroupFsRoot);
  const cgroups = new CgroupManager(layout, options.cgroupRoot ?? "stratus");
  const socketsRoot = join(options.stateDir, "sockets");
  const live = new Map<string, LiveInstance>();
  /** Ids of discovery runs in progress (reconcile must not take their cgroups). */
  const discovering = new Set<string>();
  let closed = false;
  let rules: Promise<void> | null = null;
  const ensureRules = (): Promise<void> => {
    rules ??= installOutboundRules({ uid, chain: options.iptablesChain, blockedCidrs: options.blockedCidrs }).catch((err: unknown) => {
      rules = null;
      throw err;
    });
    return rules;
  };
  log.debug({ cgroupMode: layout.mode, cgroupRoot: cgroups.rootName }, "process driver created");

  async function start(spec: InstanceSpec, startOptions: StartOptions = {}): Promise<Instance> {
    if (closed) throw new StratusError("SHUTTING_DOWN");
    if (!/^[a-z0-9-]{1,64}$/.test(spec.instanceId)) throw new StratusError("INSTANCE_START_FAILED", `invalid instance id "${spec.instanceId}"`);
    if (live.has(spec.instanceId)) throw new StratusError("INSTANCE_START_FAILED", `instance ${spec.instanceId} already exists`);
    const t0 = performance.now();
    const socketDir = join(socketsRoot, spec.instanceId);
    const socketPath = join(socketDir, SANDBOX_PATHS.socketName);
    if (Buffer.byteLength(socketPath) > 107) throw new StratusError("INSTANCE_START_FAILED", `socket path too long (${socketPath}): use a shorter stateDir`);
    const onLog = startOptions.onLog ?? (() => {});
    if (spec.config.network === "outbound") {
      try {
        await ensureRules();
      } catch (err) {
        throw new StratusError("INSTANCE_START_FAILED", `cannot install the network rules: ${(err as Error).message}`, { cause: err });
      }
    }
    const limits = { memoryMb: spec.config.memory, pidsMax, cpuWeight: Math.min(10_000, Math.max(1, Math.round((spec.config.memory / 256) * 100))) };
    let cgroup: InstanceCgroup;
    try {
      mkdirSync(socketsRoot, { recursive: true, mode: 0o700 });
      rmSync(socketDir, { recursive: true, force: true });
      mkdirSync(socketDir, { mode: 0o700 });
      chownSync(socketDir, uid, gid);
      cgroup = cgroups.create(spec.instanceId, limits);
    } catch (err) {
      rmSync(socketDir, { recursive: true, force: true });
      throw new StratusError("INSTANCE_START_FAILED", `cannot prepare the sandbox: ${(err as Error).message}`, { cause: err });
    }

    const [file, args] = buildSandboxCommand({
      bwrapPath, setprivPath, nodePath, runtimePath: options.runtimePath, artifactDir: spec.artifactDir, socketDir,
      uid, gid, procsFiles: cgroup.procsFiles, network: spec.config.network, tmpSizeBytes,
      // Node inside the sandbox cannot see the cgroup limit (no /sys): size the heap to ~75 % of it so V8
      // fails with a clear heap OOM before the kernel kills it.
      nodeArgs: [`--max-old-space-size=${Math.max(16, Math.floor(spec.config.memory * 0.75))}`],
    });
    // A clean, explicit environment: never the platform's own (it leaks secrets, and NODE_EXTRA_CA_CERTS
    // alone doubles start time, see MEASURED.md). Protocol variables win over the function's env.
    const env: Record<string, string> = {
      PATH: "/usr/local/bin:/usr/bin:/bin",
      HOME: "/tmp",
      LANG: "C.UTF-8",
      ...spec.env,
      [ENV.socket]: `${SANDBOX_PATHS.socketDir}/${SANDBOX_PATHS.socketName}`,
      [ENV.entry]: `${SANDBOX_PATHS.code}/${spec.entry}`,
      [ENV.exportName]: spec.exportName,
      [ENV.functionName]: spec.functionName,
      [ENV.config]: JSON.stringify(spec.config),
      [ENV.instanceId]: spec.instanceId,
    };
    const child = spawn(file, args, { env, stdio: ["ignore", "pipe", "pipe"] });

    let ready = false;
    const tail: string[] = [];
    let resolveReady!: () => void;
    const readyPromise = new Promise<void>((r) => (resolveReady = r));
    const handle = (raw: string, stream: "stdout" | "stderr"): void => {
      const parsed = parseOutputLine(raw, stream, spec.instanceId);
      if (parsed.kind === "ready") {
        ready = true;
        resolveReady();
        return;
      }
      if (!ready) {
        tail.push(parsed.line.message);
        if (tail.length > TAIL_LINES) tail.shift();
      }
      try {
        onLog(parsed.line);
      } catch (err) {
        log.warn({ err }, "onLog threw");
      }
    };
    if (child.stdout) splitLines(child.stdout, (l) => handle(l, "stdout"));
    if (child.stderr) splitLines(child.stderr, (l) => handle(l, "stderr"));

    const state: LiveInstance["state"] = { reason: null, exitedValue: null };
    const inst: LiveInstance = {
      id: spec.instanceId, cgroup, child, state,
      exited: (async (): Promise<InstanceExit> => {
        let code: number | null = null;
        let signal: string | null = null;
        if (child.exitCode === null && child.signalCode === null) {
          const [c, s] = (await once(child, "exit").catch(() => [null, null])) as [number | null, NodeJS.Signals | null];
          code = c;
          signal = s;
        } else {
          code = child.exitCode;
          signal = child.signalCode;
        }
        // Whatever is left (forks that left the sandbox's process tree) dies with the cgroup.
        const oom = cgroup.oomKills();
        await cgroup.killAll().catch((err: unknown) => log.error({ err, instanceId: spec.instanceId }, "killing the cgroup failed"));
        if (child.stdout && !child.stdout.readableEnded) await Promise.race([once(child, "close"), new Promise((r) => setTimeout(r, 1000))]);
        await cgroup.remove().catch((err: unknown) => log.error({ err, instanceId: spec.instanceId }, "removing the cgroup failed"));
        rmSync(socketDir, { recursive: true, force: true });
        live.delete(spec.instanceId);
        let reason = state.reason;
        if (reason === null) {
          // bwrap reports a signalled child as 128 + signal: 137 = SIGKILL (the OOM killer when oom > 0),
          // 134 = SIGABRT (V8's "heap out of memory"), 139 = SIGSEGV (heap OOM seen when node is PID 1).
          if (oom > 0 || code === 134 || code === 139) reason = "out-of-memory";
          else if (!ready && code === EXIT.loadFailed) reason = "load-failed";
          else reason = "crashed";
        }
        const value: InstanceExit = { reason, exitCode: code, signal };
        state.exitedValue = value;
        log.debug({ instanceId: spec.instanceId, ...value }, "instance exited");
        return value;
      })(),
      kill: () => {
        void cgroup.killAll().catch(() => {});
        child.kill("SIGKILL");
      },
    };
    live.set(spec.instanceId, inst);

    const destroy = async (): Promise<InstanceExit> => {
      if (inst.state.exitedValue) return inst.state.exitedValue;
      inst.state.reason ??= "destroyed";
      inst.kill();
      return inst.exited;
    };

    let timer: NodeJS.Timeout | undefined;
    const abort = (): void => void destroy();
    try {
      startOptions.signal?.throwIfAborted();
      startOptions.signal?.addEventListener("abort", abort, { once: true });
      const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), startTimeoutMs)));
      const outcome = await Promise.race([readyPromise.then(() => "ready" as const), inst.exited.then(() => "exited" as const), timeout]);
      if (outcome !== "ready") {
        if (outcome === "timeout") inst.state.reason = "load-failed";
        const exit = await destroy();
        const output = tail.join("\n").trim();
        if (startOptions.signal?.aborted) throw new StratusError("INSTANCE_START_FAILED", "start aborted", { cause: startOptions.signal.reason });
        if (outcome === "timeout") throw new StratusError("FUNCTION_LOAD_FAILED", `the function did not become ready within ${startTimeoutMs} ms${output ? `:\n${output}` : ""}`);
        if (exit.reason === "load-failed") throw new StratusError("FUNCTION_LOAD_FAILED", output || undefined);
        if (exit.reason === "out-of-memory") throw new StratusError("FUNCTION_LOAD_FAILED", `the function ran out of memory while loading${output ? `:\n${output}` : ""}`);
        throw new StratusError("INSTANCE_START_FAILED", `the instance exited before it was ready (exit code ${exit.exitCode ?? exit.signal})${output ? `:\n${output}` : ""}`);
      }
    } catch (err) {
      if (!inst.state.exitedValue) await destroy();
      if ((err as { code?: unknown }).code === "ABORT_ERR") throw new StratusError("INSTANCE_START_FAILED", "start aborted", { cause: err });
      throw err;
    } finally {
      clearTimeout(timer);
      startOptions.signal?.removeEventListener("abort", abort);
    }
    const startMs = performance.now() - t0;
    log.debug({ instanceId: spec.instanceId, startMs }, "instance ready");

    let closing: Promise<InstanceExit> | null = null;
    const close = (graceMs = spec.config.timeout): Promise<InstanceExit> => {
      if (inst.state.exitedValue) return Promise.resolve(inst.state.exitedValue);
      closing ??= (async () => {
        inst.state.reason ??= "closed";
        const pid = findRuntimePid(cgroup);
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
      endpoint: { socketPath },
      startMs,
      exited: inst.exited,
      close,
      destroy,
      stats: async (): Promise<InstanceStats | null> => {
        if (inst.state.exitedValue) return null;
        const m = cgroup.memory();
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
    try {
      mkdirSync(socketsRoot, { recursive: true, mode: 0o700 });
      mkdirSync(socketDir, { mode: 0o700 });
      chownSync(socketDir, uid, gid);
      cgroup = cgroups.create(id, { memoryMb: DISCOVERY_MEMORY_MB, pidsMax, cpuWeight: 100 });
    } catch (err) {
      rmSync(socketDir, { recursive: true, force: true });
      throw new StratusError("INSTANCE_START_FAILED", `cannot prepare the discovery sandbox: ${(err as Error).message}`, { cause: err });
    }
    const [file, args] = buildSandboxCommand({
      bwrapPath, setprivPath, nodePath, runtimePath: options.runtimePath, artifactDir: spec.artifactDir, socketDir,
      uid, gid, procsFiles: cgroup.procsFiles, network: "none", tmpSizeBytes,
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
    return { removed: removed.size };
  }

  async function close(): Promise<void> {
    closed = true;
    await Promise.all([...live.values()].map(async (inst) => {
      inst.state.reason ??= "destroyed";
      inst.kill();
      await inst.exited;
    }));
  }

  return {
    name: "process",
    cgroupMode: layout.mode,
    cgroups,
    start,
    prepare: async () => ({}),
    discover,
    reconcile,
    close,
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
