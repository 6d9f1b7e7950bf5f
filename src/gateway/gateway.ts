/**
 * The node agent's HTTP front door: routes `ANY /fn/<name>/<path…>` to an instance of the function,
 * through its pool (src/gateway/function-pool.ts) and the proxy (src/gateway/proxy.ts).
 *
 * Hot path: an index scan for the route, a Map lookup for the precomputed per-function state, a
 * warm instance from the top of a stack, one undici request. No regex, no URL parsing, no timer per
 * request (queue deadlines ride the one shared sweep timer; the backstop rides undici's shared timers),
 * and the per-request child logger is only built when something is logged.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { availableParallelism, hostname } from "node:os";
import { timingSafeEqual } from "node:crypto";
import type { SandboxDriver } from "../sandbox/driver";
import { StratusError, isStratusError, type ErrorCode } from "../shared/errors";
import { EVENT_FIELD_MAX, type InvocationRecord } from "../shared/invocation";
import type { Logger } from "../shared/logger";
import { isValidFunctionName } from "../shared/names";
import { HEADERS } from "../shared/protocol";
import { renderError, writeError } from "../shared/write-error";
import { resolveTraceparent } from "../shared/traceparent";
import type { Deployment } from "./deployment";
import { FunctionPool, type Lease, type PendingLease } from "./function-pool";
import { MemorySampler } from "./memory-sampler";
import { CpuIdle } from "./cpu-idle";
import type { GatewayObserver } from "../shared/gateway-observer";
import { pickRequestId, serverTiming } from "./headers";
import { resolveGatewayLimits, type GatewayLimitsInput } from "./limits";
import { proxyRequest, type BodyMode, type ProxyMeter, type ProxyParams, type ProxyResult } from "./proxy";
import { parseFunctionRoute } from "./route";
import { settleAbandoned } from "./abandoned";
import { cidrMatcher } from "../shared/cidr";

/**
 * Access check for non-public functions: resolve to allow, throw a StratusError (UNAUTHENTICATED,
 * PERMISSION_DENIED) to refuse. Never called for public functions.
 */
export type AuthorizeHook = (req: IncomingMessage, deployment: Deployment) => void | Promise<void>;

export interface GatewayOptions {
  readonly driver: SandboxDriver;
  readonly logger: Logger;
  /** Server and timer limits; every field has a default (see src/gateway/limits.ts). */
  readonly limits?: GatewayLimitsInput;
  /** Default: deny every non-public function with 401 UNAUTHENTICATED. */
  readonly authorize?: AuthorizeHook;
  /** Receives invocation records, instance output and lifecycle events (default: none; output goes to the logger). */
  readonly observer?: GatewayObserver;
  /** Names this node in invocation records (default: the host name). */
  readonly nodeId?: string;
  /**
   * Answers requests outside `/fn/…` on the same server (the control plane's API in `stratus up`), so
   * the gateway's limits (header size, slow clients) and drain protect both. Default: 404 NOT_FOUND.
   */
  readonly fallback?: (req: IncomingMessage, res: ServerResponse) => void;
  /**
   * Peers whose forwarding headers (`x-forwarded-*`, `forwarded`, `x-real-ip`) are believed: CIDRs or
   * addresses of the load balancers in front (default none: the gateway is the edge and replaces them).
   * @see buildUpstreamHeaders
   */
  readonly trustedProxies?: readonly string[];
  /**
   * Async invocations (docs/events.md): a request with `x-stratus-invocation-type: async` to a known
   * function, once authorized, is handed here (which reads the body, enqueues it and answers 202)
   * instead of being proxied. Default: none (such requests run synchronously).
   */
  readonly asyncIntake?: AsyncIntakeHook;
  /**
   * Secret of the platform's async worker: a request whose `x-stratus-dispatch-token` equals it skips
   * authorization (the job was authorized when it was accepted) and passes the event headers
   * (`x-stratus-invocation-id`, `-attempt`, `-trigger`) to the function. Default: none.
   */
  readonly dispatchToken?: string;
  /**
   * Like `dispatchToken`, for a secret that changes (the node agent: the desired state carries its
   * sha256): true when `given` is the worker's token. Checked when `dispatchToken` is not set.
   */
  readonly isDispatchToken?: (given: string) => boolean;
}

