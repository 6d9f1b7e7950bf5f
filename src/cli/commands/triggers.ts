/** `stratus triggers ls <fn>`: the active version's triggers with their last and next slot (docs/events.md). */
import type { Command } from "commander";
import { apiAction, formatTime, output, table, withCommonOptions, type CommonOptions } from "../command-kit";

/** Registers the `triggers` command group. */
export function registerTriggersCommand(program: Command): void {
  const triggers = program.command("triggers").description("a function's event triggers");
  withCommonOptions(triggers.command("ls").description("list triggers: kind, expression, catchUp, last and next slot").argument("<fn>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const ts = await client.listTriggers(name);
      output(opts, { triggers: ts }, () => ts.length === 0 ? "(no triggers)" : table(["ID", "KIND", "WHEN", "CATCH UP", "LAST SLOT", "NEXT SLOT"], ts.map((t) => [
        t.id, t.kind, t.kind === "rate" ? `every ${t.rate ?? ""}` : `${t.schedule ?? ""} (${t.timezone ?? "UTC"})`, t.catchUp, formatTime(t.lastSlot), formatTime(t.nextSlot),
      ])));
    }));
}
