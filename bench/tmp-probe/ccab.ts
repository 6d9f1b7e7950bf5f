// A/B: fresh-start CPU (sandbox processes' schedstat at READY + driver's own) and wall, two runtime files alternated.
import { readFileSync, readdirSync, mkdtempSync } from "node:fs";
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { createProcessDriver } from "../../src/sandbox/process/process-driver";
import { parseFunctionConfig } from "../../src/shared/function-config";
const N = Number(process.argv[2] ?? 12);
const files = (process.env.RTS ?? "dist/runtime.cjs").split(",");
const config = parseFunctionConfig("hello", { timeout: 10_000 });
const drivers = await Promise.all(files.map(async (f, k) => { const d = createProcessDriver({ runtimePath: resolve(f.replace(/@nocc$/, "")), codeCache: !f.endsWith("@nocc"), stateDir: mkdtempSync(join(tmpdir(), "sab-")), cgroupRoot: `stratus-bench-ccab${k}`, prewarm: 0 }); await d.open(); return d; }));
const cpuOf = (k: number, id: string): number => { let ns = 0; for (const pid of readFileSync(`/sys/fs/cgroup/pids/stratus-bench-ccab${k}/${id}/cgroup.procs`, "utf8").split("\n").filter(Boolean)) { try { for (const t of readdirSync(`/proc/${pid}/task`)) ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]); } catch {} } return ns / 1e6; };
const res = files.map(() => ({ wall: [] as number[], cpu: [] as number[], own: [] as number[] }));
for (let i = 0; i < N; i++) for (let k = 0; k < files.length; k++) {
  const c0 = process.cpuUsage(); const t0 = performance.now();
  const inst = await drivers[k]!.start({ instanceId: `ab${k}-${i}-${process.pid}`, functionName: "hello", version: "1", artifactDir: resolve("bench/fixtures"), entry: "functions.js", exportName: "hello", config, env: {} }); if (i === 0) console.log(files[k], "codeCache:", inst.codeCache);
  const wall = performance.now() - t0; const own = process.cpuUsage(c0);
  res[k]!.wall.push(wall); res[k]!.cpu.push(cpuOf(k, inst.id)); res[k]!.own.push((own.user + own.system) / 1000);
  await inst.close(1000);
}
const med = (x: number[]) => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)]!;
files.forEach((f, k) => console.log(f.padEnd(40), `wall ${med(res[k]!.wall).toFixed(1)} ms, sandbox CPU ${med(res[k]!.cpu).toFixed(1)} ms, driver CPU ${med(res[k]!.own).toFixed(1)} ms`));
for (const d of drivers) await d.close();
