// esbuild plugin for dist/runtime.cjs: bundles some npm packages separately and embeds each as ONE string
// literal, compiled only when the package is first required.
//
// Why: V8 pre-parses every function of a script when it compiles it, so 1.3 MB of zod and iconv-lite
// cost every instance start ~25 ms of CPU even though most instances never call them (measured with
// bench/runtime-start.mjs: 164 → 139 ms to READY, PSS at READY 24 → 20 MiB). Scanning a string literal is
// nearly free. The runtime stays one self-contained file (the sandboxes and the Docker image mount or
// copy just that file).
//
// Modes:
//  - "plain": the package is compiled when the module that requires it is first evaluated. Enough for
//    zod, whose only importer (src/shared/function-config.ts) the runtime itself loads lazily.
//  - { front: file }: every `require(pkg)` gets `file` instead, which reaches the embedded package as
//    `require("lazy:pkg")` when it needs it. For iconv-lite, which body-parser and raw-body require at load
//    time: src/runtime/iconv-front.cjs decodes UTF-8 itself and compiles iconv-lite for other charsets.
import { build } from "esbuild";
import { resolve } from "node:path";
import { brotliCompressSync, constants as zlibConstants } from "node:zlib";

/**
 * @param {Record<string, "plain" | { front: string }>} packages package name → mode (front: a path from the repository root)
 * @returns {import("esbuild").Plugin}
 */
export function lazyPackages(packages) {
  const names = Object.keys(packages).map((n) => n.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&")).join("|");
  const filter = new RegExp(`^(lazy:)?(${names})$`);
  return {
    name: "lazy-packages",
    setup(b) {
      b.onResolve({ filter }, (args) => {
        const name = args.path.replace(/^lazy:/, "");
        const mode = packages[name];
        if (typeof mode === "object" && !args.path.startsWith("lazy:")) {
          const front = resolve(mode.front);
          if (args.importer === front) throw new Error(`${front} must require "lazy:${name}", not "${name}"`);
          return { path: front };
        }
        return { path: name, namespace: "lazy-package", pluginData: { resolveDir: args.resolveDir } };
      });
      b.onLoad({ filter: /.*/, namespace: "lazy-package" }, async (args) => {
        const inner = await build({
          stdin: { contents: `module.exports = require(${JSON.stringify(args.path)});`, resolveDir: args.pluginData.resolveDir, loader: "js" },
          bundle: true,
          write: false,
          platform: "node",
          target: b.initialOptions.target,
          format: "cjs",
          // Fully minified, unlike the main bundle: this code is compiled only when used, and every byte of
          // its compressed text stays in each instance's heap as part of the script's source.
          minify: true,
          logLevel: "warning",
        });
        // Brotli + base64: Node decodes a CommonJS file as UTF-8 at ~10 ms per MB here and V8 scans every byte of
        // it (string literals too), so what matters is the size of the file, not only what is compiled.
        const packed = brotliCompressSync(Buffer.from(`${inner.outputFiles[0].text}\n//# sourceURL=stratus-lazy:${args.path}`), {
          params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 11, [zlibConstants.BROTLI_PARAM_LGWIN]: 24, [zlibConstants.BROTLI_PARAM_MODE]: zlibConstants.BROTLI_MODE_TEXT },
        }).toString("base64");
        const compile = `(() => { const m = { exports: {} }; const src = require("node:zlib").brotliDecompressSync(Buffer.from("${packed}", "base64")).toString("utf8"); new Function("module", "exports", "require", src)(m, m.exports, require); return m.exports; })`;
        const contents = `module.exports = ${compile}();`;
        return { contents, loader: "js", resolveDir: args.pluginData.resolveDir };
      });
    },
  };
}
