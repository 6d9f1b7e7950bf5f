/** `stratus logs <fn> [-f] [--since 10m] [--request <id>] [--level error] [--limit N]`: a function's log stream. */
import type { Command } from "commander";
import type { LogEntry } from "../../shared/invocation";
import { apiAction, withCommonOptions, type CommonOptions } from "../command-kit";

interface LogsOptions extends CommonOptions {
  follow?: boolean;
  since?: string;
  request?: string;
  level?: string;
  limit?: string;
}

/** One line for humans: time, level, source/instance, request id, message. */
export function formatLogLine(l: LogEntry): string {
  const t = new Date(l.ts).toISOString().slice(11, 23);
  const who = l.source === "platform" ? "platform" : (l.instanceId ?? "-").slice(0, 8);
  return `${t} ${l.level.toUpperCase().padEnd(5)} ${who.padEnd(8)} ${(l.requestId ?? "-").slice(0, 36).padEnd(36)} ${l.message}`;
}

/** Registers the `logs` command. */
export function registerLogsCommand(program: Command): void {
  withCommonOptions(program.command("logs").description("show a function's logs (output, platform events, REPORT lines)").argument("<fn>", "function name"))
    .option("-f, --follow", "keep following new lines")
    .option("--since <when>", "from this long ago (10m, 2h) or this time (ISO)")
    .option("--request <id>", "only this request id")
    .option("--level <level>", "this level or above: debug, info, warn, error")
    .option("--limit <n>", "newest N lines (default 100)")
    .action(apiAction<[string], LogsOptions>(async (client, opts, name) => {
      const query: Record<string, string> = {};
      if (opts.since) query.since = opts.since;
      if (opts.request) query.request = opts.request;
      if (opts.level) query.level = opts.level;
      if (opts.limit) query.limit = opts.limit;
      const print = (l: LogEntry) => process.stdout.write((opts.json ? JSON.stringify(l) : formatLogLine(l)) + "\n");
      if (!opts.follow) {
        for (const l of await client.getLogs(name, query)) print(l);
        return;
      }
      const abort = new AbortController();
      process.once("SIGINT", () => abort.abort());
      await client.followLogs(name, query, print, abort.signal).catch((err: unknown) => {
        if (!abort.signal.aborted) throw err;
      });
    }));
}
