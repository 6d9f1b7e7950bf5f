/** `stratus rollback <fn> [--to <version>]`: back to the previous (or a given) version. */
import type { Command } from "commander";
import { apiAction, output, withCommonOptions, type CommonOptions } from "../command-kit";

/** Registers the `rollback` command. */
export function registerRollbackCommand(program: Command): void {
  withCommonOptions(program.command("rollback").description("switch a function back to its previous version (or --to one)").argument("<fn>", "function name"))
    .option("--to <version>", "version to switch to (default: the one before the active one)")
    .action(apiAction<[string], CommonOptions & { to?: string }>(async (client, opts, name) => {
      const r = await client.rollback(name, opts.to);
      output(opts, r, () => `${r.name}: ${r.previous ?? "-"} → ${r.version}\n${r.url}`);
    }));
}
