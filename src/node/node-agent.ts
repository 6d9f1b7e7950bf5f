/**
 * The node agent: one sandbox driver plus the gateway in front of it, joined to a control plane only by
 * the node protocol (src/shared/node-protocol.ts). Built, not started: `start()` first removes what a
 * previous, killed run left behind (`driver.reconcile()`), then listens, then converges.
 *
 * With `control` set (what `stratus up` and `stratus node` run):
 *  - convergence: on start and on every reconnect the node says hello and receives its full desired state;
 *    a resync every `resyncIntervalMs` asks "is revision R still current?" (204, or the new state), so a
 *    lost push never leaves the node stale for longer than that; pushes (PUT /desired-state) are only the
 *    fast path. States apply one at a time, in order; one older than what is served is ignored.
 *  - artifacts come by digest from the control plane into `<dataDir>/artifacts` (verified, cached);
 *  - tokens: non-public functions accept a bearer token whose sha256 is in the desired state's
 *    `tokenHashes`; no store is opened. A revocation bumps the revision and is pushed before the API
 *    answers, so it is immediate; a node that missed the push catches up within one resync interval.
 *  - telemetry goes to the control plane in batches (src/node/telemetry-shipper.ts).
 * Without `control` (tests of the gateway over a real driver) the caller drives `gateway` directly.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { mkdir, rm, chmod, readFile, writeFile, rename } from "node:fs/promises";
import { freemem, totalmem } from "node:os";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { SandboxDriver } from "../sandbox/driver";
import type { Logger } from "../shared/logger";
import { StratusError, isStratusError, toErrorResponse } from "../shared/errors";
import { HEADERS } from "../shared/protocol";
import { ASYNC_MAX_BODY_BYTES, readBoundedBody, storedHeaders } from "../shared/async-request";
import { AUTH_FAILURE_DEFAULTS, AuthFailureLimiter, limitAuthFailures, type AuthFailureSettings } from "../shared/auth-failure-limiter";
import { isValidFunctionName } from "../shared/names";
import {
  AsyncAcceptedSchema, DesiredStateSchema, DiscoverRequestSchema, EMPTY_NODE_STATUS, JoinResultSchema, NODE_PROTOCOL_PREFIX, NodeHello, NodeStateSchema, PruneRequestSchema,
  WireDeploymentSchema, bearerMatches, deriveLinkKeys, invocationTokenHash, parseWire,
  type AsyncRequestWire, type Heartbeat, type JoinRequest, type JoinResult, type NodeLoadWire, type NodeStateWire,
  type DesiredState, type FunctionNodeStatus, type NodeApi, type PoolSamples, type WireDeployment,
} from "../shared/node-protocol";
import { createLinkClient, protocolRoute, readJsonBody, sendJson, sendProtocolError, type LinkClient } from "../shared/node-link";
import { createGateway, type AsyncIntakeHook, type AuthorizeHook, type Gateway, type GatewayOptions } from "../gateway/gateway";
import type { Deployment } from "../gateway/deployment";
import type { GatewayLimitsInput } from "../gateway/limits";
import type { GatewayObserver } from "../shared/gateway-observer";
import { createArtifactCache, type ArtifactCache } from "./artifact-cache";
import { createTelemetryShipper, type TelemetryShipper } from "./telemetry-shipper";
import { readinessAnswer } from "./readiness";

/** Grace given to the verification instance to stop, ms (it never served a request). */
const VERIFY_CLOSE_GRACE_MS = 2_000;
/** Default period of the desired-state resync, ms: the longest a missed push can leave a node stale. */
export const DEFAULT_RESYNC_INTERVAL_MS = 10_000;
/** Retry delay after the control plane could not be reached, ms. */
const RECONNECT_DELAY_MS = 1_000;
/** Longest wait for the control plane to commit an async request, ms (then 503 ASYNC_INTAKE_UNAVAILABLE). */
const ASYNC_INTAKE_TIMEOUT_MS = 10_000;
/** How long an image a prepare built, but no desired state lists, is kept from pruning, ms. */
const PREPARED_GRACE_MS = 30 * 60_000;

/** Default heartbeat period, ms (the control plane reads a node silent for 10 s as lost). */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 2_000;
/** Errors after which the control plane will not talk to this node again: retrying is pointless. */
const REFUSALS = new Set(["UNAUTHENTICATED", "NODE_CREDENTIAL_INVALID", "NODE_CREDENTIAL_REVOKED", "CONTROL_PLANE_UNVERIFIED", "PERMISSION_DENIED",
  "JOIN_TOKEN_INVALID", "JOIN_TOKEN_EXPIRED", "JOIN_TOKEN_REVOKED"]);
