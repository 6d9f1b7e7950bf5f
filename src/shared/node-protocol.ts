/**
 * The node protocol: everything the control plane and a node agent say to each other. Neither side owns
 * it; both import it, and it is the ONLY module the two sides share beyond the small kernel of
 * `src/shared/` (a test, test/import-boundary.test.ts, keeps it that way). It is designed for many nodes
 * on other machines: plain HTTP(S) with JSON bodies, each direction authenticated (see `deriveLinkKeys`).
 *
 * Control plane serves (node → control), under `/internal/v1`:
 *   POST /nodes/join             JoinRequest → JoinResult        (no bearer: the join token is in the body)
 *   POST /nodes/hello            NodeHello → DesiredState        (start and every reconnect)
 *   POST /nodes/heartbeat        Heartbeat → HeartbeatAnswer     (every ~2 s: load; answers the drain state)
 *   GET  /desired-state?have=R&control=C&node=ID → DesiredState, or 204 when R/C is still current (resync)
 *   GET  /artifacts/sha256-<hex> → application/gzip tar of the artifact tree (by digest, never a path)
 *   POST /telemetry              TelemetryBatch → 204           (records, output lines, events, pool samples)
 * Node serves (control → node), under `/internal/v1`:
 *   PUT  /desired-state          DesiredState → { revision }    (push: an optimisation over resync)
 *   PUT  /node-state             { state } → { state }           (drain / undrain, pushed at once)
 *   POST /prepare                WireDeployment → PrepareResult (Docker: build + push the image)
 *   POST /verify                 WireDeployment → VerifyResult  (one instance started and stopped)
 *   POST /discover               DiscoverRequest → DiscoverResult (sandboxed discovery of a build)
 *   POST /images/prune           PruneRequest → PruneResult
 *   GET  /functions/:name/status → FunctionNodeStatus
 *   GET  /health                 → NodeHealth
 *
 * Invariant: a node holds nothing the control plane cannot give it again. Its desired state (functions,
 * their env including decrypted secrets, the hashes of valid invocation tokens) lives in memory only;
 * artifacts are cached by digest and verified, so a node with an empty disk converges by asking.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { FunctionConfigSchema } from "./function-config";
import type { VersionDeployment } from "./function-version";
import type { DiscoveredFunction } from "./discovery";
import type { InstanceLogLine } from "./instance-output";
import { isValidFunctionName } from "./names";
import { StratusError } from "./errors";
import { EVENT_FIELD_MAX, LOG_LEVELS, PLATFORM_EVENT_KINDS, type InvocationRecord, type PlatformEvent } from "./invocation";

/** Path prefix of every protocol route, on both sides. */
export const NODE_PROTOCOL_PREFIX = "/internal/v1";

/** Largest JSON body either side accepts, bytes (a desired state with every function's env). */
export const MAX_PROTOCOL_BODY_BYTES = 16 * 1024 * 1024;

/** `sha256-<64 hex>`: how every artifact is named on the wire and in every cache. */
export const ARTIFACT_DIGEST_PATTERN = /^sha256-[0-9a-f]{64}$/;

/** True for a well-formed artifact digest. */
export function isArtifactDigest(v: unknown): v is string {
  return typeof v === "string" && ARTIFACT_DIGEST_PATTERN.test(v);
}

const Name = z.string().refine(isValidFunctionName, "invalid function name");
const Digest = z.string().regex(ARTIFACT_DIGEST_PATTERN, "not a sha256-<hex> digest");

/**
 * One function version as a node is told to run it. The artifact is named by its digest: the node
 * fetches it from the control plane (GET /artifacts/<digest>) and verifies it. `env` is config.env + the
 * function's env vars + its decrypted secrets (later wins); `image` is the Docker reference, if any.
 */
export const WireDeploymentSchema = z.strictObject({
  name: Name,
  version: z.string().min(1).max(200),
  digest: Digest,
  entry: z.string().min(1),
  exportName: z.string().min(1),
  config: FunctionConfigSchema,
  env: z.record(z.string(), z.string()),
  image: z.string().optional(),
});
/** The wire form of a VersionDeployment (src/shared/function-version.ts): the same type, checked by the schema. */
export type WireDeployment = VersionDeployment;
// The schema and the type cannot drift: each must be assignable to the other.
const _wireIsVersionDeployment: (w: z.output<typeof WireDeploymentSchema>) => VersionDeployment = (w) => w;
const _versionDeploymentIsWire: (v: VersionDeployment) => z.input<typeof WireDeploymentSchema> = (v) => v;
void _wireIsVersionDeployment;
void _versionDeploymentIsWire;

