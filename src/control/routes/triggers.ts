/** A function's triggers (from its active version's config) with their last and next slot (docs/events.md). */
import type { Router } from "express";
import { StratusError } from "../../shared/errors";
import type { ApiContext } from "../api-context";
import { functionNameParam } from "../http-util";
import type { Operation } from "../operation";
import { requireEvents } from "./events-common";
import { dataTriggerViews } from "../../shared/data-triggers";

/** Operations of this file (for the OpenAPI document). */
export const triggerOperations: Operation[] = [
  {
    method: "get", path: "/api/v1/functions/:name/triggers", operationId: "listTriggers",
    summary: "The active version's triggers: id, kind (schedule, rate), expression, time zone, catchUp, last claimed slot, next slot (epoch ms); storage triggers with their notification URL; postgres triggers with their replication slot.",
    auth: true, responses: { "200": "`{ triggers: [{ id, kind, schedule?, timezone?, rate?, catchUp, lastSlot, nextSlot }] }`" },
    errors: ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND", "NOT_FOUND"],
  },
];

/** Registers the route. */
export function registerTriggerRoutes(router: Router, ctx: ApiContext): void {
  router.get("/api/v1/functions/:name/triggers", async (req, res) => {
    const name = functionNameParam(req);
    const events = requireEvents(ctx);
    if ((await ctx.store.getFunction(name)) === null) throw new StratusError("FUNCTION_NOT_FOUND", `Function ${name} not found`);
    const entry = await events.catalog.get(name, true);
    res.json({ triggers: entry === null ? [] : [...await events.scheduler.describe(entry), ...dataTriggerViews(name, entry.config.triggers, ctx.publicUrl())] });
  });
}
