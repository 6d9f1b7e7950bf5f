/**
 * The Docker sandbox driver: one hardened container per instance, from the function version's image
 * in a registry (built and pushed by `prepare()`), talked to through the Engine API (dockerode).
 *
 * Every container: read-only root fs, a size-capped tmpfs /tmp, user nobody, all capabilities
 * dropped, no-new-privileges, memory limit without swap, CPU shares, a pids limit, tini as PID 1,
 * no Docker socket and no host mount but the instance's own socket directory (rw at /run/stratus)
 * (and, for a pool slot, its read-only code dir), on the functions network (see network.ts) or with no
 * network at all. The runtime listens on /run/stratus/http.sock; the gateway reaches it at
 * `<socketRoot>/<instanceId>/http.sock` on the host, exactly as with the process driver.
 *
 * Pre-warm pool (option `prewarm`, docs/prewarm.md): slots are containers of the base image running the
 * runtime in generic mode, with the same host config; `start()` mounts the artifact read-only onto a
 * slot's code dir and sends the one SpecializeMessage on its stdin (StdinOnce), instead of creating a
 * container from the version's image.
 *
 * Invariants: `instances` holds every instance whose container may still exist; an entry leaves the
 * map only after its container was removed (or the engine said it is gone) and `exited` resolved.
 * `slotIds` holds every pool slot (idle or specialised) from before its container is created until its
 * container, socket dir and code dir are gone.
 */
