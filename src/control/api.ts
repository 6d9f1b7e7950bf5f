/**
 * The control plane's public HTTP API (`/api/v1`, `/healthz`, `/readyz`) as an Express 5 app, not
 * listening: src/up/platform.ts mounts it beside the gateway on one port (src/control/control-plane.ts builds it).
 *
 * Every route but health and the OpenAPI document needs `Authorization: Bearer <token>`, verified
 * through the store (hashed, constant-time, revocation effective at once); failures are rate-limited
 * per client address (src/shared/auth-failure-limiter.ts, 429 TOO_MANY_AUTH_FAILURES); requests and
 * deployments are limited per token (src/control/api-rate-limiter.ts, 429 API_RATE_LIMITED). Every
 * error answers the common body with `x-stratus-error-source`. The request id is taken from a sane
 * `x-stratus-request-id` or generated.
 */
import express, { type NextFunction, type Request, type Response } from "express";
import { StratusError, toErrorResponse } from "../shared/errors";
import { pickRequestId } from "../shared/request-id";
import { writeError } from "../shared/write-error";
import { HEADERS } from "../shared/protocol";
import type { ApiContext } from "./api-context";
import { limitAuthFailures } from "../shared/auth-failure-limiter";
import type { Operation } from "./operation";
import { healthOperations, registerHealthRoutes } from "./routes/health";
import { deploymentOperations, registerDeploymentRoutes } from "./routes/deployments";
import { functionOperations, registerFunctionRoutes } from "./routes/functions";
import { envOperations, registerEnvRoutes } from "./routes/env";
import { secretOperations, registerSecretRoutes } from "./routes/secrets";
import { tokenOperations, registerTokenRoutes } from "./routes/tokens";
import { openapiOperations, registerOpenApiRoutes, renderOpenApi } from "./routes/openapi";
import { logOperations, registerLogRoutes } from "./routes/logs";
import { invocationOperations, registerInvocationRoutes } from "./routes/invocations";
import { errorGroupOperations, registerErrorGroupRoutes } from "./routes/errors";
import { metricsOperations, registerMetricsRoutes } from "./routes/metrics";
import { joinTokenOperations, registerJoinTokenRoutes } from "./routes/join-tokens";
import { nodeOperations, registerNodeRoutes } from "./routes/nodes";
import { asyncInvocationOperations, registerAsyncInvocationRoutes } from "./routes/async-invocations";
import { dlqOperations, registerDlqRoutes } from "./routes/dlq";
import { registerTriggerRoutes, triggerOperations } from "./routes/triggers";
import { registerS3EventRoutes, s3EventOperations } from "./routes/s3-events";

/** Every operation of the API, in document order. */
export const API_OPERATIONS: readonly Operation[] = [
  ...healthOperations, ...openapiOperations, ...deploymentOperations, ...functionOperations, ...envOperations, ...secretOperations, ...tokenOperations,
  ...logOperations, ...invocationOperations, ...errorGroupOperations, ...metricsOperations, ...joinTokenOperations, ...nodeOperations,
  ...asyncInvocationOperations, ...dlqOperations, ...triggerOperations, ...s3EventOperations,
];

/** Largest JSON request body of the API, bytes. */
const MAX_JSON_BYTES = 1024 * 1024;

/** A client's id only when it is short and printable (it cannot forge log lines), as every server. */
function requestIdOf(req: Request): string {
  return pickRequestId(req.headers);
}

/** Routes that answer without a token. */
function isPublicPath(path: string): boolean {
  return path === "/healthz" || path === "/readyz" || path === "/api/v1/openapi.json";
}

