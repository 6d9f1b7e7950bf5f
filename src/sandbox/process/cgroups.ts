/**
 * Cgroup management for the process driver, for both layouts:
 *  - v1 (this project's CI machines): one hierarchy per controller at `<fsRoot>/{memory,pids,cpu}`;
 *    an instance gets `<fsRoot>/<controller>/<rootName>/<instanceId>` in each.
 *  - v2 (unified): `<fsRoot>/<rootName>/<instanceId>`, controllers enabled through `cgroup.subtree_control`.
 *
 * Invariant: every directory under `<rootName>` is one instance's cgroup, named by its instance id;
 * nothing else lives there, so reconcile may kill and remove all of it.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, statfsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";

/** statfs magic numbers (linux/magic.h). */
const CGROUP2_SUPER_MAGIC = 0x63677270;
const CGROUP_SUPER_MAGIC = 0x27e0eb;

export const CGROUP_MODES = ["v1", "v2"] as const;
export type CgroupMode = (typeof CGROUP_MODES)[number];

const V1_CONTROLLERS = ["memory", "pids", "cpu"] as const;
const MiB = 1024 * 1024;

/** Limits applied to one instance's cgroup. */
export interface CgroupLimits {
  readonly memoryMb: number;
  readonly pidsMax: number;
  /** Relative CPU weight in cgroup v2 units (1–10000, default 100); v1 shares are derived (×10.24). */
  readonly cpuWeight: number;
}

/** Where a layout lives and which mode it is. */
export interface CgroupLayout {
  readonly mode: CgroupMode;
  /** The mount holding the controllers: `/sys/fs/cgroup` (v1: its parent of per-controller mounts). */
  readonly fsRoot: string;
}

/**
 * Detects the cgroup layout under `fsRoot` (default `/sys/fs/cgroup`): v2 when `fsRoot` itself is a
 * cgroup2 mount, v1 when `<fsRoot>/memory` and `<fsRoot>/pids` are v1 mounts (hybrid setups with a v2
 * hierarchy at `unified/` but controllers in v1 count as v1: the limits live in v1).
 * @throws Error when neither layout is usable (no cgroups, or v1 without memory/pids).
 */
export function detectCgroupLayout(fsRoot = "/sys/fs/cgroup"): CgroupLayout {
  const type = (p: string): number | null => {
    try {
      return Number(statfsSync(p).type);
    } catch {
      return null;
    }
  };
  if (type(fsRoot) === CGROUP2_SUPER_MAGIC) return { mode: "v2", fsRoot };
  if (type(join(fsRoot, "memory")) === CGROUP_SUPER_MAGIC && type(join(fsRoot, "pids")) === CGROUP_SUPER_MAGIC) {
    return { mode: "v1", fsRoot };
  }
  throw new Error(`no usable cgroup hierarchy under ${fsRoot}: need cgroup v2 mounted there, or v1 memory and pids controllers`);
}

/** One instance's cgroup (a directory per controller in v1, one directory in v2). */
export interface InstanceCgroup {
  readonly id: string;
  /** The `cgroup.procs` files a wrapper writes its own pid into before it execs the sandbox. */
  readonly procsFiles: readonly string[];
  /** Pids currently in the cgroup (empty when gone). */
  pids(): number[];
  /** Kernel OOM kills so far in this cgroup. */
  oomKills(): number;
  /** Memory use now and peak, bytes; null when the cgroup is gone. */
  memory(): { currentBytes: number; peakBytes: number } | null;
  /** SIGKILLs every process in the cgroup (including escaped forks) until it is empty. Resolves with the count killed. */
  killAll(): Promise<number>;
  /** Removes the cgroup directories (after killAll). Idempotent. */
  remove(): Promise<void>;
}

/**
 * Manages the `<rootName>` subtree of one layout.
 * `requireControllers: false` lets tests exercise a v2 hierarchy that has no controllers enabled
 * (limits are then not applied); production code keeps it true so an instance never runs unlimited.
 */
export class CgroupManager {
  readonly layout: CgroupLayout;
  readonly rootName: string;
  private readonly requireControllers: boolean;
  private prepared = false;

