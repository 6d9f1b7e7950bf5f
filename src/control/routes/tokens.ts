/** API tokens: list, create (the secret is returned once), revoke (effective at once). */
import type { Router } from "express";
import { z } from "zod";
import type { ApiContext } from "../api-context";
import type { Operation } from "../operation";
import { jsonBody, validate } from "../http-util";

const CreateTokenBody = z.strictObject({ name: z.string().min(1).max(100).default("cli") });

/** Operations of this file (for the OpenAPI document). */
export const tokenOperations: Operation[] = [
  { method: "get", path: "/api/v1/tokens", operationId: "listTokens", summary: "Lists tokens (id, name, createdAt, revokedAt); never their secrets.", auth: true, responses: { "200": "`{ tokens: [...] }`" } },
  { method: "post", path: "/api/v1/tokens", operationId: "createToken", summary: "Creates a token; the secret `token` is in this response only.", auth: true, body: CreateTokenBody, responses: { "201": "`{ id, name, createdAt, revokedAt, token }`" }, errors: ["INVALID_ARGUMENT"] },
  { method: "delete", path: "/api/v1/tokens/:id", operationId: "revokeToken", summary: "Revokes a token at once (idempotent).", auth: true, responses: { "200": "the token record" }, errors: ["NOT_FOUND"] },
];

/** Registers the token routes. */
export function registerTokenRoutes(router: Router, ctx: ApiContext): void {
  router.get("/api/v1/tokens", async (_req, res) => {
    res.json({ tokens: await ctx.store.listTokens() });
  });
  router.post("/api/v1/tokens", async (req, res) => {
    const body = validate(CreateTokenBody, jsonBody(req));
    const { token, record } = await ctx.store.createToken(body.name);
    // Nodes check invocation tokens against the hashes in their desired state: publish the new one.
    await ctx.node.publish();
    ctx.logger.info({ tokenId: record.id, name: record.name }, "token created");
    res.status(201).json({ ...record, token });
  });
  router.delete("/api/v1/tokens/:id", async (req, res) => {
    const record = await ctx.store.revokeToken(String(req.params.id));
    // Immediate revocation: every connected node has the new state (without its hash) before we answer.
    await ctx.node.publish();
    ctx.logger.info({ tokenId: record.id }, "token revoked");
    res.json(record);
  });
}
