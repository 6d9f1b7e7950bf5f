/** `stratus triggers ls <fn>`: the active version's triggers with their last and next slot (docs/events.md). */
import type { Command } from "commander";
import { apiAction, formatTime, output, table, withCommonOptions, type CommonOptions } from "../command-kit";
import type { TriggerSummary } from "../api-client";

/** The WHEN column: the schedule, or what an event-source trigger listens to. */
function whenOf(t: TriggerSummary): string {
  if (t.kind === "rate") return `every ${t.rate ?? ""}`;
  if (t.kind === "storage") return `bucket ${t.bucket ?? ""} → ${t.url ?? ""}`;
  if (t.kind === "postgres") return `table ${t.table ?? ""} (slot ${t.slot ?? ""})`;
  return `${t.schedule ?? ""} (${t.timezone ?? "UTC"})`;
}

/** Registers the `triggers` command group. */
export function registerTriggersCommand(program: Command): void {
  const triggers = program.command("triggers").description("a function's event triggers");
  withCommonOptions(triggers.command("ls").description("list triggers: kind, expression, catchUp, last and next slot").argument("<fn>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const ts = await client.listTriggers(name);
      output(opts, { triggers: ts }, () => ts.length === 0 ? "(no triggers)" : table(["ID", "KIND", "WHEN", "CATCH UP", "LAST SLOT", "NEXT SLOT"], ts.map((t) => [
        t.id, t.kind, whenOf(t), t.catchUp ?? "-", formatTime(t.lastSlot ?? null), formatTime(t.nextSlot ?? null),
      ])));
    }));
}
