/**
 * What the platform records about every request it runs (the invocation record) and every line of a
 * function's log stream. Shared by the gateway (which produces them), src/observe/ (which batches,
 * counts and publishes them) and the store (which keeps them). Times are epoch ms unless named `…Ms`
 * (a duration in ms).
 */

/** Longest `trigger` / `eventId` an invocation record carries (the gateway cuts longer ones), characters. */
export const EVENT_FIELD_MAX = 512;

/** One request through the gateway to a known function, written once the request ended. */
export interface InvocationRecord {
  readonly requestId: string;
  readonly functionName: string;
  /** Version that served it (the deployed one when no instance was involved). */
  readonly version: string;
  /** Instance that ran it; null when the request never reached one (queue full, 401, 413 up front…). */
  readonly instanceId: string | null;
  /** The node (machine) whose gateway handled it. */
  readonly nodeId: string;
  /** True when the request waited for the instance it ran on to start. */
  readonly coldStart: boolean;
  /** Waiting for capacity, excluding the instance start, ms. */
  readonly queueMs: number;
  /** Start of the instance (cold starts only, else 0), ms. */
  readonly startMs: number;
  /** Module load time inside the instance, ms, when the runtime reports it (null: not reported). */
  readonly initMs: number | null;
  /** From sending the request to the instance until its response ended, ms (0 when none was reached). */
  readonly handlerMs: number;
  /** From the gateway receiving the request until the response ended, ms. */
  readonly totalMs: number;
  /** HTTP status sent to the client (0 when the connection was cut before a status was sent). */
  readonly status: number;
  /** Stable error code (src/shared/errors.ts) when the request failed, else null. */
  readonly errorCode: string | null;
  /** Request body bytes received. */
  readonly bytesIn: number;
  /** Response body bytes sent. */
  readonly bytesOut: number;
  /** Peak memory of the instance's sandbox, bytes, sampled at most once a second per instance (null: unknown). */
  readonly peakMemoryBytes: number | null;
  /** W3C traceparent sent to the function (the caller's when valid, else a new one). */
  readonly traceparent: string;
  /**
   * The trigger whose event this was (`<fn>#<index>:<hash>`, `x-stratus-trigger`), the event's CloudEvents
   * id (`ce-id`) and the attempt (1-based, `x-stratus-attempt`) — set only on requests the platform's
   * async worker dispatched (a valid dispatch token): a client cannot make a record claim them.
   * `attempt` is set on every dispatched async invocation, `trigger` and `eventId` on events. Null otherwise.
   */
  readonly trigger: string | null;
  readonly eventId: string | null;
  readonly attempt: number | null;
  /** When the gateway received the request, epoch ms. */
  readonly ts: number;
}

/** Who wrote a log line: the function (its output) or the platform (lifecycle events, REPORT lines). */
export const LOG_SOURCES = ["function", "platform"] as const;
export type LogSource = (typeof LOG_SOURCES)[number];

/** Levels of the log stream, lowest first; queries filter with "this level or above". */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
export type LogLevelName = (typeof LOG_LEVELS)[number];
export function isLogLevelName(v: unknown): v is LogLevelName {
  return typeof v === "string" && (LOG_LEVELS as readonly string[]).includes(v);
}

/** Maps a runtime level (`log` is console.log) or anything unknown to a stream level. */
export function normalizeLevel(level: string): LogLevelName {
  if (level === "log") return "info";
  return isLogLevelName(level) ? level : "info";
}

/** One line of a function's log stream, as written. */
export interface LogEntry {
  readonly ts: number;
  readonly functionName: string;
  readonly level: LogLevelName;
  readonly source: LogSource;
  /** stdout / stderr for function output; null for platform lines. */
  readonly stream: "stdout" | "stderr" | null;
  readonly requestId: string | null;
  readonly instanceId: string | null;
  readonly message: string;
}

/** A stored log line: `seq` increases with every line written (use it to page). */
export interface StoredLogEntry extends LogEntry {
  readonly seq: number;
}

/** One failure to fold into its error group. */
export interface ErrorOccurrence {
  readonly functionName: string;
  readonly fingerprint: string;
  readonly code: string;
  /** The normalized message shape (numbers, ids, hex replaced). */
  readonly messageShape: string;
  /** Top stack frame of the function's code, when the runtime logged a stack. */
  readonly topFrame: string | null;
  readonly requestId: string;
  readonly ts: number;
}

/** Failures of one function that share a fingerprint. */
export interface ErrorGroup {
  readonly functionName: string;
  readonly fingerprint: string;
  readonly code: string;
  readonly messageShape: string;
  readonly topFrame: string | null;
  readonly count: number;
  readonly firstSeen: number;
  readonly lastSeen: number;
  /** The most recent request id of the group. */
  readonly sampleRequestId: string;
}

/** Lifecycle events the platform writes into a function's log stream (`source: "platform"`). */
export const PLATFORM_EVENT_KINDS = [
  "instance-started", "instance-start-failed", "instance-reaped", "instance-stopped", "instance-crashed",
  "instance-out-of-memory", "invocation-timed-out", "version-activated",
] as const;
export type PlatformEventKind = (typeof PLATFORM_EVENT_KINDS)[number];

/** One platform event about a function. */
export interface PlatformEvent {
  readonly ts: number;
  readonly functionName: string;
  readonly kind: PlatformEventKind;
  readonly level: LogLevelName;
  readonly instanceId: string | null;
  readonly requestId: string | null;
  /** Human text, e.g. `instance 3fa… started in 52 ms (cold start)`. */
  readonly message: string;
}
