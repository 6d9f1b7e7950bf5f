/**
 * npm packages that cannot be bundled because they read their own files at run time
 * (`fs.readFileSync(path.join(__dirname, "../cows", name))` in cowsay): inlined into the bundle, their
 * `__dirname` is the bundle's, and the files are not there. Such a package stays external (a `require`
 * at run time) and ships in the artifact's `node_modules`, read-only, with the packages it depends on;
 * everything else stays bundled.
 *
 * Which packages: detected automatically (`readsOwnFiles`: the package's own code builds a path from
 * `__dirname`/`__filename` AND the package holds files that are not code or docs — the assets such a
 * path leads to), plus those a project lists in its package.json `"stratus": { "external": ["name"] }`
 * (for what the detection misses, e.g. a path built without `__dirname`).
 *
 * Vercel traces every file a package touches (@vercel/nft); this is the cheaper static version of the
 * same idea: whole package folders instead of traced files (the artifact is a little larger), no
 * evaluation of the package's code. Every walk is bounded.
 */
import { existsSync, lstatSync, readdirSync, readFileSync } from "node:fs";
import { cp, lstat, realpath } from "node:fs/promises";
import { basename, dirname, join, relative, sep } from "node:path";
import { StratusError } from "../shared/errors";

const CODE = /\.(c|m)?(j|t)sx?$|\.map$|\.d\.(c|m)?ts$/;
const DOCS = /^(readme|license|licence|changelog|changes|history|authors|contributors|notice|security|code_of_conduct)(\.|$)|\.(md|markdown)$/i;
const META = new Set(["package.json", ".npmignore", ".eslintrc", ".eslintrc.json", ".editorconfig", ".prettierrc", "tsconfig.json", ".travis.yml", "yarn.lock", "package-lock.json", ".gitattributes", ".jshintrc"]);
/** `join(__dirname`, `resolve(__dirname`, `__dirname + "…"`, `` `${__dirname}/…` ``, and the same with `__filename`. */
const OWN_PATH = /\b(join|resolve)\s*\(\s*__(dirname|filename)\b|\b__(dirname|filename)\s*\+|\$\{\s*__(dirname|filename)\s*\}/;

/** Folders that are not what the package runs: nested packages, tests, examples, docs, CI. */
const SKIPPED_DIRS = new Set(["node_modules", ".git", ".github", "test", "tests", "__tests__", "spec", "example", "examples", "bench", "benchmark", "benchmarks", "doc", "docs", "coverage", "fixtures"]);

const MAX_FILES = 2000;
const MAX_DEPTH = 6;
const MAX_SOURCE_BYTES = 2 * 1024 * 1024;

/**
 * True when the installed package at `pkgDir` builds paths from its own `__dirname` and holds non-code
 * files (bounded walk: at most MAX_FILES entries, MAX_DEPTH levels, nested node_modules skipped).
 */
export function readsOwnFiles(pkgDir: string): boolean {
  let assets = false;
  let ownPath = false;
  let seen = 0;
  const walk = (dir: string, depth: number): void => {
    if (depth > MAX_DEPTH || (assets && ownPath)) return;
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (++seen > MAX_FILES || (assets && ownPath)) return;
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        if (!SKIPPED_DIRS.has(e.name)) walk(p, depth + 1);
        continue;
      }
      if (!e.isFile()) continue;
      if (/\.(c|m)?js$/.test(e.name)) {
        if (ownPath) continue;
        try {
          if (lstatSync(p).size <= MAX_SOURCE_BYTES && OWN_PATH.test(readFileSync(p, "utf8"))) ownPath = true;
        } catch { /* unreadable: not evidence either way */ }
      } else if (!CODE.test(e.name) && !DOCS.test(e.name) && !META.has(e.name)) {
        assets = true;
      }
    }
  };
  walk(pkgDir, 0);
  return assets && ownPath;
}

/**
 * package.json `stratus.external` of the project: package names to keep external (and ship).
 * @throws StratusError BUILD_FAILED when it is present but not an array of package names.
 */
