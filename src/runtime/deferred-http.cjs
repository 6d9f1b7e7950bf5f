"use strict";
/**
 * `node:http` as the startup-snapshot bundle of the runtime sees it (dist/runtime-snapshot.cjs, built by
 * scripts/build.mjs with this file aliased for `http` / `node:http`; docs/prewarm.md "Startup snapshot").
 *
 * Why: Node's snapshot builder cannot serialise the HTTP parser binding that `node:http` loads
 * (`_http_common`: "global handle not serialized … HTTPParser", then a fatal CheckGlobalAndEternalHandles,
 * measured on Node 24.22 and 26.12), yet Express needs `http` while it loads. What Express and the
 * runtime read from `http` at load time is only `METHODS` (a constant list) and the prototypes of
 * `IncomingMessage` and `ServerResponse` (Express's `req`/`res` are `Object.create` of them). So while the
 * snapshot is built this module answers those with a copy of `METHODS` (from the same Node binary, in
 * `STRATUS_SNAPSHOT_HTTP_METHODS`) and two placeholder prototypes, and throws for anything else
 * (a load-time use nobody checked). `activate()`, the first thing the snapshot's main function does after
 * deserialisation, loads the real `node:http`, checks `METHODS` is the same list, and splices the real
 * prototypes under the placeholders (`Object.setPrototypeOf`): Express's `req` → placeholder →
 * `IncomingMessage.prototype`. From then on every property reads through to the real module.
 *
 * Invariant: before `activate()` no code path that runs while the snapshot is built reaches the real
 * `node:http`; after it, every property of this module is the real module's (the getters below).
 */
// Every export of node:http in Node 20–26 (only the bundle's own code reads this module; user code
// requires the real one).
const KEYS = [
  "_connectionListener", "METHODS", "STATUS_CODES", "Agent", "ClientRequest", "IncomingMessage", "OutgoingMessage", "Server",
  "ServerResponse", "createServer", "validateHeaderName", "validateHeaderValue", "get", "request", "setMaxIdleHTTPParsers",
  "setGlobalProxyFromEnv", "maxHeaderSize", "globalAgent", "WebSocket", "CloseEvent", "MessageEvent",
];
// The snapshot builder (src/sandbox/runtime-snapshot.ts) asks the same Node binary for http.METHODS and
// passes them in the builder's environment; read once, while the snapshot is built.
const METHODS = Object.freeze(JSON.parse(process.env.STRATUS_SNAPSHOT_HTTP_METHODS || "null") || []);

function placeholder(name) {
  const f = function () {
    throw new Error(`node:http ${name} used while the runtime snapshot was being built`);
  };
  Object.defineProperty(f, "name", { value: name });
  return f;
}
const early = { METHODS, IncomingMessage: placeholder("IncomingMessage"), ServerResponse: placeholder("ServerResponse") };

let real = null;

const deferred = module.exports;
for (const key of KEYS) {
  Object.defineProperty(deferred, key, {
    enumerable: true,
    configurable: false,
    get() {
      if (real !== null) return real[key];
      if (Object.hasOwn(early, key)) return early[key];
      throw new Error(`node:http.${key} used while the runtime snapshot was being built`);
    },
  });
}

/**
 * Loads the real `node:http` and splices it in (idempotent). Throws when this Node's METHODS differ from
 * the list the snapshot was built with (a snapshot built by another binary: Node refuses those anyway).
 */
deferred.activate = function activate() {
  if (real !== null) return;
  const http = require("node:http");
  if (JSON.stringify(http.METHODS) !== JSON.stringify(METHODS)) throw new Error("node:http METHODS differ from the snapshot's");
  Object.setPrototypeOf(early.IncomingMessage.prototype, http.IncomingMessage.prototype);
  Object.setPrototypeOf(early.ServerResponse.prototype, http.ServerResponse.prototype);
  real = http;
};
