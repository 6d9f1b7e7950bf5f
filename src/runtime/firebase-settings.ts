/**
 * Firebase's function settings, as the real `firebase-functions` package attaches them to the function
 * `onRequest(options, handler)` returns (v2, and v1's `runWith(options).https.onRequest`): the
 * `__endpoint` property (firebase-functions 4–7; its values are numbers, `null`, `ResetValue` objects, or
 * param `Expression` objects), or `__trigger` in older versions. Mapped into a Stratus raw config where
 * Stratus has the setting; everything else set becomes a warning the deploy shows.
 *
 * | Firebase | Stratus |
 * |---|---|
 * | `timeoutSeconds` | `timeout` (× 1000 ms) |
 * | `memory` (`availableMemoryMb`) | `memory` (MB) |
 * | `minInstances`, `maxInstances`, `concurrency` | same names |
 * | `invoker: "public"` | `public: true`; any other invoker → `public: false` (bearer tokens, not IAM) |
 * | `region`, `cpu`, `secrets`, `serviceAccount`, `vpcConnector`, `ingressSettings`, `labels`, `omit`, … | warning |
 *
 * A mapped value outside Stratus's range (FUNCTION_CONFIG_LIMITS; Firebase v2 allows `timeoutSeconds` up to
 * 3600, Stratus 900) is clamped to the nearest limit, with a warning naming the setting, the value written
 * and the value applied: the function was written for another platform and deploys as close to it as
 * Stratus goes. A Stratus `config` out of range stays an error. A field the function's written Stratus
 * `config` sets is not read from Firebase's settings at all (the written config wins).
 *
 * Pure: read only during discovery.
 */
import { FUNCTION_CONFIG_LIMITS, type LimitedField } from "../shared/function-limits";

/** What a Firebase function's settings become. */
export interface FirebaseSettings {
  /** Stratus raw config fields (to be validated like a written `config`). */
  readonly config: Record<string, unknown>;
  /** One line per setting Stratus does not apply. */
  readonly warnings: string[];
  /** Set when the function is not an HTTP function (an event, schedule, task queue or blocking trigger). */
  readonly notHttp?: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object";
}

/** A set value: not null/undefined, not a ResetValue (an object of class ResetValue: "back to the default"). */
function isSet(v: unknown): boolean {
  if (v === null || v === undefined) return false;
  if (isObject(v) && v.constructor?.name === "ResetValue") return false;
  return true;
}

/** A param Expression (`defineInt("X")`…): resolved only at Firebase deploy time, so unknown here. */
function isExpression(v: unknown): boolean {
  return isObject(v) && !Array.isArray(v) && typeof (v as { toCEL?: unknown }).toCEL === "function";
}

/** Firebase key, Stratus field, conversion to the field's unit and back (for the warning), Firebase's unit. */
const MAPPED: Array<[string, LimitedField, (v: number) => number, (v: number) => number, string]> = [
  ["timeoutSeconds", "timeout", (s) => s * 1000, (ms) => ms / 1000, " s"],
  ["availableMemoryMb", "memory", (mb) => mb, (mb) => mb, " MB"],
  ["minInstances", "minInstances", (n) => n, (n) => n, ""],
  ["maxInstances", "maxInstances", (n) => n, (n) => n, ""],
  ["concurrency", "concurrency", (n) => n, (n) => n, ""],
];

/** The unit of a Stratus field in a warning. */
const STRATUS_UNIT: Record<LimitedField, string> = { timeout: " ms", memory: " MB", minInstances: "", maxInstances: "", concurrency: "" };

/**
 * A Firebase number converted into Stratus's field, clamped to its range (and rounded: Stratus's fields
 * are integers); a warning when the value changed.
 */
function mapNumber(from: string, to: LimitedField, v: number, convert: (v: number) => number, back: (v: number) => number, unit: string): { value: number; warning?: string } {
  const { min, max } = FUNCTION_CONFIG_LIMITS[to];
  const converted = convert(v);
  const value = Math.min(max, Math.max(min, Math.round(converted)));
  if (value === converted) return { value };
  const why = converted > max ? `above Stratus's maximum ${to} (${back(max)}${unit})` : converted < min ? `below Stratus's minimum ${to} (${back(min)}${unit})` : "not a whole number";
  return { value, warning: `${WRITTEN_AS[from] ?? from} ${v}${unit} is ${why}: clamped to ${back(value)}${unit} (config.${to} ${value}${STRATUS_UNIT[to]})` };
}

/** The option name a user wrote for an `__endpoint` key, for warnings. */
const WRITTEN_AS: Record<string, string> = {
  availableMemoryMb: "memory",
  secretEnvironmentVariables: "secrets",
  serviceAccountEmail: "serviceAccount",
  vpc: "vpcConnector",
};

/** Keys that say nothing the user set (the trigger kind, the platform). */
const STRUCTURAL = new Set(["platform", "httpsTrigger", "callableTrigger", "entryPoint", "id", "project", "runtime"]);

