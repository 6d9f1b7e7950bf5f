// Cold start: time to first byte through the gateway for a function never started on the node (its
// artifact present), process driver: without the pool, with the pool (a slot idle), and with the pool
// exhausted (the only slot was just taken and is being refilled). Baseline in the same run: a bare
// `node` http server spawned and asked for its first byte (no sandbox, no platform).
// Docker driver, the same three rows: needs dockerd + the registry (`bash scripts/services.sh`); images are
// prepared before timing, so the no-pool row measures container create + start + READY + first byte, and the
// pool rows a slot's specialisation (artifact mount + one message on its one-shot socket + load) + first byte;
// BENCH_COLD_DRIVERS=docker measures the Docker rows only; =docker-pool only the Docker pool rows.
// Usage: npm run build && npx tsx bench/cold-start.ts [starts=30]. Writes bench/results/cold-start.md. ~3 min.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { request } from "undici";
import { setTimeout as delay } from "node:timers/promises";
import { spawnGateway, type BenchFunction, type BenchGateway } from "./lib/spawn-gateway";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const STARTS = Number(process.argv[2] ?? 30);
/** Which drivers' rows to measure (`BENCH_COLD_DRIVERS`, default both). */
const DRIVERS = (process.env.BENCH_COLD_DRIVERS ?? "process,docker").split(",");
const fn = (name: string): BenchFunction => ({ name, dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: { idleTimeout: 1000 } });

async function ttfb(gw: BenchGateway, name: string): Promise<{ ms: number; cold: boolean }> {
  const t0 = performance.now();
  const r = await request(`http://127.0.0.1:${gw.port}/fn/${name}/`);
  const ms = performance.now() - t0; // headers received = first byte
  const body = await r.body.text();
  if (r.statusCode !== 200 || body !== "Hello") throw new Error(`${name}: ${r.statusCode} ${body}`);
  return { ms, cold: r.headers["x-stratus-cold-start"] === "true" };
}

async function until(cond: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error("timed out waiting for the pool");
    await delay(20);
  }
}

async function bareNode(n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const child = spawn(process.execPath, ["bench/fixtures/bare-server.cjs", "0"], { stdio: ["ignore", "pipe", "inherit"], env: { PATH: "/usr/bin:/bin" } });
    const [line] = (await once(child.stdout!, "data")) as [Buffer];
    const port = Number(/listening (\d+)/.exec(line.toString())![1]);
    const r = await request(`http://127.0.0.1:${port}/`);
    out.push(performance.now() - t0);
    await r.body.text();
    child.kill();
    await once(child, "exit");
  }
  return out;
}

const before = load();
const names = (prefix: string) => Array.from({ length: STARTS + 1 }, (_, i) => `${prefix}-${i}`);

