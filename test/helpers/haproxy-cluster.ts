// A cluster on one machine for test/lb-haproxy.test.ts and bench/cluster.ts: a real HAProxy 2.6
// (Debian's `haproxy`, config from src/lb/haproxy-config.ts, private stats socket and state file in a
// temp dir) in front of real Stratus nodes (test/helpers/cluster-node.ts: process driver + gateway, one
// child process each) on 127.0.0.2, .3, .4 …. Loopback only; every wait is bounded.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { renderHaproxyConfig, type HaproxySpecInput } from "../../src/lb/haproxy-config";
import { createHaproxyRuntime, type HaproxyRuntime } from "../../src/lb/haproxy-runtime";
import { createProcessDriver } from "../../src/sandbox/process/process-driver";
import type { ClusterFunction, FunctionCounts, NodeSetup } from "./cluster-node";
import type { GatewayLimitsInput } from "../../src/gateway/limits";
import { freePort } from "./free-port";

export type { ClusterFunction, FunctionCounts } from "./cluster-node";

/**
 * Where sockets, state files and node state dirs go: /var/tmp rather than /tmp, because on the shared
 * test machines /tmp was seen being cleaned under running tests (a vanished stats socket). Short, for
 * Unix socket paths (< 108 bytes). STRATUS_LB_TEST_DIR overrides it.
 */
const WORK_ROOT = process.env.STRATUS_LB_TEST_DIR ?? (existsSync("/var/tmp") ? "/var/tmp" : tmpdir());

