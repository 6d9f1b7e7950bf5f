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
 * slot's code dir and sends the one SpecializeMessage over the runtime's one-shot Unix socket in the
 * slot's socket dir (bind-mounted at /run/stratus), then learns of READY from a file the runtime creates
 * there (inotify) — neither goes through dockerd — instead of creating a container from the version's image.
 *
 * The lifecycle (start, the pool, stops, close) is the shared core (../driver-core.ts); this file is its
 * backend: launching containers, attaching code to a slot, signals, exit information, stats.
 *
 * Invariants: the core's `live` holds every instance whose container may still exist; an entry leaves
 * it only after its container was removed (or the engine said it is gone).
 * `slotIds` holds every pool slot (idle or specialised) from before its container is created until its
 * container, socket dir and code dir are gone.
 */
import { existsSync, readFileSync, renameSync, statSync, unlinkSync, watch, type FSWatcher } from "node:fs";
import { connect, type Socket } from "node:net";
import { chown, mkdir, mkdtemp, rm } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import Docker from "dockerode";
import { StratusError } from "../../shared/errors";
import { DISCOVERY_PREFIX, ENV } from "../../shared/protocol";
import { createSilentLogger } from "../../shared/logger";
import type { DiscoveredFunction, DiscoverySpec, InstanceLogLine, InstanceSpec, InstanceStats, SandboxDriver } from "../driver";
import { IMAGE_PATHS, IMAGE_USER, ensureBaseImage } from "./base-image";
import { checkKsmForDriver, ksmLauncherBeside } from "../ksm/ksm";
import { createRuntimeCodeCaches, type RuntimeCodeCaches } from "../code-cache";
import { engineClient, engineStatus, followProgress, isNotFound } from "./engine";
import { LABELS, buildFunctionImage, copyReadable, type RegistryAuth } from "./function-image";
import { ensureFunctionNetwork } from "./network";
import { parseOutputLine } from "../output-lines";
import { findDiscoveryPayload, parseDiscoveryRun } from "../discovery-output";
import type { PrewarmStatus } from "../prewarm-pool";
import {
  createDriverCore, DISCOVERY_MAX_OPEN_FILES, DISCOVERY_MEMORY_MB, INSTANCE_MALLOC_TUNABLES, instanceNodeArgs, signalOfExitCode, specEnv,
  type Launched, type LaunchIo, type LaunchMode, type PoolKey, type RawExit, type SandboxBackend, type SandboxDriverOptions,
} from "../driver-core";
import { createSlotMounts, isMountPoint } from "../slot-mounts";
import { startMountHelper, type MountHelper } from "../mount-helper";

const MiB = 1024 * 1024;
/** How long a removal that found another one in progress (409) waits for the container to be gone. */
const REMOVAL_WAIT_MS = 15_000;
/** Socket file name inside the instance's socket directory. */
export const SOCKET_NAME = "http.sock";
/** A slot's one-shot specialisation socket in its socket dir (the runtime removes it at the first connection). */
export const SPECIALIZE_SOCKET_NAME = "specialize.sock";
/** The file a specialised slot's runtime creates in its socket dir once it listens (SpecializeMessage.readyFile). */
export const READY_FILE_NAME = "ready";

/**
 * Options of the Docker driver: the shared ones (SandboxDriverOptions, every one optional here:
 * `runtimePath` default `dist/runtime.cjs` under the cwd, put in the base image; `stateDir` default
 * `<tmpdir>/stratus-docker`, the host dir of the instances' socket dirs `<stateDir>/<id>`; pidsMax
 * default 256; tmpSizeMb 64; startTimeoutMs 30 000; blockedCidrs rejected in DOCKER-USER) and the
 * Docker driver's own.
 */
