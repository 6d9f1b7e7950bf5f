/**
 * Bundles a function project into one file the runtime loads: esbuild, platform node, target node20,
 * TypeScript included, npm dependencies bundled, Node builtins external.
 *
 * Output format: CommonJS (`.stratus-bundle.cjs`, at the root of the output dir) by default, because it serves CJS, ESM and TS sources alike:
 * CJS dependencies that `require("fs")` keep a real `require` (an ESM bundle would fail at run time with
 * "Dynamic require of … is not supported"), and the named exports of a CJS entry stay intact.
 * The project's own modules get their own `__dirname`, `__filename` and `import.meta.url` (see
 * modulePathsPlugin: the project's files ship beside the bundle); elsewhere `import.meta.url` is the
 * bundle's own file URL. Only when a source uses top-level await
 * (impossible in CJS) is the project rebuilt as ESM (`.stratus-bundle.mjs`), with a `require` made by
 * `createRequire` and `__dirname`/`__filename` defined for the CJS code inside.
 *
 * Native addons: a package holding a `.node` file, a `binding.gyp` or a `prebuilds/` folder cannot be
 * inlined; it is marked external and listed in `externalNative`. The artifact then needs that package's
 * installed folder beside the bundle (`<outDir>/node_modules/<name>`): the builder copies it.
 *
 * Packages that read their own files at run time (`path.join(__dirname, "../cows")`, detected by
 * external-packages.ts `readsOwnFiles`, or listed in package.json `stratus.external`) stay external
 * too, listed in `externalPackages`: the builder ships them with their dependencies in the artifact's
 * node_modules (`copyPackageClosure`).
 *
 * `import … from "stratus"` / `"stratus/sdk"` resolve to the SDK (src/builder/sdk-source.ts), so user
 * projects install nothing of Stratus. `@google-cloud/functions-framework` resolves to a registration shim
 * (src/builder/functions-framework-shim.ts), installed or not: its `http(name, handler)` registrations become
 * functions beside the exports.
 */
import { build, transform, type BuildFailure, type Loader, type Message, type Plugin } from "esbuild";
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { isBuiltin } from "node:module";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { StratusError } from "../shared/errors";
import { SDK_RUNTIME_SOURCE } from "./sdk-source";
import { FUNCTIONS_FRAMEWORK_SHIM_SOURCE } from "./functions-framework-shim";
import { declaredExternals, readsOwnFiles } from "./external-packages";

/** One esbuild diagnostic, with the file position when esbuild knows it. */
export interface BundleMessage {
  readonly text: string;
  /** Path relative to the project dir. */
  readonly file?: string;
  readonly line?: number;
  readonly column?: number;
  readonly lineText?: string;
}

export interface BundleResult {
  /** Absolute path of the bundle (`<outDir>/.stratus-bundle.cjs` or `.mjs`). */
  readonly outFile: string;
  readonly format: "cjs" | "esm";
  /** The resolved entry, absolute. */
  readonly entry: string;
  /** package.json `name` without scope, else the folder name (names a default-export function). */
  readonly projectName: string;
  readonly warnings: BundleMessage[];
  /** Packages left external because they hold native addons. */
  readonly externalNative: string[];
  /** Packages left external because they read their own files (or the project lists them in `stratus.external`). */
  readonly externalPackages: string[];
}

export interface BundleOptions {
  /** Emit a linked source map (default true): stacks then point at the user's files. */
  readonly sourcemap?: boolean;
  /** Minify (default false: readable stacks matter more than bytes for server code). */
  readonly minify?: boolean;
  /**
   * Absolute dir the project's files are found in at run time (default: the bundle's own dir, which is
   * the artifact root). `stratus dev` runs a bundle from a temp dir and passes the project dir.
   */
  readonly filesRoot?: string;
}

const ENTRY_CANDIDATES = ["index.js", "index.ts", "index.mjs", "index.cjs", "index.mts", "index.cts"];
const TLA_ERROR = /Top-level await is currently not supported with the "cjs" output format/;

/** Formats a diagnostic as `file:line:column: text`. */
export function formatBundleMessage(m: BundleMessage): string {
  return m.file ? `${m.file}:${m.line ?? 0}:${m.column ?? 0}: ${m.text}` : m.text;
}

function toMessage(m: Message): BundleMessage {
  if (!m.location) return { text: m.text };
  return { text: m.text, file: m.location.file, line: m.location.line, column: m.location.column + 1, lineText: m.location.lineText };
}

