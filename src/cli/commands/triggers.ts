/**
 * `stratus triggers ls <fn>`: the active version's triggers — schedule and rate ones with their last and
 * next slot, queue ones with where they consume from and their source's state (docs/events.md).
 */
import type { Command } from "commander";
import type { TriggerSummary } from "../api-client";
import { apiAction, formatTime, output, table, withCommonOptions, type CommonOptions } from "../command-kit";

/** Event-source triggers have no slots. */
const sourceLike = (t: TriggerSummary): boolean => t.kind === "queue" || t.kind === "storage" || t.kind === "postgres";

/** What the WHEN column shows: the schedule, the rate, or where a queue trigger consumes from. */
function when(t: TriggerSummary): string {
  if (t.kind === "queue") return t.from ?? "";
  if (t.kind === "storage") return `bucket ${t.bucket ?? ""} → ${t.url ?? ""}`;
  if (t.kind === "postgres") return `table ${t.table ?? ""} (slot ${t.slot ?? ""})`;
  return t.kind === "rate" ? `every ${t.rate ?? ""}` : `${t.schedule ?? ""} (${t.timezone ?? "UTC"})`;
}

/** A queue trigger's state on the control plane that answered: connected, or why not. */
function queueState(t: TriggerSummary): string {
  if (t.problem) return `not running: ${t.problem}`;
  if (!t.status) return "starting";
  const s = t.status;
  return `${s.connected ? "connected" : `disconnected${s.lastError ? ` (${s.lastError})` : ""}`}, ${s.inFlight} in flight, acked ${s.settled.ack}, retried ${s.settled.retry}, dead ${s.settled.dead}`;
}

/** Registers the `triggers` command group. */
export function registerTriggersCommand(program: Command): void {
  const triggers = program.command("triggers").description("a function's event triggers");
  withCommonOptions(triggers.command("ls").description("list triggers: kind, expression or queue, catchUp, last and next slot or consumer state").argument("<fn>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const ts = await client.listTriggers(name);
      output(opts, { triggers: ts }, () => ts.length === 0 ? "(no triggers)" : table(["ID", "KIND", "WHEN", "CATCH UP", "LAST SLOT", "NEXT SLOT"], ts.map((t) => [
        t.id, t.kind === "queue" ? `queue (${t.type ?? ""})` : t.kind, when(t), sourceLike(t) ? "-" : t.catchUp ?? "", sourceLike(t) ? "-" : formatTime(t.lastSlot ?? null),
        t.kind === "queue" || t.kind === "postgres" ? queueState(t) : t.kind === "storage" ? "-" : formatTime(t.nextSlot ?? null),
      ])));
    }));
}
