import { test } from "node:test";
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { bodyKindOf, charsetOf, parseBody } from "./parse-body";

test("bodyKindOf and charsetOf: media types as body-parser's type options match them", () => {
  const kinds: Array<[string | undefined, string]> = [
    ["application/json", "json"], ["Application/JSON; charset=utf-8", "json"], ["application/vnd.api+json", "json"],
    ["application/x-www-form-urlencoded", "urlencoded"], ["text/plain", "text"], ["text/xml; charset=latin1", "text"],
    ["application/xml", "raw"], ["multipart/form-data; boundary=x", "raw"], [undefined, "raw"], ["json", "raw"], ["text/", "raw"],
  ];
  for (const [ct, kind] of kinds) assert.equal(bodyKindOf(ct), kind, String(ct));
  assert.equal(charsetOf("text/plain; charset=ISO-8859-1"), "iso-8859-1");
  assert.equal(charsetOf('text/plain; format=flowed; charset="utf-8"'), "utf-8");
  assert.equal(charsetOf("text/plain"), undefined);
});

test("parseBody: a table of bodies and what they become", () => {
  const h = (ct?: string, extra: Record<string, string> = {}) => ({ ...(ct ? { "content-type": ct } : {}), ...extra });
  const cases: Array<[string, Buffer, Record<string, string>, unknown]> = [
    ["json object", Buffer.from('{"a":[1,2]}'), h("application/json"), { a: [1, 2] }],
    ["json empty is {}", Buffer.alloc(0), h("application/json"), {}],
    ["json with leading whitespace", Buffer.from(' \n[1]'), h("application/json"), [1]],
    ["json utf-16le", Buffer.from('{"k":"é"}', "utf16le"), h("application/json; charset=utf-16le"), { k: "é" }],
    ["urlencoded extended", Buffer.from("a=1&b[c]=2&d=x&d=y"), h("application/x-www-form-urlencoded"), { a: "1", b: { c: "2" }, d: ["x", "y"] }],
    ["urlencoded empty", Buffer.alloc(0), h("application/x-www-form-urlencoded"), {}],
    ["text latin1", Buffer.from([0x63, 0x61, 0x66, 0xe9]), h("text/plain; charset=iso-8859-1"), "café"],
    ["text utf-8 BOM stripped", Buffer.from("\uFEFFhi"), h("text/plain"), "hi"],
    ["raw without content-type", Buffer.from([1, 2]), h(), Buffer.from([1, 2])],
    ["gzip json", gzipSync('{"z":true}'), h("application/json", { "content-encoding": "gzip" }), { z: true }],
  ];
  for (const [label, raw, headers, expected] of cases) assert.deepEqual(parseBody(raw, headers, 1000), expected, label);
});

test("parseBody: errors carry the platform codes body-parser's errors were mapped to", () => {
  const code = (raw: Buffer | string, headers: Record<string, string>, limit = 1000) => {
    try {
      parseBody(Buffer.from(raw), headers, limit);
      return "no error";
    } catch (err) {
      return (err as { code: string }).code;
    }
  };
  const json = { "content-type": "application/json" };
  assert.equal(code("{nope", json), "INVALID_ARGUMENT");
  assert.equal(code('"a string"', json), "INVALID_ARGUMENT", "strict: an object or an array");
  assert.equal(code("{}", { "content-type": "application/json; charset=latin1" }), "UNSUPPORTED_MEDIA_TYPE");
  assert.equal(code("x", { "content-type": "text/plain; charset=klingon" }), "UNSUPPORTED_MEDIA_TYPE");
  assert.equal(code("a=1", { "content-type": "application/x-www-form-urlencoded; charset=utf-16" }), "UNSUPPORTED_MEDIA_TYPE");
  assert.equal(code(Array.from({ length: 1001 }, (_, i) => `p${i}=1`).join("&"), { "content-type": "application/x-www-form-urlencoded" }, 100_000), "INVALID_ARGUMENT");
  assert.equal(code("x", { "content-type": "text/plain", "content-encoding": "compress" }), "UNSUPPORTED_MEDIA_TYPE");
  assert.equal(code("not gzip", { "content-type": "text/plain", "content-encoding": "gzip" }), "INVALID_ARGUMENT");
  assert.equal(code(gzipSync("y".repeat(5000)), { "content-type": "text/plain", "content-encoding": "gzip" }, 1000), "PAYLOAD_TOO_LARGE");
});
