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
}

const BROKEN: ProxyResult = { outcome: "destroy" };

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

  let body: Readable | null = null;
  if (p.bodyMode === "fixed") {
    body = req;
  } else if (p.bodyMode === "counted") {
    body = countBytes(req, config.maxBodyBytes, () => (tooLarge = true));
  }
  const backstopMs = config.timeout + p.timeoutGraceMs;
  const started = performance.now();
  try {
    const up = await slot.dispatcher.request({
      method: req.method as "GET",
      path: p.path,
      headers: buildUpstreamHeaders(req.headers, p.requestId, {
        deadlineMs: config.timeout,
        dropAuthorization: p.dropAuthorization,
        remoteAddress: req.socket.remoteAddress,
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
    try {
      await pipeline(up.body, res);
    } catch (err) {
      if (clientGone || req.socket.destroyed) return { outcome: "retire" };
      p.log().warn({ err }, "response stream from the instance broke");
      return BROKEN;
    }
    return { outcome: unusable ? "destroy" : "reuse" };
  } catch (err) {
    if (tooLarge) return { outcome: "retire", error: new StratusError("PAYLOAD_TOO_LARGE", undefined, { headers: { connection: "close" } }) };
    if (clientGone || req.socket.destroyed) return { outcome: "retire" };
    const code = (err as { code?: unknown }).code;
    if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") {
      p.log().warn({ backstopMs }, "instance did not answer within timeout + grace; destroying it");
      return { outcome: "destroy", error: new StratusError("FUNCTION_TIMEOUT") };
    }
    return { outcome: "destroy", error: await classifyBrokenInstance(lease, err, p) };
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
function countBytes(src: IncomingMessage, maxBytes: number, onTooLarge: () => void): Readable {
  let seen = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, callback) {
      seen += chunk.length;
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
