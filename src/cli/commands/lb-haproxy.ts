/**
 * `stratus lb haproxy [--config <file>] [options]`: prints (or writes) the HAProxy 2.6 configuration of
 * a cluster (src/lb/haproxy-config.ts; every directive in docs/cluster.md). No API call.
 */
import { writeFile } from "node:fs/promises";
import type { Command } from "commander";
import { renderHaproxyConfig, type HaproxySpecInput } from "../../lb/haproxy-config";
import { reportError } from "../command-kit";

interface Options {
  config?: string;
  bind?: string;
  controlPlane?: string[];
  maxNodes?: string;
  nodePort?: string;
  hashBalanceFactor?: string;
  retries?: string;
  statsSocket?: string;
  stateFile?: string;
  checkInterMs?: string;
  threads?: string;
}

const num = (v: string | undefined): number | undefined => (v === undefined ? undefined : Number(v));

/** Registers `lb haproxy` under the `lb` command group. */
export function registerLbHaproxyCommand(lb: Command): void {
  lb.command("haproxy")
    .description("print or write the HAProxy 2.6 configuration (consistent hashing on the function name, bounded load)")
    .option("--config <file>", "write the configuration to this file (default: print it)")
    .option("--bind <host:port>", "where clients connect (default 127.0.0.1:8000)")
    .option("--control-plane <host:port...>", "control plane(s) serving /api/ (default 127.0.0.1:8080)")
    .option("--max-nodes <n>", "node slots = largest node id (default 64)")
    .option("--node-port <port>", "port of an empty slot (default 8080)")
    .option("--hash-balance-factor <n>", "bounded load: 0 (off) or >= 100 (default 200)")
    .option("--retries <n>", "retries after a connection failure or a node's 503 (default 2)")
    .option("--stats-socket <path>", "admin runtime socket (default /run/stratus/haproxy.sock)")
    .option("--state-file <path>", "server state file (default /var/lib/stratus/haproxy.state)")
    .option("--check-inter-ms <ms>", "health check interval (default 1000)")
    .option("--threads <n>", "nbthread (default 1)")
    .action(async (opts: Options) => {
      try {
        const spec: HaproxySpecInput = {
          ...(opts.bind === undefined ? {} : { bind: opts.bind }),
          ...(opts.controlPlane === undefined ? {} : { controlPlanes: opts.controlPlane }),
          ...(opts.maxNodes === undefined ? {} : { maxNodes: num(opts.maxNodes) }),
          ...(opts.nodePort === undefined ? {} : { nodePort: num(opts.nodePort) }),
          ...(opts.hashBalanceFactor === undefined ? {} : { hashBalanceFactor: num(opts.hashBalanceFactor) as number }),
          ...(opts.retries === undefined ? {} : { retries: num(opts.retries) }),
          ...(opts.statsSocket === undefined ? {} : { statsSocket: opts.statsSocket }),
          ...(opts.stateFile === undefined ? {} : { stateFile: opts.stateFile }),
          ...(opts.checkInterMs === undefined ? {} : { checkInterMs: num(opts.checkInterMs) }),
          ...(opts.threads === undefined ? {} : { threads: num(opts.threads) }),
        };
        const text = renderHaproxyConfig(spec);
        if (opts.config === undefined) process.stdout.write(text);
        else {
          await writeFile(opts.config, text);
          process.stdout.write(`wrote ${opts.config} (check it with: haproxy -c -f ${opts.config})\n`);
        }
      } catch (err) {
        reportError(err);
      }
    });
}
