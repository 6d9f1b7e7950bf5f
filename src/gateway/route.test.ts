import { test } from "node:test";
import assert from "node:assert/strict";
import { parseFunctionRoute } from "./route";
import { buildUpstreamHeaders, filterDownstreamHeaders, isForwardingHeader, isSaneRequestId, pickRequestId, serverTiming } from "./headers";
import { cidrMatcher, cidrProblem } from "../shared/cidr";

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
    "x-forwarded-proto": "http",
    "x-forwarded-host": "example",
  });
  const kept = buildUpstreamHeaders({ authorization: "Bearer u" }, "r", { deadlineMs: 1, dropAuthorization: false, remoteAddress: undefined });
  assert.equal(kept.authorization, "Bearer u");
});

test("forwarding headers: forged ones dropped and the gateway's own set; a trusted proxy's kept and appended to", () => {
  const forged = {
    host: "fn.example",
    forwarded: "for=6.6.6.6;proto=https;host=evil",
    "x-real-ip": "6.6.6.6",
    "x-client-ip": "6.6.6.6",
    "true-client-ip": "6.6.6.6",
    "cf-connecting-ip": "6.6.6.6",
    "x-forwarded-for": "6.6.6.6",
    "x-forwarded-host": "evil",
    "x-forwarded-proto": "https",
    "x-forwarded-port": "443",
    "x-forwarded-prefix": "/admin",
    "x-forwarded-server": "evil",
    "x-original-url": "/admin",
    "x-rewrite-url": "/admin",
  };
  const h = buildUpstreamHeaders(forged, "r", { deadlineMs: 1, dropAuthorization: false, remoteAddress: "10.1.2.3" });
  assert.deepEqual(h, {
    host: "fn.example", "x-stratus-request-id": "r", "x-stratus-deadline-ms": "1",
    "x-forwarded-for": "10.1.2.3", "x-forwarded-proto": "http", "x-forwarded-host": "fn.example",
  });
  for (const k of Object.keys(forged)) if (k !== "host" && !["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"].includes(k)) assert.equal(isForwardingHeader(k), true, k);
  assert.equal(buildUpstreamHeaders({ host: "a" }, "r", { deadlineMs: 1, dropAuthorization: false, remoteAddress: "::1", encrypted: true })["x-forwarded-proto"], "https");
  // A trusted load balancer: its view of the client is kept; the gateway appends the peer it saw.
  const lb = buildUpstreamHeaders(forged, "r", { deadlineMs: 1, dropAuthorization: false, remoteAddress: "10.0.0.5", trustedProxy: true });
  assert.equal(lb["x-forwarded-for"], "6.6.6.6, 10.0.0.5");
  assert.equal(lb["x-forwarded-proto"], "https");
  assert.equal(lb["x-forwarded-host"], "evil");
  assert.equal(lb["x-real-ip"], "6.6.6.6");
  assert.equal(lb.forwarded, forged.forwarded);
  const lbBare = buildUpstreamHeaders({ host: "h" }, "r", { deadlineMs: 1, dropAuthorization: false, remoteAddress: "10.0.0.5", trustedProxy: true });
  assert.equal(lbBare["x-forwarded-for"], "10.0.0.5");
  assert.equal(lbBare["x-forwarded-proto"], "http");
  assert.equal(lbBare["x-forwarded-host"], "h");
});

test("trusted-proxy CIDRs: v4, v6, single hosts, IPv4-mapped peers; bad entries refused", () => {
  assert.equal(cidrMatcher([]), null);
  const m = cidrMatcher(["10.0.0.0/8", "192.168.1.7", "fd00::/8"])!;
  assert.equal(m("10.200.0.1"), true);
  assert.equal(m("::ffff:10.200.0.1"), true);
  assert.equal(m("11.0.0.1"), false);
  assert.equal(m("192.168.1.7"), true);
  assert.equal(m("192.168.1.8"), false);
  assert.equal(m("fd12::1"), true);
  assert.equal(m("::1"), false);
  assert.equal(m(undefined), false);
  for (const bad of ["10.0.0.0/33", "nope", "1.2.3.4/", "::1/129", "10.0.0.0/x"]) assert.notEqual(cidrProblem(bad), null, bad);
  assert.throws(() => cidrMatcher(["10.0.0.0/40"]), /INVALID_CONFIG|prefix/);
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
