/**
 * S3-compatible bucket notifications → CloudEvents → durable async jobs.
 *
 * A storage system (MinIO's webhook target, Ceph RGW's HTTP push endpoint, anything that POSTs the
 * AWS S3 event format) posts `{ "Records": [ … ] }` to `POST /api/v1/events/s3/<fn>/<trigger name>`
 * (src/control/routes/s3-events.ts). `createS3Intake` authenticates it against the trigger's secret,
 * validates the whole body (zod) before anything is enqueued, and commits one job per matching record
 * — each a CloudEvents 1.0 binary-mode request (`cloudevents` SDK) — answering only after every commit,
 * so a sender that sees anything but 2xx retries and loses nothing.
 *
 * Invariants:
 *  - a notification is all-or-nothing as far as validation goes: one bad record refuses the body
 *    (400 S3_NOTIFICATION_INVALID) and nothing of it is enqueued;
 *  - each record's job has the idempotency key `s3:<sha256 of bucket, key, versionId, eventName and
 *    sequencer (or eTag and eventTime when there is no sequencer)>`: a resent notification (the
 *    sender retrying after a lost answer, or after a partial commit) maps to the jobs already
 *    committed, within the queue's idempotency window (24 h). That id is also the CloudEvent `id`;
 *  - the secret is compared in constant time (sha256 of both sides, `timingSafeEqual`); an unknown
 *    function or trigger answers the same 401 as a wrong secret (no enumeration).
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { CloudEvent, HTTP } from "cloudevents";
import { z } from "zod";
import { StratusError } from "../../shared/errors";
import type { Logger } from "../../shared/logger";
import { storageTriggerName, type StorageTriggerConfig } from "../../shared/data-triggers";
import type { CatalogEntry, FunctionCatalog } from "../catalog";
import type { JobQueue, NewJob } from "../queue";

/** Largest notification body accepted, bytes (AWS sends one record of a few KiB; Ceph adds metadata and tags). */
export const S3_NOTIFICATION_MAX_BYTES = 1024 * 1024;
/** Most records in one notification. */
export const S3_NOTIFICATION_MAX_RECORDS = 1000;
/** CloudEvents `type` prefix (the CloudEvents AWS S3 adapter: `com.amazonaws.s3.<eventName>`). */
export const S3_EVENT_TYPE_PREFIX = "com.amazonaws.s3.";

const Str = (max: number) => z.string().max(max);
/** A size as AWS and MinIO send it (a number) or Ceph (a decimal string). */
const Size = z.union([z.number().int().nonnegative(), z.string().regex(/^\d{1,20}$/).transform(Number)]);

/**
 * One record of the S3 event format (AWS "Event message structure", MinIO, Ceph). Unknown fields are
 * kept (each system adds its own: MinIO `source`, Ceph `opaqueData`, AWS `glacierEventData`…); the
 * fields Stratus uses are checked for type and size.
 */
const S3RecordSchema = z.looseObject({
  eventVersion: Str(10),
  eventSource: Str(100),
  awsRegion: Str(100).optional(),
  eventTime: Str(64).refine((t) => !Number.isNaN(Date.parse(t)), "must be an ISO 8601 time"),
  eventName: Str(100).regex(/^(?:s3:)?[A-Za-z]+(?::[A-Za-z]+)+$/, "must be an S3 event name like ObjectCreated:Put"),
  responseElements: z.record(z.string(), Str(1000)).optional(),
  s3: z.looseObject({
    s3SchemaVersion: Str(10).optional(),
    configurationId: Str(1024).optional(),
    bucket: z.looseObject({ name: Str(255).min(1), arn: Str(2048).optional() }),
    object: z.looseObject({
      key: Str(4096).min(1),
      size: Size.optional(),
      eTag: Str(200).optional(),
      versionId: Str(1024).optional(),
      sequencer: Str(200).optional(),
      contentType: Str(1024).optional(),
    }),
  }),
});
type S3Record = z.output<typeof S3RecordSchema>;

