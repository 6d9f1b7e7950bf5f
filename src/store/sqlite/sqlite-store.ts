/**
 * The embedded store: one SQLite file (better-sqlite3), WAL mode, prepared statements, and a
 * `schema_migrations` table so later releases can add migrations in order.
 *
 * better-sqlite3 is synchronous; the methods are async only to honour the Store contract. Each
 * method runs in one SQLite transaction where it touches more than one row, so a crash never leaves
 * half of an operation behind.
 */
import Database from "better-sqlite3";
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { StratusError } from "../../shared/errors";
import { assertValidFunctionName } from "../../shared/names";
import { assertMasterKey, decryptSecret, encryptSecret, generateToken, tokenId, tokenMatches } from "../secret-box";
import type {
  Activation, BuildRecord, BuildStatus, FunctionRecord, InvocationQuery, LogQuery, NewVersion, Store, TelemetryBatch, TokenRecord, VersionRecord, VersionStatus,
} from "../store";
import { TELEMETRY_QUERY_MAX } from "../store";
import type { ErrorGroup, InvocationRecord, LogLevelName, StoredLogEntry } from "../../shared/invocation";

/** Ordered migrations; index + 1 is the schema version. Never edit a released entry, append. */
const MIGRATIONS: readonly string[] = [
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
];

const LEVEL_RANK: Record<LogLevelName, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const RANK_LEVEL: Record<number, LogLevelName> = { 10: "debug", 20: "info", 30: "warn", 40: "error" };

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function assertEnvName(kind: string, name: string): void {
  if (!ENV_NAME.test(name) || name.startsWith("STRATUS_") || name.length > 256) {
    throw new StratusError("INVALID_ARGUMENT", `Invalid ${kind} name ${JSON.stringify(name.slice(0, 80))}: use [A-Za-z_][A-Za-z0-9_]*, not the reserved STRATUS_ prefix`);
  }
}

interface FunctionRow { id: number; name: string; created_at: number; active_version: string | null; activated_at: number | null }
interface VersionRow {
  function_name: string; version: string; digest: string; entry: string; export_name: string; config: string;
  source_digest: string; status: VersionStatus; image: string | null; created_at: number;
}
interface TokenRow { id: string; name: string; hash: string; created_at: number; revoked_at: number | null }
interface BuildRow {
  id: string; status: BuildStatus; source_digest: string | null; error_code: string | null; error_message: string | null;
  result: string | null; created_at: number; finished_at: number | null;
}

const toFunction = (r: FunctionRow): FunctionRecord =>
  ({ name: r.name, createdAt: r.created_at, activeVersion: r.active_version, activatedAt: r.activated_at });
const toVersion = (r: VersionRow): VersionRecord => ({
  functionName: r.function_name, version: r.version, digest: r.digest, entry: r.entry, exportName: r.export_name,
  config: JSON.parse(r.config) as unknown, sourceDigest: r.source_digest, status: r.status, image: r.image, createdAt: r.created_at,
});
const toToken = (r: TokenRow): TokenRecord => ({ id: r.id, name: r.name, createdAt: r.created_at, revokedAt: r.revoked_at });
const toBuild = (r: BuildRow): BuildRecord => ({
  id: r.id, status: r.status, sourceDigest: r.source_digest,
  error: r.error_code === null ? null : { code: r.error_code, message: r.error_message ?? "" },
  result: r.result === null ? null : (JSON.parse(r.result) as unknown),
  createdAt: r.created_at, finishedAt: r.finished_at,
});

interface LogRow {
  seq: number; function_name: string; ts: number; level: number; source: "function" | "platform"; stream: "stdout" | "stderr" | null;
  request_id: string | null; instance_id: string | null; message: string;
}
interface InvocationRow {
  request_id: string; function_name: string; version: string; instance_id: string | null; node_id: string; cold: number;
  queue_ms: number; start_ms: number; init_ms: number | null; handler_ms: number; total_ms: number; status: number;
  error_code: string | null; bytes_in: number; bytes_out: number; peak_memory_bytes: number | null; traceparent: string; ts: number;
}
interface ErrorGroupRow {
  function_name: string; fingerprint: string; code: string; message_shape: string; top_frame: string | null; count: number;
  first_seen: number; last_seen: number; sample_request_id: string;
}

