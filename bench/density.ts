// Density: how many idle warm instances one node holds per GiB, and warm latency with many resident.
// Starts K hello instances (K functions, one request each, so each instance has served traffic once),
// then measures real memory two ways: the instances' cgroup memory usage summed (what the limits count,
// page cache included), and PSS (proportional set size: shared pages split between sharers) summed over
// every process of every instance from /proc/<pid>/smaps_rollup. Baseline in the same run: K idle bare
// Node http servers (no sandbox, no runtime), PSS summed. Warm latency: 1 connection, sequential, round
// robin over all K instances vs. one instance while it was the only one resident.
// Usage: npm run build && npx tsx bench/density.ts [K=60]. Writes bench/results/density.md. ~2 min.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { Client } from "undici";
import { spawnGateway } from "./lib/spawn-gateway";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const K = Number(process.argv[2] ?? 60);
const ROOT = "stratus-bench-density";
const MiB = 1024 * 1024;
/** How long instances (and bare servers) sit idle before the "idle" sample, ms. */
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 15_000);

function pssBytes(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Sum of memory.usage_in_bytes (v1) or memory.current (v2) and of PSS over the instance cgroups. */
function instanceMemory(): { cgroupBytes: number; pssBytes: number; instances: number; processes: number } {
  const v1 = join("/sys/fs/cgroup/memory", ROOT);
  const dir = existsSync(v1) ? v1 : join("/sys/fs/cgroup", ROOT);
  const file = existsSync(v1) ? "memory.usage_in_bytes" : "memory.current";
  let cgroupBytes = 0;
  let pss = 0;
  let instances = 0;
  let processes = 0;
  for (const id of readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name)) {
    instances++;
    cgroupBytes += Number(readFileSync(join(dir, id, file), "utf8"));
    for (const pid of readFileSync(join(dir, id, "cgroup.procs"), "utf8").split("\n").filter(Boolean)) {
      processes++;
      pss += pssBytes(Number(pid));
    }
  }
  return { cgroupBytes, pssBytes: pss, instances, processes };
}

async function latency(client: Client, paths: string[], n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n + 100; i++) {
    const t0 = performance.now();
    const r = await client.request({ method: "GET", path: paths[i % paths.length]! });
    const body = await r.body.text();
    if (r.statusCode !== 200 || body !== "Hello") throw new Error(`${r.statusCode} ${body}`);
    if (i >= 100) out.push((performance.now() - t0) * 1000);
  }
  return out;
}

const before = load();
const names = Array.from({ length: K }, (_, i) => `d-${i}`);
const gw = await spawnGateway({
  prewarm: 0,
  cgroupRoot: ROOT,
  functions: names.map((name) => ({ name, dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: { idleTimeout: 600_000 } })),
});
const client = new Client(`http://127.0.0.1:${gw.port}`, { pipelining: 1 });
await latency(client, ["/fn/d-0/"], 200);
const alone = await latency(client, ["/fn/d-0/"], 1500);
// Start the others a few at a time (the driver bounds concurrent boots anyway).
for (let i = 1; i < K; i += 4) {
  await Promise.all(names.slice(i, i + 4).map(async (n) => {
    const r = await fetch(`http://127.0.0.1:${gw.port}/fn/${n}/`);
    if (r.status !== 200) throw new Error(`${n}: ${r.status}`);
    await r.text();
  }));
}
// Let start-up garbage be collected and the instances settle before measuring "idle".
await new Promise((r) => setTimeout(r, 3000));
const mem = instanceMemory();
// An instance left idle: V8's memory reducer runs a few seconds after allocation stops (measured ~5 MiB
// less per instance after ~10 s here), which is what a warm instance waiting for its next request costs.
await new Promise((r) => setTimeout(r, IDLE_MS - 3000));
const memIdle = instanceMemory();
const many = await latency(client, names.map((n) => `/fn/${n}/`), 1500);
await client.close();
await gw.close();

// Baseline: K bare Node http servers, idle after one request each.
const bare: ChildProcess[] = [];
let barePss = 0;
const BARE = Math.min(K, 30);
for (let i = 0; i < BARE; i++) {
  const c = spawn(process.execPath, ["bench/fixtures/bare-server.cjs", "0"], { stdio: ["ignore", "pipe", "inherit"], env: { PATH: "/usr/bin:/bin" } });
  const [line] = (await once(c.stdout!, "data")) as [Buffer];
  await (await fetch(`http://127.0.0.1:${Number(/listening (\d+)/.exec(line.toString())![1])}/`)).text();
  bare.push(c);
}
await new Promise((r) => setTimeout(r, 2000));
for (const c of bare) barePss += pssBytes(c.pid!);
await new Promise((r) => setTimeout(r, IDLE_MS - 2000));
let barePssIdle = 0;
for (const c of bare) barePssIdle += pssBytes(c.pid!);
for (const c of bare) c.kill();
const after = load();

