// Peers (issue 16): the same hello function on a bare Node http server, Google's functions-framework
// (`@google-cloud/functions-framework`, one Node process, no isolation), Cloudflare's workerd (one V8
// isolate per worker) and Stratus with the process driver, pool on (`prewarm` 2) and off, default function
// config (concurrency 1, maxInstances 10), all in one run. Each server runs in its own process.
// Per target: cold start (spawn → first 200 for the peers, which have no per-function start; for Stratus the
// first request to a never-invoked function through a running node), 1 connection p50/p99 (sequential
// requests after a warm-up), 50 connections throughput (autocannon). Ratios against bare Node.
// Not a test: run by hand. Usage: npm run build && npx tsx bench/peers.ts. Knobs: BENCH_REQUESTS (2000),
// BENCH_DURATION_S (8), BENCH_COLD (8). Writes bench/results/peers.md. ~3 min.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { request } from "undici";
import { sequential, throughput as autocannonRun, warmInstances } from "./lib/load";
import { spawnGateway } from "./lib/spawn-gateway";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 2000);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 8);
const throughput = (url: string) => autocannonRun(url, DURATION_S);
const COLD = Number(process.env.BENCH_COLD ?? 8);
const version = (pkg: string): string => (JSON.parse(readFileSync(resolve("node_modules", pkg, "package.json"), "utf8")) as { version: string }).version;

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** GETs `url` until it answers 200 "Hello" (bounded); resolves with the ms from `t0`. */
async function firstHello(url: string, t0: number, child?: ChildProcess): Promise<number> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child !== undefined && child.exitCode !== null) throw new Error(`${url}: server exited (${child.exitCode})`);
    try {
      const r = await request(url);
      const body = await r.body.text();
      if (r.statusCode === 200 && body === "Hello") return performance.now() - t0;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`${url}: no answer within 30 s`);
    await delay(2);
  }
}

interface Peer { name: string; url: string; child: ChildProcess; cleanup?: () => void }

