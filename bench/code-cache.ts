// The runtime's V8 code cache (src/sandbox/code-cache.ts, src/runtime/boot.cjs), A/B in one run: two
// process drivers side by side, one with `codeCache: false` (the runtime compiled from source, as before)
// and one with it on (the default), starts alternated. Per start: wall time to READY, CPU of the
// sandbox's processes at READY (their schedstat run time, threads included), the driver's own CPU; and,
// after one request and BENCH_IDLE_MS idle, the PSS of each instance's processes, fresh and from pool
// slots (the cache must not cost density). Hello function, memory 256 MB.
// Usage: npm run build && npx tsx bench/code-cache.ts [starts=15] [resident=10]. Writes bench/results/code-cache.md. ~2 min.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { invokeInstance } from "../src/sandbox/conformance";
import { createProcessDriver, type ProcessDriver } from "../src/sandbox/process/process-driver";
import { parseFunctionConfig } from "../src/shared/function-config";
import type { Instance } from "../src/sandbox/driver";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const STARTS = Number(process.argv[2] ?? 15);
const RESIDENT = Number(process.argv[3] ?? 10);
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 15_000);
const MiB = 1024 * 1024;
const config = parseFunctionConfig("hello", { timeout: 10_000 });
const variants = [
  { label: "compiled from source (`codeCache: false`)", codeCache: false },
  { label: "from the code cache (default)", codeCache: true },
] as const;

interface Side extends Opened { wall: number[]; cpu: number[]; own: number[]; pss: number[]; slotPss: number[]; states: Set<string> }

/** Pids of a sandbox's cgroup (pids controller, cgroup v1). */
const pidsOf = (root: string, id: string): number[] => readFileSync(`/sys/fs/cgroup/pids/${root}/${id}/cgroup.procs`, "utf8").split("\n").filter(Boolean).map(Number);
/** Run time of every thread of `pids` so far, ms. */
const cpuMs = (pids: number[]): number => {
  let ns = 0;
  for (const pid of pids) {
    try {
      for (const t of readdirSync(`/proc/${pid}/task`)) ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // gone
    }
  }
  return ns / 1e6;
};
const pssOf = (pids: number[]): number => {
  let bytes = 0;
  for (const pid of pids) {
    try {
      const m = /^Pss:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
      bytes += m ? Number(m[1]) * 1024 : 0;
    } catch {
      // gone
    }
  }
  return bytes;
};
const spec = (k: number, i: number, kind: string) => ({ instanceId: `cc${k}-${kind}-${i}-${process.pid}`, functionName: "hello", version: "1", artifactDir: resolve("bench/fixtures"), entry: "functions.js", exportName: "hello", config, env: {} });

interface Opened { driver: ProcessDriver; root: string; stateDir: string }
/** One driver per variant, opened (with the cache on, open() produces it first). */
async function openDrivers(rootPrefix: string, prewarm: number): Promise<Opened[]> {
  const out: Opened[] = [];
  for (const [k, v] of variants.entries()) {
    const root = `${rootPrefix}${k}`;
    const stateDir = mkdtempSync(join(tmpdir(), "sbcc-"));
    const driver = createProcessDriver({ runtimePath: resolve("dist/runtime.cjs"), stateDir, cgroupRoot: root, prewarm, codeCache: v.codeCache });
    await driver.reconcile();
    await driver.open();
    out.push({ driver, root, stateDir });
  }
  return out;
}
async function closeDrivers(ds: Opened[]): Promise<void> {
  for (const d of ds) {
    await d.driver.close();
    rmSync(d.stateDir, { recursive: true, force: true });
  }
}
/**
 * RESIDENT instances per driver, alternated, one request each (`fromSlot`: each taken from an idle slot,
 * waiting for one, bounded); the PSS of each after IDLE_MS idle, per driver.
 */