export interface DockerDriverOptions extends SandboxDriverOptions {
  /** The engine connection (default: /var/run/docker.sock or DOCKER_HOST, without keep-alive). */
  readonly docker?: Docker;
  /** Registry `host:port` images are pushed to and pulled from (default `127.0.0.1:5000`). */
  readonly registry?: string;
  /** Registry credentials (default: none, for a registry on loopback). */
  readonly registryAuth?: RegistryAuth;
  /** Value of the `stratus.node` label; reconcile() only touches containers with this node's label (default hostname). */
  readonly nodeId?: string;
  /** Docker network of function containers (default `stratus-functions`, bridge `stratus-fn0`). */
  readonly network?: { readonly name?: string; readonly bridge?: string };
  /** CPU shares per 1024 MB of memory limit (default 1024: CPU weight follows memory, as on Lambda). */
  readonly cpuSharesPerGb?: number;
  /**
   * Host dir of the slots' code mounts (`slots/<slot>`, a shared mount, and `stage/<slot>`); default
   * `<stateDir>/.pool`. Needs root and /usr/bin/perl (the mount helper), like the process driver's pool.
   */
  readonly poolRoot?: string;
  /**
   * How a pool slot gets its SpecializeMessage and announces READY (docs/prewarm.md, "Where the time goes"):
   * `socket` (default) — the runtime's one-shot Unix socket in the slot's socket dir, READY from a file
   * there (inotify), neither through dockerd; `attach` — round two's channel, the container's stdin through
   * dockerd's attach stream (StdinOnce) and READY on stdout through it: kept as the benchmarks' same-run
   * baseline (bench/cold-start.ts).
   */
  readonly specializeChannel?: SpecializeChannel;
  /**
   * Instances and pool slots start mergeable by KSM (platform setting `docker.ksm`, ../ksm/ksm.ts): the
   * base image then carries the launcher (`stratus-ksm-exec` beside `runtimePath`) as the containers'
   * entrypoint before node. Creating the driver fails without the launcher or kernel KSM; ksmd's host-wide
   * settings are never changed (a warning when it is off). Default false.
   */
  readonly ksm?: boolean;
  /**
   * Pool slots compile the runtime from a V8 code cache (../code-cache.ts): the base image ships
   * `runtime-boot.cjs` (beside `runtimePath`), slots start it with the cache of their Node flags bound
   * read-only (produced once per driver run in `<poolRoot>/code-cache`; open() produces the pool's).
   * Fresh starts run the runtime directly: their function image may come from an older base image.
   * Default true.
   */
  readonly codeCache?: boolean;
}

/** The channels a Docker pool slot can be specialised over (DockerDriverOptions.specializeChannel). */
export const SPECIALIZE_CHANNELS = ["socket", "attach"] as const;
export type SpecializeChannel = (typeof SPECIALIZE_CHANNELS)[number];

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

/** One container (the backend's handle): a fresh instance, or a pre-warm slot (then specialised for life). */
interface Box {
  readonly container: Docker.Container;
  /** The slot id of a pool slot (its code dir, its label), null for a fresh start. */
  readonly slotId: string | null;
  /** Host socket dir (a slot's is renamed to the instance id at specialisation). */
  socketDir: string;
  /** What the container is named after: the instance id, or the slot id until specialised. */
  name: string;
  /** The core's side of the container's output (and of READY learned from the ready file). */
  readonly io: LaunchIo;
  /** `attach` channel only: a slot's hijacked attach stream, its write side the container's stdin (StdinOnce). */
  readonly stdin: NodeJS.WritableStream | null;
  /** A specialising slot's watch on its socket dir for the ready file (closed at READY or exit). */
  readyWatch: FSWatcher | null;
  /** `socket` channel: a specialising slot's connection to the runtime's one-shot socket, until the message is ended. */
  channel: Socket | null;
  /** Runs once READY was seen from the ready file (the container's rename, off the cold path). */
  afterReady: (() => void) | null;
  /** The attach stream ended: the container stopped or the engine went away. */
  gone: boolean;
  /**
   * The container's rename to the instance's name while the engine does it: its removal waits for it.
   * A rename the engine runs beside a removal can write the container back into the engine's list
   * after the removal took it out, a "removing" entry that stays until dockerd restarts.
   */
  renaming: Promise<void> | null;
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
  // No keep-alive (a new connection to the engine's Unix socket costs well under 1 ms), and an agent that
  // docker-modem's per-request util.inspect does not walk (EngineAgent).
  const docker = options.docker ?? engineClient();
  const registry = options.registry ?? "127.0.0.1:5000";
  const runtimeFile = options.runtimePath ?? join(process.cwd(), "dist", "runtime.cjs");
  const socketRoot = options.stateDir ?? join(tmpdir(), "stratus-docker");
  const nodeId = options.nodeId ?? hostname();
  const networkOptions = {
    name: options.network?.name ?? "stratus-functions",
    bridge: options.network?.bridge ?? "stratus-fn0",
    denyCidrs: options.blockedCidrs ?? [],
  };
  const pidsMax = options.pidsMax ?? 256;
  const tmpSizeMb = options.tmpSizeMb ?? 64;
  const cpuSharesPerGb = options.cpuSharesPerGb ?? 1024;
  const log = options.logger ?? createSilentLogger();
  const channel: SpecializeChannel = options.specializeChannel ?? "socket";
  const ksmLauncher = options.ksm === true ? ksmLauncherBeside(runtimeFile) : undefined;
  if (ksmLauncher !== undefined) checkKsmForDriver(ksmLauncher, "docker.ksm", log);
  /** The containers' entrypoint: node, or the KSM launcher then node. */
  const instanceEntrypoint = ksmLauncher === undefined ? [IMAGE_PATHS.node] : [IMAGE_PATHS.ksmExec, IMAGE_PATHS.node];
  const poolRoot = options.poolRoot ?? join(socketRoot, ".pool");
  const slotMounts = createSlotMounts(poolRoot, log);
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