const isRefusal = (err: unknown) => REFUSALS.has(String((err as { code?: unknown }).code));

/** How a node reaches its control plane. */
export interface ControlLinkOptions {
  /** The control plane's protocol base: `http(s)://host:port` or `unix:<socket>`. */
  readonly url: string;
  /**
   * The shared link secret (both bearer keys are derived from it, see deriveLinkKeys). Without it the
   * node uses its own credential: `credentialFile`, or a join with `joinToken` that creates it.
   */
  readonly secret?: string;
  /** Where the node's credential is kept (JSON, 0600): `<dataDir>/node-credential.json` by default. */
  readonly credentialFile?: string;
  /** Admin-issued join token, used only when there is no credential file yet. */
  readonly joinToken?: string;
  /** PEM CA certificate(s) for an `https://` control plane. */
  readonly ca?: string;
  /** Default DEFAULT_HEARTBEAT_INTERVAL_MS. */
  readonly heartbeatIntervalMs?: number;
  /** Called once when the control plane refuses this node for good (removed, wrong credential); the node has dropped everything it held. */
  readonly onRefused?: (err: unknown) => void;
  /** This node's stable id (names it in records, telemetry and the control plane's fleet). */
  readonly nodeId: string;
  /** The node's own data dir (artifact cache); never the control plane's. */
  readonly dataDir: string;
  /**
   * Serve the node's protocol API on this Unix socket (`stratus up`) instead of under `/internal/v1`
   * on the gateway's port (`stratus node`).
   */
  readonly internalSocket?: string;
  /** Where the control plane reaches this node (default: the socket, else `http://<bound address>`). */
  readonly advertiseUrl?: string;
  /**
   * Where the control plane's async worker reaches this node's gateway (docs/events.md). Default: the
   * advertised URL when the protocol shares the gateway's port (`stratus node`), else
   * `http://<loopback>:<gateway port>` (`stratus up`: same machine).
   */
  readonly gatewayUrl?: string;
  /** Default DEFAULT_RESYNC_INTERVAL_MS. */
  readonly resyncIntervalMs?: number;
  /** Docker: period of image pruning (keep the images of the desired state), ms; 0 off. Default 0. */
  readonly imagePruneIntervalMs?: number;
  /** Telemetry flush period, ms (default 100). */
  readonly telemetryFlushMs?: number;
  /** Longest wait of `start()` for the first desired state, ms (default 30 s; then it serves and keeps trying). */
  readonly firstSyncTimeoutMs?: number;
}

export interface NodeAgentOptions {
  readonly driver: SandboxDriver;
  readonly logger: Logger;
  /** Gateway limits (defaults in src/gateway/limits.ts). */
  readonly limits?: GatewayLimitsInput;
  /** Access check for non-public functions (default: deny with 401; with `control`: the desired state's tokens). */
  readonly authorize?: AuthorizeHook;
  /** Receives invocation records, output and lifecycle events (with `control`: the telemetry shipper). */
  readonly observer?: GatewayObserver;
  /** Answers requests outside `/fn/…` (and, with `control` on the gateway port, outside `/internal/v1`). */
  readonly fallback?: GatewayOptions["fallback"];
  /** Joins the node to a control plane through the protocol (see the file comment). */
  readonly control?: ControlLinkOptions;
  /** Load balancers whose forwarding headers are believed (see GatewayOptions.trustedProxies). */
  readonly trustedProxies?: readonly string[];
  /** Per-address limit on failed token checks of non-public functions (with `control`; see src/shared/auth-failure-limiter.ts). */
  readonly authFailures?: AuthFailureSettings;
  /** The bucket itself, shared with a control plane in the same process (`stratus up`); wins over `authFailures`. */
  readonly authFailureLimiter?: AuthFailureLimiter;
}

