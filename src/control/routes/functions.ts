/** Functions: list, describe (with instance counts from the node), delete, versions, rollback. */
import type { Router } from "express";
import { z } from "zod";
import { StratusError } from "../../shared/errors";
import { type ApiContext, functionUrl } from "../api-context";
import type { Operation } from "../operation";
import { functionNameParam, jsonBody, validate } from "../http-util";
import type { FunctionRecord } from "../../store/store";
import { EMPTY_NODE_STATUS } from "../node-api";
import { redactConfigTriggers } from "../../shared/trigger-view";

const RollbackBody = z.strictObject({ to: z.string().min(1).max(200).optional() });

/** Operations of this file (for the OpenAPI document). */
export const functionOperations: Operation[] = [
  { method: "get", path: "/api/v1/functions", operationId: "listFunctions", summary: "Lists functions with their active version and URL.", auth: true, responses: { "200": "`{ functions: [{ name, activeVersion, activatedAt, createdAt, url }] }`" } },
  { method: "get", path: "/api/v1/functions/:name", operationId: "getFunction", summary: "Describes a function: active version, resolved config, URL, instance counts on the node.", auth: true, responses: { "200": "`{ name, activeVersion, url, config, version: { version, digest, createdAt, exportName, image }, instances }` (`image`: the driver's immutable reference, Docker `registry/repo@sha256:…`; null for the process driver)" }, errors: ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND"] },
  { method: "delete", path: "/api/v1/functions/:name", operationId: "deleteFunction", summary: "Stops serving a function and deletes its versions, env vars and secrets; drops its postgres triggers' replication slots.", auth: true, responses: { "200": "`{ deleted: name, replicationSlots?: [{ slot, result: dropped | absent | failed | no-secret }] }`" }, errors: ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND"] },
  { method: "get", path: "/api/v1/functions/:name/versions", operationId: "listVersions", summary: "Lists a function's versions, newest first, marking the active one.", auth: true, responses: { "200": "`{ versions: [{ version, digest, createdAt, status, active }] }`" }, errors: ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND"] },
  { method: "post", path: "/api/v1/functions/:name/rollback", operationId: "rollback", summary: "Switches to an older version (`to`, default: the version before the active one), verifying it loads first.", auth: true, body: RollbackBody, responses: { "200": "`{ name, version, previous, url }`" }, errors: ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND", "VERSION_NOT_FOUND", "FUNCTION_LOAD_FAILED", "CONFLICT"] },
];

async function mustGet(ctx: ApiContext, name: string): Promise<FunctionRecord> {
  const fn = await ctx.store.getFunction(name);
  if (fn === null) throw new StratusError("FUNCTION_NOT_FOUND", `Function ${name} not found`);
  return fn;
}

/** Registers the function routes. */
export function registerFunctionRoutes(router: Router, ctx: ApiContext): void {
  router.get("/api/v1/functions", async (_req, res) => {
    const fns = await ctx.store.listFunctions();
    res.json({ functions: fns.map((f) => ({ ...f, url: functionUrl(ctx, f.name) })) });
  });

  router.get("/api/v1/functions/:name", async (req, res) => {
    const fn = await mustGet(ctx, functionNameParam(req));
    const version = await ctx.store.getActiveVersion(fn.name);
    const instances = await ctx.node.status(fn.name).catch((err) => {
      ctx.logger.warn({ err, function: fn.name }, "node status unavailable");
      return EMPTY_NODE_STATUS;
    });
    res.json({
      ...fn,
      url: functionUrl(ctx, fn.name),
      // Trigger credentials never leave through the API (src/shared/trigger-view.ts).
      config: redactConfigTriggers(version?.config ?? null),
      version: version && { version: version.version, digest: version.digest, createdAt: version.createdAt, exportName: version.exportName, image: version.image },
      instances,
    });
  });

  router.delete("/api/v1/functions/:name", async (req, res) => {
    const fn = await mustGet(ctx, functionNameParam(req));
    // Postgres triggers' replication slots are dropped after the delete: read what that needs first.
    const entry = await ctx.events?.catalog.get(fn.name, true) ?? null;
    const hasSlots = entry?.config.triggers.some((t) => t.postgres !== undefined) === true;
    const secrets = hasSlots ? await ctx.store.getSecretValues(fn.name).catch(() => ({})) : {};
    await ctx.store.deleteFunction(fn.name);
    // The new desired state no longer lists it: every node stops routing to it and drains it.
    await ctx.node.publish();
    const slots = hasSlots && entry !== null && ctx.events !== undefined ? await ctx.events.releaseDeleted(entry, secrets) : [];
    ctx.logger.info({ function: fn.name }, "function deleted");
    res.json(slots.length > 0 ? { deleted: fn.name, replicationSlots: slots } : { deleted: fn.name });
  });

  router.get("/api/v1/functions/:name/versions", async (req, res) => {
    const fn = await mustGet(ctx, functionNameParam(req));
    const versions = await ctx.store.listVersions(fn.name);
    res.json({
      versions: versions.map((v) => ({ version: v.version, digest: v.digest, sourceDigest: v.sourceDigest, createdAt: v.createdAt, status: v.status, active: v.version === fn.activeVersion })),
    });
  });

  router.post("/api/v1/functions/:name/rollback", async (req, res) => {
    const name = functionNameParam(req);
    const body = validate(RollbackBody, jsonBody(req));
    const fn = await mustGet(ctx, name);
    const versions = await ctx.store.listVersions(name);
    let target;
    if (body.to !== undefined) {
      target = versions.find((v) => v.version === body.to);
      if (!target) throw new StratusError("VERSION_NOT_FOUND", `Function ${name} has no version ${body.to}`);
    } else {
      // "Previous" = the newest ready version older than the active one in deploy order.
      const i = versions.findIndex((v) => v.version === fn.activeVersion);
      target = versions.slice(i + 1).find((v) => v.status === "ready");
      if (!target) throw new StratusError("VERSION_NOT_FOUND", `Function ${name} has no version before ${fn.activeVersion ?? "(none)"}`);
    }
    if (target.version !== fn.activeVersion) await ctx.activator.activate([target]);
    res.json({ name, version: target.version, previous: fn.activeVersion, url: functionUrl(ctx, name) });
  });
}
