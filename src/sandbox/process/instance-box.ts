/**
 * The writable part of a process sandbox: one tmpfs per sandbox at `<stateDir>/box/<id>`, mounted on the
 * host by the mount helper with noexec, nosuid, nodev and the size cap of /tmp, holding
 *   tmp/  bound at /tmp inside (mode 1777)
 *   run/  bound at the socket dir inside (mode 0700, owned by the instance uid)
 *   code/ (fresh starts and discovery) the artifact as a read-only overlay, bound at the code dir inside;
 *         view/ holds its two layers (`fn` → the artifact, `e` empty; MountHelper.mountView), so
 *         mountinfo inside names neither the data dir nor the artifact's digest
 * Why a host-side tmpfs rather than bwrap's `--tmpfs`: bubblewrap 0.8 mounts its tmpfs without noexec
 * and has no option for it, and a bind keeps the source mount's noexec (bwrap remounts binds with the
 * source's flags plus its own). Both writable paths are then noexec, and /proc/self/mountinfo inside
 * shows them as `/tmp` and `/run` of a tmpfs instead of host paths. The pages count against the memory
 * cgroup of the instance that writes them, as bwrap's own tmpfs did.
 *
 * Invariant: a box dir exists (and is a mount point) from `create()` until `remove()`.
 */
import { chmodSync, chownSync, copyFileSync, mkdirSync, readdirSync, rmdirSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import type { Logger } from "../../shared/logger";
import { startMountHelper, type MountHelper } from "../mount-helper";
import { isMountPoint } from "../slot-mounts";

/** Host paths of one box. */
export interface InstanceBox {
  readonly root: string;
  /** Bound at /tmp. */
  readonly tmp: string;
  /** Bound at the socket dir. */
  readonly run: string;
}

/** The boxes of one driver. Methods reject with the kernel's message. */
export interface InstanceBoxes {
  /** Mounts a fresh box for `id` (size cap `sizeBytes`; run/ owned by uid:gid). */
  create(id: string, sizeBytes: number, uid: number, gid: number): Promise<InstanceBox>;
  /**
   * Mounts `artifactDir` read-only at `<box>/code` (a one-layer overlay whose mountinfo line names no
   * host path) and resolves with that path, to be bound as the code dir. `id`'s box must exist; its
   * removal unmounts the overlay with it.
   */
  mountCode(id: string, artifactDir: string): Promise<string>;
  /** Unmounts and removes `id`'s box (whatever is left of it). Never throws. */
  remove(id: string): Promise<void>;
  /** Ids that have a box dir now (reconcile: the ones no live sandbox owns are leftovers). */
  list(): string[];
  /**
   * Copies `file` onto a driver-wide read-only-by-bind tmpfs at `<stateDir>/shared` (mounted once,
   * reused after a killed run) and resolves with the copy's path: bound into sandboxes from there,
   * mountinfo names it `/<basename>` of a tmpfs instead of its install path.
   */
  shareFile(file: string): Promise<string>;
  /** Unmounts the shared tmpfs (call when no sandbox is left) and stops the mount helper. Idempotent. */
  close(): Promise<void>;
}

/** Boxes under `<stateDir>/box`. Needs root and /usr/bin/perl (the mount helper). */
export function createInstanceBoxes(stateDir: string, log: Logger): InstanceBoxes {
  const root = join(stateDir, "box");
  let helper: MountHelper | null = null;
  const ensure = (): MountHelper => (helper ??= startMountHelper());
  const paths = (id: string): InstanceBox => ({ root: join(root, id), tmp: join(root, id, "tmp"), run: join(root, id, "run") });
  return {
    async create(id, sizeBytes, uid, gid) {
      const box = paths(id);
      mkdirSync(root, { recursive: true, mode: 0o700 });
      mkdirSync(box.root, { mode: 0o700 });
      try {
        await ensure().mountTmpfs(box.root, `size=${Math.max(1, Math.floor(sizeBytes / 1024))}k,mode=0755`);
        mkdirSync(box.tmp);
        chmodSync(box.tmp, 0o1777);
        mkdirSync(box.run, { mode: 0o700 });
        chownSync(box.run, uid, gid);
      } catch (err) {
        await this.remove(id);
        throw err;
      }
      return box;
    },
    async mountCode(id, artifactDir) {
      const box = paths(id);
      const code = join(box.root, "code");
      mkdirSync(code, { mode: 0o755 });
      await ensure().mountView(artifactDir, join(box.root, "view"), code);
      return code;
    },
    async remove(id) {
      const box = paths(id);
      if (isMountPoint(box.root)) {
        await ensure().unmount(box.root).catch((err: unknown) => log.error({ err, id }, "unmounting an instance box failed"));
      }
      try {
        rmdirSync(box.root);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") log.error({ err, dir: box.root }, "removing an instance box failed");
      }
    },
    list() {
      try {
        return readdirSync(root);
      } catch {
        return [];
      }
    },
    async shareFile(file) {
      const dir = join(stateDir, "shared");
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      // Twice the file's size plus 32 MiB: room for a newer runtime copied over it by a later start, and for
      // the runtime's startup snapshot (~9 MB) beside it. A tmpfs size is a limit: only what is copied uses memory.
      if (!isMountPoint(dir)) await ensure().mountTmpfs(dir, `size=${Math.ceil((statSync(file).size * 2) / 1024) + 32 * 1024}k,mode=0755`);
      const copy = join(dir, basename(file));
      copyFileSync(file, copy);
      chmodSync(copy, 0o644);
      return copy;
    },
    async close() {
      const dir = join(stateDir, "shared");
      if (isMountPoint(dir)) await ensure().unmount(dir).catch((err: unknown) => log.warn({ err, dir }, "unmounting the shared tmpfs failed"));
      try {
        rmdirSync(dir);
      } catch {
        // absent
      }
      helper?.close();
      helper = null;
    },
  };
}
