/**
 * A long-lived root helper that performs mount(2) calls for the pre-warm pool, so specialising a slot
 * costs a pipe round trip instead of exec'ing `mount` three times (measured here under load: one
 * `mount --bind` exec took 44 ms; the syscalls themselves take microseconds). Node has no mount(2), and
 * a compiler is not guaranteed on a node, so the helper is a few lines of Perl (perl-base is Essential
 * in Debian) calling the syscall by number.
 *
 * Requests are one line each, fields separated by TAB, answered in order by one line `ok` or
 * `err <errno text>`. Paths containing TAB or newline are refused before they reach the helper.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { splitLines } from "./output-lines";

/** Makes `viewDir` with `fn` → `source` and an empty `e` (see MountHelper.mountView). */
function prepareView(source: string, viewDir: string): void {
  rmSync(viewDir, { recursive: true, force: true });
  mkdirSync(join(viewDir, "e"), { recursive: true, mode: 0o755 });
  symlinkSync(source, join(viewDir, "fn"));
}

/** Removes what mountView made in `viewDir` (never the source). Never throws. */
export function removeView(viewDir: string): void {
  try {
    rmSync(viewDir, { recursive: true, force: true });
  } catch {
    // gone
  }
}

/** mount(2) flags (linux/mount.h). */
const MS = { RDONLY: 1, NOSUID: 2, NODEV: 4, NOEXEC: 8, REMOUNT: 32, BIND: 4096, MOVE: 8192, REC: 16384, PRIVATE: 1 << 18, SHARED: 1 << 20 } as const;
const MNT_DETACH = 2;

/** Syscall numbers per architecture: [mount, umount2]. */
const SYSCALLS: Partial<Record<NodeJS.Architecture, [number, number]>> = { x64: [165, 166], arm64: [40, 39] };

// `m src dst flags` → mount(src|NULL, dst, NULL, flags, NULL); `u dst` → umount2(dst, MNT_DETACH);
// `t dst flags data` → mount("tmpfs", dst, "tmpfs", flags, data);
// `o dir dst flags data` → chdir(dir), mount("overlay", dst, "overlay", flags, data), chdir("/");
// `v dir stage flags data dst` → as `o` onto stage, then mount(stage, dst, NULL, MS_MOVE, NULL); a failed
// move unmounts the stage again. One answer for both: one wake-up of the caller, not one per mount.
const SCRIPT = String.raw`
use strict; $| = 1;
my ($sm, $su) = @ARGV;
while (my $l = <STDIN>) {
  chomp $l; my @f = split /\t/, $l, -1; my $r;
  if ($f[0] eq "m") { $r = syscall($sm, $f[1] eq "" ? 0 : $f[1], $f[2], 0, 0 + $f[3], 0); }
  elsif ($f[0] eq "u") { $r = syscall($su, $f[1], ${MNT_DETACH}); }
  elsif ($f[0] eq "t") { my $t = "tmpfs"; $r = syscall($sm, $t, $f[1], $t, 0 + $f[2], $f[3]); }
  elsif ($f[0] eq "o" || $f[0] eq "v") {
    if (chdir($f[1])) { my $t = "overlay"; $r = syscall($sm, $t, $f[2], $t, 0 + $f[3], $f[4]); my $e = $! + 0; chdir("/"); $! = $e; }
    else { $r = -1; }
    if ($f[0] eq "v" && $r == 0) {
      $r = syscall($sm, $f[2], $f[5], 0, ${MS.MOVE}, 0);
      if ($r != 0) { my $e = $! + 0; syscall($su, $f[2], ${MNT_DETACH}); $! = $e; }
    }
  }
  else { print "err bad request\n"; next; }
  print($r == 0 ? "ok\n" : "err $!\n");
}`;

/** The helper's operations. Every method rejects with an Error carrying the kernel's message. */
export interface MountHelper {
  /** Makes `dir` a mount point (bind onto itself) with shared propagation: mounts under it reach sandboxes that bind a subdirectory. */
  makeShared(dir: string): Promise<void>;
  /** Mounts a tmpfs at `dir` (noexec, nosuid, nodev, mount data `data`) with shared propagation. */
  shareTmpfs(dir: string, data: string): Promise<void>;
  /** Moves the mount at `source` (under a private mount) to `target`. */
  move(source: string, target: string): Promise<void>;
  /** Makes `dir` a private mount point (a `move` source must not sit under a shared mount). */
  makePrivate(dir: string): Promise<void>;
  /**
   * Mounts `source` read-only, nosuid, nodev at `target`, atomically as far as any sandbox can see:
   * bind at the private `stage`, remount read-only there, then move to `target`. The copies propagated
   * into sandboxes inherit the read-only flag (a remount after the bind would not propagate).
   */
  bindReadOnly(source: string, stage: string, target: string): Promise<void>;
  /**
   * Mounts `source` read-only, nosuid, nodev at `target` as a one-layer read-only overlay whose
   * mountinfo line names no host path: its root is `/` and its options read `lowerdir=fn:e`, relative
   * to `viewDir` (made here: `fn` a symlink to `source`, `e` an empty dir). A bind would show `source`'s
   * path inside its filesystem (the data dir, the artifact digest) to whoever reads /proc/self/mountinfo.
   * Remove `viewDir` (removeView) after unmounting.
   */
  mountView(source: string, viewDir: string, target: string): Promise<void>;
  /**
   * mountView on the private `stage`, then moves it to `target` (what a pool slot's code mount needs),
   * in one round trip to the helper. On failure nothing stays mounted on `stage` or `target`.
   */
  mountViewAt(source: string, viewDir: string, stage: string, target: string): Promise<void>;
  /** Mounts a tmpfs at `target`: noexec, nosuid, nodev, with mount data `data` (e.g. `size=65536k,mode=0755`, no TAB). */
  mountTmpfs(target: string, data: string): Promise<void>;
  /** Lazily unmounts `target` (MNT_DETACH); the unmount propagates into sandboxes. */
  unmount(target: string): Promise<void>;
  /** Stops the helper. Idempotent. */
  close(): void;
}

