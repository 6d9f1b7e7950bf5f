/**
 * Forwards one request to one instance over its Unix socket with undici, streaming both bodies,
 * and classifies what went wrong when it did. Does not render errors: it reports them to the gateway.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { Transform, type Readable } from "node:stream";
import { isErrorCode, StratusError } from "../shared/errors";
import type { Logger } from "../shared/logger";
import { HEADERS } from "../shared/protocol";
import type { Lease, ReleaseOutcome } from "./function-pool";
import { buildUpstreamHeaders, filterDownstreamHeaders, serverTiming } from "./headers";

/** How the request body reaches the instance. */
export type BodyMode = "none" | "fixed" | "counted";

export interface ProxyParams {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** Path + query below the function root. */
  readonly path: string;
  readonly requestId: string;
  /** none: no body; fixed: Content-Length already checked; counted: chunked, counted against maxBodyBytes. */
  readonly bodyMode: BodyMode;
  readonly dropAuthorization: boolean;
  /** The client's peer is a configured trusted proxy (its forwarding headers are kept, see headers.ts). */
  readonly trustedProxy: boolean;
  /** True for the platform's async worker: its x-stratus-invocation-id / -attempt / -trigger reach the function. */
  readonly trustedDispatch?: boolean;
  /** W3C traceparent to send (already validated or freshly made by the gateway). */
  readonly traceparent: string;
  /** True when `traceparent` is new: the caller's `tracestate` is dropped (it belonged to another trace). */
  readonly freshTrace: boolean;
  /** Added to the function's timeout for the backstop, ms. */
  readonly timeoutGraceMs: number;
  /** Bounded wait for an exit reason after a broken connection, ms. */
  readonly crashWaitMs: number;
  /** The request's logger (built lazily by the caller). */
  log(): Logger;
}

/** What happened: the instance's fate, and the error to answer when one occurred. */
export interface ProxyResult {
  /**
   * `abandoned`: the client disconnected while the instance had the request; the handler may still be
   * running, so the gateway settles the lease with `settleAbandoned` (src/gateway/abandoned.ts).
   */
  readonly outcome: ReleaseOutcome | "abandoned";
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

/** Reason given to undici when the client left: never shown to anyone. */
const CLIENT_GONE = new Error("the client closed the connection");

type AbortUpstream = (reason?: Error) => void;

/**
 * Sends the request and streams the response back; calls `onDone` exactly once with the result, as
 * soon as the instance finished the exchange (its last body byte, or a failure). Never throws.
 *
 * Hot path (docs/gateway.md, "Performance"): one object per request is undici's dispatch handler
 * itself, writing the instance's head and body chunks straight into `res`; no Promise, no Readable
 * of undici's, no `pipe`, no AbortController (undici hands `onConnect` an abort function), no
 * AsyncResource, no header object in either direction.
 *
 * Backstop: undici's headersTimeout and bodyTimeout (coarse shared timers inside undici) are set to
 * the function's timeout + grace; the runtime enforces the timeout itself, so reaching the backstop
 * means the instance is wedged: destroy it, 504 FUNCTION_TIMEOUT.
 *
 * Client disconnect: the upstream request is aborted (the runtime sees its connection close and aborts
 * `req.signal`) and the result is `abandoned`: the gateway keeps the lease until the runtime says the
 * handler finished (reuse) or the grace period passed (destroy), see src/gateway/abandoned.ts. A
 * response that completed although the client left is an ordinary `reuse`.
 */
export function proxyRequest(p: ProxyParams, lease: Lease, onDone: (result: ProxyResult) => void): void {
  new Exchange(p, lease, onDone).start();
}

/**
 * One exchange with an instance, and undici's (legacy, internal) dispatch handler for it: these are
 * the callbacks undici's own `request()` implements, without its wrapper objects.
 * Invariants: `onDone` runs once (`done`); the response head is written at most once, by onHeaders
 * or later by the gateway for an error (`res.headersSent` tells them apart).
 */
class Exchange implements ProxyMeter {
  bytesIn = 0;
  bytesOut = 0;
  handlerMs = 0;
  errorCode: string | null = null;
  private abortUpstream: AbortUpstream | null = null;
  private clientGone = false;
  private tooLarge = false;
  private unusable = false;
  private done = false;
  private peek: Buffer[] | null = null;
  private peekBytes = 0;
  private started = 0;
  private resume: (() => void) | null = null;
  private readonly onDrain = (): void => this.resume?.();
  private readonly onClientClose = (): void => {
    if (this.done || this.p.res.writableFinished) return;
    this.clientGone = true;
    this.abortUpstream?.(CLIENT_GONE);
  };

  constructor(private readonly p: ProxyParams, private readonly lease: Lease, private readonly onDone: (result: ProxyResult) => void) {}

