/**
 * Test helper: starts the real dist/runtime.cjs on a Unix socket in a temp dir and talks HTTP to it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "undici";
import { ENV, LOG_PREFIX, READY_LINE } from "../../src/shared/protocol";

/** dist/runtime.cjs of this checkout; fails with how to get it. */
export function runtimePath(): string {
  const p = fileURLToPath(new URL("../../dist/runtime.cjs", import.meta.url));
  if (!existsSync(p)) throw new Error(`${p} is missing: run \`npm run build\` first`);
  return p;
}

export interface LogEntry {
  ts: number;
  level: string;
  rid?: string;
  msg: string;
}

export interface RuntimeProcess {
  readonly child: ChildProcess;
  readonly socketPath: string;
  readonly client: Client;
  /** Structured log entries seen so far. */
  readonly logs: LogEntry[];
  /** Raw stdout/stderr lines that were not structured. */
  readonly raw: string[];
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  /** Resolves when a log entry matches. */
  waitForLog(pred: (e: LogEntry) => boolean): Promise<LogEntry>;
  stop(): Promise<void>;
}

/** Spawns the runtime with a clean env and resolves at READY (rejects if it exits first). */
export async function startRuntime(opts: { dir: string; entry: string; exportName: string; config?: object; dev?: boolean; env?: Record<string, string> }): Promise<RuntimeProcess> {
  const socketPath = join(opts.dir, `${opts.exportName}-${Math.random().toString(36).slice(2, 8)}.sock`);
  const env: Record<string, string> = {
    PATH: "/usr/bin:/bin",
    [ENV.socket]: socketPath,
    [ENV.entry]: opts.entry,
    [ENV.exportName]: opts.exportName,
    [ENV.functionName]: opts.exportName,
    ...(opts.config ? { [ENV.config]: JSON.stringify(opts.config) } : {}),
    ...(opts.dev ? { [ENV.dev]: "1" } : {}),
    ...opts.env,
  };
  const child = spawn(process.execPath, [runtimePath()], { env, stdio: ["ignore", "pipe", "pipe"] });
  const logs: LogEntry[] = [];
  const raw: string[] = [];
  const waiters: Array<{ pred: (e: LogEntry) => boolean; resolve: (e: LogEntry) => void }> = [];
  let onReady: () => void = () => undefined;
  const ready = new Promise<void>((r) => (onReady = r));
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => child.once("exit", (code, signal) => r({ code, signal })));
  for (const stream of [child.stdout!, child.stderr!]) {
    let buf = "";
    stream.setEncoding("utf8");
    stream.on("data", (c: string) => {
      buf += c;
      let nl;
      while ((nl = buf.indexOf("\n")) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith(READY_LINE)) onReady();
        else if (line.startsWith(LOG_PREFIX)) {
          const e = JSON.parse(line.slice(LOG_PREFIX.length)) as LogEntry;
          logs.push(e);
          for (const w of [...waiters]) {
            if (w.pred(e)) {
              waiters.splice(waiters.indexOf(w), 1);
              w.resolve(e);
            }
          }
        } else raw.push(line);
      }
    });
  }
  const first = await Promise.race([ready.then(() => "ready" as const), exited]);
  if (first !== "ready") throw new Error(`runtime exited before READY: ${JSON.stringify(first)}; logs: ${JSON.stringify(logs)} ${raw.join("\n")}`);
  const client = new Client("http://localhost", { socketPath, pipelining: 0 });
  return {
    child,
    socketPath,
    client,
    logs,
    raw,
    exited,
    waitForLog(pred) {
      const found = logs.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve) => waiters.push({ pred, resolve }));
    },
    async stop() {
      await client.destroy().catch(() => undefined);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}
