/** `stratus token create [--name] | ls | revoke <id>`: API tokens (the secret is shown once, at creation). */
import type { Command } from "commander";
import { apiAction, formatTime, output, table, withCommonOptions, type CommonOptions } from "../command-kit";

/** Registers the `token` command group. */
export function registerTokenCommand(program: Command): void {
  const token = program.command("token").description("manage API tokens");
  withCommonOptions(token.command("create").description("create a token (printed once)"))
    .option("--name <name>", "a label for the token", "cli")
    .action(apiAction<[], CommonOptions & { name: string }>(async (client, opts) => {
      const t = await client.createToken(opts.name);
      output(opts, t, () => `Token ${t.id} (${t.name}) created. It is shown only now:\n${t.token}`);
    }));
  withCommonOptions(token.command("ls").description("list tokens"))
    .action(apiAction<[], CommonOptions>(async (client, opts) => {
      const ts = await client.listTokens();
      output(opts, { tokens: ts }, () => table(["ID", "NAME", "CREATED", "REVOKED"], ts.map((t) => [t.id, t.name, formatTime(t.createdAt), formatTime(t.revokedAt)])));
    }));
  withCommonOptions(token.command("revoke").description("revoke a token at once").argument("<id>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, id) => {
      const t = await client.revokeToken(id);
      output(opts, t, () => `Token ${t.id} revoked.`);
    }));
}
