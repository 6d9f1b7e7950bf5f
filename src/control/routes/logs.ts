/** A function's log stream: query stored lines, or follow new ones live (Server-Sent Events). */
import type { Request, Response, Router } from "express";
import type { LogEntry, LogLevelName } from "../../shared/invocation";
import type { ApiContext } from "../api-context";
import { functionNameParam } from "../http-util";
import type { Operation } from "../operation";
import { parseBool, parseLevel, parsePositiveInt, parseSince, queryParam } from "../observe-query";
import type { LogQuery } from "../../store/store";
import { requireObservability, requireFunction } from "./observe-common";

/** Heartbeat comment on idle live tails, so proxies and clients see the stream is alive, ms. */
const HEARTBEAT_MS = 15_000;
const LEVEL_RANK: Record<LogLevelName, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Operations of this file (for the OpenAPI document). */
export const logOperations: Operation[] = [
  {
    method: "get", path: "/api/v1/functions/:name/logs", operationId: "getLogs",
    summary: "A function's log stream: its output line by line (tagged with request and instance), platform events and one REPORT line per invocation. The newest `limit` matching lines, oldest first. With `follow=1`, a text/event-stream of `log` events (each a JSON line) from now on (plus the backlog when `since` is given).",
    auth: true,
    query: { since: "10m, 2h, an ISO time or epoch ms", request: "only this request id", level: "this level or above: debug, info, warn, error", limit: "default 100, at most 10000", follow: "1: stream new lines (SSE)" },
    responses: { "200": "`{ lines: [{ seq, ts, level, source, stream, requestId, instanceId, message }] }`, or text/event-stream with `follow=1`" },
    errors: ["INVALID_FUNCTION_NAME", "FUNCTION_NOT_FOUND", "INVALID_ARGUMENT", "NOT_FOUND"],
  },
];

function parseLogQuery(req: Request): LogQuery {
  const since = queryParam(req.query, "since");
  const request = queryParam(req.query, "request");
  const level = queryParam(req.query, "level");
  const limit = queryParam(req.query, "limit");
  return {
    ...(since !== undefined ? { since: parseSince(since, Date.now()) } : {}),
    ...(request !== undefined ? { requestId: request } : {}),
    ...(level !== undefined ? { minLevel: parseLevel(level) } : {}),
    ...(limit !== undefined ? { limit: parsePositiveInt("limit", limit) } : {}),
  };
}

/** Registers the log routes. */
export function registerLogRoutes(router: Router, ctx: ApiContext): void {
  router.get("/api/v1/functions/:name/logs", async (req, res) => {
    const name = functionNameParam(req);
    const observe = requireObservability(ctx);
    const query = parseLogQuery(req);
    const follow = queryParam(req.query, "follow");
    await requireFunction(ctx, name);
    if (follow === undefined || !parseBool("follow", follow)) {
      res.json({ lines: await ctx.store.queryLogs(name, query) });
      return;
    }
    followLogs(req, res, ctx, name, query, observe.hub.subscribe.bind(observe.hub));
  });
}

function followLogs(req: Request, res: Response, ctx: ApiContext, name: string, query: LogQuery, subscribe: (fn: string, l: (e: LogEntry) => void) => () => void): void {
  res.status(200).set({ "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-accel-buffering": "no" });
  res.flushHeaders();
  const min = query.minLevel === undefined ? 0 : LEVEL_RANK[query.minLevel];
  const send = (entry: LogEntry): void => {
    if (LEVEL_RANK[entry.level] < min) return;
    if (query.requestId !== undefined && entry.requestId !== query.requestId) return;
    res.write(`event: log\ndata: ${JSON.stringify(entry)}\n\n`);
  };
  // Subscribe first, so nothing published after the backlog query is missed.
  const unsubscribe = subscribe(name, send);
  const heartbeat = setInterval(() => res.write(": keep-alive\n\n"), HEARTBEAT_MS);
  heartbeat.unref();
  res.on("close", () => {
    clearInterval(heartbeat);
    unsubscribe();
  });
  res.write(": following\n\n");
  if (query.since !== undefined) {
    ctx.store.queryLogs(name, query).then(
      (lines) => lines.forEach(send),
      (err: unknown) => ctx.logger.warn({ err }, "log backlog query failed"),
    );
  }
}

