/**
 * The instances of one function on this node, and the decisions of who serves the next request.
 *
 * Algorithm (per request): reuse a ready instance with spare capacity, most recently used first (warm
 * caches, and idle ones at the bottom of the stack age out); else start one if the function has fewer
 * than `maxInstances` (ready + starting, current version only); else wait in a FIFO queue of at most
 * `maxQueue` waiters that no starting instance will cover. Whichever instance frees up or finishes
 * starting first serves the head of the queue.
 *
 * When to start (the scale-out decision, as Knative's activator weighs it): a request that finds every
 * ready instance busy starts a new one only if waiting would take longer than a start. The pool keeps
 * moving averages of the service time (lease taken → released) and of the start time; the expected wait
 * of a new waiter is (waiters not covered by starts + 1) × service time ÷ (ready instances × concurrency).
 * With no ready instance, or before either average exists, it starts (the old rule: one start per
 * uncovered waiter); below cores + 1 instances it always starts. Above that floor a start also needs idle
 * CPU on the node (at least half a core over the gateway's last sweep interval, `idleCores`): when the
 * cores are saturated, a new instance can only take CPU from the running ones, and the measured service
 * time then grows with the width (every concurrency-1 instance waits its turn for a core), so the estimate
 * alone would keep starting instances that add context switches and no throughput. A fast handler on a busy
 * machine therefore runs on a few instances rather than on `maxInstances` processes; a slow one (waiting on
 * I/O, the CPU idle) scales out as before (docs/gateway.md). A waiter the estimate left waiting is re-checked
 * after one start time (a timer), so a wrong estimate costs at most one start's worth of waiting: it then
 * starts one if the CPU has room, or if the head waited more than twice what the estimate expected (the
 * instances are busy with slow work, not short of CPU).
 *
 * Invariants:
 *  - `available` holds exactly the ready, current-version slots with `active < concurrency`; its last
 *    element is the most recently used.
 *  - a slot never serves more than `concurrency` leases at once (`active <= concurrency`).
 *  - `waitingLive` counts the waiters in `queue` that are not settled; settled waiters are removed
 *    lazily when they reach the head (they all share one queueTimeout, so the head expires first).
 *  - every waiter settles exactly once: with a lease, or with QUEUE_TIMEOUT / a start error /
 *    SHUTTING_DOWN. Nothing waits without a deadline.
 *  - retiring slots (old version, recycled) take no new work and do not count toward maxInstances;
 *    they are closed once their last lease is released.
 *
 * Time is read from `now()` and deadlines are checked by `sweep(now)`, which the gateway calls from
 * its one shared timer, so granularity is the gateway's tick (documented in docs/gateway.md).
 */
import { randomBytes } from "node:crypto";
import { availableParallelism } from "node:os";
import { buildConnector, Client as UndiciClient, Pool as UndiciPool, type Dispatcher } from "undici";
import type { Instance, InstanceExit, InstanceLogLine, SandboxDriver } from "../sandbox/driver";
import { StratusError, isStratusError } from "../shared/errors";
import type { PlatformEvent } from "../shared/invocation";
import type { Logger } from "../shared/logger";
import type { Deployment } from "./deployment";
import { FixedQueue } from "./fixed-queue";

/** One running instance as the pool sees it. */
export interface InstanceSlot {
  readonly instance: Instance;
  /** HTTP client bound to the instance's Unix socket (keep-alive, `concurrency` connections: a Client for one, else a Pool). */
  readonly dispatcher: Dispatcher;
  readonly deployment: Deployment;
  /** Leases currently held. */
  active: number;
  /** Leases ever handed out. */
  served: number;
  /** `now()` of the last release (or of readiness), ms. */
  lastUsedAt: number;
  /** True when a request's demand started it (false for minInstances pre-warming). */
  readonly startedOnDemand: boolean;
  state: "ready" | "retiring" | "gone";
  inAvailable: boolean;
}

/** The right to send one request to one instance. Give it back with `release`. */
export interface Lease {
  readonly slot: InstanceSlot;
  /** True when this request waited for the instance to start (its first request). */
  readonly coldStart: boolean;
  /** Time spent waiting for capacity, excluding the instance start, ms. */
  readonly queueMs: number;
  /** Start time of the instance when `coldStart`, else 0, ms. */
  readonly startMs: number;
  /** `now()` when it was handed out (the pool's service-time average). */
  readonly takenAt: number;
}

