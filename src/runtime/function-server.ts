/**
 * The HTTP server of one instance: a real Express 5 app around the user's handler, with body limits,
 * the invocation deadline, return-value mapping, error mapping, request-id tagging, draining and crash
 * answers. Built separately from listening (`createFunctionServer` returns a server not yet listening).
 *
 * Invariants: `inFlight` holds exactly the requests whose handler has not finished: its response has not
 * finished, or the client left and the handler has not yet ended the response / settled its promise
 * (see "Disconnects" below); once `unusable` (a timeout, a crash) or draining, the server accepts no new
 * work and every later response says `connection: close`.
 *
 * Disconnects (docs/function-contract.md, "Client disconnects"): when the connection closes before the
 * response finished, `req.signal` aborts (Node itself makes `req` emit `aborted` and `close` for a request
 * whose body the handler has not read), the deadline keeps running, and the request stays in `inFlight`
 * until the handler calls `res.end()` (directly or through send/json/pipe) or its promise settles. The
 * gateway, which aborted the connection, asks over a fresh connection (HEADERS.awaitRequest) whether that
 * request's handler finished within its grace period, and reuses the instance only if it did.
 */
import http from "node:http";
import { parse as parseCookies } from "cookie";
import express, { type NextFunction, type Request, type Response } from "express";
import { StratusError, toErrorResponse } from "../shared/errors";
import type { FunctionConfig } from "../shared/function-config";
import { HEADERS } from "../shared/protocol";
import { pickRequestId } from "../shared/request-id";
import { writeError } from "../shared/write-error";
import type { RuntimeHandler } from "./loader";
import type { EmitLog } from "./output-capture";
import { requestContext } from "./request-context";
import { bufferBody, exposeBody, exposeNoBody, isBodyError } from "./request-body";


export interface FunctionServerOptions {
  readonly functionName: string;
  readonly handler: RuntimeHandler;
  readonly config: Readonly<FunctionConfig>;
  /** Show stacks of function errors in responses (`stratus dev`). Default false. */
  readonly dev?: boolean;
  /** Where the runtime's own log lines go. */
  readonly emit: EmitLog;
  /** Called once when the instance becomes unusable (a timeout): main drains and exits. */
  readonly onUnusable?: (reason: string) => void;
}

/** What `FunctionServer.detach`'s bind gives a server built before its function was known (a pre-warm slot). */
export type BoundFunction = Pick<FunctionServerOptions, "functionName" | "handler" | "config" | "dev" | "onUnusable">;

export interface FunctionServer {
  /** Not yet listening. */
  readonly server: http.Server;
  /**
   * For a pre-warm slot, whose server is built and warmed up (with a throwaway handler) before its function is
   * known: from now on, requests are held (not answered, not counted in flight) until the returned function
   * binds the server to its one function, which then serves them in arrival order and every later one. Both
   * work once: a second `detach`, or a second bind, throws. Throws too while a request is in flight, or once
   * draining or unusable (the caller then builds a new server).
   */
  detach(): (fn: BoundFunction) => void;
  /** Requests whose response has not finished. */
  inFlight(): number;
  /**
   * Stops accepting (new connections, and new requests on kept-alive ones get 503 SHUTTING_DOWN), lets
   * in-flight requests finish (each is bounded by its own deadline), then closes every connection.
   * Idempotent; resolves when drained.
   */
  drain(): Promise<void>;
  /**
   * Answers every in-flight request 502 FUNCTION_CRASHED (best effort) and resolves once those answers
   * are flushed, or after `maxWaitMs` (default 1000).
   */
  answerCrash(maxWaitMs?: number): Promise<void>;
}

interface InFlight {
  readonly req: Request;
  readonly res: Response;
  readonly requestId: string;
  /** When the deadline passes (performance.now() ms). */
  readonly deadline: number;
  /** The deadline passed and was handled (onDeadline ran). */
  timedOut: boolean;
  /** The connection closed before the response finished. */
  abandoned: boolean;
  /** The handler's promise settled (false for a handler that returned anything else). */
  settled: boolean;
  /** Out of `inFlight` (exactly once). */
  finished: boolean;
  /** Control requests waiting for this handler to finish (HEADERS.awaitRequest); null when none. */
  awaiting: Array<() => void> | null;
}