/** What the gateway hands an async intake: the function and the request's routing facts. */
export interface AsyncTarget {
  readonly deployment: Deployment;
  /** Path + query below the function root. */
  readonly path: string;
  readonly requestId: string;
}
export type AsyncIntakeHook = (req: IncomingMessage, res: ServerResponse, target: AsyncTarget) => void;

export interface Gateway {
  /** The HTTP server, not listening: the caller calls `listen`. */
  readonly server: Server;
  /**
   * Deploys or updates a function. A new version takes every new request; idle instances of the
   * old one close now, busy ones after their request. @throws StratusError INVALID_FUNCTION_NAME
   */
  setFunction(deployment: Deployment): void;
  /** Stops routing to a function (404 from now on) and closes its instances gracefully. */
  removeFunction(name: string): Promise<void>;
  /**
   * Soft drain for a load balancer: while false, `/readyz` answers 404 (HAProxy's `disable-on-404`
   * stops sending new work: the node's functions move to its ring neighbours) but requests that still
   * arrive are served. `drain()` implies it. Default true.
   */
  setAccepting(accepting: boolean): void;
  /** Pool counters per function, for tests and metrics. */
  stats(): Record<string, ReturnType<FunctionPool["stats"]>>;
  /** Requests admitted to a pool (queued or proxied) whose end has not been recorded yet; 0 when idle. */
  inFlight(): number;
  /**
   * Graceful stop: new requests get 503 SHUTTING_DOWN with `Connection: close`, in-flight and queued
   * requests finish within `deadlineMs` (a duration, ms), then every instance is closed and the
   * server stops. Idempotent.
   */
  drain(deadlineMs: number): Promise<void>;
  /** Immediate stop: kills every instance, fails waiters, closes every connection. Idempotent. */
  close(): Promise<void>;
}

interface FunctionEntry {
  readonly pool: FunctionPool;
  deployment: Deployment;
  dropAuthorization: boolean;
}

const denyNonPublic: AuthorizeHook = () => {
  throw new StratusError("UNAUTHENTICATED");
};

const NO_TIMING = serverTiming(0, 0, 0);
const CLOSE = { connection: "close" } as const;
/** Headers of every error the gateway itself answers: no instance served it. */
const PLATFORM_HEAD = { [HEADERS.coldStart]: "false", "server-timing": NO_TIMING } as const;

/**
 * `x-stratus-reject` for the codes that refuse a request before the function ran (see HEADERS.reject).
 * Only these, and only where the gateway answers them before proxying.
 */
const REJECT_REASONS: Partial<Record<ErrorCode, string>> = {
  QUEUE_FULL: "overload",
  QUEUE_TIMEOUT: "queue-timeout",
  SHUTTING_DOWN: "draining",
  INSTANCE_START_FAILED: "start-failed",
};

/** True for `/readyz` and `/readyz?…`. */
function isReadyzPath(url: string): boolean {
  return url.startsWith("/readyz") && (url.length === 7 || url.charCodeAt(7) === 63 /* ? */);
}