/**
 * Everything a node should serve, with a revision. `controlId` names one run of a control plane (a
 * restarted control plane starts a new sequence); within one `controlId`, a higher `revision` is newer.
 * `tokenHashes` are the sha256 hex digests of every unrevoked token allowed to invoke non-public
 * functions: the node checks tokens against them without a store (revoking bumps the revision).
 */
export const DesiredStateSchema = z.strictObject({
  controlId: z.string().min(1).max(100),
  revision: z.number().int().nonnegative(),
  functions: z.array(WireDeploymentSchema),
  tokenHashes: z.array(z.string().regex(/^[0-9a-f]{64}$/)),
  /** sha256 (hex) of the control plane's async-worker dispatch token (docs/events.md); absent: no worker. */
  dispatchTokenHash: z.string().regex(/^[0-9a-f]{64}$/).optional(),
});
export interface DesiredState {
  readonly controlId: string;
  readonly revision: number;
  readonly functions: readonly WireDeployment[];
  readonly tokenHashes: readonly string[];
  readonly dispatchTokenHash?: string;
}

/** What a node says when it starts or reconnects. `url` is where the control plane reaches its API
 *  (`http(s)://host:port`, or `unix:<socket path>` for a node on the same machine). */
export const NodeHelloSchema = z.strictObject({
  nodeId: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/),
  url: z.string().min(1).max(2000),
  driver: z.string().min(1).max(50),
  /** Where the control plane's async worker sends invocations (`http://host:port`, the gateway); absent: none. */
  gatewayUrl: z.string().min(1).max(2000).optional(),
});
export type NodeHello = z.infer<typeof NodeHelloSchema>;

/** Sandboxed discovery of a build: the control plane publishes the bundle under its tree digest; the
 *  node fetches it like an artifact, runs the runtime's discovery mode in its sandbox, and answers. */
export const DiscoverRequestSchema = z.strictObject({
  digest: Digest,
  entry: z.string().min(1),
  timeoutMs: z.number().int().positive().max(600_000),
});
export type DiscoverRequest = z.infer<typeof DiscoverRequestSchema>;

/** One export of a discovered module: the driver's DiscoveredFunction (src/shared/discovery.ts), as it is. */
export type WireDiscoveredFunction = DiscoveredFunction;
export interface DiscoverResult {
  readonly functions: readonly WireDiscoveredFunction[];
}
export interface PrepareResult {
  readonly image?: string;
  readonly log: readonly string[];
}
export interface VerifyResult {
  readonly startMs: number;
}

/** Image pruning: remove function images this node holds that are not in `keep`. */
export const PruneRequestSchema = z.strictObject({ keep: z.array(z.string().max(1000)) });
export type PruneRequest = z.infer<typeof PruneRequestSchema>;
export interface PruneResult {
  readonly removed: number;
}

/** Instance counts of one function on a node. */
export interface FunctionNodeStatus {
  readonly version: string | null;
  readonly instances: number;
  readonly busy: number;
  readonly idle: number;
  readonly starting: number;
  readonly queued: number;
}

/** Counts of a function the node does not know. */
export const EMPTY_NODE_STATUS: FunctionNodeStatus = Object.freeze({ version: null, instances: 0, busy: 0, idle: 0, starting: 0, queued: 0 });

export interface NodeHealth {
  readonly ok: true;
  readonly nodeId: string;
  /** Revision of the desired state the node serves (`null` before the first one). */
  readonly controlId: string | null;
  readonly revision: number | null;
}

/** Pool counters of one function on one node (the metrics gauges). */
export const PoolSampleSchema = z.object({
  starting: z.number(), busy: z.number(), idle: z.number(), retiring: z.number(), waiting: z.number(),
});
export type PoolSamples = Record<string, z.infer<typeof PoolSampleSchema>>;

const InvocationRecordSchema = z.object({
  requestId: z.string(), functionName: z.string(), version: z.string(), instanceId: z.string().nullable(), nodeId: z.string(),
  coldStart: z.boolean(), queueMs: z.number(), startMs: z.number(), initMs: z.number().nullable(), handlerMs: z.number(),
  totalMs: z.number(), status: z.number(), errorCode: z.string().nullable(), bytesIn: z.number(), bytesOut: z.number(),
  peakMemoryBytes: z.number().nullable(), traceparent: z.string(), ts: z.number(),
  // Added with the event model: optional on the wire (a node of the previous release omits them).
  trigger: z.string().max(EVENT_FIELD_MAX).nullable().default(null), eventId: z.string().max(EVENT_FIELD_MAX).nullable().default(null),
  attempt: z.number().int().positive().nullable().default(null),
});
const OutputLineSchema = z.object({
  ts: z.number(), stream: z.enum(["stdout", "stderr"]), level: z.string(), requestId: z.string().optional(), message: z.string(), instanceId: z.string(),
  // The marker of output the per-instance rate limit dropped (InstanceLogLine.dropped): without it the
  // control plane would store the marker as the function's own line and not count the drop.
  dropped: z.object({ lines: z.number().int().nonnegative(), bytes: z.number().int().nonnegative() }).optional(),
});
const PlatformEventSchema = z.object({
  ts: z.number(), functionName: z.string(), kind: z.enum(PLATFORM_EVENT_KINDS), level: z.enum(LOG_LEVELS),
  instanceId: z.string().nullable(), requestId: z.string().nullable(), message: z.string(),
});