const toLog = (r: LogRow): StoredLogEntry => ({
  seq: r.seq, functionName: r.function_name, ts: r.ts, level: RANK_LEVEL[r.level] ?? "info", source: r.source, stream: r.stream,
  requestId: r.request_id, instanceId: r.instance_id, message: r.message,
});
const toInvocation = (r: InvocationRow): InvocationRecord => ({
  requestId: r.request_id, functionName: r.function_name, version: r.version, instanceId: r.instance_id, nodeId: r.node_id,
  coldStart: r.cold === 1, queueMs: r.queue_ms, startMs: r.start_ms, initMs: r.init_ms, handlerMs: r.handler_ms, totalMs: r.total_ms,
  status: r.status, errorCode: r.error_code, bytesIn: r.bytes_in, bytesOut: r.bytes_out, peakMemoryBytes: r.peak_memory_bytes,
  traceparent: r.traceparent, ts: r.ts,
});
const toErrorGroup = (r: ErrorGroupRow): ErrorGroup => ({
  functionName: r.function_name, fingerprint: r.fingerprint, code: r.code, messageShape: r.message_shape, topFrame: r.top_frame,
  count: r.count, firstSeen: r.first_seen, lastSeen: r.last_seen, sampleRequestId: r.sample_request_id,
});

function queryLimit(limit: number | undefined): number {
  if (limit === undefined) return 100;
  if (!Number.isInteger(limit) || limit < 1) throw new StratusError("INVALID_ARGUMENT", "limit must be a positive integer");
  return Math.min(limit, TELEMETRY_QUERY_MAX);
}

const VERSION_COLUMNS = `f.name AS function_name, v.version, v.digest, v.entry, v.export_name, v.config,
  v.source_digest, v.status, v.image, v.created_at`;

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
 * Opens (creating and migrating as needed) a SQLite store.
 * @throws StratusError INTERNAL for a bad master key, or a database newer than this code knows.
 */
/** Longest wait of a telemetry write for another connection's lock, ms. */
const TELEMETRY_BUSY_MS = 20;

