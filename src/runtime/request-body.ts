/**
 * The request body for every style of handler at once:
 *  - `req.rawBody`: a Buffer of the exact bytes received (as functions-framework's), empty without a body;
 *  - `req.body`: parsed by content-type (src/runtime/parse-body.ts) on first access, from those bytes
 *    (a lazy property, as Vercel's); `{}` without a body (as Cloud Functions);
 *  - the request stream itself stays unread: `req.pipe(busboy)`, `getRawBody(req)`, micro's `json(req)`,
 *    `for await (const chunk of req)` and an app's own `express.json()` read the same bytes.
 *
 * How the stream stays unread: while the body arrives, the HTTP parser's pushes into the request stream
 * are intercepted (an own `push` on the IncomingMessage, removed once the message is complete) and kept
 * here; when the message is complete, all of it is pushed into the stream at once, followed by its end.
 * Nothing has read the stream until then, so it holds the whole body, unread, when the handler starts.
 * Node's parser calls `incoming.push(chunk)` per body chunk and `incoming.push(null)` at the end of the
 * message (lib/_http_common.js, unchanged from Node 12 to 22).
 *
 * Cost per request with a body: the chunks are concatenated once (a single-chunk body is used as is), the
 * parse happens only if `req.body` is read. The stream holds the same Buffer, not a copy. Memory: the body
 * is held until the response finishes (before, body-parser held it as `req.body` just as long).
 *
 * Invariants: `done` is called at most once, when the message is complete, and never if the client goes
 * away before; past `limit` bytes nothing more is kept (the rest is read and dropped, as body-parser did,
 * so the 413 answer reaches a client still sending).
 */
import type { IncomingMessage } from "node:http";
import { StratusError } from "../shared/errors";
import { parseBody } from "./parse-body";

/** The body of a request without one. Shared: a zero-length Buffer cannot be changed. */
export const EMPTY_BODY = Buffer.alloc(0);

const bodyErrors = new WeakSet<object>();

/** True for an error thrown by a `req.body` getter (a body that does not parse): answered as a platform error. */
export function isBodyError(err: unknown): err is StratusError {
  return typeof err === "object" && err !== null && bodyErrors.has(err);
}

type Pushable = IncomingMessage & { push(chunk: Buffer | null): boolean };

/**
 * Buffers the body of `req`, then gives it back to the stream, unread (see the module comment).
 * @param limit maxBodyBytes; a declared Content-Length above it, or more bytes than it, is "too large".
 * @param done called once, when the message is complete: with the bytes, or `null` when too large.
 */
export function bufferBody(req: IncomingMessage, limit: number, done: (raw: Buffer | null) => void): void {
  const declared = Number(req.headers["content-length"]);
  let tooLarge = declared > limit;
  const chunks: Buffer[] = [];
  let size = 0;
  const r = req as Pushable;
  if (r.readableLength > 0 || r.complete) {
    // Bytes reached the stream before this ran (not seen with Node's parser, which runs the request
    // handler before it parses the body): read them the ordinary way; the stream is then consumed.
    r.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) tooLarge = true;
      else chunks.push(chunk);
    });
    r.once("end", () => done(tooLarge ? null : concat(chunks, size)));
    return;
  }
  r.push = (chunk: Buffer | null): boolean => {
    if (chunk !== null) {
      size += chunk.length;
      if (size > limit) tooLarge = true;
      if (!tooLarge) chunks.push(chunk);
      return true;
    }
    delete (r as { push?: unknown }).push;
    if (tooLarge) {
      r.push(null);
      done(null);
      return false;
    }
    const raw = concat(chunks, size);
    chunks.length = 0;
    if (raw.length > 0) r.push(raw);
    r.push(null);
    done(raw);
    return false;
  };
}

function concat(chunks: Buffer[], size: number): Buffer {
  return chunks.length === 1 ? chunks[0]! : chunks.length === 0 ? EMPTY_BODY : Buffer.concat(chunks, size);
}

/**
 * Sets `req.rawBody` to `raw` and `req.body` to a lazy property parsing it on first read (then a plain
 * value). Assigning `req.body` (an app's own body parser does) replaces it with the assigned value. A body
 * that does not parse throws its StratusError (`isBodyError`) at every read.
 */
export function exposeBody(req: IncomingMessage, raw: Buffer, limit: number): void {
  const target = req as IncomingMessage & { rawBody?: Buffer; body?: unknown };
  target.rawBody = raw;
  let failure: StratusError | undefined;
  const set = (value: unknown) => Object.defineProperty(req, "body", { value, writable: true, enumerable: true, configurable: true });
  Object.defineProperty(req, "body", {
    enumerable: true,
    configurable: true,
    get() {
      if (failure !== undefined) throw failure;
      let value: unknown;
      try {
        value = parseBody(raw, req.headers, limit);
      } catch (err) {
        failure = err as StratusError;
        bodyErrors.add(failure);
        throw failure;
      }
      set(value);
      return value;
    },
    set,
  });
}

/** A request without a body: `req.body` is `{}` and `req.rawBody` is empty. */
export function exposeNoBody(req: IncomingMessage): void {
  const target = req as IncomingMessage & { rawBody?: Buffer; body?: unknown };
  target.rawBody = EMPTY_BODY;
  target.body = {};
}