/** The notification body: `Records`, plus MinIO's top-level `EventName` and `Key` (ignored). */
const S3NotificationSchema = z.looseObject({
  Records: z.array(S3RecordSchema).min(1).max(S3_NOTIFICATION_MAX_RECORDS),
});

/** What the function receives as the CloudEvent's data (JSON). */
export interface S3EventData {
  readonly bucket: string;
  /** Decoded object key. */
  readonly key: string;
  /** Bytes; null for events without one (deletes). */
  readonly size: number | null;
  readonly etag: string | null;
  readonly versionId: string | null;
  readonly sequencer: string | null;
  /** Without the `s3:` prefix: `ObjectCreated:Put`. */
  readonly eventName: string;
  readonly eventTime: string;
  /** `aws:s3`, `minio:s3`, `ceph:s3`… */
  readonly eventSource: string;
  readonly region: string | null;
  /** The record as the storage system sent it. */
  readonly record: Readonly<Record<string, unknown>>;
}

/**
 * Parses and validates a notification body.
 * @returns the records, or an empty list for AWS's `s3:TestEvent` (sent when a configuration is saved).
 * @throws StratusError S3_NOTIFICATION_INVALID (not JSON, or a field is missing or wrong), listing every problem.
 */
export function parseS3Notification(body: Buffer): S3Record[] {
  let json: unknown;
  try {
    json = JSON.parse(body.toString("utf8"));
  } catch {
    throw new StratusError("S3_NOTIFICATION_INVALID", "The notification body is not JSON");
  }
  if (json !== null && typeof json === "object" && (json as { Event?: unknown }).Event === "s3:TestEvent" && !("Records" in json)) return [];
  const r = S3NotificationSchema.safeParse(json);
  if (!r.success) {
    const details = r.error.issues.slice(0, 50).map((i) => ({ path: i.path.map(String).join(".") || "(body)", message: i.message }));
    throw new StratusError("S3_NOTIFICATION_INVALID", `Invalid S3 notification: ${details.map((d) => `${d.path}: ${d.message}`).join("; ")}`, { details });
  }
  return r.data.Records;
}

/** The event name without the `s3:` prefix. */
const bareEventName = (n: string): string => (n.startsWith("s3:") ? n.slice(3) : n);

/** True when `eventName` matches one of the trigger's patterns (no patterns: every event). */
export function matchesS3Events(patterns: readonly string[] | undefined, eventName: string): boolean {
  if (patterns === undefined) return true;
  const name = bareEventName(eventName);
  return patterns.some((p) => {
    const bare = bareEventName(p);
    return bare.endsWith("*") ? name.startsWith(bare.slice(0, -1)) : name === bare;
  });
}

/**
 * The object key as stored. AWS and MinIO URL-encode keys in notifications in form style (`+` for a
 * space, AWS docs: "The s3 key provided in the event notification is URL encoded"); Ceph RGW sends
 * them as stored (its documented example and ours: test/fixtures/s3-events/).
 * @throws StratusError S3_NOTIFICATION_INVALID for a malformed %-escape.
 */
export function decodeS3Key(record: S3Record): string {
  const raw = record.s3.object.key;
  if (record.eventSource === "ceph:s3") return raw;
  try {
    return decodeURIComponent(raw.replace(/\+/g, " "));
  } catch {
    throw new StratusError("S3_NOTIFICATION_INVALID", `The object key ${JSON.stringify(raw.slice(0, 200))} is not validly URL-encoded`);
  }
}

/** The stable id of a record (CloudEvent id and idempotency key): see the file comment. */
export function s3RecordId(record: S3Record, key: string): string {
  const o = record.s3.object;
  const parts = [record.s3.bucket.name, key, o.versionId ?? "", bareEventName(record.eventName), o.sequencer ?? "", o.sequencer === undefined ? `${o.eTag ?? ""}\0${record.eventTime}` : ""];
  return createHash("sha256").update(parts.join("\0")).digest("hex").slice(0, 40);
}

