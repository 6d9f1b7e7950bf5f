/**
 * The JavaScript served by the bundler for `import … from "stratus"` / `"stratus/sdk"`: the behaviour
 * of src/sdk/index.ts without types or imports, so user projects install nothing. A test checks both agree.
 */
export const SDK_RUNTIME_SOURCE = `const FUNCTION_BRAND = Symbol.for("stratus.function");
export { FUNCTION_BRAND };
export function defineFunction(definition) {
  if (definition !== null && typeof definition === "object") {
    Object.defineProperty(definition, FUNCTION_BRAND, { value: true, enumerable: false });
  }
  return definition;
}
export function defineLambdaHandler(handler, config = {}) {
  return defineFunction({ handler, config: { ...config, handlerType: "lambda" } });
}
`;
