/** Health checks: `/healthz` (the process answers) and `/readyz` (start-up finished). No auth. */
import type { Router } from "express";
import { StratusError } from "../../shared/errors";
import type { ApiContext } from "../api-context";
import type { Operation } from "../operation";

/** Operations of this file (for the OpenAPI document). */
export const healthOperations: Operation[] = [
  { method: "get", path: "/healthz", operationId: "health", summary: "Liveness: the platform process answers.", auth: false, responses: { "200": "`{ ok: true }`" } },
  { method: "get", path: "/readyz", operationId: "ready", summary: "Readiness: every active version was pushed to the node.", auth: false, responses: { "200": "`{ ok: true }`" }, errors: ["NOT_READY"] },
];

/** Registers the health routes. */
export function registerHealthRoutes(router: Router, ctx: ApiContext): void {
  router.get("/healthz", (_req, res) => void res.json({ ok: true }));
  router.get("/readyz", (_req, res) => {
    if (!ctx.isReady()) throw new StratusError("NOT_READY");
    res.json({ ok: true });
  });
}
