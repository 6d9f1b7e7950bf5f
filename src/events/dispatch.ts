/**
 * One dispatch of an event to a function: an HTTP request to a node's gateway
 * (`<gatewayUrl>/fn/<name><path>`) carrying the control plane's dispatch token, which the gateway checks
 * instead of authorizing the caller and which lets the event headers (`x-stratus-attempt`,
 * `x-stratus-trigger`, `x-stratus-invocation-id`, `x-stratus-request-id`) reach the function. Shared by
 * the async worker (src/events/worker.ts) and the trigger sources' runner (src/events/sources/runner.ts),
 * so both speak to functions the same way and classify failures with the same codes.
 *
 * A 2xx is success; any other status, no answer within `timeoutMs` (FUNCTION_TIMEOUT) or a broken
 * connection (DISPATCH_FAILED) is a failure. The response body is kept up to RESULT_BODY_MAX + 1 bytes
 * (so truncation is visible); the rest is drained. Never throws: every outcome is a value.
 */
import { request, type Dispatcher } from "undici";
import { HEADERS } from "../shared/protocol";
import { RESULT_BODY_MAX } from "./queue";

/** What to send. `headers` are the event's own (ce-*, content-type…); the platform headers are added here. */
export interface DispatchRequest {
  /** Gateway base URL (`http://127.0.0.1:8080`), or null when no node is connected (a DISPATCH_FAILED failure, nothing sent). */
  readonly gatewayUrl: string | null;
  readonly functionName: string;
  readonly method: string;
  /** Path below the function root, with the query (`/`, `/a?x=1`). */
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  /** The control plane's dispatch token (EventsPlane.dispatchToken). */
  readonly dispatchToken: string;
  /** `x-stratus-request-id` of this attempt (`[A-Za-z0-9._:-]{1,128}`). */
  readonly requestId: string;
  /** `x-stratus-attempt`, 1-based. */
  readonly attempt: number;
  /** `x-stratus-invocation-id`, when the event is a job of the queue. */
  readonly invocationId?: string;
  /** `x-stratus-trigger`: the trigger id, for trigger-originated events. */
  readonly trigger?: string;
  /** Give up after this long without a complete answer, ms. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

/** How a dispatch ended. `failure` is null exactly when the function answered 2xx. */
export interface DispatchResult {
  /** HTTP status, or null when there was no answer. */
  readonly status: number | null;
  readonly contentType: string | null;
  /** The first RESULT_BODY_MAX + 1 bytes of the answer. */
  readonly body: Buffer;
  readonly failure: { readonly code: string; readonly message: string } | null;
}

/** Error code of a failed dispatch, from the gateway's error body when it has one. */
export function errorCodeOf(status: number, contentType: string | null, body: Buffer): { code: string; message: string } {
  if (contentType?.startsWith("application/json") === true) {
    try {
      const e = (JSON.parse(body.toString("utf8")) as { error?: { code?: unknown; message?: unknown } }).error;
      if (typeof e?.code === "string") return { code: e.code, message: typeof e.message === "string" ? e.message : e.code };
    } catch {
      // not our body: fall through
    }
  }
  return { code: status >= 500 ? "FUNCTION_ERROR" : `HTTP_${status}`, message: `The function answered ${status}: ${body.subarray(0, 200).toString("utf8")}` };
}

/** Sends one dispatch through `dispatcher` (an undici Agent the caller owns). Never rejects. */
export async function dispatchEvent(dispatcher: Dispatcher, d: DispatchRequest): Promise<DispatchResult> {
  const headers: Record<string, string> = {
    ...d.headers,
    [HEADERS.dispatchToken]: d.dispatchToken,
    [HEADERS.requestId]: d.requestId,
    [HEADERS.attempt]: String(d.attempt),
  };
  if (d.invocationId !== undefined) headers[HEADERS.invocationId] = d.invocationId;
  if (d.trigger !== undefined) headers[HEADERS.trigger] = d.trigger;
  if (d.gatewayUrl === null) return { status: null, contentType: null, body: Buffer.alloc(0), failure: { code: "DISPATCH_FAILED", message: "No node is connected to dispatch to" } };
  let status: number | null = null;
  let contentType: string | null = null;
  try {
    const r = await request(`${d.gatewayUrl}/fn/${d.functionName}${d.path}`, {
      dispatcher, method: d.method as "POST", headers, body: d.body.length > 0 || !["GET", "HEAD"].includes(d.method) ? d.body : null,
      headersTimeout: d.timeoutMs, bodyTimeout: d.timeoutMs, ...(d.signal !== undefined ? { signal: d.signal } : {}),
    });
    status = r.statusCode;
    const ct = r.headers["content-type"];
    contentType = typeof ct === "string" ? ct : null;
    const chunks: Buffer[] = [];
    let kept = 0;
    for await (const chunk of r.body as AsyncIterable<Buffer>) {
      if (kept <= RESULT_BODY_MAX) {
        chunks.push(chunk);
        kept += chunk.length;
      }
    }
    const body = Buffer.concat(chunks).subarray(0, RESULT_BODY_MAX + 1);
    return { status, contentType, body, failure: status < 200 || status > 299 ? errorCodeOf(status, contentType, body) : null };
  } catch (err) {
    const e = err as { code?: string; message?: string };
    const failure = e.code === "UND_ERR_HEADERS_TIMEOUT" || e.code === "UND_ERR_BODY_TIMEOUT"
      ? { code: "FUNCTION_TIMEOUT", message: "No answer within the function's timeout" }
      : { code: "DISPATCH_FAILED", message: `Dispatch failed: ${e.code ?? ""} ${e.message ?? String(err)}`.trim() };
    return { status, contentType, body: Buffer.alloc(0), failure };
  }
}