/** Per-request abort state on the IncomingMessage (symbols: nothing a handler could collide with). */
const ABORT_CONTROLLER = Symbol("stratus.abortController");
const ABORT_REASON = Symbol("stratus.abortReason");
type AbortableRequest = http.IncomingMessage & { [ABORT_CONTROLLER]?: AbortController; [ABORT_REASON]?: unknown };

/** The servers whose requests have a `signal` (one per process in an instance; tests may build more). */
const signalServers = new WeakSet<http.Server>();

/** Longest wait a control request may ask for (HEADERS.awaitMs), ms. */
const MAX_AWAIT_MS = 600_000;

/**
 * `req.signal`: an AbortSignal that aborts when the client disconnects before the response finished
 * (reason: a DOMException `AbortError`) or at the function's deadline (`TimeoutError`). Created on first
 * read, so a request that never reads it pays nothing. Defined on IncomingMessage.prototype, not on
 * Express's request prototype, so that it also reaches a function's own Express app (which swaps the
 * prototype of `req` for its own, still inheriting from IncomingMessage). `undefined` on messages that
 * are not a function server's requests (the responses of user code's own outgoing requests). Assigning
 * `req.signal` replaces it with the assigned value.
 */
function installRequestSignal(): void {
  const proto = http.IncomingMessage.prototype as unknown as Record<string, unknown>;
  if (Object.getOwnPropertyDescriptor(proto, "signal") !== undefined) return;
  Object.defineProperty(proto, "signal", {
    configurable: true,
    enumerable: false,
    get(this: AbortableRequest): AbortSignal | undefined {
      let controller = this[ABORT_CONTROLLER];
      if (controller === undefined) {
        const reason = this[ABORT_REASON];
        if (reason === undefined && !signalServers.has((this.socket as { server?: http.Server } | null)?.server as http.Server)) return undefined;
        controller = new AbortController();
        if (reason !== undefined) controller.abort(reason);
        this[ABORT_CONTROLLER] = controller;
      }
      return controller.signal;
    },
    set(this: AbortableRequest, value: unknown) {
      Object.defineProperty(this, "signal", { value, writable: true, enumerable: true, configurable: true });
    },
  });
}

/** Aborts `req.signal` (now, or when it is first read) with `reason`; the first reason wins. */
function abortRequest(req: http.IncomingMessage, reason: unknown): void {
  const r = req as AbortableRequest;
  if (r[ABORT_REASON] !== undefined) return;
  r[ABORT_REASON] = reason;
  r[ABORT_CONTROLLER]?.abort(reason);
}

function sendError(res: Response, err: StratusError, requestId: string, extraHeaders?: Record<string, string>): void {
  writeError(res, err, requestId, extraHeaders);
}

/**
 * True for `/favicon.ico` and `/robots.txt` (any method, any query), which never reach the function: the
 * runtime answers 404 with an empty body, as functions-framework does for HTTP functions.
 */
export function isIgnoredPath(url: string | undefined): boolean {
  if (url === undefined || url.length < 11 || url.charCodeAt(0) !== 47 /* / */) return false;
  const q = url.indexOf("?");
  const path = q === -1 ? url : url.slice(0, q);
  return path === "/favicon.ico" || path === "/robots.txt";
}

/**
 * True when a function error's body should be text: unless the caller's Accept, negotiated between
 * `text/plain` and `application/json`, ranks JSON strictly first. Ties, any-type, `text/html`, headers
 * naming neither and no Accept at all go to text, as Cloud Functions answers a crash.
 */
function prefersText(req: Request): boolean {
  // No Accept (supertest, many server-side clients): text, as Cloud Functions answers a crash. Ties go to
  // the first listed: text, so `*/*` is text and `application/json, text/plain` is JSON.
  return req.accepts(["text/plain", "application/json"]) !== "application/json";
}

/**
 * A function error as text: `CODE: message (request id)` (and in dev the stack), same status and platform
 * headers. The gateway reads the leading code for the invocation record, as it reads a JSON body's.
 */
