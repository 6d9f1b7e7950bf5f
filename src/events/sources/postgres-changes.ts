/**
 * PostgreSQL table changes as a trigger source (the EventSource contract, src/events/sources/source.ts):
 * insert / update / delete rows of one table of the user's database (any PostgreSQL, not the platform's
 * store), read through logical replication with the wal2json output plugin (Debian
 * `postgresql-15-wal2json`) over the `pg-logical-replication` client.
 *
 * Why nothing is lost while the trigger is down: the trigger owns a logical replication slot
 * (`postgresSlotName`: one per trigger), created on first start. PostgreSQL keeps every change after the
 * slot's confirmed position until the slot is told to move on; this source moves it (standby status
 * "flushed" = the transaction's LSN) only after `deliver` settled every change of that transaction
 * (`ack`, or `dead` once the runner recorded it in the platform's DLQ). A stop, a crash or a lost
 * connection before that leaves the transaction in the slot, and the next start streams it again.
 *
 * Delivery order and redelivery: wal2json (format 1) hands one message per committed transaction, in
 * commit order, with that table's changes (other tables filtered server-side with `add-tables`,
 * operations with `actions`). Changes are delivered one at a time in order (`concurrency` does not
 * apply: row changes of one table are ordered); `retry` delivers the same change again after
 * `delayMs` from this process (the slot cannot redeliver one change), with `attempt` counting up —
 * a restart of the trigger starts that count at 1 again, since the slot does not keep it.
 * `SourceMessage.id` is `<transaction LSN>/<index of the change>`: the same on every redelivery,
 * also after a restart (the CloudEvent `id`).
 *
 * The client library's own periodic status update reports the last *received* LSN as flushed, which
 * would confirm changes not yet delivered: it is disabled (`timeoutSeconds: 0`), and this source sends
 * its own status every KEEPALIVE_MS with the last *settled* position (PostgreSQL ignores a flush
 * position below the slot's), so `wal_sender_timeout` does not cut a connection whose function is slow.
 * A fresh client is made for every connection: restarting on a client that remembers a later LSN would
 * ask the server to skip the unsettled transactions.
 *
 * Problems that a retry cannot fix (no REPLICATION privilege, wal_level not logical, wal2json missing,
 * no such table or no SELECT on it, a slot of another plugin) are reported as POSTGRES_TRIGGER_UNUSABLE
 * in `status().lastError` and the log, and checked again on every reconnect (bounded backoff), so
 * granting the privilege is enough to make the trigger work.
 */
import { LogicalReplicationService, Wal2JsonPlugin, type Wal2Json } from "pg-logical-replication";
import pg from "pg";
import { StratusError } from "../../shared/errors";
import { postgresSlotName, postgresUrlProblem, qualifiedTable, TABLE_OPS, type PostgresTriggerConfig, type TableOp } from "../../shared/data-triggers";
import type { Deliver, DeliveryOutcome, EventSource, SourceContext, SourceMessage, SourceStatus } from "./source";

/** CloudEvents `type` of a change: `io.stratus.postgres.insert` | `.update` | `.delete`. */
export const POSTGRES_EVENT_TYPE_PREFIX = "io.stratus.postgres.";
/** Status updates to the server while connected, ms (well under the default wal_sender_timeout of 60 s). */
export const KEEPALIVE_MS = 10_000;
/** First and longest wait between two connection attempts, ms. */
export const RECONNECT_MIN_MS = 200;
export const RECONNECT_MAX_MS = 5_000;

/** What the function receives as the CloudEvent's data (JSON). */
export interface TableChangeData {
  readonly op: TableOp;
  readonly schema: string;
  readonly table: string;
  /** The row after the change (insert, update); null for a delete. */
  readonly new: Record<string, unknown> | null;
  /** The row's replica identity before the change (update, delete): its key columns, or every column with REPLICA IDENTITY FULL; null for an insert. */
  readonly old: Record<string, unknown> | null;
  /** LSN of the transaction that made the change. */
  readonly lsn: string;
  /** Commit time, when wal2json reports it. */
  readonly committedAt: string | null;
}

