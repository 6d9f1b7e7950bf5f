/**
 * Serves an AWS Lambda handler `(event, context[, callback]) => result` behind the runtime's Express
 * server, the way a Lambda **function URL** calls it: the request becomes a payload format 2.0 event,
 * the result becomes the response. Used only for functions whose config says `handlerType: "lambda"`
 * (written directly, or by the SDK's `defineLambdaHandler`): the form of a handler is never guessed from
 * its arity, because an Express `(req, res)` handler and a Lambda `(event, context)` handler look alike.
 *
 * Event (what a function URL sends): `version: "2.0"`, `routeKey: "$default"`, `rawPath` (the path below
 * `/fn/<name>`, as sent), `rawQueryString`, `cookies` (from the Cookie header, which is then left out of
 * `headers`), `headers` (lower-case, repeated ones joined with ","), `queryStringParameters` (repeated
 * ones joined with ","), `requestContext` (`accountId: "anonymous"`, `apiId`/`domainPrefix`: the first
 * label of the host, `domainName`: the host, `http: { method, path, protocol, sourceIp, userAgent }`,
 * `requestId`: the Stratus request id, `routeKey`, `stage: "$default"`, `time`, `timeEpoch`), `body` and
 * `isBase64Encoded` (text content types as UTF-8, anything else base64). Keys without a value are
 * absent, as on AWS.
 *
 * Result: an object with `statusCode` is taken as `{ statusCode, headers, cookies, body, isBase64Encoded }`
 * (`cookies` become Set-Cookie headers; content-type defaults to application/json as on function URLs);
 * anything else is a 200 `application/json` response of the value (a string as is, other values as
 * JSON); `undefined`/`null` is a 200 with an empty body. A handler that throws, rejects or calls back
 * with an error becomes the runtime's function error (500 FUNCTION_ERROR), like any other handler. A
 * non-async handler that returns nothing must answer through the callback or `context.succeed/fail/done`,
 * else the invocation times out.
 *
 * Context: `functionName`, `functionVersion` ("$LATEST"), `invokedFunctionArn` (a `arn:stratus:…` name:
 * there is no AWS account), `memoryLimitInMB`, `awsRequestId` (the request id), `logGroupName` and
 * `logStreamName` (empty), `callbackWaitsForEmptyEventLoop`, `getRemainingTimeInMillis()` (to the
 * invocation's deadline), and the legacy `done`/`succeed`/`fail`.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { StratusError } from "../shared/errors";
import { HEADERS } from "../shared/protocol";

/** What the adapter needs to know about the function. */
export interface LambdaAdapterOptions {
  readonly functionName: string;
  /** The function's `memory` config, MB (context.memoryLimitInMB). */
  readonly memoryMb: number;
  /** The function's `timeout` config, ms (context.getRemainingTimeInMillis). */
  readonly timeoutMs: number;
  /** Largest body read from the request stream when the runtime has not read it, bytes. */
  readonly maxBodyBytes: number;
}

/** The payload format 2.0 event of a Lambda function URL. */
export interface FunctionUrlEvent {
  version: "2.0";
  routeKey: "$default";
  rawPath: string;
  rawQueryString: string;
  cookies?: string[];
  headers: Record<string, string>;
  queryStringParameters?: Record<string, string>;
  requestContext: {
    accountId: string;
    apiId: string;
    domainName: string;
    domainPrefix: string;
    http: { method: string; path: string; protocol: string; sourceIp: string; userAgent: string };
    requestId: string;
    routeKey: "$default";
    stage: "$default";
    time: string;
    timeEpoch: number;
  };
  body?: string;
  isBase64Encoded: boolean;
}

/** The Lambda context object handed to the handler. */
export interface LambdaContext {
  functionName: string;
  functionVersion: string;
  invokedFunctionArn: string;
  memoryLimitInMB: string;
  awsRequestId: string;
  logGroupName: string;
  logStreamName: string;
  callbackWaitsForEmptyEventLoop: boolean;
  getRemainingTimeInMillis(): number;
  done(err?: unknown, result?: unknown): void;
  succeed(result?: unknown): void;
  fail(err?: unknown): void;
}

type LambdaCallback = (err?: unknown, result?: unknown) => void;
type LambdaHandler = (event: FunctionUrlEvent, context: LambdaContext, callback: LambdaCallback) => unknown;

/** The request as the runtime's Express hands it over (only what the adapter reads). */
type AdaptedRequest = IncomingMessage & { body?: unknown; rawBody?: unknown; ip?: string };

// Content types a function URL passes as text (isBase64Encoded false); everything else is base64.
const TEXT_TYPES = ["application/json", "application/javascript", "application/xml", "application/x-www-form-urlencoded", "application/graphql"];