/** The id a storage trigger carries in job origins and `x-stratus-trigger`: `<fn>#storage:<name>` (as dataTriggerViews shows it). */
export function storageTriggerId(functionName: string, t: StorageTriggerConfig): string {
  return `${functionName}#storage:${storageTriggerName(t)}`;
}

/**
 * The job of one record, or null when the trigger's events / prefix / suffix filter it out.
 * The request is a CloudEvents binary-mode POST: `ce-id` (the record id), `ce-source` `s3://<bucket>`,
 * `ce-type` `com.amazonaws.s3.<eventName>`, `ce-subject` (the key), `ce-time` (eventTime), JSON data.
 */
export function s3RecordJob(entry: CatalogEntry, t: StorageTriggerConfig, record: S3Record): NewJob | null {
  const eventName = bareEventName(record.eventName);
  const key = decodeS3Key(record);
  if (!matchesS3Events(t.events, eventName)) return null;
  if (t.prefix !== undefined && !key.startsWith(t.prefix)) return null;
  if (t.suffix !== undefined && !key.endsWith(t.suffix)) return null;
  const o = record.s3.object;
  const id = s3RecordId(record, key);
  const data: S3EventData = {
    bucket: record.s3.bucket.name, key, size: o.size ?? null, etag: o.eTag ?? null, versionId: o.versionId ?? null, sequencer: o.sequencer ?? null,
    eventName, eventTime: record.eventTime, eventSource: record.eventSource, region: record.awsRegion ?? null, record,
  };
  const ce = new CloudEvent({
    specversion: "1.0", id, source: `s3://${record.s3.bucket.name}`, type: `${S3_EVENT_TYPE_PREFIX}${eventName}`, subject: key,
    time: new Date(record.eventTime).toISOString(), datacontenttype: "application/json", data,
  });
  const message = HTTP.binary(ce);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(message.headers)) if (typeof v === "string") headers[k.toLowerCase()] = v;
  const trigger = storageTriggerId(entry.name, t);
  return {
    functionName: entry.name,
    request: { method: "POST", path: "/", headers, bodyBase64: Buffer.from(String(message.body), "utf8").toString("base64") },
    origin: { kind: "storage", trigger, eventId: id },
    maxAttempts: entry.config.maxAttempts, maxEventAgeS: entry.config.maxEventAgeS, retryDelayMs: entry.config.retryDelayMs,
    idempotencyKey: `s3:${id}`,
  };
}

