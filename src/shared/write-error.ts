/**
 * The one writer of error responses for every HTTP server (gateway, API, internal API, runtime, dev):
 * status and body from the error registry (`toErrorResponse`, src/shared/errors.ts), and always the
 * same head — `content-type: application/json; charset=utf-8`, `content-length`,
 * `x-stratus-error-source`, `x-stratus-request-id` when the request has one, then the error's own
 * headers (e.g. `Retry-After`), then the caller's extra ones (the gateway adds its timing headers).
 */
import type { ServerResponse } from "node:http";
import { toErrorResponse } from "./errors";
import { HEADERS } from "./protocol";

/** An error response, ready to write: to a ServerResponse (writeError) or a raw socket. */
export interface RenderedError {
  readonly status: number;
  /** The registry code in the body (INTERNAL for an error that is not a StratusError). */
  readonly code: string;
  readonly headers: Record<string, string>;
  /** The JSON body, `{ "error": { "code", "message", "requestId"?, "details"? } }`. */
  readonly body: string;
}

/** Renders `err` (unknown errors become 500 INTERNAL with a generic message) as status, head and body. */
export function renderError(err: unknown, requestId?: string, extraHeaders?: Readonly<Record<string, string>>): RenderedError {
  const r = toErrorResponse(err, requestId);
  const body = JSON.stringify(r.body);
  const headers: Record<string, string> = {
    "content-type": "application/json; charset=utf-8",
    "content-length": String(Buffer.byteLength(body)),
    [HEADERS.errorSource]: r.source,
  };
  if (requestId !== undefined) headers[HEADERS.requestId] = requestId;
  Object.assign(headers, r.headers, extraHeaders);
  return { status: r.status, code: r.body.error.code, headers, body };
}

/**
 * Writes `err` as the response. When a head already went out nothing valid can follow, so the
 * response is destroyed instead; a destroyed response is left alone. Logging is the caller's.
 * `status` overrides the registry's (the gateway's `queueFullStatus`: QUEUE_FULL as 503 behind HAProxy).
 * @returns the code and body bytes sent, or null when nothing was sent.
 */
export function writeError(res: ServerResponse, err: unknown, requestId?: string, extraHeaders?: Readonly<Record<string, string>>, status?: number): { code: string; bytes: number } | null {
  if (res.headersSent) {
    res.destroy();
    return null;
  }
  if (res.destroyed) return null;
  const r = renderError(err, requestId, extraHeaders);
  res.writeHead(status ?? r.status, r.headers);
  res.end(r.body);
  return { code: r.code, bytes: Buffer.byteLength(r.body) };
}
