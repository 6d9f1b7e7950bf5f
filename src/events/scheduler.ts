/**
 * Schedules: turns each function's `schedule` (cron via croner, with a time zone) and `rate` triggers
 * into async jobs. Each slot fires at most once across every control plane sharing the queue:
 * `claimSlot(trigger, slotTime, job)` inserts the unique `(trigger, slot)` row and the job in one
 * transaction, so of two schedulers racing for a slot exactly one enqueues it. Dispatch is the async
 * path (retries, DLQ, asyncConcurrency).
 *
 * Slots considered on a tick: those after the trigger's last claimed slot (or, for a trigger never
 * seen, after the function's activation) up to now. The missed-slot policy (`catchUp`):
 *   - `all`: every due slot fires, oldest first (at most MAX_SLOTS_PER_TICK per tick; the rest next tick);
 *   - `latest` (default): only the newest due slot fires; older missed ones are skipped;
 *   - `none`: the newest due slot fires only if it is at most `graceMs` old (a normal tick); after
 *     downtime it is claimed as skipped (no job) and the next future slot is the next to fire.
 * Rate slots are multiples of the rate since the epoch (every control plane agrees on them).
 *
 * Trigger ids are `<fn>#<index>:<hash of the trigger's config>`: editing a trigger makes a new one
 * (its slots start after the deploy); an unchanged trigger keeps its history across deploys and restarts.
 *
 * Queue triggers in the same list are skipped here (the sources' runner consumes them); `describe` lists
 * schedule and rate triggers only.
 *
 * The clock is injected; `tick()` is public so tests drive it without waiting.
 */
import { Cron } from "croner";
import { createHash } from "node:crypto";
import { parseRateMs, type TriggerConfig } from "../shared/function-config";
import type { Logger } from "../shared/logger";
import type { CatalogEntry, FunctionCatalog } from "./catalog";
import type { JobQueue, NewJob } from "./queue";

/** Most slots one trigger fires in one tick (catchUp `all` after a long downtime). */
export const MAX_SLOTS_PER_TICK = 1000;

/** CloudEvents `type` of schedule events. */
export const SCHEDULE_EVENT_TYPE = "dev.stratus.schedule";

export interface SchedulerOptions {
  readonly queue: JobQueue;
  readonly catalog: FunctionCatalog;
  readonly logger: Logger;
  /** Epoch ms. */
  readonly now: () => number;
  /** `none` fires a slot at most this late, ms (default 60 000). */
  readonly graceMs?: number;
  /** Called after a tick enqueued jobs (wakes the worker). */
  readonly onEnqueued?: () => void;
}

/** One trigger as `stratus triggers ls` shows it. */
export interface TriggerView {
  readonly id: string;
  readonly kind: "schedule" | "rate";
  readonly schedule?: string;
  readonly timezone?: string;
  readonly rate?: string;
  readonly catchUp: TriggerConfig["catchUp"];
  readonly lastSlot: number | null;
  readonly nextSlot: number | null;
}

export interface Scheduler {
  /** Fires what is due now; returns the jobs enqueued. */
  tick(): Promise<number>;
  /** Ticks every `intervalMs` (real timer). */
  start(intervalMs: number): void;
  /** Stops the timer and waits for a running tick. Idempotent. */
  stop(): Promise<void>;
  /** A function's triggers with their last and next slot. */
  describe(entry: CatalogEntry): Promise<TriggerView[]>;
}

/** The stable id of trigger `index` of function `name`. */
export function triggerId(name: string, index: number, trigger: TriggerConfig): string {
  const canon = JSON.stringify({ schedule: trigger.schedule, timezone: trigger.timezone ?? "UTC", rate: trigger.rate });
  return `${name}#${index}:${createHash("sha256").update(canon).digest("hex").slice(0, 8)}`;
}

/** True for the triggers the scheduler fires (schedule, rate); queue triggers are src/events/sources/runner.ts's. */
export const isTimeTrigger = (t: TriggerConfig): boolean => t.schedule !== undefined || t.rate !== undefined;

/** The slot calculator of one trigger. */
interface SlotClock {
  /** First slot strictly after `t`, or null. */
  next(t: number): number | null;
  /** Newest slot at or before `t`, or null. */
  latest(t: number): number | null;
}

function slotClock(t: TriggerConfig): SlotClock {
  if (t.rate !== undefined) {
    const period = parseRateMs(t.rate) as number;
    return { next: (x) => (Math.floor(x / period) + 1) * period, latest: (x) => Math.floor(x / period) * period };
  }
  const cron = new Cron(t.schedule as string, { timezone: t.timezone ?? "UTC", paused: true });
  return {
    next: (x) => cron.nextRun(new Date(x))?.getTime() ?? null,
    // croner's previousRuns is strictly before its reference, in whole seconds: ask from the next
    // second and drop a run later than x.
    latest: (x) => cron.previousRuns(2, new Date(x + 1000)).map((d) => d.getTime()).find((t) => t <= x) ?? null,
  };
}

