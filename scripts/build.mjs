// Builds the two shipped bundles:
//  - dist/runtime.cjs: the instance runtime, self-contained (Express bundled in) so a sandbox
//    only needs the node binary, this one file and the function's code.
//  - dist/cli.js: the CLI and platform entry; npm packages stay external.
import { build } from "esbuild";
import { rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
await Promise.all([
  build({
    entryPoints: ["src/runtime/main.ts"],
    outfile: "dist/runtime.cjs",
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    minifyWhitespace: true,
    sourcemap: "linked",
    logLevel: "warning",
  }),
  build({
    entryPoints: ["src/cli/main.ts"],
    outfile: "dist/cli.js",
    bundle: true,
    platform: "node",
    target: "node20",
    format: "esm",
    packages: "external",
    sourcemap: "linked",
    logLevel: "warning",
  }),
]);
