/** Guards shared by the observability routes (logs, invocations, errors, metrics). */
import { StratusError } from "../../shared/errors";
import type { Observability } from "../../observe/observer";
import type { ApiContext } from "../api-context";

/** The platform's observability, or 404 NOT_FOUND when this API runs without it. */
export function requireObservability(ctx: ApiContext): Observability {
  if (ctx.observability === undefined) throw new StratusError("NOT_FOUND", "Observability is not enabled on this platform");
  return ctx.observability;
}

/** Refuses unknown functions with 404 FUNCTION_NOT_FOUND. */
export async function requireFunction(ctx: ApiContext, name: string): Promise<void> {
  if ((await ctx.store.getFunction(name)) === null) throw new StratusError("FUNCTION_NOT_FOUND", `Function ${name} not found`);
}