export function declaredExternals(projectPackageJson: unknown): string[] {
  if (projectPackageJson === null || typeof projectPackageJson !== "object") return [];
  const stratus = (projectPackageJson as { stratus?: unknown }).stratus;
  if (stratus === undefined) return [];
  const external = stratus !== null && typeof stratus === "object" ? (stratus as { external?: unknown }).external : undefined;
  if (external === undefined) return [];
  const NAME = /^(@[a-z0-9][\w.-]*\/)?[a-z0-9][\w.-]*$/i;
  if (!Array.isArray(external) || external.length > 200 || !external.every((n) => typeof n === "string" && NAME.test(n))) {
    throw new StratusError("BUILD_FAILED", 'package.json "stratus.external" must be an array of npm package names, e.g. ["cowsay"]');
  }
  return [...new Set(external as string[])].sort();
}

/** The folder Node would load `name` from, required from `fromDir`, within `modulesRoot`'s project. */
function resolvePackageDir(name: string, fromDir: string, projectDir: string): string | undefined {
  // Bounded: one step up per iteration, stopping at the project dir.
  for (let at = fromDir; at === projectDir || at.startsWith(projectDir + sep); at = dirname(at)) {
    if (basename(at) !== "node_modules") {
      const candidate = join(at, "node_modules", name);
      if (existsSync(join(candidate, "package.json"))) return candidate;
    }
    if (at === projectDir) return undefined;
  }
  return undefined;
}

/**
 * Copies the installed packages `names` and every package they depend on (`dependencies`, and the
 * installed `optionalDependencies`, resolved as Node resolves them) from `projectDir`'s node_modules
 * to the same places under `toDir` (each package folder without its nested node_modules, which hold
 * dependencies copied on their own). Regular files and folders only; a package resolving outside the
 * project is refused. Returns the copied package folders, relative to the project, sorted.
 * @throws StratusError BUILD_IMPORT_OUTSIDE_PROJECT, BUILD_FAILED (a listed package is not installed).
 */
export async function copyPackageClosure(projectDir: string, names: readonly string[], toDir: string, emit: (line: string) => void): Promise<string[]> {
  const project = await realpath(projectDir);
  const seen = new Set<string>();
  const queue: Array<{ name: string; from: string; optional: boolean; root: boolean }> = names.map((name) => ({ name, from: project, optional: false, root: true }));
  // Bounded: each installed package folder is expanded once.
  while (queue.length > 0) {
    const { name, from, optional, root } = queue.shift()!;
    const dir = resolvePackageDir(name, from, project);
    if (dir === undefined) {
      if (root) throw new StratusError("BUILD_FAILED", `Package ${name} is not installed: it cannot be shipped external (add it to "dependencies")`);
      if (!optional) emit(`note: ${name}, a dependency of an external package, is not installed`);
      continue;
    }
    const real = await realpath(dir);
    if (real !== project && !real.startsWith(project + sep)) {
      throw new StratusError("BUILD_IMPORT_OUTSIDE_PROJECT", `Package ${name} resolves outside the project`, { details: { imports: [{ specifier: name, importer: "node_modules" }] } });
    }
    if (seen.has(dir)) continue;
    seen.add(dir);
    let pkg: { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> } = {};
    try {
      pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as typeof pkg;
    } catch { /* an unreadable package.json: the folder ships, its dependencies are unknown */ }
    for (const dep of Object.keys(pkg.dependencies ?? {})) queue.push({ name: dep, from: dir, optional: false, root: false });
    for (const dep of Object.keys(pkg.optionalDependencies ?? {})) queue.push({ name: dep, from: dir, optional: true, root: false });
  }
  const copied = [...seen].map((d) => relative(project, d)).sort();
  let skipped = 0;
  for (const rel of copied) {
    const from = join(project, rel);
    await cp(from, join(toDir, rel), {
      recursive: true,
      filter: async (p) => {
        if (p !== from && dirname(p) === from && basename(p) === "node_modules") return false;
        const st = await lstat(p);
        if (st.isFile() || st.isDirectory()) return true;
        skipped++;
        return false;
      },
    });
  }
  if (skipped > 0) emit(`external packages: left out ${skipped} symlink(s) or special file(s)`);
  return copied;
}
