/**
 * The HTTP plumbing of the node protocol (src/shared/node-protocol.ts), used by both sides: a client for
 * one peer (an `http(s)://` base URL or `unix:<socket path>`) that sends its bearer key and maps error
 * bodies back to StratusErrors, and the server helpers (JSON body with a cap, common error body).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Readable } from "node:stream";
import { Client } from "undici";
import { StratusError, isErrorCode, toErrorResponse } from "./errors";
import { writeError } from "./write-error";
import { CONTROL_PROOF_HEADER, MAX_PROTOCOL_BODY_BYTES, controlProof } from "./node-protocol";
import { timingSafeEqual } from "node:crypto";

function proofMatches(header: string | string[] | undefined, key: string, body: string): boolean {
  if (typeof header !== "string") return false;
  const a = Buffer.from(header);
  const b = Buffer.from(controlProof(key, body));
  return a.length === b.length && timingSafeEqual(a, b);
}
import type { Logger } from "./logger";

/** A client of one peer. `call` resolves with the parsed JSON (undefined for 204). */
export interface LinkClient {
  call<T>(method: "GET" | "PUT" | "POST" | "DELETE", path: string, body?: unknown, options?: { signal?: AbortSignal }): Promise<T>;
  /** GET returning the body stream (200) or throwing the peer's error. */
  stream(path: string, options?: { signal?: AbortSignal }): Promise<Readable>;
  close(): Promise<void>;
}

/** Options of `createLinkClient`. */
export interface LinkClientOptions {
  /**
   * Require every non-empty 2xx JSON answer to carry `x-stratus-control-proof` = controlProof(proofKey,
   * body) (a node checking that it talks to its real control plane); else CONTROL_PLANE_UNVERIFIED.
   */
  readonly proofKey?: string;
  /** PEM CA certificate(s) trusted for an `https://` peer (instead of the system's). */
  readonly ca?: string;
  /** Send no Authorization header (the join call: the join token is in the body). */
  readonly anonymous?: boolean;
}

/** Creates a client of `url` (`http://host:port`, `https://…`, or `unix:/path/of.sock`) sending `key`. */
export function createLinkClient(url: string, key: string, peer: string, linkOptions: LinkClientOptions = {}): LinkClient {
  const client = url.startsWith("unix:")
    ? new Client("http://localhost", { socketPath: url.slice(5) })
    : new Client(url.replace(/\/+$/, ""), linkOptions.ca !== undefined ? { connect: { ca: linkOptions.ca } } : {});
  const headers = (json: boolean) => ({ ...(linkOptions.anonymous ? {} : { authorization: `Bearer ${key}` }), ...(json ? { "content-type": "application/json" } : {}) });

  async function send(method: string, path: string, body: unknown, signal?: AbortSignal) {
    try {
      return await client.request({
        method: method as "GET", path, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body),
        ...(signal ? { signal } : {}),
      });
    } catch (cause) {
      if (signal?.aborted) throw cause;
      throw new StratusError("UNAVAILABLE", `The ${peer} could not be reached`, { cause });
    }
  }

  async function fail(statusCode: number, text: string): Promise<never> {
    let parsed: { error?: { code?: unknown; message?: unknown; details?: unknown } } = {};
    try {
      parsed = JSON.parse(text);
    } catch {
      // a non-JSON error is reported as INTERNAL below
    }
    const code = isErrorCode(parsed.error?.code) ? parsed.error!.code : "INTERNAL";
    const message = typeof parsed.error?.message === "string" ? parsed.error.message : `the ${peer} answered ${statusCode}`;
    throw new StratusError(code, message, parsed.error?.details === undefined ? {} : { details: parsed.error.details });
  }

  return {
    async call<T>(method: "GET" | "PUT" | "POST" | "DELETE", path: string, body?: unknown, options: { signal?: AbortSignal } = {}): Promise<T> {
      const res = await send(method, path, body, options.signal);
      const text = await res.body.text();
      if (res.statusCode >= 400) return fail(res.statusCode, text);
      if (linkOptions.proofKey !== undefined && text !== "" && !proofMatches(res.headers[CONTROL_PROOF_HEADER], linkOptions.proofKey, text)) {
        throw new StratusError("CONTROL_PLANE_UNVERIFIED", `The answer of ${url} to ${method} ${path.split("?")[0]} carries no valid control-plane proof: it is not this node's control plane`);
      }
      return (text === "" ? undefined : JSON.parse(text)) as T;
    },
    async stream(path, options = {}) {
      const res = await send("GET", path, undefined, options.signal);
      if (res.statusCode >= 400) return fail(res.statusCode, await res.body.text());
      return res.body;
    },
    close: () => client.close(),
  };
}

/**
 * Reads a JSON body of at most MAX_PROTOCOL_BODY_BYTES.
 * @throws StratusError PAYLOAD_TOO_LARGE | INVALID_ARGUMENT
 */
export async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_PROTOCOL_BODY_BYTES) throw new StratusError("PAYLOAD_TOO_LARGE");
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new StratusError("INVALID_ARGUMENT", "The body is not valid JSON");
  }
}

/** Sends `body` as JSON (or an empty response); with `proofKey`, signed for the node (x-stratus-control-proof). */
export function sendJson(res: ServerResponse, status: number, body?: unknown, proofKey?: string): void {
  if (body === undefined) return void res.writeHead(status).end();
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", ...(proofKey !== undefined ? { [CONTROL_PROOF_HEADER]: controlProof(proofKey, text) } : {}) }).end(text);
}

/** Sends the common error body for `err` (logs 5xx). Destroys a response already started. */
export function sendProtocolError(res: ServerResponse, err: unknown, logger: Logger, url: string | undefined): void {
  if (toErrorResponse(err).status >= 500) logger.error({ err, url }, "node protocol error");
  writeError(res, err);
}

/** The protocol route of a request: its path segments below `/internal/v1`, or null for other paths. */
export function protocolRoute(url: string | undefined): { parts: string[]; query: URLSearchParams } | null {
  const raw = url ?? "/";
  const q = raw.indexOf("?");
  const path = q === -1 ? raw : raw.slice(0, q);
  const parts = path.split("/").filter(Boolean);
  if (parts[0] !== "internal" || parts[1] !== "v1") return null;
  let decoded: string[];
  try {
    decoded = parts.slice(2).map(decodeURIComponent);
  } catch {
    throw new StratusError("INVALID_ARGUMENT", "Malformed path");
  }
  return { parts: decoded, query: new URLSearchParams(q === -1 ? "" : raw.slice(q + 1)) };
}
