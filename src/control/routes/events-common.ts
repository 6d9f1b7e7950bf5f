/** Shared by the event route files: the events plane or 404, and the JSON views of a job. */
import { StratusError } from "../../shared/errors";
import type { EventsPlane } from "../../events/events-plane";
import type { JobRecord, JobResult } from "../../events/queue";
import type { ApiContext } from "../api-context";

export function requireEvents(ctx: ApiContext): EventsPlane {
  if (ctx.events === undefined) throw new StratusError("NOT_FOUND", "Events are not enabled on this control plane");
  return ctx.events;
}

const TEXTUAL = /^(text\/|application\/(json|xml|x-www-form-urlencoded|[a-z.+-]*\+json|[a-z.+-]*\+xml))/;

/** A body as JSON-friendly text when its content type is textual and it decodes as UTF-8, else base64. */
export function bodyView(contentType: string | null | undefined, bodyBase64: string): { body: string; bodyEncoding: "utf8" | "base64" } {
  if (contentType != null && TEXTUAL.test(contentType)) {
    const text = Buffer.from(bodyBase64, "base64").toString("utf8");
    if (!text.includes("\uFFFD")) return { body: text, bodyEncoding: "utf8" };
  }
  return { body: bodyBase64, bodyEncoding: "base64" };
}

function resultView(r: JobResult | null) {
  return r === null ? null : { status: r.status, contentType: r.contentType, truncated: r.truncated, ...bodyView(r.contentType, r.bodyBase64) };
}

/** What `GET /api/v1/invocations/:id` answers (without the request unless `withRequest`). */
export function jobView(ctx: ApiContext, j: JobRecord, withRequest = false) {
  return {
    invocationId: j.id,
    function: j.functionName,
    status: j.status,
    origin: j.origin,
    attempts: j.attempts,
    maxAttempts: j.maxAttempts,
    createdAt: j.createdAt,
    updatedAt: j.updatedAt,
    nextAttemptAt: j.status === "queued" ? j.runAt : null,
    expiresAt: j.expiresAt,
    finishedAt: j.finishedAt,
    replayedAs: j.replayedAs,
    statusUrl: requireEvents(ctx).statusUrl(j.id),
    error: j.error,
    result: resultView(j.result),
    history: j.history,
    ...(withRequest ? { request: { method: j.request.method, path: j.request.path, headers: j.request.headers, ...bodyView(j.request.headers["content-type"], j.request.bodyBase64) } } : {}),
  };
}
