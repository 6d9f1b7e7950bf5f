// The build plugins of dist/runtime.cjs (scripts/precomputed-mime.mjs, scripts/lazy-packages.mjs) must not
// change what the packages do: each is bundled here with and without its plugin and the results compared.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { build, type Plugin } from "esbuild";
// @ts-expect-error plain ESM build script without types
import { precomputedMime } from "../scripts/precomputed-mime.mjs";
// @ts-expect-error plain ESM build script without types
import { lazyPackages } from "../scripts/lazy-packages.mjs";

/** Bundles `require(pkg)` (optionally through `plugins`) and evaluates it as CommonJS. */
async function bundled(pkg: string, plugins: Plugin[]): Promise<Record<string, unknown>> {
  const out = await build({
    stdin: { contents: `module.exports = require(${JSON.stringify(pkg)});`, resolveDir: process.cwd(), loader: "js" },
    bundle: true, write: false, platform: "node", target: "node20", format: "cjs", logLevel: "warning", plugins,
  });
  const m = { exports: {} as Record<string, unknown> };
  new Function("module", "exports", "require", out.outputFiles[0]!.text)(m, m.exports, createRequire(import.meta.url));
  return m.exports;
}

test("precomputed mime-types answers exactly like mime-types for every type and extension of mime-db", async () => {
  type Mime = { types: object; extensions: object; _extensionConflicts: unknown[]; charset(t: string): unknown; contentType(t: string): unknown; extension(t: string): unknown; lookup(p: string): unknown };
  const real = (await bundled("mime-types", [])) as unknown as Mime;
  const pre = (await bundled("mime-types", [precomputedMime() as Plugin])) as unknown as Mime;
  assert.deepEqual({ ...pre.types }, { ...real.types });
  assert.deepEqual({ ...pre.extensions }, { ...real.extensions });
  assert.deepEqual(pre._extensionConflicts, real._extensionConflicts);
  const db = createRequire(import.meta.url)("mime-db") as Record<string, unknown>;
  const probes = [...Object.keys(db), ...Object.keys(real.types), "text/x-unknown", "application/x-nope", "html", "json", "a.txt", "x/y; charset=latin1", ""];
  for (const t of probes) {
    for (const fn of ["charset", "contentType", "extension", "lookup"] as const) assert.equal(pre[fn](t), real[fn](t), `${fn}(${JSON.stringify(t)})`);
  }
});

test("a lazily embedded (compressed, compiled on first use) package behaves as the package", async () => {
  const lazy = await bundled("iconv-lite", [lazyPackages({ "iconv-lite": "proxy" }) as Plugin]) as { decode(b: Buffer, e: string): string; encodingExists(e: string): boolean };
  const real = createRequire(import.meta.url)("iconv-lite") as typeof lazy;
  assert.equal(lazy.encodingExists("klingon"), false);
  assert.equal(lazy.decode(Buffer.from([0x63, 0x61, 0x66, 0xe9]), "latin1"), real.decode(Buffer.from([0x63, 0x61, 0x66, 0xe9]), "latin1"));
  assert.equal(lazy.decode(Buffer.from("\u00e9t\u00e9", "utf16le"), "utf-16le"), "\u00e9t\u00e9");
  assert.ok("getDecoder" in lazy);
});
