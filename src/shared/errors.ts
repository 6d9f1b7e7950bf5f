/**
 * The one registry of stable error codes. Every HTTP server of Stratus (gateway, API, runtime,
 * dev server) answers errors as `{ "error": { "code", "message", "requestId" } }` using these codes,
 * with the `x-stratus-error-source` header telling whether the platform or the function failed.
 *
 * Invariants: codes are UPPER_SNAKE_CASE and never renamed once released; `docs/errors.md` lists
 * every code (a test keeps the two in sync).
 */

/** Who failed: the platform itself, or the user's function (its code, limits or crash). */
export type ErrorSource = "platform" | "function";

interface ErrorSpec {
  readonly status: number;
  readonly source: ErrorSource;
  /** Default message; a thrown error may carry a more specific one. */
  readonly message: string;
}

export const ERROR_CODES = {
  INVALID_ARGUMENT: { status: 400, source: "platform", message: "The request is invalid" },
  INVALID_FUNCTION_NAME: { status: 400, source: "platform", message: "Invalid function name" },
  INVALID_CONFIG: { status: 400, source: "platform", message: "Invalid function configuration" },
  INVALID_ARCHIVE: { status: 400, source: "platform", message: "The uploaded archive is invalid" },
  INVALID_CLOUDEVENT: { status: 400, source: "function", message: "The request is not a valid CloudEvents 1.0 event (answered by an event function: defineEventFunction, functions-framework cloudEvent())" },
  UNAUTHENTICATED: { status: 401, source: "platform", message: "A valid bearer token is required" },
  JOIN_TOKEN_INVALID: { status: 401, source: "platform", message: "The join token is not one this control plane issued" },
  JOIN_TOKEN_EXPIRED: { status: 401, source: "platform", message: "The join token has expired" },
  JOIN_TOKEN_REVOKED: { status: 401, source: "platform", message: "The join token was revoked" },
  NODE_CREDENTIAL_INVALID: { status: 401, source: "platform", message: "The node credential is not valid" },
  NODE_CREDENTIAL_REVOKED: { status: 401, source: "platform", message: "The node was removed; its credential no longer works" },
  CONTROL_PLANE_UNVERIFIED: { status: 502, source: "platform", message: "The control plane's answer did not carry this node's control key proof" },
  PERMISSION_DENIED: { status: 403, source: "platform", message: "This token may not do that" },
  NOT_FOUND: { status: 404, source: "platform", message: "Not found" },
  FUNCTION_NOT_FOUND: { status: 404, source: "platform", message: "Function not found" },
  VERSION_NOT_FOUND: { status: 404, source: "platform", message: "Version not found" },
  METHOD_NOT_ALLOWED: { status: 405, source: "platform", message: "Method not allowed" },
  REQUEST_TIMEOUT: { status: 408, source: "platform", message: "The client was too slow to send the request" },
  CONFLICT: { status: 409, source: "platform", message: "Conflicting state" },
  IDEMPOTENCY_CONFLICT: { status: 409, source: "platform", message: "The Idempotency-Key was already used with a different request" },
  LEASE_LOST: { status: 409, source: "platform", message: "The job's lease expired or was taken over; the result was refused" },
  PAYLOAD_TOO_LARGE: { status: 413, source: "platform", message: "The request body is too large" },
  ARCHIVE_TOO_LARGE: { status: 413, source: "platform", message: "The uploaded archive is too large" },
  S3_NOTIFICATION_INVALID: { status: 400, source: "platform", message: "The bucket notification is not a valid S3 event message; nothing of it was enqueued" },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, source: "platform", message: "Unsupported content type" },
  BUILD_FAILED: { status: 422, source: "function", message: "The build failed" },
  UNSUPPORTED_LOCKFILE: { status: 422, source: "function", message: "The project's lockfile is not one Stratus installs from" },
  UNSUPPORTED_NODE_VERSION: { status: 422, source: "function", message: "The project needs a Node version this platform does not run" },
  BUILD_IMPORT_OUTSIDE_PROJECT: { status: 422, source: "function", message: "An import resolves outside the uploaded project" },
  TOO_MANY_AUTH_FAILURES: { status: 429, source: "platform", message: "Too many failed authentication attempts from this address; retry later" },
  API_RATE_LIMITED: { status: 429, source: "platform", message: "Too many API requests for this caller; retry later" },
  QUEUE_FULL: { status: 429, source: "platform", message: "Too many requests are waiting for this function" },
  HEADERS_TOO_LARGE: { status: 431, source: "platform", message: "Request headers are too large" },
  FUNCTION_ERROR: { status: 500, source: "function", message: "The function threw an error" },
  INTERNAL: { status: 500, source: "platform", message: "Internal error" },
  FUNCTION_CRASHED: { status: 502, source: "function", message: "The function instance crashed" },
  FUNCTION_OUT_OF_MEMORY: { status: 502, source: "function", message: "The function instance ran out of memory" },
  FUNCTION_LOAD_FAILED: { status: 502, source: "function", message: "The function failed to load" },
  ARTIFACT_DIGEST_MISMATCH: { status: 502, source: "platform", message: "A transferred artifact does not match its digest" },
  LB_RUNTIME_ERROR: { status: 502, source: "platform", message: "The load balancer's runtime API refused or failed" },
  INSTANCE_START_FAILED: { status: 503, source: "platform", message: "Could not start an instance" },
  QUEUE_TIMEOUT: { status: 503, source: "platform", message: "The request waited too long for an instance" },
  SHUTTING_DOWN: { status: 503, source: "platform", message: "The node is shutting down" },
  NOT_READY: { status: 503, source: "platform", message: "The platform is not ready" },
  UNAVAILABLE: { status: 503, source: "platform", message: "The platform could not be reached" },
  ASYNC_INTAKE_UNAVAILABLE: { status: 503, source: "platform", message: "The control plane could not be reached to commit the async invocation: it was not accepted (retry, with the same Idempotency-Key)" },
  POSTGRES_TRIGGER_UNUSABLE: { status: 503, source: "platform", message: "The PostgreSQL table-change trigger cannot stream from its database (privileges, wal_level, wal2json, the table or the slot): the message says what to fix" },
  TRIGGER_SECRET_MISSING: { status: 503, source: "platform", message: "The secret this trigger names is not set on the function; set it (stratus secrets set) and the sender's retry succeeds" },
  STORE_UNAVAILABLE: { status: 503, source: "platform", message: "The control plane's store (PostgreSQL) cannot be reached; retry later" },
  FUNCTION_TIMEOUT: { status: 504, source: "function", message: "The function did not answer within its timeout" },
  BUILD_STORAGE_ERROR: { status: 507, source: "platform", message: "The build host could not store the upload" },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** Guard for values read from the wire. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.hasOwn(ERROR_CODES, value);
}