/** The secret a request presents: `Bearer <secret>` (MinIO `auth_token`) or Basic with the secret as password (Ceph push-endpoint `https://user:<secret>@…`). */
export function presentedSecret(authorization: string | undefined): string | null {
  if (authorization === undefined) return null;
  const m = /^([A-Za-z]+) +(\S+)\s*$/.exec(authorization);
  if (m === null) return null;
  const scheme = (m[1] as string).toLowerCase();
  if (scheme === "bearer") return m[2] as string;
  if (scheme === "basic") {
    const decoded = Buffer.from(m[2] as string, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    return colon < 0 ? null : decoded.slice(colon + 1);
  }
  return null;
}

/** Constant-time comparison of two secrets of any length. */
function sameSecret(a: string, b: string): boolean {
  const h = (s: string) => createHash("sha256").update(s, "utf8").digest();
  return timingSafeEqual(h(a), h(b));
}

export interface S3IntakeOptions {
  readonly queue: JobQueue;
  readonly catalog: FunctionCatalog;
  /** The function's decrypted secrets. */
  readonly secrets: (functionName: string) => Promise<Record<string, string>>;
  readonly logger: Logger;
  /** Called after a commit that created jobs (wakes the worker). */
  readonly onEnqueued?: (functionName: string) => void;
}

/** What the endpoint answers (200). */
export interface S3Accepted {
  /** Records that became new jobs. */
  readonly accepted: number;
  /** Records already accepted before (a resend). */
  readonly duplicates: number;
  /** Records the trigger's events / prefix / suffix filtered out. */
  readonly skipped: number;
  /** Invocation ids, one per accepted or duplicate record, in record order. */
  readonly invocations: readonly string[];
}

export interface S3Intake {
  /**
   * Finds the storage trigger and checks the presented secret (before the body is read).
   * @throws StratusError UNAUTHENTICATED (no such function or trigger, or a wrong secret);
   *   TRIGGER_SECRET_MISSING when the secret the trigger names is not set on the function.
   */
  authenticate(functionName: string, triggerName: string, authorization: string | undefined): Promise<{ entry: CatalogEntry; trigger: StorageTriggerConfig }>;
  /**
   * Validates the body and commits one job per matching record; resolves after the last commit.
   * @throws StratusError S3_NOTIFICATION_INVALID (nothing enqueued); the queue's errors (the sender retries).
   */
  accept(auth: { entry: CatalogEntry; trigger: StorageTriggerConfig }, body: Buffer): Promise<S3Accepted>;
}

export function createS3Intake(options: S3IntakeOptions): S3Intake {
  const { queue, catalog, logger } = options;
  const refuse = () => new StratusError("UNAUTHENTICATED", "The credentials do not match a storage trigger of this function");
  return {
    async authenticate(functionName, triggerName, authorization) {
      // A deploy the cache has not seen yet must not make a sender's first notification fail.
      const entry = (await catalog.get(functionName)) ?? (await catalog.get(functionName, true));
      const find = (e: CatalogEntry | null) => e?.config.triggers.find((t) => t.storage !== undefined && storageTriggerName(t.storage) === triggerName)?.storage;
      let trigger = find(entry);
      let current = entry;
      if (trigger === undefined && entry !== null) {
        current = await catalog.get(functionName, true);
        trigger = find(current);
      }
      if (current === null || trigger === undefined) {
        logger.warn({ fn: functionName, trigger: triggerName }, "bucket notification for an unknown function or storage trigger refused");
        throw refuse();
      }
      const expected = (await options.secrets(functionName).catch(() => ({} as Record<string, string>)))[trigger.secret];
      if (expected === undefined || expected === "") {
        logger.error({ fn: functionName, trigger: triggerName, secret: trigger.secret }, "storage trigger's secret is not set: notifications are refused (the sender retries)");
        throw new StratusError("TRIGGER_SECRET_MISSING", `The secret ${trigger.secret} that storage trigger "${triggerName}" names is not set on function ${functionName}`);
      }
      const presented = presentedSecret(authorization);
      if (presented === null || !sameSecret(presented, expected)) {
        logger.warn({ fn: functionName, trigger: triggerName }, "bucket notification with a wrong secret refused");
        throw refuse();
      }
      return { entry: current, trigger };
    },

    async accept({ entry, trigger }, body) {
      const records = parseS3Notification(body);
      // Validate every record (bucket, key encoding) before the first commit: all or nothing.
      const jobs: NewJob[] = [];
      let skipped = 0;
      for (const [i, record] of records.entries()) {
        if (record.s3.bucket.name !== trigger.bucket) {
          throw new StratusError("S3_NOTIFICATION_INVALID", `Records.${i}.s3.bucket.name is "${record.s3.bucket.name}", but this trigger is for bucket "${trigger.bucket}"`);
        }
        const job = s3RecordJob(entry, trigger, record);
        if (job === null) skipped++;
        else jobs.push(job);
      }
      let accepted = 0;
      let duplicates = 0;
      const invocations: string[] = [];
      for (const job of jobs) {
        try {
          const r = await queue.enqueue(job);
          if (r.created) accepted++;
          else duplicates++;
          invocations.push(r.job.id);
        } catch (err) {
          // The same record id with another body: the same event resent with a different rendering
          // (e.g. a sender that re-serialised it). It was accepted once; that is the one that runs.
          if ((err as { code?: string }).code !== "IDEMPOTENCY_CONFLICT") throw err;
          duplicates++;
        }
      }
      if (accepted > 0) options.onEnqueued?.(entry.name);
      logger.info({ fn: entry.name, trigger: storageTriggerName(trigger), accepted, duplicates, skipped }, "bucket notification committed");
      return { accepted, duplicates, skipped, invocations };
    },
  };
}
