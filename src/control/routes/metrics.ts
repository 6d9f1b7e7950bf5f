/**
 * `/metrics`: the Prometheus text exposition of the platform (docs/observability.md). It needs an
 * API bearer token like every API route, unless the platform config sets `observe.publicMetrics`
 * (for scrapers on a trusted network); Prometheus sends tokens with `authorization.credentials`.
 */
import type { Router } from "express";
import type { ApiContext } from "../api-context";
import type { Operation } from "../operation";
import { requireObservability } from "./observe-common";

/** Operations of this file (for the OpenAPI document). */
export const metricsOperations: Operation[] = [
  {
    method: "get", path: "/metrics", operationId: "metrics",
    summary: "Prometheus metrics (text format 0.0.4). Needs a bearer token unless observe.publicMetrics is set.",
    auth: true,
    responses: { "200": "text/plain Prometheus exposition" },
    errors: ["NOT_FOUND"],
  },
];

/** Registers `/metrics`. */
export function registerMetricsRoutes(router: Router, ctx: ApiContext): void {
  router.get("/metrics", async (_req, res) => {
    const observe = requireObservability(ctx);
    const text = await observe.metrics.render();
    res.status(200).set("content-type", observe.metrics.contentType).send(text);
  });
}