function isTextType(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const type = contentType.split(";", 1)[0]!.trim().toLowerCase();
  return type.startsWith("text/") || type.endsWith("+json") || type.endsWith("+xml") || TEXT_TYPES.includes(type);
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const pad = (n: number) => String(n).padStart(2, "0");

/** `29/Apr/2022:18:28:33 +0000`, the format of requestContext.time. */
function clfTime(d: Date): string {
  return `${pad(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`;
}

/** The body bytes: `req.rawBody` when the runtime kept them, else the unread stream, else from `req.body`. */
async function bodyBytes(req: AdaptedRequest, limit: number): Promise<Buffer> {
  if (Buffer.isBuffer(req.rawBody)) return req.rawBody;
  if (!req.readableEnded && req.readable && (req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined)) {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw new StratusError("PAYLOAD_TOO_LARGE", `The request body is larger than this function's maxBodyBytes (${limit} bytes)`);
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  }
  // The runtime parsed the body and kept no bytes (a runtime without rawBody): rebuild them.
  const b = req.body;
  if (b === undefined || b === null) return Buffer.alloc(0);
  if (Buffer.isBuffer(b)) return b;
  if (typeof b === "string") return Buffer.from(b, "utf8");
  const type = String(req.headers["content-type"] ?? "");
  if (type.includes("x-www-form-urlencoded")) return Buffer.from(new URLSearchParams(b as Record<string, string>).toString(), "utf8");
  return Object.keys(b as object).length === 0 && req.headers["content-length"] === "0" ? Buffer.alloc(0) : Buffer.from(JSON.stringify(b), "utf8");
}

/**
 * Builds the function URL event of one request.
 * @param body the request body bytes (empty: no `body` key).
 * @param now the request time.
 */
export function toFunctionUrlEvent(req: AdaptedRequest, body: Buffer, requestId: string, now: Date): FunctionUrlEvent {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const rawPath = q === -1 ? url : url.slice(0, q);
  const rawQueryString = q === -1 ? "" : url.slice(q + 1);
  const headers: Record<string, string> = {};
  let cookies: string[] | undefined;
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    if (name === "cookie") {
      for (const c of value.split(";")) {
        const t = c.trim();
        if (t !== "") (cookies ??= []).push(t);
      }
    } else if (name !== HEADERS.requestId) {
      headers[name] = headers[name] === undefined ? value : `${headers[name]},${value}`;
    }
  }
  let queryStringParameters: Record<string, string> | undefined;
  if (rawQueryString !== "") {
    for (const [k, v] of new URLSearchParams(rawQueryString)) {
      queryStringParameters ??= {};
      queryStringParameters[k] = queryStringParameters[k] === undefined ? v : `${queryStringParameters[k]},${v}`;
    }
  }
  const host = headers.host ?? "";
  const domainName = host.replace(/:\d+$/, "");
  const domainPrefix = domainName.split(".", 1)[0] ?? "";
  const forwarded = headers["x-forwarded-for"]?.split(",").map((s) => s.trim()).filter(Boolean);
  // The gateway appends the address it saw: the last entry is the one this platform vouches for.
  const sourceIp = typeof req.ip === "string" && req.ip !== "" ? req.ip : (forwarded?.[forwarded.length - 1] ?? "");
  const event: FunctionUrlEvent = {
    version: "2.0",
    routeKey: "$default",
    rawPath,
    rawQueryString,
    ...(cookies ? { cookies } : {}),
    headers,
    ...(queryStringParameters ? { queryStringParameters } : {}),
    requestContext: {
      accountId: "anonymous",
      apiId: domainPrefix,
      domainName,
      domainPrefix,
      http: { method: req.method ?? "GET", path: rawPath, protocol: `HTTP/${req.httpVersion}`, sourceIp, userAgent: headers["user-agent"] ?? "" },
      requestId,
      routeKey: "$default",
      stage: "$default",
      time: clfTime(now),
      timeEpoch: now.getTime(),
    },
    isBase64Encoded: false,
  };
  if (body.length > 0) {
    const text = isTextType(headers["content-type"]);
    event.body = body.toString(text ? "utf8" : "base64");
    event.isBase64Encoded = !text;
  }
  return event;
}

/** A Lambda result as status, headers (Set-Cookie as a list) and body bytes. */
export interface LambdaResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: Buffer;
}

/**
 * Maps a handler's result to the HTTP response a function URL would send.
 * @throws StratusError FUNCTION_ERROR when `statusCode` is not an HTTP status or `body` is not a string.
 */
