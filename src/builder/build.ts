/**
 * The build pipeline: an uploaded project (already unpacked by the control plane, a tar.gz, or a local
 * directory) → one immutable, content-addressed
 * artifact per function under `<dataDir>/artifacts/sha256-<hex>/`, ready for the control plane to
 * record (store.addVersion) and activate (store.activateVersions).
 *
 * Steps: unpack safely (src/shared/archive.ts; an upload the control plane already unpacked is taken
 * over as it is — never packed and unpacked again) → source digest (tree-digest.ts) → reuse a previous build of the
 * same source, if any → `npm ci` when there are dependencies (install-deps.ts) → bundle (bundle.ts;
 * both in the build sandbox, build-sandbox.ts) →
 * ship the project's files beside the bundle (shipProjectFiles) → discover the functions inside a
 * sandbox (driver.discover: user code never runs in this process) →
 * validate every name and config, reporting every problem at once → write the artifacts.
 *
 * Invariants: an artifact directory is complete or absent (written to a temp dir in the same
 * filesystem, then renamed); its name is the digest of its content, so it is never rewritten; the
 * version id is the first 12 hex digits of that digest, so identical code deployed twice yields the
 * same versions. Temp files of a build are removed whatever happens.
 */
import { randomUUID } from "node:crypto";
import { copyFile, cp, lstat, mkdir, readdir, readFile, realpath, rename, rm, stat, writeFile, chmod } from "node:fs/promises";
import ignore from "ignore";
import { basename, join, relative, resolve } from "node:path";
import type { Readable } from "node:stream";
import { isStratusError, StratusError } from "../shared/errors";
import type { FunctionConfig } from "../shared/function-config";
import type { BuiltVersion, FunctionVersion } from "../shared/function-version";
import { parseFunctionConfig } from "../shared/function-config";
import { caseClashChecker, functionNameProblem } from "../shared/names";
import type { Logger } from "../shared/logger";
import type { Discoverer } from "../shared/discovery";
import { DEFAULT_ARCHIVE_LIMITS, isStorageError, unpackArchive, type ArchiveLimits, type UnpackResult } from "../shared/archive";
import { BUNDLE_FILES, formatBundleMessage } from "./bundle";
import { copyPackageClosure } from "./external-packages";
import { createBuildSandbox, type BuildSandbox, type BuildSandboxOptions } from "./build-sandbox";
import { checkEnginesNode, installDependencies, readProjectPackage } from "./install-deps";
import { ALWAYS_IGNORED, IGNORE_FILES, packProject } from "./pack";
import { digestTree, listTree } from "../shared/tree-digest";

/**
 * Version of the artifact layout and of the runtime it targets. Part of every manifest (so part of
 * every digest) and of the reuse key: a new runtime never reuses artifacts built for an old one.
 */
export const RUNTIME_VERSION = "1";

/** Name of a default-export function when neither package.json `name` nor `projectName` gives one. */
export const DEFAULT_PROJECT_NAME = "function";

/** Name of the manifest file in an artifact directory. */
export const MANIFEST_FILE = "stratus-manifest.json";

/**
 * What `<artifactDir>/stratus-manifest.json` holds: the version's fields that are part of its content
 * (src/shared/function-version.ts). The name is written as `function`: the manifest is part of every
 * artifact digest, so its keys never change.
 */
export type ArtifactManifest = Pick<FunctionVersion, "exportName" | "entry" | "config" | "sourceDigest"> & {
  readonly format: 1;
  readonly function: FunctionVersion["name"];
  readonly runtimeVersion: string;
};

export interface BuildResult {
  readonly sourceDigest: string;
  /** True when a previous build of the same source was reused (nothing was rebuilt). */
  readonly reused: boolean;
  /** Sorted by name. */
  readonly functions: readonly BuiltVersion[];
  /** Bundler warnings, `file:line:column: text`. */
  readonly warnings: readonly string[];
}