/** What to do with an instance after a request: keep it, close it gracefully, or kill it now. */
export type ReleaseOutcome = "reuse" | "retire" | "destroy";

interface Waiter {
  readonly enqueuedAt: number;
  readonly deadline: number;
  /** The wait the estimate expected when it queued (NaN when it had no estimate), ms. */
  readonly expectedMs: number;
  settled: boolean;
  resolve(lease: Lease): void;
  reject(err: unknown): void;
}

/** A queued request: await `promise`; call `cancel()` when the client goes away. */
export interface PendingLease {
  readonly promise: Promise<Lease>;
  cancel(): void;
}

interface StartRecord {
  readonly version: string;
  readonly abort: AbortController;
  stale: boolean;
  /** Cancelled by stillNeeded before it booted: its failure is no error for the waiters. */
  cancelled?: boolean;
}

export interface FunctionPoolOptions {
  readonly deployment: Deployment;
  readonly driver: SandboxDriver;
  readonly logger: Logger;
  /** Clock in ms (default `performance.now`); unit tests pass a fake one. */
  readonly now?: () => number;
  /** Receives instance output lines (default: logged at info on the pool's logger). */
  readonly onInstanceLog?: (line: InstanceLogLine) => void;
  /** Builds the HTTP client of an instance (default: an undici Pool on its socket). */
  readonly connect?: (instance: Instance, deployment: Deployment) => Dispatcher;
  /** Retry-After seconds sent with QUEUE_FULL (default 1). */
  readonly retryAfterS?: number;
  /** Receives lifecycle events (started, start failed, reaped, stopped, crashed, out of memory). Must not throw. */
  readonly onEvent?: (event: PlatformEvent) => void;
  /** Instances always worth starting before the wait estimate decides (default: cores + 1). */
  readonly widthFloor?: number;
  /**
   * The node's idle CPU in cores over the last interval (the gateway's CpuIdle, sampled on its sweep tick);
   * above `widthFloor` a start needs at least MIN_IDLE_CORES_TO_START. Default: always +Infinity (no check).
   */
  readonly idleCores?: () => number;
}

/** Instances a function may always run before the estimate decides (see worthStarting): one more than the cores. */
const DEFAULT_WIDTH_FLOOR = availableParallelism() + 1;

/** Idle CPU (cores) a start above the width floor needs: a new instance must find CPU the running ones leave. */
export const MIN_IDLE_CORES_TO_START = 0.5;

/** A waiter that waited more than this × its expected wait was misjudged by the estimate (see overdueStart). */
const OVERDUE_FACTOR = 2;

/** Weight of the newest sample in the service-time and start-time moving averages. */
const EWMA_WEIGHT = 0.2;

/** Longest back-off between failed minInstances starts, ms. */
const MAX_MIN_BACKOFF_MS = 30_000;

/** The default HTTP client of an instance (FunctionPoolOptions.connect). Exported for tests. */
export function defaultConnect(instance: Instance, deployment: Deployment): Dispatcher {
  // keepAliveTimeout stays under Node's 5 s server default so we never reuse a socket the runtime closes.
  const { socketPath, takeConnection } = instance.endpoint;
  const options = { socketPath, pipelining: 1, keepAliveTimeout: 4_000, ...(takeConnection === undefined ? {} : { connect: firstConnectionFrom(takeConnection, socketPath) }) };
  const { concurrency } = deployment.config;
  // One connection (the default, concurrency 1): a Client itself. A Pool of one would add its own queue and
  // a 'drain' event per request on top of the Client's (undici's pool-base frames in a gateway CPU profile).
  return concurrency === 1 ? new UndiciClient("http://localhost", options) : new UndiciPool("http://localhost", { ...options, connections: concurrency });
}

/**
 * undici's connector for an instance whose driver opened a connection while its slot waited
 * (InstanceEndpoint.takeConnection): the first connection is that one — the first request needs no
 * connect after READY — every later one (and the first, when there was none) a new connection to `socketPath`.
 */
