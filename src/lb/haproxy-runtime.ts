/**
 * A client for HAProxy's runtime API (the "stats socket" at `level admin`, see the 2.6 management
 * guide, section 9.3) over its Unix socket: one connection per command in non-interactive mode (write
 * the command line, read until HAProxy closes). Enough to manage node membership without a restart:
 * fill a server slot's address and port, set it ready / drain / maint, read `show servers state`
 * (saved to the `server-state-file` so a reload keeps membership) and `show stat`.
 *
 * `syncMembership(runtime, nodes)` maps a desired node list (what the control plane's node table
 * holds: stable id, address, port, state) onto the slots of the nodes backend, idempotently, and saves
 * the state file. HAProxy's ring position comes from the slot id, so a node's id must be its slot.
 */
import { connect } from "node:net";
import { rename, writeFile } from "node:fs/promises";
import { StratusError } from "../shared/errors";
import { HAPROXY_NAMES } from "./haproxy-config";

/** Admin state a slot can be put in (`set server … state`). */
export type SlotAdminState = "ready" | "drain" | "maint";

/** One row of `show servers state` for a backend, with the admin state decoded. */
export interface ServerStateRow {
  readonly backendName: string;
  readonly id: number;
  readonly name: string;
  readonly addr: string;
  readonly port: number;
  /** srv_op_state: 0 stopped (down or maint), 1 starting, 2 running, 3 stopping. */
  readonly opState: number;
  /** srv_admin_state as HAProxy's bit flags. */
  readonly adminFlags: number;
  /** Decoded from the flags: forced/inherited/resolution maint wins over drain. */
  readonly admin: SlotAdminState;
  readonly weight: number;
}

/** One row of `show stat` (CSV) as a field map (pxname, svname, status, scur, stot, …). */
export type StatRow = Readonly<Record<string, string>>;

export interface HaproxyRuntime {
  /** Sends one command line; resolves with HAProxy's whole answer. @throws StratusError LB_RUNTIME_ERROR */
  command(line: string): Promise<string>;
  /** `set server <backend>/<server> addr <addr> port <port>`. */
  setServerAddr(backend: string, server: string, addr: string, port: number): Promise<void>;
  /** `set server <backend>/<server> state ready|drain|maint`. */
  setServerState(backend: string, server: string, state: SlotAdminState): Promise<void>;
  /** `show servers state [<backend>]`, parsed. */
  serversState(backend?: string): Promise<ServerStateRow[]>;
  /** `show servers state` verbatim: the format of the `server-state-file`. */
  serversStateRaw(): Promise<string>;
  /** Writes `show servers state` to `file` (atomically: temp file + rename). */
  saveState(file: string): Promise<void>;
  /** `show stat`, parsed. */
  stat(): Promise<StatRow[]>;
}

// srv_admin_state bits (HAProxy 2.6 include/haproxy/server-t.h).
const ADMF_FMAINT = 0x01; // forced by the CLI
const ADMF_IMAINT = 0x02; // inherited from a tracked server
const ADMF_RMAINT = 0x20; // address resolution failed
const ADMF_FDRAIN = 0x08;
const ADMF_IDRAIN = 0x10;
const ADMF_HMAINT = 0x40; // `set server … addr` with no address

/** Decodes srv_admin_state. The config's `disabled` (CMAINT, 0x04) is cleared in effect by `state ready`. */
export function decodeAdminState(flags: number): SlotAdminState {
  if ((flags & (ADMF_FMAINT | ADMF_IMAINT | ADMF_RMAINT | ADMF_HMAINT)) !== 0) return "maint";
  if ((flags & (ADMF_FDRAIN | ADMF_IDRAIN)) !== 0) return "drain";
  return "ready";
}

/** Names the runtime API accepts: no spaces, no separators it would parse. */
const SAFE = /^[A-Za-z0-9_.:[\]-]+$/;
function safe(what: string, value: string): string {
  if (!SAFE.test(value)) throw new StratusError("INVALID_ARGUMENT", `Invalid ${what} for the HAProxy runtime API: ${JSON.stringify(value)}`);
  return value;
}

export interface HaproxyRuntimeOptions {
  /** Path of the admin stats socket. */
  readonly socket: string;
  /** Longest wait for one command, ms (default 5000). */
  readonly timeoutMs?: number;
}

