/**
 * The async intake (control plane): what the node-fleet route `POST /internal/v1/async` calls with a
 * request the node's gateway recognised as `x-stratus-invocation-type: async`, routed, authorized and
 * read (src/shared/async-request.ts). Checks the function's active config (`maxBodyBytes`, the retry
 * settings), commits the job (durably, see src/events/queue.ts) and only then returns
 * `{ invocationId, status, statusUrl, created }` — the body of the node's 202. A repeated
 * `Idempotency-Key` returns the first job (`created: false`) and enqueues nothing.
 */
import { StratusError } from "../shared/errors";
import type { Logger } from "../shared/logger";
import type { AsyncAccepted, AsyncRequestWire } from "../shared/node-protocol";
import type { FunctionCatalog } from "./catalog";
import type { JobQueue } from "./queue";

/** Options of `createAsyncIntake`. */
export interface AsyncIntakeOptions {
  readonly queue: JobQueue;
  readonly catalog: FunctionCatalog;
  readonly logger: Logger;
  /** The status URL of an invocation id (`<publicUrl>/api/v1/invocations/<id>`). */
  readonly statusUrl: (id: string) => string;
  /** Called after each commit (wakes the worker). */
  readonly onEnqueued?: (functionName: string) => void;
}

export type AsyncIntake = (request: AsyncRequestWire) => Promise<AsyncAccepted>;

/** Builds the intake (see the file comment). @throws StratusError FUNCTION_NOT_FOUND | PAYLOAD_TOO_LARGE */
export function createAsyncIntake(options: AsyncIntakeOptions): AsyncIntake {
  const { queue, catalog } = options;
  return async (r) => {
    // The cache may predate a deploy the node already serves: read fresh before refusing.
    const entry = (await catalog.get(r.functionName)) ?? (await catalog.get(r.functionName, true));
    if (entry === null) throw new StratusError("FUNCTION_NOT_FOUND", `Function "${r.functionName}" not found`);
    const config = entry.config;
    const body = Buffer.from(r.bodyBase64, "base64");
    if (body.length > config.maxBodyBytes) throw new StratusError("PAYLOAD_TOO_LARGE");
    const { job, created } = await queue.enqueue({
      functionName: r.functionName,
      request: { method: r.method, path: r.path, headers: r.headers, bodyBase64: r.bodyBase64 },
      origin: { kind: "async" },
      maxAttempts: config.maxAttempts,
      maxEventAgeS: config.maxEventAgeS,
      retryDelayMs: config.retryDelayMs,
      idempotencyKey: r.idempotencyKey,
    });
    if (created) options.onEnqueued?.(r.functionName);
    options.logger.debug({ rid: r.requestId, fn: r.functionName, id: job.id, created }, "async invocation committed");
    return { invocationId: job.id, status: job.status, statusUrl: options.statusUrl(job.id), created };
  };
}
