/** Join tokens (cluster membership): list, create (the secret is returned once), revoke (effective at once). */
import type { Router } from "express";
import { z } from "zod";
import type { ApiContext } from "../api-context";
import type { Operation } from "../operation";
import { jsonBody, validate } from "../http-util";

/** Default lifetime of a join token, seconds (24 h). */
export const DEFAULT_JOIN_TOKEN_TTL_S = 86_400;

const CreateJoinTokenBody = z.strictObject({
  name: z.string().min(1).max(100).default("node"),
  ttlSeconds: z.number().int().min(1).max(365 * 86_400).default(DEFAULT_JOIN_TOKEN_TTL_S),
});

/** Operations of this file (for the OpenAPI document). */
export const joinTokenOperations: Operation[] = [
  { method: "get", path: "/api/v1/join-tokens", operationId: "listJoinTokens", summary: "Lists join tokens (id, name, createdAt, expiresAt, revokedAt); never their secrets.", auth: true, responses: { "200": "`{ joinTokens: [...] }`" } },
  {
    method: "post", path: "/api/v1/join-tokens", operationId: "createJoinToken",
    summary: "Creates a join token for `stratus node --join-token` (usable by several nodes until it expires or is revoked); the secret `token` is in this response only.",
    auth: true, body: CreateJoinTokenBody, responses: { "201": "`{ id, name, createdAt, expiresAt, revokedAt, token }`" }, errors: ["INVALID_ARGUMENT"],
  },
  { method: "delete", path: "/api/v1/join-tokens/:id", operationId: "revokeJoinToken", summary: "Revokes a join token at once (idempotent); nodes that already joined keep their credentials.", auth: true, responses: { "200": "the join token record" }, errors: ["NOT_FOUND"] },
];

/** Registers the join token routes. */
export function registerJoinTokenRoutes(router: Router, ctx: ApiContext): void {
  router.get("/api/v1/join-tokens", async (_req, res) => {
    res.json({ joinTokens: await ctx.store.listJoinTokens() });
  });
  router.post("/api/v1/join-tokens", async (req, res) => {
    const body = validate(CreateJoinTokenBody, jsonBody(req));
    const { token, record } = await ctx.store.createJoinToken(body.name, body.ttlSeconds * 1000);
    ctx.logger.info({ joinTokenId: record.id, name: record.name, expiresAt: record.expiresAt }, "join token created");
    res.status(201).json({ ...record, token });
  });
  router.delete("/api/v1/join-tokens/:id", async (req, res) => {
    const record = await ctx.store.revokeJoinToken(String(req.params.id));
    ctx.logger.info({ joinTokenId: record.id }, "join token revoked");
    res.json(record);
  });
}
