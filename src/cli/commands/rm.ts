/** `stratus rm <fn>`: stops serving a function and deletes it (versions, env, secrets). */
import type { Command } from "commander";
import { apiAction, output, withCommonOptions, type CommonOptions } from "../command-kit";

/** Registers the `rm` command. */
export function registerRmCommand(program: Command): void {
  withCommonOptions(program.command("rm").description("delete a function").argument("<fn>", "function name"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const r = await client.deleteFunction(name);
      output(opts, r, () => `Deleted ${r.deleted}.`);
    }));
}