function sendTextError(res: Response, err: StratusError, requestId: string, stack: string | undefined): void {
  const r = toErrorResponse(err, requestId);
  res.status(r.status);
  res.set({ ...r.headers, [HEADERS.errorSource]: r.source, "content-type": "text/plain; charset=utf-8" });
  res.send(`${r.body.error.code}: ${r.body.error.message} (request ${requestId})\n${stack === undefined ? "" : `${stack}\n`}`);
}

function isPromiseLike(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === "object" || typeof v === "function") && typeof (v as { then?: unknown }).then === "function";
}

/** The in-flight entry of a response (read by the one shared `close` listener). */
const ITEM = Symbol("stratus.inFlight");
type ResponseWithItem = Response & { [ITEM]?: InFlight };
/** Set on a request the fast path hands to the full Express app: what its handler passed to `next`. */
const HANDED_BACK = Symbol("stratus.handedBack");
type HandedBack = Request & { [HANDED_BACK]?: { err: unknown } };

/** Set on a response whose handler's promise resolved `undefined` before anything was sent (for the timeout log). */
const RESOLVED_UNANSWERED = Symbol("stratus.resolvedUnanswered");

/**
 * Turns a handler's return value into the response, unless the handler already answered.
 * `undefined` (returned, or resolved by a promise) is never a response: as on Cloud Functions, which
 * ignores an HTTP handler's return value, the function answers through `res` later (a callback, an Express
 * app called without `await`, Firebase's `onRequest` wrapper) or the deadline answers 504.
 */
function applyReturnValue(res: Response, value: unknown, fromPromise: boolean): void {
  // A stream piped into res has not sent headers yet, but it is answering.
  if (res.headersSent || res.writableEnded || res.listenerCount("unpipe") > 0) return;
  if (value === undefined) {
    if (fromPromise) (res as unknown as Record<symbol, boolean>)[RESOLVED_UNANSWERED] = true;
    return;
  }
  if (typeof value === "string") {
    if (!res.get("content-type")) res.type("text/plain; charset=utf-8");
    res.send(value);
  } else if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
    res.send(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
  } else {
    res.json(value);
  }
}

/**
 * Builds the instance server for one function.
 * Per request: request id from `x-stratus-request-id` (generated if absent, echoed back); body buffered
 * (bounded by `config.maxBodyBytes`) and given back to the stream unread, `req.rawBody` its bytes, `req.body`
 * parsed by content-type on first read (JSON, urlencoded, text/*, anything else raw Buffer; `{}` without a body);
 * deadline `config.timeout` ms, after which the caller gets 504 FUNCTION_TIMEOUT with
 * `x-stratus-instance-unusable: 1` and `onUnusable` is called.
 */
