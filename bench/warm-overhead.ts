// Warm overhead: the hello function through the gateway vs. a bare Node http server answering the same
// bytes. 1 connection: added latency p50/p99 (sequential requests, undici); 50 connections: throughput
// ratio (autocannon). Gateway and baseline each run in their own process; rounds are interleaved so
// background load hits both alike. Usage: npm run build && npx tsx bench/warm-overhead.ts
// Writes bench/results/warm-overhead.md. Needs root + bubblewrap (the process driver). ~1.5 min.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sequential, spawnBareServer, throughput as autocannonRun, warmInstances } from "./lib/load";
import { spawnGateway } from "./lib/spawn-gateway";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const SEQ_REQUESTS = Number(process.env.BENCH_REQUESTS ?? 2000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 8);
// BENCH_BASELINE_RUNTIME=<a runtime.cjs>: a second gateway whose instances run that (older) build, measured
// in the same interleaved rounds (1 connection, and one instance at concurrency 50): before/after in one run.
const BASELINE_RUNTIME = process.env.BENCH_BASELINE_RUNTIME;

const before = load();
const { child: bare, port: barePort } = await spawnBareServer("0");
// The floor of one hop: a minimal undici.Pool proxy (bench/fixtures/minimal-proxy.cjs) to a second bare
// server on a Unix socket, as the gateway reaches its instances.
const sockDir = mkdtempSync(join(tmpdir(), "swo-"));
const bareSock = spawn(process.execPath, ["bench/fixtures/bare-server.cjs", join(sockDir, "bare.sock")], { stdio: ["ignore", "pipe", "inherit"] });
await once(bareSock.stdout!, "data");
const minimal = spawn(process.execPath, ["bench/fixtures/minimal-proxy.cjs", join(sockDir, "bare.sock"), "50"], { stdio: ["ignore", "pipe", "inherit"] });
const [mline] = (await once(minimal.stdout!, "data")) as [Buffer];
const minimalPort = Number(/listening (\d+)/.exec(mline.toString())![1]);
// "hello": the default config (concurrency 1 per instance, up to 10 instances, like Lambda);
// "hello-shared": one instance taking all 50 connections (concurrency 50): the proxy path alone.
const gw = await spawnGateway({
  prewarm: 0,
  cgroupRoot: "stratus-bench-warm",
  functions: [
    { name: "hello", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: {} },
    { name: "hello-shared", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: { concurrency: 50, maxInstances: 1 } },
  ],
});
const gwBase = BASELINE_RUNTIME === undefined ? undefined : await spawnGateway({
  prewarm: 0,
  cgroupRoot: "stratus-bench-warm-base",
  runtimePath: BASELINE_RUNTIME,
  functions: [
    { name: "hello", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: {} },
    { name: "hello-shared", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: { concurrency: 50, maxInstances: 1 } },
  ],
});
const base = gwBase === undefined ? undefined : { gateway: `http://127.0.0.1:${gwBase.port}/fn/hello/`, shared: `http://127.0.0.1:${gwBase.port}/fn/hello-shared/` };
const targets = { bare: `http://127.0.0.1:${barePort}/`, minimal: `http://127.0.0.1:${minimalPort}/`, gateway: `http://127.0.0.1:${gw.port}/fn/hello/`, shared: `http://127.0.0.1:${gw.port}/fn/hello-shared/` } as const;

const throughput = (url: string, durationS = DURATION_S) => autocannonRun(url, durationS);

// Warm the instance (first request starts it) and both JITs.
await sequential(targets.gateway, 300);
await sequential(targets.bare, 300);
await sequential(targets.minimal, 300);
await sequential(targets.shared, 300);
if (base !== undefined) {
  await sequential(base.gateway, 300);
  await sequential(base.shared, 300);
}
// Start the instances the 50-connection runs will use (cold starts are measured elsewhere), before every
// run: autocannon ends a run by closing 50 connections with requests in flight; before issue 16 the gateway
// retired an instance whose client left mid-request, so each run of the default config began with up to 10
// cold starts (now the instances are kept once their handlers finish, docs/gateway.md; this stays so that
// older builds measure the same way).

