/**
 * The embedded store: one SQLite file (better-sqlite3), WAL mode, prepared statements, and a
 * `schema_migrations` table so later releases can add migrations in order. It implements
 * StorePersistence only (src/store/persistence.ts); the rules and encryption are in
 * src/store/store-rules.ts, and `openSqliteStore` joins the two.
 *
 * better-sqlite3 is synchronous; the methods are async only to honour the contract. Every method that
 * reads then writes, or touches more than one row, runs in one SQLite transaction: that is what makes
 * it atomic (with one connection per process, a synchronous transaction cannot interleave with another
 * caller), and a crash never leaves half of an operation behind.
 */
import Database from "better-sqlite3";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { StratusError } from "../../shared/errors";
import type { ActivationCheck, FinishResult, StorePersistence, StoredToken } from "../persistence";
import {
  toJoinToken, toNode, toStoredNode, type JoinTokenRow, type NodeRow,
  LEVEL_RANK, toBuild as toBuildRecord, toErrorGroup, toFunction, toInvocation, toLog, toToken, toVersion as toVersionRecord, VERSION_COLUMNS,
  type BuildRow, type ErrorGroupRow, type FunctionRow, type InvocationRow, type LogRow, type TokenRow, type VersionRow,
} from "../rows";
import type { Activation, BuildOutcome, BuildRecord, FunctionRecord, PurgePolicy, Store, TelemetryBatch, TokenRecord, VersionRecord } from "../store";
import { assertMasterKey } from "../secret-box";
import { createStore } from "../store-rules";

