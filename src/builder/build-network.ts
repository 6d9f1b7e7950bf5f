/**
 * The build sandbox's network for `npm ci` (src/builder/build-sandbox.ts): the install step shares the
 * host's network namespace (it needs the registry), and packet filter rules keyed on the build uid reject whatever they send to the host itself
 * (loopback and every local address: the platform's API, admin and gateway ports, other services) and to
 * link-local addresses (cloud metadata endpoints). Everything else (the internet, other hosts) is allowed.
 *
 * Rules live in a dedicated chain jumped to from OUTPUT; installing is idempotent (`-C` before `-A`),
 * so several builders and restarts add nothing twice. The bundling step needs no rules (`--unshare-net`).
 * (Instances no longer use this: each has its own network namespace, src/sandbox/process/netns.ts.)
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";

const run = promisify(execFile);

/** Options of installOutboundRules. */
export interface OutboundRulesOptions {
  /** Instance uid the rules apply to. */
  readonly uid: number;
  /** Chain name (default "STRATUS-BUILD"). */
  readonly chain?: string;
  /** Extra destinations to reject, CIDR (e.g. the cluster's private network). */
  readonly blockedCidrs?: readonly string[];
  /** Loopback resolvers that stay reachable on port 53 (default: loopback nameservers of /etc/resolv.conf). */
  readonly loopbackResolvers?: readonly string[];
}

/**
 * Installs (idempotently) the iptables and ip6tables rules of the "outbound" policy for `uid`.
 * @throws Error when iptables is missing or refuses (the driver must not start instances unfiltered).
 */
export async function installOutboundRules(options: OutboundRulesOptions): Promise<void> {
  const chain = options.chain ?? "STRATUS-BUILD";
  const uid = String(options.uid);
  const resolvers = options.loopbackResolvers ?? loopbackNameservers();
  const extra = options.blockedCidrs ?? [];
  for (const [bin, family] of [["iptables", 4], ["ip6tables", 6]] as const) {
    const owner = ["-m", "owner", "--uid-owner", uid];
    const rules: string[][] = [];
    // DNS to a loopback stub resolver (systemd-resolved's 127.0.0.53) stays possible, port 53 only.
    for (const r of resolvers.filter((a) => isIP(a) === family)) {
      for (const proto of ["udp", "tcp"]) rules.push([...owner, "-d", r, "-p", proto, "--dport", "53", "-j", "RETURN"]);
    }
    rules.push([...owner, "-o", "lo", "-j", "REJECT"]);
    rules.push([...owner, "-m", "addrtype", "--dst-type", "LOCAL", "-j", "REJECT"]);
    rules.push([...owner, "-d", family === 4 ? "169.254.0.0/16" : "fe80::/10", "-j", "REJECT"]);
    for (const cidr of extra.filter((c) => isIP(c.split("/")[0] ?? "") === family)) rules.push([...owner, "-d", cidr, "-j", "REJECT"]);

    try {
      await run(bin, ["-w", "-N", chain]);
    } catch (err) {
      if (!/exists/i.test(String((err as { stderr?: string }).stderr))) throw wrap(bin, err);
    }
    await ensure(bin, ["OUTPUT", "-j", chain], true);
    for (const r of rules) await ensure(bin, [chain, ...r], false);
  }
}

/** Appends (or inserts first, for the OUTPUT jump) a rule unless an identical one exists. */
async function ensure(bin: string, rule: string[], insert: boolean): Promise<void> {
  const [chain, ...spec] = rule as [string, ...string[]];
  try {
    await run(bin, ["-w", "-C", chain, ...spec]);
    return;
  } catch {
    // absent: add it
  }
  try {
    await run(bin, ["-w", insert ? "-I" : "-A", chain, ...(insert ? ["1"] : []), ...spec]);
  } catch (err) {
    throw wrap(bin, err);
  }
}

function wrap(bin: string, err: unknown): Error {
  const stderr = String((err as { stderr?: string }).stderr ?? "").trim();
  return new Error(`${bin} failed: ${stderr || String(err)}`, { cause: err });
}

/** Loopback nameservers listed in /etc/resolv.conf. */
function loopbackNameservers(): string[] {
  let text = "";
  try {
    text = readFileSync("/etc/resolv.conf", "utf8");
  } catch {
    return [];
  }
  return [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)]
    .map((m) => m[1] as string)
    .filter((a) => a.startsWith("127.") || a === "::1");
}