export interface NodeAgent {
  readonly gateway: Gateway;
  /**
   * Reconciles the driver, listens, and (with `control`) converges on the desired state.
   * `port` 0 picks a free one; `host` defaults to 127.0.0.1.
   * @throws the listen error (EADDRINUSE…); StratusError UNAUTHENTICATED when the control plane refuses the secret
   */
  start(options: { port: number; host?: string }): Promise<{ host: string; port: number; removed: number }>;
  /** The revision of the desired state being served (null before the first one). */
  readonly revision: { readonly controlId: string; readonly revision: number } | null;
  /** Artifacts fetched from the control plane since start. */
  readonly artifactsFetched: number;
  /** The numeric node id issued at join (null for a shared-secret node). */
  readonly numericId: number | null;
  /** True while drained (`/readyz` answers 404). */
  readonly draining: boolean;
  /** Asks the control plane now (the resync, run early). Resolves once applied. */
  resync(): Promise<void>;
  /** Drains the gateway within `deadlineMs` (a duration, ms), then closes the driver. Idempotent. */
  drain(deadlineMs: number): Promise<void>;
  /** Immediate stop of gateway and driver. Idempotent. */
  close(): Promise<void>;
}

interface Applied {
  readonly key: string;
  readonly wire: WireDeployment;
}

