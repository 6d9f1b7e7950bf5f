/**
 * The `stratus` command line (bundled to dist/cli.js). One thin file per command under commands/;
 * they speak to the platform only through the public API (src/cli/api-client.ts).
 */
import { Command } from "commander";
import { registerDevCommand } from "./commands/dev";
import { registerUpCommand } from "./commands/up";
import { registerControlCommand } from "./commands/control";
import { registerNodeCommand, registerNodesCommand } from "./commands/node";
import { registerDeployCommand } from "./commands/deploy";
import { registerLsCommand } from "./commands/ls";
import { registerDescribeCommand } from "./commands/describe";
import { registerRmCommand } from "./commands/rm";
import { registerVersionsCommand } from "./commands/versions";
import { registerRollbackCommand } from "./commands/rollback";
import { registerEnvCommand } from "./commands/env";
import { registerSecretsCommand } from "./commands/secrets";
import { registerTokenCommand } from "./commands/token";
import { registerInvokeCommand } from "./commands/invoke";
import { registerInitCommand } from "./commands/init";
import { registerLogsCommand } from "./commands/logs";
import { registerInvocationsCommand } from "./commands/invocations";
import { registerErrorsCommand } from "./commands/errors";
import { registerLbHaproxyCommand } from "./commands/lb-haproxy";
import { registerLbSyncCommand } from "./commands/lb-sync";
import { registerDlqCommand } from "./commands/dlq";
import { registerTriggersCommand } from "./commands/triggers";
import { registerInvocationCommand } from "./commands/invocation";

const program = new Command();
// Positional options: `stratus node token create --token T` gives --token to `create`, not to `node`.
program.name("stratus").description("Stratus: a self-hosted serverless platform").showHelpAfterError().enablePositionalOptions();
registerUpCommand(program);
registerControlCommand(program);
registerNodeCommand(program);
registerNodesCommand(program);
registerInitCommand(program);
registerDevCommand(program);
registerDeployCommand(program);
registerLsCommand(program);
registerDescribeCommand(program);
registerInvokeCommand(program);
registerVersionsCommand(program);
registerRollbackCommand(program);
registerEnvCommand(program);
registerSecretsCommand(program);
registerTokenCommand(program);
registerLogsCommand(program);
registerInvocationsCommand(program);
registerErrorsCommand(program);
registerInvocationCommand(program);
registerDlqCommand(program);
registerTriggersCommand(program);
registerRmCommand(program);
const lb = program.command("lb").description("the cluster's load balancer (HAProxy 2.6): configuration and membership");
registerLbHaproxyCommand(lb);
registerLbSyncCommand(lb);
await program.parseAsync(process.argv);
