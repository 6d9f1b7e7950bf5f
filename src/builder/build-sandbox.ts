/**
 * The build sandbox: dependency installation (`npm ci`) and bundling (esbuild, through
 * dist/build-worker.cjs) run in a bubblewrap sandbox of the same kind as the instances'
 * (src/sandbox/process/bwrap-args.ts), never in the platform's process:
 *
 * - the only writable paths are the build's work dir (mounted at `/build`: the unpacked project at
 *   `/build/src`, the bundle output at `/build/bundle`, npm's HOME at `/build/home`), a private
 *   tmpfs `/tmp`, and — for the install only — the shared package cache (`/cache/npm` or `/cache/yarn`);
 * - nothing of the platform's data dir is visible (no master key, no store, no other build, no
 *   artifact); of the host only `/usr`, the node install, a handful of `/etc` files (DNS, TLS roots)
 *   and, for the bundler, esbuild's package and binary (read-only);
 * - it runs as an unprivileged uid (default 60499, not the instances' uid), no capabilities,
 *   no_new_privs, its own PID/IPC/UTS namespaces, killed with its process group on timeout or abort;
 * - the bundler has no network at all (`--unshare-net`); `npm ci` needs the registry, so it runs in a
 *   network namespace of its own with a veth and NAT (./build-network.ts): nothing on the host itself
 *   (no port, no abstract Unix socket), no other sandbox, no link-local metadata.
 *
 * The work dir is handed to the build uid (chown) before the sandbox starts; the data dir above it
 * stays 0700 root.
 */
import { SANDBOX_ETC_FILES, SANDBOX_TOP_LEVEL } from "../shared/sandbox-fs";
import { spawn } from "node:child_process";
import { existsSync, lstatSync, readlinkSync } from "node:fs";
import { chown, lstat, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { StratusError, isErrorCode } from "../shared/errors";
import { createBuildNetworks } from "./build-network";
import { createSilentLogger, type Logger } from "../shared/logger";
import type { SandboxNetns, SandboxNetworks } from "../shared/netns";
import { randomBytes } from "node:crypto";
import type { BundleResult } from "./bundle";

/** Default uid/gid of builds: not the instances' (60500), so a build never shares anything with one. */
export const DEFAULT_BUILD_UID = 60499;

/** Fixed paths inside the build sandbox. */
export const BUILD_SANDBOX_PATHS = {
  work: "/build",
  src: "/build/src",
  bundle: "/build/bundle",
  home: "/build/home",
  cache: "/cache/npm",
  yarnCache: "/cache/yarn",
  yarn: "/stratus/tools/yarn",
  worker: "/stratus/build-worker.cjs",
  esbuildPackage: "/stratus/node_modules/esbuild",
  esbuildBinary: "/stratus/esbuild",
} as const;

/** Same lists as the instances' (src/shared/sandbox-fs.ts): DNS and TLS roots, nothing secret. */
const ETC_FILES = SANDBOX_ETC_FILES;
const TOP_LEVEL = SANDBOX_TOP_LEVEL;

/** Processes + threads of all builds together (npm ≈ 15 threads, esbuild ≈ 10, node ≈ 11 each). */
const BUILD_NPROC = 512;
/** Open files per build process. */
const BUILD_NOFILE = 8192;
/** Largest single file a build may write, bytes (1 GiB). */
const BUILD_FSIZE_BYTES = 1024 * 1024 * 1024;

/** Largest result file the host reads back from the worker, bytes. */
const MAX_RESULT_BYTES = 8 * 1024 * 1024;

/** Options of createBuildSandbox; every field has a default. */
export interface BuildSandboxOptions {
  /** dist/build-worker.cjs (default: beside the running bundle, else `<repo>/dist/build-worker.cjs`). */
  readonly workerPath?: string;
  readonly nodePath?: string;
  readonly bwrapPath?: string;
  readonly setprivPath?: string;
  /** Uid/gid the build runs as (default 60499). */
  readonly uid?: number;
  readonly gid?: number;
  /** iptables chain prefix of the install step's network (default "STRATUS-BLD"; ./build-network.ts). */
  readonly iptablesChain?: string;
  /** IPv4 subnet of the install step's network namespaces (default 10.199.0.0/16; platform config `build.sandboxSubnet`). */
  readonly subnet?: string;
  /** Extra destinations the install step may not reach (CIDRs). */
  readonly blockedCidrs?: readonly string[];
  /** Where network set-up problems are logged (default: silent). */
  readonly logger?: Logger;
  /** Size of the private /tmp, MB (default 256: npm unpacks tarballs there). */
  readonly tmpSizeMb?: number;
}

/** One command run in the sandbox. */
export interface SandboxRun {
  /** Host path of the build's work dir (mounted read-write at /build). */
  readonly workDir: string;
  /** Host path of the package manager's cache, mounted read-write at `cacheMount` (install only). */
  readonly cacheDir?: string;
  /** Where `cacheDir` is mounted (default /cache/npm). */
  readonly cacheMount?: string;
  /** Extra read-only binds `[host, inside]` (e.g. a package manager's own package). */
  readonly roBinds?: readonly (readonly [string, string])[];
  readonly network: "registry" | "none";
  /** Command and arguments, as seen inside the sandbox. */
  readonly argv: readonly string[];
  /** Working directory inside the sandbox. */
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** Each output line (stdout and stderr). */
  readonly onLine?: (line: string) => void;
}

export interface SandboxExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Why the host killed it (timeout, cancelled), else null. */
  readonly killed: string | null;
  /** The last lines of output (at most 5). */
  readonly tail: readonly string[];
}

