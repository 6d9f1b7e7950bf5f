/**
 * What a store implementation provides: persistence only. The rules (name checks, case-insensitive
 * uniqueness, activation rules, encryption, token generation, limits) live in src/store/store-rules.ts,
 * which turns a StorePersistence into the `Store` callers use (`createStore`).
 *
 * What each implementation still owns is atomicity: every method is one atomic step, even when
 * several callers run concurrently (PostgreSQL with a pool of connections), and the methods whose
 * documentation says "atomic" must not be built as a read followed by a separate write. Where a rule
 * needs the current state inside that step (activation), the layer above passes a synchronous `check`
 * callback that the implementation calls under its lock, inside its transaction.
 *
 * Inputs arrive already validated (names, statuses, limits resolved to numbers). Times are epoch ms,
 * supplied by the layer above (one clock). Records are the types of src/store/store.ts.
 */
import type { ErrorGroup, InvocationRecord, StoredLogEntry } from "../shared/invocation";
import type {
  Activation, BuildOutcome, JoinTokenRecord, NodeLoad, NodeRecord, NodeState, BuildRecord, FunctionRecord, InvocationQuery, LogQuery, PurgePolicy, PurgeResult, TelemetryBatch, TokenRecord,
  VersionRecord, VersionStatus,
} from "./store";

/** A token row as stored: the record plus the sha256 hex of the token. */
export interface StoredToken extends TokenRecord {
  readonly hash: string;
}

/** A secret as stored: its name and `v1.…` ciphertext (src/store/secret-box.ts). */
export interface StoredSecret {
  readonly name: string;
  readonly ciphertext: string;
}

/** Called by `activateVersions` for each activation, under the lock; throws to abort the whole list. */
export type ActivationCheck = (activation: Activation, fn: FunctionRecord | null, version: VersionRecord | null) => void;

/** Outcome of `finishBuild`: whether this call ended the build, and the build as it now is. */
export interface FinishResult {
  readonly finished: boolean;
  readonly record: BuildRecord;
}

/** Telemetry queries with the limit resolved. */
export type ResolvedLogQuery = LogQuery & { readonly limit: number };
export type ResolvedInvocationQuery = InvocationQuery & { readonly limit: number };

export interface FunctionPersistence {
  /**
   * Atomically: inserts the function unless one with the same `nameLower` exists, then returns the
   * function whose lowercased name is `nameLower` (the new one or the existing one, as written).
   */
  ensureFunction(name: string, nameLower: string, at: number): Promise<FunctionRecord>;
  getFunction(name: string): Promise<FunctionRecord | null>;
  /** Sorted by name. */
  listFunctions(): Promise<FunctionRecord[]>;
  /** Deletes the function with its versions, env vars and secrets; false when absent. */
  deleteFunction(name: string): Promise<boolean>;
  /**
   * Atomically: inserts the version unless `(functionName, version)` exists, then returns the stored
   * record (the new one, or the existing one unchanged). Null when the function does not exist.
   */
  insertVersion(version: VersionRecord): Promise<VersionRecord | null>;
  getVersion(functionName: string, version: string): Promise<VersionRecord | null>;
  /** Newest first; null when the function does not exist. */
  listVersions(functionName: string): Promise<VersionRecord[] | null>;
  /** Applies the patch (an absent key keeps the value) in one statement; null when absent. */
  updateVersion(functionName: string, version: string, patch: { status?: VersionStatus; image?: string | null }): Promise<VersionRecord | null>;
  getActiveVersion(functionName: string): Promise<VersionRecord | null>;
  /**
   * In one transaction, holding a write lock on the named functions (taken in a fixed order):
   * reads each function and its target version, calls `check`, then points every function at its
   * version with `activatedAt = at`. Returns the functions in the order given. Nothing changes when
   * `check` throws.
   */
  activateVersions(activations: readonly Activation[], at: number, check: ActivationCheck): Promise<FunctionRecord[]>;
}

export interface ConfigPersistence {
  /** Null when the function does not exist. */
  getEnvVars(functionName: string): Promise<Record<string, string> | null>;
  /** Applies the whole patch in one transaction (null removes) and returns the result; null when the function does not exist. */
  patchEnvVars(functionName: string, patch: Readonly<Record<string, string | null>>): Promise<Record<string, string> | null>;
  /** Upserts; false when the function does not exist. */
  putSecret(functionName: string, name: string, ciphertext: string, at: number): Promise<boolean>;
  deleteSecret(functionName: string, name: string): Promise<"deleted" | "no-function" | "no-secret">;
  /** Sorted by name; null when the function does not exist. */
  listSecrets(functionName: string): Promise<StoredSecret[] | null>;
}

