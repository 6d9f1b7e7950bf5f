/**
 * Keeps HAProxy's node slots in step with the node table (docs/cluster.md "The control plane manages
 * HAProxy"): `syncMembership` (src/lb/haproxy-runtime.ts) on every membership change this control plane
 * sees (join, hello, drain, undrain, removal, a change notified by another control plane) and every
 * `intervalMs` (a node lost by silence, a drain made through another control plane). Syncs are
 * serialised: a trigger during a sync runs one more afterwards, never two at once.
 *
 * Several control planes: every one may sync, no leader. `syncMembership` is idempotent and diff-based,
 * and what it is given is a pure function of the shared node table (ids, URLs, drain state, last_seen in
 * the store), so every control plane computes the same slots and a second sync changes nothing. The
 * control plane usually runs next to its HAProxy (the stats socket is a local Unix socket), so with two
 * HAProxies each control plane keeps its own one in step — a single leader would have to reach both.
 */
import type { Logger } from "../shared/logger";
import { createHaproxyRuntime, syncMembership, type MemberNode, type MembershipChange } from "../lb/haproxy-runtime";
import type { LbMember } from "./membership";

export interface LbSyncOptions {
  /** HAProxy's admin stats socket. */
  readonly socket: string;
  /** HAProxy's server-state-file ("" or undefined: not written). */
  readonly stateFile?: string;
  readonly intervalMs: number;
  /** The node table as the load balancer sees it. */
  readonly members: () => Promise<LbMember[]>;
  readonly logger: Logger;
}

export interface LbSyncer {
  /** Schedules a sync now (coalesced with one in progress). */
  trigger(): void;
  /** Resolves after a sync that started after this call (tests, shutdown); rejects with its error. */
  syncNow(): Promise<MembershipChange[]>;
  close(): Promise<void>;
}

/** Maps a node-table state onto a slot's admin state: lost nodes leave the ring (HAProxy's checks mark them DOWN sooner). */
export function toSlot(m: LbMember): MemberNode {
  return { id: m.id, addr: m.addr, port: m.port, state: m.state === "ready" ? "ready" : m.state === "draining" ? "drain" : "maint" };
}

export function createLbSyncer(options: LbSyncOptions): LbSyncer {
  const runtime = createHaproxyRuntime({ socket: options.socket, timeoutMs: 5000 });
  const stateFile = options.stateFile !== undefined && options.stateFile !== "" ? options.stateFile : undefined;
  let running: Promise<MembershipChange[]> | null = null;
  let again = false;
  let closed = false;
  let failing = false;

  async function once(): Promise<MembershipChange[]> {
    const nodes = (await options.members()).map(toSlot);
    const changes = await syncMembership(runtime, nodes, stateFile === undefined ? {} : { stateFile });
    if (failing) options.logger.info({ socket: options.socket }, "HAProxy membership sync works again");
    failing = false;
    for (const c of changes) options.logger.info({ id: c.id, server: c.server, action: c.action, detail: c.detail }, "HAProxy membership changed");
    return changes;
  }

  function run(): Promise<MembershipChange[]> {
    if (running !== null) {
      again = true;
      return running.then(() => running ?? run(), () => running ?? run());
    }
    const p = (async () => {
      let last: MembershipChange[] = [];
      do {
        again = false;
        last = await once();
      } while (again && !closed);
      return last;
    })();
    running = p;
    p.finally(() => {
      if (running === p) running = null;
    }).catch(() => {});
    return p;
  }

  function trigger(): void {
    if (closed) return;
    run().catch((err) => {
      if (!failing) options.logger.warn({ err, socket: options.socket }, "HAProxy membership sync failed; retrying every sync interval");
      failing = true;
    });
  }

  const timer = setInterval(trigger, options.intervalMs);
  timer.unref();
  trigger();

  return {
    trigger,
    syncNow: () => run(),
    async close() {
      closed = true;
      clearInterval(timer);
      await running?.catch(() => {});
    },
  };
}
