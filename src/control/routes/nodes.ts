/** Cluster nodes: list (state ready | draining | lost, load, warm functions), drain, undrain, remove. */
import type { Request, Router } from "express";
import { StratusError } from "../../shared/errors";
import type { ApiContext } from "../api-context";
import type { Operation } from "../operation";

/** Operations of this file (for the OpenAPI document). */
export const nodeOperations: Operation[] = [
  {
    method: "get", path: "/api/v1/nodes", operationId: "listNodes",
    summary: "Lists nodes: `{ id, name, url, driver, state: ready|draining|lost, lastSeen, load: { inFlight, queued, instances, memUsedBytes, memFreeBytes, warm }, connected }`. `lost`: no heartbeat for 10 s.",
    auth: true, responses: { "200": "`{ nodes: [...] }`" },
  },
  { method: "post", path: "/api/v1/nodes/:id/drain", operationId: "drainNode", summary: "Drains a node: its `/readyz` answers 404, so the load balancer stops sending it new work; nothing else changes.", auth: true, responses: { "200": "the node record" }, errors: ["NOT_FOUND", "INVALID_ARGUMENT"] },
  { method: "post", path: "/api/v1/nodes/:id/undrain", operationId: "undrainNode", summary: "Makes a drained node ready again.", auth: true, responses: { "200": "the node record" }, errors: ["NOT_FOUND", "INVALID_ARGUMENT"] },
  { method: "delete", path: "/api/v1/nodes/:id", operationId: "removeNode", summary: "Removes a node: its credential is refused at once (NODE_CREDENTIAL_REVOKED), it is sent nothing more and drops what it held; its id becomes free.", auth: true, responses: { "200": "the node record" }, errors: ["NOT_FOUND", "INVALID_ARGUMENT"] },
];

function idParam(req: Request): number {
  const id = Number(req.params.id);
  if (!Number.isInteger(id) || id < 1) throw new StratusError("INVALID_ARGUMENT", "A node id is a positive integer (see `stratus nodes`)");
  return id;
}

/** Registers the node routes. */
export function registerNodeRoutes(router: Router, ctx: ApiContext): void {
  router.get("/api/v1/nodes", async (_req, res) => {
    res.json({ nodes: await ctx.node.members() });
  });
  router.post("/api/v1/nodes/:id/drain", async (req, res) => {
    const r = await ctx.node.setNodeState(idParam(req), "draining");
    ctx.logger.info({ id: r.id, name: r.name }, "node draining");
    res.json(r);
  });
  router.post("/api/v1/nodes/:id/undrain", async (req, res) => {
    const r = await ctx.node.setNodeState(idParam(req), "ready");
    ctx.logger.info({ id: r.id, name: r.name }, "node ready");
    res.json(r);
  });
  router.delete("/api/v1/nodes/:id", async (req, res) => {
    const r = await ctx.node.removeNode(idParam(req));
    ctx.logger.info({ id: r.id, name: r.name }, "node removed");
    res.json(r);
  });
}
