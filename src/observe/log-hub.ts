/**
 * In-process pub/sub of log lines per function, for live tails (`stratus logs <fn> -f`). Publishing
 * is synchronous and cheap when nobody listens (one Map lookup). A listener that throws is removed,
 * so one broken tail cannot break the write path.
 */
import type { LogEntry } from "../shared/invocation";

/** Receives every line of one function from the moment it subscribed. */
export type LogListener = (entry: LogEntry) => void;

/** See the file comment. */
export class LogHub {
  private readonly listeners = new Map<string, Set<LogListener>>();

  /** Follows `functionName`'s lines; returns the unsubscribe function (idempotent). */
  subscribe(functionName: string, listener: LogListener): () => void {
    let set = this.listeners.get(functionName);
    if (set === undefined) this.listeners.set(functionName, (set = new Set()));
    set.add(listener);
    return () => {
      const s = this.listeners.get(functionName);
      if (s === undefined) return;
      s.delete(listener);
      if (s.size === 0) this.listeners.delete(functionName);
    };
  }

  /** Hands `entry` to the listeners of its function. */
  publish(entry: LogEntry): void {
    const set = this.listeners.get(entry.functionName);
    if (set === undefined) return;
    for (const listener of set) {
      try {
        listener(entry);
      } catch {
        set.delete(listener);
      }
    }
  }

  /** Number of active listeners (all functions), for tests and metrics. */
  get listenerCount(): number {
    let n = 0;
    for (const s of this.listeners.values()) n += s.size;
    return n;
  }
}
