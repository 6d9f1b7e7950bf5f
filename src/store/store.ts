/**
 * The store contract: everything the control plane persists, split by concern (functions and
 * versions, env and secrets, tokens, builds, telemetry) and joined in `Store`. Callers see this;
 * implementations do not implement it directly: the rules below live in one store-neutral layer
 * (src/store/store-rules.ts, `createStore`) over a `StorePersistence` (src/store/persistence.ts) that
 * only persists — SQLite (embedded, src/store/sqlite/) and PostgreSQL (src/store/postgres/). Every
 * implementation runs src/store/conformance.ts.
 *
 * Invariants every implementation keeps:
 *  - function names are stored as written and unique case-insensitively (`myFn` vs `MyFn` → CONFLICT);
 *  - a version is immutable once added; `(function, version)` is unique, and adding the same version
 *    twice with the same digest is a no-op that returns the existing record (identical redeploys);
 *  - the active pointer only ever names a `ready` version of the same function; switching it is atomic,
 *    and `activateVersions` switches several functions all-or-nothing;
 *  - secrets are encrypted at rest (AES-256-GCM under the caller's master key); only `getSecretValues`
 *    ever returns plaintext; listings show names only;
 *  - API tokens are stored as sha256 hashes only; the plaintext is returned once, at creation.
 *
 * Telemetry (invocation records, log lines, error groups) is append-mostly: written in batches, one
 * transaction per batch, read newest first, and purged by age and row count (`purgeTelemetry`). It is
 * keyed by function name, not by the function's row, so a platform may record requests to functions
 * the store does not know (a node serving a function deployed elsewhere) and keeps a deleted function's
 * logs until retention removes them.
 *
 * Times are epoch milliseconds; telemetry times are stored rounded to whole milliseconds (the gateway
 * computes an invocation's start as a fraction). Errors are StratusErrors (src/shared/errors.ts).
 */
import type { ErrorGroup, ErrorOccurrence, InvocationRecord, LogEntry, LogLevelName, StoredLogEntry } from "../shared/invocation";
import type { FunctionVersion } from "../shared/function-version";

/** A deployed function (the versions hang off it). */
export interface FunctionRecord {
  /** As written (`myFunction`). */
  readonly name: string;
  readonly createdAt: number;
  /** Version id the gateway serves, or null before the first activation. */
  readonly activeVersion: string | null;
  /** When the active pointer last moved (null: never). */
  readonly activatedAt: number | null;
}

/** Lifecycle of a version: `ready` may be activated; `failed` (e.g. driver.prepare failed) may not. */
export const VERSION_STATUSES = ["ready", "failed"] as const;
export type VersionStatus = (typeof VERSION_STATUSES)[number];

/**
 * What a build produces for one function (src/shared/function-version.ts), as the store records it;
 * the store adds `createdAt`. The name is `functionName` here, as in every table of the store; the
 * config is kept as the JSON it was recorded with (the activator parses it again).
 */
export type NewVersion = Omit<FunctionVersion, "name" | "config" | "image"> & {
  readonly functionName: FunctionVersion["name"];
  /** The resolved FunctionConfig (defaults applied), as a JSON-able object. */
  readonly config: unknown;
  /** Default `ready`. */
  readonly status?: VersionStatus;
  /** Driver-specific artifact reference from `driver.prepare()` (Docker image), if any. */
  readonly image?: string | null;
};

export interface VersionRecord extends Required<Omit<NewVersion, "status" | "image">> {
  readonly status: VersionStatus;
  readonly image: string | null;
  readonly createdAt: number;
}

/** One API token, as listed. The hash never leaves the store. */
export interface TokenRecord {
  readonly id: string;
  readonly name: string;
  readonly createdAt: number;
  /** Null while the token is valid. */
  readonly revokedAt: number | null;
}

export const BUILD_STATUSES = ["running", "succeeded", "failed"] as const;
export type BuildStatus = (typeof BUILD_STATUSES)[number];

export interface BuildRecord {
  readonly id: string;
  readonly status: BuildStatus;
  /** Source digest, once known. */
  readonly sourceDigest: string | null;
  /** Error code and message of a failed build. */
  readonly error: { readonly code: string; readonly message: string } | null;
  /** Whatever the builder returned on success (the list of built versions), JSON-able. */
  readonly result: unknown;
  readonly createdAt: number;
  readonly finishedAt: number | null;
}

/** One switch of an active pointer, for `activateVersions`. */
export interface Activation {
  readonly functionName: string;
  readonly version: string;
  /**
   * Compare-and-swap guard: when given (null = "no active version yet"), the switch only happens if
   * the function's active version is still this one, else CONFLICT — two deploys racing cannot
   * silently overwrite each other.
   */
  readonly expectedActive?: string | null;
}

