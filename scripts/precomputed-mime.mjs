// esbuild plugin for dist/runtime.cjs: mime-types without its start-up work.
//
// At load, mime-types walks all 2,522 types of mime-db, scores every extension conflict twice (its
// current and its legacy rule) and builds two maps; the bundle also carries all of mime-db (160 KB of
// JSON). Measured with --cpu-prof, that was ~40 % of loading Express. Both maps depend only on mime-db,
// so this plugin computes them at build time with the real mime-types and:
//  - replaces the `populateMaps(...)` call with the precomputed maps (the same data, parsed from JSON);
//  - keeps only what mime-types still reads from mime-db afterwards: the `charset` of the 41 types that have
//    one (charset(), contentType()). An entry without a charset answers charset() exactly as a missing one,
//    and the score functions, the only other readers of mime-db, ran only inside populateMaps. In the heap of
//    an instance (one request served) the full db was ~0.4 MB of objects.
// The build fails if mime-types no longer has the line it replaces, so an upgrade is noticed.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const CALL = "populateMaps(exports.extensions, exports.types)";

/** @returns {import("esbuild").Plugin} */
export function precomputedMime() {
  return {
    name: "precomputed-mime",
    setup(b) {
      b.onLoad({ filter: /[\\/]node_modules[\\/]mime-types[\\/]index\.js$/ }, (args) => {
        const source = readFileSync(args.path, "utf8");
        if (!source.includes(CALL)) throw new Error(`precomputed-mime: ${args.path} no longer calls ${CALL}; review the plugin`);
        const real = createRequire(args.path)("./index.js");
        const data = JSON.stringify({ extensions: real.extensions, types: real.types, conflicts: real._extensionConflicts });
        const replacement = `{ const pre = JSON.parse(${JSON.stringify(data)}); Object.assign(exports.extensions, pre.extensions); Object.assign(exports.types, pre.types); exports._extensionConflicts.push(...pre.conflicts); }`;
        return { contents: source.replace(CALL, replacement), loader: "js" };
      });
      b.onLoad({ filter: /[\\/]node_modules[\\/]mime-db[\\/]db\.json$/ }, (args) => {
        const db = JSON.parse(readFileSync(args.path, "utf8"));
        const slim = {};
        for (const [type, entry] of Object.entries(db)) {
          if (entry.charset) slim[type] = { charset: entry.charset };
        }
        return { contents: `module.exports = JSON.parse(${JSON.stringify(JSON.stringify(slim))});`, loader: "js" };
      });
    },
  };
}
