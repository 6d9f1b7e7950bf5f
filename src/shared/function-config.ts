/**
 * The function `config` contract: one zod schema with every field's default and unit.
 * Unknown keys, wrong types and out-of-range values are errors (never ignored); every problem is
 * reported at once, each naming the function and the field. The docs table is generated from
 * FUNCTION_CONFIG_FIELDS (see docs/function-config.md).
 */
import { Cron } from "croner";
import { z } from "zod";
import { StratusError } from "./errors";
import { FUNCTION_CONFIG_LIMITS } from "./function-limits";
import { PostgresTriggerSchema, StorageTriggerSchema, checkDataTriggers } from "./data-triggers";

export { FUNCTION_CONFIG_LIMITS };

/** Calling conventions of a handler: Express `(req, res)`, or AWS Lambda `(event, context)` behind a function URL. */
export const HANDLER_TYPES = ["express", "lambda"] as const;
export type HandlerType = (typeof HANDLER_TYPES)[number];

/** Network policies an instance may run with. */
export const NETWORK_POLICIES = ["outbound", "none"] as const;
export type NetworkPolicy = (typeof NETWORK_POLICIES)[number];

const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
const int = (min: number, max: number) => z.number().int().min(min).max(max);
const MiB = 1024 * 1024;

/** Field documentation: name, unit, default and meaning. Kept next to the schema on purpose. */
export const FUNCTION_CONFIG_FIELDS = [
  { field: "timeout", unit: "ms", default: 30_000, range: "100 – 900000", doc: "Deadline of one invocation; past it the caller gets 504 FUNCTION_TIMEOUT and the instance is replaced." },
  { field: "memory", unit: "MB", default: 256, range: "64 – 16384", doc: "Memory limit of one instance (cgroup / container limit); Node's heap is sized to ~75 % of it." },
  { field: "concurrency", unit: "requests", default: 1, range: "1 – 1000", doc: "Requests one instance serves at once. 1 means parallel requests never share an instance." },
  { field: "minInstances", unit: "instances", default: 0, range: "0 – 1000", doc: "Instances kept warm even when idle." },
  { field: "maxInstances", unit: "instances", default: 10, range: "1 – 1000", doc: "Upper bound of instances of this function on one node." },
  { field: "idleTimeout", unit: "ms", default: 300_000, range: "1000 – 86400000", doc: "How long an idle instance stays warm before it is reaped." },
  { field: "maxBodyBytes", unit: "bytes", default: 6 * MiB, range: "0 – 104857600", doc: "Largest request body accepted; larger bodies get 413 PAYLOAD_TOO_LARGE." },
  { field: "maxQueue", unit: "requests", default: 100, range: "0 – 100000", doc: "Requests that may wait for an instance; past it 429 QUEUE_FULL (503 on a node with `gateway.queueFullStatus=503`, behind HAProxy)." },
  { field: "queueTimeout", unit: "ms", default: 30_000, range: "1 – 900000", doc: "Longest wait for an instance; past it 503 QUEUE_TIMEOUT." },
  { field: "env", unit: "", default: {}, range: "names [A-Za-z_][A-Za-z0-9_]*, not STRATUS_*", doc: "Plain environment variables given to the function's instances." },
  { field: "public", unit: "", default: true, range: "boolean", doc: "true: anyone with the URL may invoke. false: invocations need a bearer token." },
  { field: "network", unit: "", default: "outbound", range: "outbound | none", doc: "outbound: the function may open outbound connections (never to the platform). none: no network at all." },
  { field: "handlerType", unit: "", default: "express", range: "express | lambda", doc: "express: the handler is called as (req, res, next). lambda: as an AWS Lambda handler (event, context) with a function URL event (docs/migrating.md)." },
  { field: "maxOpenFiles", unit: "files", default: 1024, range: "64 – 65536", doc: "RLIMIT_NOFILE (soft and hard) of each instance: opening more fails with EMFILE inside the function only." },
  { field: "maxAttempts", unit: "attempts", default: 3, range: "1 – 100", doc: "Async and event invocations: attempts before the job goes to the dead-letter queue (3 = Lambda's 2 retries). See docs/events.md." },
  { field: "maxEventAgeS", unit: "s", default: 21_600, range: "1 – 21600", doc: "Async and event invocations: a job older than this is not retried again but dead-lettered (6 h like Lambda)." },
  { field: "retryDelayMs", unit: "ms", default: 5_000, range: "1 – 3600000", doc: "Base of the exponential backoff between attempts: attempt n waits retryDelayMs × 2^(n-1) (at most 15 min), with jitter of −50 %…0 %." },
  { field: "asyncConcurrency", unit: "requests", default: 2, range: "1 – 1000", doc: "Async and event invocations of this function running at once per control plane (never more than maxInstances × concurrency), so a backlog cannot take every instance from synchronous traffic." },
  { field: "triggers", unit: "", default: [], range: "at most 20", doc: "Event sources: `{ schedule: \"*/5 * * * *\", timezone?: \"Europe/Berlin\", catchUp?: \"none\"|\"latest\"|\"all\" }` (cron, 5 or 6 fields) or `{ rate: \"5 minutes\", catchUp? }` (default catchUp `latest`); or a queue: `{ queue: { type: \"nats\", urlSecret: \"NATS_URL\", stream, subject?, consumer? } }`, `{ queue: { type: \"rabbitmq\", urlSecret, queue } }`, `{ queue: { type: \"redis\", urlSecret, stream, consumer? } }`, each with `batchSize?` (1 – 1000, default 10) and `concurrency?` (1 – 1000, default asyncConcurrency). `urlSecret` names one of the function's secrets holding the broker URL with its credentials; a plain `url` is allowed only without credentials (`user:pass@` is refused). Bucket notifications: `{ storage: { type: \"s3\", bucket, secret, events?, prefix?, suffix?, name? } }`; table changes: `{ postgres: { connectionSecret, table, events?, slot? } }`. See docs/events.md." },
] as const;

