/**
 * Reads a CloudEvents 1.0 event from an HTTP request (binary or structured content mode) the way the
 * `cloudevents` SDK does (`HTTP.toEvent(message)` followed by `event.validate()`, v10.0.0), without the
 * SDK: it weighs ~70 KB bundled and ~100 ms to load (ajv, uuid, util polyfills), which every instance
 * would pay at cold start. Used by the runtime (functions-framework `cloudEvent()` functions) and, as
 * the same algorithm in JavaScript, by the function SDK served to bundles (src/builder/sdk-source.ts);
 * the reference implementation (src/sdk/index.ts) calls the SDK itself, and a test runs one table of
 * requests through all three (src/sdk/event-function.test.ts).
 *
 * The SDK's rules, kept on purpose (they are what a user of the SDK gets elsewhere):
 *  - mode: `content-type` starting with `application/cloudevents-batch+json` is batch (refused here),
 *    with `application/cloudevents` structured, else a `ce-id` header makes it binary, else no event;
 *  - binary: `ce-type|specversion|source|id|time|dataschema|subject` and `content-type` are attributes,
 *    every other `ce-*` header an extension; the body is parsed as JSON only when `content-type` is
 *    exactly `application/json` or `application/cloudevents+json` (optionally `; charset=utf-8`), kept as
 *    bytes (`data_base64` set) for `application/octet-stream` and other binary types;
 *  - JSON data that does not start with `[`, `{` or `"` is read as a string (`5` → `"5"`);
 *  - `time`, when given, is normalized to RFC 3339 UTC (an unparsable one becomes now); absent, it is now;
 *    an absent `id` in structured mode becomes a random UUID;
 *  - valid means: `id`, `source`, `type` non-empty strings, `source` a URI reference, `dataschema` a
 *    URI, attribute names `[a-z0-9]+`; plus, here and in the reference, `specversion` exactly `1.0`.
 *
 * How the body reaches the parser (the same in all three): no bytes → no data; structured mode, or
 * binary mode with a JSON or `text/*` content type → the bytes as UTF-8; otherwise the bytes.
 */

/** A CloudEvents 1.0 event as delivered: the attributes, extensions, and `data` (see the file comment). */
export interface ParsedCloudEvent<T = unknown> {
  readonly id: string;
  readonly source: string;
  readonly type: string;
  readonly specversion: string;
  /** RFC 3339, UTC. */
  readonly time: string;
  readonly subject?: string;
  readonly datacontenttype?: string;
  readonly dataschema?: string;
  readonly data?: T;
  /** Set when the data is bytes (base64 of them). */
  readonly data_base64?: string;
  /** Extension attributes. */
  readonly [extension: string]: unknown;
}

/** What `parseCloudEvent` returns: the event, or why the request is not a valid CloudEvent. */
export type CloudEventParse = { readonly ok: true; readonly event: ParsedCloudEvent } | { readonly ok: false; readonly message: string };

