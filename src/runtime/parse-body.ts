/**
 * Parses a request body from its bytes, by content-type, synchronously, so `req.body` can be a lazy getter
 * over the buffered bytes (src/runtime/request-body.ts). Same rules and limits as the body-parser 2
 * middlewares the runtime used before (Express 5's defaults):
 *  - `application/json`, `application/*+json` → JSON (strict: an object or an array; empty → `{}`),
 *    charset utf-* only (default utf-8);
 *  - `application/x-www-form-urlencoded` → object (qs, extended, 1000 parameters, depth 32), charset utf-8 or
 *    iso-8859-1;
 *  - `text/*` → string in its charset (default utf-8; any charset iconv-lite knows);
 *  - anything else, or no content-type → the bytes (`Buffer`).
 * `Content-Encoding` gzip, deflate and br are decoded first (the decoded size is bounded by the limit too);
 * identity is the usual case and copies nothing.
 */
import type { IncomingHttpHeaders } from "node:http";
import { brotliDecompressSync, gunzipSync, inflateSync } from "node:zlib";
import iconv from "iconv-lite";
import qs from "qs";
import { StratusError } from "../shared/errors";

/** Which parser a content-type selects. */
export type BodyKind = "json" | "urlencoded" | "text" | "raw";

/** The media type of a content-type header, lower-case, without parameters ("" when absent). */
function mediaTypeOf(contentType: string | undefined): string {
  if (contentType === undefined) return "";
  const semi = contentType.indexOf(";");
  return (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

/** The parser for a media type (type-is's matching of body-parser's `type` options). */
export function bodyKindOf(contentType: string | undefined): BodyKind {
  const type = mediaTypeOf(contentType);
  const slash = type.indexOf("/");
  if (slash <= 0 || slash === type.length - 1) return "raw";
  const top = type.slice(0, slash);
  const sub = type.slice(slash + 1);
  if (top === "application" && (sub === "json" || sub.endsWith("+json"))) return "json";
  if (top === "application" && sub === "x-www-form-urlencoded") return "urlencoded";
  if (top === "text") return "text";
  return "raw";
}

/** The `charset` parameter of a content-type, lower-case, unquoted; undefined when absent. */
export function charsetOf(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  const lower = contentType.toLowerCase();
  let i = lower.indexOf(";");
  while (i !== -1) {
    const next = lower.indexOf(";", i + 1);
    const param = lower.slice(i + 1, next === -1 ? undefined : next).trim();
    if (param.startsWith("charset=")) {
      const v = param.slice(8).trim();
      return v.startsWith('"') && v.endsWith('"') && v.length >= 2 ? v.slice(1, -1) : v;
    }
    i = next;
  }
  return undefined;
}

function decompress(raw: Buffer, encoding: string, limit: number): Buffer {
  const opts = { maxOutputLength: Math.max(1, limit) };
  try {
    if (encoding === "gzip" || encoding === "x-gzip") return gunzipSync(raw, opts);
    if (encoding === "deflate") return inflateSync(raw, opts);
    if (encoding === "br") return brotliDecompressSync(raw, opts);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
      throw new StratusError("PAYLOAD_TOO_LARGE", `The decoded request body is larger than this function's maxBodyBytes (${limit} bytes)`);
    }
    throw new StratusError("INVALID_ARGUMENT", `The request body could not be decoded (${encoding})`);
  }
  throw new StratusError("UNSUPPORTED_MEDIA_TYPE", `Unsupported content encoding "${encoding}"`);
}

function unsupportedCharset(charset: string): StratusError {
  return new StratusError("UNSUPPORTED_MEDIA_TYPE", `unsupported charset "${charset.toUpperCase()}"`);
}

const PARSE_FAILED = "The request body is not valid for its content-type";

/** The number of `&`-separated parameters, or undefined past `limit` (body-parser's early exit). */
function parameterCount(body: string, limit: number): number | undefined {
  let count = 0;
  let index = -1;
  do {
    if (++count > limit) return undefined;
    index = body.indexOf("&", index + 1);
  } while (index !== -1);
  return count;
}

/**
 * The parsed body (see the module comment).
 * @param raw the body's bytes as received.
 * @param limit maxBodyBytes, bounding a decoded (decompressed) body.
 * @throws StratusError INVALID_ARGUMENT (does not parse), UNSUPPORTED_MEDIA_TYPE (charset, content
 *   encoding), PAYLOAD_TOO_LARGE (decompressed past the limit).
 */
export function parseBody(raw: Buffer, headers: IncomingHttpHeaders, limit: number): unknown {
  const contentType = headers["content-type"];
  const kind = bodyKindOf(contentType);
  const encoding = (headers["content-encoding"] ?? "identity").toLowerCase();
  const bytes = encoding === "identity" ? raw : decompress(raw, encoding, limit);
  if (kind === "raw") return bytes;
  const charset = charsetOf(contentType) ?? "utf-8";
  if (kind === "json" && !charset.startsWith("utf-")) throw unsupportedCharset(charset);
  if (kind === "urlencoded" && charset !== "utf-8" && charset !== "iso-8859-1") throw unsupportedCharset(charset);
  if (!iconv.encodingExists(charset)) throw unsupportedCharset(charset);
  const text = iconv.decode(bytes, charset);
  if (kind === "text") return text;
  if (kind === "json") {
    if (text.length === 0) return {};
    const first = text.trimStart()[0];
    if (first !== "{" && first !== "[") throw new StratusError("INVALID_ARGUMENT", PARSE_FAILED);
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new StratusError("INVALID_ARGUMENT", PARSE_FAILED);
    }
  }
  if (text.length === 0) return {};
  const paramCount = parameterCount(text, 1000);
  if (paramCount === undefined) throw new StratusError("INVALID_ARGUMENT", "The request body has too many parameters (more than 1000)");
  try {
    return qs.parse(text, {
      allowPrototypes: true,
      arrayLimit: Math.max(100, paramCount),
      depth: 32,
      charset: charset as "utf-8" | "iso-8859-1",
      parameterLimit: 1000,
      strictDepth: true,
    } as qs.IParseOptions);
  } catch {
    throw new StratusError("INVALID_ARGUMENT", PARSE_FAILED);
  }
}
