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
 * Work for "a node" (prepare, verify, discover) goes to the node heard from most recently; issue 14
 * adds placement. Nodes are never forgotten yet (a node that comes back under the same id replaces its entry).
 */
import { randomUUID } from "node:crypto";
import { stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { StratusError } from "../shared/errors";
import type { Logger } from "../shared/logger";
import {
  EMPTY_NODE_STATUS, NodeHelloSchema, TelemetryBatchSchema, bearerMatches, deriveLinkKeys, isArtifactDigest, parseWire,
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

/** A connected node. */
export interface FleetNode {
  readonly nodeId: string;
  readonly url: string;
  readonly driver: string;
  readonly client: NodeApi & { close(): Promise<void> };
  /** When it last said hello or resynced, epoch ms. */
  lastSeen: number;
}

export interface NodeFleetOptions {
  /** The shared link secret (see deriveLinkKeys). */
  readonly secret: string;
  readonly logger: Logger;
  /** Where artifacts live: `<artifactsDir>/sha256-<hex>/`. */
  readonly artifactsDir: string;
  /** What every node should serve now, read from the store. */
  readonly buildState: () => Promise<{ functions: WireDeployment[]; tokenHashes: string[] }>;
  /** Receives every telemetry batch, validated (the observability pipeline). */
  readonly ingest: (batch: TelemetryBatch) => void;
}

export interface NodeFleet extends NodeFleetApi {
  /** Serves the node-facing routes under /internal/v1 (checks the node key). */
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** Publishes a directory (a discovery bundle) under its tree digest until the returned function is called. */
  publishBundle(digest: string, dir: string): () => void;
  /** The connected nodes. */
  nodes(): readonly FleetNode[];
  /** Latest pool samples of every node, merged by function (metrics gauges). */
  pools(): PoolSamples;
  /** The current desired state. */
  desiredState(): Promise<DesiredState>;
  close(): Promise<void>;
}

/** Creates the fleet (see the file comment). */
export function createNodeFleet(options: NodeFleetOptions): NodeFleet {
  const { logger } = options;
  const keys = deriveLinkKeys(options.secret);
  const controlId = randomUUID();
  let revision = 1;
  let cached: { revision: number; state: Promise<DesiredState> } | null = null;
  const nodes = new Map<string, FleetNode>();
  const poolsByNode = new Map<string, PoolSamples>();
  const bundles = new Map<string, string>();

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

  /** The node heard from most recently (hello, telemetry or pool samples, at least every 2 s). */
  function pick(): FleetNode {
    let best: FleetNode | null = null;
    for (const n of nodes.values()) if (best === null || n.lastSeen > best.lastSeen) best = n;
    if (best === null) throw new StratusError("UNAVAILABLE", "No node agent is connected to the control plane");
    return best;
  }

  async function hello(raw: unknown, viaUnixSocket: boolean): Promise<DesiredState> {
    const h = parseWire(NodeHelloSchema, raw, "node hello");
    if (!/^(https?:\/\/|unix:\/)/.test(h.url)) throw new StratusError("INVALID_ARGUMENT", "A node URL is http(s)://… or unix:/…");
    // Only a node on this machine (it reached us over a Unix socket) may name a local socket.
    if (h.url.startsWith("unix:") && !viaUnixSocket) throw new StratusError("INVALID_ARGUMENT", "A node that connects over the network has an http(s):// URL");
    const old = nodes.get(h.nodeId);
    if (old === undefined || old.url !== h.url) {
      if (old) await old.client.close().catch(() => {});
      nodes.set(h.nodeId, { nodeId: h.nodeId, url: h.url, driver: h.driver, client: createNodeClient(h.url, keys.control), lastSeen: Date.now() });
      logger.info({ nodeId: h.nodeId, url: h.url, driver: h.driver }, "node connected");
    } else old.lastSeen = Date.now();
    return desiredState();
  }

  async function artifact(digest: string, res: ServerResponse): Promise<void> {
    if (!isArtifactDigest(digest)) throw new StratusError("INVALID_ARGUMENT", "Not an artifact digest");
    const dir = bundles.get(digest) ?? join(options.artifactsDir, digest);
    if (!(await stat(dir).then((s) => s.isDirectory(), () => false))) throw new StratusError("NOT_FOUND", `No artifact ${digest}`);
    res.writeHead(200, { "content-type": "application/gzip" });
    await pipeline(packTree(dir), res);
  }

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!bearerMatches(req.headers.authorization, keys.node)) throw new StratusError("UNAUTHENTICATED", "A valid node key is required");
    const route = protocolRoute(req.url);
    if (route === null) throw new StratusError("NOT_FOUND");
    const { parts, query } = route;
    const method = req.method ?? "GET";
    if (parts.length === 2 && parts[0] === "nodes" && parts[1] === "hello" && method === "POST") return sendJson(res, 200, await hello(await readJsonBody(req), req.socket.remoteAddress === undefined));
    if (parts.length === 1 && parts[0] === "desired-state" && method === "GET") {
      const have = Number(query.get("have") ?? "-1");
      const seen = nodes.get(query.get("node") ?? "");
      if (seen) seen.lastSeen = Date.now();
      if (query.get("control") === controlId && have === revision) return sendJson(res, 204);
      return sendJson(res, 200, await desiredState());
    }
    if (parts.length === 2 && parts[0] === "artifacts" && method === "GET") return artifact(parts[1]!, res);
    if (parts.length === 1 && parts[0] === "telemetry" && method === "POST") {
      const batch = parseWire(TelemetryBatchSchema, await readJsonBody(req), "telemetry batch") as TelemetryBatch;
      poolsByNode.set(batch.nodeId, batch.pools);
      const n = nodes.get(batch.nodeId);
      if (n) n.lastSeen = Date.now();
      options.ingest(batch);
      return sendJson(res, 204);
    }
    throw new StratusError("NOT_FOUND");
  }

  return {
    handle(req, res) {
      serve(req, res).catch((err) => sendProtocolError(res, err, logger, req.url));
    },
    async publish() {
      const rev = ++revision;
      const state = await desiredState();
      await Promise.all([...nodes.values()].map((n) => n.client.applyState(state, { signal: AbortSignal.timeout(PUSH_TIMEOUT_MS) }).catch((err) => {
        logger.warn({ err, nodeId: n.nodeId, revision: rev }, "push of the desired state failed; the node converges at its next resync");
      })));
      return rev;
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
      bundles.set(digest, dir);
      return () => {
        if (bundles.get(digest) === dir) bundles.delete(digest);
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
