/**
 * The `storage` (S3-compatible bucket notifications) and `postgres` (table changes through logical
 * replication) trigger kinds of a function's `triggers` config field, kept apart from the schedule
 * and queue kinds (src/shared/function-config.ts composes them into TriggerSchema). docs/events.md
 * describes both; credentials are always the *name* of one of the function's secrets, never a value.
 */
import { createHash } from "node:crypto";
import { z } from "zod";

/** A secret's name (the same rule as secret names: src/control/routes/env.ts EnvName). */
const SecretName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must name one of the function's secrets ([A-Za-z_][A-Za-z0-9_]*)").max(256);

/**
 * An S3 event name pattern: `s3:ObjectCreated:*`, `s3:ObjectRemoved:Delete`, `ObjectCreated:Put`, `s3:*`.
 * The `s3:` prefix is optional (AWS and Ceph send event names without it, MinIO with it); `*` only as
 * the last segment.
 */
const S3_EVENT_PATTERN = /^(?:s3:)?(?:\*|[A-Za-z]+(?::[A-Za-z]+)*(?::\*)?)$/;

/** Storage systems whose notifications the `storage` trigger accepts (all speak the S3 event format). */
export const STORAGE_TYPES = ["s3"] as const;

/**
 * `{ storage: { type: "s3", bucket, name?, events?, prefix?, suffix?, secret } }`:
 *  - `bucket`: records of other buckets are refused (400 S3_NOTIFICATION_INVALID);
 *  - `name`: the last segment of the notification URL (`/api/v1/events/s3/<fn>/<name>`), default the
 *    bucket; unique among the function's storage triggers;
 *  - `events`: patterns of event names to run for (default every event the storage system sends);
 *  - `prefix`, `suffix`: of the (decoded) object key; records that do not match are skipped;
 *  - `secret`: the name of the function secret the sender must present (MinIO `auth_token`).
 */
export const StorageTriggerSchema = z.strictObject({
  type: z.enum(STORAGE_TYPES),
  bucket: z.string().min(1).max(255).regex(/^[A-Za-z0-9._-]+$/, "must be a bucket name ([A-Za-z0-9._-], 1–255)"),
  name: z.string().min(1).max(63).regex(/^[A-Za-z0-9._-]+$/, "must be [A-Za-z0-9._-]{1,63} (a URL segment)").optional(),
  events: z.array(z.string().max(100).regex(S3_EVENT_PATTERN, "must be an S3 event name or pattern like s3:ObjectCreated:*")).min(1).max(50).optional(),
  prefix: z.string().max(1024).optional(),
  suffix: z.string().max(1024).optional(),
  secret: SecretName,
});
export type StorageTriggerConfig = z.output<typeof StorageTriggerSchema>;

/** Row operations a `postgres` trigger delivers. */
export const TABLE_OPS = ["insert", "update", "delete"] as const;
export type TableOp = (typeof TABLE_OPS)[number];

const IDENT = "[A-Za-z_][A-Za-z0-9_$]{0,62}";

/**
 * `{ postgres: { connectionSecret, table, events?, slot? } }`:
 *  - `connectionSecret`: the name of the function secret holding the connection URL
 *    (`postgres://user:password@host:5432/db`) of the user's database — any PostgreSQL ≥ 10 with
 *    wal_level=logical and the wal2json plugin;
 *  - `table`: `schema.table` or `table` (schema `public`), as PostgreSQL stores the names (lowercase
 *    unless created quoted);
 *  - `events`: the operations to deliver (default all three);
 *  - `slot`: the replication slot's name (default `postgresSlotName`), `[a-z0-9_]{1,63}`.
 */
export const PostgresTriggerSchema = z.strictObject({
  connectionSecret: SecretName,
  table: z.string().max(130).regex(new RegExp(`^(?:${IDENT}\\.)?${IDENT}$`), "must be table or schema.table (unquoted identifiers)"),
  events: z.array(z.enum(TABLE_OPS)).min(1).max(3).refine((e) => new Set(e).size === e.length, "lists an operation twice").optional(),
  slot: z.string().regex(/^[a-z0-9_]{1,63}$/, "must be [a-z0-9_]{1,63} (a PostgreSQL replication slot name)").optional(),
});
export type PostgresTriggerConfig = z.output<typeof PostgresTriggerSchema>;

/** `schema.table` of a trigger's `table` (schema `public` when none is given). */
export function qualifiedTable(table: string): { schema: string; table: string } {
  const dot = table.indexOf(".");
  return dot < 0 ? { schema: "public", table } : { schema: table.slice(0, dot), table: table.slice(dot + 1) };
}

/**
 * The replication slot of a postgres trigger: its `slot`, else `stratus_<fn>_<hash>` where fn is the
 * function name lowercased with `-` as `_` (cut to 40 characters) and hash the first 12 hex digits of
 * sha256(function, schema.table, connectionSecret) — stable across deploys and trigger reordering,
 * distinct for two tables or two databases of one function.
 */
