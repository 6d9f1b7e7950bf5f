/**
 * The protocol between the platform (gateway, drivers, dev server) and the instance runtime.
 * The function is always an HTTP server; the platform always speaks HTTP to it, over a Unix socket
 * whose directory the driver mounts into the sandbox.
 *
 * Start-up: the driver starts `node runtime.cjs` with a clean environment holding the ENV_* variables
 * below plus the function's own env. The runtime loads the module once, listens on the socket,
 * then prints the READY line on stdout. Everything else printed on stdout/stderr is function output.
 */

/** Environment variables the runtime reads (and removes from `process.env` before user code runs). */
export const ENV = {
  /** Unix socket path to listen on. */
  socket: "STRATUS_SOCKET",
  /** Absolute path of the built module to load. */
  entry: "STRATUS_ENTRY",
  /** Export name of the function to serve (see loader: `default` for a default export). */
  exportName: "STRATUS_EXPORT",
  /** Function name (for logs). */
  functionName: "STRATUS_FUNCTION",
  /** JSON of the resolved FunctionConfig (defaults applied). */
  config: "STRATUS_CONFIG",
  /** "1" in `stratus dev`: stacks are shown in error responses. */
  dev: "STRATUS_DEV",
  /** Instance id, for logs. */
  instanceId: "STRATUS_INSTANCE_ID",
  /**
   * "1": discovery mode. The runtime loads STRATUS_ENTRY, prints one DISCOVERY_PREFIX line listing the
   * module's functions and exits (EXIT.ok, or EXIT.loadFailed). It needs no socket and serves nothing.
   */
  discover: "STRATUS_DISCOVER",
  /**
   * "1": generic (pre-warmed) mode. The runtime starts with no function: it preloads its own server code,
   * prints GENERIC_READY_LINE, then reads exactly one SpecializeMessage from fd SPECIALIZE_FD up to its
   * first newline (or until EOF when none comes), closes that fd, applies the message and continues as a
   * normal start (load, listen, READY_LINE).
   * STRATUS_SOCKET is set at start; every other variable comes in the message.
   */
  generic: "STRATUS_GENERIC",
  /**
   * Generic mode only: the fd number to read the SpecializeMessage from, when not SPECIALIZE_FD (and no
   * ENV.specializeSocket is set). The process driver leaves it unset (fd 3).
   */
  specializeFd: "STRATUS_SPECIALIZE_FD",
  /**
   * Generic mode only: a Unix socket path (in the sandbox's socket dir) to receive the SpecializeMessage
   * on instead of an inherited fd. The runtime listens there before GENERIC_READY_LINE, accepts exactly
   * ONE connection, stops listening and removes the path at once, reads the message up to its first
   * newline (or to EOF when none comes) and closes the connection before any user code runs. The Docker driver uses it: a Unix socket in the bind-mounted
   * socket dir skips dockerd's attach stream (round trips through dockerd and containerd-shim).
   */
  specializeSocket: "STRATUS_SPECIALIZE_SOCKET",
} as const;

/**
 * The inherited fd a generic runtime reads its one SpecializeMessage from (then closes, before user code),
 * unless ENV.specializeFd names another one.
 */
export const SPECIALIZE_FD = 3;

/** Printed alone on a stdout line by a generic runtime once it waits for its SpecializeMessage. */
export const GENERIC_READY_LINE = "\u0000stratus:generic-ready";

/**
 * The one message that turns a generic runtime into one function's instance (JSON, sent once on
 * SPECIALIZE_FD, optionally followed by a newline — the runtime then stops reading there — and the sender
 * closes its end). Fields mirror the ENV variables of a fresh start.
 */
export interface SpecializeMessage {
  /** Absolute path of the module inside the sandbox. */
  readonly entry: string;
  readonly exportName: string;
  readonly functionName: string;
  /** The resolved FunctionConfig. */
  readonly config: unknown;
  readonly instanceId: string;
  /** The function's environment, applied to process.env before its module loads. */
  readonly env: Readonly<Record<string, string>>;
  /**
   * Optional: a path in the sandbox's socket dir where the runtime, once it listens, also announces READY
   * by creating a file (written aside and renamed into place) holding the READY line. The Docker driver
   * watches the dir (inotify) instead of waiting for the line to come back through dockerd's attach
   * stream. Like the READY line on stdout, it is a hint the function could forge (only against itself).
   */
  readonly readyFile?: string;
}

/**
 * Printed on a stdout line by the runtime once it listens, optionally followed by a space and
 * `{"initMs": <ms the module took to load>, "codeCache"?: CodeCacheState}` (drivers accept both forms).
 */