// Without the pool.
const fresh: number[] = [];
if (DRIVERS.includes("process")) {
  const gw = await spawnGateway({ prewarm: 0, cgroupRoot: "stratus-bench-cold", functions: names("f").map(fn) });
  for (const name of names("f").slice(0, STARTS)) {
    const r = await ttfb(gw, name);
    if (!r.cold) throw new Error("expected a cold start");
    fresh.push(r.ms);
  }
  await gw.close();
}
// With the pool: wait for an idle slot before each start (the steady state of a node with spare slots).
const pooled: number[] = [];
const exhausted: number[] = [];
let pooledHits = 0;
let exhaustedHits = 0;
if (DRIVERS.includes("process")) {
  const gw = await spawnGateway({ prewarm: 1, cgroupRoot: "stratus-bench-cold", functions: [...names("p"), ...names("x")].map(fn) });
  const idle = async () => (await gw.stats()).prewarm.idle >= 1;
  for (let i = 0; i < STARTS; i++) {
    await until(idle);
    let s = await gw.stats();
    const hits0 = s.prewarm.hits;
    pooled.push((await ttfb(gw, `p-${i}`)).ms);
    s = await gw.stats();
    pooledHits += s.prewarm.hits - hits0;
    // Exhausted: the one slot was just taken by p-i and its replacement is still starting.
    const x = await ttfb(gw, `x-${i}`);
    exhausted.push(x.ms);
    exhaustedHits += (await gw.stats()).prewarm.hits - s.prewarm.hits;
  }
  await gw.close();
}
// Docker driver, no pool: every start is a fresh container from the function's image (already pulled).
const dockerStarts: number[] = [];
if (DRIVERS.includes("docker")) {
  const gw = await spawnGateway({ driver: "docker", prewarm: 0, cgroupRoot: "unused", functions: names("d").map(fn) });
  for (const name of names("d").slice(0, STARTS)) {
    const r = await ttfb(gw, name);
    if (!r.cold) throw new Error("expected a cold start");
    dockerStarts.push(r.ms);
  }
  await gw.close();
}
// Docker driver with the pool: as the process rows (an idle slot, then the pool exhausted), with the
// slots' one-shot Unix socket (the default) — and, as the same-run baseline, with round two's channel
// (the container's stdin and stdout through dockerd's attach stream). The two gateways run side by side;
// before every pooled start both pools are full again (no slot boots beside the start being measured),
// and which of the two goes first alternates.
const dockerPooled: number[] = [];
const dockerExhausted: number[] = [];
const dockerAttachPooled: number[] = [];
let dockerPooledHits = 0;
let dockerExhaustedHits = 0;
let dockerAttachHits = 0;
if (DRIVERS.includes("docker") || DRIVERS.includes("docker-pool")) {
  const gw = await spawnGateway({ driver: "docker", prewarm: 1, cgroupRoot: "unused", functions: [...names("dp"), ...names("dx")].map(fn) });
  const gwAttach = await spawnGateway({ driver: "docker", prewarm: 1, cgroupRoot: "unused", specializeChannel: "attach", functions: names("da").map(fn) });
  const bothIdle = async () => {
    await until(async () => (await gwAttach.stats()).prewarm.idle >= 1 && (await gw.stats()).prewarm.idle >= 1);
    await delay(150); // the new slot's start-up output and the engine's work for it have settled
  };
  const attachStart = async (i: number) => {
    await bothIdle();
    const a0 = (await gwAttach.stats()).prewarm.hits;
    dockerAttachPooled.push((await ttfb(gwAttach, `da-${i}`)).ms);
    dockerAttachHits += (await gwAttach.stats()).prewarm.hits - a0;
  };
  const socketStart = async (i: number) => {
    await bothIdle();
    let s = await gw.stats();
    const hits0 = s.prewarm.hits;
    dockerPooled.push((await ttfb(gw, `dp-${i}`)).ms);
    s = await gw.stats();
    dockerPooledHits += s.prewarm.hits - hits0;
    // Exhausted: the one slot was just taken by dp-i and its replacement is still starting.
    const x = await ttfb(gw, `dx-${i}`);
    dockerExhausted.push(x.ms);
    dockerExhaustedHits += (await gw.stats()).prewarm.hits - s.prewarm.hits;
  };
  for (let i = 0; i < STARTS; i++) {
    if (i % 2 === 0) {
      await attachStart(i);
      await socketStart(i);
    } else {
      await socketStart(i);
      await attachStart(i);
    }
  }
  await gw.close();
  await gwAttach.close();
}
const baseline = await bareNode(15);
const after = load();

const row = (label: string, xs: number[], note: string) => {
  if (xs.length === 0) return `| ${label} | – | – | – | – | not measured in this run (BENCH_COLD_DRIVERS) |`;
  const s = sorted(xs);
  const b = pct(sorted(baseline), 0.5);
  return `| ${label} | ${pct(s, 0.5).toFixed(1)} ms | ${pct(s, 0.9).toFixed(1)} ms | ${pct(s, 0.99).toFixed(1)} ms | ${(pct(s, 0.5) / b).toFixed(2)} | ${note} |`;
};
const md = `# Cold start — time to first byte for a function never started on the node

\`npx tsx bench/cold-start.ts\` · process driver (bubblewrap + cgroups) and docker driver · ${STARTS} starts per row, each a
different function name (so each is a real first start), hello function, artifact on disk. Measured from the
client: request sent → response headers received, through the gateway (which runs in its own process).

${machine(before, after)}

| setup | p50 | p90 | p99 (= max at n=${STARTS}) | p50 / baseline | notes |
|---|---|---|---|---|---|
${row("bare `node` http server, spawned (baseline, no sandbox)", baseline, "spawn → first byte, 15 runs")}
${row("process driver, no pool", fresh, "bwrap + cgroup + node start + load")}
${row("process driver, pool with an idle slot", pooled, `${pooledHits}/${STARTS} served from the pool`)}
${row("process driver, pool exhausted", exhausted, `${exhaustedHits}/${STARTS} served from the pool (the start waits for the slot being refilled)`)}
${row("docker driver, no pool (image present)", dockerStarts, "container create + start + READY")}
${row("docker driver, pool with an idle slot, attach channel (round two: same-run baseline)", dockerAttachPooled, `${dockerAttachHits}/${STARTS} served from the pool; message on stdin, READY on stdout, both through dockerd`)}
${row("docker driver, pool with an idle slot", dockerPooled, `${dockerPooledHits}/${STARTS} served from the pool; one-shot Unix socket + ready file in the slot's socket dir${dockerAttachPooled.length ? ` — p50 ${(pct(sorted(dockerPooled), 0.5) / pct(sorted(dockerAttachPooled), 0.5)).toFixed(2)} × the attach channel's` : ""}`)}
${row("docker driver, pool exhausted", dockerExhausted, `${dockerExhaustedHits}/${STARTS} served from the pool; the refill runs beside it`)}
`;
writeResult("cold-start", md);
