/**
 * The function SDK, imported by user code as `stratus` (or `stratus/sdk`). The bundler resolves those
 * bare imports to a tiny virtual module (src/builder/sdk-source.ts) so user projects install nothing; this file
 * carries the types and the reference implementation (a test keeps the two identical in behaviour).
 */
import { HTTP, type CloudEvent } from "cloudevents";
import type { NextFunction, Request, Response } from "express";
import { cloudEventBody, type CloudEventParse, type ParsedCloudEvent } from "../shared/cloudevent-parse";
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

/**
 * A CloudEvents 1.0 event as an event function receives it: `id`, `source`, `type`, `specversion`, `time`
 * (RFC 3339 UTC), the optional `subject`, `datacontenttype`, `dataschema`, extension attributes, and
 * `data` — parsed JSON for a JSON content type, bytes (with `data_base64`) for a binary one, else text.
 */
export type CloudEventOf<T = unknown> = ParsedCloudEvent<T>;

/** What an event function gets besides the event. */
export interface EventContext {
  /** The async invocation id (`x-stratus-invocation-id`, the same on every attempt); null on a direct call. */
  readonly invocationId: string | null;
  /** 1 on the first attempt, 2 on the first retry… (`x-stratus-attempt`; 1 on a direct call). */
  readonly attempt: number;
  /** The trigger id (`<fn>#<index>:<hash>`) that produced the event (`x-stratus-trigger`); null otherwise. */
  readonly trigger: string | null;
  /** This attempt's request id (`stratus logs <fn> --request <id>`). */
  readonly requestId: string;
  /** The HTTP request and response, for what the event does not carry (most handlers need neither). */
  readonly req: StratusRequest;
  readonly res: StratusResponse;
}

/**
 * An event handler. Resolving means done: `undefined`/`null` → 204, a number → JSON, anything else →
 * `res.send` (200). A throw or rejection is a failure (500 FUNCTION_ERROR from the runtime), so the
 * platform retries the event (docs/events.md). It may also answer through `context.res` itself.
 */
export type EventHandler<T = unknown> = (event: CloudEventOf<T>, context: EventContext) => unknown;

/** Code of the 400 an event function answers to a request that is not a valid CloudEvent. */
export const INVALID_CLOUDEVENT = "INVALID_CLOUDEVENT";

/**
 * Reads the CloudEvent in a request with the `cloudevents` SDK (`HTTP.toEvent`, then `validate()`; only
 * specversion 1.0, one event per request). The reference for the parser served to bundles
 * (src/shared/cloudevent-parse.ts states the rules). Never throws.
 */
export function readCloudEvent(headers: Readonly<Record<string, string | string[] | undefined>>, bytes: Buffer | undefined): CloudEventParse {
  try {
    const parsed = HTTP.toEvent({ headers: { ...headers }, body: cloudEventBody(headers, bytes) });
    if (Array.isArray(parsed)) return { ok: false, message: "batch mode is not supported: send one event per request" };
    const event = parsed as CloudEvent<unknown>;
    if (event.specversion !== "1.0") return { ok: false, message: `unsupported specversion ${JSON.stringify(event.specversion)} (1.0 only)` };
    event.validate();
    return { ok: true, event: event as unknown as ParsedCloudEvent };
  } catch (err) {
    return { ok: false, message: (err as Error).message };
  }
}

/**
 * Declares a function that handles CloudEvents (binary or structured content mode), like
 * functions-framework's `cloudEvent()`: the request is parsed into a typed event and the handler called
 * with it and an EventContext. A request that is not a valid CloudEvent gets 400
 * `{ error: { code: "INVALID_CLOUDEVENT", message, requestId } }` and the handler is not called. Returns a
 * definition `{ handler, config }`, branded like defineFunction's.
 */
export function defineEventFunction<T = unknown>(
  handler: EventHandler<T>,
  config: FunctionConfigInput = {},
): { handler: Handler; config: FunctionConfigInput } & { readonly [FUNCTION_BRAND]: true } {
  const http = async (req: StratusRequest, res: Response): Promise<void> => {
    const requestId = String(req.headers["x-stratus-request-id"] ?? "");
    const parsed = readCloudEvent(req.headers, req.rawBody);
    if (!parsed.ok) {
      res.status(400).json({ error: { code: INVALID_CLOUDEVENT, message: `Not a CloudEvent: ${parsed.message}`, requestId } });
      return;
    }
    const h = req.headers;
    const one = (v: string | string[] | undefined): string | null => (typeof v === "string" && v !== "" ? v : null);
    const context: EventContext = {
      invocationId: one(h["x-stratus-invocation-id"]), attempt: Number(one(h["x-stratus-attempt"]) ?? 1) || 1,
      trigger: one(h["x-stratus-trigger"]), requestId, req, res,
    };
    const result = await handler(parsed.event as CloudEventOf<T>, context);
    if (res.headersSent) return;
    if (result === undefined || result === null) res.status(204).end();
    else if (typeof result === "number") res.json(result);
    else res.send(result);
  };
  return defineFunction({ handler: http as unknown as Handler, config });
}
