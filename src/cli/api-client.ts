/**
 * Typed client of the public API (`/api/v1`), used by every CLI command. Uses Node's built-in fetch
 * (undici inside Node): loading the undici package would add to every command's start-up.
 * Error responses become StratusErrors with the server's code and message; an unreachable platform
 * is UNAVAILABLE (with the URL in the message).
 */
import { StratusError, isErrorCode } from "../shared/errors";
import type { ErrorGroup, InvocationRecord, LogEntry, StoredLogEntry } from "../shared/invocation";

function queryString(query: Record<string, string>): string {
  const q = new URLSearchParams(query).toString();
  return q === "" ? "" : `?${q}`;
}

/** A function as listed. */
export interface FunctionSummary {
  name: string;
  activeVersion: string | null;
  activatedAt: number | null;
  createdAt: number;
  url: string;
}

/** A function as described. */
export interface FunctionDetail extends FunctionSummary {
  config: Record<string, unknown> | null;
  /** `image`: the driver's immutable reference of the version (Docker: `registry/repo@sha256:…`), null for the process driver. */
  version: { version: string; digest: string; createdAt: number; exportName: string; image: string | null } | null;
  instances: { version: string | null; instances: number; busy: number; idle: number; starting: number; queued: number };
}

export interface VersionSummary {
  version: string;
  digest: string;
  sourceDigest: string;
  createdAt: number;
  status: string;
  active: boolean;
}

export interface TokenSummary {
  id: string;
  name: string;
  createdAt: number;
  revokedAt: number | null;
}

export interface JoinTokenSummary {
  id: string;
  name: string;
  createdAt: number;
  expiresAt: number;
  revokedAt: number | null;
}

export interface NodeSummary {
  id: number | null;
  name: string;
  url: string;
  driver: string;
  state: "ready" | "draining" | "lost";
  lastSeen: number | null;
  load: { inFlight: number; queued: number; instances: number; memUsedBytes: number; memFreeBytes: number; warm: string[] } | null;
  connected: boolean;
}

export interface DeployedFunction {
  name: string;
  version: string;
  url: string;
  status: "activated" | "unchanged";
}

/** One line of the deploy stream. */
export type DeployEvent =
  | { type: "log"; line: string }
  | { type: "result"; functions: DeployedFunction[] }
  | { type: "error"; error: { code: string; message: string; details?: unknown } };

/** A raw HTTP answer of `invoke`. */
export interface InvokeResult {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** One attempt of an async invocation. */
export interface AsyncAttempt {
  attempt: number;
  requestId: string;
  startedAt: number | null;
  endedAt: number;
  status: number | null;
  errorCode: string | null;
  errorMessage: string | null;
}

/** An async or event invocation as the API shows it (GET /api/v1/invocations/:id). */
export interface AsyncInvocation {
  invocationId: string;
  function: string;
  status: "queued" | "running" | "succeeded" | "dead" | "replayed";
  origin: { kind: string; trigger?: string; eventId?: string };
  attempts: number;
  maxAttempts: number;
  createdAt: number;
  updatedAt: number;
  nextAttemptAt: number | null;
  finishedAt: number | null;
  replayedAs: string | null;
  statusUrl: string;
  error: { code: string; message: string } | null;
  result: { status: number; contentType: string | null; truncated: boolean; body: string; bodyEncoding: "utf8" | "base64" } | null;
  history: AsyncAttempt[];
  request?: { method: string; path: string; headers: Record<string, string>; body: string; bodyEncoding: "utf8" | "base64" };
}

export interface DeadLetterSummary {
  invocationId: string;
  origin: { kind: string; trigger?: string; eventId?: string };
  attempts: number;
  error: { code: string; message: string } | null;
  createdAt: number;
  finishedAt: number | null;
  method: string;
  path: string;
  lastRequestId: string | null;
}

export interface TriggerSummary {
  id: string;
  /** `schedule`, `rate`, or the key naming the trigger's source (`queue`, `postgres`, `storage`…). */
  kind: string;
  schedule?: string;
  timezone?: string;
  rate?: string;
  catchUp?: string;
  lastSlot: number | null;
  nextSlot: number | null;
  /** The trigger as declared, credentials redacted by the API (absent from an older control plane). */
  config?: unknown;
  /** Queue triggers: broker type, where they consume from, the source's state (null: not running here) and why not. */
  type?: string;
  from?: string;
  status?: { connected: boolean; inFlight: number; settled: { ack: number; retry: number; dead: number }; lastError: string | null } | null;
  problem?: string | null;
  /** storage: the bucket and the URL the storage system posts notifications to. */
  bucket?: string;
  url?: string;
  /** postgres: the table and the replication slot (and, like queue triggers, status and problem). */
  table?: string;
  slot?: string;
}

/** Connection settings: the platform's base URL and an API token. */
export interface Connection {
  readonly url: string;
  readonly token?: string;
}

function toError(status: number, text: string): StratusError {
  let parsed: { error?: { code?: unknown; message?: unknown; details?: unknown } } | null = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not the common body
  }
  const e = parsed?.error;
  if (e && isErrorCode(e.code)) return new StratusError(e.code, typeof e.message === "string" ? e.message : undefined, e.details === undefined ? {} : { details: e.details });
  return new StratusError(status >= 500 ? "INTERNAL" : "INVALID_ARGUMENT", `HTTP ${status}: ${text.slice(0, 200)}`);
}

