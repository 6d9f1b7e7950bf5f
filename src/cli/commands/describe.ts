/** `stratus describe <fn>`: active version, config, URL and instance counts. */
import type { Command } from "commander";
import { apiAction, formatTime, output, withCommonOptions, type CommonOptions } from "../command-kit";

/** The `triggers:` section (schedule, rate and queue triggers; `stratus triggers ls` adds their slots and state). */
function triggerLines(triggers: unknown[]): string[] {
  if (triggers.length === 0) return [];
  return ["triggers:", ...triggers.map((t) => {
    const x = t as { schedule?: string; timezone?: string; rate?: string; catchUp?: string; queue?: { type?: string; stream?: string; subject?: string; queue?: string }; storage?: { bucket?: string }; postgres?: { table?: string } };
    if (x.queue !== undefined) return `  - queue ${x.queue.type ?? ""} ${x.queue.queue ?? x.queue.stream ?? ""}${x.queue.subject !== undefined ? ` (${x.queue.subject})` : ""}`;
    if (x.storage !== undefined) return `  - storage (s3) bucket ${x.storage.bucket ?? ""}`;
    if (x.postgres !== undefined) return `  - postgres table ${x.postgres.table ?? ""}`;
    return `  - ${x.rate !== undefined ? `rate ${x.rate}` : `schedule "${x.schedule ?? ""}" (${x.timezone ?? "UTC"})`}, catchUp ${x.catchUp ?? "latest"}`;
  })];
}

/** Registers the `describe` command. */
export function registerDescribeCommand(program: Command): void {
  withCommonOptions(program.command("describe").description("show a function: version, config, URL, instances").argument("<fn>", "function name"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const f = await client.getFunction(name);
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
