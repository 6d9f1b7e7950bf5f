/**
 * Bookkeeping of a pre-warm pool, shared by drivers: pre-started, not yet specialised sandboxes
 * ("slots") grouped by a key (the part of a spec that must be fixed when the sandbox starts: memory size,
 * network policy), refilled in the background. The driver supplies how to create and destroy a slot;
 * this module decides how many to keep and when to start them. See docs/prewarm.md.
 *
 * Invariants: a slot is either idle in `idle` (ready, never handed out) or gone from the pool forever;
 * `take()` hands each slot out at most once; at most `concurrency` slots are being created at a time; a
 * creation claimed with `claimBooting()` goes to its one claimer, never to `idle`.
 *
 * Refill policy (`refill`, docs/prewarm.md):
 *  - `demand` (default): the pool refills while starts keep coming. After a start, the refill waits
 *    `settleMs` (the new instance's first request runs first) and that wait is not pushed back by later
 *    starts, so a steady stream of cold starts (one every 150 ms) no longer keeps the pool empty. Boots
 *    run one at a time while one keeps up with the rate (cold starts per second × boot time ≤ 1), up to
 *    `demandConcurrency` (default 2) when it does not — each cold start costs one boot either way, ahead of
 *    time or on its critical path — and the driver queues them behind on-demand boots (low priority in its
 *    boot gate), so they never delay a fresh start. Size: the recent cold-start rate (takes in the last `rateWindowMs`: n takes spanning t are
 *    (n − 1) / t, a single take is one per window) times twice the
 *    measured boot time (what arrives while a slot boots, with margin), or the key's largest burst of the
 *    last `burstMemoryMs` (so a node that took one burst absorbs the next from slots), at least `size` for
 *    the default key, at most `maxSize`; idle slots above the target are destroyed once the demand passed
 *    (shrink). After a burst (far more takes than the refills can replace), refills wait until its takes
 *    stopped for `burstHoldMs`: they cannot keep up and would take the CPU the burst's instances need.
 *  - `quiet` (round one, kept as a bench baseline): refill only after `refillDelayMs` without any start;
 *    any key keeps as many as were taken in the last `demandWindowMs`, capped at `maxSize`.
 * Other keys than the default start at 0 in both.
 */

/** What a driver with a pool exposes of it (tests, metrics, benchmarks). */
export interface PrewarmStatus {
  readonly enabled: boolean;
  /** Idle slots now. */
  idleCount(): number;
  /** Starts slot creations up to the targets (normally automatic). */
  refill(): void;
  /** Starts served from a slot (`hits`) and fresh (`misses`) since the driver was created. */
  counts(): { hits: number; misses: number };
}

/** What a driver provides for its slots. */
export interface PrewarmSlotFactory<S> {
  /**
   * Starts one generic sandbox for `key`; resolves when it is ready to be specialised. Calls `booting`
   * (if given) once the sandbox actually boots (past the driver's boot gate, where a refill may wait).
   */
  create(key: string, booting?: () => void): Promise<S>;
  /** Destroys an idle slot (pool shrink or close). Must not throw. */
  destroy(slot: S): Promise<void>;
  /** Whether an idle slot is still usable (its process is alive). */
  alive(slot: S): boolean;
}

/** When a pool refills: see the file comment. */
export const PREWARM_REFILL_MODES = ["demand", "quiet"] as const;
export type PrewarmRefillMode = (typeof PREWARM_REFILL_MODES)[number];

