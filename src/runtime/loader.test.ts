import { test } from "node:test";
import assert from "node:assert/strict";
import { listFunctions, selectFunction, type FunctionEntry } from "./loader";
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