export interface BuildSandbox {
  readonly uid: number;
  readonly gid: number;
  /** Hands the work dir (recursively) to the build uid; call once the upload is unpacked. */
  prepareWorkDir(workDir: string): Promise<void>;
  /** Runs a command in the sandbox. @throws StratusError BUILD_FAILED when it cannot start. */
  run(run: SandboxRun): Promise<SandboxExit>;
  /**
   * Bundles `/build/src` into `/build/bundle` with the worker (no network).
   * @returns the bundle result with HOST paths.
   * @throws StratusError from the bundler (BUILD_FAILED, BUILD_IMPORT_OUTSIDE_PROJECT) or BUILD_FAILED.
   */
  bundle(workDir: string, options: { timeoutMs?: number; signal?: AbortSignal }): Promise<BundleResult>;
}

/** An npm package name (optionally scoped): never `.`/`..` segments, never a path. */
const PACKAGE_NAME = /^(@[a-z0-9][\w.-]*\/)?[a-z0-9][\w.-]*$/i;

/** dist/build-worker.cjs beside the running bundle (dist/cli.js) or, from sources, in `<repo>/dist`. */
export function defaultWorkerPath(): string {
  const candidates = [new URL("./build-worker.cjs", import.meta.url), new URL("../../dist/build-worker.cjs", import.meta.url)].map((u) => fileURLToPath(u));
  return candidates.find((p) => existsSync(p)) ?? candidates[candidates.length - 1]!;
}

/** The host's esbuild package dir and the native binary its JS runs. */
function locateEsbuild(): { packageDir: string; binary: string } {
  const req = createRequire(import.meta.url);
  const main = req.resolve("esbuild");
  const packageDir = dirname(dirname(main));
  const fromEsbuild = createRequire(join(packageDir, "package.json"));
  const arch = process.arch === "x64" ? "x64" : process.arch;
  const binary = fromEsbuild.resolve(`@esbuild/${process.platform}-${arch}/bin/esbuild`);
  return { packageDir, binary };
}

/**
 * Creates the build sandbox; checks that bwrap, setpriv, node and the worker exist.
 * @throws Error naming what is missing and how to get it.
 */
