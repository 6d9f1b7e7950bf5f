// Builds the shipped bundles (dist/build-worker.cjs too, see below):
//  - dist/runtime.cjs: the instance runtime, self-contained (Express bundled in) so a sandbox
//    only needs the node binary, this one file and the function's code.
//  - dist/runtime-boot.cjs: src/runtime/boot.cjs as written, the loader sandboxes start (it compiles
//    runtime.cjs from a V8 code cache, src/sandbox/code-cache.ts).
//  - dist/cli.js: the CLI and platform entry; npm packages stay external. Code-split (dist/cli-chunk-*.js)
//    so that `stratus ls` does not load what only `up` and `dev` need (express, SQLite, dockerode, esbuild):
//    measured here (loaded machine, `node -e 0` ≈ 0.2–0.3 s): `stratus --help` 1.3–1.6 s → 0.36–0.5 s.
//  - dist/stratus-ksm-exec: the KSM launcher of the process driver (src/sandbox/ksm/ksm-exec.c, platform
//    setting `process.ksm`), compiled with the C compiler `cc` (Debian: gcc, libc6-dev; scripts/lib/ensure-deps.sh
//    installs them). Without a compiler the build says so and skips it; `process.ksm` then refuses to start.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { resolve } from "node:path";
import { lazyPackages } from "./lazy-packages.mjs";
import { precomputedMime } from "./precomputed-mime.mjs";

rmSync("dist", { recursive: true, force: true });
/** The instance runtime's bundle options, shared by dist/runtime.cjs and the snapshot's source. */
const runtimeBundle = {
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  // Whitespace only: full minification made start-up slower here (V8 compiles more functions
  // eagerly in minified code; measured 164 → 207 ms to READY, PSS 24 → 32 MiB).
  minifyWhitespace: true,
  // zod (only for discovery) and iconv-lite (only for request bodies not in UTF-8) are 0.8 + 0.5 MB of the
  // 1.5 MB bundle; embedded compressed, they cost an instance nothing until used. See lazy-packages.mjs.
  // mime-types' maps are computed at build time (precomputed-mime.mjs): ~40 % of loading Express.
  plugins: [lazyPackages({ zod: "plain", croner: "plain", "iconv-lite": { front: "src/runtime/iconv-front.cjs" } }), precomputedMime()],
  logLevel: "warning",
};
/** Resolves `http` / `node:http` to the deferred module while the snapshot source is bundled (deferred-http.cjs). */
const deferredHttp = {
  name: "deferred-http",
  setup(b) {
    const shim = resolve("src/runtime/deferred-http.cjs");
    b.onResolve({ filter: /^(node:)?http$/ }, (args) => (args.importer === shim ? undefined : { path: shim }));
  },
};
await Promise.all([
  build({ ...runtimeBundle, entryPoints: ["src/runtime/main.ts"], outfile: "dist/runtime.cjs", sourcemap: "linked" }),
  // The source of the runtime's startup snapshot (src/sandbox/runtime-snapshot.ts builds the blob with the
  // instances' Node): the same runtime, with Express loaded at build time and node:http deferred.
  build({ ...runtimeBundle, entryPoints: ["src/runtime/snapshot-entry.ts"], outfile: "dist/runtime-snapshot.cjs", plugins: [deferredHttp, ...runtimeBundle.plugins] }),
  // The bundler run inside the build sandbox (src/builder/build-sandbox.ts). esbuild stays external:
  // the sandbox binds the host's esbuild package and binary read-only beside it.
  build({
    entryPoints: ["src/builder/build-worker.ts"],
    outfile: "dist/build-worker.cjs",
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    external: ["esbuild"],
    logLevel: "warning",
  }),
  build({
    entryPoints: { cli: "src/cli/main.ts" },
    outdir: "dist",
    splitting: true,
    // Chunks stay beside cli.js: commands find runtime.cjs relative to their own module URL.
    chunkNames: "cli-chunk-[hash]",
    bundle: true,
    platform: "node",
    target: "node20",
    format: "esm",
    packages: "external",
    sourcemap: "linked",
    logLevel: "warning",
  }),
]);
mkdirSync("dist", { recursive: true });
// The runtime's boot loader (src/runtime/boot.cjs: runs runtime.cjs beside it from a V8 code cache) ships as written.
copyFileSync("src/runtime/boot.cjs", "dist/runtime-boot.cjs");
try {
  execFileSync("cc", ["-O2", "-Wall", "-Wextra", "-Werror", "-o", "dist/stratus-ksm-exec", "src/sandbox/ksm/ksm-exec.c"], { stdio: ["ignore", "inherit", "inherit"] });
} catch (err) {
  if (err.code !== "ENOENT") throw err;
  console.warn("build: no C compiler (cc): dist/stratus-ksm-exec not built, so the platform setting process.ksm cannot be used (Debian: apt-get install gcc libc6-dev)");
}