  start(): void {
    const { req, res } = this.p;
    const lease = this.lease;
    const config = lease.slot.deployment.config;
    let body: Readable | null = null;
    if (this.p.bodyMode === "fixed") {
      body = req;
      this.bytesIn = Number(req.headers["content-length"]);
    } else if (this.p.bodyMode === "counted") {
      body = countBytes(req, config.maxBodyBytes, () => (this.tooLarge = true), (n) => (this.bytesIn = n));
    }
    res.once("close", this.onClientClose);
    const backstopMs = config.timeout + this.p.timeoutGraceMs;
    this.started = performance.now();
    lease.slot.dispatcher.dispatch({
      method: req.method as "GET",
      path: this.p.path,
      headers: buildUpstreamHeaders(req.headers, this.p.requestId, {
        deadlineMs: config.timeout,
        dropAuthorization: this.p.dropAuthorization,
        remoteAddress: req.socket.remoteAddress,
        encrypted: (req.socket as { encrypted?: boolean }).encrypted === true,
        trustedProxy: this.p.trustedProxy,
        traceparent: this.p.traceparent,
        freshTrace: this.p.freshTrace,
        eventHeaders: this.p.trustedDispatch === true,
      }),
      body,
      headersTimeout: backstopMs,
      bodyTimeout: backstopMs,
    }, this);
  }

  onConnect(abort: AbortUpstream): void {
    if (this.clientGone) abort(CLIENT_GONE);
    else this.abortUpstream = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true; // 1xx: the final head follows (as undici's request() does)
    const res = this.p.res;
    const lease = this.lease;
    if (this.clientGone || res.destroyed) return true; // onError follows (the abort above)
    const head = filterDownstreamHeaders(rawHeaders);
    this.unusable = head.unusable;
    if (head.errorSource) this.peek = [];
    const ours = serverTiming(lease.queueMs, lease.startMs, performance.now() - this.started);
    head.headers.push(
      "server-timing", head.serverTiming === null ? ours : `${ours}, ${head.serverTiming}`,
      HEADERS.requestId, this.p.requestId,
      HEADERS.coldStart, lease.coldStart ? "true" : "false",
    );
    res.writeHead(statusCode, head.headers);
    this.resume = resume;
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.bytesOut += chunk.length;
    if (this.peek !== null && this.peekBytes < ERROR_BODY_PEEK_BYTES) {
      this.peek.push(chunk);
      this.peekBytes += chunk.length;
    }
    if (this.p.res.write(chunk)) return true;
    // A slow client: pause the instance's socket until the client drains (backpressure).
    this.p.res.once("drain", this.onDrain);
    return false;
  }

  onComplete(): void {
    const res = this.p.res;
    if (this.peek !== null) this.errorCode = errorCodeOf(this.peek);
    if (!this.clientGone && !res.destroyed) res.end();
    this.finish(this.unusable ? "destroy" : "reuse");
  }

  onError(err: Error): void {
    if (this.done) return;
    const { req, res } = this.p;
    if (this.tooLarge) {
      this.finish("retire", new StratusError("PAYLOAD_TOO_LARGE", undefined, { headers: { connection: "close" } }));
      return;
    }
    if (this.clientGone || (req.socket?.destroyed ?? true)) {
      this.finish("abandoned");
      return;
    }
    if (res.headersSent) {
      // The response broke after its head went out: nothing left to tell the client but a cut.
      this.p.log().warn({ err }, "response stream from the instance broke");
      res.destroy();
      this.finish("destroy");
      return;
    }
    const code = (err as { code?: unknown }).code;
    if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") {
      this.p.log().warn({ backstopMs: this.lease.slot.deployment.config.timeout + this.p.timeoutGraceMs }, "instance did not answer within timeout + grace; destroying it");
      this.finish("destroy", new StratusError("FUNCTION_TIMEOUT"));
      return;
    }
    this.settle();
    void classifyBrokenInstance(this.lease, err, this.p).then((error) => this.onDone({ outcome: "destroy", error, meter: this }));
  }

  private finish(outcome: ProxyResult["outcome"], error?: StratusError): void {
    if (this.done) return;
    this.settle();
    this.onDone(error === undefined ? { outcome, meter: this } : { outcome, error, meter: this });
  }

  /** Ends the exchange's own bookkeeping; `onDone` follows (at once, or after classifying a crash). */
  private settle(): void {
    this.done = true;
    this.handlerMs = performance.now() - this.started;
    this.p.res.off("close", this.onClientClose);
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
 * `error.code` of a JSON error body, or the leading `CODE: ` of a text one (a function error answered to a
 * caller that does not prefer JSON, docs/function-contract.md), or null when it is neither.
 */
function errorCodeOf(peek: Buffer[]): string | null {
  const text = Buffer.concat(peek).toString("utf8");
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown } };
    return typeof body.error?.code === "string" ? body.error.code : null;
  } catch {
    const colon = text.indexOf(": ");
    const code = colon > 0 ? text.slice(0, colon) : "";
    return isErrorCode(code) ? code : null;
  }
}
