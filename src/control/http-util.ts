/**
 * Small helpers shared by the API route files: body validation with zod (unknown fields refused,
 * every problem reported at once) and path-parameter checks.
 */
import type { Request } from "express";
import type { ZodType } from "zod";
import { StratusError } from "../shared/errors";
import { assertValidFunctionName } from "../shared/names";

/**
 * Validates `value` against `schema`.
 * @throws StratusError INVALID_ARGUMENT with `details: [{ path, message }]`.
 */
export function validate<T>(schema: ZodType<T>, value: unknown, what = "body"): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const details = r.error.issues.map((i) => ({ path: i.path.map(String).join(".") || "(root)", message: i.message }));
  throw new StratusError("INVALID_ARGUMENT", `Invalid ${what}: ${details.map((d) => `${d.path}: ${d.message}`).join("; ")}`, { details });
}

/** The `:name` path parameter, validated. @throws StratusError INVALID_FUNCTION_NAME */
export function functionNameParam(req: Request): string {
  const name = String(req.params.name ?? "");
  assertValidFunctionName(name);
  return name;
}

/** The JSON body of a request that must have one (an absent body counts as `{}`). */
export function jsonBody(req: Request): unknown {
  return req.body === undefined ? {} : req.body;
}
