/**
 * Settings of the observability pipeline (src/observe/observer.ts), as field schemas the observer
 * validates with and the platform schema is composed from (section `observe`).
 */
import { z } from "zod";
import { int, pickShape, setting } from "./setting";

export const OBSERVE_SETTINGS_SHAPE = {
  maxLineBytes: setting(int(256, 1024 * 1024).default(8192), { unit: "bytes", doc: "Longest stored log line; longer lines are cut with `… [truncated N bytes]`." }),
  maxLinesPerInvocation: setting(int(1, 10_000_000).default(2000), { unit: "lines", doc: "Log lines kept per invocation; the rest are dropped with one `[… N lines truncated]` marker." }),
  flushIntervalMs: setting(int(10, 60_000).default(250), { unit: "ms", doc: "Longest time a log line or record waits before its batch is written (one transaction)." }),
  flushMaxEntries: setting(int(1, 1_000_000).default(1000), { unit: "entries", doc: "A batch is written as soon as this many lines and records wait." }),
  bufferMaxEntries: setting(int(100, 100_000_000).default(100_000), { unit: "entries", doc: "Most entries waiting for the store; beyond it lines are dropped and counted (`stratus_log_lines_dropped_total`)." }),
  retentionMs: setting(int(60_000, 3650 * 86_400_000).default(604_800_000), { unit: "ms", doc: "Logs, invocation records and error groups older than this are purged (7 days)." }),
  maxLogRows: setting(int(1000, 1_000_000_000).default(5_000_000), { unit: "rows", doc: "Most log lines kept (all functions); the oldest go first." }),
  maxInvocationRows: setting(int(1000, 1_000_000_000).default(1_000_000), { unit: "rows", doc: "Most invocation records kept (all functions)." }),
  purgeIntervalMs: setting(int(1000, 86_400_000).default(60_000), { unit: "ms", doc: "Period of the retention purge." }),
};

/**
 * The per-instance output budget (platform `observe.instanceOutput*`): applied by both drivers while they
 * read an instance's stdout/stderr (src/sandbox/output-lines.ts, OutputLimiter), before the observer.
 */
export const INSTANCE_OUTPUT_SHAPE = {
  instanceOutputBytesPerSecond: setting(int(1024, 1024 * 1024 * 1024).default(1_048_576), {
    unit: "bytes/s",
    doc: "Output (stdout + stderr) one instance may write, token bucket holding 2 s of it. Past it the platform stops reading (the instance's writes block) and drops what was already read, with one `[output-dropped]` marker line per pause and `stratus_log_lines_dropped_total{reason=\"instance_rate\"}`.",
  }),
  instanceOutputLinesPerSecond: setting(int(1, 10_000_000).default(1000), { unit: "lines/s", doc: "Output lines one instance may write (same bucket rules as the bytes)." }),
};

/** The observer's settings: defaults and ranges. */
export const ObserveSettingsSchema = z.strictObject(OBSERVE_SETTINGS_SHAPE);

/** Resolved settings of the pipeline (see OBSERVE_SETTINGS_SHAPE for units and defaults). */
export type ObserveSettings = z.output<typeof ObserveSettingsSchema>;

/** The defaults (also the platform config's `observe.*` defaults: the same schema). */
export const OBSERVE_DEFAULTS: Readonly<ObserveSettings> = Object.freeze(ObserveSettingsSchema.parse({}));

/** The observer's settings out of a platform `observe` section (which holds more). */
export function observeSettingsOf(section: ObserveSettings): ObserveSettings {
  return pickShape(OBSERVE_SETTINGS_SHAPE, section) as ObserveSettings;
}