function readPackageJson(dir: string): { name?: unknown; main?: unknown } | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: unknown; main?: unknown };
  } catch {
    return undefined;
  }
}

/** package.json `name` without its scope, else the folder name. */
export function projectNameOf(projectDir: string): string {
  const name = readPackageJson(projectDir)?.name;
  return typeof name === "string" && name.length > 0 ? name.replace(/^@[^/]+\//, "") : basename(resolve(projectDir));
}

/**
 * The entry module of a project: package.json `main`, else the first of index.js, index.ts, index.mjs,
 * index.cjs (then .mts, .cts).
 * @throws StratusError BUILD_FAILED when there is none (or `main` names a missing file).
 */
export function resolveEntry(projectDir: string): string {
  const dir = resolve(projectDir);
  const main = readPackageJson(dir)?.main;
  if (typeof main === "string" && main.length > 0) {
    const p = resolve(dir, main);
    if (!isInside(p, dir) || !isInside(safeRealpath(p), safeRealpath(dir))) {
      throw new StratusError("BUILD_IMPORT_OUTSIDE_PROJECT", `package.json "main" (${JSON.stringify(main.slice(0, 200))}) points outside the project`, { details: { imports: [{ specifier: main.slice(0, 200), importer: "package.json" }] } });
    }
    for (const c of [p, `${p}.js`, `${p}.ts`, join(p, "index.js"), join(p, "index.ts")]) {
      if (existsSync(c) && statSync(c).isFile()) return c;
    }
    throw new StratusError("BUILD_FAILED", `package.json "main" names ${main}, which does not exist in ${dir}`);
  }
  for (const c of ENTRY_CANDIDATES) if (existsSync(join(dir, c))) return join(dir, c);
  throw new StratusError("BUILD_FAILED", `No entry module in ${dir}: add package.json "main" or one of ${ENTRY_CANDIDATES.slice(0, 4).join(", ")}`);
}

/** True when an installed package folder holds a native addon (bounded walk, skips nested node_modules). */
function hasNativeAddon(pkgDir: string, depth = 0): boolean {
  if (depth === 0 && (existsSync(join(pkgDir, "binding.gyp")) || existsSync(join(pkgDir, "prebuilds")))) return true;
  if (depth > 3) return false;
  let entries;
  try {
    entries = readdirSync(pkgDir, { withFileTypes: true });
  } catch {
    return false;
  }
  for (const e of entries) {
    if (e.isFile() && e.name.endsWith(".node")) return true;
    if (e.isDirectory() && e.name !== "node_modules" && hasNativeAddon(join(pkgDir, e.name), depth + 1)) return true;
  }
  return false;
}

function packageNameOf(specifier: string): string {
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : (parts[0] ?? specifier);
}

/** One import the confinement refused: who imported what (never the content of the target). */
export interface OutsideImport {
  /** The specifier as written. */
  readonly specifier: string;
  /** Importing file, relative to the project dir ("(entry)" for the entry point). */
  readonly importer: string;
  readonly line?: number;
  readonly column?: number;
}

/** True when `path` (already real) is `root` or below it. */
function isInside(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

const CONFINE_MARK = "stratus-confine-checked";

/**
 * True when package specifier `spec` (`pkg`, `pkg/sub`, `@scope/pkg/sub`) has a `node_modules/<pkg>`
 * entry (a folder or a symlink, not followed) in `fromDir` or a folder above it, up to `root` included —
 * that is, when Node's resolution from `fromDir` finds it without leaving the project.
 */
function installedInProject(spec: string, fromDir: string, root: string): boolean {
  const parts = spec.split("/");
  const pkg = spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
  for (let dir = fromDir; isInside(dir, root); dir = dirname(dir)) {
    try {
      lstatSync(join(dir, "node_modules", pkg));
      return true;
    } catch {
      // not here: one folder up
    }
    if (dir === root) break;
  }
  return false;
}

/** True for a path specifier (absolute, `./`, `../`, `.`, `..`), false for a package name. */
function isPathSpecifier(p: string): boolean {
  return isAbsolute(p) || p.startsWith("./") || p.startsWith("../") || p === "." || p === "..";
}
const OUTSIDE_TEXT = "Import resolves outside the project:";

/**
 * Confinement: every import must resolve to a file inside the project dir (its own files and its
 * installed node_modules), after symlinks are followed; Node builtins and the Stratus SDK are the
 * only other targets. Anything else (`require("/etc/passwd")`, `../../x`, a node_modules symlink
 * pointing out of the project, tsconfig `paths` that lead outside) is refused, and every refusal is
 * collected so the error lists them all.
 */
function confinePlugin(root: string, refused: OutsideImport[]): Plugin {
  return {
    name: "stratus-confine",
    setup(b) {
      b.onResolve({ filter: /.*/ }, async (args) => {
        if ((args.pluginData as Record<string, unknown> | undefined)?.[CONFINE_MARK] === true) return undefined;
        if (args.namespace !== "file") return undefined;
        if (isBuiltin(args.path)) return undefined;
        const importer = args.kind === "entry-point" ? "(entry)" : relative(root, args.importer) || args.importer;
        const refuse = () => {
          refused.push({ specifier: args.path, importer });
          return { errors: [{ text: `${OUTSIDE_TEXT} ${JSON.stringify(args.path)}` }] };
        };
        // A path specifier is judged before resolution: whether or not its target exists (in the
        // build sandbox the host's files do not), leaving the project is refused the same way.
        if (isPathSpecifier(args.path)) {
          const lexical = resolve(args.resolveDir || root, args.path);
          if (!isInside(lexical, root)) return refuse();
        }
        const r = await b.resolve(args.path, {
          kind: args.kind, importer: args.importer, resolveDir: args.resolveDir, namespace: args.namespace,
          pluginData: { [CONFINE_MARK]: true }, with: args.with,
        });
        // Unresolvable: let esbuild's own resolution fail the same way (inside try/catch a missing
        // optional require is only a warning, e.g. debug's `require("supports-color")`).
        if (r.errors.length > 0) return undefined;
        if (r.external || r.namespace !== "file") return { ...r, pluginData: undefined };
        let real: string;
        try {
          real = realpathSync(r.path);
        } catch {
          real = r.path;
        }
        if (isInside(real, root)) return { path: r.path, namespace: r.namespace, sideEffects: r.sideEffects, suffix: r.suffix };
        // A package name that resolved only by walking up past the project (a node_modules of a parent
        // folder: `stratus dev` in a monorepo, a project inside another checkout) is not installed in the
        // project. In the build sandbox it would not resolve at all, so it is treated the same way: left
        // as a run-time require (nothing outside is read), which fails at load unless the code catches it
        // (debug's optional `require("supports-color")`). A symlink inside the project pointing out stays
        // refused (`r.path` is inside, its target is not).
        if (!isPathSpecifier(args.path) && !installedInProject(args.path, args.resolveDir || root, root)) {
          return { path: args.path, external: true, warnings: [{ text: `${JSON.stringify(args.path)} is not installed in the project (it resolved only outside it); left as a run-time require` }] };
        }
        return refuse();
      });
    },
  };
}

/** Names of the bundle in an artifact (at its root); a project may not ship files of these names. */
export const BUNDLE_FILES = { cjs: ".stratus-bundle.cjs", esm: ".stratus-bundle.mjs" } as const;

const PATHS_PLACEHOLDER = "{}/*STRATUS_PATHS*/";
const LOADERS: Record<string, Loader> = { ".js": "js", ".cjs": "js", ".mjs": "js", ".jsx": "jsx", ".ts": "ts", ".cts": "ts", ".mts": "ts", ".tsx": "tsx" };

/**
 * Per-module `__dirname`, `__filename` and `import.meta.url` for the project's own files: the bundle
 * sits at the artifact root, beside the project's shipped files, and each source module sees the
 * path it has in the project (`lib/render.js` gets `<artifact>/lib`), as it would unbundled — so
 * `fs.readFileSync(path.join(__dirname, "template.html"))` finds the file next to the code. Only files
 * that mention one of the three are rewritten (an esbuild transform with `define`, source map kept);
 * `files` receives index → project-relative path, written into the bundle's first line afterwards.
 * Dependencies in node_modules keep the bundle-level values (their folders are not shipped; a package
 * that reads its own files stays external instead, see external-packages.ts).
 */
function modulePathsPlugin(root: string, files: string[]): Plugin {
  return {
    name: "stratus-module-paths",
    setup(b) {
      b.onLoad({ filter: /\.(c|m)?[jt]sx?$/, namespace: "file" }, async (args) => {
        const rel = relative(root, args.path);
        if (rel.startsWith("..") || isAbsolute(rel) || rel.split(sep).includes("node_modules")) return undefined;
        const source = await readFile(args.path, "utf8");
        if (!/__dirname|__filename|import\.meta\.url/.test(source)) return undefined;
        const loader = LOADERS[args.path.slice(args.path.lastIndexOf("."))] ?? "js";
        let i = files.indexOf(rel);
        if (i === -1) i = files.push(rel) - 1;
        const out = await transform(source, {
          loader, sourcefile: rel, sourcemap: "inline", sourcesContent: false,
          define: { __dirname: `__stratus_paths.d${i}`, __filename: `__stratus_paths.f${i}`, "import.meta.url": `__stratus_paths.u${i}` },
        });
        return { contents: out.code, loader: "js", resolveDir: dirname(args.path) };
      });
    },
  };
}

/** First-line helper building `__stratus_paths` from the bundle's own dir and the index → path table. */
function pathsBanner(rootExpr: string): string {
  return `var __stratus_paths = (function (r, m) { var p = require("path"), u = require("url"), o = {}; for (var k in m) { var f = p.join(r, m[k]); o["f" + k] = f; o["d" + k] = p.dirname(f); o["u" + k] = u.pathToFileURL(f).href; } return o; })(${rootExpr}, ${PATHS_PLACEHOLDER});`;
}

function plugins(root: string, externalNative: Set<string>, externalPackages: Set<string>, declared: ReadonlySet<string>, refused: OutsideImport[], files: string[]): Plugin[] {
  const kindCache = new Map<string, "native" | "own-files" | null>();
  return [
    {
      name: "stratus-sdk",
      setup(b) {
        b.onResolve({ filter: /^stratus(\/sdk)?$/ }, () => ({ path: "stratus-sdk", namespace: "stratus-sdk" }));
        b.onLoad({ filter: /.*/, namespace: "stratus-sdk" }, () => ({ contents: SDK_RUNTIME_SOURCE, loader: "js" }));
      },
    },
    {
      // Compatibility with Google Cloud Functions: the framework's registration API, not the framework.
      name: "stratus-functions-framework",
      setup(b) {
        b.onResolve({ filter: /^@google-cloud\/functions-framework$/ }, () => ({ path: "functions-framework", namespace: "stratus-functions-framework" }));
        b.onLoad({ filter: /.*/, namespace: "stratus-functions-framework" }, () => ({ contents: FUNCTIONS_FRAMEWORK_SHIM_SOURCE, loader: "js" }));
      },
    },
    {
      name: "stratus-native-external",
      setup(b) {
        // Bare specifiers only; builtins are external already on platform node.
        b.onResolve({ filter: /^(@[^/]+\/)?[^./][^:]*$/ }, (args) => {
          const name = packageNameOf(args.path);
          let kind = kindCache.get(name);
          if (kind === undefined) {
            kind = null;
            // Only node_modules inside the project count (the confinement refuses the others anyway).
            for (let dir = args.resolveDir; isInside(dir, root); dir = dirname(dir)) {
              const pkgDir = join(dir, "node_modules", name);
              if (existsSync(join(pkgDir, "package.json"))) {
                if (isInside(safeRealpath(pkgDir), root)) {
                  kind = hasNativeAddon(pkgDir) ? "native" : declared.has(name) || readsOwnFiles(pkgDir) ? "own-files" : null;
                }
                break;
              }
              if (dirname(dir) === dir) break;
            }
            kindCache.set(name, kind);
          }
          if (kind === null) return undefined;
          (kind === "native" ? externalNative : externalPackages).add(name);
          return { path: args.path, external: true };
        });
      },
    },
    confinePlugin(root, refused),
    modulePathsPlugin(root, files),
  ];
}

function safeRealpath(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/**
 * Bundles `projectDir` into `outDir` (created if missing) and writes `<outDir>/package.json` holding the
 * project name, so a runtime in discovery mode can name a default-export function.
 * @returns the output file, format, warnings with file:line, and native packages left external.
 * @throws StratusError BUILD_FAILED with `details.errors` (BundleMessage[]) and the first errors in the message.
 */
export async function bundleProject(projectDir: string, outDir: string, options: BundleOptions = {}): Promise<BundleResult> {
  const dir = resolve(projectDir);
  const root = safeRealpath(dir);
  const entry = resolveEntry(dir);
  const projectName = projectNameOf(dir);
  mkdirSync(outDir, { recursive: true });
  const externalNative = new Set<string>();
  const externalPackages = new Set<string>();
  const declared = new Set(declaredExternals(readPackageJson(dir)));
  const refused: OutsideImport[] = [];

  const files: string[] = [];
  const run = (format: "cjs" | "esm") => {
    files.length = 0;
    const outfile = resolve(outDir, BUNDLE_FILES[format]);
    // The paths helper is on the banner's first line: filling its table in afterwards shifts no
    // mapped line of the source map.
    const banner =
      format === "cjs"
        ? `${pathsBanner(options.filesRoot !== undefined ? JSON.stringify(options.filesRoot) : "__dirname")} var __stratus_import_meta_url = require("url").pathToFileURL(__filename).href;`
        : [
            'import { createRequire as __stratusCreateRequire } from "module"; import { fileURLToPath as __stratusFileURLToPath } from "url"; const require = __stratusCreateRequire(import.meta.url); const __stratus_filename = __stratusFileURLToPath(import.meta.url); const __stratus_dirname = __stratus_filename.slice(0, __stratus_filename.lastIndexOf("/")); ' + pathsBanner(options.filesRoot !== undefined ? JSON.stringify(options.filesRoot) : "__stratus_dirname"),
          ].join("\n");
    const define: Record<string, string> =
      format === "cjs" ? { "import.meta.url": "__stratus_import_meta_url" } : { __filename: "__stratus_filename", __dirname: "__stratus_dirname" };
    return build({
      absWorkingDir: dir,
      entryPoints: [entry],
      outfile,
      bundle: true,
      platform: "node",
      target: "node20",
      format,
      banner: { js: banner },
      define,
      sourcemap: options.sourcemap === false ? false : "linked",
      sourcesContent: false,
      minify: options.minify === true,
      keepNames: true,
      logLevel: "silent",
      plugins: plugins(root, externalNative, externalPackages, declared, refused, files),
    }).then((r) => ({ outfile, result: r }));
  };

  let format: "cjs" | "esm" = "cjs";
  let out;
  try {
    try {
      out = await run("cjs");
    } catch (err) {
      if (!(err as BuildFailure).errors?.some((e) => TLA_ERROR.test(e.text))) throw err;
      format = "esm";
      out = await run("esm");
    }
  } catch (err) {
    const errors = ((err as BuildFailure).errors ?? []).map(toMessage);
    if (refused.length > 0) {
      // Every refused import, with its position when esbuild attached one to our error.
      // esbuild resolves in parallel: match each located error to its import by file and specifier.
      const imports: OutsideImport[] = refused.map((r) => {
        const at = errors.find((e) => e.file === r.importer && e.text === `${OUTSIDE_TEXT} ${JSON.stringify(r.specifier)}`);
        return at?.line !== undefined ? { ...r, line: at.line, column: at.column } : r;
      });
      imports.sort((a, b) => (a.importer < b.importer ? -1 : a.importer > b.importer ? 1 : (a.line ?? 0) - (b.line ?? 0)));
      const list = imports.map((r) => `${r.importer}${r.line !== undefined ? `:${r.line}:${r.column}` : ""}: ${JSON.stringify(r.specifier)}`).join("\n");
      throw new StratusError("BUILD_IMPORT_OUTSIDE_PROJECT", `${imports.length} import(s) resolve outside the uploaded project (only its own files, its node_modules and the Stratus SDK can be imported):\n${list}`, { details: { imports } });
    }
    if (errors.length === 0) throw new StratusError("BUILD_FAILED", `Bundling failed: ${(err as Error).message}`, { cause: err });
    const shown = errors.slice(0, 5).map(formatBundleMessage).join("\n");
    throw new StratusError("BUILD_FAILED", `Build failed:\n${shown}`, { cause: err, details: { errors } });
  }
  const text = readFileSync(out.outfile, "utf8");
  const at = text.indexOf(PATHS_PLACEHOLDER);
  if (at === -1) throw new StratusError("INTERNAL", "The bundle lost its paths table");
  writeFileSync(out.outfile, text.slice(0, at) + JSON.stringify(Object.fromEntries(files.map((f, i) => [String(i), f.split(sep).join("/")]))) + text.slice(at + PATHS_PLACEHOLDER.length));
  writeFileSync(join(outDir, "package.json"), `${JSON.stringify({ name: projectName, private: true })}\n`);
  return {
    outFile: out.outfile,
    format,
    entry,
    projectName,
    warnings: out.result.warnings.map(toMessage),
    externalNative: [...externalNative].sort(),
    externalPackages: [...externalPackages].sort(),
  };
}