import { randomBytes } from "node:crypto";
import { statSync } from "node:fs";
import { chown, mkdir, mkdtemp, rename, rm } from "node:fs/promises";
import { Agent } from "node:http";
import { availableParallelism, constants as osConstants, hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import Docker from "dockerode";
import { StratusError, isStratusError } from "../../shared/errors";
import { DISCOVERY_PREFIX, ENV, EXIT, GENERIC_READY_LINE, type SpecializeMessage } from "../../shared/protocol";
import { createSilentLogger, type Logger } from "../../shared/logger";
import type {
  DiscoveredFunction,
  DiscoverySpec,
  ExitReason,
  Instance,
  InstanceExit,
  InstanceLogLine,
  InstanceSpec,
  InstanceStats,
  SandboxDriver,
  StartOptions,
} from "../driver";
import { IMAGE_PATHS, IMAGE_USER, ensureBaseImage } from "./base-image";
import { engineStatus, followProgress, isNotFound } from "./engine";
import { LABELS, buildFunctionImage, copyReadable, type RegistryAuth } from "./function-image";
import { ensureFunctionNetwork } from "./network";
import { OUTPUT_RATE_DEFAULTS, OutputLimiter, outputDroppedLine, parseOutputLine, type OutputRateLimits } from "../output-lines";
import { findDiscoveryPayload, parseDiscoveryRun } from "../discovery-output";
import { PrewarmPool, type PrewarmStatus } from "../prewarm-pool";
import { createStartGate, untilAborted } from "../start-gate";
import { createSlotMounts, isMountPoint } from "../slot-mounts";
import { startMountHelper, type MountHelper } from "../mount-helper";

const MiB = 1024 * 1024;
/** Memory limit of a discovery run, MB (as the process driver). */
const DISCOVERY_MEMORY_MB = 256;
/** Socket file name inside the instance's socket directory. */
export const SOCKET_NAME = "http.sock";

/** Options of the Docker driver. Every field has a default; units in the names. */
export interface DockerDriverOptions {
  /** The engine connection (default: /var/run/docker.sock or DOCKER_HOST, without keep-alive). */
  readonly docker?: Docker;
  /** Registry `host:port` images are pushed to and pulled from (default `127.0.0.1:5000`). */
  readonly registry?: string;
  /** Registry credentials (default: none, for a registry on loopback). */
  readonly registryAuth?: RegistryAuth;
  /** The bundled runtime put in the base image (default `dist/runtime.cjs` under the cwd). */
  readonly runtimeFile?: string;
  /** Node binary put in the base image (default `process.execPath`). */
  readonly nodeBinary?: string;
  /** Host directory of the instances' socket directories (default `<tmpdir>/stratus-docker`). Keep it short: socket paths max 107 bytes. */
  readonly socketRoot?: string;
  /** Value of the `stratus.node` label; reconcile() only touches containers with this node's label (default hostname). */
  readonly nodeId?: string;
  /** Docker network of function containers (default `stratus-functions`, bridge `stratus-fn0`). */
  readonly network?: { readonly name?: string; readonly bridge?: string; readonly denyCidrs?: readonly string[] };
  /** Max processes/threads per container (default 256: Node alone uses ~11 threads). */
  readonly pidsLimit?: number;
  /** Size of the /tmp tmpfs, MB (default 64). It counts against the memory limit. */
  readonly tmpfsMb?: number;
  /** CPU shares per 1024 MB of memory limit (default 1024: CPU weight follows memory, as on Lambda). */
  readonly cpuSharesPerGb?: number;
  /** Longest wait from create to READY before the start fails (default 30 000 ms). */
  readonly startTimeoutMs?: number;
  /**
   * Output rate per container, stdout + stderr (default 1 MiB/s and 1000 lines/s, the platform config's
   * `observe.instanceOutput*`): past it the driver stops reading the attach stream (the engine then
   * blocks the container's writes) and drops, with a marker line.
   */
  readonly outputLimits?: OutputRateLimits;
  readonly logger?: Logger;
  /**
   * Pre-warm pool: idle generic containers (base image, no code) kept for the default limits (memory
   * `prewarmMemoryMb`, network "outbound"); 0 disables it. Default 0 here; the platform config's `prewarm`
   * is what a node runs with. Other limits get slots only from recent demand. See docs/prewarm.md.
   */
  readonly prewarm?: number;
  /** Most idle slots per limits key (default 4 × prewarm, at most 32). */
  readonly prewarmMax?: number;
  /** Memory size, MB, of the default pool (default 256, the function config default). */
  readonly prewarmMemoryMb?: number;
  /**
   * Host dir of the slots' code mounts (`slots/<slot>`, a shared mount, and `stage/<slot>`); default
   * `<socketRoot>/.pool`. Needs root and /usr/bin/perl (the mount helper), like the process driver's pool.
   */
  readonly poolRoot?: string;
  /**
   * Container boots (fresh starts and slot creations) at the same time (default: one per core, at least
   * 2). Further boots wait in FIFO order; the wait does not count against startTimeoutMs. A create +
   * start is mostly the engine's CPU: a burst started all at once finishes every boot late.
   */
  readonly maxConcurrentStarts?: number;
}

/** Extra operations of the Docker driver beyond the contract. */
export interface DockerDriver extends SandboxDriver {
  /** The resolved registry address. */
  readonly registry: string;
  /** As SandboxDriver.prepare; the image is always set: `<registry>/stratus/<name>@sha256:…`. */
  prepare(spec: InstanceSpec, options?: { onLog?: (line: string) => void }): Promise<{ image: string }>;
  /**
   * Removes Stratus function images on this engine not referenced by `keep` (digest references
   * `repo@sha256:…`, tags or image ids), and stale base images. Images in use by a container are kept.
   * Resolves with how many images were removed.
   */
  pruneImages(keep: readonly string[]): Promise<{ removed: number }>;
  /** Pulls an image reference (by digest) unless the engine has it. Concurrent calls share one pull. */
  ensureImage(image: string): Promise<void>;
  /** The pre-warm pool (inspection for tests and metrics). */
  readonly prewarm: PrewarmStatus;
}

/**
 * One container and what the driver knows of it: a fresh instance, or a pre-warm slot (then
 * specialised into an instance, for life).
 */
interface Box {
  readonly container: Docker.Container;
  /** The slot id of a pool slot (its code dir, its label), null for a fresh start. */
  readonly slotId: string | null;
  /** The instance id (the slot id until specialised). */
  id: string;
  /** Host socket dir (a slot's is renamed to the instance id at specialisation). */
  socketDir: string;
  /** A slot's hijacked attach stream: its write side is the container's stdin, the one-shot channel. */
  readonly stdin: NodeJS.WritableStream | null;
  /** False while a slot waits for its message (its GENERIC_READY_LINE is expected then). */
  specialised: boolean;
  onLog: ((line: InstanceLogLine) => void) | undefined;
  ready: boolean;
  /** Module load time the runtime reported on its READY line, ms. */
  initMs: number | null;
  /** Last output lines before READY, to explain a failed start. */
  readonly tail: string[];
  readonly readyPromise: Promise<void>;
  readonly genericPromise: Promise<void>;
  exited: Promise<InstanceExit>;
  /** Why the driver stops it (null: it ends on its own). */
  stopping: "close" | "destroy" | null;
  /** The output budget of this container (reads its attach stream). */
  readonly limiter: OutputLimiter;
  /** The attach stream ended: the container stopped or the engine went away. */
  gone: boolean;
}

interface Tracked {
  readonly container: Docker.Container;
  readonly destroy: () => Promise<InstanceExit>;
}

const SIGNAL_NAMES = new Map<number, string>(Object.entries(osConstants.signals).map(([name, n]) => [n, name]));

/** Heap limit of an instance, MB: ~75 % of its memory, so V8 fails with a clear heap OOM before the kernel kills it. */
function heapMbOf(memoryMb: number): number {
  return Math.max(16, Math.floor(memoryMb * 0.75));
}

/** Whether others (the containers' user, nobody) may list and read `dir`; false when it cannot be read. */
function othersCanRead(dir: string): boolean {
  try {
    return (statSync(dir).mode & 0o005) === 0o005;
  } catch {
    return false;
  }
}

/** Container names need `[a-zA-Z0-9][a-zA-Z0-9_.-]`; instance ids are `[a-z0-9-]`. */
function containerName(instanceId: string): string {
  return `stratus-${instanceId}`;
}

/**
 * Creates a Docker driver. Nothing touches the engine until the first call.
 * The services it needs (dockerd, a registry) are started by scripts/services.sh.
 */
export function createDockerDriver(options: DockerDriverOptions = {}): DockerDriver {
  // No keep-alive: Node 20's global agent keeps sockets, and after an engine restart the first call
  // on a kept socket fails with EPIPE. A new connection to the engine's Unix socket costs well under 1 ms.
  const docker = options.docker ?? new Docker({ agent: new Agent({ keepAlive: false }) } as Docker.DockerOptions);
  const registry = options.registry ?? "127.0.0.1:5000";
  const runtimeFile = options.runtimeFile ?? join(process.cwd(), "dist", "runtime.cjs");
  const socketRoot = options.socketRoot ?? join(tmpdir(), "stratus-docker");
  const nodeId = options.nodeId ?? hostname();
  const networkOptions = {
    name: options.network?.name ?? "stratus-functions",
    bridge: options.network?.bridge ?? "stratus-fn0",
    denyCidrs: options.network?.denyCidrs ?? [],
  };
  const pidsLimit = options.pidsLimit ?? 256;
  const tmpfsMb = options.tmpfsMb ?? 64;
  const cpuSharesPerGb = options.cpuSharesPerGb ?? 1024;
  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  const outputLimits = options.outputLimits ?? OUTPUT_RATE_DEFAULTS;
  const bootGate = createStartGate(options.maxConcurrentStarts ?? Math.max(2, availableParallelism()));
  const log = options.logger ?? createSilentLogger();
  const slotMounts = createSlotMounts(options.poolRoot ?? join(socketRoot, ".pool"), log);
  /**
   * The socket root is a tmpfs mounted noexec, nosuid, nodev (once, by the mount helper): Docker's bind
   * options have no noexec, but a bind keeps its source mount's flags, so a socket dir bound from here
   * is noexec inside the container too (a function cannot write a binary there and run it).
   * 64 MiB shared by every socket dir of this driver; the pages count against the writer's memory cgroup.
   */
  let socketRootMount: Promise<MountHelper> | null = null;
  const ensureSocketRoot = (): Promise<MountHelper> => {
    socketRootMount ??= (async () => {
      const helper = startMountHelper();
      await mkdir(socketRoot, { recursive: true, mode: 0o700 });
      if (!isMountPoint(socketRoot)) await helper.mountTmpfs(socketRoot, "size=65536k,mode=0700");
      return helper;
    })();
    socketRootMount.catch(() => (socketRootMount = null));
    return socketRootMount;
  };
  /** Ids of live pool slots, idle or specialised (reconcile must leave their containers alone). */
  const slotIds = new Set<string>();
  const auth = options.registryAuth === undefined
    ? undefined
    : { username: options.registryAuth.username, password: options.registryAuth.password, serveraddress: options.registryAuth.serveraddress ?? registry };

  const instances = new Map<string, Tracked>();
  const pulls = new Map<string, Promise<void>>();
  /** Image references of fresh starts between their ensureImage and their container's creation (pruning skips them). */
  const imagesStarting = new Map<string, number>();
  let network: Promise<string> | null = null;
  let closed = false;

  const baseImage = (onLog?: (line: string) => void) =>
    ensureBaseImage(docker, { runtimeFile, ...(options.nodeBinary === undefined ? {} : { nodeBinary: options.nodeBinary }), ...(onLog === undefined ? {} : { onLog }) });

  function functionNetwork(): Promise<string> {
    network ??= ensureFunctionNetwork(docker, networkOptions).catch((err: unknown) => {
      network = null; // retry on the next start: the engine may have been down
      throw err;
    });
    return network;
  }

  async function ensureImage(image: string): Promise<void> {
    try {
      await docker.getImage(image).inspect();
      return;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    let pending = pulls.get(image);
    if (pending === undefined) {
      pending = (async () => {
        const stream = await docker.pull(image, auth === undefined ? {} : { authconfig: auth });
        await followProgress(stream);
      })().finally(() => pulls.delete(image));
      pulls.set(image, pending);
    }
    await pending;
  }

  /** Hardening shared by instances and discovery runs. */
  function hardenedHostConfig(memoryMb: number, binds: string[], networkMode: string, maxOpenFiles: number): Docker.HostConfig {
    return {
      // RLIMIT_NOFILE, soft = hard: the function cannot raise it (the function config's maxOpenFiles).
      Ulimits: [{ Name: "nofile", Soft: maxOpenFiles, Hard: maxOpenFiles }],
      Memory: memoryMb * MiB,
      MemorySwap: memoryMb * MiB, // equal to Memory: no swap
      CpuShares: Math.max(2, Math.round((memoryMb / 1024) * cpuSharesPerGb)),
      PidsLimit: pidsLimit,
      ReadonlyRootfs: true,
      Tmpfs: { "/tmp": `rw,nosuid,nodev,noexec,mode=1777,size=${tmpfsMb}m` },
      CapDrop: ["ALL"],
      SecurityOpt: ["no-new-privileges"],
      Binds: binds,
      NetworkMode: networkMode,
      // tini as PID 1: signals reach node with their default meaning, and a V8 abort exits 134
      // instead of 139 (MEASURED.md).
      Init: true,
      IpcMode: "private",
      // Output is read through attach; the engine keeps only a small copy for `docker logs`.
      LogConfig: { Type: "json-file", Config: { "max-size": "1m", "max-file": "1" } },
    };
  }

  async function removeContainer(container: Docker.Container): Promise<void> {
    try {
      await container.remove({ force: true, v: true });
    } catch (err) {
      // 404: already gone; 409: removal already in progress (the engine finishes it).
      if (!isNotFound(err) && engineStatus(err) !== 409) throw err;
    }
  }

  /** Everything fixed when a container is created, for a pool slot: memory (limit, heap flag, CPU shares) and network. */
  const poolKeyOf = (memoryMb: number, network: "outbound" | "none", maxOpenFiles: number): string => `${memoryMb}:${network}:${maxOpenFiles}`;

  /**
   * Follows a started-or-about-to-start container's output and exit (from its attach stream, opened
   * before start so no line is missed). `stdin` is the hijacked attach stream of a pool slot: writing the
   * SpecializeMessage and ending it closes the container's stdin for good (StdinOnce).
   */
  function watchContainer(container: Docker.Container, raw: NodeJS.ReadableStream, socketDir: string, id: string, slotId: string | null, stdin: NodeJS.WritableStream | null): Box {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    docker.modem.demuxStream(raw, stdout, stderr);
    raw.on("end", () => {
      stdout.end();
      stderr.end();
    });
    raw.on("error", () => {
      stdout.end();
      stderr.end();
    });
    let resolveReady!: () => void;
    let resolveGeneric!: () => void;
    const box: Box = {
      container, slotId, id, socketDir, stdin, specialised: slotId === null,
      onLog: undefined, ready: false, initMs: null, tail: [],
      readyPromise: new Promise<void>((r) => (resolveReady = r)),
      genericPromise: new Promise<void>((r) => (resolveGeneric = r)),
      exited: null as unknown as Promise<InstanceExit>,
      stopping: null, gone: false,
      // The attach stream is what gets paused: demuxStream writes the two copies without backpressure.
      limiter: new OutputLimiter(outputLimits, (lines, bytes) => emit(outputDroppedLine(box.id, lines, bytes, outputLimits)), { sources: [raw as unknown as Readable] }),
    };
    const remember = (message: string) => {
      box.tail.push(message);
      if (box.tail.length > 20) box.tail.shift();
    };
    const emit = (line: InstanceLogLine) => {
      try {
        box.onLog?.(line);
      } catch {
        // onLog must not throw; a faulty listener must not take the instance down.
      }
    };
    box.limiter.read(stdout, (line) => {
      if (line === GENERIC_READY_LINE && !box.specialised) {
        resolveGeneric();
        return;
      }
      const parsed = parseOutputLine(line, "stdout", box.id);
      if (parsed.kind === "ready") {
        if (!box.ready) {
          box.ready = true;
          box.initMs = parsed.initMs;
          resolveReady();
        }
        return;
      }
      if (!box.ready) remember(parsed.line.message);
      emit(parsed.line);
    });
    box.limiter.read(stderr, (line) => {
      const parsed = parseOutputLine(line, "stderr", box.id);
      if (parsed.kind === "log") {
        if (!box.ready) remember(parsed.line.message);
        emit(parsed.line);
      }
    });

    const streamEnded = new Promise<void>((r) => {
      raw.once("end", r);
      raw.once("close", r);
      raw.once("error", () => r());
    });
    box.exited = streamEnded.then(async () => {
      box.gone = true;
      box.limiter.close();
      let exitCode: number | null = null;
      let oomKilled = false;
      try {
        const waited = (await container.wait()) as { StatusCode?: number };
        exitCode = typeof waited.StatusCode === "number" ? waited.StatusCode : null;
        const info = await container.inspect();
        oomKilled = info.State.OOMKilled;
        exitCode = info.State.ExitCode;
      } catch {
        // The engine is gone or restarting (its containers died with it); reconcile() cleans up later.
      }
      await removeContainer(container).catch(() => undefined);
      await rm(box.socketDir, { recursive: true, force: true }).catch(() => undefined);
      if (box.slotId !== null) {
        await slotMounts.remove(box.slotId);
        slotIds.delete(box.slotId);
      }
      if (instances.get(box.id)?.container === container) instances.delete(box.id);
      let reason: ExitReason;
      if (box.stopping === "destroy") reason = "destroyed";
      // The kernel's OOM kill (OOMKilled) or V8's own heap-limit abort (134; 139 without an init).
      else if (oomKilled || exitCode === 134 || exitCode === 139) reason = "out-of-memory";
      else if (box.stopping === "close") reason = "closed";
      else if (exitCode === EXIT.loadFailed) reason = "load-failed";
      else reason = "crashed";
      // An idle slot that died (killed from outside) is replaced now, not at the next cold start.
      if (!box.specialised && !closed) pool.refill();
      const signalName = exitCode !== null && exitCode > 128 ? (SIGNAL_NAMES.get(exitCode - 128) ?? null) : null;
      return { reason, exitCode, signal: signalName };
    });
    return box;
  }

  async function killBox(box: Box, sig: "SIGTERM" | "SIGKILL"): Promise<void> {
    try {
      await box.container.kill({ signal: sig });
    } catch {
      // 404/409: not running any more; transport error: the engine is down, the stream will end.
    }
  }

  async function destroyBox(box: Box): Promise<InstanceExit> {
    box.stopping = "destroy";
    box.limiter.close(); // read the rest unparsed: the attach stream's end is how the exit is seen
    await killBox(box, "SIGKILL");
    return box.exited;
  }

  /** Waits for READY (or exit, timeout, abort) and returns the instance; on failure the container is gone. */
  async function awaitReady(box: Box, spec: InstanceSpec, t0: number, signal: AbortSignal | undefined): Promise<Instance> {
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const outcome = await Promise.race([
      box.readyPromise.then(() => "ready" as const),
      box.exited.then(() => "exited" as const),
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
    if (outcome === "ready") {
      const close = async (graceMs: number = spec.config.timeout): Promise<InstanceExit> => {
        if (box.stopping !== null) return box.exited;
        box.stopping = "close";
        await killBox(box, "SIGTERM");
        const timer = setTimeout(() => void killBox(box, "SIGKILL"), graceMs);
        try {
          return await box.exited;
        } finally {
          clearTimeout(timer);
        }
      };
      return {
        id: spec.instanceId,
        spec,
        endpoint: { socketPath: join(box.socketDir, SOCKET_NAME) },
        startMs: performance.now() - t0,
        initMs: box.initMs,
        exited: box.exited,
        close,
        destroy: () => destroyBox(box),
        stats: () => stats(box.container, () => box.gone),
      } satisfies Instance;
    }
    // Same outcomes as the process driver: the function's fault is FUNCTION_LOAD_FAILED, the platform's INSTANCE_START_FAILED.
    const exit = outcome === "exited" ? await box.exited : await destroyBox(box);
    const output = box.tail.join("\n").trim().slice(-4000);
    const withOutput = (m: string) => (output === "" ? m : `${m}:\n${output}`);
    if (outcome === "aborted") throw new StratusError("INSTANCE_START_FAILED", "start aborted", { cause: signal?.reason });
    if (outcome === "timeout") throw new StratusError("FUNCTION_LOAD_FAILED", withOutput(`the function did not become ready within ${startTimeoutMs} ms`));
    if (exit.reason === "load-failed") throw new StratusError("FUNCTION_LOAD_FAILED", output === "" ? undefined : output);
    if (exit.reason === "out-of-memory") throw new StratusError("FUNCTION_LOAD_FAILED", withOutput("the function ran out of memory while loading"));
    throw new StratusError("INSTANCE_START_FAILED", withOutput(`the instance exited before it was ready (exit code ${String(exit.exitCode)})`));
  }

  /**
   * Creates a pre-warm slot for `key`: a container from the base image with the hardening and limits of a
   * fresh start, its code dir an empty per-slot mount point (rslave: the artifact mounted there later
   * propagates in), the runtime in generic mode reading its one SpecializeMessage from stdin.
   * Resolves once the runtime printed GENERIC_READY_LINE.
   */
  async function createSlot(key: string): Promise<Box> {
    if (closed) throw new StratusError("SHUTTING_DOWN", "The Docker driver is closed");
    const [memory, network, nofile] = key.split(":") as [string, "outbound" | "none", string];
    const memoryMb = Number(memory);
    const release = await bootGate();
    try {
      return await createSlotGated(memoryMb, network, Number(nofile));
    } finally {
      release();
    }
  }

  async function createSlotGated(memoryMb: number, network: "outbound" | "none", maxOpenFiles: number): Promise<Box> {
    if (closed) throw new StratusError("SHUTTING_DOWN", "The Docker driver is closed");
    const slotId = `pw-${randomBytes(6).toString("hex")}`;
    const socketDir = join(socketRoot, slotId);
    slotIds.add(slotId);
    let container: Docker.Container | null = null;
    let box: Box | null = null;
    try {
      const image = await baseImage();
      const networkMode = network === "none" ? "none" : await functionNetwork();
      await ensureSocketRoot();
      const codeDir = await slotMounts.create(slotId);
      await mkdir(socketDir, { recursive: true, mode: 0o700 });
      await chown(socketDir, 65534, 65534);
      container = await docker.createContainer({
        name: containerName(slotId),
        Image: image,
        Entrypoint: [IMAGE_PATHS.node],
        Cmd: [`--max-old-space-size=${heapMbOf(memoryMb)}`, IMAGE_PATHS.runtime],
        // Minimal: the function's env arrives with the message, never on the container's config.
        Env: [`${ENV.socket}=${IMAGE_PATHS.socketDir}/${SOCKET_NAME}`, `${ENV.generic}=1`, `${ENV.specializeFd}=0`],
        User: IMAGE_USER,
        WorkingDir: IMAGE_PATHS.functionDir,
        Labels: { [LABELS.slot]: slotId, [LABELS.node]: nodeId },
        AttachStdin: true,
        AttachStdout: true,
        AttachStderr: true,
        Tty: false,
        // The one-shot channel: stdin is open for the first attach only, and closed for good once that
        // attach ends its input (StdinOnce); the driver holds that attach.
        OpenStdin: true,
        StdinOnce: true,
        HostConfig: hardenedHostConfig(memoryMb, [`${socketDir}:${IMAGE_PATHS.socketDir}:rw`, `${codeDir}:${IMAGE_PATHS.functionDir}:ro,rslave`], networkMode, maxOpenFiles),
      });
      const raw = (await container.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true })) as NodeJS.ReadWriteStream;
      box = watchContainer(container, raw, socketDir, slotId, slotId, raw);
      await container.start();
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        box.genericPromise.then(() => "ready" as const),
        box.exited.then(() => "exited" as const),
        new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), startTimeoutMs))),
      ]).finally(() => clearTimeout(timer));
      if (outcome !== "ready") throw new Error(`a pre-warm slot did not start (${outcome}): ${box.tail.join("\n")}`);
      return box;
    } catch (err) {
      if (box !== null) await destroyBox(box);
      else {
        if (container !== null) await removeContainer(container).catch(() => undefined);
        await rm(socketDir, { recursive: true, force: true });
        await slotMounts.remove(slotId);
        slotIds.delete(slotId);
      }
      throw err;
    }
  }

  /**
   * Turns an idle slot into `spec`'s instance: mount the artifact read-only on its code dir (propagates
   * into the container), name its socket dir after the instance, send the one SpecializeMessage on stdin
   * and close it. Throws before the message is sent when the slot cannot be used (the caller starts fresh).
   */
  async function specialise(box: Box, spec: InstanceSpec, onLog: ((line: InstanceLogLine) => void) | undefined): Promise<void> {
    await slotMounts.attach(box.slotId!, spec.artifactDir);
    const socketDir = join(socketRoot, spec.instanceId);
    // The container's bind follows the directory, not its name: the gateway and operators see the
    // instance's own path, as after a fresh start.
    await rename(box.socketDir, socketDir);
    box.socketDir = socketDir;
    box.id = spec.instanceId;
    box.specialised = true;
    box.onLog = onLog;
    box.tail.length = 0;
    instances.set(spec.instanceId, { container: box.container, destroy: () => destroyBox(box) });
    const message: SpecializeMessage = {
      entry: `${IMAGE_PATHS.functionDir}/${spec.entry}`,
      exportName: spec.exportName,
      functionName: spec.functionName,
      config: spec.config,
      instanceId: spec.instanceId,
      env: spec.env,
    };
    box.stdin!.end(JSON.stringify(message));
    // Off the cold path: the container gets the instance's name, as after a fresh start (reconcile
    // finds the instance's socket dir by it).
    void box.container.rename({ name: containerName(spec.instanceId) }).catch(() => undefined);
  }

  const counts = { hits: 0, misses: 0 };
  const pool = new PrewarmPool<Box>(
    {
      create: createSlot,
      destroy: async (box) => void (await destroyBox(box)),
      alive: (box) => !box.gone && box.stopping === null,
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

  async function start(spec: InstanceSpec, startOptions: StartOptions = {}): Promise<Instance> {
    const t0 = performance.now();
    if (closed) throw new StratusError("SHUTTING_DOWN", "The Docker driver is closed");
    if (spec.image === undefined) throw new StratusError("INSTANCE_START_FAILED", `No image for ${spec.functionName}@${spec.version}: call prepare() first`);
    if (instances.has(spec.instanceId)) throw new StratusError("INSTANCE_START_FAILED", `Instance ${spec.instanceId} already exists`);
    if (spec.instanceId.startsWith("pw-")) throw new StratusError("INSTANCE_START_FAILED", `invalid instance id "${spec.instanceId}" (pw- names pool slots)`);
    startOptions.signal?.throwIfAborted();
    // A slot's user (nobody) reads the artifact in place; an artifact it cannot read takes the image path.
    const key = poolKeyOf(spec.config.memory, spec.config.network, spec.config.maxOpenFiles);
    const poolable = pool.enabled && othersCanRead(spec.artifactDir);
    let slot = poolable ? pool.take(key) : undefined;
    // No idle slot: a slot already booting is ready sooner than a fresh container would be.
    const booting = poolable && slot === undefined ? pool.claimBooting(key) : undefined;
    if (booting) slot = await untilAborted(booting, startOptions.signal, (late) => void (late && destroyBox(late)));
    try {
      if (slot !== undefined) {
        let specialised = false;
        try {
          await specialise(slot, spec, startOptions.onLog);
          specialised = true;
        } catch (err) {
          // The slot is spoiled (e.g. the mount failed): discard it and start fresh.
          log.warn({ err, instanceId: spec.instanceId }, "specialising a pre-warm slot failed; starting fresh");
          await destroyBox(slot);
        }
        if (specialised) {
          const inst = await awaitReady(slot, spec, t0, startOptions.signal);
          counts.hits++;
          return inst;
        }
      }
      const inst = await startFresh(spec, startOptions, t0);
      counts.misses++;
      return inst;
    } finally {
      // Refill only later (see PrewarmPool.take, refillAfterStart): a booting slot would slow this start
      // and the instance's first requests down.
      pool.refillAfterStart();
    }
  }

  /** A fresh container from the version's image (no slot for these limits, or the pool is off). */
  async function startFresh(spec: InstanceSpec, startOptions: StartOptions, t0: number): Promise<Instance> {
    const image = spec.image!;
    const signal = startOptions.signal;
    const fail = (err: unknown): StratusError =>
      isStratusError(err) ? err : new StratusError("INSTANCE_START_FAILED", `Could not start ${spec.functionName}@${spec.version}: ${(err as Error).message}`, { cause: err });
    const socketDir = join(socketRoot, spec.instanceId);
    let container: Docker.Container | null = null;
    const cleanup = async () => {
      if (container !== null) await removeContainer(container).catch(() => undefined);
      await rm(socketDir, { recursive: true, force: true });
    };

    const release = await bootGate();
    let startingImage = false;
    const doneStarting = (): void => {
      if (!startingImage) return;
      startingImage = false;
      const n = (imagesStarting.get(image) ?? 1) - 1;
      if (n === 0) imagesStarting.delete(image);
      else imagesStarting.set(image, n);
    };
    try {
      if (closed) throw new StratusError("SHUTTING_DOWN", "The Docker driver is closed");
      imagesStarting.set(image, (imagesStarting.get(image) ?? 0) + 1);
      startingImage = true;
      await ensureImage(image);
      const networkMode = spec.config.network === "none" ? "none" : await functionNetwork();
      await ensureSocketRoot();
      await mkdir(socketDir, { recursive: true, mode: 0o700 });
      // The function's user creates the socket; only it and root (the gateway) may enter the directory.
      await chown(socketDir, 65534, 65534);
      const env: Record<string, string> = {
        ...spec.env,
        [ENV.socket]: `${IMAGE_PATHS.socketDir}/${SOCKET_NAME}`,
        [ENV.entry]: `${IMAGE_PATHS.functionDir}/${spec.entry}`,
        [ENV.exportName]: spec.exportName,
        [ENV.functionName]: spec.functionName,
        [ENV.config]: JSON.stringify(spec.config),
        [ENV.instanceId]: spec.instanceId,
      };
      signal?.throwIfAborted();
      const create = () => docker.createContainer({
        name: containerName(spec.instanceId),
        Image: image,
        Entrypoint: [IMAGE_PATHS.node],
        Cmd: [`--max-old-space-size=${heapMbOf(spec.config.memory)}`, IMAGE_PATHS.runtime],
        Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
        User: IMAGE_USER,
        WorkingDir: IMAGE_PATHS.functionDir,
        Labels: { [LABELS.instance]: spec.instanceId, [LABELS.function]: spec.functionName, [LABELS.version]: spec.version, [LABELS.node]: nodeId },
        AttachStdout: true,
        AttachStderr: true,
        Tty: false,
        OpenStdin: false,
        HostConfig: hardenedHostConfig(spec.config.memory, [`${socketDir}:${IMAGE_PATHS.socketDir}:rw`], networkMode, spec.config.maxOpenFiles),
      });
      try {
        container = await create();
      } catch (err) {
        // A prune that had already chosen this image may remove it between ensureImage and create
        // (it skips images of starts in progress, but its check and its removal are not atomic with
        // ours): pull it again, once.
        if (!isNotFound(err)) throw err;
        await ensureImage(image);
        container = await create();
      }
      doneStarting();
      // Attach before start so no output (nor the READY line) is missed; the stream ends when the
      // container stops or the engine goes away, which is how the driver learns of an exit.
      const raw = (await container.attach({ stream: true, stdout: true, stderr: true })) as NodeJS.ReadableStream;
      const box = watchContainer(container, raw, socketDir, spec.instanceId, null, null);
      box.onLog = startOptions.onLog;
      instances.set(spec.instanceId, { container, destroy: () => destroyBox(box) });
      await container.start();
      return await awaitReady(box, spec, t0, signal);
    } catch (err) {
      await cleanup();
      throw fail(err);
    } finally {
      doneStarting();
      release();
    }
  }

  async function stats(container: Docker.Container, isGone: () => boolean): Promise<InstanceStats | null> {
    if (isGone()) return null;
    try {
      // one-shot: no second sample for the CPU delta, so this answers at once instead of after ~1 s.
      const s = await container.stats({ stream: false, "one-shot": true });
      const m = s.memory_stats as { usage?: number; max_usage?: number; stats?: Record<string, number> };
      if (m.usage === undefined) return null; // a stopped container reports empty memory stats
      // As `docker stats`: the page cache that can be dropped is not the function's memory.
      const inactive = m.stats?.total_inactive_file ?? m.stats?.inactive_file ?? 0;
      return { memoryBytes: Math.max(0, m.usage - inactive), peakMemoryBytes: m.max_usage ?? 0 };
    } catch {
      return null;
    }
  }

  async function prepare(spec: InstanceSpec, prepOptions: { onLog?: (line: string) => void } = {}): Promise<{ image: string }> {
    const base = await baseImage(prepOptions.onLog);
    const image = await buildFunctionImage(docker, {
      functionName: spec.functionName,
      version: spec.version,
      artifactDir: spec.artifactDir,
      baseImage: base,
      registry,
      ...(options.registryAuth === undefined ? {} : { auth: options.registryAuth }),
      ...(prepOptions.onLog === undefined ? {} : { onLog: prepOptions.onLog }),
    });
    return { image };
  }

  async function discover(spec: DiscoverySpec): Promise<DiscoveredFunction[]> {
    const base = await baseImage();
    // A readable copy: the container's user is nobody, and the artifact dir may be 0700 root.
    const copyDir = await mkdtemp(join(tmpdir(), "stratus-discover-"));
    const fnDir = join(copyDir, "fn");
    await copyReadable(spec.artifactDir, fnDir);
    const container = await docker.createContainer({
      Image: base,
      Entrypoint: [IMAGE_PATHS.node],
      Cmd: [IMAGE_PATHS.runtime],
      Env: [`${ENV.discover}=1`, `${ENV.entry}=${IMAGE_PATHS.functionDir}/${spec.entry}`],
      User: IMAGE_USER,
      WorkingDir: IMAGE_PATHS.functionDir,
      Labels: { [LABELS.node]: nodeId, "stratus.discovery": "1" },
      HostConfig: hardenedHostConfig(DISCOVERY_MEMORY_MB, [`${fnDir}:${IMAGE_PATHS.functionDir}:ro`], "none", 1024),
    }).catch(async (err: unknown) => {
      await rm(copyDir, { recursive: true, force: true });
      throw new StratusError("INTERNAL", `Could not create the discovery container: ${(err as Error).message}`, { cause: err });
    });
    try {
      const raw = (await container.attach({ stream: true, stdout: true, stderr: true })) as NodeJS.ReadableStream;
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      stdout.on("data", (b: Buffer) => out.push(b));
      stderr.on("data", (b: Buffer) => err.push(b));
      docker.modem.demuxStream(raw, stdout, stderr);
      const ended = new Promise<void>((r) => {
        raw.once("end", r);
        raw.once("close", r);
        raw.once("error", () => r());
      });
      await container.start();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        ended.then(() => false),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(true), spec.timeoutMs))),
      ]).finally(() => clearTimeout(timer));
      if (timedOut) throw new StratusError("FUNCTION_LOAD_FAILED", `Loading ${spec.entry} took longer than ${spec.timeoutMs} ms`);
      const { StatusCode } = (await container.wait()) as { StatusCode: number };
      const stdoutText = Buffer.concat(out).toString("utf8");
      // The other output (the runtime's tagged log lines, stderr) explains a module that failed.
      const output = `${stdoutText}\n${Buffer.concat(err).toString("utf8")}`
        .split("\n")
        .filter((l) => l !== "" && !l.startsWith(DISCOVERY_PREFIX))
        .map((l) => (parseOutputLine(l, "stderr", "discovery") as { line: InstanceLogLine }).line.message)
        .join("\n");
      return parseDiscoveryRun({ payload: findDiscoveryPayload(stdoutText), exitCode: StatusCode, output, memoryMb: DISCOVERY_MEMORY_MB });
    } finally {
      await removeContainer(container).catch(() => undefined);
      await rm(copyDir, { recursive: true, force: true });
    }
  }

  async function reconcile(): Promise<{ removed: number }> {
    const found = await docker.listContainers({ all: true, filters: { label: [`${LABELS.node}=${nodeId}`] } });
    let removed = 0;
    for (const c of found) {
      const instanceId = c.Labels[LABELS.instance];
      const slotId = c.Labels[LABELS.slot];
      if (instanceId !== undefined && instances.has(instanceId)) continue;
      if (slotId !== undefined && slotIds.has(slotId)) continue;
      await removeContainer(docker.getContainer(c.Id));
      if (instanceId !== undefined) await rm(join(socketRoot, instanceId), { recursive: true, force: true });
      if (slotId !== undefined) {
        // A specialised slot's socket dir carries the instance id, which its container's name tells
        // once renamed (a node killed between the message and the rename leaves that one dir behind).
        const named = /^\/stratus-([a-z0-9-]{1,64})$/.exec(c.Names[0] ?? "")?.[1];
        for (const id of [slotId, named]) if (id !== undefined && !instances.has(id)) await rm(join(socketRoot, id), { recursive: true, force: true });
      }
      removed++;
    }
    // Slot code dirs of a killed run: unmount whatever is mounted there, then remove them.
    for (const id of slotMounts.list()) if (!slotIds.has(id)) await slotMounts.remove(id);
    return { removed };
  }

  async function pruneImages(keep: readonly string[]): Promise<{ removed: number }> {
    const keepSet = new Set(keep);
    const images = await docker.listImages({ filters: { label: [LABELS.function] } });
    let removed = 0;
    for (const image of images) {
      const refs = [image.Id, ...(image.RepoDigests ?? []), ...(image.RepoTags ?? [])];
      // Checked per image, just before removing it: a start may have begun since the list was taken.
      if (refs.some((r) => keepSet.has(r) || imagesStarting.has(r))) continue;
      try {
        // Untag first: an image reused for several versions has several tags, and removing it by id
        // without force is refused while more than one tag points at it.
        for (const tag of image.RepoTags ?? []) {
          await docker.getImage(tag).remove({ force: false }).catch((err: unknown) => {
            if (!isNotFound(err) && engineStatus(err) !== 409) throw err;
          });
        }
        await docker.getImage(image.Id).remove({ force: false, noprune: false });
        removed++;
      } catch (err) {
        // 404: removing its last tag removed the image (or someone did meanwhile): it is gone, count it.
        // 409: a container uses it.
        if (isNotFound(err)) removed++;
        else if (engineStatus(err) !== 409) throw err;
      }
    }
    const current = await baseImage();
    for (const image of await docker.listImages({ filters: { label: ["stratus.base"] } })) {
      // Function images inherit the base's label: only images without a function label are bases.
      if (image.Labels?.[LABELS.function] !== undefined) continue;
      if ((image.RepoTags ?? []).includes(current) || keepSet.has(image.Id)) continue;
      try {
        await docker.getImage(image.Id).remove({ force: false });
        removed++;
      } catch (err) {
        if (!isNotFound(err) && engineStatus(err) !== 409) throw err;
      }
    }
    return { removed };
  }

  async function close(): Promise<void> {
    closed = true;
    await pool.close();
    await Promise.all([...instances.values()].map((t) => t.destroy()));
    // Leave no mount behind on the host: the socket root must stay removable.
    await slotMounts.close();
    const helper = await socketRootMount?.catch(() => null);
    socketRootMount = null;
    if (helper || isMountPoint(socketRoot)) {
      const h = helper ?? startMountHelper();
      await h.unmount(socketRoot).catch((err: unknown) => log.warn({ err, dir: socketRoot }, "unmounting the socket root failed"));
      h.close();
    }
  }

  const prewarm: PrewarmStatus = { get enabled() { return pool.enabled; }, idleCount: () => pool.idleCount(), refill: () => pool.refill(), counts: () => ({ ...counts }) };
  return { name: "docker", registry, prewarm, start, prepare, discover, reconcile, close, pruneImages, ensureImage };
}