export const READY_LINE = "\u0000stratus:ready";

/**
 * Whether the runtime was compiled from a V8 code cache (src/runtime/boot.cjs, src/sandbox/code-cache.ts):
 * `accepted`, `rejected` by V8 (another Node, other flags, another bundle: compiled from source), or
 * `absent` (none given). Reported on the READY line when the runtime was started through its boot loader.
 */
export type CodeCacheState = "accepted" | "rejected" | "absent";
export const CODE_CACHE_STATES: readonly CodeCacheState[] = ["accepted", "rejected", "absent"];
/**
 * Prefix of a structured log line on stdout: the rest of the line is JSON
 * `{ "ts": epochMs, "level": "log"|"info"|"warn"|"error"|"debug", "rid"?: requestId, "msg": string }`.
 * Lines without the prefix are raw output (child processes, native code) and are kept untagged.
 */
export const LOG_PREFIX = "\u0000stratus:log ";

/**
 * Prefix of the one stdout line printed in discovery mode; the rest of the line is JSON
 * `{ "functions": [ { "name", "exportName", "config": <raw config>, "error"?: { code, message, details? }, "warnings"?: string[] } ],
 *    "error"?: { code, message } }` (top-level `error` when the module itself failed to load).
 */
export const DISCOVERY_PREFIX = "\u0000stratus:discovery ";

/**
 * `Symbol.for` key of the registry that the bundled `@google-cloud/functions-framework` shim
 * (src/builder/functions-framework-shim.ts) fills: a `Map<name, { kind: "http" | "cloudevent", handler }>`
 * on `globalThis`. The runtime reads it after the user's module has loaded (src/runtime/loader.ts).
 */
export const FUNCTIONS_FRAMEWORK_REGISTRY = "stratus.functions-framework.registry";

/** HTTP headers of the platform. Lower-case, as Node presents them. */
export const HEADERS = {
  requestId: "x-stratus-request-id",
  /** "platform" or "function": who produced an error response. */
  errorSource: "x-stratus-error-source",
  /** "true" when the request started a new instance. */
  coldStart: "x-stratus-cold-start",
  /** Set by the runtime on a response after which the instance must not be reused (e.g. a timeout). */
  instanceUnusable: "x-stratus-instance-unusable",
  /** Remaining time budget in ms the gateway grants the runtime (informational). */
  deadlineMs: "x-stratus-deadline-ms",
  /**
   * Set by the gateway only, on an error answered BEFORE the function ran (the request may be sent
   * again, elsewhere): `overload` (queue full), `queue-timeout`, `draining`, `start-failed`. Never
   * passed through from a function's response, so a function's own 503 never carries it.
   */
  reject: "x-stratus-reject",
  /** `async` on a client request: enqueue and answer 202 (docs/events.md). */
  invocationType: "x-stratus-invocation-type",
  /** Event headers the gateway forwards to the function only on the platform's own dispatches (docs/events.md). */
  invocationId: "x-stratus-invocation-id",
  attempt: "x-stratus-attempt",
  trigger: "x-stratus-trigger",
  /**
   * Control request of the gateway to an instance (never forwarded from a client: the gateway strips
   * every `x-stratus-*`): the request id of a request whose client disconnected. The runtime answers 204
   * with `requestState` once that request's handler finished, or after `awaitMs` (docs/gateway.md).
   */
  awaitRequest: "x-stratus-await-request",
  /** Longest wait of an `awaitRequest`, ms. */
  awaitMs: "x-stratus-await-ms",
  /** Answer to an `awaitRequest`: `finished`, `running` (still, after awaitMs) or `unusable`. */
  requestState: "x-stratus-request-state",
  /** Proves a request is the platform's async worker (a per-process secret, compared in constant time). */
  dispatchToken: "x-stratus-dispatch-token",
} as const;

/** The x-stratus-* headers a trusted dispatch passes to the function. */
export const EVENT_HEADERS: readonly string[] = [HEADERS.invocationId, HEADERS.attempt, HEADERS.trigger];

/** Exit codes of the runtime process. 137 (SIGKILL) and 134 (V8 heap OOM) come from elsewhere. */
export const EXIT = {
  /** Clean exit after SIGTERM drained. */
  ok: 0,
  /** An uncaught exception or unhandled rejection in user code. */
  crashed: 70,
  /** The module failed to load, or the export is missing / not a function. */
  loadFailed: 71,
  /** The runtime was started with a bad environment (platform bug). */
  badEnvironment: 72,
} as const;
