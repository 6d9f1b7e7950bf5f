/**
 * The Docker sandbox driver: one hardened container per instance, from the function version's image
 * in a registry (built and pushed by `prepare()`), talked to through the Engine API (dockerode).
 *
 * Every container: read-only root fs, a size-capped tmpfs /tmp, user nobody, all capabilities
 * dropped, no-new-privileges, memory limit without swap, CPU shares, a pids limit, tini as PID 1,
 * no Docker socket and no host mount but the instance's own socket directory (rw at /run/stratus),
 * on the functions network (see network.ts) or with no network at all. The runtime listens on
 * /run/stratus/http.sock; the gateway reaches it at `<socketRoot>/<instanceId>/http.sock` on the host,
 * exactly as with the process driver.
 *
 * Invariants: `instances` holds every instance whose container may still exist; an entry leaves the
 * map only after its container was removed (or the engine said it is gone) and `exited` resolved.
 */
import { chown, mkdir, mkdtemp, rm } from "node:fs/promises";
import { Agent } from "node:http";
import { constants as osConstants, hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import Docker from "dockerode";
import { StratusError, isStratusError } from "../../shared/errors";
import { DISCOVERY_PREFIX, ENV, EXIT } from "../../shared/protocol";
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
import { parseOutputLine, splitLines } from "../output-lines";
import { findDiscoveryPayload, parseDiscoveryRun } from "../discovery-output";

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
}

interface Tracked {
  readonly container: Docker.Container;
  readonly destroy: () => Promise<InstanceExit>;
}

