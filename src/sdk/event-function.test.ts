// defineEventFunction and the CloudEvent parsers: one table of binary, structured and invalid requests
// through the `cloudevents` SDK (the reference, src/sdk), the TypeScript parser the runtime uses
// (src/shared/cloudevent-parse.ts) and the parser in the SDK served to bundles (src/builder/sdk-source.ts);
// then the handler's answers (204/200, 400 before the handler, a throw propagates) for both SDKs.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, test } from "node:test";
import { SDK_RUNTIME_SOURCE } from "../builder/sdk-source";
import { cloudEventBody, parseCloudEvent, type CloudEventParse } from "../shared/cloudevent-parse";
import { FUNCTION_BRAND, defineEventFunction, readCloudEvent, type EventContext } from "./index";

type Headers = Record<string, string>;
type Reader = (headers: Headers, bytes: Buffer | undefined) => CloudEventParse;

let dir = "";
let served: { readCloudEvent: Reader; defineEventFunction: typeof defineEventFunction; INVALID_CLOUDEVENT: string };
before(async () => {
  dir = mkdtempSync(join(tmpdir(), "st-ce-"));
  const file = join(dir, "sdk.mjs");
  writeFileSync(file, SDK_RUNTIME_SOURCE);
  served = (await import(pathToFileURL(file).href)) as typeof served;
});
after(() => rmSync(dir, { recursive: true, force: true }));

const READERS: Array<[string, () => Reader]> = [
  ["reference (cloudevents SDK)", () => readCloudEvent],
  ["runtime parser", () => (h, b) => parseCloudEvent(h, cloudEventBody(h, b))],
  ["served SDK", () => served.readCloudEvent],
];