export interface BuildOptions {
  /** The uploaded tar.gz (exactly one of `unpacked`, `archive` and `dir`). */
  readonly archive?: Buffer | Readable;
  /**
   * An upload already unpacked by `unpackArchive` (the control plane does it before answering, so a
   * hostile archive gets a plain error status). The builder takes the directory over (moves it into its
   * work dir): it is neither packed nor unpacked again.
   */
  readonly unpacked?: UnpackResult;
  /** A local project directory, packed with the same ignore rules as the CLI, then built like an upload. */
  readonly dir?: string;
  /** Root of the node's data (artifacts, build temp dirs, npm cache). */
  readonly dataDir: string;
  /** Runs discovery in a sandbox. */
  readonly driver: Discoverer;
  /** Tags the builder's own log lines (pino). */
  readonly buildId?: string;
  readonly logger: Logger;
  /**
   * Receives each human-readable build log line (npm output included), in order. The one route of
   * build lines: the deployer records them on the build and streams them to the client. Must not throw.
   */
  readonly onLog?: (line: string) => void;
  /** Called once with the source digest as soon as it is known (the deployer records it on the build). */
  readonly onSource?: (sourceDigest: string) => Promise<void> | void;
  /** Names a default-export function when package.json has no `name` (the CLI sends the folder name). */
  readonly projectName?: string;
  readonly archiveLimits?: Partial<ArchiveLimits>;
  /** npm ci timeout, ms. Default 300,000. */
  readonly installTimeoutMs?: number;
  /** Discovery timeout, ms. Default 30,000. */
  readonly discoverTimeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Where npm ci and the bundler run (default: createBuildSandbox(sandboxOptions)). */
  readonly sandbox?: BuildSandbox;
  /** Options of the default sandbox (its network's subnet and blocked ranges). */
  readonly sandboxOptions?: BuildSandboxOptions;
  /** `process.version` of the Node the functions run on, for `engines.node` (default: this process's; platform setting `process.instanceNode`). */
  readonly functionsNodeVersion?: string;
}

/** The version id of an artifact digest. */
export function versionOfDigest(digest: string): string {
  return digest.replace(/^sha256-/, "").slice(0, 12);
}

interface Problem { function: string; code: "INVALID_FUNCTION_NAME" | "INVALID_CONFIG" | "FUNCTION_LOAD_FAILED"; message: string; details?: unknown }

/**
 * Builds a project. See the module comment for the steps.
 * @throws StratusError INVALID_ARCHIVE | ARCHIVE_TOO_LARGE (upload), INVALID_ARGUMENT (bad `dir`),
 *   BUILD_STORAGE_ERROR (the host's disk is full or failing),
 *   BUILD_FAILED (install, bundle or module load failed — the message carries file:line when known),
 *   INVALID_CONFIG | INVALID_FUNCTION_NAME (every problem in `details`), INTERNAL.
 */
