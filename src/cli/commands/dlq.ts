/**
 * `stratus dlq ls <fn> | show <fn> <id> | replay <fn> <id…> | purge <fn>`: a function's dead-letter
 * queue (async and event invocations that ran out of attempts or age; docs/events.md).
 */
import type { Command } from "commander";
import type { AsyncInvocation } from "../api-client";
import { apiAction, formatTime, output, table, withCommonOptions, type CommonOptions } from "../command-kit";

/** The human view of an invocation with its attempts (shared with `stratus invocation`). */
export function showInvocation(j: AsyncInvocation): string {
  const lines = [
    `invocation: ${j.invocationId}`,
    `function:   ${j.function}`,
    `status:     ${j.status}${j.replayedAs ? ` (replayed as ${j.replayedAs})` : ""}`,
    `origin:     ${j.origin.kind}${j.origin.trigger ? ` ${j.origin.trigger}` : ""}${j.origin.eventId ? ` event ${j.origin.eventId}` : ""}`,
    `attempts:   ${j.attempts} of ${j.maxAttempts}${j.nextAttemptAt ? `, next at ${formatTime(j.nextAttemptAt)}` : ""}`,
    `created:    ${formatTime(j.createdAt)}`,
    ...(j.error ? [`error:      ${j.error.code}: ${j.error.message}`] : []),
  ];
  if (j.request) {
    lines.push("request:", `  ${j.request.method} ${j.request.path}`);
    for (const [k, v] of Object.entries(j.request.headers)) lines.push(`  ${k}: ${v}`);
    lines.push(`  body (${j.request.bodyEncoding}): ${j.request.body.slice(0, 2000)}`);
  }
  if (j.history.length > 0) {
    lines.push("attempts:", table(["#", "ENDED", "STATUS", "ERROR", "REQUEST ID (stratus logs <fn> --request …)"], j.history.map((a) => [
      String(a.attempt), formatTime(a.endedAt), a.status === null ? "-" : String(a.status), a.errorCode ? `${a.errorCode}${a.errorMessage ? `: ${a.errorMessage.slice(0, 80)}` : ""}` : "-", a.requestId,
    ])).split("\n").map((l) => `  ${l}`).join("\n"));
  }
  if (j.result) lines.push(`result:     ${j.result.status}${j.result.truncated ? " (body truncated)" : ""}`, j.result.body);
  return lines.join("\n");
}

/** Registers the `dlq` command group. */
export function registerDlqCommand(program: Command): void {
  const dlq = program.command("dlq").description("a function's dead-letter queue: list, show, replay, purge");
  withCommonOptions(dlq.command("ls").description("list dead-lettered invocations, newest first").argument("<fn>").option("--limit <n>", "at most this many (default 100)"))
    .action(apiAction<[string], CommonOptions & { limit?: string }>(async (client, opts, name) => {
      const entries = await client.listDeadLetters(name, opts.limit === undefined ? undefined : Number(opts.limit));
      output(opts, { entries }, () => entries.length === 0 ? "(the dead-letter queue is empty)" : table(["INVOCATION", "DIED", "ATTEMPTS", "ORIGIN", "REQUEST", "ERROR"], entries.map((e) => [
        e.invocationId, formatTime(e.finishedAt), String(e.attempts), e.origin.kind, `${e.method} ${e.path}`, e.error ? `${e.error.code}: ${e.error.message.slice(0, 60)}` : "-",
      ])));
    }));
  withCommonOptions(dlq.command("show").description("show one entry: the request and every attempt's status, error and request id").argument("<fn>").argument("<id>"))
    .action(apiAction<[string, string], CommonOptions>(async (client, opts, name, id) => {
      const j = await client.getDeadLetter(name, id);
      output(opts, j, () => showInvocation(j));
    }));
  withCommonOptions(dlq.command("replay").description("enqueue entries again as new invocations (or --all)").argument("<fn>").argument("[ids...]").option("--all", "replay every entry"))
    .action(apiAction<[string, string[]], CommonOptions & { all?: boolean }>(async (client, opts, name, ids) => {
      const targets = opts.all === true ? (await client.listDeadLetters(name, 1000)).map((e) => e.invocationId) : ids;
      const replayed: Array<{ invocationId: string; replayOf: string; statusUrl: string }> = [];
      for (const id of targets) replayed.push(await client.replayDeadLetter(name, id));
      output(opts, { replayed }, () => replayed.length === 0 ? "(nothing to replay)" : replayed.map((r) => `${r.replayOf} → ${r.invocationId}  ${r.statusUrl}`).join("\n"));
    }));
  withCommonOptions(dlq.command("purge").description("delete every entry").argument("<fn>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const purged = await client.purgeDeadLetters(name);
      output(opts, { purged }, () => `purged ${purged} dead-lettered invocation${purged === 1 ? "" : "s"}`);
    }));
}
