/**
 * Installs a project's npm dependencies for a build: `npm ci` from the committed lockfile, inside the
 * build sandbox (the project dir and the npm cache are the only writable paths; the platform's data
 * is not visible), lifecycle scripts off unless the project opts in with
 * `"stratus": { "allowScripts": true }` in package.json, a clean environment (nothing of the
 * platform's env leaks into npm or install scripts), a timeout, and every output line streamed to `onLog`.
 *
 * Policy (see docs/build.md): a project with dependencies must ship `package-lock.json` (or
 * `npm-shrinkwrap.json`), or a Yarn 1 `yarn.lock` (installed with the pinned Yarn 1 the platform ships);
 * without one the build fails rather than resolving versions at deploy time, so what runs is what was
 * tested. pnpm, Yarn 2+ and Bun lockfiles are refused with UNSUPPORTED_LOCKFILE saying what to do.
 */
import { chown, lstat, mkdir, readdir, readFile, stat } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import semver from "semver";
import { StratusError } from "../shared/errors";
import { BUILD_SANDBOX_PATHS, type BuildSandbox } from "./build-sandbox";

/** What the build needs to know from package.json. */
export interface ProjectPackage {
  readonly name?: string;
  readonly hasDependencies: boolean;
  readonly allowScripts: boolean;
  /** `engines.node` as written, when there is one. */
  readonly enginesNode?: string;
}

/**
 * Checks package.json `engines.node` against the Node that runs the functions (both drivers run the
 * host's node: the process driver directly, the Docker base image copies that binary).
 * Prereleases of the running version count as that version (`includePrerelease`).
 * @param nodeVersion e.g. `process.version` ("v20.20.2").
 * @throws StratusError UNSUPPORTED_NODE_VERSION when the range is not valid semver or excludes `nodeVersion`.
 */
export function checkEnginesNode(range: string | undefined, nodeVersion: string): void {
  if (range === undefined) return;
  const version = semver.coerce(nodeVersion)?.version ?? nodeVersion;
  if (semver.validRange(range) === null) {
    throw new StratusError("UNSUPPORTED_NODE_VERSION", `package.json "engines.node" is ${JSON.stringify(range.slice(0, 100))}, which is not a valid semver range (e.g. ">=20")`, { details: { required: range.slice(0, 100), actual: version } });
  }
  if (!semver.satisfies(version, range, { includePrerelease: true })) {
    throw new StratusError("UNSUPPORTED_NODE_VERSION", `package.json "engines.node" is ${JSON.stringify(range)}, but functions on this platform run on Node ${version}: widen the range (running several Node versions side by side is not supported yet)`, { details: { required: range, actual: version } });
  }
}

/**
 * Reads `<dir>/package.json`; a missing file means "no dependencies".
 * @throws StratusError BUILD_FAILED when it is not valid JSON or `stratus.allowScripts` is not a boolean.
 */
