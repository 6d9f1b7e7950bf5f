/**
 * Network policy "outbound" for the process driver: every sandbox gets its own network namespace, so
 * nothing bound in the host's namespace — abstract Unix sockets above all, which no packet filter sees —
 * is reachable from it. Outbound IPv4 leaves through a veth pair and the host's NAT:
 *
 *   sandbox netns: lo, eth0 = <block>.2/30, default via <block>.1
 *   host:          sx<tag><n> = <block>.1/30   (one /30 of `subnet` per sandbox)
 *   iptables:      INPUT   -s subnet → reject (the host itself: API, gateway, every local address and port)
 *                  FORWARD -s/-d subnet → the subnet's own chain (<chain>-F<hex>):
 *                          -d subnet: replies accepted, new connections rejected (no sandbox reaches another);
 *                          -s subnet: 169.254.0.0/16 (metadata) and blockedCidrs rejected, the rest accepted
 *                  nat POSTROUTING -s subnet ! -d subnet → MASQUERADE
 * The rules are installed with the first sandbox and removed by `close()` once no host interface holds
 * an address of the subnet any more (another process's sandboxes on the same subnet keep them: the
 * INPUT reject is what keeps a sandbox off the host). Because another process may remove them while
 * this one is idle, `create()` checks the INPUT jump again once its veth is up (~14 ms, measured here)
 * and reinstalls what is missing; `close()` checks the interfaces again after removing and reinstalls
 * when a sandbox appeared meanwhile. A per-subnet chain, rebuilt (flushed, then appended in order) at
 * every install, keeps the rejects before the accept whatever a killed run left.
 * The namespace is made with `ip` (iproute2) and joined by the sandbox's wrapper through
 * `nsenter --net=/run/netns/<name>` before bwrap (bubblewrap 0.8 cannot join a namespace). No IPv6
 * inside (no address, no route): outbound is IPv4 only. DNS goes to the host's nameservers as for any
 * other destination; a loopback stub resolver of the host (127.0.0.53) is not reachable from a netns.
 *
 * Why veth + NAT rather than slirp4netns or pasta: no extra process per sandbox (each costs memory and
 * a user-space copy of every packet), and the kernel's own forwarding path. Creating a namespace costs
 * three `ip` executions (~10–30 ms, measured here); pre-warm slots pay it before a cold start does.
 *
 * Invariants: a sandbox's namespace exists from `create()` to `remove()`; namespaces are named
 * `sxn-<tag>-<id>` (tag: this driver's), so reconcile finds a killed run's leftovers and no one else's.
 */
import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { promisify } from "node:util";
import type { Logger } from "./logger";

const run = promisify(execFile);
const IP = "/usr/sbin/ip";
const NETNS_DIR = "/run/netns";

/** Options of createSandboxNetworks. */
export interface SandboxNetworkOptions {
  /** IPv4 CIDR, prefix 8–28, carved into one /30 per sandbox (default 10.200.0.0/16). */
  readonly subnet?: string;
  /** Short tag naming this driver's namespaces and veths (lower-case hex or alnum, ≤ 6 chars). */
  readonly tag: string;
  /** Extra destinations to reject (e.g. the cluster's private network). */
  readonly blockedCidrs?: readonly string[];
  /** iptables chain prefix (default "STRATUS-NET"). */
  readonly chain?: string;
  readonly logger: Logger;
}

/** One sandbox's namespace. */
export interface SandboxNetns {
  readonly name: string;
  /** What `nsenter --net=` takes. */
  readonly path: string;
  readonly sandboxAddress: string;
  readonly hostAddress: string;
  readonly hostVeth: string;
}

/** A driver's sandbox namespaces. Methods reject with the tool's message. */
export interface SandboxNetworks {
  readonly subnet: string;
  /** The subnet's FORWARD chain (holds the metadata and blockedCidrs rejects). */
  readonly forwardChain: string;
  /** Installs (idempotently) forwarding, NAT and filter rules for the subnet. */
  ensureRules(): Promise<void>;
  /**
   * Removes the subnet's rules when this was the process's last manager of the subnet and no host
   * interface holds an address in it (call when no sandbox of this driver is left). Never throws.
   */
  close(): Promise<void>;
  /** Makes `id`'s namespace with its veth, address and default route. */
  create(id: string): Promise<SandboxNetns>;
  /** Deletes `id`'s namespace (the veth pair goes with it). Never throws. */
  remove(id: string): Promise<void>;
  /** Ids that have a namespace of this driver now. */
  list(): string[];
  /** Deletes this driver's host veths that no live sandbox owns (a killed run's); returns their names. */
  removeOrphanVeths(): Promise<string[]>;
}

