/**
 * Helpers both drivers use to bound and cancel sandbox boots.
 *
 * A boot (bwrap + Node start-up, or a container create + start) is mostly CPU and engine work: started all
 * at once on a small node, a burst of boots each finish late and can all exceed their start timeout; queued
 * through a gate, they finish one after another and the first ones already serve (bench/burst.ts).
 */
import { StratusError } from "../shared/errors";

/**
 * Who a boot is for, highest priority first (docs/prewarm.md, "The boot gate"):
 *  - `first`: a function's first instance (none ready, none starting for its version): until it is up,
 *    every request for that function waits, however many instances other functions already run;
 *  - `more`: any other on-demand boot (an additional instance of a function that has one, or a start whose
 *    caller did not say);
 *  - `refill`: a pre-warm pool refill (background; never in the gate's last free place).
 */
export const BOOT_PRIORITIES = ["first", "more", "refill"] as const;
export type BootPriority = (typeof BOOT_PRIORITIES)[number];

/**
 * Acquires one of the gate's places; resolves with an idempotent release function. `priority` (default
 * `more`): see BootPriority. `signal`: aborting it while the boot still waits takes it out of the queue
 * (the promise rejects with INSTANCE_START_FAILED "start aborted"); once granted it has no effect.
 */
export type StartGate = (priority?: BootPriority, signal?: AbortSignal) => Promise<() => void>;

/**
 * A counting semaphore: the returned function resolves with a release function once fewer than `limit`
 * holders exist; waiters are served by priority (`first`, then `more`, then `refill`), FIFO within one.
 * Refill holders take at most `limit − 1` places (at least 1), so an on-demand boot never waits for a
 * refill to finish: with two places, both held by refills, a cold start that found no slot waited a whole
 * boot before its own (measured in bench/cold-tail.ts: p50 650 ms against ~250 ms for a plain fresh
 * start). A function's first instance goes ahead of other functions' additional ones: after a node of a
 * cluster failed, a survivor took over ~10 functions at once, and served FIFO the last function's first
 * instance queued behind the others' second and third (test/lb-haproxy.test.ts "failover": slowest request
 * 15–20 s in CI). Nothing pre-empts a boot that holds a place. Releasing twice is a no-op.
 */
export function createStartGate(limit: number): StartGate {
  let held = 0;
  let refillHeld = 0;
  const refillCap = Math.max(1, limit - 1);
  const queues: Record<BootPriority, Array<() => void>> = { first: [], more: [], refill: [] };
  const pump = (): void => {
    while (held < limit) {
      const next = queues.first.shift() ?? queues.more.shift() ?? (refillHeld < refillCap ? queues.refill.shift() : undefined);
      if (next === undefined) return;
      next();
    }
  };
  return (priority = "more", signal) => new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(startAborted(signal));
    const refill = priority === "refill";
    const queue = queues[priority];
    const onAbort = (): void => {
      const i = queue.indexOf(grant);
      if (i === -1) return;
      queue.splice(i, 1);
      reject(startAborted(signal));
    };
    const grant = (): void => {
      signal?.removeEventListener("abort", onAbort);
      held++;
      if (refill) refillHeld++;
      let released = false;
      resolve(() => {
        if (released) return;
        released = true;
        held--;
        if (refill) refillHeld--;
        pump();
      });
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    queue.push(grant);
    pump();
  });
}

function startAborted(signal: AbortSignal | undefined): StratusError {
  return new StratusError("INSTANCE_START_FAILED", "start aborted", { cause: signal?.reason });
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
      reject(startAborted(signal));
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    void p.then((v) => {
      signal.removeEventListener("abort", onAbort);
      if (!signal.aborted) resolve(v);
    });
  });
}
