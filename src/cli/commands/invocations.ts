/** `stratus invocations <fn> [--status 5xx] [--cold] [--slow 500] [--since 1h] [--limit N]`: invocation records. */
import type { Command } from "commander";
import { apiAction, formatTime, output, table, withCommonOptions, type CommonOptions } from "../command-kit";

interface InvocationsOptions extends CommonOptions {
  status?: string;
  cold?: boolean;
  slow?: string;
  since?: string;
  limit?: string;
  request?: string;
}

/** Registers the `invocations` command. */
export function registerInvocationsCommand(program: Command): void {
  withCommonOptions(program.command("invocations").description("list a function's invocation records, newest first").argument("<fn>", "function name"))
    .option("--status <status>", "a status class (5xx) or code (404)")
    .option("--cold", "cold starts only")
    .option("--slow <ms>", "only requests slower than this (total ms)")
    .option("--since <when>", "from this long ago (10m, 2h) or this time (ISO)")
    .option("--limit <n>", "newest N records (default 100)")
    .option("--request <id>", "one request id (an async attempt's is <invocation id>-<attempt>)")
    .action(apiAction<[string], InvocationsOptions>(async (client, opts, name) => {
      const query: Record<string, string> = {};
      if (opts.status) query.status = opts.status;
      if (opts.cold) query.cold = "1";
      if (opts.slow) query.slowerThanMs = opts.slow;
      if (opts.since) query.since = opts.since;
      if (opts.limit) query.limit = opts.limit;
      if (opts.request) query.request = opts.request;
      const rs = await client.listInvocations(name, query);
      output(opts, { invocations: rs }, () =>
        table(["TIME", "REQUEST", "STATUS", "ERROR", "COLD", "QUEUE", "START", "HANDLER", "TOTAL", "MEM", "INSTANCE"], rs.map((r) => [
          formatTime(r.ts), r.requestId, String(r.status), r.errorCode ?? "-", r.coldStart ? "cold" : "warm", `${r.queueMs.toFixed(1)}ms`,
          `${r.startMs.toFixed(1)}ms`, `${r.handlerMs.toFixed(1)}ms`, `${r.totalMs.toFixed(1)}ms`,
          r.peakMemoryBytes === null ? "-" : `${Math.ceil(r.peakMemoryBytes / 1048576)}MB`, (r.instanceId ?? "-").slice(0, 8),
        ])));
    }));
}
