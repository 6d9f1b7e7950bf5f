/**
 * Forwards one request to one instance over its Unix socket with undici, streaming both bodies,
 * and classifies what went wrong when it did. Does not render errors: it reports them to the gateway.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { StratusError } from "../shared/errors";
import type { Logger } from "../shared/logger";
import { HEADERS } from "../shared/protocol";
import type { Lease, ReleaseOutcome } from "./function-pool";
import { buildUpstreamHeaders, filterDownstreamHeaders, serverTiming } from "./headers";

/** How the request body reaches the instance. */
export type BodyMode = "none" | "fixed" | "counted";

export interface ProxyParams {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly lease: Lease;
  /** Path + query below the function root. */
  readonly path: string;
  readonly requestId: string;
  /** none: no body; fixed: Content-Length already checked; counted: chunked, counted against maxBodyBytes. */
  readonly bodyMode: BodyMode;
  readonly dropAuthorization: boolean;
  /** W3C traceparent to send (already validated or freshly made by the gateway). */
  readonly traceparent: string;
  /** True when `traceparent` is new: the caller's `tracestate` is dropped (it belonged to another trace). */
  readonly freshTrace: boolean;
  /** Added to the function's timeout for the backstop, ms. */
  readonly timeoutGraceMs: number;
  /** Bounded wait for an exit reason after a broken connection, ms. */
  readonly crashWaitMs: number;
  readonly log: () => Logger;
}

/** What happened: the instance's fate, and the error to answer when one occurred. */
export interface ProxyResult {
  readonly outcome: ReleaseOutcome;
  /** Set when the exchange failed; rendered by the gateway if nothing was sent yet. */
  readonly error?: StratusError;
  /** What the exchange measured, for the invocation record (filled in place, also on failure). */
  readonly meter: ProxyMeter;
}

/** Measurements of one exchange. */
export interface ProxyMeter {
  /** Request body bytes sent to the instance. */
  bytesIn: number;
  /** Response body bytes sent to the client. */
  bytesOut: number;
  /** From sending the request until the response ended (or failed), ms. */
  handlerMs: number;
  /** The `error.code` of an error body the runtime sent (`x-stratus-error-source` set), else null. */
  errorCode: string | null;
}

/** Bytes of an error body kept to read its code: error bodies are small JSON objects. */
const ERROR_BODY_PEEK_BYTES = 4096;

/**
 * Sends the request, streams the response back. Never throws.
 *
 * Backstop: undici's headersTimeout and bodyTimeout (coarse shared timers inside undici) are set to
 * the function's timeout + grace; the runtime enforces the timeout itself, so reaching the backstop
 * means the instance is wedged: destroy it, 504 FUNCTION_TIMEOUT.
 *
 * Client disconnect: the upstream request is aborted and the instance is retired (closed gracefully,
 * never given another request): the handler may still run inside, and with concurrency 1 a second
 * request must never share it. Graceful close lets that handler finish within its timeout.
 */
export async function proxyRequest(p: ProxyParams): Promise<ProxyResult> {
  const { req, res, lease } = p;
  const slot = lease.slot;
  const config = slot.deployment.config;
  const abort = new AbortController();
  let clientGone = false;
  let tooLarge = false;
  const onClose = (): void => {
    if (!res.writableFinished) {
      clientGone = true;
      abort.abort();
    }
  };
  res.once("close", onClose);

  const meter: ProxyMeter = { bytesIn: 0, bytesOut: 0, handlerMs: 0, errorCode: null };
  let body: Readable | null = null;
  if (p.bodyMode === "fixed") {
    body = req;
  } else if (p.bodyMode === "counted") {
    body = countBytes(req, config.maxBodyBytes, () => (tooLarge = true), (n) => (meter.bytesIn = n));
  }
  const backstopMs = config.timeout + p.timeoutGraceMs;
  const started = performance.now();
  if (p.bodyMode === "fixed") meter.bytesIn = Number(req.headers["content-length"]);
  const done = (r: Omit<ProxyResult, "meter">): ProxyResult => {
    meter.handlerMs = performance.now() - started;
    return { ...r, meter };
  };
  try {
    const up = await slot.dispatcher.request({
      method: req.method as "GET",
      path: p.path,
      headers: buildUpstreamHeaders(req.headers, p.requestId, {
        deadlineMs: config.timeout,
        dropAuthorization: p.dropAuthorization,
        remoteAddress: req.socket.remoteAddress,
        traceparent: p.traceparent,
        freshTrace: p.freshTrace,
      }),
      body,
      signal: abort.signal,
      headersTimeout: backstopMs,
      bodyTimeout: backstopMs,
    });
    const handlerMs = performance.now() - started;
    const { headers, unusable } = filterDownstreamHeaders(up.headers);
    const theirs = headers["server-timing"];
    const ours = serverTiming(lease.queueMs, lease.startMs, handlerMs);
    headers["server-timing"] = theirs === undefined ? ours : `${ours}, ${String(theirs)}`;
    headers[HEADERS.requestId] = p.requestId;
    headers[HEADERS.coldStart] = lease.coldStart ? "true" : "false";
    res.writeHead(up.statusCode, headers);
    const isError = up.headers[HEADERS.errorSource] !== undefined;
    const length = up.headers["content-length"];
    try {
      if (!isError && typeof length === "string") {
        // The common case needs no counting stage: the runtime's res.send sets Content-Length.
        await forward(up.body, res);
        meter.bytesOut = Number(length);
      } else {
        const peek: Buffer[] | null = isError ? [] : null;
        await pipeline(up.body, meterStream(meter, peek), res);
        if (peek !== null) meter.errorCode = errorCodeOf(peek);
      }
    } catch (err) {
      if (clientGone || req.socket.destroyed) return done({ outcome: "retire" });
      p.log().warn({ err }, "response stream from the instance broke");
      return done({ outcome: "destroy" });
    }
    return done({ outcome: unusable ? "destroy" : "reuse" });
  } catch (err) {
    if (tooLarge) return done({ outcome: "retire", error: new StratusError("PAYLOAD_TOO_LARGE", undefined, { headers: { connection: "close" } }) });
    if (clientGone || req.socket.destroyed) return done({ outcome: "retire" });
    const code = (err as { code?: unknown }).code;
    if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") {
      p.log().warn({ backstopMs }, "instance did not answer within timeout + grace; destroying it");
      return done({ outcome: "destroy", error: new StratusError("FUNCTION_TIMEOUT") });
    }
    return done({ outcome: "destroy", error: await classifyBrokenInstance(lease, err, p) });
  } finally {
    res.off("close", onClose);
  }
}