/** What a schedule does with slots missed while no control plane ran (docs/events.md). */
export const CATCH_UP_POLICIES = ["none", "latest", "all"] as const;
export type CatchUpPolicy = (typeof CATCH_UP_POLICIES)[number];

const RATE_UNITS_MS: Readonly<Record<string, number>> = { second: 1000, minute: 60_000, hour: 3_600_000, day: 86_400_000 };

/**
 * Parses `5 minutes` (also `rate(5 minutes)`, `1 hour`, `30 seconds`, `1 day`) into ms; null when it
 * does not parse or is outside 1 s … 31 days.
 */
export function parseRateMs(text: string): number | null {
  const m = /^\s*(?:rate\(\s*)?(\d{1,6})\s+(second|minute|hour|day)s?\s*\)?\s*$/.exec(text);
  if (m === null) return null;
  const ms = Number(m[1]) * (RATE_UNITS_MS[m[2] as string] as number);
  return ms >= 1000 && ms <= 31 * 86_400_000 ? ms : null;
}

/** True when `tz` is an IANA time zone this Node knows. */
function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** The cron parse error of a 5- or 6-field expression (croner), or null when it is valid. */
export function cronProblem(expr: string, timezone: string): string | null {
  const fields = expr.trim().split(/\s+/).length;
  if (fields !== 5 && fields !== 6) return `must have 5 or 6 fields, got ${fields}`;
  try {
    new Cron(expr, { timezone, paused: true });
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Brokers a queue trigger consumes from (docs/events.md). */
export const QUEUE_TYPES = ["nats", "rabbitmq", "redis"] as const;
export type QueueType = (typeof QUEUE_TYPES)[number];

/** URL schemes each broker type accepts. */
const QUEUE_SCHEMES: Readonly<Record<QueueType, readonly string[]>> = {
  nats: ["nats:", "tls:"],
  rabbitmq: ["amqp:", "amqps:"],
  redis: ["redis:", "rediss:"],
};

/** Fields of a queue trigger that only some broker types take, and which. */
const QUEUE_FIELDS_BY_TYPE: Readonly<Record<string, readonly QueueType[]>> = {
  stream: ["nats", "redis"],
  subject: ["nats"],
  consumer: ["nats", "redis"],
  queue: ["rabbitmq"],
};

/** Broker object names: stream, subject, consumer and queue names (no spaces, no control characters). */
const brokerName = (max: number) => z.string().min(1).max(max).regex(/^[\x21-\x7e]+$/, "printable ASCII without spaces");

/**
 * The problem with a broker URL for `type`, or null. `plain`: the URL is written in the config (not a
 * secret), so it must carry no credentials. Exported for the runner, which checks a secret's value with it.
 */
export function queueUrlProblem(type: QueueType, url: string, plain: boolean): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return "is not a URL";
  }
  const schemes = QUEUE_SCHEMES[type];
  if (!schemes.includes(u.protocol)) return `must start with ${schemes.map((x) => `${x}//`).join(" or ")} for type ${type}`;
  if (u.hostname === "") return "has no host";
  // The control plane itself (not a sandbox) connects there: never to link-local / cloud metadata addresses.
  if (/^169\.254\./.test(u.hostname) || /^\[(fe[89ab][0-9a-f]:|fd00:ec2::254\])/i.test(u.hostname)) return "points at a link-local address (cloud metadata): refused";
  if (plain && (u.username !== "" || u.password !== "")) {
    return "carries credentials (user:pass@ or a token): store the whole URL as a secret (stratus secrets set <fn> NAME) and name it with urlSecret";
  }
  return null;
}

