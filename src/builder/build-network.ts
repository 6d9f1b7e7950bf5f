/**
 * The build sandbox's network for `npm ci` / `yarn install` (src/builder/build-sandbox.ts): each install
 * runs in a network namespace of its own, made by the same code as the instances'
 * (src/shared/netns.ts): a veth pair into one /30 of `subnet`, NAT out, and iptables rules that
 * reject the host itself (every local address and port: the platform's API, gateway, other services),
 * every other sandbox of the subnet, link-local (cloud metadata) and `blockedCidrs`. Everything else
 * (the registry, the internet) is reachable, IPv4 only.
 *
 * Why a namespace and not only packet filters on the host's namespace (what builds had before): an
 * abstract-namespace Unix socket of any host service (and of a function's sandbox) is bound in the
 * host's network namespace and no packet filter sees it (issue 12.4, for builds: an allowed install
 * script could talk to one). The loopback of a build's namespace is its own.
 *
 * DNS goes to the host's nameservers through NAT like any other destination: a loopback stub resolver
 * of the host (127.0.0.53, systemd-resolved) is NOT reachable from the namespace (point
 * /etc/resolv.conf at a real resolver; docs/build.md).
 *
 * Namespaces are named `sxn-bld-<id>` and the subnet's rules live in `<chain>-IN` / `<chain>-F<hex>`;
 * they are removed when the install ends (rules: once no build on the subnet is left, see netns.ts).
 */
import { createSandboxNetworks, type SandboxNetworks } from "../shared/netns";
import type { Logger } from "../shared/logger";

/** Default subnet of build namespaces: disjoint from the instances' default (10.200.0.0/16). */
export const DEFAULT_BUILD_SUBNET = "10.199.0.0/16";

/** Options of createBuildNetworks. */
export interface BuildNetworkOptions {
  /** IPv4 CIDR, prefix 8–28 (default 10.199.0.0/16); disjoint from every instance subnet of the host. */
  readonly subnet?: string;
  /** iptables chain prefix (default "STRATUS-BLD"). */
  readonly chain?: string;
  /** Extra destinations to reject (e.g. the cluster's private network). */
  readonly blockedCidrs?: readonly string[];
  readonly logger: Logger;
}

/** The manager of build namespaces (nothing is touched before the first create). */
export function createBuildNetworks(options: BuildNetworkOptions): SandboxNetworks {
  return createSandboxNetworks({
    subnet: options.subnet ?? DEFAULT_BUILD_SUBNET, tag: "bld", chain: options.chain ?? "STRATUS-BLD",
    ...(options.blockedCidrs ? { blockedCidrs: options.blockedCidrs } : {}), logger: options.logger,
  });
}