/** One output line of an instance, as the node reports it: the driver's InstanceLogLine (src/shared/instance-output.ts), as it is. */
export type OutputLine = InstanceLogLine;
/**
 * True when a wire schema's output is exactly the shared type: assignable, and no field of the type
 * missing from the schema (z.object strips unknown keys, so a missing field would vanish on the way).
 */
type SameShape<Wire, T> = [Wire] extends [T] ? (Required<Wire> extends Required<T> ? true : never) : never;
const wireShapesMatch: [
  SameShape<z.output<typeof OutputLineSchema>, InstanceLogLine>,
  SameShape<z.output<typeof InvocationRecordSchema>, InvocationRecord>,
  SameShape<z.output<typeof PlatformEventSchema>, PlatformEvent>,
] = [true, true, true];
void wireShapesMatch;

/** One telemetry item; a batch keeps the order the node saw them in (a REPORT follows its lines). */
export const TelemetryItemSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("invocation"), record: InvocationRecordSchema }),
  z.object({ kind: z.literal("line"), functionName: z.string(), line: OutputLineSchema }),
  z.object({ kind: z.literal("event"), event: PlatformEventSchema }),
]);
export type TelemetryItem =
  | { readonly kind: "invocation"; readonly record: InvocationRecord }
  | { readonly kind: "line"; readonly functionName: string; readonly line: OutputLine }
  | { readonly kind: "event"; readonly event: PlatformEvent };

/**
 * Node → control telemetry. `dropped` counts items the node's bounded buffer threw away since its last
 * accepted batch; `pools` is the node's latest pool sample (metrics), sent with every batch.
 */
export const TelemetryBatchSchema = z.strictObject({
  nodeId: z.string().min(1).max(100),
  items: z.array(TelemetryItemSchema).max(10_000),
  dropped: z.number().int().nonnegative(),
  pools: z.record(z.string(), PoolSampleSchema),
});
export interface TelemetryBatch {
  readonly nodeId: string;
  readonly items: readonly TelemetryItem[];
  readonly dropped: number;
  readonly pools: PoolSamples;
}

/** What the control plane asks of a node (the node's side of the protocol). */
export interface NodeApi {
  /** Replaces the node's desired state (ignored when not newer). Resolves once it is applied. */
  applyState(state: DesiredState, options?: { signal?: AbortSignal }): Promise<{ revision: number; complete?: boolean }>;
  /** @throws StratusError BUILD_FAILED */
  prepare(deployment: WireDeployment): Promise<PrepareResult>;
  /** @throws StratusError FUNCTION_LOAD_FAILED | INSTANCE_START_FAILED */
  verify(deployment: WireDeployment): Promise<VerifyResult>;
  /** @throws StratusError BUILD_FAILED | FUNCTION_LOAD_FAILED */
  discover(request: DiscoverRequest): Promise<DiscoverResult>;
  pruneImages(request: PruneRequest): Promise<PruneResult>;
  status(name: string): Promise<FunctionNodeStatus>;
  health(): Promise<NodeHealth>;
  /** Drain (`/readyz` 404) or undrain the node. */
  setNodeState(state: NodeStateWire): Promise<NodeStateWire>;
}

/**
 * Parses a protocol body with `schema`.
 * @throws StratusError INVALID_ARGUMENT listing every problem
 */
export function parseWire<T>(schema: z.ZodType<T>, raw: unknown, what: string): T {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const details = r.error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message }));
  throw new StratusError("INVALID_ARGUMENT", `Invalid ${what}: ${details.map((d) => `${d.path}: ${d.message}`).join("; ")}`, { details });
}

/**
 * The two bearer keys of a control-plane ↔ node link, derived from one shared secret with HMAC-SHA256
 * and distinct labels: the node presents `node` to the control plane, the control plane presents
 * `control` to the node. Each side checks the key of the other, so both directions are authenticated,
 * and a captured request of one direction cannot be replayed as the other side. Without TLS the keys
 * cross the network in clear text: off-host links must use HTTPS (docs/api.md).
 */
export function deriveLinkKeys(secret: string): { readonly node: string; readonly control: string } {
  if (secret.length < 16) throw new StratusError("INVALID_ARGUMENT", "The node link secret must have at least 16 characters");
  const key = (label: string) => createHmac("sha256", secret).update(label).digest("base64url");
  return { node: key("stratus node->control v1"), control: key("stratus control->node v1") };
}