/**
 * A queue trigger: consume a NATS JetStream stream (durable pull consumer), a RabbitMQ queue or a Redis
 * stream (consumer group). One object schema for the three types, so every problem is reported by name;
 * which fields a type needs is checked below.
 */
export const QueueTriggerSchema = z.strictObject({
  type: z.enum(QUEUE_TYPES),
  /** Broker URL without credentials. */
  url: z.string().min(1).max(2000).optional(),
  /** Name of the function's secret whose value is the broker URL (credentials included). */
  urlSecret: z.string().regex(ENV_KEY, "must match [A-Za-z_][A-Za-z0-9_]*").max(200).optional(),
  /** NATS: the JetStream stream. Redis: the stream key. */
  stream: brokerName(512).optional(),
  /** NATS: the consumer's filter subject (default: every subject of the stream). */
  subject: brokerName(512).optional(),
  /** NATS: the durable consumer's name. Redis: the consumer group's name. Default `stratus-<fn>-<index>`. */
  consumer: brokerName(200).regex(/^[^.*>]+$/, "no '.', '*' or '>'").optional(),
  /** RabbitMQ: the queue (it must exist). */
  queue: brokerName(255).optional(),
  /** Messages fetched per call. */
  batchSize: int(1, 1000).default(10),
  /** Deliveries at once for this trigger (per control plane); default the function's asyncConcurrency. */
  concurrency: int(1, 1000).optional(),
}).superRefine((q, ctx) => {
  if ((q.url === undefined) === (q.urlSecret === undefined)) ctx.addIssue({ code: "custom", path: ["url"], message: "give exactly one of url or urlSecret" });
  if (q.url !== undefined) {
    const problem = queueUrlProblem(q.type, q.url, true);
    if (problem !== null) ctx.addIssue({ code: "custom", path: ["url"], message: problem });
  }
  for (const [field, types] of Object.entries(QUEUE_FIELDS_BY_TYPE)) {
    if ((q as Record<string, unknown>)[field] !== undefined && !types.includes(q.type)) {
      ctx.addIssue({ code: "custom", path: [field], message: `applies to type ${types.join(" or ")} only` });
    }
  }
  const required: Record<QueueType, string> = { nats: "stream", redis: "stream", rabbitmq: "queue" };
  const need = required[q.type];
  if ((q as Record<string, unknown>)[need] === undefined) ctx.addIssue({ code: "custom", path: [need], message: `required for type ${q.type}` });
});
export type QueueTriggerConfig = z.output<typeof QueueTriggerSchema>;

/**
 * One trigger of a function (the `triggers` config field): exactly one of `schedule` (cron, with an
 * optional `timezone`, default UTC), `rate` or `queue`. One object schema rather than a union, so a bad
 * field is reported by name, with every other problem.
 */
