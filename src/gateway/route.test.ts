import { test } from "node:test";
import assert from "node:assert/strict";
import { parseFunctionRoute } from "./route";
import { buildUpstreamHeaders, filterDownstreamHeaders, isSaneRequestId, pickRequestId, serverTiming } from "./headers";

test("parseFunctionRoute: table", () => {
  const cases: [string, { name: string; path: string } | null][] = [
    ["/fn/f/a/b?x=1", { name: "f", path: "/a/b?x=1" }],
    ["/fn/f", { name: "f", path: "/" }],
    ["/fn/f/", { name: "f", path: "/" }],
    ["/fn/f?x=1", { name: "f", path: "/?x=1" }],
    ["/fn/myFunction/deep/path/", { name: "myFunction", path: "/deep/path/" }],
    ["/fn/", { name: "", path: "/" }],
    ["/fn//x", { name: "", path: "/x" }],
    ["/fn/bad%20name/x", { name: "bad%20name", path: "/x" }],
    ["/fnx/f", null],
    ["/", null],
    ["/healthz", null],
  ];
  for (const [url, want] of cases) assert.deepEqual(parseFunctionRoute(url), want, url);
});

test("request ids: sane ones are kept, others replaced", () => {
  assert.equal(isSaneRequestId("abc-123_x.y:z"), true);
  assert.equal(isSaneRequestId(""), false);
  assert.equal(isSaneRequestId("a b"), false);
  assert.equal(isSaneRequestId("x".repeat(129)), false);
  assert.equal(pickRequestId({ "x-stratus-request-id": "client-1" }), "client-1");
  const generated = pickRequestId({ "x-stratus-request-id": "evil\nvalue" });
  assert.notEqual(generated, "evil\nvalue");
  assert.equal(isSaneRequestId(generated), true);
});

test("upstream headers: hop-by-hop, Connection-named and x-stratus-* stripped; authorization optional", () => {
  const h = buildUpstreamHeaders(
    {
      host: "example",
      connection: "keep-alive, x-private",
      "x-private": "1",
      "transfer-encoding": "chunked",
      "x-stratus-instance-unusable": "1",
      "x-stratus-request-id": "forged",
      "x-forwarded-for": "1.2.3.4",
      authorization: "Bearer t",
      accept: "text/plain",
    },
    "rid-1",
    { deadlineMs: 1000, dropAuthorization: true, remoteAddress: "127.0.0.1" },
  );
  assert.deepEqual(h, {
    host: "example",
    accept: "text/plain",
    "x-stratus-request-id": "rid-1",
    "x-stratus-deadline-ms": "1000",
    "x-forwarded-for": "127.0.0.1",
  });
  const kept = buildUpstreamHeaders({ authorization: "Bearer u" }, "r", { deadlineMs: 1, dropAuthorization: false, remoteAddress: undefined });
  assert.equal(kept.authorization, "Bearer u");
});

test("downstream headers: hop-by-hop and our own stripped, unusable and error source reported, Server-Timing merged", () => {
  const raw = [
    "Content-Type", "text/plain", "Connection", "keep-alive", "Keep-Alive", "timeout=5", "X-Stratus-Instance-Unusable", "1",
    "set-cookie", "a=1", "set-cookie", "b=2", "x-stratus-request-id", "rid", "x-stratus-error-source", "function",
    "Server-Timing", "db;dur=2", "server-timing", "cache;desc=hit",
  ].map((s) => Buffer.from(s, "latin1"));
  const r = filterDownstreamHeaders(raw);
  assert.equal(r.unusable, true);
  assert.equal(r.errorSource, true);
  assert.equal(r.serverTiming, "db;dur=2, cache;desc=hit");
  assert.deepEqual(r.headers, ["Content-Type", "text/plain", "set-cookie", "a=1", "set-cookie", "b=2", "x-stratus-error-source", "function"]);
  const plain = filterDownstreamHeaders(["content-length", "5"]);
  assert.deepEqual(plain, { headers: ["content-length", "5"], unusable: false, errorSource: false, serverTiming: null });
});

test("server timing: warm shortcut formats like the general case", () => {
  assert.equal(serverTiming(0, 0, 1.234), "queue;dur=0.0, start;dur=0.0, handler;dur=1.2");
  assert.equal(serverTiming(2, 30.06, 1), "queue;dur=2.0, start;dur=30.1, handler;dur=1.0");
});
