/**
 * One PostgreSQL transaction helper for every pg-backed component (the store, the async queue):
 * BEGIN → fn → COMMIT on a pooled client, ROLLBACK on failure, and the whole transaction retried
 * (at most `attempts` times, default 5) when it failed with an error `retryable` accepts — by default a
 * serialization failure (40001) or a deadlock (40P01), which PostgreSQL says to retry.
 *
 * `withClient` is the one way to hold a pooled client: node-postgres emits 'error' on a checked-out
 * client whose connection drops (a server restart), and an 'error' event without a listener ends the
 * process — the pool's own listener covers only idle clients. It listens for the time the client is
 * held and hands a broken client back with its error, so the pool destroys it instead of reusing it.
 */
import type pg from "pg";

/** Serialization failure or deadlock: the transaction may simply be run again. */
export const isSerializationFailure = (err: unknown): boolean => {
  const code = (err as { code?: string } | null)?.code;
  return code === "40001" || code === "40P01";
};

/** Runs `fn` with a client of `pool` held (see the file comment); released, or destroyed if its connection broke. */
export async function withClient<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  let broken: Error | undefined;
  const onError = (err: Error): void => {
    broken ??= err;
  };
  c.on("error", onError);
  try {
    return await fn(c);
  } finally {
    c.off("error", onError);
    // A client that saw its connection drop is never given to another caller (release(err) ends it).
    c.release(broken);
  }
}

/** Runs `fn` in a transaction on a client of `pool`; see the file comment. @throws the last error */
export async function runTransaction<T>(
  pool: pg.Pool,
  fn: (c: pg.PoolClient) => Promise<T>,
  o: { attempts?: number; retryable?: (err: unknown) => boolean } = {},
): Promise<T> {
  const attempts = o.attempts ?? 5;
  const retryable = o.retryable ?? isSerializationFailure;
  for (let attempt = 1; ; attempt++) {
    const done = await withClient(pool, async (c) => {
      try {
        await c.query("BEGIN");
        const out = await fn(c);
        await c.query("COMMIT");
        return { out };
      } catch (err) {
        await c.query("ROLLBACK").catch(() => {});
        if (attempt >= attempts || !retryable(err)) throw err;
        return null;
      }
    });
    if (done !== null) return done.out;
  }
}