  constructor(layout: CgroupLayout, rootName: string, options: { requireControllers?: boolean } = {}) {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(rootName) || rootName.startsWith(".")) throw new Error(`invalid cgroup root name "${rootName}"`);
    this.layout = layout;
    this.rootName = rootName;
    this.requireControllers = options.requireControllers ?? true;
  }

  /** Directories that hold instance cgroups (one per v1 controller, one in v2). */
  rootDirs(): string[] {
    if (this.layout.mode === "v2") return [join(this.layout.fsRoot, this.rootName)];
    // memory and pids are required (detectCgroupLayout checked them); cpu is optional, so it goes last.
    return V1_CONTROLLERS.map((c) => join(this.layout.fsRoot, c)).filter((d) => existsSync(d)).map((d) => join(d, this.rootName));
  }

  private prepare(): void {
    if (this.prepared) return;
    for (const dir of this.rootDirs()) mkdirSync(dir, { recursive: true });
    if (this.layout.mode === "v2") {
      // Controllers must be enabled in every ancestor's subtree_control for the leaves to get them.
      const wanted = ["memory", "pids", "cpu"];
      const available = readText(join(this.layout.fsRoot, "cgroup.controllers")).split(/\s+/).filter(Boolean);
      const missing = wanted.filter((c) => !available.includes(c));
      if (missing.length > 0 && this.requireControllers) {
        throw new Error(`cgroup v2 at ${this.layout.fsRoot} lacks controllers: ${missing.join(", ")} (enable them or delegate a subtree)`);
      }
      const enable = wanted.filter((c) => available.includes(c)).map((c) => `+${c}`).join(" ");
      if (enable) {
        writeFileSync(join(this.layout.fsRoot, "cgroup.subtree_control"), enable);
        writeFileSync(join(this.layout.fsRoot, this.rootName, "cgroup.subtree_control"), enable);
      }
    }
    this.prepared = true;
  }

  /**
   * Creates the cgroup of one instance with its limits.
   * @throws Error when the cgroup cannot be created or a required limit cannot be written.
   */
  create(id: string, limits: CgroupLimits): InstanceCgroup {
    this.prepare();
    const dirs = this.rootDirs().map((d) => join(d, id));
    try {
      mkdirSync(dirs[0]!);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      // The root was removed while empty (removeRoot, or another node's reconcile): prepare it again.
      this.prepared = false;
      this.prepare();
      mkdirSync(dirs[0]!);
    }
    for (const d of dirs.slice(1)) mkdirSync(d);
    const memBytes = limits.memoryMb * MiB;
    try {
      if (this.layout.mode === "v1") {
        const [mem, pids, cpu] = dirs as [string, string, string | undefined];
        writeFileSync(join(mem, "memory.limit_in_bytes"), String(memBytes));
        // No swapping past the limit when swap accounting exists (file absent otherwise).
        writeOptional(join(mem, "memory.memsw.limit_in_bytes"), String(memBytes));
        writeFileSync(join(pids, "pids.max"), String(limits.pidsMax));
        if (cpu !== undefined) writeOptional(join(cpu, "cpu.shares"), String(Math.max(2, Math.round(limits.cpuWeight * 10.24))));
      } else {
        const [dir] = dirs as [string];
        const w = this.requireControllers ? writeFileSync : writeOptional;
        w(join(dir, "memory.max"), String(memBytes));
        writeOptional(join(dir, "memory.swap.max"), "0");
        w(join(dir, "pids.max"), String(limits.pidsMax));
        writeOptional(join(dir, "cpu.weight"), String(limits.cpuWeight));
      }
    } catch (err) {
      for (const d of dirs) tryRmdir(d);
      throw err;
    }
    return this.open(id);
  }

  /** A handle on an existing instance cgroup (for reconcile and tests). */
  open(id: string): InstanceCgroup {
    const dirs = this.rootDirs().map((d) => join(d, id));
    const v1 = this.layout.mode === "v1";
    const memDir = dirs[0] as string;
    const pids = (): number[] => {
      const all = new Set<number>();
      for (const d of dirs) {
        for (const line of readText(join(d, "cgroup.procs")).split("\n")) if (line) all.add(Number(line));
      }
      return [...all];
    };
    return {
      id,
      procsFiles: dirs.map((d) => join(d, "cgroup.procs")),
      pids,
      oomKills: () => {
        const text = readText(join(memDir, v1 ? "memory.oom_control" : "memory.events"));
        const m = /^oom_kill (\d+)$/m.exec(text);
        return m ? Number(m[1]) : 0;
      },
      memory: () => {
        const current = readText(join(memDir, v1 ? "memory.usage_in_bytes" : "memory.current"));
        if (current === "") return null;
        // memory.peak exists from Linux 5.19; older v2 kernels report 0 (the contract allows it).
        const peak = readText(join(memDir, v1 ? "memory.max_usage_in_bytes" : "memory.peak"));
        return { currentBytes: Number(current), peakBytes: peak === "" ? 0 : Number(peak) };
      },
      killAll: async () => {
        let killed = 0;
        if (!v1 && existsSync(join(memDir, "cgroup.kill"))) {
          // Linux ≥ 5.14: the kernel kills the whole subtree atomically, forks included.
          const n = pids().length;
          writeOptional(join(memDir, "cgroup.kill"), "1");
          killed = n;
        }
        // v1 (or old v2): kill until empty. A fork racing the loop lands in the same cgroup and is
        // caught on the next round; pids.max bounds how many there can be.
        for (let round = 0; round < 200; round++) {
          const list = pids();
          if (list.length === 0) return killed;
          for (const pid of list) {
            try {
              process.kill(pid, "SIGKILL");
              killed++;
            } catch {
              // already gone
            }
          }
          await delay(round < 20 ? 5 : 25);
        }
        throw new Error(`cgroup ${id}: processes survive SIGKILL: ${pids().join(", ")}`);
      },
      remove: async () => {
        for (const d of dirs) {
          // A killed process leaves the cgroup only once reaped; rmdir fails with EBUSY until then.
          for (let round = 0; ; round++) {
            try {
              rmdirSync(d);
              break;
            } catch (err) {
              const code = (err as NodeJS.ErrnoException).code;
              if (code === "ENOENT") break;
              if (code !== "EBUSY" || round >= 100) throw err;
              await delay(10);
            }
          }
        }
      },
    };
  }

  /**
   * Removes the root dirs that hold no instance cgroup (rmdir fails on a cgroup with children or
   * tasks, so a busy root stays). A later create() makes the root again. Returns the dirs removed.
   */
  removeRoot(): string[] {
    const removed: string[] = [];
    for (const d of this.rootDirs()) {
      try {
        rmdirSync(d);
        removed.push(d);
      } catch {
        // absent, or not empty: keep
      }
    }
    this.prepared = false;
    return removed;
  }

  /**
   * Removes empty sibling roots named `<prefix>…` (other than this one): what a node whose data dir is
   * gone, or a killed run, left behind. Only empty ones go (rmdir refuses the rest), and a live node
   * whose empty root vanishes makes it again on its next create(). Returns the dirs removed.
   */
  removeEmptySiblings(prefix: string): string[] {
    if (prefix === "") return [];
    const removed: string[] = [];
    const parents = this.layout.mode === "v2" ? [this.layout.fsRoot] : V1_CONTROLLERS.map((c) => join(this.layout.fsRoot, c)).filter((d) => existsSync(d));
    for (const parent of parents) {
      let names: string[] = [];
      try {
        names = readdirSync(parent, { withFileTypes: true }).filter((e) => e.isDirectory() && e.name.startsWith(prefix) && e.name !== this.rootName).map((e) => e.name);
      } catch {
        continue;
      }
      for (const name of names.slice(0, 10_000)) {
        const dir = join(parent, name);
        // Only a root with no child cgroup: never touch a subtree someone still uses.
        let children = 1;
        try {
          children = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).length;
        } catch {
          continue;
        }
        if (children > 0) continue;
        try {
          rmdirSync(dir);
          removed.push(dir);
        } catch {
          // busy (tasks in it) or already gone
        }
      }
    }
    return removed;
  }

  /** Ids of every instance cgroup present under the root (union over controllers). */
  list(): string[] {
    const ids = new Set<string>();
    for (const d of this.rootDirs()) {
      let entries: string[] = [];
      try {
        entries = readdirSync(d, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
      } catch {
        // root not created yet
      }
      for (const e of entries) ids.add(e);
    }
    return [...ids];
  }
}

function readText(p: string): string {
  try {
    return readFileSync(p, "utf8").trim();
  } catch {
    return "";
  }
}

function writeOptional(p: string, value: string): void {
  // cgroupfs answers EACCES (not ENOENT) for an interface file of a controller that is not enabled.
  if (!existsSync(p)) return;
  try {
    writeFileSync(p, value);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

function tryRmdir(p: string): void {
  try {
    rmdirSync(p);
  } catch {
    // best effort on a failed create
  }
}
