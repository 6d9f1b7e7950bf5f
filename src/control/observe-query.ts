/**
 * Query-string parsing shared by the observability routes (logs, invocations): durations and times
 * (`since=10m`, an ISO date, or epoch ms), status filters (`5xx`, `404`), limits and booleans.
 * Every parser throws StratusError INVALID_ARGUMENT naming the parameter.
 */
import { StratusError } from "../shared/errors";
import { isLogLevelName, type LogLevelName } from "../shared/invocation";

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration like `500ms`, `30s`, `10m`, `2h`, `7d` in ms, or null when `value` is not one. */
export function parseDurationMs(value: string): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(value.trim());
  return m === null ? null : Math.round(Number(m[1]) * UNIT_MS[m[2]!]!);
}

/**
 * `since`: a duration back from `now` (`10m`), an ISO 8601 time, or epoch ms. Returns epoch ms.
 * @throws StratusError INVALID_ARGUMENT
 */
export function parseSince(value: string, now: number): number {
  const d = parseDurationMs(value);
  if (d !== null) return now - d;
  if (/^\d{10,}$/.test(value)) return Number(value);
  const t = Date.parse(value);
  if (!Number.isNaN(t)) return t;
  throw new StratusError("INVALID_ARGUMENT", `since: expected a duration (10m, 2h), an ISO time or epoch ms, got ${JSON.stringify(value.slice(0, 40))}`);
}

/** `5xx` → { statusClass: 5 }; `404` → { status: 404 }. @throws StratusError INVALID_ARGUMENT */
export function parseStatusFilter(value: string): { statusClass?: number; status?: number } {
  if (/^[1-5]xx$/i.test(value)) return { statusClass: Number(value[0]) };
  if (/^[1-5]\d\d$/.test(value)) return { status: Number(value) };
  throw new StratusError("INVALID_ARGUMENT", `status: expected a class like 5xx or a code like 404, got ${JSON.stringify(value.slice(0, 20))}`);
}

/** A positive integer parameter. @throws StratusError INVALID_ARGUMENT */
export function parsePositiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new StratusError("INVALID_ARGUMENT", `${name}: expected a positive integer`);
  return n;
}

/** A non-negative number parameter (ms). @throws StratusError INVALID_ARGUMENT */
export function parseNonNegative(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new StratusError("INVALID_ARGUMENT", `${name}: expected a number ≥ 0`);
  return n;
}

/** `1`/`true` or `0`/`false`. @throws StratusError INVALID_ARGUMENT */
export function parseBool(name: string, value: string): boolean {
  if (value === "1" || value === "true") return true;
  if (value === "0" || value === "false") return false;
  throw new StratusError("INVALID_ARGUMENT", `${name}: expected 1, 0, true or false`);
}

/** A level name (debug, info, warn, error). @throws StratusError INVALID_ARGUMENT */
export function parseLevel(value: string): LogLevelName {
  if (isLogLevelName(value)) return value;
  throw new StratusError("INVALID_ARGUMENT", "level: expected debug, info, warn or error");
}

/** A query parameter as one string (the last one when repeated), or undefined. */
export function queryParam(query: unknown, name: string): string | undefined {
  const v = (query as Record<string, unknown>)[name];
  if (Array.isArray(v)) return v.length === 0 ? undefined : String(v[v.length - 1]);
  return typeof v === "string" ? v : undefined;
}
