/**
 * Builds the command line that starts one instance: a `sh` wrapper that joins the cgroups, then
 * bubblewrap (running as root, so it can bind host paths the sandbox user cannot traverse), then
 * setpriv inside the sandbox dropping to the instance uid with no capabilities and no_new_privs, then
 * node running the runtime.
 *
 * Why root bwrap + setpriv inside, rather than setpriv before an unprivileged bwrap with a user
 * namespace (measured on Debian 12, bwrap 0.8): an unprivileged bwrap resolves every bind source as
 * the sandbox uid, so the data dir (artifacts, sockets) would have to be traversable by that uid on the
 * host; `--bind-fd` does not help (bwrap realpath()s /proc/self/fd/N and hits the same EACCES). With root
 * bwrap the data dir stays 0700 and the process inside is still an unprivileged host uid (which the
 * network rules match on) with an empty capability set.
 */
import { SANDBOX_ETC_FILES, SANDBOX_TOP_LEVEL } from "../../shared/sandbox-fs";
import { existsSync, lstatSync, readlinkSync } from "node:fs";

/** Fixed paths inside every sandbox. */
export const SANDBOX_PATHS = {
  /** The function's artifact directory (read-only). */
  code: "/fn",
  /** The runtime bundle (read-only). */
  runtime: "/stratus/runtime.cjs",
  /** A Node binary from outside /usr (read-only; the platform setting `process.instanceNode`). */
  node: "/stratus/node",
  /** The runtime's startup snapshot (read-only), bound instead of the bundle when one is used (../runtime-snapshot.ts). */
  snapshot: "/stratus/runtime.blob",
  /** The runtime's boot loader (read-only; src/runtime/boot.cjs): what node runs when it is bound; it loads `runtime` beside it. */
  boot: "/stratus/boot.cjs",
  /** The V8 code cache of the runtime for this sandbox's Node flags (read-only; ../code-cache.ts), beside the loader. */
  codeCache: "/stratus/runtime.cache",
  /** The instance's socket directory (read-write, only this sandbox mounts it). */
  socketDir: "/stratus/run",
  /** Socket file name inside the socket directory. */
  socketName: "fn.sock",
} as const;

const ETC_FILES = SANDBOX_ETC_FILES;
const TOP_LEVEL = SANDBOX_TOP_LEVEL;

/** Inputs of buildSandboxCommand. */
export interface SandboxCommandInput {
  readonly bwrapPath: string;
  readonly setprivPath: string;
  /** util-linux nsenter (default /usr/bin/nsenter). */
  readonly nsenterPath?: string;
  readonly nodePath: string;
  /** The runtime bundle, or with `snapshot` the runtime's startup-snapshot blob (started with `--snapshot-blob`). */
  readonly runtimePath: string;
  readonly snapshot?: boolean;
  /** The runtime's boot loader (not with `snapshot`): node runs it, and it runs the bundle with `codeCachePath`'s cache. */
  readonly bootPath?: string;
  /** The V8 code cache the loader compiles the bundle with (only with `bootPath`). */
  readonly codeCachePath?: string;
  readonly artifactDir: string;
  readonly socketDir: string;
  readonly uid: number;
  readonly gid: number;
  /** `cgroup.procs` files the wrapper writes its pid into before exec. */
  readonly procsFiles: readonly string[];
  readonly network: "outbound" | "none";
  /** Under "outbound": the sandbox's own network namespace (src/shared/netns.ts), joined with nsenter before bwrap. */
  readonly netnsPath?: string;
  /** Host dir bound at /tmp: the instance box's noexec tmpfs (./instance-box.ts). */
  readonly tmpDir: string;
  /** Extra node flags (e.g. `--max-old-space-size=192`). */
  readonly nodeArgs: readonly string[];
  /** RLIMIT_NOFILE, soft and hard, set by the wrapper before bwrap (inherited by everything inside). */
  readonly maxOpenFiles: number;
  /** Host file holding the seccomp program (./seccomp.ts), handed to bwrap as fd 9 (`--seccomp 9`). */
  readonly seccompPath: string;
  /**
   * The KSM launcher (../ksm/ksm-exec.c; platform setting `process.ksm`), exec'd by the wrapper after the
   * cgroup join and before nsenter/bwrap, so the whole sandbox inherits PR_SET_MEMORY_MERGE. Absent: none.
   */
  readonly ksmLauncherPath?: string;
}

