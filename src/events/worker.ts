/**
 * The async worker (control plane): leases due jobs per function — at most the function's
 * `asyncConcurrency` at once in this control plane, so a backlog cannot take every instance from
 * synchronous traffic — and dispatches each through the gateway as a normal invocation
 * (`<gatewayUrl>/fn/<name><path>`, the stored method, headers and body) carrying
 *   x-stratus-dispatch-token (the gateway's proof that this is the worker: no second authorization),
 *   x-stratus-request-id: <invocationId>-<attempt>, x-stratus-invocation-id, x-stratus-attempt,
 *   x-stratus-trigger (trigger jobs: schedule, storage, postgres).
 * A 2xx completes the job; any other status, a timeout or a broken connection fails the attempt
 * (src/events/queue-rules.ts decides retry or DLQ). The lease lasts the function's timeout plus
 * `leaseMarginMs`, and the dispatch gives up at timeout + half the margin, so a healthy worker never
 * loses its lease.
 *
 * One loop per worker: a tick every `pollIntervalMs`, or at once after `wake()` (an enqueue on this
 * control plane, a finished job). A tick never overlaps another; every loop in it is bounded by the
 * number of functions with work and their free concurrency.
 */
import { Agent, request } from "undici";
import type { Logger } from "../shared/logger";
import { HEADERS } from "../shared/protocol";
import { StratusError } from "../shared/errors";
import { parseFunctionConfig } from "../shared/function-config";
import type { FunctionCatalog } from "./catalog";
import { RESULT_BODY_MAX, type JobQueue, type LeasedJob } from "./queue";


const DEFAULTS = parseFunctionConfig("deleted", {});

export interface AsyncWorkerOptions {
  readonly queue: JobQueue;
  readonly catalog: FunctionCatalog;
  readonly logger: Logger;
  /** Base URL of the gateway (`http://127.0.0.1:8080`). */
  readonly gatewayUrl: () => string | null;
  /** Secret the gateway checks (GatewayOptions.dispatchToken). */
  readonly dispatchToken: string;
  /** Lease = function timeout + this, ms (platform setting events.leaseMarginMs). */
  readonly leaseMarginMs: number;
  /** Poll interval, ms (platform setting events.pollIntervalMs). */
  readonly pollIntervalMs: number;
  /** Clock, epoch ms (attempt start times). */
  readonly now?: () => number;
}

export interface AsyncWorker {
  /** Starts polling. */
  start(): void;
  /** Runs a tick soon (coalesced). */
  wake(): void;
  /** Jobs being dispatched now, per function. */
  inFlight(): Record<string, number>;
  /** Stops leasing; waits for in-flight dispatches up to `deadlineMs`, then aborts them (their leases expire and another worker retries). Idempotent. */
  stop(deadlineMs: number): Promise<void>;
}

/** Error code of a failed dispatch, from the gateway's error body when it has one. */
function errorCodeOf(status: number, contentType: string | null, body: Buffer): { code: string; message: string } {
  if (contentType?.startsWith("application/json") === true) {
    try {
      const e = (JSON.parse(body.toString("utf8")) as { error?: { code?: unknown; message?: unknown } }).error;
      if (typeof e?.code === "string") return { code: e.code, message: typeof e.message === "string" ? e.message : e.code };
    } catch {
      // not our body: fall through
    }
  }
  return { code: status >= 500 ? "FUNCTION_ERROR" : `HTTP_${status}`, message: `The function answered ${status}: ${body.subarray(0, 200).toString("utf8")}` };
}

