/**
 * Ranges (inclusive) of the numeric function config fields that another platform's settings map onto:
 * the schema (function-config.ts) uses these numbers, and firebase-settings.ts clamps into them. A module
 * of its own, without zod, because the runtime imports it.
 */
export const FUNCTION_CONFIG_LIMITS = {
  timeout: { min: 100, max: 900_000 },
  memory: { min: 64, max: 16_384 },
  concurrency: { min: 1, max: 1000 },
  minInstances: { min: 0, max: 1000 },
  maxInstances: { min: 1, max: 1000 },
} as const satisfies Record<string, { min: number; max: number }>;

export type LimitedField = keyof typeof FUNCTION_CONFIG_LIMITS;