/**
 * Returns `[file, args]` for spawn(). The environment is not part of the command line on purpose
 * (secrets in argv are world-readable in /proc/<pid>/cmdline): the caller passes it as spawn's `env`,
 * which bwrap and setpriv hand down unchanged.
 */
export function buildSandboxCommand(input: SandboxCommandInput): [string, string[]] {
  const b: string[] = [
    "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
    ...(input.network === "none" ? ["--unshare-net"] : []),
    "--die-with-parent", "--new-session", "--hostname", "stratus",
    // bwrap reads the program from fd 9 (opened by the wrapper below), closes it and loads it right
    // before exec: every process and thread of the sandbox runs under it.
    "--seccomp", "9",
    // Only setpriv inside uses these two, to switch to the instance uid; it then clears every set.
    "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
    "--ro-bind", "/usr", "/usr",
  ];
  for (const p of TOP_LEVEL) {
    if (!existsSync(p)) continue;
    const st = lstatSync(p);
    if (st.isSymbolicLink()) b.push("--symlink", readlinkSync(p), p);
    else b.push("--ro-bind", p, p);
  }
  // A Node outside /usr (process.instanceNode, e.g. tools/instance-node/…) is bound alone at a fixed path:
  // binding its directory would make the host's path (and its parents, e.g. /work) visible inside. It needs
  // only the system's libraries (ldd: libc, libstdc++, libm, libgcc_s, libdl, libpthread).
  const nodeInside = input.nodePath.startsWith("/usr/") ? input.nodePath : SANDBOX_PATHS.node;
  const boot = input.snapshot !== true && input.bootPath !== undefined;
  // Directories bwrap creates for mount points are 0700 when it runs as root: create them 0755 first.
  b.push("--perms", "0755", "--dir", "/etc", "--perms", "0755", "--dir", "/etc/ssl");
  for (const p of ETC_FILES) b.push("--ro-bind-try", p, p);
  b.push(
    "--proc", "/proc", "--dev", "/dev",
    "--bind", input.tmpDir, "/tmp",
    "--perms", "0755", "--dir", "/stratus",
    ...(nodeInside === input.nodePath ? [] : ["--ro-bind", input.nodePath, nodeInside]),
    "--ro-bind", input.runtimePath, input.snapshot === true ? SANDBOX_PATHS.snapshot : SANDBOX_PATHS.runtime,
    ...(boot ? ["--ro-bind", input.bootPath!, SANDBOX_PATHS.boot] : []),
    ...(boot && input.codeCachePath !== undefined ? ["--ro-bind", input.codeCachePath, SANDBOX_PATHS.codeCache] : []),
    "--ro-bind", input.artifactDir, SANDBOX_PATHS.code,
    "--bind", input.socketDir, SANDBOX_PATHS.socketDir,
    "--remount-ro", "/",
    "--chdir", "/tmp",
    input.setprivPath,
    "--reuid", String(input.uid), "--regid", String(input.gid), "--clear-groups",
    "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--",
    nodeInside, ...input.nodeArgs, ...(input.snapshot === true ? ["--snapshot-blob", SANDBOX_PATHS.snapshot] : [boot ? SANDBOX_PATHS.boot : SANDBOX_PATHS.runtime]),
  );
  // The wrapper joins every cgroup before exec, so no child of the sandbox is ever outside them
  // (writing the pid of an already running bwrap races with its forks). Exit 125 = could not join.
  // `ulimit -n` without -H/-S sets both limits, so nothing inside can raise it again.
  const script = 'f=$1; shift; ulimit -n "$1" || exit 125; shift; n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@" 9<"$f"';
  const enter = input.network === "outbound" && input.netnsPath ? [input.nsenterPath ?? "/usr/bin/nsenter", `--net=${input.netnsPath}`, "--"] : [];
  return ["/bin/sh", ["-c", script, "sh", input.seccompPath, String(input.maxOpenFiles), String(input.procsFiles.length), ...input.procsFiles, ...(input.ksmLauncherPath ? [input.ksmLauncherPath] : []), ...enter, input.bwrapPath, ...b]];
}
