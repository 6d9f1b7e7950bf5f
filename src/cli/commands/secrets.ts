/**
 * `stratus secrets set <fn> K=V… | unset <fn> K… | ls <fn>`: secrets, encrypted at rest. Values are
 * never printed back (the API returns names only). `K=@file` reads the value from a file, so it stays
 * out of the shell history.
 */
import type { Command } from "commander";
import { readFile } from "node:fs/promises";
import { apiAction, output, withCommonOptions, type CommonOptions } from "../command-kit";
import { parseAssignments } from "./env";

function show(secrets: { name: string }[]): string {
  return secrets.length === 0 ? "(no secrets)" : secrets.map((s) => `${s.name}=********`).join("\n");
}

/** Registers the `secrets` command group. */
export function registerSecretsCommand(program: Command): void {
  const secrets = program.command("secrets").description("manage a function's secrets (values are never shown)");
  withCommonOptions(secrets.command("set").description("set secrets (NAME=value or NAME=@file)").argument("<fn>").argument("<pairs...>", "NAME=value"))
    .action(apiAction<[string, string[]], CommonOptions>(async (client, opts, name, pairs) => {
      const set = parseAssignments(pairs);
      for (const [k, v] of Object.entries(set)) if (v.startsWith("@")) set[k] = (await readFile(v.slice(1), "utf8")).replace(/\r?\n$/, "");
      const r = await client.patchSecrets(name, { set });
      output(opts, { secrets: r }, () => show(r));
    }));
  withCommonOptions(secrets.command("unset").description("remove secrets").argument("<fn>").argument("<names...>", "NAME"))
    .action(apiAction<[string, string[]], CommonOptions>(async (client, opts, name, names) => {
      const r = await client.patchSecrets(name, { unset: names });
      output(opts, { secrets: r }, () => show(r));
    }));
  withCommonOptions(secrets.command("ls").description("list secret names").argument("<fn>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const r = await client.listSecrets(name);
      output(opts, { secrets: r }, () => show(r));
    }));
}
