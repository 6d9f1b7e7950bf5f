/**
 * The function `config` contract: one zod schema with every field's default and unit.
 * Unknown keys, wrong types and out-of-range values are errors (never ignored); every problem is
 * reported at once, each naming the function and the field. The docs table is generated from
 * FUNCTION_CONFIG_FIELDS (see docs/function-config.md).
 */
import { z } from "zod";
import { StratusError } from "./errors";
import { FUNCTION_CONFIG_LIMITS } from "./function-limits";

export { FUNCTION_CONFIG_LIMITS };

/** Calling conventions of a handler: Express `(req, res)`, or AWS Lambda `(event, context)` behind a function URL. */
export const HANDLER_TYPES = ["express", "lambda"] as const;
export type HandlerType = (typeof HANDLER_TYPES)[number];

/** Network policies an instance may run with. */
export const NETWORK_POLICIES = ["outbound", "none"] as const;
export type NetworkPolicy = (typeof NETWORK_POLICIES)[number];

const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
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
] as const;

const int = (min: number, max: number) => z.number().int().min(min).max(max);

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
