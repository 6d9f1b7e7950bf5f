// The cluster benchmark: a real HAProxy 2.6 (config from src/lb/haproxy-config.ts) in front of 1, 2 and 3
// real Stratus nodes (process driver + gateway, one child process each, on 127.0.0.2/.3/.4; the harness of
// test/lb-haproxy.test.ts). Writes bench/results/cluster.md.
//  1. Throughput and p50/p99 through HAProxy with 1, 2, 3 nodes (membership changed through the runtime
//     socket between rounds, no restart): BENCH_CLUSTER_CONNECTIONS clients (default 32) for
//     BENCH_CLUSTER_SECONDS (default 6) over 12 warm functions; ratio to one node in the same run.
//  2. Cold starts per function, consistent hashing (factors 0, 200, 300) against round robin, in the same
//     run, at two scales: BENCH_CLUSTER_FUNCTIONS functions (default 60) × 5 requests from 8 and 16 clients
//     (5 rounds, every function once per round, each round in its own fixed order).
//     Every (mode, scale) uses functions no node has started before; their instances are reaped (idle
//     15 s) between runs, so memory stays bounded.
// Usage: npx tsx bench/cluster.ts     (root, bubblewrap, haproxy, `npm run build`)
import { rmSync } from "node:fs";
import { Agent, request } from "undici";
import { syncMembership, type MemberNode } from "../src/lb/haproxy-runtime";
import type { HaproxySpecInput } from "../src/lb/haproxy-config";
import { haproxyDir, startHaproxy, startNode, total, waitUntil, type ClusterFunction, type RunningHaproxy, type RunningNode } from "../test/helpers/haproxy-cluster";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const CONNECTIONS = Number(process.env.BENCH_CLUSTER_CONNECTIONS ?? 32);
const SECONDS = Number(process.env.BENCH_CLUSTER_SECONDS ?? 6);
const WARMUP_S = 3;
// Cold-start functions stay warm this long (longer than one run), then are reaped before the next run.
const COLD_IDLE_MS = 15_000;
const N_COLD = Number(process.env.BENCH_CLUSTER_FUNCTIONS ?? 60);
const REQS_PER_FN = 5;
const SCALES = [8, 16];
const MODES: Array<{ label: string; spec: HaproxySpecInput }> = [
  { label: "round robin", spec: { balance: "roundrobin" } },
  { label: "consistent hash, factor 0 (no bounded load)", spec: { hashBalanceFactor: 0 } },
  { label: "consistent hash, factor 200", spec: { hashBalanceFactor: 200 } },
  { label: "consistent hash, factor 300", spec: { hashBalanceFactor: 300 } },
];
const WARM = Array.from({ length: 12 }, (_, i) => `warm-${i}`);
const coldNames = (mode: number, clients: number) => Array.from({ length: N_COLD }, (_, i) => `c${mode}-${clients}-${String(i).padStart(3, "0")}`);

const FUNCTIONS: ClusterFunction[] = [
  ...WARM.map((name) => ({ name, exportName: "handler", config: { maxInstances: 16, maxQueue: 256, idleTimeout: 600_000 } })),
  ...MODES.flatMap((_, m) => SCALES.flatMap((c) => coldNames(m, c).map((name) => ({ name, exportName: "handler", config: { maxInstances: 8, maxQueue: 64, idleTimeout: COLD_IDLE_MS } })))),
];

const agent = new Agent({ connections: 256, headersTimeout: 30_000, bodyTimeout: 30_000 });
async function hit(url: string): Promise<number> {
  const r = await request(url, { dispatcher: agent });
  await r.body.dump();
  return r.statusCode;
}

/** CONNECTIONS clients in closed loops over the warm functions for `seconds`; latencies into `lat`. */
async function drive(lb: RunningHaproxy, seconds: number, lat: number[], counter: { errors: number }): Promise<void> {
  const end = performance.now() + seconds * 1000;
  await Promise.all(Array.from({ length: CONNECTIONS }, async (_, c) => {
    for (let i = 0; performance.now() < end && i < 1_000_000; i++) {
      const s = performance.now();
      try {
        if ((await hit(`${lb.url}/fn/${WARM[(c + i) % WARM.length]}/`)) !== 200) counter.errors++;
      } catch {
        counter.errors++;
      }
      lat.push(performance.now() - s);
    }
  }));
}

