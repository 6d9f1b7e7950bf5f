/**
 * A bounded table of token buckets, one per key (a client address, an API token id), refilled
 * continuously at `perMinute` up to `burst`. The one rate-limiting primitive of the platform: the
 * authentication-failure limiter (./auth-failure-limiter.ts) and the API's per-token request limits
 * (src/control/api-rate-limiter.ts) are both built on it.
 *
 * Invariants: at most `maxKeys` keys are remembered, in least-recently-charged order (a Map: the
 * oldest is forgotten first, which can only make a forgotten key's bucket full again); a key appears
 * only once it was charged; O(1) per call, no timer.
 */

/** Shape of one table. */
export interface TokenBucketSettings {
  /** Tokens a full bucket holds (what a key may spend in a row). */
  readonly burst: number;
  /** Refill rate, tokens per minute. */
  readonly perMinute: number;
  /** Most keys remembered. */
  readonly maxKeys: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** See the file comment. `now` is a monotonic clock in ms (default performance.now). */
export class KeyedTokenBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private readonly perMs: number;

  constructor(private readonly settings: TokenBucketSettings, private readonly now: () => number = () => performance.now()) {
    this.perMs = settings.perMinute / 60_000;
  }

  /** Whole seconds until `key` holds one token again (≥ 1), or 0 when it holds one now. Charges nothing. */
  waitSeconds(key: string): number {
    const b = this.buckets.get(key);
    if (b === undefined) return 0;
    const tokens = this.refill(b);
    return tokens >= 1 ? 0 : Math.max(1, Math.ceil((1 - tokens) / this.perMs / 1000));
  }

  /** Spends one token of `key` (never below zero). */
  charge(key: string): void {
    let b = this.buckets.get(key);
    if (b === undefined) {
      b = { tokens: this.settings.burst, at: this.now() };
      if (this.buckets.size >= this.settings.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
    } else {
      this.refill(b);
      this.buckets.delete(key); // re-inserted below: most recently charged last
    }
    b.tokens = Math.max(0, b.tokens - 1);
    this.buckets.set(key, b);
  }

  /**
   * Spends one token of `key` when it has one: resolves 0; otherwise charges nothing and returns the
   * whole seconds until it has one (≥ 1).
   */
  take(key: string): number {
    const wait = this.waitSeconds(key);
    if (wait === 0) this.charge(key);
    return wait;
  }

  /** Keys remembered (tests, memory checks). */
  get size(): number {
    return this.buckets.size;
  }

  private refill(b: Bucket): number {
    const t = this.now();
    b.tokens = Math.min(this.settings.burst, b.tokens + (t - b.at) * this.perMs);
    b.at = t;
    return b.tokens;
  }
}
