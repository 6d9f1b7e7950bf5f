/** A function's error groups: failures folded by fingerprint (code + message shape + top stack frame). */
import type { Router } from "express";
import type { ApiContext } from "../api-context";
import { functionNameParam } from "../http-util";
import type { Operation } from "../operation";
import { parsePositiveInt, queryParam } from "../observe-query";
import { requireFunction, requireObservability } from "./observe-common";

/** Operations of this file (for the OpenAPI document). */
export const errorGroupOperations: Operation[] = [
  {
    method: "get", path: "/api/v1/functions/:name/errors", operationId: "listErrorGroups",
    summary: "Error groups of a function, most recently seen first: fingerprint, code, message shape, top stack frame, count, first and last seen, a sample request id.",
    auth: true,
    query: { limit: "default 100, at most 10000" },
    responses: { "200": "`{ groups: [ErrorGroup] }`" },
    errors: ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND", "INVALID_ARGUMENT", "NOT_FOUND"],
  },
];

/** Registers the error-group routes. */
export function registerErrorGroupRoutes(router: Router, ctx: ApiContext): void {
  router.get("/api/v1/functions/:name/errors", async (req, res) => {
    const name = functionNameParam(req);
    requireObservability(ctx);
    const limit = queryParam(req.query, "limit");
    await requireFunction(ctx, name);
    res.json({ groups: await ctx.store.listErrorGroups(name, limit === undefined ? undefined : parsePositiveInt("limit", limit)) });
  });
}
