/**
 * The function SDK, imported by user code as `stratus` (or `stratus/sdk`). The bundler resolves those
 * bare imports to a tiny virtual module (src/builder/sdk-source.ts) so user projects install nothing; this file
 * carries the types and the reference implementation (a test keeps the two identical in behaviour).
 */
import type { NextFunction, Request, Response } from "express";
import type { FunctionConfigInput } from "../shared/function-config";

export type { FunctionConfigInput };
/**
 * The request a handler receives: a real Express 5 request (`req.body`, `req.query`, `req.params`…), plus
 * `rawBody` (the exact bytes of the body; empty without one) and `cookies` (the Cookie header, parsed).
 */
export type StratusRequest = Request & { readonly rawBody: Buffer; cookies: Record<string, string> };
/** The response a handler writes to: a real Express 5 response (`res.status().json()`, `res.set`…). */
export type StratusResponse = Response;

/**
 * A function handler. It may answer through `res`, or return a value that becomes the response:
 * string/Buffer → body, any other value → JSON. `undefined` (returned or resolved) is not a response: the
 * runtime waits for `res` to be answered, up to the function's timeout (docs/function-contract.md).
 * `next` lets an Express router or middleware stack be a handler.
 */
export type Handler = (req: StratusRequest, res: Response, next: NextFunction) => unknown;

/** A function definition: the handler (under `handler`, or its synonyms `func` / `definition`) and its config. */
export type FunctionDefinition =
  | { handler: Handler; config?: FunctionConfigInput }
  | { func: Handler; config?: FunctionConfigInput }
  | { definition: Handler; config?: FunctionConfigInput };

/** Marks values made by defineFunction (Symbol.for, so it survives bundling and realms). */
export const FUNCTION_BRAND: unique symbol = Symbol.for("stratus.function") as never;

/** A definition returned by defineFunction. */
export type DefinedFunction<T extends FunctionDefinition> = T & { readonly [FUNCTION_BRAND]: true };

/**
 * Declares a function with types for `req`, `res` and `config`. Returns the same object, branded.
 * It does not validate: the platform validates the config at deploy (and `stratus dev` at load).
 */
export function defineFunction<T extends FunctionDefinition>(definition: T): DefinedFunction<T> {
  if (definition !== null && typeof definition === "object") {
    Object.defineProperty(definition, FUNCTION_BRAND, { value: true, enumerable: false });
  }
  return definition as DefinedFunction<T>;
}


/** The event, context and result types of an AWS Lambda function URL handler (see defineLambdaHandler). */
export type { FunctionUrlEvent as LambdaFunctionUrlEvent, LambdaContext } from "../runtime/lambda-adapter";

/**
 * Declares an AWS Lambda handler `(event, context[, callback]) => result` served the way a Lambda
 * function URL calls it (payload format 2.0; see docs/migrating.md). Returns a definition
 * `{ handler, config: { ...config, handlerType: "lambda" } }`, branded like defineFunction's.
 */
export function defineLambdaHandler<H extends (event: never, context: never, callback: never) => unknown>(
  handler: H,
  config: Omit<FunctionConfigInput, "handlerType"> = {},
): { handler: H; config: FunctionConfigInput } & { readonly [FUNCTION_BRAND]: true } {
  const definition = { handler, config: { ...config, handlerType: "lambda" as const } };
  Object.defineProperty(definition, FUNCTION_BRAND, { value: true, enumerable: false });
  return definition as typeof definition & { readonly [FUNCTION_BRAND]: true };
}