const NON_HTTP_TRIGGERS = ["eventTrigger", "scheduleTrigger", "taskQueueTrigger", "blockingTrigger"];

function describe(v: unknown): string {
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    return String(v);
  }
}

/**
 * The Firebase settings of a handler, or null when it carries none (not made by firebase-functions).
 * @param handler the exported value's function (what `onRequest` returned).
 * @param written the fields of the Stratus `config` written beside it: those are neither mapped nor warned about.
 */
export function firebaseSettingsOf(handler: unknown, written: ReadonlySet<string> = new Set()): FirebaseSettings | null {
  if (typeof handler !== "function") return null;
  const fn = handler as { __endpoint?: unknown; __trigger?: unknown };
  let endpoint: unknown;
  try {
    endpoint = fn.__endpoint ?? fn.__trigger;
  } catch {
    return null;
  }
  if (!isObject(endpoint)) return null;
  if (fn.__endpoint === undefined) return fromTrigger(endpoint, written);
  const config: Record<string, unknown> = {};
  const warnings: string[] = [];
  const trigger = NON_HTTP_TRIGGERS.find((k) => isSet(endpoint[k]));
  if (trigger !== undefined) {
    return { config, warnings, notHttp: `a Firebase ${trigger.replace(/Trigger$/, "")} function: Stratus serves HTTPS functions (onRequest, onCall) only` };
  }
  const mappedKeys = new Set<string>();
  for (const [from, to, convert, back, unit] of MAPPED) {
    mappedKeys.add(from);
    const v = endpoint[from];
    if (!isSet(v) || written.has(to)) continue;
    if (typeof v === "number" && Number.isFinite(v)) {
      const mapped = mapNumber(from, to, v, convert, back, unit);
      config[to] = mapped.value;
      if (mapped.warning !== undefined) warnings.push(mapped.warning);
    } else if (isExpression(v)) warnings.push(`${WRITTEN_AS[from] ?? from} is a Firebase parameter expression, resolved only by Firebase's deploy: not applied (set config.${to})`);
    else warnings.push(`${WRITTEN_AS[from] ?? from} ${describe(v)} is not a number: not applied`);
  }
  const invoker = isObject(endpoint.httpsTrigger) ? endpoint.httpsTrigger.invoker : undefined;
  if (Array.isArray(invoker) && invoker.length > 0 && !written.has("public")) {
    if (invoker.length === 1 && invoker[0] === "public") config.public = true;
    else {
      config.public = false;
      warnings.push(`invoker ${describe(invoker)}: Stratus has no IAM; the function is private (invocations need a Stratus bearer token)`);
    }
  }
  for (const [key, v] of Object.entries(endpoint)) {
    if (mappedKeys.has(key) || STRUCTURAL.has(key) || !isSet(v)) continue;
    if (key === "labels" && isObject(v) && Object.keys(v).length === 0) continue;
    if (key === "region" && Array.isArray(v)) {
      warnings.push(`region ${describe(v)}: Stratus runs the function on this platform's nodes, regions do not apply`);
      continue;
    }
    warnings.push(`${WRITTEN_AS[key] ?? key} ${describe(v)} has no Stratus equivalent: ignored`);
  }
  return { config, warnings };
}

/** Old firebase-functions (`__trigger` only): `timeout: "60s"`, `availableMemoryMb`, `regions`. */
function fromTrigger(trigger: Record<string, unknown>, written: ReadonlySet<string>): FirebaseSettings {
  const config: Record<string, unknown> = {};
  const warnings: string[] = [];
  const trig = NON_HTTP_TRIGGERS.find((k) => isSet(trigger[k]));
  if (trig !== undefined) return { config, warnings, notHttp: `a Firebase ${trig.replace(/Trigger$/, "")} function: Stratus serves HTTPS functions only` };
  const numbers: Record<string, unknown> = {
    timeoutSeconds: typeof trigger.timeout === "string" && /^\d+s$/.test(trigger.timeout) ? Number(trigger.timeout.slice(0, -1)) : undefined,
    availableMemoryMb: trigger.availableMemoryMb,
    minInstances: trigger.minInstances,
    maxInstances: trigger.maxInstances,
    concurrency: trigger.concurrency,
  };
  for (const [from, to, convert, back, unit] of MAPPED) {
    const v = numbers[from];
    if (typeof v !== "number" || !Number.isFinite(v) || written.has(to)) continue;
    const mapped = mapNumber(from, to, v, convert, back, unit);
    config[to] = mapped.value;
    if (mapped.warning !== undefined) warnings.push(mapped.warning);
  }
  for (const [key, v] of Object.entries(trigger)) {
    if (["timeout", "availableMemoryMb", "minInstances", "maxInstances", "concurrency", "platform", "httpsTrigger", "labels"].includes(key) || !isSet(v)) continue;
    warnings.push(`${key} ${describe(v)} has no Stratus equivalent: ignored`);
  }
  return { config, warnings };
}
