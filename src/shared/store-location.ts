/**
 * What a store location names (the `store` setting of `stratus up`): `postgres://…` / `postgresql://…`
 * is PostgreSQL, `sqlite:<file>` or a plain file path is SQLite. Here in shared/ so the platform schema
 * refuses a bad location at start-up with every other problem (src/store/open-store.ts opens it).
 */
import { StratusError } from "./errors";

export type StoreLocation = { readonly kind: "postgres"; readonly connectionString: string } | { readonly kind: "sqlite"; readonly file: string };

/**
 * Parses a location.
 * @throws StratusError INVALID_ARGUMENT for anything else (the location is not echoed: a URL may carry a password).
 */
export function parseStoreLocation(location: string): StoreLocation {
  if (/^postgres(ql)?:\/\//i.test(location)) return { kind: "postgres", connectionString: location };
  const file = location.startsWith("sqlite:") ? location.slice("sqlite:".length) : location;
  if (file === "" || /^[a-z][a-z0-9+.-]*:\/\//i.test(file)) {
    throw new StratusError("INVALID_ARGUMENT", "A store location is postgres://…, postgresql://…, sqlite:<file> or a file path");
  }
  return { kind: "sqlite", file };
}
