/**
 * Turns an instance's stdout/stderr byte streams into InstanceLogLine records, shared by every driver:
 * splits on "\n", caps each line, recognises the protocol's READY line and structured log lines.
 */
import type { Readable } from "node:stream";
import type { InstanceLogLine } from "./driver";
import { LOG_PREFIX, READY_LINE } from "../shared/protocol";

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

/** What one output line means to the platform. */
/** `initMs`: how long the runtime took to load the module, when it said so on the READY line. */
export type ParsedLine = { kind: "ready"; initMs: number | null } | { kind: "log"; line: InstanceLogLine };

/**
 * Classifies one line: the READY line, a structured `LOG_PREFIX` JSON line (tagged with its request id),
 * or raw output (level "info" on stdout, "error" on stderr). A malformed structured line is kept raw.
 */
export function parseOutputLine(raw: string, stream: "stdout" | "stderr", instanceId: string): ParsedLine {
  if (stream === "stdout" && raw.startsWith(READY_LINE)) {
    if (raw.length === READY_LINE.length) return { kind: "ready", initMs: null };
    if (raw.charCodeAt(READY_LINE.length) === 32 /* space */) {
      try {
        const v = (JSON.parse(raw.slice(READY_LINE.length + 1)) as { initMs?: unknown }).initMs;
        return { kind: "ready", initMs: typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : null };
      } catch {
        return { kind: "ready", initMs: null };
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
