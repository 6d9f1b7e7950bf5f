/**
 * Drives the real CLI the way a user does: `node bin/stratus.js …` as child processes (after
 * `npm run build`). Shared by the end-to-end suites.
 */
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";

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
 * Starts `stratus up <args>` and resolves once it printed its URL and saved the CLI profile.
 * @throws when the process exits first (with what it printed).
 */
export function startStratusUp(args: readonly string[], env: NodeJS.ProcessEnv): Promise<RunningUp> {
  const child = spawn(process.execPath, [STRATUS_BIN, "up", ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stderr!.on("data", (c: Buffer) => (output += c.toString()));
  child.stdout!.on("data", (c: Buffer) => (output += c.toString()));
  return new Promise<RunningUp>((res, rej) => {
    const onData = (): void => {
      const m = /Stratus is up at (http:\/\/\S+)/.exec(output);
      if (m && /saved to/.test(output)) {
        child.stdout!.off("data", onData);
        child.off("exit", onExit);
        res({ child, url: m[1]!, output: () => output });
      }
    };
    const onExit = (code: number | null): void => rej(new Error(`stratus up exited with ${code}:\n${output}`));
    child.stdout!.on("data", onData);
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
