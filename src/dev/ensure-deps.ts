/**
 * Before `stratus dev` bundles a project: the npm dependencies its package.json lists must be installed,
 * or the bundler fails with a bare `Could not resolve "…"`. Missing ones are installed from the lockfile
 * the way a deploy installs them (`installDependencies` of src/builder/install-deps.ts: `npm ci`,
 * lifecycle scripts off unless the project allows them, a clean environment); without a lockfile the
 * error says exactly what to run.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StratusError } from "../shared/errors";
import { installDependencies, readProjectPackage } from "../builder/install-deps";

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
    await installDependencies({ dir, cacheDir: options.npmCacheDir, homeDir, allowScripts: pkg.allowScripts, onLog: (line) => options.print(`  ${line}`) });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new StratusError("BUILD_FAILED", `installing the dependencies of package.json (missing: ${shown}) failed: ${why}\nRun \`npm ci\` (or \`npm install\` to update the lockfile) in ${dir}`, { cause: err });
  } finally {
    rmSync(homeDir, { recursive: true, force: true });
  }
}
