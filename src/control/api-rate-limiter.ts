/**
 * Per-caller limits on the API (catalogue case D5: a valid token must not be able to queue builds
 * or hammer the store without bound). Two token-bucket tables (src/shared/keyed-token-buckets.ts):
 *   - requests: every API request of a caller (health and the OpenAPI document excepted);
 *   - deploys:  the expensive ones — `POST /api/v1/deployments` (upload, install, bundle, discovery)
 *               and `POST /api/v1/functions/:name/rollback` (activation on every node).
 * A caller is its token id once authenticated, else its client address (public `/metrics`). Over a
 * limit the request is refused with 429 API_RATE_LIMITED and `Retry-After` before its body is read.
 * Settings: platform config `rateLimit.*` (src/shared/config/rate-limit-settings.ts).
 *
 * Invariants: both tables are bounded by `maxTrackedCallers`; O(1) per request; no timer.
 */
import { StratusError } from "../shared/errors";
import { KeyedTokenBuckets } from "../shared/keyed-token-buckets";
import type { RateLimitSettings } from "../shared/config/rate-limit-settings";

/** Defaults (equal to the platform config's `rateLimit.*` defaults; a unit test keeps them equal). */
export const RATE_LIMIT_DEFAULTS: RateLimitSettings = Object.freeze({ deployBurst: 60, deploysPerMinute: 30, requestBurst: 600, requestsPerMinute: 3000, maxTrackedCallers: 10_000 });

/** Whether `method path` starts a deployment or a rollback (charged against the deploy bucket too). */
export function isDeployRequest(method: string, path: string): boolean {
  if (method !== "POST") return false;
  const p = path.endsWith("/") ? path.slice(0, -1) : path;
  if (p === "/api/v1/deployments") return true;
  return p.startsWith("/api/v1/functions/") && p.endsWith("/rollback") && p.split("/").length === 6;
}

/** See the file comment. `now` is a monotonic clock in ms (default performance.now). */
export class ApiRateLimiter {
  private readonly requests: KeyedTokenBuckets;
  private readonly deploys: KeyedTokenBuckets;

  constructor(settings: RateLimitSettings = RATE_LIMIT_DEFAULTS, now: () => number = () => performance.now()) {
    this.requests = new KeyedTokenBuckets({ burst: settings.requestBurst, perMinute: settings.requestsPerMinute, maxKeys: settings.maxTrackedCallers }, now);
    this.deploys = new KeyedTokenBuckets({ burst: settings.deployBurst, perMinute: settings.deploysPerMinute, maxKeys: settings.maxTrackedCallers }, now);
  }

  /**
   * Charges one request of `caller` (and one deploy when it is one), or refuses it.
   * @throws StratusError API_RATE_LIMITED with `Retry-After` (whole seconds until the caller may retry);
   *   a refused request charges nothing.
   */
  admit(caller: string, method: string, path: string): void {
    const deploy = isDeployRequest(method, path);
    const waitReq = this.requests.waitSeconds(caller);
    const waitDeploy = deploy ? this.deploys.waitSeconds(caller) : 0;
    if (waitReq > 0 || waitDeploy > 0) {
      const message = waitDeploy > 0 ? "Too many deployments for this caller; retry later" : undefined;
      throw new StratusError("API_RATE_LIMITED", message, { headers: { "retry-after": String(Math.max(waitReq, waitDeploy)) } });
    }
    this.requests.charge(caller);
    if (deploy) this.deploys.charge(caller);
  }

  /** Callers remembered by the request table (tests, memory checks). */
  get size(): number {
    return this.requests.size;
  }
}
