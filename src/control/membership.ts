/**
 * Cluster membership as a load balancer sees it: the registered nodes as `{ id, addr, port, state }`,
 * what src/lb's `syncMembership(runtime, nodes)` maps onto HAProxy's runtime API (server id = node id,
 * address and port from the node's URL; `draining` → drain, `lost` → maint/down).
 */
import type { MemberView } from "./node-fleet";

/** One HAProxy server slot's worth of a node. */
export interface LbMember {
  /** Stable numeric node id (1–64), the HAProxy server id. */
  readonly id: number;
  readonly addr: string;
  readonly port: number;
  readonly state: "ready" | "draining" | "lost";
}

/** Registered nodes with an http(s) URL, by id (the shared-secret node of `stratus up` has no id and is left out). */
export function lbMembers(members: readonly MemberView[]): LbMember[] {
  const out: LbMember[] = [];
  for (const m of members) {
    if (m.id === null) continue;
    let u: URL;
    try {
      u = new URL(m.url);
    } catch {
      continue;
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") continue;
    const port = u.port !== "" ? Number(u.port) : u.protocol === "https:" ? 443 : 80;
    out.push({ id: m.id, addr: u.hostname.replace(/^\[(.*)\]$/, "$1"), port, state: m.state });
  }
  return out.sort((a, b) => a.id - b.id);
}