const SIGNAL_NAMES = new Map<number, string>(Object.entries(osConstants.signals).map(([name, n]) => [n, name]));

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
  const auth = options.registryAuth === undefined
    ? undefined
    : { username: options.registryAuth.username, password: options.registryAuth.password, serveraddress: options.registryAuth.serveraddress ?? registry };

  const instances = new Map<string, Tracked>();
  const pulls = new Map<string, Promise<void>>();
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
  function hardenedHostConfig(memoryMb: number, binds: string[], networkMode: string): Docker.HostConfig {
    return {
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

  async function start(spec: InstanceSpec, startOptions: StartOptions = {}): Promise<Instance> {
    const t0 = performance.now();
    if (closed) throw new StratusError("SHUTTING_DOWN", "The Docker driver is closed");
    if (spec.image === undefined) throw new StratusError("INSTANCE_START_FAILED", `No image for ${spec.functionName}@${spec.version}: call prepare() first`);
    if (instances.has(spec.instanceId)) throw new StratusError("INSTANCE_START_FAILED", `Instance ${spec.instanceId} already exists`);
    const signal = startOptions.signal;
    const onLog = startOptions.onLog;
    const fail = (err: unknown): StratusError =>
      isStratusError(err) ? err : new StratusError("INSTANCE_START_FAILED", `Could not start ${spec.functionName}@${spec.version}: ${(err as Error).message}`, { cause: err });
    signal?.throwIfAborted();

    const socketDir = join(socketRoot, spec.instanceId);
    let container: Docker.Container | null = null;
    const cleanup = async () => {
      if (container !== null) await removeContainer(container).catch(() => undefined);
      await rm(socketDir, { recursive: true, force: true });
    };

    try {
      await ensureImage(spec.image);
      const networkMode = spec.config.network === "none" ? "none" : await functionNetwork();
      await mkdir(socketDir, { recursive: true, mode: 0o700 });
      // The function's user creates the socket; only it and root (the gateway) may enter the directory.
      await chown(socketDir, 65534, 65534);
      const heapMb = Math.max(16, Math.floor(spec.config.memory * 0.75));
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
      container = await docker.createContainer({
        name: containerName(spec.instanceId),
        Image: spec.image,
        Entrypoint: [IMAGE_PATHS.node],
        Cmd: [`--max-old-space-size=${heapMb}`, IMAGE_PATHS.runtime],
        Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
        User: IMAGE_USER,
        WorkingDir: IMAGE_PATHS.functionDir,
        Labels: { [LABELS.instance]: spec.instanceId, [LABELS.function]: spec.functionName, [LABELS.version]: spec.version, [LABELS.node]: nodeId },
        AttachStdout: true,
        AttachStderr: true,
        Tty: false,
        OpenStdin: false,
        HostConfig: hardenedHostConfig(spec.config.memory, [`${socketDir}:${IMAGE_PATHS.socketDir}:rw`], networkMode),
      });
      // Attach before start so no output (nor the READY line) is missed; the stream ends when the
      // container stops or the engine goes away, which is how the driver learns of an exit.
      const raw = (await container.attach({ stream: true, stdout: true, stderr: true })) as NodeJS.ReadableStream;
      return await runInstance(spec, container, raw, socketDir, t0, onLog, signal);
    } catch (err) {
      await cleanup();
      throw fail(err);
    }
  }

  function runInstance(
    spec: InstanceSpec,
    container: Docker.Container,
    raw: NodeJS.ReadableStream,
    socketDir: string,
    t0: number,
    onLog: ((line: InstanceLogLine) => void) | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Instance> {
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

    let stopping: "close" | "destroy" | null = null;
    let ready = false;
    let initMs: number | null = null;
    // The last output lines before READY: the message of a failed start.
    const outputTail: string[] = [];
    const remember = (message: string) => {
      outputTail.push(message);
      if (outputTail.length > 20) outputTail.shift();
    };
    let resolveReady!: () => void;
    const readyPromise = new Promise<void>((r) => (resolveReady = r));

    const emit = (line: InstanceLogLine) => {
      try {
        onLog?.(line);
      } catch {
        // onLog must not throw; a faulty listener must not take the instance down.
      }
    };
    splitLines(stdout, (line) => {
      const parsed = parseOutputLine(line, "stdout", spec.instanceId);
      if (parsed.kind === "ready") {
        if (!ready) {
          ready = true;
          initMs = parsed.initMs;
          resolveReady();
        }
        return;
      }
      if (!ready) remember(parsed.line.message);
      emit(parsed.line);
    });
    splitLines(stderr, (line) => {
      const parsed = parseOutputLine(line, "stderr", spec.instanceId);
      if (parsed.kind === "log") {
        if (!ready) remember(parsed.line.message);
        emit(parsed.line);
      }
    });

    const streamEnded = new Promise<void>((r) => {
      raw.once("end", r);
      raw.once("close", r);
      raw.once("error", () => r());
    });

    let gone = false;
    const exited: Promise<InstanceExit> = streamEnded.then(async () => {
      gone = true;
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
      await rm(socketDir, { recursive: true, force: true }).catch(() => undefined);
      instances.delete(spec.instanceId);
      let reason: ExitReason;
      if (stopping === "destroy") reason = "destroyed";
      // The kernel's OOM kill (OOMKilled) or V8's own heap-limit abort (134; 139 without an init).
      else if (oomKilled || exitCode === 134 || exitCode === 139) reason = "out-of-memory";
      else if (stopping === "close") reason = "closed";
      else if (exitCode === EXIT.loadFailed) reason = "load-failed";
      else reason = "crashed";
      const signalName = exitCode !== null && exitCode > 128 ? (SIGNAL_NAMES.get(exitCode - 128) ?? null) : null;
      return { reason, exitCode, signal: signalName };
    });

    const kill = async (sig: "SIGTERM" | "SIGKILL") => {
      try {
        await container.kill({ signal: sig });
      } catch {
        // 404/409: not running any more; transport error: the engine is down, the stream will end.
      }
    };
    const destroy = async (): Promise<InstanceExit> => {
      stopping ??= "destroy";
      if (stopping === "close") stopping = "destroy";
      await kill("SIGKILL");
      return exited;
    };
    const close = async (graceMs: number = spec.config.timeout): Promise<InstanceExit> => {
      if (stopping !== null) return exited;
      stopping = "close";
      await kill("SIGTERM");
      const timer = setTimeout(() => void kill("SIGKILL"), graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    };
    instances.set(spec.instanceId, { container, destroy });

    return (async () => {
      await container.start();
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      const outcome = await Promise.race([
        readyPromise.then(() => "ready" as const),
        exited.then(() => "exited" as const),
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
        const startMs = performance.now() - t0;
        return {
          id: spec.instanceId,
          spec,
          endpoint: { socketPath: join(socketDir, SOCKET_NAME) },
          startMs,
          initMs,
          exited,
          close,
          destroy,
          stats: () => stats(container, () => gone),
        } satisfies Instance;
      }
      // Same outcomes as the process driver: the function's fault is FUNCTION_LOAD_FAILED, the platform's INSTANCE_START_FAILED.
      const exit = outcome === "exited" ? await exited : await destroy();
      const output = outputTail.join("\n").trim().slice(-4000);
      const withOutput = (m: string) => (output === "" ? m : `${m}:\n${output}`);
      if (outcome === "aborted") throw new StratusError("INSTANCE_START_FAILED", "start aborted", { cause: signal?.reason });
      if (outcome === "timeout") throw new StratusError("FUNCTION_LOAD_FAILED", withOutput(`the function did not become ready within ${startTimeoutMs} ms`));
      if (exit.reason === "load-failed") throw new StratusError("FUNCTION_LOAD_FAILED", output === "" ? undefined : output);
      if (exit.reason === "out-of-memory") throw new StratusError("FUNCTION_LOAD_FAILED", withOutput("the function ran out of memory while loading"));
      throw new StratusError("INSTANCE_START_FAILED", withOutput(`the instance exited before it was ready (exit code ${String(exit.exitCode)})`));
    })();
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
      HostConfig: hardenedHostConfig(DISCOVERY_MEMORY_MB, [`${fnDir}:${IMAGE_PATHS.functionDir}:ro`], "none"),
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
      if (instanceId !== undefined && instances.has(instanceId)) continue;
      await removeContainer(docker.getContainer(c.Id));
      if (instanceId !== undefined) await rm(join(socketRoot, instanceId), { recursive: true, force: true });
      removed++;
    }
    return { removed };
  }

  async function pruneImages(keep: readonly string[]): Promise<{ removed: number }> {
    const keepSet = new Set(keep);
    const images = await docker.listImages({ filters: { label: [LABELS.function] } });
    let removed = 0;
    for (const image of images) {
      const refs = [image.Id, ...(image.RepoDigests ?? []), ...(image.RepoTags ?? [])];
      if (refs.some((r) => keepSet.has(r))) continue;
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
        // 409: a container uses it; 404: removed meanwhile.
        if (!isNotFound(err) && engineStatus(err) !== 409) throw err;
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
    await Promise.all([...instances.values()].map((t) => t.destroy()));
  }

  return { name: "docker", registry, start, prepare, discover, reconcile, close, pruneImages, ensureImage };
}
