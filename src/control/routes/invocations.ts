/** A function's invocation records (one per request), newest first, with filters. */
import type { Router } from "express";
import type { ApiContext } from "../api-context";
import { functionNameParam } from "../http-util";
import type { Operation } from "../operation";
import { parseBool, parseNonNegative, parsePositiveInt, parseSince, parseStatusFilter, queryParam } from "../observe-query";
import type { InvocationQuery } from "../../store/store";
import { requireFunction, requireObservability } from "./observe-common";

/** Operations of this file (for the OpenAPI document). */
export const invocationOperations: Operation[] = [
  {
    method: "get", path: "/api/v1/functions/:name/invocations", operationId: "listInvocations",
    summary: "Invocation records of a function, newest first: request id, version, instance, node, cold/warm, queue/start/handler/total ms, status, error code, bytes in/out, peak memory, traceparent, time; for the platform's async and event dispatches also the trigger, the CloudEvents id and the attempt (docs/observability.md, docs/events.md).",
    auth: true,
    query: { status: "a class (5xx) or a code (404)", cold: "1: cold starts only; 0: warm only", slowerThanMs: "only total time above this (ms)", since: "10m, an ISO time or epoch ms", request: "one request id", failed: "1: only records with an error code", trigger: "only this trigger's events (trigger id)", event: "only this CloudEvents id (every attempt of one event)", limit: "default 100, at most 10000" },
    responses: { "200": "`{ invocations: [InvocationRecord] }`" },
    errors: ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND", "INVALID_ARGUMENT", "NOT_FOUND"],
  },
];

/** Registers the invocation routes. */
export function registerInvocationRoutes(router: Router, ctx: ApiContext): void {
  router.get("/api/v1/functions/:name/invocations", async (req, res) => {
    const name = functionNameParam(req);
    requireObservability(ctx);
    const q = (k: string) => queryParam(req.query, k);
    const status = q("status");
    const cold = q("cold");
    const slower = q("slowerThanMs");
    const since = q("since");
    const request = q("request");
    const failed = q("failed");
    const limit = q("limit");
    const trigger = q("trigger");
    const event = q("event");
    const query: InvocationQuery = {
      ...(status !== undefined ? parseStatusFilter(status) : {}),
      ...(cold !== undefined ? { cold: parseBool("cold", cold) } : {}),
      ...(slower !== undefined ? { slowerThanMs: parseNonNegative("slowerThanMs", slower) } : {}),
      ...(since !== undefined ? { since: parseSince(since, Date.now()) } : {}),
      ...(request !== undefined ? { requestId: request } : {}),
      ...(failed !== undefined ? { failed: parseBool("failed", failed) } : {}),
      ...(limit !== undefined ? { limit: parsePositiveInt("limit", limit) } : {}),
      ...(trigger !== undefined ? { trigger } : {}),
      ...(event !== undefined ? { eventId: event } : {}),
    };
    await requireFunction(ctx, name);
    res.json({ invocations: await ctx.store.queryInvocations(name, query) });
  });
}
