/**
 * Node-wide limits of the gateway's HTTP server and its timers (per-function limits live in the
 * function's config). The schema is src/shared/config/gateway-settings.ts, which the platform schema
 * (src/shared/platform-config.ts, section `gateway`) is composed from: a value `stratus up` accepts is
 * never refused here. Problems reported at once; frozen.
 */
import { StratusError } from "../shared/errors";
import { GatewayLimitsSchema, type GatewayLimits, type GatewayLimitsInput } from "../shared/config/gateway-settings";

export { GatewayLimitsSchema, type GatewayLimits, type GatewayLimitsInput };

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
  return Object.freeze(r.data);
}
