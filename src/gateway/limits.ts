/**
 * Node-wide limits of the gateway's HTTP server and its timers (per-function limits live in the
 * function's config). One schema with every default and unit; problems reported at once; frozen.
 * The defaults equal the platform config's `gateway.*` defaults (src/shared/platform-config.ts; a unit
 * test keeps them equal), so embedding the gateway directly behaves like `stratus up`.
 */
import { z } from "zod";
import { StratusError } from "../shared/errors";

const int = (min: number, max: number) => z.number().int().min(min).max(max);

export const GatewayLimitsSchema = z.strictObject({
  /** Largest request head (request line + headers), bytes; past it 431 HEADERS_TOO_LARGE. Node's default. */
  maxHeaderSize: int(1024, 1024 * 1024).default(16 * 1024),
  /**
   * Most header lines in a request head; more get 431 HEADERS_TOO_LARGE. (Node itself keeps the first
   * 2000 and silently drops the rest, so the function would see a different request than was sent.)
   */
  maxHeaderCount: int(8, 2000).default(256),
  /** Time a client has to send the whole head, ms; past it 408 REQUEST_TIMEOUT. Node applies it to a new connection that sends nothing at all too (test/adversarial/c-http.test.ts, C11). */
  headersTimeoutMs: int(100, 600_000).default(10_000),
  /** Time a client has to send the whole request (head + body), ms; past it 408 REQUEST_TIMEOUT. */
  requestTimeoutMs: int(100, 3_600_000).default(300_000),
  /** Idle keep-alive connections from clients are closed after this, ms (Node's default). */
  keepAliveTimeoutMs: int(100, 600_000).default(5_000),
  /**
   * How often Node checks headersTimeout/requestTimeout, ms. Node's own default (30 s) would let a
   * slow client hold a connection for up to 30 s past its timeout.
   */
  connectionsCheckingIntervalMs: int(10, 60_000).default(1_000),
  /**
   * Period of the one shared sweep timer, ms: queue timeouts, idle reaping, minInstances upkeep.
   * Deadlines it enforces fire up to this late.
   */
  tickMs: int(5, 60_000).default(250),
  /** Added to a function's timeout before the gateway gives up on the instance (504), ms. */
  timeoutGraceMs: int(0, 60_000).default(2_000),
  /** After a broken connection, how long to wait for the instance's exit reason, ms. */
  crashWaitMs: int(10, 30_000).default(2_000),
  /** Retry-After of QUEUE_FULL, seconds. */
  retryAfterS: int(0, 3600).default(1),
  /**
   * HTTP status of QUEUE_FULL: 429 on a single node (the client should slow down), 503 behind HAProxy
   * (cluster mode): HAProxy 2.6's `retry-on` can retry a 503 on another node but not a 429. Either way
   * the answer carries `x-stratus-reject: overload` (not executed) and `Retry-After`.
   */
  queueFullStatus: z.union([z.literal(429), z.literal(503)]).default(429),
});

/** Resolved gateway limits (see GatewayLimitsSchema for units and defaults). */
export type GatewayLimits = z.output<typeof GatewayLimitsSchema>;
export type GatewayLimitsInput = z.input<typeof GatewayLimitsSchema>;

/**
 * Applies defaults and validates.
 * @throws StratusError INVALID_CONFIG listing every problem.
 */
export function resolveGatewayLimits(raw: GatewayLimitsInput | undefined): Readonly<GatewayLimits> {
  const r = GatewayLimitsSchema.safeParse(raw ?? {});
  if (!r.success) {
    const problems = r.error.issues.map((i) => ({ path: i.path.map(String).join(".") || "(limits)", message: i.message }));
    throw new StratusError("INVALID_CONFIG", `Invalid gateway limits: ${problems.map((p) => `${p.path}: ${p.message}`).join("; ")}`, { details: problems });
  }
  if (r.data.requestTimeoutMs < r.data.headersTimeoutMs) {
    throw new StratusError("INVALID_CONFIG", "Invalid gateway limits: requestTimeoutMs must be >= headersTimeoutMs");
  }
  return Object.freeze(r.data);
}
