/**
 * The host side of a pre-warm slot's code mount, shared by the drivers (docs/prewarm.md, step 2).
 *
 * `<root>/slots` is a small tmpfs with **shared** propagation; each slot gets an empty dir
 * `<root>/slots/<slot>` that its sandbox binds as its code dir with slave propagation (bwrap does that by
 * default; Docker needs the `rslave` bind option). Specialising mounts the artifact read-only on a private
 * staging dir `<root>/stage/<slot>` and *moves* it onto the slot dir, so the copy that propagates into the
 * sandbox is read-only from the start. Neither names a host path in the sandbox's /proc/self/mountinfo
 * (issue 12.8): the slot dir is `/<slot>` of a tmpfs (a bind of a host dir would show the state dir), and
 * the artifact is a read-only overlay (`lowerdir=fn:e`, relative to `<root>/views/<slot>`; a bind would
 * show its path in the data dir and its digest; see MountHelper.mountView).
 * Invariant: a slot dir exists from `create()` until `remove()`, and nothing stays mounted on it after
 * `remove()`.
 */
import { mkdirSync, readdirSync, readFileSync, rmdirSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../shared/logger";
import { removeView, startMountHelper, type MountHelper } from "./mount-helper";

/** What a driver does with its slots' code dirs. Methods reject with the kernel's message. */
export interface SlotMounts {
  /** `<root>/slots`: the shared mount holding every slot dir. */
  readonly slotsRoot: string;
  /** Makes the shared and staging mounts (once), then an empty code dir for `slotId`; resolves with its host path. */
  create(slotId: string): Promise<string>;
  /** Mounts `artifactDir` read-only on `slotId`'s code dir (the mount propagates into its sandbox). */
  attach(slotId: string, artifactDir: string): Promise<void>;
  /** Unmounts whatever is on `slotId`'s code dir (the unmount propagates too) and removes its dirs. Never throws. */
  remove(slotId: string): Promise<void>;
  /** Slot ids that have a code dir now (reconcile: the ones no live slot owns are leftovers). */
  list(): string[];
  /** Unmounts `<root>/slots` and `<root>/stage` (the root dir stays removable) and stops the helper. Idempotent. */
  close(): Promise<void>;
}

/** Whether `dir` is a mount point in this process's mount namespace (field 5 of /proc/self/mountinfo). */
export function isMountPoint(dir: string): boolean {
  const text = readFileSync("/proc/self/mountinfo", "utf8");
  // mountinfo escapes space, tab, newline and backslash as octal.
  const escaped = dir.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`);
  return text.split("\n").some((line) => line.split(" ")[4] === escaped);
}

/**
 * Slot mounts under `root` (created on first use). Needs root and /usr/bin/perl (the mount helper).
 * Nothing is mounted until the first `create()`.
 */
export function createSlotMounts(root: string, log: Logger): SlotMounts {
  const slotsRoot = join(root, "slots");
  const stageRoot = join(root, "stage");
  const viewsRoot = join(root, "views");
  let mounts: Promise<MountHelper> | null = null;
  /** Starts the mount helper once and prepares `slots` (shared) and `stage` (private). */
  const ensure = (): Promise<MountHelper> => {
    mounts ??= (async () => {
      const helper = startMountHelper();
      for (const [dir, shared] of [[slotsRoot, true], [stageRoot, false]] as const) {
        mkdirSync(dir, { recursive: true, mode: 0o755 });
        // Idempotent across driver restarts: mount only when it is not a mount point yet. 1 MiB: it
        // holds empty dirs only.
        if (!isMountPoint(dir)) await (shared ? helper.shareTmpfs(dir, "size=1024k,mode=0755") : helper.makePrivate(dir));
      }
      return helper;
    })();
    mounts.catch(() => (mounts = null));
    return mounts;
  };
  return {
    slotsRoot,
    async create(slotId) {
      // The shared mount must exist before a sandbox binds a slot dir, or later mounts do not propagate.
      await ensure();
      const codeDir = join(slotsRoot, slotId);
      mkdirSync(codeDir, { mode: 0o755 });
      mkdirSync(join(stageRoot, slotId), { mode: 0o755 });
      return codeDir;
    },
    async attach(slotId, artifactDir) {
      const helper = await ensure();
      const stage = join(stageRoot, slotId);
      await helper.mountViewAt(artifactDir, join(viewsRoot, slotId), stage, join(slotsRoot, slotId));
    },
    async remove(slotId) {
      const codeDir = join(slotsRoot, slotId);
      // A slot dir left by a killed run may still carry its mount: start the helper for it then too.
      if (mounts || isMountPoint(codeDir)) {
        const helper = await ensure().catch(() => null);
        // EINVAL: nothing is mounted there (a slot never specialised); any other failure is logged.
        await helper?.unmount(codeDir).catch((err: Error) => {
          if (!/Invalid argument/.test(err.message)) log.error({ err, slotId }, "unmounting a slot's code failed");
        });
      }
      removeView(join(viewsRoot, slotId));
      for (const d of [codeDir, join(stageRoot, slotId)]) {
        try {
          rmdirSync(d);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") log.error({ err, dir: d }, "removing a slot dir failed");
        }
      }
    },
    list() {
      try {
        return readdirSync(slotsRoot);
      } catch {
        return [];
      }
    },
    async close() {
      // A killed run's mounts are unmounted too, even when this run never made a slot.
      if (!mounts && (isMountPoint(slotsRoot) || isMountPoint(stageRoot))) ensure().catch(() => undefined);
      const helper = await mounts?.catch(() => null);
      mounts = null;
      if (!helper) return;
      for (const dir of [slotsRoot, stageRoot]) await helper.unmount(dir).catch((err: unknown) => log.warn({ err, dir }, "unmounting a pool dir failed"));
      helper.close();
    },
  };
}