/** A postgres trigger's config with its resolved slot. */
export interface PostgresSourceConfig extends PostgresTriggerConfig {
  readonly slot: string;
}

/** The resolved config of trigger `t` of function `fn`. */
export function postgresSourceConfig(fn: string, t: PostgresTriggerConfig): PostgresSourceConfig {
  return { ...t, slot: postgresSlotName(fn, t) };
}

const zip = (names: readonly string[] | undefined, values: readonly unknown[] | undefined): Record<string, unknown> | null => {
  if (names === undefined || values === undefined) return null;
  const row: Record<string, unknown> = {};
  names.forEach((n, i) => (row[n] = values[i] ?? null));
  return row;
};

/**
 * What to confirm after a transaction was settled: its `nextlsn` (the end of its commit record,
 * wal2json `include-lsn`) minus one, because the client reports "last byte + 1" — so the slot's
 * confirmed position is exactly the commit's end. The message's own LSN is the transaction's *first*
 * record (wal2json format 1 writes at begin), and confirming that would make the server send the
 * whole transaction again after a restart; a commit starting at or after the confirmed position
 * (the next transaction) is never skipped (PostgreSQL skips commits strictly before it).
 */
export function confirmationOf(tx: { nextlsn?: string }, messageLsn: string): string {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(tx.nextlsn ?? "");
  if (m === null) return messageLsn;
  const v = BigInt(`0x${m[1]}`) * 2n ** 32n + BigInt(`0x${m[2]}`) - 1n;
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** `postgres://host:port/db` of a connection URL, without credentials (the CloudEvent `source`). */
export function publicSourceOf(url: string): string {
  try {
    const u = new URL(url);
    return `postgres://${u.host}${u.pathname}`;
  } catch {
    return "postgres://unknown";
  }
}

/**
 * Checks what the trigger needs and creates the slot when missing.
 * @throws StratusError POSTGRES_TRIGGER_UNUSABLE with a message that says what to fix; a connection error as is.
 */
export async function preparePostgresSlot(url: string, config: PostgresSourceConfig): Promise<{ created: boolean }> {
  const { schema, table } = qualifiedTable(config.table);
  const client = new pg.Client({ connectionString: url, application_name: "stratus-trigger-check" });
  // A dropped connection fails the pending query; without a listener its 'error' event would end the process.
  client.on("error", () => {});
  await client.connect();
  const unusable = (m: string) => new StratusError("POSTGRES_TRIGGER_UNUSABLE", m);
  try {
    const wal = (await client.query<{ wal_level: string }>("SHOW wal_level")).rows[0]?.wal_level;
    if (wal !== "logical") throw unusable(`wal_level is ${wal ?? "unknown"}: logical replication needs wal_level = logical (postgresql.conf, then restart the server)`);
    const who = (await client.query<{ user: string; repl: boolean }>(
      `SELECT current_user AS user, (r.rolsuper OR r.rolreplication OR COALESCE(pg_has_role(current_user, (SELECT oid FROM pg_roles WHERE rolname = 'rds_replication'), 'member'), false)) AS repl
         FROM pg_roles r WHERE r.rolname = current_user`,
    )).rows[0];
    if (who?.repl !== true) throw unusable(`role ${who?.user ?? "?"} may not use replication: ALTER ROLE ${who?.user ?? "<role>"} REPLICATION (or GRANT rds_replication on Amazon RDS)`);
    const rel = (await client.query<{ oid: string | null }>("SELECT to_regclass($1)::oid::text AS oid", [`"${schema}"."${table}"`])).rows[0]?.oid ?? null;
    if (rel === null) throw unusable(`table ${schema}.${table} does not exist in this database`);
    const canSelect = (await client.query<{ ok: boolean }>("SELECT has_table_privilege($1::regclass, 'SELECT') AS ok", [`"${schema}"."${table}"`])).rows[0]?.ok;
    if (canSelect !== true) throw unusable(`role ${who?.user ?? "?"} has no SELECT on ${schema}.${table}: GRANT SELECT ON ${schema}.${table} TO ${who?.user ?? "<role>"}`);
    const slot = (await client.query<{ plugin: string; database: string }>("SELECT plugin, database FROM pg_replication_slots WHERE slot_name = $1", [config.slot])).rows[0];
    if (slot !== undefined) {
      if (slot.plugin !== "wal2json") throw unusable(`replication slot ${config.slot} exists with plugin ${slot.plugin}; drop it or name another slot`);
      const db = (await client.query<{ db: string }>("SELECT current_database() AS db")).rows[0]?.db;
      if (slot.database !== db) throw unusable(`replication slot ${config.slot} belongs to database ${slot.database}, not ${db ?? "?"}`);
      return { created: false };
    }
    try {
      await client.query("SELECT pg_create_logical_replication_slot($1, 'wal2json')", [config.slot]);
    } catch (err) {
      const e = err as { code?: string; message?: string };
      if (e.code === "42710") return { created: false }; // created meanwhile by another control plane
      if (e.code === "58P01" || /wal2json/.test(e.message ?? "")) throw unusable(`the wal2json output plugin is not installed on the server (Debian: apt-get install postgresql-<version>-wal2json): ${e.message ?? ""}`);
      if (e.code === "53400") throw unusable(`no free replication slot: raise max_replication_slots (${e.message ?? ""})`);
      throw unusable(`could not create replication slot ${config.slot}: ${e.message ?? String(err)}`);
    }
    return { created: true };
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Drops the trigger's slot (when its trigger or function is deleted), first ending a connection that
 * still streams from it. Returns false when there was no such slot.
 */
export async function dropPostgresSlot(url: string, slot: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, application_name: "stratus-trigger-drop" });
  // A dropped connection fails the pending query; without a listener its 'error' event would end the process.
  client.on("error", () => {});
  await client.connect();
  try {
    await client.query("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", [slot]);
    // The walsender needs a moment to release the slot after it was terminated: a bounded retry.
    for (let i = 0; i < 50; i++) {
      try {
        const r = await client.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", [slot]);
        return (r.rowCount ?? 0) > 0;
      } catch (err) {
        if ((err as { code?: string }).code !== "55006" || i === 49) throw err; // 55006: object in use
        await new Promise((res) => setTimeout(res, 100));
      }
    }
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

/** Builds the source; nothing connects before `start`. */
export function createPostgresChangesSource(config: PostgresSourceConfig, ctx: SourceContext): EventSource {
  const log = ctx.logger.child({ source: "postgres", slot: config.slot });
  const { schema, table } = qualifiedTable(config.table);
  const ops = config.events ?? [...TABLE_OPS];
  const source = `${publicSourceOf(ctx.url)}/${schema}.${table}`;
  const settled = { ack: 0, retry: 0, dead: 0 };
  let connected = false;
  let lastError: string | null = null;
  let inFlight = 0;
  let started = false;
  let stopping = false;
  let service: LogicalReplicationService | null = null;
  let loop: Promise<void> | null = null;
  let stopped: Promise<void> | null = null;
  /** The transaction being delivered now (stop waits for it up to its deadline). */
  let current: Promise<void> | null = null;
  const sleepers = new Set<() => void>();
  const describe = (err: unknown): string => (err instanceof Error ? err.message : String(err)).slice(0, 500);

  /** Resolves after `ms`, or at once when stopping. */
  const pause = (ms: number): Promise<void> => new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      sleepers.delete(done);
      resolve();
    };
    const t = setTimeout(done, ms);
    sleepers.add(done);
  });

  function messageOf(lsn: string, i: number, c: Wal2Json.Change, tx: Wal2Json.Output, attempt: number): SourceMessage {
    const op = c.kind as TableOp;
    const data: TableChangeData = {
      op, schema: c.schema, table: c.table,
      new: op === "delete" ? null : zip(c.columnnames, c.columnvalues),
      old: op === "insert" ? null : zip(c.oldkeys?.keynames, c.oldkeys?.keyvalues),
      lsn, committedAt: tx.timestamp ?? null,
    };
    const time = tx.timestamp !== undefined ? Date.parse(tx.timestamp.replace(" ", "T").replace(/([+-]\d\d)$/, "$1:00")) : NaN;
    return {
      id: `${lsn}/${i}`, source, type: `${POSTGRES_EVENT_TYPE_PREFIX}${op}`, subject: `${c.schema}.${c.table}`, attempt,
      body: Buffer.from(JSON.stringify(data)), contentType: "application/json", ...(Number.isNaN(time) ? {} : { time }),
    };
  }

  /** Delivers every change of one transaction, in order; false when stopping interrupted it (not to be acknowledged). */
  async function deliverTransaction(lsn: string, tx: Wal2Json.Output, deliver: Deliver): Promise<boolean> {
    const changes = (tx.change ?? []).filter((c) => c.schema === schema && c.table === table && (ops as readonly string[]).includes(c.kind));
    for (const [i, c] of changes.entries()) {
      for (let attempt = 1; ; attempt++) {
        if (stopping) return false;
        inFlight = 1;
        let outcome: DeliveryOutcome;
        try {
          outcome = await deliver(messageOf(lsn, i, c, tx, attempt));
        } catch (err) {
          log.error({ err, lsn, change: i }, "delivering a table change failed unexpectedly; it will be delivered again");
          outcome = { kind: "retry", delayMs: 1_000 };
        } finally {
          inFlight = 0;
        }
        settled[outcome.kind]++;
        if (outcome.kind !== "retry") break;
        await pause(outcome.delayMs);
      }
    }
    return true;
  }

  async function connectOnce(deliver: Deliver): Promise<void> {
    await preparePostgresSlot(ctx.url, config);
    const s = new LogicalReplicationService(
      { connectionString: ctx.url, application_name: `stratus-trigger-${config.slot}` },
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
    );
    service = s;
    let confirmed: string | null = null;
    const keepalive = setInterval(() => void s.acknowledge(confirmed ?? "0/0").catch(() => {}), KEEPALIVE_MS);
    keepalive.unref();
    s.on("start", () => {
      connected = true;
      lastError = null;
      log.info({ table: `${schema}.${table}` }, "table-change trigger streaming");
    });
    s.on("error", (err: Error) => {
      lastError = describe(err);
    });
    s.on("data", async (lsn: string, tx: Wal2Json.Output) => {
      if (stopping) return;
      const run = (async () => {
        if (await deliverTransaction(lsn, tx, deliver)) {
          confirmed = confirmationOf(tx, lsn);
          await s.acknowledge(confirmed);
        }
      })();
      current = run;
      try {
        await run;
      } finally {
        current = null;
      }
    });
    const plugin = new Wal2JsonPlugin({ addTables: `${schema}.${table}`, actions: ops.join(","), includeLsn: true, includeTimestamp: true, includeXids: false, includeTypes: false, includeTypmod: false });
    try {
      // Resolves when the stream ends (stop, or the server closed it); rejects on a replication error.
      await s.subscribe(plugin, config.slot, "0/00000000");
    } finally {
      clearInterval(keepalive);
      connected = false;
      if (service === s) service = null;
      await s.destroy().catch(() => {});
    }
  }

  async function run(deliver: Deliver): Promise<void> {
    let backoff = RECONNECT_MIN_MS;
    while (!stopping) {
      try {
        await connectOnce(deliver);
        backoff = RECONNECT_MIN_MS;
        if (!stopping) log.warn("table-change stream ended; reconnecting");
      } catch (err) {
        lastError = (err as { code?: string }).code === "POSTGRES_TRIGGER_UNUSABLE" ? `POSTGRES_TRIGGER_UNUSABLE: ${describe(err)}` : describe(err);
        if (stopping) return;
        log.warn({ err: lastError, retryInMs: backoff }, "table-change trigger cannot stream; retrying");
      }
      if (stopping) return;
      await pause(backoff);
      backoff = Math.min(RECONNECT_MAX_MS, backoff * 2);
    }
  }

  return {
    start(deliver) {
      if (started) return;
      started = true;
      loop = run(deliver).catch((err: unknown) => log.error({ err }, "table-change trigger loop failed"));
    },
    stop: (deadlineMs) => (stopped ??= (async () => {
      stopping = true;
      for (const wake of [...sleepers]) wake();
      let timer: NodeJS.Timeout | undefined;
      // Let the transaction being delivered finish (and be acknowledged) within the deadline.
      if (current !== null) {
        await Promise.race([current.catch(() => {}), new Promise<void>((resolve) => {
          timer = setTimeout(resolve, deadlineMs);
          timer.unref();
        })]);
        clearTimeout(timer);
      }
      await service?.stop().catch(() => {});
      await loop;
    })()),
    status: (): SourceStatus => ({ connected, inFlight, settled: { ...settled }, lastError }),
  };
}

