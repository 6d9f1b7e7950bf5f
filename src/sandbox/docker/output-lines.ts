/**
 * Turns an instance's stdout/stderr byte streams into log lines: splits on newlines, caps each line,
 * recognises the runtime's READY line and its structured log lines (src/shared/protocol.ts).
 */
import type { Readable } from "node:stream";
import { LOG_PREFIX, READY_LINE } from "../../shared/protocol";
import type { InstanceLogLine } from "../driver";

/** Longest line kept (bytes of UTF-16 text, roughly); the rest of a longer line is dropped. */
export const MAX_LINE_CHARS = 16 * 1024;

/** Parses one complete line. Returns "ready" for the READY line. */
export function parseOutputLine(line: string, stream: "stdout" | "stderr", instanceId: string): InstanceLogLine | "ready" {
  if (stream === "stdout" && line === READY_LINE) return "ready";
  if (line.startsWith(LOG_PREFIX)) {
    try {
      const j = JSON.parse(line.slice(LOG_PREFIX.length)) as { ts?: unknown; level?: unknown; rid?: unknown; msg?: unknown };
      const out: InstanceLogLine = {
        ts: typeof j.ts === "number" ? j.ts : Date.now(),
        stream,
        level: typeof j.level === "string" ? j.level : "log",
        message: typeof j.msg === "string" ? j.msg : String(j.msg),
        instanceId,
        ...(typeof j.rid === "string" ? { requestId: j.rid } : {}),
      };
      return out;
    } catch {
      // A malformed structured line is still output: keep it raw below.
    }
  }
  return { ts: Date.now(), stream, level: stream === "stderr" ? "error" : "log", message: line, instanceId };
}

/** Calls `onLine` for each line of `readable`, the last unterminated one included at the end. */
export function readLines(readable: Readable, onLine: (line: string) => void): void {
  let buffer = "";
  let dropping = false;
  readable.setEncoding("utf8");
  readable.on("data", (chunk: string) => {
    let start = 0;
    let nl: number;
    while ((nl = chunk.indexOf("\n", start)) >= 0) {
      const piece = chunk.slice(start, nl);
      if (!dropping) onLine((buffer + piece).slice(0, MAX_LINE_CHARS));
      buffer = "";
      dropping = false;
      start = nl + 1;
    }
    if (!dropping) {
      buffer += chunk.slice(start);
      if (buffer.length > MAX_LINE_CHARS) {
        onLine(buffer.slice(0, MAX_LINE_CHARS));
        buffer = "";
        dropping = true;
      }
    }
  });
  readable.on("end", () => {
    if (buffer !== "" && !dropping) onLine(buffer);
    buffer = "";
  });
}
