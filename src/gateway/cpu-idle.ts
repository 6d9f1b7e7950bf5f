/**
 * The node's idle CPU, in cores, over the last sampling interval: the scale-out decision's check that a
 * new instance would get CPU time rather than take it from the running ones (function-pool.ts,
 * docs/gateway.md "When a queued request starts an instance"). Sampled by the gateway's one sweep tick
 * (`os.cpus()` times, summed over the cores), never per request.
 */
import { cpus } from "node:os";

/** Reads the machine's cumulative CPU times: busy and idle, ms summed over every core. */
export type CpuTimesReader = () => { busyMs: number; idleMs: number };

function osCpuTimes(): { busyMs: number; idleMs: number } {
  let busyMs = 0;
  let idleMs = 0;
  for (const c of cpus()) {
    busyMs += c.times.user + c.times.nice + c.times.sys + c.times.irq;
    idleMs += c.times.idle;
  }
  return { busyMs, idleMs };
}

/** See the file comment. `idleCores()` is +Infinity (unknown: no reason to hold back) until two samples exist. */
export class CpuIdle {
  private last: { busyMs: number; idleMs: number } | null = null;
  private idle = Number.POSITIVE_INFINITY;

  /** @param cores the machine's cores (the idle share is scaled to cores); @param read the times source (tests pass a fake). */
  constructor(private readonly cores: number, private readonly read: CpuTimesReader = osCpuTimes) {}

  /** Takes a sample; the idle cores since the previous one become `idleCores()`. An empty interval keeps the last value. */
  sample(): void {
    const now = this.read();
    const last = this.last;
    this.last = now;
    if (last === null) return;
    const busy = now.busyMs - last.busyMs;
    const idle = now.idleMs - last.idleMs;
    if (busy < 0 || idle < 0 || busy + idle <= 0) return;
    this.idle = (idle / (busy + idle)) * this.cores;
  }

  /** Idle cores over the last interval (0 … cores), +Infinity before two samples. */
  idleCores(): number {
    return this.idle;
  }
}
