// The build plugins of dist/runtime.cjs (scripts/precomputed-mime.mjs, scripts/lazy-packages.mjs with
// src/runtime/iconv-front.cjs) must not change what the packages do: each is bundled here with and without its plugin and the results compared.
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

test("the iconv-lite front decodes UTF-8 exactly like iconv-lite, and hands other charsets to the embedded one", async () => {
  type Decoder = { write(b: Buffer): string; end(): string | undefined };
  type Iconv = { decode(b: Buffer, e: string, o?: object): string; getDecoder(e: string, o?: object): Decoder; encodingExists(e: string): boolean };
  const front = (await bundled("iconv-lite", [lazyPackages({ "iconv-lite": { front: "src/runtime/iconv-front.cjs" } }) as Plugin])) as Iconv;
  const real = createRequire(import.meta.url)("iconv-lite") as Iconv;
  const bom = Buffer.from([0xef, 0xbb, 0xbf]);
  const samples = [
    Buffer.from('{"k":"caf\u00e9 \u{1f600}"}'), Buffer.concat([bom, Buffer.from("x\u00e9")]), Buffer.concat([bom, bom, Buffer.from("y")]),
    bom, Buffer.alloc(0), Buffer.from([0xc3]), Buffer.from([0xff, 0xfe, 0x41, 0xe2, 0x82]), Buffer.from("\u20ac".repeat(50)),
  ];
  for (const enc of ["utf-8", "UTF8", "utf8", "Unicode-1-1-UTF-8", "UTF-8:2000"]) {
    assert.equal(front.encodingExists(enc), real.encodingExists(enc), enc);
    for (const buf of samples) {
      for (const options of [undefined, { stripBOM: false }, { stripBOM: true }]) {
        assert.equal(front.decode(buf, enc, options), real.decode(buf, enc, options), `decode ${enc} ${buf.toString("hex")} ${JSON.stringify(options)}`);
        // Every split into two chunks: multi-byte sequences and the BOM cut across writes.
        for (let cut = 0; cut <= buf.length; cut++) {
          const run = (lib: Iconv) => {
            const d = lib.getDecoder(enc, options);
            return [d.write(buf.subarray(0, cut)), d.write(buf.subarray(cut)), d.end()];
          };
          assert.deepEqual(run(front), run(real), `chunks ${enc} ${buf.toString("hex")} at ${cut}`);
        }
      }
    }
  }
  let called = 0;
  assert.equal(front.decode(Buffer.concat([bom, Buffer.from("z")]), "utf8", { stripBOM: () => called++ }), "z");
  assert.equal(called, 1, "the stripBOM callback runs as in iconv-lite");
  // Other charsets and properties: the embedded iconv-lite, compiled on first use.
  assert.equal(front.encodingExists("klingon"), false);
  assert.equal(front.decode(Buffer.from([0x63, 0x61, 0x66, 0xe9]), "latin1"), "caf\u00e9");
  assert.equal(front.decode(Buffer.from("\u00e9t\u00e9", "utf16le"), "utf-16le"), "\u00e9t\u00e9");
  assert.equal(typeof (front as unknown as { encode: unknown }).encode, "function");
});
