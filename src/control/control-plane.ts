/**
 * The control plane as a factory: the store (the ONLY code that opens it), the REST API, the deploy
 * pipeline with the builder, the observability pipeline, and the node fleet — which reaches node agents
 * only through the node protocol (src/shared/node-protocol.ts). It never holds a driver or a gateway.
 *
 * Discovery (running the built bundle's module to list its functions) needs a sandbox, which only nodes
 * have: the builder runs here, publishes the bundle under its tree digest (GET /internal/v1/artifacts/…),
 * and asks a node to fetch it and discover it in its sandbox (POST /internal/v1/discover). User code never
 * runs in the control plane's process, and a control plane needs no sandbox of its own.
 *
 * Events (docs/events.md): the job queue beside the store, the async intake behind the node-fleet route
 * `POST /internal/v1/async` (a node's gateway hands async requests there; the job is committed before it
 * answers), the worker that dispatches jobs to a connected node's gateway with the dispatch token (nodes
 * get its sha256 in the desired state), and the scheduler.
 *
 * Where it listens: `protocolSocket` serves the node-facing routes on a Unix socket (`stratus up`);
 * `listen` runs its own HTTP server where `/internal/v1/…` is the node protocol and everything else the
 * API (`stratus control`). Otherwise the caller mounts `handleApi` / `handleProtocol` itself.
 */
import { chmod, mkdir, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Readable } from "node:stream";
import type { PlatformConfig } from "../shared/platform-config";
import { observeSettingsOf } from "../shared/config/observe-settings";
import { StratusError } from "../shared/errors";
import { writeError } from "../shared/write-error";
import { AuthFailureLimiter } from "../shared/auth-failure-limiter";
import { ApiRateLimiter } from "./api-rate-limiter";
import type { Logger } from "../shared/logger";
import { NODE_PROTOCOL_PREFIX, controlKeyFor, type TelemetryBatch, type WireDeployment } from "../shared/node-protocol";
import type { InvocationRecord } from "../shared/invocation";
import { openStore } from "../store/open-store";
import { loadOrCreateMasterKey } from "../store/secret-box";
import type { Store } from "../store/store";
import { unpackArchive } from "../shared/archive";
import { buildProject } from "../builder/build";
import { digestTree } from "../shared/tree-digest";
import { createObservability, type Observability } from "../observe/observer";
import { createActivator } from "./activation";
import { createDeployer } from "./deployer";
import { createApiApp } from "./api";
import type { ApiContext } from "./api-context";
import { createNodeFleet, type NodeFleet } from "./node-fleet";
import { lbMembers, type LbMember } from "./membership";
import { openEventsPlane, type EventsPlane } from "../events/events-plane";
import { createLbSyncer, type LbSyncer } from "./lb-sync";

export interface ControlPlaneDeps {
  readonly logger: Logger;
  /** The node link secret shared with every node (see deriveLinkKeys). */
  readonly nodeSecret: string;
  /** Stratus version, shown in the OpenAPI document. */
  readonly version?: string;
  /** Serve the node protocol on this Unix socket (0600). */
  readonly protocolSocket?: string;
  /** Run an HTTP server on config.host:config.port for both the API and the node protocol. */
  readonly listen?: boolean;
  /**
   * Period of the check of the store's shared config revision, ms (default CONFIG_CHECK_INTERVAL_MS):
   * the slow path by which a control plane learns of another's change when a NOTIFY was lost.
   */
  readonly configCheckIntervalMs?: number;
  /**
   * The per-address bucket of failed token checks (default: one of its own from `config.auth`).
   * `stratus up` passes the one its node's gateway uses, so the API and private functions share it.
   */
  readonly authFailures?: AuthFailureLimiter;
}

/** Default period of the config revision check, ms. */
export const CONFIG_CHECK_INTERVAL_MS = 5_000;

