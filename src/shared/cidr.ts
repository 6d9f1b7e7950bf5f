/**
 * CIDR lists (`10.0.0.0/8`, `::1/128`, a bare address = one host) for the gateway's trusted proxies.
 * Parsing is done once at start-up; a lookup is one `net.BlockList.check` (no allocation, no regex).
 */
import { BlockList, isIP } from "node:net";
import { StratusError } from "./errors";

/** Why `spec` is not a CIDR, or null when it is one. */
export function cidrProblem(spec: string): string | null {
  const slash = spec.indexOf("/");
  const addr = slash === -1 ? spec : spec.slice(0, slash);
  const family = isIP(addr);
  if (family === 0) return `"${spec}" is not an IP address or CIDR`;
  if (slash === -1) return null;
  const bitsText = spec.slice(slash + 1);
  const bits = Number(bitsText);
  const max = family === 4 ? 32 : 128;
  if (bitsText === "" || !Number.isInteger(bits) || bits < 0 || bits > max) return `"${spec}": prefix length must be 0-${max}`;
  return null;
}

/**
 * A matcher for a list of CIDRs: `(address) => boolean`. IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`,
 * what a dual-stack socket reports) match IPv4 ranges. An empty list gives null (nothing is trusted).
 * @throws StratusError INVALID_CONFIG naming the first entry that is not a CIDR (validate with cidrProblem first).
 */
export function cidrMatcher(specs: readonly string[]): ((address: string | undefined) => boolean) | null {
  if (specs.length === 0) return null;
  const list = new BlockList();
  for (const spec of specs) {
    const problem = cidrProblem(spec);
    if (problem !== null) throw new StratusError("INVALID_CONFIG", `Invalid trusted proxy: ${problem}`);
    const slash = spec.indexOf("/");
    const addr = slash === -1 ? spec : spec.slice(0, slash);
    const type = isIP(addr) === 4 ? "ipv4" : "ipv6";
    if (slash === -1) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(spec.slice(slash + 1)), type);
  }
  return (address) => {
    if (address === undefined || address === "") return false;
    if (address.startsWith("::ffff:") && isIP(address.slice(7)) === 4) return list.check(address.slice(7), "ipv4");
    return list.check(address, isIP(address) === 4 ? "ipv4" : "ipv6");
  };
}
