/**
 * Header handling of the gateway: request ids, what is forwarded to an instance and back, Server-Timing.
 * Everything here is on the hot path: lookups in precomputed Sets, char-code scans, no regex.
 */
import { randomUUID } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { EVENT_HEADERS, HEADERS } from "../shared/protocol";

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
  options: { deadlineMs: number; dropAuthorization: boolean; remoteAddress: string | undefined; traceparent?: string; freshTrace?: boolean; eventHeaders?: boolean },
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
  // Only the platform's own async dispatches carry these (the gateway checked its token).
  if (options.eventHeaders === true) {
    for (const key of EVENT_HEADERS) {
      const value = incoming[key];
      if (typeof value === "string") out[key] = value;
    }
  }
  if (options.traceparent !== undefined) {
    out.traceparent = options.traceparent;
    // W3C Trace Context §3.3: a new trace-id invalidates the caller's tracestate.
    if (options.freshTrace === true) delete out.tracestate;
  }
  if (options.remoteAddress !== undefined) out["x-forwarded-for"] = options.remoteAddress;
  return out;
}

/** The instance's response head as the client gets it (see filterDownstreamHeaders). */
export interface DownstreamHead {
  /** Flat `[name, value, name, value, …]` for `res.writeHead` (keeps repeated headers such as set-cookie). */
  readonly headers: string[];
  /** The instance sent `x-stratus-instance-unusable`: destroy it after this response. */
  readonly unusable: boolean;
  /** The instance sent `x-stratus-error-source`: the body is a platform error body. */
  readonly errorSource: boolean;
  /** The function's own Server-Timing values (joined with ", "), or null. */
  readonly serverTiming: string | null;
}

/**
 * Response headers sent back to the client, from undici's raw head (`[name, value, …]` as Buffers):
 * the instance's minus hop-by-hop ones, minus `x-stratus-instance-unusable` (reported as `unusable`),
 * minus `server-timing`, `x-stratus-request-id` and `x-stratus-cold-start` (the gateway writes its
 * own, merging the function's Server-Timing after its own). `x-stratus-error-source` set by the
 * runtime is kept. A flat array straight from the raw head: no header object is built per response.
 */
export function filterDownstreamHeaders(raw: readonly (Buffer | string)[]): DownstreamHead {
  const headers: string[] = [];
  let unusable = false;
  let errorSource = false;
  let serverTiming: string | null = null;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toString("latin1");
    const key = name.toLowerCase();
    const value = raw[i + 1]!.toString("latin1");
    if (key.startsWith(STRATUS_PREFIX)) {
      if (key === HEADERS.instanceUnusable) unusable = true;
      else if (key === HEADERS.errorSource) {
        errorSource = true;
        headers.push(name, value);
      } else if (key !== HEADERS.requestId && key !== HEADERS.coldStart) headers.push(name, value);
    } else if (key === "server-timing") {
      serverTiming = serverTiming === null ? value : `${serverTiming}, ${value}`;
    } else if (!HOP_BY_HOP.has(key)) {
      headers.push(name, value);
    }
  }
  return { headers, unusable, errorSource, serverTiming };
}

/** `Server-Timing` value: `queue;dur=…, start;dur=…, handler;dur=…` (ms, 0.1 ms precision). */
export function serverTiming(queueMs: number, startMs: number, handlerMs: number): string {
  if (queueMs === 0 && startMs === 0) return WARM_TIMING_PREFIX + handlerMs.toFixed(1);
  return `queue;dur=${queueMs.toFixed(1)}, start;dur=${startMs.toFixed(1)}, handler;dur=${handlerMs.toFixed(1)}`;
}

/** A warm request never queued nor started anything: one number to format, not three. */
const WARM_TIMING_PREFIX = "queue;dur=0.0, start;dur=0.0, handler;dur=";
