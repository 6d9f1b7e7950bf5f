/**
 * The control plane's side of the node protocol (src/shared/node-protocol.ts): the nodes that said hello,
 * the desired state with its revision, and the routes nodes call (hello, resync, artifacts by digest,
 * telemetry).
 *
 * Revisions: `controlId` is random per control-plane run and `revision` counts up from 1 within it; each
 * `publish()` (called after the store committed a change) bumps it, so the state built for revision N
 * reflects every change committed before N was taken. States are built from the store on demand and
 * cached per revision. Pushes go to every node and are awaited (a revoked token stops working on every
 * reachable node before the API answers); a failed push is logged, and that node converges at its next
 * resync (at most its resync interval, DEFAULT_RESYNC_INTERVAL_MS = 10 s).
 *
 * Work for "a node" (prepare, verify, discover) goes to the ready node heard from most recently.
 *
 * Membership (docs/cluster.md "Nodes and membership"): a node authenticates either with the shared link
 * secret (`stratus up`'s in-process node, `stratus node --token`) or — the cluster way — with its own
 * credential (`snc_…`, issued at join, checked against the store's hash on EVERY request, so a removal
 * made through any control plane refuses it at once). A credential node may only speak as itself (its
 * hello, telemetry and heartbeat name it). Answers to credential nodes are signed with their control
 * key (CONTROL_PROOF_HEADER). Heartbeats (every ~2 s) carry load, are written to the store and answer
 * the node's drain state; a node silent for LOST_AFTER_MS reads as `lost`.
 *
 * Several control planes on one PostgreSQL: `publish()` bumps the store's config revision, which
 * NOTIFYs the others; `refresh()` (called on that notification, and by the periodic revision check in
 * control-plane.ts) bumps this control plane's revision and pushes to its own nodes.
 */
