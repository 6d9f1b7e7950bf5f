/**
 * Row shapes and row → record mappers shared by the SQL implementations (SQLite and PostgreSQL use
 * the same table and column names). JSON columns arrive decoded (`config`, `result`: SQLite decodes
 * its TEXT, `pg` its `json`); `cold` is 0/1 in SQLite and a boolean in PostgreSQL.
 */
import type { ErrorGroup, InvocationRecord, LogLevelName, StoredLogEntry } from "../shared/invocation";
import type { BuildRecord, BuildStatus, FunctionRecord, JoinTokenRecord, NodeLoad, NodeRecord, NodeState, TokenRecord, VersionRecord, VersionStatus } from "./store";
import type { StoredNode } from "./persistence";

/** Log levels as stored (a number, so `minLevel` is one comparison). */
export const LEVEL_RANK: Record<LogLevelName, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const RANK_LEVEL: Record<number, LogLevelName> = { 10: "debug", 20: "info", 30: "warn", 40: "error" };

/** Columns of a version joined with its function (`versions v JOIN functions f`). */
export const VERSION_COLUMNS = `f.name AS function_name, v.version, v.digest, v.entry, v.export_name, v.config,
  v.source_digest, v.status, v.image, v.created_at`;

export interface FunctionRow { id: number; name: string; created_at: number; active_version: string | null; activated_at: number | null }
export interface VersionRow {
  function_name: string; version: string; digest: string; entry: string; export_name: string; config: unknown;
  source_digest: string; status: VersionStatus; image: string | null; created_at: number;
}
export interface TokenRow { id: string; name: string; hash: string; created_at: number; revoked_at: number | null }
export interface BuildRow {
  id: string; status: BuildStatus; source_digest: string | null; error_code: string | null; error_message: string | null;
  result: unknown; created_at: number; finished_at: number | null;
}
export interface LogRow {
  seq: number; function_name: string; ts: number; level: number; source: "function" | "platform"; stream: "stdout" | "stderr" | null;
  request_id: string | null; instance_id: string | null; message: string;
}
export interface InvocationRow {
  request_id: string; function_name: string; version: string; instance_id: string | null; node_id: string; cold: number | boolean;
  queue_ms: number; start_ms: number; init_ms: number | null; handler_ms: number; total_ms: number; status: number;
  error_code: string | null; bytes_in: number; bytes_out: number; peak_memory_bytes: number | null; traceparent: string; ts: number;
  trigger_id: string | null; event_id: string | null; attempt: number | null;
}
export interface ErrorGroupRow {
  function_name: string; fingerprint: string; code: string; message_shape: string; top_frame: string | null; count: number;
  first_seen: number; last_seen: number; sample_request_id: string;
}

export const toFunction = (r: FunctionRow): FunctionRecord =>
  ({ name: r.name, createdAt: r.created_at, activeVersion: r.active_version, activatedAt: r.activated_at });
export const toVersion = (r: VersionRow): VersionRecord => ({
  functionName: r.function_name, version: r.version, digest: r.digest, entry: r.entry, exportName: r.export_name,
  config: r.config, sourceDigest: r.source_digest, status: r.status, image: r.image, createdAt: r.created_at,
});
export const toToken = (r: TokenRow): TokenRecord => ({ id: r.id, name: r.name, createdAt: r.created_at, revokedAt: r.revoked_at });
export const toBuild = (r: BuildRow): BuildRecord => ({
  id: r.id, status: r.status, sourceDigest: r.source_digest,
  error: r.error_code === null ? null : { code: r.error_code, message: r.error_message ?? "" },
  result: r.result ?? null, createdAt: r.created_at, finishedAt: r.finished_at,
});
export const toLog = (r: LogRow): StoredLogEntry => ({
  seq: r.seq, functionName: r.function_name, ts: r.ts, level: RANK_LEVEL[r.level] ?? "info", source: r.source, stream: r.stream,
  requestId: r.request_id, instanceId: r.instance_id, message: r.message,
});
export const toInvocation = (r: InvocationRow): InvocationRecord => ({
  requestId: r.request_id, functionName: r.function_name, version: r.version, instanceId: r.instance_id, nodeId: r.node_id,
  coldStart: r.cold === true || r.cold === 1, queueMs: r.queue_ms, startMs: r.start_ms, initMs: r.init_ms, handlerMs: r.handler_ms,
  totalMs: r.total_ms, status: r.status, errorCode: r.error_code, bytesIn: r.bytes_in, bytesOut: r.bytes_out,
  peakMemoryBytes: r.peak_memory_bytes, traceparent: r.traceparent, ts: r.ts,
  trigger: r.trigger_id ?? null, eventId: r.event_id ?? null, attempt: r.attempt ?? null,
});
export const toErrorGroup = (r: ErrorGroupRow): ErrorGroup => ({
  functionName: r.function_name, fingerprint: r.fingerprint, code: r.code, messageShape: r.message_shape, topFrame: r.top_frame,
  count: r.count, firstSeen: r.first_seen, lastSeen: r.last_seen, sampleRequestId: r.sample_request_id,
});

export interface JoinTokenRow { id: string; name: string; hash: string; created_at: number; expires_at: number; revoked_at: number | null }
export const toJoinToken = (r: JoinTokenRow): JoinTokenRecord => ({ id: r.id, name: r.name, createdAt: r.created_at, expiresAt: r.expires_at, revokedAt: r.revoked_at });

/** `load` is JSON text in SQLite and `json` (already parsed) in PostgreSQL. */
export interface NodeRow {
  id: number; name: string; url: string; driver: string; state: string; created_at: number; last_seen: number | null;
  load: string | NodeLoad | null; credential_hash: string; removed_at: number | null;
}
export const toNode = (r: NodeRow): NodeRecord => ({
  id: r.id, name: r.name, url: r.url, driver: r.driver, state: r.state as NodeState, createdAt: r.created_at, lastSeen: r.last_seen,
  load: r.load === null ? null : typeof r.load === "string" ? (JSON.parse(r.load) as NodeLoad) : r.load,
});
export const toStoredNode = (r: NodeRow): StoredNode => ({ ...toNode(r), credentialHash: r.credential_hash, removedAt: r.removed_at });
