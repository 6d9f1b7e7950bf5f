/**
 * Opens the job queue beside the store a location names (the same `store` setting): PostgreSQL tables
 * in the same database, or SQLite tables in the same file on a connection of their own.
 */
import { parseStoreLocation } from "../shared/store-location";
import { openPostgresQueue } from "./postgres/postgres-queue";
import type { JobQueue } from "./queue";
import type { JobQueueOptions } from "./queue-rules";
import { openSqliteQueue } from "./sqlite/sqlite-queue";

/** @throws StratusError INVALID_ARGUMENT for an unknown location; a PostgreSQL connection failure as the pg error. */
export async function openQueue(location: string, options: JobQueueOptions = {}): Promise<JobQueue> {
  const where = parseStoreLocation(location);
  return where.kind === "postgres" ? openPostgresQueue({ connectionString: where.connectionString, ...options }) : openSqliteQueue(where.file, options);
}
