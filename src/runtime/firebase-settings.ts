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
 * Pure: read only during discovery.
 */

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

const MAPPED: Array<[string, string, (v: number) => number]> = [
  ["timeoutSeconds", "timeout", (s) => s * 1000],
  ["availableMemoryMb", "memory", (mb) => mb],
  ["minInstances", "minInstances", (n) => n],
  ["maxInstances", "maxInstances", (n) => n],
  ["concurrency", "concurrency", (n) => n],
];

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
 */
export function firebaseSettingsOf(handler: unknown): FirebaseSettings | null {
  if (typeof handler !== "function") return null;
  const fn = handler as { __endpoint?: unknown; __trigger?: unknown };
  let endpoint: unknown;
  try {
    endpoint = fn.__endpoint ?? fn.__trigger;
  } catch {
    return null;
  }
  if (!isObject(endpoint)) return null;
  if (fn.__endpoint === undefined) return fromTrigger(endpoint);
  const config: Record<string, unknown> = {};
  const warnings: string[] = [];
  const trigger = NON_HTTP_TRIGGERS.find((k) => isSet(endpoint[k]));
  if (trigger !== undefined) {
    return { config, warnings, notHttp: `a Firebase ${trigger.replace(/Trigger$/, "")} function: Stratus serves HTTPS functions (onRequest, onCall) only` };
  }
  const mappedKeys = new Set<string>();
  for (const [from, to, convert] of MAPPED) {
    mappedKeys.add(from);
    const v = endpoint[from];
    if (!isSet(v)) continue;
    if (typeof v === "number") config[to] = convert(v);
    else if (isExpression(v)) warnings.push(`${WRITTEN_AS[from] ?? from} is a Firebase parameter expression, resolved only by Firebase's deploy: not applied (set config.${to})`);
    else warnings.push(`${WRITTEN_AS[from] ?? from} ${describe(v)} is not a number: not applied`);
  }
  const invoker = isObject(endpoint.httpsTrigger) ? endpoint.httpsTrigger.invoker : undefined;
  if (Array.isArray(invoker) && invoker.length > 0) {
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
function fromTrigger(trigger: Record<string, unknown>): FirebaseSettings {
  const config: Record<string, unknown> = {};
  const warnings: string[] = [];
  const trig = NON_HTTP_TRIGGERS.find((k) => isSet(trigger[k]));
  if (trig !== undefined) return { config, warnings, notHttp: `a Firebase ${trig.replace(/Trigger$/, "")} function: Stratus serves HTTPS functions only` };
  if (typeof trigger.timeout === "string" && /^\d+s$/.test(trigger.timeout)) config.timeout = Number(trigger.timeout.slice(0, -1)) * 1000;
  if (typeof trigger.availableMemoryMb === "number") config.memory = trigger.availableMemoryMb;
  for (const k of ["minInstances", "maxInstances", "concurrency"]) if (typeof trigger[k] === "number") config[k] = trigger[k];
  for (const [key, v] of Object.entries(trigger)) {
    if (["timeout", "availableMemoryMb", "minInstances", "maxInstances", "concurrency", "platform", "httpsTrigger", "labels"].includes(key) || !isSet(v)) continue;
    warnings.push(`${key} ${describe(v)} has no Stratus equivalent: ignored`);
  }
  return { config, warnings };
}