/** The API client. Every method throws StratusError (the server's code, or UNAVAILABLE). */
export class ApiClient {
  readonly base: string;
  constructor(private readonly conn: Connection) {
    this.base = conn.url.replace(/\/+$/, "");
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.conn.token ? { authorization: `Bearer ${this.conn.token}` } : {}), ...extra };
  }

  private async send(method: string, path: string, init: { body?: string | Buffer; headers?: Record<string, string> } = {}) {
    try {
      return await fetch(this.base + path, { method, headers: this.headers(init.headers), body: init.body });
    } catch (cause) {
      // undici wraps the socket error (ECONNREFUSED, ENOTFOUND…) one or two levels down.
      let reason = (cause as Error).message;
      for (let c: unknown = cause, depth = 0; c && depth < 4; c = (c as { cause?: unknown }).cause, depth++) {
        const code = (c as { code?: unknown }).code;
        if (typeof code === "string") {
          reason = code;
          break;
        }
      }
      throw new StratusError("UNAVAILABLE", `Could not reach the platform at ${this.base} (${reason}); is \`stratus up\` running?`, { cause });
    }
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.send(method, path, body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } });
    const text = await res.text();
    if (!res.ok) throw toError(res.status, text);
    return JSON.parse(text) as T;
  }

  private fn(name: string): string {
    return `/api/v1/functions/${encodeURIComponent(name)}`;
  }

  listFunctions = async () => (await this.json<{ functions: FunctionSummary[] }>("GET", "/api/v1/functions")).functions;
  getFunction = (name: string) => this.json<FunctionDetail>("GET", this.fn(name));
  deleteFunction = (name: string) => this.json<{ deleted: string }>("DELETE", this.fn(name));
  listVersions = async (name: string) => (await this.json<{ versions: VersionSummary[] }>("GET", `${this.fn(name)}/versions`)).versions;
  rollback = (name: string, to?: string) =>
    this.json<{ name: string; version: string; previous: string | null; url: string }>("POST", `${this.fn(name)}/rollback`, to === undefined ? {} : { to });
  getEnv = async (name: string) => (await this.json<{ env: Record<string, string> }>("GET", `${this.fn(name)}/env`)).env;
  patchEnv = async (name: string, patch: { set?: Record<string, string>; unset?: string[] }) =>
    (await this.json<{ env: Record<string, string> }>("PATCH", `${this.fn(name)}/env`, patch)).env;
  listSecrets = async (name: string) => (await this.json<{ secrets: { name: string }[] }>("GET", `${this.fn(name)}/secrets`)).secrets;
  patchSecrets = async (name: string, patch: { set?: Record<string, string>; unset?: string[] }) =>
    (await this.json<{ secrets: { name: string }[] }>("PATCH", `${this.fn(name)}/secrets`, patch)).secrets;
  listTokens = async () => (await this.json<{ tokens: TokenSummary[] }>("GET", "/api/v1/tokens")).tokens;
  createToken = (name?: string) => this.json<TokenSummary & { token: string }>("POST", "/api/v1/tokens", name === undefined ? {} : { name });
  revokeToken = (id: string) => this.json<TokenSummary>("DELETE", `/api/v1/tokens/${encodeURIComponent(id)}`);
  listJoinTokens = async () => (await this.json<{ joinTokens: JoinTokenSummary[] }>("GET", "/api/v1/join-tokens")).joinTokens;
  createJoinToken = (body: { name?: string; ttlSeconds?: number }) => this.json<JoinTokenSummary & { token: string }>("POST", "/api/v1/join-tokens", body);
  revokeJoinToken = (id: string) => this.json<JoinTokenSummary>("DELETE", `/api/v1/join-tokens/${encodeURIComponent(id)}`);
  listNodes = async () => (await this.json<{ nodes: NodeSummary[] }>("GET", "/api/v1/nodes")).nodes;
  drainNode = (id: string) => this.json<NodeSummary>("POST", `/api/v1/nodes/${encodeURIComponent(id)}/drain`, {});
  undrainNode = (id: string) => this.json<NodeSummary>("POST", `/api/v1/nodes/${encodeURIComponent(id)}/undrain`, {});
  removeNode = (id: string) => this.json<NodeSummary>("DELETE", `/api/v1/nodes/${encodeURIComponent(id)}`);
  /** Stored log lines (newest `limit`, oldest first). `query`: since, request, level, limit. */
  getLogs = async (name: string, query: Record<string, string>) =>
    (await this.json<{ lines: StoredLogEntry[] }>("GET", `${this.fn(name)}/logs${queryString(query)}`)).lines;
  /** Follows new log lines (SSE) until `signal` aborts; calls `onLine` for each. */
  followLogs = async (name: string, query: Record<string, string>, onLine: (line: LogEntry) => void, signal?: AbortSignal): Promise<void> => {
    const res = await fetch(`${this.base}${this.fn(name)}/logs${queryString({ ...query, follow: "1" })}`, { headers: this.headers(), ...(signal ? { signal } : {}) })
      .catch((err: unknown) => {
        throw new StratusError("UNAVAILABLE", `Cannot reach ${this.base}: ${err instanceof Error ? err.message : String(err)}`);
      });
    if (res.status !== 200 || res.body === null) throw toError(res.status, await res.text());
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of res.body) {
      buf += decoder.decode(chunk as Uint8Array, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) !== -1) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of event.split("\n")) if (line.startsWith("data: ")) onLine(JSON.parse(line.slice(6)) as LogEntry);
      }
    }
  };
  /** Invocation records, newest first. `query`: status, cold, slowerThanMs, since, request, limit. */
  listInvocations = async (name: string, query: Record<string, string>) =>
    (await this.json<{ invocations: InvocationRecord[] }>("GET", `${this.fn(name)}/invocations${queryString(query)}`)).invocations;
  /** An async or event invocation (docs/events.md); `withRequest` adds the stored request. */
  getAsyncInvocation = async (id: string, withRequest = false) =>
    this.json<AsyncInvocation>("GET", `/api/v1/invocations/${encodeURIComponent(id)}${withRequest ? "?request=1" : ""}`);
  listDeadLetters = async (name: string, limit?: number) =>
    (await this.json<{ entries: DeadLetterSummary[] }>("GET", `${this.fn(name)}/dlq${limit === undefined ? "" : `?limit=${limit}`}`)).entries;
  getDeadLetter = async (name: string, id: string) => this.json<AsyncInvocation>("GET", `${this.fn(name)}/dlq/${encodeURIComponent(id)}`);
  replayDeadLetter = async (name: string, id: string) =>
    this.json<{ invocationId: string; replayOf: string; statusUrl: string }>("POST", `${this.fn(name)}/dlq/${encodeURIComponent(id)}/replay`);
  purgeDeadLetters = async (name: string) => (await this.json<{ purged: number }>("DELETE", `${this.fn(name)}/dlq`)).purged;
  listTriggers = async (name: string) => (await this.json<{ triggers: TriggerSummary[] }>("GET", `${this.fn(name)}/triggers`)).triggers;
  /** Error groups, most recently seen first. */
  listErrorGroups = async (name: string) => (await this.json<{ groups: ErrorGroup[] }>("GET", `${this.fn(name)}/errors`)).groups;

  /**
   * Uploads a packed project and calls `onEvent` for each streamed line; resolves with the result.
   * @throws StratusError from the upload refusal or from the stream's error line.
   */
  async deploy(archive: Buffer, options: { only?: string[]; project?: string }, onEvent: (e: DeployEvent) => void): Promise<DeployedFunction[]> {
    const q = new URLSearchParams();
    if (options.only && options.only.length > 0) q.set("only", options.only.join(","));
    if (options.project) q.set("project", options.project);
    const qs = q.toString();
    const res = await this.send("POST", `/api/v1/deployments${qs ? `?${qs}` : ""}`, { body: archive, headers: { "content-type": "application/gzip" } });
    if (!res.ok || !res.body) throw toError(res.status, await res.text());
    const decoder = new TextDecoder();
    let buffered = "";
    let outcome: DeployEvent | null = null;
    const handle = (line: string) => {
      if (line.trim() === "") return;
      const e = JSON.parse(line) as DeployEvent;
      if (e.type !== "log") outcome = e;
      onEvent(e);
    };
    for await (const chunk of res.body) {
      buffered += decoder.decode(chunk as Uint8Array, { stream: true });
      let nl;
      while ((nl = buffered.indexOf("\n")) !== -1) {
        handle(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
      }
    }
    handle(buffered);
    const final = outcome as DeployEvent | null;
    if (final === null) throw new StratusError("INTERNAL", "The deploy stream ended without a result");
    if (final.type === "error") {
      const code = isErrorCode(final.error.code) ? final.error.code : "INTERNAL";
      throw new StratusError(code, final.error.message, final.error.details === undefined ? {} : { details: final.error.details });
    }
    return (final as { functions: DeployedFunction[] }).functions;
  }

  /** Calls a function over HTTP (`/fn/<name><path>`), with the token when one is set. */
  async invoke(name: string, options: { method?: string; path?: string; headers?: Record<string, string>; body?: Buffer | string }): Promise<InvokeResult> {
    const path = options.path ?? "/";
    const res = await this.send(options.method ?? (options.body === undefined ? "GET" : "POST"), `/fn/${encodeURIComponent(name)}${path.startsWith("/") ? path : `/${path}`}`, {
      ...(options.body === undefined ? {} : { body: options.body }),
      headers: options.headers ?? {},
    });
    const headers: Record<string, string> = {};
    res.headers.forEach((v, k) => (headers[k] = v));
    return { status: res.status, headers, body: Buffer.from(await res.arrayBuffer()) };
  }
}

/** Parses a common error body, if `body` is one. */
export function parseErrorBody(body: Buffer): { code: string; message: string } | null {
  try {
    const e = JSON.parse(body.toString("utf8"))?.error;
    return e && typeof e.code === "string" && typeof e.message === "string" ? { code: e.code, message: e.message } : null;
  } catch {
    return null;
  }
}