export function fromLambdaResult(result: unknown): LambdaResponse {
  const json = { "content-type": "application/json" };
  if (result === undefined || result === null) return { status: 200, headers: json, body: Buffer.alloc(0) };
  if (typeof result !== "object" || !("statusCode" in result)) {
    return { status: 200, headers: json, body: Buffer.from(typeof result === "string" ? result : JSON.stringify(result), "utf8") };
  }
  const r = result as { statusCode: unknown; headers?: unknown; cookies?: unknown; body?: unknown; isBase64Encoded?: unknown };
  const status = Number(r.statusCode);
  if (!Number.isInteger(status) || status < 100 || status > 599) {
    throw new StratusError("FUNCTION_ERROR", `The Lambda handler returned statusCode ${JSON.stringify(r.statusCode)}: not an HTTP status`);
  }
  const headers: Record<string, string | string[]> = {};
  if (r.headers !== null && typeof r.headers === "object") {
    for (const [k, v] of Object.entries(r.headers)) if (v !== undefined && v !== null) headers[k.toLowerCase()] = String(v);
  }
  headers["content-type"] ??= "application/json";
  if (Array.isArray(r.cookies) && r.cookies.length > 0) {
    const set = headers["set-cookie"];
    headers["set-cookie"] = [...(set === undefined ? [] : [String(set)]), ...r.cookies.map(String)];
  }
  let body: Buffer;
  if (r.body === undefined || r.body === null) body = Buffer.alloc(0);
  else if (typeof r.body === "string") body = Buffer.from(r.body, r.isBase64Encoded === true || r.isBase64Encoded === "true" ? "base64" : "utf8");
  else throw new StratusError("FUNCTION_ERROR", `The Lambda handler returned a ${typeof r.body} body: body must be a string (JSON.stringify objects)`);
  return { status, headers, body };
}

/**
 * Wraps a Lambda handler into the runtime's `(req, res, next)` form. The returned handler always answers
 * through `res` and resolves once it has (so it never relies on return-value mapping); what the Lambda
 * handler throws, rejects with or calls back with as an error rejects, and the runtime answers it as a
 * function error.
 */
export function adaptLambdaHandler(handler: unknown, options: LambdaAdapterOptions): (req: unknown, res: unknown) => Promise<void> {
  if (typeof handler !== "function") throw new StratusError("FUNCTION_LOAD_FAILED", `Function "${options.functionName}": the Lambda handler is not a function`);
  const fn = handler as LambdaHandler;
  return async (rawReq: unknown, rawRes: unknown): Promise<void> => {
    const req = rawReq as AdaptedRequest;
    const res = rawRes as ServerResponse;
    const start = Date.now();
    const requestId = String(res.getHeader(HEADERS.requestId) ?? req.headers[HEADERS.requestId] ?? "");
    const event = toFunctionUrlEvent(req, await bodyBytes(req, options.maxBodyBytes), requestId, new Date(start));
    const result = await new Promise<unknown>((resolve, reject) => {
      let settled = false;
      const callback: LambdaCallback = (err, value) => {
        if (settled) return;
        settled = true;
        if (err !== undefined && err !== null) reject(err);
        else resolve(value);
      };
      const context: LambdaContext = {
        functionName: options.functionName,
        functionVersion: "$LATEST",
        invokedFunctionArn: `arn:stratus:function:${options.functionName}`,
        memoryLimitInMB: String(options.memoryMb),
        awsRequestId: requestId,
        logGroupName: "",
        logStreamName: "",
        callbackWaitsForEmptyEventLoop: true,
        getRemainingTimeInMillis: () => Math.max(0, start + options.timeoutMs - Date.now()),
        done: callback,
        succeed: (value) => callback(null, value),
        fail: (err) => callback(err ?? new Error("context.fail()")),
      };
      let returned: unknown;
      try {
        returned = fn(event, context, callback);
      } catch (err) {
        callback(err);
        return;
      }
      // An async handler answers with its promise; a callback-style one (returns undefined) calls back.
      if (returned !== null && (typeof returned === "object" || typeof returned === "function") && typeof (returned as { then?: unknown }).then === "function") {
        (returned as PromiseLike<unknown>).then((v) => callback(null, v), (err: unknown) => callback(err ?? new Error("The Lambda handler rejected")));
      } else if (returned !== undefined) {
        callback(null, returned);
      }
      // A non-async handler that returned nothing answers through callback / context.succeed|fail|done;
      // if it never does, the invocation times out (Lambda would answer null once its event loop is empty,
      // which a shared runtime cannot observe).
    });
    const out = fromLambdaResult(result);
    if (res.headersSent) return;
    res.statusCode = out.status;
    for (const [k, v] of Object.entries(out.headers)) res.setHeader(k, v);
    res.setHeader("content-length", out.body.length);
    res.end(req.method === "HEAD" ? undefined : out.body);
  };
}
