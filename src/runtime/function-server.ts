/**
 * The HTTP server of one instance: a real Express 5 app around the user's handler, with body limits,
 * the invocation deadline, return-value mapping, error mapping, request-id tagging, draining and crash
 * answers. Built separately from listening (`createFunctionServer` returns a server not yet listening).
 *
 * Invariants: `inFlight` holds exactly the requests whose response has not finished; once `unusable`
 * (a timeout, a crash) or draining, the server accepts no new work and every later response says
 * `connection: close`.
 */
import http from "node:http";
import express, { type NextFunction, type Request, type Response } from "express";
import { StratusError } from "../shared/errors";
import type { FunctionConfig } from "../shared/function-config";
import { HEADERS } from "../shared/protocol";
import { pickRequestId } from "../shared/request-id";
import { writeError } from "../shared/write-error";
import type { RuntimeHandler } from "./loader";
import type { EmitLog } from "./output-capture";
import { requestContext } from "./request-context";


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

export interface FunctionServer {
  /** Not yet listening. */
  readonly server: http.Server;
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
  readonly res: Response;
  readonly requestId: string;
}

function sendError(res: Response, err: StratusError, requestId: string, extraHeaders?: Record<string, string>): void {
  writeError(res, err, requestId, extraHeaders);
}

/** Maps a body-parser error (it carries `type` and `status`) to a platform error code. */
function bodyError(err: { type?: string; status?: number; message?: string }, limit: number): StratusError {
  switch (err.type) {
    case "entity.too.large":
      return new StratusError("PAYLOAD_TOO_LARGE", `The request body is larger than this function's maxBodyBytes (${limit} bytes)`);
    case "entity.parse.failed":
      return new StratusError("INVALID_ARGUMENT", "The request body is not valid for its content-type");
    case "encoding.unsupported":
    case "charset.unsupported":
      return new StratusError("UNSUPPORTED_MEDIA_TYPE", err.message);
    default:
      return new StratusError("INVALID_ARGUMENT", "The request body could not be read");
  }
}

function isPromiseLike(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === "object" || typeof v === "function") && typeof (v as { then?: unknown }).then === "function";
}

/** Turns a handler's return value into the response, unless the handler already answered. */
function applyReturnValue(res: Response, value: unknown, fromPromise: boolean): void {
  // A stream piped into res has not sent headers yet, but it is answering.
  if (res.headersSent || res.writableEnded || res.listenerCount("unpipe") > 0) return;
  if (value === undefined) {
    // Only an async handler that settled means "done"; a sync one returning nothing answers later
    // (callbacks, an Express router calling next()).
    if (fromPromise) res.status(204).end();
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
 * Per request: request id from `x-stratus-request-id` (generated if absent, echoed back); body parsed by
 * content-type (JSON, urlencoded, text/*, anything else raw Buffer), bounded by `config.maxBodyBytes`;
 * deadline `config.timeout` ms, after which the caller gets 504 FUNCTION_TIMEOUT with
 * `x-stratus-instance-unusable: 1` and `onUnusable` is called.
 */
export function createFunctionServer(options: FunctionServerOptions): FunctionServer {
  const { handler, config, emit } = options;
  const limit = config.maxBodyBytes;
  const inFlight = new Set<InFlight>();
  let draining = false;
  let unusable = false;
  let drained: Promise<void> | undefined;
  let onIdle: (() => void) | undefined;

  const app = express();
  app.disable("x-powered-by");
  // No automatic ETag: hashing every res.send body showed as 5–10 % of the runtime's CPU per small request in a CPU profile
  // (bench: runtime alone, 50 connections). A function that sets ETag/Last-Modified still gets 304s
  // from Express's freshness check (docs/function-contract.md).
  app.set("etag", false);
  app.set("query parser", "extended");

  app.use((req: Request, res: Response, next: NextFunction) => {
    const requestId = pickRequestId(req.headers);
    res.setHeader(HEADERS.requestId, requestId);
    if (draining || unusable) {
      res.setHeader("connection", "close");
      sendError(res, new StratusError("SHUTTING_DOWN", "This instance is shutting down"), requestId);
      return;
    }
    const item: InFlight = { res, requestId };
    inFlight.add(item);
    const timer = setTimeout(() => {
      emit("error", `Function "${options.functionName}" did not answer within its timeout (${config.timeout} ms)`, requestId);
      unusable = true;
      if (!res.headersSent) {
        sendError(res, new StratusError("FUNCTION_TIMEOUT", `The function did not answer within its timeout (${config.timeout} ms)`), requestId, {
          [HEADERS.instanceUnusable]: "1",
          connection: "close",
        });
      } else {
        res.destroy();
      }
      options.onUnusable?.("timeout");
    }, config.timeout);
    res.once("close", () => {
      clearTimeout(timer);
      inFlight.delete(item);
      if (inFlight.size === 0) onIdle?.();
    });
    requestContext.run({ requestId }, parseThenInvoke, req, res, next);
  });

  const parsers = [
    express.json({ limit, type: ["application/json", "application/*+json"] }),
    express.urlencoded({ limit, extended: true, type: "application/x-www-form-urlencoded" }),
    express.text({ limit, type: "text/*" }),
    express.raw({ limit, type: () => true }),
  ];
  // One Express layer runs the parsers in turn instead of four layers: each router hop costs more than
  // the parser's own type check. A request without a body (no Content-Length, no Transfer-Encoding: the
  // test body-parser itself applies) skips them all, leaving `req.body` undefined as they would.
  function parseThenInvoke(req: Request, res: Response, next: NextFunction): void {
    if (req.headers["content-length"] === undefined && req.headers["transfer-encoding"] === undefined) {
      if (!("body" in req)) (req as { body?: unknown }).body = undefined;
      invoke(req, res, next);
      return;
    }
    let i = 0;
    const step = (err?: unknown): void => {
      if (err !== undefined) {
        next(bodyError(err as { type?: string }, limit));
      } else if (i < parsers.length) {
        parsers[i++]!(req, res, step);
      } else {
        invoke(req, res, next);
      }
    };
    step();
  }

  function invoke(req: Request, res: Response, next: NextFunction): void {
    let result: unknown;
    try {
      result = handler(req, res, next);
    } catch (err) {
      next(new FunctionFailure(err));
      return;
    }
    if (isPromiseLike(result)) {
      Promise.resolve(result).then(
        (value) => applyReturnValue(res, value, true),
        (err: unknown) => next(new FunctionFailure(err)),
      );
    } else {
      applyReturnValue(res, result, false);
    }
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
    const stack = cause instanceof Error ? (cause.stack ?? String(cause)) : `Non-error thrown: ${safeString(cause)}`;
    emit("error", `Function "${options.functionName}" threw: ${stack}`, requestId);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const details = options.dev ? { stack } : undefined;
    const message = options.dev && cause instanceof Error ? `The function threw an error: ${cause.message}` : undefined;
    sendError(res, new StratusError("FUNCTION_ERROR", message, { details }), requestId);
  });

  const server = http.createServer((req, res) => {
    if (draining || unusable) res.shouldKeepAlive = false;
    app(req, res);
  });
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
    for (const { res, requestId } of inFlight) {
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

  return { server, inFlight: () => inFlight.size, drain, answerCrash };
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
