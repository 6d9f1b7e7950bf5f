// Instance cost (issue 16, target 3): the hello function straight to one instance's Unix socket (no gateway)
// against a bare Node http server on a Unix socket answering the same bytes, in one run, rounds alternated:
//  - 1 connection: p50/p99 of sequential GETs (undici Client), ratio to bare;
//  - 50 connections: req/s (autocannon over the socket), ratio to bare (the instance takes all 50 at once,
//    as one at `concurrency: 50` does behind the gateway).
// With BENCH_BASELINE_RUNTIME=<a runtime.cjs> (e.g. built from an older commit) a second process driver runs
// that build beside this checkout's dist/runtime.cjs, alternated in the same rounds: before/after as ratios.
// Usage: npm run build && [BENCH_BASELINE_RUNTIME=old-runtime.cjs] npx tsx bench/instance-cost.ts
// Knobs: BENCH_REQUESTS (2000 per round), BENCH_ROUNDS (3), BENCH_DURATION_S (5 per throughput run),
// BENCH_PRINT_ONLY=1 (print, do not replace bench/results/instance-cost.md). Needs root + bubblewrap. ~1.5 min.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import autocannon from "autocannon";
import { Client } from "undici";
import { createProcessDriver } from "../src/sandbox/process/process-driver";
import { parseFunctionConfig } from "../src/shared/function-config";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 2000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 5);
const baselineRuntime = process.env.BENCH_BASELINE_RUNTIME;

const before = load();
const dir = mkdtempSync(join(tmpdir(), "sic-"));
const bareSock = join(dir, "bare.sock");
const bare = spawn(process.execPath, ["bench/fixtures/bare-server.cjs", bareSock], { stdio: ["ignore", "pipe", "inherit"] });
await once(bare.stdout!, "data");

const dep = {
  name: "hello", version: "1", artifactDir: resolve("bench/fixtures"), entry: "functions.js", exportName: "hello",
  config: parseFunctionConfig("hello", { timeout: 10_000, concurrency: 50, maxInstances: 1 }), env: {},
};
interface Target { readonly label: string; readonly socketPath: string; readonly pids: () => number[]; close(): Promise<void> }

/** The node processes in a cgroup root of this bench (the instance's runtime), found in /proc. */
function pidsInCgroup(cgroupRoot: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (!readFileSync(`/proc/${name}/cgroup`, "utf8").includes(`/${cgroupRoot}`)) continue;
      const argv0 = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0")[0] ?? "";
      if (/node$/.test(argv0)) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
/** CPU time (utime + stime) of `pids` so far, µs. */
function cpuUs(pids: readonly number[]): number {
  let t = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
      t += (Number(f[11]) + Number(f[12])) * 10_000;
    } catch {
      // gone
    }
  }
  return t;
}
async function instanceOf(label: string, runtimePath: string, id: string): Promise<Target> {
  const cgroupRoot = `stratus-bench-ic-${id}`;
  const driver = createProcessDriver({ runtimePath, stateDir: join(dir, id), cgroupRoot });
  await driver.open();
  const inst = await driver.start({ ...dep, instanceId: `bench${id}`, functionName: "hello" });
  return {
    label,
    socketPath: inst.endpoint.socketPath!,
    pids: () => pidsInCgroup(cgroupRoot),
    close: async () => {
      await inst.destroy();
      await driver.close();
    },
  };
}
const targets: Target[] = [{ label: "bare", socketPath: bareSock, pids: () => [bare.pid!], close: async () => void bare.kill() }];
targets.push(await instanceOf("instance", resolve("dist/runtime.cjs"), "a"));
if (baselineRuntime !== undefined) targets.push(await instanceOf("baseline", resolve(baselineRuntime), "b"));