function firstConnectionFrom(take: () => import("node:net").Socket | null, socketPath: string): buildConnector.connector {
  const fresh = buildConnector({ socketPath });
  return (opts, callback) => {
    const socket = take();
    if (socket === null) return fresh(opts, callback);
    // Never synchronously: undici's connect path is not re-entrant (a callback from inside the connector call
    // left the first request unsent — measured), its own connector answers from the socket's 'connect' event.
    if (!socket.connecting) return queueMicrotask(() => callback(null, socket));
    const onConnect = (): void => {
      socket.off("error", onError);
      callback(null, socket);
    };
    const onError = (): void => {
      socket.off("connect", onConnect);
      socket.destroy();
      fresh(opts, callback);
    };
    socket.once("connect", onConnect).once("error", onError);
  };
}

function ewma(avg: number, sample: number): number {
  return Number.isNaN(avg) ? sample : avg + EWMA_WEIGHT * (sample - avg);
}

/** Instance ids: `[a-z0-9-]`, short because they name Unix sockets (108-byte path limit). */
function newInstanceId(): string {
  return randomBytes(8).toString("hex");
}

/** See the file comment. Created by the gateway per function; not shared between functions. */
export class FunctionPool {
  private dep: Deployment;
  private readonly driver: SandboxDriver;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly onInstanceLog: (line: InstanceLogLine) => void;
  private readonly connect: (instance: Instance, deployment: Deployment) => Dispatcher;
  private readonly retryAfter: string;
  private readonly onEvent: ((event: PlatformEvent) => void) | null;

  private readonly slots = new Set<InstanceSlot>();
  private readonly available: InstanceSlot[] = [];
  private readonly starts = new Set<StartRecord>();
  private readonly queue = new FixedQueue<Waiter>();
  private waitingLive = 0;
  private readyCurrent = 0;
  private startingCurrent = 0;
  private closed = false;
  private minFailures = 0;
  private minRetryAt = 0;
  /** Moving averages (see the file comment), ms; NaN until the first sample. */
  private serviceMs = NaN;
  private startMs = NaN;
  private recheck: NodeJS.Timeout | null = null;
  private readonly widthFloor: number;
  private readonly idleCores: () => number;

  constructor(options: FunctionPoolOptions) {
    this.dep = options.deployment;
    this.driver = options.driver;
    this.log = options.logger.child({ fn: options.deployment.name });
    this.now = options.now ?? (() => performance.now());
    this.onInstanceLog = options.onInstanceLog ?? ((line) => {
      this.log.info({ instance: line.instanceId, rid: line.requestId, stream: line.stream, level: line.level }, line.message);
    });
    this.connect = options.connect ?? defaultConnect;
    this.retryAfter = String(options.retryAfterS ?? 1);
    this.onEvent = options.onEvent ?? null;
    this.widthFloor = options.widthFloor ?? DEFAULT_WIDTH_FLOOR;
    this.idleCores = options.idleCores ?? (() => Number.POSITIVE_INFINITY);
    this.ensureMinInstances();
  }

  /** The deployment new requests are served by. */
  get deployment(): Deployment {
    return this.dep;
  }

  /** Counters for tests, metrics and the dashboard. */
  stats(): { ready: number; starting: number; busy: number; idle: number; retiring: number; waiting: number; total: number } {
    let busy = 0;
    let idle = 0;
    let retiring = 0;
    for (const s of this.slots) {
      if (s.active > 0) busy++;
      else if (s.state === "ready") idle++;
      if (s.state === "retiring") retiring++;
    }
    return { ready: this.readyCurrent, starting: this.starts.size, busy, idle, retiring, waiting: this.waitingLive, total: this.slots.size + this.starts.size };
  }

  /** Fast path: a lease on a warm instance with spare capacity, or null. Never starts anything. */
  tryAcquire(): Lease | null {
    if (this.closed || this.waitingLive > 0) return null; // FIFO: never overtake waiters
    const slot = this.available[this.available.length - 1];
    return slot === undefined ? null : this.take(slot, this.now());
  }

