/**
 * `stratus node --control URL (--join-token T | --token T | --token-file F) [--listen ADDR:PORT] [--data-dir DIR]
 *  [--driver process|docker] [--node-id ID] [--advertise URL] [--resync-ms N] [--ca-file PEM]`: runs one
 * node agent (driver + gateway) that joins the control plane at URL through the node protocol. It serves
 * `/fn/<name>/…`, `/readyz` (404 while drained), `/healthz` and its side of the protocol (`/internal/v1/…`,
 * control-plane key only) on ADDR:PORT, keeps artifacts in its own data dir, and never opens a store.
 *
 * With `--join-token` (or `STRATUS_JOIN_TOKEN`) the node registers once and keeps the credential it is
 * issued in `<data-dir>/node-credential.json` (0600); later starts use that file (the join token may
 * have expired by then). `--token`/`--token-file`/`STRATUS_NODE_TOKEN` is the shared link secret instead
 * (no per-node credential). An argv secret is visible to other local users in `ps`: prefer the env.
 * Prints `Stratus node <id> at <url>`; SIGTERM/SIGINT drain and exit 0; a node the control plane
 * refuses for good (removed, wrong credential) drops what it held and exits 1.
 *
 * Admin subcommands (API): `stratus node token create [--ttl 24h] [--name N] | ls | revoke <id>`,
 * `stratus node drain <id>`, `stratus node undrain <id>`, `stratus node rm <id>`; `stratus nodes` lists.
 */
import type { Command } from "commander";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { homedir, hostname } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { StratusError } from "../../shared/errors";
import { readFile } from "node:fs/promises";
import { apiAction, formatTime, output, reportError, table, withCommonOptions, type CommonOptions } from "../command-kit";
import type { NodeSummary } from "../api-client";
import { readConfigFile } from "./up";
import { readSecretFile } from "./control";

interface NodeOptions {
  control?: string;
  token?: string;
  tokenFile?: string;
  joinToken?: string;
  caFile?: string;
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

/** `90s`, `30m`, `24h`, `7d` or plain seconds → seconds. @throws StratusError INVALID_ARGUMENT */
export function parseTtl(v: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(v.trim());
  const n = m ? Number(m[1]) * ({ "": 1, s: 1, m: 60, h: 3600, d: 86_400 } as Record<string, number>)[m[2]!]! : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 365 * 86_400) throw new StratusError("INVALID_ARGUMENT", `--ttl wants a duration like 90s, 30m, 24h or 7d (at most 365d), got ${JSON.stringify(v)}`);
  return n;
}

