/**
 * The receiving end of S3-compatible bucket notifications (docs/events.md "Bucket notifications"):
 * `POST /api/v1/events/s3/<function>/<trigger name>`, authenticated by the storage trigger's secret
 * (not an API token: the route is registered before the API's token check), body at most
 * S3_NOTIFICATION_MAX_BYTES read only after the secret matched. 200 only after every record's job
 * was committed (src/events/storage/s3-notifications.ts); any other answer makes the sender retry.
 */
import type { Express, Request } from "express";
import { StratusError } from "../../shared/errors";
import { limitAuthFailures } from "../../shared/auth-failure-limiter";
import { S3_NOTIFICATION_MAX_BYTES } from "../../events/storage/s3-notifications";
import type { ApiContext } from "../api-context";
import { functionNameParam } from "../http-util";
import type { Operation } from "../operation";
import { requireEvents } from "./events-common";

/** Path prefix of the route (the API's token check skips it). */
export const S3_EVENTS_PREFIX = "/api/v1/events/s3/";

/** Operations of this file (for the OpenAPI document). */
export const s3EventOperations: Operation[] = [
  {
    method: "post", path: "/api/v1/events/s3/:name/:trigger", operationId: "receiveS3Notification",
    summary: "Receives a bucket notification in the S3 event format (MinIO webhook target, Ceph RGW HTTP push endpoint) for the function's storage trigger `:trigger` (its `name`, default the bucket). Authenticated by the trigger's secret, not an API token: `Authorization: Bearer <secret>` (MinIO `auth_token`) or Basic with the secret as password. Every matching record becomes one async invocation carrying a CloudEvent; answers after the last commit.",
    auth: true,
    body: { contentType: "application/json", description: `\`{ "Records": [ … ] }\`, at most ${S3_NOTIFICATION_MAX_BYTES} bytes` },
    responses: { "200": "`{ accepted, duplicates, skipped, invocations: [id] }`" },
    errors: ["S3_NOTIFICATION_INVALID", "PAYLOAD_TOO_LARGE", "TRIGGER_SECRET_MISSING", "TOO_MANY_AUTH_FAILURES", "INVALID_FUNCTION_NAME"],
  },
];

/** Reads the body, at most `max` bytes. @throws StratusError PAYLOAD_TOO_LARGE */
async function readBody(req: Request, max: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > max) throw new StratusError("PAYLOAD_TOO_LARGE", `Bucket notifications are limited to ${max} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new StratusError("PAYLOAD_TOO_LARGE", `Bucket notifications are limited to ${max} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Registers the route on the app, ahead of the token check and the JSON parser. */
export function registerS3EventRoutes(app: Express, ctx: ApiContext): void {
  app.post("/api/v1/events/s3/:name/:trigger", async (req, res) => {
    const name = functionNameParam(req);
    const events = requireEvents(ctx);
    const triggerName = String(req.params.trigger ?? "");
    const auth = await limitAuthFailures(ctx.authFailures, req.socket.remoteAddress ?? "", () => events.s3.authenticate(name, triggerName, req.headers.authorization));
    const body = await readBody(req, S3_NOTIFICATION_MAX_BYTES);
    res.json(await events.s3.accept(auth, body));
  });
}
