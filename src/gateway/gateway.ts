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
import { hostname } from "node:os";
import type { SandboxDriver } from "../sandbox/driver";
import { StratusError, isStratusError, toErrorResponse, type ErrorCode } from "../shared/errors";
import type { Logger } from "../shared/logger";
import { isValidFunctionName } from "../shared/names";
import { HEADERS } from "../shared/protocol";
import { resolveTraceparent } from "../observe/traceparent";
import type { Deployment } from "./deployment";
import { FunctionPool, type Lease } from "./function-pool";
import { MemorySampler } from "./memory-sampler";
import type { GatewayObserver } from "./observer-hook";
import { pickRequestId, serverTiming } from "./headers";
import { resolveGatewayLimits, type GatewayLimitsInput } from "./limits";
import { proxyRequest, type BodyMode, type ProxyMeter } from "./proxy";
import { parseFunctionRoute } from "./route";

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
}

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
  /** Pool counters per function, for tests and metrics. */
  stats(): Record<string, ReturnType<FunctionPool["stats"]>>;
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

/** Builds the gateway (see the file comment). Nothing listens and no timer runs until a function is set. */
export function createGateway(options: GatewayOptions): Gateway {
  const limits = resolveGatewayLimits(options.limits);
  const { driver, logger } = options;
  const authorize = options.authorize ?? denyNonPublic;
  const functions = new Map<string, FunctionEntry>();
  let draining = false;
  let closed = false;
  let inFlight = 0;
  let onIdle: (() => void) | null = null;
  let ticker: NodeJS.Timeout | null = null;
  const observer = options.observer ?? null;
  const fallback = options.fallback ?? null;
  const nodeId = options.nodeId ?? hostname();
  const memory = new MemorySampler();

  const server = createServer({
    maxHeaderSize: limits.maxHeaderSize,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: limits.connectionsCheckingIntervalMs,
  });
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((err: unknown) => {
      logger.error({ err }, "gateway request handler failed");
      if (!res.headersSent) sendError(res, err, "unknown", logger);
      else res.destroy();
    });
  });
  server.on("clientError", onClientError);

  function sweep(): void {
    const now = performance.now();
    for (const entry of functions.values()) entry.pool.sweep(now);
  }

  function ensureTicker(): void {
    if (ticker !== null || closed) return;
    ticker = setInterval(sweep, limits.tickMs);
    ticker.unref(); // never the reason the process stays alive
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const requestId = pickRequestId(req.headers);
    if (draining) return sendError(res, new StratusError("SHUTTING_DOWN"), requestId, logger, CLOSE);
    const route = parseFunctionRoute(req.url ?? "/");
    if (route === null) {
      if (fallback !== null) return fallback(req, res);
      return sendError(res, new StratusError("NOT_FOUND"), requestId, logger);
    }
    if (!isValidFunctionName(route.name)) return sendError(res, new StratusError("INVALID_FUNCTION_NAME"), requestId, logger);
    const entry = functions.get(route.name);
    if (entry === undefined) {
      return sendError(res, new StratusError("FUNCTION_NOT_FOUND", `Function "${route.name}" not found`), requestId, logger);
    }
    const deployment = entry.deployment;
    let log: Logger | null = null;
    const getLog = (): Logger => (log ??= logger.child({ rid: requestId, fn: route.name }));
    if (observer === null) return serve(req, res, entry, deployment, route.path, requestId, getLog, null);
    const draft: Draft = { ts: Date.now() - (performance.now() - t0), t0, errorCode: null, lease: null, meter: null, traceparent: "" };
    try {
      await serve(req, res, entry, deployment, route.path, requestId, getLog, draft);
    } finally {
      record(res, deployment, requestId, draft);
    }
  }

  /** Emits the invocation record once the request ended; peak memory is sampled off the response path. */
  function record(res: ServerResponse, deployment: Deployment, requestId: string, d: Draft): void {
    const lease = d.lease;
    const m = d.meter;
    const base = {
      requestId,
      functionName: deployment.name,
      version: lease?.slot.deployment.version ?? deployment.version,
      instanceId: lease?.slot.instance.id ?? null,
      nodeId,
      coldStart: lease?.coldStart ?? false,
      queueMs: lease?.queueMs ?? 0,
      startMs: lease?.startMs ?? 0,
      initMs: lease?.coldStart ? lease.slot.instance.initMs : null,
      handlerMs: m?.handlerMs ?? 0,
      totalMs: performance.now() - d.t0,
      status: res.headersSent ? res.statusCode : 0,
      errorCode: d.errorCode ?? m?.errorCode ?? null,
      bytesIn: m?.bytesIn ?? 0,
      bytesOut: m === null ? d.errorBytes ?? 0 : m.bytesOut + (d.errorBytes ?? 0),
      traceparent: d.traceparent,
      ts: d.ts,
    };
    if (lease === null) {
      observer!.onInvocation({ ...base, peakMemoryBytes: null });
      return;
    }
    void memory.peak(lease.slot.instance).then((peakMemoryBytes) => observer!.onInvocation({ ...base, peakMemoryBytes }));
  }

  async function serve(
    req: IncomingMessage, res: ServerResponse, entry: FunctionEntry, deployment: Deployment, path: string,
    requestId: string, getLog: () => Logger, draft: Draft | null,
  ): Promise<void> {
    const sendError = (res: ServerResponse, err: unknown, requestId: string, log: Logger, extra?: Record<string, string>): void => {
      const sent = sendErrorResponse(res, err, requestId, log, extra);
      if (draft !== null && sent !== null) {
        draft.errorCode = sent.code;
        draft.errorBytes = sent.bytes;
      }
    };
    const trace = resolveTraceparent(req.headers.traceparent);
    if (draft !== null) draft.traceparent = trace.traceparent;

    if (!deployment.config.public) {
      try {
        await authorize(req, deployment);
      } catch (err) {
        return sendError(res, err, requestId, getLog());
      }
    }

    let bodyMode: BodyMode = "none";
    const contentLength = req.headers["content-length"];
    if (contentLength !== undefined) {
      // Node's parser already refused a malformed Content-Length.
      const n = Number(contentLength);
      if (n > deployment.config.maxBodyBytes) return sendError(res, new StratusError("PAYLOAD_TOO_LARGE"), requestId, logger, CLOSE);
      if (n > 0) bodyMode = "fixed";
    } else if (req.headers["transfer-encoding"] !== undefined) {
      bodyMode = "counted";
    }

    inFlight++;
    try {
      let lease: Lease | null = entry.pool.tryAcquire();
      if (lease === null) {
        const pending = entry.pool.wait();
        const cancel = (): void => pending.cancel();
        res.once("close", cancel);
        try {
          lease = await pending.promise;
        } finally {
          res.off("close", cancel);
        }
        if (req.socket.destroyed) {
          // The client left while it waited: the instance never saw the request, keep it.
          entry.pool.release(lease, "reuse");
          return;
        }
      }
      if (draft !== null) draft.lease = lease;
      const slot = lease.slot;
      const result = await proxyRequest({
        req,
        res,
        lease,
        path,
        requestId,
        bodyMode,
        dropAuthorization: entry.dropAuthorization,
        traceparent: trace.traceparent,
        freshTrace: trace.fresh,
        timeoutGraceMs: limits.timeoutGraceMs,
        crashWaitMs: limits.crashWaitMs,
        log: () => getLog().child({ instance: slot.instance.id }),
      });
      entry.pool.release(lease, result.outcome);
      if (draft !== null) {
        draft.meter = result.meter;
        if (result.error !== undefined) draft.errorCode = result.error.code;
      }
      if (result.error !== undefined) {
        sendError(res, result.error, requestId, getLog(), {
          ...result.error.headers,
          [HEADERS.coldStart]: lease.coldStart ? "true" : "false",
          "server-timing": serverTiming(lease.queueMs, lease.startMs, 0),
        });
      }
    } catch (err) {
      if (!req.socket.destroyed) sendError(res, err, requestId, getLog());
    } finally {
      inFlight--;
      if (inFlight === 0 && onIdle !== null) onIdle();
    }
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
    const requestId = pickRequestId({});
    const message = code === "INVALID_ARGUMENT" ? "Malformed HTTP request" : undefined;
    const r = toErrorResponse(new StratusError(code, message), requestId);
    const body = JSON.stringify(r.body);
    socket.end(
      `HTTP/1.1 ${r.status} ${reason}\r\n` +
        "content-type: application/json; charset=utf-8\r\n" +
        `content-length: ${Buffer.byteLength(body)}\r\n` +
        "connection: close\r\n" +
        `${HEADERS.requestId}: ${requestId}\r\n` +
        `${HEADERS.errorSource}: ${r.source}\r\n` +
        `${HEADERS.coldStart}: false\r\n` +
        `server-timing: ${NO_TIMING}\r\n\r\n` +
        body,
    );
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
            deployment, driver, logger, retryAfterS: limits.retryAfterS,
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

/** An invocation being measured (only when an observer is set). */
interface Draft {
  readonly ts: number;
  readonly t0: number;
  errorCode: string | null;
  errorBytes?: number;
  lease: Lease | null;
  meter: ProxyMeter | null;
  traceparent: string;
}

function sendError(res: ServerResponse, err: unknown, requestId: string, log: Logger, extra?: Record<string, string>): void {
  sendErrorResponse(res, err, requestId, log, extra);
}

/**
 * Writes the common error body with the platform headers; destroys the response if a head went out.
 * Returns the code and body size sent, or null when nothing could be sent.
 */
function sendErrorResponse(res: ServerResponse, err: unknown, requestId: string, log: Logger, extra?: Record<string, string>): { code: string; bytes: number } | null {
  if (!isStratusError(err)) log.error({ err, rid: requestId }, "internal error");
  if (res.headersSent) {
    res.destroy();
    return null;
  }
  if (res.destroyed) return null;
  const r = toErrorResponse(err, requestId);
  const body = JSON.stringify(r.body);
  res.writeHead(r.status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(body),
    [HEADERS.requestId]: requestId,
    [HEADERS.errorSource]: r.source,
    [HEADERS.coldStart]: "false",
    "server-timing": NO_TIMING,
    ...r.headers,
    ...extra,
  });
  res.end(body);
  return { code: r.body.error.code, bytes: Buffer.byteLength(body) };
}
