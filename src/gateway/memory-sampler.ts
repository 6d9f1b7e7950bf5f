/**
 * Peak memory of instances for invocation records, without a syscall storm: `instance.stats()` (two
 * cgroup file reads with the process driver, an Engine API call with Docker) runs at most once per
 * `minIntervalMs` per instance; requests in between reuse the last sample. The value is the peak of
 * the instance since it started, so a reused sample can lag by at most one interval of growth.
 */
import type { Instance } from "../sandbox/driver";

interface Sample {
  peakBytes: number | null;
  at: number;
  pending: Promise<number | null> | null;
}

/** See the file comment. Entries die with their instance (WeakMap). */
export class MemorySampler {
  private readonly samples = new WeakMap<Instance, Sample>();

  /** @param minIntervalMs shortest time between two stats() calls of one instance (default 1000 ms). */
  constructor(private readonly minIntervalMs = 1000, private readonly now: () => number = () => performance.now()) {}

  /**
   * The last sample when it is fresh enough to reuse (bytes, or null when unknown), else undefined:
   * then call `peak`. Lets the caller skip a Promise per request on the common path.
   */
  cached(instance: Instance): number | null | undefined {
    const s = this.samples.get(instance);
    if (s === undefined || s.pending !== null || this.now() - s.at >= this.minIntervalMs) return undefined;
    return s.peakBytes;
  }

  /** The instance's peak memory in bytes (null when unknown). Never rejects. */
  peak(instance: Instance): Promise<number | null> {
    const now = this.now();
    let s = this.samples.get(instance);
    if (s === undefined) this.samples.set(instance, (s = { peakBytes: null, at: -Infinity, pending: null }));
    if (s.pending !== null) return s.pending;
    if (now - s.at < this.minIntervalMs) return Promise.resolve(s.peakBytes);
    const sample = s;
    sample.at = now;
    sample.pending = instance.stats().then(
      (st) => {
        // Gone (e.g. killed for memory): keep the last value seen; 0 means the driver cannot tell.
        if (st !== null && st.peakMemoryBytes > 0) sample.peakBytes = st.peakMemoryBytes;
        sample.pending = null;
        return sample.peakBytes;
      },
      () => {
        sample.pending = null;
        return sample.peakBytes;
      },
    );
    return sample.pending;
  }
}
