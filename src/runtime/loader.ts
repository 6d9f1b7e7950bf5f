/**
 * The function contract: which exports of a user module are functions, under which names, with which
 * raw config. Pure over the module's exports (loading the file is `loadModule`), so the rules are unit-tested
 * table by table.
 *
 * Accepted forms:
 *  - `exports.name = { func | handler | definition: fn, config? }` (one function per export);
 *  - `exports.name = fn` (default config);
 *  - `module.exports = fn` / `export default fn` / `export default { handler, config }`: one function named
 *    after the project (package.json `name` without scope, else the folder name), export name `default`;
 *  - Google Cloud Functions' declarative form, `require("@google-cloud/functions-framework").http(name, fn)`
 *    (and `.cloudEvent(name, fn)`): the bundler's shim records these in a process-wide registry
 *    (`readRegistrations`); each is a function with the default config, export name
 *    `functions-framework:<name>`, listed beside the exports;
 *  - a function made by firebase-functions' `onRequest(options, handler)`: its options map into the config
 *    (src/runtime/firebase-settings.ts), with a warning for each one Stratus does not apply.
 * Other exports (constants, helpers that are not definitions) are ignored.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { cloudEventBody, parseCloudEvent } from "../shared/cloudevent-parse";
import { StratusError, type ErrorCode } from "../shared/errors";
import type { FunctionConfig } from "../shared/function-config";
import { caseClashChecker, functionNameProblem } from "../shared/names";
import { FUNCTIONS_FRAMEWORK_REGISTRY, HEADERS } from "../shared/protocol";
import { firebaseSettingsOf } from "./firebase-settings";

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
  /** Settings written in another platform's form that Stratus does not apply (shown at deploy). */
  readonly warnings?: string[];
}

/** The export name used for a module-level (default) function. */
export const DEFAULT_EXPORT = "default";

/** Prefix of the export name of a function registered through `@google-cloud/functions-framework`. */
export const REGISTERED_EXPORT_PREFIX = "functions-framework:";

/** One `http(name, fn)` / `cloudEvent(name, fn)` registration, as the shim records it. */
export interface Registration {
  readonly kind: "http" | "cloudevent";
  readonly handler: unknown;
}

const NO_REGISTRATIONS: ReadonlyMap<string, Registration> = new Map();

/**
 * The functions-framework registrations made so far in this process (empty when the module never
 * imported the framework). Read after the module has loaded.
 */
export function readRegistrations(): ReadonlyMap<string, Registration> {
  const r = (globalThis as Record<symbol, unknown>)[Symbol.for(FUNCTIONS_FRAMEWORK_REGISTRY)];
  return r instanceof Map ? (r as Map<string, Registration>) : NO_REGISTRATIONS;
}

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
 * @param registered functions-framework registrations (`readRegistrations()`); a name both exported and
 *   registered is one function when both are the same handler, else an error.
 * @throws StratusError FUNCTION_LOAD_FAILED when the module exports (and registers) no function at all.
 */
