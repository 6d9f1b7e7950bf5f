/**
 * Opens the store a location names: `postgres://…` / `postgresql://…` → PostgreSQL
 * (src/store/postgres/), `sqlite:<file>` or a plain file path → SQLite (src/store/sqlite/).
 * The one place a composition root picks an implementation (`stratus up` does, from its `store` setting).
 */
import { parseStoreLocation } from "../shared/store-location";
import { openPostgresStore } from "./postgres/postgres-store";
import { openSqliteStore } from "./sqlite/sqlite-store";
import type { Store } from "./store";

/** Options of `openStore`. */
export interface OpenStoreOptions {
  /** 32-byte AES-256 key for secrets. Every control plane sharing one PostgreSQL needs the same key. */
  readonly masterKey: Uint8Array;
  /** Clock, epoch ms; default Date.now. */
  readonly now?: () => number;
}

/**
 * Opens (and migrates) the store at `location`.
 * @throws StratusError INVALID_ARGUMENT for an unknown location; INTERNAL for a bad master key or a
 *   schema newer than the code; a PostgreSQL connection failure as the pg error.
 */
export async function openStore(location: string, options: OpenStoreOptions): Promise<Store> {
  const where = parseStoreLocation(location);
  const rest = { masterKey: options.masterKey, ...(options.now ? { now: options.now } : {}) };
  return where.kind === "postgres" ? openPostgresStore({ connectionString: where.connectionString, ...rest }) : openSqliteStore({ file: where.file, ...rest });
}
