/**
 * The async intake: what the gateway calls for `POST /fn/<name>/…` with `x-stratus-invocation-type:
 * async` (after routing and authorization). Reads the body within the function's `maxBodyBytes`,
 * commits the job (durably, see src/events/queue.ts) and only then answers
 * `202 { invocationId, status, statusUrl }` with `Location: <statusUrl>`.
 *
 * Kept from the request: method, path + query, and the headers minus hop-by-hop ones, `authorization`
 * (consumed by the platform), `cookie`, `host`, `content-length` and every `x-stratus-*` — the worker
 * replays the rest to the function.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { StratusError, isStratusError, toErrorResponse } from "../shared/errors";
import type { Logger } from "../shared/logger";
import { HEADERS } from "../shared/protocol";
import type { AsyncTarget } from "../gateway/gateway";
import type { JobQueue } from "./queue";

/** Headers never stored with a job. */
const DROPPED = new Set([
  "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
  "http2-settings", "expect", "host", "content-length", "authorization", "cookie", "idempotency-key",
]);

/** Options of `createAsyncIntake`. */
export interface AsyncIntakeOptions {
  readonly queue: JobQueue;
  readonly logger: Logger;
  /** The status URL of an invocation id (`<publicUrl>/api/v1/invocations/<id>`). */
  readonly statusUrl: (id: string) => string;
  /** Called after each commit (wakes the worker). */
  readonly onEnqueued?: (functionName: string) => void;
}

/** The headers a job keeps (see the file comment). */
export function storedHeaders(headers: IncomingMessage["headers"]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(headers)) {
    if (value === undefined || DROPPED.has(key) || key.startsWith("x-stratus-")) continue;
    out[key] = Array.isArray(value) ? value.join(", ") : value;
  }
  return out;
}

/** Reads the body, at most `max` bytes. @throws StratusError PAYLOAD_TOO_LARGE */
function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on("data", (c: Buffer) => {
      n += c.length;
      if (n > max) {
        req.removeAllListeners("data");
        req.resume();
        return reject(new StratusError("PAYLOAD_TOO_LARGE"));
      }
      chunks.push(c);
    });
    req.once("end", () => resolve(Buffer.concat(chunks)));
    req.once("error", reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Builds the intake hook (src/gateway/gateway.ts `asyncIntake`). */
export function createAsyncIntake(options: AsyncIntakeOptions): (req: IncomingMessage, res: ServerResponse, target: AsyncTarget) => void {
  const { queue, logger } = options;
  return (req, res, target) => {
    const { deployment, requestId } = target;
    const config = deployment.config;
    const declared = Number(req.headers["content-length"] ?? 0);
    const work = async (): Promise<void> => {
      if (declared > config.maxBodyBytes) throw new StratusError("PAYLOAD_TOO_LARGE");
      const body = await readBody(req, config.maxBodyBytes);
      const key = req.headers["idempotency-key"];
      const { job, created } = await queue.enqueue({
        functionName: deployment.name,
        request: { method: req.method ?? "POST", path: target.path, headers: storedHeaders(req.headers), bodyBase64: body.toString("base64") },
        origin: { kind: "async" },
        maxAttempts: config.maxAttempts,
        maxEventAgeS: config.maxEventAgeS,
        retryDelayMs: config.retryDelayMs,
        idempotencyKey: typeof key === "string" ? key : null,
      });
      if (created) options.onEnqueued?.(deployment.name);
      const statusUrl = options.statusUrl(job.id);
      sendJson(res, 202, { invocationId: job.id, status: job.status, statusUrl, created }, {
        location: statusUrl, [HEADERS.requestId]: requestId, [HEADERS.invocationId]: job.id,
      });
    };
    work().catch((err: unknown) => {
      if (!isStratusError(err)) logger.error({ err, rid: requestId, fn: deployment.name }, "async intake failed");
      if (res.headersSent) return void res.destroy();
      const r = toErrorResponse(err, requestId);
      const close: Record<string, string> = (err as { code?: string }).code === "PAYLOAD_TOO_LARGE" ? { connection: "close" } : {};
      sendJson(res, r.status, r.body, { ...r.headers, ...close, [HEADERS.requestId]: requestId, [HEADERS.errorSource]: r.source });
    });
  };
}