  /**
   * Slow path: starts an instance if allowed, then queues the request.
   * @throws StratusError QUEUE_FULL (with Retry-After) | SHUTTING_DOWN
   */
  wait(): PendingLease {
    if (this.closed) throw new StratusError("SHUTTING_DOWN");
    const { concurrency, maxInstances, maxQueue, queueTimeout } = this.dep.config;
    const covered = this.startingCurrent * concurrency;
    if (this.waitingLive >= covered) {
      const queueFull = this.waitingLive - covered >= maxQueue;
      if (this.readyCurrent + this.startingCurrent < maxInstances) {
        // Capacity is left: a full queue starts an instance rather than refusing.
        if (queueFull || this.worthStarting(this.waitingLive - covered + 1)) this.startInstance(true);
        else this.scheduleRecheck();
      } else if (queueFull) {
        throw new StratusError("QUEUE_FULL", undefined, { headers: { "retry-after": this.retryAfter } });
      }
    }
    const now = this.now();
    const ahead = this.waitingLive - covered + 1;
    const expectedMs = ahead <= 0 ? this.startMs : this.expectedWaitMs(ahead);
    let waiter!: Waiter;
    const promise = new Promise<Lease>((resolve, reject) => {
      waiter = { enqueuedAt: now, deadline: now + queueTimeout, expectedMs, settled: false, resolve, reject };
    });
    this.queue.push(waiter);
    this.waitingLive++;
    return {
      promise,
      cancel: () => {
        if (waiter.settled) return;
        waiter.settled = true;
        this.waitingLive--;
        waiter.reject(new StratusError("INTERNAL", "cancelled"));
      },
    };
  }

  /** Gives a lease back. `retire`: close gracefully once idle; `destroy`: kill now. */
  release(lease: Lease, outcome: ReleaseOutcome): void {
    const slot = lease.slot;
    slot.active--;
    slot.lastUsedAt = this.now();
    if (outcome === "reuse") this.serviceMs = ewma(this.serviceMs, slot.lastUsedAt - lease.takenAt);
    if (slot.state === "gone") return;
    if (outcome === "destroy") {
      this.destroySlot(slot);
    } else if (outcome === "retire" || slot.state === "retiring") {
      this.retireSlot(slot);
    } else if (!slot.inAvailable) {
      slot.inAvailable = true;
      this.available.push(slot);
    }
    this.pump();
  }

  /**
   * Switches new requests to `deployment`. A new version retires every instance of the old one
   * (idle ones close now, busy ones after their last request) and starts minInstances of the new one.
   * The same version with another env (an env var or secret change) rolls the instances the same way.
   */
  setDeployment(deployment: Deployment): void {
    const versionChanged = deployment.version !== this.dep.version || !sameEnv(deployment.env, this.dep.env);
    this.dep = deployment;
    if (versionChanged) {
      for (const rec of this.starts) rec.stale = true;
      this.startingCurrent = 0;
      for (const slot of [...this.slots]) if (slot.state === "ready") this.retireSlot(slot);
      this.minFailures = 0;
      this.minRetryAt = 0;
    }
    this.pump();
    this.ensureMinInstances();
  }

  /**
   * Periodic work, called by the gateway's one shared timer: expire waiters past queueTimeout
   * (503 QUEUE_TIMEOUT), reap instances idle for idleTimeout beyond minInstances, restart missing
   * minInstances (with back-off after failures).
   */
  sweep(now: number): void {
    for (let w = this.queue.peek(); w !== undefined; w = this.queue.peek()) {
      if (w.settled) {
        this.queue.shift();
      } else if (w.deadline <= now) {
        this.queue.shift();
        this.settle(w)?.reject(new StratusError("QUEUE_TIMEOUT"));
      } else {
        break;
      }
    }
    const { idleTimeout, minInstances } = this.dep.config;
    // Oldest first (bottom of the stack), and keep minInstances warm.
    for (let i = 0; i < this.available.length && this.readyCurrent > minInstances; ) {
      const slot = this.available[i]!;
      if (slot.active === 0 && now - slot.lastUsedAt >= idleTimeout) {
        this.log.debug({ instance: slot.instance.id }, "idle instance reaped");
        this.emit("instance-reaped", "info", slot.instance.id, `instance ${slot.instance.id} reaped after ${Math.round(now - slot.lastUsedAt)} ms idle`);
        this.retireSlot(slot); // removes it from `available`
      } else {
        i++;
      }
    }
    this.ensureMinInstances();
  }

  /**
   * Graceful end: refuses new work, fails waiters with SHUTTING_DOWN, closes every instance with
   * `graceMs` for in-flight work (the runtime drains on SIGTERM). Resolves when all are gone.
   */
  async close(graceMs: number): Promise<void> {
    this.shutDown();
    await Promise.all([...this.slots].map((s) => this.stopSlot(s, graceMs)));
  }

  /** Immediate end: kills every instance and aborts starts. Resolves when all are gone. */
  async destroy(): Promise<void> {
    this.shutDown();
    await Promise.all([...this.slots].map((s) => this.stopSlot(s, 0)));
  }

