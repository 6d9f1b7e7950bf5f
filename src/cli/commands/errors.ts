/** `stratus errors <fn>`: a function's error groups (failures folded by fingerprint). */
import type { Command } from "commander";
import { apiAction, formatTime, output, table, withCommonOptions, type CommonOptions } from "../command-kit";

/** Registers the `errors` command. */
export function registerErrorsCommand(program: Command): void {
  withCommonOptions(program.command("errors").description("list a function's error groups, most recent first").argument("<fn>", "function name"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const gs = await client.listErrorGroups(name);
      output(opts, { groups: gs }, () =>
        table(["COUNT", "LAST SEEN", "FIRST SEEN", "CODE", "MESSAGE", "WHERE", "SAMPLE REQUEST"], gs.map((g) => [
          String(g.count), formatTime(g.lastSeen), formatTime(g.firstSeen), g.code, g.messageShape.slice(0, 60) || "-", g.topFrame ?? "-", g.sampleRequestId,
        ])));
    }));
}
