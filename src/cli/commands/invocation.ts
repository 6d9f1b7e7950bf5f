/** `stratus invocation <id> [--request]`: one async or event invocation: status, attempts, result (docs/events.md). */
import type { Command } from "commander";
import { apiAction, output, withCommonOptions, type CommonOptions } from "../command-kit";
import { showInvocation } from "./dlq";

/** Registers the `invocation` command. */
export function registerInvocationCommand(program: Command): void {
  withCommonOptions(program.command("invocation").description("show an async invocation: status, every attempt, result or error").argument("<id>", "invocation id (from `stratus invoke --async`)"))
    .option("--request", "include the stored request")
    .action(apiAction<[string], CommonOptions & { request?: boolean }>(async (client, opts, id) => {
      const j = await client.getAsyncInvocation(id, opts.request === true);
      output(opts, j, () => showInvocation(j));
    }));
}
