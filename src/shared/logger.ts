/**
 * The one place that builds Stratus loggers: pino, JSON to stdout for services.
 * Authorization headers, tokens and secrets are redacted wherever they appear in a log object.
 */
import pino, { type Logger, type DestinationStream } from "pino";

export type { Logger };

/** Paths redacted from every log line. */
export const REDACT_PATHS = [
  "req.headers.authorization",
  "req.headers.cookie",
  "headers.authorization",
  "headers.cookie",
  "authorization",
  "token",
  "*.token",
  "secret",
  "*.secret",
  "secrets",
  "*.secrets",
  "password",
  "*.password",
];

/**
 * Creates the root logger. `level` defaults to "info"; pass a destination in tests to capture lines.
 */
export function createLogger(options: { level?: string; name?: string } = {}, destination?: DestinationStream): Logger {
  return pino(
    {
      level: options.level ?? "info",
      name: options.name ?? "stratus",
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}

/** A logger that drops everything (for tests and embedded use). */
export function createSilentLogger(): Logger {
  return pino({ level: "silent" });
}