/** Waits (bounded) for the instance's exit reason and maps it: out-of-memory or crashed. */
async function classifyBrokenInstance(lease: Lease, err: unknown, p: ProxyParams): Promise<StratusError> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<null>((resolve) => {
    timer = setTimeout(resolve, p.crashWaitMs, null);
  });
  const exit = await Promise.race([lease.slot.instance.exited, timedOut]).finally(() => clearTimeout(timer));
  p.log().warn({ err, exit }, "connection to the instance failed mid-request");
  if (exit?.reason === "out-of-memory") return new StratusError("FUNCTION_OUT_OF_MEMORY", undefined, { cause: err });
  return new StratusError("FUNCTION_CRASHED", undefined, { cause: err });
}

/**
 * Passes a chunked body through, failing once more than `maxBytes` went by. Uses `pipe`, not
 * `pipeline`: on failure the client's request must stay open so the 413 can still be written.
 */
function countBytes(src: IncomingMessage, maxBytes: number, onTooLarge: () => void, onCount: (seen: number) => void): Readable {
  let seen = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, callback) {
      seen += chunk.length;
      onCount(seen);
      if (seen > maxBytes) {
        onTooLarge();
        callback(new StratusError("PAYLOAD_TOO_LARGE"));
        return;
      }
      callback(null, chunk);
    },
  });
  src.once("error", (err) => counter.destroy(err));
  return src.pipe(counter);
}

/**
 * `up.pipe(res)` as a promise, with pipeline's failure semantics (either side failing or closing early
 * destroys both and rejects). Not `stream/promises.pipeline`: it makes an AbortController per call and
 * aborts it on completion, building a DOMException with a stack each time, ~4 % of the gateway's CPU on
 * the warm path (bench/gateway-latency.ts profile).
 */
function forward(src: Readable, dst: ServerResponse): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      src.off("error", fail);
      dst.off("error", fail);
      dst.off("finish", onFinish);
      dst.off("close", onClose);
    };
    function fail(err: unknown): void {
      cleanup();
      // A late second error from either side must not become an uncaught exception.
      src.on("error", () => {});
      src.destroy();
      dst.destroy();
      reject(err instanceof Error ? err : new Error(String(err)));
    }
    function onFinish(): void {
      cleanup();
      resolve();
    }
    function onClose(): void {
      if (!dst.writableFinished) fail(new Error("response closed before the body was sent"));
    }
    src.once("error", fail);
    dst.once("error", fail);
    dst.once("finish", onFinish);
    dst.once("close", onClose);
    src.pipe(dst);
  });
}

/** Counts response bytes into `meter`, keeping the first ERROR_BODY_PEEK_BYTES in `peek` when given. */
function meterStream(meter: ProxyMeter, peek: Buffer[] | null): Transform {
  let kept = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, callback) {
      meter.bytesOut += chunk.length;
      if (peek !== null && kept < ERROR_BODY_PEEK_BYTES) {
        peek.push(chunk);
        kept += chunk.length;
      }
      callback(null, chunk);
    },
  });
}

/** `error.code` of a JSON error body, or null when it is not one. */
function errorCodeOf(peek: Buffer[]): string | null {
  try {
    const body = JSON.parse(Buffer.concat(peek).toString("utf8")) as { error?: { code?: unknown } };
    return typeof body.error?.code === "string" ? body.error.code : null;
  } catch {
    return null;
  }
}