  private shutDown(): void {
    this.closed = true;
    if (this.recheck !== null) clearTimeout(this.recheck);
    this.recheck = null;
    for (const rec of this.starts) {
      rec.stale = true;
      rec.abort.abort();
    }
    for (let w = this.queue.shift(); w !== undefined; w = this.queue.shift()) {
      this.settle(w)?.reject(new StratusError("SHUTTING_DOWN"));
    }
  }

  private async stopSlot(slot: InstanceSlot, graceMs: number): Promise<void> {
    this.forget(slot);
    await (graceMs > 0 ? slot.instance.close(graceMs) : slot.instance.destroy()).catch((err) => {
      this.log.warn({ err, instance: slot.instance.id }, "stopping an instance failed");
    });
    await slot.dispatcher.destroy().catch(() => undefined);
  }

  private settle(w: Waiter): Waiter | null {
    if (w.settled) return null;
    w.settled = true;
    this.waitingLive--;
    return w;
  }

  private take(slot: InstanceSlot, now: number, enqueuedAt = now): Lease {
    const coldStart = slot.served === 0 && slot.startedOnDemand;
    slot.active++;
    slot.served++;
    if (slot.active >= slot.deployment.config.concurrency) this.removeAvailable(slot);
    const startMs = coldStart ? slot.instance.startMs : 0;
    return { slot, coldStart, startMs, queueMs: Math.max(0, now - enqueuedAt - startMs), takenAt: now };
  }

  /** Hands free capacity to waiters (FIFO), then starts instances for waiters nothing covers. */
  private pump(): void {
    if (this.closed) return;
    while (this.waitingLive > 0 && this.available.length > 0) {
      const w = this.queue.shift()!;
      if (this.settle(w) === null) continue;
      const slot = this.available[this.available.length - 1]!;
      w.resolve(this.take(slot, this.now(), w.enqueuedAt));
    }
    const { concurrency, maxInstances } = this.dep.config;
    while (this.waitingLive > this.startingCurrent * concurrency && this.readyCurrent + this.startingCurrent < maxInstances) {
      if (!this.worthStarting(this.waitingLive - this.startingCurrent * concurrency)) {
        this.scheduleRecheck();
        break;
      }
      this.startInstance(true);
    }
  }

  /**
   * Whether the `uncovered`-th waiter nothing starting will serve should start an instance rather than
   * wait for a busy one (see the file comment).
   */
  private worthStarting(uncovered: number): boolean {
    return this.startBeatsWaiting(uncovered, this.readyCurrent + this.startingCurrent, this.startMs, true);
  }

  /**
   * The estimate worthStarting and stillNeeded share: whether one more start (besides `width` instances ready
   * or starting) serves the `uncovered`-th waiter sooner than the ready instances would, a start costing
   * `startCostMs`; `cpu`: above the width floor, also require idle CPU (see the file comment).
   */
  private startBeatsWaiting(uncovered: number, width: number, startCostMs: number, cpu: boolean): boolean {
    if (this.readyCurrent === 0 || Number.isNaN(this.serviceMs) || Number.isNaN(this.startMs)) return true;
    // Up to one instance more than the cores, starting is always worth it: each concurrency-1 instance waits
    // out its response's trip through the gateway, and another can run meanwhile (bench/instance-width.ts).
    if (width < this.widthFloor) return true;
    return this.expectedWaitMs(uncovered) > startCostMs && (!cpu || this.cpuHasRoom());
  }

  /** The wait of the `uncovered`-th waiter no start covers, from the service-time average (NaN without one), ms. */
  private expectedWaitMs(uncovered: number): number {
    if (this.readyCurrent === 0) return NaN;
    return (uncovered * this.serviceMs) / (this.readyCurrent * this.dep.config.concurrency);
  }

  /** Above the width floor: whether the node's CPU has room for one more instance (see the file comment). */
  private cpuHasRoom(): boolean {
    return this.idleCores() >= MIN_IDLE_CORES_TO_START;
  }

