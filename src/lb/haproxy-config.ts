/**
 * Generates a HAProxy 2.6 configuration (Debian 12's `haproxy` package) for a Stratus cluster from a
 * typed, validated spec: `/api/…` goes to the control plane(s), `/fn/<name>/…` to the node agents,
 * sticky by function name on a consistent-hash ring with bounded load. Every directive is explained in
 * docs/cluster.md; the measurements behind the values are in docs/cluster.md ("Why these values").
 *
 * Node membership is NOT in the file: the nodes backend declares `maxNodes` server slots
 * (`server-template node 1-N`, slot N has HAProxy id N = the stable node id) that start in
 * maintenance without an address, and the runtime API (src/lb/haproxy-runtime.ts) fills them. The
 * state file (`server-state-file` + `load-server-state-from-file global`) carries membership across
 * reloads and restarts.
 */
import { z } from "zod";
import { StratusError } from "../shared/errors";

const int = (min: number, max: number) => z.number().int().min(min).max(max);
/** A plain host:port HAProxy accepts in `bind`/`server` (IPv4, [IPv6] or a host name). */
const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/, "must be host:port");
/** An absolute path without characters HAProxy's config parser would split or interpret. */
const absPath = z.string().regex(/^\/[A-Za-z0-9._/+-]*$/, "must be an absolute path of [A-Za-z0-9._/+-]");

export const HaproxySpecSchema = z.strictObject({
  /** Where clients connect (`bind`), host:port. */
  bind: hostPort.default("127.0.0.1:8000"),
  /** Control plane(s) serving `/api/…` (and `/healthz`, `/readyz` of the control plane), host:port each. */
  controlPlanes: z.array(hostPort).min(1).max(16).default(["127.0.0.1:8080"]),
  /** Number of node slots (`server-template node 1-N`): the largest node id that can join. */
  maxNodes: int(1, 1024).default(64),
  /** Port a node slot gets until the runtime API sets one (nodes normally all use the same). */
  nodePort: int(1, 65_535).default(8080),
  /**
   * `hash-balance-factor`: no node gets more than factor/100 × the mean in-flight count (+1). 0 turns
   * bounded load off (pure consistent hashing: a hot function never spills). HAProxy accepts 0 or ≥ 100.
   */
  hashBalanceFactor: z.union([z.literal(0), int(100, 65_535)]).default(200),
  /** `retries`: extra attempts after a connection failure or a node's pre-execution 503. */
  retries: int(0, 10).default(2),
  /** Unix stats socket with `level admin` (the runtime API). */
  statsSocket: absPath.default("/run/stratus/haproxy.sock"),
  /** `server-state-file`: where `show servers state` is saved so membership survives a reload. */
  stateFile: absPath.default("/var/lib/stratus/haproxy.state"),
  /** Health checks, ms: `inter` (steady), `fastinter` (while a state changes), `downinter` (while down). */
  checkInterMs: int(100, 60_000).default(1000),
  checkFastInterMs: int(50, 60_000).default(250),
  checkDownInterMs: int(100, 600_000).default(2000),
  /** `rise`/`fall`: consecutive good/bad checks to come up/go down. */
  checkRise: int(1, 100).default(2),
  checkFall: int(1, 100).default(2),
  /** `timeout connect`, ms: a blackholed node fails over after this. */
  timeoutConnectMs: int(10, 60_000).default(1000),
  /** `timeout client`/`timeout server`, ms: above the longest function timeout (15 min max). */
  timeoutClientMs: int(1000, 3_600_000).default(300_000),
  timeoutServerMs: int(1000, 3_600_000).default(300_000),
  /** `timeout check`, ms: a health check slower than this counts as failed. */
  timeoutCheckMs: int(10, 60_000).default(1000),
  /** `maxconn` of the process (global) and of the frontend. */
  maxConn: int(16, 1_000_000).default(4096),
  /** `nbthread`: worker threads (1 on a small machine). */
  threads: int(1, 64).default(1),
  /** `balance`: `hash` is the product; `roundrobin` exists only for the benchmark's comparison. */
  balance: z.enum(["hash", "roundrobin"]).default("hash"),
});

export type HaproxySpec = z.output<typeof HaproxySpecSchema>;
export type HaproxySpecInput = z.input<typeof HaproxySpecSchema>;

/** Host name of an empty node slot (see renderHaproxyConfig). */
export const SLOT_HOST = "stratus-slot.invalid";

/** Names in the generated file that the runtime client and the docs rely on. */
export const HAPROXY_NAMES = {
  frontend: "stratus_in",
  apiBackend: "stratus_api",
  nodesBackend: "stratus_nodes",
  /** Slot N is `node<N>` with id N. */
  slotPrefix: "node",
} as const;

/**
 * Applies defaults and validates.
 * @throws StratusError INVALID_CONFIG listing every problem.
 */
