/**
 * The async worker (control plane): leases due jobs per function — at most the function's
 * `asyncConcurrency` at once in this control plane, so a backlog cannot take every instance from
 * synchronous traffic — and dispatches each through the gateway as a normal invocation
 * (`<gatewayUrl>/fn/<name><path>`, the stored method, headers and body) carrying
 *   x-stratus-dispatch-token (the gateway's proof that this is the worker: no second authorization),
 *   x-stratus-request-id: <invocationId>-<attempt>, x-stratus-invocation-id, x-stratus-attempt,
 *   x-stratus-trigger (schedule and storage jobs).
 * A 2xx completes the job; any other status, a timeout or a broken connection fails the attempt
 * (src/events/queue-rules.ts decides retry or DLQ). The lease lasts the function's timeout plus
 * `leaseMarginMs`, and the dispatch gives up at timeout + half the margin, so a healthy worker never
 * loses its lease.
 *
 * The request itself is src/events/dispatch.ts (shared with the trigger sources' runner).
 *
 * One loop per worker: a tick every `pollIntervalMs`, or at once after `wake()` (an enqueue on this
 * control plane, a finished job). A tick never overlaps another; every loop in it is bounded by the
 * number of functions with work and their free concurrency.
 */
import { Agent } from "undici";
import type { Logger } from "../shared/logger";
import { parseFunctionConfig } from "../shared/function-config";
import type { FunctionCatalog } from "./catalog";
import { dispatchEvent } from "./dispatch";
import type { JobQueue, LeasedJob } from "./queue";


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
      const r = await dispatchEvent(agent, {
        gatewayUrl: options.gatewayUrl(), functionName: name, method: job.request.method, path: job.request.path, headers: job.request.headers,
        body: Buffer.from(job.request.bodyBase64, "base64"), dispatchToken: options.dispatchToken, requestId: l.requestId, attempt: l.attempt,
        invocationId: job.id, ...((job.origin.kind === "schedule" || job.origin.kind === "storage") && job.origin.trigger !== undefined ? { trigger: job.origin.trigger } : {}),
        timeoutMs: timeoutMs + graceMs, signal: ac.signal,
      });
      const { status, contentType, body: bytes, failure } = r;
      if (failure === null) {
        await queue.complete(l, { status: status as number, contentType, bodyBase64: bytes.toString("base64"), startedAt });
      } else {
        const outcome = await queue.fail(l, { status, errorCode: failure.code, errorMessage: failure.message, startedAt });
        if (outcome.next === "dead") logger.warn({ fn: name, invocationId: job.id, attempts: l.attempt, code: failure.code }, "async invocation dead-lettered");
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
