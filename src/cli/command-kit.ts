/**
 * What every API-speaking CLI command shares: the `--url`, `--token` and `--json` options, resolving
 * the connection (flag > env > profile), and error reporting: `CODE: message` on stderr, exit 1.
 */
import type { Command } from "commander";
import { isStratusError } from "../shared/errors";
import { ApiClient } from "./api-client";
import { resolveConnection } from "./profile";

/** Options every API command takes. */
export interface CommonOptions {
  url?: string;
  token?: string;
  json?: boolean;
}

/** Adds `--url`, `--token` and `--json` to a command. */
export function withCommonOptions(cmd: Command): Command {
  return cmd
    .option("--url <url>", "platform URL (default: $STRATUS_URL, then the saved profile)")
    .option("--token <token>", "API token (default: $STRATUS_TOKEN, then the saved profile)")
    .option("--json", "machine-readable JSON output");
}

/** Prints an error as `CODE: message` on stderr and sets a failing exit code. */
export function reportError(err: unknown): void {
  if (isStratusError(err)) {
    process.stderr.write(`${err.code}: ${err.message}\n`);
    const details = err.details;
    if (Array.isArray(details)) {
      for (const d of details) process.stderr.write(`  - ${typeof d === "string" ? d : d && typeof d === "object" && "path" in d ? `${(d as { path: string }).path}: ${(d as { message: string }).message}` : JSON.stringify(d)}\n`);
    }
  } else {
    process.stderr.write(`INTERNAL: ${err instanceof Error ? err.message : String(err)}\n`);
  }
  process.exitCode = 1;
}

/**
 * Wraps a command action: builds the API client from the options and reports errors.
 * The action receives the client and the command's options.
 */
export function apiAction<A extends unknown[], O extends CommonOptions>(
  action: (client: ApiClient, opts: O, ...args: A) => Promise<void>,
): (...args: unknown[]) => Promise<void> {
  return async (...args: unknown[]) => {
    // commander passes the positional args, then the options object, then the command.
    const cmd = args[args.length - 1] as Command;
    const opts = cmd.opts() as O;
    const positional = args.slice(0, args.length - 2) as A;
    try {
      const client = new ApiClient(await resolveConnection(opts, process.env));
      await action(client, opts, ...positional);
    } catch (err) {
      reportError(err);
    }
  };
}

/** Prints `value` as JSON when `--json`, else the human text. */
export function output(opts: CommonOptions, value: unknown, human: () => string): void {
  process.stdout.write(opts.json ? JSON.stringify(value, null, 2) + "\n" : human() + (human().endsWith("\n") ? "" : "\n"));
}

/** A simple aligned text table. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

/** `2024-01-02 03:04:05` in local time, for epoch ms. */
export function formatTime(ms: number | null): string {
  if (ms === null) return "-";
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
