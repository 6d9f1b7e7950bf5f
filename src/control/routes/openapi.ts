/** The OpenAPI 3.1 document at `/api/v1/openapi.json`, generated from the route files' operations. */
import type { Router } from "express";
import { z } from "zod";
import type { Operation } from "../operation";

/** Operations of this file (for the OpenAPI document). */
export const openapiOperations: Operation[] = [
  { method: "get", path: "/api/v1/openapi.json", operationId: "openapi", summary: "This document.", auth: false, responses: { "200": "OpenAPI 3.1 JSON" } },
];

/** Builds the document from every operation. */
export function renderOpenApi(operations: readonly Operation[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const op of operations) {
    const path = op.path.replace(/:([A-Za-z]+)/g, "{$1}");
    const params: unknown[] = [...op.path.matchAll(/:([A-Za-z]+)/g)].map((m) => ({ name: m[1], in: "path", required: true, schema: { type: "string" } }));
    for (const [name, description] of Object.entries(op.query ?? {})) params.push({ name, in: "query", required: false, description, schema: { type: "string" } });
    const entry: Record<string, unknown> = {
      operationId: op.operationId,
      summary: op.summary,
      parameters: params,
      responses: {
        ...Object.fromEntries(Object.entries(op.responses).map(([s, d]) => [s, { description: d }])),
        default: { description: `Error body \`{ error: { code, message, requestId } }\`. Codes: ${[...(op.errors ?? []), ...(op.auth ? ["UNAUTHENTICATED"] : []), "INTERNAL"].join(", ")}`, content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } },
      },
      security: op.auth ? [{ bearer: [] }] : [],
    };
    if (op.body !== undefined) {
      entry.requestBody = "contentType" in op.body
        ? { required: true, description: op.body.description, content: { [op.body.contentType]: { schema: { type: "string", format: "binary" } } } }
        : { required: false, content: { "application/json": { schema: z.toJSONSchema(op.body, { io: "input" }) } } };
    }
    (paths[path] ??= {})[op.method] = entry;
  }
  return {
    openapi: "3.1.0",
    info: { title: "Stratus API", version },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: {
        Error: {
          type: "object",
          required: ["error"],
          properties: { error: { type: "object", required: ["code", "message"], properties: { code: { type: "string" }, message: { type: "string" }, requestId: { type: "string" }, details: {} } } },
        },
      },
    },
    paths,
  };
}

/** Registers the document route. */
export function registerOpenApiRoutes(router: Router, document: Record<string, unknown>): void {
  router.get("/api/v1/openapi.json", (_req, res) => void res.json(document));
}