import { randomUUID } from "node:crypto";
import type { MembershipStore, NodeLoad, NodeRecord } from "../store/store";
import { stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { StratusError } from "../shared/errors";
import type { Logger } from "../shared/logger";
import {
  AsyncRequestSchema, EMPTY_NODE_STATUS, HeartbeatSchema, JoinRequestSchema, NodeHelloSchema, TelemetryBatchSchema, bearerMatches, deriveLinkKeys, isArtifactDigest, parseWire,
  type AsyncAccepted, type AsyncRequestWire, type JoinResult, type NodeStateWire,
  type DesiredState, type FunctionNodeStatus, type NodeApi, type PoolSamples, type TelemetryBatch, type WireDeployment,
} from "../shared/node-protocol";
import { protocolRoute, readJsonBody, sendJson, sendProtocolError } from "../shared/node-link";
import { packTree } from "./artifact-tar";
import { createNodeClient } from "./node-client";
import type { NodeFleetApi } from "./node-api";

/**
 * Longest wait for one node to apply a pushed state, ms: applying may download artifacts; past this the
 * push counts as missed and the node converges at its next resync.
 */
const PUSH_TIMEOUT_MS = 60_000;

/** A node silent (no heartbeat, resync or telemetry) for this long reads as `lost`, ms. */
export const LOST_AFTER_MS = 10_000;

/** A connected node. */
export interface FleetNode {
  readonly nodeId: string;
  /** Registered (join-token) nodes: the store's numeric id; null for a shared-secret node. */
  readonly id: number | null;
  readonly url: string;
  /** Its gateway's base URL, for the async worker's dispatches (absent: it gets none). */
  readonly gatewayUrl?: string;
  readonly driver: string;
  readonly client: NodeApi & { close(): Promise<void> };
  /** When it last said hello, resynced, heartbeat or sent telemetry, epoch ms. */
  lastSeen: number;
  state: "ready" | "draining";
  load: NodeLoad | null;
  /** What it last reported having applied (heartbeat, resync, push answer); null: nothing of this run yet. */
  applied: { revision: number; complete: boolean } | null;
}

/** A node as `stratus nodes` lists it. */
export interface MemberView {
  /** Numeric id (HAProxy server id); null for the shared-secret node of `stratus up`. */
  readonly id: number | null;
  readonly name: string;
  readonly url: string;
  readonly driver: string;
  readonly state: "ready" | "draining" | "lost";
  readonly lastSeen: number | null;
  readonly load: NodeLoad | null;
  /** Connected to this control plane (pushes go from here). */
  readonly connected: boolean;
}

/** How the authenticated peer of a node-facing request is known. */
type Peer = { kind: "shared" } | { kind: "node"; record: NodeRecord; controlKey: string };

export interface NodeFleetOptions {
  /** The shared link secret (see deriveLinkKeys). */
  readonly secret: string;
  readonly logger: Logger;
  /** Where artifacts live: `<artifactsDir>/sha256-<hex>/`. */
  readonly artifactsDir: string;
  /** What every node should serve now, read from the store. */
  readonly buildState: () => Promise<{ functions: WireDeployment[]; tokenHashes: string[]; dispatchTokenHash?: string }>;
  /**
   * Commits an async request a node's gateway received (POST /internal/v1/async; src/events/intake.ts)
   * and resolves the 202 body. Absent: that route answers 404 NOT_FOUND.
   */
  readonly asyncIntake?: (request: AsyncRequestWire) => Promise<AsyncAccepted>;
  /** Receives every telemetry batch, validated (the observability pipeline). */
  readonly ingest: (batch: TelemetryBatch) => void;
  /** Membership: join tokens, node credentials, heartbeats, the shared config revision. */
  readonly membership: MembershipStore;
  /** The control key of a node credential (controlKeyFor with the shared master key). */
  readonly controlKeyOf: (credential: string) => string;
  /** Clock, epoch ms (default Date.now). */
  readonly now?: () => number;
  /** Called after the node table changed here (join, hello, drain/undrain, removal): the HAProxy sync. */
  readonly onMembershipChange?: () => void;
}

export interface NodeFleet extends NodeFleetApi {
  /** Serves the node-facing routes under /internal/v1 (checks the node key). */
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** Publishes a directory (a discovery bundle) under its tree digest until the returned function is called. */
  publishBundle(digest: string, dir: string): () => void;
  /** The connected nodes. */
  nodes(): readonly FleetNode[];
  /**
   * The gateway base URL of a ready, connected node that advertised one (round robin), for the async
   * worker; null when there is none (jobs wait).
   */
  dispatchTarget(): string | null;
  /** Latest pool samples of every node, merged by function (metrics gauges). */
  pools(): PoolSamples;
  /** The current desired state. */
  desiredState(): Promise<DesiredState>;
  /** Another control plane changed the store: new revision, pushed to this control plane's nodes. */
  refresh(): Promise<number>;
  /** The store's config revision this control plane last built from (see control-plane.ts). */
  knownConfigRevision: number;
  close(): Promise<void>;
}

/** Creates the fleet (see the file comment). */
export function createNodeFleet(options: NodeFleetOptions): NodeFleet {
  const { logger, membership } = options;
  const now = options.now ?? Date.now;
  const keys = deriveLinkKeys(options.secret);
  let knownConfigRevision = -1;
  const controlId = randomUUID();
  let revision = 1;
  let cached: { revision: number; state: Promise<DesiredState> } | null = null;
  const nodes = new Map<string, FleetNode>();
  const poolsByNode = new Map<string, PoolSamples>();
  // Published discovery bundles: digest → the directories that hold it. Two builds of identical code
  // publish one digest from two work dirs; each unpublishes only its own, and the digest stays served
  // while any build still discovers from it.
  const bundles = new Map<string, string[]>();

  function desiredState(): Promise<DesiredState> {
    if (cached?.revision === revision) return cached.state;
    const rev = revision;
    const state = options.buildState().then((s) => ({ controlId, revision: rev, ...s }));
    cached = { revision: rev, state };
    state.catch(() => {
      if (cached?.state === state) cached = null;
    });
    return state;
  }

  const isLost = (lastSeen: number | null) => lastSeen === null || now() - lastSeen > LOST_AFTER_MS;

  /** The ready node heard from most recently (hello, resync, heartbeat or telemetry, about every 2 s). */
  function pick(): FleetNode {
    let best: FleetNode | null = null;
    for (const n of nodes.values()) {
      if (n.state === "draining" || isLost(n.lastSeen)) continue;
      if (best === null || n.lastSeen > best.lastSeen) best = n;
    }
    if (best === null) throw new StratusError("UNAVAILABLE", "No ready node agent is connected to the control plane");
    return best;
  }

  let dispatchTurn = 0;
  /**
   * A node's gateway for the next async dispatch, round robin. Only nodes that have applied this run's desired
   * state count: a node that has just (re)connected would answer FUNCTION_NOT_FOUND and spend an attempt.
   * Nodes that applied the current revision completely come first; if none has, any node that applied some
   * revision of this run (a node stuck on one broken function still serves the others).
   */
  function dispatchTarget(): string | null {
    const ready = [...nodes.values()].filter((n) => n.gatewayUrl !== undefined && n.state !== "draining" && !isLost(n.lastSeen) && n.applied !== null);
    const converged = ready.filter((n) => n.applied!.complete && n.applied!.revision === revision);
    return roundRobin(converged.length > 0 ? converged : ready);
  }

  function roundRobin(ready: FleetNode[]): string | null {
    if (ready.length === 0) return null;
    dispatchTurn = (dispatchTurn + 1) % 1_000_000;
    return ready[dispatchTurn % ready.length]!.gatewayUrl!;
  }

  function checkUrl(url: string, viaUnixSocket: boolean): void {
    if (!/^(https?:\/\/|unix:\/)/.test(url)) throw new StratusError("INVALID_ARGUMENT", "A node URL is http(s)://… or unix:/…");
    // Only a node on this machine (it reached us over a Unix socket) may name a local socket.
    if (url.startsWith("unix:") && !viaUnixSocket) throw new StratusError("INVALID_ARGUMENT", "A node that connects over the network has an http(s):// URL");
  }

  /** A credential node may only speak as itself. */
  function assertSelf(peer: Peer, nodeId: string): void {
    if (peer.kind === "node" && peer.record.name !== nodeId) {
      throw new StratusError("PERMISSION_DENIED", `This credential belongs to node ${peer.record.name}, not ${nodeId}`);
    }
  }

  async function hello(raw: unknown, viaUnixSocket: boolean, peer: Peer): Promise<DesiredState> {
    const h = parseWire(NodeHelloSchema, raw, "node hello");
    checkUrl(h.url, viaUnixSocket);
    if (h.gatewayUrl !== undefined && !/^https?:\/\//.test(h.gatewayUrl)) throw new StratusError("INVALID_ARGUMENT", "A node's gateway URL is http(s)://…");
    assertSelf(peer, h.nodeId);
    const old = nodes.get(h.nodeId);
    const controlKey = peer.kind === "node" ? peer.controlKey : keys.control;
    const id = peer.kind === "node" ? peer.record.id : null;
    if (old === undefined || old.url !== h.url || old.id !== id || old.gatewayUrl !== h.gatewayUrl) {
      if (old) await old.client.close().catch(() => {});
      nodes.set(h.nodeId, {
        nodeId: h.nodeId, id, url: h.url, ...(h.gatewayUrl !== undefined ? { gatewayUrl: h.gatewayUrl } : {}), driver: h.driver, client: createNodeClient(h.url, controlKey), lastSeen: now(),
        state: peer.kind === "node" ? peer.record.state : "ready", load: null, applied: null,
      });
      logger.info({ nodeId: h.nodeId, id, url: h.url, driver: h.driver }, "node connected");
      if (id !== null) options.onMembershipChange?.();
    } else {
      old.lastSeen = now();
      // A hello means a (re)connect: whatever it reported before, it has not applied the answer yet.
      old.applied = null;
    }
    return desiredState();
  }

  async function joinNode(raw: unknown, viaUnixSocket: boolean): Promise<JoinResult> {
    const j = parseWire(JoinRequestSchema, raw, "join request");
    checkUrl(j.url, viaUnixSocket);
    const { record, credential } = await membership.joinNode(j.joinToken, { name: j.nodeId, url: j.url, driver: j.driver });
    logger.info({ nodeId: record.name, id: record.id, url: record.url }, "node joined");
    options.onMembershipChange?.();
    return { id: record.id, nodeId: record.name, credential, controlKey: options.controlKeyOf(credential) };
  }

  async function authenticate(header: string | undefined): Promise<Peer> {
    if (bearerMatches(header, keys.node)) return { kind: "shared" };
    const presented = header !== undefined && header.startsWith("Bearer ") ? header.slice(7).trim() : "";
    if (presented.startsWith("snc_")) {
      const record = await membership.verifyNodeCredential(presented);
      return { kind: "node", record, controlKey: options.controlKeyOf(presented) };
    }
    throw new StratusError("UNAUTHENTICATED", "A valid node key or node credential is required");
  }

  async function heartbeat(raw: unknown, viaUnixSocket: boolean, peer: Peer): Promise<NodeStateWire> {
    const hb = parseWire(HeartbeatSchema, raw, "heartbeat");
    checkUrl(hb.url, viaUnixSocket);
    assertSelf(peer, hb.nodeId);
    const n = nodes.get(hb.nodeId);
    let state: "ready" | "draining" = n?.state ?? "ready";
    if (peer.kind === "node") {
      const r = await membership.recordHeartbeat(peer.record.id, hb.load, hb.url);
      if (r === null) throw new StratusError("NODE_CREDENTIAL_REVOKED", `Node ${peer.record.id} was removed`);
      state = r.state;
      // Back from lost, or at a new address: HAProxy should hear of it now, not at the next period.
      if (isLost(peer.record.lastSeen) || peer.record.url !== hb.url) options.onMembershipChange?.();
    }
    if (n) {
      n.lastSeen = now();
      n.load = hb.load;
      n.state = state;
      if (hb.applied !== undefined) noteApplied(n, hb.applied.controlId, hb.applied.revision, hb.applied.complete);
    }
    return { state };
  }

  /** Drops connected nodes the store no longer lists (removed through any control plane). */
  async function dropRemoved(): Promise<void> {
    if (![...nodes.values()].some((n) => n.id !== null)) return;
    const registered = new Set((await membership.listNodes()).map((r) => r.id));
    for (const [key, n] of nodes) {
      if (n.id === null || registered.has(n.id)) continue;
      nodes.delete(key);
      poolsByNode.delete(key);
      await n.client.close().catch(() => {});
      logger.info({ nodeId: n.nodeId, id: n.id }, "node removed: disconnected");
    }
  }

  /** Records what a node reports having applied; a report about another control-plane run is ignored. */
  function noteApplied(n: FleetNode, reportedControlId: string, rev: number, complete: boolean): void {
    if (reportedControlId !== controlId) return;
    if (n.applied !== null && n.applied.revision > rev) return;
    n.applied = { revision: rev, complete };
  }

  async function pushAll(rev: number): Promise<void> {
    await dropRemoved();
    const state = await desiredState();
    await Promise.all([...nodes.values()].map((n) => n.client.applyState(state, { signal: AbortSignal.timeout(PUSH_TIMEOUT_MS) }).then(
      (r) => {
        if (typeof r?.revision === "number" && r.revision >= 0) noteApplied(n, controlId, r.revision, r.complete !== false);
      },
      (err) => logger.warn({ err, nodeId: n.nodeId, revision: rev }, "push of the desired state failed; the node converges at its next resync"),
    )));
  }

  async function artifact(digest: string, res: ServerResponse): Promise<void> {
    if (!isArtifactDigest(digest)) throw new StratusError("INVALID_ARGUMENT", "Not an artifact digest");
    const dir = bundles.get(digest)?.[0] ?? join(options.artifactsDir, digest);
    if (!(await stat(dir).then((s) => s.isDirectory(), () => false))) throw new StratusError("NOT_FOUND", `No artifact ${digest}`);
    res.writeHead(200, { "content-type": "application/gzip" });
    await pipeline(packTree(dir), res);
  }

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const route = protocolRoute(req.url);
    if (route === null) throw new StratusError("NOT_FOUND");
    const { parts, query } = route;
    const method = req.method ?? "GET";
    const viaUnixSocket = req.socket.remoteAddress === undefined;
    // The one unauthenticated route: the join token in the body is the authentication.
    if (parts.length === 2 && parts[0] === "nodes" && parts[1] === "join" && method === "POST") return sendJson(res, 200, await joinNode(await readJsonBody(req), viaUnixSocket));
    // Nothing is read or answered before the peer is known.
    const peer = await authenticate(req.headers.authorization);
    const proof = peer.kind === "node" ? peer.controlKey : keys.control;
    if (parts.length === 2 && parts[0] === "nodes" && parts[1] === "hello" && method === "POST") return sendJson(res, 200, await hello(await readJsonBody(req), viaUnixSocket, peer), proof);
    if (parts.length === 2 && parts[0] === "nodes" && parts[1] === "heartbeat" && method === "POST") return sendJson(res, 200, await heartbeat(await readJsonBody(req), viaUnixSocket, peer), proof);
    if (parts.length === 1 && parts[0] === "desired-state" && method === "GET") {
      const have = Number(query.get("have") ?? "-1");
      const name = peer.kind === "node" ? peer.record.name : query.get("node") ?? "";
      const seen = nodes.get(name);
      if (seen) {
        seen.lastSeen = now();
        // `have` is the revision the node applied completely (-1: none, or some function failed).
        if (query.get("control") === controlId && have >= 0) noteApplied(seen, controlId, have, true);
      }
      if (query.get("control") === controlId && have === revision) return sendJson(res, 204);
      return sendJson(res, 200, await desiredState(), proof);
    }
    if (parts.length === 2 && parts[0] === "artifacts" && method === "GET") return artifact(parts[1]!, res);
    if (parts.length === 1 && parts[0] === "async" && method === "POST" && options.asyncIntake !== undefined) {
      const r = parseWire(AsyncRequestSchema, await readJsonBody(req), "async request");
      return sendJson(res, 200, await options.asyncIntake(r), proof);
    }
    if (parts.length === 1 && parts[0] === "telemetry" && method === "POST") {
      const batch = parseWire(TelemetryBatchSchema, await readJsonBody(req), "telemetry batch") as TelemetryBatch;
      assertSelf(peer, batch.nodeId);
      poolsByNode.set(batch.nodeId, batch.pools);
      const n = nodes.get(batch.nodeId);
      if (n) n.lastSeen = now();
      options.ingest(batch);
      return sendJson(res, 204);
    }
    throw new StratusError("NOT_FOUND");
  }

  return {
    dispatchTarget,
    handle(req, res) {
      serve(req, res).catch((err) => sendProtocolError(res, err, logger, req.url));
    },
    async publish() {
      // The shared revision first: other control planes hear of it (NOTIFY) and push to their nodes.
      knownConfigRevision = await membership.bumpConfigRevision();
      const rev = ++revision;
      await pushAll(rev);
      return rev;
    },
    async refresh() {
      const rev = ++revision;
      await pushAll(rev);
      return rev;
    },
    get knownConfigRevision() {
      return knownConfigRevision;
    },
    set knownConfigRevision(v: number) {
      knownConfigRevision = v;
    },
    async members(): Promise<MemberView[]> {
      const out: MemberView[] = [];
      const byName = new Map([...nodes.values()].map((n) => [n.nodeId, n]));
      for (const r of await membership.listNodes()) {
        const c = byName.get(r.name);
        byName.delete(r.name);
        out.push({ id: r.id, name: r.name, url: r.url, driver: r.driver, state: isLost(r.lastSeen) ? "lost" : r.state, lastSeen: r.lastSeen, load: r.load, connected: c !== undefined && c.id === r.id });
      }
      for (const n of byName.values()) {
        if (n.id !== null) continue;
        out.push({ id: null, name: n.nodeId, url: n.url, driver: n.driver, state: isLost(n.lastSeen) ? "lost" : n.state, lastSeen: n.lastSeen, load: n.load, connected: true });
      }
      return out;
    },
    async setNodeState(id, state) {
      const r = await membership.setNodeState(id, state);
      options.onMembershipChange?.();
      // A node connected here hears it now; one connected elsewhere at its next heartbeat (≤ 2 s).
      const n = [...nodes.values()].find((x) => x.id === id);
      if (n) {
        n.state = state;
        await n.client.setNodeState({ state }).catch((err) => logger.warn({ err, nodeId: n.nodeId }, "could not tell the node its state; it learns it at its next heartbeat"));
      }
      return r;
    },
    async removeNode(id) {
      const r = await membership.removeNode(id);
      await dropRemoved();
      options.onMembershipChange?.();
      // Other control planes drop it at the notification.
      knownConfigRevision = await membership.bumpConfigRevision();
      return r;
    },
    prepare: (d) => pick().client.prepare(d),
    verify: (d) => pick().client.verify(d),
    discover: (r) => pick().client.discover(r),
    async status(name): Promise<FunctionNodeStatus> {
      if (nodes.size === 0) return EMPTY_NODE_STATUS;
      const all = await Promise.all([...nodes.values()].map((n) => n.client.status(name).catch(() => EMPTY_NODE_STATUS)));
      return all.reduce((a, s) => ({
        version: a.version ?? s.version, instances: a.instances + s.instances, busy: a.busy + s.busy, idle: a.idle + s.idle,
        starting: a.starting + s.starting, queued: a.queued + s.queued,
      }), EMPTY_NODE_STATUS);
    },
    publishBundle(digest, dir) {
      const dirs = bundles.get(digest) ?? [];
      dirs.push(dir);
      bundles.set(digest, dirs);
      let published = true;
      return () => {
        if (!published) return;
        published = false;
        const left = bundles.get(digest) ?? [];
        const at = left.indexOf(dir);
        if (at !== -1) left.splice(at, 1);
        if (left.length === 0) bundles.delete(digest);
      };
    },
    nodes: () => [...nodes.values()],
    pools() {
      const out: PoolSamples = {};
      for (const samples of poolsByNode.values()) {
        for (const [fn, s] of Object.entries(samples)) {
          const a = out[fn];
          out[fn] = a === undefined ? { ...s } : {
            starting: a.starting + s.starting, busy: a.busy + s.busy, idle: a.idle + s.idle, retiring: a.retiring + s.retiring, waiting: a.waiting + s.waiting,
          };
        }
      }
      return out;
    },
    desiredState,
    async close() {
      await Promise.all([...nodes.values()].map((n) => n.client.close().catch(() => {})));
      nodes.clear();
    },
  };
}
