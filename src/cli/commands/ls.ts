/** `stratus ls`: lists functions with their active version and URL. */
import type { Command } from "commander";
import { apiAction, formatTime, output, table, withCommonOptions, type CommonOptions } from "../command-kit";

/** Registers the `ls` command. */
export function registerLsCommand(program: Command): void {
  withCommonOptions(program.command("ls").description("list functions"))
    .action(apiAction<[], CommonOptions>(async (client, opts) => {
      const fns = await client.listFunctions();
      output(opts, { functions: fns }, () =>
        fns.length === 0 ? "No functions yet: `stratus deploy` a project." : table(["NAME", "VERSION", "ACTIVATED", "URL"], fns.map((f) => [f.name, f.activeVersion ?? "-", formatTime(f.activatedAt), f.url])));
    }));
}
