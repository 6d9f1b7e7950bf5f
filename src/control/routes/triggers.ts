/** A function's triggers (from its active version's config): slots of schedules, state of queue sources (docs/events.md). */
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
    summary: "The active version's triggers, every kind, in order: id, kind (schedule, rate, or the key naming the source: queue, storage, postgres…), for schedule and rate the expression, time zone, catchUp, last claimed slot and next slot (epoch ms; null for other kinds), and the trigger's config with credentials redacted; queue: broker type, where it consumes from, this control plane's source state (connected, in flight, settled counts, last error) or why it does not run; storage: bucket, filters and the notification URL; postgres: table, operations, replication slot and the source state.",
    auth: true, responses: { "200": "`{ triggers: [{ id, kind, schedule?, timezone?, rate?, catchUp?, lastSlot, nextSlot, config, type?, from?, bucket?, url?, table?, slot?, status?, problem? }] }`" },
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
    if (entry === null) return void res.json({ triggers: [] });
    // One view per trigger, in order (the scheduler's); a source's view adds what it knows.
    const views: object[] = await events.scheduler.describe(entry);
    for (const q of events.sources?.describe(entry) ?? []) {
      const { index, ...rest } = q;
      views[index] = { ...views[index], ...rest };
    }
    const data = dataTriggerViews(name, entry.config.triggers, ctx.publicUrl())
      .map((v) => (v.kind === "postgres" ? { ...v, ...(events.sources?.statusOf(v.id) ?? { status: null, problem: null }) } : v));
    const dataIndexes = entry.config.triggers.flatMap((t, i) => (t.storage !== undefined || t.postgres !== undefined ? [i] : []));
    data.forEach((v, k) => {
      const i = dataIndexes[k]!;
      views[i] = { ...views[i], ...v };
    });
    res.json({ triggers: views });
  });
}
