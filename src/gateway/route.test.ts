import { test } from "node:test";
import assert from "node:assert/strict";
import { parseFunctionRoute } from "./route";
import { buildUpstreamHeaders, filterDownstreamHeaders, isSaneRequestId, pickRequestId } from "./headers";

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

test("downstream headers: unusable flag reported and stripped", () => {
  const r = filterDownstreamHeaders({ "content-type": "text/plain", connection: "keep-alive", "keep-alive": "timeout=5", "x-stratus-instance-unusable": "1", "set-cookie": ["a=1", "b=2"] });
  assert.equal(r.unusable, true);
  assert.deepEqual(r.headers, { "content-type": "text/plain", "set-cookie": ["a=1", "b=2"] });
});
