// Gateway CPU per request: the CPU time (/proc/<pid>/stat, utime + stime) the gateway process spends per
// request, which moves much less with background load than latency or req/s do, so it suits A/B runs on
// the shared machine. Sequential requests on 1 connection (hello, one warm instance), then 50 connections
// (autocannon) to one instance at concurrency 50, to the default config as wide as the pool runs it, and to
// the default config with ten warm instances forced (minInstances 10: what this bench measured as "default"
// before round four, when the pool scaled a hot hello to maxInstances by itself).
// Usage: npm run build && npx tsx bench/gateway-cpu.ts   (R=rounds, default 2; D=seconds per 50-connection run, default 4)
// Prints; writes nothing. Add BENCH_GATEWAY_PROF=<dir> for a CPU profile, BENCH_OBSERVE=1 for the observer path.
import { readFileSync } from "node:fs";
import autocannon from "autocannon";
import { Client, Pool } from "undici";
import { spawnGateway } from "./lib/spawn-gateway";
/** CPU time of a process so far, µs (fields 14 and 15 of /proc/<pid>/stat, in 100 Hz clock ticks). */
function cpu(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(f[11]) + Number(f[12])) * 10_000;
}
const gw = await spawnGateway({
  prewarm: 0, cgroupRoot: "stratus-bench-cpu",
  functions: [
    { name: "hello", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: {} },
    { name: "hello-shared", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: { concurrency: 50, maxInstances: 1 } },
    { name: "hello-min10", dir: "bench/fixtures", file: "functions.js", exportName: "hello", config: { minInstances: 10 } },
  ],
});
/** Starts `want` instances of `fn` and waits until they are ready (bursts of parallel requests). */
async function warm(fn: string, want: number): Promise<void> {
  const client = new Pool(`http://127.0.0.1:${gw.port}`, { connections: want });
  for (let i = 0; i < 1500; i++) {
    const st = (await gw.stats()).gateway[fn]!;
    if (st.ready >= want && st.starting === 0) break;
    await Promise.all(Array.from({ length: want }, async () => { const r = await client.request({ method: "GET", path: `/fn/${fn}/` }); await r.body.text(); }));
    await new Promise((r) => setTimeout(r, 20));
  }
  await client.close();
}
const pid = gw.child.pid!;
const out: string[] = [];
for (let round = 0; round < Number(process.env.R ?? 2); round++) {
  {
    const c = new Client(`http://127.0.0.1:${gw.port}`, { pipelining: 1 });
    const t: number[] = [];
    const N = 3000;
    const c0 = cpu(pid);
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      const r = await c.request({ method: "GET", path: "/fn/hello/" });
      await r.body.text();
      t.push(performance.now() - t0);
    }
    const c1 = cpu(pid);
    t.sort((a, b) => a - b);
    out.push(`seq p50 ${(t[t.length >> 1]! * 1000).toFixed(0)} µs, gateway cpu/req ${((c1 - c0) / N).toFixed(0)} µs`);
    await c.close();
  }
  for (const fn of ["hello-shared", "hello", "hello-min10"]) {
    if (fn === "hello") await autocannon({ url: `http://127.0.0.1:${gw.port}/fn/${fn}/`, connections: 50, duration: 2 }); // the pool sizes itself
    else await warm(fn, fn === "hello-min10" ? 10 : 1);
    const c0 = cpu(pid);
    const r = await autocannon({ url: `http://127.0.0.1:${gw.port}/fn/${fn}/`, connections: 50, duration: Number(process.env.D ?? 4) });
    const c1 = cpu(pid);
    out.push(`${fn} c50 rps ${Math.round(r.requests.average)}, gateway cpu/req ${((c1 - c0) / r.requests.total).toFixed(0)} µs (non2xx ${r.non2xx}, instances ${(await gw.stats()).gateway[fn]!.total})`);
  }
}
console.log(out.join("\n"));
await gw.close();
