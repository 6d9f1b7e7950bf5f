/**
 * `stratus lb sync --socket <path> --nodes id=addr:port[:state],… [--state-file <path>]`: puts a node
 * list onto HAProxy's node slots through its runtime socket, without a restart (src/lb/haproxy-runtime.ts
 * `syncMembership`, which the control plane drives from its node table). Slots not listed go to maint.
 */
import type { Command } from "commander";
import { createHaproxyRuntime, parseNodeList, syncMembership } from "../../lb/haproxy-runtime";
import { HAPROXY_NAMES } from "../../lb/haproxy-config";
import { output, reportError, table } from "../command-kit";

interface Options {
  socket: string;
  nodes: string;
  stateFile?: string;
  backend?: string;
  json?: boolean;
}

/** Registers `lb sync` under the `lb` command group. */
export function registerLbSyncCommand(lb: Command): void {
  lb.command("sync")
    .description("set HAProxy's node slots to a node list through the runtime socket (no restart)")
    .requiredOption("--socket <path>", "HAProxy admin stats socket")
    .requiredOption("--nodes <list>", "id=addr:port[:ready|drain|maint],… (id = stable node id = slot)")
    .option("--state-file <path>", "save `show servers state` here afterwards (the config's server-state-file)")
    .option("--backend <name>", `backend of the node slots (default ${HAPROXY_NAMES.nodesBackend})`)
    .option("--json", "machine-readable JSON output")
    .action(async (opts: Options) => {
      try {
        const runtime = createHaproxyRuntime({ socket: opts.socket });
        const backend = opts.backend ?? HAPROXY_NAMES.nodesBackend;
        const changes = await syncMembership(runtime, parseNodeList(opts.nodes), { backend, ...(opts.stateFile === undefined ? {} : { stateFile: opts.stateFile }) });
        const slots = (await runtime.serversState(backend)).filter((s) => s.admin !== "maint");
        output(opts, { changes, slots }, () =>
          `${changes.length === 0 ? "no change" : changes.map((c) => `${c.server}: ${c.action}${c.detail === "" ? "" : ` (${c.detail})`}`).join("\n")}\n` +
          table(["id", "server", "address", "admin"], slots.map((s) => [String(s.id), s.name, `${s.addr}:${s.port}`, s.admin])));
      } catch (err) {
        reportError(err);
      }
    });
}