const lat = { bare: [] as number[], minimal: [] as number[], gateway: [] as number[], base: [] as number[] };
const baseShared: Awaited<ReturnType<typeof throughput>>[] = [];
const tput = { bare: [] as Awaited<ReturnType<typeof throughput>>[], minimal: [] as Awaited<ReturnType<typeof throughput>>[], gateway: [] as Awaited<ReturnType<typeof throughput>>[], shared: [] as Awaited<ReturnType<typeof throughput>>[] };
for (let round = 0; round < ROUNDS; round++) {
  lat.bare.push(...(await sequential(targets.bare, SEQ_REQUESTS)));
  lat.minimal.push(...(await sequential(targets.minimal, SEQ_REQUESTS)));
  lat.gateway.push(...(await sequential(targets.gateway, SEQ_REQUESTS)));
  if (base !== undefined) lat.base.push(...(await sequential(base.gateway, SEQ_REQUESTS)));
}
for (let round = 0; round < 2; round++) {
  tput.bare.push(await throughput(targets.bare));
  tput.minimal.push(await throughput(targets.minimal));
  // The default config as a user gets it: the pool decides how many instances to run (docs/gateway.md,
  // "When a queued request starts an instance"); a short warm-up run lets it settle first.
  await throughput(targets.gateway, 2);
  tput.gateway.push(await throughput(targets.gateway));
  await warmInstances(gw, "hello-shared", 1);
  tput.shared.push(await throughput(targets.shared));
  if (gwBase !== undefined && base !== undefined) {
    await warmInstances(gwBase, "hello-shared", 1);
    baseShared.push(await throughput(base.shared));
  }
}
const stats = await gw.stats();
await gw.close();
await gwBase?.close();
bare.kill();
bareSock.kill();
minimal.kill();
rmSync(sockDir, { recursive: true, force: true });
const after = load();

