/**
 * The platform's own configuration (what `stratus up` runs with): one zod schema, every field with its
 * default and unit. Precedence: flag > environment (STRATUS_*) > config file (JSON) > default.
 * Every problem is reported at once; the result is frozen. Bad config stops start-up with a clear
 * message, never a silent fallback. docs/configuration.md and the STRATUS_* names are generated from the
 * schema (PLATFORM_CONFIG_FIELDS walks it).
 *
 * Adding a setting: a component's setting goes into that component's shape in src/shared/config/
 * (`setting(int(min, max).default(d), { unit, doc })`) and the component validates with the same shape;
 * a setting no component owns goes in a `section({...})` here. Its env name is derived from its key
 * (`events.pollIntervalMs` → `STRATUS_EVENTS_POLL_INTERVAL_MS`); then regenerate docs/configuration.md
 * (`node --import tsx scripts/gen-platform-config-docs.mjs > docs/configuration.md`).
 */
import { z } from "zod";
import { StratusError } from "./errors";
import { DRIVER_NAMES, DOCKER_DRIVER_SETTINGS_SHAPE, PROCESS_DRIVER_SETTINGS_SHAPE } from "./config/driver-settings";
import { checkGatewayLimits, GATEWAY_LIMITS_SHAPE, GATEWAY_NODE_SHAPE } from "./config/gateway-settings";
import { INSTANCE_OUTPUT_SHAPE, OBSERVE_SETTINGS_SHAPE } from "./config/observe-settings";
import { AUTH_SETTINGS_SHAPE } from "./config/auth-settings";
import { RATE_LIMIT_SETTINGS_SHAPE } from "./config/rate-limit-settings";
import { fromString, int, ipv4Cidr, setting, settingDoc, settingKind, type SettingKind, type Shape } from "./config/setting";
import { parseStoreLocation } from "./store-location";

const isStoreLocation = (v: string): boolean => {
  try {
    parseStoreLocation(v);
    return true;
  } catch {
    return false;
  }
};

const MiB = 1024 * 1024;

const port = int(0, 65_535);
// Every field of a section has a default, so an absent section is `{}`.
const section = <S extends Shape>(shape: S) => z.strictObject(shape).prefault({} as never);

/**
 * The schema. Sections of a component are composed from that component's own field schemas
 * (src/shared/config/): `gateway` from the gateway's limits, `observe` from the observer's settings,
 * `process`/`docker` from the driver settings; only what no component owns is declared here.
 */
