/**
 * Entry of the runtime's startup snapshot (dist/runtime-snapshot.cjs → a blob built per Node binary by
 * src/sandbox/runtime-snapshot.ts; docs/prewarm.md "Startup snapshot"). Run by `node --build-snapshot`, it
 * loads what every instance loads — Express, the function server, the output capture — into the heap,
 * then names the main function that runs when an instance starts from the blob
 * (`node --snapshot-blob <blob>`): the same `main()` as dist/runtime.cjs, after the real `node:http` is
 * spliced in (deferred-http.cjs). Nothing here reads the STRATUS_* environment: main() does, at start.
 */
import { Module } from "node:module";
import { startupSnapshot } from "node:v8";
import { activate } from "./deferred-http.cjs";
import "./function-server";
import { setEntryImporter } from "./loader";
import { main } from "./main";

if (!startupSnapshot.isBuildingSnapshot()) throw new Error("dist/runtime-snapshot.cjs is the source of a startup snapshot: run dist/runtime.cjs instead");
startupSnapshot.setDeserializeMainFunction(() => {
  activate();
  // An import() compiled now by the CommonJS loader has Node's dynamic-import callback (see setEntryImporter).
  const helper = new Module("stratus:import") as Module & { _compile(code: string, filename: string): void };
  helper._compile("module.exports = (url) => import(url);", "/stratus/import-entry.cjs");
  setEntryImporter(helper.exports as (url: string) => Promise<unknown>);
  void main();
});
