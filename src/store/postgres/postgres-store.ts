/**
 * The PostgreSQL store (the `pg` client, a connection pool). It implements StorePersistence only
 * (src/store/persistence.ts); the rules and encryption are in src/store/store-rules.ts, and
 * `openPostgresStore` joins the two. Schema and migrations: ./migrations.ts.
 *
 * Atomicity, where SQLite relies on being synchronous: every read-then-write is either one statement
 * (`INSERT … ON CONFLICT`, `UPDATE … WHERE status = 'running' RETURNING`, `COALESCE(revoked_at, $t)`)
 * or a READ COMMITTED transaction that first locks the rows it decides on (`SELECT … FOR UPDATE`,
 * functions locked in id order so two multi-function activations cannot deadlock). A transaction
 * that still fails with a serialization failure or a deadlock is retried (at most TX_ATTEMPTS times).
 *
 * Telemetry: `logs` and `invocations` are partitioned by day on `ts` (UTC days, partitions named
 * `<table>_pYYYYMMDD`). A partition is created before the first row of its day is written (and
 * PARTITION_DAYS_AHEAD days ahead at open and at each purge), so writes never hit a missing partition; retention detaches
 * (`DETACH PARTITION … CONCURRENTLY`) and drops whole partitions older than the cut-off and deletes rows
 * only in the one partition the cut-off falls into. Batches are written with multi-row INSERTs of at
 * most INSERT_CHUNK_ROWS rows (PostgreSQL allows 65 535 parameters per statement; 18 columns × 1 000
 * rows stays below). COPY (pg-copy-streams) measured 200k rows in 1.4 s in ../shared/CLUSTER-NOTES.md,
 * but the observer flushes at most a few thousand rows per second and also needs the error-group
 * upsert in the same transaction, which COPY cannot do; multi-row INSERT keeps one code path.
 */
import pg from "pg";
import { isSerializationFailure, runTransaction, withClient } from "./pg-tx";
import { StratusError } from "../../shared/errors";
import type { ErrorOccurrence } from "../../shared/invocation";
import type { StorePersistence } from "../persistence";
import { assertMasterKey } from "../secret-box";
import {
  toJoinToken, toNode, toStoredNode, type JoinTokenRow, type NodeRow,
  LEVEL_RANK, toBuild, toErrorGroup, toFunction, toInvocation, toLog, toToken, toVersion, VERSION_COLUMNS,
  type BuildRow, type ErrorGroupRow, type FunctionRow, type InvocationRow, type LogRow, type TokenRow, type VersionRow,
} from "../rows";
import type { FunctionRecord, PurgePolicy, Store, TelemetryBatch, VersionRecord } from "../store";
import { createStore } from "../store-rules";
import { migrate } from "./migrations";

/** Options of `openPostgresStore`. */
export interface PostgresStoreOptions {
  /** `postgres://user:password@host:port/database` (libpq-style; `?host=/socket/dir` works too). */
  readonly connectionString: string;
  /** 32-byte AES-256 key for secrets. */
  readonly masterKey: Uint8Array;
  /** Clock, epoch ms; default Date.now. */
  readonly now?: () => number;
  /** Most pooled connections; default 10. */
  readonly poolSize?: number;
}

/** Options of `openPostgresPersistence`. */
export type PostgresPersistenceOptions = Pick<PostgresStoreOptions, "connectionString" | "poolSize">;

/** The NOTIFY channel of config changes; the payload is the new config revision. */
export const CONFIG_CHANNEL = "stratus_config";
/** Arbitrary constant key of the advisory lock that serialises node registrations. */
const REGISTER_LOCK = 0x6e6f646573;
/** Delay before a lost LISTEN connection is re-opened, ms (doubling up to LISTEN_RETRY_MAX_MS). */
const LISTEN_RETRY_MS = 200;
const LISTEN_RETRY_MAX_MS = 5_000;

const DAY_MS = 86_400_000;
/** Days of partitions created ahead at open, so the day's first flush does not pay the DDL. */
const PARTITION_DAYS_AHEAD = 3;
const INSERT_CHUNK_ROWS = 1000;
/** Attempts of a transaction that fails with 40001 (serialization) or 40P01 (deadlock). */
const TX_ATTEMPTS = 5;
const TELEMETRY_TABLES = ["logs", "invocations"] as const;
type TelemetryTable = (typeof TELEMETRY_TABLES)[number];

// int8 as a JS number: every bigint here is an epoch ms, a row count or a sequence number, all far
// below 2^53. Set per pool (not globally), so other pg users in the process keep the default.
const TYPES = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/** `<table>_pYYYYMMDD` of the UTC day holding `ts`, with that day's bounds. */
export function partitionOf(table: TelemetryTable, ts: number): { name: string; from: number; to: number } {
  const from = Math.floor(ts / DAY_MS) * DAY_MS;
  const d = new Date(from);
  const ymd = `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, "0")}${String(d.getUTCDate()).padStart(2, "0")}`;
  return { name: `${table}_p${ymd}`, from, to: from + DAY_MS };
}