export async function buildProject(options: BuildOptions): Promise<BuildResult> {
  if ([options.unpacked, options.archive, options.dir].filter((x) => x !== undefined).length !== 1) {
    throw new StratusError("INVALID_ARGUMENT", "Give exactly one of unpacked, archive and dir");
  }
  const log = options.logger.child({ component: "builder", buildId: options.buildId });
  const emit = (line: string) => options.onLog?.(line);

  const dataDir = options.dataDir;
  const tmpRoot = join(dataDir, "tmp");
  const artifactsDir = join(dataDir, "artifacts");
  await mkdir(tmpRoot, { recursive: true });
  await mkdir(artifactsDir, { recursive: true });
  const work = join(tmpRoot, `build-${randomUUID()}`);
  await mkdir(work);
  try {
    let unpacked = options.unpacked;
    if (unpacked === undefined) {
      const upload = options.dir !== undefined ? (await packProject(options.dir)).archive : options.archive!;
      unpacked = await unpackArchive(upload, { parentDir: work, limits: options.archiveLimits });
    }
    // A fixed name: source maps record the path from the bundle to the sources, and a random one
    // would make identical code produce different artifacts.
    const srcDir = join(work, "src");
    await moveDir(unpacked.dir, srcDir);
    const sourceDigest = await digestTree(srcDir);
    emit(`Unpacked ${unpacked.fileCount} files (${unpacked.unpackedBytes} bytes), source ${sourceDigest}`);
    await options.onSource?.(sourceDigest);

    const reused = await findReusable(dataDir, sourceDigest);
    if (reused !== null) {
      emit(`Source unchanged since an earlier build: reusing its ${reused.length} artifact(s), nothing rebuilt`);
      log.info({ sourceDigest, functions: reused.length }, "build reused");
      return { sourceDigest, reused: true, functions: reused, warnings: [] };
    }

    const pkg = await readProjectPackage(srcDir);
    // Before anything is installed: npm would only warn, and the code would fail at load.
    checkEnginesNode(pkg.enginesNode, options.functionsNodeVersion ?? process.version);
    // npm ci and esbuild run in the build sandbox: only the work dir is writable, the data dir invisible.
    const sandbox = options.sandbox ?? createBuildSandbox(options.sandboxOptions);
    await sandbox.prepareWorkDir(work);
    if (pkg.hasDependencies) {
      await installDependencies({
        workDir: work, cacheDir: join(dataDir, "cache", "npm"), sandbox, allowScripts: pkg.allowScripts,
        timeoutMs: options.installTimeoutMs, onLog: emit, signal: options.signal,
      });
    } else {
      emit("No dependencies to install");
    }
    if (options.signal?.aborted) throw new StratusError("BUILD_FAILED", "The build was cancelled");

    const bundleDir = join(work, "bundle");
    const bundled = await sandbox.bundle(work, { signal: options.signal });
    const warnings = bundled.warnings.map(formatBundleMessage);
    for (const w of warnings) emit(`warning: ${w}`);
    // The project's files ship beside the bundle (read-only), so code can read what sits next to it.
    const shipped = await shipProjectFiles(srcDir, bundleDir, {
      maxBytes: options.archiveLimits?.maxUnpackedBytes ?? DEFAULT_ARCHIVE_LIMITS.maxUnpackedBytes,
      maxFiles: options.archiveLimits?.maxEntries ?? DEFAULT_ARCHIVE_LIMITS.maxEntries,
    });
    emit(`Shipping ${shipped.files} project file(s) (${shipped.bytes} bytes) beside the bundle${shipped.skipped > 0 ? `; left out ${shipped.skipped} symlink(s) or special file(s)` : ""}`);
    // The unpack dir has a random name: a default export is named after package.json or the CLI's folder.
    if (pkg.name === undefined) {
      const name = options.projectName ?? (options.dir !== undefined ? basename(resolve(options.dir)) : DEFAULT_PROJECT_NAME);
      let own: Record<string, unknown> = {};
      try {
        own = JSON.parse(await readFile(join(srcDir, "package.json"), "utf8")) as Record<string, unknown>;
      } catch { /* no package.json: only the name is written */ }
      await writeFile(join(bundleDir, "package.json"), `${JSON.stringify({ ...own, name, private: true })}\n`);
    }
    for (const native of bundled.externalNative) {
      emit(`Native package ${native} stays external: copying its installed folder`);
      await copyNativePackage(srcDir, native, join(bundleDir, "node_modules", native), emit);
    }
    if (bundled.externalPackages.length > 0) {
      // Packages that read their own files at run time: shipped, with what they depend on, read-only.
      const copied = await copyPackageClosure(srcDir, bundled.externalPackages, bundleDir, emit);
      emit(`Package(s) reading their own files stay external: ${bundled.externalPackages.join(", ")} (shipping ${copied.length} package folder(s) in node_modules)`);
    }
    const entry = relative(bundleDir, bundled.outFile);
    emit(`Bundled ${relative(srcDir, bundled.entry)} → ${entry} (${bundled.format})`);

    const discovered = await discover(options.driver, bundleDir, entry, options.discoverTimeoutMs ?? 30_000);
    // Settings in another platform's form that Stratus does not apply (Firebase's onRequest options).
    for (const d of discovered) for (const w of d.warnings ?? []) emit(`warning: ${d.name}: ${w}`);
    const functions = validate(discovered);
    emit(`Found ${functions.length} function(s): ${functions.map((f) => f.name).join(", ")}`);

    const built: BuiltVersion[] = [];
    for (const f of functions) {
      const manifest: ArtifactManifest = {
        format: 1, function: f.name, exportName: f.exportName, entry, config: f.config, sourceDigest, runtimeVersion: RUNTIME_VERSION,
      };
      const artifact = await writeArtifact(artifactsDir, bundleDir, manifest);
      built.push({ name: f.name, version: versionOfDigest(artifact.digest), digest: artifact.digest, artifactDir: artifact.dir, entry, exportName: f.exportName, config: f.config, sourceDigest });
      emit(`${f.name}: version ${versionOfDigest(artifact.digest)} (${artifact.digest}${artifact.existed ? ", already present" : ""})`);
    }
    await recordSource(dataDir, sourceDigest, built);
    log.info({ sourceDigest, functions: built.map((b) => `${b.name}@${b.version}`) }, "build done");
    return { sourceDigest, reused: false, functions: built, warnings };
  } catch (err) {
    const e = isStratusError(err) ? err
      : isStorageError(err) ? new StratusError("BUILD_STORAGE_ERROR", `The build host ran out of storage (${(err as { code?: string }).code})`, { cause: err })
      : new StratusError("INTERNAL", "The build failed unexpectedly", { cause: err });
    if (e.code === "INTERNAL") log.error({ err }, "build failed");
    emit(`Build failed: ${e.code}: ${e.message}`);
    throw e;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Renames `from` to `to`; across filesystems (EXDEV), copies then removes. */
async function moveDir(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as { code?: string }).code !== "EXDEV") throw err;
    await cp(from, to, { recursive: true, verbatimSymlinks: true });
    await rm(from, { recursive: true, force: true });
  }
}

