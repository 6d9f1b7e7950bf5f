/**
 * Drives the real CLI the way a user does: `node bin/stratus.js …` as child processes (after
 * `npm run build`). Shared by the end-to-end suites.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const STRATUS_BIN = resolve("bin/stratus.js");

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs one `stratus …` command with an explicit environment; never rejects (the exit code is in the result). */
export function runStratus(args: readonly string[], options: { env: NodeJS.ProcessEnv; cwd: string; timeoutMs: number }): Promise<CliResult> {
  return new Promise((res) => {
    execFile(process.execPath, [STRATUS_BIN, ...args], { env: options.env, cwd: options.cwd, timeout: options.timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : 1) : 0;
      res({ code, stdout, stderr });
    });
  });
}

export interface RunningUp {
  readonly child: ChildProcess;
  /** The URL `stratus up` printed. */
  readonly url: string;
  /** Everything `stratus up` printed so far (stdout and stderr). */
  output(): string;
}

/**
 * Starts `stratus up <args>` and resolves once it printed its URL and saved the CLI profile — or, with
 * `restart` (existing data: no profile is saved again), once it printed its URL. Bounded by `timeoutMs`
 * (default 120 s).
 * @throws when the process exits first or the bound passes (with what it printed).
 */
export function startStratusUp(args: readonly string[], env: NodeJS.ProcessEnv, o: { restart?: boolean; timeoutMs?: number } = {}): Promise<RunningUp> {
  const child = spawn(process.execPath, [STRATUS_BIN, "up", ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stderr!.on("data", (c: Buffer) => (output += c.toString()));
  child.stdout!.on("data", (c: Buffer) => (output += c.toString()));
  return new Promise<RunningUp>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`stratus up did not start within ${o.timeoutMs ?? 120_000} ms:\n${output}`)), o.timeoutMs ?? 120_000);
    const onData = (): void => {
      const m = /Stratus is up at (http:\/\/\S+)/.exec(output);
      if (m && (o.restart === true || /saved to/.test(output))) {
        clearTimeout(timer);
        child.stdout!.off("data", onData);
        child.stderr!.off("data", onData);
        child.off("exit", onExit);
        res({ child, url: m[1]!, output: () => output });
      }
    };
    const onExit = (code: number | null): void => {
      clearTimeout(timer);
      rej(new Error(`stratus up exited with ${code}:\n${output}`));
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", onExit);
  });
}

/**
 * `cli(...args)` and `ok(...args)` (asserts exit 0, resolves stdout) bound to a session whose env and
 * working dir are known only once the suite's `before` ran; `context()` adds text to failure messages.
 */
export function bindStratus(session: () => { env: NodeJS.ProcessEnv; cwd: string }, timeoutMs: number, context: () => string = () => "") {
  const cli = (...args: string[]): Promise<CliResult> => runStratus(args, { ...session(), timeoutMs });
  const ok = async (...args: string[]): Promise<string> => {
    const r = await cli(...args);
    assert.equal(r.code, 0, `stratus ${args.join(" ")} failed:\n${r.stderr}${r.stdout}${context()}`);
    return r.stdout;
  };
  return { cli, ok };
}

/** A `stratus up` of an e2e suite, in a temp root of its own (see startUpInTempRoot). */
export interface SuitePlatform extends RunningUp {
  /** The temp root: HOME, CLI config (`cfg/`) and data dir (`d/`) live here; remove it in `after`. */
  readonly root: string;
  readonly dataDir: string;
  /** The environment the CLI runs with (the same as `stratus up`'s). */
  readonly env: NodeJS.ProcessEnv;
}

/**
 * Checks dist/ is built, then starts `stratus up --port 0 --data-dir <root>/d <upArgs>` in a fresh temp
 * root (prefix short: instance sockets live under the data dir, Unix socket paths ≤ 107 bytes) with a
 * clean environment (PATH, HOME, CLI config dir, log level warn) plus `extraEnv`.
 */
export async function startUpInTempRoot(prefix: string, upArgs: readonly string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<SuitePlatform> {
  if (!existsSync(resolve("dist/cli.js")) || !existsSync(resolve("dist/runtime.cjs"))) throw new Error("dist/ is missing: run `npm run build` first");
  const root = await mkdtemp(join(tmpdir(), prefix));
  const dataDir = join(root, "d");
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: join(root, "home"), STRATUS_CONFIG_DIR: join(root, "cfg"), STRATUS_LOG_LEVEL: "warn", ...extraEnv };
  const up = await startStratusUp(["--port", "0", "--data-dir", dataDir, ...upArgs], env);
  return { ...up, root, dataDir, env };
}

/**
 * The `after` of a suite's `stratus up`: SIGTERM first (a drained `stratus up` unmounts its pre-warmed slots, so
 * the temp root can be removed), at most 30 s, then SIGKILL whatever still runs, then the temp root.
 */
export async function stopSuitePlatform(p: SuitePlatform | undefined): Promise<void> {
  if (p === undefined) return;
  if (p.child.exitCode === null && p.child.signalCode === null) {
    p.child.kill("SIGTERM");
    await Promise.race([once(p.child, "exit"), new Promise((r) => setTimeout(r, 30_000).unref())]);
  }
  await killUp(p.child);
  await rm(p.root, { recursive: true, force: true });
}

/** SIGKILLs a `stratus up` still running (a failed suite's leftover) and waits for its exit. */
export async function killUp(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGKILL");
  await once(child, "exit").catch(() => {});
}

/**
 * Starts dockerd and the registry on 127.0.0.1:5000 if they are not running (scripts/services.sh).
 * @throws with a clear message when they cannot be started.
 */
export function ensureDockerServices(): void {
  try {
    execFileSync("bash", ["scripts/services.sh"], { stdio: ["ignore", "ignore", "pipe"], timeout: 300_000 });
  } catch (err) {
    throw new Error(`Docker and the registry are needed: scripts/services.sh failed (run it as root to see why): ${(err as Error).message}`);
  }
}
