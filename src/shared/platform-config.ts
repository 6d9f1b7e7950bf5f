/**
 * The platform's own configuration (what `stratus up` runs with): one zod schema, every field with its
 * default and unit. Precedence: flag > environment (STRATUS_*) > config file (JSON) > default.
 * Every problem is reported at once; the result is frozen. Bad config stops start-up with a clear
 * message, never a silent fallback. docs/configuration.md is generated from PLATFORM_CONFIG_FIELDS.
 */
import { z } from "zod";
import { StratusError } from "./errors";
import { DRIVER_NAMES } from "../sandbox/driver";
import { parseStoreLocation } from "./store-location";

const isStoreLocation = (v: string): boolean => {
  try {
    parseStoreLocation(v);
    return true;
  } catch {
    return false;
  }
};
import { cidrProblem } from "./cidr";

const MiB = 1024 * 1024;

/** Field docs: dotted key, env var, unit, default, meaning. */
export const PLATFORM_CONFIG_FIELDS = [
  { key: "host", env: "STRATUS_HOST", unit: "", default: "127.0.0.1", doc: "Address the API and gateway listen on." },
  { key: "port", env: "STRATUS_PORT", unit: "", default: 8080, doc: "Port of the API (`/api/v1`), health (`/healthz`, `/readyz`) and functions (`/fn/<name>/…`); 0 picks a free one." },
  { key: "dataDir", env: "STRATUS_DATA_DIR", unit: "path", default: "~/.stratus/data", doc: "Store, artifacts, keys and instance sockets." },
  { key: "store", env: "STRATUS_STORE", unit: "URL or path", default: "", doc: "Where the control plane keeps its state: empty for `<dataDir>/stratus.db` (SQLite, embedded), a file path or `sqlite:<file>`, or `postgres://user:password@host:port/database` (PostgreSQL; migrated at start). See docs/store.md." },
  { key: "driver", env: "STRATUS_DRIVER", unit: "", default: "process", doc: "Sandbox driver: `process` (bubblewrap + cgroups) or `docker`." },
  { key: "prewarm", env: "STRATUS_PREWARM", unit: "sandboxes", default: 2, doc: "Pre-started generic sandboxes (process driver: bubblewrap sandboxes; docker driver: containers from the base image) kept for the default limits (256 MB, outbound); cold starts take one and only load the code. 0 disables. See docs/prewarm.md." },
  { key: "logLevel", env: "STRATUS_LOG_LEVEL", unit: "", default: "info", doc: "pino level: trace, debug, info, warn, error, fatal, silent." },
  { key: "publicUrl", env: "STRATUS_PUBLIC_URL", unit: "URL", default: "", doc: "Base URL printed for functions; defaults to http://host:port." },
  { key: "gateway.maxHeaderBytes", env: "STRATUS_GATEWAY_MAX_HEADER_BYTES", unit: "bytes", default: 16_384, doc: "Largest request head; larger gets 431 HEADERS_TOO_LARGE." },
  { key: "gateway.maxHeaderCount", env: "STRATUS_GATEWAY_MAX_HEADER_COUNT", unit: "lines", default: 256, doc: "Most header lines in a request; more gets 431 HEADERS_TOO_LARGE." },
  { key: "gateway.headersTimeoutMs", env: "STRATUS_GATEWAY_HEADERS_TIMEOUT_MS", unit: "ms", default: 10_000, doc: "Time a client has to send the request head (and a new connection its first byte); then 408 or closed." },
  { key: "gateway.requestTimeoutMs", env: "STRATUS_GATEWAY_REQUEST_TIMEOUT_MS", unit: "ms", default: 300_000, doc: "Time a client has to send the whole request; then 408." },
  { key: "gateway.sweepIntervalMs", env: "STRATUS_GATEWAY_SWEEP_INTERVAL_MS", unit: "ms", default: 250, doc: "Period of the one timer that reaps idle instances and expires queued requests." },
  { key: "gateway.drainTimeoutMs", env: "STRATUS_GATEWAY_DRAIN_TIMEOUT_MS", unit: "ms", default: 30_000, doc: "Longest wait for in-flight requests on SIGTERM." },
  { key: "gateway.trustedProxies", env: "STRATUS_GATEWAY_TRUSTED_PROXIES", unit: "CIDRs", default: [], doc: "Load balancers in front of the gateway (comma-separated in the env, e.g. `10.0.0.0/8,::1`): their `X-Forwarded-*`, `Forwarded` and `X-Real-IP` are kept and the peer appended to `X-Forwarded-For`. From anyone else those headers are dropped and the gateway sets its own. Default: none (the gateway is the edge). See docs/security.md." },
  { key: "auth.failureBurst", env: "STRATUS_AUTH_FAILURE_BURST", unit: "failures", default: 20, doc: "Authentication failures (401) one client address may have in a row (API and private functions); then 429 `TOO_MANY_AUTH_FAILURES` with `Retry-After`, and no token from that address is checked until the bucket refills." },
  { key: "auth.failuresPerMinute", env: "STRATUS_AUTH_FAILURES_PER_MINUTE", unit: "failures/min", default: 30, doc: "Refill rate of each client's authentication-failure bucket." },
  { key: "auth.maxTrackedClients", env: "STRATUS_AUTH_MAX_TRACKED_CLIENTS", unit: "addresses", default: 10_000, doc: "Client addresses the failure limiter remembers (least recently failed forgotten first): bounds its memory." },
  { key: "gateway.queueFullStatus", env: "STRATUS_GATEWAY_QUEUE_FULL_STATUS", unit: "", default: 429, doc: "Status of QUEUE_FULL: 429 on a single node; 503 behind HAProxy (cluster mode), whose `retry-on` retries a 503 on another node but cannot retry a 429. Both carry `x-stratus-reject: overload` and `Retry-After`. See docs/cluster.md." },
  { key: "build.maxArchiveBytes", env: "STRATUS_BUILD_MAX_ARCHIVE_BYTES", unit: "bytes", default: 50 * MiB, doc: "Largest upload (compressed)." },
  { key: "build.maxUnpackedBytes", env: "STRATUS_BUILD_MAX_UNPACKED_BYTES", unit: "bytes", default: 200 * MiB, doc: "Largest unpacked project." },
  { key: "build.maxEntries", env: "STRATUS_BUILD_MAX_ENTRIES", unit: "entries", default: 10_000, doc: "Most files and folders in an upload." },
  { key: "build.timeoutMs", env: "STRATUS_BUILD_TIMEOUT_MS", unit: "ms", default: 300_000, doc: "Longest build (install + bundle + discovery)." },
  { key: "observe.maxLineBytes", env: "STRATUS_OBSERVE_MAX_LINE_BYTES", unit: "bytes", default: 8192, doc: "Longest stored log line; longer lines are cut with `… [truncated N bytes]`." },
  { key: "observe.maxLinesPerInvocation", env: "STRATUS_OBSERVE_MAX_LINES_PER_INVOCATION", unit: "lines", default: 2000, doc: "Log lines kept per invocation; the rest are dropped with one `[… N lines truncated]` marker." },
  { key: "observe.instanceOutputBytesPerSecond", env: "STRATUS_OBSERVE_INSTANCE_OUTPUT_BYTES_PER_SECOND", unit: "bytes/s", default: 1_048_576, doc: "Output (stdout + stderr) one instance may write, token bucket holding 2 s of it. Past it the platform stops reading (the instance's writes block) and drops what was already read, with one `[output-dropped]` marker line per pause and `stratus_log_lines_dropped_total{reason=\"instance_rate\"}`." },
  { key: "observe.instanceOutputLinesPerSecond", env: "STRATUS_OBSERVE_INSTANCE_OUTPUT_LINES_PER_SECOND", unit: "lines/s", default: 1000, doc: "Output lines one instance may write (same bucket rules as the bytes)." },
  { key: "observe.flushIntervalMs", env: "STRATUS_OBSERVE_FLUSH_INTERVAL_MS", unit: "ms", default: 250, doc: "Longest time a log line or record waits before its batch is written (one transaction)." },
  { key: "observe.flushMaxEntries", env: "STRATUS_OBSERVE_FLUSH_MAX_ENTRIES", unit: "entries", default: 1000, doc: "A batch is written as soon as this many lines and records wait." },
  { key: "observe.bufferMaxEntries", env: "STRATUS_OBSERVE_BUFFER_MAX_ENTRIES", unit: "entries", default: 100_000, doc: "Most entries waiting for the store; beyond it lines are dropped and counted (`stratus_log_lines_dropped_total`)." },
  { key: "observe.retentionMs", env: "STRATUS_OBSERVE_RETENTION_MS", unit: "ms", default: 604_800_000, doc: "Logs, invocation records and error groups older than this are purged (7 days)." },
  { key: "observe.maxLogRows", env: "STRATUS_OBSERVE_MAX_LOG_ROWS", unit: "rows", default: 5_000_000, doc: "Most log lines kept (all functions); the oldest go first." },
  { key: "observe.maxInvocationRows", env: "STRATUS_OBSERVE_MAX_INVOCATION_ROWS", unit: "rows", default: 1_000_000, doc: "Most invocation records kept (all functions)." },
  { key: "observe.purgeIntervalMs", env: "STRATUS_OBSERVE_PURGE_INTERVAL_MS", unit: "ms", default: 60_000, doc: "Period of the retention purge." },
  { key: "observe.publicMetrics", env: "STRATUS_OBSERVE_PUBLIC_METRICS", unit: "", default: false, doc: "Serve `/metrics` without a token (default: it needs an API bearer token like the API)." },
  { key: "registry.address", env: "STRATUS_REGISTRY", unit: "host:port", default: "127.0.0.1:5000", doc: "Image registry of the Docker driver." },
  { key: "registry.username", env: "STRATUS_REGISTRY_USERNAME", unit: "", default: "", doc: "Registry user (empty: anonymous)." },
  { key: "registry.password", env: "STRATUS_REGISTRY_PASSWORD", unit: "", default: "", doc: "Registry password." },
  { key: "process.sandboxSubnet", env: "STRATUS_PROCESS_SANDBOX_SUBNET", unit: "CIDR", default: "10.200.0.0/16", doc: "Process driver: IPv4 subnet carved into one /30 per sandbox with outbound network (its own network namespace, a veth pair and NAT). Pick a range no real network of the host uses; two nodes on one host need disjoint subnets. See docs/sandbox.md." },
  { key: "docker.imagePruneIntervalMs", env: "STRATUS_DOCKER_IMAGE_PRUNE_INTERVAL_MS", unit: "ms", default: 600_000, doc: "Docker driver: how often the node removes function images no active version uses (the registry keeps every version; a rollback pulls by digest). 0 disables." },
  { key: "lb.haproxySocket", env: "STRATUS_LB_HAPROXY_SOCKET", unit: "path", default: "", doc: "Control plane (`stratus control`): HAProxy's admin stats socket (several, comma-separated, for HAProxies side by side). When set, the control plane keeps HAProxy's node slots in step with its node table (`syncMembership`) on every join, drain, undrain, loss and removal, and every `lb.syncIntervalMs`. Empty: HAProxy is not managed (use `stratus lb sync`). See docs/cluster.md." },
  { key: "lb.haproxyStateFile", env: "STRATUS_LB_HAPROXY_STATE_FILE", unit: "path", default: "", doc: "HAProxy's `server-state-file`, written after every membership change so a restart or reload of HAProxy keeps the slots; with several sockets, one file per socket, comma-separated, in the same order. Empty: not written." },
  { key: "lb.syncIntervalMs", env: "STRATUS_LB_SYNC_INTERVAL_MS", unit: "ms", default: 2000, doc: "Period of the control plane's membership sync with HAProxy (besides syncing on every change): bounds how long a node lost by silence, or a change made through another control plane, takes to reach HAProxy." },
] as const;

