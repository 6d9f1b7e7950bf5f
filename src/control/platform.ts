/**
 * `stratus up` as a factory: the whole platform on one machine with no external service. Composes
 *  - the store (SQLite in the data dir, secrets under `<dataDir>/master.key`),
 *  - the node agent: a sandbox driver + the gateway, exposing the internal node API on a Unix socket
 *    (`<dataDir>/node.sock`, bearer `<dataDir>/node.token`, both 0600),
 *  - the control plane: the REST API, which reaches the node only through that internal API,
 *  - one public listener: `/fn/<name>/…` goes to the gateway, everything else to the API.
 * `createPlatform` returns something not yet listening; `listen()` starts it; `close()` drains.
 *
 * Start-up order: reconcile the driver's leftovers, serve, push every active version to the node
 * (a restart serves what was deployed), then report ready on `/readyz`.
 */
import { chmod, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { createHash, randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { join } from "node:path";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Readable } from "node:stream";
import type { PlatformConfig } from "../shared/platform-config";
import { StratusError, toErrorResponse } from "../shared/errors";
import type { Logger } from "../shared/logger";
import type { SandboxDriver } from "../sandbox/driver";
import { createProcessDriver } from "../sandbox/process/process-driver";
import type { Gateway } from "../gateway/gateway";
import { createNodeAgent, type NodeAgent } from "../node/node-agent";
import { openStore } from "../store/open-store";
import { loadOrCreateMasterKey } from "../store/secret-box";
import type { Store } from "../store/store";
import { unpackArchive } from "../builder/archive";
import { buildProject } from "../builder/build";
import { createLocalNode } from "../node/local-node";
import { createInternalApiServer } from "../node/internal-api";
import { createNodeClient } from "./node-client";
import { createActivator } from "./activation";
import { createDeployer } from "./deployer";
import { createApiApp } from "./api";
import type { ApiContext } from "./api-context";
import { createObservability, type Observability } from "../observe/observer";
import { openEventsPlane, type EventsPlane } from "../events/events-plane";

/** Dependencies of the platform; everything but the logger has a default. */
export interface PlatformDeps {
  readonly logger: Logger;
  /** Path of dist/runtime.cjs (the process driver runs it in every sandbox). */
  readonly runtimePath?: string;
  /** A ready-made driver (tests, the Docker driver); default: the process driver. The platform closes it. */
  readonly driver?: SandboxDriver;
  /** Stratus version, shown in the OpenAPI document. */
  readonly version?: string;
}

/** What `listen()` reports. `adminToken` is set only on the very first start of a data dir. */
export interface PlatformStarted {
  readonly url: string;
  readonly adminToken: string | null;
}

export interface Platform {
  /** Starts everything and listens on config.host:config.port (0: a free port). */
  listen(): Promise<PlatformStarted>;
  /** Graceful stop: drain the gateway, close the driver, close the store. Idempotent. */
  close(): Promise<void>;
  /** The store (for tests and embedding); available after `listen()`. */
  readonly store: Store | null;
  /** The public base URL; available after `listen()`. */
  readonly url: string | null;
}

/** Reads `<dataDir>/node.token`, creating it (0600) with 256 random bits on first use. */
async function loadOrCreateNodeToken(dataDir: string): Promise<string> {
  const file = join(dataDir, "node.token");
  try {
    await writeFile(file, randomBytes(32).toString("base64url") + "\n", { flag: "wx", mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  await chmod(file, 0o600);
  const token = (await readFile(file, "utf8")).trim();
  if (token.length < 32) throw new StratusError("INTERNAL", `${file} holds a token that is too short`);
  return token;
}

function listenOn(server: Server, port: number | string, host?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    const done = () => {
      server.off("error", reject);
      resolve();
    };
    if (host === undefined) server.listen(port, done);
    else server.listen(port as number, host, done);
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}

/** 503 NOT_READY for API requests that arrive before the API is mounted. */
function sendNotReady(res: ServerResponse): void {
  const { status, source, body } = toErrorResponse(new StratusError("NOT_READY"));
  res.writeHead(status, { "content-type": "application/json", "x-stratus-error-source": source });
  res.end(JSON.stringify(body));
}

/**
 * Builds the platform from a resolved config (src/shared/platform-config.ts). Nothing starts until `listen()`.
 */
export function createPlatform(config: Readonly<PlatformConfig>, deps: PlatformDeps): Platform {
  const { logger } = deps;
  const dataDir = config.dataDir;
  let store: Store | null = null;
  let url: string | null = null;
  let driver: SandboxDriver | null = null;
  let agent: NodeAgent | null = null;
  let gateway: Gateway | null = null;
  let internal: Server | null = null;
  let nodeClient: ReturnType<typeof createNodeClient> | null = null;
  let ready = false;
  let pruneTimer: NodeJS.Timeout | null = null;
  let apiHandler: ((req: IncomingMessage, res: ServerResponse) => void) | null = null;
  let closing: Promise<void> | null = null;
  let observability: Observability | null = null;
  let events: EventsPlane | null = null;

  async function listen(): Promise<PlatformStarted> {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await chmod(dataDir, 0o700);
    const masterKey = await loadOrCreateMasterKey(dataDir);
    const nodeToken = await loadOrCreateNodeToken(dataDir);
    const storeLocation = config.store === "" ? join(dataDir, "stratus.db") : config.store;
    store = await openStore(storeLocation, { masterKey });
    const theStore = store;
    // Events (docs/events.md): the job queue beside the store; the gateway hands async requests to it.
    events = await openEventsPlane({ storeLocation, store, logger: logger.child({ component: "events" }), settings: config.events, publicUrl: () => url ?? "" });
    observability = createObservability({ store, logger: logger.child({ component: "observe" }), settings: config.observe });

    // One node per data dir: reconcile() at start-up removes this node's leftovers (cgroups,
    // containers), and must not take the live instances of another platform on the same host.
    const nodeSuffix = createHash("sha256").update(dataDir).digest("hex").slice(0, 8);
    if (deps.driver) driver = deps.driver;
    else if (config.driver === "process") {
      if (!deps.runtimePath) throw new StratusError("INTERNAL", "runtimePath is required for the process driver");
      driver = createProcessDriver({
        runtimePath: deps.runtimePath, stateDir: join(dataDir, "run"), cgroupRoot: `stratus-${nodeSuffix}`, prewarm: config.prewarm, logger: logger.child({ component: "driver" }),
      });
    } else {
      const { createDockerDriver } = await import("../sandbox/docker/docker-driver");
      const { username, password, address } = config.registry;
      driver = createDockerDriver({
        registry: address,
        ...(username !== "" ? { registryAuth: { username, password } } : {}),
        ...(deps.runtimePath ? { runtimeFile: deps.runtimePath } : {}),
        socketRoot: join(dataDir, "docker"),
        nodeId: `${hostname()}-${nodeSuffix}`,
        prewarm: config.prewarm,
        logger: logger.child({ component: "driver" }),
      });
    }
    // Node agent: gateway + driver, reachable by the control plane only through the internal API.
    agent = createNodeAgent({
      driver,
      logger: logger.child({ component: "node-agent" }),
      limits: {
        maxHeaderSize: config.gateway.maxHeaderBytes,
        headersTimeoutMs: config.gateway.headersTimeoutMs,
        requestTimeoutMs: config.gateway.requestTimeoutMs,
        tickMs: config.gateway.sweepIntervalMs,
      },
      observer: observability.observer,
      // The API shares the gateway's server (and so its limits and drain): `/fn/…` is the gateway's,
      // everything else the API's. The API app is built below, once the node client exists.
      fallback: (req, res) => {
        if (apiHandler !== null) return apiHandler(req, res);
        sendNotReady(res);
      },
      asyncIntake: events.intake,
      dispatchToken: events.dispatchToken,
      // Non-public functions: any valid, unrevoked API token may invoke.
      authorize: async (req) => {
        const auth = req.headers.authorization ?? "";
        const token = auth.startsWith("Bearer ") ? auth.slice(7).trim() : "";
        if (token === "" || (await theStore.verifyToken(token)) === null) throw new StratusError("UNAUTHENTICATED");
      },
    });
    gateway = agent.gateway;
    const theGateway = gateway;
    observability.setPoolStats(() => theGateway.stats());
    const localNode = createLocalNode({ driver, gateway, logger: logger.child({ component: "node" }) });
    internal = createInternalApiServer({ node: localNode, token: nodeToken, logger: logger.child({ component: "internal-api" }) });
    const socketPath = join(dataDir, "node.sock");
    await rm(socketPath, { force: true });
    await listenOn(internal, socketPath);
    await chmod(socketPath, 0o600);

    // Control plane.
    nodeClient = createNodeClient({ socketPath, token: nodeToken });
    const activator = createActivator({ store, node: nodeClient, logger, artifactDirOf: (digest) => join(dataDir, "artifacts", digest) });
    const tmpDir = join(dataDir, "tmp");
    await mkdir(tmpDir, { recursive: true, mode: 0o700 });
    const archiveLimits = {
      maxCompressedBytes: config.build.maxArchiveBytes,
      maxUnpackedBytes: config.build.maxUnpackedBytes,
      maxEntries: config.build.maxEntries,
    };
    const buildDriver = driver;
    const deployer = createDeployer({
      store,
      activator,
      logger,
      functionUrl: (name) => `${url}/fn/${name}`,
      unpack: async (body: Readable) => {
        const r = await unpackArchive(body, { limits: archiveLimits, parentDir: tmpDir });
        return { dir: r.dir, cleanup: () => rm(r.dir, { recursive: true, force: true }) };
      },
      build: async (dir, o) => {
        const signal = AbortSignal.timeout(config.build.timeoutMs);
        const r = await buildProject({
          dir, dataDir, driver: buildDriver, store: theStore, buildId: o.buildId, logger: logger.child({ component: "builder" }),
          onLog: o.onLog, archiveLimits, signal, ...(o.projectName ? { projectName: o.projectName } : {}),
        });
        return r.functions;
      },
    });
    const ctx: ApiContext = {
      store, node: nodeClient, activator, deployer, logger: logger.child({ component: "api" }),
      publicUrl: () => url ?? "", maxArchiveBytes: config.build.maxArchiveBytes, isReady: () => ready,
      observability, publicMetrics: config.observe.publicMetrics, events,
    };
    apiHandler = createApiApp(ctx, { version: deps.version ?? "0.1.0" });

    // Reconciles the driver's leftovers of an earlier run, then listens.
    await agent.start({ port: config.port, host: config.host });
    const addr = gateway.server.address() as AddressInfo;
    const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
    url = config.publicUrl !== "" ? config.publicUrl.replace(/\/+$/, "") : `http://${host}:${addr.port}`;

    let adminToken: string | null = null;
    if ((await store.listTokens()).length === 0) adminToken = (await store.createToken("admin")).token;

    const pushed = await activator.pushAll();
    // The worker dispatches through this gateway over loopback, whatever the public URL is.
    events.start(`http://${addr.family === "IPv6" ? "[::1]" : "127.0.0.1"}:${addr.port}`);
    ready = true;
    logger.info({ url, pushed }, "platform ready");
    startImagePruning();
    return { url, adminToken };
  }

  /**
   * Docker mode: removes function images that no active version uses, at start-up and then every
   * `docker.imagePruneIntervalMs`. The registry keeps every version, so a rollback pulls by digest again;
   * images of running containers are never removed (the engine refuses).
   */
  function startImagePruning(): void {
    const d = driver as (SandboxDriver & { pruneImages?: (keep: readonly string[]) => Promise<{ removed: number }> }) | null;
    const intervalMs = config.docker.imagePruneIntervalMs;
    if (d === null || typeof d.pruneImages !== "function" || intervalMs === 0 || store === null) return;
    const prune = d.pruneImages.bind(d);
    const theStore = store;
    let running = false;
    const sweep = async (): Promise<void> => {
      if (running || closing !== null) return;
      running = true;
      try {
        const keep: string[] = [];
        for (const fn of await theStore.listFunctions()) {
          const active = await theStore.getActiveVersion(fn.name);
          if (active?.image) keep.push(active.image);
        }
        const { removed } = await prune(keep);
        if (removed > 0) logger.info({ removed, kept: keep.length }, "pruned unused function images");
      } catch (err) {
        logger.warn({ err }, "image pruning failed; will retry");
      } finally {
        running = false;
      }
    };
    void sweep();
    pruneTimer = setInterval(() => void sweep(), intervalMs);
    pruneTimer.unref();
  }

  async function doClose(): Promise<void> {
    ready = false;
    if (pruneTimer !== null) clearInterval(pruneTimer);
    // Stop leasing async jobs first (in-flight dispatches finish within the drain deadline), then
    // drain (in-flight requests finish), then the control plane's link to the node, then the rest.
    if (events) await events.stop(config.gateway.drainTimeoutMs).catch((err) => logger.error({ err }, "events stop failed"));
    if (agent) await agent.drain(config.gateway.drainTimeoutMs).catch((err) => logger.error({ err }, "drain failed"));
    if (agent) await agent.close().catch(() => {});
    if (internal) await closeServer(internal);
    if (nodeClient) await nodeClient.close().catch(() => {});
    if (driver && !agent) await driver.close().catch((err) => logger.error({ err }, "driver close failed"));
    if (observability) await observability.close().catch((err) => logger.error({ err }, "telemetry flush failed"));
    if (events) await events.close().catch((err) => logger.error({ err }, "event queue close failed"));
    if (store) await store.close();
  }

  return {
    listen,
    close: () => (closing ??= doClose()),
    get store() {
      return store;
    },
    get url() {
      return url;
    },
  };
}
