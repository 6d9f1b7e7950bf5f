/**
 * Entry of dist/build-worker.cjs: bundles one project INSIDE the build sandbox (build-sandbox.ts), so
 * esbuild resolves and reads files where only the project is visible, never the platform's data.
 *
 * Usage (inside the sandbox): `node build-worker.cjs <request.json> <result.json>`. The request is
 * `{ projectDir, outDir }`; the result is `{ ok: true, bundle: BundleResult }` or
 * `{ ok: false, error: { code, message, details } }`. esbuild is required at run time (it is bound
 * read-only into the sandbox beside this file), never bundled: its binary must match its JS.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { isStratusError } from "../shared/errors";
import { bundleProject } from "./bundle";

async function main(): Promise<void> {
  const [requestFile, resultFile] = process.argv.slice(2);
  if (!requestFile || !resultFile) {
    process.stderr.write("usage: build-worker.cjs <request.json> <result.json>\n");
    process.exit(2);
  }
  const request = JSON.parse(readFileSync(requestFile, "utf8")) as { projectDir: string; outDir: string };
  let result: unknown;
  try {
    result = { ok: true, bundle: await bundleProject(request.projectDir, request.outDir) };
  } catch (err) {
    result = isStratusError(err)
      ? { ok: false, error: { code: err.code, message: err.message, details: err.details } }
      : { ok: false, error: { code: "BUILD_FAILED", message: `Bundling failed: ${(err as Error)?.message ?? String(err)}` } };
  }
  writeFileSync(resultFile, JSON.stringify(result));
}

void main();