/**
 * Functions, their immutable versions and the active pointer (deploy, rollback).
 * Used by the deploy pipeline, activation and the function routes.
 */
export interface FunctionStore {
  /**
   * Returns the function, creating it if needed.
   * @throws StratusError INVALID_FUNCTION_NAME; CONFLICT when a function whose name differs only in case exists.
   */
  ensureFunction(name: string): Promise<FunctionRecord>;
  /** Exact-name lookup; null when absent. */
  getFunction(name: string): Promise<FunctionRecord | null>;
  /** Every function, sorted by name. */
  listFunctions(): Promise<FunctionRecord[]>;
  /**
   * Deletes the function with its versions, env vars and secrets (artifacts on disk are left to GC).
   * @throws StratusError FUNCTION_NOT_FOUND
   */
  deleteFunction(name: string): Promise<void>;
  /**
   * Records a built version (creating the function if needed). Idempotent for the same
   * `(functionName, version, digest)`: returns the existing record unchanged.
   * @throws StratusError CONFLICT when the version id exists with another digest, or on a name case clash.
   */
  addVersion(version: NewVersion): Promise<VersionRecord>;
  /** Null when the function or the version is absent. */
  getVersion(functionName: string, version: string): Promise<VersionRecord | null>;
  /**
   * Newest first.
   * @throws StratusError FUNCTION_NOT_FOUND
   */
  listVersions(functionName: string): Promise<VersionRecord[]>;
  /**
   * Sets a version's status and/or driver image (after `driver.prepare()`).
   * @throws StratusError VERSION_NOT_FOUND; INVALID_ARGUMENT for an unknown status.
   */
  updateVersion(functionName: string, version: string, patch: { status?: VersionStatus; image?: string | null }): Promise<VersionRecord>;
  /** The active version's record, or null when none is active. */
  getActiveVersion(functionName: string): Promise<VersionRecord | null>;
  /**
   * Atomically moves the active pointers of one or more functions (a deploy, or a rollback to an
   * older version). All or nothing; two callers racing on one function are serialised, so with
   * `expectedActive` exactly one of them wins.
   * @throws StratusError FUNCTION_NOT_FOUND | VERSION_NOT_FOUND | CONFLICT (version not ready, or
   *   `expectedActive` no longer matches); INVALID_ARGUMENT for an empty list or a function named twice.
   */
  activateVersions(activations: readonly Activation[]): Promise<FunctionRecord[]>;
}

/** Plain environment variables and encrypted secrets of a function. */
export interface ConfigStore {
  /** Plain env vars of a function (empty when none). @throws StratusError FUNCTION_NOT_FOUND */
  getEnvVars(functionName: string): Promise<Record<string, string>>;
  /**
   * Applies a patch: a string sets the variable, null removes it. Returns the result.
   * @throws StratusError FUNCTION_NOT_FOUND; INVALID_ARGUMENT for a bad name (`[A-Za-z_][A-Za-z0-9_]*`, not `STRATUS_*`).
   */
  setEnvVars(functionName: string, patch: Readonly<Record<string, string | null>>): Promise<Record<string, string>>;
  /**
   * Stores (or replaces) a secret, encrypted.
   * @throws StratusError FUNCTION_NOT_FOUND; INVALID_ARGUMENT for a bad name (same rule as env vars).
   */
  setSecret(functionName: string, name: string, value: string): Promise<void>;
  /** @throws StratusError FUNCTION_NOT_FOUND; NOT_FOUND when the secret is absent. */
  deleteSecret(functionName: string, name: string): Promise<void>;
  /** Secret names only, sorted. @throws StratusError FUNCTION_NOT_FOUND */
  listSecretNames(functionName: string): Promise<string[]>;
  /**
   * Decrypted secrets, for starting instances only.
   * @throws StratusError FUNCTION_NOT_FOUND; INTERNAL when a value fails to decrypt (wrong master key, tampering).
   */
  getSecretValues(functionName: string): Promise<Record<string, string>>;
}

/** API tokens. */
export interface TokenStore {
  /** Creates a token; the plaintext `token` is returned only here. @throws StratusError INVALID_ARGUMENT for an empty name */
  createToken(name: string): Promise<{ token: string; record: TokenRecord }>;
  /** Every token (revoked ones included), oldest first. */
  listTokens(): Promise<TokenRecord[]>;
  /** Revokes at once (idempotent: a second or concurrent revocation returns the same `revokedAt`). @throws StratusError NOT_FOUND */
  revokeToken(id: string): Promise<TokenRecord>;
  /** The token's record when `token` is valid and not revoked, else null. Compares hashes in constant time. */
  verifyToken(token: string): Promise<TokenRecord | null>;
  /**
   * The sha256 hex hashes of every unrevoked token (what the node protocol's desired state carries, so a
   * node checks invocation tokens without a store). Never the tokens themselves.
   */
  listTokenHashes(): Promise<string[]>;
}

