/** `stratus describe <fn>`: active version, config, URL and instance counts. */
import type { Command } from "commander";
import { describeTrigger, redactConfigTriggers } from "../../shared/trigger-view";
import { apiAction, formatTime, output, withCommonOptions, type CommonOptions } from "../command-kit";

/** The `triggers:` section, every kind (credentials redacted); `stratus triggers ls` adds slots and source state. */
export function triggerLines(triggers: unknown[]): string[] {
  if (triggers.length === 0) return [];
  return ["triggers:", ...triggers.map((t) => `  - ${describeTrigger(t)}`)];
}

/** Registers the `describe` command. */
export function registerDescribeCommand(program: Command): void {
  withCommonOptions(program.command("describe").description("show a function: version, config, URL, instances").argument("<fn>", "function name"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const raw = await client.getFunction(name);
      const f = { ...raw, config: redactConfigTriggers(raw.config) };
      output(opts, f, () => {
        const i = f.instances;
        const lines = [
          `name:       ${f.name}`,
          `url:        ${f.url}`,
          `version:    ${f.activeVersion ?? "-"}${f.version ? ` (export ${f.version.exportName}, ${f.version.digest.slice(0, 19)}…)` : ""}`,
          ...(f.version?.image ? [`image:      ${f.version.image}`] : []),
          `activated:  ${formatTime(f.activatedAt)}`,
          `instances:  ${i.instances} (busy ${i.busy}, idle ${i.idle}, starting ${i.starting}, queued ${i.queued})`,
          "config:",
          ...Object.entries(f.config ?? {}).filter(([k]) => k !== "triggers").map(([k, v]) => `  ${k}: ${JSON.stringify(v)}`),
          ...triggerLines((f.config as { triggers?: unknown[] } | null)?.triggers ?? []),
        ];
        return lines.join("\n");
      });
    }));
}