export const TriggerSchema = z.strictObject({
  schedule: z.string().min(1).max(200).optional(),
  // Event-source kinds (src/shared/data-triggers.ts): bucket notifications and table changes.
  storage: StorageTriggerSchema.optional(),
  postgres: PostgresTriggerSchema.optional(),
  timezone: z.string().max(100).refine(isTimeZone, "unknown time zone").optional(),
  rate: z.string().max(100).refine((r) => parseRateMs(r) !== null, "must read like \"5 minutes\" (second|minute|hour|day, 1 s … 31 days)").optional(),
  catchUp: z.enum(CATCH_UP_POLICIES).default("latest"),
  queue: QueueTriggerSchema.optional(),
}).superRefine((t, ctx) => {
  const kinds = [t.schedule, t.rate, t.queue, t.storage, t.postgres].filter((x) => x !== undefined).length;
  if (kinds !== 1) {
    ctx.addIssue({ code: "custom", path: [], message: "give exactly one of schedule, rate, queue, storage or postgres" });
    return;
  }
  if ((t.queue ?? t.storage ?? t.postgres) !== undefined && t.timezone !== undefined) ctx.addIssue({ code: "custom", path: ["timezone"], message: "timezone applies to schedule only" });
  if (t.rate !== undefined && t.timezone !== undefined) ctx.addIssue({ code: "custom", path: ["timezone"], message: "timezone applies to schedule only" });
  if (t.schedule !== undefined) {
    const tz = t.timezone !== undefined && isTimeZone(t.timezone) ? t.timezone : "UTC";
    const problem = cronProblem(t.schedule, tz);
    if (problem !== null) ctx.addIssue({ code: "custom", path: ["schedule"], message: `invalid cron expression: ${problem}` });
  }
});
export type TriggerConfig = z.output<typeof TriggerSchema>;

const L = FUNCTION_CONFIG_LIMITS;

export const FunctionConfigSchema = z
  .strictObject({
    timeout: int(L.timeout.min, L.timeout.max).default(30_000),
    memory: int(L.memory.min, L.memory.max).default(256),
    concurrency: int(L.concurrency.min, L.concurrency.max).default(1),
    minInstances: int(L.minInstances.min, L.minInstances.max).default(0),
    maxInstances: int(L.maxInstances.min, L.maxInstances.max).default(10),
    idleTimeout: int(1000, 86_400_000).default(300_000),
    maxBodyBytes: int(0, 100 * MiB).default(6 * MiB),
    maxQueue: int(0, 100_000).default(100),
    queueTimeout: int(1, 900_000).default(30_000),
    env: z
      .record(
        z.string().regex(ENV_KEY, "must match [A-Za-z_][A-Za-z0-9_]*").refine((k) => !k.startsWith("STRATUS_"), "the STRATUS_ prefix is reserved"),
        z.string().max(32_768),
      )
      .default({}),
    public: z.boolean().default(true),
    network: z.enum(NETWORK_POLICIES).default("outbound"),
    handlerType: z.enum(HANDLER_TYPES).default("express"),
    maxOpenFiles: int(64, 65_536).default(1024),
    maxAttempts: int(1, 100).default(3),
    maxEventAgeS: int(1, 21_600).default(21_600),
    retryDelayMs: int(1, 3_600_000).default(5_000),
    asyncConcurrency: int(1, 1000).default(2),
    triggers: z.array(TriggerSchema).max(20).superRefine(checkDataTriggers).default([]),
  })
  .refine((c) => c.minInstances <= c.maxInstances, { message: "minInstances must not exceed maxInstances", path: ["minInstances"] });

/** A config with every default applied. Units: ms for times, MB for memory, bytes for bodies. */
export type FunctionConfig = z.output<typeof FunctionConfigSchema>;
/** What a user may write. */
export type FunctionConfigInput = z.input<typeof FunctionConfigSchema>;

/**
 * Validates a function's raw config and applies defaults.
 * @throws StratusError INVALID_CONFIG, with `details` listing every problem as `{ path, message }`
 *   and a message naming the function and each field.
 */
export function parseFunctionConfig(functionName: string, raw: unknown): Readonly<FunctionConfig> {
  const result = FunctionConfigSchema.safeParse(raw ?? {});
  if (result.success) return Object.freeze(result.data);
  const problems = result.error.issues.map((issue) => {
    const path = issue.path.length > 0 ? issue.path.map(String).join(".") : "(config)";
    return { path, message: issue.message };
  });
  const text = problems.map((p) => `${p.path}: ${p.message}`).join("; ");
  throw new StratusError("INVALID_CONFIG", `Invalid config for function "${functionName}": ${text}`, { details: problems });
}
