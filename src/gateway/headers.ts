/**
 * Header handling of the gateway: request ids, what is forwarded to an instance and back, Server-Timing.
 * Everything here is on the hot path: lookups in precomputed Sets, char-code scans, no regex.
 */
import { randomUUID } from "node:crypto";
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { HEADERS } from "../shared/protocol";

/** Longest client-supplied request id we keep, characters. */
export const REQUEST_ID_MAX = 128;

const STRATUS_PREFIX = "x-stratus-";

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1) plus what undici refuses to forward (`expect`) or manages
 * itself; `host` is kept so the function sees the name it was called by.
 */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "http2-settings",
  "expect",
]);

/** True for `[A-Za-z0-9._:-]{1,128}`: safe to log and echo back. */
export function isSaneRequestId(value: string): boolean {
  const n = value.length;
  if (n === 0 || n > REQUEST_ID_MAX) return false;
  for (let i = 0; i < n; i++) {
    const c = value.charCodeAt(i);
    const ok = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 46 || c === 58 || c === 95;
    if (!ok) return false;
  }
  return true;
}

/** The client's `x-stratus-request-id` when sane, else a fresh UUID. */
export function pickRequestId(headers: IncomingHttpHeaders): string {
  const given = headers[HEADERS.requestId];
  return typeof given === "string" && isSaneRequestId(given) ? given : randomUUID();
}

/**
 * Headers sent to the instance: the client's minus hop-by-hop ones, minus those named in
 * `Connection`, minus every `x-stratus-*` (clients must not forge platform headers), minus
 * `authorization` when the platform consumed it (non-public functions); plus the request id,
 * the deadline and `x-forwarded-for` (replaced, not appended: the gateway is the edge).
 */
export function buildUpstreamHeaders(
  incoming: IncomingHttpHeaders,
  requestId: string,
  options: { deadlineMs: number; dropAuthorization: boolean; remoteAddress: string | undefined; traceparent?: string; freshTrace?: boolean },
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const connection = incoming.connection;
  const named = connection !== undefined && connection !== "keep-alive" && connection !== "close"
    ? new Set(connection.toLowerCase().split(",").map((s) => s.trim()))
    : null;
  for (const key in incoming) {
    if (HOP_BY_HOP.has(key) || key.startsWith(STRATUS_PREFIX) || key === "x-forwarded-for") continue;
    if (named !== null && named.has(key)) continue;
    if (options.dropAuthorization && key === "authorization") continue;
    const value = incoming[key];
    if (value !== undefined) out[key] = value;
  }
  out[HEADERS.requestId] = requestId;
  out[HEADERS.deadlineMs] = String(options.deadlineMs);
  if (options.traceparent !== undefined) {
    out.traceparent = options.traceparent;
    // W3C Trace Context §3.3: a new trace-id invalidates the caller's tracestate.
    if (options.freshTrace === true) delete out.tracestate;
  }
  if (options.remoteAddress !== undefined) out["x-forwarded-for"] = options.remoteAddress;
  return out;
}

/**
 * Response headers sent back to the client: the instance's minus hop-by-hop ones and minus
 * `x-stratus-instance-unusable` (reported through `unusable`). `x-stratus-error-source` set by the
 * runtime is kept.
 */
export function filterDownstreamHeaders(upstream: Record<string, string | string[] | undefined>): { headers: OutgoingHttpHeaders; unusable: boolean } {
  const headers: OutgoingHttpHeaders = {};
  let unusable = false;
  for (const key in upstream) {
    if (key === HEADERS.instanceUnusable) {
      unusable = true;
      continue;
    }
    if (HOP_BY_HOP.has(key)) continue;
    const value = upstream[key];
    if (value !== undefined) headers[key] = value;
  }
  return { headers, unusable };
}

/** `Server-Timing` value: `queue;dur=…, start;dur=…, handler;dur=…` (ms, 0.1 ms precision). */
export function serverTiming(queueMs: number, startMs: number, handlerMs: number): string {
  return `queue;dur=${queueMs.toFixed(1)}, start;dur=${startMs.toFixed(1)}, handler;dur=${handlerMs.toFixed(1)}`;
}
