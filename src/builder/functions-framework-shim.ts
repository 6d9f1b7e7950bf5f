/**
 * The JavaScript served by the bundler for `require("@google-cloud/functions-framework")`: Google's
 * declarative registration API (`http(name, handler)`, `cloudEvent(name, handler)`, and `getFunction(name)`
 * as the package's testing entry has it), recording each
 * registration in the process-wide registry the runtime reads after the module loaded
 * (FUNCTIONS_FRAMEWORK_REGISTRY, src/runtime/loader.ts). The real package (Express, body-parser,
 * cloudevents…) is never bundled: Stratus's runtime is the server. `@google-cloud/functions-framework/testing`
 * is not aliased (test code only).
 *
 * Name rule and error text as the real package's function_registry.js (v3–v5).
 */
import { FUNCTIONS_FRAMEWORK_REGISTRY } from "../shared/protocol";

/** The bare specifier this shim replaces. */
export const FUNCTIONS_FRAMEWORK_SPECIFIER = "@google-cloud/functions-framework";

export const FUNCTIONS_FRAMEWORK_SHIM_SOURCE = `const key = Symbol.for(${JSON.stringify(FUNCTIONS_FRAMEWORK_REGISTRY)});
const registry = globalThis[key] || (globalThis[key] = new Map());
const isValidFunctionName = (name) => /^[A-Za-z](?:[-_A-Za-z0-9]{0,61}[A-Za-z0-9])?$/.test(name);
function register(functionName, kind, handler) {
  if (!isValidFunctionName(functionName)) throw new Error("Invalid function name: " + functionName);
  registry.set(functionName, { kind, handler });
}
export function http(functionName, handler) { register(functionName, "http", handler); }
export function cloudEvent(functionName, handler) { register(functionName, "cloudevent", handler); }
export function getFunction(functionName) { const r = registry.get(functionName); return r === undefined ? undefined : r.handler; }
export default { http, cloudEvent, getFunction };
`;
