/**
 * Error fingerprints: failures that are "the same bug" get the same fingerprint, so they fold into one
 * error group. The fingerprint covers the error code, the message's shape (the variable parts —
 * numbers, UUIDs, hex ids, quoted strings — replaced by placeholders) and, when the runtime logged a
 * stack, its top frame in the function's own code (file:line:column replaced by file:line, since
 * columns drift with minification but lines of one version do not).
 */
import { createHash } from "node:crypto";

/** Longest message shape kept, characters (messages with huge payloads stay cheap to hash and store). */
const MAX_SHAPE_CHARS = 300;

const UUID = /\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi;
const HEX = /\b(?:0x)?[0-9a-f]{6,}\b/gi;
const HAS_DIGIT = /[0-9]/;
const HAS_LETTER = /[a-f]/i;
const NUMBER = /\b\d+(?:\.\d+)?\b/g;
const QUOTED = /(["'`])(?:(?!\1)[^\\\n]|\\.){0,200}\1/g;

/**
 * The shape of an error message: UUIDs → `<uuid>`, hex ids with digits and letters (≥ 6 chars) →
 * `<hex>`, numbers → `<n>`, quoted strings → `<str>`, whitespace collapsed, cut at 300 chars.
 * Only the first line counts (later lines of a message are usually a stack or a dump).
 */
export function messageShape(message: string): string {
  const first = message.split("\n", 1)[0] ?? "";
  return first
    .replace(UUID, "<uuid>")
    .replace(QUOTED, "<str>")
    .replace(HEX, (m) => (HAS_DIGIT.test(m) && HAS_LETTER.test(m.startsWith("0x") ? m.slice(2) : m) ? "<hex>" : m))
    .replace(NUMBER, "<n>")
    .replace(/\s+/g, " ")
    .trim()
    .slice(0, MAX_SHAPE_CHARS);
}

/**
 * The first stack frame that is not Node's or the platform runtime's own code, as `fn (file:line)` or
 * `file:line`; null when `stack` has no such frame. Paths keep only their last two segments so the
 * same code in another artifact directory (another instance, another machine) matches.
 */
export function topStackFrame(stack: string): string | null {
  for (const raw of stack.split("\n")) {
    const line = raw.trim();
    if (!line.startsWith("at ")) continue;
    if (line.includes("node:internal") || line.includes("runtime.cjs") || line.includes("(node:") || line.includes("node_modules/express")) continue;
    const m = /^at (?:async )?(?:(.+?) \()?(.+?):(\d+)(?::\d+)?\)?$/.exec(line);
    if (m === null) continue;
    const file = m[2]!.split("/").slice(-2).join("/");
    return m[1] !== undefined ? `${m[1]} (${file}:${m[3]})` : `${file}:${m[3]}`;
  }
  return null;
}

/** Extracts the error message a runtime error line carries (`Function "x" threw: Error: boom\n  at …`). */
export function errorMessageOfStack(stack: string): string {
  const first = stack.split("\n", 1)[0] ?? "";
  const threw = first.indexOf(" threw: ");
  if (threw !== -1) return first.slice(threw + 8);
  return first.startsWith("Uncaught ") ? first.slice(9) : first;
}

/** The fingerprint: first 16 hex chars of sha256(function, code, shape, frame). */
export function fingerprint(functionName: string, code: string, shape: string, topFrame: string | null): string {
  return createHash("sha256").update(`${functionName}\n${code}\n${shape}\n${topFrame ?? ""}`).digest("hex").slice(0, 16);
}