/** Composes driver + gateway (+ the protocol link); see the file comment. */
export function createNodeAgent(options: NodeAgentOptions): NodeAgent {
  const { driver, logger } = options;
  const link = options.control ?? null;
  const keys = link === null || link.secret === undefined ? null : deriveLinkKeys(link.secret);
  // With a credential, the client exists once the credential is loaded or issued (start()).
  let control: LinkClient | null = link === null || keys === null ? null : createLinkClient(link.url, keys.node, "control plane", { proofKey: keys.control, ...(link.ca ? { ca: link.ca } : {}) });
  let controlKey: string | null = keys?.control ?? null;
  let numericId: number | null = null;
  let draining = false;
  // Bumped by every pushed state: a heartbeat answer older than the latest push is not applied.
  let stateEpoch = 0;
  let heartbeatTimer: NodeJS.Timeout | null = null;
  // Sends a heartbeat now (set once heartbeats start): after a hello's state is applied, the control plane
  // should hear of it at once, since it dispatches async work only to nodes that have applied its state.
  let beatNow: () => void = () => {};
  let refused = false;
  const linkClient = (): LinkClient => {
    if (control === null) throw new StratusError("UNAVAILABLE", "The node has not joined its control plane yet");
    return control;
  };
  const cache: ArtifactCache | null = link === null ? null
    : createArtifactCache(join(link.dataDir, "artifacts"), (digest) => linkClient().stream(`${NODE_PROTOCOL_PREFIX}/artifacts/${digest}`));
  let tokenHashes = new Set<string>();
  // Images prepare() built (ref → when) and prepares running now: protected from pruning (see pruneImages).
  const prepared = new Map<string, number>();
  let preparesInFlight = 0;
  // sha256 of the control plane's async-worker dispatch token (desired state); null: none accepted.
  let dispatchTokenHash: Buffer | null = null;
  let gatewayUrl: string | undefined;
  const applied = new Map<string, Applied>();
  let current: { controlId: string; revision: number } | null = null;
  let stale = true;
  let connected = false;
  let closed = false;
  let syncTimer: NodeJS.Timeout | null = null;
  let pruneTimer: NodeJS.Timeout | null = null;
  let internal: Server | null = null;
  let advertised = "";

  // Failed checks count per client address, as the API's do (429 TOO_MANY_AUTH_FAILURES).
  const authFailures = options.authFailureLimiter ?? new AuthFailureLimiter(options.authFailures ?? AUTH_FAILURE_DEFAULTS);
  const authorize: AuthorizeHook | undefined = link === null ? options.authorize : (req) => limitAuthFailures(authFailures, req.socket.remoteAddress ?? "", async () => {
    const auth = req.headers.authorization ?? "";
    const token = auth.startsWith("Bearer ") ? auth.slice(7).trim() : "";
    if (token === "" || !tokenHashes.has(invocationTokenHash(token))) throw new StratusError("UNAUTHENTICATED");
  });

  const pools = (): PoolSamples => {
    const out: PoolSamples = {};
    for (const [name, s] of Object.entries(gateway.stats())) out[name] = { starting: s.starting, busy: s.busy, idle: s.idle, retiring: s.retiring, waiting: s.waiting };
    return out;
  };
  const shipper: TelemetryShipper | null = link === null ? null : createTelemetryShipper({
    nodeId: link.nodeId, logger, pools, ...(link.telemetryFlushMs !== undefined ? { flushIntervalMs: link.telemetryFlushMs } : {}),
    // Before the node has joined, an empty batch (pool samples only, re-sent with every batch) is skipped.
    send: async (batch) => (control === null && batch.items.length === 0 ? undefined : linkClient().call<void>("POST", `${NODE_PROTOCOL_PREFIX}/telemetry`, batch)),
  });
  const observer = shipper?.observer ?? options.observer;

  const handleProtocol = (req: IncomingMessage, res: ServerResponse): void => {
    serveProtocol(req, res).catch((err) => sendProtocolError(res, err, logger, req.url));
  };
  const fallback = link !== null && link.internalSocket === undefined
    ? (req: IncomingMessage, res: ServerResponse) => {
      if ((req.url ?? "").startsWith(`${NODE_PROTOCOL_PREFIX}/`)) return handleProtocol(req, res);
      const path = (req.url ?? "/").split("?")[0];
      if (path === "/readyz") {
        const a = readinessAnswer({ draining, synced: current !== null });
        return sendJson(res, a.status, a.body);
      }
      if (path === "/healthz") return sendJson(res, 200, { ok: true });
      if (options.fallback) return options.fallback(req, res);
      sendProtocolError(res, new StratusError("NOT_FOUND"), logger, req.url);
    }
    : options.fallback;

  /**
   * Async invocations (docs/events.md): the gateway routed and authorized the request; the body goes to
   * the control plane, which commits the job, and the client gets the 202 only after that answer. An
   * unreachable control plane is 503 ASYNC_INTAKE_UNAVAILABLE, never a 202.
   */
  const asyncIntake: AsyncIntakeHook = (req, res, target) => {
    const { deployment, requestId } = target;
    const send = (status: number, body: unknown, headers: Record<string, string>): void => {
      const text = JSON.stringify(body);
      res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": String(Buffer.byteLength(text)), ...headers });
      res.end(text);
    };
    const work = async (): Promise<void> => {
      const body = await readBoundedBody(req, Math.min(deployment.config.maxBodyBytes, ASYNC_MAX_BODY_BYTES));
      const key = req.headers["idempotency-key"];
      const wire: AsyncRequestWire = {
        functionName: deployment.name, requestId, method: req.method ?? "POST", path: target.path, headers: storedHeaders(req.headers),
        idempotencyKey: typeof key === "string" && key !== "" ? key : null, bodyBase64: body.toString("base64"),
      };
      let raw: unknown;
      try {
        raw = await linkClient().call<unknown>("POST", `${NODE_PROTOCOL_PREFIX}/async`, wire, { signal: AbortSignal.timeout(ASYNC_INTAKE_TIMEOUT_MS) });
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        // Not reached, timed out, or not our control plane: the job may not be committed, so no 202.
        if (!isStratusError(err) || code === "UNAVAILABLE" || code === "CONTROL_PLANE_UNVERIFIED") {
          throw new StratusError("ASYNC_INTAKE_UNAVAILABLE", undefined, { cause: err });
        }
        throw err;
      }
      const a = parseWire(AsyncAcceptedSchema, raw, "async answer");
      send(202, a, { location: a.statusUrl, [HEADERS.requestId]: requestId, [HEADERS.invocationId]: a.invocationId });
    };
    work().catch((err: unknown) => {
      if (!isStratusError(err)) logger.error({ err, rid: requestId, fn: deployment.name }, "async intake failed");
      if (res.headersSent) return void res.destroy();
      const r = toErrorResponse(err, requestId);
      const close: Record<string, string> = (err as { code?: string }).code === "PAYLOAD_TOO_LARGE" ? { connection: "close" } : {};
      send(r.status, r.body, { ...r.headers, ...close, [HEADERS.requestId]: requestId, [HEADERS.errorSource]: r.source });
    });
  };
  const isDispatchToken = (given: string): boolean => {
    const want = dispatchTokenHash;
    if (want === null) return false;
    return timingSafeEqual(createHash("sha256").update(given).digest(), want);
  };

  const gateway: Gateway = createGateway({
    driver, logger, limits: options.limits, authorize, ...(observer ? { observer } : {}),
    ...(fallback ? { fallback } : {}), ...(link ? { nodeId: link.nodeId, asyncIntake, isDispatchToken } : {}),
    ...(options.trustedProxies ? { trustedProxies: options.trustedProxies } : {}),
  });

  function toDeployment(w: WireDeployment, artifactDir: string): Deployment {
    const { digest: _digest, image, ...rest } = w;
    return image === undefined ? { ...rest, artifactDir } : { ...rest, artifactDir, image };
  }

  // Desired states apply one at a time, in arrival order.
  let applying: Promise<unknown> = Promise.resolve();
  function apply(state: DesiredState): Promise<void> {
    const run = applying.then(() => applyNow(state));
    applying = run.catch(() => {});
    return run;
  }

  async function applyNow(state: DesiredState): Promise<void> {
    const newer = current === null || state.controlId !== current.controlId || state.revision > current.revision || (stale && state.revision >= current.revision);
    if (!newer || closed) return;
    // Tokens first: a revocation must not wait for an artifact download.
    tokenHashes = new Set(state.tokenHashes);
    dispatchTokenHash = state.dispatchTokenHash === undefined ? null : Buffer.from(state.dispatchTokenHash, "hex");
    let complete = true;
    const wanted = new Set(state.functions.map((f) => f.name));
    for (const name of [...applied.keys()]) {
      if (wanted.has(name)) continue;
      applied.delete(name);
      await gateway.removeFunction(name);
    }
    for (const fn of state.functions) {
      const key = JSON.stringify(fn);
      if (applied.get(fn.name)?.key === key) continue;
      try {
        const dir = await cache!.ensure(fn.digest);
        gateway.setFunction(toDeployment(fn, dir));
        applied.set(fn.name, { key, wire: fn });
      } catch (err) {
        complete = false;
        logger.error({ err, function: fn.name, version: fn.version }, "could not apply a function of the desired state; will retry at the next resync");
      }
    }
    current = { controlId: state.controlId, revision: state.revision };
    stale = !complete;
    logger.debug({ revision: state.revision, functions: state.functions.length, complete }, "desired state applied");
  }

  const nodeApi: NodeApi = {
    async applyState(state) {
      await apply(state);
      return { revision: current?.revision ?? -1, complete: !stale };
    },
    async prepare(w) {
      const dir = await cache!.ensure(w.digest);
      const { name, ...rest } = toDeployment(w, dir);
      const log: string[] = [];
      preparesInFlight++;
      try {
        const r = await driver.prepare({ ...rest, functionName: name, instanceId: "prepare" }, { onLog: (line) => log.push(line) });
        if (r.image !== undefined) prepared.set(r.image, Date.now());
        return r.image === undefined ? { log } : { image: r.image, log };
      } finally {
        preparesInFlight--;
      }
    },
    async verify(w) {
      const dir = await cache!.ensure(w.digest);
      const { name, ...rest } = toDeployment(w, dir);
      const instanceId = `verify-${randomBytes(6).toString("hex")}`;
      const instance = await driver.start(
        { ...rest, functionName: name, instanceId },
        { onLog: (line) => logger.info({ fn: name, instance: line.instanceId, stream: line.stream }, line.message) },
      );
      await instance.close(VERIFY_CLOSE_GRACE_MS);
      return { startMs: instance.startMs };
    },
    async discover(r) {
      const bundle = await cache!.fetchTemp(r.digest);
      try {
        return { functions: await driver.discover({ artifactDir: bundle.dir, entry: r.entry, timeoutMs: r.timeoutMs }) };
      } finally {
        await bundle.cleanup();
      }
    },
    async pruneImages(r) {
      const d = driver as SandboxDriver & { pruneImages?: (keep: readonly string[]) => Promise<{ removed: number }> };
      if (typeof d.pruneImages !== "function") return { removed: 0 };
      // An image being built, or built but not yet activated by its deploy, is in no desired state yet: a
      // prune now would remove it between the build and the push or the activation. Skip while a prepare
      // runs; keep prepared images until a desired state lists them (then the caller's list does), or for
      // PREPARED_GRACE_MS after a deploy that never activated.
      if (preparesInFlight > 0) return { removed: 0 };
      const keep = new Set(r.keep);
      for (const [image, at] of prepared) {
        if (keep.has(image) || Date.now() - at > PREPARED_GRACE_MS) prepared.delete(image);
        else keep.add(image);
      }
      return d.pruneImages([...keep]);
    },
    async status(name): Promise<FunctionNodeStatus> {
      const s = gateway.stats()[name];
      if (s === undefined) return EMPTY_NODE_STATUS;
      return {
        version: applied.get(name)?.wire.version ?? null,
        instances: s.total, busy: s.busy, idle: Math.max(0, s.ready - s.busy), starting: s.starting, queued: s.waiting,
      };
    },
    async health() {
      return { ok: true, nodeId: link?.nodeId ?? "", controlId: current?.controlId ?? null, revision: current?.revision ?? null };
    },
    async setNodeState(s) {
      stateEpoch++;
      setDraining(s.state === "draining");
      return { state: draining ? "draining" : "ready" };
    },
  };

  function setDraining(v: boolean): void {
    if (v === draining) return;
    draining = v;
    logger.info({ state: v ? "draining" : "ready" }, v ? "draining: /readyz answers 404" : "ready again");
  }

  function currentLoad(): NodeLoadWire {
    let inFlight = 0;
    let queued = 0;
    let instances = 0;
    const warm: string[] = [];
    for (const [name, st] of Object.entries(gateway.stats())) {
      inFlight += st.busy;
      queued += st.waiting;
      instances += st.total;
      if (st.total > 0) warm.push(name);
    }
    const free = freemem();
    return { inFlight, queued, instances, memUsedBytes: totalmem() - free, memFreeBytes: free, warm };
  }

  /**
   * The control plane refused this node for good (removed, credential wrong): drop the desired state —
   * functions with their env and secrets, token hashes — stop talking to it, tell the caller.
   */
  async function refuse(err: unknown): Promise<void> {
    if (refused) return;
    refused = true;
    logger.error({ err: (err as Error).message, code: (err as { code?: unknown }).code }, "the control plane refused this node; dropping its desired state");
    tokenHashes = new Set();
    dispatchTokenHash = null;
    for (const name of [...applied.keys()]) {
      applied.delete(name);
      await gateway.removeFunction(name).catch(() => {});
    }
    current = null;
    if (syncTimer !== null) clearTimeout(syncTimer);
    if (heartbeatTimer !== null) clearInterval(heartbeatTimer);
    link?.onRefused?.(err);
  }

  function startHeartbeats(): void {
    if (link === null) return;
    let running = false;
    const beat = async (): Promise<void> => {
      if (running || closed || refused || control === null) return;
      running = true;
      try {
        const hb: Heartbeat = {
          nodeId: link.nodeId, url: advertised, load: currentLoad(),
          ...(current !== null ? { applied: { controlId: current.controlId, revision: current.revision, complete: !stale } } : {}),
        };
        const epoch = stateEpoch;
        const answer = parseWire(NodeStateSchema, await control.call<unknown>("POST", `${NODE_PROTOCOL_PREFIX}/nodes/heartbeat`, hb), "heartbeat answer");
        if (epoch === stateEpoch) setDraining(answer.state === "draining");
      } catch (err) {
        if (isRefusal(err)) await refuse(err);
        else logger.debug({ err }, "heartbeat failed");
      } finally {
        running = false;
      }
    };
    beatNow = () => void beat();
    void beat();
    heartbeatTimer = setInterval(() => void beat(), link.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS);
    heartbeatTimer.unref();
  }

  /** The node's credential: read from its file, or issued by a join (then written, 0600). */
  async function loadOrJoin(): Promise<JoinResult> {
    const l = link!;
    const file = l.credentialFile ?? join(l.dataDir, "node-credential.json");
    let text: string | null = null;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    if (text !== null) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new StratusError("INVALID_ARGUMENT", `${file} is not a node credential file`);
      }
      const c = parseWire(JoinResultSchema, parsed, "node credential file");
      if (c.nodeId !== l.nodeId) throw new StratusError("INVALID_ARGUMENT", `${file} belongs to node ${c.nodeId}, not ${l.nodeId}: start with --node-id ${c.nodeId}, or remove the file and join again`);
      return c;
    }
    if (l.joinToken === undefined) throw new StratusError("INVALID_ARGUMENT", `This node has not joined yet (no ${file}): pass --join-token`);
    const anon = createLinkClient(l.url, "", "control plane", { anonymous: true, ...(l.ca ? { ca: l.ca } : {}) });
    try {
      const body: JoinRequest = { joinToken: l.joinToken, nodeId: l.nodeId, url: advertised, driver: driver.name };
      const c = parseWire(JoinResultSchema, await anon.call<unknown>("POST", `${NODE_PROTOCOL_PREFIX}/nodes/join`, body), "join answer");
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify(c) + "\n", { mode: 0o600 });
      await chmod(tmp, 0o600);
      await rename(tmp, file);
      logger.info({ id: c.id, nodeId: c.nodeId }, "joined the control plane");
      return c;
    } finally {
      await anon.close().catch(() => {});
    }
  }

  async function serveProtocol(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (controlKey === null || !bearerMatches(req.headers.authorization, controlKey)) throw new StratusError("UNAUTHENTICATED", "A valid control-plane key is required");
    const route = protocolRoute(req.url);
    if (route === null) throw new StratusError("NOT_FOUND");
    const { parts } = route;
    const method = req.method ?? "GET";
    const one = parts.length === 1 ? parts[0] : null;
    if (one === "health" && method === "GET") return sendJson(res, 200, await nodeApi.health());
    if (one === "node-state" && method === "PUT") return sendJson(res, 200, await nodeApi.setNodeState(parseWire(NodeStateSchema, await readJsonBody(req), "node state") as NodeStateWire));
    if (one === "desired-state" && method === "PUT") return sendJson(res, 200, await nodeApi.applyState(parseWire(DesiredStateSchema, await readJsonBody(req), "desired state")));
    if (one === "prepare" && method === "POST") return sendJson(res, 200, await nodeApi.prepare(parseWire(WireDeploymentSchema, await readJsonBody(req), "deployment")));
    if (one === "verify" && method === "POST") return sendJson(res, 200, await nodeApi.verify(parseWire(WireDeploymentSchema, await readJsonBody(req), "deployment")));
    if (one === "discover" && method === "POST") return sendJson(res, 200, await nodeApi.discover(parseWire(DiscoverRequestSchema, await readJsonBody(req), "discovery request")));
    if (parts.length === 2 && parts[0] === "images" && parts[1] === "prune" && method === "POST") {
      return sendJson(res, 200, await nodeApi.pruneImages(parseWire(PruneRequestSchema, await readJsonBody(req), "prune request")));
    }
    if (parts.length === 3 && parts[0] === "functions" && parts[2] === "status" && method === "GET") {
      if (!isValidFunctionName(parts[1]!)) throw new StratusError("INVALID_FUNCTION_NAME");
      return sendJson(res, 200, await nodeApi.status(parts[1]!));
    }
    throw new StratusError("NOT_FOUND");
  }

  /** One convergence step: hello when (re)connecting, else "is my revision current?". */
  async function syncOnce(): Promise<void> {
    if (control === null || link === null) return;
    let state: DesiredState | undefined;
    if (!connected) {
      const hello: NodeHello = { nodeId: link.nodeId, url: advertised, driver: driver.name, ...(gatewayUrl !== undefined ? { gatewayUrl } : {}) };
      state = parseWire(DesiredStateSchema, await control.call<unknown>("POST", `${NODE_PROTOCOL_PREFIX}/nodes/hello`, hello), "desired state");
      connected = true;
      logger.info({ revision: state.revision, functions: state.functions.length }, "connected to the control plane");
    } else {
      const have = current === null || stale ? -1 : current.revision;
      const q = `have=${have}&control=${encodeURIComponent(current?.controlId ?? "")}&node=${encodeURIComponent(link.nodeId)}`;
      const raw = await control.call<unknown>("GET", `${NODE_PROTOCOL_PREFIX}/desired-state?${q}`);
      if (raw !== undefined) state = parseWire(DesiredStateSchema, raw, "desired state");
      // Another control-plane run (a restart): it does not know this node yet, so say hello again.
      if (state !== undefined && current !== null && state.controlId !== current.controlId) {
        connected = false;
        return syncOnce();
      }
    }
    if (state !== undefined) {
      await apply(state);
      beatNow();
    }
  }

  function scheduleSync(delayMs: number): void {
    if (closed) return;
    syncTimer = setTimeout(() => {
      syncTimer = null;
      syncOnce().then(
        () => scheduleSync(link!.resyncIntervalMs ?? DEFAULT_RESYNC_INTERVAL_MS),
        (err: unknown) => {
          if (isRefusal(err)) return void refuse(err);
          if (connected) logger.warn({ err }, "lost the control plane; reconnecting");
          connected = false;
          scheduleSync(Math.min(RECONNECT_DELAY_MS, link!.resyncIntervalMs ?? DEFAULT_RESYNC_INTERVAL_MS));
        },
      );
    }, delayMs);
    syncTimer.unref();
  }

  function startPruning(): void {
    const intervalMs = link?.imagePruneIntervalMs ?? 0;
    const d = driver as SandboxDriver & { pruneImages?: unknown };
    if (intervalMs <= 0 || typeof d.pruneImages !== "function") return;
    let running = false;
    const sweep = async (): Promise<void> => {
      if (running || closed || current === null) return;
      running = true;
      try {
        const keep = [...applied.values()].flatMap((a) => (a.wire.image ? [a.wire.image] : []));
        const { removed } = await nodeApi.pruneImages({ keep });
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

  function listen(server: Server, ...args: unknown[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once("error", onError);
      (server.listen as (...a: unknown[]) => void)(...args, () => {
        server.off("error", onError);
        resolve();
      });
    });
  }

  async function stopLink(): Promise<void> {
    closed = true;
    if (syncTimer !== null) clearTimeout(syncTimer);
    if (pruneTimer !== null) clearInterval(pruneTimer);
    if (heartbeatTimer !== null) clearInterval(heartbeatTimer);
    await shipper?.close();
    if (internal !== null) {
      const s = internal;
      await new Promise<void>((resolve) => {
        if (!s.listening) return resolve();
        s.close(() => resolve());
        s.closeAllConnections();
      });
    }
    await control?.close().catch(() => {});
  }

  return {
    gateway,
    get revision() {
      return current;
    },
    get artifactsFetched() {
      return cache?.fetched ?? 0;
    },
    get numericId() {
      return numericId;
    },
    get draining() {
      return draining;
    },
    async start({ port, host = "127.0.0.1" }) {
      const { removed } = await driver.reconcile();
      if (removed > 0) logger.info({ removed }, "reconcile removed leftovers of an earlier run");
      // Only now may the driver boot anything (pre-warm slots): reconcile must not meet them.
      await driver.open();
      await listen(gateway.server, port, host);
      const address = gateway.server.address() as AddressInfo;
      logger.info({ host: address.address, port: address.port, driver: driver.name }, "node agent listening");
      if (link !== null) {
        await mkdir(link.dataDir, { recursive: true, mode: 0o700 });
        if (link.internalSocket !== undefined) {
          internal = createServer(handleProtocol);
          await rm(link.internalSocket, { force: true });
          await listen(internal, link.internalSocket);
          await chmod(link.internalSocket, 0o600);
        }
        const h = address.family === "IPv6" ? `[${address.address}]` : address.address;
        advertised = link.advertiseUrl ?? (link.internalSocket !== undefined ? `unix:${link.internalSocket}` : `http://${h}:${address.port}`);
        const loopback = address.family === "IPv6" ? "[::1]" : "127.0.0.1";
        const wildcard = address.address === "0.0.0.0" || address.address === "::";
        gatewayUrl = link.gatewayUrl ?? (link.internalSocket === undefined ? advertised : `http://${wildcard ? loopback : h}:${address.port}`);
        if (control === null) {
          const c = await loadOrJoin();
          numericId = c.id;
          controlKey = c.controlKey;
          control = createLinkClient(link.url, c.credential, "control plane", { proofKey: c.controlKey, ...(link.ca ? { ca: link.ca } : {}) });
        }
        // First convergence, bounded: a node whose control plane is not up yet serves nothing and keeps trying.
        const deadline = Date.now() + (link.firstSyncTimeoutMs ?? 30_000);
        for (let attempt = 0; !closed; attempt++) {
          try {
            await syncOnce();
            break;
          } catch (err) {
            connected = false;
            // A refused secret or credential will not get better by retrying: say so and stop.
            if ((err as { code?: unknown }).code === "UNAUTHENTICATED") {
              throw new StratusError("UNAUTHENTICATED", "The control plane refused this node's link secret", { cause: err });
            }
            if (isRefusal(err)) throw err;
            if (Date.now() + RECONNECT_DELAY_MS > deadline) {
              logger.warn({ err }, "no desired state from the control plane yet; serving nothing until it answers");
              break;
            }
            if (attempt === 0) logger.info({ err: (err as Error).message }, "waiting for the control plane");
            await new Promise((r) => setTimeout(r, RECONNECT_DELAY_MS));
          }
        }
        scheduleSync(connected ? link.resyncIntervalMs ?? DEFAULT_RESYNC_INTERVAL_MS : RECONNECT_DELAY_MS);
        startHeartbeats();
        startPruning();
      }
      return { host: address.address, port: address.port, removed };
    },
    async resync() {
      try {
        await syncOnce();
      } catch (err) {
        connected = false;
        throw err;
      }
    },
    async drain(deadlineMs) {
      await gateway.drain(deadlineMs);
      await stopLink();
      await driver.close();
    },
    async close() {
      await gateway.close();
      await stopLink();
      await driver.close();
    },
  };
}