const b = sorted(lat.bare);
const m = sorted(lat.minimal);
const g = sorted(lat.gateway);
const us = (x: number) => `${Math.round(x)} µs`;
const med = (xs: number[]) => sorted(xs)[Math.floor(xs.length / 2)]!;
const bareRps = med(tput.bare.map((t) => t.rps));
const minimalRps = med(tput.minimal.map((t) => t.rps));
const gwRps = med(tput.gateway.map((t) => t.rps));
const sharedRps = med(tput.shared.map((t) => t.rps));
const floorAdded = pct(m, 0.5) - pct(b, 0.5);
const gwAdded = pct(g, 0.5) - pct(b, 0.5);
const bl = sorted(lat.base);
const baselineSection = gwBase === undefined ? "" : `
## Baseline runtime in the same run (\`BENCH_BASELINE_RUNTIME=${BASELINE_RUNTIME}\`)

A second gateway whose instances run that build, in the same interleaved rounds.

| | p50 | p90 | p99 | added p50 over bare | added / floor | one instance at concurrency 50, req/s (/ bare) |
|---|---|---|---|---|---|---|
| gateway → instance, this checkout's runtime | ${us(pct(g, 0.5))} | ${us(pct(g, 0.9))} | ${us(pct(g, 0.99))} | ${us(gwAdded)} | **${(gwAdded / floorAdded).toFixed(2)}** | ${Math.round(sharedRps)} (${(sharedRps / bareRps).toFixed(2)}) |
| gateway → instance, baseline runtime | ${us(pct(bl, 0.5))} | ${us(pct(bl, 0.9))} | ${us(pct(bl, 0.99))} | ${us(pct(bl, 0.5) - pct(b, 0.5))} | **${((pct(bl, 0.5) - pct(b, 0.5)) / floorAdded).toFixed(2)}** | ${Math.round(med(baseShared.map((t) => t.rps)))} (${(med(baseShared.map((t) => t.rps)) / bareRps).toFixed(2)}) |
`;
const errs = (xs: Awaited<ReturnType<typeof throughput>>[]) => xs.reduce((n, t) => n + t.errors + t.non2xx, 0);
const md = `# Warm overhead — hello through the gateway vs. a bare Node http server

\`npx tsx bench/warm-overhead.ts\` · process driver, one warm instance (maxInstances 1, concurrency 1) ·
gateway and baseline each in their own process, load generator in a third.

${machine(before, after)}

## 1 connection, sequential (${ROUNDS} interleaved rounds × ${SEQ_REQUESTS} requests each, after 300 warm-up)

| target | p50 | p90 | p99 |
|---|---|---|---|
| bare Node http (baseline) | ${us(pct(b, 0.5))} | ${us(pct(b, 0.9))} | ${us(pct(b, 0.99))} |
| minimal undici.Pool proxy → bare server on a Unix socket (the floor of one hop) | ${us(pct(m, 0.5))} | ${us(pct(m, 0.9))} | ${us(pct(m, 0.99))} |
| gateway → instance | ${us(pct(g, 0.5))} | ${us(pct(g, 0.9))} | ${us(pct(g, 0.99))} |
| **added by the platform** | **${us(pct(g, 0.5) - pct(b, 0.5))}** | ${us(pct(g, 0.9) - pct(b, 0.9))} | **${us(pct(g, 0.99) - pct(b, 0.99))}** |
| added by the minimal proxy (floor) | ${us(pct(m, 0.5) - pct(b, 0.5))} | ${us(pct(m, 0.9) - pct(b, 0.9))} | ${us(pct(m, 0.99) - pct(b, 0.99))} |
| **added by the platform / added by the floor** (issue 16 target 8: ≤ 1.2) | **${(gwAdded / floorAdded).toFixed(2)}** | | |
| ratio gateway / bare | ${(pct(g, 0.5) / pct(b, 0.5)).toFixed(2)} | ${(pct(g, 0.9) / pct(b, 0.9)).toFixed(2)} | ${(pct(g, 0.99) / pct(b, 0.99)).toFixed(2)} |

## 50 connections (autocannon, ${DURATION_S} s per run, 2 interleaved runs each, median)

| target | req/s | p99 latency | errors + non-2xx |
|---|---|---|---|
| bare Node http (baseline) | ${Math.round(bareRps)} | ${tput.bare.map((t) => `${t.p99} ms`).join(", ")} | ${errs(tput.bare)} |
| minimal undici.Pool proxy (floor of one hop) | ${Math.round(minimalRps)} | ${tput.minimal.map((t) => `${t.p99} ms`).join(", ")} | ${errs(tput.minimal)} |
| gateway, default config (concurrency 1, ≤ 10 instances, as many as the pool starts) | ${Math.round(gwRps)} | ${tput.gateway.map((t) => `${t.p99} ms`).join(", ")} | ${errs(tput.gateway)} |
| gateway, one instance with concurrency 50 | ${Math.round(sharedRps)} | ${tput.shared.map((t) => `${t.p99} ms`).join(", ")} | ${errs(tput.shared)} |
| **throughput ratio gateway / bare** (default · shared) | **${(gwRps / bareRps).toFixed(2)}** · **${(sharedRps / bareRps).toFixed(2)}** | | |
| throughput ratio minimal proxy / bare (the floor) | ${(minimalRps / bareRps).toFixed(2)} | | |

Runs (req/s): bare ${tput.bare.map((t) => Math.round(t.rps)).join(", ")}; minimal ${tput.minimal.map((t) => Math.round(t.rps)).join(", ")}; default ${tput.gateway.map((t) => Math.round(t.rps)).join(", ")}; shared ${tput.shared.map((t) => Math.round(t.rps)).join(", ")}.
Both paths pay a proxy hop plus Express in the instance on the same 2 cores as the load generator; the bare server
is the ceiling. Instances at the end: ${JSON.stringify(stats.gateway)}.
${baselineSection}`;
// BENCH_PRINT_ONLY=1: A/B runs on a shared machine print without replacing the recorded result.
if (process.env.BENCH_PRINT_ONLY === "1") process.stdout.write(md);
else writeResult("warm-overhead", md);
