/**
 * The async intake's request as it crosses the node protocol (docs/events.md "The path of an async
 * request"): the node's gateway recognises `x-stratus-invocation-type: async`, routes and authorizes it,
 * reads the body within the function's `maxBodyBytes` (and ASYNC_MAX_BODY_BYTES), keeps the headers the
 * job will be replayed with, and POSTs it to the control plane (`POST /internal/v1/async`), which commits
 * the job durably and only then answers; the node's 202 follows that answer.
 */
import type { IncomingMessage } from "node:http";
import { StratusError } from "./errors";

/**
 * Largest async body, bytes: the request crosses the node protocol as base64 JSON, which must stay under
 * MAX_PROTOCOL_BODY_BYTES (16 MiB). A larger body gets 413 PAYLOAD_TOO_LARGE even when `maxBodyBytes` allows it.
 */
export const ASYNC_MAX_BODY_BYTES = 10 * 1024 * 1024;

/** Headers never stored with a job (the idempotency key travels on its own). */
const DROPPED = new Set([
  "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
  "http2-settings", "expect", "host", "content-length", "authorization", "cookie", "idempotency-key",
]);

/**
 * The headers a job keeps: the client's minus hop-by-hop ones, `authorization` (consumed by the
 * platform), `cookie`, `host`, `content-length`, `idempotency-key` and every `x-stratus-*`.
 */
export function storedHeaders(headers: IncomingMessage["headers"]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(headers)) {
    if (value === undefined || DROPPED.has(key) || key.startsWith("x-stratus-")) continue;
    out[key] = Array.isArray(value) ? value.join(", ") : value;
  }
  return out;
}

/** Reads the body, at most `max` bytes. @throws StratusError PAYLOAD_TOO_LARGE */
export function readBoundedBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > max) {
      req.resume();
      return reject(new StratusError("PAYLOAD_TOO_LARGE"));
    }
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
