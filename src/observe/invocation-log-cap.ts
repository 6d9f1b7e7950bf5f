/**
 * The per-invocation line cap: at most `maxLines` lines of one request id are kept; the rest are
 * dropped and reported with one visible marker line (`[… N lines truncated]`) when the invocation ends.
 * Lines may still arrive after the response (a handler logging after `res.send`, a pipe read late),
 * so an ended invocation stays tracked for `graceMs`; lines dropped meanwhile get a second marker.
 *
 * Invariants: an entry exists only for a request id that logged; `kept <= maxLines`; every dropped line
 * is counted in exactly one marker (or lost with its entry after `staleMs` without an end).
 */

interface Entry {
  kept: number;
  dropped: number;
  endedAt: number | null;
  lastAt: number;
}

/** A marker to write: `dropped` lines of `requestId` were cut. */
export interface TruncationMarker {
  readonly requestId: string;
  readonly dropped: number;
  /** The function the lines belonged to. */
  readonly functionName: string;
}

/** Text of a marker line. */
export function truncationMessage(dropped: number, more = false): string {
  return `[… ${dropped}${more ? " more" : ""} line${dropped === 1 ? "" : "s"} truncated (per-invocation log cap)]`;
}

/** See the file comment. */
export class InvocationLogCap {
  private readonly entries = new Map<string, Entry & { functionName: string }>();

  /**
   * @param maxLines lines kept per invocation
   * @param graceMs how long an ended invocation still counts late lines
   * @param staleMs entries of invocations that never ended are forgotten after this long idle
   */
  constructor(private readonly maxLines: number, private readonly graceMs = 2_000, private readonly staleMs = 600_000) {}

  /** True when the line may be kept; false when it is dropped (and counted). */
  admit(functionName: string, requestId: string, now: number): boolean {
    let e = this.entries.get(requestId);
    if (e === undefined) this.entries.set(requestId, (e = { kept: 0, dropped: 0, endedAt: null, lastAt: now, functionName }));
    e.lastAt = now;
    if (e.kept < this.maxLines) {
      e.kept++;
      return true;
    }
    e.dropped++;
    return false;
  }

  /** Marks the invocation ended; returns how many lines were dropped so far (0: no marker needed). */
  end(requestId: string, now: number): number {
    const e = this.entries.get(requestId);
    if (e === undefined) return 0;
    e.endedAt = now;
    const n = e.dropped;
    e.dropped = 0;
    return n;
  }

  /** Forgets finished entries; returns markers for lines dropped after the end. Call periodically. */
  sweep(now: number): TruncationMarker[] {
    const out: TruncationMarker[] = [];
    for (const [rid, e] of this.entries) {
      const ended = e.endedAt !== null && now - e.endedAt >= this.graceMs;
      if (ended || now - e.lastAt >= this.staleMs) {
        if (e.dropped > 0) out.push({ requestId: rid, dropped: e.dropped, functionName: e.functionName });
        this.entries.delete(rid);
      }
    }
    return out;
  }

  /** Tracked invocations (tests, memory checks). */
  get size(): number {
    return this.entries.size;
  }
}
