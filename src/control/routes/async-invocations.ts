/** One async invocation (a job): status, attempts, result or error (docs/events.md). */
import type { Router } from "express";
import { StratusError } from "../../shared/errors";
import type { ApiContext } from "../api-context";
import type { Operation } from "../operation";
import { jobView, requireEvents } from "./events-common";

/** Operations of this file (for the OpenAPI document). */
export const asyncInvocationOperations: Operation[] = [
  {
    method: "get", path: "/api/v1/invocations/:id", operationId: "getAsyncInvocation",
    summary: "An async or event invocation: status (queued, running, succeeded, dead, replayed), origin (async, schedule + trigger + event id, replay), attempts, every ended attempt (status, error, request id for `stratus logs --request`), the result (status and body, first 64 KiB) or the error.",
    auth: true,
    query: { request: "1: include the stored request (method, path, headers, body)" },
    responses: { "200": "`{ invocationId, function, status, origin, attempts, maxAttempts, history, result, error, … }`" },
    errors: ["NOT_FOUND"],
  },
];

/** Registers the route. */
export function registerAsyncInvocationRoutes(router: Router, ctx: ApiContext): void {
  router.get("/api/v1/invocations/:id", async (req, res) => {
    const events = requireEvents(ctx);
    const id = String(req.params.id ?? "");
    const job = id.length <= 64 ? await events.queue.get(id) : null;
    if (job === null) throw new StratusError("NOT_FOUND", `No async invocation ${id}`);
    res.json(jobView(ctx, job, req.query.request === "1"));
  });
}