/** Parses an IPv4 CIDR into [network as uint32, prefix]. @throws Error when it is not one. */
export function parseIPv4Cidr(cidr: string): [number, number] {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const prefix = m ? Number(m[5]) : NaN;
  if (!m || octets.some((o) => o > 255) || !(prefix >= 8 && prefix <= 28)) throw new Error(`invalid sandbox subnet "${cidr}" (an IPv4 CIDR with a prefix of 8 to 28)`);
  const ip = (((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0);
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  return [(ip & mask) >>> 0, prefix];
}

const ipToInt = (a: string): number => a.split(".").reduce((n, o) => n * 256 + Number(o), 0);
const dotted = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");

/**
 * Blocks claimed by any manager of this process (`<subnet>#<n>`): two drivers of one process with the
 * same subnet (tests, tools) never pick one block at the same moment. Other processes are told apart
 * by the host addresses already in use (see create()).
 */
const claimed = new Set<string>();

/** Managers of this process that installed the rules of a subnet, per subnet. */
const ruleUsers = new Map<string, number>();

/** The FORWARD chain of `subnet` (normalised CIDR) under `chain`: `<chain>-F<network hex><prefix>`. */
export function forwardChainOf(subnet: string, chain = "STRATUS-NET"): string {
  const [base, prefix] = parseIPv4Cidr(subnet);
  return `${chain}-F${base.toString(16).padStart(8, "0")}${prefix}`;
}

/** Whether a host interface holds an IPv4 address inside [base, base + size). */
function hostAddressIn(base: number, size: number): boolean {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family !== "IPv4") continue;
      const ip = ipToInt(a.address);
      if (ip >= base && ip < base + size) return true;
    }
  }
  return false;
}

