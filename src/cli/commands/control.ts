/**
 * `stratus control [--port N] [--host H] [--data-dir DIR] [--token-file F] [--config FILE]`: runs only the
 * control plane (store, API, builder, observability) on one HTTP listener; node agents (`stratus node`)
 * connect to it under `/internal/v1` with the node link secret. The secret is read from `--token-file`,
 * or `STRATUS_NODE_TOKEN`, or `<dataDir>/node.token` (created on first use, 0600). Prints
 * `Stratus control plane at <url>`, the admin token once, and where the node secret is.
 * SIGTERM/SIGINT flush telemetry and exit 0.
 */
import type { Command } from "commander";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { StratusError } from "../../shared/errors";
import { reportError } from "../command-kit";
import { readConfigFile } from "./up";

interface ControlOptions {
  port?: string;
  host?: string;
  dataDir?: string;
  config?: string;
  logLevel?: string;
  tokenFile?: string;
  store?: string;
  haproxySocket?: string;
  haproxyStateFile?: string;
  json?: boolean;
}

/** Reads a secret file (trimmed). @throws StratusError INVALID_ARGUMENT */
export async function readSecretFile(path: string): Promise<string> {
  try {
    return (await readFile(path, "utf8")).trim();
  } catch (cause) {
    throw new StratusError("INVALID_ARGUMENT", `Cannot read ${path}: ${(cause as Error).message}`);
  }
}

/** Registers the `control` command. */
export function registerControlCommand(program: Command): void {
  program
    .command("control")
    .description("run only the control plane (API, store, builder); nodes join with `stratus node`")
    .option("-p, --port <port>", "port of the API and the node protocol (default 8080)")
    .option("--host <host>", "address to listen on (default 127.0.0.1)")
    .option("--data-dir <dir>", "store, artifacts and keys (default ~/.stratus/data)")
    .option("--store <location>", "postgres://… (several control planes may share one; they need the same master.key) or a SQLite file (default <data-dir>/stratus.db)")
    .option("--haproxy-socket <path>", "HAProxy's admin stats socket: keep its node slots in step with the node table (lb.haproxySocket)")
    .option("--haproxy-state-file <file>", "HAProxy's server-state-file, written after every membership change (lb.haproxyStateFile)")
    .option("--token-file <file>", "file holding the node link secret (default: $STRATUS_NODE_TOKEN or <data-dir>/node.token)")
    .option("--config <file>", "JSON config file (flags > STRATUS_* env > file > defaults)")
    .option("--log-level <level>", "trace | debug | info | warn | error | fatal | silent")
    .option("--json", "print the start-up line as JSON: { url, dataDir, adminToken, nodeTokenFile }")
    .action(async (opts: ControlOptions) => {
      try {
        const [{ resolvePlatformConfig }, { createLogger }, { createControlPlane }, { loadOrCreateNodeToken }] = await Promise.all([
          import("../../shared/platform-config"), import("../../shared/logger"), import("../../control/control-plane"), import("../../control/node-token"),
        ]);
        const file = opts.config ? await readConfigFile(opts.config) : undefined;
        const config = resolvePlatformConfig({
          flags: { port: opts.port, host: opts.host, store: opts.store, dataDir: opts.dataDir === undefined ? undefined : resolve(opts.dataDir), logLevel: opts.logLevel,
            "lb.haproxySocket": opts.haproxySocket, "lb.haproxyStateFile": opts.haproxyStateFile },
          env: process.env, file, homeDir: homedir(),
        });
        const logger = createLogger({ level: config.logLevel });
        let secret: string;
        let nodeTokenFile: string | null = null;
        if (opts.tokenFile) secret = await readSecretFile(opts.tokenFile);
        else if (process.env.STRATUS_NODE_TOKEN) secret = process.env.STRATUS_NODE_TOKEN;
        else {
          secret = await loadOrCreateNodeToken(config.dataDir);
          nodeTokenFile = join(config.dataDir, "node.token");
        }
        const control = createControlPlane(config, { logger, nodeSecret: secret, listen: true });
        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) return;
          stopping = true;
          logger.info({ signal }, "shutting down");
          control.close().then(() => process.exit(0), (err) => {
            logger.error({ err }, "shutdown failed");
            process.exit(1);
          });
        };
        process.once("SIGINT", () => stop("SIGINT"));
        process.once("SIGTERM", () => stop("SIGTERM"));
        const started = await control.start().catch(async (err) => {
          await control.close().catch(() => {});
          throw err;
        });
        if (opts.json) process.stdout.write(JSON.stringify({ url: started.url, dataDir: config.dataDir, adminToken: started.adminToken, nodeTokenFile }) + "\n");
        else {
          const lines = [`Stratus control plane at ${started.url}`, `  data dir: ${config.dataDir}`];
          if (started.adminToken !== null) lines.push(`  admin token (shown once): ${started.adminToken}`);
          if (nodeTokenFile !== null) lines.push(`  node secret: ${nodeTokenFile} (start nodes with: stratus node --control ${started.url} --token-file ${nodeTokenFile})`);
          process.stdout.write(lines.join("\n") + "\n");
        }
      } catch (err) {
        reportError(err);
        process.exit(1);
      }
    });
}
