/**
 * Deployments: upload a packed project (`application/gzip`), get the build log and the result as
 * newline-delimited JSON. The archive is validated and unpacked BEFORE the response starts, so a
 * hostile or oversized archive gets a plain error status (400 INVALID_ARCHIVE / 413 ARCHIVE_TOO_LARGE;
 * 507 BUILD_STORAGE_ERROR when the host itself cannot store it). Every failure of the unpacker ends the
 * request with its status and leaves no temp dir;
 * after that the status is 200 and the outcome is the last line:
 *   {"type":"log","line":"…"}*  then  {"type":"result","functions":[…]}  or  {"type":"error","error":{code,message,details}}
 */
import type { Router } from "express";
import { StratusError, toErrorResponse } from "../../shared/errors";
import { functionNameProblem } from "../../shared/names";
import type { ApiContext } from "../api-context";
import type { Operation } from "../operation";

const ARCHIVE_TYPES = new Set(["application/gzip", "application/x-gzip", "application/x-tar+gzip", "application/octet-stream"]);

/** Operations of this file (for the OpenAPI document). */
export const deploymentOperations: Operation[] = [
  {
    method: "post",
    path: "/api/v1/deployments",
    operationId: "deploy",
    summary: "Builds and activates every function of an uploaded project (or only those in `only`). Streams NDJSON: log lines, then a result or an error line.",
    auth: true,
    query: { only: "Comma-separated function names to deploy (default: all).", project: "Project name, naming a default-export function when package.json has none (the CLI sends the folder name)." },
    body: { contentType: "application/gzip", description: "The project as a tar.gz (what `stratus deploy` packs)." },
    responses: { "200": "application/x-ndjson: `{type:\"log\",line}`…, then `{type:\"result\",functions:[{name,version,url,status:\"activated\"|\"unchanged\"}]}` or `{type:\"error\",error:{code,message,details}}`" },
    errors: ["UNSUPPORTED_MEDIA_TYPE", "INVALID_ARCHIVE", "ARCHIVE_TOO_LARGE", "BUILD_STORAGE_ERROR", "INVALID_ARGUMENT", "INVALID_FUNCTION_NAME", "(in the stream) BUILD_FAILED", "BUILD_IMPORT_OUTSIDE_PROJECT", "INVALID_CONFIG", "FUNCTION_LOAD_FAILED", "FUNCTION_NOT_FOUND", "CONFLICT"],
  },
];

function parseOnly(raw: unknown): string[] | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== "string") throw new StratusError("INVALID_ARGUMENT", "only must be given once, as a comma-separated list");
  const names = raw.split(",").map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new StratusError("INVALID_ARGUMENT", "only is empty");
  for (const n of names) {
    const problem = functionNameProblem(n, " in only");
    if (problem !== null) throw new StratusError("INVALID_FUNCTION_NAME", problem);
  }
  return names;
}

/** Registers the deployment route. */
export function registerDeploymentRoutes(router: Router, ctx: ApiContext): void {
  router.post("/api/v1/deployments", async (req, res) => {
    const only = parseOnly(req.query.only);
    const projectName = typeof req.query.project === "string" && req.query.project !== "" ? req.query.project.slice(0, 100) : undefined;
    const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
    if (!ARCHIVE_TYPES.has(type)) throw new StratusError("UNSUPPORTED_MEDIA_TYPE", "Upload the project as application/gzip (a tar.gz)");
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > ctx.maxArchiveBytes) {
      throw new StratusError("ARCHIVE_TOO_LARGE", `The archive is ${declared} bytes; the limit is ${ctx.maxArchiveBytes}`);
    }
    const project = await ctx.deployer.receive(req);

    res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store", "x-content-type-options": "nosniff" });
    const write = (obj: unknown) => {
      if (!res.writableEnded && !res.destroyed) res.write(JSON.stringify(obj) + "\n");
    };
    try {
      const functions = await ctx.deployer.deploy(project, { ...(only ? { only } : {}), ...(projectName ? { projectName } : {}), onLog: (line) => write({ type: "log", line }) });
      write({ type: "result", functions });
    } catch (err) {
      const r = toErrorResponse(err);
      if (r.status >= 500 && r.body.error.code === "INTERNAL") ctx.logger.error({ err }, "deploy failed");
      write({ type: "error", error: { code: r.body.error.code, message: r.body.error.message, details: r.body.error.details } });
    }
    res.end();
  });
}