export async function readProjectPackage(dir: string): Promise<ProjectPackage> {
  let text: string;
  try {
    text = await readFile(join(dir, "package.json"), "utf8");
  } catch {
    return { hasDependencies: false, allowScripts: false };
  }
  let pkg: Record<string, unknown>;
  try {
    pkg = JSON.parse(text) as Record<string, unknown>;
  } catch (cause) {
    throw new StratusError("BUILD_FAILED", `package.json is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  const count = (v: unknown) => (v !== null && typeof v === "object" ? Object.keys(v).length : 0);
  const stratus = (pkg.stratus ?? {}) as Record<string, unknown>;
  if (stratus.allowScripts !== undefined && typeof stratus.allowScripts !== "boolean") {
    throw new StratusError("BUILD_FAILED", 'package.json "stratus.allowScripts" must be true or false');
  }
  const engines = pkg.engines as Record<string, unknown> | undefined;
  const enginesNode = engines !== null && typeof engines === "object" ? engines.node : undefined;
  if (enginesNode !== undefined && typeof enginesNode !== "string") {
    throw new StratusError("UNSUPPORTED_NODE_VERSION", 'package.json "engines.node" must be a string (a semver range such as ">=20")');
  }
  return {
    ...(enginesNode !== undefined ? { enginesNode } : {}),
    name: typeof pkg.name === "string" && pkg.name !== "" ? pkg.name.replace(/^@[^/]+\//, "") : undefined,
    hasDependencies: count(pkg.dependencies) + count(pkg.devDependencies) + count(pkg.optionalDependencies) > 0,
    allowScripts: stratus.allowScripts === true,
  };
}

export interface InstallOptions {
  /** The build's work dir on the host; the unpacked project is its `src/` (mounted at /build/src). */
  readonly workDir: string;
  /** Shared npm cache directory (content-addressed by npm, integrity-checked against the lockfile). */
  readonly cacheDir: string;
  /** Runs npm; the project dir is the only writable path besides the cache. */
  readonly sandbox: BuildSandbox;
  readonly allowScripts: boolean;
  /** Kill npm after this long, ms. Default 300,000. */
  readonly timeoutMs?: number;
  /** Receives each output line of npm. */
  readonly onLog: (line: string) => void;
  /** Aborting kills npm. */
  readonly signal?: AbortSignal;
}

/**
 * Installs the project's dependencies inside the build sandbox (build-sandbox.ts): `npm ci` from
 * package-lock.json / npm-shrinkwrap.json, else Yarn 1 (`yarn install --frozen-lockfile`) from a Yarn 1
 * yarn.lock. Other lockfiles are refused with what to do.
 * @throws StratusError BUILD_FAILED (no lockfile, the install failed, timed out, aborted),
 *   UNSUPPORTED_LOCKFILE (only pnpm / Yarn 2+ / Bun lockfiles), UNSUPPORTED_NODE_VERSION (a dependency's engines).
 */
export async function installDependencies(options: InstallOptions): Promise<void> {
  const dir = join(options.workDir, "src");
  const hasLock = (f: string) => stat(join(dir, f)).then(() => true, () => false);
  if (!(await hasLock("package-lock.json")) && !(await hasLock("npm-shrinkwrap.json"))) {
    if (await hasLock("yarn.lock")) {
      const head = (await readFile(join(dir, "yarn.lock"), "utf8")).slice(0, 4096);
      // Yarn 2+ ("berry") lockfiles carry a __metadata block; Yarn 1's say "yarn lockfile v1".
      if (!/^__metadata:/m.test(head)) return installWithYarn1(options);
      throw new StratusError("UNSUPPORTED_LOCKFILE", "The project's yarn.lock is a Yarn 2+ lockfile: Stratus installs with npm or Yarn 1 only (Yarn 2+ defaults to Plug'n'Play, which leaves no node_modules to bundle). Run `npm install --package-lock-only` in the project and deploy the package-lock.json it writes", { details: { lockfile: "yarn.lock", tool: "Yarn 2+" } });
    }
    for (const [file, tool] of OTHER_LOCKFILES) {
      if (await hasLock(file)) {
        throw new StratusError("UNSUPPORTED_LOCKFILE", `The project has ${file} (${tool}) but no package-lock.json: Stratus installs dependencies with \`npm ci\` (or Yarn 1) only. Run \`npm install --package-lock-only\` in the project and deploy the package-lock.json it writes (keep ${file} if you like; it is not read)`, { details: { lockfile: file, tool } });
      }
    }
    throw new StratusError("BUILD_FAILED", "package.json declares dependencies but there is no package-lock.json: run `npm install` locally and deploy the lockfile with the project");
  }
  await mkdir(options.cacheDir, { recursive: true });
  await handCacheTo(options.cacheDir, options.sandbox.uid, options.sandbox.gid);
  await mkdir(join(options.workDir, "home"), { recursive: true });
  await chown(join(options.workDir, "home"), options.sandbox.uid, options.sandbox.gid);
  // --engine-strict: a dependency whose `engines` excludes this Node fails the install (npm only warns
  // by default, and the package then fails at load, or worse, later).
  const args = ["ci", "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=warn", "--engine-strict"];
  if (!options.allowScripts) args.push("--ignore-scripts");
  options.onLog(`$ npm ${args.join(" ")}${options.allowScripts ? "   (lifecycle scripts allowed by package.json stratus.allowScripts)" : ""}`);
  // npm sits next to node in every official distribution; the explicit PATH keeps the host's out.
  const env: Record<string, string> = {
    PATH: `${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`,
    HOME: BUILD_SANDBOX_PATHS.home,
    npm_config_cache: BUILD_SANDBOX_PATHS.cache,
    npm_config_update_notifier: "false",
    npm_config_userconfig: `${BUILD_SANDBOX_PATHS.home}/.npmrc`,
    LANG: "C.UTF-8",
  };
  const timeoutMs = options.timeoutMs ?? 300_000;
  const errorLines: string[] = [];
  const exit = await options.sandbox.run({
    workDir: options.workDir, cacheDir: options.cacheDir, network: "registry", cwd: BUILD_SANDBOX_PATHS.src,
    argv: ["npm", ...args], env, timeoutMs, signal: options.signal,
    onLine: (line) => {
      options.onLog(line);
      if (/^npm (error|ERR!)/.test(line) && errorLines.length < 40) errorLines.push(line);
    },
  });
  if (exit.killed !== null) throw new StratusError("BUILD_FAILED", exit.killed.startsWith("timed out") ? `npm ci ${exit.killed}` : exit.killed);
  if (exit.code !== 0 && errorLines.some((l) => /\bEBADENGINE\b/.test(l))) {
    // npm error engine Not compatible with your version of node/npm: dep@1.0.0 / notsup Required: {...}
    const what = errorLines.filter((l) => /Not compatible|Required:|Actual:/.test(l)).map((l) => l.replace(/^npm (error|ERR!)\s*(engine|notsup)?\s*/, "").replace(/\s+/g, " "));
    const uniq = [...new Set(what)].slice(0, 6);
    throw new StratusError("UNSUPPORTED_NODE_VERSION", `A dependency does not support Node ${process.version} (its package.json "engines"): ${uniq.join("; ") || "see the build log"}`, { details: { npm: uniq } });
  }
  if (exit.code !== 0) {
    // npm's last lines are boilerplate (usage, "a complete log…"): show its error lines before them.
    const useful = errorLines.filter((l) => !NPM_BOILERPLATE.test(l)).slice(0, 8);
    throw new StratusError("BUILD_FAILED", `npm ci failed (${exit.signal ?? `exit ${exit.code}`}): ${(useful.length > 0 ? useful : exit.tail).join(" | ") || "no output"}`);
  }
}