async function discover(driver: Discoverer, artifactDir: string, entry: string, timeoutMs: number) {
  try {
    return await driver.discover({ artifactDir, entry, timeoutMs });
  } catch (err) {
    if (isStratusError(err) && err.code === "FUNCTION_LOAD_FAILED") {
      throw new StratusError("BUILD_FAILED", `The module failed to load: ${err.message}`, { cause: err, details: err.details });
    }
    throw err;
  }
}

/** Checks every discovered function; throws one error listing every problem. */
function validate(discovered: readonly { name: string; exportName: string; config: unknown; error?: unknown }[]) {
  if (discovered.length === 0) throw new StratusError("BUILD_FAILED", "The module exports no function");
  const problems: Problem[] = [];
  const out: { name: string; exportName: string; config: FunctionConfig }[] = [];
  const clashes = caseClashChecker();
  for (const d of discovered) {
    let ok = true;
    // The same rules (src/shared/names.ts) the runtime applied in discovery; checked again here because
    // the discovery output comes from a sandbox running user code.
    const nameProblem = functionNameProblem(d.name) ?? clashes(d.name);
    if (nameProblem !== null) {
      problems.push({ function: d.name, code: "INVALID_FUNCTION_NAME", message: nameProblem });
      ok = false;
    }
    // The runtime flags handlers that are not functions; bad names and configs we check ourselves.
    const reported = d.error as { code?: string; message?: string } | undefined;
    if (reported?.code === "FUNCTION_LOAD_FAILED") {
      problems.push({ function: d.name, code: "FUNCTION_LOAD_FAILED", message: reported.message ?? "cannot be loaded" });
      ok = false;
    }
    try {
      const config = parseFunctionConfig(d.name, d.config);
      if (ok) out.push({ name: d.name, exportName: d.exportName, config });
    } catch (err) {
      if (!isStratusError(err)) throw err;
      problems.push({ function: d.name, code: "INVALID_CONFIG", message: err.message, details: err.details });
    }
  }
  if (problems.length > 0) {
    // One code for the whole answer: a load problem is the module's fault (422), else 400.
    const code = problems.some((p) => p.code === "FUNCTION_LOAD_FAILED") ? "BUILD_FAILED"
      : problems.some((p) => p.code === "INVALID_CONFIG") ? "INVALID_CONFIG" : "INVALID_FUNCTION_NAME";
    throw new StratusError(code, problems.map((p) => p.message).join("; "), { details: problems });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** Writes one artifact (bundle + manifest) to a temp dir, digests it, then renames it into place. */
async function writeArtifact(artifactsDir: string, bundleDir: string, manifest: ArtifactManifest): Promise<{ dir: string; digest: string; existed: boolean }> {
  const tmp = join(artifactsDir, `.tmp-${randomUUID()}`);
  try {
    await cp(bundleDir, tmp, { recursive: true, verbatimSymlinks: true });
    await writeFile(join(tmp, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
    const digest = await digestTree(tmp);
    const dir = join(artifactsDir, digest);
    if (await exists(dir)) return { dir, digest, existed: true };
    // Read-only files: an artifact is immutable (the sandbox mounts it read-only anyway).
    for (const e of await listTree(tmp)) if (e.kind === "file") await chmod(join(tmp, e.path), e.executable ? 0o555 : 0o444);
    try {
      await rename(tmp, dir);
    } catch (err) {
      // A concurrent build of the same content won the race: same digest, same bytes.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOTEMPTY" || code === "EEXIST") return { dir, digest, existed: true };
      throw err;
    }
    return { dir, digest, existed: false };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Names the artifact's own files take at its root; an upload may not hold files of these names. */
const RESERVED_ROOT_FILES = [BUNDLE_FILES.cjs, `${BUNDLE_FILES.cjs}.map`, BUNDLE_FILES.esm, `${BUNDLE_FILES.esm}.map`, MANIFEST_FILE];

/**
 * Copies the project's files into the artifact beside the bundle: everything under `srcDir` except
 * `node_modules/` and `.git/` (dependencies are bundled; native packages are copied on their own) and
 * what the project's root `.gitignore` / `.stratusignore` exclude (the same rules as `stratus deploy`'s
 * packing, applied again here because an upload need not come from the CLI). Symlinks and special
 * files (only an allowed install script can have made them) are left out. The project's package.json
 * replaces the bundler's.
 * @throws StratusError BUILD_FAILED when a reserved name is taken or the files exceed the caps.
 */
async function shipProjectFiles(srcDir: string, to: string, caps: { maxBytes: number; maxFiles: number }): Promise<{ files: number; bytes: number; skipped: number }> {
  const ig = ignore().add([...ALWAYS_IGNORED]);
  for (const f of IGNORE_FILES) {
    const text = await readFile(join(srcDir, f), "utf8").catch(() => null);
    if (text !== null) ig.add(text);
  }
  for (const name of RESERVED_ROOT_FILES) {
    if (await exists(join(srcDir, name))) throw new StratusError("BUILD_FAILED", `The project may not hold a file named ${name} at its root: the artifact uses that name`);
  }
  let files = 0;
  let bytes = 0;
  let skipped = 0;
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(srcDir, rel))).sort()) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const st = await lstat(join(srcDir, r));
      if (st.isDirectory()) {
        if (ig.ignores(`${r}/`)) continue;
        await mkdir(join(to, r), { recursive: true });
        await walk(r);
      } else if (st.isFile()) {
        if (ig.ignores(r)) continue;
        files++;
        bytes += st.size;
        if (files > caps.maxFiles) throw new StratusError("BUILD_FAILED", `The project has more than ${caps.maxFiles} files to ship`);
        if (bytes > caps.maxBytes) throw new StratusError("BUILD_FAILED", `The project's files exceed ${caps.maxBytes} bytes (at ${r})`);
        await copyFile(join(srcDir, r), join(to, r));
        if ((st.mode & 0o111) !== 0) await chmod(join(to, r), 0o755);
      } else if (!ig.ignores(r)) {
        skipped++;
      }
    }
  };
  await walk("");
  return { files, bytes, skipped };
}

/**
 * Copies an installed native package into the artifact. Its folder must really be inside the
 * project's node_modules (npm may have made it a symlink, e.g. a `file:` dependency pointing out of
 * the project); symlinks inside it are left out (an artifact holds only files and directories).
 * @throws StratusError BUILD_IMPORT_OUTSIDE_PROJECT when the package resolves outside the project.
 */
async function copyNativePackage(srcDir: string, name: string, to: string, emit: (line: string) => void): Promise<void> {
  const from = join(srcDir, "node_modules", name);
  const realFrom = await realpath(from);
  const root = `${await realpath(join(srcDir, "node_modules"))}/`;
  if (!realFrom.startsWith(root)) {
    throw new StratusError("BUILD_IMPORT_OUTSIDE_PROJECT", `Native package ${name} resolves outside the project`, { details: { imports: [{ specifier: name, importer: "node_modules" }] } });
  }
  let skipped = 0;
  await cp(realFrom, to, {
    recursive: true,
    filter: async (p) => {
      const st = await lstat(p);
      if (st.isFile() || st.isDirectory()) return true;
      skipped++;
      return false;
    },
  });
  if (skipped > 0) emit(`${name}: left out ${skipped} symlink(s) or special file(s)`);
}

const exists = (p: string) => stat(p).then(() => true, () => false);

/** The reuse index: `<dataDir>/sources/<sourceDigest>.json` lists the functions built from that source. */
function sourceIndexFile(dataDir: string, sourceDigest: string): string {
  return join(dataDir, "sources", `${sourceDigest}.json`);
}

async function recordSource(dataDir: string, sourceDigest: string, built: readonly BuiltVersion[]): Promise<void> {
  const file = sourceIndexFile(dataDir, sourceDigest);
  await mkdir(join(dataDir, "sources"), { recursive: true });
  const tmp = `${file}.${randomUUID()}.tmp`;
  const entries = built.map(({ artifactDir: _dir, ...rest }) => rest);
  await writeFile(tmp, JSON.stringify({ runtimeVersion: RUNTIME_VERSION, functions: entries }));
  await rename(tmp, file);
}

/** The functions of an earlier build of the same source, if its index and artifacts are intact. */
async function findReusable(dataDir: string, sourceDigest: string): Promise<BuiltVersion[] | null> {
  let index: { runtimeVersion?: string; functions?: Omit<BuiltVersion, "artifactDir">[] };
  try {
    index = JSON.parse(await readFile(sourceIndexFile(dataDir, sourceDigest), "utf8")) as typeof index;
  } catch {
    return null;
  }
  if (index.runtimeVersion !== RUNTIME_VERSION || !Array.isArray(index.functions)) return null;
  const out: BuiltVersion[] = [];
  for (const f of index.functions) {
    const artifactDir = join(dataDir, "artifacts", f.digest);
    // A GC may have removed an artifact since: then rebuild rather than hand out a dangling path.
    if (!(await exists(join(artifactDir, MANIFEST_FILE)))) return null;
    out.push({ ...f, artifactDir });
  }
  return out;
}
