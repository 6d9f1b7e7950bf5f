// Density with and without KSM, sandboxed, in one run: two gateways side by side (process driver, no pool),
// one with the driver's `ksm` option (platform setting process.ksm), one without; K hello instances each,
// started alternately (4 at a time), each idle after one request. ksmd runs at the given rate for the run
// (bench/lib/ksmd.ts saves the host's knobs and restores them). Every 10 s of the idle period: PSS summed
// over every process of every instance (bwrap + its init + node, /proc/<pid>/smaps_rollup) per gateway, the
// pages KSM merged for them (/proc/<pid>/ksm_merging_pages), ksmd's CPU and the host's counters.
// Usage: npm run build && npx tsx bench/density-ksm.ts [K=30] [pages_to_scan=1000] [sleep_millisecs=20]
//   BENCH_IDLE_MS (default 120000). Root only. Writes bench/results/density-ksm-<pages>-<sleep>.md. ~3–4 min.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { spawnGateway, type BenchGateway } from "./lib/spawn-gateway";
import { load, machine, writeResult } from "./lib/report";
import { ksmCounters, ksmdCpuSeconds, ksmdOn } from "./lib/ksmd";

const K = Number(process.argv[2] ?? 30);
const PAGES = process.argv[3] ?? "1000";
const SLEEP = process.argv[4] ?? "20";
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 120_000);
const MiB = 1024 * 1024;
const ROOTS = { off: `stratus-bench-dksm-off-${process.pid}`, on: `stratus-bench-dksm-on-${process.pid}` } as const;

function kbOf(text: string, key: string): number {
  return Number(new RegExp(`^${key}:\\s+(\\d+) kB$`, "m").exec(text)?.[1] ?? 0) * 1024;
}

/** PSS and merged pages summed over the instances' processes under one cgroup root. */
function measure(root: string): { instances: number; processes: number; pss: number; ksm: number; mergeAny: number } {
  const v1 = join("/sys/fs/cgroup/memory", root);
  const dir = existsSync(v1) ? v1 : join("/sys/fs/cgroup", root);
  const out = { instances: 0, processes: 0, pss: 0, ksm: 0, mergeAny: 0 };
  for (const id of readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name)) {
    out.instances++;
    for (const pid of readFileSync(join(dir, id, "cgroup.procs"), "utf8").split("\n").filter(Boolean)) {
      try {
        out.pss += kbOf(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"), "Pss");
        const stat = readFileSync(`/proc/${pid}/ksm_stat`, "utf8");
        out.ksm += Number(/^ksm_merging_pages (\d+)$/m.exec(stat)?.[1] ?? 0) * 4096;
        if (/^ksm_merge_any: yes$/m.test(stat)) out.mergeAny++;
        out.processes++;
      } catch {
        // exited meanwhile
      }
    }
  }
  return out;
}

const before = load();
const { saved, restore } = ksmdOn(PAGES, SLEEP);
const names = Array.from({ length: K }, (_, i) => `k-${i}`);
const fns = names.map((name) => ({ name, dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: { idleTimeout: 600_000 } }));
const gws: Record<"off" | "on", BenchGateway> = {
  off: await spawnGateway({ prewarm: 0, cgroupRoot: ROOTS.off, functions: fns }),
  on: await spawnGateway({ prewarm: 0, cgroupRoot: ROOTS.on, functions: fns, ksm: true }),
};
const cpu0 = ksmdCpuSeconds();
const t0 = Date.now();
const rows: string[] = [];
try {
  for (let i = 0; i < K; i += 4) {
    for (const side of ["off", "on"] as const) {
      await Promise.all(names.slice(i, i + 4).map(async (n) => {
        const r = await fetch(`http://127.0.0.1:${gws[side].port}/fn/${n}/`);
        const body = await r.text();
        if (r.status !== 200 || body !== "Hello") throw new Error(`${side} ${n}: ${r.status} ${body}`);
      }));
    }
  }
  const started = Date.now();
  for (let waited = 0; waited <= IDLE_MS; waited += 10_000) {
    if (waited > 0) await new Promise((r) => setTimeout(r, 10_000));
    const off = measure(ROOTS.off);
    const on = measure(ROOTS.on);
    const c = ksmCounters();
    const perOff = off.pss / off.instances / MiB;
    const perOn = on.pss / on.instances / MiB;
    rows.push(`| ${Math.round((Date.now() - started) / 1000)} | ${perOff.toFixed(2)} | ${perOn.toFixed(2)} | ${(100 * (1 - perOn / perOff)).toFixed(1)} % | ${(on.ksm / on.instances / MiB).toFixed(2)} | ${on.mergeAny}/${on.processes} · ${off.mergeAny}/${off.processes} | ${Math.floor(1024 / perOff)} → **${Math.floor(1024 / perOn)}** | ${(ksmdCpuSeconds() - cpu0).toFixed(1)} | ${c.sharing} / ${c.shared} |`);
    console.log(rows.at(-1));
  }
} finally {
  await Promise.all([gws.off.close(), gws.on.close()]);
  restore();
}
const wall = (Date.now() - t0) / 1000;
const cpu = ksmdCpuSeconds() - cpu0;
const after = load();
writeResult(`density-ksm-${PAGES}-${SLEEP}`, `# Density with and without KSM (process driver, sandboxed), one run

\`npx tsx bench/density-ksm.ts ${K} ${PAGES} ${SLEEP}\` · two gateways side by side, ${K} hello instances each (no pool),
started alternately, each idle after one request; one gateway's driver has \`ksm\` (platform setting
\`process.ksm\`). ksmd ran at pages_to_scan ${PAGES}, sleep_millisecs ${SLEEP} for the run (host's settings
${JSON.stringify(saved)}, restored after). PSS summed over every process of every instance (bwrap, its init, node).

${machine(before, after)}

| s idle | PSS / instance, ksm off (MiB) | ksm on (MiB) | saved | merged / instance (MiB) | processes with merge-any: on · off | per GiB off → on | ksmd CPU (s, cumulative) | host pages_sharing / pages_shared |
|---|---|---|---|---|---|---|---|---|
${rows.join("\n")}

ksmd used **${cpu.toFixed(1)} s of CPU over ${wall.toFixed(0)} s** (${((100 * cpu) / wall).toFixed(1)} % of one core) at this rate,
and keeps scanning the mergeable memory as long as it runs (smart_scan skips pages that did not change).
`);
console.log(`ksmd CPU ${cpu.toFixed(1)} s over ${wall.toFixed(0)} s`);
