/**
 * One PostgreSQL transaction helper for every pg-backed component (the store, the async queue):
 * BEGIN → fn → COMMIT on a pooled client, ROLLBACK on failure, and the whole transaction retried
 * (at most `attempts` times, default 5) when it failed with an error `retryable` accepts — by default a
 * serialization failure (40001) or a deadlock (40P01), which PostgreSQL says to retry.
 */
import type pg from "pg";

/** Serialization failure or deadlock: the transaction may simply be run again. */
export const isSerializationFailure = (err: unknown): boolean => {
  const code = (err as { code?: string } | null)?.code;
  return code === "40001" || code === "40P01";
};

/** Runs `fn` in a transaction on a client of `pool`; see the file comment. @throws the last error */
export async function runTransaction<T>(
  pool: pg.Pool,
  fn: (c: pg.PoolClient) => Promise<T>,
  o: { attempts?: number; retryable?: (err: unknown) => boolean } = {},
): Promise<T> {
  const attempts = o.attempts ?? 5;
  const retryable = o.retryable ?? isSerializationFailure;
  for (let attempt = 1; ; attempt++) {
    const c = await pool.connect();
    try {
      await c.query("BEGIN");
      const out = await fn(c);
      await c.query("COMMIT");
      return out;
    } catch (err) {
      await c.query("ROLLBACK").catch(() => {});
      if (attempt >= attempts || !retryable(err)) throw err;
    } finally {
      c.release();
    }
  }
}
