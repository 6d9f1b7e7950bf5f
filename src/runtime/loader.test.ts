import { test } from "node:test";
import assert from "node:assert/strict";
import { readCloudEvent } from "../sdk/index";
import { cloudEventHandler, listFunctions, selectFunction, type FunctionEntry, type Registration } from "./loader";
import { parseFunctionConfig } from "../shared/function-config";
import { defineFunction } from "../sdk/index";

const h = async () => "ok";
const list = (m: unknown) => listFunctions(m, "proj", parseFunctionConfig);
const summary = (es: FunctionEntry[]) => es.map((e) => [e.name, e.exportName, e.error?.code ?? null]);

test("loader forms: table", () => {
  const esm = Object.defineProperty({ hello: defineFunction({ handler: h, config: { timeout: 1000 } }) }, "__esModule", { value: true, enumerable: true });
  const cases: Array<[string, unknown, Array<[string, string, string | null]>]> = [
    ["original CJS object form", { myFunction: { func: h, config: { timeout: 10_000 } } }, [["myFunction", "myFunction", null]]],
    ["handler and definition are synonyms", { a: { handler: h }, b: { definition: h } }, [["a", "a", null], ["b", "b", null]]],
    ["plain function export", { foo: h }, [["foo", "foo", null]]],
    ["module.exports = fn is named after the project", h, [["proj", "default", null]]],
    ["export default fn", { default: h }, [["proj", "default", null]]],
    ["ESM namespace with __esModule and defineFunction", esm, [["hello", "hello", null]]],
    ["non-function exports are ignored", { x: 42, y: { z: 1 }, f: h }, [["f", "f", null]]],
    ["func that is not a function is an error", { bad: { func: "nope" } }, [["bad", "bad", "FUNCTION_LOAD_FAILED"]]],
    ["invalid name", { "9lives": h }, [["9lives", "9lives", "INVALID_FUNCTION_NAME"]]],
    ["names differing only in case", { hello: h, Hello: h }, [["hello", "hello", null], ["Hello", "Hello", "INVALID_FUNCTION_NAME"]]],
    ["bad config", { f: { func: h, config: { timeout: "10" } } }, [["f", "f", "INVALID_CONFIG"]]],
  ];
  for (const [label, mod, expected] of cases) assert.deepEqual(summary(list(mod)), expected, label);
});

test("config errors name the function and the field", () => {
  const [e] = list({ myFn: { func: h, config: { memory: 1, bogus: true } } });
  assert.equal(e!.error!.code, "INVALID_CONFIG");
  assert.match(e!.error!.message, /myFn.*memory.*bogus|myFn.*bogus.*memory/);
  assert.equal((e!.error!.details as unknown[]).length, 2);
});

test("a default export named after an invalid project name says how to fix it", () => {
  const [e] = listFunctions(h, "my.project", parseFunctionConfig);
  assert.equal(e!.error!.code, "INVALID_FUNCTION_NAME");
  assert.match(e!.error!.message, /package\.json/);
});

test("a module without functions fails to load", () => {
  assert.throws(() => list({ a: 1 }), (err: { code?: string }) => err.code === "FUNCTION_LOAD_FAILED");
});

test("selectFunction picks by export name", () => {
  assert.equal(selectFunction({ a: { func: h, config: { timeout: 5 } } }, "a").handler, h);
  assert.deepEqual(selectFunction({ a: { func: h, config: { timeout: 5 } } }, "a").rawConfig, { timeout: 5 });
  assert.equal(selectFunction(h, "default").handler, h);
  assert.equal(selectFunction({ default: h }, "default").handler, h);
  assert.throws(() => selectFunction({ a: h }, "b"), /no function export "b"/);
});

