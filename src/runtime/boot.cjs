"use strict";
// The instance runtime's boot loader (dist/runtime-boot.cjs; in a process sandbox /stratus/boot.cjs):
// runs the runtime bundle beside it (runtime.cjs) as a CommonJS module, compiled with a V8 code cache
// (runtime.cache beside it, or STRATUS_CODE_CACHE) when one is there. Node 20 has no compile cache of
// its own (module.enableCompileCache() is Node 22), so every instance used to parse and compile the
// 0.7 MB bundle and every function its start runs; with the cache V8 deserialises them instead.
//
// A cache V8 does not accept (another Node, other V8 flags — the heap limit is one —, another bundle)
// is rejected by V8's own checks and the bundle is compiled from source as without one: the cache only
// ever changes how fast the same code gets compiled, never which code runs. The driver writes it
// (src/sandbox/code-cache.ts); a sandbox binds it read-only.
//
// STRATUS_CODE_CACHE_OUT=<file> (the driver's producer run only): when the process exits, the cache
// of everything compiled so far is written there — after a generic runtime's warm-up, that is the
// bundle's top level plus the functions a boot, a specialisation and a first request run.
const { readFileSync, writeFileSync } = require("node:fs");
const { dirname, join } = require("node:path");
const Module = require("node:module");
const vm = require("node:vm");

/** Compiles the bundle (from the cache when one is there and V8 accepts it); nothing of the cache's bytes outlives it. */
function compile(bundle, cachePath, outPath) {
  let cachedData;
  try {
    cachedData = readFileSync(cachePath);
  } catch {
    // none: compiled from source
  }
  const script = new vm.Script(Module.wrap(readFileSync(bundle, "utf8")), {
    filename: bundle,
    ...(cachedData === undefined ? {} : { cachedData }),
  });
  // Read (and deleted) by the runtime, which reports it on its READY line.
  globalThis[Symbol.for("stratus.codeCache")] = cachedData === undefined ? "absent" : script.cachedDataRejected ? "rejected" : "accepted";
  if (outPath) process.once("exit", () => writeFileSync(outPath, script.createCachedData(), { mode: 0o644 }));
  return script.runInThisContext();
}

const bundle = join(__dirname, "runtime.cjs");
const cachePath = process.env.STRATUS_CODE_CACHE || join(__dirname, "runtime.cache");
const outPath = process.env.STRATUS_CODE_CACHE_OUT;
delete process.env.STRATUS_CODE_CACHE;
delete process.env.STRATUS_CODE_CACHE_OUT;
const run = compile(bundle, cachePath, outPath);
// Code compiled by vm.Script (from a cache or not) has no dynamic-import callback of Node's: the runtime
// imports an ES module entry through this import(), compiled by Node's CommonJS loader (setEntryImporter).
globalThis[Symbol.for("stratus.importEntry")] = (url) => import(url);
const runtimeModule = new Module(bundle, module);
runtimeModule.filename = bundle;
Module._cache[bundle] = runtimeModule;
run.call(runtimeModule.exports, runtimeModule.exports, Module.createRequire(bundle), runtimeModule, bundle, dirname(bundle));
runtimeModule.loaded = true;
