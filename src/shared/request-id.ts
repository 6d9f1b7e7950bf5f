/**
 * The one request-id rule of every HTTP server (gateway, API, internal API, runtime, dev): a client's
 * `x-stratus-request-id` is kept only when it is safe to log and echo back, else a fresh UUID is used.
 * A char-code scan, no regex: the gateway runs it on every request.
 */
import { randomUUID } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { HEADERS } from "./protocol";

/** Longest client-supplied request id kept, characters. */
export const REQUEST_ID_MAX = 128;

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

/** The request's `x-stratus-request-id` when sane, else a fresh UUID. */
export function pickRequestId(headers: IncomingHttpHeaders): string {
  const given = headers[HEADERS.requestId];
  return typeof given === "string" && isSaneRequestId(given) ? given : randomUUID();
}