export function createScheduler(options: SchedulerOptions): Scheduler {
  const { queue, catalog, logger, now } = options;
  const graceMs = options.graceMs ?? 60_000;
  const clocks = new Map<string, SlotClock>();
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<number> | null = null;

  const clockOf = (id: string, t: TriggerConfig): SlotClock => {
    let c = clocks.get(id);
    if (c === undefined) clocks.set(id, (c = slotClock(t)));
    return c;
  };

  function jobOf(entry: CatalogEntry, id: string, index: number, t: TriggerConfig, slot: number): NewJob {
    const iso = new Date(slot).toISOString();
    const eventId = `${id}@${iso}`;
    const data = { trigger: { id, index, ...t }, slot: iso };
    return {
      functionName: entry.name,
      request: {
        method: "POST", path: "/",
        headers: {
          "content-type": "application/json", "ce-specversion": "1.0", "ce-id": eventId, "ce-source": `stratus:schedule:${entry.name}#${index}`,
          "ce-type": SCHEDULE_EVENT_TYPE, "ce-time": iso, "ce-subject": id,
        },
        bodyBase64: Buffer.from(JSON.stringify(data)).toString("base64"),
      },
      origin: { kind: "schedule", trigger: id, eventId },
      maxAttempts: entry.config.maxAttempts, maxEventAgeS: entry.config.maxEventAgeS, retryDelayMs: entry.config.retryDelayMs,
    };
  }

  async function fireTrigger(entry: CatalogEntry, index: number, t: TriggerConfig, at: number): Promise<number> {
    const id = triggerId(entry.name, index, t);
    const clock = clockOf(id, t);
    const since = (await queue.lastSlot(id)) ?? entry.activatedAt;
    const newest = clock.latest(at);
    if (newest === null || newest <= since) return 0;
    if (t.catchUp === "all") {
      let fired = 0;
      let s = clock.next(since);
      for (let i = 0; i < MAX_SLOTS_PER_TICK && s !== null && s <= at; i++) {
        if ((await queue.claimSlot(id, s, jobOf(entry, id, index, t, s))).claimed) fired++;
        s = clock.next(s);
      }
      return fired;
    }
    const fire = t.catchUp === "latest" || at - newest <= graceMs;
    const r = await queue.claimSlot(id, newest, fire ? jobOf(entry, id, index, t, newest) : null);
    if (r.claimed && !fire) logger.info({ fn: entry.name, trigger: id, slot: new Date(newest).toISOString() }, "missed schedule slot skipped (catchUp none)");
    return r.job !== null ? 1 : 0;
  }

  async function tick(): Promise<number> {
    const at = now();
    let fired = 0;
    for (const entry of await catalog.list()) {
      const triggers = entry.config.triggers;
      for (let i = 0; i < triggers.length; i++) {
        if (!isTimeTrigger(triggers[i] as TriggerConfig)) continue;
        try {
          fired += await fireTrigger(entry, i, triggers[i] as TriggerConfig, at);
        } catch (err) {
          logger.warn({ err, fn: entry.name, trigger: i }, "schedule tick failed for a trigger; will retry");
        }
      }
    }
    if (fired > 0) options.onEnqueued?.();
    return fired;
  }

  return {
    async tick() {
      while (running !== null) await running.catch(() => 0);
      running = tick();
      try {
        return await running;
      } finally {
        running = null;
      }
    },
    start(intervalMs) {
      if (timer !== null) return;
      timer = setInterval(() => {
        if (running === null) void this.tick().catch((err: unknown) => logger.warn({ err }, "schedule tick failed"));
      }, intervalMs);
      timer.unref();
    },
    async stop() {
      if (timer !== null) clearInterval(timer);
      timer = null;
      await running?.catch(() => 0);
    },
    async describe(entry) {
      const out: TriggerView[] = [];
      const at = now();
      for (const [i, t] of entry.config.triggers.entries()) {
        if (!isTimeTrigger(t)) continue;
        const id = triggerId(entry.name, i, t);
        const base = t.rate !== undefined
          ? { kind: "rate" as const, rate: t.rate }
          : { kind: "schedule" as const, schedule: t.schedule as string, timezone: t.timezone ?? "UTC" };
        out.push({ id, ...base, catchUp: t.catchUp, lastSlot: await queue.lastSlot(id), nextSlot: clockOf(id, t).next(at) });
      }
      return out;
    },
  };
}