  /**
   * Asked by the driver when an on-demand start's fresh boot leaves its boot gate (StartOptions.stillNeeded):
   * false — the waiters no other start covers would be served by the ready instances before `bootMs`, the
   * boot itself (without the wait in the gate, which round three's abort counted) — cancels it at no cost.
   * The same estimate as worthStarting, so the pump does not start it again at once.
   */
  private stillNeeded(rec: StartRecord, bootMs: number): boolean {
    if (rec.stale || this.closed) return false; // its instance would be destroyed at once
    const uncovered = this.waitingLive - (this.startingCurrent - 1) * this.dep.config.concurrency;
    // Against the shorter of the boot and the start-time average: a cancelled start is then one worthStarting
    // would not start again either (its threshold is the start-time average). No CPU check here: the boot
    // already waited for its place in the gate, and cancelling it on a busy CPU would only start it again later.
    const needed = uncovered > 0 && this.startBeatsWaiting(uncovered, this.readyCurrent + this.startingCurrent - 1, Math.min(bootMs, this.startMs), false);
    if (!needed) rec.cancelled = true;
    return needed;
  }

  /** Re-checks waiters left waiting by the estimate after one start time: by then a start would have served them. */
  private scheduleRecheck(): void {
    if (this.recheck !== null || this.closed) return;
    this.recheck = setTimeout(() => {
      this.recheck = null;
      this.overdueStart();
    }, Math.max(1, Math.ceil(this.startMs)));
    this.recheck.unref();
  }

  /** The head waiter has waited a start time or longer and nothing is starting: start one. */
  private overdueStart(): void {
    if (this.closed || this.waitingLive === 0) return;
    const { concurrency, maxInstances } = this.dep.config;
    const head = this.queue.peek();
    if (head === undefined) return;
    const waited = this.now() - head.enqueuedAt;
    const width = this.readyCurrent + this.startingCurrent;
    // Above the floor, a saturated CPU holds the start back — unless the head waited more than twice what the
    // estimate expected: then the instances are not slow for want of CPU but busy with slow work (a handler
    // that waits on I/O while the averages still say fast), and another instance serves it sooner.
    const misjudged = Number.isNaN(head.expectedMs) || waited > OVERDUE_FACTOR * head.expectedMs;
    if (waited + 1 >= this.startMs && this.waitingLive > this.startingCurrent * concurrency && width < maxInstances && (width < this.widthFloor || misjudged || this.cpuHasRoom())) {
      this.startInstance(true);
    }
    if (this.waitingLive > this.startingCurrent * concurrency) this.scheduleRecheck();
  }

  private ensureMinInstances(): void {
    if (this.closed) return;
    const { minInstances } = this.dep.config;
    if (this.readyCurrent + this.startingCurrent >= minInstances || this.now() < this.minRetryAt) return;
    while (this.readyCurrent + this.startingCurrent < minInstances) this.startInstance(false);
  }

  private startInstance(onDemand: boolean): void {
    const dep = this.dep;
    const rec: StartRecord = { version: dep.version, abort: new AbortController(), stale: false };
    this.starts.add(rec);
    this.startingCurrent++;
    const spec = {
      instanceId: newInstanceId(),
      functionName: dep.name,
      version: dep.version,
      artifactDir: dep.artifactDir,
      entry: dep.entry,
      exportName: dep.exportName,
      config: dep.config,
      env: dep.env,
      ...(dep.image === undefined ? {} : { image: dep.image }),
    };
    const stillNeeded = onDemand ? (bootMs: number) => this.stillNeeded(rec, bootMs) : undefined;
    this.driver.start(spec, { onLog: this.onInstanceLog, signal: rec.abort.signal, firstInstance: this.readyCurrent === 0 && this.startingCurrent === 1 /* this one */, ...(stillNeeded ? { stillNeeded } : {}) }).then(
      (instance) => this.onStarted(rec, dep, instance, onDemand),
      (err: unknown) => this.onStartFailed(rec, err, onDemand),
    );
  }

  private onStarted(rec: StartRecord, dep: Deployment, instance: Instance, onDemand: boolean): void {
    this.starts.delete(rec);
    if (rec.stale) {
      // An old version or a closed pool: nobody should use it.
      void instance.destroy();
      this.pump();
      return;
    }
    this.startingCurrent--;
    if (!onDemand) this.minFailures = 0;
    if (Number.isFinite(instance.startMs)) this.startMs = ewma(this.startMs, instance.startMs);
    const slot: InstanceSlot = {
      instance,
      dispatcher: this.connect(instance, dep),
      deployment: dep,
      active: 0,
      served: 0,
      lastUsedAt: this.now(),
      startedOnDemand: onDemand,
      state: "ready",
      inAvailable: true,
    };
    this.slots.add(slot);
    this.readyCurrent++;
    this.available.push(slot);
    this.log.debug({ instance: instance.id, startMs: instance.startMs }, "instance ready");
    this.emit("instance-started", "info", instance.id,
      `instance ${instance.id} of version ${dep.version} started in ${Math.round(instance.startMs)} ms (${onDemand ? "on demand" : "minInstances"})`);
    instance.exited.then(
      (exit) => this.onExited(slot, exit),
      () => this.onExited(slot, { reason: "crashed", exitCode: null, signal: null }),
    );
    this.pump();
  }

