/**
 * Helpers both drivers use to bound and cancel sandbox boots.
 *
 * A boot (bwrap + Node start-up, or a container create + start) is mostly CPU and engine work: started all
 * at once on a small node, a burst of boots each finish late and can all exceed their start timeout; queued
 * through a gate, they finish one after another and the first ones already serve (bench/burst.ts).
 */
import { StratusError } from "../shared/errors";

/**
 * Acquires one of the gate's places; resolves with an idempotent release function. `low`: a background
 * boot (a pre-warm refill), served only when no ordinary waiter is queued, and never in the last free place.
 */
export type StartGate = (low?: boolean) => Promise<() => void>;

/**
 * A counting semaphore: the returned function resolves with a release function once fewer than `limit`
 * holders exist; waiters are served in FIFO order, ordinary ones before `low` ones. Low holders take at
 * most `limit − 1` places (at least 1), so an on-demand boot never waits for a refill to finish: with two
 * places, both held by refills, a cold start that found no slot waited a whole boot before its own
 * (measured in bench/cold-tail.ts: p50 650 ms against ~250 ms for a plain fresh start). Releasing twice is a
 * no-op.
 */
export function createStartGate(limit: number): StartGate {
  let held = 0;
  let lowHeld = 0;
  const lowCap = Math.max(1, limit - 1);
  const waiters: Array<() => void> = [];
  const lowWaiters: Array<() => void> = [];
  const pump = (): void => {
    while (held < limit) {
      const next = waiters.shift() ?? (lowHeld < lowCap ? lowWaiters.shift() : undefined);
      if (next === undefined) return;
      next();
    }
  };
  return (low = false) => new Promise((resolve) => {
    const grant = (): void => {
      held++;
      if (low) lowHeld++;
      let released = false;
      resolve(() => {
        if (released) return;
        released = true;
        held--;
        if (low) lowHeld--;
        pump();
      });
    };
    (low ? lowWaiters : waiters).push(grant);
    pump();
  });
}

/**
 * Resolves with what `p` resolves to, or throws an INSTANCE_START_FAILED "start aborted" as soon as
 * `signal` aborts; a value that arrives after that is handed to `discard`.
 */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined, discard: (late: T) => void): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      void p.then(discard);
      reject(new StratusError("INSTANCE_START_FAILED", "start aborted", { cause: signal.reason }));
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    void p.then((v) => {
      signal.removeEventListener("abort", onAbort);
      if (!signal.aborted) resolve(v);
    });
  });
}
