/**
 * The Docker network of function containers: a bridge of its own with inter-container communication
 * disabled (Docker adds the FORWARD drop rule for `enable_icc=false`), plus a host firewall rule that
 * rejects everything arriving from that bridge for the host itself (INPUT), so a function cannot
 * reach the platform's API, the gateway or any other service listening on any of the host's
 * addresses. Outbound traffic to other hosts is NATed by Docker as usual; link-local 169.254.0.0/16
 * (cloud metadata) is always rejected in DOCKER-USER, and `denyCidrs` adds REJECT rules there for
 * ranges the operator wants closed too (e.g. the cluster's private network).
 *
 * Containers with `network: "none"` do not use this network at all (NetworkMode none).
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type Docker from "dockerode";
import { StratusError } from "../../shared/errors";
import { engineStatus, isNotFound } from "./engine";

const execFileAsync = promisify(execFile);

export interface FunctionNetworkOptions {
  /** Docker network name (default `stratus-functions`). */
  readonly name: string;
  /** Linux bridge interface name, at most 15 characters (default `stratus-fn0`). */
  readonly bridge: string;
  /** Extra destination ranges function containers may not reach (default none). */
  readonly denyCidrs: readonly string[];
}

const COMMENT = "stratus: function containers may not reach the host";
/** Always rejected for function containers (cloud metadata endpoints live there). */
export const METADATA_CIDR = "169.254.0.0/16";

async function iptablesEnsure(chain: string, rule: string[]): Promise<void> {
  try {
    await execFileAsync("iptables", ["-w", "-C", chain, ...rule]);
  } catch {
    await execFileAsync("iptables", ["-w", "-I", chain, "1", ...rule]);
  }
}

/**
 * Creates the network and the firewall rules when missing (idempotent; safe to call concurrently
 * from one process — the caller memoizes). Resolves with the network name.
 * @throws StratusError INSTANCE_START_FAILED when the engine or iptables refuse.
 */
export async function ensureFunctionNetwork(docker: Docker, options: FunctionNetworkOptions): Promise<string> {
  try {
    try {
      await docker.getNetwork(options.name).inspect();
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await docker
        .createNetwork({
        Name: options.name,
        Driver: "bridge",
        CheckDuplicate: true,
        Internal: false,
        Labels: { "stratus.network": "functions" },
        Options: {
          "com.docker.network.bridge.name": options.bridge,
          "com.docker.network.bridge.enable_icc": "false",
        },
      })
        // 409: another process of this node created it first.
        .catch((e: unknown) => {
          if (engineStatus(e) !== 409) throw e;
        });
    }
    await iptablesEnsure("INPUT", ["-i", options.bridge, "-m", "comment", "--comment", COMMENT, "-j", "REJECT", "--reject-with", "icmp-port-unreachable"]);
    // Link-local (169.254.169.254: cloud metadata endpoints) is always closed, like the process driver's.
    for (const cidr of [METADATA_CIDR, ...options.denyCidrs.filter((c) => c !== METADATA_CIDR)]) {
      await iptablesEnsure("DOCKER-USER", ["-i", options.bridge, "-d", cidr, "-m", "comment", "--comment", COMMENT, "-j", "REJECT", "--reject-with", "icmp-port-unreachable"]);
    }
    return options.name;
  } catch (err) {
    throw new StratusError("INSTANCE_START_FAILED", `Could not set up the function network ${options.name}: ${(err as Error).message}`, { cause: err });
  }
}
