/**
 * The HTTP form of the internal node API (src/control/node-api.ts), served by a node agent on a Unix
 * socket (or a loopback listener) for the control plane. Every request needs
 * `Authorization: Bearer <node token>`, compared in constant time.
 *
 *   PUT    /internal/v1/functions/:name          body FunctionDeployment → 204
 *   DELETE /internal/v1/functions/:name          → 204
 *   GET    /internal/v1/functions/:name/status   → FunctionNodeStatus
 *   POST   /internal/v1/prepare                  body FunctionDeployment → { image?, log }
 *   POST   /internal/v1/verify                   body FunctionDeployment → { startMs }
 *   GET    /internal/v1/health                   → { ok: true }
 *
 * Errors use the common body (src/shared/errors.ts). The body carries decrypted secrets, which is why
 * this API only listens where the data dir's owner can reach it and never logs bodies.
 */
import http from "node:http";
import { createHash, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { StratusError, toErrorResponse } from "../shared/errors";
import { writeError } from "../shared/write-error";
import { FunctionConfigSchema } from "../shared/function-config";
import { isValidFunctionName } from "../shared/names";
import type { FunctionDeployment, NodeApi } from "../control/node-api";
import type { Logger } from "../shared/logger";

/** Largest internal request body (a deployment with its env), bytes. */
const MAX_BODY_BYTES = 4 * 1024 * 1024;

const DeploymentSchema = z.strictObject({
  name: z.string().refine(isValidFunctionName, "invalid function name"),
  version: z.string().min(1).max(200),
  artifactDir: z.string().min(1),
  entry: z.string().min(1),
  exportName: z.string().min(1),
  config: FunctionConfigSchema,
  env: z.record(z.string(), z.string()),
  image: z.string().optional(),
});

/** Parses a deployment from the wire. @throws StratusError INVALID_ARGUMENT */
export function parseDeployment(raw: unknown): FunctionDeployment {
  const r = DeploymentSchema.safeParse(raw);
  if (!r.success) {
    const details = r.error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message }));
    throw new StratusError("INVALID_ARGUMENT", `Invalid deployment: ${details.map((d) => `${d.path}: ${d.message}`).join("; ")}`, { details });
  }
  const { image, ...rest } = r.data;
  return image === undefined ? rest : { ...rest, image };
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s, "utf8").digest();
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new StratusError("PAYLOAD_TOO_LARGE");
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new StratusError("INVALID_ARGUMENT", "The body is not valid JSON");
  }
}

/**
 * Builds the internal API server (not listening) over a node. `token` is the node token.
 */
export function createInternalApiServer(options: { node: NodeApi; token: string; logger: Logger }): http.Server {
  const expected = digest(options.token);
  const { node, logger } = options;

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const auth = req.headers.authorization ?? "";
    const presented = auth.startsWith("Bearer ") ? auth.slice(7) : "";
    if (!timingSafeEqual(digest(presented), expected)) throw new StratusError("UNAUTHENTICATED", "A valid node token is required");
    const path = (req.url ?? "/").split("?")[0]!;
    const method = req.method ?? "GET";
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    if (parts[0] !== "internal" || parts[1] !== "v1") throw new StratusError("NOT_FOUND");
    const rest = parts.slice(2);
    if (rest.length === 1 && rest[0] === "health" && method === "GET") return send(res, 200, { ok: true });
    if (rest.length === 1 && rest[0] === "prepare" && method === "POST") {
      return send(res, 200, await node.prepare(parseDeployment(await readJson(req))));
    }
    if (rest.length === 1 && rest[0] === "verify" && method === "POST") {
      return send(res, 200, await node.verify(parseDeployment(await readJson(req))));
    }
    if (rest[0] === "functions" && rest.length >= 2) {
      const name = rest[1]!;
      if (!isValidFunctionName(name)) throw new StratusError("INVALID_FUNCTION_NAME");
      if (rest.length === 2 && method === "PUT") {
        const d = parseDeployment(await readJson(req));
        if (d.name !== name) throw new StratusError("INVALID_ARGUMENT", "The body's name differs from the path's");
        await node.setFunction(d);
        return send(res, 204);
      }
      if (rest.length === 2 && method === "DELETE") {
        await node.removeFunction(name);
        return send(res, 204);
      }
      if (rest.length === 3 && rest[2] === "status" && method === "GET") return send(res, 200, await node.status(name));
    }
    throw new StratusError("NOT_FOUND");
  }

  return http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      if (toErrorResponse(err).status >= 500) logger.error({ err, url: req.url }, "internal API error");
      writeError(res, err);
    });
  });
}

function send(res: http.ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}
