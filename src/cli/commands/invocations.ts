/**
 * `stratus invocations <fn> [--status 5xx] [--cold] [--slow 500] [--since 1h] [--limit N] [--request id]
 * [--trigger id] [--event id]`: invocation records; TRIGGER, EVENT and ATTEMPT are set on the platform's
 * async and event dispatches ("-" otherwise).
 */
import type { Command } from "commander";
import { apiAction, formatTime, output, table, withCommonOptions, type CommonOptions } from "../command-kit";

interface InvocationsOptions extends CommonOptions {
  status?: string;
  cold?: boolean;
  slow?: string;
  since?: string;
  limit?: string;
  request?: string;
  trigger?: string;
  event?: string;
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
    .option("--trigger <id>", "only this trigger's events (an id from `stratus triggers ls`)")
    .option("--event <id>", "only this CloudEvents id (every attempt of one event)")
    .action(apiAction<[string], InvocationsOptions>(async (client, opts, name) => {
      const query: Record<string, string> = {};
      if (opts.status) query.status = opts.status;
      if (opts.cold) query.cold = "1";
      if (opts.slow) query.slowerThanMs = opts.slow;
      if (opts.since) query.since = opts.since;
      if (opts.limit) query.limit = opts.limit;
      if (opts.request) query.request = opts.request;
      if (opts.trigger) query.trigger = opts.trigger;
      if (opts.event) query.event = opts.event;
      const rs = await client.listInvocations(name, query);
      output(opts, { invocations: rs }, () =>
        table(["TIME", "REQUEST", "STATUS", "ERROR", "COLD", "QUEUE", "START", "HANDLER", "TOTAL", "MEM", "INSTANCE", "ATTEMPT", "TRIGGER", "EVENT"], rs.map((r) => [
          formatTime(r.ts), r.requestId, String(r.status), r.errorCode ?? "-", r.coldStart ? "cold" : "warm", `${r.queueMs.toFixed(1)}ms`,
          `${r.startMs.toFixed(1)}ms`, `${r.handlerMs.toFixed(1)}ms`, `${r.totalMs.toFixed(1)}ms`,
          r.peakMemoryBytes === null ? "-" : `${Math.ceil(r.peakMemoryBytes / 1048576)}MB`, (r.instanceId ?? "-").slice(0, 8),
          r.attempt === null || r.attempt === undefined ? "-" : String(r.attempt), r.trigger ?? "-", r.eventId ?? "-",
        ])));
    }));
}