export function postgresSlotName(functionName: string, t: PostgresTriggerConfig): string {
  if (t.slot !== undefined) return t.slot;
  const q = qualifiedTable(t.table);
  const hash = createHash("sha256").update(`${functionName}\0${q.schema}.${q.table}\0${t.connectionSecret}`).digest("hex").slice(0, 12);
  return `stratus_${functionName.toLowerCase().replace(/[^a-z0-9_]/g, "_").slice(0, 40)}_${hash}`;
}

/** The URL segment of a storage trigger (its `name`, default the bucket). */
export function storageTriggerName(t: StorageTriggerConfig): string {
  return t.name ?? t.bucket;
}

/**
 * Checks across one function's triggers (added to the `triggers` array schema): storage trigger names
 * are unique (each is one URL), and no two postgres triggers share a replication slot.
 */
export function checkDataTriggers(
  triggers: ReadonlyArray<{ storage?: StorageTriggerConfig | undefined; postgres?: PostgresTriggerConfig | undefined }>,
  ctx: z.RefinementCtx,
): void {
  const names = new Map<string, number>();
  const slots = new Map<string, number>();
  triggers.forEach((t, i) => {
    if (t.storage !== undefined) {
      const n = storageTriggerName(t.storage);
      if (names.has(n)) ctx.addIssue({ code: "custom", path: [i, "storage", "name"], message: `storage trigger name "${n}" is also used by trigger ${names.get(n)}; give each a distinct name` });
      else names.set(n, i);
    }
    if (t.postgres !== undefined) {
      // The default slot depends on the function name, unknown here: compare what the user wrote.
      const key = t.postgres.slot ?? `${qualifiedTable(t.postgres.table).schema}.${qualifiedTable(t.postgres.table).table}\0${t.postgres.connectionSecret}`;
      if (slots.has(key)) ctx.addIssue({ code: "custom", path: [i, "postgres", "slot"], message: `trigger ${slots.get(key)} already uses this replication slot (same table and connection, or the same slot): give one a distinct slot` });
      else slots.set(key, i);
    }
  });
}

/** One storage or postgres trigger as `GET /api/v1/functions/<fn>/triggers` shows it. */
export type DataTriggerView =
  | { readonly id: string; readonly kind: "storage"; readonly type: "s3"; readonly bucket: string; readonly name: string; readonly url: string; readonly events: readonly string[] | null; readonly prefix: string | null; readonly suffix: string | null; readonly secret: string }
  | { readonly id: string; readonly kind: "postgres"; readonly table: string; readonly events: readonly TableOp[]; readonly slot: string; readonly connectionSecret: string };

/** The id of a postgres trigger in job origins and `x-stratus-trigger`: `<fn>#postgres:<slot>`. */
export function postgresTriggerId(functionName: string, t: PostgresTriggerConfig): string {
  return `${functionName}#postgres:${postgresSlotName(functionName, t)}`;
}

/** Views of a function's storage and postgres triggers; `publicUrl` is the platform's base URL. */
export function dataTriggerViews(
  functionName: string,
  triggers: ReadonlyArray<{ storage?: StorageTriggerConfig | undefined; postgres?: PostgresTriggerConfig | undefined }>,
  publicUrl: string,
): DataTriggerView[] {
  const out: DataTriggerView[] = [];
  for (const t of triggers) {
    if (t.storage !== undefined) {
      const s = t.storage;
      const name = storageTriggerName(s);
      out.push({
        id: `${functionName}#storage:${name}`, kind: "storage", type: s.type, bucket: s.bucket, name, url: `${publicUrl}/api/v1/events/s3/${functionName}/${encodeURIComponent(name)}`,
        events: s.events ?? null, prefix: s.prefix ?? null, suffix: s.suffix ?? null, secret: s.secret,
      });
    }
    if (t.postgres !== undefined) {
      const p = t.postgres;
      const q = qualifiedTable(p.table);
      out.push({ id: postgresTriggerId(functionName, p), kind: "postgres", table: `${q.schema}.${q.table}`, events: p.events ?? [...TABLE_OPS], slot: postgresSlotName(functionName, p), connectionSecret: p.connectionSecret });
    }
  }
  return out;
}

/** A link-local address (cloud metadata endpoints live there): 169.254.0.0/16, fe80::/10, fd00:ec2::254. */
const LINK_LOCAL = (host: string): boolean => /^169\.254\./.test(host) || /^\[?(fe[89ab][0-9a-f]:|fd00:ec2::254\]?$)/i.test(host);

/**
 * The problem with a postgres trigger's connection URL (the value of its `connectionSecret`), or null.
 * The control plane itself (not a sandbox) connects there, so it never goes to a link-local (cloud
 * metadata) address, also not through the `host` query parameter node-postgres honours.
 */
export function postgresUrlProblem(url: string): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return "is not a URL (postgres://user:password@host:5432/db)";
  }
  if (u.protocol !== "postgres:" && u.protocol !== "postgresql:") return "must start with postgres:// or postgresql://";
  const hosts = [u.hostname, ...u.searchParams.getAll("host")];
  if (hosts.every((h) => h === "")) return "has no host";
  if (hosts.some(LINK_LOCAL)) return "points at a link-local address (cloud metadata): refused";
  return null;
}