export interface ControlPlane {
  /** Opens the store and starts the pipelines (and listeners). `adminToken` only on a fresh data dir. */
  start(): Promise<{ adminToken: string | null; url: string | null }>;
  /** The public API (503 NOT_READY before `start()`). */
  handleApi(req: IncomingMessage, res: ServerResponse): void;
  /** The node-facing protocol routes under /internal/v1 (503 before `start()`). */
  handleProtocol(req: IncomingMessage, res: ServerResponse): void;
  /** Base URL of functions (`<url>/fn/<name>`), without a trailing slash. */
  setPublicUrl(url: string): void;
  readonly store: Store | null;
  readonly fleet: NodeFleet | null;
  readonly observability: Observability | null;
  /** Registered nodes as a load balancer sees them (`{ id, addr, port, state }`, see src/control/membership.ts). */
  lbMembers(): Promise<LbMember[]>;
  readonly events: EventsPlane | null;
  /** Stops leasing async jobs and scheduling; in-flight dispatches get `deadlineMs`. Before nodes drain. Idempotent. */
  stopEvents(deadlineMs: number): Promise<void>;
  /** Flushes telemetry, closes listeners and the store. Idempotent. */
  close(): Promise<void>;
}

/** A comma-separated list, trimmed, without empty entries. */
function splitList(v: string): string[] {
  return v.split(",").map((x) => x.trim()).filter((x) => x !== "");
}

/** 503 NOT_READY. */
function sendNotReady(res: ServerResponse): void {
  writeError(res, new StratusError("NOT_READY"));
}

function listenOn(server: Server, ...args: unknown[]): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    (server.listen as (...a: unknown[]) => void)(...args, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}

