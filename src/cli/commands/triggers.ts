/**
 * `stratus triggers ls <fn>`: the active version's triggers, every kind — schedule and rate ones with their
 * last and next slot, queue ones with where they consume from and their source's state (docs/events.md). A
 * kind this CLI does not know is shown by its JSON; credentials are redacted (by the API, and again here).
 */
import type { Command } from "commander";
import { redactTrigger } from "../../shared/trigger-view";
import type { TriggerSummary } from "../api-client";
import { apiAction, formatTime, output, table, withCommonOptions, type CommonOptions } from "../command-kit";

/** Event-source triggers have no slots. */
const sourceLike = (t: TriggerSummary): boolean => t.kind === "queue" || t.kind === "storage" || t.kind === "postgres";

/** The WHEN column: the expression of schedule and rate triggers, where a source consumes from, the (redacted) JSON of any other kind. */
export function whenOf(t: TriggerSummary): string {
  if (t.kind === "rate") return `every ${t.rate ?? ""}`;
  if (t.kind === "schedule") return `${t.schedule ?? ""} (${t.timezone ?? "UTC"})`;
  if (t.kind === "queue" && t.from !== undefined) return t.from;
  if (t.kind === "storage" && t.bucket !== undefined) return `bucket ${t.bucket} → ${t.url ?? ""}`;
  if (t.kind === "postgres" && t.table !== undefined) return `table ${t.table} (slot ${t.slot ?? ""})`;
  const { id: _id, kind: _kind, lastSlot: _l, nextSlot: _n, config, ...rest } = t;
  return JSON.stringify(redactTrigger(config ?? rest));
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
  withCommonOptions(triggers.command("ls").description("list triggers: kind, expression, queue or config, catchUp, last and next slot or consumer state").argument("<fn>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const ts = (await client.listTriggers(name)).map((t) => ({ ...t, ...(t.config !== undefined ? { config: redactTrigger(t.config) } : {}) }));
      output(opts, { triggers: ts }, () => ts.length === 0 ? "(no triggers)" : table(["ID", "KIND", "WHEN", "CATCH UP", "LAST SLOT", "NEXT SLOT"], ts.map((t) => [
        t.id, t.kind === "queue" ? `queue (${t.type ?? ""})` : t.kind, whenOf(t), sourceLike(t) ? "-" : t.catchUp ?? "-", sourceLike(t) ? "-" : formatTime(t.lastSlot ?? null),
        t.kind === "queue" || t.kind === "postgres" ? queueState(t) : t.kind === "storage" ? "-" : formatTime(t.nextSlot ?? null),
      ])));
    }));
}
