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
 * boot (a pre-warm refill), served only when no ordinary waiter is queued.
 */
export type StartGate = (low?: boolean) => Promise<() => void>;

/**
 * A counting semaphore: the returned function resolves with a release function once fewer than `limit`
 * holders exist; waiters are served in FIFO order, ordinary ones before `low` ones. Releasing twice is a
 * no-op.
 */
export function createStartGate(limit: number): StartGate {
  let held = 0;
  const waiters: Array<() => void> = [];
  const lowWaiters: Array<() => void> = [];
  const release = (): void => {
    const next = waiters.shift() ?? lowWaiters.shift();
    if (next) next();
    else held--;
  };
  return (low = false) => {
    let released = false;
    const once = (): void => {
      if (released) return;
      released = true;
      release();
    };
    if (held < limit) {
      held++;
      return Promise.resolve(once);
    }
    return new Promise((resolve) => (low ? lowWaiters : waiters).push(() => resolve(once)));
  };
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