/**
 * Per-node link keys (join tokens): the node presents its credential (`snc_…`, stored hashed by the
 * control plane); the control plane presents `controlKey` to the node and signs every JSON answer it
 * gives the node with it (CONTROL_PROOF_HEADER). The node learns `controlKey` at join; control planes
 * derive it from the master key they share and the credential (controlKeyFor), so an impostor that does
 * not hold the master key can neither call the node nor feed it a desired state.
 */
export function controlKeyFor(masterKey: Uint8Array, credential: string): string {
  return createHmac("sha256", masterKey).update(`stratus control->node v1\u0000${createHash("sha256").update(credential).digest("hex")}`).digest("base64url");
}

/** Header carrying the control plane's proof over a JSON answer to a node. */
export const CONTROL_PROOF_HEADER = "x-stratus-control-proof";

/** HMAC-SHA256 of an answer's body under the control key, base64url. */
export function controlProof(key: string, body: string): string {
  return createHmac("sha256", key).update(body).digest("base64url");
}

/** A node joining with an admin-issued join token. */
export const JoinRequestSchema = z.strictObject({
  joinToken: z.string().min(1).max(500),
  nodeId: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/),
  url: z.string().min(1).max(2000),
  driver: z.string().min(1).max(50),
});
export type JoinRequest = z.infer<typeof JoinRequestSchema>;

/** What a node keeps (0600 in its data dir) after joining: its id, credential and the control key. */
export const JoinResultSchema = z.strictObject({
  /** Stable numeric id (1–64): the HAProxy server id. */
  id: z.number().int().positive(),
  nodeId: z.string(),
  credential: z.string().regex(/^snc_/),
  controlKey: z.string().min(20),
});
export type JoinResult = z.infer<typeof JoinResultSchema>;

/** Node load, reported every heartbeat. */
export const NodeLoadSchema = z.strictObject({
  inFlight: z.number().int().nonnegative(),
  queued: z.number().int().nonnegative(),
  instances: z.number().int().nonnegative(),
  memUsedBytes: z.number().nonnegative(),
  memFreeBytes: z.number().nonnegative(),
  warm: z.array(Name).max(10_000),
});
export type NodeLoadWire = z.infer<typeof NodeLoadSchema>;

/**
 * The desired state a node has applied: the control-plane run and revision, and whether every function of it
 * was applied. The fleet dispatches async work only to nodes that have applied this run's state.
 */
export const AppliedStateSchema = z.strictObject({ controlId: z.string().min(1).max(100), revision: z.number().int().nonnegative(), complete: z.boolean() });
export type AppliedState = z.infer<typeof AppliedStateSchema>;

export const HeartbeatSchema = z.strictObject({
  nodeId: z.string().min(1).max(100), url: z.string().min(1).max(2000), load: NodeLoadSchema,
  applied: AppliedStateSchema.optional(),
});
export type Heartbeat = z.infer<typeof HeartbeatSchema>;

/** Drain state a node is told to have: `draining` makes its /readyz answer 404. */
export const NodeStateSchema = z.strictObject({ state: z.enum(["ready", "draining"]) });
export type NodeStateWire = z.infer<typeof NodeStateSchema>;

/** Constant-time check of `Authorization: Bearer <expected>`. */
export function bearerMatches(header: string | undefined, expected: string): boolean {
  const presented = header !== undefined && header.startsWith("Bearer ") ? header.slice(7).trim() : "";
  const a = createHash("sha256").update(presented).digest();
  const b = createHash("sha256").update(expected).digest();
  return presented !== "" && timingSafeEqual(a, b);
}

/** sha256 hex of an invocation token, the form the desired state carries (same as the store's). */
export function invocationTokenHash(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** An async request handed from a node's gateway to the control plane (POST /internal/v1/async; src/shared/async-request.ts). */
export const AsyncRequestSchema = z.strictObject({
  functionName: z.string().min(1).max(100),
  requestId: z.string().min(1).max(200),
  method: z.string().min(1).max(20),
  /** Path + query below the function root. */
  path: z.string().min(1).max(16_384),
  headers: z.record(z.string(), z.string()),
  idempotencyKey: z.string().min(1).max(256).nullable(),
  bodyBase64: z.string(),
});
export type AsyncRequestWire = z.infer<typeof AsyncRequestSchema>;

/** The control plane's answer once the job is committed: the node's 202 body. */
export const AsyncAcceptedSchema = z.strictObject({
  invocationId: z.string().min(1).max(200),
  status: z.string().min(1).max(50),
  statusUrl: z.string().min(1).max(4000),
  created: z.boolean(),
});
export type AsyncAccepted = z.infer<typeof AsyncAcceptedSchema>;