export interface TokenPersistence {
  insertToken(token: StoredToken): Promise<void>;
  getToken(id: string): Promise<StoredToken | null>;
  /** Oldest first. */
  listTokens(): Promise<TokenRecord[]>;
  /** Atomically sets `revokedAt = at` unless already set; returns the token as it now is, null when absent. */
  revokeToken(id: string, at: number): Promise<TokenRecord | null>;
  /** The sha256 hex hashes of every unrevoked token. */
  listTokenHashes(): Promise<string[]>;
}

/** A join token row: the record plus the sha256 hex of the token. */
export interface StoredJoinToken extends JoinTokenRecord {
  readonly hash: string;
}

/** A node row: the record plus its credential's hash and removal time. */
export interface StoredNode extends NodeRecord {
  readonly credentialHash: string;
  readonly removedAt: number | null;
}

export interface MembershipPersistence {
  insertJoinToken(token: StoredJoinToken): Promise<void>;
  getJoinToken(id: string): Promise<StoredJoinToken | null>;
  /** Oldest first. */
  listJoinTokens(): Promise<JoinTokenRecord[]>;
  /** Atomically sets `revokedAt = at` unless already set; null when absent. */
  revokeJoinToken(id: string, at: number): Promise<JoinTokenRecord | null>;
  /**
   * Atomically (one transaction, serialised against other registrations): a registered node named
   * `name` keeps its id and gets `credentialHash`; otherwise removed rows of that name are deleted and
   * the node takes the lowest id in 1..maxNodes no registered node holds (a removed row holding it is
   * deleted). Null when every id is taken.
   */
  registerNode(node: { name: string; url: string; driver: string; credentialId: string; credentialHash: string; at: number }, maxNodes: number): Promise<NodeRecord | null>;
  /** The node row (removed ones too) whose current credential has this id. */
  getNodeByCredential(credentialId: string): Promise<StoredNode | null>;
  /** Sets last_seen, load (and url when given) of a registered node; null when absent or removed. */
  heartbeatNode(id: number, at: number, load: NodeLoad, url?: string): Promise<NodeRecord | null>;
  /** Null when absent or removed. */
  setNodeState(id: number, state: NodeState): Promise<NodeRecord | null>;
  /** Atomically sets `removedAt` unless set; null when absent or already removed. */
  removeNode(id: number, at: number): Promise<NodeRecord | null>;
  /** Registered nodes by id. */
  listNodes(): Promise<NodeRecord[]>;
  bumpConfigRevision(): Promise<number>;
  configRevision(): Promise<number>;
  watchConfig(onChange: (revision: number | null) => void): Promise<() => Promise<void>>;
}

export interface BuildPersistence {
  insertBuild(id: string, at: number): Promise<BuildRecord>;
  /** Appends the lines after the existing ones, atomically (concurrent appends never share a line number); false when absent. */
  appendBuildLog(id: string, lines: readonly string[]): Promise<boolean>;
  /** False when absent. */
  setBuildSource(id: string, sourceDigest: string): Promise<boolean>;
  /** Ends the build only if it is still running (one compare-and-set); null when absent. */
  finishBuild(id: string, outcome: BuildOutcome, at: number): Promise<FinishResult | null>;
  getBuild(id: string): Promise<BuildRecord | null>;
  /** Null when the build does not exist. */
  getBuildLog(id: string, fromLine: number): Promise<string[] | null>;
}

export interface TelemetryPersistence {
  /** One batch, one transaction. */
  writeTelemetry(batch: TelemetryBatch): Promise<void>;
  queryLogs(functionName: string, query: ResolvedLogQuery): Promise<StoredLogEntry[]>;
  queryInvocations(functionName: string, query: ResolvedInvocationQuery): Promise<InvocationRecord[]>;
  listErrorGroups(functionName: string, limit: number): Promise<ErrorGroup[]>;
  purgeTelemetry(policy: PurgePolicy): Promise<PurgeResult>;
}

/** One store implementation. `close` is idempotent. */
export interface StorePersistence extends FunctionPersistence, ConfigPersistence, TokenPersistence, BuildPersistence, TelemetryPersistence, MembershipPersistence {
  close(): Promise<void>;
}