/** Day start of a partition name made by `partitionOf`, or null for another table. */
function partitionDay(name: string): number | null {
  const m = /_p(\d{4})(\d{2})(\d{2})$/.exec(name);
  return m === null ? null : Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
}

/** `($1,$2,$3),($4,$5,$6)…` for `rows` rows of `cols` columns. */
function valuesList(rows: number, cols: number): string {
  const out: string[] = [];
  for (let r = 0; r < rows; r++) {
    const ps: string[] = [];
    for (let c = 1; c <= cols; c++) ps.push(`$${r * cols + c}`);
    out.push(`(${ps.join(",")})`);
  }
  return out.join(",");
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Errors of one batch folded by group, so one upsert touches each group once (ON CONFLICT requires it). */
function foldErrors(errors: readonly ErrorOccurrence[]) {
  const groups = new Map<string, { e: ErrorOccurrence; count: number; first: number; last: number; sample: string }>();
  for (const e of errors) {
    const k = `${e.functionName}\u0000${e.fingerprint}`;
    const g = groups.get(k);
    const ts = Math.round(e.ts);
    if (g === undefined) groups.set(k, { e, count: 1, first: ts, last: ts, sample: e.requestId });
    else {
      g.count++;
      g.first = Math.min(g.first, ts);
      if (ts >= g.last) { g.last = ts; g.sample = e.requestId; }
    }
  }
  return [...groups.values()];
}

/**
 * A connection-level failure (server down, restarting, unreachable, the session cut), as opposed to an
 * error of the statement: Node socket errors, SQLSTATE class 08 (connection exception) and 57P01–57P03
 * (admin/crash shutdown, cannot connect now), and node-postgres' own "Connection terminated" errors.
 */
export function isConnectionFailure(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === "string" ? e.code : "";
  if (["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EPIPE", "ENOTFOUND", "EAI_AGAIN"].includes(code)) return true;
  if (code.startsWith("08") || code === "57P01" || code === "57P02" || code === "57P03") return true;
  const msg = typeof e?.message === "string" ? e.message : "";
  return /Connection terminated|connection timeout|Client has encountered a connection error/i.test(msg);
}

/** Rethrows a connection failure as STORE_UNAVAILABLE (503, a stable code); anything else as it is. */
function storeError(err: unknown): never {
  if (isConnectionFailure(err)) throw new StratusError("STORE_UNAVAILABLE", undefined, { cause: err, headers: { "retry-after": "2" } });
  throw err;
}

/**
 * Opens a PostgreSQL store: connects, runs the migrations, creates the coming days' partitions.
 * @throws StratusError INTERNAL for a bad master key or a schema newer than this code; a connection
 *   failure is the pg error itself (the caller's start fails with its message).
 */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<Store> {
  assertMasterKey(options.masterKey);
  const persistence = await openPostgresPersistence(options);
  return createStore(persistence, { masterKey: options.masterKey, ...(options.now ? { now: options.now } : {}) });
}

/** Opens the PostgreSQL persistence (see `openPostgresStore`). */
export async function openPostgresPersistence(options: PostgresPersistenceOptions): Promise<StorePersistence> {
  const pool = new pg.Pool({ connectionString: options.connectionString, max: options.poolSize ?? 10, types: TYPES });
  // An idle client's error (server restart) must not crash the process; the next query reconnects.
  pool.on("error", () => {});
  try {
    await withClient(pool, migrate);
  } catch (err) {
    await pool.end();
    throw err;
  }

  const query = <R extends pg.QueryResultRow>(sql: string, params?: unknown[]) => pool.query<R>(sql, params).catch(storeError);

  /** Runs `fn` in a transaction; retried on serialization failure or deadlock. */
  const tx = <T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> => runTransaction(pool, fn, { attempts: TX_ATTEMPTS, retryable: isSerializationFailure }).catch(storeError);

  // Partitions known to exist (created by us or found at open). A partition dropped by another
  // control plane's retention is noticed on insert (23514, no partition for the row) and re-created.
  const known = new Set<string>();
  async function loadPartitions(): Promise<void> {
    known.clear();
    for (const t of TELEMETRY_TABLES) {
      const { rows } = await query<{ name: string }>(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass", [t]);
      for (const r of rows) known.add(r.name);
    }
  }
  async function ensurePartitions(table: TelemetryTable, timestamps: Iterable<number>): Promise<void> {
    const wanted = new Map<string, { from: number; to: number }>();
    for (const ts of timestamps) {
      const p = partitionOf(table, ts);
      if (!known.has(p.name)) wanted.set(p.name, p);
    }
    for (const [name, p] of wanted) {
      try {
        await query(`CREATE TABLE IF NOT EXISTS ${name} PARTITION OF ${table} FOR VALUES FROM (${p.from}) TO (${p.to})`);
      } catch (err) {
        // Two writers creating the same partition at once: the loser's IF NOT EXISTS can still fail
        // on the catalog's unique index; the partition exists either way.
        if ((err as { code?: string }).code !== "23505" && (err as { code?: string }).code !== "42P07") throw err;
      }
      known.add(name);
    }
  }
  /** Today's and the next PARTITION_DAYS_AHEAD days' partitions (a no-op when known). */
  async function ensureComingPartitions(): Promise<void> {
    const today = Date.now();
    const days = Array.from({ length: PARTITION_DAYS_AHEAD + 1 }, (_, i) => today + i * DAY_MS);
    for (const t of TELEMETRY_TABLES) await ensurePartitions(t, days);
  }
  try {
    await loadPartitions();
    await ensureComingPartitions();
  } catch (err) {
    await pool.end();
    throw err;
  }

  async function insertTelemetry(c: pg.ClientBase, batch: TelemetryBatch): Promise<void> {
    for (const part of chunks(batch.logs, INSERT_CHUNK_ROWS)) {
      const params: unknown[] = [];
      for (const l of part) params.push(l.functionName, Math.round(l.ts), LEVEL_RANK[l.level] ?? 20, l.source, l.stream, l.requestId, l.instanceId, l.message);
      // Rows of one VALUES list take their seq (the column default) in list order.
      await c.query(`INSERT INTO logs (function_name, ts, level, source, stream, request_id, instance_id, message) VALUES ${valuesList(part.length, 8)}`, params);
    }
    for (const part of chunks(batch.invocations, INSERT_CHUNK_ROWS)) {
      const params: unknown[] = [];
      for (const r of part) {
        params.push(r.requestId, r.functionName, r.version, r.instanceId, r.nodeId, r.coldStart, r.queueMs, r.startMs, r.initMs, r.handlerMs,
          r.totalMs, r.status, r.errorCode, Math.round(r.bytesIn), Math.round(r.bytesOut),
          r.peakMemoryBytes === null ? null : Math.round(r.peakMemoryBytes), r.traceparent, Math.round(r.ts),
          r.trigger ?? null, r.eventId ?? null, r.attempt ?? null);
      }
      await c.query(`INSERT INTO invocations (request_id, function_name, version, instance_id, node_id, cold, queue_ms, start_ms, init_ms,
        handler_ms, total_ms, status, error_code, bytes_in, bytes_out, peak_memory_bytes, traceparent, ts, trigger_id, event_id, attempt)
        VALUES ${valuesList(part.length, 21)}`, params);
    }
    for (const part of chunks(foldErrors(batch.errors), INSERT_CHUNK_ROWS)) {
      const params: unknown[] = [];
      for (const g of part) params.push(g.e.functionName, g.e.fingerprint, g.e.code, g.e.messageShape, g.e.topFrame, g.count, g.first, g.last, g.sample);
      await c.query(`INSERT INTO error_groups AS g (function_name, fingerprint, code, message_shape, top_frame, count, first_seen, last_seen, sample_request_id)
        VALUES ${valuesList(part.length, 9)}
        ON CONFLICT (function_name, fingerprint) DO UPDATE SET count = g.count + excluded.count,
          first_seen = LEAST(g.first_seen, excluded.first_seen),
          last_seen = GREATEST(g.last_seen, excluded.last_seen),
          sample_request_id = CASE WHEN excluded.last_seen >= g.last_seen THEN excluded.sample_request_id ELSE g.sample_request_id END`, params);
    }
  }

  /**
   * Detaches and drops one partition; returns the rows it held (counted just before the detach: a
   * row written to a day that old in between is dropped uncounted — rows arrive in time order, so
   * only a writer days late could do that).
   */
  async function dropPartition(table: TelemetryTable, name: string): Promise<number> {
    const { rows } = await query<{ n: number }>(`SELECT count(*)::bigint AS n FROM ${name}`);
    try {
      // CONCURRENTLY: readers and writers of the parent are not blocked (PostgreSQL ≥ 14; not in a transaction).
      await query(`ALTER TABLE ${table} DETACH PARTITION ${name} CONCURRENTLY`);
    } catch (err) {
      // An earlier detach was interrupted: finish it. Already gone (another control plane): nothing to do.
      const code = (err as { code?: string }).code;
      if (code === "42P01") { known.delete(name); return 0; }
      if (code !== "55000" && !/pending/i.test((err as Error).message)) throw err;
      await query(`ALTER TABLE ${table} DETACH PARTITION ${name} FINALIZE`);
    }
    await query(`DROP TABLE IF EXISTS ${name}`);
    known.delete(name);
    return rows[0]?.n ?? 0;
  }

  async function purgeTable(table: TelemetryTable, olderThan: number, maxRows: number | undefined): Promise<number> {
    let deleted = 0;
    const { rows: parts } = await query<{ name: string }>(
      "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass ORDER BY c.relname", [table]);
    const days = parts.map((p) => ({ name: p.name, day: partitionDay(p.name) })).filter((p): p is { name: string; day: number } => p.day !== null);
    // Whole days before the cut-off go with their partition; the cut-off's own day loses rows.
    for (const p of days) if (p.day + DAY_MS <= olderThan) deleted += await dropPartition(table, p.name);
    deleted += (await query(`DELETE FROM ${table} WHERE ts < $1`, [olderThan])).rowCount ?? 0;
    if (maxRows !== undefined) {
      if (maxRows <= 0) deleted += (await query(`DELETE FROM ${table}`)).rowCount ?? 0;
      else {
        const { rows } = await query<{ seq: number }>(`SELECT seq FROM ${table} ORDER BY seq DESC OFFSET $1 LIMIT 1`, [maxRows - 1]);
        const boundary = rows[0]?.seq;
        if (boundary !== undefined) {
          // Partitions entirely below the boundary are dropped, the rest trimmed by row.
          for (const p of days) {
            if (!known.has(p.name)) continue;
            const { rows: m } = await query<{ max: number | null }>(`SELECT max(seq) AS max FROM ${p.name}`);
            if (m[0]?.max != null && m[0].max < boundary) deleted += await dropPartition(table, p.name);
          }
          deleted += (await query(`DELETE FROM ${table} WHERE seq < $1`, [boundary])).rowCount ?? 0;
        }
      }
    }
    return deleted;
  }

  const versionOf = async (c: pg.ClientBase | pg.Pool, fn: string, v: string): Promise<VersionRecord | null> => {
    const { rows } = await c.query<VersionRow>(`SELECT ${VERSION_COLUMNS} FROM versions v JOIN functions f ON f.id = v.function_id WHERE f.name = $1 AND v.version = $2`, [fn, v]);
    return rows[0] === undefined ? null : toVersion(rows[0]);
  };

  let closed = false;
  return {
    async ensureFunction(name, nameLower, at) {
      // ON CONFLICT waits for a concurrent inserter of the same name to commit; the SELECT (a new
      // snapshot under READ COMMITTED) then sees its row. No conflict target: two writers of the same
      // name collide on `name` as well as on `name_lower`, and either must end in DO NOTHING (the race
      // case of the conformance suite caught a 23505 here). Bounded retry for a delete in between.
      for (let attempt = 0; attempt < 3; attempt++) {
        await query("INSERT INTO functions (name, name_lower, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", [name, nameLower, at]);
        const { rows } = await query<FunctionRow>("SELECT * FROM functions WHERE name_lower = $1", [nameLower]);
        if (rows[0] !== undefined) return toFunction(rows[0]);
      }
      throw new StratusError("CONFLICT", `Function ${JSON.stringify(name)} was deleted while being created; retry`);
    },
    async getFunction(name) {
      const { rows } = await query<FunctionRow>("SELECT * FROM functions WHERE name = $1", [name]);
      return rows[0] === undefined ? null : toFunction(rows[0]);
    },
    async listFunctions() {
      // COLLATE "C": the same byte order as SQLite's default, whatever the database's collation.
      return (await query<FunctionRow>(`SELECT * FROM functions ORDER BY name COLLATE "C"`)).rows.map(toFunction);
    },
    async deleteFunction(name) {
      return ((await query("DELETE FROM functions WHERE name = $1", [name])).rowCount ?? 0) === 1;
    },

    async insertVersion(v) {
      await query(`INSERT INTO versions (function_id, version, digest, entry, export_name, config, source_digest, status, image, created_at)
        SELECT f.id, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM functions f WHERE f.name = $1
        ON CONFLICT (function_id, version) DO NOTHING`,
      [v.functionName, v.version, v.digest, v.entry, v.exportName, JSON.stringify(v.config ?? {}), v.sourceDigest, v.status, v.image, v.createdAt]);
      return versionOf(pool, v.functionName, v.version);
    },
    getVersion: (fn, v) => versionOf(pool, fn, v),
    async listVersions(functionName) {
      const { rows } = await query<VersionRow & { fid: number; v_seq: number | null }>(
        `SELECT f.id AS fid, v.seq AS v_seq, ${VERSION_COLUMNS} FROM functions f LEFT JOIN versions v ON v.function_id = f.id
         WHERE f.name = $1 ORDER BY v.seq DESC`, [functionName]);
      if (rows.length === 0) return null;
      return rows.filter((r) => r.v_seq !== null).map(toVersion);
    },
    async updateVersion(functionName, version, patch) {
      const { rows } = await query<{ version: string }>(
        `UPDATE versions v SET status = COALESCE($3, v.status), image = CASE WHEN $4 THEN $5 ELSE v.image END
         FROM functions f WHERE f.id = v.function_id AND f.name = $1 AND v.version = $2 RETURNING v.version`,
        [functionName, version, patch.status ?? null, patch.image !== undefined, patch.image ?? null]);
      return rows.length === 0 ? null : versionOf(pool, functionName, version);
    },
    async getActiveVersion(functionName) {
      const { rows } = await query<VersionRow>(
        `SELECT ${VERSION_COLUMNS} FROM functions f JOIN versions v ON v.function_id = f.id AND v.version = f.active_version WHERE f.name = $1`, [functionName]);
      return rows[0] === undefined ? null : toVersion(rows[0]);
    },
    async activateVersions(activations, at, check) {
      return tx(async (c) => {
        // Lock every named function, in id order (two deploys naming a and b in opposite orders
        // would otherwise deadlock), before reading anything the checks decide on.
        const { rows } = await c.query<FunctionRow>("SELECT * FROM functions WHERE name = ANY($1) ORDER BY id FOR UPDATE", [activations.map((a) => a.functionName)]);
        const byName = new Map(rows.map((r) => [r.name, r]));
        for (const a of activations) {
          const fn = byName.get(a.functionName);
          check(a, fn === undefined ? null : toFunction(fn), fn === undefined ? null : await versionOf(c, fn.name, a.version));
        }
        const out: FunctionRecord[] = [];
        for (const a of activations) {
          const { rows: up } = await c.query<FunctionRow>("UPDATE functions SET active_version = $1, activated_at = $2 WHERE id = $3 RETURNING *",
            [a.version, at, byName.get(a.functionName)!.id]);
          out.push(toFunction(up[0]!));
        }
        return out;
      });
    },

    async getEnvVars(functionName) {
      const { rows } = await query<{ name: string | null; value: string | null }>(
        `SELECT e.name, e.value FROM functions f LEFT JOIN env_vars e ON e.function_id = f.id WHERE f.name = $1 ORDER BY e.name COLLATE "C"`, [functionName]);
      if (rows.length === 0) return null;
      return Object.fromEntries(rows.filter((r) => r.name !== null).map((r) => [r.name!, r.value!]));
    },
    async patchEnvVars(functionName, patch) {
      return tx(async (c) => {
        // FOR SHARE: a concurrent delete of the function waits for this patch (patches of other keys do not).
        const { rows } = await c.query<{ id: number }>("SELECT id FROM functions WHERE name = $1 FOR SHARE", [functionName]);
        const id = rows[0]?.id;
        if (id === undefined) return null;
        const set = Object.entries(patch).filter((e): e is [string, string] => e[1] !== null);
        const del = Object.entries(patch).filter(([, v]) => v === null).map(([k]) => k);
        if (del.length > 0) await c.query("DELETE FROM env_vars WHERE function_id = $1 AND name = ANY($2)", [id, del]);
        if (set.length > 0) {
          await c.query(`INSERT INTO env_vars (function_id, name, value) SELECT $1, n, v FROM unnest($2::text[], $3::text[]) AS t(n, v)
            ON CONFLICT (function_id, name) DO UPDATE SET value = excluded.value`, [id, set.map((e) => e[0]), set.map((e) => e[1])]);
        }
        const env = await c.query<{ name: string; value: string }>(`SELECT name, value FROM env_vars WHERE function_id = $1 ORDER BY name COLLATE "C"`, [id]);
        return Object.fromEntries(env.rows.map((r) => [r.name, r.value]));
      });
    },
    async putSecret(functionName, name, ciphertext, at) {
      const r = await query(`INSERT INTO secrets (function_id, name, ciphertext, updated_at) SELECT id, $2, $3, $4 FROM functions WHERE name = $1
        ON CONFLICT (function_id, name) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = excluded.updated_at`, [functionName, name, ciphertext, at]);
      return (r.rowCount ?? 0) === 1;
    },
    async deleteSecret(functionName, name) {
      const { rows } = await query<{ f: number; d: number }>(
        `WITH f AS (SELECT id FROM functions WHERE name = $1),
              d AS (DELETE FROM secrets s USING f WHERE s.function_id = f.id AND s.name = $2 RETURNING 1)
         SELECT (SELECT count(*) FROM f)::int AS f, (SELECT count(*) FROM d)::int AS d`, [functionName, name]);
      if (rows[0]!.f === 0) return "no-function";
      return rows[0]!.d === 0 ? "no-secret" : "deleted";
    },
    async listSecrets(functionName) {
      const { rows } = await query<{ name: string | null; ciphertext: string | null }>(
        `SELECT s.name, s.ciphertext FROM functions f LEFT JOIN secrets s ON s.function_id = f.id WHERE f.name = $1 ORDER BY s.name COLLATE "C"`, [functionName]);
      if (rows.length === 0) return null;
      return rows.filter((r) => r.name !== null).map((r) => ({ name: r.name!, ciphertext: r.ciphertext! }));
    },

    async insertToken(t) {
      await query("INSERT INTO tokens (id, name, hash, created_at) VALUES ($1, $2, $3, $4)", [t.id, t.name, t.hash, t.createdAt]);
    },
    async getToken(id) {
      const { rows } = await query<TokenRow>("SELECT * FROM tokens WHERE id = $1", [id]);
      return rows[0] === undefined ? null : { ...toToken(rows[0]), hash: rows[0].hash };
    },
    async listTokens() {
      return (await query<TokenRow>("SELECT * FROM tokens ORDER BY created_at, seq")).rows.map(toToken);
    },
    async revokeToken(id, at) {
      // One statement under the row lock: the first revocation's time is kept, later ones return it.
      const { rows } = await query<TokenRow>("UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING *", [id, at]);
      return rows[0] === undefined ? null : toToken(rows[0]);
    },
    async listTokenHashes() {
      return (await query<{ hash: string }>("SELECT hash FROM tokens WHERE revoked_at IS NULL ORDER BY created_at, seq")).rows.map((r) => r.hash);
    },

    async insertJoinToken(t) {
      await query("INSERT INTO join_tokens (id, name, hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)", [t.id, t.name, t.hash, t.createdAt, t.expiresAt]);
    },
    async getJoinToken(id) {
      const { rows } = await query<JoinTokenRow>("SELECT * FROM join_tokens WHERE id = $1", [id]);
      return rows[0] === undefined ? null : { ...toJoinToken(rows[0]), hash: rows[0].hash };
    },
    async listJoinTokens() {
      return (await query<JoinTokenRow>("SELECT * FROM join_tokens ORDER BY created_at, seq")).rows.map(toJoinToken);
    },
    async revokeJoinToken(id, at) {
      const { rows } = await query<JoinTokenRow>("UPDATE join_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING *", [id, at]);
      return rows[0] === undefined ? null : toJoinToken(rows[0]);
    },
    async registerNode(n, maxNodes) {
      return tx(async (c) => {
        // Registrations are serialised (two new nodes must not pick the same lowest free id).
        await c.query("SELECT pg_advisory_xact_lock($1)", [REGISTER_LOCK]);
        const same = (await c.query<NodeRow>("SELECT * FROM nodes WHERE name = $1", [n.name])).rows[0];
        if (same !== undefined && same.removed_at === null) {
          const { rows } = await c.query<NodeRow>("UPDATE nodes SET url = $2, driver = $3, credential_id = $4, credential_hash = $5 WHERE id = $1 RETURNING *",
            [same.id, n.url, n.driver, n.credentialId, n.credentialHash]);
          return toNode(rows[0]!);
        }
        if (same !== undefined) await c.query("DELETE FROM nodes WHERE id = $1", [same.id]);
        const { rows: free } = await c.query<{ id: number }>(
          "SELECT i AS id FROM generate_series(1, $1::int) i WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE id = i AND removed_at IS NULL) ORDER BY i LIMIT 1", [maxNodes]);
        if (free[0] === undefined) return null;
        await c.query("DELETE FROM nodes WHERE id = $1", [free[0].id]);
        const { rows } = await c.query<NodeRow>(`INSERT INTO nodes (id, name, url, driver, state, created_at, credential_id, credential_hash)
          VALUES ($1, $2, $3, $4, 'ready', $5, $6, $7) RETURNING *`, [free[0].id, n.name, n.url, n.driver, n.at, n.credentialId, n.credentialHash]);
        return toNode(rows[0]!);
      });
    },
    async getNodeByCredential(credentialId) {
      const { rows } = await query<NodeRow>("SELECT * FROM nodes WHERE credential_id = $1", [credentialId]);
      return rows[0] === undefined ? null : toStoredNode(rows[0]);
    },
    async heartbeatNode(id, at, load, url) {
      const { rows } = await query<NodeRow>("UPDATE nodes SET last_seen = $2, load = $3, url = COALESCE($4, url) WHERE id = $1 AND removed_at IS NULL RETURNING *",
        [id, at, JSON.stringify(load), url ?? null]);
      return rows[0] === undefined ? null : toNode(rows[0]);
    },
    async setNodeState(id, state) {
      const { rows } = await query<NodeRow>("UPDATE nodes SET state = $2 WHERE id = $1 AND removed_at IS NULL RETURNING *", [id, state]);
      return rows[0] === undefined ? null : toNode(rows[0]);
    },
    async removeNode(id, at) {
      const { rows } = await query<NodeRow>("UPDATE nodes SET removed_at = $2 WHERE id = $1 AND removed_at IS NULL RETURNING *", [id, at]);
      return rows[0] === undefined ? null : toNode(rows[0]);
    },
    async listNodes() {
      return (await query<NodeRow>("SELECT * FROM nodes WHERE removed_at IS NULL ORDER BY id")).rows.map(toNode);
    },
    async bumpConfigRevision() {
      // The NOTIFY is delivered at commit, i.e. together with the new revision (one statement, one transaction).
      const { rows } = await query<{ value: number }>(
        `WITH b AS (UPDATE cluster_state SET value = value + 1 WHERE key = 'config_rev' RETURNING value)
         SELECT value, pg_notify('${CONFIG_CHANNEL}', value::text) FROM b`);
      return rows[0]!.value;
    },
    async configRevision() {
      return (await query<{ value: number }>("SELECT value FROM cluster_state WHERE key = 'config_rev'")).rows[0]!.value;
    },
    async watchConfig(onChange) {
      // A dedicated connection (never a pooled one: LISTEN belongs to a session). When it drops, it is
      // re-opened with backoff and onChange(null) tells the caller to resync (NOTIFY is not replayed).
      let stopped = false;
      let client: pg.Client | null = null;
      let timer: NodeJS.Timeout | null = null;
      let delay = LISTEN_RETRY_MS;
      const connect = async (first: boolean): Promise<void> => {
        const c = new pg.Client({ connectionString: options.connectionString, types: TYPES });
        c.on("error", () => {});
        c.on("end", () => {
          if (stopped || client !== c) return;
          client = null;
          schedule();
        });
        c.on("notification", (m) => {
          if (m.channel !== CONFIG_CHANNEL) return;
          const rev = Number(m.payload);
          onChange(Number.isFinite(rev) ? rev : null);
        });
        await c.connect();
        await c.query(`LISTEN ${CONFIG_CHANNEL}`);
        if (stopped) {
          await c.end().catch(() => {});
          return;
        }
        client = c;
        delay = LISTEN_RETRY_MS;
        if (!first) onChange(null);
      };
      const schedule = () => {
        if (stopped || timer !== null) return;
        timer = setTimeout(() => {
          timer = null;
          connect(false).catch(() => {
            delay = Math.min(delay * 2, LISTEN_RETRY_MAX_MS);
            schedule();
          });
        }, delay);
      };
      await connect(true);
      return async () => {
        stopped = true;
        if (timer !== null) clearTimeout(timer);
        const c = client;
        client = null;
        await c?.end().catch(() => {});
      };
    },

    async insertBuild(id, at) {
      const { rows } = await query<BuildRow>("INSERT INTO builds (id, status, created_at) VALUES ($1, 'running', $2) RETURNING *", [id, at]);
      return toBuild(rows[0]!);
    },
    async appendBuildLog(id, lines) {
      return tx(async (c) => {
        // The counter update locks the build row: concurrent appenders take disjoint line ranges.
        const { rows } = await c.query<{ end: number }>("UPDATE builds SET log_lines = log_lines + $2 WHERE id = $1 RETURNING log_lines AS end", [id, lines.length]);
        if (rows[0] === undefined) return false;
        if (lines.length > 0) {
          await c.query(`INSERT INTO build_logs (build_id, seq, line) SELECT $1, $2 + t.ord - 1, t.line FROM unnest($3::text[]) WITH ORDINALITY AS t(line, ord)`,
            [id, rows[0].end - lines.length, lines]);
        }
        return true;
      });
    },
    async setBuildSource(id, sourceDigest) {
      return ((await query("UPDATE builds SET source_digest = $2 WHERE id = $1", [id, sourceDigest])).rowCount ?? 0) === 1;
    },
    async finishBuild(id, outcome, at) {
      const { rows } = await query<BuildRow>(
        `UPDATE builds SET status = $2, error_code = $3, error_message = $4, result = $5, finished_at = $6 WHERE id = $1 AND status = 'running' RETURNING *`,
        [id, outcome.status, outcome.status === "failed" ? outcome.error.code : null, outcome.status === "failed" ? outcome.error.message : null,
          outcome.status === "succeeded" ? JSON.stringify(outcome.result ?? null) : null, at]);
      if (rows[0] !== undefined) return { finished: true, record: toBuild(rows[0]) };
      const now = await query<BuildRow>("SELECT * FROM builds WHERE id = $1", [id]);
      return now.rows[0] === undefined ? null : { finished: false, record: toBuild(now.rows[0]) };
    },
    async getBuild(id) {
      const { rows } = await query<BuildRow>("SELECT * FROM builds WHERE id = $1", [id]);
      return rows[0] === undefined ? null : toBuild(rows[0]);
    },
    async getBuildLog(id, fromLine) {
      const { rows } = await query<{ line: string | null }>(
        "SELECT l.line FROM builds b LEFT JOIN build_logs l ON l.build_id = b.id AND l.seq >= $2 WHERE b.id = $1 ORDER BY l.seq", [id, fromLine]);
      if (rows.length === 0) return null;
      return rows.filter((r) => r.line !== null).map((r) => r.line!);
    },

    async writeTelemetry(batch) {
      if (batch.logs.length + batch.invocations.length + batch.errors.length === 0) return;
      for (let attempt = 1; ; attempt++) {
        await ensurePartitions("logs", batch.logs.map((l) => Math.round(l.ts)));
        await ensurePartitions("invocations", batch.invocations.map((r) => Math.round(r.ts)));
        try {
          await tx((c) => insertTelemetry(c, batch));
          return;
        } catch (err) {
          // 23514: no partition for a row — another control plane's retention dropped one we knew.
          if ((err as { code?: string }).code !== "23514" || attempt >= 2) throw err;
          await loadPartitions();
        }
      }
    },
    async queryLogs(functionName, q) {
      const where = ["function_name = $1"];
      const args: unknown[] = [functionName];
      const arg = (v: unknown) => { args.push(v); return `$${args.length}`; };
      if (q.since !== undefined) where.push(`ts >= ${arg(q.since)}`);
      if (q.afterSeq !== undefined) where.push(`seq > ${arg(q.afterSeq)}`);
      if (q.requestId !== undefined) where.push(`request_id = ${arg(q.requestId)}`);
      if (q.minLevel !== undefined) where.push(`level >= ${arg(LEVEL_RANK[q.minLevel])}`);
      const { rows } = await query<LogRow>(`SELECT * FROM logs WHERE ${where.join(" AND ")} ORDER BY seq DESC LIMIT ${arg(q.limit)}`, args);
      return rows.reverse().map(toLog);
    },
    async queryInvocations(functionName, q) {
      const where = ["function_name = $1"];
      const args: unknown[] = [functionName];
      const arg = (v: unknown) => { args.push(v); return `$${args.length}`; };
      if (q.statusClass !== undefined) {
        if (q.statusClass === 0) where.push("status = 0");
        else where.push(`status >= ${arg(q.statusClass * 100)} AND status < ${arg(q.statusClass * 100 + 100)}`);
      }
      if (q.status !== undefined) where.push(`status = ${arg(q.status)}`);
      if (q.cold !== undefined) where.push(`cold = ${arg(q.cold)}`);
      if (q.slowerThanMs !== undefined) where.push(`total_ms > ${arg(q.slowerThanMs)}`);
      if (q.since !== undefined) where.push(`ts >= ${arg(q.since)}`);
      if (q.requestId !== undefined) where.push(`request_id = ${arg(q.requestId)}`);
      if (q.failed === true) where.push("error_code IS NOT NULL");
      if (q.trigger !== undefined) where.push(`trigger_id = ${arg(q.trigger)}`);
      if (q.eventId !== undefined) where.push(`event_id = ${arg(q.eventId)}`);
      const { rows } = await query<InvocationRow>(`SELECT * FROM invocations WHERE ${where.join(" AND ")} ORDER BY seq DESC LIMIT ${arg(q.limit)}`, args);
      return rows.map(toInvocation);
    },
    async listErrorGroups(functionName, limit) {
      const { rows } = await query<ErrorGroupRow>("SELECT * FROM error_groups WHERE function_name = $1 ORDER BY last_seen DESC, fingerprint COLLATE \"C\" LIMIT $2", [functionName, limit]);
      return rows.map(toErrorGroup);
    },
    async purgeTelemetry(policy: PurgePolicy) {
      // The periodic purge also keeps partitions created ahead, so a long-running control plane
      // never creates one (a brief lock on the parent) on the write path at midnight.
      await ensureComingPartitions();
      return {
        logs: await purgeTable("logs", policy.olderThan, policy.maxLogRows),
        invocations: await purgeTable("invocations", policy.olderThan, policy.maxInvocationRows),
        errorGroups: (await query("DELETE FROM error_groups WHERE last_seen < $1", [policy.olderThan])).rowCount ?? 0,
      };
    },

    async close() {
      if (closed) return;
      closed = true;
      await pool.end();
    },
  };
}