/** Creates the manager (nothing is touched before the first call). */
export function createSandboxNetworks(options: SandboxNetworkOptions): SandboxNetworks {
  const subnet = options.subnet ?? "10.200.0.0/16";
  const [base, prefix] = parseIPv4Cidr(subnet);
  const normalised = `${dotted(base)}/${prefix}`;
  const blocks = 2 ** (30 - prefix);
  if (!/^[a-z0-9]{1,6}$/.test(options.tag)) throw new Error(`invalid network tag "${options.tag}"`);
  const nsPrefix = `sxn-${options.tag}-`;
  const chain = options.chain ?? "STRATUS-NET";
  const fwdChain = forwardChainOf(normalised, chain);
  // iptables chain names are at most 28 characters.
  if (fwdChain.length > 28) throw new Error(`iptables chain prefix "${chain}" is too long`);
  const log = options.logger;
  const vethPrefix = `sx${options.tag}`;
  const vethOf = (n: number): string => `${vethPrefix}${n.toString(16)}`;
  /** Block index of each live sandbox (block 0 is never used: its .1 would be the subnet's first address). */
  const used = new Map<string, number>();
  let next = 1;
  let rules: Promise<void> | null = null;

  const installRules = async (): Promise<void> => {
    const forward = "/proc/sys/net/ipv4/ip_forward";
    if (readFileSync(forward, "utf8").trim() !== "1") {
      writeFileSync(forward, "1");
      log.warn("enabled net.ipv4.ip_forward for sandbox networking");
    }
    const inChain = `${chain}-IN`;
    for (const c of [inChain, fwdChain]) await newChain(c);
    await ensure(["filter", inChain, "-j", "REJECT"]);
    // Rebuilt in order: no accept is in the chain before every reject is (fail closed meanwhile).
    await iptables(["-F", fwdChain]);
    const blocked = ["169.254.0.0/16", ...(options.blockedCidrs ?? []).filter((c) => /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(c))];
    for (const spec of [
      ["-d", normalised, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
      ["-d", normalised, "-j", "REJECT"],
      ...blocked.map((cidr) => ["-d", cidr, "-j", "REJECT"]),
      ["-s", normalised, "-j", "ACCEPT"],
    ]) await iptables(["-A", fwdChain, ...spec]);
    // Jumps first in INPUT and FORWARD (before Docker's chains and its DROP policy).
    await ensure(["filter", "INPUT", "-s", normalised, "-j", inChain], true);
    await ensure(["filter", "FORWARD", "-s", normalised, "-j", fwdChain], true);
    await ensure(["filter", "FORWARD", "-d", normalised, "-j", fwdChain], true);
    await ensure(["nat", "POSTROUTING", "-s", normalised, "!", "-d", normalised, "-j", "MASQUERADE"]);
  };

  /** Deletes every rule installed for the subnet (and a former version's ones in `<chain>-FWD`). */
  const removeRules = async (): Promise<void> => {
    const del = async (table: string, ch: string, spec: string[]): Promise<void> => {
      // Bounded: duplicates of a rule (killed runs racing) are deleted too, at most 8.
      for (let i = 0; i < 8; i++) if (!(await iptables(["-t", table, "-D", ch, ...spec]).then(() => true, () => false))) break;
    };
    await del("filter", "INPUT", ["-s", normalised, "-j", `${chain}-IN`]);
    for (const target of [fwdChain, `${chain}-FWD`]) {
      await del("filter", "FORWARD", ["-s", normalised, "-j", target]);
      await del("filter", "FORWARD", ["-d", normalised, "-j", target]);
    }
    await del("filter", `${chain}-FWD`, ["-d", normalised, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]);
    await del("filter", `${chain}-FWD`, ["-d", normalised, "-j", "REJECT"]);
    await del("filter", `${chain}-FWD`, ["-s", normalised, "-j", "ACCEPT"]);
    await iptables(["-F", fwdChain]).catch(() => undefined);
    await iptables(["-X", fwdChain]).catch(() => undefined);
    await del("nat", "POSTROUTING", ["-s", normalised, "!", "-d", normalised, "-j", "MASQUERADE"]);
  };
  let usingRules = false;
  function ensureRules(): Promise<void> {
    if (!usingRules) {
      usingRules = true;
      ruleUsers.set(normalised, (ruleUsers.get(normalised) ?? 0) + 1);
    }
    rules ??= installRules().catch((err: unknown) => {
      rules = null;
      throw err;
    });
    return rules;
  }

  const nameOf = (id: string): string => `${nsPrefix}${id}`;

  async function remove(id: string): Promise<void> {
    const name = nameOf(id);
    const n = used.get(id);
    used.delete(id);
    if (n !== undefined) claimed.delete(`${normalised}#${n}`);
    // Deleting the host end removes the pair at once; a deleted namespace frees its veth only later
    // (the kernel tears namespaces down asynchronously). One `ip` for both (each process costs the
    // gateway a fork): `-force` goes on past a veth already gone.
    const hasNs = existsSync(`${NETNS_DIR}/${name}`);
    const lines = [...(n !== undefined ? [`link del ${vethOf(n)}`] : []), ...(hasNs ? [`netns del ${name}`] : [])];
    if (lines.length === 0) return;
    await ipBatch(null, lines, { force: true }).catch(() => undefined);
    if (hasNs && existsSync(`${NETNS_DIR}/${name}`)) log.error({ netns: name }, "deleting a sandbox network namespace failed");
  }

  return {
    subnet: normalised,
    forwardChain: fwdChain,
    ensureRules,
    async close() {
      if (!usingRules) return;
      usingRules = false;
      await rules?.catch(() => undefined);
      rules = null;
      const users = (ruleUsers.get(normalised) ?? 1) - 1;
      if (users > 0) {
        ruleUsers.set(normalised, users);
        return;
      }
      ruleUsers.delete(normalised);
      if (hostAddressIn(base, blocks * 4)) {
        log.debug({ subnet: normalised }, "sandbox network rules kept: another process has sandboxes on the subnet");
        return;
      }
      try {
        await removeRules();
        // A sandbox of another process appeared meanwhile: put the rules back (its create() checks too).
        if (hostAddressIn(base, blocks * 4)) await installRules();
      } catch (err) {
        log.warn({ err, subnet: normalised }, "removing the sandbox network rules failed");
      }
    },
    async create(id) {
      const name = nameOf(id);
      await remove(id);
      const taken = new Set(used.values());
      for (const c of claimed) if (c.startsWith(`${normalised}#`)) taken.add(Number(c.slice(normalised.length + 1)));
      // Another driver (or a killed run) may hold a block: skip every /30 whose host address is in use.
      for (const list of Object.values(networkInterfaces())) {
        for (const a of list ?? []) {
          if (a.family !== "IPv4") continue;
          const ip = ipToInt(a.address);
          if (ip >= base && ip < base + blocks * 4) taken.add(Math.floor((ip - base) / 4));
        }
      }
      // Bounded: at most one pass over the blocks; a block a killed run still holds fails "File exists".
      let lastErr: unknown = null;
      for (let tries = 0; tries < Math.min(blocks, 64); tries++) {
        let n = next;
        for (let k = 0; k < blocks && (taken.has(n) || n === 0); k++) n = (n + 1) % blocks;
        if (taken.has(n) || n === 0) break;
        next = (n + 1) % blocks;
        claimed.add(`${normalised}#${n}`);
        const hostAddress = dotted(base + n * 4 + 1);
        const sandboxAddress = dotted(base + n * 4 + 2);
        const hostVeth = vethOf(n);
        try {
          // The namespace and the host side in one `ip` (it stops at the first error: "File exists" when a
          // killed run still holds the name or the veth), the sandbox side in a second.
          await ipBatch(null, [
            `netns add ${name}`,
            `link add ${hostVeth} type veth peer name eth0 netns ${name}`,
            `addr add ${hostAddress}/30 dev ${hostVeth}`,
            `link set ${hostVeth} up`,
          ]);
          await ipBatch(name, [
            `addr add ${sandboxAddress}/30 dev eth0`,
            "link set eth0 up",
            "link set lo up",
            `route add default via ${hostAddress}`,
          ]);
          used.set(id, n);
          // Another process's close() may have removed the rules since ours were installed (see the
          // file comment): now that our veth holds an address, it will not remove them again.
          if (usingRules && !(await iptables(["-C", "INPUT", "-s", normalised, "-j", `${chain}-IN`]).then(() => true, () => false))) {
            rules = null;
            await ensureRules();
          }
          return { name, path: `${NETNS_DIR}/${name}`, sandboxAddress, hostAddress, hostVeth };
        } catch (err) {
          lastErr = err;
          taken.add(n);
          claimed.delete(`${normalised}#${n}`);
          await run(IP, ["link", "del", hostVeth]).catch(() => undefined);
          await run(IP, ["netns", "del", name]).catch(() => undefined);
          if (!/File exists/.test(String((err as { stderr?: string }).stderr ?? err))) break;
        }
      }
      throw new Error(`cannot create the sandbox network: ${String((lastErr as { stderr?: string } | null)?.stderr ?? lastErr ?? `no free /30 left in ${normalised}`).trim()}`);
    },
    remove,
    async removeOrphanVeths() {
      const owned = new Set([...used.values()].map(vethOf));
      let names: string[] = [];
      try {
        names = readdirSync("/sys/class/net").filter((n) => n.startsWith(vethPrefix) && !owned.has(n));
      } catch {
        return [];
      }
      for (const n of names) await run(IP, ["link", "del", n]).catch((err: unknown) => log.warn({ err, veth: n }, "deleting a leftover veth failed"));
      return names;
    },
    list() {
      try {
        return readdirSync(NETNS_DIR).filter((n) => n.startsWith(nsPrefix)).map((n) => n.slice(nsPrefix.length));
      } catch {
        return [];
      }
    },
  };
}

/** Runs `ip [-n ns] [-force] -batch -` with `lines` on stdin (without `force` it stops at the first failing line). */
function ipBatch(ns: string | null, lines: string[], o: { force?: boolean } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(IP, [...(ns ? ["-n", ns] : []), ...(o.force === true ? ["-force"] : []), "-batch", "-"], (err, _stdout, stderr) => {
      if (err) reject(Object.assign(err, { stderr }));
      else resolve();
    });
    child.stdin?.end(`${lines.join("\n")}\n`);
  });
}

/** Runs `iptables -w ...args`; rejects with its stderr. */
async function iptables(args: string[]): Promise<void> {
  try {
    await run("iptables", ["-w", ...args]);
  } catch (err) {
    throw wrap(err);
  }
}

async function newChain(chain: string): Promise<void> {
  try {
    await run("iptables", ["-w", "-N", chain]);
  } catch (err) {
    if (!/exists/i.test(String((err as { stderr?: string }).stderr))) throw wrap(err);
  }
}

/** Appends (or inserts first) a rule `[table, chain, ...spec]` unless an identical one exists. */
async function ensure(rule: string[], insert = false): Promise<void> {
  const [table, chain, ...spec] = rule as [string, string, ...string[]];
  try {
    await run("iptables", ["-w", "-t", table, "-C", chain, ...spec]);
    return;
  } catch {
    // absent: add it
  }
  try {
    await run("iptables", ["-w", "-t", table, insert ? "-I" : "-A", chain, ...(insert ? ["1"] : []), ...spec]);
  } catch (err) {
    throw wrap(err);
  }
}

function wrap(err: unknown): Error {
  const stderr = String((err as { stderr?: string }).stderr ?? "").trim();
  return new Error(`iptables failed: ${stderr || String(err)}`, { cause: err });
}