/** Spawns one peer server and waits until it answers; `coldMs` is spawn → first 200. */
async function startPeer(kind: "bare" | "ff" | "workerd"): Promise<Peer & { coldMs: number }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/`;
  const env = { PATH: "/usr/bin:/bin", HOME: tmpdir() };
  let child: ChildProcess;
  let cleanup: (() => void) | undefined;
  const t0 = performance.now();
  if (kind === "bare") {
    child = spawn(process.execPath, ["bench/fixtures/bare-server.cjs", String(port)], { stdio: "ignore", env });
  } else if (kind === "ff") {
    const cli = resolve("node_modules/@google-cloud/functions-framework/build/src/main.js");
    child = spawn(process.execPath, [cli, "--target=hello", `--source=${resolve("bench/fixtures/ff-hello.cjs")}`, `--port=${port}`], { stdio: "ignore", env: { ...env, NODE_ENV: "production" } });
  } else {
    const dir = mkdtempSync(join(tmpdir(), "stratus-workerd-"));
    writeFileSync(join(dir, "worker.js"), readFileSync("bench/fixtures/workerd-hello.js"));
    writeFileSync(join(dir, "config.capnp"), `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .hello) ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "main") ],
);
const hello :Workerd.Worker = (
  modules = [ (name = "worker", esModule = embed "worker.js") ],
  compatibilityDate = "2024-09-23",
);
`);
    child = spawn(resolve("node_modules/.bin/workerd"), ["serve", join(dir, "config.capnp")], { stdio: "ignore", env });
    cleanup = () => rmSync(dir, { recursive: true, force: true });
  }
  const coldMs = await firstHello(url, t0, child);
  return { name: kind, url, child, coldMs, ...(cleanup === undefined ? {} : { cleanup }) };
}

async function stopPeer(p: Peer): Promise<void> {
  if (p.child.exitCode === null) {
    const exited = new Promise((r) => p.child.once("exit", r));
    p.child.kill("SIGKILL");
    await exited;
  }
  p.cleanup?.();
}



interface Row { label: string; cold: number[]; coldNote: string; lat: number[]; rps: number; errors: number }
const rows: Row[] = [];
const before = load();

for (const kind of ["bare", "ff", "workerd"] as const) {
  const cold: number[] = [];
  for (let i = 0; i < COLD; i++) {
    const p = await startPeer(kind);
    cold.push(p.coldMs);
    await stopPeer(p);
  }
  const p = await startPeer(kind);
  await sequential(p.url, 300);
  const lat = await sequential(p.url, REQUESTS);
  const t = await throughput(p.url);
  await stopPeer(p);
  const label = kind === "bare" ? "bare Node `http` (baseline)" : kind === "ff" ? `functions-framework ${version("@google-cloud/functions-framework")}` : `workerd ${version("workerd")}`;
  rows.push({ label, cold, coldNote: "process spawn → first 200", lat, rps: t.rps, errors: t.errors + t.non2xx });
  process.stdout.write(`${kind}: done\n`);
}

for (const prewarm of [2, 0]) {
  const coldNames = Array.from({ length: COLD }, (_, i) => `cold-${i}`);
  const gw = await spawnGateway({
    prewarm, cgroupRoot: `stratus-bench-peers-${prewarm}`,
    functions: [{ name: "hello", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: {} },
      ...coldNames.map((name) => ({ name, dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: {} }))],
  });
  const cold: number[] = [];
  let fromPool = 0;
  for (const name of coldNames) {
    // Pool on: the steady state of a node with a spare slot (bounded wait for it).
    for (let i = 0; prewarm > 0 && i < 600 && (await gw.stats()).prewarm.idle < 1; i++) await delay(50);
    const hits = (await gw.stats()).prewarm.hits;
    cold.push(await firstHello(`http://127.0.0.1:${gw.port}/fn/${name}/`, performance.now()));
    fromPool += (await gw.stats()).prewarm.hits - hits;
  }
  const url = `http://127.0.0.1:${gw.port}/fn/hello/`;
  await sequential(url, 300);
  const lat = await sequential(url, REQUESTS);
  // As many instances as the pool starts for a burst of 10 (its estimate may rightly run fewer than maxInstances).
  await warmInstances(gw, "hello", 10, { timeoutMs: 60_000, required: false });
  const t = await throughput(url);
  await gw.close();
  rows.push({ label: `Stratus, process driver, pool ${prewarm > 0 ? `on (prewarm ${prewarm})` : "off"}, default config`, cold, coldNote: `first request to a never-invoked function; ${fromPool}/${COLD} from a pool slot`, lat, rps: t.rps, errors: t.errors + t.non2xx });
  process.stdout.write(`stratus prewarm ${prewarm}: done\n`);
}
const after = load();

const bare = rows[0]!;
const bareP50 = pct(sorted(bare.lat), 0.5);
const bareCold = pct(sorted(bare.cold), 0.5);
const table = rows.map((r) => {
  const l = sorted(r.lat);
  const c = sorted(r.cold);
  const p50 = pct(l, 0.5);
  return `| ${r.label} | ${pct(c, 0.5).toFixed(1)} ms (${(pct(c, 0.5) / bareCold).toFixed(2)} ×) | ${(p50 / 1000).toFixed(3)} ms (${(p50 / bareP50).toFixed(2)} ×) | ${(pct(l, 0.99) / 1000).toFixed(3)} ms | ${Math.round(r.rps)} (${(r.rps / bare.rps).toFixed(2)} ×) | ${r.errors} | ${r.coldNote} |`;
}).join("\n");
const md = `# Peers — the same hello function on bare Node, functions-framework, workerd and Stratus, one run

\`npx tsx bench/peers.ts\` · every server in its own process on loopback; the load generator (undici, autocannon) in the
bench process. Cold start: ${COLD} per row (p50). 1 connection: ${REQUESTS} sequential requests after 300 warm-up ones.
50 connections: autocannon, ${DURATION_S} s, pipelining 1 (Stratus: 10 instances warmed first; the default config serves one
request per instance, so 40 of the 50 connections wait). Ratios (×) are against bare Node in this run.
devDependencies for it, exact-pinned: \`@google-cloud/functions-framework\` ${version("@google-cloud/functions-framework")}, \`workerd\` ${version("workerd")}.

${machine(before, after)}

| target | cold start p50 | 1 conn p50 | 1 conn p99 | 50 conn req/s | errors | cold start is |
|---|---|---|---|---|---|---|
${table}

Not measured here: Stratus with the Docker driver, and the 200-request burst of issue 16 (bench/burst.ts covers bursts).
`;
writeResult("peers", md);
