/** `stratus env set <fn> K=V… | unset <fn> K… | ls <fn>`: plain environment variables (instances roll, no rebuild). */
import type { Command } from "commander";
import { StratusError } from "../../shared/errors";
import { apiAction, output, withCommonOptions, type CommonOptions } from "../command-kit";

/**
 * Parses `K=V` pairs (the value may contain `=`).
 * @throws StratusError INVALID_ARGUMENT for an argument without `=`.
 */
export function parseAssignments(pairs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const i = p.indexOf("=");
    if (i <= 0) throw new StratusError("INVALID_ARGUMENT", `Expected NAME=value, got ${JSON.stringify(p.slice(0, 40))}`);
    out[p.slice(0, i)] = p.slice(i + 1);
  }
  return out;
}

function show(env: Record<string, string>): string {
  const keys = Object.keys(env).sort();
  return keys.length === 0 ? "(no variables)" : keys.map((k) => `${k}=${env[k]}`).join("\n");
}

/** Registers the `env` command group. */
export function registerEnvCommand(program: Command): void {
  const env = program.command("env").description("manage a function's environment variables");
  withCommonOptions(env.command("set").description("set variables").argument("<fn>").argument("<pairs...>", "NAME=value"))
    .action(apiAction<[string, string[]], CommonOptions>(async (client, opts, name, pairs) => {
      const r = await client.patchEnv(name, { set: parseAssignments(pairs) });
      output(opts, { env: r }, () => show(r));
    }));
  withCommonOptions(env.command("unset").description("remove variables").argument("<fn>").argument("<names...>", "NAME"))
    .action(apiAction<[string, string[]], CommonOptions>(async (client, opts, name, names) => {
      const r = await client.patchEnv(name, { unset: names });
      output(opts, { env: r }, () => show(r));
    }));
  withCommonOptions(env.command("ls").description("list variables").argument("<fn>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, name) => {
      const r = await client.getEnv(name);
      output(opts, { env: r }, () => show(r));
    }));
}
