/**
 * What every API route file receives: the store, the node, the activator, the deployer, limits and
 * the public base URL. Built once by src/control/control-plane.ts.
 */
import type { Store } from "../store/store";
import type { Logger } from "../shared/logger";
import type { NodeFleetApi } from "./node-api";
import type { Activator } from "./activation";
import type { Deployer } from "./deployer";
import type { Observability } from "../observe/observer";
import type { AuthFailureLimiter } from "../shared/auth-failure-limiter";
import type { ApiRateLimiter } from "./api-rate-limiter";
import type { EventsPlane } from "../events/events-plane";

export interface ApiContext {
  readonly store: Store;
  readonly node: NodeFleetApi;
  readonly activator: Activator;
  readonly deployer: Deployer;
  readonly logger: Logger;
  /** Base URL for function URLs, without a trailing slash (`http://127.0.0.1:8080`). */
  readonly publicUrl: () => string;
  /** Largest upload, bytes (platform config build.maxArchiveBytes). */
  readonly maxArchiveBytes: number;
  /** True once start-up finished (every active version pushed to the node). */
  readonly isReady: () => boolean;
  /** Logs, invocations, error groups, metrics and live tails (absent: those routes answer 404 NOT_FOUND). */
  readonly observability?: Observability;
  /** Serve `/metrics` without a token (platform config observe.publicMetrics). */
  readonly publicMetrics?: boolean;
  /** Per-address limit of authentication failures (absent: unlimited; `stratus up` always sets one). */
  readonly authFailures?: AuthFailureLimiter;
  /** Per-caller request and deploy limits (src/control/api-rate-limiter.ts; absent: unlimited; `stratus up` always sets one). */
  readonly rateLimiter?: ApiRateLimiter;
  /** Async invocations, the DLQ and triggers (absent: those routes answer 404 NOT_FOUND). */
  readonly events?: EventsPlane;
}

/** The URL of a function below the public base URL. */
export function functionUrl(ctx: ApiContext, name: string): string {
  return `${ctx.publicUrl()}/fn/${name}`;
}