/** Options of PrewarmPool; sizes are slot counts, times ms. */
export interface PrewarmPoolOptions {
  /** Refill policy (default `demand`). */
  readonly refill?: PrewarmRefillMode;
  /**
   * `demand`: wait after a start before refilling, ms (default 50): a boot begun at READY slowed the
   * instance's first request from ~2.5 ms to 10–40 ms on 2 cores (bench/results/cold-start.md); 50 ms
   * covers that request and the gateway's proxying on a loaded node.
   */
  readonly settleMs?: number;
  /** `demand`: how far back takes count toward the cold-start rate, ms (default 10000). */
  readonly rateWindowMs?: number;
  /** Idle slots kept for `defaultKey` (0 disables the pool). */
  readonly size: number;
  /** Upper bound of idle slots per key (default 4 × size, at most 32; never below `size`). */
  readonly maxSize?: number;
  /** The key of specs with default limits. */
  readonly defaultKey: string;
  /** How far back taken slots count as demand (default 30000). */
  readonly demandWindowMs?: number;
  /** Slots created at the same time (default 1: on a small node, slot starts compete with requests). */
  readonly concurrency?: number;
  /** `demand`: most slots created at the same time when one at a time cannot keep up (default 2). */
  readonly demandConcurrency?: number;
  /**
   * `demand`: after a burst (takes of a key arriving faster than `demandConcurrency` boots could replace
   * them four times over: rate × boot time > 4 × demandConcurrency), refill that key only once it had no
   * take for this long, ms (default 1500; 0: refill during bursts as round three did). Refilling during a
   * burst cannot keep up with it, and each boot's ~0.2 s of CPU goes to the instances serving the burst's
   * queue instead (docs/prewarm.md, "Bursts").
   */
  readonly burstHoldMs?: number;
  /**
   * `demand`: how long the largest burst of a key (its takes within 3 s, once a take is a burst take, see burstHoldUntil) keeps its target, ms
   * (default 300000): a node that took a burst of 100 cold starts keeps up to 100 slots (≤ `maxSize`) for
   * the next one, then shrinks back.
   */
  readonly burstMemoryMs?: number;
  /** Called when creating a slot fails (it is retried on the next take or after `retryMs`). */
  readonly onError?: (err: unknown) => void;
  /**
   * Quiet time after the last start before refillAfterStart() refills, ms (default 250). A slot boot is
   * ~0.2 s of CPU: started right after a cold start, it slowed that instance's first request from ~2.5 ms
   * to 10–40 ms on 2 cores (bench/results/cold-start.md).
   */
  readonly refillDelayMs?: number;
  /** Back-off after a failed creation (default 1000). */
  readonly retryMs?: number;
}

/** Fewest takes within a second that count as a burst (see burstHoldUntil); a cold-start stream is ~7/s. */
const BURST_MIN_TAKES = 20;

/** How far back a burst's takes count toward its size (the target it leaves behind), ms. */
const BURST_SIZE_WINDOW_MS = 3000;

/** A pool of pre-started sandboxes of type S. */
export class PrewarmPool<S> {
  private readonly idle = new Map<string, S[]>();
  private readonly creating = new Map<string, number>();
  /** Timestamps (ms) of recent takes per key, oldest first. */
  private readonly demand = new Map<string, number[]>();
  private readonly maxSize: number;
  private readonly windowMs: number;
  private readonly concurrency: number;
  private readonly mode: PrewarmRefillMode;
  /** Moving average of a slot's creation time, ms (demand sizing); 300 until measured (a loaded 2-core node). */
  private bootMs = 300;
  private inFlight = 0;
  private closed = false;
  private backoffUntil = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private refillTimer: NodeJS.Timeout | undefined;
  /** The refill at the end of a burst's hold (see burstHoldMs). */
  private holdTimer: NodeJS.Timeout | undefined;
  private holdUntil = 0;
  /** Per key: until when refills wait after a burst, epoch ms (see burstHoldUntil). */
  private readonly holds = new Map<string, number>();
  /** Per key: the largest burst (its takes within 3 s) of the last `burstMemoryMs`, and when (demand sizing). */
  private readonly peaks = new Map<string, { n: number; at: number }>();
  private shrinkTimer: NodeJS.Timeout | undefined;
  /** How long a key's largest burst keeps its target, ms (options.burstMemoryMs). */
  private readonly burstMemoryMs: number;
  /** Slot creations in progress, so close() can wait for them and destroy what they produce. */
  private readonly pending = new Set<Promise<void>>();
  /**
   * Creations in progress per key, oldest first, each with the start that claimed it (if any) and whether
   * it boots yet (false while it waits in the driver's boot gate).
   */
  private readonly booting = new Map<string, Array<{ claimer: ((slot: S | undefined) => void) | null; started: boolean }>>();