/** Polls `cond` every 50 ms until true or `timeoutMs` passed; returns whether it became true. */
export async function waitUntil(cond: () => Promise<boolean> | boolean, timeoutMs: number): Promise<boolean> {
  const t0 = Date.now();
  for (;;) {
    if (await cond()) return true;
    if (Date.now() - t0 > timeoutMs) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface RunningHaproxy {
  readonly url: string;
  readonly port: number;
  readonly configFile: string;
  readonly stateFile: string;
  readonly runtime: HaproxyRuntime;
  /** The current process (replaced by restart()). */
  proc(): ChildProcess;
  /** Saves `show servers state` to the state file, stops HAProxy and starts it again on the same config. */
  restart(): Promise<void>;
  /**
   * A graceful reload (what `systemctl reload haproxy` does): saves the state file, then SIGUSR2 to the
   * master (`-W`), which starts a new worker on the same config; resolves once a new worker answers.
   */
  reload(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts HAProxy in the foreground (`-db`) on a generated config; resolves once its socket answers. */
export async function startHaproxy(dir: string, spec: HaproxySpecInput = {}): Promise<RunningHaproxy> {
  const port = await freePort("127.0.0.1");
  const socket = join(dir, "haproxy.sock");
  const stateFile = join(dir, "haproxy.state");
  const configFile = join(dir, "haproxy.cfg");
  writeFileSync(configFile, renderHaproxyConfig({ bind: `127.0.0.1:${port}`, statsSocket: socket, stateFile, maxNodes: 8, ...spec }));
  const runtime = createHaproxyRuntime({ socket, timeoutMs: 5000 });
  let child: ChildProcess;
  async function launch(): Promise<void> {
    // -W: master-worker (reloads on SIGUSR2, like Debian's unit); -db: stay in the foreground.
    child = spawn("/usr/sbin/haproxy", ["-W", "-db", "-f", configFile], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (c: Buffer) => void (stderr += c.toString()));
    const up = await waitUntil(async () => {
      if (child.exitCode !== null) return true;
      try {
        return (await runtime.command("show info")).includes("Name: HAProxy");
      } catch {
        return false;
      }
    }, 10_000);
    if (!up || child.exitCode !== null) throw new Error(`haproxy did not start: ${stderr}`);
  }
  async function stop(): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  await launch();
  return {
    url: `http://127.0.0.1:${port}`, port, configFile, stateFile, runtime,
    proc: () => child,
    async restart() {
      await runtime.saveState(stateFile);
      await stop();
      await launch();
    },
    async reload() {
      const workerPid = async (): Promise<string> => /^Pid: (\d+)$/m.exec(await runtime.command("show info").catch(() => ""))?.[1] ?? "";
      const before = await workerPid();
      await runtime.saveState(stateFile);
      child.kill("SIGUSR2");
      const ok = await waitUntil(async () => {
        const now = await workerPid();
        return now !== "" && now !== before;
      }, 10_000);
      if (!ok) throw new Error("haproxy did not reload within 10 s");
    },
    stop,
  };
}

export interface RunningNode {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly child: ChildProcess;
  stats(): Promise<Record<string, FunctionCounts>>;
  reset(): Promise<void>;
  deploy(functions: readonly ClusterFunction[]): Promise<void>;
  setAccepting(value: boolean): Promise<void>;
  /** SIGKILL, like a crashed machine; cleanup() then removes the sandboxes it left. */
  kill(): Promise<void>;
  /** Graceful close (if alive) and removal of its sandboxes and state dir. */
  cleanup(): Promise<void>;
}

/** Starts one node (test/helpers/cluster-node.ts) on `host`, e.g. 127.0.0.2. */
export async function startNode(opts: { name: string; host: string; functions: readonly ClusterFunction[]; prewarm?: number; limits?: GatewayLimitsInput }): Promise<RunningNode> {
  const stateDir = mkdtempSync(join(WORK_ROOT, "scn-"));
  const cgroupRoot = `stratus-lbtest-${process.pid}-${opts.name}`;
  const setup: NodeSetup = { name: opts.name, host: opts.host, stateDir, cgroupRoot, prewarm: opts.prewarm ?? 1, functions: opts.functions, ...(opts.limits ? { limits: opts.limits } : {}) };
  const script = resolve("test/helpers/cluster-node.ts");
  const child = spawn(process.execPath, ["--import", "tsx", script, JSON.stringify(setup)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const [ready] = (await Promise.race([
    once(child, "message"),
    once(child, "exit").then(() => { throw new Error(`node ${opts.name} exited before it listened`); }),
    new Promise((_, rej) => setTimeout(() => rej(new Error(`node ${opts.name} did not start within 60 s`)), 60_000)),
  ])) as [{ type: string; port: number }];
  const ask = <T>(msg: Record<string, unknown>, answer: string): Promise<T> =>
    new Promise<T>((res, rej) => {
      const timer = setTimeout(() => { child.off("message", on); rej(new Error(`node ${opts.name}: no "${answer}" within 60 s`)); }, 60_000);
      const on = (m: { type: string }): void => {
        if (m.type !== answer) return;
        clearTimeout(timer);
        child.off("message", on);
        res(m as T);
      };
      child.on("message", on);
      child.send(msg);
    });
  const alive = (): boolean => child.exitCode === null && child.signalCode === null && child.connected;
  return {
    name: opts.name, host: opts.host, port: ready.port, child,
    stats: async () => (await ask<{ perFunction: Record<string, FunctionCounts> }>({ type: "stats" }, "stats")).perFunction,
    reset: async () => void (await ask({ type: "reset" }, "reset")),
    deploy: async (functions) => void (await ask({ type: "deploy", functions }, "deployed")),
    setAccepting: async (value) => void (await ask({ type: "accepting", value }, "accepting")),
    async kill() {
      if (!alive()) return;
      const exited = once(child, "exit");
      child.kill("SIGKILL");
      await exited;
    },
    async cleanup() {
      if (alive()) {
        const exited = once(child, "exit");
        await ask({ type: "close" }, "closed").catch(() => child.kill("SIGKILL"));
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      }
      // A killed node leaves its sandboxes: a driver on the same state dir and cgroup root removes them.
      const driver = createProcessDriver({ runtimePath: resolve("dist/runtime.cjs"), stateDir, cgroupRoot, prewarm: 0 });
      await driver.reconcile();
      await driver.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** The node that executed each function most (its warm owner), from every node's counters. */
export async function owners(nodes: readonly RunningNode[]): Promise<Map<string, string>> {
  const best = new Map<string, { node: string; n: number }>();
  for (const node of nodes) {
    for (const [fn, c] of Object.entries(await node.stats())) {
      const b = best.get(fn);
      if (c.executed > 0 && (b === undefined || c.executed > b.n)) best.set(fn, { node: node.name, n: c.executed });
    }
  }
  return new Map([...best].map(([fn, b]) => [fn, b.node]));
}

/** Sums a counter over every node and function (optionally only functions matching `only`). */
export async function total(nodes: readonly RunningNode[], key: "requests" | "executed" | "cold", only?: (fn: string) => boolean): Promise<number> {
  let n = 0;
  for (const node of nodes) for (const [fn, c] of Object.entries(await node.stats())) if (only === undefined || only(fn)) n += c[key];
  return n;
}

/** A temp dir for HAProxy's socket and state file (short path: Unix socket paths must stay < 108 bytes). */
export function haproxyDir(): string {
  return mkdtempSync(join(WORK_ROOT, "shp-"));
}
