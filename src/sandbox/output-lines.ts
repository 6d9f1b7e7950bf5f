/**
 * Turns an instance's stdout/stderr byte streams into InstanceLogLine records, shared by every driver:
 * splits on "\n", caps each line, limits the rate per instance (OutputLimiter), recognises the
 * protocol's READY line and structured log lines.
 */
import type { Readable } from "node:stream";
import type { InstanceLogLine } from "./driver";
import { CODE_CACHE_STATES, GENERIC_READY_LINE, LOG_PREFIX, READY_LINE, type CodeCacheState } from "../shared/protocol";

/** Longest line kept, in bytes (UTF-16 code units, close enough); longer lines are cut with a marker. */
export const MAX_LINE_CHARS = 16 * 1024;
const TRUNCATED = " …[truncated]";

/**
 * Calls `onLine` with every complete line of `stream` (and the unterminated tail at its end).
 * A line longer than `maxChars` is delivered once, truncated with a marker; the rest of it is dropped
 * without buffering (a function printing without newlines cannot grow the platform's memory).
 */
export function splitLines(stream: Readable, onLine: (line: string) => void, maxChars = MAX_LINE_CHARS): void {
  let buf = "";
  let dropping = false;
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf("\n", start);
      const piece = chunk.slice(start, nl === -1 ? undefined : nl);
      if (!dropping) {
        buf += piece;
        if (buf.length > maxChars) {
          onLine(buf.slice(0, maxChars) + TRUNCATED);
          buf = "";
          dropping = true;
        }
      }
      if (nl === -1) return;
      if (!dropping) onLine(buf);
      buf = "";
      dropping = false;
      start = nl + 1;
    }
  });
  stream.on("end", () => {
    if (buf !== "" && !dropping) onLine(buf);
    buf = "";
  });
}

/** Output rate of one instance (platform config `observe.instanceOutput*PerSecond`). */
export interface OutputRateLimits {
  /** Bytes per second (UTF-16 code units of the decoded text, close enough), stdout and stderr together. */
  readonly bytesPerSecond: number;
  /** Lines per second, stdout and stderr together. */
  readonly linesPerSecond: number;
}

/** Defaults (equal to the platform config's; a unit test keeps them equal). */
export const OUTPUT_RATE_DEFAULTS: OutputRateLimits = Object.freeze({ bytesPerSecond: 1_048_576, linesPerSecond: 1000 });

/** The bucket holds this many seconds of budget: a short burst (a stack trace, a startup banner) passes whole. */
const BURST_S = 2;
/**
 * How long reading stays paused once the bucket is empty, ms: 10 % of a second's budget comes back
 * meanwhile. The pause is the backpressure: the instance's pipe fills and its writes block.
 */
const PAUSE_MS = 100;
/**
 * Protocol lines (READY, generic READY) that pass even through an empty bucket — only this many per
 * instance, so a function printing fake READY lines cannot use them to bypass the limit.
 */
const MAX_EXEMPT_LINES = 4;

/** Text of the marker line for output dropped by the per-instance limit. */
export function outputDroppedMessage(lines: number, bytes: number, limits: OutputRateLimits): string {
  return `[output-dropped] ${lines} line${lines === 1 ? "" : "s"} (${bytes} bytes) of this instance's output dropped: over its output limit (${limits.linesPerSecond} lines/s, ${limits.bytesPerSecond} bytes/s)`;
}

/**
 * The per-instance output budget, shared by an instance's stdout and stderr: a token bucket of lines
 * and one of bytes, each holding BURST_S seconds of its rate. While both have tokens, lines pass.
 * When one runs out, the rest of the chunk being read is dropped (counted, not split into strings)
 * and every source stream is **paused** for PAUSE_MS: the platform stops reading, the pipe (or the
 * engine's attach stream) fills, and the function's own writes block — a flooding function slows
 * itself, not the platform's event loop. After the pause one marker line reports what was dropped.
 *
 * So the platform does at most (budget + one chunk per pause) of work per second per instance, however
 * fast the function writes. Invariants: every line read is either delivered once or counted in exactly
 * one marker; at most one pause timer; nothing runs after close().
 */
