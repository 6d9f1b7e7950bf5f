/**
 * Readable one-paragraph description of an error thrown while loading a user module: its message and
 * the first stack frame that is not inside Node itself (with source maps on, the user's file:line).
 */
export function describeLoadError(err: unknown): string {
  if (!(err instanceof Error)) return `Non-error thrown: ${String(err)}`;
  const frames = (err.stack ?? "").split("\n").slice(1).map((l) => l.trim());
  const frame = frames.find((f) => f.startsWith("at ") && !f.includes("node:") && !f.includes("runtime.cjs"));
  const where = frame ? ` (${frame.replace(/^at\s+/, "").replace(/^.*\((.*)\)$/, "$1")})` : "";
  return `${err.name}: ${err.message}${where}`;
}
