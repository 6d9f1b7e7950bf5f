/**
 * The function contract: which exports of a user module are functions, under which names, with which
 * raw config. Pure over the module's exports (loading the file is `loadModule`), so the rules are unit-tested
 * table by table.
 *
 * Accepted forms:
 *  - `exports.name = { func | handler | definition: fn, config? }` (one function per export);
 *  - `exports.name = fn` (default config);
 *  - `module.exports = fn` / `export default fn` / `export default { handler, config }`: one function named
 *    after the project (package.json `name` without scope, else the folder name), export name `default`.
 * Other exports (constants, helpers that are not definitions) are ignored.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { StratusError, type ErrorCode } from "../shared/errors";
import type { FunctionConfig } from "../shared/function-config";
import { isValidFunctionName, FUNCTION_NAME_MAX } from "../shared/names";

/** A handler as the runtime calls it: Express `(req, res, next)`. */
export type RuntimeHandler = (req: unknown, res: unknown, next: (err?: unknown) => void) => unknown;

/** One function found in a module, before or after validation. */
export interface FunctionEntry {
  readonly name: string;
  readonly exportName: string;
  /** The raw config as written (undefined when none). */
  readonly config: unknown;
  /** Set when this function cannot be served (bad name, bad config, handler not a function). */
  readonly error?: { code: ErrorCode; message: string; details?: unknown };
}

/** The export name used for a module-level (default) function. */
export const DEFAULT_EXPORT = "default";

const HANDLER_KEYS = ["func", "handler", "definition"] as const;

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object";
}

/** The handler of a definition value, `null` when the value is not a definition at all. */
function handlerOf(value: unknown): { handler?: RuntimeHandler; config?: unknown; invalid?: string } | null {
  if (typeof value === "function") return { handler: value as RuntimeHandler };
  if (!isObject(value)) return null;
  const key = HANDLER_KEYS.find((k) => Object.hasOwn(value, k));
  if (key === undefined) return null;
  const h = value[key];
  if (typeof h !== "function") return { config: value.config, invalid: `"${key}" must be a function, got ${h === null ? "null" : typeof h}` };
  return { handler: h as RuntimeHandler, config: value.config };
}

/**
 * Lists the functions of a loaded module, validating names (including names equal but for case) and
 * configs with `parseConfig` (parseFunctionConfig; passed in so the runtime loads zod only when it
 * validates). Never throws for a bad function: the problem is in that entry's `error`.
 * @param moduleExports `module.exports` of a CJS bundle, or the namespace of an ESM one.
 * @param projectName name of a default-export function.
 * @throws StratusError FUNCTION_LOAD_FAILED when the module exports no function at all.
 */
export function listFunctions(
  moduleExports: unknown,
  projectName: string,
  parseConfig: (name: string, raw: unknown) => Readonly<FunctionConfig>,
): FunctionEntry[] {
  const found: Array<{ name: string; exportName: string; config: unknown; invalid?: string }> = [];
  const whole = handlerOf(moduleExports);
  if (typeof moduleExports === "function" && whole) {
    found.push({ name: projectName, exportName: DEFAULT_EXPORT, config: whole.config, invalid: whole.invalid });
  } else if (isObject(moduleExports)) {
    for (const key of Object.keys(moduleExports)) {
      if (key === "__esModule") continue;
      const def = handlerOf(moduleExports[key]);
      if (def === null) continue;
      const name = key === DEFAULT_EXPORT ? projectName : key;
      found.push({ name, exportName: key, config: def.config, invalid: def.invalid });
    }
  }
  if (found.length === 0) {
    throw new StratusError("FUNCTION_LOAD_FAILED", "The module exports no function: export `{ func: (req, res) => …, config }`, a function, or a default export");
  }
  const byLower = new Map<string, string>();
  return found.map(({ name, exportName, config, invalid }): FunctionEntry => {
    const entry = { name, exportName, config };
    if (invalid) return { ...entry, error: { code: "FUNCTION_LOAD_FAILED", message: `Function "${name}": ${invalid}` } };
    if (!isValidFunctionName(name)) {
      const why = exportName === DEFAULT_EXPORT ? " (a default export is named after the project: set package.json \"name\")" : "";
      return { ...entry, error: { code: "INVALID_FUNCTION_NAME", message: `Invalid function name ${JSON.stringify(name.slice(0, 80))}${why}: use a letter, then letters, digits, "-" or "_", at most ${FUNCTION_NAME_MAX} characters` } };
    }
    const other = byLower.get(name.toLowerCase());
    if (other !== undefined) {
      return { ...entry, error: { code: "INVALID_FUNCTION_NAME", message: `Function names "${other}" and "${name}" differ only in case` } };
    }
    byLower.set(name.toLowerCase(), name);
    try {
      parseConfig(name, config);
    } catch (err) {
      const e = err as StratusError;
      return { ...entry, error: { code: e.code, message: e.message, details: e.details } };
    }
    return entry;
  });
}

/**
 * Picks one function out of a loaded module and validates it.
 * @throws StratusError FUNCTION_LOAD_FAILED (missing export, not a function), INVALID_FUNCTION_NAME, INVALID_CONFIG.
 */
export function selectFunction(moduleExports: unknown, exportName: string): { handler: RuntimeHandler; rawConfig: unknown } {
  let value: unknown;
  if (exportName === DEFAULT_EXPORT && typeof moduleExports === "function") value = moduleExports;
  else if (isObject(moduleExports) || typeof moduleExports === "function") value = (moduleExports as Record<string, unknown>)[exportName];
  const def = handlerOf(value);
  if (def === null) throw new StratusError("FUNCTION_LOAD_FAILED", `The module has no function export "${exportName}"`);
  if (def.invalid !== undefined || def.handler === undefined) throw new StratusError("FUNCTION_LOAD_FAILED", `Export "${exportName}": ${def.invalid}`);
  return { handler: def.handler, rawConfig: def.config };
}

/**
 * The project name of a built artifact or a source folder: package.json `name` without its scope,
 * else the folder name. Not validated here (listFunctions does, for default exports).
 */
export function projectNameOf(dir: string): string {
  try {
    const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: unknown };
    if (typeof pkg.name === "string" && pkg.name.length > 0) return pkg.name.replace(/^@[^/]+\//, "");
  } catch {
    // no package.json (or unreadable): the folder name is the documented fallback
  }
  return basename(dir);
}

/**
 * Loads a built module once: `.mjs` through `import()`, anything else through `require`.
 * Errors propagate as thrown by the module (the caller reports them with file:line).
 */
export async function loadModule(entryPath: string): Promise<unknown> {
  if (entryPath.endsWith(".mjs")) return import(pathToFileURL(entryPath).href);
  // createRequire keeps this working both in the CJS runtime bundle and under tsx (ESM) in tests.
  return createRequire(entryPath)(entryPath);
}

/** The project name for the artifact holding `entryPath`. */
export function projectNameOfEntry(entryPath: string): string {
  return projectNameOf(dirname(entryPath));
}