/** A runtime API client for the socket (nothing connects until a command is sent). */
export function createHaproxyRuntime(options: HaproxyRuntimeOptions): HaproxyRuntime {
  const timeoutMs = options.timeoutMs ?? 5000;

  function command(line: string): Promise<string> {
    if (line.includes("\n") || line.includes(";")) {
      return Promise.reject(new StratusError("INVALID_ARGUMENT", "One HAProxy runtime command per call, without newlines or ';'"));
    }
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      const sock = connect(options.socket);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new StratusError("LB_RUNTIME_ERROR", `HAProxy runtime API (${options.socket}) did not answer "${line}" within ${timeoutMs} ms`));
      }, timeoutMs);
      sock.on("connect", () => sock.end(line + "\n"));
      sock.on("data", (c: Buffer) => chunks.push(c));
      sock.on("error", (err) => {
        clearTimeout(timer);
        reject(new StratusError("LB_RUNTIME_ERROR", `HAProxy runtime API (${options.socket}): ${err.message}`));
      });
      sock.on("close", () => {
        clearTimeout(timer);
        resolve(Buffer.concat(chunks).toString("utf8"));
      });
    });
  }

  /** Commands that answer nothing (or an informational line) on success; these answers mean failure. */
  async function mutate(line: string): Promise<string> {
    const out = await command(line);
    const t = out.trim();
    if (/^(No such|Unknown|Require|Permission denied|.*\b(invalid|not allowed|can't|cannot)\b)/i.test(t)) {
      throw new StratusError("LB_RUNTIME_ERROR", `HAProxy refused "${line}": ${t}`);
    }
    return out;
  }

  async function serversStateRaw(): Promise<string> {
    const out = await command("show servers state");
    if (!out.startsWith("1\n")) throw new StratusError("LB_RUNTIME_ERROR", `Unexpected "show servers state" answer: ${out.slice(0, 200)}`);
    return out;
  }

  return {
    command,
    async setServerAddr(backend, server, addr, port) {
      if (!Number.isInteger(port) || port < 1 || port > 65_535) throw new StratusError("INVALID_ARGUMENT", `Invalid port ${port}`);
      await mutate(`set server ${safe("backend", backend)}/${safe("server", server)} addr ${safe("address", addr)} port ${port}`);
    },
    async setServerState(backend, server, state) {
      await mutate(`set server ${safe("backend", backend)}/${safe("server", server)} state ${state}`);
    },
    async serversState(backend) {
      const out = backend === undefined ? await serversStateRaw() : await command(`show servers state ${safe("backend", backend)}`);
      return parseServersState(out);
    },
    serversStateRaw,
    async saveState(file) {
      const text = await serversStateRaw();
      const tmp = `${file}.tmp-${process.pid}`;
      await writeFile(tmp, text, { mode: 0o600 });
      await rename(tmp, file);
    },
    async stat() {
      return parseStatCsv(await command("show stat"));
    },
  };
}

/** Parses `show servers state` (format 1, columns named by its `#` header line). */
export function parseServersState(text: string): ServerStateRow[] {
  const lines = text.split("\n");
  if (lines[0]?.trim() !== "1") {
    const msg = text.trim().slice(0, 200);
    throw new StratusError("LB_RUNTIME_ERROR", `Unexpected "show servers state" answer: ${msg}`);
  }
  const header = lines.find((l) => l.startsWith("# "));
  if (header === undefined) return [];
  const cols = header.slice(2).trim().split(/\s+/);
  const at = (name: string) => {
    const i = cols.indexOf(name);
    if (i < 0) throw new StratusError("LB_RUNTIME_ERROR", `"show servers state" has no column ${name}`);
    return i;
  };
  const iBe = at("be_name"), iId = at("srv_id"), iName = at("srv_name"), iAddr = at("srv_addr"), iOp = at("srv_op_state");
  const iAdm = at("srv_admin_state"), iW = at("srv_uweight"), iPort = at("srv_port");
  const rows: ServerStateRow[] = [];
  for (const line of lines.slice(1)) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const f = line.trim().split(/\s+/);
    const adminFlags = Number(f[iAdm]);
    rows.push({
      backendName: f[iBe]!, id: Number(f[iId]), name: f[iName]!, addr: f[iAddr]!, port: Number(f[iPort]),
      opState: Number(f[iOp]), adminFlags, admin: decodeAdminState(adminFlags), weight: Number(f[iW]),
    });
  }
  return rows;
}

/** Parses `show stat` CSV (first line `# pxname,svname,…`). */
export function parseStatCsv(text: string): StatRow[] {
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  const head = lines[0];
  if (head === undefined || !head.startsWith("# ")) throw new StratusError("LB_RUNTIME_ERROR", `Unexpected "show stat" answer: ${text.slice(0, 200)}`);
  const cols = head.slice(2).split(",");
  return lines.slice(1).map((l) => {
    const f = l.split(",");
    const row: Record<string, string> = {};
    cols.forEach((c, i) => {
      if (c !== "") row[c] = f[i] ?? "";
    });
    return row;
  });
}