export function createFunctionServer(options: FunctionServerOptions): FunctionServer {
  const { emit } = options;
  // What `detach`'s bind replaces, once (a pre-warm slot's server is built around a throwaway handler).
  let { handler, config, functionName, dev, onUnusable } = options;
  let limit = config.maxBodyBytes;
  /** Held requests while detached (null: not detached, or bound again). */
  let held: Array<[http.IncomingMessage, http.ServerResponse]> | null = null;
  let detached = false;
  const inFlight = new Set<InFlight>();
  let draining = false;
  let unusable = false;
  let drained: Promise<void> | undefined;
  let onIdle: (() => void) | undefined;

  installRequestSignal();

  /** Takes a request out of `inFlight` (once) and answers the control requests waiting for it. */
  function finishItem(item: InFlight): void {
    if (item.finished) return;
    item.finished = true;
    inFlight.delete(item);
    if (item.awaiting !== null) for (const wake of item.awaiting) wake();
    if (inFlight.size === 0) {
      deadlineTimer?.unref();
      onIdle?.();
    }
  }

  /**
   * The connection closed before the response finished: abort `req.signal`, and keep the request in
   * flight until its handler ends the response or its promise settles (whichever comes first). A promise
   * that settled before the disconnect without answering (RESOLVED_UNANSWERED) does not count: the
   * handler answers later through `res`, so only `res.end()` does.
   */
  function abandon(item: InFlight): void {
    item.abandoned = true;
    const res = item.res;
    const end = res.end;
    // An own `end` on this one response: every way of answering (send, json, pipe, end) ends up here.
    res.end = function (this: Response, ...args: unknown[]) {
      finishItem(item);
      return (end as (...a: unknown[]) => Response).apply(this, args);
    } as Response["end"];
    abortRequest(item.req, new DOMException("The client disconnected", "AbortError"));
  }

  /**
   * A control request of the gateway (HEADERS.awaitRequest = a request id): answers 204 with
   * HEADERS.requestState `finished` once no request with that id is in flight (at once when none is),
   * `running` if one still is after HEADERS.awaitMs, `unusable` when the instance must not be reused.
   * Never reaches the function, never counts as a request; only the gateway can send it (it strips every
   * `x-stratus-*` header of its clients).
   */
  function answerAwait(req: http.IncomingMessage, res: http.ServerResponse, requestId: string): void {
    let target: InFlight | undefined;
    for (const item of inFlight) {
      if (item.requestId === requestId) {
        target = item;
        break;
      }
    }
    let answered = false;
    const reply = (state: string): void => {
      if (answered) return;
      answered = true;
      res.writeHead(204, { [HEADERS.requestState]: unusable ? "unusable" : state });
      res.end();
    };
    if (target === undefined) return reply("finished");
    const waitMs = Math.min(MAX_AWAIT_MS, Math.max(0, Number(req.headers[HEADERS.awaitMs]) || 0));
    const found = target;
    const timer = setTimeout(() => {
      found.awaiting?.splice(found.awaiting.indexOf(wake), 1);
      reply("running");
    }, waitMs);
    const wake = (): void => {
      clearTimeout(timer);
      reply("finished");
    };
    (found.awaiting ??= []).push(wake);
  }

  const app = express();
  app.disable("x-powered-by");
  // No automatic ETag: hashing every res.send body showed as 5–10 % of the runtime's CPU per small request in a CPU profile
  // (bench: runtime alone, 50 connections). A function that sets ETag/Last-Modified still gets 304s
  // from Express's freshness check (docs/function-contract.md).
  app.set("etag", false);
  app.set("query parser", "extended");
  // One trusted hop: the gateway, the only peer that can reach this socket. req.ip is the address the
  // gateway appended to X-Forwarded-For (not one a client wrote before it); req.protocol / req.hostname
  // come from the X-Forwarded-Proto / -Host the gateway sets. Computed only when read.
  app.set("trust proxy", 1);
  // Vercel's req.cookies: the Cookie header parsed on first read (then a plain property), {} without one.
  // On the prototype, so a request that never reads it pays nothing; an app of the function's own (an
  // Express app swaps the prototype) or cookie-parser assigning req.cookies replaces it.
  Object.defineProperty(app.request, "cookies", {
    configurable: true,
    enumerable: true,
    get(this: Request) {
      const header = this.headers.cookie;
      const value = header ? parseCookies(header) : {};
      Object.defineProperty(this, "cookies", { value, writable: true, enumerable: true, configurable: true });
      return value;
    },
    set(this: Request, value: unknown) {
      Object.defineProperty(this, "cookies", { value, writable: true, enumerable: true, configurable: true });
    },
  });

  /**
   * The request's one pass through the platform's part: request id, refusals while draining, ignored
   * paths, then the deadline, the disconnect watch and the request context around the handler. Called
   * straight from the HTTP server (the fast path, see `server` below) or, for a request the fast path
   * handed back to Express, as the app's first middleware, which then passes it on.
   */
  function enter(req: Request, res: Response, next: NextFunction): void {
    const requestId = pickRequestId(req.headers);
    res.setHeader(HEADERS.requestId, requestId);
    if (draining || unusable) {
      res.setHeader("connection", "close");
      sendError(res, new StratusError("SHUTTING_DOWN", "This instance is shutting down"), requestId);
      return;
    }
    if (isIgnoredPath(req.url)) {
      // As Cloud Functions' default ignored routes: browsers and crawlers, not callers, ask for these.
      res.statusCode = 404;
      res.setHeader(HEADERS.errorSource, "platform");
      res.end();
      return;
    }
    const item: InFlight = { req, res, requestId, deadline: performance.now() + config.timeout, timedOut: false, abandoned: false, settled: false, finished: false, awaiting: null };
    inFlight.add(item);
    if (deadlineTimer === undefined) armDeadline(config.timeout);
    else if (inFlight.size === 1) deadlineTimer.ref();
    // No closure per request: the close listener finds the item on res.
    (res as ResponseWithItem)[ITEM] = item;
    res.on("close", onResponseClose);
    requestContext.run({ requestId }, parseThenInvoke, req, res, next, item);
  }

  /**
   * Deadlines without a timer per request: every request of this server has the same timeout, so
   * `inFlight` (a Set: insertion order) is also deadline order, and one timer due at the oldest entry's
   * deadline is enough. When it fires it handles every entry whose deadline passed, then re-arms for the
   * oldest left; an entry that finished meanwhile is simply no longer there (nothing to clear per request).
   */
  let deadlineTimer: NodeJS.Timeout | undefined;
  function armDeadline(ms: number): void {
    // Ref'd only while a request is in flight (as a per-request timer was: a handler left running after
    // its client went and the server closed still gets its deadline); a timer left armed after the last
    // request finished (it fires once and finds nothing) must not keep the process alive.
    deadlineTimer = setTimeout(onDeadlineTimer, Math.max(1, Math.ceil(ms)));
    if (inFlight.size === 0) deadlineTimer.unref();
  }
  function onDeadlineTimer(): void {
    deadlineTimer = undefined;
    for (const item of inFlight) {
      if (item.timedOut) continue;
      const left = item.deadline - performance.now();
      if (left > 0) {
        armDeadline(left);
        return;
      }
      item.timedOut = true;
      onDeadline(item);
    }
  }

  /** The function's deadline passed with `item` still in flight. */
  function onDeadline(item: InFlight): void {
    const { req, res, requestId } = item;
    const hint = (res as unknown as Record<symbol, boolean>)[RESOLVED_UNANSWERED]
      ? ": its promise resolved undefined without sending a response (an async handler must answer through res, or return the body)"
      : "";
    emit("error", `Function "${functionName}" did not answer within its timeout (${config.timeout} ms)${item.abandoned ? " (its client had disconnected)" : ""}${hint}`, requestId);
    unusable = true;
    abortRequest(req, new DOMException(`The function's timeout (${config.timeout} ms) passed`, "TimeoutError"));
    if (item.abandoned) {
      finishItem(item);
    } else if (!res.headersSent) {
      sendError(res, new StratusError("FUNCTION_TIMEOUT", `The function did not answer within its timeout (${config.timeout} ms)`), requestId, {
        [HEADERS.instanceUnusable]: "1",
        connection: "close",
      });
    } else {
      res.destroy();
    }
    onUnusable?.("timeout");
  }

  /** `close` of a response (once per response): finished, or its client left before it finished. */
  function onResponseClose(this: Response): void {
    const item = (this as ResponseWithItem)[ITEM];
    if (item === undefined || item.finished) return;
    // writableEnded: the handler called end() and only the flush was cut; the handler is done.
    if (this.writableFinished || this.writableEnded || (item.settled && (this as unknown as Record<symbol, boolean>)[RESOLVED_UNANSWERED] !== true)) {
      finishItem(item);
      return;
    }
    abandon(item);
  }

  app.use((req: Request, res: Response, next: NextFunction) => {
    // A request the fast path handed back (its handler called next): already entered, pass it on.
    const handedBack = (req as HandedBack)[HANDED_BACK];
    if (handedBack !== undefined) {
      (req as HandedBack)[HANDED_BACK] = undefined;
      next(handedBack.err);
      return;
    }
    enter(req, res, next);
  });

  // The body is buffered, then given back to the request stream unread (request-body.ts): handlers that
  // read the stream themselves and handlers that read req.body / req.rawBody both work.
  function parseThenInvoke(req: Request, res: Response, next: NextFunction, item: InFlight): void {
    if (req.headers["content-length"] === undefined && req.headers["transfer-encoding"] === undefined) {
      exposeNoBody(req);
      invoke(req, res, next, item);
      return;
    }
    bufferBody(req, limit, (raw) => {
      if (raw === null) {
        next(new StratusError("PAYLOAD_TOO_LARGE", `The request body is larger than this function's maxBodyBytes (${limit} bytes)`));
        return;
      }
      // Zero bytes and no content-type (a POST without a body): the same as no body at all.
      if (raw.length === 0 && req.headers["content-type"] === undefined) exposeNoBody(req);
      else exposeBody(req, raw, limit);
      // The last chunk arrives in the HTTP parser's callback, outside the request's context: enter it
      // again, or the handler's output loses its request id (it did for every request with a body).
      requestContext.run({ requestId: item.requestId }, invoke, req, res, next, item);
    });
  }

  function invoke(req: Request, res: Response, next: NextFunction, item: InFlight): void {
    let result: unknown;
    try {
      result = handler(req, res, next);
    } catch (err) {
      next(new FunctionFailure(err));
      return;
    }
    if (isPromiseLike(result)) {
      Promise.resolve(result).then(
        (value) => {
          if (settle(item)) applyReturnValue(res, value, true);
        },
        (err: unknown) => {
          if (settle(item)) next(new FunctionFailure(err));
          else emit("error", `Function "${functionName}" threw after its client disconnected: ${err instanceof Error ? (err.stack ?? String(err)) : safeString(err)}`, item.requestId);
        },
      );
    } else {
      applyReturnValue(res, result, false);
    }
  }

  /**
   * Notes that the handler's promise settled; false when its client had already left (the request is then
   * finished: nobody is there to receive a return value, a thrown error is still logged).
   */
  function settle(item: InFlight): boolean {
    item.settled = true;
    if (!item.abandoned) return true;
    finishItem(item);
    return false;
  }

  // A router handler that matched nothing calls next(): the function has no such route.
  app.use((req: Request, res: Response) => {
    sendError(res, new StratusError("NOT_FOUND", `The function has no route for ${req.method} ${req.path}`), ctxId(res));
  });

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const requestId = ctxId(res);
    if (err instanceof StratusError) {
      if (err.code === "PAYLOAD_TOO_LARGE") res.setHeader("connection", "close");
      sendError(res, err, requestId);
      return;
    }
    const cause = err instanceof FunctionFailure ? err.cause : err;
    // The function read a req.body that does not parse: the caller's fault, said by the platform.
    if (isBodyError(cause)) {
      sendError(res, cause, requestId);
      return;
    }
    const stack = cause instanceof Error ? (cause.stack ?? String(cause)) : `Non-error thrown: ${safeString(cause)}`;
    emit("error", `Function "${functionName}" threw: ${stack}`, requestId);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const details = dev ? { stack } : undefined;
    const message = dev && cause instanceof Error ? `The function threw an error: ${cause.message}` : undefined;
    const error = new StratusError("FUNCTION_ERROR", message, { details });
    if (prefersText(req)) sendTextError(res, error, requestId, dev ? stack : undefined);
    else sendError(res, error, requestId);
  });

  /**
   * The fast path: what Express's `app.handle` and its router do before they reach the first middleware
   * (circular req/res references, the app's request/response prototypes, `res.locals`, `req.next`,
   * `req.baseUrl`, `req.originalUrl`, `req.params`), then the platform's part and the handler straight
   * away, without the router's per-request dispatch (its layer matching, URL parsing and closures: 6–10 %
   * of the runtime's CPU for a small request in a CPU profile). Only when the handler calls `next` (no
   * route of its own matched, or an error) — or the platform's part throws — does the request go through
   * the full app, whose first middleware passes it on (HANDED_BACK) to the not-found and error handlers
   * as Express's router would: `next()` and `next('route')` reach not-found, `next(err)` the error
   * handler, `next('router')` Express's final handler.
   */
  const appRequest = app.request;
  const appResponse = app.response;
  // The HTTP server builds its requests and responses with Express's prototypes already in place (the
  // constructors below are Node's own, run with the app's prototypes), so the per-request
  // Object.setPrototypeOf of Express's `app.handle` — which gives every req/res a map of its own and
  // leaves Node's HTTP internals and Express's methods megamorphic — finds nothing to change.
  const AppRequest = function (this: http.IncomingMessage, socket: import("node:net").Socket) {
    http.IncomingMessage.call(this, socket);
  } as unknown as typeof http.IncomingMessage;
  AppRequest.prototype = appRequest;
  const AppResponse = function (this: http.ServerResponse, req: http.IncomingMessage, opts?: unknown) {
    (http.ServerResponse as unknown as (this: http.ServerResponse, req: http.IncomingMessage, opts?: unknown) => void).call(this, req, opts);
  } as unknown as typeof http.ServerResponse;
  AppResponse.prototype = appResponse as unknown as http.ServerResponse;
  function handOver(req: Request, res: Response, err: unknown): void {
    (req as HandedBack)[HANDED_BACK] = { err };
    app(req, res);
  }
  function fastHandle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const r = req as Request;
    const s = res as Response;
    (r as { res: Response }).res = s;
    (s as { req: Request }).req = r;
    if (Object.getPrototypeOf(req) !== appRequest) Object.setPrototypeOf(req, appRequest);
    if (Object.getPrototypeOf(res) !== appResponse) Object.setPrototypeOf(res, appResponse);
    if (!s.locals) s.locals = Object.create(null) as Response["locals"];
    const next = (err?: unknown): void => handOver(r, s, err);
    r.next = next;
    r.baseUrl = "";
    r.originalUrl = req.url!;
    r.params = {};
    try {
      enter(r, s, next);
    } catch (err) {
      handOver(r, s, err);
    }
  }

  const server = http.createServer({ IncomingMessage: AppRequest, ServerResponse: AppResponse }, (req, res) => {
    const awaited = req.headers[HEADERS.awaitRequest];
    if (awaited !== undefined) return answerAwait(req, res, String(awaited));
    if (held !== null) {
      // Detached (a slot waiting for its function): served once bound, bounded by the slot's own life
      // (Node's requestTimeout answers a request held longer than 300 s).
      held.push([req, res]);
      return;
    }
    if (draining || unusable) res.shouldKeepAlive = false;
    fastHandle(req, res);
  });
  signalServers.add(server);
  // Keep-alive from the gateway's pool must outlive its idle timeout, not the other way round.
  server.keepAliveTimeout = 65_000;

  const drain = (): Promise<void> => {
    if (drained) return drained;
    draining = true;
    drained = new Promise<void>((resolve) => {
      const finish = () => {
        server.closeAllConnections();
        resolve();
      };
      server.close();
      server.closeIdleConnections();
      if (inFlight.size === 0) finish();
      else onIdle = finish;
    });
    return drained;
  };

  const answerCrash = (maxWaitMs = 1000): Promise<void> => {
    unusable = true;
    const waits: Promise<void>[] = [];
    for (const { res, requestId, abandoned } of inFlight) {
      if (abandoned) continue; // its connection is gone: nobody to answer
      if (res.headersSent) {
        res.destroy();
        continue;
      }
      waits.push(new Promise<void>((resolve) => res.once("close", () => resolve())));
      sendError(res, new StratusError("FUNCTION_CRASHED", "The function instance crashed (an uncaught exception or unhandled rejection)"), requestId, {
        [HEADERS.instanceUnusable]: "1",
        connection: "close",
      });
    }
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, maxWaitMs);
      void Promise.all(waits).then(() => {
        clearTimeout(t);
        resolve();
      });
    });
  };

  const detach = (): ((fn: BoundFunction) => void) => {
    if (detached) throw new Error("the function server was already detached once");
    if (inFlight.size > 0 || draining || unusable) throw new Error("the function server cannot be detached now (requests in flight, draining or unusable)");
    detached = true;
    held = [];
    let bound = false;
    return (fn: BoundFunction): void => {
      if (bound) throw new Error("the function server was already bound");
      bound = true;
      ({ handler, config, functionName, dev, onUnusable } = fn);
      limit = config.maxBodyBytes;
      // The warm-up's deadline timer was armed for its own timeout: the next request arms one for this config's.
      clearTimeout(deadlineTimer);
      deadlineTimer = undefined;
      const waiting = held ?? [];
      held = null;
      for (const [req, res] of waiting) {
        if (req.destroyed) continue;
        if (draining || unusable) res.shouldKeepAlive = false;
        fastHandle(req, res);
      }
    };
  };

  return { server, inFlight: () => inFlight.size, drain, answerCrash, detach };
}

/** Wraps what the user's handler threw, so the error handler tells it apart from platform errors. */
class FunctionFailure extends Error {
  constructor(cause: unknown) {
    super("function failure", { cause });
  }
}

function ctxId(res: Response): string {
  return String(res.getHeader(HEADERS.requestId) ?? "");
}

function safeString(v: unknown): string {
  try {
    return typeof v === "string" ? v : JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}
