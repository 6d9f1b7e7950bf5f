/**
 * Captures the function's output: `console.*` calls and JS writes to process.stdout/stderr become
 * structured LOG_PREFIX lines `{ts, level, rid, msg}` on the real stdout, tagged with the request id of
 * the AsyncLocalStorage context they ran in. One console call is one entry (a stack trace stays whole);
 * raw writes are split into lines. Each entry is capped at LOG_LINE_MAX_BYTES and visibly truncated.
 *
 * Output of native code and child processes bypasses JS and stays untagged (the protocol allows that).
 */
import { formatWithOptions } from "node:util";
import { LOG_PREFIX } from "../shared/protocol";

/** Largest message of one log entry, in bytes (UTF-8). Longer messages are cut and marked. */
export const LOG_LINE_MAX_BYTES = 16 * 1024;

/** Levels of the protocol's structured lines. */
export type LogLevel = "log" | "info" | "warn" | "error" | "debug";

/** Writes one structured entry. `rid` undefined means outside any request. */
export type EmitLog = (level: LogLevel, msg: string, rid?: string) => void;

/** Cuts `msg` to LOG_LINE_MAX_BYTES, appending a marker that says how much was dropped. */
export function capMessage(msg: string): string {
  // Three UTF-8 bytes per UTF-16 unit at most: short strings skip the byte count.
  if (msg.length * 3 <= LOG_LINE_MAX_BYTES) return msg;
  const buf = Buffer.from(msg, "utf8");
  if (buf.length <= LOG_LINE_MAX_BYTES) return msg;
  return `${buf.subarray(0, LOG_LINE_MAX_BYTES).toString("utf8")}… [truncated ${buf.length - LOG_LINE_MAX_BYTES} bytes]`;
}

/**
 * Builds the emitter writing structured lines through `write` (the real stdout write, taken before
 * patching). Synchronous on Linux pipes and files, so nothing is lost on a quick exit.
 */
export function createEmitter(write: (line: string) => void): EmitLog {
  return (level, msg, rid) => {
    const entry = rid === undefined ? { ts: Date.now(), level, msg: capMessage(msg) } : { ts: Date.now(), level, rid, msg: capMessage(msg) };
    write(`${LOG_PREFIX}${JSON.stringify(entry)}\n`);
  };
}

/**
 * Patches `console` and process.stdout/stderr `write` for the rest of the process's life.
 * @param getRequestId current request id (from AsyncLocalStorage), or undefined.
 * @returns the emitter (for the runtime's own lines) and `flush()` for partial lines before exit.
 */
export function installOutputCapture(getRequestId: () => string | undefined): { emit: EmitLog; flush: () => void } {
  const realWrite = process.stdout.write.bind(process.stdout);
  const emit = createEmitter((line) => realWrite(line));
  const fmt = (args: unknown[]) => formatWithOptions({ colors: false }, ...args);

  const levels: Array<[keyof Console, LogLevel]> = [["log", "log"], ["info", "info"], ["warn", "warn"], ["error", "error"], ["debug", "debug"]];
  for (const [method, level] of levels) {
    (console as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => emit(level, fmt(args), getRequestId());
  }
  console.trace = (...args: unknown[]) => {
    const stack = new Error().stack?.split("\n").slice(2).join("\n") ?? "";
    emit("debug", `Trace: ${fmt(args)}\n${stack}`, getRequestId());
  };

  const pending: Record<"stdout" | "stderr", string> = { stdout: "", stderr: "" };
  const patch = (stream: NodeJS.WriteStream, name: "stdout" | "stderr", level: LogLevel) => {
    stream.write = ((chunk: unknown, encoding?: unknown, cb?: unknown) => {
      const text = typeof chunk === "string" ? chunk : Buffer.from(chunk as Uint8Array).toString(typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8");
      let buf = pending[name] + text;
      let nl = buf.indexOf("\n");
      while (nl !== -1) {
        emit(level, buf.slice(0, nl), getRequestId());
        buf = buf.slice(nl + 1);
        nl = buf.indexOf("\n");
      }
      // A writer that never ends its line must not grow memory without bound.
      if (buf.length > LOG_LINE_MAX_BYTES) {
        emit(level, buf, getRequestId());
        buf = "";
      }
      pending[name] = buf;
      const done = typeof encoding === "function" ? encoding : cb;
      if (typeof done === "function") process.nextTick(done as () => void);
      return true;
    }) as typeof stream.write;
  };
  patch(process.stdout, "stdout", "log");
  patch(process.stderr, "stderr", "error");

  const flush = () => {
    for (const name of ["stdout", "stderr"] as const) {
      if (pending[name] !== "") emit(name === "stdout" ? "log" : "error", pending[name], getRequestId());
      pending[name] = "";
    }
  };
  return { emit, flush };
}
