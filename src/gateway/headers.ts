/**
 * Header handling of the gateway: request ids, what is forwarded to an instance and back, Server-Timing.
 * Everything here is on the hot path: lookups in precomputed Sets, char-code scans, no regex.
 */
import type { IncomingHttpHeaders } from "node:http";
import { EVENT_HEADERS, HEADERS } from "../shared/protocol";

/** The request-id rule is shared by every server (src/shared/request-id.ts). */
export { REQUEST_ID_MAX, isSaneRequestId, pickRequestId } from "../shared/request-id";

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

/**
 * Client-identity headers some frameworks and proxies believe (RFC 7239 `forwarded`, `x-real-ip`, the
 * CDN variants, IIS's path overrides); every `x-forwarded-*` is matched by prefix. From an untrusted
 * peer all are dropped; from a trusted proxy (`trustedProxies`) they are kept.
 */
const FORWARDING = new Set([
  "forwarded",
  "x-real-ip",
  "x-client-ip",
  "true-client-ip",
  "cf-connecting-ip",
  "fastly-client-ip",
  "x-cluster-client-ip",
  "x-original-url",
  "x-rewrite-url",
]);
const X_FORWARDED = "x-forwarded-";

/** True for the headers the gateway owns when the peer is not a trusted proxy (see FORWARDING). */
export function isForwardingHeader(key: string): boolean {
  return key.startsWith(X_FORWARDED) || FORWARDING.has(key);
}

/** Where the request came from, as the gateway saw it. */
export interface ClientHop {
  /** The TCP peer's address (`socket.remoteAddress`). */
  readonly remoteAddress: string | undefined;
  /** The client connection is TLS (the gateway's own listener): `x-forwarded-proto: https`. */
  readonly encrypted?: boolean;
  /** The peer is a configured trusted proxy: its forwarding headers are kept, `x-forwarded-for` appended. */
  readonly trustedProxy?: boolean;
}

/**
 * Headers sent to the instance: the client's minus hop-by-hop ones, minus those named in
 * `Connection`, minus every `x-stratus-*` (clients must not forge platform headers), minus
 * `authorization` when the platform consumed it (non-public functions); plus the request id and
 * the deadline.
 *
 * Forwarding: from an untrusted peer every forwarding header (`x-forwarded-*`, `forwarded`,
 * `x-real-ip`, … see FORWARDING) is dropped and the gateway sets its own `x-forwarded-for` (the peer),
 * `x-forwarded-proto` (`https` on TLS, else `http`) and `x-forwarded-host` (the `host` header). From a
 * trusted proxy they are kept, the peer is appended to `x-forwarded-for`, and `-proto`/`-host` are set
 * only when the proxy did not send them.
 */
export function buildUpstreamHeaders(
  incoming: IncomingHttpHeaders,
  requestId: string,
  options: { deadlineMs: number; dropAuthorization: boolean; traceparent?: string; freshTrace?: boolean; eventHeaders?: boolean } & ClientHop,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const connection = incoming.connection;
  const named = connection !== undefined && connection !== "keep-alive" && connection !== "close"
    ? new Set(connection.toLowerCase().split(",").map((s) => s.trim()))
    : null;
  const trusted = options.trustedProxy === true;
  for (const key in incoming) {
    if (HOP_BY_HOP.has(key) || key.startsWith(STRATUS_PREFIX)) continue;
    if (!trusted && (key.startsWith(X_FORWARDED) || FORWARDING.has(key))) continue;
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
  const peer = options.remoteAddress;
  if (peer !== undefined) {
    const prior = trusted ? out["x-forwarded-for"] : undefined;
    out["x-forwarded-for"] = prior === undefined ? peer : `${Array.isArray(prior) ? prior.join(", ") : prior}, ${peer}`;
  }
  if (!trusted || out["x-forwarded-proto"] === undefined) out["x-forwarded-proto"] = options.encrypted === true ? "https" : "http";
  if ((!trusted || out["x-forwarded-host"] === undefined) && incoming.host !== undefined) out["x-forwarded-host"] = incoming.host;
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
 * minus `server-timing`, `x-stratus-request-id`, `x-stratus-cold-start` (the gateway writes its
 * own, merging the function's Server-Timing after its own) and `x-stratus-reject` (only the gateway
 * may say a request was not executed). `x-stratus-error-source` set by the
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
      } else if (key !== HEADERS.requestId && key !== HEADERS.coldStart && key !== HEADERS.reject) headers.push(name, value);
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
