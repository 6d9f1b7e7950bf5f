/**
 * W3C Trace Context `traceparent` (https://www.w3.org/TR/trace-context/#traceparent-header):
 * `version "-" trace-id "-" parent-id "-" trace-flags`, lower-case hex. The gateway does not create
 * spans of its own, so it forwards a valid header unchanged (allowed for intermediaries) and starts a
 * new trace when the header is absent or malformed. Char-code scans only: this runs per request.
 */
import { randomBytes } from "node:crypto";

/** Length of a version-00 header: 2 + 1 + 32 + 1 + 16 + 1 + 2. */
const V00_LENGTH = 55;

function isLowerHex(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

function allZero(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (s.charCodeAt(i) !== 48) return false;
  return true;
}

/**
 * True when `value` is a traceparent we may forward: hex fields of the right lengths, version not
 * `ff`, trace-id and parent-id not all zeros; version 00 has exactly 55 characters, a later version
 * may carry more after a `-` (the spec's forward-compatibility rule).
 */
export function isValidTraceparent(value: string): boolean {
  const n = value.length;
  if (n < V00_LENGTH) return false;
  if (value[2] !== "-" || value[35] !== "-" || value[52] !== "-") return false;
  if (!isLowerHex(value, 0, 2) || value.startsWith("ff")) return false;
  if (!isLowerHex(value, 3, 35) || allZero(value, 3, 35)) return false;
  if (!isLowerHex(value, 36, 52) || allZero(value, 36, 52)) return false;
  if (!isLowerHex(value, 53, 55)) return false;
  if (value.startsWith("00")) return n === V00_LENGTH;
  return n === V00_LENGTH || value[55] === "-";
}

/** Trace id (16 bytes) + parent id (8 bytes). */
const ID_BYTES = 24;
let pool = Buffer.alloc(0);
let poolOffset = 0;

/** A fresh version-00 traceparent with random ids and the `sampled` flag set (we record every request). */
export function newTraceparent(): string {
  // One randomBytes call per 256 ids, as crypto.randomUUID batches its entropy: a call per request
  // was ~2 % of the gateway's CPU on the warm path (bench/gateway-latency.ts profile).
  if (poolOffset + ID_BYTES > pool.length) {
    pool = randomBytes(ID_BYTES * 256);
    poolOffset = 0;
  }
  const b = pool.toString("hex", poolOffset, poolOffset + ID_BYTES);
  poolOffset += ID_BYTES;
  return `00-${b.slice(0, 32)}-${b.slice(32, 48)}-01`;
}

/**
 * The traceparent to send to the function: the caller's when valid, else a new one. `fresh` tells
 * the caller that its `tracestate` no longer belongs to this trace and must be dropped.
 */
export function resolveTraceparent(incoming: string | string[] | undefined): { traceparent: string; fresh: boolean } {
  if (typeof incoming === "string" && isValidTraceparent(incoming)) return { traceparent: incoming, fresh: false };
  return { traceparent: newTraceparent(), fresh: true };
}

/** The 32-hex trace id of a valid traceparent. */
export function traceIdOf(traceparent: string): string {
  return traceparent.slice(3, 35);
}