/** A join token, as listed (the secret is shown once, at creation; only its hash is stored). */
export interface JoinTokenRecord {
  readonly id: string;
  readonly name: string;
  readonly createdAt: number;
  /** The token is refused (JOIN_TOKEN_EXPIRED) from this time on, epoch ms. */
  readonly expiresAt: number;
  readonly revokedAt: number | null;
}

/** What a node reports in its heartbeat. */
export interface NodeLoad {
  /** Requests being executed. */
  readonly inFlight: number;
  /** Requests waiting for an instance. */
  readonly queued: number;
  /** Instances, all functions together. */
  readonly instances: number;
  readonly memUsedBytes: number;
  readonly memFreeBytes: number;
  /** Functions with at least one started instance (warm on this node). */
  readonly warm: readonly string[];
}

/** Drain state an admin sets; `lost` is not stored: it is read as "no heartbeat for 10 s". */
export const NODE_STATES = ["ready", "draining"] as const;
export type NodeState = (typeof NODE_STATES)[number];

/** A registered node. `id` is small (1–64), stable for the node's name, and the HAProxy server id. */
export interface NodeRecord {
  readonly id: number;
  /** The node's name (`--node-id`, default `<hostname>-<hash of data dir>`); unique. */
  readonly name: string;
  /** Where the control plane and the load balancer reach it: `http(s)://addr:port`. */
  readonly url: string;
  readonly driver: string;
  readonly state: NodeState;
  readonly createdAt: number;
  /** Last heartbeat, epoch ms (null before the first). */
  readonly lastSeen: number | null;
  readonly load: NodeLoad | null;
}

/** Most registered nodes (ids 1..MAX_NODES; HAProxy server ids). */
export const MAX_NODES = 64;

/**
 * Cluster membership: join tokens (admin-issued, expiring, revocable), per-node credentials (random,
 * stored as a sha256 hash, revocable by removing the node), heartbeats and drain state, and the config
 * revision that tells every control plane sharing the store that the desired state changed.
 */
export interface MembershipStore {
  /** @throws StratusError INVALID_ARGUMENT for an empty name or a ttl outside 1 s – 365 days */
  createJoinToken(name: string, ttlMs: number): Promise<{ token: string; record: JoinTokenRecord }>;
  /** Oldest first (expired and revoked ones included). */
  listJoinTokens(): Promise<JoinTokenRecord[]>;
  /** @throws StratusError NOT_FOUND */
  revokeJoinToken(id: string): Promise<JoinTokenRecord>;
  /**
   * Registers (or re-registers) the node `name` with a join token: the same name keeps its id, a new
   * one takes the lowest free id ≤ MAX_NODES. A new credential replaces any earlier one of that name.
   * @throws StratusError JOIN_TOKEN_INVALID | JOIN_TOKEN_EXPIRED | JOIN_TOKEN_REVOKED; CONFLICT when MAX_NODES are registered
   */
  joinNode(joinToken: string, node: { name: string; url: string; driver: string }): Promise<{ record: NodeRecord; credential: string }>;
  /**
   * The node a credential belongs to.
   * @throws StratusError NODE_CREDENTIAL_INVALID (unknown, wrong) | NODE_CREDENTIAL_REVOKED (the node was removed)
   */
  verifyNodeCredential(credential: string): Promise<NodeRecord>;
  /** Records a heartbeat (and the URL the node now has); null when the node is absent or removed. */
  recordHeartbeat(id: number, load: NodeLoad, url?: string): Promise<NodeRecord | null>;
  /** @throws StratusError NOT_FOUND */
  setNodeState(id: number, state: NodeState): Promise<NodeRecord>;
  /** Removes the node: its credential stops working at once; its id becomes free. @throws StratusError NOT_FOUND */
  removeNode(id: number): Promise<NodeRecord>;
  /** Registered (not removed) nodes, by id. */
  listNodes(): Promise<NodeRecord[]>;
  /**
   * Bumps the shared config revision (after a change to what nodes serve) and, on PostgreSQL, notifies
   * every listening control plane (`NOTIFY stratus_config`, delivered at commit). Returns the new value.
   */
  bumpConfigRevision(): Promise<number>;
  /** The shared config revision (0 before the first bump). */
  configRevision(): Promise<number>;
  /**
   * Calls `onChange` when another writer bumped the config revision: PostgreSQL LISTEN on a dedicated
   * connection (reconnected with backoff; `onChange(null)` after a reconnect, since NOTIFY is not
   * replayed); SQLite has one writer and never calls it. The returned function stops listening.
   */
  watchConfig(onChange: (revision: number | null) => void): Promise<() => Promise<void>>;
}