/** Builds the control plane from a resolved platform config. Nothing opens until `start()`. */
export function createControlPlane(config: Readonly<PlatformConfig>, deps: ControlPlaneDeps): ControlPlane {
  const { logger } = deps;
  const dataDir = config.dataDir;
  let store: Store | null = null;
  let fleet: NodeFleet | null = null;
  let observability: Observability | null = null;
  let events: EventsPlane | null = null;
  let apiHandler: ((req: IncomingMessage, res: ServerResponse) => void) | null = null;
  let publicUrl = config.publicUrl !== "" ? config.publicUrl.replace(/\/+$/, "") : "";
  const servers: Server[] = [];
  let closing: Promise<void> | null = null;
  let stopWatching: (() => Promise<void>) | null = null;
  let checkTimer: NodeJS.Timeout | null = null;
  let lbSyncers: LbSyncer[] = [];

  function ingest(batch: TelemetryBatch): void {
    const obs = observability!;
    if (batch.dropped > 0) obs.metrics.countDropped("buffer_full", batch.dropped);
    for (const item of batch.items) {
      if (item.kind === "invocation") obs.observer.onInvocation(item.record as InvocationRecord);
      else if (item.kind === "line") obs.observer.onInstanceLog(item.functionName, item.line);
      else obs.observer.onPlatformEvent(item.event);
    }
  }

  async function start(): Promise<{ adminToken: string | null; url: string | null }> {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await chmod(dataDir, 0o700);
    const masterKey = await loadOrCreateMasterKey(dataDir);
    const storeLocation = config.store === "" ? join(dataDir, "stratus.db") : config.store;
    store = await openStore(storeLocation, { masterKey });
    const theStore = store;
    events = await openEventsPlane({ storeLocation, store, logger: logger.child({ component: "events" }), settings: config.events, publicUrl: () => publicUrl });
    const theEvents = events;
    observability = createObservability({ store, logger: logger.child({ component: "observe" }), settings: observeSettingsOf(config.observe) });
    let activator: ReturnType<typeof createActivator> | null = null;
    fleet = createNodeFleet({
      secret: deps.nodeSecret,
      membership: store,
      controlKeyOf: (credential) => controlKeyFor(masterKey, credential),
      logger: logger.child({ component: "fleet" }),
      artifactsDir: join(dataDir, "artifacts"),
      ingest,
      onMembershipChange: () => lbSyncers.forEach((x) => x.trigger()),
      buildState: async () => {
        const functions: WireDeployment[] = [];
        for (const fn of await theStore.listFunctions()) {
          if (fn.activeVersion === null) continue;
          try {
            const v = await theStore.getActiveVersion(fn.name);
            if (v !== null) functions.push(await activator!.deploymentOf(v));
          } catch (err) {
            logger.error({ err, function: fn.name }, "left out of the desired state: its active version cannot be served");
          }
        }
        return { functions, tokenHashes: await theStore.listTokenHashes(), dispatchTokenHash: theEvents.dispatchTokenHash };
      },
      asyncIntake: (r) => theEvents.intake(r),
    });
    const theFleet = fleet;
    observability.setPoolStats(() => theFleet.pools());
    activator = createActivator({ store, node: fleet, logger });

    const tmpDir = join(dataDir, "tmp");
    await mkdir(tmpDir, { recursive: true, mode: 0o700 });
    const archiveLimits = {
      maxCompressedBytes: config.build.maxArchiveBytes,
      maxUnpackedBytes: config.build.maxUnpackedBytes,
      maxEntries: config.build.maxEntries,
    };
    // Sandboxed discovery on a node (see the file comment).
    const discoverOnNode: Parameters<typeof buildProject>[0]["driver"] = {
      async discover(spec) {
        const digest = await digestTree(spec.artifactDir);
        const unpublish = theFleet.publishBundle(digest, spec.artifactDir);
        try {
          return [...(await theFleet.discover({ digest, entry: spec.entry, timeoutMs: spec.timeoutMs })).functions];
        } finally {
          unpublish();
        }
      },
    };
    const deployer = createDeployer({
      store,
      activator,
      logger,
      functionUrl: (name) => `${publicUrl}/fn/${name}`,
      unpack: async (body: Readable) => {
        const r = await unpackArchive(body, { limits: archiveLimits, parentDir: tmpDir });
        return { ...r, cleanup: () => rm(r.dir, { recursive: true, force: true }) };
      },
      build: async (project, o) => {
        const signal = AbortSignal.timeout(config.build.timeoutMs);
        const r = await buildProject({
          unpacked: project, dataDir, driver: discoverOnNode, buildId: o.buildId, logger: logger.child({ component: "builder" }),
          onLog: o.onLog, onSource: o.onSource, archiveLimits, signal,
          sandboxOptions: { subnet: config.build.sandboxSubnet, blockedCidrs: config.process.blockedCidrs, logger: logger.child({ component: "build-network" }) }, ...(o.projectName ? { projectName: o.projectName } : {}),
        });
        return r.functions;
      },
    });
    const ctx: ApiContext = {
      store, node: fleet, activator, deployer, logger: logger.child({ component: "api" }),
      publicUrl: () => publicUrl, maxArchiveBytes: config.build.maxArchiveBytes,
      // Ready once a node serves: it converged on the desired state when it said hello.
      isReady: () => closing === null && theFleet.nodes().length > 0,
      observability, publicMetrics: config.observe.publicMetrics, authFailures: deps.authFailures ?? new AuthFailureLimiter(config.auth), events,
      rateLimiter: new ApiRateLimiter(config.rateLimit),
    };
    apiHandler = createApiApp(ctx, { version: deps.version ?? "0.1.0" });

    if (deps.protocolSocket !== undefined) {
      const s = createServer((req, res) => theFleet.handle(req, res));
      await rm(deps.protocolSocket, { force: true });
      await listenOn(s, deps.protocolSocket);
      await chmod(deps.protocolSocket, 0o600);
      servers.push(s);
    }
    let url: string | null = null;
    if (deps.listen === true) {
      const s = createServer({ maxHeaderSize: config.gateway.maxHeaderBytes, headersTimeout: config.gateway.headersTimeoutMs, requestTimeout: config.gateway.requestTimeoutMs, keepAliveTimeout: config.gateway.keepAliveTimeoutMs }, (req, res) => {
        if ((req.url ?? "").startsWith(`${NODE_PROTOCOL_PREFIX}/`)) theFleet.handle(req, res);
        else apiHandler!(req, res);
      });
      await listenOn(s, config.port, config.host);
      servers.push(s);
      const addr = s.address() as AddressInfo;
      url = `http://${addr.family === "IPv6" ? `[${addr.address}]` : addr.address}:${addr.port}`;
      if (publicUrl === "") publicUrl = url;
    }

    // Changes made through another control plane sharing the store: LISTEN (fast path) and a periodic
    // revision check (NOTIFY is not replayed). Changes serialise: one refresh at a time, then the latest.
    theFleet.knownConfigRevision = await store.configRevision();
    let refreshing: Promise<void> | null = null;
    let again = false;
    const onStoreRevision = (rev: number | null): void => {
      if (closing !== null) return;
      if (refreshing !== null) {
        again = true;
        return;
      }
      refreshing = (async () => {
        do {
          again = false;
          const r = rev ?? await theStore.configRevision();
          rev = null;
          if (r <= theFleet.knownConfigRevision) continue;
          theFleet.knownConfigRevision = r;
          logger.debug({ configRevision: r }, "the store's config changed elsewhere; pushing to this control plane's nodes");
          await theFleet.refresh();
          lbSyncers.forEach((x) => x.trigger());
        } while (again && closing === null);
      })().catch((err) => logger.warn({ err }, "could not follow a config change made elsewhere; retrying at the next check")).finally(() => {
        refreshing = null;
      });
    };
    stopWatching = await store.watchConfig(onStoreRevision);
    checkTimer = setInterval(() => onStoreRevision(null), deps.configCheckIntervalMs ?? CONFIG_CHECK_INTERVAL_MS);
    checkTimer.unref();

    // One syncer per HAProxy (two side by side: docs/cluster.md "running two HAProxies").
    const sockets = splitList(config.lb.haproxySocket);
    const stateFiles = splitList(config.lb.haproxyStateFile);
    if (stateFiles.length > 0 && stateFiles.length !== sockets.length) {
      throw new StratusError("INVALID_ARGUMENT", `lb.haproxyStateFile lists ${stateFiles.length} files for ${sockets.length} sockets in lb.haproxySocket: give one per socket, in the same order`);
    }
    lbSyncers = sockets.map((socket, i) => createLbSyncer({
      socket, ...(stateFiles[i] !== undefined ? { stateFile: stateFiles[i] } : {}), intervalMs: config.lb.syncIntervalMs,
      members: async () => lbMembers(await theFleet.members()), logger: logger.child({ component: "lb-sync", socket }),
    }));

    let adminToken: string | null = null;
    if ((await store.listTokens()).length === 0) adminToken = (await store.createToken("admin")).token;
    // Jobs wait until a node with a gateway is connected (dispatchTarget() is null until then).
    events.start(() => theFleet.dispatchTarget());
    logger.info({ url, protocolSocket: deps.protocolSocket }, "control plane started");
    return { adminToken, url };
  }

  const stopEvents = (deadlineMs: number): Promise<void> =>
    events === null ? Promise.resolve() : events.stop(deadlineMs).catch((err) => logger.error({ err }, "events stop failed"));

  async function doClose(): Promise<void> {
    await stopEvents(config.gateway.drainTimeoutMs);
    if (checkTimer !== null) clearInterval(checkTimer);
    await Promise.all(lbSyncers.map((x) => x.close()));
    if (stopWatching !== null) await stopWatching().catch(() => {});
    for (const s of servers) await closeServer(s);
    if (fleet) await fleet.close();
    if (observability) await observability.close().catch((err) => logger.error({ err }, "telemetry flush failed"));
    if (events) await events.close().catch((err) => logger.error({ err }, "event queue close failed"));
    if (store) await store.close();
  }

  return {
    start,
    handleApi(req, res) {
      if (apiHandler === null) return sendNotReady(res);
      apiHandler(req, res);
    },
    handleProtocol(req, res) {
      if (fleet === null) return sendNotReady(res);
      fleet.handle(req, res);
    },
    setPublicUrl(url) {
      publicUrl = url.replace(/\/+$/, "");
    },
    get store() {
      return store;
    },
    get fleet() {
      return fleet;
    },
    get observability() {
      return observability;
    },
    get events() {
      return events;
    },
    stopEvents,
    async lbMembers() {
      if (fleet === null) throw new StratusError("NOT_READY");
      return lbMembers(await fleet.members());
    },
    close: () => (closing ??= doClose()),
  };
}