  private onStartFailed(rec: StartRecord, err: unknown, onDemand: boolean): void {
    this.starts.delete(rec);
    if (rec.stale) {
      this.pump();
      return;
    }
    this.startingCurrent--;
    if (rec.cancelled === true) {
      // Not needed any more (stillNeeded): the waiters it was for are served by the ready instances.
      this.pump();
      return;
    }
    const error = isStratusError(err) ? err : new StratusError("INSTANCE_START_FAILED", undefined, { cause: err });
    this.log.warn({ err, code: error.code }, "instance start failed");
    this.emit("instance-start-failed", "error", null, `instance start failed: ${error.code}: ${error.message}`);
    if (!onDemand) {
      this.minFailures++;
      this.minRetryAt = this.now() + Math.min(MAX_MIN_BACKOFF_MS, 500 * 2 ** this.minFailures);
    }
    // The waiters this start would have served get its error (oldest first), so none hang.
    const share = this.dep.config.concurrency;
    for (let n = 0; n < share && this.waitingLive > 0; ) {
      const w = this.queue.shift()!;
      if (this.settle(w) === null) continue;
      w.reject(error);
      n++;
    }
    this.pump();
  }

  private onExited(slot: InstanceSlot, exit: InstanceExit): void {
    if (slot.state !== "gone") {
      if (exit.reason !== "closed" && exit.reason !== "destroyed") {
        this.log.warn({ instance: slot.instance.id, ...exit }, "instance exited");
      }
    }
    if (this.onEvent !== null) {
      const id = slot.instance.id;
      const how = `exit code ${exit.exitCode ?? "-"}, signal ${exit.signal ?? "-"}`;
      if (exit.reason === "out-of-memory") this.emit("instance-out-of-memory", "error", id, `instance ${id} ran out of memory (limit ${slot.deployment.config.memory} MB; ${how})`);
      else if (exit.reason === "crashed" || exit.reason === "load-failed") this.emit("instance-crashed", "error", id, `instance ${id} crashed (${exit.reason}; ${how})`);
      else this.emit("instance-stopped", "info", id, `instance ${id} stopped (${exit.reason})`);
    }
    if (slot.state !== "gone") {
      this.forget(slot);
    }
    this.slots.delete(slot);
    void slot.dispatcher.destroy().catch(() => undefined);
    this.pump();
    this.ensureMinInstances();
  }

  private emit(kind: PlatformEvent["kind"], level: PlatformEvent["level"], instanceId: string | null, message: string): void {
    this.onEvent?.({ ts: Date.now(), functionName: this.dep.name, kind, level, instanceId, requestId: null, message });
  }

  /** Takes a slot out of service (idempotent); the caller stops the instance. */
  private forget(slot: InstanceSlot): void {
    if (slot.state === "ready") this.readyCurrent--;
    slot.state = "gone";
    this.removeAvailable(slot);
  }

  private retireSlot(slot: InstanceSlot): void {
    if (slot.state === "ready") {
      this.readyCurrent--;
      slot.state = "retiring";
      this.removeAvailable(slot);
    }
    if (slot.state === "retiring" && slot.active === 0) {
      this.forget(slot);
      void slot.instance.close(slot.deployment.config.timeout).catch(() => undefined);
    }
  }

  private destroySlot(slot: InstanceSlot): void {
    this.forget(slot);
    void slot.instance.destroy().catch(() => undefined);
  }

  private removeAvailable(slot: InstanceSlot): void {
    if (!slot.inAvailable) return;
    slot.inAvailable = false;
    const i = this.available.lastIndexOf(slot);
    if (i !== -1) this.available.splice(i, 1);
  }
}

/** True when two env maps hold the same pairs (order ignored). */
function sameEnv(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (!Object.hasOwn(b, k) || a[k] !== b[k]) return false;
  return true;
}