/** One node as the membership source (the control plane's node table) describes it. */
export interface MemberNode {
  /** Stable node id = HAProxy slot id (1 … maxNodes); fixes the node's place on the ring. */
  readonly id: number;
  readonly addr: string;
  readonly port: number;
  /** Default "ready". "drain": no new functions hash to it; "maint": out of rotation. */
  readonly state?: SlotAdminState;
}

/** What `syncMembership` changed, for logs and tests. */
export interface MembershipChange {
  readonly id: number;
  readonly server: string;
  readonly action: "addr" | SlotAdminState;
  readonly detail: string;
}

export interface SyncOptions {
  /** Backend of the node slots (default: the generated config's `stratus_nodes`). */
  readonly backend?: string;
  /** Save `show servers state` here after changes (the config's `server-state-file`), so a reload keeps them. */
  readonly stateFile?: string;
}

/**
 * Makes the slots match `nodes`: each listed node's slot gets its address/port and admin state; every
 * other slot that is not in maintenance goes to maint (the node left or was removed). Only what differs
 * is sent, so calling it on every change of the node table is cheap; it then saves the state file.
 * @throws StratusError INVALID_ARGUMENT (duplicate id, id without a slot) | LB_RUNTIME_ERROR
 */
export async function syncMembership(runtime: HaproxyRuntime, nodes: readonly MemberNode[], options: SyncOptions = {}): Promise<MembershipChange[]> {
  const backend = options.backend ?? HAPROXY_NAMES.nodesBackend;
  const slots = await runtime.serversState(backend);
  const byId = new Map(slots.map((s) => [s.id, s]));
  const seen = new Set<number>();
  for (const n of nodes) {
    if (seen.has(n.id)) throw new StratusError("INVALID_ARGUMENT", `Node id ${n.id} is listed twice`);
    seen.add(n.id);
    if (!byId.has(n.id)) throw new StratusError("INVALID_ARGUMENT", `Node id ${n.id} has no HAProxy slot in ${backend} (ids 1–${slots.length}; raise maxNodes)`);
  }
  const changes: MembershipChange[] = [];
  for (const n of nodes) {
    const slot = byId.get(n.id)!;
    const want = n.state ?? "ready";
    if (slot.addr !== n.addr || slot.port !== n.port) {
      // Out of rotation while the address changes, so no request goes to a half-set slot.
      if (slot.admin !== "maint") {
        await runtime.setServerState(backend, slot.name, "maint");
        changes.push({ id: n.id, server: slot.name, action: "maint", detail: "before address change" });
      }
      await runtime.setServerAddr(backend, slot.name, n.addr, n.port);
      changes.push({ id: n.id, server: slot.name, action: "addr", detail: `${slot.addr}:${slot.port} -> ${n.addr}:${n.port}` });
      await runtime.setServerState(backend, slot.name, want);
      changes.push({ id: n.id, server: slot.name, action: want, detail: "" });
    } else if (slot.admin !== want) {
      await runtime.setServerState(backend, slot.name, want);
      changes.push({ id: n.id, server: slot.name, action: want, detail: `was ${slot.admin}` });
    }
  }
  for (const slot of slots) {
    if (seen.has(slot.id) || slot.admin === "maint") continue;
    await runtime.setServerState(backend, slot.name, "maint");
    changes.push({ id: slot.id, server: slot.name, action: "maint", detail: "not in the node list" });
  }
  if (options.stateFile !== undefined) await runtime.saveState(options.stateFile);
  return changes;
}

/** Parses `id=addr:port[:state],…` (the CLI's `--nodes`). @throws StratusError INVALID_ARGUMENT */
export function parseNodeList(text: string): MemberNode[] {
  const out: MemberNode[] = [];
  for (const raw of text.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const m = /^(\d+)=([A-Za-z0-9.-]+|\[[0-9a-fA-F:.]+\]):(\d{1,5})(?::(ready|drain|maint))?$/.exec(raw);
    if (m === null) throw new StratusError("INVALID_ARGUMENT", `Invalid node "${raw}": expected id=addr:port[:ready|drain|maint]`);
    const port = Number(m[3]);
    if (port < 1 || port > 65_535) throw new StratusError("INVALID_ARGUMENT", `Invalid port in "${raw}"`);
    out.push({ id: Number(m[1]), addr: m[2]!.replace(/^\[|\]$/g, ""), port, ...(m[4] === undefined ? {} : { state: m[4] as SlotAdminState }) });
  }
  return out;
}