/** Build records and their log lines. */
export interface BuildStore {
  /** Starts a build record with status `running`. */
  createBuild(): Promise<BuildRecord>;
  /** Appends log lines (kept in order; concurrent appends never interleave within one call). @throws StratusError NOT_FOUND */
  appendBuildLog(id: string, lines: readonly string[]): Promise<void>;
  /** Records the source digest once known. @throws StratusError NOT_FOUND */
  setBuildSource(id: string, sourceDigest: string): Promise<void>;
  /**
   * Ends a running build, exactly once (of two racing callers one wins, the other gets CONFLICT).
   * @throws StratusError NOT_FOUND; CONFLICT when it already ended.
   */
  finishBuild(id: string, outcome: BuildOutcome): Promise<BuildRecord>;
  /** Null when absent. */
  getBuild(id: string): Promise<BuildRecord | null>;
  /** Log lines, in order, from line `fromLine` (default 0). @throws StratusError NOT_FOUND */
  getBuildLog(id: string, fromLine?: number): Promise<string[]>;
}

/** How a build ended, for `finishBuild`. */
export type BuildOutcome = { status: "succeeded"; result: unknown } | { status: "failed"; error: { code: string; message: string } };

/** Invocation records, log lines and error groups (see the header for the rules). */
export interface TelemetryStore {
  /**
   * Writes one batch in one transaction: log lines (appended in order), invocation records, and error
   * occurrences folded into their groups (count + 1, last seen, sample request id).
   */
  writeTelemetry(batch: TelemetryBatch): Promise<void>;
  /** The newest `limit` matching log lines of a function, returned oldest first (by `seq`). @throws StratusError INVALID_ARGUMENT for a bad limit */
  queryLogs(functionName: string, query?: LogQuery): Promise<StoredLogEntry[]>;
  /** The newest `limit` matching invocation records of a function, newest first. @throws StratusError INVALID_ARGUMENT for a bad limit */
  queryInvocations(functionName: string, query?: InvocationQuery): Promise<InvocationRecord[]>;
  /** Error groups of a function, most recently seen first (at most `limit`, default 100). */
  listErrorGroups(functionName: string, limit?: number): Promise<ErrorGroup[]>;
  /**
   * Deletes telemetry older than `olderThan` (epoch ms; error groups by last seen), then the oldest
   * rows beyond `maxLogRows` / `maxInvocationRows` (all functions together). Returns what was deleted.
   */
  purgeTelemetry(policy: PurgePolicy): Promise<PurgeResult>;
}

/** Retention policy of `purgeTelemetry`. */
export interface PurgePolicy {
  readonly olderThan: number;
  readonly maxLogRows?: number;
  readonly maxInvocationRows?: number;
}

/** Rows removed by `purgeTelemetry`. */
export interface PurgeResult {
  readonly logs: number;
  readonly invocations: number;
  readonly errorGroups: number;
}

/**
 * Everything the control plane persists: the concerns together, plus the lifecycle. Callers that need
 * only one concern take that interface (the observer takes a TelemetryStore).
 */
export interface Store extends FunctionStore, ConfigStore, TokenStore, BuildStore, TelemetryStore, MembershipStore {
  /** Closes the store (idempotent). Later calls fail. */
  close(): Promise<void>;
}

/** One flush of the observer's write buffer. */
export interface TelemetryBatch {
  readonly logs: readonly LogEntry[];
  readonly invocations: readonly InvocationRecord[];
  readonly errors: readonly ErrorOccurrence[];
}

/** Most rows one telemetry query returns. */
export const TELEMETRY_QUERY_MAX = 10_000;

/** Filters of `queryLogs`; all optional. */
export interface LogQuery {
  /** Lines at or after this time (epoch ms). */
  readonly since?: number;
  /** Lines with `seq` greater than this (paging, following). */
  readonly afterSeq?: number;
  readonly requestId?: string;
  /** This level or above (debug < info < warn < error). */
  readonly minLevel?: LogLevelName;
  /** Default 100, at most TELEMETRY_QUERY_MAX. */
  readonly limit?: number;
}

/** Filters of `queryInvocations`; all optional. */
export interface InvocationQuery {
  /** Status class: 2 for 2xx … 5 for 5xx; 0 for "no status sent". */
  readonly statusClass?: number;
  /** Exact status. */
  readonly status?: number;
  readonly cold?: boolean;
  /** Only records with totalMs above this, ms. */
  readonly slowerThanMs?: number;
  readonly since?: number;
  readonly requestId?: string;
  /** Only failed requests (an error code set). */
  readonly failed?: boolean;
  /** Only records of this trigger's events (InvocationRecord.trigger). */
  readonly trigger?: string;
  /** Only records of this CloudEvents id (every attempt of one event). */
  readonly eventId?: string;
  /** Default 100, at most TELEMETRY_QUERY_MAX. */
  readonly limit?: number;
}