const ce = { "ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "stratus://functions/f/triggers/0", "ce-type": "io.stratus.schedule.fired" };
const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const T = "2026-03-01T12:00:00.000Z";

/** [name, headers, body, expected event (with time/id placeholders) or an Error for "not a CloudEvent"]. */
const CASES: Array<[string, Headers, Buffer | undefined, Record<string, unknown> | Error]> = [
  ["binary JSON with subject, time and an extension", { ...ce, "ce-time": T, "ce-subject": "s", "ce-partition": "7", "content-type": "application/json" }, json({ a: 1 }),
    { ...{ id: "e-1", source: ce["ce-source"], type: ce["ce-type"], specversion: "1.0" }, time: T, subject: "s", partition: "7", datacontenttype: "application/json", data: { a: 1 } }],
  ["binary: time with an offset is normalized to UTC", { ...ce, "ce-time": "2026-03-01T13:00:00+01:00", "content-type": "application/json; charset=utf-8" }, json([1, 2]),
    { id: "e-1", source: ce["ce-source"], type: ce["ce-type"], specversion: "1.0", time: T, datacontenttype: "application/json; charset=utf-8", data: [1, 2] }],
  ["binary: no ce-time → now; no specversion → 1.0", { "ce-id": "e-2", "ce-source": "/x", "ce-type": "t", "content-type": "application/json" }, json({}),
    { id: "e-2", source: "/x", type: "t", specversion: "1.0", time: "<now>", datacontenttype: "application/json", data: {} }],
  ["binary: an unparsable ce-time becomes now", { ...ce, "ce-time": "yesterday", "content-type": "text/plain" }, Buffer.from("hi"),
    { id: "e-1", source: ce["ce-source"], type: ce["ce-type"], specversion: "1.0", time: "<now>", datacontenttype: "text/plain", data: "hi" }],
  ["binary: a JSON number reads as a string (the SDK's rule)", { ...ce, "ce-time": T, "content-type": "application/json" }, Buffer.from("5"),
    { id: "e-1", source: ce["ce-source"], type: ce["ce-type"], specversion: "1.0", time: T, datacontenttype: "application/json", data: "5" }],
  ["binary: octet-stream stays bytes, with data_base64", { ...ce, "ce-time": T, "content-type": "application/octet-stream" }, Buffer.from([0, 255, 7]),
    { id: "e-1", source: ce["ce-source"], type: ce["ce-type"], specversion: "1.0", time: T, datacontenttype: "application/octet-stream", data: Buffer.from([0, 255, 7]), data_base64: "AP8H" }],
  ["binary: image/png bytes", { ...ce, "ce-time": T, "content-type": "image/png" }, Buffer.from([137, 80]),
    { id: "e-1", source: ce["ce-source"], type: ce["ce-type"], specversion: "1.0", time: T, datacontenttype: "image/png", data: Buffer.from([137, 80]), data_base64: "iVA=" }],
  ["binary: no body → no data", { ...ce, "ce-time": T }, undefined,
    { id: "e-1", source: ce["ce-source"], type: ce["ce-type"], specversion: "1.0", time: T }],
  ["binary: a dataschema that is a URI", { ...ce, "ce-time": T, "ce-dataschema": "https://example.com/s.json" }, undefined,
    { id: "e-1", source: ce["ce-source"], type: ce["ce-type"], specversion: "1.0", time: T, dataschema: "https://example.com/s.json" }],
  ["binary: missing ce-source", { "ce-id": "1", "ce-type": "t", "ce-specversion": "1.0" }, undefined, new Error()],
  ["binary: missing ce-type", { "ce-id": "1", "ce-source": "/s", "ce-specversion": "1.0" }, undefined, new Error()],
  ["binary: a source that is no URI reference", { ...ce, "ce-source": "has spaces in it" }, undefined, new Error()],
  ["binary: an extension name with a dash", { ...ce, "ce-my-ext": "1" }, undefined, new Error()],
  ["binary: schemaurl on a 1.0 event", { ...ce, "ce-schemaurl": "https://x/s" }, undefined, new Error()],
  ["binary: specversion 0.3", { ...ce, "ce-specversion": "0.3" }, undefined, new Error()],
  ["binary: a dataschema that is not a URI", { ...ce, "ce-dataschema": "schema" }, undefined, new Error()],
  ["binary: an empty ce-subject", { ...ce, "ce-subject": "" }, undefined, new Error()],
  ["binary: JSON that does not parse", { ...ce, "content-type": "application/json" }, Buffer.from("{nope"), new Error()],
  ["structured: every attribute, an extension, JSON data", { "content-type": "application/cloudevents+json; charset=utf-8" },
    json({ specversion: "1.0", id: "s-1", source: "urn:x:y", type: "com.example.created", time: "2026-03-01T12:00:00Z", subject: "obj/1", datacontenttype: "application/json", data: { r: 7 }, traceparent: "00-abc-def-01" }),
    { id: "s-1", source: "urn:x:y", type: "com.example.created", specversion: "1.0", time: T, subject: "obj/1", datacontenttype: "application/json", data: { r: 7 }, traceparent: "00-abc-def-01" }],
  ["structured: data_base64", { "content-type": "application/cloudevents+json" }, json({ specversion: "1.0", id: "s-2", source: "/s", type: "t", time: T, data_base64: "AQID" }),
    { id: "s-2", source: "/s", type: "t", specversion: "1.0", time: T, data: new Uint32Array([1, 2, 3]), data_base64: "AQID" }],
  ["structured: no id → a random one", { "content-type": "application/cloudevents+json" }, json({ specversion: "1.0", source: "/s", type: "t", time: T }),
    { id: "<random>", source: "/s", type: "t", specversion: "1.0", time: T }],
  ["structured: no type", { "content-type": "application/cloudevents+json" }, json({ specversion: "1.0", id: "1", source: "/s" }), new Error()],
  ["structured: a numeric id", { "content-type": "application/cloudevents+json" }, json({ specversion: "1.0", id: 5, source: "/s", type: "t" }), new Error()],
  ["structured: not JSON", { "content-type": "application/cloudevents+json" }, Buffer.from("{oops"), new Error()],
  ["structured: no body", { "content-type": "application/cloudevents+json" }, undefined, new Error()],
  ["structured: a content type it cannot read", { "content-type": "application/cloudevents+xml" }, Buffer.from("<e/>"), new Error()],
  ["batch mode", { "content-type": "application/cloudevents-batch+json" }, json([{ specversion: "1.0", id: "1", source: "/s", type: "t" }]), new Error()],
  ["a plain JSON request", { "content-type": "application/json" }, json({ id: "1", source: "/s", type: "t" }), new Error()],
  ["no headers at all", {}, undefined, new Error()],
];

/** A plain object of the event's defined attributes, with "now"/random placeholders applied. */
function normalized(event: object, expected: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = Object.fromEntries(Object.entries(event).filter(([, v]) => v !== undefined));
  if (expected.time === "<now>") {
    assert.ok(Math.abs(Date.parse(out.time as string) - Date.now()) < 60_000, `time ${String(out.time)} is now`);
    assert.equal(new Date(out.time as string).toISOString(), out.time);
    out.time = "<now>";
  }
  if (expected.id === "<random>") {
    assert.match(out.id as string, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    out.id = "<random>";
  }
  return out;
}

test("the three CloudEvent parsers agree on every case (binary, structured, invalid)", () => {
  for (const [name, headers, body, want] of CASES) {
    for (const [impl, reader] of READERS) {
      const got = reader()(headers, body);
      if (want instanceof Error) {
        assert.equal(got.ok, false, `${impl}: ${name} must be refused`);
        if (!got.ok) assert.ok(got.message.length > 0, `${impl}: ${name} says why`);
      } else {
        assert.ok(got.ok, `${impl}: ${name}: ${got.ok ? "" : got.message}`);
        assert.ok(Object.isFrozen(got.event), `${impl}: ${name}: frozen`);
        assert.deepEqual(normalized(got.event, want), want, `${impl}: ${name}`);
      }
    }
  }
});

/** A request/response pair with what the handler uses (Express's API subset). */
function exchange(headers: Headers, body?: Buffer) {
  const sent: { status: number; body?: unknown; ended: boolean } = { status: 200, ended: false };
  const res = {
    headersSent: false,
    status(s: number) { sent.status = s; return res; },
    json(v: unknown) { sent.body = v; sent.ended = true; res.headersSent = true; return res; },
    send(v: unknown) { sent.body = v; sent.ended = true; res.headersSent = true; return res; },
    end() { sent.ended = true; res.headersSent = true; return res; },
  };
  const req = { headers: { "x-stratus-request-id": "rid-1", ...headers }, rawBody: body ?? Buffer.alloc(0) };
  return { req, res, sent };
}

test("defineEventFunction (src/sdk and the served SDK): typed event and context; 204/200; 400 before the handler; a throw propagates", async () => {
  for (const [impl, define] of [["reference", defineEventFunction], ["served", () => served.defineEventFunction]] as const) {
    const defineFn = impl === "reference" ? define : (define as () => typeof defineEventFunction)();
    const calls: Array<{ data: unknown; context: Omit<EventContext, "req" | "res"> }> = [];
    const def = defineFn<{ n: number }>(async (event, context) => {
      const { req: _req, res: _res, ...rest } = context;
      calls.push({ data: event.data, context: rest });
      if (event.data?.n === 0) throw new Error("boom");
      return event.data?.n === 2 ? { doubled: 4 } : undefined;
    }, { timeout: 1000 });
    assert.equal((def as unknown as Record<symbol, unknown>)[FUNCTION_BRAND], true, impl);
    assert.deepEqual(def.config, { timeout: 1000 }, impl);
    const handler = def.handler as unknown as (req: unknown, res: unknown) => Promise<void>;

    const dispatched = { ...ce, "ce-time": T, "content-type": "application/json", "x-stratus-invocation-id": "inv-9", "x-stratus-attempt": "2", "x-stratus-trigger": "f#0:abc" };
    let x = exchange(dispatched, json({ n: 1 }));
    await handler(x.req, x.res);
    assert.deepEqual(x.sent, { status: 204, ended: true }, `${impl}: undefined → 204`);
    assert.deepEqual(calls[0], { data: { n: 1 }, context: { invocationId: "inv-9", attempt: 2, trigger: "f#0:abc", requestId: "rid-1" } }, impl);

    x = exchange({ "content-type": "application/cloudevents+json" }, json({ specversion: "1.0", id: "d", source: "/s", type: "t", data: { n: 2 } }));
    await handler(x.req, x.res);
    assert.deepEqual(x.sent, { status: 200, body: { doubled: 4 }, ended: true }, `${impl}: a value → 200`);
    assert.deepEqual(calls[1]?.context, { invocationId: null, attempt: 1, trigger: null, requestId: "rid-1" }, `${impl}: a direct call`);

    x = exchange({ "content-type": "application/json" }, json({ n: 3 }));
    await handler(x.req, x.res);
    assert.equal(x.sent.status, 400, impl);
    const err = (x.sent.body as { error: { code: string; message: string; requestId: string } }).error;
    assert.equal(err.code, "INVALID_CLOUDEVENT", impl);
    assert.equal(err.requestId, "rid-1", impl);
    assert.match(err.message, /^Not a CloudEvent: no cloud event detected/, impl);
    assert.equal(calls.length, 2, `${impl}: the handler was not called`);

    x = exchange({ ...ce, "content-type": "application/json" }, json({ n: 0 }));
    await assert.rejects(handler(x.req, x.res), /boom/, `${impl}: the runtime turns this into 500 FUNCTION_ERROR`);
    assert.equal(x.sent.ended, false, impl);
  }
  assert.equal(served.INVALID_CLOUDEVENT, "INVALID_CLOUDEVENT");
});
