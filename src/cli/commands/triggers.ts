/**
 * `stratus triggers ls <fn>`: the active version's triggers, every kind, with the last and next slot of
 * schedule and rate triggers (docs/events.md). A kind this CLI does not know is shown by its JSON;
 * credentials are redacted (by the API, and again here).
 */
import type { Command } from "commander";
import { redactTrigger } from "../../shared/trigger-view";
import type { TriggerSummary } from "../api-client";
import { apiAction, formatTime, output, table, withCommonOptions, type CommonOptions } from "../command-kit";

/** The WHEN column: the expression of schedule and rate triggers, the (redacted) JSON of any other kind. */
export function whenOf(t: TriggerSummary): string {
  if (t.kind === "rate") return `every ${t.rate ?? ""}`;
  if (t.kind === "schedule") return `${t.schedule ?? ""} (${t.timezone ?? "UTC"})`;
  const { id: _id, kind: _kind, lastSlot: _l, nextSlot: _n, config, ...rest } = t;
  return JSON.stringify(redactTrigger(config ?? rest));
}

/** Registers the `triggers` command group. */
export function registerTriggersCommand(program: Command): void {
  const triggers = program.command("triggers").description("a function's event triggers");
  withCommonOptions(triggers.command("ls").description("list triggers: kind, expression or config, catchUp, last and next slot").argument("<fn>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const ts = (await client.listTriggers(name)).map((t) => ({ ...t, ...(t.config !== undefined ? { config: redactTrigger(t.config) } : {}) }));
      output(opts, { triggers: ts }, () => ts.length === 0 ? "(no triggers)" : table(["ID", "KIND", "WHEN", "CATCH UP", "LAST SLOT", "NEXT SLOT"], ts.map((t) => [
        t.id, t.kind, whenOf(t), t.catchUp ?? "-", formatTime(t.lastSlot), formatTime(t.nextSlot),
      ])));
    }));
}