export class OutputLimiter {
  private lineTokens: number;
  private byteTokens: number;
  private at: number;
  private droppedLines = 0;
  private droppedBytes = 0;
  private exempt = MAX_EXEMPT_LINES;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly sources: Readable[] = [];

  /**
   * @param onDropped called with the counts of dropped lines after each pause (and at close) — write the marker
   * @param options.sources the streams to pause (default: every stream given to `read`). The Docker driver
   *   pauses the attach stream, not the demultiplexed copies, which are written without backpressure.
   */
  constructor(
    readonly limits: OutputRateLimits,
    private readonly onDropped: (lines: number, bytes: number) => void,
    options: { sources?: readonly Readable[]; now?: () => number } = {},
  ) {
    this.now = options.now ?? (() => performance.now());
    this.lineTokens = limits.linesPerSecond * BURST_S;
    this.byteTokens = limits.bytesPerSecond * BURST_S;
    this.at = this.now();
    this.ownSources = options.sources === undefined;
    if (options.sources !== undefined) this.sources.push(...options.sources);
  }

  private readonly now: () => number;
  /** True when the streams given to `read` are the ones to pause. */
  private readonly ownSources: boolean;

  /**
   * Like splitLines, within the budget: calls `onLine` for each complete line that fits it. A line
   * longer than `maxChars` is cut with a marker as in splitLines.
   */
  read(stream: Readable, onLine: (line: string) => void, maxChars = MAX_LINE_CHARS): void {
    if (this.ownSources) this.sources.push(stream);
    let buf = "";
    let cut = false; // the current line was over maxChars: its rest is skipped
    let dropping = false; // the current line is being dropped by the limiter
    stream.setEncoding("utf8");
    const deliver = (line: string): void => {
      if (this.take(line.length + 1)) onLine(line);
      else if (this.exempt > 0 && (line.startsWith(READY_LINE) || line === GENERIC_READY_LINE)) {
        this.exempt--;
        onLine(line);
      } else this.count(line.length + 1);
    };
    stream.on("data", (chunk: string) => {
      if (this.closed) return;
      this.refill();
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf("\n", start);
        if (this.empty() && buf === "" && !cut) {
          // Out of budget: count what is left without building strings; keep a protocol line at a line start.
          if (this.exempt > 0 && (chunk.startsWith(READY_LINE, start) || chunk.startsWith(GENERIC_READY_LINE, start)) && nl !== -1) {
            deliver(chunk.slice(start, nl));
            start = nl + 1;
            continue;
          }
          if (nl === -1) {
            if (start < chunk.length) {
              this.droppedBytes += chunk.length - start;
              dropping = true;
            }
            break;
          }
          this.droppedBytes += nl + 1 - start;
          if (!dropping) this.droppedLines++;
          dropping = false;
          start = nl + 1;
          continue;
        }
        if (dropping) {
          // The tail of a line already being dropped.
          if (nl === -1) {
            this.droppedBytes += chunk.length - start;
            break;
          }
          this.droppedBytes += nl + 1 - start;
          this.droppedLines++;
          dropping = false;
          start = nl + 1;
          continue;
        }
        const piece = chunk.slice(start, nl === -1 ? undefined : nl);
        if (!cut) {
          buf += piece;
          if (buf.length > maxChars) {
            deliver(buf.slice(0, maxChars) + TRUNCATED);
            buf = "";
            cut = true;
          }
        } else this.take(piece.length); // the skipped rest of an over-long line still costs bytes
        if (nl === -1) break;
        if (!cut) deliver(buf);
        buf = "";
        cut = false;
        start = nl + 1;
      }
      if (this.empty()) this.pause();
    });
    stream.on("end", () => {
      if (buf !== "" && !cut && !this.closed) deliver(buf);
      buf = "";
      if (dropping) {
        this.droppedLines++;
        dropping = false;
      }
      this.report();
    });
  }

  /**
   * Stops limiting: resumes every source and drops whatever still arrives without reading it into
   * lines, so the streams end promptly (the Docker driver learns of an exit from its attach stream's
   * end). Reports what was dropped. Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.report();
    for (const s of this.sources) s.resume();
  }

  private empty(): boolean {
    return this.lineTokens < 1 || this.byteTokens <= 0;
  }

  private take(bytes: number): boolean {
    if (this.lineTokens < 1 || this.byteTokens < bytes) {
      // A line bigger than the whole bucket passes once the bucket is full, so it is never stuck.
      const max = this.limits.bytesPerSecond * BURST_S;
      if (!(this.lineTokens >= 1 && bytes > max && this.byteTokens >= max)) return false;
    }
    this.lineTokens -= 1;
    this.byteTokens -= bytes;
    return true;
  }

  private count(bytes: number): void {
    this.droppedLines++;
    this.droppedBytes += bytes;
  }

  private refill(): void {
    const t = this.now();
    const dt = (t - this.at) / 1000;
    this.at = t;
    this.lineTokens = Math.min(this.limits.linesPerSecond * BURST_S, this.lineTokens + dt * this.limits.linesPerSecond);
    this.byteTokens = Math.min(this.limits.bytesPerSecond * BURST_S, this.byteTokens + dt * this.limits.bytesPerSecond);
  }

  private pause(): void {
    if (this.timer !== null || this.closed) return;
    for (const s of this.sources) s.pause();
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.closed) return;
      this.report();
      for (const s of this.sources) s.resume();
    }, PAUSE_MS);
    this.timer.unref();
  }

  private report(): void {
    if (this.droppedLines === 0 && this.droppedBytes === 0) return;
    const lines = this.droppedLines;
    const bytes = this.droppedBytes;
    this.droppedLines = 0;
    this.droppedBytes = 0;
    this.onDropped(lines, bytes);
  }
}

/** The marker line for output the limiter dropped (`dropped` set: the observer counts it in metrics). */
export function outputDroppedLine(instanceId: string, lines: number, bytes: number, limits: OutputRateLimits): InstanceLogLine {
  return { ts: Date.now(), stream: "stderr", level: "warn", message: outputDroppedMessage(lines, bytes, limits), instanceId, dropped: { lines, bytes } };
}