  constructor(private readonly factory: PrewarmSlotFactory<S>, private readonly options: PrewarmPoolOptions) {
    this.maxSize = Math.max(options.size, options.maxSize ?? Math.min(32, options.size * 4));
    this.burstMemoryMs = options.burstMemoryMs ?? 300_000;
    this.windowMs = options.demandWindowMs ?? 30_000;
    this.concurrency = options.concurrency ?? 1;
    this.mode = options.refill ?? "demand";
  }

  /** Whether the pool may hold slots at all. */
  get enabled(): boolean {
    return this.options.size > 0 && !this.closed;
  }

  /** Idle slots per key now (for tests and metrics). */
  idleCount(key?: string): number {
    if (key !== undefined) return this.idle.get(key)?.length ?? 0;
    let n = 0;
    for (const list of this.idle.values()) n += list.length;
    return n;
  }

  /** Slots of `key` the pool wants idle now. */
  target(key: string): number {
    if (!this.enabled) return 0;
    const now = Date.now();
    const times = this.demand.get(key) ?? [];
    while (times.length > 0 && times[0]! < now - this.windowMs) times.shift();
    const base = key === this.options.defaultKey ? this.options.size : 0;
    if (this.mode === "quiet") return Math.min(this.maxSize, Math.max(base, times.length));
    const need = Math.ceil((this.rate(key) * this.bootMs * 2) / 1000);
    const peak = this.peaks.get(key);
    const burst = peak !== undefined && now - peak.at < this.burstMemoryMs ? peak.n : 0;
    return Math.min(this.maxSize, Math.max(base, need, burst));
  }

  /** Slot creations allowed at once for `key`: `concurrency`, or in demand mode what sustains its rate. */
  private creationLimit(key: string): number {
    if (this.mode === "quiet") return this.concurrency;
    const max = Math.max(this.concurrency, this.options.demandConcurrency ?? 2);
    return Math.min(max, Math.max(this.concurrency, Math.ceil((this.rate(key) * this.bootMs) / 1000)));
  }

  /** Takes of `key` per second recently (see the file comment), for demand mode. */
  private rate(key: string): number {
    const now = Date.now();
    const times = this.demand.get(key) ?? [];
    const rateWindowMs = this.options.rateWindowMs ?? 10_000;
    let recent = 0;
    let oldest = now;
    for (let i = times.length - 1; i >= 0 && times[i]! >= now - rateWindowMs; i--, recent++) oldest = times[i]!;
    // n takes spanning t ms are n − 1 intervals: a stream of starts 150 ms apart is at its full rate after a
    // few of them (dividing by the whole window would see a fraction of it), and a single start is no
    // stream (one per window). Spans under 250 ms count as 250 ms, so a burst reads as a high but finite rate.
    if (recent < 2) return (recent * 1000) / rateWindowMs;
    return ((recent - 1) * 1000) / Math.max(250, now - oldest);
  }

  /**
   * Until when refills of `key` wait after a burst (see burstHoldMs), epoch ms; 0 or past when they do not.
   * A take starts or extends a hold when, in the second up to it, the key had at least BURST_MIN_TAKES takes
   * and more than 4 × what `demandConcurrency` boots at the measured boot time produce in a second, or when
   * it comes while a hold runs: the hold ends `burstHoldMs` after the last take of the burst.
   */
  burstHoldUntil(key: string): number {
    return this.holds.get(key) ?? 0;
  }