  const pulls = new Map<string, Promise<void>>();
  /** Image references of fresh starts between their ensureImage and their container's creation (pruning skips them). */
  const imagesStarting = new Map<string, number>();
  let network: Promise<string> | null = null;

  /** The runtime's boot loader and code caches for pool slots (option `codeCache`). */
  const bootFile = join(dirname(runtimeFile), "runtime-boot.cjs");
  const codeCaches: RuntimeCodeCaches | null = options.codeCache !== false && basename(runtimeFile) === "runtime.cjs" && existsSync(bootFile)
    ? createRuntimeCodeCaches({ nodePath: options.nodePath ?? process.execPath, bootPath: bootFile, cacheDir: join(poolRoot, "code-cache"), logger: log })
    : null;
  /** A slot's command and its cache's bind: the loader with the cache of its flags when one is there. */
  const slotCommand = (memoryMb: number): { cmd: string[]; binds: string[] } => {
    const args = instanceNodeArgs(memoryMb);
    if (codeCaches === null) return { cmd: [...args, IMAGE_PATHS.runtime], binds: [] };
    const cache = codeCaches.get(args);
    return { cmd: [...args, IMAGE_PATHS.boot], binds: cache === undefined ? [] : [`${cache}:${IMAGE_PATHS.codeCache}:ro`] };
  };
  const baseImage = (onLog?: (line: string) => void) =>
    ensureBaseImage(docker, { runtimeFile, ...(ksmLauncher === undefined ? {} : { ksmLauncher }), ...(codeCaches === null ? {} : { bootFile }), ...(options.nodePath === undefined ? {} : { nodeBinary: options.nodePath }), ...(onLog === undefined ? {} : { onLog }) });

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
      PidsLimit: pidsMax,
      ReadonlyRootfs: true,
      Tmpfs: { "/tmp": `rw,nosuid,nodev,noexec,mode=1777,size=${tmpSizeMb}m` },
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
      // 404: already gone; 409: removal already in progress (another caller's).
      if (isNotFound(err)) return;
      if (engineStatus(err) !== 409) throw err;
    }
    // The engine may still list the container as "removing" (another caller's removal, or ours racing a
    // rename): wait, bounded, until it is not listed at all, so a caller told "removed" never finds it.
    for (const until = Date.now() + REMOVAL_WAIT_MS; Date.now() < until;) {
      const listed = await docker.listContainers({ all: true, filters: { id: [container.id] } });
      if (listed.length === 0) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Follows a started-or-about-to-start container's output and exit (from its attach stream, opened
   * before start so no line is missed).
   */
  function watchContainer(container: Docker.Container, raw: NodeJS.ReadableStream, socketDir: string, slotId: string | null, stdin: NodeJS.WritableStream | null, io: LaunchIo): Launched<Box> {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    docker.modem.demuxStream(raw, stdout, stderr);
    const endBoth = (): void => {
      stdout.end();
      stderr.end();
    };
    raw.on("end", endBoth);
    raw.on("error", endBoth);
    // The attach stream is what gets paused: demuxStream writes the two copies without backpressure.
    io.output(stdout, stderr, [raw as unknown as Readable]);
    const box: Box = { container, slotId, socketDir, name: io.id, io, stdin, readyWatch: null, channel: null, afterReady: null, gone: false, renaming: null };
    const streamEnded = new Promise<void>((r) => {
      raw.once("end", r);
      raw.once("close", r);
      raw.once("error", () => r());
    });
    const exit = streamEnded.then(async (): Promise<RawExit> => {
      box.gone = true;
      box.readyWatch?.close();
      box.readyWatch = null;
      box.afterReady = null;
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
      await box.renaming;
      await removeContainer(container).catch(() => undefined);
      await rm(box.socketDir, { recursive: true, force: true }).catch(() => undefined);
      if (box.slotId !== null) {
        await slotMounts.remove(box.slotId);
        slotIds.delete(box.slotId);
      }
      return { exitCode, signal: signalOfExitCode(exitCode), oomKilled };
    });
    return { handle: box, exit };
  }

  /**
   * Attaches to a created container, then starts it: attached before start so no output (nor the READY
   * line) is missed; the stream ends when the container stops or the engine goes away, which is how the
   * driver learns of an exit. Output only (no container gets a stdin; a slot's channel is a Unix socket),
   * except a slot on the `attach` channel: its attach also takes stdin (hijacked: the one-shot channel).
   */
  async function attachAndStart(container: Docker.Container, socketDir: string, slotId: string | null, io: LaunchIo): Promise<Launched<Box>> {
    const withStdin = slotId !== null && channel === "attach";
    const raw = (await container.attach({ stream: true, stdin: withStdin, stdout: true, stderr: true, ...(withStdin ? { hijack: true } : {}) })) as NodeJS.ReadWriteStream;
    const launched = watchContainer(container, raw, socketDir, slotId, withStdin ? raw : null, io);
    try {
      await container.start();
    } catch (err) {
      await removeContainer(container).catch(() => undefined);
      throw err;
    }
    return launched;
  }

  /**
   * Specialises a slot without dockerd, in two steps around the artifact mount (the core's begin/commit):
   * `openChannel` watches the slot's socket dir (inotify; the container writes the same tmpfs inode) for
   * the ready file, connects to the runtime's one-shot socket and writes the message without its newline,
   * so the runtime's wake-up, accept and read overlap the mount; `commitChannel` then writes the newline
   * and ends the connection. The runtime stopped listening at this connection, so nothing can connect
   * again, and it acts on the message only at the newline, which is written only once the mount succeeded
   * (a failed mount destroys the slot with the connection still open). A failure (the slot died) kills
   * the container: the start fails like any exit before READY.
   */
  function openChannel(box: Box, message: string): void {
    const checkReady = (): void => {
      // The dir is renamed after the instance while the watch runs (the watch follows the inode).
      const readyPath = join(box.socketDir, READY_FILE_NAME);
      let line: string;
      try {
        line = readFileSync(readyPath, "utf8");
      } catch {
        return; // not there yet (the event was for another name, or for the .part file)
      }
      box.readyWatch?.close();
      box.readyWatch = null;
      try {
        unlinkSync(readyPath);
      } catch {
        // the dir is going away
      }
      box.io.ready(line);
      const after = box.afterReady;
      box.afterReady = null;
      // After the instance's first request has had its turn.
      if (after !== null) setTimeout(after, 200).unref();
    };
    try {
      box.readyWatch = watch(box.socketDir, { persistent: false }, (_event, name) => {
        if (name === null || name === READY_FILE_NAME) checkReady();
      });
      box.readyWatch.on("error", () => {
        box.readyWatch?.close();
        box.readyWatch = null; // the READY line on stdout still arrives
      });
    } catch (err) {
      log.warn({ err, instanceId: box.name }, "watching for the ready file failed; waiting for READY on stdout");
    }
    const sock = connect(join(box.socketDir, SPECIALIZE_SOCKET_NAME));
    box.channel = sock;
    sock.once("error", (err) => {
      log.warn({ err, instanceId: box.name }, "sending the specialisation message failed");
      void killBox(box, "SIGKILL");
    });
    sock.on("data", () => sock.destroy()); // the runtime sends nothing: anything it would is ignored
    sock.once("close", () => sock.destroy());
    sock.write(message);
  }

  /** Ends the message `openChannel` wrote: newline-ended, as the process driver's (the runtime acts at the newline). */
  function commitChannel(box: Box): void {
    const sock = box.channel;
    box.channel = null;
    sock?.end("\n");
  }

  async function killBox(box: Box, sig: "SIGTERM" | "SIGKILL"): Promise<void> {
    try {
      await box.container.kill({ signal: sig });
    } catch {
      // 404/409: not running any more; transport error: the engine is down, the stream will end.
    }
  }

  /**
   * A pre-warm slot for `key`: a container from the base image with the hardening and limits of a
   * fresh start, its code dir an empty per-slot mount point (rslave: the artifact mounted there later
   * propagates in), the runtime in generic mode listening for its one SpecializeMessage on
   * `/run/stratus/specialize.sock` (SPECIALIZE_SOCKET_NAME in its socket dir).
   */
  async function launchSlot(key: PoolKey, io: LaunchIo): Promise<Launched<Box>> {
    const slotId = io.id;
    const socketDir = join(socketRoot, slotId);
    slotIds.add(slotId);
    let container: Docker.Container | null = null;
    try {
      const image = await baseImage();
      const networkMode = key.network === "none" ? "none" : await functionNetwork();
      await ensureSocketRoot();
      const codeDir = await slotMounts.create(slotId);
      await mkdir(socketDir, { recursive: true, mode: 0o700 });
      await chown(socketDir, 65534, 65534);
      const command = slotCommand(key.memoryMb);
      container = await docker.createContainer({
        name: containerName(slotId),
        Image: image,
        Entrypoint: instanceEntrypoint,
        Cmd: command.cmd,
        // Minimal: the function's env arrives with the message, never on the container's config.
        Env: [
          `GLIBC_TUNABLES=${INSTANCE_MALLOC_TUNABLES}`, `${ENV.socket}=${IMAGE_PATHS.socketDir}/${SOCKET_NAME}`, `${ENV.generic}=1`,
          channel === "socket" ? `${ENV.specializeSocket}=${IMAGE_PATHS.socketDir}/${SPECIALIZE_SOCKET_NAME}` : `${ENV.specializeFd}=0`,
        ],
        User: IMAGE_USER,
        WorkingDir: IMAGE_PATHS.functionDir,
        Labels: { [LABELS.slot]: slotId, [LABELS.node]: nodeId },
        AttachStdin: channel === "attach",
        AttachStdout: true,
        AttachStderr: true,
        Tty: false,
        // `socket`: no stdin at all (it is /dev/null): the one-shot channel is a Unix socket in the socket
        // dir, which skips dockerd's attach stream (docs/prewarm.md, "Where the time goes").
        // `attach`: stdin is open for the first attach only, and closed for good once that attach ends
        // its input (StdinOnce); the driver holds that attach.
        OpenStdin: channel === "attach",
        StdinOnce: channel === "attach",
        HostConfig: hardenedHostConfig(key.memoryMb, [`${socketDir}:${IMAGE_PATHS.socketDir}:rw`, `${codeDir}:${IMAGE_PATHS.functionDir}:ro,rslave`, ...command.binds], networkMode, key.maxOpenFiles),
      });
      return await attachAndStart(container, socketDir, slotId, io);
    } catch (err) {
      if (container !== null) await removeContainer(container).catch(() => undefined);
      await rm(socketDir, { recursive: true, force: true });
      await slotMounts.remove(slotId);
      slotIds.delete(slotId);
      throw err;
    }
  }

  /** A fresh container from the version's image (no slot for these limits, or the pool is off). */
  async function launchFresh(spec: InstanceSpec, io: LaunchIo, signal: AbortSignal | undefined): Promise<Launched<Box>> {
    const image = spec.image!;
    const socketDir = join(socketRoot, spec.instanceId);
    let container: Docker.Container | null = null;
    let startingImage = false;
    const doneStarting = (): void => {
      if (!startingImage) return;
      startingImage = false;
      const n = (imagesStarting.get(image) ?? 1) - 1;
      if (n === 0) imagesStarting.delete(image);
      else imagesStarting.set(image, n);
    };
    try {
      imagesStarting.set(image, (imagesStarting.get(image) ?? 0) + 1);
      startingImage = true;
      await ensureImage(image);
      const networkMode = spec.config.network === "none" ? "none" : await functionNetwork();
      await ensureSocketRoot();
      await mkdir(socketDir, { recursive: true, mode: 0o700 });
      // The function's user creates the socket; only it and root (the gateway) may enter the directory.
      await chown(socketDir, 65534, 65534);
      // The same malloc settings as the process driver; a function's own env may override them.
      const env: Record<string, string> = { GLIBC_TUNABLES: INSTANCE_MALLOC_TUNABLES, ...spec.env, [ENV.socket]: `${IMAGE_PATHS.socketDir}/${SOCKET_NAME}`, ...specEnv(spec, IMAGE_PATHS.functionDir) };
      signal?.throwIfAborted();
      const create = () => docker.createContainer({
        name: containerName(spec.instanceId),
        Image: image,
        Entrypoint: instanceEntrypoint,
        Cmd: [...instanceNodeArgs(spec.config.memory), IMAGE_PATHS.runtime],
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
      return await attachAndStart(container, socketDir, null, io);
    } catch (err) {
      if (container !== null) await removeContainer(container).catch(() => undefined);
      await rm(socketDir, { recursive: true, force: true });
      if (err instanceof StratusError || signal?.aborted) throw err; // the core says "start aborted"
      throw new StratusError("INSTANCE_START_FAILED", `Could not start ${spec.functionName}@${spec.version}: ${(err as Error).message}`, { cause: err });
    } finally {
      doneStarting();
    }
  }

  const backend: SandboxBackend<Box> = {
    name: "docker",
    defaultStartTimeoutMs: 30_000,
    pool: true,
    codeDir: IMAGE_PATHS.functionDir,
    socketPathOf: (id) => join(socketRoot, id, SOCKET_NAME),
    socketPath: (box) => join(box.socketDir, SOCKET_NAME),
    check(spec) {
      if (spec.image === undefined) throw new StratusError("INSTANCE_START_FAILED", `No image for ${spec.functionName}@${spec.version}: call prepare() first`);
    },
    // A slot's user (nobody) reads the artifact in place; an artifact it cannot read takes the image path.
    // So does an instance whose specialisation socket path would exceed sun_path (107 bytes; it is longer
    // than the http.sock path the core checks).
    poolable: (spec) => othersCanRead(spec.artifactDir) && (channel === "attach" || Buffer.byteLength(join(socketRoot, spec.instanceId, SPECIALIZE_SOCKET_NAME)) <= 107),
    launch: (mode: LaunchMode, io, signal) => (mode.kind === "fresh" ? launchFresh(mode.spec, io, signal) : launchSlot(mode.key, io)),
    /**
     * Mounts the artifact read-only on the slot's code dir (propagates into the container) and names its
     * socket dir after the instance: the container's bind follows the directory, not its name, so the
     * gateway and operators see the instance's own path, as after a fresh start.
     */
    async attach(box, spec) {
      await slotMounts.attach(box.slotId!, spec.artifactDir);
      const socketDir = join(socketRoot, spec.instanceId);
      // Synchronous: between the mount and the message's newline, a thread-pool round trip (fs.promises)
      // would add a wake-up of the gateway's loop to the cold path for a rename of microseconds.
      renameSync(box.socketDir, socketDir);
      box.socketDir = socketDir;
      box.name = spec.instanceId;
    },
    ...(channel === "socket" ? { readyFile: `${IMAGE_PATHS.socketDir}/${READY_FILE_NAME}` } : {}),
    send(box, message) {
      // The attach channel (the socket channel uses begin/commit).
      if (box.stdin !== null) box.stdin.end(message);
      else {
        openChannel(box, message);
        commitChannel(box);
      }
    },
    // Socket channel: the message goes in before the mount, its newline after (openChannel).
    ...(channel === "socket" ? { begin: openChannel, commit: commitChannel } : {}),
    afterSend(box) {
      // Off the cold path: the container gets the instance's name, as after a fresh start (reconcile
      // finds the instance's socket dir by it). On the socket channel, once the instance is ready (or
      // gone): the engine's work for a rename competed with the module load for the CPU (initMs ~2 →
      // ~17 ms in a probe on a loaded node), which the slower attach channel used to hide.
      // Not once the container is gone (its removal is under way), and never beside its removal (Box.renaming).
      const rename = (): void => {
        if (box.gone || box.renaming !== null) return;
        box.renaming = box.container.rename({ name: containerName(box.name) }).catch(() => undefined);
      };
      if (box.stdin !== null) rename();
      else {
        box.afterReady = rename;
        // READY may come from stdout only (the watch failed): rename within 2 s regardless.
        setTimeout(() => {
          if (box.afterReady === null || box.gone) return;
          box.afterReady = null;
          rename();
        }, 2000).unref();
      }
    },
    signal: (box, sig) => void killBox(box, sig),
    stats: (box) => stats(box.container, () => box.gone),
    alive: (box) => !box.gone,
    async release() {
      // Leave no mount behind on the host: the socket root must stay removable.
      await slotMounts.close();
      const helper = await socketRootMount?.catch(() => null);
      socketRootMount = null;
      if (helper || isMountPoint(socketRoot)) {
        const h = helper ?? startMountHelper();
        await h.unmount(socketRoot).catch((err: unknown) => log.warn({ err, dir: socketRoot }, "unmounting the socket root failed"));
        h.close();
      }
    },
  };

  const core = createDriverCore(backend, { ...options, logger: log });
  /** Whether `id` is a live instance or slot of this driver (reconcile leaves its container alone). */
  const isLive = (id: string): boolean => core.live.has(id);

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
      HostConfig: hardenedHostConfig(DISCOVERY_MEMORY_MB, [`${fnDir}:${IMAGE_PATHS.functionDir}:ro`], "none", DISCOVERY_MAX_OPEN_FILES),
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
      if (instanceId !== undefined && isLive(instanceId)) continue;
      if (slotId !== undefined && (slotIds.has(slotId) || isLive(slotId))) continue;
      await removeContainer(docker.getContainer(c.Id));
      if (instanceId !== undefined) await rm(join(socketRoot, instanceId), { recursive: true, force: true });
      if (slotId !== undefined) {
        // A specialised slot's socket dir carries the instance id, which its container's name tells
        // once renamed (a node killed between the message and the rename leaves that one dir behind).
        const named = /^\/stratus-([a-z0-9-]{1,64})$/.exec(c.Names[0] ?? "")?.[1];
        for (const id of [slotId, named]) if (id !== undefined && !isLive(id)) await rm(join(socketRoot, id), { recursive: true, force: true });
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
      // An untagged (dangling) image is listed with the placeholders `<none>:<none>` / `<none>@<none>`,
      // which the engine refuses as references (400 invalid reference format): it goes by its id.
      const tags = (image.RepoTags ?? []).filter((t) => !t.startsWith("<none>"));
      const refs = [image.Id, ...(image.RepoDigests ?? []).filter((d) => !d.startsWith("<none>")), ...tags];
      // Checked per image, just before removing it: a start may have begun since the list was taken.
      if (refs.some((r) => keepSet.has(r) || imagesStarting.has(r))) continue;
      try {
        // Untag first: an image reused for several versions has several tags, and removing it by id
        // without force is refused while more than one tag points at it.
        for (const tag of tags) {
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

  return {
    name: "docker", registry, prewarm: core.prewarm, start: core.start,
    // The pool's slots boot once the cache of their flags is there (or could not be made); it lives in the
    // pool root (by default on the socket root's tmpfs, so it is made once per driver run).
    open: () => core.open(codeCaches === null ? undefined : () => ensureSocketRoot().then(() => codeCaches.ensure(instanceNodeArgs(options.prewarmMemoryMb ?? 256)))),
    close: async () => {
      // A producer run writes into the pool root, which closing unmounts: let it finish first (bounded).
      await codeCaches?.close();
      await core.close();
    },
    prepare, discover, reconcile, pruneImages, ensureImage,
  };
}