/**
 * The typed error every Stratus module throws. Match on `code`, not on `instanceof`
 * (errors cross process and bundle boundaries).
 */
export class StratusError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly source: ErrorSource;
  /** Extra structured detail safe to show the caller (e.g. a list of config problems). */
  readonly details?: unknown;
  /** Extra response headers (e.g. Retry-After for QUEUE_FULL). */
  readonly headers?: Record<string, string>;

  constructor(
    code: ErrorCode,
    message?: string,
    options: { cause?: unknown; details?: unknown; headers?: Record<string, string> } = {},
  ) {
    const spec = ERROR_CODES[code];
    super(message ?? spec.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "StratusError";
    this.code = code;
    this.status = spec.status;
    this.source = spec.source;
    if (options.details !== undefined) this.details = options.details;
    if (options.headers !== undefined) this.headers = options.headers;
  }
}

/** True when `err` looks like a StratusError (duck-typed on `code`). */
export function isStratusError(err: unknown): err is StratusError {
  return typeof err === "object" && err !== null && isErrorCode((err as { code?: unknown }).code) &&
    typeof (err as { status?: unknown }).status === "number";
}

export interface ErrorBody {
  error: { code: ErrorCode; message: string; requestId?: string; details?: unknown };
}

/**
 * Maps any thrown value to the common error body. Unknown errors become a generic INTERNAL 500:
 * their message may hold secrets or paths, so the caller logs the cause and the client sees none of it.
 */
export function toErrorResponse(
  err: unknown,
  requestId?: string,
): { status: number; source: ErrorSource; body: ErrorBody; headers: Record<string, string> } {
  const e = isStratusError(err) ? err : new StratusError("INTERNAL");
  const body: ErrorBody = { error: { code: e.code, message: e.message } };
  if (requestId !== undefined) body.error.requestId = requestId;
  if (e.details !== undefined) body.error.details = e.details;
  return { status: e.status, source: e.source, body, headers: { ...(e.headers ?? {}) } };
}
