/**
 * The API's per-caller request limits (src/control/api-rate-limiter.ts), as field schemas the
 * platform schema is composed from (section `rateLimit`). A caller is its API token (every route but
 * health and the OpenAPI document needs one), or its client address where no token is asked for
 * (`/metrics` with `observe.publicMetrics`).
 */
import { z } from "zod";
import { int, setting } from "./setting";

export const RATE_LIMIT_SETTINGS_SHAPE = {
  deployBurst: setting(int(1, 1_000_000).default(60), { unit: "deploys", doc: "Deployments (`POST /api/v1/deployments`: an upload, an install and a build) and rollbacks one API token may start in a row; then 429 `API_RATE_LIMITED` with `Retry-After` until its bucket refills." }),
  deploysPerMinute: setting(int(1, 1_000_000).default(30), { unit: "deploys/min", doc: "Refill rate of each token's deployment bucket." }),
  requestBurst: setting(int(1, 10_000_000).default(600), { unit: "requests", doc: "API requests one token (or, without a token, one client address) may make in a row, deployments included; then 429 `API_RATE_LIMITED` with `Retry-After`." }),
  requestsPerMinute: setting(int(1, 10_000_000).default(3000), { unit: "requests/min", doc: "Refill rate of each caller's request bucket." }),
  maxTrackedCallers: setting(int(10, 10_000_000).default(10_000), { unit: "callers", doc: "Tokens and addresses the request limiter remembers (least recently seen forgotten first): bounds its memory." }),
};

export const RateLimitSettingsSchema = z.strictObject(RATE_LIMIT_SETTINGS_SHAPE);
export type RateLimitSettings = z.output<typeof RateLimitSettingsSchema>;