export function openSqliteStore(options: SqliteStoreOptions): Store {
  assertMasterKey(options.masterKey);
  const key = Buffer.from(options.masterKey);
  const now = options.now ?? Date.now;
  if (options.file !== ":memory:") mkdirSync(dirname(options.file), { recursive: true });
  const db = new Database(options.file);
  db.pragma("journal_mode = WAL");
  // NORMAL is durable against application crashes in WAL mode; only an OS crash may lose the last commit.
  db.pragma("synchronous = NORMAL");
  db.pragma("foreign_keys = ON");
  db.pragma("busy_timeout = 5000");
  migrate(db, now);

  const q = {
    fnByName: db.prepare<[string], FunctionRow>("SELECT * FROM functions WHERE name = ?"),
    fnByLower: db.prepare<[string], FunctionRow>("SELECT * FROM functions WHERE name_lower = ?"),
    fnAll: db.prepare<[], FunctionRow>("SELECT * FROM functions ORDER BY name"),
    fnInsert: db.prepare<[string, string, number]>("INSERT INTO functions (name, name_lower, created_at) VALUES (?, ?, ?)"),
    fnDelete: db.prepare<[number]>("DELETE FROM functions WHERE id = ?"),
    fnActivate: db.prepare<[string, number, number]>("UPDATE functions SET active_version = ?, activated_at = ? WHERE id = ?"),
    verGet: db.prepare<[string, string], VersionRow>(`SELECT ${VERSION_COLUMNS} FROM versions v JOIN functions f ON f.id = v.function_id WHERE f.name = ? AND v.version = ?`),
    verList: db.prepare<[number], VersionRow>(`SELECT ${VERSION_COLUMNS} FROM versions v JOIN functions f ON f.id = v.function_id WHERE v.function_id = ? ORDER BY v.seq DESC`),
    verInsert: db.prepare("INSERT INTO versions (function_id, version, digest, entry, export_name, config, source_digest, status, image, created_at) VALUES (@functionId, @version, @digest, @entry, @exportName, @config, @sourceDigest, @status, @image, @createdAt)"),
    verUpdate: db.prepare<[string, string | null, number, string]>("UPDATE versions SET status = ?, image = ? WHERE function_id = ? AND version = ?"),
    envGet: db.prepare<[number], { name: string; value: string }>("SELECT name, value FROM env_vars WHERE function_id = ? ORDER BY name"),
    envSet: db.prepare<[number, string, string]>("INSERT INTO env_vars (function_id, name, value) VALUES (?, ?, ?) ON CONFLICT (function_id, name) DO UPDATE SET value = excluded.value"),
    envDel: db.prepare<[number, string]>("DELETE FROM env_vars WHERE function_id = ? AND name = ?"),
    secSet: db.prepare<[number, string, string, number]>("INSERT INTO secrets (function_id, name, ciphertext, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (function_id, name) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = excluded.updated_at"),
    secDel: db.prepare<[number, string]>("DELETE FROM secrets WHERE function_id = ? AND name = ?"),
    secNames: db.prepare<[number], { name: string }>("SELECT name FROM secrets WHERE function_id = ? ORDER BY name"),
    secAll: db.prepare<[number], { name: string; ciphertext: string }>("SELECT name, ciphertext FROM secrets WHERE function_id = ? ORDER BY name"),
    tokInsert: db.prepare<[string, string, string, number]>("INSERT INTO tokens (id, name, hash, created_at) VALUES (?, ?, ?, ?)"),
    tokGet: db.prepare<[string], TokenRow>("SELECT * FROM tokens WHERE id = ?"),
    tokAll: db.prepare<[], TokenRow>("SELECT * FROM tokens ORDER BY created_at, rowid"),
    tokRevoke: db.prepare<[number, string]>("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"),
    buildInsert: db.prepare<[string, number]>("INSERT INTO builds (id, status, created_at) VALUES (?, 'running', ?)"),
    buildGet: db.prepare<[string], BuildRow>("SELECT * FROM builds WHERE id = ?"),
    buildSource: db.prepare<[string, string]>("UPDATE builds SET source_digest = ? WHERE id = ?"),
    buildFinish: db.prepare("UPDATE builds SET status = @status, error_code = @errorCode, error_message = @errorMessage, result = @result, finished_at = @finishedAt WHERE id = @id AND status = 'running'"),
    buildBySource: db.prepare<[string], BuildRow>("SELECT * FROM builds WHERE source_digest = ? AND status = 'succeeded' ORDER BY finished_at DESC, rowid DESC LIMIT 1"),
    logNext: db.prepare<[string], { n: number }>("SELECT COUNT(*) AS n FROM build_logs WHERE build_id = ?"),
    logInsert: db.prepare<[string, number, string]>("INSERT INTO build_logs (build_id, seq, line) VALUES (?, ?, ?)"),
    logGet: db.prepare<[string, number], { line: string }>("SELECT line FROM build_logs WHERE build_id = ? AND seq >= ? ORDER BY seq"),
    telLog: db.prepare("INSERT INTO logs (function_name, ts, level, source, stream, request_id, instance_id, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
    telInvocation: db.prepare(`INSERT INTO invocations (request_id, function_name, version, instance_id, node_id, cold, queue_ms, start_ms,
      init_ms, handler_ms, total_ms, status, error_code, bytes_in, bytes_out, peak_memory_bytes, traceparent, ts)
      VALUES (@requestId, @functionName, @version, @instanceId, @nodeId, @cold, @queueMs, @startMs, @initMs, @handlerMs, @totalMs,
      @status, @errorCode, @bytesIn, @bytesOut, @peakMemoryBytes, @traceparent, @ts)`),
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

  function requireFunction(name: string): FunctionRow {
    const row = q.fnByName.get(name);
    if (row === undefined) throw new StratusError("FUNCTION_NOT_FOUND", `Function ${JSON.stringify(name)} does not exist`);
    return row;
  }

  const ensureFunctionTx = db.transaction((name: string): FunctionRow => {
    assertValidFunctionName(name);
    const existing = q.fnByLower.get(name.toLowerCase());
    if (existing !== undefined) {
      if (existing.name !== name) {
        throw new StratusError("CONFLICT", `Function ${JSON.stringify(name)} clashes with the existing function ${JSON.stringify(existing.name)} (names are unique regardless of case)`);
      }
      return existing;
    }
    q.fnInsert.run(name, name.toLowerCase(), now());
    return q.fnByName.get(name)!;
  });

  const addVersionTx = db.transaction((v: NewVersion): VersionRow => {
    const fn = ensureFunctionTx(v.functionName);
    const existing = q.verGet.get(fn.name, v.version);
    if (existing !== undefined) {
      if (existing.digest !== v.digest) {
        throw new StratusError("CONFLICT", `Version ${v.version} of ${fn.name} already exists with another digest`);
      }
      return existing;
    }
    q.verInsert.run({
      functionId: fn.id, version: v.version, digest: v.digest, entry: v.entry, exportName: v.exportName,
      config: JSON.stringify(v.config ?? {}), sourceDigest: v.sourceDigest, status: v.status ?? "ready", image: v.image ?? null, createdAt: now(),
    });
    return q.verGet.get(fn.name, v.version)!;
  });

  const activateTx = db.transaction((activations: readonly Activation[]): FunctionRow[] => {
    if (activations.length === 0) throw new StratusError("INVALID_ARGUMENT", "Nothing to activate");
    const seen = new Set<string>();
    const at = now();
    for (const a of activations) {
      if (seen.has(a.functionName)) throw new StratusError("INVALID_ARGUMENT", `Function ${a.functionName} is named twice`);
      seen.add(a.functionName);
      const fn = requireFunction(a.functionName);
      const ver = q.verGet.get(fn.name, a.version);
      if (ver === undefined) throw new StratusError("VERSION_NOT_FOUND", `Version ${a.version} of ${fn.name} does not exist`);
      if (ver.status !== "ready") throw new StratusError("CONFLICT", `Version ${a.version} of ${fn.name} is ${ver.status}, not ready`);
      if (a.expectedActive !== undefined && a.expectedActive !== fn.active_version) {
        throw new StratusError("CONFLICT", `The active version of ${fn.name} changed meanwhile (expected ${a.expectedActive ?? "none"}, found ${fn.active_version ?? "none"})`);
      }
      q.fnActivate.run(a.version, at, fn.id);
    }
    return activations.map((a) => q.fnByName.get(a.functionName)!);
  });

  const setEnvTx = db.transaction((functionName: string, patch: Readonly<Record<string, string | null>>) => {
    const fn = requireFunction(functionName);
    for (const [name, value] of Object.entries(patch)) {
      assertEnvName("environment variable", name);
      if (value === null) q.envDel.run(fn.id, name);
      else if (typeof value === "string") q.envSet.run(fn.id, name, value);
      else throw new StratusError("INVALID_ARGUMENT", `The value of ${name} must be a string or null`);
    }
    return Object.fromEntries(q.envGet.all(fn.id).map((r) => [r.name, r.value]));
  });

  const appendLogTx = db.transaction((id: string, lines: readonly string[]) => {
    if (q.buildGet.get(id) === undefined) throw new StratusError("NOT_FOUND", `Build ${id} does not exist`);
    let seq = q.logNext.get(id)!.n;
    for (const line of lines) q.logInsert.run(id, seq++, line);
  });

  const writeTelemetryTx = db.transaction((batch: TelemetryBatch) => {
    for (const l of batch.logs) {
      q.telLog.run(l.functionName, l.ts, LEVEL_RANK[l.level] ?? 20, l.source, l.stream, l.requestId, l.instanceId, l.message);
    }
    for (const r of batch.invocations) {
      q.telInvocation.run({
        ...r, cold: r.coldStart ? 1 : 0, bytesIn: Math.round(r.bytesIn), bytesOut: Math.round(r.bytesOut),
        peakMemoryBytes: r.peakMemoryBytes === null ? null : Math.round(r.peakMemoryBytes),
      });
    }
    for (const e of batch.errors) q.telError.run(e);
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

  const purgeTx = db.transaction((policy: { olderThan: number; maxLogRows?: number; maxInvocationRows?: number }) => ({
    logs: purgeTable(q.logCut, q.logMaxSeq, q.logDeleteBefore, q.logKeepFrom, policy.olderThan, policy.maxLogRows),
    invocations: purgeTable(q.invCut, q.invMaxSeq, q.invDeleteBefore, q.invKeepFrom, policy.olderThan, policy.maxInvocationRows),
    errorGroups: q.errPurge.run(policy.olderThan).changes,
  }));

  let closed = false;
  return {
    async ensureFunction(name) {
      return toFunction(ensureFunctionTx(name));
    },
    async getFunction(name) {
      const row = q.fnByName.get(name);
      return row === undefined ? null : toFunction(row);
    },
    async listFunctions() {
      return q.fnAll.all().map(toFunction);
    },
    async deleteFunction(name) {
      q.fnDelete.run(requireFunction(name).id);
    },

    async addVersion(version) {
      return toVersion(addVersionTx(version));
    },
    async getVersion(functionName, version) {
      const row = q.verGet.get(functionName, version);
      return row === undefined ? null : toVersion(row);
    },
    async listVersions(functionName) {
      return q.verList.all(requireFunction(functionName).id).map(toVersion);
    },
    async updateVersion(functionName, version, patch) {
      const row = q.verGet.get(functionName, version);
      if (row === undefined) throw new StratusError("VERSION_NOT_FOUND", `Version ${version} of ${functionName} does not exist`);
      const fn = requireFunction(functionName);
      q.verUpdate.run(patch.status ?? row.status, patch.image === undefined ? row.image : patch.image, fn.id, version);
      return toVersion(q.verGet.get(functionName, version)!);
    },
    async getActiveVersion(functionName) {
      const fn = q.fnByName.get(functionName);
      if (fn === undefined || fn.active_version === null) return null;
      const row = q.verGet.get(fn.name, fn.active_version);
      return row === undefined ? null : toVersion(row);
    },
    async activateVersions(activations) {
      return activateTx(activations).map(toFunction);
    },

    async getEnvVars(functionName) {
      return Object.fromEntries(q.envGet.all(requireFunction(functionName).id).map((r) => [r.name, r.value]));
    },
    async setEnvVars(functionName, patch) {
      return setEnvTx(functionName, patch);
    },
    async setSecret(functionName, name, value) {
      const fn = requireFunction(functionName);
      assertEnvName("secret", name);
      if (typeof value !== "string") throw new StratusError("INVALID_ARGUMENT", `The value of secret ${name} must be a string`);
      q.secSet.run(fn.id, name, encryptSecret(key, fn.name, name, value), now());
    },
    async deleteSecret(functionName, name) {
      const fn = requireFunction(functionName);
      if (q.secDel.run(fn.id, name).changes === 0) throw new StratusError("NOT_FOUND", `Secret ${name} of ${fn.name} does not exist`);
    },
    async listSecretNames(functionName) {
      return q.secNames.all(requireFunction(functionName).id).map((r) => r.name);
    },
    async getSecretValues(functionName) {
      const fn = requireFunction(functionName);
      return Object.fromEntries(q.secAll.all(fn.id).map((r) => [r.name, decryptSecret(key, fn.name, r.name, r.ciphertext)]));
    },

    async createToken(name) {
      if (typeof name !== "string" || name.trim() === "" || name.length > 200) {
        throw new StratusError("INVALID_ARGUMENT", "A token needs a name of 1 to 200 characters");
      }
      const t = generateToken();
      q.tokInsert.run(t.id, name, t.hash, now());
      return { token: t.token, record: toToken(q.tokGet.get(t.id)!) };
    },
    async listTokens() {
      return q.tokAll.all().map(toToken);
    },
    async revokeToken(id) {
      if (q.tokGet.get(id) === undefined) throw new StratusError("NOT_FOUND", `Token ${id} does not exist`);
      q.tokRevoke.run(now(), id);
      return toToken(q.tokGet.get(id)!);
    },
    async verifyToken(token) {
      if (typeof token !== "string") return null;
      const id = tokenId(token);
      if (id === null) return null;
      const row = q.tokGet.get(id);
      if (row === undefined || row.revoked_at !== null) return null;
      return tokenMatches(token, row.hash) ? toToken(row) : null;
    },

    async createBuild() {
      const id = randomUUID();
      q.buildInsert.run(id, now());
      return toBuild(q.buildGet.get(id)!);
    },
    async appendBuildLog(id, lines) {
      appendLogTx(id, lines);
    },
    async setBuildSource(id, sourceDigest) {
      if (q.buildSource.run(sourceDigest, id).changes === 0) throw new StratusError("NOT_FOUND", `Build ${id} does not exist`);
    },
    async finishBuild(id, outcome) {
      const row = q.buildGet.get(id);
      if (row === undefined) throw new StratusError("NOT_FOUND", `Build ${id} does not exist`);
      const changes = q.buildFinish.run({
        id, status: outcome.status, finishedAt: now(),
        errorCode: outcome.status === "failed" ? outcome.error.code : null,
        errorMessage: outcome.status === "failed" ? outcome.error.message : null,
        result: outcome.status === "succeeded" ? JSON.stringify(outcome.result ?? null) : null,
      }).changes;
      if (changes === 0) throw new StratusError("CONFLICT", `Build ${id} already ended (${row.status})`);
      return toBuild(q.buildGet.get(id)!);
    },
    async getBuild(id) {
      const row = q.buildGet.get(id);
      return row === undefined ? null : toBuild(row);
    },
    async getBuildLog(id, fromLine = 0) {
      if (q.buildGet.get(id) === undefined) throw new StratusError("NOT_FOUND", `Build ${id} does not exist`);
      return q.logGet.all(id, fromLine).map((r) => r.line);
    },
    async findSucceededBuild(sourceDigest) {
      const row = q.buildBySource.get(sourceDigest);
      return row === undefined ? null : toBuild(row);
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
    async queryLogs(functionName, query: LogQuery = {}) {
      const where = ["function_name = ?"];
      const args: unknown[] = [functionName];
      if (query.since !== undefined) { where.push("ts >= ?"); args.push(query.since); }
      if (query.afterSeq !== undefined) { where.push("seq > ?"); args.push(query.afterSeq); }
      if (query.requestId !== undefined) { where.push("request_id = ?"); args.push(query.requestId); }
      if (query.minLevel !== undefined) { where.push("level >= ?"); args.push(LEVEL_RANK[query.minLevel]); }
      args.push(queryLimit(query.limit));
      // Compiled per call: these are API reads, not the write path.
      const rows = db.prepare<unknown[], LogRow>(`SELECT * FROM logs WHERE ${where.join(" AND ")} ORDER BY seq DESC LIMIT ?`).all(...args);
      return rows.reverse().map(toLog);
    },
    async queryInvocations(functionName, query: InvocationQuery = {}) {
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
      args.push(queryLimit(query.limit));
      return db.prepare<unknown[], InvocationRow>(`SELECT * FROM invocations WHERE ${where.join(" AND ")} ORDER BY seq DESC LIMIT ?`).all(...args).map(toInvocation);
    },
    async listErrorGroups(functionName, limit) {
      return q.errGroups.all(functionName, queryLimit(limit)).map(toErrorGroup);
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

function migrate(db: Database.Database, now: () => number): void {
  db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)");
  const current = db.prepare<[], { v: number | null }>("SELECT MAX(version) AS v FROM schema_migrations").get()?.v ?? 0;
  if (current > MIGRATIONS.length) {
    throw new StratusError("INTERNAL", `The database schema (version ${current}) is newer than this Stratus (knows ${MIGRATIONS.length}); upgrade Stratus`);
  }
  const record = db.prepare<[number, number]>("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)");
  for (let v = current + 1; v <= MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v - 1]!);
      record.run(v, now());
    })();
  }
}