/** `n` sequential GETs over one connection after `warmup` more, each checked to answer 200 "Hello": µs. */
async function sequential(socketPath: string, n: number, warmup = 200): Promise<number[]> {
  const client = new Client("http://localhost", { socketPath, pipelining: 1 });
  const times: number[] = [];
  try {
    for (let i = 0; i < n + warmup; i++) {
      const t0 = performance.now();
      const r = await client.request({ method: "GET", path: "/" });
      const body = await r.body.text();
      if (r.statusCode !== 200 || body !== "Hello") throw new Error(`${socketPath}: ${r.statusCode} ${body}`);
      if (i >= warmup) times.push((performance.now() - t0) * 1000);
    }
  } finally {
    await client.close();
  }
  return times;
}
/** 50 connections for `durationS`: req/s, errors, p99, and the server process's CPU per request (µs). */
async function throughput(t: Target, durationS: number): Promise<{ rps: number; errors: number; p99: number; cpuPerReq: number }> {
  const pids = t.pids();
  if (pids.length === 0) throw new Error(`${t.label}: no server process found`);
  const c0 = cpuUs(pids);
  const r = await autocannon({ url: "http://localhost/", socketPath: t.socketPath, connections: 50, duration: durationS, pipelining: 1 });
  const cpu = cpuUs(pids) - c0;
  return { rps: r.requests.average, errors: r.errors + r.timeouts + r.non2xx, p99: r.latency.p99, cpuPerReq: cpu / Math.max(1, r.requests.total) };
}

// Warm every JIT.
for (const t of targets) await sequential(t.socketPath, 300);
const lat = new Map(targets.map((t) => [t.label, [] as number[]]));
const p50s = new Map(targets.map((t) => [t.label, [] as number[]]));
const tput = new Map(targets.map((t) => [t.label, [] as Awaited<ReturnType<typeof throughput>>[]]));
for (let round = 0; round < ROUNDS; round++) {
  for (const t of targets) {
    const xs = await sequential(t.socketPath, REQUESTS);
    lat.get(t.label)!.push(...xs);
    p50s.get(t.label)!.push(pct(sorted(xs), 0.5));
  }
}
for (let round = 0; round < 2; round++) {
  for (const t of targets) tput.get(t.label)!.push(await throughput(t, DURATION_S));
}
for (const t of targets) await t.close();
rmSync(dir, { recursive: true, force: true });
const after = load();

const us = (x: number) => `${Math.round(x)} µs`;
const med = (xs: number[]) => sorted(xs)[Math.floor(xs.length / 2)]!;
const bareLat = sorted(lat.get("bare")!);
const bareRps = med(tput.get("bare")!.map((t) => t.rps));
const bareCpu = med(tput.get("bare")!.map((t) => t.cpuPerReq));
const names: Record<string, string> = {
  bare: "bare Node http on a Unix socket (baseline)",
  instance: "instance, this checkout's runtime",
  baseline: `instance, baseline runtime (${baselineRuntime ?? ""})`,
};
const rows = targets.map((t) => {
  const l = sorted(lat.get(t.label)!);
  const rps = med(tput.get(t.label)!.map((x) => x.rps));
  const errors = tput.get(t.label)!.reduce((n, x) => n + x.errors, 0);
  const cpu = med(tput.get(t.label)!.map((x) => x.cpuPerReq));
  return `| ${names[t.label]} | ${us(pct(l, 0.5))} | ${us(pct(l, 0.99))} | **${(pct(l, 0.5) / pct(bareLat, 0.5)).toFixed(2)}** | ${p50s.get(t.label)!.map((x) => Math.round(x)).join(", ")} | ${Math.round(rps)} | **${(rps / bareRps).toFixed(2)}** | ${tput.get(t.label)!.map((x) => Math.round(x.rps)).join(", ")} | ${cpu.toFixed(1)} µs (${(cpu / bareCpu).toFixed(2)} ×) | ${errors} |`;
});
const md = `# Instance cost — hello straight to one instance's socket vs. a bare Node http server

\`${baselineRuntime === undefined ? "" : `BENCH_BASELINE_RUNTIME=${baselineRuntime} `}npx tsx bench/instance-cost.ts\` · process driver (bubblewrap, seccomp, cgroup), one
instance per runtime build, no gateway; the bare server, the instances and the load generator each in their own process.

${machine(before, after)}

1 connection: ${ROUNDS} alternated rounds × ${REQUESTS} sequential GETs per target (after 300 warm-up). 50 connections:
autocannon over the Unix socket, 2 alternated runs × ${DURATION_S} s per target, median. Server CPU per request: utime + stime
of the server's process (/proc) over a 50-connection run divided by its requests, the figure least moved by other load.

| target | 1 conn p50 | 1 conn p99 | p50 / bare | p50 per round | 50 conn req/s | req/s / bare | runs | server CPU per request at 50 conn (/ bare) | errors + non-2xx |
|---|---|---|---|---|---|---|---|---|---|
${rows.join("\n")}
`;
if (process.env.BENCH_PRINT_ONLY === "1") process.stdout.write(md);
else writeResult("instance-cost", md);