  private noteTake(key: string, times: readonly number[], now: number): void {
    if (this.mode !== "demand") return;
    this.scheduleShrink();
    const holdMs = this.options.burstHoldMs ?? 1500;
    let n = 0;
    let size = 0;
    for (let i = times.length - 1; i >= 0 && times[i]! > now - BURST_SIZE_WINDOW_MS; i--, size++) if (times[i]! > now - 1000) n++;
    const peak = this.peaks.get(key);
    // A burst's size: its takes within BURST_SIZE_WINDOW_MS (a loaded gateway issues a burst's starts over more than a second).
    if (n >= BURST_MIN_TAKES && (peak === undefined || size >= peak.n || now - peak.at >= this.burstMemoryMs)) this.peaks.set(key, { n: size, at: now });
    if (holdMs <= 0) return;
    const sustainable = Math.max(this.concurrency, this.options.demandConcurrency ?? 2);
    const held = now < (this.holds.get(key) ?? 0);
    if (held || (n >= BURST_MIN_TAKES && (n * this.bootMs) / 1000 > 4 * sustainable)) this.holds.set(key, now + holdMs);
  }

  /**
   * `demand`: idle slots above a key's target (its demand passed: the rate window and the burst memory)
   * are destroyed, oldest first, checked every `rateWindowMs` while any key holds more than its base.
   */
  private scheduleShrink(): void {
    if (this.mode !== "demand" || this.shrinkTimer !== undefined || this.closed) return;
    this.shrinkTimer = setTimeout(() => {
      this.shrinkTimer = undefined;
      this.shrink();
    }, this.options.rateWindowMs ?? 10_000);
    this.shrinkTimer.unref();
  }

  /** Destroys idle slots above each key's target now (see scheduleShrink); re-arms while any key is above its base. */
  shrink(): void {
    if (!this.enabled) return;
    let above = false;
    for (const [key, list] of this.idle) {
      const target = this.target(key);
      while (list.length > target) void this.factory.destroy(list.shift()!);
      if (list.length > (key === this.options.defaultKey ? this.options.size : 0)) above = true;
    }
    if (above) this.scheduleShrink();
  }

  /** The boot time the demand sizing assumes now, ms (for tests and metrics). */
  expectedBootMs(): number {
    return this.bootMs;
  }

  /**
   * Hands out one ready idle slot of `key` (oldest first), or undefined, and records the demand. It does
   * not refill: the caller calls refillAfterStart() once its start is done, so a slot booting (bwrap's mounts, Node
   * start-up) does not compete with the specialisation for the CPU and the mount lock (measured: the
   * specialisation took 40–60 ms instead of ~20 with a slot booting beside it on a loaded 2-core node).
   */
  take(key: string): S | undefined {
    if (!this.enabled) return undefined;
    const times = this.demand.get(key) ?? [];
    const now = Date.now();
    times.push(now);
    this.demand.set(key, times);
    this.noteTake(key, times, now);
    const list = this.idle.get(key) ?? [];
    let slot: S | undefined;
    while (list.length > 0) {
      const s = list.shift()!;
      if (this.factory.alive(s)) {
        slot = s;
        break;
      }
      void this.factory.destroy(s);
    }
    return slot;
  }

  /**
   * When `take()` found no idle slot: claims the oldest unclaimed slot of `key` still booting, so the
   * start waits for a sandbox that is already part-way up instead of booting a second one beside it
   * (two boots on a 2-core node slow each other down: measured 312 ms for a start with the pool just
   * exhausted vs 233 ms with no pool at all, bench/results/cold-start.md). Returns undefined when none
   * boots; the promise resolves with the slot, or with undefined when its creation failed or the pool
   * closed (then start fresh). A creation still waiting in the boot gate (a low-priority refill behind
   * on-demand boots) is not claimed: waiting for it would put the start behind every boot queued ahead.
   */
  claimBooting(key: string): Promise<S | undefined> | undefined {
    const entry = this.booting.get(key)?.find((e) => e.claimer === null && e.started);
    if (!entry) return undefined;
    return new Promise((resolve) => (entry.claimer = resolve));
  }