export function resolveHaproxySpec(raw: HaproxySpecInput | undefined): Readonly<HaproxySpec> {
  const r = HaproxySpecSchema.safeParse(raw ?? {});
  if (!r.success) {
    const problems = r.error.issues.map((i) => ({ path: i.path.map(String).join(".") || "(spec)", message: i.message }));
    throw new StratusError("INVALID_CONFIG", `Invalid HAProxy spec: ${problems.map((p) => `${p.path}: ${p.message}`).join("; ")}`, { details: problems });
  }
  const s = r.data;
  if (s.checkFastInterMs > s.checkInterMs) {
    throw new StratusError("INVALID_CONFIG", "Invalid HAProxy spec: checkFastInterMs must be <= checkInterMs");
  }
  return Object.freeze(s);
}

/** How long HAProxy keeps an idle client connection (`timeout http-keep-alive`), s; clients are told 2 s less. */
const CLIENT_KEEP_ALIVE_S = 10;

/** The HAProxy 2.6 configuration text for a spec (see the file comment and docs/cluster.md). */
export function renderHaproxyConfig(input: HaproxySpecInput | undefined): string {
  const s = resolveHaproxySpec(input);
  const n = HAPROXY_NAMES;
  const lines: string[] = [
    "# Generated by `stratus lb haproxy` (src/lb/haproxy-config.ts); every directive: docs/cluster.md.",
    "global",
    `    stats socket ${s.statsSocket} mode 600 level admin expose-fd listeners`,
    `    server-state-file ${s.stateFile}`,
    `    maxconn ${s.maxConn}`,
    `    nbthread ${s.threads}`,
    "",
    "defaults",
    "    mode http",
    "    option http-keep-alive",
    `    timeout connect ${s.timeoutConnectMs}ms`,
    `    timeout client ${s.timeoutClientMs}ms`,
    `    timeout server ${s.timeoutServerMs}ms`,
    `    timeout check ${s.timeoutCheckMs}ms`,
    "    timeout http-request 10s",
    `    timeout http-keep-alive ${CLIENT_KEEP_ALIVE_S}s`,
    "    timeout queue 30s",
    "    load-server-state-from-file global",
    "",
    `frontend ${n.frontend}`,
    `    bind ${s.bind}`,
    `    maxconn ${s.maxConn}`,
    // The servers keep idle connections 65 s and say so in `Keep-Alive`; HAProxy would pass that on, and a
    // client would then reuse a connection HAProxy has closed. Clients are told HAProxy's own idle time, less a margin.
    `    http-response set-header keep-alive timeout=${CLIENT_KEEP_ALIVE_S - 2}`,
    `    use_backend ${n.apiBackend} if { path_beg /api/ }`,
    `    use_backend ${n.nodesBackend} if { path_beg /fn/ }`,
    `    default_backend ${n.apiBackend}`,
    "",
    `backend ${n.apiBackend}`,
    "    balance roundrobin",
    "    option httpchk",
    "    http-check send meth GET uri /healthz",
    "    http-check expect status 200",
    "    retries 2",
    "    retry-on conn-failure empty-response",
    "    option redispatch 1",
    "    http-request disable-l7-retry unless METH_GET || METH_HEAD",
    `    default-server check inter ${s.checkInterMs}ms rise ${s.checkRise} fall ${s.checkFall}`,
    ...s.controlPlanes.map((addr, i) => `    server cp${i + 1} ${addr}`),
    "",
    `backend ${n.nodesBackend}`,
    ...(s.balance === "hash"
      ? [
          "    balance hash path,field(3,/)",
          "    hash-type consistent sdbm avalanche",
          ...(s.hashBalanceFactor > 0 ? [`    hash-balance-factor ${s.hashBalanceFactor}`] : []),
        ]
      : ["    balance roundrobin"]),
    "    option httpchk",
    "    http-check send meth GET uri /readyz",
    "    http-check disable-on-404",
    "    http-check expect status 200",
    `    retries ${s.retries}`,
    // Not `empty-response` here: a node killed mid-request closes without an answer too, and replaying its
    // in-flight requests would pile them onto the survivors just while they cold-start its functions; they fail
    // fast instead. The keep-alive race is avoided at its source (65 s on the node, docs/cluster.md).
    "    retry-on conn-failure 503",
    "    option redispatch 1",
    "    http-request disable-l7-retry unless METH_GET || METH_HEAD || { req.hdr(idempotency-key) -m found }",
    // The slots' host name is never resolved (no `libc` in init-addr, and `.invalid` never resolves,
    // RFC 6761); it is there because HAProxy restores a state file's address only for a server named by
    // host name (`init-addr last`). 127.0.0.1 is the placeholder until the runtime API sets an address;
    // the slots start `disabled` (maintenance), so nothing is sent to it.
    `    default-server check weight 100 inter ${s.checkInterMs}ms fastinter ${s.checkFastInterMs}ms downinter ${s.checkDownInterMs}ms rise ${s.checkRise} fall ${s.checkFall} init-addr last,127.0.0.1 disabled`,
    `    server-template ${n.slotPrefix} 1-${s.maxNodes} ${SLOT_HOST}:${s.nodePort}`,
    "",
  ];
  return lines.join("\n");
}
