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
import { connect as netConnect, type Socket } from "node:net";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import type { Writable } from "node:stream";
import { basename, dirname, join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import type { DiscoveredFunction, DiscoverySpec, InstanceSpec, SandboxDriver } from "../driver";
import { StratusError } from "../../shared/errors";
import { ENV } from "../../shared/protocol";
import { createSilentLogger } from "../../shared/logger";
import { parseDiscoveryRun } from "../discovery-output";
import {
  childExit, childOutputDrained, createDriverCore, DISCOVERY_MAX_OPEN_FILES, DISCOVERY_MEMORY_MB, heapFlagOf, INSTANCE_MALLOC_TUNABLES, instanceNodeArgs, specEnv, watchDiscoveryChild,
  type Launched, type LaunchIo, type LaunchMode, type RawExit, type SandboxBackend, type SandboxDriverOptions,
} from "../driver-core";
import { buildSandboxCommand, SANDBOX_PATHS } from "./bwrap-args";
import { CgroupManager, detectCgroupLayout, type CgroupMode, type InstanceCgroup } from "./cgroups";
import { createSandboxNetworks, type SandboxNetns } from "../../shared/netns";
import { buildSeccompFilter, encodeSeccompFilter } from "./seccomp";
import { createInstanceBoxes, type InstanceBox } from "./instance-box";
import { createSlotMounts } from "../slot-mounts";
import { buildRuntimeSnapshot } from "../runtime-snapshot";
import { createRuntimeCodeCaches, type RuntimeCodeCaches } from "../code-cache";
import type { PrewarmStatus } from "../prewarm-pool";
import { checkKsmForDriver, ksmLauncherBeside } from "../ksm/ksm";

/** Default uid/gid of instances. Pick one no other software on the host uses (instances share it). */
export const DEFAULT_SANDBOX_UID = 60500;

/**
 * Options of createProcessDriver: the shared ones (SandboxDriverOptions; `runtimePath` and `stateDir`
 * are required here) and the process driver's own. Defaults: pidsMax 128, tmpSizeMb 64,
 * startTimeoutMs 10 000.
 */
export interface ProcessDriverOptions extends SandboxDriverOptions {
  readonly runtimePath: string;
  /** Per-node directory: `<stateDir>/sockets/<id>`, slot mounts, instance boxes, the seccomp program. */
  readonly stateDir: string;
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
  /** Prefix of the iptables chains of the outbound policy (default "STRATUS-NET": STRATUS-NET-IN and, per subnet, STRATUS-NET-F<hex>; see ./netns.ts). */
  readonly iptablesChain?: string;
  /**
   * IPv4 subnet carved into one /30 per "outbound" sandbox (its own network namespace, veth, NAT; see
   * ./netns.ts). Default 10.200.0.0/16. Two nodes on one host need disjoint subnets.
   */
  readonly sandboxSubnet?: string;
  readonly bwrapPath?: string;
  readonly setprivPath?: string;
  /**
   * Start instances from a V8 startup snapshot of the runtime (../runtime-snapshot.ts), built with
   * `nodePath` from `runtime-snapshot.cjs` beside `runtimePath` when the first sandbox starts (cached in
   * `<stateDir>/snapshot`). Needs a Node that can build it (24; not 20): when it cannot be built, the
   * driver logs why at warn and starts `runtimePath` as without it (`runtimeSnapshotState()` says which).
   * Default false.
   */
  readonly runtimeSnapshot?: boolean;
  /**
   * Start every instance and pre-warm slot through the KSM launcher (../ksm/ksm.ts): their memory is
   * mergeable by ksmd. Creating the driver fails when the launcher or the kernel's KSM is missing; it
   * never changes ksmd's host-wide settings, and logs a warning when ksmd is not running. Default false.
   */
  readonly ksm?: boolean;
  /** The KSM launcher (default: `stratus-ksm-exec` beside `runtimePath`, where `npm run build` puts it). */
  readonly ksmLauncherPath?: string;
  /**
   * Compile the runtime from a V8 code cache (../code-cache.ts): instances and slots start through
   * `runtime-boot.cjs` beside `runtimePath`, with the cache of their Node flags (one per memory size,
   * produced once per runtime build in `<stateDir>/code-cache`; open() produces the pool's). Ignored
   * with `runtimeSnapshot` on, or when `runtimePath` is not a `runtime.cjs` with the loader beside it.
   * Default true.
   */
  readonly codeCache?: boolean;
}

/** Whether instances start from the runtime's startup snapshot: `off` (not asked for), `pending` (not built yet), `on`, or `failed` (with why; they start the bundle). */
export type RuntimeSnapshotState = { readonly state: "off" | "pending" } | { readonly state: "on"; readonly nodeVersion: string } | { readonly state: "failed"; readonly reason: string };

/** The process driver, plus what tests and operators may inspect. */
export interface ProcessDriver extends SandboxDriver {
  readonly cgroupMode: CgroupMode;
  readonly cgroups: CgroupManager;
  /** The pre-warm pool (inspection for tests and metrics). */
  readonly prewarm: PrewarmStatus;
  /** Whether instances start from the runtime's startup snapshot (option `runtimeSnapshot`). */
  runtimeSnapshotState(): RuntimeSnapshotState;
}

/** One sandbox process (the backend's handle): a fresh instance, or a pre-warm slot. */
interface Sandbox {
  /** Name of the slot it started as (= the instance id for a fresh start); names its box, netns and slot dirs. */
  readonly internalId: string;
  /** Current name of its cgroup and socket dir (the instance id once specialised on cgroup v1). */
  id: string;
  cgroup: InstanceCgroup;
  socketDir: string;
  readonly child: ChildProcess;
  /** The slot's code mount point (`<stateDir>/slots/<id>`), null for a fresh start. */
  readonly slotDir: string | null;
  /** A slot's connection to its instance socket, opened while it waits, until taken (InstanceEndpoint.takeConnection). */
  early: EarlyConnection | null;
}

/**
 * A connection opened to a slot's instance socket while the slot waits (its server
 * listens from its warm-up on, holding requests until it is bound): the gateway's first request then needs
 * no connect of its own after READY. Forgotten when it fails or closes before it is taken.
 */
class EarlyConnection {
  private socket: Socket | null;
  private readonly forget = (): void => this.destroy();
  constructor(path: string) {
    const socket = netConnect(path);
    socket.once("error", this.forget).once("close", this.forget);
    this.socket = socket;
  }
  /** The socket, once (null when it failed or closed): the caller owns it from now on. */
  take(): Socket | null {
    const s = this.socket;
    this.socket = null;
    if (s === null || s.destroyed) return null;
    s.off("error", this.forget).off("close", this.forget);
    return s;
  }
  destroy(): void {
    const s = this.socket;
    this.socket = null;
    s?.destroy();
  }
}

/**
 * Creates the driver; detects the cgroup layout now and fails fast. Nothing starts before open().
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
  for (const [what, p] of [["bwrap", bwrapPath], ["setpriv", setprivPath], ["runtime", options.runtimePath], ["node", nodePath], ["nsenter", "/usr/bin/nsenter"], ["ip", "/usr/sbin/ip"]] as const) {
    if (!existsSync(p)) throw new Error(`process driver: ${what} not found at ${p} (Debian: apt-get install bubblewrap util-linux iproute2)`);
  }
  if (!setprivPath.startsWith("/usr/")) throw new Error("process driver: setpriv must live under /usr (it runs inside the sandbox)");
  const ksmLauncherPath = options.ksm === true ? (options.ksmLauncherPath ?? ksmLauncherBeside(options.runtimePath)) : undefined;
  if (ksmLauncherPath !== undefined) checkKsmForDriver(ksmLauncherPath, "process.ksm", log);
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
  const slotMounts = createSlotMounts(options.stateDir, log);
  /** Per-sandbox noexec tmpfs holding /tmp and the socket dir; `sockets/<id>` is a symlink into it. */
  const boxes = createInstanceBoxes(options.stateDir, log);
  /**
   * The runtime as sandboxes bind it: a copy on a tmpfs, so mountinfo inside does not name its install
   * path — the startup snapshot's blob when `runtimeSnapshot` is on and it could be built, else the bundle.
   */
  let sharedRuntime: Promise<{ path: string; snapshot: boolean }> | null = null;
  let snapshotState: RuntimeSnapshotState = { state: options.runtimeSnapshot === true ? "pending" : "off" };
  const snapshotBlob = async (): Promise<string | null> => {
    if (options.runtimeSnapshot !== true) return null;
    try {
      const snap = await buildRuntimeSnapshot({ nodePath, sourcePath: join(dirname(options.runtimePath), "runtime-snapshot.cjs"), cacheDir: join(options.stateDir, "snapshot") });
      snapshotState = { state: "on", nodeVersion: snap.nodeVersion };
      log.info({ nodeVersion: snap.nodeVersion, reused: snap.reused }, "instances start from the runtime's startup snapshot");
      return snap.blobPath;
    } catch (err) {
      snapshotState = { state: "failed", reason: (err as Error).message };
      log.warn({ err: (err as Error).message, nodePath }, "no runtime startup snapshot: instances start the runtime bundle");
      return null;
    }
  };
  /**
   * The runtime's code caches (option `codeCache`), and the sandboxes' copy of the boot loader. Not with
   * the startup snapshot: a snapshot needs no compiling.
   */
  const bootPath = join(dirname(options.runtimePath), "runtime-boot.cjs");
  const codeCaches: RuntimeCodeCaches | null =
    options.codeCache !== false && options.runtimeSnapshot !== true && basename(options.runtimePath) === "runtime.cjs" && existsSync(bootPath)
      ? createRuntimeCodeCaches({ nodePath, bootPath, cacheDir: join(options.stateDir, "code-cache"), logger: log })
      : null;
  if (codeCaches === null && options.codeCache !== false && options.runtimeSnapshot !== true) log.debug({ bootPath }, "no runtime boot loader beside the runtime: no code cache");
  let sharedBoot: Promise<string> | null = null;
  const sharedCaches = new Map<string, Promise<string>>();
  /** The loader and the cache for `memoryMb` as sandboxes bind them (copies on the shared tmpfs); no cache until it is produced. */
  const bootFiles = async (memoryMb: number): Promise<{ bootPath?: string; codeCachePath?: string }> => {
    if (codeCaches === null) return {};
    try {
      sharedBoot ??= boxes.shareFile(bootPath);
      const boot = await sharedBoot;
      const cache = codeCaches.get(instanceNodeArgs(memoryMb));
      if (cache === undefined) return { bootPath: boot };
      let shared = sharedCaches.get(cache);
      if (shared === undefined) {
        shared = boxes.shareFile(cache);
        sharedCaches.set(cache, shared);
      }
      return { bootPath: boot, codeCachePath: await shared.catch((err: unknown) => {
        sharedCaches.delete(cache);
        throw err;
      }) };
    } catch (err) {
      sharedBoot = null;
      log.warn({ err: (err as Error).message }, "cannot share the runtime boot loader or its code cache: this instance compiles the runtime from source");
      return {};
    }
  };
  const runtimeCopy = (): Promise<{ path: string; snapshot: boolean }> => {
    sharedRuntime ??= snapshotBlob().then(async (blob) => ({ path: await boxes.shareFile(blob ?? options.runtimePath), snapshot: blob !== null })).catch((err: unknown) => {
      sharedRuntime = null;
      throw new StratusError("INSTANCE_START_FAILED", `cannot prepare the runtime copy: ${(err as Error).message}`, { cause: err });
    });
    return sharedRuntime;
  };
  /** Ids of discovery runs in progress (reconcile must not take their cgroups). */
  const discovering = new Set<string>();
  // Namespaces and veths carry a tag of this state dir, so reconcile finds a killed run's and no one else's.
  const networks = createSandboxNetworks({
    subnet: options.sandboxSubnet, tag: createHash("sha256").update(options.stateDir).digest("hex").slice(0, 6),
    blockedCidrs: options.blockedCidrs, chain: options.iptablesChain, logger: log,
  });
  log.debug({ cgroupMode: layout.mode, cgroupRoot: cgroups.rootName }, "process driver created");

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

  /**
   * Everything of a sandbox but its process: socket dir + box, cgroup, (network namespace), the runtime
   * copy. On failure what was made is removed again. `what` names it in errors.
   */
  async function prepareSandbox(id: string, memoryMb: number, network: "outbound" | "none", what: string): Promise<{ socketDir: string; box: InstanceBox; cgroup: InstanceCgroup; netns: SandboxNetns | null; runtimePath: string; snapshot: boolean; undo: () => Promise<void> }> {
    const socketDir = join(socketsRoot, id);
    let netns: SandboxNetns | null = null;
    if (network === "outbound") {
      try {
        await networks.ensureRules();
        netns = await networks.create(id);
      } catch (err) {
        throw new StratusError("INSTANCE_START_FAILED", `cannot set up the sandbox network: ${(err as Error).message}`, { cause: err });
      }
    }
    const undoNet = (): Promise<void> => (netns === null ? Promise.resolve() : networks.remove(id));
    let box: InstanceBox;
    try {
      box = await prepareBox(id, socketDir);
    } catch (err) {
      await undoNet();
      throw new StratusError("INSTANCE_START_FAILED", `cannot prepare the ${what}: ${(err as Error).message}`, { cause: err });
    }
    let cgroup: InstanceCgroup;
    try {
      cgroup = cgroups.create(id, { memoryMb, pidsMax, cpuWeight: Math.min(10_000, Math.max(1, Math.round((memoryMb / 256) * 100))) });
    } catch (err) {
      rmSync(socketDir, { force: true });
      await boxes.remove(id);
      await undoNet();
      throw new StratusError("INSTANCE_START_FAILED", `cannot prepare the ${what}: ${(err as Error).message}`, { cause: err });
    }
    const undo = async (): Promise<void> => {
      rmSync(socketDir, { force: true });
      await boxes.remove(id);
      await undoNet();
      await cgroup.remove().catch(() => undefined);
    };
    const runtime = await runtimeCopy().catch(async (err: unknown) => {
      await undo();
      throw err;
    });
    return { socketDir, box, cgroup, netns, runtimePath: runtime.path, snapshot: runtime.snapshot, undo };
  }

  /**
   * Starts one sandbox process: socket dir, cgroup, bwrap. `fresh` loads the function from the start;
   * `generic` starts a pre-warm slot (code dir = an empty, per-slot mount point, specialisation fd 3).
   */
  async function launch(mode: LaunchMode, io: LaunchIo): Promise<Launched<Sandbox>> {
    const internalId = io.id;
    const limits = mode.kind === "fresh"
      ? { memoryMb: mode.spec.config.memory, network: mode.spec.config.network, maxOpenFiles: mode.spec.config.maxOpenFiles }
      : mode.key;
    const codeDir = mode.kind === "generic" ? await slotMounts.create(internalId) : null;
    let prepared: Awaited<ReturnType<typeof prepareSandbox>>;
    try {
      prepared = await prepareSandbox(internalId, limits.memoryMb, limits.network, "sandbox");
    } catch (err) {
      if (codeDir !== null) await slotMounts.remove(internalId);
      throw err;
    }
    const { socketDir, box, cgroup, netns, runtimePath, snapshot } = prepared;
    // Fresh starts bind the artifact through an overlay in the box: mountinfo names no host path.
    let artifactDir = codeDir!;
    if (mode.kind === "fresh") {
      try {
        artifactDir = await boxes.mountCode(internalId, mode.spec.artifactDir);
      } catch (err) {
        await prepared.undo();
        throw new StratusError("INSTANCE_START_FAILED", `cannot mount the function's code: ${(err as Error).message}`, { cause: err });
      }
    }
    const [file, args] = buildSandboxCommand({
      bwrapPath, setprivPath, nodePath, runtimePath, snapshot, artifactDir, socketDir: box.run, ...(snapshot ? {} : await bootFiles(limits.memoryMb)),
      uid, gid, procsFiles: cgroup.procsFiles, network: limits.network, netnsPath: netns?.path, tmpDir: box.tmp, seccompPath, maxOpenFiles: limits.maxOpenFiles, ksmLauncherPath,
      // Fixed at start: one reason pool slots are keyed by memory.
      nodeArgs: instanceNodeArgs(limits.memoryMb),
    });
    // A clean, explicit environment: never the platform's own (it leaks secrets, and NODE_EXTRA_CA_CERTS
    // alone doubles start time, see MEASURED.md). Protocol variables win over the function's env.
    const base = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8", GLIBC_TUNABLES: INSTANCE_MALLOC_TUNABLES };
    const socketEnv = `${SANDBOX_PATHS.socketDir}/${SANDBOX_PATHS.socketName}`;
    const env: Record<string, string> = mode.kind === "generic"
      ? { ...base, [ENV.socket]: socketEnv, [ENV.generic]: "1" }
      : { ...base, ...mode.spec.env, [ENV.socket]: socketEnv, ...specEnv(mode.spec, SANDBOX_PATHS.code) };
    // Generic slots get fd 3, the one-shot specialisation channel; the driver holds its only other end.
    const child = spawn(file, args, { env, stdio: mode.kind === "generic" ? ["ignore", "pipe", "pipe", "pipe"] : ["ignore", "pipe", "pipe"] });
    const sb: Sandbox = { internalId, id: internalId, cgroup, child, socketDir, slotDir: codeDir, early: null };
    io.output(child.stdout!, child.stderr!);
    // A write to the channel of a slot that died must not become an uncaught error.
    (child.stdio[3] as Writable | null | undefined)?.on("error", () => {});

    const exit = (async (): Promise<RawExit> => {
      const { code, signal } = await childExit(child);
      sb.early?.destroy();
      sb.early = null;
      // Whatever is left (forks that left the sandbox's process tree) dies with the cgroup.
      // bwrap reports a signalled child as 128 + signal: 137 = SIGKILL (the OOM killer when oom > 0).
      const oom = sb.cgroup.oomKills();
      await sb.cgroup.killAll().catch((err: unknown) => log.error({ err, instanceId: sb.id }, "killing the cgroup failed"));
      await childOutputDrained(child);
      await sb.cgroup.remove().catch((err: unknown) => log.error({ err, instanceId: sb.id }, "removing the cgroup failed"));
      rmSync(sb.socketDir, { recursive: true, force: true });
      await boxes.remove(sb.internalId);
      await networks.remove(sb.internalId);
      if (sb.slotDir !== null) await slotMounts.remove(sb.internalId);
      return { exitCode: code, signal, oomKilled: oom > 0 };
    })();
    return { handle: sb, exit };
  }

  const kill = (sb: Sandbox): void => {
    void sb.cgroup.killAll().catch(() => {});
    sb.child.kill("SIGKILL");
  };

  /**
   * Names a specialised slot's cgroups and socket dir after the instance, as a fresh start does (operators
   * and reconcile see one name), while the runtime loads the code: nothing in the sandbox sees these names,
   * and the endpoint is read only at READY. cgroup v1 allows renaming within the parent; v2 does not (the
   * slot name then stays, as it does when a rename fails here).
   */
  function renameToInstance(sb: Sandbox, spec: InstanceSpec): void {
    if (cgroups.layout.mode !== "v1") return;
    const dirs = cgroups.rootDirs();
    const done: string[] = [];
    try {
      for (const d of dirs) {
        renameSync(join(d, sb.internalId), join(d, spec.instanceId));
        done.push(d);
      }
      renameSync(sb.socketDir, join(socketsRoot, spec.instanceId));
      sb.id = spec.instanceId;
      sb.cgroup = cgroups.open(spec.instanceId);
      sb.socketDir = join(socketsRoot, spec.instanceId);
    } catch (err) {
      for (const d of done) {
        try {
          renameSync(join(d, spec.instanceId), join(d, sb.internalId));
        } catch {
          // left under the instance's name: reconcile removes it once the instance is gone
        }
      }
      log.warn({ err, instanceId: spec.instanceId, slot: sb.internalId }, "renaming a specialised slot failed; it keeps its slot name");
    }
  }

  const backend: SandboxBackend<Sandbox> = {
    name: "process",
    defaultStartTimeoutMs: 10_000,
    pool: true,
    codeDir: SANDBOX_PATHS.code,
    socketPathOf: (id) => join(socketsRoot, id, SANDBOX_PATHS.socketName),
    socketPath: (sb) => join(sb.socketDir, SANDBOX_PATHS.socketName),
    launch,
    /** Mounts the artifact read-only onto the slot's /fn (the mount propagates into the sandbox). */
    async attach(sb, spec) {
      await slotMounts.attach(sb.internalId, spec.artifactDir);
    },
    /**
     * Opens the gateway's first connection to the instance's socket while the slot waits (EarlyConnection:
     * the slot's server listens, holding requests, since its warm-up; the runtime accepts it now, off any
     * start's path). A runtime that listens only after loading refuses it: the gateway then connects as
     * after a fresh start.
     */
    slotReady(sb) {
      if (sb.child.exitCode === null) sb.early = new EarlyConnection(join(sb.socketDir, SANDBOX_PATHS.socketName));
    },
    // A newline ends the message: the runtime acts on it without waiting for the channel's EOF.
    send: (sb, message) => void (sb.child.stdio[3] as Writable).end(`${message}\n`),
    // The message goes in before the mount, its newline after: the runtime's wake-up overlaps the mount.
    begin: (sb, message) => void (sb.child.stdio[3] as Writable).write(message),
    commit: (sb) => void (sb.child.stdio[3] as Writable).end("\n"),
    /** Names the slot after the instance (renameToInstance) while the runtime loads the code. */
    afterSend(sb, spec) {
      renameToInstance(sb, spec);
    },
    takeConnection(sb) {
      const early = sb.early;
      sb.early = null;
      return early?.take() ?? null;
    },
    signal(sb, signal) {
      if (signal === "SIGKILL") return kill(sb);
      const pid = findRuntimePid(sb.cgroup);
      if (pid === null) return kill(sb);
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        kill(sb);
      }
    },
    stats: async (sb) => {
      const m = sb.cgroup.memory();
      return m ? { memoryBytes: m.currentBytes, peakMemoryBytes: m.peakBytes } : null;
    },
    alive: (sb) => sb.child.exitCode === null && sb.child.signalCode === null,
    async release() {
      // Leave no mount behind on the host: the state dir must stay removable.
      await slotMounts.close();
      await boxes.close();
      // Nor the subnet's iptables rules (kept while another process has sandboxes on the subnet).
      await networks.close();
      // Nor an empty cgroup root (a discovery still running keeps it: rmdir refuses a busy cgroup).
      if (discovering.size === 0) cgroups.removeRoot();
    },
  };

  const core = createDriverCore(backend, { ...options, logger: log });

  /**
   * Runs the runtime in discovery mode inside the same sandbox and limits as an instance, with no
   * network and 256 MB, and parses its DISCOVERY_PREFIX line (src/sandbox/discovery-output.ts): a
   * function the runtime reports with an error is passed through with it.
   */
  async function discover(spec: DiscoverySpec): Promise<DiscoveredFunction[]> {
    core.assertOpen();
    const id = `discover-${randomBytes(6).toString("hex")}`;
    discovering.add(id);
    try {
      return await runDiscovery(id, spec);
    } finally {
      discovering.delete(id);
    }
  }

  async function runDiscovery(id: string, spec: DiscoverySpec): Promise<DiscoveredFunction[]> {
    const { socketDir, box, cgroup, runtimePath, snapshot, undo } = await prepareSandbox(id, DISCOVERY_MEMORY_MB, "none", "discovery sandbox");
    let artifactDir: string;
    try {
      artifactDir = await boxes.mountCode(id, spec.artifactDir);
    } catch (err) {
      await undo();
      throw new StratusError("INSTANCE_START_FAILED", `cannot mount the code to discover: ${(err as Error).message}`, { cause: err });
    }
    const [file, args] = buildSandboxCommand({
      bwrapPath, setprivPath, nodePath, runtimePath, snapshot, artifactDir, socketDir: box.run,
      uid, gid, procsFiles: cgroup.procsFiles, network: "none", tmpDir: box.tmp, seccompPath, maxOpenFiles: DISCOVERY_MAX_OPEN_FILES,
      nodeArgs: [heapFlagOf(DISCOVERY_MEMORY_MB)],
    });
    const env = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8", [ENV.discover]: "1", [ENV.entry]: `${SANDBOX_PATHS.code}/${spec.entry}` };
    const child = spawn(file, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let run: Awaited<ReturnType<typeof watchDiscoveryChild>> | null = null;
    let code: number | null = null;
    try {
      run = await watchDiscoveryChild(child, spec.timeoutMs, () => void cgroup.killAll().catch(() => {}));
      code = run.code;
    } finally {
      const oom = cgroup.oomKills();
      await cgroup.killAll().catch(() => {});
      await cgroup.remove().catch((err: unknown) => log.error({ err, id }, "removing the discovery cgroup failed"));
      rmSync(socketDir, { recursive: true, force: true });
      await boxes.remove(id);
      if (oom > 0) code = 137;
    }
    if (run.timedOut) throw new StratusError("FUNCTION_LOAD_FAILED", `loading the module took longer than ${spec.timeoutMs} ms`);
    return parseDiscoveryRun({ payload: run.payload, exitCode: code, output: run.output, memoryMb: DISCOVERY_MEMORY_MB });
  }

  async function reconcile(): Promise<{ removed: number }> {
    const { live } = core;
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
      if (owned.has(id)) continue;
      await slotMounts.remove(id);
    }
    // Empty cgroup roots of other data dirs or killed runs (`stratus-<hash>` next to ours).
    const gone = cgroups.removeEmptySiblings(leftoverRootPrefix);
    if (gone.length > 0) log.info({ dirs: gone }, "reconcile: removed empty cgroup roots");
    return { removed: removed.size };
  }

  return {
    name: "process",
    cgroupMode: layout.mode,
    cgroups,
    prewarm: core.prewarm,
    runtimeSnapshotState: () => snapshotState,
    start: core.start,
    // Starts are allowed at once; the pool's slots boot once the cache of their flags is there (produced
    // once per runtime build; a restart finds it in the state dir) or could not be made (they compile from source).
    open: () => core.open(codeCaches === null ? undefined : () => codeCaches.ensure(instanceNodeArgs(options.prewarmMemoryMb ?? 256))),
    prepare: async () => ({}),
    discover,
    reconcile,
    async close() {
      await codeCaches?.close();
      await core.close();
    },
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
