/**
 * One runtime child process of `stratus dev`: `node runtime.cjs` for one function, with a clean explicit
 * environment (never the parent's: it leaks the platform's environment and, measured here, can make Node
 * start 2–3× slower), speaking HTTP over a Unix socket through an undici Client.
 *
 * Lifecycle: `start()` resolves at the READY line, rejects with FUNCTION_LOAD_FAILED (the child's last
 * output in the message) if the child exits first. `close()` is graceful (SIGTERM, then SIGKILL after
 * `graceMs`) and idempotent; `exited` resolves once.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { Client } from "undici";
import { StratusError } from "../shared/errors";
import type { FunctionConfig } from "../shared/function-config";
import { ENV } from "../shared/protocol";
import { parseOutputLine, splitLines } from "../sandbox/output-lines";

/** One line of output of a dev child, already parsed. */
export interface DevLogLine {
  readonly functionName: string;
  readonly level: string;
  readonly requestId?: string;
  readonly message: string;
}

export interface DevInstanceOptions {
  readonly runtimePath: string;
  readonly entry: string;
  readonly exportName: string;
  readonly functionName: string;
  readonly config: Readonly<FunctionConfig>;
  readonly socketPath: string;
  readonly onLog: (line: DevLogLine) => void;
}

/** A supervised runtime child. */
export class DevInstance {
  readonly options: DevInstanceOptions;
  /** Undici client over the child's socket; valid after start(). */
  client: Client | undefined;
  /** Resolves once with the child's exit code and signal. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  private readonly child: ChildProcess;
  private readonly recent: string[] = [];
  private ready = false;
  private closing: Promise<void> | undefined;

  constructor(options: DevInstanceOptions) {
    this.options = options;
    const { config } = options;
    const env: Record<string, string> = {
      PATH: "/usr/local/bin:/usr/bin:/bin",
      NODE_ENV: "development",
      ...config.env,
      [ENV.socket]: options.socketPath,
      [ENV.entry]: options.entry,
      [ENV.exportName]: options.exportName,
      [ENV.functionName]: options.functionName,
      [ENV.config]: JSON.stringify(config),
      [ENV.dev]: "1",
      [ENV.instanceId]: `dev-${options.functionName}-${process.pid}`,
    };
    // Node does not see a memory limit here (no cgroup in dev), so size the heap as production does.
    const heapMb = Math.max(32, Math.floor(config.memory * 0.75));
    this.child = spawn(process.execPath, [`--max-old-space-size=${heapMb}`, options.runtimePath], { env, stdio: ["ignore", "pipe", "pipe"] });
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
    this.child.once("error", () => undefined); // 'exit' follows, or spawn failed and 'exit' never comes
    // The same line protocol (READY, tagged log lines, raw output, length cap) the drivers parse.
    splitLines(this.child.stdout!, (line) => this.onLine(line, "stdout"));
    splitLines(this.child.stderr!, (line) => this.onLine(line, "stderr"));
  }

  private readyWaiters: Array<() => void> = [];

  private onLine(raw: string, stream: "stdout" | "stderr"): void {
    const line = parseOutputLine(raw, stream, this.options.functionName);
    if (line.kind === "ready") {
      this.ready = true;
      for (const w of this.readyWaiters) w();
      return;
    }
    const parsed: DevLogLine = { functionName: this.options.functionName, level: line.line.level, requestId: line.line.requestId, message: line.line.message };
    if (!this.ready) {
      this.recent.push(parsed.message);
      if (this.recent.length > 20) this.recent.shift();
    }
    this.options.onLog(parsed);
  }

  /** Waits for READY. @throws StratusError FUNCTION_LOAD_FAILED when the child exits first. */
  async start(): Promise<void> {
    const readyP = new Promise<void>((resolve) => {
      if (this.ready) resolve();
      else this.readyWaiters.push(resolve);
    });
    const exit = await Promise.race([readyP.then(() => null), this.exited]);
    if (exit !== null) {
      const why = this.recent.join("\n") || `exit code ${exit.code ?? exit.signal}`;
      throw new StratusError("FUNCTION_LOAD_FAILED", `Function "${this.options.functionName}" failed to start: ${why}`);
    }
    this.client = new Client("http://localhost", { socketPath: this.options.socketPath, pipelining: 1, keepAliveTimeout: 30_000 });
  }

  /** True until the child exited. */
  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGTERM, then SIGKILL after `graceMs` (default: the function's timeout + 1 s). Idempotent. */
  close(graceMs = this.options.config.timeout + 1000): Promise<void> {
    this.closing ??= (async () => {
      if (this.alive) {
        this.child.kill("SIGTERM");
        const t = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
        await this.exited;
        clearTimeout(t);
      }
      await this.client?.destroy().catch(() => undefined);
    })();
    return this.closing;
  }
}