export function listFunctions(
  moduleExports: unknown,
  projectName: string,
  parseConfig: (name: string, raw: unknown) => Readonly<FunctionConfig>,
  registered: ReadonlyMap<string, Registration> = NO_REGISTRATIONS,
): FunctionEntry[] {
  const found: Array<{ name: string; exportName: string; config: unknown; invalid?: string; handler?: unknown }> = [];
  const whole = handlerOf(moduleExports);
  if (typeof moduleExports === "function" && whole) {
    found.push({ name: projectName, exportName: DEFAULT_EXPORT, config: whole.config, invalid: whole.invalid, handler: whole.handler });
  } else if (isObject(moduleExports)) {
    for (const key of Object.keys(moduleExports)) {
      if (key === "__esModule") continue;
      const def = handlerOf(moduleExports[key]);
      if (def === null) continue;
      const name = key === DEFAULT_EXPORT ? projectName : key;
      found.push({ name, exportName: key, config: def.config, invalid: def.invalid, handler: def.handler });
    }
  }
  for (const [name, reg] of registered) {
    const exported = found.find((f) => f.name === name);
    if (exported !== undefined && exported.handler === reg.handler) continue;
    const invalid = exported !== undefined ? `registered with functions.${reg.kind === "http" ? "http" : "cloudEvent"}() and also exported as a different function`
      : typeof reg.handler !== "function" ? `the registered handler must be a function, got ${reg.handler === null ? "null" : typeof reg.handler}` : undefined;
    found.push({ name, exportName: `${REGISTERED_EXPORT_PREFIX}${name}`, config: undefined, invalid, handler: reg.handler });
  }
  if (found.length === 0) {
    throw new StratusError("FUNCTION_LOAD_FAILED", "The module exports no function: export `{ func: (req, res) => …, config }`, a function, or a default export (or register one with functions-framework's http())");
  }
  const clashes = caseClashChecker();
  return found.map(({ name, exportName, config: written, invalid, handler }): FunctionEntry => {
    // Firebase's onRequest(options, handler) carries its options on the function (firebase-settings.ts):
    // they fill in what a written config does not set.
    const firebase = firebaseSettingsOf(handler, new Set(isObject(written) ? Object.keys(written) : []));
    if (firebase?.notHttp !== undefined) invalid ??= firebase.notHttp;
    const config = firebase === null || Object.keys(firebase.config).length === 0 ? written
      : written === undefined ? firebase.config : isObject(written) ? { ...firebase.config, ...written } : written;
    const entry = { name, exportName, config, ...(firebase !== null && firebase.warnings.length > 0 ? { warnings: firebase.warnings } : {}) };
    if (invalid) return { ...entry, error: { code: "FUNCTION_LOAD_FAILED", message: `Function "${name}": ${invalid}` } };
    const bad = functionNameProblem(name, exportName === DEFAULT_EXPORT ? " (a default export is named after the project: set package.json \"name\")" : "");
    if (bad !== null) return { ...entry, error: { code: "INVALID_FUNCTION_NAME", message: bad } };
    const clash = clashes(name);
    if (clash !== null) return { ...entry, error: { code: "INVALID_FUNCTION_NAME", message: clash } };
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
 * Picks one function out of a loaded module and validates it. A `functions-framework:<name>` export name
 * is looked up in `registered`; a CloudEvent function is wrapped to take its event from the HTTP request
 * (`cloudEventHandler`).
 * @throws StratusError FUNCTION_LOAD_FAILED (missing export, not a function), INVALID_FUNCTION_NAME, INVALID_CONFIG.
 */
export function selectFunction(
  moduleExports: unknown,
  exportName: string,
  registered: ReadonlyMap<string, Registration> = NO_REGISTRATIONS,
): { handler: RuntimeHandler; rawConfig: unknown } {
  if (exportName.startsWith(REGISTERED_EXPORT_PREFIX)) {
    const name = exportName.slice(REGISTERED_EXPORT_PREFIX.length);
    const reg = registered.get(name);
    if (reg === undefined) throw new StratusError("FUNCTION_LOAD_FAILED", `The module registers no function "${name}" with functions-framework`);
    if (typeof reg.handler !== "function") throw new StratusError("FUNCTION_LOAD_FAILED", `Registered function "${name}" is not a function`);
    const fn = reg.handler as (...args: unknown[]) => unknown;
    return { handler: reg.kind === "cloudevent" ? cloudEventHandler(fn) : (fn as RuntimeHandler), rawConfig: undefined };
  }
  let value: unknown;
  if (exportName === DEFAULT_EXPORT && typeof moduleExports === "function") value = moduleExports;
  else if (isObject(moduleExports) || typeof moduleExports === "function") value = (moduleExports as Record<string, unknown>)[exportName];
  const def = handlerOf(value);
  if (def === null) throw new StratusError("FUNCTION_LOAD_FAILED", `The module has no function export "${exportName}"`);
  if (def.invalid !== undefined || def.handler === undefined) throw new StratusError("FUNCTION_LOAD_FAILED", `Export "${exportName}": ${def.invalid}`);
  return { handler: def.handler, rawConfig: def.config };
}

interface MinimalReq {
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body?: unknown;
  readonly rawBody?: Buffer;
}
interface MinimalRes {
  readonly headersSent: boolean;
  status(status: number): MinimalRes;
  sendStatus(status: number): unknown;
  json(v: unknown): unknown;
  send(v: unknown): unknown;
}

/**
 * An HTTP handler around a functions-framework CloudEvent function. A request that carries a CloudEvent
 * (a `ce-id` header: binary mode; `content-type: application/cloudevents…`: structured mode) is parsed
 * the way defineEventFunction parses it (src/shared/cloudevent-parse.ts, the `cloudevents` SDK's rules),
 * so both receive the same event; a `traceparent` header is added as an extension, as functions-framework
 * does. Such a request that is not a valid CloudEvent gets 400 INVALID_CLOUDEVENT and the function is not
 * called. A request with neither mark is a legacy event: the parsed body is the event (functions-framework
 * accepts those too). The function's result is the response (`undefined`/`null` → 204, a number → JSON,
 * else `res.send`); a throw or rejection is a function error.
 */
export function cloudEventHandler(fn: (event: unknown) => unknown): RuntimeHandler {
  return async (rawReq, rawRes) => {
    const req = rawReq as MinimalReq;
    const res = rawRes as MinimalRes;
    const h = req.headers;
    const ct = h["content-type"];
    let event: unknown = req.body;
    if (h["ce-id"] !== undefined || (typeof ct === "string" && ct.startsWith("application/cloudevents"))) {
      const parsed = parseCloudEvent(h, cloudEventBody(h, req.rawBody));
      if (!parsed.ok) {
        res.status(400).json({ error: { code: "INVALID_CLOUDEVENT", message: `Not a CloudEvent: ${parsed.message}`, requestId: String(h[HEADERS.requestId] ?? "") } });
        return;
      }
      event = typeof h.traceparent === "string" && parsed.event.traceparent === undefined ? Object.freeze({ ...parsed.event, traceparent: h.traceparent }) : parsed.event;
    } else if (typeof h.traceparent === "string" && isObject(event)) {
      event.traceparent = h.traceparent;
    }
    const result = await fn(event);
    if (res.headersSent) return;
    if (result === undefined || result === null) res.sendStatus(204);
    else if (typeof result === "number") res.json(result);
    else res.send(result);
  };
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

let importEntry = (url: string): Promise<unknown> => import(url);

/**
 * Replaces how an ES module entry is imported (default: `import()` here). Code compiled into the
 * runtime's startup snapshot has no dynamic-import callback ("A dynamic import callback was not
 * specified"), so snapshot-entry.ts passes an `import()` compiled by Node's CommonJS loader at start.
 */
export function setEntryImporter(importer: (url: string) => Promise<unknown>): void {
  importEntry = importer;
}

/**
 * Loads a built module once: `.mjs` through `import()`, anything else through `require`.
 * Errors propagate as thrown by the module (the caller reports them with file:line).
 */
export async function loadModule(entryPath: string): Promise<unknown> {
  if (entryPath.endsWith(".mjs")) return importEntry(pathToFileURL(entryPath).href);
  // createRequire keeps this working both in the CJS runtime bundle and under tsx (ESM) in tests.
  return createRequire(entryPath)(entryPath);
}

/** The project name for the artifact holding `entryPath`. */
export function projectNameOfEntry(entryPath: string): string {
  return projectNameOf(dirname(entryPath));
}
