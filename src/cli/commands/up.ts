/**
 * `stratus up [--port N] [--data-dir DIR] [--driver process|docker] [--host H] [--config FILE]`:
 * runs the whole platform on this machine (see src/up/platform.ts). This file only parses flags.
 * Prints `Stratus is up at <url>` on stdout; on the first start of a data dir also the admin token
 * (once) and saves the CLI profile so `stratus` works here without flags. SIGTERM/SIGINT drain and exit 0.
 */
import type { Command } from "commander";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { StratusError } from "../../shared/errors";
import { reportError } from "../command-kit";
import { loadProfile, saveProfile } from "../profile";

interface UpOptions {
  port?: string;
  host?: string;
  dataDir?: string;
  driver?: string;
  store?: string;
  config?: string;
  logLevel?: string;
  runtime?: string;
  json?: boolean;
}

export async function readConfigFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (cause) {
    throw new StratusError("INVALID_ARGUMENT", `Cannot read the config file ${path}: ${(cause as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new StratusError("INVALID_ARGUMENT", `The config file ${path} is not valid JSON`);
  }
}

/** Registers the `up` command. */
export function registerUpCommand(program: Command): void {
  program
    .command("up")
    .description("run the platform on this machine (API, gateway, store) — no external service needed")
    .option("-p, --port <port>", "port of the API and the functions (0 picks a free one; default 8080)")
    .option("--host <host>", "address to listen on (default 127.0.0.1)")
    .option("--data-dir <dir>", "store, artifacts and keys (default ~/.stratus/data)")
    .option("--driver <driver>", "sandbox driver: process | docker (default process)")
    .option("--store <location>", "postgres://… (PostgreSQL) or a SQLite file (default <data dir>/stratus.db)")
    .option("--config <file>", "JSON config file (flags > STRATUS_* env > file > defaults)")
    .option("--log-level <level>", "trace | debug | info | warn | error | fatal | silent")
    .option("--runtime <path>", "path of runtime.cjs (default: beside the CLI bundle)")
    .option("--json", "print the start-up line as JSON: { url, dataDir, adminToken }")
    .action(async (opts: UpOptions) => {
      try {
        // Loaded here, not at the top: other commands must not pay for the whole platform at start-up.
        const [{ resolvePlatformConfig }, { createLogger }, { createPlatform }] = await Promise.all([
          import("../../shared/platform-config"), import("../../shared/logger"), import("../../up/platform"),
        ]);
        const file = opts.config ? await readConfigFile(opts.config) : undefined;
        const config = resolvePlatformConfig({
          flags: {
            port: opts.port,
            host: opts.host,
            dataDir: opts.dataDir === undefined ? undefined : resolve(opts.dataDir),
            driver: opts.driver,
            store: opts.store,
            logLevel: opts.logLevel,
          },
          env: process.env,
          file,
          homeDir: homedir(),
        });
        const logger = createLogger({ level: config.logLevel });
        const runtimePath = opts.runtime ?? fileURLToPath(new URL("./runtime.cjs", import.meta.url));
        const platform = createPlatform(config, { logger, runtimePath });
        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) return;
          stopping = true;
          logger.info({ signal }, "shutting down");
          platform.close().then(
            () => process.exit(0),
            (err) => {
              logger.error({ err }, "shutdown failed");
              process.exit(1);
            },
          );
        };
        process.once("SIGINT", () => stop("SIGINT"));
        process.once("SIGTERM", () => stop("SIGTERM"));
        let started;
        try {
          started = await platform.listen();
        } catch (err) {
          await platform.close().catch(() => {});
          throw err;
        }
        const lines = [`Stratus is up at ${started.url}`, `  data dir: ${config.dataDir}`];
        const profile = await loadProfile(process.env);
        if (started.adminToken !== null) {
          const saved = await saveProfile(process.env, { url: started.url, token: started.adminToken, dataDir: config.dataDir });
          lines.push(`  admin token (shown once): ${started.adminToken}`, `  saved to ${saved}; try: stratus deploy examples/hello`);
        } else if (profile.dataDir === config.dataDir && profile.url !== started.url) {
          // Same platform on another port: keep the profile pointing at it.
          await saveProfile(process.env, { ...profile, url: started.url });
        }
        if (opts.json) process.stdout.write(JSON.stringify({ url: started.url, dataDir: config.dataDir, adminToken: started.adminToken }) + "\n");
        else process.stdout.write(lines.join("\n") + "\n");
      } catch (err) {
        reportError(err);
        process.exit(1);
      }
    });
}