/** The pinned Yarn 1 the platform ships (the `yarn` npm package, a dependency of Stratus). */
function yarn1PackageDir(): string {
  return dirname(dirname(createRequire(import.meta.url).resolve("yarn/bin/yarn.js")));
}

/**
 * Yarn 1 in the build sandbox: `--frozen-lockfile` (the lockfile is the truth; a mismatch fails),
 * `--ignore-scripts` unless allowed, engines checked (Yarn 1 fails on a mismatch by default), its own
 * cache at `<dataDir>/cache/yarn` (beside npm's).
 */
async function installWithYarn1(options: InstallOptions): Promise<void> {
  const cacheDir = join(dirname(options.cacheDir), "yarn");
  await mkdir(cacheDir, { recursive: true });
  await handCacheTo(cacheDir, options.sandbox.uid, options.sandbox.gid);
  await mkdir(join(options.workDir, "home"), { recursive: true });
  await chown(join(options.workDir, "home"), options.sandbox.uid, options.sandbox.gid);
  const args = ["install", "--frozen-lockfile", "--non-interactive", "--no-progress", "--production=false", "--cache-folder", BUILD_SANDBOX_PATHS.yarnCache];
  if (!options.allowScripts) args.push("--ignore-scripts");
  options.onLog(`$ yarn ${args.join(" ")}   (Yarn 1.22.22, from yarn.lock)${options.allowScripts ? "   (lifecycle scripts allowed by package.json stratus.allowScripts)" : ""}`);
  const errorLines: string[] = [];
  const exit = await options.sandbox.run({
    workDir: options.workDir, cacheDir, cacheMount: BUILD_SANDBOX_PATHS.yarnCache, network: "registry", cwd: BUILD_SANDBOX_PATHS.src,
    roBinds: [[yarn1PackageDir(), BUILD_SANDBOX_PATHS.yarn]],
    argv: [process.execPath, `${BUILD_SANDBOX_PATHS.yarn}/bin/yarn.js`, ...args],
    env: {
      PATH: `${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`, HOME: BUILD_SANDBOX_PATHS.home, LANG: "C.UTF-8",
      YARN_IGNORE_PATH: "1", YARN_ENABLE_TELEMETRY: "0", YARN_DISABLE_SELF_UPDATE_CHECK: "1",
    },
    timeoutMs: options.timeoutMs ?? 300_000, signal: options.signal,
    onLine: (line) => {
      options.onLog(line);
      if (/^error /.test(line) && errorLines.length < 40) errorLines.push(line);
    },
  });
  if (exit.killed !== null) throw new StratusError("BUILD_FAILED", exit.killed.startsWith("timed out") ? `yarn install ${exit.killed}` : exit.killed);
  if (exit.code !== 0 && errorLines.some((l) => /engine "node" is incompatible/.test(l))) {
    const what = errorLines.filter((l) => /engine "node" is incompatible/.test(l)).map((l) => l.replace(/^error\s*/, "")).slice(0, 6);
    throw new StratusError("UNSUPPORTED_NODE_VERSION", `A dependency does not support Node ${process.version} (its package.json "engines"): ${what.join("; ")}`, { details: { yarn: what } });
  }
  if (exit.code !== 0) {
    const useful = errorLines.filter((l) => !/Visit https:\/\/yarnpkg/.test(l)).slice(0, 8);
    throw new StratusError("BUILD_FAILED", `yarn install failed (${exit.signal ?? `exit ${exit.code}`}): ${(useful.length > 0 ? useful : exit.tail).join(" | ") || "no output"}`);
  }
}

/** Lockfiles of other package managers, recognised only to say what to do instead. */
const OTHER_LOCKFILES = [["pnpm-lock.yaml", "pnpm"], ["bun.lockb", "Bun"], ["bun.lock", "Bun"]] as const;

const NPM_BOILERPLATE = /A complete log of this run|^npm (error|ERR!)\s*$|aliases:|Run "npm help|^npm (error|ERR!) (Usage|npm ci)\b|^npm (error|ERR!)\s+(npm ci|Clean install|Options:|\[)/;

/**
 * Makes the shared npm cache writable by the build uid. A cache written by an earlier (host-run)
 * build is root's: it is handed over once, recursively (bounded by the cache's size, done once).
 */
async function handCacheTo(cacheDir: string, uid: number, gid: number): Promise<void> {
  const st = await lstat(cacheDir);
  if (st.uid === uid && st.gid === gid) return;
  const walk = async (p: string): Promise<void> => {
    const s = await lstat(p);
    if (s.isSymbolicLink()) return;
    await chown(p, uid, gid);
    if (s.isDirectory()) for (const name of await readdir(p)) await walk(join(p, name));
  };
  await walk(cacheDir);
}
