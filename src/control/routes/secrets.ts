/**
 * Secrets of a function: encrypted at rest by the store, never returned (names only), never logged
 * (only names), injected only into that function's instances. Changing them rolls the instances.
 */
import type { Router } from "express";
import { z } from "zod";
import { StratusError, isStratusError } from "../../shared/errors";
import type { ApiContext } from "../api-context";
import type { Operation } from "../operation";
import { functionNameParam, jsonBody, validate } from "../http-util";
import { EnvName, rollInstances } from "./env";

const SecretsPatchBody = z.strictObject({
  set: z.record(EnvName, z.string().max(65_536)).default({}),
  unset: z.array(EnvName).max(1000).default([]),
}).refine((b) => !b.unset.some((k) => Object.hasOwn(b.set, k)), { message: "a name is both set and unset", path: ["unset"] });

/** Operations of this file (for the OpenAPI document). */
export const secretOperations: Operation[] = [
  { method: "get", path: "/api/v1/functions/:name/secrets", operationId: "listSecrets", summary: "Secret names (values are never returned).", auth: true, responses: { "200": "`{ secrets: [{ name }] }`" }, errors: ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND"] },
  { method: "patch", path: "/api/v1/functions/:name/secrets", operationId: "patchSecrets", summary: "Sets and unsets secrets (unsetting an absent one is a no-op); the instances roll without a rebuild.", auth: true, body: SecretsPatchBody, responses: { "200": "`{ secrets: [{ name }] }`" }, errors: ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND", "INVALID_ARGUMENT"] },
];

async function listing(ctx: ApiContext, name: string) {
  return { secrets: (await ctx.store.listSecretNames(name)).map((n) => ({ name: n })) };
}

/** Registers the secret routes. */
export function registerSecretRoutes(router: Router, ctx: ApiContext): void {
  router.get("/api/v1/functions/:name/secrets", async (req, res) => {
    const name = functionNameParam(req);
    if ((await ctx.store.getFunction(name)) === null) throw new StratusError("FUNCTION_NOT_FOUND", `Function ${name} not found`);
    res.json(await listing(ctx, name));
  });
  router.patch("/api/v1/functions/:name/secrets", async (req, res) => {
    const name = functionNameParam(req);
    const body = validate(SecretsPatchBody, jsonBody(req), "secrets patch");
    if ((await ctx.store.getFunction(name)) === null) throw new StratusError("FUNCTION_NOT_FOUND", `Function ${name} not found`);
    for (const [k, v] of Object.entries(body.set)) await ctx.store.setSecret(name, k, v);
    for (const k of body.unset) {
      await ctx.store.deleteSecret(name, k).catch((err) => {
        if (!(isStratusError(err) && err.code === "NOT_FOUND")) throw err;
      });
    }
    await rollInstances(ctx, name);
    ctx.logger.info({ function: name, set: Object.keys(body.set), unset: body.unset }, "secrets changed");
    res.json(await listing(ctx, name));
  });
}