export function createAsyncWorker(options: AsyncWorkerOptions): AsyncWorker {
  const { queue, catalog, logger } = options;
  const now = options.now ?? Date.now;
  const graceMs = Math.floor(options.leaseMarginMs / 2);
  const agent = new Agent({ connections: 256, keepAliveTimeout: 10_000 });
  const running = new Map<string, number>();
  const controllers = new Set<AbortController>();
  const tasks = new Set<Promise<void>>();
  let timer: NodeJS.Timeout | null = null;
  let ticking: Promise<void> | null = null;
  let again = false;
  let stopped = false;

  async function tick(): Promise<void> {
    // No node to dispatch to (none connected yet, or all draining): jobs wait, no attempt is spent.
    if (options.gatewayUrl() === null) return;
    for (const name of await queue.activeFunctions()) {
      if (stopped) return;
      const entry = await catalog.get(name);
      // Jobs of a function with nothing active yet wait for a deploy. Jobs of a deleted function run with
      // the default config: the gateway answers 404 FUNCTION_NOT_FOUND, so they end in the DLQ.
      if (entry === null && (await catalog.exists(name))) continue;
      const c = entry?.config ?? DEFAULTS;
      const free = Math.min(c.asyncConcurrency, c.maxInstances * c.concurrency) - (running.get(name) ?? 0);
      if (free <= 0) continue;
      const leased = await queue.lease(name, free, c.timeout + options.leaseMarginMs);
      for (const l of leased) track(dispatch(l, c.timeout));
    }
  }

  function track(p: Promise<void>): void {
    tasks.add(p);
    void p.finally(() => tasks.delete(p));
  }

  function runTick(): void {
    if (stopped) return;
    if (ticking !== null) {
      again = true;
      return;
    }
    ticking = tick().catch((err: unknown) => logger.warn({ err }, "async worker tick failed; will retry")).finally(() => {
      ticking = null;
      if (again) {
        again = false;
        setImmediate(runTick);
      }
    });
  }

  async function dispatch(l: LeasedJob, timeoutMs: number): Promise<void> {
    const { job } = l;
    const name = job.functionName;
    running.set(name, (running.get(name) ?? 0) + 1);
    const ac = new AbortController();
    controllers.add(ac);
    const startedAt = now();
    try {
      const headers: Record<string, string> = {
        ...job.request.headers,
        [HEADERS.dispatchToken]: options.dispatchToken,
        [HEADERS.requestId]: l.requestId,
        [HEADERS.invocationId]: job.id,
        [HEADERS.attempt]: String(l.attempt),
      };
      if (job.origin.kind !== "async" && job.origin.kind !== "replay" && job.origin.trigger !== undefined) headers[HEADERS.trigger] = job.origin.trigger;
      const body = Buffer.from(job.request.bodyBase64, "base64");
      let status: number | null = null;
      let contentType: string | null = null;
      let bytes = Buffer.alloc(0);
      let failure: { code: string; message: string } | null = null;
      try {
        const base = options.gatewayUrl();
        if (base === null) throw new StratusError("UNAVAILABLE", "No node is connected to dispatch to");
        const r = await request(`${base}/fn/${name}${job.request.path}`, {
          dispatcher: agent, method: job.request.method as "POST", headers, body: body.length > 0 || !["GET", "HEAD"].includes(job.request.method) ? body : null,
          headersTimeout: timeoutMs + graceMs, bodyTimeout: timeoutMs + graceMs, signal: ac.signal,
        });
        status = r.statusCode;
        const ct = r.headers["content-type"];
        contentType = typeof ct === "string" ? ct : null;
        const chunks: Buffer[] = [];
        let kept = 0;
        // Keep RESULT_BODY_MAX + 1 bytes (so truncation is visible); drain the rest.
        for await (const chunk of r.body as AsyncIterable<Buffer>) {
          if (kept <= RESULT_BODY_MAX) {
            chunks.push(chunk);
            kept += chunk.length;
          }
        }
        bytes = Buffer.concat(chunks).subarray(0, RESULT_BODY_MAX + 1);
        if (status < 200 || status > 299) failure = errorCodeOf(status, contentType, bytes);
      } catch (err) {
        const e = err as { code?: string; message?: string };
        failure = e.code === "UND_ERR_HEADERS_TIMEOUT" || e.code === "UND_ERR_BODY_TIMEOUT"
          ? { code: "FUNCTION_TIMEOUT", message: "No answer within the function's timeout" }
          : { code: "DISPATCH_FAILED", message: `Dispatch failed: ${e.code ?? ""} ${e.message ?? String(err)}`.trim() };
      }
      if (failure === null) {
        await queue.complete(l, { status: status as number, contentType, bodyBase64: bytes.toString("base64"), startedAt });
      } else {
        const r = await queue.fail(l, { status, errorCode: failure.code, errorMessage: failure.message, startedAt });
        if (r.next === "dead") logger.warn({ fn: name, invocationId: job.id, attempts: l.attempt, code: failure.code }, "async invocation dead-lettered");
      }
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === "LEASE_LOST") logger.warn({ fn: name, invocationId: job.id, attempt: l.attempt }, "lease lost before the attempt ended; its result was refused");
      else logger.error({ err, fn: name, invocationId: job.id }, "recording an async attempt failed; the lease will expire and the job run again");
    } finally {
      controllers.delete(ac);
      running.set(name, (running.get(name) ?? 1) - 1);
      if (!stopped) runTick();
    }
  }

  return {
    start() {
      if (timer !== null || stopped) return;
      timer = setInterval(runTick, options.pollIntervalMs);
      timer.unref();
      runTick();
    },
    wake: () => runTick(),
    inFlight: () => Object.fromEntries([...running].filter(([, n]) => n > 0)),
    async stop(deadlineMs) {
      if (stopped) return;
      stopped = true;
      if (timer !== null) clearInterval(timer);
      await ticking;
      let deadline: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...tasks]),
        new Promise<void>((resolve) => {
          deadline = setTimeout(resolve, deadlineMs);
          deadline.unref();
        }),
      ]);
      clearTimeout(deadline);
      for (const ac of controllers) ac.abort();
      await Promise.allSettled([...tasks]);
      await agent.close().catch(() => {});
    },
  };
}
