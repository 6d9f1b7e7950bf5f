/**
 * The per-address limit on failed authentications (src/shared/auth-failure-limiter.ts), as field
 * schemas the platform schema is composed from (section `auth`).
 */
import { z } from "zod";
import { int, setting } from "./setting";

export const AUTH_SETTINGS_SHAPE = {
  failureBurst: setting(int(1, 1_000_000).default(20), { unit: "failures", doc: "Authentication failures (401) one client address may have in a row (API and private functions); then 429 `TOO_MANY_AUTH_FAILURES` with `Retry-After`, and no token from that address is checked until the bucket refills." }),
  failuresPerMinute: setting(int(1, 1_000_000).default(30), { unit: "failures/min", doc: "Refill rate of each client's authentication-failure bucket." }),
  maxTrackedClients: setting(int(10, 10_000_000).default(10_000), { unit: "addresses", doc: "Client addresses the failure limiter remembers (least recently failed forgotten first): bounds its memory." }),
};

export const AuthSettingsSchema = z.strictObject(AUTH_SETTINGS_SHAPE);
export type AuthSettings = z.output<typeof AuthSettingsSchema>;