/** What `releaseTableChangeSlots` did for one trigger. */
export interface SlotRelease {
  readonly slot: string;
  /** `dropped`, `absent` (no such slot), `failed` (see the log; drop it by hand), `no-secret` (its connection secret was not set). */
  readonly result: "dropped" | "absent" | "failed" | "no-secret";
}

/**
 * Drops the replication slots of a deleted function's postgres triggers (the function's config and
 * secrets as they were before the delete). `stopSources` must stop this control plane's sources of the
 * function first (a running source would create the slot again). Another control plane sharing the
 * store may still run the source until its next sync (`events.sourceSyncIntervalMs`) and re-create the
 * slot: each slot is dropped again once after `redoAfterMs` (in the background). Never throws.
 */
export async function releaseTableChangeSlots(
  functionName: string,
  triggers: ReadonlyArray<{ postgres?: PostgresTriggerConfig | undefined }>,
  secrets: Readonly<Record<string, string>>,
  o: { stopSources: () => Promise<void>; logger: { info: (o: object, m: string) => void; warn: (o: object, m: string) => void }; redoAfterMs: number },
): Promise<SlotRelease[]> {
  const targets = triggers.flatMap((t) => (t.postgres === undefined ? [] : [{ slot: postgresSlotName(functionName, t.postgres), url: secrets[t.postgres.connectionSecret] }]));
  if (targets.length === 0) return [];
  await o.stopSources().catch((err: unknown) => o.logger.warn({ err }, "stopping the deleted function's trigger sources failed"));
  const out: SlotRelease[] = [];
  for (const { slot, url } of targets) {
    if (url === undefined) {
      o.logger.warn({ fn: functionName, slot }, "replication slot of a deleted function left in place: its connection secret was not set; drop it with SELECT pg_drop_replication_slot(…)");
      out.push({ slot, result: "no-secret" });
      continue;
    }
    if (postgresUrlProblem(url) !== null) {
      out.push({ slot, result: "failed" });
      continue;
    }
    try {
      out.push({ slot, result: (await dropPostgresSlot(url, slot)) ? "dropped" : "absent" });
      o.logger.info({ fn: functionName, slot }, "replication slot of a deleted function dropped");
      const redo = setTimeout(() => void dropPostgresSlot(url, slot).catch(() => {}), o.redoAfterMs);
      redo.unref();
    } catch (err) {
      o.logger.warn({ err: (err as Error).message, fn: functionName, slot }, "could not drop the replication slot of a deleted function: it keeps WAL on that server; drop it with SELECT pg_drop_replication_slot(…)");
      out.push({ slot, result: "failed" });
    }
  }
  return out;
}