export const PlatformConfigSchema = z.strictObject({
  host: setting(z.string().min(1).default("127.0.0.1"), { unit: "", doc: "Address the API and gateway listen on." }),
  port: setting(port.default(8080), { unit: "", doc: "Port of the API (`/api/v1`), health (`/healthz`, `/readyz`) and functions (`/fn/<name>/…`); 0 picks a free one." }),
  dataDir: setting(z.string().min(1).default("~/.stratus/data"), { unit: "path", doc: "Store, artifacts, keys and instance sockets." }),
  store: setting(z.string().default("").refine((v) => v === "" || isStoreLocation(v), "a store location is postgres://…, postgresql://…, sqlite:<file> or a file path"), {
    unit: "URL or path",
    doc: "Where the control plane keeps its state: empty for `<dataDir>/stratus.db` (SQLite, embedded), a file path or `sqlite:<file>`, or `postgres://user:password@host:port/database` (PostgreSQL; migrated at start). See docs/store.md.",
  }),
  driver: setting(z.enum(DRIVER_NAMES).default("process"), { unit: "", doc: "Sandbox driver: `process` (bubblewrap + cgroups) or `docker`." }),
  prewarm: setting(int(0, 512).default(2), { unit: "sandboxes", doc: "Pre-started generic sandboxes (process driver: bubblewrap sandboxes; docker driver: containers from the base image) kept for the default limits (256 MB, outbound); cold starts take one and only load the code. 0 disables. See docs/prewarm.md." }),
  prewarmMax: setting(int(0, 512).default(0), { unit: "sandboxes", doc: "Most idle pre-warm slots per limits key that demand may grow the pool to (recent cold-start rate, and the largest burst of the last 5 minutes): the memory budget of the pool, each idle slot ~11 MiB (process driver). 0: 4 × `prewarm`, at most 32; never below `prewarm`. A node that took a burst of N cold starts keeps up to this many slots for the next one. See docs/prewarm.md \"Bursts\"." }),
  prewarmRefill: setting(z.enum(["demand", "quiet"]).default("demand"), {
    unit: "",
    doc: "When the pre-warm pool refills: `demand` refills while cold starts keep coming (50 ms after a start; one boot at a time, two when one cannot keep up with the rate; queued behind on-demand boots) and sizes itself from the recent cold-start rate × the measured boot time and the largest recent burst (at least `prewarm`, at most `prewarmMax`), holding refills until a burst's starts stopped for 1.5 s; `quiet` refills only after 250 ms without a start (round one's policy, kept as a benchmark baseline). See docs/prewarm.md.",
  }),
  logLevel: setting(z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"), { unit: "", doc: "pino level: trace, debug, info, warn, error, fatal, silent." }),
  publicUrl: setting(z.union([z.literal(""), z.url()]).default(""), { unit: "URL", doc: "Base URL printed for functions; defaults to http://host:port." }),
  gateway: z.strictObject({ ...GATEWAY_LIMITS_SHAPE, ...GATEWAY_NODE_SHAPE }).superRefine(checkGatewayLimits).prefault({}),
  auth: section(AUTH_SETTINGS_SHAPE),
  rateLimit: section(RATE_LIMIT_SETTINGS_SHAPE),
  build: section({
    maxArchiveBytes: setting(int(1024, 4096 * MiB).default(50 * MiB), { unit: "bytes", doc: "Largest upload (compressed)." }),
    maxUnpackedBytes: setting(int(1024, 16_384 * MiB).default(200 * MiB), { unit: "bytes", doc: "Largest unpacked project." }),
    maxEntries: setting(int(1, 1_000_000).default(10_000), { unit: "entries", doc: "Most files and folders in an upload." }),
    timeoutMs: setting(int(1000, 3_600_000).default(300_000), { unit: "ms", doc: "Longest build (install + bundle + discovery)." }),
    sandboxSubnet: setting(ipv4Cidr(8, 28).default("10.199.0.0/16"), { unit: "CIDR", doc: "IPv4 subnet carved into one /30 per dependency install (`npm ci`, `yarn install`): each runs in its own network namespace with a veth pair and NAT, and reaches neither the host nor its abstract Unix sockets. Disjoint from `process.sandboxSubnet` and from every real network of the host; `process.blockedCidrs` apply to builds too. See docs/build.md." }),
  }),
  observe: section({
    ...OBSERVE_SETTINGS_SHAPE,
    ...INSTANCE_OUTPUT_SHAPE,
    publicMetrics: setting(z.boolean().default(false), { unit: "", doc: "Serve `/metrics` without a token (default: it needs an API bearer token like the API)." }),
  }),
  registry: section({
    address: setting(z.string().min(1).default("127.0.0.1:5000"), { unit: "host:port", env: "STRATUS_REGISTRY", doc: "Image registry of the Docker driver." }),
    username: setting(z.string().default(""), { unit: "", doc: "Registry user (empty: anonymous)." }),
    password: setting(z.string().default(""), { unit: "", doc: "Registry password." }),
  }),
  process: section(PROCESS_DRIVER_SETTINGS_SHAPE),
  docker: section(DOCKER_DRIVER_SETTINGS_SHAPE),
  events: section({
    pollIntervalMs: setting(int(10, 60_000).default(500), { unit: "ms", doc: "How often the async worker looks for due jobs (it also wakes at once on an enqueue or a finished job in this control plane). See docs/events.md." }),
    scheduleIntervalMs: setting(int(10, 60_000).default(1000), { unit: "ms", doc: "How often the scheduler checks schedule and rate triggers for due slots." }),
    sourceSyncIntervalMs: setting(int(100, 600_000).default(2000), { unit: "ms", doc: "How often the control plane compares its running queue-trigger sources (NATS, RabbitMQ, Redis) with the active functions' triggers and secrets, starting, restarting and stopping them. See docs/events.md." }),
    leaseMarginMs: setting(int(1000, 3_600_000).default(30_000), { unit: "ms", doc: "A job's lease (visibility timeout) is the function's timeout plus this; after a crash, leased jobs run again once it passes." }),
    retentionMs: setting(int(60_000, 3650 * 86_400_000).default(604_800_000), { unit: "ms", doc: "Finished async invocations (succeeded, replayed) older than this are deleted (7 days); the DLQ is kept until purged." }),
  }),
  lb: section({
    haproxySocket: setting(z.string().default(""), { unit: "path", doc: "Control plane (`stratus control`): HAProxy's admin stats socket (several, comma-separated, for HAProxies side by side). When set, the control plane keeps HAProxy's node slots in step with its node table (`syncMembership`) on every join, drain, undrain, loss and removal, and every `lb.syncIntervalMs`. Empty: HAProxy is not managed (use `stratus lb sync`). See docs/cluster.md." }),
    haproxyStateFile: setting(z.string().default(""), { unit: "path", doc: "HAProxy's `server-state-file`, written after every membership change so a restart or reload of HAProxy keeps the slots; with several sockets, one file per socket, comma-separated, in the same order. Empty: not written." }),
    syncIntervalMs: setting(int(100, 3_600_000).default(2000), { unit: "ms", doc: "Period of the control plane's membership sync with HAProxy (besides syncing on every change): bounds how long a node lost by silence, or a change made through another control plane, takes to reach HAProxy." }),
  }),
});

export type PlatformConfig = z.output<typeof PlatformConfigSchema>;

/** One documented setting: dotted key, env var, unit, default, meaning, and how a string converts. */
export interface PlatformConfigField {
  readonly key: string;
  readonly env: string;
  readonly unit: string;
  readonly default: unknown;
  readonly doc: string;
  readonly kind: SettingKind;
}

/** `gateway.maxHeaderBytes` → `STRATUS_GATEWAY_MAX_HEADER_BYTES`. */
export function envNameOf(key: string): string {
  return `STRATUS_${key.replace(/([a-z0-9])([A-Z])/g, "$1_$2").replace(/\./g, "_").toUpperCase()}`;
}

function innerObjectShape(schema: z.ZodType): Shape | null {
  let s = schema as unknown as { _zod: { def: { type: string; innerType?: unknown; shape?: Shape } } };
  while (s._zod.def.type === "prefault" || s._zod.def.type === "default") s = s._zod.def.innerType as typeof s;
  return s._zod.def.type === "object" ? (s._zod.def.shape as Shape) : null;
}

function fieldsOf(shape: Shape, prefix: string, defaults: Record<string, unknown>): PlatformConfigField[] {
  const out: PlatformConfigField[] = [];
  for (const [name, schema] of Object.entries(shape)) {
    const key = prefix + name;
    const inner = innerObjectShape(schema);
    if (inner !== null) {
      out.push(...fieldsOf(inner, `${key}.`, defaults[name] as Record<string, unknown>));
      continue;
    }
    const d = settingDoc(schema);
    if (d === undefined) throw new Error(`platform config: ${key} has no documentation (wrap it in setting())`);
    out.push({ key, env: d.env ?? envNameOf(key), unit: d.unit, default: defaults[name], doc: d.doc, kind: settingKind(schema) });
  }
  return out;
}

/** Every setting, in schema order, derived from PlatformConfigSchema (docs table, env names, defaults). */
export const PLATFORM_CONFIG_FIELDS: readonly PlatformConfigField[] = Object.freeze(
  fieldsOf(PlatformConfigSchema.shape as unknown as Shape, "", PlatformConfigSchema.parse({}) as unknown as Record<string, unknown>),
);
const FIELD_BY_KEY = new Map(PLATFORM_CONFIG_FIELDS.map((f) => [f.key, f]));

/** Converts the strings of a source tree to each setting's kind (env and flags are strings; a file may hold them). */
function typed(tree: Tree, prefix = ""): Tree {
  const out: Tree = {};
  for (const [k, v] of Object.entries(tree)) {
    const key = prefix + k;
    if (typeof v === "object" && v !== null && !Array.isArray(v)) out[k] = typed(v as Tree, `${key}.`);
    else {
      const field = FIELD_BY_KEY.get(key);
      out[k] = typeof v === "string" && field !== undefined ? fromString(field.kind, v) : v;
    }
  }
  return out;
}

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
  const merged = typed(merge(merge(fileTree, envTree), flagTree));
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
