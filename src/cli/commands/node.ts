/**
 * `stratus node --control URL (--token T | --token-file F) [--listen ADDR:PORT] [--data-dir DIR]
 *  [--driver process|docker] [--node-id ID] [--advertise URL] [--resync-ms N]`: runs one node agent
 * (driver + gateway) that joins the control plane at URL through the node protocol. It serves
 * `/fn/<name>/…` and its side of the protocol (`/internal/v1/…`, control-plane key only) on ADDR:PORT,
 * keeps artifacts in its own data dir, and never opens a store. The token may also come from
 * `STRATUS_NODE_TOKEN` (an argv secret is visible to other local users in `ps`).
 * Prints `Stratus node <id> at <url>`; SIGTERM/SIGINT drain and exit 0.
 */
import type { Command } from "commander";
import { createHash } from "node:crypto";
import { homedir, hostname } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { StratusError } from "../../shared/errors";
import { reportError } from "../command-kit";
import { readConfigFile } from "./up";
import { readSecretFile } from "./control";

interface NodeOptions {
  control?: string;
  token?: string;
  tokenFile?: string;
  listen?: string;
  dataDir?: string;
  driver?: string;
  nodeId?: string;
  advertise?: string;
  resyncMs?: string;
  config?: string;
  logLevel?: string;
  runtime?: string;
  json?: boolean;
}

/** Parses `ADDR:PORT` (`[v6]:PORT` too). @throws StratusError INVALID_ARGUMENT */
export function parseListen(v: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new StratusError("INVALID_ARGUMENT", `--listen wants ADDR:PORT, got ${JSON.stringify(v)}`);
  return { host: (m[1] ?? m[2])!, port };
}

/** Registers the `node` command. */
export function registerNodeCommand(program: Command): void {
  program
    .command("node")
    .description("run a node agent (driver + gateway) that joins a control plane")
    .requiredOption("--control <url>", "the control plane's URL (http(s)://host:port)")
    .option("--token <secret>", "the node link secret (prefer --token-file or STRATUS_NODE_TOKEN)")
    .option("--token-file <file>", "file holding the node link secret")
    .option("--listen <addr:port>", "where to serve functions and the node protocol (default 127.0.0.1:8081)")
    .option("--data-dir <dir>", "the node's own data: artifact cache, sandbox state (default ~/.stratus/node)")
    .option("--driver <driver>", "sandbox driver: process | docker (default process)")
    .option("--node-id <id>", "stable id of this node (default <hostname>-<hash of data dir>)")
    .option("--advertise <url>", "URL the control plane uses to reach this node (default http://<listen>)")
    .option("--resync-ms <ms>", "period of the desired-state resync (default 10000)")
    .option("--config <file>", "JSON config file (flags > STRATUS_* env > file > defaults)")
    .option("--log-level <level>", "trace | debug | info | warn | error | fatal | silent")
    .option("--runtime <path>", "path of runtime.cjs (default: beside the CLI bundle)")
    .option("--json", "print the start-up line as JSON: { nodeId, url }")
    .action(async (opts: NodeOptions) => {
      try {
        const [{ resolvePlatformConfig }, { createLogger }, { createNodeAgent }, { createNodeDriver, nodeGatewaySettings }] = await Promise.all([
          import("../../shared/platform-config"), import("../../shared/logger"), import("../../node/node-agent"), import("../../node/driver-factory"),
        ]);
        const secret = opts.tokenFile ? await readSecretFile(opts.tokenFile) : opts.token ?? process.env.STRATUS_NODE_TOKEN ?? "";
        if (secret === "") throw new StratusError("INVALID_ARGUMENT", "The node link secret is required: --token-file, --token or STRATUS_NODE_TOKEN");
        if (!/^https?:\/\//.test(opts.control ?? "")) throw new StratusError("INVALID_ARGUMENT", "--control wants an http(s):// URL");
        const listen = parseListen(opts.listen ?? "127.0.0.1:8081");
        const resyncMs = opts.resyncMs === undefined ? undefined : Number(opts.resyncMs);
        if (resyncMs !== undefined && !(Number.isInteger(resyncMs) && resyncMs >= 100 && resyncMs <= 3_600_000)) {
          throw new StratusError("INVALID_ARGUMENT", "--resync-ms wants an integer from 100 to 3600000");
        }
        const file = opts.config ? await readConfigFile(opts.config) : undefined;
        const dataDir = resolve(opts.dataDir ?? join(homedir(), ".stratus", "node"));
        const config = resolvePlatformConfig({
          flags: { port: listen.port, host: listen.host, dataDir, driver: opts.driver, logLevel: opts.logLevel },
          env: process.env, file, homeDir: homedir(),
        });
        const logger = createLogger({ level: config.logLevel });
        const nodeSuffix = createHash("sha256").update(dataDir).digest("hex").slice(0, 8);
        const nodeId = opts.nodeId ?? `${hostname()}-${nodeSuffix}`;
        const runtimePath = opts.runtime ?? fileURLToPath(new URL("./runtime.cjs", import.meta.url));
        const driver = await createNodeDriver(config, { dataDir, nodeId, nodeSuffix, runtimePath, logger });
        const agent = createNodeAgent({
          driver, logger,
          ...nodeGatewaySettings(config),
          control: {
            url: opts.control!, secret, nodeId, dataDir,
            ...(opts.advertise ? { advertiseUrl: opts.advertise } : {}),
            ...(resyncMs !== undefined ? { resyncIntervalMs: resyncMs } : {}),
            imagePruneIntervalMs: config.driver === "docker" ? config.docker.imagePruneIntervalMs : 0,
          },
        });
        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) return;
          stopping = true;
          logger.info({ signal }, "shutting down");
          agent.drain(config.gateway.drainTimeoutMs).then(() => process.exit(0), (err) => {
            logger.error({ err }, "shutdown failed");
            process.exit(1);
          });
        };
        process.once("SIGINT", () => stop("SIGINT"));
        process.once("SIGTERM", () => stop("SIGTERM"));
        const started = await agent.start(listen).catch(async (err) => {
          await agent.close().catch(() => {});
          throw err;
        });
        const host = started.host.includes(":") ? `[${started.host}]` : started.host;
        const url = `http://${host}:${started.port}`;
        if (opts.json) process.stdout.write(JSON.stringify({ nodeId, url, revision: agent.revision?.revision ?? null }) + "\n");
        else process.stdout.write(`Stratus node ${nodeId} at ${url} (control plane ${opts.control})\n`);
      } catch (err) {
        reportError(err);
        process.exit(1);
      }
    });
}
