/** A function's dead-letter queue: list, show (request and every attempt), replay, purge (docs/events.md). */
import type { Router } from "express";
import { StratusError } from "../../shared/errors";
import type { ApiContext } from "../api-context";
import { functionNameParam } from "../http-util";
import type { Operation } from "../operation";
import { parsePositiveInt } from "../observe-query";
import { jobView, requireEvents } from "./events-common";

const ERRORS = ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND", "NOT_FOUND"];

/** Operations of this file (for the OpenAPI document). */
export const dlqOperations: Operation[] = [
  { method: "get", path: "/api/v1/functions/:name/dlq", operationId: "listDeadLetters", summary: "Dead-lettered invocations of a function, newest first.", auth: true, query: { limit: "default 100, at most 1000" }, responses: { "200": "`{ entries: [{ invocationId, origin, attempts, error, createdAt, finishedAt, … }] }`" }, errors: [...ERRORS, "INVALID_ARGUMENT"] },
  { method: "get", path: "/api/v1/functions/:name/dlq/:id", operationId: "getDeadLetter", summary: "One dead-lettered invocation with its request and every attempt's status, error and request id (find its logs with `stratus logs <fn> --request <id>`).", auth: true, responses: { "200": "the invocation with `request`" }, errors: ERRORS },
  { method: "post", path: "/api/v1/functions/:name/dlq/:id/replay", operationId: "replayDeadLetter", summary: "Enqueues the dead-lettered request again as a new invocation (fresh attempts and age); the entry leaves the DLQ, marked `replayed`.", auth: true, responses: { "202": "`{ invocationId, replayOf, statusUrl }`" }, errors: ERRORS },
  { method: "delete", path: "/api/v1/functions/:name/dlq", operationId: "purgeDeadLetters", summary: "Deletes every dead-lettered invocation of a function.", auth: true, responses: { "200": "`{ purged }`" }, errors: ERRORS },
];

async function deadOf(ctx: ApiContext, name: string, id: string) {
  const job = id.length <= 64 ? await requireEvents(ctx).queue.get(id) : null;
  if (job === null || job.functionName !== name || job.status !== "dead") throw new StratusError("NOT_FOUND", `No dead-lettered invocation ${id} of ${name}`);
  return job;
}

/** Registers the DLQ routes. The function need not exist any more: a deleted function's DLQ stays readable. */
export function registerDlqRoutes(router: Router, ctx: ApiContext): void {
  router.get("/api/v1/functions/:name/dlq", async (req, res) => {
    const name = functionNameParam(req);
    const events = requireEvents(ctx);
    const limit = typeof req.query.limit === "string" ? parsePositiveInt("limit", req.query.limit) : 100;
    const dead = await events.queue.listDead(name, limit);
    res.json({
      entries: dead.map((j) => ({
        invocationId: j.id, origin: j.origin, attempts: j.attempts, error: j.error, createdAt: j.createdAt, finishedAt: j.finishedAt,
        method: j.request.method, path: j.request.path, lastRequestId: j.history.at(-1)?.requestId ?? null,
      })),
    });
  });
  router.get("/api/v1/functions/:name/dlq/:id", async (req, res) => {
    const name = functionNameParam(req);
    res.json(jobView(ctx, await deadOf(ctx, name, String(req.params.id)), true));
  });
  router.post("/api/v1/functions/:name/dlq/:id/replay", async (req, res) => {
    const name = functionNameParam(req);
    const events = requireEvents(ctx);
    const dead = await deadOf(ctx, name, String(req.params.id));
    const fresh = await events.queue.replay(dead.id);
    events.wake();
    res.status(202).json({ invocationId: fresh.id, replayOf: dead.id, statusUrl: events.statusUrl(fresh.id) });
  });
  router.delete("/api/v1/functions/:name/dlq", async (req, res) => {
    const name = functionNameParam(req);
    res.json({ purged: await requireEvents(ctx).queue.purgeDead(name) });
  });
}
