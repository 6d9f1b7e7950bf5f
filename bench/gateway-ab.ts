// Gateway A/B in one run: this checkout's gateway (source, via tsx) against another checkout's (a baseline
// tree with the same bench/lib, e.g. `git archive <commit> | tar -x -C <dir>` with node_modules and dist
// linked in), each in its own process with its own instances, rounds alternated so background load hits
// both alike. Per target: 50-connection req/s (autocannon) and the gateway process's CPU per request
// (/proc/<pid>/stat), then 1-connection sequential p50/p99; the bare server and the one-hop floor
// (bench/fixtures/minimal-proxy.cjs) in the same rounds.
// Usage: npm run build && BENCH_BASELINE_DIR=<dir> npx tsx bench/gateway-ab.ts
//   BENCH_ROUNDS (default 3), BENCH_DURATION_S (default 5), BENCH_REQUESTS (1-connection, default 2000),
//   BENCH_WARM10=1 also measures hello with minInstances 10: ten warm instances forced, as older benches
//   pre-warmed the default config (the other rows run as many instances as the pool chooses by itself).
// Prints a Markdown report; writes nothing.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { sequential, spawnBareServer, throughput, warmInstances } from "./lib/load";
import { spawnGateway, type BenchGateway } from "./lib/spawn-gateway";
import { load, machine, pct, sorted } from "./lib/report";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 5);
const SEQ = Number(process.env.BENCH_REQUESTS ?? 2000);
const BASE_DIR = process.env.BENCH_BASELINE_DIR;
if (BASE_DIR === undefined) throw new Error("BENCH_BASELINE_DIR=<a baseline checkout> is required");

function cpuUs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(f[11]) + Number(f[12])) * 10_000;
}
const functions = [
  { name: "hello", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: {} },
  { name: "hello-shared", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: { concurrency: 50, maxInstances: 1 } },
  { name: "hello-wide", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: { maxInstances: 50 } },
  ...(process.env.BENCH_WARM10 === "1" ? [{ name: "hello-min10", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: { minInstances: 10 } }] : []),
];
const before = load();
const { child: bare, port: barePort } = await spawnBareServer("0");
const sockDir = mkdtempSync(join(tmpdir(), "sgab-"));
const bareSock = spawn(process.execPath, ["bench/fixtures/bare-server.cjs", join(sockDir, "bare.sock")], { stdio: ["ignore", "pipe", "inherit"] });
await once(bareSock.stdout!, "data");
const minimal = spawn(process.execPath, ["bench/fixtures/minimal-proxy.cjs", join(sockDir, "bare.sock"), "50"], { stdio: ["ignore", "pipe", "inherit"] });
const [mline] = (await once(minimal.stdout!, "data")) as [Buffer];
const minimalPort = Number(/listening (\d+)/.exec(mline.toString())![1]);

const mine = await spawnGateway({ prewarm: 0, cgroupRoot: "stratus-bench-gwab-a", functions });
const baseSpawn = (await import(pathToFileURL(resolve(BASE_DIR, "bench/lib/spawn-gateway.ts")).href)) as { spawnGateway: typeof spawnGateway };
const base = await baseSpawn.spawnGateway({ prewarm: 0, cgroupRoot: "stratus-bench-gwab-b", runtimePath: resolve(BASE_DIR, "dist/runtime.cjs"), functions });
const gws: Record<"this" | "base", BenchGateway> = { this: mine, base };

const url = (gw: BenchGateway, fn: string) => `http://127.0.0.1:${gw.port}/fn/${fn}/`;
for (const gw of Object.values(gws)) for (const f of functions) await sequential(url(gw, f.name), 300);
await sequential(`http://127.0.0.1:${barePort}/`, 300);
await sequential(`http://127.0.0.1:${minimalPort}/`, 300);

type Row = { rps: number[]; cpu: number[]; errs: number; inst: number[] };
const rows = new Map<string, Row>();
const row = (k: string): Row => rows.get(k) ?? (rows.set(k, { rps: [], cpu: [], errs: 0, inst: [] }), rows.get(k)!);
const lat = new Map<string, number[]>();
const targets: Array<[string, BenchGateway, string]> = [];
for (const fn of ["hello", "hello-wide", "hello-shared"]) for (const k of ["this", "base"] as const) targets.push([`${k} ${fn}`, gws[k], fn]);
if (process.env.BENCH_WARM10 === "1") for (const k of ["this", "base"] as const) targets.push([`${k} hello-min10`, gws[k], "hello-min10"]);
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 === 0 ? targets : [...targets].reverse();
  const t = await throughput(`http://127.0.0.1:${barePort}/`, DURATION_S);
  row("bare").rps.push(t.rps);
  const m = await throughput(`http://127.0.0.1:${minimalPort}/`, DURATION_S);
  row("floor").rps.push(m.rps);
  for (const [k, gw, fn] of order) {
    if (fn === "hello-min10") await warmInstances(gw, fn, 10);
    else if (fn === "hello-shared") await warmInstances(gw, fn, 1);
    else await throughput(url(gw, fn), 2); // as the pool sizes it by itself
    const pid = gw.child.pid!;
    const c0 = cpuUs(pid);
    const res = await throughput(url(gw, fn), DURATION_S);
    const c1 = cpuUs(pid);
    const x = row(k);
    x.rps.push(res.rps);
    x.cpu.push((c1 - c0) / (res.rps * DURATION_S));
    x.errs += res.errors + res.non2xx;
    x.inst.push((await gw.stats()).gateway[fn]!.total);
  }
  for (const [k, u] of [["bare", `http://127.0.0.1:${barePort}/`], ["floor", `http://127.0.0.1:${minimalPort}/`], ["this", url(mine, "hello")], ["base", url(base, "hello")]] as const) {
    lat.set(k, [...(lat.get(k) ?? []), ...(await sequential(u, SEQ))]);
  }
}
await mine.close();
await base.close();
bare.kill();
bareSock.kill();
minimal.kill();
rmSync(sockDir, { recursive: true, force: true });
const med = (xs: number[]) => sorted(xs)[Math.floor(xs.length / 2)]!;
const bareRps = med(row("bare").rps);
const out: string[] = [machine(before, load()), "", `### 50 connections (${ROUNDS} alternated rounds × ${DURATION_S} s, median)`, "",
  "| target | req/s | / bare | gateway CPU µs/req | runs req/s | instances after each run | errors |", "|---|---|---|---|---|---|---|"];
for (const [k, x] of rows) {
  out.push(`| ${k} | ${Math.round(med(x.rps))} | ${(med(x.rps) / bareRps).toFixed(3)} | ${x.cpu.length ? Math.round(med(x.cpu)) : "–"} | ${x.rps.map(Math.round).join(", ")} | ${x.inst.join(", ")} | ${x.errs} |`);
}
const b50 = pct(sorted(lat.get("bare")!), 0.5);
const floorAdded = pct(sorted(lat.get("floor")!), 0.5) - b50;
out.push("", `### 1 connection, sequential (${ROUNDS} rounds × ${SEQ}), default config`, "", "| target | p50 µs | p99 µs | added p50 | added / floor |", "|---|---|---|---|---|");
for (const [k, xs] of lat) {
  const s = sorted(xs);
  out.push(`| ${k} | ${Math.round(pct(s, 0.5))} | ${Math.round(pct(s, 0.99))} | ${Math.round(pct(s, 0.5) - b50)} | ${((pct(s, 0.5) - b50) / floorAdded).toFixed(2)} |`);
}
console.log(out.join("\n"));