/** ajv-formats 2.1.1 `fullFormats["uri-reference"]` (what the SDK's schema checks `source` with). MIT. */
export const URI_REFERENCE_RE = /^(?:[a-z][a-z0-9+\-.]*:)?(?:\/?\/(?:(?:[a-z0-9\-._~!$&'()*+,;=:]|%[0-9a-f]{2})*@)?(?:\[(?:(?:(?:(?:[0-9a-f]{1,4}:){6}|::(?:[0-9a-f]{1,4}:){5}|(?:[0-9a-f]{1,4})?::(?:[0-9a-f]{1,4}:){4}|(?:(?:[0-9a-f]{1,4}:){0,1}[0-9a-f]{1,4})?::(?:[0-9a-f]{1,4}:){3}|(?:(?:[0-9a-f]{1,4}:){0,2}[0-9a-f]{1,4})?::(?:[0-9a-f]{1,4}:){2}|(?:(?:[0-9a-f]{1,4}:){0,3}[0-9a-f]{1,4})?::[0-9a-f]{1,4}:|(?:(?:[0-9a-f]{1,4}:){0,4}[0-9a-f]{1,4})?::)(?:[0-9a-f]{1,4}:[0-9a-f]{1,4}|(?:(?:25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d\d?))|(?:(?:[0-9a-f]{1,4}:){0,5}[0-9a-f]{1,4})?::[0-9a-f]{1,4}|(?:(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{1,4})?::)|[Vv][0-9a-f]+\.[a-z0-9\-._~!$&'()*+,;=:]+)\]|(?:(?:25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d\d?)|(?:[a-z0-9\-._~!$&'"()*+,;=]|%[0-9a-f]{2})*)(?::\d*)?(?:\/(?:[a-z0-9\-._~!$&'"()*+,;=:@]|%[0-9a-f]{2})*)*|\/(?:(?:[a-z0-9\-._~!$&'"()*+,;=:@]|%[0-9a-f]{2})+(?:\/(?:[a-z0-9\-._~!$&'"()*+,;=:@]|%[0-9a-f]{2})*)*)?|(?:[a-z0-9\-._~!$&'"()*+,;=:@]|%[0-9a-f]{2})+(?:\/(?:[a-z0-9\-._~!$&'"()*+,;=:@]|%[0-9a-f]{2})*)*)?(?:\?(?:[a-z0-9\-._~!$&'"()*+,;=:@/?]|%[0-9a-f]{2})*)?(?:#(?:[a-z0-9\-._~!$&'"()*+,;=:@/?]|%[0-9a-f]{2})*)?$/i;
/** ajv-formats 2.1.1 `fullFormats.uri` (for `dataschema`), used with NOT_URI_FRAGMENT_RE. MIT. */
export const URI_RE = /^(?:[a-z][a-z0-9+\-.]*:)(?:\/?\/(?:(?:[a-z0-9\-._~!$&'()*+,;=:]|%[0-9a-f]{2})*@)?(?:\[(?:(?:(?:(?:[0-9a-f]{1,4}:){6}|::(?:[0-9a-f]{1,4}:){5}|(?:[0-9a-f]{1,4})?::(?:[0-9a-f]{1,4}:){4}|(?:(?:[0-9a-f]{1,4}:){0,1}[0-9a-f]{1,4})?::(?:[0-9a-f]{1,4}:){3}|(?:(?:[0-9a-f]{1,4}:){0,2}[0-9a-f]{1,4})?::(?:[0-9a-f]{1,4}:){2}|(?:(?:[0-9a-f]{1,4}:){0,3}[0-9a-f]{1,4})?::[0-9a-f]{1,4}:|(?:(?:[0-9a-f]{1,4}:){0,4}[0-9a-f]{1,4})?::)(?:[0-9a-f]{1,4}:[0-9a-f]{1,4}|(?:(?:25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d\d?))|(?:(?:[0-9a-f]{1,4}:){0,5}[0-9a-f]{1,4})?::[0-9a-f]{1,4}|(?:(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{1,4})?::)|[Vv][0-9a-f]+\.[a-z0-9\-._~!$&'()*+,;=:]+)\]|(?:(?:25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d\d?)|(?:[a-z0-9\-._~!$&'()*+,;=]|%[0-9a-f]{2})*)(?::\d*)?(?:\/(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})*)*|\/(?:(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})+(?:\/(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})*)*)?|(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})+(?:\/(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})*)*)(?:\?(?:[a-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9a-f]{2})*)?(?:#(?:[a-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9a-f]{2})*)?$/i;
export const NOT_URI_FRAGMENT_RE = /\/|:/;

type Headers = Readonly<Record<string, string | string[] | undefined>>;
type Obj = Record<string, unknown>;

/** Content types the SDK parses as JSON (its `parserByContentType`, exact match). */
const JSON_TYPES = new Set(["application/json", "application/cloudevents+json", "application/json; charset=utf-8", "application/cloudevents+json; charset=utf-8"]);
/** Binary-mode header → attribute, in the SDK's order (`content-type` last, so it wins over `datacontenttype`). */
const BINARY_ATTRIBUTES: ReadonlyArray<readonly [string, string]> = [
  ["ce-type", "type"], ["ce-specversion", "specversion"], ["ce-source", "source"], ["ce-id", "id"], ["ce-time", "time"],
  ["ce-dataschema", "dataschema"], ["ce-subject", "subject"], ["datacontenttype", "datacontenttype"], ["content-type", "datacontenttype"],
];
const STRUCTURED_ATTRIBUTES = ["type", "specversion", "source", "id", "time", "dataschema", "datacontenttype", "subject", "data", "data_base64"];
/** Properties the CloudEvent constructor takes out before the rest become extensions. */
const CORE = ["id", "time", "type", "source", "specversion", "datacontenttype", "subject", "datacontentencoding", "dataschema", "data_base64", "schemaurl", "data"];

class NotAnEvent extends Error {}

const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(", ") : v);

/** The SDK's DateParser: RFC 3339 UTC, or now when it does not parse. */
function isoTime(v: unknown): string {
  const d = new Date(Date.parse(v as string));
  return (Number.isNaN(d.getTime()) ? new Date() : d).toISOString();
}

/** The SDK's JSONParser. */
function parseJson(payload: unknown): unknown {
  if (typeof payload === "string" && !/^[[|{|"]/.test(payload)) payload = `"${payload}"`;
  if (payload === null || payload === undefined) throw new NotAnEvent("null or undefined payload");
  if (typeof payload !== "string" && typeof payload !== "object") throw new NotAnEvent("invalid payload type, allowed are: string or object");
  return typeof payload === "string" ? JSON.parse(payload) : payload;
}

/** The body as the parser takes it (see the file comment). */
export function cloudEventBody(headers: Headers, bytes: Buffer | undefined): string | Buffer | undefined {
  if (bytes === undefined || bytes.length === 0) return undefined;
  const ct = (one(headers["content-type"]) ?? "").toLowerCase();
  if (ct.startsWith("application/cloudevents") || ct.includes("json") || ct.startsWith("text/")) return bytes.toString("utf8");
  return bytes;
}

/** The CloudEvent constructor (non-strict) and then `validate()`. */
function construct(p: Obj): ParsedCloudEvent {
  const e: Obj = {};
  e.id = p.id || globalThis.crypto.randomUUID();
  e.time = p.time || new Date().toISOString();
  e.type = p.type;
  e.source = p.source;
  e.specversion = p.specversion || "1.0";
  for (const k of ["datacontenttype", "subject", "datacontentencoding", "dataschema"]) e[k] = p[k];
  let data: unknown;
  e.data_base64 = p.data_base64;
  if (e.data_base64) data = Uint8Array.from(globalThis.atob(e.data_base64 as string), (c) => c.charCodeAt(0));
  e.schemaurl = p.schemaurl;
  if (ArrayBuffer.isView(p.data)) e.data_base64 = Buffer.from(p.data as Uint8Array).toString("base64");
  e.data = p.data !== undefined ? p.data : data;
  if (e.specversion === "1.0" && e.schemaurl) throw new NotAnEvent("cannot set schemaurl on version 1.0 event");
  for (const k of Object.keys(p)) if (!CORE.includes(k)) e[k] = p[k];
  if (e.specversion !== "1.0") throw new NotAnEvent(`unsupported specversion ${JSON.stringify(e.specversion)} (1.0 only)`);
  for (const k of ["id", "source", "type"]) {
    if (typeof e[k] !== "string" || (e[k] as string).length === 0) throw new NotAnEvent(`invalid payload: "${k}" must be a non-empty string`);
  }
  if (!URI_REFERENCE_RE.test(e.source as string)) throw new NotAnEvent('invalid payload: "source" must be a URI reference');
  for (const k of ["datacontenttype", "dataschema", "subject", "data_base64"]) {
    const v = e[k];
    if (v !== undefined && v !== null && (typeof v !== "string" || (k !== "data_base64" && v.length === 0))) throw new NotAnEvent(`invalid payload: "${k}" must be a non-empty string`);
  }
  if (typeof e.dataschema === "string" && !(NOT_URI_FRAGMENT_RE.test(e.dataschema) && URI_RE.test(e.dataschema))) throw new NotAnEvent('invalid payload: "dataschema" must be a URI');
  // `time` needs no check: it is always an ISO string by now (isoTime, or now).
  for (const k in e) if (!/^[a-z0-9]+$/.test(k) && k !== "data_base64") throw new NotAnEvent(`invalid attribute name: "${k}"`);
  for (const k of Object.keys(e)) if (e[k] === undefined) delete e[k];
  return Object.freeze(e) as ParsedCloudEvent;
}

/**
 * The CloudEvent in a request (lower-case header names, as Node gives them; the body from
 * `cloudEventBody`). Never throws.
 */
export function parseCloudEvent(headers: Headers, body: string | Buffer | undefined): CloudEventParse {
  try {
    const ct = one(headers["content-type"]);
    if (ct?.startsWith("application/cloudevents-batch+json")) throw new NotAnEvent("batch mode is not supported: send one event per request");
    if (ct?.startsWith("application/cloudevents")) {
      if (!body) throw new NotAnEvent("payload is null or undefined");
      if (!JSON_TYPES.has(ct)) throw new NotAnEvent(`invalid content type ${ct}`);
      const incoming = { ...(parseJson(typeof body === "string" ? body : body.toString("utf8")) as Obj) };
      const p: Obj = {};
      for (const k of STRUCTURED_ATTRIBUTES) {
        if (incoming[k]) p[k] = k === "time" ? isoTime(incoming[k]) : incoming[k];
        delete incoming[k];
      }
      Object.assign(p, incoming);
      if (p.data_base64 || p.datacontentencoding === "base64") {
        const d = p.data_base64 || p.data;
        p.data = new Uint32Array(Buffer.from(d as string, "base64"));
        delete p.data_base64;
        delete p.datacontentencoding;
      }
      return { ok: true, event: construct(p) };
    }
    if (!one(headers["ce-id"])) throw new NotAnEvent("no cloud event detected");
    const rest: Record<string, string | undefined> = {};
    for (const k of Object.keys(headers)) rest[k] = one(headers[k]);
    const p: Obj = {};
    for (const [header, attr] of BINARY_ATTRIBUTES) {
      const v = rest[header];
      if (v) {
        p[attr] = attr === "time" ? isoTime(v) : v;
        delete rest[header];
      }
    }
    for (const k of Object.keys(rest)) if (k.startsWith("ce-")) p[k.slice(3)] = rest[k];
    let data: unknown = body;
    const type = p.datacontenttype as string | undefined;
    if (body && type !== undefined && JSON_TYPES.has(type)) data = parseJson(body);
    if (p.datacontenttype === "application/json" && p.datacontentencoding === "base64") delete p.datacontentencoding;
    return { ok: true, event: construct({ ...p, data }) };
  } catch (err) {
    return { ok: false, message: (err as Error).message };
  }
}