test("functions-framework registrations are functions beside the exports", () => {
  const other = async () => "other";
  const reg = (entries: Array<[string, Registration]>) => new Map(entries);
  const cases: Array<[string, unknown, Map<string, Registration>, Array<[string, string, string | null]>]> = [
    ["only registrations (module.exports stays {})", {}, reg([["helloHttp", { kind: "http", handler: h }]]), [["helloHttp", "functions-framework:helloHttp", null]]],
    ["a cloudEvent registration is listed", {}, reg([["onEvent", { kind: "cloudevent", handler: h }]]), [["onEvent", "functions-framework:onEvent", null]]],
    ["beside exports", { a: h }, reg([["b", { kind: "http", handler: other }]]), [["a", "a", null], ["b", "functions-framework:b", null]]],
    ["exported and registered as the same handler: one function", { a: h }, reg([["a", { kind: "http", handler: h }]]), [["a", "a", null]]],
    ["exported and registered as different handlers: an error", { a: h }, reg([["a", { kind: "http", handler: other }]]), [["a", "a", null], ["a", "functions-framework:a", "FUNCTION_LOAD_FAILED"]]],
    ["a registered non-function is an error", {}, reg([["x", { kind: "http", handler: 5 }]]), [["x", "functions-framework:x", "FUNCTION_LOAD_FAILED"]]],
    ["a registered name differing in case from an export", { hello: h }, reg([["Hello", { kind: "http", handler: other }]]), [["hello", "hello", null], ["Hello", "functions-framework:Hello", "INVALID_FUNCTION_NAME"]]],
  ];
  for (const [label, mod, registered, expected] of cases) assert.deepEqual(summary(listFunctions(mod, "proj", parseFunctionConfig, registered)), expected, label);
  assert.throws(() => listFunctions({}, "proj", parseFunctionConfig, new Map()), /no function/);
  const registered = reg([["b", { kind: "http", handler: other }]]);
  assert.equal(selectFunction({}, "functions-framework:b", registered).handler, other);
  assert.equal(selectFunction({}, "functions-framework:b", registered).rawConfig, undefined);
  assert.throws(() => selectFunction({}, "functions-framework:c", registered), /registers no function "c"/);
});

test("cloudEventHandler: binary and structured mode parsed like defineEventFunction, result → response, 400 on a broken event", async () => {
  const seen: unknown[] = [];
  const sent: Array<[string, unknown]> = [];
  const res = {
    headersSent: false, status: (s: number) => (sent.push(["code", s]), res),
    sendStatus: (s: number) => sent.push(["status", s]), json: (v: unknown) => sent.push(["json", v]), send: (v: unknown) => sent.push(["send", v]),
  };
  const fn = cloudEventHandler((e) => {
    seen.push(e);
    return (e as { data?: { r?: unknown } }).data?.r;
  });
  const headers = { "ce-id": "1", "ce-source": "//src", "ce-type": "t.created", "ce-specversion": "1.0", "ce-subject": "s", "ce-time": "2026-03-01T12:00:00Z", "content-type": "application/json", traceparent: "00-a-b-01" };
  const binary = { headers, body: { ignored: true }, rawBody: Buffer.from('{"r":7}') };
  await fn(binary, res, () => undefined);
  assert.deepEqual(seen[0], { id: "1", source: "//src", type: "t.created", specversion: "1.0", subject: "s", time: "2026-03-01T12:00:00.000Z", datacontenttype: "application/json", data: { r: 7 }, traceparent: "00-a-b-01" });
  assert.deepEqual(seen[0], parsedByReference(binary.headers, binary.rawBody, { traceparent: "00-a-b-01" }), "the event defineEventFunction gets");
  const body = { id: "2", source: "x", type: "y", specversion: "1.0", time: "2026-03-01T12:00:00.000Z", data: { r: "done" } };
  const structured = { headers: { "content-type": "application/cloudevents+json" }, body, rawBody: Buffer.from(JSON.stringify(body)) };
  await fn(structured, res, () => undefined);
  assert.deepEqual(seen[1], body);
  await fn({ headers: {}, body: { id: "3" } }, res, () => undefined);
  assert.deepEqual(seen[2], { id: "3" }, "no CloudEvent marks: a legacy event, the parsed body");
  await fn({ headers: { "ce-id": "4", "ce-specversion": "1.0" }, body: {}, rawBody: Buffer.alloc(0) }, res, () => undefined);
  assert.equal(seen.length, 3, "an invalid CloudEvent never reaches the function");
  assert.deepEqual(sent.slice(0, 3), [["json", 7], ["send", "done"], ["status", 204]]);
  assert.deepEqual(sent[3], ["code", 400]);
  assert.equal((sent[4]?.[1] as { error: { code: string } }).error.code, "INVALID_CLOUDEVENT");
  await assert.rejects(Promise.resolve(cloudEventHandler(() => { throw new Error("bad event"); })({ headers: {}, body: {} }, res, () => undefined)), /bad event/);
});

/** The event the reference SDK (cloudevents' HTTP.toEvent) reads, as a plain object of its defined attributes. */
function parsedByReference(headers: Record<string, string>, raw: Buffer, extra: Record<string, unknown>): Record<string, unknown> {
  const r = readCloudEvent(headers, raw);
  assert.ok(r.ok);
  return { ...Object.fromEntries(Object.entries(r.event).filter(([, v]) => v !== undefined)), ...extra };
}