function formatBytes(n: number): string {
  return n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)}G` : `${Math.round(n / (1 << 20))}M`;
}

/** The `stratus nodes` table. */
export function nodesTable(nodes: readonly NodeSummary[]): string {
  return table(["ID", "NAME", "STATE", "URL", "IN-FLIGHT", "QUEUED", "INSTANCES", "MEM USED/FREE", "LAST SEEN", "WARM"], nodes.map((n) => [
    n.id === null ? "-" : String(n.id), n.name, n.state, n.url,
    String(n.load?.inFlight ?? "-"), String(n.load?.queued ?? "-"), String(n.load?.instances ?? "-"),
    n.load ? `${formatBytes(n.load.memUsedBytes)}/${formatBytes(n.load.memFreeBytes)}` : "-",
    formatTime(n.lastSeen), n.load && n.load.warm.length > 0 ? n.load.warm.join(",") : "-",
  ]));
}

/** Registers `stratus nodes`. */
export function registerNodesCommand(program: Command): void {
  withCommonOptions(program.command("nodes").description("list cluster nodes: state (ready | draining | lost), load, warm functions"))
    .action(apiAction<[], CommonOptions>(async (client, opts) => {
      const nodes = await client.listNodes();
      output(opts, { nodes }, () => (nodes.length === 0 ? "No nodes." : nodesTable(nodes)));
    }));
}

function registerNodeAdmin(node: Command): void {
  const token = node.command("token").description("manage join tokens (admin)");
  withCommonOptions(token.command("create").description("create a join token (printed once) for `stratus node --join-token`"))
    .option("--ttl <duration>", "lifetime: 90s, 30m, 24h, 7d", "24h")
    .option("--name <name>", "a label for the token", "node")
    .action(apiAction<[], CommonOptions & { ttl: string; name: string }>(async (client, opts) => {
      const t = await client.createJoinToken({ name: opts.name, ttlSeconds: parseTtl(opts.ttl) });
      output(opts, t, () => `Join token ${t.id} (${t.name}) created, valid until ${formatTime(t.expiresAt)}. It is shown only now:\n${t.token}`);
    }));
  withCommonOptions(token.command("ls").description("list join tokens"))
    .action(apiAction<[], CommonOptions>(async (client, opts) => {
      const ts = await client.listJoinTokens();
      output(opts, { joinTokens: ts }, () => table(["ID", "NAME", "CREATED", "EXPIRES", "REVOKED"], ts.map((t) => [t.id, t.name, formatTime(t.createdAt), formatTime(t.expiresAt), formatTime(t.revokedAt)])));
    }));
  withCommonOptions(token.command("revoke").description("revoke a join token at once").argument("<id>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, id) => {
      const t = await client.revokeJoinToken(id);
      output(opts, t, () => `Join token ${t.id} revoked.`);
    }));
  withCommonOptions(node.command("drain").description("drain a node: its /readyz answers 404, the load balancer sends it no new work").argument("<id>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, id) => {
      const n = await client.drainNode(id);
      output(opts, n, () => `Node ${n.id} (${n.name}) is draining.`);
    }));
  withCommonOptions(node.command("undrain").description("make a drained node ready again").argument("<id>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, id) => {
      const n = await client.undrainNode(id);
      output(opts, n, () => `Node ${n.id} (${n.name}) is ready.`);
    }));
  withCommonOptions(node.command("rm").description("remove a node: its credential stops working at once").argument("<id>"))
    .action(apiAction<[string], CommonOptions>(async (client, opts, id) => {
      const n = await client.removeNode(id);
      output(opts, n, () => `Node ${n.id} (${n.name}) removed.`);
    }));
}

/** Registers the `node` command (the agent, and the admin subcommands). */
export function registerNodeCommand(program: Command): void {
  const node = program
    .command("node")
    .description("run a node agent (driver + gateway) that joins a control plane; admin: token, drain, undrain, rm")
    // Options of `node` only before a subcommand: `stratus node token create --token <API token>`.
    .enablePositionalOptions()
    .option("--control <url>", "the control plane's URL (http(s)://host:port)")
    .option("--join-token <token>", "admin-issued join token (prefer STRATUS_JOIN_TOKEN); only needed until the node has joined")
    .option("--ca-file <pem>", "CA certificate(s) to trust for an https:// control plane")
    .option("--token <secret>", "the shared node link secret instead of a join (prefer --token-file or STRATUS_NODE_TOKEN)")
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
        const joinToken = opts.joinToken ?? process.env.STRATUS_JOIN_TOKEN;
        const secret = opts.tokenFile ? await readSecretFile(opts.tokenFile) : opts.token ?? (joinToken === undefined ? process.env.STRATUS_NODE_TOKEN : undefined) ?? "";
        if (!/^https?:\/\//.test(opts.control ?? "")) throw new StratusError("INVALID_ARGUMENT", "--control wants an http(s):// URL");
        const ca = opts.caFile ? await readFile(opts.caFile, "utf8").catch((cause: Error) => {
          throw new StratusError("INVALID_ARGUMENT", `Cannot read --ca-file ${opts.caFile}: ${cause.message}`);
        }) : undefined;
        const listen = parseListen(opts.listen ?? "127.0.0.1:8081");
        const resyncMs = opts.resyncMs === undefined ? undefined : Number(opts.resyncMs);
        if (resyncMs !== undefined && !(Number.isInteger(resyncMs) && resyncMs >= 100 && resyncMs <= 3_600_000)) {
          throw new StratusError("INVALID_ARGUMENT", "--resync-ms wants an integer from 100 to 3600000");
        }
        const file = opts.config ? await readConfigFile(opts.config) : undefined;
        const dataDir = resolve(opts.dataDir ?? join(homedir(), ".stratus", "node"));
        if (secret === "" && joinToken === undefined && !existsSync(join(dataDir, "node-credential.json"))) {
          throw new StratusError("INVALID_ARGUMENT", "This node has not joined yet: pass --join-token (or STRATUS_JOIN_TOKEN), or the shared secret (--token-file, --token, STRATUS_NODE_TOKEN)");
        }
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
            url: opts.control!, nodeId, dataDir,
            ...(secret !== "" ? { secret } : joinToken !== undefined ? { joinToken } : {}),
            ...(ca !== undefined ? { ca } : {}),
            onRefused: (err) => {
              reportError(err);
              process.stderr.write("The control plane refused this node for good; it dropped everything it held and exits.\n");
              void agent.close().finally(() => process.exit(1));
            },
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
        if (opts.json) process.stdout.write(JSON.stringify({ nodeId, id: agent.numericId, url, revision: agent.revision?.revision ?? null }) + "\n");
        else process.stdout.write(`Stratus node ${nodeId}${agent.numericId !== null ? ` (id ${agent.numericId})` : ""} at ${url} (control plane ${opts.control})\n`);
      } catch (err) {
        reportError(err);
        process.exit(1);
      }
    });
  registerNodeAdmin(node);
}