/** What one output line means to the platform. */
/**
 * `initMs`: how long the runtime took to load the module, `codeCache`: whether it was compiled from a code
 * cache — each when it said so on the READY line.
 */
export type ParsedLine = { kind: "ready"; initMs: number | null; codeCache: CodeCacheState | null } | { kind: "log"; line: InstanceLogLine };

/**
 * Classifies one line: the READY line, a structured `LOG_PREFIX` JSON line (tagged with its request id),
 * or raw output (level "info" on stdout, "error" on stderr). A malformed structured line is kept raw.
 */
export function parseOutputLine(raw: string, stream: "stdout" | "stderr", instanceId: string): ParsedLine {
  if (stream === "stdout" && raw.startsWith(READY_LINE)) {
    if (raw.length === READY_LINE.length) return { kind: "ready", initMs: null, codeCache: null };
    if (raw.charCodeAt(READY_LINE.length) === 32 /* space */) {
      try {
        const { initMs: v, codeCache: c } = JSON.parse(raw.slice(READY_LINE.length + 1)) as { initMs?: unknown; codeCache?: unknown };
        return {
          kind: "ready",
          initMs: typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : null,
          codeCache: CODE_CACHE_STATES.includes(c as CodeCacheState) ? (c as CodeCacheState) : null,
        };
      } catch {
        return { kind: "ready", initMs: null, codeCache: null };
      }
    }
  }
  if (raw.startsWith(LOG_PREFIX)) {
    try {
      const j = JSON.parse(raw.slice(LOG_PREFIX.length)) as { ts?: unknown; level?: unknown; rid?: unknown; msg?: unknown };
      if (typeof j.msg === "string") {
        const line: InstanceLogLine = {
          ts: typeof j.ts === "number" ? j.ts : Date.now(),
          stream,
          level: typeof j.level === "string" ? j.level : "log",
          message: j.msg,
          instanceId,
          ...(typeof j.rid === "string" ? { requestId: j.rid } : {}),
        };
        return { kind: "log", line };
      }
    } catch {
      // fall through: kept as raw output
    }
  }
  return { kind: "log", line: { ts: Date.now(), stream, level: stream === "stderr" ? "error" : "info", message: raw, instanceId } };
}
