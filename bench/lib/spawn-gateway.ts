/**
 * Starts bench/lib/gateway-child.ts (driver + gateway in a separate process) and talks to it over IPC.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import type { FunctionConfigInput } from "../../src/shared/function-config";
import type { GatewayLimitsInput } from "../../src/gateway/limits";

/** A function the child deploys: `dir` relative to the repository root. */
export interface BenchFunction {
  name: string;
  dir: string;
  file: string;
  exportName: string;
  config: FunctionConfigInput;
}

/** Handle on the child node. */
export interface BenchGateway {
  readonly port: number;
  readonly child: ChildProcess;
  /** GC pauses and event-loop delay of the gateway process since the last call (BENCH_TRACE=1). */
  trace(): Promise<{ gcs: Array<{ at: number; ms: number; kind: number }>; delay: { p50: number; p99: number; max: number } | null }>;
  stats(): Promise<{ gateway: Record<string, { total: number; ready: number; starting: number }>; prewarm: { idle: number; hits: number; misses: number } }>;
  close(): Promise<void>;
}

/** Spawns the child and resolves once it listens. */
export async function spawnGateway(setup: { driver?: "process" | "docker"; runtimePath?: string; observe?: boolean; prewarm: number; cgroupRoot: string; functions: BenchFunction[]; limits?: GatewayLimitsInput; prewarmRefill?: "demand" | "quiet"; prewarmBurstHoldMs?: number; cancelUnneededBoots?: boolean; prewarmMax?: number; instanceNode?: string; runtimeSnapshot?: boolean; ksm?: boolean; codeCache?: boolean; specializeChannel?: "socket" | "attach"; maxConcurrentStarts?: number }): Promise<BenchGateway> {
  const script = fileURLToPath(new URL("./gateway-child.ts", import.meta.url));
  // BENCH_GATEWAY_PROF=<dir>: CPU profile of the gateway process (written when it exits).
  const prof = process.env.BENCH_GATEWAY_PROF;
  const flags = prof === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${prof}`];
  const child = spawn(process.execPath, [...flags, "--import", "tsx", script, JSON.stringify(setup)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const [ready] = (await Promise.race([once(child, "message"), once(child, "exit").then(() => { throw new Error("gateway child exited"); })])) as [{ port: number }];
  const ask = async <T>(type: string, answer: string): Promise<T> => {
    const p = new Promise<T>((resolve) => {
      const on = (m: { type: string }): void => {
        if (m.type !== answer) return;
        child.off("message", on);
        resolve(m as T);
      };
      child.on("message", on);
    });
    child.send({ type });
    return p;
  };
  return {
    port: ready.port,
    child,
    stats: () => ask("stats", "stats"),
    trace: () => ask("trace", "trace"),
    close: async () => {
      if (!child.connected) return;
      const exited = once(child, "exit");
      await ask("close", "closed");
      await exited;
    },
  };
}