/** Ordered migrations; index + 1 is the schema version. Never edit a released entry, append. */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE functions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    name_lower TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    active_version TEXT,
    activated_at INTEGER
  );
  CREATE TABLE versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    function_id INTEGER NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    entry TEXT NOT NULL,
    export_name TEXT NOT NULL,
    config TEXT NOT NULL,
    source_digest TEXT NOT NULL,
    status TEXT NOT NULL,
    image TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (function_id, version)
  );
  CREATE TABLE env_vars (
    function_id INTEGER NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (function_id, name)
  );
  CREATE TABLE secrets (
    function_id INTEGER NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (function_id, name)
  );
  CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  CREATE TABLE builds (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    source_digest TEXT,
    error_code TEXT,
    error_message TEXT,
    result TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
  );
  CREATE INDEX builds_source ON builds (source_digest, status);
  CREATE TABLE build_logs (
    build_id TEXT NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (build_id, seq)
  );
  `,
  // 2: telemetry. Keyed by function name (see the Store contract). No index on ts: rows arrive in
  // time order, so an age purge finds its cut-off by walking seq from the oldest row.
  `
  CREATE TABLE logs (
    seq INTEGER PRIMARY KEY,
    function_name TEXT NOT NULL,
    ts INTEGER NOT NULL,
    level INTEGER NOT NULL,
    source TEXT NOT NULL,
    stream TEXT,
    request_id TEXT,
    instance_id TEXT,
    message TEXT NOT NULL
  );
  CREATE INDEX logs_function ON logs (function_name, seq);
  CREATE INDEX logs_request ON logs (request_id) WHERE request_id IS NOT NULL;
  CREATE TABLE invocations (
    seq INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    function_name TEXT NOT NULL,
    version TEXT NOT NULL,
    instance_id TEXT,
    node_id TEXT NOT NULL,
    cold INTEGER NOT NULL,
    queue_ms REAL NOT NULL,
    start_ms REAL NOT NULL,
    init_ms REAL,
    handler_ms REAL NOT NULL,
    total_ms REAL NOT NULL,
    status INTEGER NOT NULL,
    error_code TEXT,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    peak_memory_bytes INTEGER,
    traceparent TEXT NOT NULL,
    ts INTEGER NOT NULL
  );
  CREATE INDEX invocations_function ON invocations (function_name, seq);
  CREATE INDEX invocations_request ON invocations (request_id);
  CREATE TABLE error_groups (
    function_name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    code TEXT NOT NULL,
    message_shape TEXT NOT NULL,
    top_frame TEXT,
    count INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    sample_request_id TEXT NOT NULL,
    PRIMARY KEY (function_name, fingerprint)
  );
  CREATE INDEX error_groups_seen ON error_groups (function_name, last_seen);
  `,
  `
  CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  CREATE TABLE nodes (
    -- Not AUTOINCREMENT: ids are chosen (lowest free) and become HAProxy server ids.
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    driver TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'ready',
    created_at INTEGER NOT NULL,
    last_seen INTEGER,
    load TEXT,
    credential_id TEXT NOT NULL UNIQUE,
    credential_hash TEXT NOT NULL,
    removed_at INTEGER
  );
  CREATE TABLE cluster_state (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
  );
  INSERT INTO cluster_state (key, value) VALUES ('config_rev', 0);
  `,
  // 4: the event model: which trigger, event and attempt an invocation was (null for other requests).
  `
  ALTER TABLE invocations ADD COLUMN trigger_id TEXT;
  ALTER TABLE invocations ADD COLUMN event_id TEXT;
  ALTER TABLE invocations ADD COLUMN attempt INTEGER;
  CREATE INDEX invocations_event ON invocations (function_name, event_id) WHERE event_id IS NOT NULL;
  `,
];

// SQLite keeps JSON as TEXT: decoded here, then mapped like every SQL implementation's rows.
type SqliteVersionRow = Omit<VersionRow, "config"> & { config: string };
type SqliteBuildRow = Omit<BuildRow, "result"> & { result: string | null };
const toVersion = (r: SqliteVersionRow): VersionRecord => toVersionRecord({ ...r, config: JSON.parse(r.config) as unknown });
const toBuild = (r: SqliteBuildRow): BuildRecord => toBuildRecord({ ...r, result: r.result === null ? null : (JSON.parse(r.result) as unknown) });

/** Options of `openSqliteStore`. */
export interface SqliteStoreOptions {
  /** Path of the database file (its directory is created). `:memory:` works for throwaway use. */
  readonly file: string;
  /** 32-byte AES-256 key for secrets (see `loadOrCreateMasterKey`). */
  readonly masterKey: Uint8Array;
  /** Clock, epoch ms; default Date.now (tests pass a fake). */
  readonly now?: () => number;
}

/**
 * Opens (creating and migrating as needed) a SQLite store: `createStore` over `openSqlitePersistence`.
 * @throws StratusError INTERNAL for a bad master key, or a database newer than this code knows.
 */
/** Longest wait of a telemetry write for another connection's lock, ms. */
const TELEMETRY_BUSY_MS = 20;

export function openSqliteStore(options: SqliteStoreOptions): Store {
  // Checked before the file is touched, so a bad key never leaves a database behind.
  assertMasterKey(options.masterKey);
  return createStore(openSqlitePersistence(options.file), { masterKey: options.masterKey, ...(options.now ? { now: options.now } : {}) });
}

/**
 * Opens (creating and migrating as needed) the SQLite persistence in `file`.
 * @throws StratusError INTERNAL for a database newer than this code knows.
 */
export function openSqlitePersistence(file: string): StorePersistence {
  if (file !== ":memory:") mkdirSync(dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  // NORMAL is durable against application crashes in WAL mode; only an OS crash may lose the last commit.
  db.pragma("synchronous = NORMAL");
  db.pragma("foreign_keys = ON");
  db.pragma("busy_timeout = 5000");
  migrate(db);

  const q = {
    fnByName: db.prepare<[string], FunctionRow>("SELECT * FROM functions WHERE name = ?"),
    fnByLower: db.prepare<[string], FunctionRow>("SELECT * FROM functions WHERE name_lower = ?"),
    fnAll: db.prepare<[], FunctionRow>("SELECT * FROM functions ORDER BY name"),
    fnInsert: db.prepare<[string, string, number]>("INSERT INTO functions (name, name_lower, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"),
    fnDelete: db.prepare<[string]>("DELETE FROM functions WHERE name = ?"),
    fnActivate: db.prepare<[string, number, number]>("UPDATE functions SET active_version = ?, activated_at = ? WHERE id = ?"),
    verGet: db.prepare<[string, string], SqliteVersionRow>(`SELECT ${VERSION_COLUMNS} FROM versions v JOIN functions f ON f.id = v.function_id WHERE f.name = ? AND v.version = ?`),
    verList: db.prepare<[number], SqliteVersionRow>(`SELECT ${VERSION_COLUMNS} FROM versions v JOIN functions f ON f.id = v.function_id WHERE v.function_id = ? ORDER BY v.seq DESC`),
    verInsert: db.prepare(`INSERT INTO versions (function_id, version, digest, entry, export_name, config, source_digest, status, image, created_at)
      VALUES (@functionId, @version, @digest, @entry, @exportName, @config, @sourceDigest, @status, @image, @createdAt) ON CONFLICT (function_id, version) DO NOTHING`),
    verUpdate: db.prepare<[string | null, number, string | null, string, string]>(`UPDATE versions SET status = COALESCE(?, status), image = CASE WHEN ? THEN ? ELSE image END
      WHERE function_id = (SELECT id FROM functions WHERE name = ?) AND version = ?`),
    envGet: db.prepare<[number], { name: string; value: string }>("SELECT name, value FROM env_vars WHERE function_id = ? ORDER BY name"),
    envSet: db.prepare<[number, string, string]>("INSERT INTO env_vars (function_id, name, value) VALUES (?, ?, ?) ON CONFLICT (function_id, name) DO UPDATE SET value = excluded.value"),
    envDel: db.prepare<[number, string]>("DELETE FROM env_vars WHERE function_id = ? AND name = ?"),
    secSet: db.prepare<[number, string, string, number]>("INSERT INTO secrets (function_id, name, ciphertext, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (function_id, name) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = excluded.updated_at"),
    secDel: db.prepare<[number, string]>("DELETE FROM secrets WHERE function_id = ? AND name = ?"),
    secAll: db.prepare<[number], { name: string; ciphertext: string }>("SELECT name, ciphertext FROM secrets WHERE function_id = ? ORDER BY name"),
    tokInsert: db.prepare<[string, string, string, number]>("INSERT INTO tokens (id, name, hash, created_at) VALUES (?, ?, ?, ?)"),
    tokGet: db.prepare<[string], TokenRow>("SELECT * FROM tokens WHERE id = ?"),
    tokAll: db.prepare<[], TokenRow>("SELECT * FROM tokens ORDER BY created_at, rowid"),
    tokRevoke: db.prepare<[number, string]>("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"),
    buildInsert: db.prepare<[string, number]>("INSERT INTO builds (id, status, created_at) VALUES (?, 'running', ?)"),
    buildGet: db.prepare<[string], SqliteBuildRow>("SELECT * FROM builds WHERE id = ?"),
    buildSource: db.prepare<[string, string]>("UPDATE builds SET source_digest = ? WHERE id = ?"),
    buildFinish: db.prepare("UPDATE builds SET status = @status, error_code = @errorCode, error_message = @errorMessage, result = @result, finished_at = @finishedAt WHERE id = @id AND status = 'running'"),
    logNext: db.prepare<[string], { n: number }>("SELECT COUNT(*) AS n FROM build_logs WHERE build_id = ?"),
    logInsert: db.prepare<[string, number, string]>("INSERT INTO build_logs (build_id, seq, line) VALUES (?, ?, ?)"),
    logGet: db.prepare<[string, number], { line: string }>("SELECT line FROM build_logs WHERE build_id = ? AND seq >= ? ORDER BY seq"),
    telLog: db.prepare("INSERT INTO logs (function_name, ts, level, source, stream, request_id, instance_id, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
    telInvocation: db.prepare(`INSERT INTO invocations (request_id, function_name, version, instance_id, node_id, cold, queue_ms, start_ms,
      init_ms, handler_ms, total_ms, status, error_code, bytes_in, bytes_out, peak_memory_bytes, traceparent, ts, trigger_id, event_id, attempt)
      VALUES (@requestId, @functionName, @version, @instanceId, @nodeId, @cold, @queueMs, @startMs, @initMs, @handlerMs, @totalMs,
      @status, @errorCode, @bytesIn, @bytesOut, @peakMemoryBytes, @traceparent, @ts, @trigger, @eventId, @attempt)`),
    telError: db.prepare(`INSERT INTO error_groups (function_name, fingerprint, code, message_shape, top_frame, count, first_seen, last_seen, sample_request_id)
      VALUES (@functionName, @fingerprint, @code, @messageShape, @topFrame, 1, @ts, @ts, @requestId)
      ON CONFLICT (function_name, fingerprint) DO UPDATE SET count = count + 1,
        first_seen = MIN(first_seen, excluded.first_seen),
        last_seen = MAX(last_seen, excluded.last_seen),
        sample_request_id = CASE WHEN excluded.last_seen >= last_seen THEN excluded.sample_request_id ELSE sample_request_id END`),
    errGroups: db.prepare<[string, number], ErrorGroupRow>("SELECT * FROM error_groups WHERE function_name = ? ORDER BY last_seen DESC, fingerprint LIMIT ?"),
    // First row young enough to keep: rows before it (in arrival order) are old.
    logCut: db.prepare<[number], { seq: number }>("SELECT seq FROM logs WHERE ts >= ? ORDER BY seq LIMIT 1"),
    logMaxSeq: db.prepare<[], { seq: number | null }>("SELECT MAX(seq) AS seq FROM logs"),
    logDeleteBefore: db.prepare<[number]>("DELETE FROM logs WHERE seq < ?"),
    logKeepFrom: db.prepare<[number], { seq: number }>("SELECT seq FROM logs ORDER BY seq DESC LIMIT 1 OFFSET ?"),
    invCut: db.prepare<[number], { seq: number }>("SELECT seq FROM invocations WHERE ts >= ? ORDER BY seq LIMIT 1"),
    invMaxSeq: db.prepare<[], { seq: number | null }>("SELECT MAX(seq) AS seq FROM invocations"),
    invDeleteBefore: db.prepare<[number]>("DELETE FROM invocations WHERE seq < ?"),
    invKeepFrom: db.prepare<[number], { seq: number }>("SELECT seq FROM invocations ORDER BY seq DESC LIMIT 1 OFFSET ?"),
    errPurge: db.prepare<[number]>("DELETE FROM error_groups WHERE last_seen < ?"),
  };

  const fnId = (name: string): number | null => q.fnByName.get(name)?.id ?? null;
  const getVersion = (fn: string, v: string): VersionRecord | null => {
    const row = q.verGet.get(fn, v);
    return row === undefined ? null : toVersion(row);
  };

  const ensureFunctionTx = db.transaction((name: string, nameLower: string, at: number): FunctionRow => {
    q.fnInsert.run(name, nameLower, at);
    return q.fnByLower.get(nameLower)!;
  });

  const insertVersionTx = db.transaction((v: VersionRecord): VersionRecord | null => {
    const id = fnId(v.functionName);
    if (id === null) return null;
    q.verInsert.run({
      functionId: id, version: v.version, digest: v.digest, entry: v.entry, exportName: v.exportName,
      config: JSON.stringify(v.config ?? {}), sourceDigest: v.sourceDigest, status: v.status, image: v.image, createdAt: v.createdAt,
    });
    return getVersion(v.functionName, v.version);
  });

  const activateTx = db.transaction((activations: readonly Activation[], at: number, check: ActivationCheck): FunctionRecord[] => {
    for (const a of activations) {
      const fn = q.fnByName.get(a.functionName);
      check(a, fn === undefined ? null : toFunction(fn), fn === undefined ? null : getVersion(fn.name, a.version));
      q.fnActivate.run(a.version, at, fn!.id);
    }
    return activations.map((a) => toFunction(q.fnByName.get(a.functionName)!));
  });

  const patchEnvTx = db.transaction((functionName: string, patch: Readonly<Record<string, string | null>>) => {
    const id = fnId(functionName);
    if (id === null) return null;
    for (const [name, value] of Object.entries(patch)) {
      if (value === null) q.envDel.run(id, name);
      else q.envSet.run(id, name, value);
    }
    return Object.fromEntries(q.envGet.all(id).map((r) => [r.name, r.value]));
  });

  const jt = {
    insert: db.prepare("INSERT INTO join_tokens (id, name, hash, created_at, expires_at) VALUES (@id, @name, @hash, @createdAt, @expiresAt)"),
    get: db.prepare<[string], JoinTokenRow>("SELECT * FROM join_tokens WHERE id = ?"),
    all: db.prepare<[], JoinTokenRow>("SELECT * FROM join_tokens ORDER BY created_at, rowid"),
    revoke: db.prepare<[number, string]>("UPDATE join_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?"),
    nodeByName: db.prepare<[string], NodeRow>("SELECT * FROM nodes WHERE name = ?"),
    nodeById: db.prepare<[number], NodeRow>("SELECT * FROM nodes WHERE id = ?"),
    nodeByCred: db.prepare<[string], NodeRow>("SELECT * FROM nodes WHERE credential_id = ?"),
    nodeIds: db.prepare<[], { id: number; removed_at: number | null }>("SELECT id, removed_at FROM nodes"),
    nodeDel: db.prepare<[number]>("DELETE FROM nodes WHERE id = ?"),
    nodeInsert: db.prepare(`INSERT INTO nodes (id, name, url, driver, state, created_at, credential_id, credential_hash)
      VALUES (@id, @name, @url, @driver, 'ready', @at, @credentialId, @credentialHash)`),
    nodeRekey: db.prepare("UPDATE nodes SET url = @url, driver = @driver, credential_id = @credentialId, credential_hash = @credentialHash WHERE id = @id"),
    nodeBeat: db.prepare<[number, string, string | null, number]>("UPDATE nodes SET last_seen = ?, load = ?, url = COALESCE(?, url) WHERE id = ? AND removed_at IS NULL"),
    nodeState: db.prepare<[string, number]>("UPDATE nodes SET state = ? WHERE id = ? AND removed_at IS NULL"),
    nodeRemove: db.prepare<[number, number]>("UPDATE nodes SET removed_at = ? WHERE id = ? AND removed_at IS NULL"),
    nodeAll: db.prepare<[], NodeRow>("SELECT * FROM nodes WHERE removed_at IS NULL ORDER BY id"),
    revBump: db.prepare<[], { value: number }>("UPDATE cluster_state SET value = value + 1 WHERE key = 'config_rev' RETURNING value"),
    revGet: db.prepare<[], { value: number }>("SELECT value FROM cluster_state WHERE key = 'config_rev'"),
  };
  const registerTx = db.transaction((n: { name: string; url: string; driver: string; credentialId: string; credentialHash: string; at: number }, maxNodes: number) => {
    const same = jt.nodeByName.get(n.name);
    if (same !== undefined && same.removed_at === null) {
      jt.nodeRekey.run({ ...n, id: same.id });
      return toNode(jt.nodeById.get(same.id)!);
    }
    if (same !== undefined) jt.nodeDel.run(same.id);
    const rows = jt.nodeIds.all();
    const taken = new Set(rows.filter((r) => r.removed_at === null).map((r) => r.id));
    let id = 0;
    for (let i = 1; i <= maxNodes; i++) if (!taken.has(i)) { id = i; break; }
    if (id === 0) return null;
    jt.nodeDel.run(id);
    jt.nodeInsert.run({ ...n, id });
    return toNode(jt.nodeById.get(id)!);
  });

  const revokeTx = db.transaction((id: string, at: number): TokenRecord | null => {
    q.tokRevoke.run(at, id);
    const row = q.tokGet.get(id);
    return row === undefined ? null : toToken(row);
  });

  const appendLogTx = db.transaction((id: string, lines: readonly string[]): boolean => {
    if (q.buildGet.get(id) === undefined) return false;
    let seq = q.logNext.get(id)!.n;
    for (const line of lines) q.logInsert.run(id, seq++, line);
    return true;
  });

  const finishTx = db.transaction((id: string, outcome: BuildOutcome, at: number): FinishResult | null => {
    const changes = q.buildFinish.run({
      id, status: outcome.status, finishedAt: at,
      errorCode: outcome.status === "failed" ? outcome.error.code : null,
      errorMessage: outcome.status === "failed" ? outcome.error.message : null,
      result: outcome.status === "succeeded" ? JSON.stringify(outcome.result ?? null) : null,
    }).changes;
    const row = q.buildGet.get(id);
    return row === undefined ? null : { finished: changes === 1, record: toBuild(row) };
  });

  const writeTelemetryTx = db.transaction((batch: TelemetryBatch) => {
    for (const l of batch.logs) {
      q.telLog.run(l.functionName, Math.round(l.ts), LEVEL_RANK[l.level] ?? 20, l.source, l.stream, l.requestId, l.instanceId, l.message);
    }
    for (const r of batch.invocations) {
      q.telInvocation.run({
        ...r, ts: Math.round(r.ts), cold: r.coldStart ? 1 : 0, bytesIn: Math.round(r.bytesIn), bytesOut: Math.round(r.bytesOut),
        peakMemoryBytes: r.peakMemoryBytes === null ? null : Math.round(r.peakMemoryBytes),
        trigger: r.trigger ?? null, eventId: r.eventId ?? null, attempt: r.attempt ?? null,
      });
    }
    for (const e of batch.errors) q.telError.run({ ...e, ts: Math.round(e.ts) });
  });

  /** Deletes rows older than `olderThan`, then beyond `maxRows`; rows are in arrival (≈ time) order. */
  function purgeTable(
    cut: Database.Statement<[number], { seq: number }>, maxSeq: Database.Statement<[], { seq: number | null }>,
    deleteBefore: Database.Statement<[number]>, keepFrom: Database.Statement<[number], { seq: number }>,
    olderThan: number, maxRows: number | undefined,
  ): number {
    let deleted = 0;
    const young = cut.get(olderThan);
    // No young row: everything is old (delete up to max + 1).
    const firstKept = young?.seq ?? (maxSeq.get()?.seq ?? 0) + 1;
    deleted += deleteBefore.run(firstKept).changes;
    if (maxRows !== undefined) {
      const boundary = maxRows <= 0 ? null : keepFrom.get(maxRows - 1);
      if (maxRows <= 0) deleted += deleteBefore.run((maxSeq.get()?.seq ?? 0) + 1).changes;
      else if (boundary !== undefined && boundary !== null) deleted += deleteBefore.run(boundary.seq).changes;
    }
    return deleted;
  }

  const purgeTx = db.transaction((policy: PurgePolicy) => ({
    logs: purgeTable(q.logCut, q.logMaxSeq, q.logDeleteBefore, q.logKeepFrom, policy.olderThan, policy.maxLogRows),
    invocations: purgeTable(q.invCut, q.invMaxSeq, q.invDeleteBefore, q.invKeepFrom, policy.olderThan, policy.maxInvocationRows),
    errorGroups: q.errPurge.run(policy.olderThan).changes,
  }));

  let closed = false;
  return {
    async ensureFunction(name, nameLower, at) {
      return toFunction(ensureFunctionTx(name, nameLower, at));
    },
    async getFunction(name) {
      const row = q.fnByName.get(name);
      return row === undefined ? null : toFunction(row);
    },
    async listFunctions() {
      return q.fnAll.all().map(toFunction);
    },
    async deleteFunction(name) {
      return q.fnDelete.run(name).changes === 1;
    },

    async insertVersion(version) {
      return insertVersionTx(version);
    },
    async getVersion(functionName, version) {
      return getVersion(functionName, version);
    },
    async listVersions(functionName) {
      const id = fnId(functionName);
      return id === null ? null : q.verList.all(id).map(toVersion);
    },
    async updateVersion(functionName, version, patch) {
      const changes = q.verUpdate.run(patch.status ?? null, patch.image === undefined ? 0 : 1, patch.image ?? null, functionName, version).changes;
      return changes === 0 ? null : getVersion(functionName, version);
    },
    async getActiveVersion(functionName) {
      const fn = q.fnByName.get(functionName);
      return fn === undefined || fn.active_version === null ? null : getVersion(fn.name, fn.active_version);
    },
    async activateVersions(activations, at, check) {
      return activateTx(activations, at, check);
    },

    async getEnvVars(functionName) {
      const id = fnId(functionName);
      return id === null ? null : Object.fromEntries(q.envGet.all(id).map((r) => [r.name, r.value]));
    },
    async patchEnvVars(functionName, patch) {
      return patchEnvTx(functionName, patch);
    },
    async putSecret(functionName, name, ciphertext, at) {
      const id = fnId(functionName);
      if (id === null) return false;
      q.secSet.run(id, name, ciphertext, at);
      return true;
    },
    async deleteSecret(functionName, name) {
      const id = fnId(functionName);
      if (id === null) return "no-function";
      return q.secDel.run(id, name).changes === 0 ? "no-secret" : "deleted";
    },
    async listSecrets(functionName) {
      const id = fnId(functionName);
      return id === null ? null : q.secAll.all(id);
    },

    async insertToken(t: StoredToken) {
      q.tokInsert.run(t.id, t.name, t.hash, t.createdAt);
    },
    async getToken(id) {
      const row = q.tokGet.get(id);
      return row === undefined ? null : { ...toToken(row), hash: row.hash };
    },
    async listTokens() {
      return q.tokAll.all().map(toToken);
    },
    async revokeToken(id, at) {
      return revokeTx(id, at);
    },
    async listTokenHashes() {
      return q.tokAll.all().filter((r) => r.revoked_at === null).map((r) => r.hash);
    },

    async insertJoinToken(t) {
      jt.insert.run({ id: t.id, name: t.name, hash: t.hash, createdAt: t.createdAt, expiresAt: t.expiresAt });
    },
    async getJoinToken(id) {
      const r = jt.get.get(id);
      return r === undefined ? null : { ...toJoinToken(r), hash: r.hash };
    },
    async listJoinTokens() {
      return jt.all.all().map(toJoinToken);
    },
    async revokeJoinToken(id, at) {
      jt.revoke.run(at, id);
      const r = jt.get.get(id);
      return r === undefined ? null : toJoinToken(r);
    },
    async registerNode(n, maxNodes) {
      return registerTx(n, maxNodes);
    },
    async getNodeByCredential(credentialId) {
      const r = jt.nodeByCred.get(credentialId);
      return r === undefined ? null : toStoredNode(r);
    },
    async heartbeatNode(id, at, load, url) {
      if (jt.nodeBeat.run(at, JSON.stringify(load), url ?? null, id).changes === 0) return null;
      return toNode(jt.nodeById.get(id)!);
    },
    async setNodeState(id, state) {
      if (jt.nodeState.run(state, id).changes === 0) return null;
      return toNode(jt.nodeById.get(id)!);
    },
    async removeNode(id, at) {
      if (jt.nodeRemove.run(at, id).changes === 0) return null;
      return toNode(jt.nodeById.get(id)!);
    },
    async listNodes() {
      return jt.nodeAll.all().map(toNode);
    },
    async bumpConfigRevision() {
      return jt.revBump.get()!.value;
    },
    async configRevision() {
      return jt.revGet.get()!.value;
    },
    // One control plane per SQLite file: no other writer to hear from.
    async watchConfig() {
      return async () => {};
    },

    async insertBuild(id, at) {
      q.buildInsert.run(id, at);
      return toBuild(q.buildGet.get(id)!);
    },
    async appendBuildLog(id, lines) {
      return appendLogTx(id, lines);
    },
    async setBuildSource(id, sourceDigest) {
      return q.buildSource.run(sourceDigest, id).changes === 1;
    },
    async finishBuild(id, outcome, at) {
      return finishTx(id, outcome, at);
    },
    async getBuild(id) {
      const row = q.buildGet.get(id);
      return row === undefined ? null : toBuild(row);
    },
    async getBuildLog(id, fromLine) {
      if (q.buildGet.get(id) === undefined) return null;
      return q.logGet.all(id, fromLine).map((r) => r.line);
    },

    async writeTelemetry(batch) {
      // better-sqlite3 waits for a lock synchronously, on the event loop the gateway serves from: the
      // telemetry write path waits at most TELEMETRY_BUSY_MS for another process's lock, then fails
      // (the batch is dropped and logged by the caller) instead of stalling every request for up to
      // busy_timeout (5 s; test/adversarial/e-faults.test.ts E5 saw a 3 s stall).
      db.pragma(`busy_timeout = ${TELEMETRY_BUSY_MS}`);
      try {
        writeTelemetryTx(batch);
      } finally {
        db.pragma("busy_timeout = 5000");
      }
    },
    async queryLogs(functionName, query) {
      const where = ["function_name = ?"];
      const args: unknown[] = [functionName];
      if (query.since !== undefined) { where.push("ts >= ?"); args.push(query.since); }
      if (query.afterSeq !== undefined) { where.push("seq > ?"); args.push(query.afterSeq); }
      if (query.requestId !== undefined) { where.push("request_id = ?"); args.push(query.requestId); }
      if (query.minLevel !== undefined) { where.push("level >= ?"); args.push(LEVEL_RANK[query.minLevel]); }
      args.push(query.limit);
      // Compiled per call: these are API reads, not the write path.
      const rows = db.prepare<unknown[], LogRow>(`SELECT * FROM logs WHERE ${where.join(" AND ")} ORDER BY seq DESC LIMIT ?`).all(...args);
      return rows.reverse().map(toLog);
    },
    async queryInvocations(functionName, query) {
      const where = ["function_name = ?"];
      const args: unknown[] = [functionName];
      if (query.statusClass !== undefined) {
        if (query.statusClass === 0) where.push("status = 0");
        else {
          where.push("status >= ? AND status < ?");
          args.push(query.statusClass * 100, query.statusClass * 100 + 100);
        }
      }
      if (query.status !== undefined) { where.push("status = ?"); args.push(query.status); }
      if (query.cold !== undefined) { where.push("cold = ?"); args.push(query.cold ? 1 : 0); }
      if (query.slowerThanMs !== undefined) { where.push("total_ms > ?"); args.push(query.slowerThanMs); }
      if (query.since !== undefined) { where.push("ts >= ?"); args.push(query.since); }
      if (query.requestId !== undefined) { where.push("request_id = ?"); args.push(query.requestId); }
      if (query.failed === true) where.push("error_code IS NOT NULL");
      if (query.trigger !== undefined) { where.push("trigger_id = ?"); args.push(query.trigger); }
      if (query.eventId !== undefined) { where.push("event_id = ?"); args.push(query.eventId); }
      args.push(query.limit);
      return db.prepare<unknown[], InvocationRow>(`SELECT * FROM invocations WHERE ${where.join(" AND ")} ORDER BY seq DESC LIMIT ?`).all(...args).map(toInvocation);
    },
    async listErrorGroups(functionName, limit) {
      return q.errGroups.all(functionName, limit).map(toErrorGroup);
    },
    async purgeTelemetry(policy) {
      return purgeTx(policy);
    },

    async close() {
      if (closed) return;
      closed = true;
      db.close();
    },
  };
}

function migrate(db: Database.Database): void {
  db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)");
  const current = db.prepare<[], { v: number | null }>("SELECT MAX(version) AS v FROM schema_migrations").get()?.v ?? 0;
  if (current > MIGRATIONS.length) {
    throw new StratusError("INTERNAL", `The database schema (version ${current}) is newer than this Stratus (knows ${MIGRATIONS.length}); upgrade Stratus`);
  }
  const record = db.prepare<[number, number]>("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)");
  for (let v = current + 1; v <= MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v - 1]!);
      record.run(v, Date.now());
    })();
  }
}
