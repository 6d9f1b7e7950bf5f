/**
 * The control plane's event machinery in one piece, so the control plane (src/control/control-plane.ts)
 * wires it in a few lines: the job queue beside the store, the async intake the node-fleet route
 * `POST /internal/v1/async` calls, the worker that dispatches jobs to a connected node's gateway, the
 * scheduler, the queue-trigger sources' runner (src/events/sources/runner.ts), and a retention sweep. Control-side only: it touches the store, so no node imports it.
 *
 * Lifecycle: `openEventsPlane` opens the queue (nothing runs); `start(gatewayUrl)` once the control plane
 * serves (`gatewayUrl()` names a connected node's gateway, or null: jobs wait); `stop(deadlineMs)` before
 * nodes drain (no new leases; in-flight dispatches get the deadline, then their leases simply expire and
 * the job runs again after a restart); `close()` closes the queue before the store.
 */
import { createHash, randomBytes } from "node:crypto";
import type { PlatformConfig } from "../shared/platform-config";
import type { Logger } from "../shared/logger";
import type { ConfigStore, FunctionStore } from "../store/store";
import { createFunctionCatalog, type FunctionCatalog } from "./catalog";
import { createAsyncIntake, type AsyncIntake } from "./intake";
import { openQueue } from "./open-queue";
import type { JobQueue } from "./queue";
import { createScheduler, type Scheduler } from "./scheduler";
import { createSourceRunner, type SourceRunner } from "./sources/runner";
import { createAsyncWorker, type AsyncWorker } from "./worker";
import { createS3Intake, type S3Intake } from "./storage/s3-notifications";
import { releaseTableChangeSlots, type SlotRelease } from "./sources/postgres-changes";
import type { CatalogEntry } from "./catalog";

export interface EventsPlane {
  readonly queue: JobQueue;
  readonly catalog: FunctionCatalog;
  readonly scheduler: Scheduler;
  /** The queue-trigger sources (NATS, RabbitMQ, Redis); null before `start`. */
  readonly sources: SourceRunner | null;
  /** For the node-fleet route POST /internal/v1/async: commits a job, resolves the 202 body. */
  readonly intake: AsyncIntake;
  /** For the API route POST /api/v1/events/s3/:name/:trigger: bucket notifications → jobs. */
  readonly s3: S3Intake;
  /** 256 random bits, new each start, never stored; nodes get only its sha256 (DesiredState.dispatchTokenHash). */
  readonly dispatchToken: string;
  /** sha256 hex of `dispatchToken`. */
  readonly dispatchTokenHash: string;
  /** The status URL of an invocation. */
  statusUrl(id: string): string;
  /**
   * After a function was deleted (`entry` and `secrets` read before the delete): stops its trigger
   * sources here and drops its postgres triggers' replication slots. Never throws.
   */
  releaseDeleted(entry: CatalogEntry, secrets: Readonly<Record<string, string>>): Promise<SlotRelease[]>;
  /** Wakes the worker (after a replay). */
  wake(): void;
  /** `gatewayUrl()`: a connected node's gateway base URL, or null (no node: the worker waits). */
  start(gatewayUrl: () => string | null): void;
  stop(deadlineMs: number): Promise<void>;
  close(): Promise<void>;
}

export interface EventsPlaneOptions {
  /** The store location (`stratus up`'s resolved `store` setting): the queue lives beside it. */
  readonly storeLocation: string;
  /** Functions (the catalog) and their secrets (trigger credentials: broker URLs, bucket notification secrets, database URLs). */
  readonly store: FunctionStore & Pick<ConfigStore, "getSecretValues">;
  readonly logger: Logger;
  readonly settings: PlatformConfig["events"];
  /** Public base URL, for status URLs. */
  readonly publicUrl: () => string;
}

export async function openEventsPlane(options: EventsPlaneOptions): Promise<EventsPlane> {
  const { logger, settings } = options;
  const queue = await openQueue(options.storeLocation);
  const catalog = createFunctionCatalog(options.store, logger);
  const dispatchToken = randomBytes(32).toString("base64url");
  const dispatchTokenHash = createHash("sha256").update(dispatchToken).digest("hex");
  let worker: AsyncWorker | null = null;
  let sources: SourceRunner | null = null;
  let purgeTimer: NodeJS.Timeout | null = null;
  const statusUrl = (id: string) => `${options.publicUrl()}/api/v1/invocations/${id}`;
  const wake = () => worker?.wake();
  const scheduler = createScheduler({ queue, catalog, logger: logger.child({ component: "scheduler" }), now: Date.now, onEnqueued: wake });
  const intake = createAsyncIntake({ queue, catalog, logger, statusUrl, onEnqueued: wake });
  const secrets = (fn: string) => options.store.getSecretValues(fn);
  const s3 = createS3Intake({ queue, catalog, secrets, logger: logger.child({ component: "s3-events" }), onEnqueued: wake });
  let stopped: Promise<void> | null = null;

  return {
    queue, catalog, scheduler, intake, s3, dispatchToken, dispatchTokenHash, statusUrl, wake,
    get sources() {
      return sources;
    },
    releaseDeleted: (entry, secretValues) => releaseTableChangeSlots(entry.name, entry.config.triggers, secretValues, {
      // A fresh catalog read drops the deleted function from the cache, so the sync stops its sources.
      stopSources: async () => {
        await catalog.get(entry.name, true);
        await sources?.sync();
      },
      logger: logger.child({ component: "trigger-sources" }),
      redoAfterMs: 2 * (settings.sourceSyncIntervalMs + 1000),
    }),
    start(gatewayUrl) {
      worker = createAsyncWorker({ queue, catalog, logger: logger.child({ component: "async-worker" }), gatewayUrl, dispatchToken, pollIntervalMs: settings.pollIntervalMs, leaseMarginMs: settings.leaseMarginMs });
      worker.start();
      sources = createSourceRunner({
        queue, catalog, secrets: (fn) => options.store.getSecretValues(fn), logger: logger.child({ component: "trigger-sources" }), gatewayUrl, dispatchToken,
        leaseMarginMs: settings.leaseMarginMs, syncIntervalMs: settings.sourceSyncIntervalMs,
      });
      sources.start();
      scheduler.start(settings.scheduleIntervalMs);
      void scheduler.tick().catch(() => {});
      const purge = () => void queue.purgeFinished(Date.now() - settings.retentionMs).catch((err: unknown) => logger.warn({ err }, "event retention purge failed"));
      purge();
      purgeTimer = setInterval(purge, 3_600_000);
      purgeTimer.unref();
    },
    stop: (deadlineMs) => (stopped ??= (async () => {
      if (purgeTimer !== null) clearInterval(purgeTimer);
      await scheduler.stop();
      await Promise.all([worker?.stop(deadlineMs), sources?.stop(deadlineMs)]);
    })()),
    close: () => queue.close(),
  };
}