async function idlePss(ds: Opened[], kind: string, fromSlot: boolean): Promise<number[][]> {
  const resident: Array<{ k: number; inst: Instance }> = [];
  for (let i = 0; i < RESIDENT; i++) {
    for (const [k, d] of ds.entries()) {
      if (fromSlot) for (let w = 0; w < 600 && d.driver.prewarm.idleCount() < 1; w++) await delay(25);
      const hits = d.driver.prewarm.counts().hits;
      const inst = await d.driver.start(spec(k, i, kind));
      if (fromSlot && d.driver.prewarm.counts().hits !== hits + 1) throw new Error("a resident instance did not come from a slot");
      const r = await invokeInstance(inst, "/");
      if (r.status !== 200) throw new Error(`resident instance answered ${r.status}`);
      resident.push({ k, inst });
    }
  }
  await delay(IDLE_MS);
  const pss = ds.map((): number[] => []);
  for (const { k, inst } of resident) pss[k]!.push(pssOf(pidsOf(ds[k]!.root, inst.id)));
  await Promise.all(resident.map(({ inst }) => inst.close(1000)));
  return pss;
}

const before = load();
const fresh = await openDrivers("stratus-bench-cc", 0);
const sides: Side[] = fresh.map((d) => ({ ...d, wall: [], cpu: [], own: [], pss: [], slotPss: [], states: new Set<string>() }));

// 1. Fresh starts, alternated.
for (let i = 0; i < STARTS; i++) {
  for (const [k, s] of sides.entries()) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const inst = await s.driver.start(spec(k, i, "fresh"));
    s.wall.push(performance.now() - t0);
    const own = process.cpuUsage(c0);
    s.own.push((own.user + own.system) / 1000);
    s.cpu.push(cpuMs(pidsOf(s.root, inst.id)));
    s.states.add(String(inst.codeCache ?? "not reported"));
    await inst.close(1000);
  }
}

// 2. Resident instances: one request each, then idle; PSS of each.
(await idlePss(fresh, "res", false)).forEach((pss, k) => sides[k]!.pss.push(...pss));
await closeDrivers(fresh);

// 3. The same from pool slots (what most instances start from): a pooled driver per variant.
const pooled = await openDrivers("stratus-bench-ccp", 1);
(await idlePss(pooled, "slot", true)).forEach((pss, k) => sides[k]!.slotPss.push(...pss));
await closeDrivers(pooled);
const after = load();

const med = (xs: number[]): number => pct(sorted(xs), 0.5);
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const [a, b] = sides as [Side, Side];
const row = (label: string, s: Side) =>
  `| ${label} | ${med(s.wall).toFixed(1)} ms | ${med(s.cpu).toFixed(1)} ms | ${med(s.own).toFixed(1)} ms | ${(mean(s.pss) / MiB).toFixed(2)} MiB (${(1024 / (mean(s.pss) / MiB)).toFixed(0)} / GiB) | ${(mean(s.slotPss) / MiB).toFixed(2)} MiB (${(1024 / (mean(s.slotPss) / MiB)).toFixed(0)} / GiB) | ${[...s.states].join(", ")} |`;
const md = `# Runtime code cache — fresh starts and idle memory, A/B in one run

\`npx tsx bench/code-cache.ts ${STARTS} ${RESIDENT}\` · process driver, two drivers side by side (\`codeCache\` off / on),
starts alternated · hello, memory 256 MB · ${STARTS} fresh starts per variant (each closed before the next);
then ${RESIDENT} resident instances per variant, one request each, PSS after ${IDLE_MS / 1000} s idle; then the same with
instances taken from pool slots (a pooled driver per variant).

${machine(before, after)}

| variant | wall to READY p50 | sandbox CPU to READY p50 | driver CPU p50 | PSS per idle instance, fresh start (mean) | PSS per idle instance, from a slot (mean) | READY said |
|---|---|---|---|---|---|---|
${row(variants[0].label, a)}
${row(variants[1].label, b)}

Ratios cache / source: wall **${(med(b.wall) / med(a.wall)).toFixed(2)}**, sandbox CPU **${(med(b.cpu) / med(a.cpu)).toFixed(2)}**, PSS fresh **${(mean(b.pss) / mean(a.pss)).toFixed(3)}**, PSS from a slot **${(mean(b.slotPss) / mean(a.slotPss)).toFixed(3)}**.
`;
writeResult("code-cache", md);
process.stdout.write(md);
