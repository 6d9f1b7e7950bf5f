/** `stratus versions <fn>`: a function's versions, newest first, the active one marked. */
import type { Command } from "commander";
import { apiAction, formatTime, output, table, withCommonOptions, type CommonOptions } from "../command-kit";

/** Registers the `versions` command. */
export function registerVersionsCommand(program: Command): void {
  withCommonOptions(program.command("versions").description("list a function's versions").argument("<fn>", "function name"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const vs = await client.listVersions(name);
      output(opts, { versions: vs }, () =>
        table(["", "VERSION", "CREATED", "STATUS", "DIGEST"], vs.map((v) => [v.active ? "*" : "", v.version, formatTime(v.createdAt), v.status, v.digest.slice(0, 23)])));
    }));
}