/**
 * Starts the helper (needs root and /usr/bin/perl).
 * @throws Error when the architecture's syscall numbers are unknown.
 */
export function startMountHelper(perlPath = "/usr/bin/perl"): MountHelper {
  const nums = SYSCALLS[process.arch];
  if (!nums) throw new Error(`mount helper: no syscall numbers for architecture ${process.arch}`);
  let child: ChildProcess | null = null;
  const waiting: Array<{ resolve: () => void; reject: (e: Error) => void; what: string }> = [];
  const ensure = (): ChildProcess => {
    if (child && child.exitCode === null && child.signalCode === null) return child;
    const c = spawn(perlPath, ["-e", SCRIPT, String(nums[0]), String(nums[1])], { stdio: ["pipe", "pipe", "inherit"], env: { PATH: "/usr/bin:/bin" } });
    splitLines(c.stdout!, (line) => {
      const w = waiting.shift();
      if (!w) return;
      if (line === "ok") w.resolve();
      else w.reject(new Error(`${w.what}: ${line.replace(/^err /, "")}`));
    });
    c.on("exit", () => {
      for (const w of waiting.splice(0)) w.reject(new Error(`${w.what}: the mount helper exited`));
    });
    c.stdin!.on("error", () => {});
    child = c;
    return c;
  };
  const call = (what: string, fields: Array<string | number>): Promise<void> => {
    for (const f of fields) if (typeof f === "string" && /[\t\n]/.test(f)) return Promise.reject(new Error(`${what}: path contains a tab or newline`));
    const c = ensure();
    return new Promise((resolve, reject) => {
      waiting.push({ resolve, reject, what });
      c.stdin!.write(`${fields.join("\t")}\n`);
    });
  };
  const mount = (what: string, src: string, dst: string, flags: number): Promise<void> => call(what, ["m", src, dst, flags]);
  return {
    async makeShared(dir) {
      await mount(`bind ${dir}`, dir, dir, MS.BIND);
      await mount(`make-shared ${dir}`, "", dir, MS.SHARED);
    },
    async shareTmpfs(dir, data) {
      await call(`tmpfs ${dir}`, ["t", dir, MS.NOEXEC | MS.NOSUID | MS.NODEV, data]);
      await mount(`make-shared ${dir}`, "", dir, MS.SHARED);
    },
    move: (source, target) => mount(`move ${source}`, source, target, MS.MOVE),
    async makePrivate(dir) {
      await mount(`bind ${dir}`, dir, dir, MS.BIND);
      await mount(`make-private ${dir}`, "", dir, MS.PRIVATE);
    },
    async bindReadOnly(source, stage, target) {
      await mount(`bind ${source}`, source, stage, MS.BIND);
      try {
        await mount(`remount-ro ${stage}`, "", stage, MS.REMOUNT | MS.BIND | MS.RDONLY | MS.NOSUID | MS.NODEV);
        await mount(`move ${stage}`, stage, target, MS.MOVE);
      } catch (err) {
        await call("unmount stage", ["u", stage]).catch(() => {});
        throw err;
      }
    },
    async mountView(source, viewDir, target) {
      prepareView(source, viewDir);
      // Two lower layers, no upper: overlayfs is read-only then (one layer alone is refused).
      await call(`overlay ${target}`, ["o", viewDir, target, MS.RDONLY | MS.NOSUID | MS.NODEV, "lowerdir=fn:e"]);
    },
    async mountViewAt(source, viewDir, stage, target) {
      prepareView(source, viewDir);
      // One request, one answer (op `v`): the overlay on the private stage, then its move onto the target;
      // on failure nothing stays mounted on either (a failed overlay is never moved, a failed move unmounted).
      await call(`overlay and move ${stage}`, ["v", viewDir, stage, MS.RDONLY | MS.NOSUID | MS.NODEV, "lowerdir=fn:e", target]);
    },
    mountTmpfs: (target, data) => call(`tmpfs ${target}`, ["t", target, MS.NOEXEC | MS.NOSUID | MS.NODEV, data]),
    unmount: (target) => call(`unmount ${target}`, ["u", target]),
    close() {
      child?.stdin?.end();
      child = null;
    },
  };
}