/** Builds the gateway (see the file comment). Nothing listens and no timer runs until a function is set. */
export function createGateway(options: GatewayOptions): Gateway {
  const limits = resolveGatewayLimits(options.limits);
  const { driver, logger } = options;
  const authorize = options.authorize ?? denyNonPublic;
  const functions = new Map<string, FunctionEntry>();
  let draining = false;
  let accepting = true;
  let closed = false;
  let inFlight = 0;
  let onIdle: (() => void) | null = null;
  let ticker: NodeJS.Timeout | null = null;
  const observer = options.observer ?? null;
  const fallback = options.fallback ?? null;
  const asyncIntake = options.asyncIntake ?? null;
  const fixedToken = options.dispatchToken === undefined ? null : Buffer.from(options.dispatchToken);
  const dispatchCheck = options.isDispatchToken ?? null;
  const dispatchToken = fixedToken ?? dispatchCheck;
  const isDispatch = (given: string | string[] | undefined): boolean => {
    if (typeof given !== "string") return false;
    if (fixedToken === null) return dispatchCheck !== null && dispatchCheck(given);
    const b = Buffer.from(given);
    return b.length === fixedToken.length && timingSafeEqual(b, fixedToken);
  };
  const nodeId = options.nodeId ?? hostname();
  const memory = new MemorySampler();
  // The node's idle CPU, sampled on the sweep tick: the pools' scale-out check above their width floor.
  const cpuIdle = new CpuIdle(availableParallelism());
  const idleCores = (): number => cpuIdle.idleCores();
  const isTrustedProxy = cidrMatcher(options.trustedProxies ?? []);
  const retryAfter = String(limits.retryAfterS);

  const server = createServer({
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: limits.connectionsCheckingIntervalMs,
  });
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    try {
      handle(req, res);
    } catch (err) {
      unexpected(err, res);
    }
  });
  // One more than allowed: Node drops header lines past maxHeadersCount, so "more than the limit" is visible.
  server.maxHeadersCount = limits.maxHeaderCount + 1;
  server.on("clientError", onClientError);
  server.on("connect", onConnect);

  function sweep(): void {
    const now = performance.now();
    cpuIdle.sample();
    for (const entry of functions.values()) entry.pool.sweep(now);
  }

  function ensureTicker(): void {
    if (ticker !== null || closed) return;
    ticker = setInterval(sweep, limits.sweepIntervalMs);
    ticker.unref(); // never the reason the process stays alive
  }

  function unexpected(err: unknown, res: ServerResponse): void {
    logger.error({ err }, "gateway request handler failed");
    if (!res.headersSent) sendError(res, err, "unknown", logger);
    else res.destroy();
  }

  // The warm path is synchronous from the request event to undici's dispatch: no async function, no
  // Promise, one Invocation object (which is also the proxy's parameter object) and one closure.
  function handle(req: IncomingMessage, res: ServerResponse): void {
    const t0 = observer === null ? 0 : performance.now();
    const requestId = pickRequestId(req.headers);
    const url = req.url ?? "/";
    if (url.charCodeAt(1) === 114 /* r */ && isReadyzPath(url) && (draining || !accepting || fallback === null)) {
      return readyz(res, draining || !accepting, requestId);
    }
    if (draining) return reject(res, new StratusError("SHUTTING_DOWN"), requestId, CLOSE);
    // TRACE echoes the request (cookies, tokens) back — cross-site tracing; TRACK is IIS's alias.
    // Refused for the API and every function alike (CONNECT never gets here: see onConnect).
    if (req.rawHeaders.length > 2 * limits.maxHeaderCount) return sendError(res, new StratusError("HEADERS_TOO_LARGE", `More than ${limits.maxHeaderCount} header lines`), requestId, logger, CLOSE);
    const method = req.method;
    if (method === "TRACE" || method === "TRACK") return sendError(res, new StratusError("METHOD_NOT_ALLOWED", `${method} is not allowed`), requestId, logger, CLOSE);
    const route = parseFunctionRoute(url);
    if (route === null) {
      if (fallback !== null) return fallback(req, res);
      return sendError(res, new StratusError("NOT_FOUND"), requestId, logger);
    }
    if (!isValidFunctionName(route.name)) return sendError(res, new StratusError("INVALID_FUNCTION_NAME"), requestId, logger);
    const entry = functions.get(route.name);
    if (entry === undefined) {
      return sendError(res, new StratusError("FUNCTION_NOT_FOUND", `Function "${route.name}" not found`), requestId, logger);
    }
    const trace = resolveTraceparent(req.headers.traceparent);
    const inv = new Invocation(req, res, entry, route.path, requestId, trace.traceparent, trace.fresh, t0, limits, logger);
    if (isTrustedProxy !== null) inv.trustedProxy = isTrustedProxy(req.socket.remoteAddress);
    if (dispatchToken !== null && req.headers[HEADERS.dispatchToken] !== undefined) {
      if (!isDispatch(req.headers[HEADERS.dispatchToken])) return sendError(res, new StratusError("UNAUTHENTICATED", "Bad dispatch token"), requestId, logger);
      inv.trustedDispatch = true;
      return admit(inv);
    }
    if (asyncIntake !== null && req.headers[HEADERS.invocationType] === "async") return accept(inv);
    if (entry.deployment.config.public) return admit(inv);
    // Non-public: the hook may be async (a store lookup); any throw or rejection refuses.
    authorizeThen(inv, admit);
  }

  /** Async: authorized like a synchronous call, then handed to the intake. */
  function accept(inv: Invocation): void {
    const intake = asyncIntake as AsyncIntakeHook;
    const go = (i: Invocation) => intake(i.req, i.res, { deployment: i.deployment, path: i.path, requestId: i.requestId });
    if (inv.deployment.config.public) return go(inv);
    authorizeThen(inv, go);
  }

  function authorizeThen(inv: Invocation, next: (inv: Invocation) => void): void {
    const { req, res } = inv;
    new Promise<void>((resolve) => resolve(authorize(req, inv.deployment))).then(
      () => next(inv),
      (err: unknown) => {
        fail(inv, err);
        record(inv);
      },
    ).catch((err: unknown) => unexpected(err, res));
  }

  /** Body checks, then a warm lease at once or a place in the queue. */
  function admit(inv: Invocation): void {
    const { req, res } = inv;
    const contentLength = req.headers["content-length"];
    if (contentLength !== undefined) {
      // Node's parser already refused a malformed Content-Length.
      const n = Number(contentLength);
      if (n > inv.deployment.config.maxBodyBytes) {
        fail(inv, new StratusError("PAYLOAD_TOO_LARGE"), CLOSE);
        return record(inv);
      }
      if (n > 0) inv.bodyMode = "fixed";
    } else if (req.headers["transfer-encoding"] !== undefined) {
      inv.bodyMode = "counted";
    }

    inFlight++;
    const pool = inv.entry.pool;
    const lease = pool.tryAcquire();
    if (lease !== null) return proxy(inv, lease);
    let pending: PendingLease;
    try {
      pending = pool.wait();
    } catch (err) {
      fail(inv, err, rejectHeaders(err));
      return end(inv);
    }
    const cancel = (): void => pending.cancel();
    res.once("close", cancel);
    pending.promise.then(
      (lease) => {
        res.off("close", cancel);
        if (req.socket?.destroyed ?? true) {
          // The client left while it waited: the instance never saw the request, keep it.
          pool.release(lease, "reuse");
          return end(inv);
        }
        proxy(inv, lease);
      },
      (err: unknown) => {
        res.off("close", cancel);
        // Every rejection here came before the function saw the request.
        if (!(req.socket?.destroyed ?? true)) fail(inv, err, rejectHeaders(err));
        end(inv);
      },
    ).catch((err: unknown) => {
      unexpected(err, res);
      end(inv);
    });
  }

  function proxy(inv: Invocation, lease: Lease): void {
    inv.lease = lease;
    try {
      proxyRequest(inv, lease, (result) => proxied(inv, lease, result));
    } catch (err) {
      // A bug, not the instance's fault: give the instance back unharmed.
      inv.entry.pool.release(lease, "reuse");
      unexpected(err, inv.res);
      end(inv);
    }
  }

  function proxied(inv: Invocation, lease: Lease, result: ProxyResult): void {
    const pool = inv.entry.pool;
    if (result.outcome === "abandoned" && limits.disconnectGraceMs === 0) {
      pool.release(lease, "retire"); // the round-one behaviour (bench baseline): never reuse after a disconnect
    } else if (result.outcome === "abandoned") {
      // The lease stays held until the handler finished or its grace passed; the request itself ends now.
      void settleAbandoned(lease, inv.requestId, limits.disconnectGraceMs).then((outcome) => {
        if (outcome === "destroy") inv.log().warn({ instance: lease.slot.instance.id, graceMs: limits.disconnectGraceMs }, "handler still running after its client disconnected; destroying the instance");
        pool.release(lease, outcome);
      });
    } else {
      pool.release(lease, result.outcome);
    }
    inv.meter = result.meter;
    if (result.error !== undefined) {
      fail(inv, result.error, {
        ...result.error.headers,
        [HEADERS.coldStart]: lease.coldStart ? "true" : "false",
        "server-timing": serverTiming(lease.queueMs, lease.startMs, 0),
      });
    }
    end(inv);
  }

  /**
   * Headers of a pre-execution refusal: `x-stratus-reject: <reason>` for the codes in REJECT_REASONS
   * (with the Retry-After the error carries); undefined for anything else.
   */
  function rejectHeaders(err: unknown): Record<string, string> | undefined {
    if (!isStratusError(err)) return undefined;
    const reason = REJECT_REASONS[err.code];
    return reason === undefined ? undefined : { [HEADERS.reject]: reason, "retry-after": retryAfter };
  }

  /** A refusal answered before routing (draining). */
  function reject(res: ServerResponse, err: StratusError, requestId: string, extra: Record<string, string>): void {
    sendErrorResponse(res, err, requestId, logger, { ...extra, ...rejectHeaders(err) });
  }

  /** `/readyz` for a load balancer's health check: 200 accepting, 404 draining (HAProxy: NOLB). */
  function readyz(res: ServerResponse, isDraining: boolean, requestId: string): void {
    const body = isDraining ? '{"ok":false,"state":"draining"}' : '{"ok":true,"state":"ready"}';
    res.writeHead(isDraining ? 404 : 200, {
      "content-type": "application/json; charset=utf-8",
      "content-length": Buffer.byteLength(body),
      "cache-control": "no-store",
      [HEADERS.requestId]: requestId,
    });
    res.end(body);
  }

  /** Answers an error for this invocation and notes it for the record. */
  function fail(inv: Invocation, err: unknown, extra?: Record<string, string>): void {
    const status = limits.queueFullStatus !== 429 && isStratusError(err) && err.code === "QUEUE_FULL" ? limits.queueFullStatus : undefined;
    const sent = sendErrorResponse(inv.res, err, inv.requestId, isStratusError(err) ? logger : inv.log(), extra, status);
    if (isStratusError(err)) inv.errorCode = err.code;
    if (sent !== null) {
      inv.errorCode = sent.code;
      inv.errorBytes = sent.bytes;
    }
  }

  function end(inv: Invocation): void {
    inFlight--;
    record(inv);
    if (inFlight === 0 && onIdle !== null) onIdle();
  }

  /** Emits the invocation record once the request ended (only with an observer). */
  function record(inv: Invocation): void {
    if (observer === null) return;
    const lease = inv.lease;
    const m = inv.meter;
    const deployment = inv.deployment;
    const res = inv.res;
    const r: Mutable<InvocationRecord> = {
      requestId: inv.requestId,
      functionName: deployment.name,
      version: lease?.slot.deployment.version ?? deployment.version,
      instanceId: lease?.slot.instance.id ?? null,
      nodeId,
      coldStart: lease?.coldStart ?? false,
      queueMs: lease?.queueMs ?? 0,
      startMs: lease?.startMs ?? 0,
      initMs: lease?.coldStart ? lease.slot.instance.initMs : null,
      handlerMs: m?.handlerMs ?? 0,
      totalMs: performance.now() - inv.t0,
      status: res.headersSent ? res.statusCode : 0,
      errorCode: inv.errorCode ?? m?.errorCode ?? null,
      bytesIn: m?.bytesIn ?? 0,
      bytesOut: (m?.bytesOut ?? 0) + inv.errorBytes,
      peakMemoryBytes: null,
      traceparent: inv.traceparent,
      ts: Date.now() - (performance.now() - inv.t0),
      trigger: null,
      eventId: null,
      attempt: null,
    };
    // Only the platform's own dispatches (a valid token) may say which trigger, event and attempt this was.
    if (inv.trustedDispatch) {
      const h = inv.req.headers;
      r.trigger = eventField(h[HEADERS.trigger]);
      r.eventId = eventField(h["ce-id"]);
      const attempt = Number(h[HEADERS.attempt]);
      r.attempt = Number.isSafeInteger(attempt) && attempt > 0 ? attempt : null;
    }
    if (lease === null) return observer.onInvocation(r);
    // Peak memory is sampled at most once a second per instance: in between, the record goes out now.
    const cached = memory.cached(lease.slot.instance);
    if (cached !== undefined) {
      r.peakMemoryBytes = cached;
      return observer.onInvocation(r);
    }
    void memory.peak(lease.slot.instance).then((peakMemoryBytes) => {
      r.peakMemoryBytes = peakMemoryBytes;
      observer.onInvocation(r);
    });
  }

  /**
   * `CONNECT host:port` (a tunnel request): the gateway is never a forward proxy. Node hands these to a
   * `connect` listener instead of `request`; without one it would drop the socket silently.
   */
  function onConnect(_req: IncomingMessage, socket: Socket): void {
    writeRawError(socket, new StratusError("METHOD_NOT_ALLOWED", "CONNECT is not allowed: the gateway is not a proxy"), "Method Not Allowed");
  }

  /** Answers on a raw socket (no ServerResponse exists) with the common error body, then closes it. */
  function writeRawError(socket: Socket, err: StratusError, reason: string): string {
    const requestId = pickRequestId({});
    // No ServerResponse exists for a request that never parsed: the shared head, written by hand.
    const r = renderError(err, requestId, { ...PLATFORM_HEAD, connection: "close" });
    let head = `HTTP/1.1 ${r.status} ${reason}\r\n`;
    for (const name in r.headers) head += `${name}: ${r.headers[name]}\r\n`;
    socket.end(`${head}\r\n${r.body}`);
    return requestId;
  }

  function onClientError(err: Error & { code?: string }, socket: Socket): void {
    // A response already under way on this socket (a slow body upload) must not get a second head.
    const current = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (!socket.writable || err.code === "ECONNRESET" || (current != null && current.headersSent)) {
      socket.destroy();
      return;
    }
    let code: ErrorCode = "INVALID_ARGUMENT";
    let reason = "Bad Request";
    if (err.code === "HPE_HEADER_OVERFLOW") {
      code = "HEADERS_TOO_LARGE";
      reason = "Request Header Fields Too Large";
    } else if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
      code = "REQUEST_TIMEOUT";
      reason = "Request Timeout";
    }
    const message = code === "INVALID_ARGUMENT" ? "Malformed HTTP request" : undefined;
    const requestId = writeRawError(socket, new StratusError(code, message), reason);
    logger.debug({ code: err.code, rid: requestId }, "client error");
  }

  function waitIdle(deadline: number): Promise<void> {
    if (inFlight === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, Math.max(0, deadline - Date.now()));
      function done(): void {
        clearTimeout(timer);
        onIdle = null;
        resolve();
      }
      onIdle = done;
    });
  }

  function stopTicker(): void {
    if (ticker !== null) clearInterval(ticker);
    ticker = null;
  }

  function stopServer(): Promise<void> {
    return new Promise<void>((resolve) => {
      if (!server.listening) {
        server.closeAllConnections();
        resolve();
        return;
      }
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  let drained: Promise<void> | null = null;

  return {
    server,
    setFunction(deployment) {
      if (!isValidFunctionName(deployment.name)) throw new StratusError("INVALID_FUNCTION_NAME");
      if (draining) throw new StratusError("SHUTTING_DOWN");
      const entry = functions.get(deployment.name);
      if (observer !== null && entry?.deployment.version !== deployment.version) {
        observer.onPlatformEvent({
          ts: Date.now(), functionName: deployment.name, kind: "version-activated", level: "info", instanceId: null, requestId: null,
          message: `version ${deployment.version} activated${entry === undefined ? "" : ` (was ${entry.deployment.version})`}`,
        });
      }
      if (entry === undefined) {
        functions.set(deployment.name, {
          pool: new FunctionPool({
            deployment, driver, logger, retryAfterS: limits.retryAfterS, idleCores,
            ...(observer === null ? {} : {
              onInstanceLog: (line) => observer.onInstanceLog(deployment.name, line),
              onEvent: (event) => observer.onPlatformEvent(event),
            }),
          }),
          deployment,
          dropAuthorization: !deployment.config.public,
        });
      } else {
        entry.deployment = deployment;
        entry.dropAuthorization = !deployment.config.public;
        entry.pool.setDeployment(deployment);
      }
      ensureTicker();
    },
    async removeFunction(name) {
      const entry = functions.get(name);
      if (entry === undefined) return;
      functions.delete(name);
      await entry.pool.close(entry.deployment.config.timeout);
    },
    inFlight: () => inFlight,
    setAccepting(value) {
      accepting = value;
    },
    stats() {
      const out: Record<string, ReturnType<FunctionPool["stats"]>> = {};
      for (const [name, entry] of functions) out[name] = entry.pool.stats();
      return out;
    },
    drain(deadlineMs) {
      if (drained !== null) return drained;
      draining = true;
      const deadline = Date.now() + deadlineMs;
      server.closeIdleConnections();
      drained = (async () => {
        await waitIdle(deadline);
        stopTicker();
        const graceMs = Math.max(0, deadline - Date.now());
        await Promise.all([...functions.values()].map((e) => (graceMs > 0 ? e.pool.close(graceMs) : e.pool.destroy())));
        await stopServer();
      })();
      return drained;
    },
    async close() {
      draining = true;
      closed = true;
      stopTicker();
      await Promise.all([...functions.values()].map((e) => e.pool.destroy()));
      await stopServer();
    },
  };
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * One request to a known function, from routing to its record; also the proxy's parameters, so the
 * warm path allocates one object for both.
 */
class Invocation implements ProxyParams {
  bodyMode: BodyMode = "none";
  lease: Lease | null = null;
  meter: ProxyMeter | null = null;
  errorCode: string | null = null;
  errorBytes = 0;
  trustedProxy = false;
  trustedDispatch = false;
  readonly deployment: Deployment;
  readonly dropAuthorization: boolean;
  readonly timeoutGraceMs: number;
  readonly crashWaitMs: number;
  private logger: Logger | null = null;

  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly entry: FunctionEntry,
    readonly path: string,
    readonly requestId: string,
    readonly traceparent: string,
    readonly freshTrace: boolean,
    /** performance.now() at arrival; 0 without an observer (nothing reads it then). */
    readonly t0: number,
    limits: { timeoutGraceMs: number; crashWaitMs: number },
    private readonly root: Logger,
  ) {
    this.deployment = entry.deployment;
    this.dropAuthorization = entry.dropAuthorization;
    this.timeoutGraceMs = limits.timeoutGraceMs;
    this.crashWaitMs = limits.crashWaitMs;
  }

  /** The per-request child logger, built only when something is logged. */
  log(): Logger {
    this.logger ??= this.root.child({ rid: this.requestId, fn: this.deployment.name });
    return this.lease === null ? this.logger : this.logger.child({ instance: this.lease.slot.instance.id });
  }
}

/** A trusted dispatch's trigger / event id header as recorded: null when absent, cut to EVENT_FIELD_MAX. */
function eventField(v: string | string[] | undefined): string | null {
  const s = Array.isArray(v) ? v[0] : v;
  return s === undefined || s === "" ? null : s.slice(0, EVENT_FIELD_MAX);
}

function sendError(res: ServerResponse, err: unknown, requestId: string, log: Logger, extra?: Record<string, string>): void {
  sendErrorResponse(res, err, requestId, log, extra);
}

/**
 * Writes the common error body (src/shared/write-error.ts) with the gateway's timing headers, which
 * `extra` may override; destroys the response if a head went out. Returns the code and body size
 * sent, or null when nothing could be sent.
 */
function sendErrorResponse(res: ServerResponse, err: unknown, requestId: string, log: Logger, extra?: Record<string, string>, status?: number): { code: string; bytes: number } | null {
  if (!isStratusError(err)) log.error({ err, rid: requestId }, "internal error");
  return writeError(res, err, requestId, extra === undefined ? PLATFORM_HEAD : { ...PLATFORM_HEAD, ...extra }, status);
}