  /**
   * What a driver calls when a start is done. `demand`: refill `settleMs` after the first start since the
   * last refill (later starts do not push it back). `quiet`: refill once no start happened for
   * `refillDelayMs`, so the boot does not compete with the first requests of the instance just started
   * (nor with the next starts of a burst) — but a steady stream of starts then never refills.
   */
  refillAfterStart(): void {
    if (!this.enabled) return;
    if (this.mode === "demand") {
      if (this.refillTimer !== undefined) return;
      this.refillTimer = setTimeout(() => {
        this.refillTimer = undefined;
        this.refill();
      }, this.options.settleMs ?? 50);
      this.refillTimer.unref();
      return;
    }
    clearTimeout(this.refillTimer);
    this.refillTimer = setTimeout(() => this.refill(), this.options.refillDelayMs ?? 250);
    this.refillTimer.unref();
  }

  /** Starts slot creations until every key with demand reaches its target (bounded by `concurrency`). */
  refill(): void {
    if (!this.enabled || Date.now() < this.backoffUntil) return;
    const keys = new Set<string>([this.options.defaultKey, ...this.demand.keys()]);
    const now = Date.now();
    for (const key of keys) {
      const list = this.idle.get(key) ?? [];
      // Slots that died while idle (killed from outside) are dropped so they are replaced.
      for (let i = list.length - 1; i >= 0; i--) if (!this.factory.alive(list[i]!)) void this.factory.destroy(list.splice(i, 1)[0]!);
      this.idle.set(key, list);
      const hold = this.burstHoldUntil(key);
      if (hold > now) {
        this.refillAt(hold);
        continue;
      }
      const limit = this.creationLimit(key);
      while (this.inFlight < limit && list.length + (this.creating.get(key) ?? 0) < this.target(key)) this.createOne(key);
    }
  }

  /** Refills at `at` (epoch ms) at the latest; one timer for every key's hold. */
  private refillAt(at: number): void {
    if (this.holdTimer !== undefined && this.holdUntil <= at) return;
    clearTimeout(this.holdTimer);
    this.holdUntil = at;
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined;
      this.refill();
    }, Math.max(1, at - Date.now()));
    this.holdTimer.unref();
  }

  private createOne(key: string): void {
    this.inFlight++;
    this.creating.set(key, (this.creating.get(key) ?? 0) + 1);
    const entry: { claimer: ((slot: S | undefined) => void) | null; started: boolean } = { claimer: null, started: false };
    const booting = this.booting.get(key) ?? [];
    booting.push(entry);
    this.booting.set(key, booting);
    const settle = (): void => {
      const i = booting.indexOf(entry);
      if (i !== -1) booting.splice(i, 1);
    };
    let t0 = performance.now();
    const p = this.factory.create(key, () => {
      entry.started = true;
      t0 = performance.now(); // the boot time, without the wait in the gate
    }).then(
      (slot) => {
        settle();
        this.bootMs = 0.7 * this.bootMs + 0.3 * (performance.now() - t0);
        if (this.closed) {
          entry.claimer?.(undefined);
          return this.factory.destroy(slot);
        }
        if (entry.claimer) {
          entry.claimer(slot);
          return;
        }
        const list = this.idle.get(key) ?? [];
        list.push(slot);
        this.idle.set(key, list);
        if (list.length > (key === this.options.defaultKey ? this.options.size : 0)) this.scheduleShrink();
      },
      (err: unknown) => {
        settle();
        entry.claimer?.(undefined);
        this.options.onError?.(err);
        this.backoffUntil = Date.now() + (this.options.retryMs ?? 1000);
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.refill(), this.options.retryMs ?? 1000);
        this.retryTimer.unref();
      },
    ).finally(() => {
      this.inFlight--;
      this.creating.set(key, (this.creating.get(key) ?? 1) - 1);
      this.pending.delete(p);
      // A claimed slot's start refills once it is done (see take()); refilling now would compete with it.
      if (entry.claimer === null) this.refill();
    });
    this.pending.add(p);
  }

  /** Destroys every idle slot and stops refilling; waits for creations in progress. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.refillTimer);
    clearTimeout(this.holdTimer);
    clearTimeout(this.shrinkTimer);
    const slots = [...this.idle.values()].flat();
    this.idle.clear();
    await Promise.all([...slots.map((s) => this.factory.destroy(s)), ...this.pending]);
  }
}