const port = z.coerce.number().int().min(0).max(65_535);
const posInt = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
/** A list of CIDRs: a JSON array, or a comma-separated string (env, flag). */
const cidrList = z
  .union([z.array(z.string()), z.string().transform((v) => v.split(",").map((p) => p.trim()).filter((p) => p !== ""))])
  .pipe(z.array(z.string().superRefine((v, ctx) => {
    const problem = cidrProblem(v);
    if (problem !== null) ctx.addIssue({ code: "custom", message: problem });
  })));

export const PlatformConfigSchema = z.strictObject({
  host: z.string().min(1).default("127.0.0.1"),
  port: port.default(8080),
  dataDir: z.string().min(1).default("~/.stratus/data"),
  store: z.string().default("").refine((v) => v === "" || isStoreLocation(v), "a store location is postgres://…, postgresql://…, sqlite:<file> or a file path"),
  driver: z.enum(DRIVER_NAMES).default("process"),
  prewarm: posInt(0, 64).default(2),
  logLevel: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
  publicUrl: z.union([z.literal(""), z.url()]).default(""),
  gateway: z
    .strictObject({
      maxHeaderBytes: posInt(1024, 1024 * 1024).default(16_384),
      maxHeaderCount: posInt(8, 2000).default(256),
      headersTimeoutMs: posInt(100, 3_600_000).default(10_000),
      requestTimeoutMs: posInt(100, 3_600_000).default(300_000),
      sweepIntervalMs: posInt(10, 60_000).default(250),
      drainTimeoutMs: posInt(0, 3_600_000).default(30_000),
      trustedProxies: cidrList.default([]),
      queueFullStatus: z.coerce.number().pipe(z.union([z.literal(429), z.literal(503)])).default(429),
    })
    .prefault({}),
  auth: z
    .strictObject({
      failureBurst: posInt(1, 1_000_000).default(20),
      failuresPerMinute: posInt(1, 1_000_000).default(30),
      maxTrackedClients: posInt(10, 10_000_000).default(10_000),
    })
    .prefault({}),
  build: z
    .strictObject({
      maxArchiveBytes: posInt(1024, 4096 * MiB).default(50 * MiB),
      maxUnpackedBytes: posInt(1024, 16_384 * MiB).default(200 * MiB),
      maxEntries: posInt(1, 1_000_000).default(10_000),
      timeoutMs: posInt(1000, 3_600_000).default(300_000),
    })
    .prefault({}),
  observe: z
    .strictObject({
      maxLineBytes: posInt(256, 1024 * 1024).default(8192),
      maxLinesPerInvocation: posInt(1, 10_000_000).default(2000),
      instanceOutputBytesPerSecond: posInt(1024, 1024 * MiB).default(1_048_576),
      instanceOutputLinesPerSecond: posInt(1, 10_000_000).default(1000),
      flushIntervalMs: posInt(10, 60_000).default(250),
      flushMaxEntries: posInt(1, 1_000_000).default(1000),
      bufferMaxEntries: posInt(100, 100_000_000).default(100_000),
      retentionMs: posInt(60_000, 3650 * 86_400_000).default(604_800_000),
      maxLogRows: posInt(1000, 1_000_000_000).default(5_000_000),
      maxInvocationRows: posInt(1000, 1_000_000_000).default(1_000_000),
      purgeIntervalMs: posInt(1000, 86_400_000).default(60_000),
      publicMetrics: z.union([z.boolean(), z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1")]).default(false),
    })
    .prefault({}),
  registry: z
    .strictObject({
      address: z.string().min(1).default("127.0.0.1:5000"),
      username: z.string().default(""),
      password: z.string().default(""),
    })
    .prefault({}),
  process: z
    .strictObject({
      sandboxSubnet: z
        .string()
        .regex(/^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\/(?:[89]|1\d|2[0-8])$/, "an IPv4 CIDR with a prefix of 8 to 28")
        .default("10.200.0.0/16"),
    })
    .prefault({}),
  docker: z
    .strictObject({
      imagePruneIntervalMs: posInt(0, 86_400_000).default(600_000),
    })
    .prefault({}),
  lb: z
    .strictObject({
      haproxySocket: z.string().default(""),
      haproxyStateFile: z.string().default(""),
      syncIntervalMs: posInt(100, 3_600_000).default(2000),
    })
    .prefault({}),
});

export type PlatformConfig = z.output<typeof PlatformConfigSchema>;

type Tree = { [k: string]: unknown };

function setPath(target: Tree, dotted: string, value: unknown): void {
  const parts = dotted.split(".");
  let node = target;
  for (const part of parts.slice(0, -1)) {
    const next = node[part];
    if (typeof next !== "object" || next === null) node[part] = {};
    node = node[part] as Tree;
  }
  node[parts[parts.length - 1]!] = value;
}

function merge(base: Tree, over: Tree): Tree {
  const out: Tree = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = typeof v === "object" && v !== null && !Array.isArray(v) && typeof b === "object" && b !== null ? merge(b as Tree, v as Tree) : v;
  }
  return out;
}

/**
 * Resolves the platform config from its sources. `flags` uses dotted keys (`{"gateway.drainTimeoutMs": 5}`)
 * or nested objects; `env` is usually process.env (only the STRATUS_* names in PLATFORM_CONFIG_FIELDS
 * are read); `file` is the parsed JSON config file, if any. `homeDir` expands a leading `~` in dataDir.
 * @throws StratusError INVALID_ARGUMENT listing every problem, each with its key and the source it came from.
 */
export function resolvePlatformConfig(sources: {
  flags?: Record<string, unknown>;
  env?: Record<string, string | undefined>;
  file?: unknown;
  homeDir?: string;
}): Readonly<PlatformConfig> {
  const problems: string[] = [];
  let fileTree: Tree = {};
  if (sources.file !== undefined) {
    if (typeof sources.file === "object" && sources.file !== null && !Array.isArray(sources.file)) fileTree = sources.file as Tree;
    else problems.push("config file: must hold a JSON object");
  }
  const envTree: Tree = {};
  for (const field of PLATFORM_CONFIG_FIELDS) {
    const v = sources.env?.[field.env];
    if (v !== undefined && v !== "") setPath(envTree, field.key, v);
  }
  const flagTree: Tree = {};
  for (const [k, v] of Object.entries(sources.flags ?? {})) {
    if (v === undefined) continue;
    if (typeof v === "object" && v !== null) Object.assign(flagTree, merge(flagTree, { [k]: v }));
    else setPath(flagTree, k, v);
  }
  const merged = merge(merge(fileTree, envTree), flagTree);
  const result = PlatformConfigSchema.safeParse(merged);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const key = issue.path.map(String).join(".") || "(root)";
      const field = PLATFORM_CONFIG_FIELDS.find((f) => f.key === key);
      const hint = field ? ` (flag --${key}, env ${field.env})` : "";
      problems.push(`${key}: ${issue.message}${hint}`);
    }
  }
  if (problems.length > 0) {
    throw new StratusError("INVALID_ARGUMENT", `Invalid platform configuration:\n  - ${problems.join("\n  - ")}`, { details: problems });
  }
  const config = result.data!;
  if (config.dataDir.startsWith("~") && sources.homeDir) config.dataDir = sources.homeDir + config.dataDir.slice(1);
  return deepFreeze(config);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** Markdown table for docs/configuration.md. */
export function renderPlatformConfigDocs(): string {
  const rows = PLATFORM_CONFIG_FIELDS.map((f) => `| \`${f.key}\` | \`${f.env}\` | ${f.unit} | \`${JSON.stringify(f.default)}\` | ${f.doc} |`);
  return ["| key (flag `--key`) | environment | unit | default | meaning |", "|---|---|---|---|---|", ...rows].join("\n");
}