export function createBuildSandbox(options: BuildSandboxOptions = {}): BuildSandbox {
  const nodePath = options.nodePath ?? process.execPath;
  const bwrapPath = options.bwrapPath ?? "/usr/bin/bwrap";
  const setprivPath = options.setprivPath ?? "/usr/bin/setpriv";
  const prlimitPath = "/usr/bin/prlimit";
  const uid = options.uid ?? DEFAULT_BUILD_UID;
  const gid = options.gid ?? uid;
  const workerPath = options.workerPath ?? defaultWorkerPath();
  const tmpSizeBytes = (options.tmpSizeMb ?? 256) * 1024 * 1024;
  for (const [what, p, hint] of [["bwrap", bwrapPath, "apt-get install bubblewrap"], ["setpriv", setprivPath, "apt-get install util-linux"], ["prlimit", prlimitPath, "apt-get install util-linux"], ["node", nodePath, ""], ["build worker", workerPath, "run `npm run build`"]] as const) {
    if (!existsSync(p)) throw new Error(`build sandbox: ${what} not found at ${p}${hint ? ` (${hint})` : ""}`);
  }
  let esbuild: { packageDir: string; binary: string } | null = null;
  let networks: SandboxNetworks | null = null;
  /** Installs running in a namespace of `networks` now: the last one to end closes the manager. */
  let netUsers = 0;
  const nsenterPath = "/usr/bin/nsenter";

  function bwrapArgs(r: SandboxRun, extraBinds: readonly string[]): string[] {
    const b: string[] = [
      "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
      // "registry": the namespace joined before bwrap (see run()); never the host's.
      ...(r.network === "none" ? ["--unshare-net"] : []),
      "--die-with-parent", "--new-session", "--hostname", "stratus-build",
      "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
      "--ro-bind", "/usr", "/usr",
    ];
    for (const p of TOP_LEVEL) {
      if (!existsSync(p)) continue;
      const st = lstatSync(p);
      if (st.isSymbolicLink()) b.push("--symlink", readlinkSync(p), p);
      else b.push("--ro-bind", p, p);
    }
    const nodeDir = dirname(dirname(nodePath));
    if (!nodePath.startsWith("/usr/")) b.push("--ro-bind", nodeDir, nodeDir);
    b.push("--perms", "0755", "--dir", "/etc", "--perms", "0755", "--dir", "/etc/ssl");
    for (const p of ETC_FILES) b.push("--ro-bind-try", p, p);
    b.push(
      "--proc", "/proc", "--dev", "/dev",
      "--size", String(tmpSizeBytes), "--perms", "1777", "--tmpfs", "/tmp",
      "--perms", "0755", "--dir", "/stratus",
      ...extraBinds,
      "--bind", r.workDir, BUILD_SANDBOX_PATHS.work,
    );
    if (r.cacheDir !== undefined) b.push("--perms", "0755", "--dir", "/cache", "--bind", r.cacheDir, r.cacheMount ?? BUILD_SANDBOX_PATHS.cache);
    // Directories bwrap creates for mount points are 0700 when it runs as root: create parents 0755 first.
    for (const [host, inside] of r.roBinds ?? []) b.push("--perms", "0755", "--dir", dirname(inside), "--ro-bind", host, inside);
    b.push(
      "--remount-ro", "/",
      "--chdir", r.cwd,
      setprivPath,
      "--reuid", String(uid), "--regid", String(gid), "--clear-groups",
      "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--",
      // Per-process limits (no cgroup here): RLIMIT_NPROC counts every process and thread of the
      // build uid, i.e. of all builds together, which stops a fork bomb in an allowed install script;
      // RLIMIT_FSIZE caps any one file written (the work dir's total is bounded by the disk).
      prlimitPath, `--nproc=${BUILD_NPROC}`, `--nofile=${BUILD_NOFILE}`, `--fsize=${BUILD_FSIZE_BYTES}`, "--",
      ...r.argv,
    );
    return b;
  }

  async function run(r: SandboxRun, extraBinds: readonly string[] = []): Promise<SandboxExit> {
    if (r.signal?.aborted) return { code: null, signal: null, killed: "the build was cancelled", tail: [] };
    if (r.network !== "registry") return await spawnSandbox(r, extraBinds, null);
    networks ??= createBuildNetworks({
      ...(options.subnet ? { subnet: options.subnet } : {}), ...(options.iptablesChain ? { chain: options.iptablesChain } : {}),
      ...(options.blockedCidrs ? { blockedCidrs: options.blockedCidrs } : {}), logger: options.logger ?? createSilentLogger(),
    });
    const nets = networks;
    const id = randomBytes(5).toString("hex");
    netUsers++;
    let netns: SandboxNetns;
    try {
      await nets.ensureRules();
      netns = await nets.create(id);
    } catch (err) {
      await nets.remove(id);
      if (--netUsers === 0) await nets.close();
      throw new StratusError("BUILD_FAILED", `Cannot set up the build's network: ${(err as Error).message}`, { cause: err });
    }
    try {
      return await spawnSandbox(r, extraBinds, netns.path);
    } finally {
      await nets.remove(id);
      if (--netUsers === 0) await nets.close();
    }
  }

  /** Runs bwrap (joined to `netnsPath` with nsenter when given) until it and its process group end. */
  async function spawnSandbox(r: SandboxRun, extraBinds: readonly string[], netnsPath: string | null): Promise<SandboxExit> {
    const args = bwrapArgs(r, extraBinds);
    // The bundler unshares the network (bwrap --unshare-net); the install joins its own namespace.
    const [file, argv] = netnsPath === null ? [bwrapPath, args] : [nsenterPath, [`--net=${netnsPath}`, "--", bwrapPath, ...args]];
    return await new Promise<SandboxExit>((resolve, reject) => {
      // detached: bwrap and everything under it form one process group, killed together.
      const child = spawn(file, argv, { env: { ...r.env }, stdio: ["ignore", "pipe", "pipe"], detached: true });
      let killed: string | null = null;
      const kill = (reason: string) => {
        killed ??= reason;
        try { if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL"); } catch { /* already gone */ }
      };
      const timer = setTimeout(() => kill(`timed out after ${r.timeoutMs} ms`), r.timeoutMs);
      const onAbort = () => kill("the build was cancelled");
      r.signal?.addEventListener("abort", onAbort, { once: true });
      const tail: string[] = [];
      const line = (l: string) => {
        // Bounded: a line longer than 4 KiB is cut; the tail keeps 5 lines.
        const cut = l.length > 4096 ? `${l.slice(0, 4096)}…` : l;
        r.onLine?.(cut);
        tail.push(cut);
        if (tail.length > 5) tail.shift();
      };
      for (const stream of [child.stdout, child.stderr]) {
        let buf = "";
        stream.setEncoding("utf8");
        stream.on("data", (chunk: string) => {
          buf += chunk;
          let i;
          while ((i = buf.indexOf("\n")) !== -1) {
            const l = buf.slice(0, i).trimEnd();
            buf = buf.slice(i + 1);
            if (l !== "") line(l);
          }
          if (buf.length > 65_536) { line(buf); buf = ""; }
        });
        stream.on("end", () => { if (buf.trim() !== "") line(buf.trimEnd()); });
      }
      child.on("error", (err) => {
        clearTimeout(timer);
        r.signal?.removeEventListener("abort", onAbort);
        reject(new StratusError("BUILD_FAILED", `Could not start the build sandbox: ${err.message}`, { cause: err }));
      });
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        r.signal?.removeEventListener("abort", onAbort);
        resolve({ code, signal, killed, tail });
      });
    });
  }

  return {
    uid,
    gid,
    async prepareWorkDir(workDir) {
      // Bounded by the archive's entry cap (the upload is all there is at this point).
      const walk = async (p: string): Promise<void> => {
        const st = await lstat(p);
        if (st.isSymbolicLink()) return;
        await chown(p, uid, gid);
        if (st.isDirectory()) for (const name of await readdir(p)) await walk(join(p, name));
      };
      await walk(workDir);
    },
    run: (r) => run(r),
    async bundle(workDir, o) {
      esbuild ??= locateEsbuild();
      const requestFile = join(workDir, "bundle-request.json");
      const resultFile = join(workDir, "bundle-result.json");
      await writeFile(requestFile, JSON.stringify({ projectDir: BUILD_SANDBOX_PATHS.src, outDir: BUILD_SANDBOX_PATHS.bundle }));
      const exit = await run({
        workDir, network: "none", cwd: BUILD_SANDBOX_PATHS.work, timeoutMs: o.timeoutMs ?? 120_000, signal: o.signal,
        argv: [nodePath, BUILD_SANDBOX_PATHS.worker, `${BUILD_SANDBOX_PATHS.work}/bundle-request.json`, `${BUILD_SANDBOX_PATHS.work}/bundle-result.json`],
        env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C.UTF-8", ESBUILD_BINARY_PATH: BUILD_SANDBOX_PATHS.esbuildBinary },
      }, [
        "--ro-bind", workerPath, BUILD_SANDBOX_PATHS.worker,
        "--perms", "0755", "--dir", "/stratus/node_modules",
        "--ro-bind", esbuild.packageDir, BUILD_SANDBOX_PATHS.esbuildPackage,
        "--ro-bind", esbuild.binary, BUILD_SANDBOX_PATHS.esbuildBinary,
      ]);
      if (exit.killed !== null) throw new StratusError("BUILD_FAILED", `Bundling ${exit.killed}`);
      const st = await stat(resultFile).catch(() => null);
      if (st === null || !st.isFile() || st.size > MAX_RESULT_BYTES) {
        throw new StratusError("BUILD_FAILED", `The bundler ended without a result (${exit.signal ?? `exit ${exit.code}`}): ${exit.tail.join(" | ") || "no output"}`);
      }
      const parsed = JSON.parse(await readFile(resultFile, "utf8")) as
        | { ok: true; bundle: BundleResult }
        | { ok: false; error: { code: string; message: string; details?: unknown } };
      if (!parsed.ok) {
        const code = isErrorCode(parsed.error.code) ? parsed.error.code : "BUILD_FAILED";
        throw new StratusError(code, String(parsed.error.message), parsed.error.details === undefined ? {} : { details: parsed.error.details });
      }
      const toHost = (p: string): string => {
        if (p !== BUILD_SANDBOX_PATHS.work && !p.startsWith(`${BUILD_SANDBOX_PATHS.work}/`)) throw new StratusError("BUILD_FAILED", `The bundler returned a path outside the build: ${p.slice(0, 200)}`);
        return join(workDir, p.slice(BUILD_SANDBOX_PATHS.work.length));
      };
      const b = parsed.bundle;
      // Package names from the sandbox become host paths (node_modules/<name>): npm names only.
      const names = (list: unknown): string[] => {
        if (list === undefined) return [];
        if (!Array.isArray(list) || !list.every((n) => typeof n === "string" && PACKAGE_NAME.test(n))) throw new StratusError("BUILD_FAILED", "The bundler returned an invalid package list");
        return list as string[];
      };
      return { ...b, outFile: toHost(b.outFile), entry: toHost(b.entry), externalNative: names(b.externalNative), externalPackages: names(b.externalPackages) };
    },
  };
}
