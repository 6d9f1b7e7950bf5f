/**
 * The `stratus` command line (bundled to dist/cli.js). One thin file per command under commands/.
 */
import { Command } from "commander";
import { registerDevCommand } from "./commands/dev";

const program = new Command();
program.name("stratus").description("Stratus: a self-hosted serverless platform").showHelpAfterError();
registerDevCommand(program);
await program.parseAsync(process.argv);