const perInstPss = mem.pssBytes / mem.instances;
const perInstCg = mem.cgroupBytes / mem.instances;
const perBare = barePss / BARE;
const perInstPssIdle = memIdle.pssBytes / memIdle.instances;
const perInstCgIdle = memIdle.cgroupBytes / memIdle.instances;
const perBareIdle = barePssIdle / BARE;
const a = sorted(alone);
const m = sorted(many);
const md = `# Density — idle warm instances per GiB, and warm latency with many resident

\`npx tsx bench/density.ts [K]\` · process driver · K = ${K} hello instances, each idle after serving one request
(plus the warm-up instance, which served ~1,800). Memory read from the instances' cgroups and from
\`/proc/<pid>/smaps_rollup\` of every process in them (bwrap's init + node: ${mem.processes} processes for ${mem.instances} instances).

${machine(before, after)}

3 s after the last start (start-up garbage still in the heap):

| measure | total | per instance | instances per GiB |
|---|---|---|---|
| cgroup memory usage, summed (page cache included) | ${(mem.cgroupBytes / MiB).toFixed(0)} MiB | ${(perInstCg / MiB).toFixed(1)} MiB | ${Math.floor(1024 * MiB / perInstCg)} |
| PSS, summed over the instances' processes | ${(mem.pssBytes / MiB).toFixed(0)} MiB | ${(perInstPss / MiB).toFixed(1)} MiB | **${Math.floor(1024 * MiB / perInstPss)}** |
| baseline: ${BARE} bare idle Node http servers, PSS | ${(barePss / MiB).toFixed(0)} MiB | ${(perBare / MiB).toFixed(1)} MiB | ${Math.floor(1024 * MiB / perBare)} |
| ratio instance / bare server (PSS) | | ${(perInstPss / perBare).toFixed(2)} | |

After ${IDLE_MS / 1000} s idle (V8's memory reducer has run; this is what a warm instance waiting for traffic holds):

| measure | total | per instance | instances per GiB |
|---|---|---|---|
| cgroup memory usage, summed (page cache included) | ${(memIdle.cgroupBytes / MiB).toFixed(0)} MiB | ${(perInstCgIdle / MiB).toFixed(1)} MiB | ${Math.floor(1024 * MiB / perInstCgIdle)} |
| PSS, summed over the instances' processes | ${(memIdle.pssBytes / MiB).toFixed(0)} MiB | ${(perInstPssIdle / MiB).toFixed(1)} MiB | **${Math.floor(1024 * MiB / perInstPssIdle)}** |
| baseline: ${BARE} bare Node http servers idle as long, PSS | ${(barePssIdle / MiB).toFixed(0)} MiB | ${(perBareIdle / MiB).toFixed(1)} MiB | ${Math.floor(1024 * MiB / perBareIdle)} |
| ratio instance / bare server (PSS) | | ${(perInstPssIdle / perBareIdle).toFixed(2)} | |

PSS counts a shared page (the node binary, shared libraries) once in total, split among the processes sharing
it, so the PSS sum is the real memory the instances cost together. The cgroup figure also counts the page cache
each cgroup touched first (the first instance pays for the node binary's pages), so it overstates the marginal cost.

## Warm latency with many instances resident (gateway, 1 connection, sequential, 1,500 requests)

| case | p50 | p90 | p99 |
|---|---|---|---|
| one instance, the only one resident | ${pct(a, 0.5).toFixed(0)} µs | ${pct(a, 0.9).toFixed(0)} µs | ${pct(a, 0.99).toFixed(0)} µs |
| round robin over ${K} resident instances | ${pct(m, 0.5).toFixed(0)} µs | ${pct(m, 0.9).toFixed(0)} µs | ${pct(m, 0.99).toFixed(0)} µs |
| ratio | ${(pct(m, 0.5) / pct(a, 0.5)).toFixed(2)} | ${(pct(m, 0.9) / pct(a, 0.9)).toFixed(2)} | ${(pct(m, 0.99) / pct(a, 0.99)).toFixed(2)} |

Round robin touches a different instance (and a different upstream connection) each time: caches are colder
than when one instance serves everything.
`;
writeResult("density", md);
