/**
 * V8 code caches of the instance runtime, one per Node binary and V8 flag set (the heap limit is a flag,
 * so one per memory size): what src/runtime/boot.cjs compiles dist/runtime.cjs from, so an instance
 * deserialises the bundle's compiled code instead of parsing and compiling it. docs/prewarm.md
 * "Code cache" has the measurements.
 *
 * A cache is produced by running the runtime once, outside any sandbox, in generic mode (no function
 * code is ever loaded): it boots, loads Express, runs its warm-up (a throwaway module and two requests
 * over a private socket), then waits for a specialisation message; the producer closes that connection
 * without one, the runtime exits, and the boot loader writes the cache of everything compiled so far.
 * Its private files go to a fresh 0700 temp dir (TMPDIR), never straight into the host's /tmp. The cache is kept in
 * `cacheDir` under a key of the binary, the flags, the bundle and the loader, so a restart reuses it.
 *
 * Safety: the cache is bytecode for the same source; V8 checks its version, flags and source before it
 * uses one and compiles from source otherwise (the instance says `rejected` on its READY line), so a
 * stale or mismatched cache costs speed, never correctness. Sandboxes bind it read-only.
 */
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import { ENV, GENERIC_READY_LINE } from "../shared/protocol";
import { lastWords, runNode } from "./run-node";

/** Options of createRuntimeCodeCaches. */
export interface RuntimeCodeCachesOptions {
  /** The Node binary instances run on (the cache is valid for it only). */
  readonly nodePath: string;
  /** dist/runtime-boot.cjs; the bundle is the runtime.cjs beside it. */
  readonly bootPath: string;
  /** Where caches are kept (created 0700; the files are 0644). */
  readonly cacheDir: string;
  readonly logger: Logger;
  /** Longest wait for one producer run, ms (default 30 000). */
  readonly timeoutMs?: number;
}

/** The code caches of one driver. */
export interface RuntimeCodeCaches {
  /**
   * The cache for instances started with `nodeArgs`, when one is ready; else undefined, and its
   * production starts in the background (once per flag set and driver).
   */
  get(nodeArgs: readonly string[]): string | undefined;
  /** Produces (or finds) the cache for `nodeArgs`; resolves with its path, or undefined when it could not be made (logged). */
  ensure(nodeArgs: readonly string[]): Promise<string | undefined>;
  /** Waits for producer runs under way (their children are bounded by the timeout); none starts after it. */
  close(): Promise<void>;
}

/** The boot loader's bundle: runtime.cjs beside it. */
export function bundleBesideBoot(bootPath: string): string {
  return join(bootPath, "..", "runtime.cjs");
}

export function createRuntimeCodeCaches(options: RuntimeCodeCachesOptions): RuntimeCodeCaches {
  const log = options.logger;
  const timeoutMs = options.timeoutMs ?? 30_000;
  const runs = new Map<string, Promise<string | undefined>>();
  let closed = false;
  let identity: string | undefined;
  /** What every key shares: the binary (path, size, mtime, inode), the bundle's and the loader's bytes. */
  const sharedIdentity = (): string => {
    if (identity !== undefined) return identity;
    const bin = statSync(options.nodePath);
    identity = createHash("sha256")
      .update(`${options.nodePath}\0${bin.size}\0${bin.mtimeMs}\0${bin.ino}\0`)
      .update(readFileSync(bundleBesideBoot(options.bootPath)))
      .update("\0")
      .update(readFileSync(options.bootPath))
      .digest("hex");
    return identity;
  };
  /** The cache file of a flag set, computed once per flag set (every launch asks). */
  const files = new Map<string, string>();
  const fileOf = (nodeArgs: readonly string[]): string => {
    const flags = JSON.stringify(nodeArgs);
    let file = files.get(flags);
    if (file === undefined) {
      const key = createHash("sha256").update(sharedIdentity()).update(flags).digest("hex").slice(0, 16);
      files.set(flags, (file = join(options.cacheDir, `runtime-${key}.cache`)));
    }
    return file;
  };

  async function produce(nodeArgs: readonly string[], file: string): Promise<string | undefined> {
    mkdirSync(options.cacheDir, { recursive: true, mode: 0o700 });
    // A fresh 0700 dir (short path: it holds Unix sockets) for the runtime's private files.
    const dir = mkdtempSync(join(tmpdir(), "stratus-cc-"));
    const out = join(dir, "out.cache");
    const specSocket = join(dir, "spec.sock");
    try {
      let asked = false;
      const { code, stderr } = await runNode(options.nodePath, [...nodeArgs, options.bootPath], {
        TMPDIR: dir,
        [ENV.generic]: "1",
        [ENV.specializeSocket]: specSocket,
        [ENV.socket]: join(dir, "fn.sock"),
        // Compiled from source: never from a cache lying beside the loader.
        STRATUS_CODE_CACHE: join(dir, "none"),
        STRATUS_CODE_CACHE_OUT: out,
      }, timeoutMs, (stdout, child) => {
        if (asked || !stdout.includes(GENERIC_READY_LINE)) return;
        asked = true;
        // Warm-up done: no message, so the runtime exits and the loader writes what it compiled.
        const sock = connect(specSocket);
        sock.on("error", () => child.kill("SIGKILL"));
        sock.on("connect", () => sock.end());
      });
      if (!existsSync(out)) throw new Error(`the runtime wrote no code cache (exit ${code ?? "signal"}): ${lastWords(stderr)}`);
      if (statSync(out).size === 0) throw new Error(`the code cache written was empty (exit ${code ?? "signal"})`);
      const tmp = `${file}.${process.pid}.tmp`;
      copyFileSync(out, tmp);
      chmodSync(tmp, 0o644);
      renameSync(tmp, file);
      log.info({ nodeArgs, file }, "runtime code cache produced");
      return file;
    } catch (err) {
      log.warn({ err: (err as Error).message, nodePath: options.nodePath, nodeArgs }, "no runtime code cache: instances compile the runtime from source");
      return undefined;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  const ensure = (nodeArgs: readonly string[]): Promise<string | undefined> => {
    let file: string;
    try {
      file = fileOf(nodeArgs);
    } catch (err) {
      log.warn({ err: (err as Error).message }, "no runtime code cache: cannot read the runtime or the Node binary");
      return Promise.resolve(undefined);
    }
    let run = runs.get(file);
    if (run === undefined) {
      if (closed) return Promise.resolve(existsSync(file) ? file : undefined);
      run = existsSync(file) ? Promise.resolve(file) : produce(nodeArgs, file);
      runs.set(file, run);
    }
    return run;
  };

  return {
    get(nodeArgs) {
      let file: string;
      try {
        file = fileOf(nodeArgs);
      } catch {
        return undefined;
      }
      if (existsSync(file)) return file;
      void ensure(nodeArgs);
      return undefined;
    },
    ensure,
    async close() {
      closed = true;
      await Promise.all(runs.values());
    },
  };
}
