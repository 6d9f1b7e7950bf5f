/**
 * Plain environment variables of a function. Changing them rolls the function's instances with the
 * same version (no rebuild): the node gets the same deployment with the new env.
 */
import type { Router } from "express";
import { z } from "zod";
import { StratusError } from "../../shared/errors";
import type { ApiContext } from "../api-context";
import type { Operation } from "../operation";
import { functionNameParam, jsonBody, validate } from "../http-util";

/** Environment variable names: `[A-Za-z_][A-Za-z0-9_]*`, not `STRATUS_*` (reserved for the platform). */
export const EnvName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must match [A-Za-z_][A-Za-z0-9_]*").max(256)
  .refine((k) => !k.startsWith("STRATUS_"), "the STRATUS_ prefix is reserved");

/** `{ set: {K: V}, unset: [K] }`; a name may not be in both. */
export const EnvPatchBody = z.strictObject({
  set: z.record(EnvName, z.string().max(32_768)).default({}),
  unset: z.array(EnvName).max(1000).default([]),
}).refine((b) => !b.unset.some((k) => Object.hasOwn(b.set, k)), { message: "a name is both set and unset", path: ["unset"] });

/** Operations of this file (for the OpenAPI document). */
export const envOperations: Operation[] = [
  { method: "get", path: "/api/v1/functions/:name/env", operationId: "getEnv", summary: "The function's plain environment variables.", auth: true, responses: { "200": "`{ env: {K: V} }`" }, errors: ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND"] },
  { method: "patch", path: "/api/v1/functions/:name/env", operationId: "patchEnv", summary: "Sets and unsets variables; the instances roll without a rebuild.", auth: true, body: EnvPatchBody, responses: { "200": "`{ env: {K: V} }`" }, errors: ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND", "INVALID_ARGUMENT"] },
];

/** Re-pushes the function when it is being served, so its instances pick up the change. */
export async function rollInstances(ctx: ApiContext, name: string): Promise<void> {
  const fn = await ctx.store.getFunction(name);
  if (fn?.activeVersion) await ctx.activator.push(name);
}

/** Registers the env routes. */
export function registerEnvRoutes(router: Router, ctx: ApiContext): void {
  router.get("/api/v1/functions/:name/env", async (req, res) => {
    const name = functionNameParam(req);
    if ((await ctx.store.getFunction(name)) === null) throw new StratusError("FUNCTION_NOT_FOUND", `Function ${name} not found`);
    res.json({ env: await ctx.store.getEnvVars(name) });
  });
  router.patch("/api/v1/functions/:name/env", async (req, res) => {
    const name = functionNameParam(req);
    const body = validate(EnvPatchBody, jsonBody(req));
    if ((await ctx.store.getFunction(name)) === null) throw new StratusError("FUNCTION_NOT_FOUND", `Function ${name} not found`);
    const patch: Record<string, string | null> = { ...body.set };
    for (const k of body.unset) patch[k] = null;
    const env = await ctx.store.setEnvVars(name, patch);
    await rollInstances(ctx, name);
    ctx.logger.info({ function: name, set: Object.keys(body.set), unset: body.unset }, "env changed");
    res.json({ env });
  });
}
