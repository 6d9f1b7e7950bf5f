/**
 * Node-wide limits of the gateway's HTTP server and its timers (per-function limits live in the
 * function's config), as field schemas the gateway validates with (src/gateway/limits.ts) and the
 * platform schema is composed from (src/shared/platform-config.ts, section `gateway`). Units in the names.
 */
import { z } from "zod";
import { cidrList, int, pickShape, setting } from "./setting";

/** The gateway's own limits: every field of GatewayLimitsSchema. */
export const GATEWAY_LIMITS_SHAPE = {
  maxHeaderBytes: setting(int(1024, 1024 * 1024).default(16 * 1024), { unit: "bytes", doc: "Largest request head (request line + headers); larger gets 431 HEADERS_TOO_LARGE. Node's default." }),
  // Node itself keeps the first 2000 header lines and silently drops the rest, so the function would see
  // a different request than was sent.
  maxHeaderCount: setting(int(8, 2000).default(256), { unit: "lines", doc: "Most header lines in a request; more gets 431 HEADERS_TOO_LARGE." }),
  // Node applies it to a new connection that sends nothing at all too (test/adversarial/c-http.test.ts, C11).
  headersTimeoutMs: setting(int(100, 600_000).default(10_000), { unit: "ms", doc: "Time a client has to send the request head (and a new connection its first byte); then 408 or closed." }),
  requestTimeoutMs: setting(int(100, 3_600_000).default(300_000), { unit: "ms", doc: "Time a client has to send the whole request (head + body); then 408. At least `headersTimeoutMs`." }),
  keepAliveTimeoutMs: setting(int(100, 600_000).default(65_000), { unit: "ms", doc: "Idle keep-alive connections from clients are closed after this (gateway and control plane). Above the idle time of the load balancer in front (HAProxy's idle server connections, AWS ALB's 60 s), so the balancer closes an idle connection first: a request it sends on a connection the server is closing is lost (HAProxy then closes the client's connection without an answer)." }),
  // Node's own default (30 s) would let a slow client hold a connection for up to 30 s past its timeout.
  connectionsCheckingIntervalMs: setting(int(10, 60_000).default(1_000), { unit: "ms", doc: "How often the server checks the head and request timeouts; a timeout fires up to this late." }),
  sweepIntervalMs: setting(int(5, 60_000).default(250), { unit: "ms", doc: "Period of the one timer that reaps idle instances, expires queued requests and keeps `minInstances`; its deadlines fire up to this late." }),
  timeoutGraceMs: setting(int(0, 60_000).default(2_000), { unit: "ms", doc: "Added to a function's timeout before the gateway gives up on the instance (504)." }),
  crashWaitMs: setting(int(10, 30_000).default(2_000), { unit: "ms", doc: "After a broken connection to an instance, how long to wait for its exit reason." }),
  disconnectGraceMs: setting(int(0, 600_000).default(3_000), {
    unit: "ms",
    doc: "A client that disconnects mid-request aborts the handler's request (`req.signal`); its instance is reused once the handler finishes, or destroyed if it is still running this long after the disconnect. 0: no wait, every disconnect retires its instance (closed gracefully, never reused: the behaviour before round two, kept as a baseline). See docs/gateway.md.",
  }),
  retryAfterS: setting(int(0, 3600).default(1), { unit: "s", doc: "`Retry-After` of QUEUE_FULL." }),
  // HAProxy 2.6's `retry-on` can retry a 503 on another node but not a 429.
  queueFullStatus: setting(z.union([z.literal(429), z.literal(503)]).default(429), {
    unit: "",
    doc: "Status of QUEUE_FULL: 429 on a single node; 503 behind HAProxy (cluster mode), whose `retry-on` retries a 503 on another node but cannot retry a 429. Both carry `x-stratus-reject: overload` and `Retry-After`. See docs/cluster.md.",
  }),
};

/** The gateway's other options and what the node agent adds around it (platform section `gateway`, not limits). */
export const GATEWAY_NODE_SHAPE = {
  drainTimeoutMs: setting(int(0, 3_600_000).default(30_000), { unit: "ms", doc: "Longest wait for in-flight requests on SIGTERM." }),
  trustedProxies: setting(cidrList().default([]), {
    unit: "CIDRs",
    doc: "Load balancers in front of the gateway (comma-separated in the env, e.g. `10.0.0.0/8,::1`): their `X-Forwarded-*`, `Forwarded` and `X-Real-IP` are kept and the peer appended to `X-Forwarded-For`. From anyone else those headers are dropped and the gateway sets its own. Default: none (the gateway is the edge). See docs/security.md.",
  }),
};

/** The rules across fields, for every schema holding GATEWAY_LIMITS_SHAPE. */
export function checkGatewayLimits(v: { headersTimeoutMs: number; requestTimeoutMs: number }, ctx: z.RefinementCtx): void {
  if (v.requestTimeoutMs < v.headersTimeoutMs) ctx.addIssue({ code: "custom", path: ["requestTimeoutMs"], message: "must be >= headersTimeoutMs" });
}

/** The gateway's limits: defaults, ranges and the cross-field rules. */
export const GatewayLimitsSchema = z.strictObject(GATEWAY_LIMITS_SHAPE).superRefine(checkGatewayLimits);

/** Resolved gateway limits (see GATEWAY_LIMITS_SHAPE for units and defaults). */
export type GatewayLimits = z.output<typeof GatewayLimitsSchema>;
export type GatewayLimitsInput = z.input<typeof GatewayLimitsSchema>;

/** The gateway limits out of a platform `gateway` section (which also holds GATEWAY_NODE_SHAPE). */
export function gatewayLimitsOf(section: GatewayLimits): GatewayLimits {
  return pickShape(GATEWAY_LIMITS_SHAPE, section) as GatewayLimits;
}