/** Builds the API app (an Express request handler; not listening). */
export function createApiApp(ctx: ApiContext, options: { version?: string } = {}): express.Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  app.set("query parser", "simple");

  app.use((req, res, next) => {
    const id = requestIdOf(req);
    res.locals.requestId = id;
    res.setHeader(HEADERS.requestId, id);
    // One access line per API call (never bodies: they may hold secrets); health checks stay quiet.
    if (!isPublicPath(req.path)) {
      const t0 = performance.now();
      res.once("finish", () => {
        ctx.logger.info({ requestId: id, method: req.method, path: req.path, status: res.statusCode, ms: Math.round(performance.now() - t0), tokenId: res.locals.tokenId }, "api request");
      });
    }
    next();
  });

  // Bucket notifications authenticate with their trigger's secret and read their own body: before the token check.
  registerS3EventRoutes(app, ctx);

  app.use(async (req: Request, res: Response, next: NextFunction) => {
    if (isPublicPath(req.path) || (ctx.publicMetrics === true && req.path === "/metrics")) return next();
    try {
      const record = await limitAuthFailures(ctx.authFailures, req.socket.remoteAddress ?? "", async () => {
        const auth = req.headers.authorization ?? "";
        const token = auth.startsWith("Bearer ") ? auth.slice(7).trim() : "";
        if (token === "") throw new StratusError("UNAUTHENTICATED");
        const found = await ctx.store.verifyToken(token);
        if (found === null) throw new StratusError("UNAUTHENTICATED", "The bearer token is invalid or revoked");
        return found;
      });
      res.locals.tokenId = record.id;
      next();
    } catch (err) {
      next(err);
    }
  });

  // Per-caller limits (D5): after authentication, so a caller is its token; before any body is read.
  app.use((req: Request, res: Response, next: NextFunction) => {
    if (ctx.rateLimiter === undefined || isPublicPath(req.path)) return next();
    const tokenId = res.locals.tokenId as string | undefined;
    try {
      ctx.rateLimiter.admit(tokenId !== undefined ? `t:${tokenId}` : `a:${req.socket.remoteAddress ?? ""}`, req.method, req.path);
      next();
    } catch (err) {
      next(err);
    }
  });

  app.use(express.json({ limit: MAX_JSON_BYTES, strict: true }));

  const router = express.Router({ strict: false });
  registerHealthRoutes(router, ctx);
  registerOpenApiRoutes(router, renderOpenApi(API_OPERATIONS, options.version ?? "0.1.0"));
  registerDeploymentRoutes(router, ctx);
  registerFunctionRoutes(router, ctx);
  registerEnvRoutes(router, ctx);
  registerSecretRoutes(router, ctx);
  registerTokenRoutes(router, ctx);
  registerLogRoutes(router, ctx);
  registerInvocationRoutes(router, ctx);
  registerErrorGroupRoutes(router, ctx);
  registerMetricsRoutes(router, ctx);
  registerJoinTokenRoutes(router, ctx);
  registerNodeRoutes(router, ctx);
  registerAsyncInvocationRoutes(router, ctx);
  registerDlqRoutes(router, ctx);
  registerTriggerRoutes(router, ctx);
  app.use(router);

  app.use((req: Request) => {
    const known = API_OPERATIONS.some((op) => matches(op.path, req.path));
    throw new StratusError(known ? "METHOD_NOT_ALLOWED" : "NOT_FOUND", known ? `${req.method} is not allowed on ${req.path}` : `No route ${req.path}`);
  });

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const mapped = mapBodyParserError(err);
    if (toErrorResponse(mapped).body.error.code === "INTERNAL") ctx.logger.error({ err, method: req.method, path: req.path, requestId: res.locals.requestId }, "API error");
    // An unread upload (e.g. refused before reading) must not be parsed as the next request.
    writeError(res, mapped, res.locals.requestId as string | undefined, req.complete ? undefined : { connection: "close" });
  });
  return app;
}

function matches(pattern: string, path: string): boolean {
  const a = pattern.split("/");
  const b = path.replace(/\/+$/, "").split("/");
  return a.length === b.length && a.every((seg, i) => seg.startsWith(":") || seg === b[i]);
}

/** Maps body-parser errors (which carry `type` and `status`) to registry codes. */
function mapBodyParserError(err: unknown): unknown {
  const type = (err as { type?: unknown } | null)?.type;
  if (type === "entity.parse.failed") return new StratusError("INVALID_ARGUMENT", "The body is not valid JSON");
  if (type === "entity.too.large") return new StratusError("PAYLOAD_TOO_LARGE", `JSON bodies are limited to ${MAX_JSON_BYTES} bytes`);
  if (type === "encoding.unsupported" || type === "charset.unsupported") return new StratusError("UNSUPPORTED_MEDIA_TYPE");
  return err;
}
