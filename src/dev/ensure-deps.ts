/**
 * Before `stratus dev` bundles a project: the npm dependencies its package.json lists must be installed,
 * or the bundler fails with a bare `Could not resolve "…"`. Missing ones are installed from the lockfile
 * with the flags a deploy uses (`npm ci --engine-strict`, lifecycle scripts off unless the project allows
 * them, a clean environment) — but in the project's own folder and without the build sandbox: `stratus
 * dev` runs the developer's own code on their own machine, unsandboxed by design (docs/dev.md). Without
 * a lockfile the error says exactly what to run.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { StratusError } from "../shared/errors";
import { readProjectPackage } from "../builder/install-deps";

/** Runs `npm ci` in `dir`, each output line to `onLog`. Rejects with npm's output on failure. */
function npmCi(dir: string, o: { cacheDir: string; homeDir: string; allowScripts: boolean; onLog: (line: string) => void }): Promise<void> {
  const args = ["ci", "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=warn", "--engine-strict"];
  if (!o.allowScripts) args.push("--ignore-scripts");
  o.onLog(`$ npm ${args.join(" ")}`);
  const npm = join(dirname(process.execPath), "npm");
  const env = { PATH: `${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`, HOME: o.homeDir, npm_config_cache: o.cacheDir };
  return new Promise((resolve, reject) => {
    execFile(existsSync(npm) ? npm : "npm", args, { cwd: dir, env, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      for (const line of `${stdout}${stderr}`.split("\n")) if (line.trim() !== "") o.onLog(line);
      if (err) reject(new Error(`npm ci failed${err.code !== undefined ? ` (exit ${String(err.code)})` : ""}`, { cause: err }));
      else resolve();
    });
  });
}

export interface EnsureDependenciesOptions {
  /** npm's cache directory (shared, content-addressed by npm). */
  readonly npmCacheDir: string;
  /** Progress and npm's output, one line each. */
  readonly print: (line: string) => void;
}

/**
 * Names of the packages `dir`'s package.json lists in `dependencies` (or, when there is no
 * node_modules at all, in any dependency field) that are not installed in `dir/node_modules`.
 * Optional dependencies may be missing by design and never count. [] without a package.json.
 * @throws StratusError BUILD_FAILED when package.json is not valid JSON.
 */
export function missingDependencies(dir: string): string[] {
  let pkg: Record<string, unknown>;
  try {
    pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as Record<string, unknown>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new StratusError("BUILD_FAILED", `package.json is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const names = (field: string): string[] => {
    const v = pkg[field];
    return v !== null && typeof v === "object" ? Object.keys(v) : [];
  };
  const noModules = !existsSync(join(dir, "node_modules"));
  const listed = noModules ? [...names("dependencies"), ...names("devDependencies")] : names("dependencies");
  return [...new Set(listed)].filter((name) => !existsSync(join(dir, "node_modules", name, "package.json")));
}

/**
 * Installs the project's dependencies from its lockfile when some are missing; does nothing otherwise.
 * @throws StratusError BUILD_FAILED naming the missing packages and the command to run: no lockfile,
 *   or `npm ci` failed (e.g. the lockfile is out of date, or the registry is unreachable).
 */
export async function ensureDependencies(dir: string, options: EnsureDependenciesOptions): Promise<void> {
  const missing = missingDependencies(dir);
  if (missing.length === 0) return;
  const shown = missing.length > 5 ? `${missing.slice(0, 5).join(", ")} and ${missing.length - 5} more` : missing.join(", ");
  const hasLock = existsSync(join(dir, "package-lock.json")) || existsSync(join(dir, "npm-shrinkwrap.json"));
  if (!hasLock) {
    throw new StratusError("BUILD_FAILED", `package.json lists dependencies that are not installed (${shown}) and there is no package-lock.json: run \`npm install\` in ${dir}`);
  }
  const pkg = await readProjectPackage(dir);
  options.print(`installing dependencies from the lockfile (missing: ${shown})`);
  const homeDir = mkdtempSync(join(tmpdir(), "stratus-dev-npm-"));
  try {
    await npmCi(dir, { cacheDir: options.npmCacheDir, homeDir, allowScripts: pkg.allowScripts, onLog: (line) => options.print(`  ${line}`) });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new StratusError("BUILD_FAILED", `installing the dependencies of package.json (missing: ${shown}) failed: ${why}\nRun \`npm ci\` (or \`npm install\` to update the lockfile) in ${dir}`, { cause: err });
  } finally {
    rmSync(homeDir, { recursive: true, force: true });
  }
}
