/**
 * Slows down token guessing: a token bucket of authentication failures per client address, shared by
 * the API and the gateway's check of non-public functions. Each address may fail `failureBurst` times
 * in a row; the bucket refills at `failuresPerMinute`. While it is empty, every request from that
 * address that needs a token is refused with 429 TOO_MANY_AUTH_FAILURES and `Retry-After` **before**
 * its token is looked at, so guessing cannot go faster than the refill rate — a valid token from that
 * address waits too (the price of not telling the guesser when it guessed right).
 *
 * Invariants (./keyed-token-buckets.ts): at most `maxTrackedClients` addresses are remembered, the
 * least recently failed forgotten first; an address appears only after a failure; O(1), no timer.
 */
import { StratusError } from "./errors";
import { KeyedTokenBuckets } from "./keyed-token-buckets";

/** Settings (platform config `auth.*`). */
export interface AuthFailureSettings {
  /** Failures allowed in a row per address. */
  readonly failureBurst: number;
  /** Refill rate of each address's bucket, failures per minute. */
  readonly failuresPerMinute: number;
  /** Most addresses remembered. */
  readonly maxTrackedClients: number;
}

/** Defaults (equal to the platform config's `auth.*` defaults; a unit test keeps them equal). */
export const AUTH_FAILURE_DEFAULTS: AuthFailureSettings = Object.freeze({ failureBurst: 20, failuresPerMinute: 30, maxTrackedClients: 10_000 });

/** See the file comment. `now` is a monotonic clock in ms (default performance.now). */
export class AuthFailureLimiter {
  private readonly buckets: KeyedTokenBuckets;

  constructor(settings: AuthFailureSettings = AUTH_FAILURE_DEFAULTS, now: () => number = () => performance.now()) {
    this.buckets = new KeyedTokenBuckets({ burst: settings.failureBurst, perMinute: settings.failuresPerMinute, maxKeys: settings.maxTrackedClients }, now);
  }

  /**
   * Refuses a client whose bucket is empty.
   * @throws StratusError TOO_MANY_AUTH_FAILURES with `Retry-After` (whole seconds until one failure is allowed).
   */
  check(client: string): void {
    const waitS = this.buckets.waitSeconds(client);
    if (waitS > 0) throw new StratusError("TOO_MANY_AUTH_FAILURES", undefined, { headers: { "retry-after": String(waitS) } });
  }

  /** Counts one authentication failure of `client`. */
  fail(client: string): void {
    this.buckets.charge(client);
  }

  /** Addresses remembered (tests, memory checks). */
  get size(): number {
    return this.buckets.size;
  }
}

/**
 * Runs `verify` under the limiter for `client`: refused at once when its bucket is empty; a throw of
 * UNAUTHENTICATED from `verify` counts one failure (and is rethrown).
 * @throws StratusError TOO_MANY_AUTH_FAILURES, or whatever `verify` throws
 */
export async function limitAuthFailures<T>(limiter: AuthFailureLimiter | undefined, client: string, verify: () => Promise<T>): Promise<T> {
  if (limiter === undefined) return verify();
  limiter.check(client);
  try {
    return await verify();
  } catch (err) {
    if ((err as { code?: unknown } | null)?.code === "UNAUTHENTICATED") limiter.fail(client);
    throw err;
  }
}