/** A deterministic permutation (LCG-driven Fisher–Yates), the same in every run for a given seed. */
function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs];
  let x = seed * 2654435761 % 2 ** 32;
  for (let i = out.length - 1; i > 0; i--) {
    x = (1664525 * x + 1013904223) % 2 ** 32;
    const j = x % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

async function slotsUp(lb: RunningHaproxy, ids: number[]): Promise<boolean> {
  const rows = await lb.runtime.stat();
  return ids.every((id) => rows.find((r) => r.pxname === "stratus_nodes" && r.svname === `node${id}`)?.status === "UP");
}

const before = load();
const dirs: string[] = [];
const nodes: RunningNode[] = [];
const lbs: RunningHaproxy[] = [];
const member = (n: RunningNode, i: number): MemberNode => ({ id: i + 1, addr: n.host, port: n.port });
try {
  for (const [i, host] of ["127.0.0.2", "127.0.0.3", "127.0.0.4"].entries()) {
    nodes.push(await startNode({ name: `n${i + 1}`, host, functions: FUNCTIONS, prewarm: 2, limits: { queueFullStatus: 503 } }));
  }

  // 1. Throughput with 1, 2, 3 nodes.
  const dir = haproxyDir();
  dirs.push(dir);
  const lb = await startHaproxy(dir, { hashBalanceFactor: 200 });
  lbs.push(lb);
  const rows: Array<{ k: number; rps: number; p50: number; p99: number; errors: number; perNode: string }> = [];
  for (const k of [1, 2, 3]) {
    await syncMembership(lb.runtime, nodes.slice(0, k).map(member), { stateFile: lb.stateFile });
    if (!(await waitUntil(() => slotsUp(lb, nodes.slice(0, k).map((_, i) => i + 1)), 15_000))) throw new Error(`${k} node(s) not UP`);
    // The same load, unmeasured, for WARMUP_S: every instance it needs is started before the measurement.
    await drive(lb, WARMUP_S, [], { errors: 0 });
    for (const n of nodes) await n.reset();
    const lat: number[] = [];
    const counter = { errors: 0 };
    const t0 = performance.now();
    await drive(lb, SECONDS, lat, counter);
    const errors = counter.errors;
    const wall = (performance.now() - t0) / 1000;
    const s = sorted(lat);
    const per = await Promise.all(nodes.slice(0, k).map(async (n) => Object.values(await n.stats()).reduce((a, c) => a + c.executed, 0)));
    rows.push({ k, rps: lat.length / wall, p50: pct(s, 0.5), p99: pct(s, 0.99), errors, perNode: per.join(" / ") });
    console.log(`# ${k} node(s): ${(lat.length / wall).toFixed(0)} req/s`);
  }
  await lb.stop();

  // 2. Cold starts: each mode on its own HAProxy (same nodes, same slot ids), fresh functions per run.
  const cold: Array<{ mode: string; clients: number; cold: number; errors: number }> = [];
  for (const [m, mode] of MODES.entries()) {
    const d = haproxyDir();
    dirs.push(d);
    const h = await startHaproxy(d, mode.spec);
    lbs.push(h);
    await syncMembership(h.runtime, nodes.map(member), { stateFile: h.stateFile });
    if (!(await waitUntil(() => slotsUp(h, [1, 2, 3]), 15_000))) throw new Error("nodes not UP");
    for (const clients of SCALES) {
      const names = coldNames(m, clients);
      // Round by round (every function once per round), each round in its own order: in a fixed order
      // round robin would alias (60 functions over 3 nodes sends a function to the same node every round).
      const jobs: string[] = [];
      for (let r = 0; r < REQS_PER_FN; r++) jobs.push(...shuffled(names, r + 1));
      let next = 0;
      let errors = 0;
      for (const n of nodes) await n.reset();
      await Promise.all(Array.from({ length: clients }, async () => {
        while (next < jobs.length) {
          const fn = jobs[next++]!;
          try {
            if ((await hit(`${h.url}/fn/${fn}/`)) !== 200) errors++;
          } catch {
            errors++;
          }
        }
      }));
      const set = new Set(names);
      cold.push({ mode: mode.label, clients, cold: await total(nodes, "cold", (f) => set.has(f)), errors });
      console.log(`# ${mode.label}, ${clients} clients: ${cold.at(-1)!.cold} cold starts`);
      await new Promise((r) => setTimeout(r, COLD_IDLE_MS + 1500)); // this run's instances are reaped before the next
    }
    await h.stop();
  }

  const after = load();
  const base = rows[0]!.rps;
  writeResult("cluster", [
    "# Cluster — HAProxy 2.6 in front of 1–3 Stratus nodes",
    "",
    `\`npx tsx bench/cluster.ts\` · real HAProxy ${"2.6"} (Debian's package, \`nbthread 1\`) on 127.0.0.1, nodes (process driver + gateway, one process each) on 127.0.0.2/.3/.4, load generator (undici) in the benchmark's process. Everything shares the same 2 cores.`,
    "",
    machine(before, after),
    "",
    `## Throughput through HAProxy (${CONNECTIONS} connections, ${SECONDS} s, 12 warm functions, factor 200)`,
    "",
    "| nodes | req/s | ratio to 1 node | p50 | p99 | errors | requests per node |",
    "|---|---|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.k} | ${r.rps.toFixed(0)} | ${(r.rps / base).toFixed(2)} | ${r.p50.toFixed(1)} ms | ${r.p99.toFixed(1)} ms | ${r.errors} | ${r.perNode} |`),
    "",
    `## Cold starts: ${N_COLD} never-started functions × ${REQS_PER_FN} requests, 3 nodes`,
    "",
    "| routing | clients | cold starts | per function | errors |",
    "|---|---|---|---|---|",
    ...cold.map((c) => `| ${c.mode} | ${c.clients} | ${c.cold} | ${(c.cold / N_COLD).toFixed(2)} | ${c.errors} |`),
    "",
    "On one 2-core machine more nodes add no CPU: the throughput rows show what HAProxy and the ring cost and that the",
    "load spreads (requests per node), not how a cluster of real machines scales. Cold starts per function are the",
    "figure that carries over: round robin starts every function on every node; the ring starts it about once.",
  ].join("\n"));
} finally {
  for (const h of lbs) await h.stop().catch(() => {});
  for (const n of nodes) await n.cleanup().catch(() => {});
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  await agent.close();
}
