/**
 * How a trigger is shown (`stratus triggers ls`, `stratus describe`, `GET /api/v1/functions/<fn>/triggers`,
 * the `config` of `GET /api/v1/functions/<fn>`), for every kind, including kinds this code does not know:
 * a trigger is `{ schedule, timezone?, catchUp? }`, `{ rate, catchUp? }`, or an object naming its source
 * (`{ queue: {…} }`, `{ postgres: {…} }`, `{ storage: {…} }`…): its kind is that key, and it is shown as its
 * JSON. Credentials never reach the output: values under credential-like keys and the password (and
 * credential-like query parameters) of URLs are replaced with REDACTED before anything is printed or
 * answered — connection settings holding credentials should come from the function's secrets anyway
 * (docs/events.md), this is the second line.
 */

/** What replaces a credential in shown config. */
export const REDACTED = "<redacted>";

/** Keys whose values are never shown (case-insensitive, anywhere in a trigger's config). */
const SENSITIVE_KEY = /password|passwd|passphrase|secret|token|credential|api[-_]?key|access[-_]?key|private[-_]?key|authorization|signature|^auth$|^pass$|^pwd$/i;

/** Keys that configure a schedule or rate trigger rather than name a source. */
const SCHEDULE_KEYS = new Set(["schedule", "timezone", "rate", "catchUp"]);

/** A trigger's kind: `schedule`, `rate`, else the key naming its source (`queue`, `postgres`, …), else `unknown`. */
export function triggerKind(trigger: unknown): string {
  if (trigger === null || typeof trigger !== "object") return "unknown";
  const t = trigger as Record<string, unknown>;
  if (t.schedule !== undefined) return "schedule";
  if (t.rate !== undefined) return "rate";
  const source = Object.keys(t).find((k) => !SCHEDULE_KEYS.has(k) && t[k] !== null && typeof t[k] === "object");
  return source ?? Object.keys(t).find((k) => !SCHEDULE_KEYS.has(k)) ?? "unknown";
}

/** A URL string with its password and credential-like query parameters redacted; other strings as they are. */
function redactString(s: string): string {
  if (!s.includes("://")) return s;
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    // Not a URL after all, but it may still carry `user:pass@`: cut what sits between `:` and `@`.
    return s.replace(/(\/\/[^/@\s:]*:)[^/@\s]*@/, `$1${REDACTED}@`);
  }
  let changed = false;
  if (u.password !== "") {
    u.password = "REDACTED";
    changed = true;
  }
  for (const k of [...u.searchParams.keys()]) {
    if (SENSITIVE_KEY.test(k)) {
      u.searchParams.set(k, "REDACTED");
      changed = true;
    }
  }
  return changed ? u.toString().replaceAll("REDACTED", REDACTED) : s;
}

/**
 * A deep copy of a trigger's config (or any config value) with credentials redacted (see the file
 * comment). Bounded: nesting deeper than 20 levels is cut (config is validated JSON, far shallower).
 */
export function redactTrigger(value: unknown, depth = 0): unknown {
  if (depth > 20) return REDACTED;
  if (typeof value === "string") return redactString(value);
  if (Array.isArray(value)) return value.map((v) => redactTrigger(v, depth + 1));
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SENSITIVE_KEY.test(k) && v !== null && v !== undefined && v !== "" ? REDACTED : redactTrigger(v, depth + 1);
  return out;
}

/** A function config with its `triggers` redacted (the rest is as validated; secrets never live in config). */
export function redactConfigTriggers<T>(config: T): T {
  if (config === null || typeof config !== "object" || !Array.isArray((config as { triggers?: unknown }).triggers)) return config;
  return { ...config, triggers: (config as unknown as { triggers: unknown[] }).triggers.map((t) => redactTrigger(t)) };
}

/** One line describing a trigger: `schedule "0 3 * * *" (Europe/Berlin), catchUp latest`, `rate 5 minutes, catchUp none`, or `<kind> <redacted JSON>`. */
export function describeTrigger(trigger: unknown): string {
  const kind = triggerKind(trigger);
  const t = (trigger ?? {}) as { schedule?: string; timezone?: string; rate?: string; catchUp?: string };
  if (kind === "schedule") return `schedule "${t.schedule ?? ""}" (${t.timezone ?? "UTC"}), catchUp ${t.catchUp ?? "latest"}`;
  if (kind === "rate") return `rate ${t.rate ?? ""}, catchUp ${t.catchUp ?? "latest"}`;
  return `${kind} ${JSON.stringify(redactTrigger(trigger))}`;
}
