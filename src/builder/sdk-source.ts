/**
 * The JavaScript served by the bundler for `import … from "stratus"` / `"stratus/sdk"`: the behaviour
 * of src/sdk/index.ts without types or imports, so user projects install nothing. Tests check both agree
 * (src/builder/bundle.test.ts, src/runtime/lambda-adapter.test.ts, src/sdk/event-function.test.ts).
 *
 * `defineEventFunction` parses CloudEvents with a copy of src/shared/cloudevent-parse.ts, not with the
 * `cloudevents` package the reference uses: bundled, that package is ~67 KB minified (ajv, uuid, util
 * polyfills) and ~100 ms of module load on this machine (measured: esbuild --minify of `HTTP` +
 * `CloudEvent`, then `import()` of the result, three runs 95–135 ms) — paid by every cold start of every
 * event function. The copy is ~10 KB of source (3 KB of it the two URI regexes) and follows the package's rules; the equality test runs one table of
 * binary, structured and invalid requests through the package, the TypeScript parser and this module.
 */
import { NOT_URI_FRAGMENT_RE, URI_RE, URI_REFERENCE_RE } from "../shared/cloudevent-parse";

export const SDK_RUNTIME_SOURCE = `const FUNCTION_BRAND = Symbol.for("stratus.function");
export { FUNCTION_BRAND };
export function defineFunction(definition) {
  if (definition !== null && typeof definition === "object") {
    Object.defineProperty(definition, FUNCTION_BRAND, { value: true, enumerable: false });
  }
  return definition;
}
export function defineLambdaHandler(handler, config = {}) {
  return defineFunction({ handler, config: { ...config, handlerType: "lambda" } });
}

// CloudEvents (see src/shared/cloudevent-parse.ts for the rules).
const URI_REFERENCE_RE = ${URI_REFERENCE_RE.toString()};
const URI_RE = ${URI_RE.toString()};
const NOT_URI_FRAGMENT_RE = ${NOT_URI_FRAGMENT_RE.toString()};
const JSON_TYPES = new Set(["application/json", "application/cloudevents+json", "application/json; charset=utf-8", "application/cloudevents+json; charset=utf-8"]);
const BINARY_ATTRIBUTES = [
  ["ce-type", "type"], ["ce-specversion", "specversion"], ["ce-source", "source"], ["ce-id", "id"], ["ce-time", "time"],
  ["ce-dataschema", "dataschema"], ["ce-subject", "subject"], ["datacontenttype", "datacontenttype"], ["content-type", "datacontenttype"],
];
const STRUCTURED_ATTRIBUTES = ["type", "specversion", "source", "id", "time", "dataschema", "datacontenttype", "subject", "data", "data_base64"];
const CORE = ["id", "time", "type", "source", "specversion", "datacontenttype", "subject", "datacontentencoding", "dataschema", "data_base64", "schemaurl", "data"];
class NotAnEvent extends Error {}
const one = (v) => (Array.isArray(v) ? v.join(", ") : v);
function isoTime(v) {
  const d = new Date(Date.parse(v));
  return (Number.isNaN(d.getTime()) ? new Date() : d).toISOString();
}
function parseJson(payload) {
  if (typeof payload === "string" && !/^[[|{|"]/.test(payload)) payload = '"' + payload + '"';
  if (payload === null || payload === undefined) throw new NotAnEvent("null or undefined payload");
  if (typeof payload !== "string" && typeof payload !== "object") throw new NotAnEvent("invalid payload type, allowed are: string or object");
  return typeof payload === "string" ? JSON.parse(payload) : payload;
}
function cloudEventBody(headers, bytes) {
  if (bytes === undefined || bytes.length === 0) return undefined;
  const ct = (one(headers["content-type"]) ?? "").toLowerCase();
  if (ct.startsWith("application/cloudevents") || ct.includes("json") || ct.startsWith("text/")) return bytes.toString("utf8");
  return bytes;
}
function construct(p) {
  const e = {};
  e.id = p.id || globalThis.crypto.randomUUID();
  e.time = p.time || new Date().toISOString();
  e.type = p.type;
  e.source = p.source;
  e.specversion = p.specversion || "1.0";
  for (const k of ["datacontenttype", "subject", "datacontentencoding", "dataschema"]) e[k] = p[k];
  let data;
  e.data_base64 = p.data_base64;
  if (e.data_base64) data = Uint8Array.from(globalThis.atob(e.data_base64), (c) => c.charCodeAt(0));
  e.schemaurl = p.schemaurl;
  if (ArrayBuffer.isView(p.data)) e.data_base64 = Buffer.from(p.data).toString("base64");
  e.data = p.data !== undefined ? p.data : data;
  if (e.specversion === "1.0" && e.schemaurl) throw new NotAnEvent("cannot set schemaurl on version 1.0 event");
  for (const k of Object.keys(p)) if (!CORE.includes(k)) e[k] = p[k];
  if (e.specversion !== "1.0") throw new NotAnEvent("unsupported specversion " + JSON.stringify(e.specversion) + " (1.0 only)");
  for (const k of ["id", "source", "type"]) {
    if (typeof e[k] !== "string" || e[k].length === 0) throw new NotAnEvent('invalid payload: "' + k + '" must be a non-empty string');
  }
  if (!URI_REFERENCE_RE.test(e.source)) throw new NotAnEvent('invalid payload: "source" must be a URI reference');
  for (const k of ["datacontenttype", "dataschema", "subject", "data_base64"]) {
    const v = e[k];
    if (v !== undefined && v !== null && (typeof v !== "string" || (k !== "data_base64" && v.length === 0))) throw new NotAnEvent('invalid payload: "' + k + '" must be a non-empty string');
  }
  if (typeof e.dataschema === "string" && !(NOT_URI_FRAGMENT_RE.test(e.dataschema) && URI_RE.test(e.dataschema))) throw new NotAnEvent('invalid payload: "dataschema" must be a URI');
  for (const k in e) if (!/^[a-z0-9]+$/.test(k) && k !== "data_base64") throw new NotAnEvent('invalid attribute name: "' + k + '"');
  for (const k of Object.keys(e)) if (e[k] === undefined) delete e[k];
  return Object.freeze(e);
}
export function readCloudEvent(headers, bytes) {
  const body = cloudEventBody(headers, bytes);
  try {
    const ct = one(headers["content-type"]);
    if (ct?.startsWith("application/cloudevents-batch+json")) throw new NotAnEvent("batch mode is not supported: send one event per request");
    if (ct?.startsWith("application/cloudevents")) {
      if (!body) throw new NotAnEvent("payload is null or undefined");
      if (!JSON_TYPES.has(ct)) throw new NotAnEvent("invalid content type " + ct);
      const incoming = { ...parseJson(typeof body === "string" ? body : body.toString("utf8")) };
      const p = {};
      for (const k of STRUCTURED_ATTRIBUTES) {
        if (incoming[k]) p[k] = k === "time" ? isoTime(incoming[k]) : incoming[k];
        delete incoming[k];
      }
      Object.assign(p, incoming);
      if (p.data_base64 || p.datacontentencoding === "base64") {
        const d = p.data_base64 || p.data;
        p.data = new Uint32Array(Buffer.from(d, "base64"));
        delete p.data_base64;
        delete p.datacontentencoding;
      }
      return { ok: true, event: construct(p) };
    }
    if (!one(headers["ce-id"])) throw new NotAnEvent("no cloud event detected");
    const rest = {};
    for (const k of Object.keys(headers)) rest[k] = one(headers[k]);
    const p = {};
    for (const [header, attr] of BINARY_ATTRIBUTES) {
      const v = rest[header];
      if (v) {
        p[attr] = attr === "time" ? isoTime(v) : v;
        delete rest[header];
      }
    }
    for (const k of Object.keys(rest)) if (k.startsWith("ce-")) p[k.slice(3)] = rest[k];
    let data = body;
    const type = p.datacontenttype;
    if (body && type !== undefined && JSON_TYPES.has(type)) data = parseJson(body);
    if (p.datacontenttype === "application/json" && p.datacontentencoding === "base64") delete p.datacontentencoding;
    return { ok: true, event: construct({ ...p, data }) };
  } catch (err) {
    return { ok: false, message: err.message };
  }
}
export const INVALID_CLOUDEVENT = "INVALID_CLOUDEVENT";
export function defineEventFunction(handler, config = {}) {
  const http = async (req, res) => {
    const requestId = String(req.headers["x-stratus-request-id"] ?? "");
    const parsed = readCloudEvent(req.headers, req.rawBody);
    if (!parsed.ok) {
      res.status(400).json({ error: { code: INVALID_CLOUDEVENT, message: "Not a CloudEvent: " + parsed.message, requestId } });
      return;
    }
    const h = req.headers;
    const one = (v) => (typeof v === "string" && v !== "" ? v : null);
    const context = {
      invocationId: one(h["x-stratus-invocation-id"]), attempt: Number(one(h["x-stratus-attempt"]) ?? 1) || 1,
      trigger: one(h["x-stratus-trigger"]), requestId, req, res,
    };
    const result = await handler(parsed.event, context);
    if (res.headersSent) return;
    if (result === undefined || result === null) res.status(204).end();
    else if (typeof result === "number") res.json(result);
    else res.send(result);
  };
  return defineFunction({ handler: http, config });
}
`;
