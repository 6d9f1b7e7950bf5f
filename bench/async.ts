// Async invocation: enqueue rate (202s per second, 16 clients) and end-to-end latency (enqueue → the
// handler starts) p50/p99 at a low rate, for the embedded store (SQLite, synchronous = FULL) and for
// PostgreSQL (a private server started like the tests do, test/helpers/postgres-server.ts). The whole
// platform runs in this process (createPlatform, process driver, port 0); the load is loopback only.
//
// `npx tsx bench/async.ts [jobs=1000]` (root, bubblewrap, `npm run build`) → bench/results/async.md.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createPlatform } from "../src/up/platform";
import { resolvePlatformConfig } from "../src/shared/platform-config";
import { createSilentLogger } from "../src/shared/logger";
import { makeTarGz } from "../test/helpers/make-tar-gz";
import { startPostgres } from "../test/helpers/postgres-server";
import { load, machine, pct, sorted, writeResult } from "./lib/report";

const JOBS = Number(process.argv[2] ?? 1000);
const CLIENTS = 16;
const LATENCY_JOBS = 200;
/** Gap between latency probes, ms: low enough a rate that the figure is the pipeline, not a backlog. */
const LATENCY_GAP_MS = 20;

const SOURCE = `module.exports.sink = { func: (req, res) => res.json({ t: Date.now() }), config: { asyncConcurrency: 8, concurrency: 8, maxInstances: 1 } };`;

interface Row { store: string; enqueuePerS: number; drainS: number; p50: number; p90: number; p99: number; max: number }

async function measure(label: string, store: string): Promise<Row> {
  const root = await mkdtemp(join(tmpdir(), "st-bench-async-"));
  const config = resolvePlatformConfig({ flags: { port: 0, dataDir: join(root, "d"), logLevel: "silent", store, "events.pollIntervalMs": 500 } });
  const platform = createPlatform(config, { logger: createSilentLogger(), runtimePath: resolve("dist/runtime.cjs") });
  const { url, adminToken } = await platform.listen();
  try {
    const archive = await makeTarGz([{ name: "package.json", body: JSON.stringify({ name: "b", main: "index.js" }) }, { name: "index.js", body: SOURCE }]);
    const d = await fetch(`${url}/api/v1/deployments`, { method: "POST", headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/gzip" }, body: archive });
    if (!(await d.text()).includes('"type":"result"')) throw new Error("deploy failed");
    const post = async (i: number) => {
      const r = await fetch(`${url}/fn/sink`, { method: "POST", headers: { "x-stratus-invocation-type": "async" }, body: String(i) });
      if (r.status !== 202) throw new Error(`enqueue answered ${r.status}`);
      return ((await r.json()) as { invocationId: string }).invocationId;
    };
    const status = async (id: string) =>
      (await (await fetch(`${url}/api/v1/invocations/${id}`, { headers: { authorization: `Bearer ${adminToken}` } })).json()) as { status: string; result: { body: string } | null };
    // Warm the instance.
    const warm = await post(-1);
    for (let i = 0; i < 200 && (await status(warm)).status !== "succeeded"; i++) await new Promise((r) => setTimeout(r, 50));

    // Enqueue rate: JOBS posts from CLIENTS clients; then wait until all ran.
    const ids: string[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: CLIENTS }, async () => {
      for (let i = next++; i < JOBS; i = next++) ids.push(await post(i));
    }));
    const enqueueS = (performance.now() - t0) / 1000;
    for (let i = 0; i < 600; i++) {
      const c = await Promise.all(ids.slice(-20).map(status));
      if (c.every((s) => s.status === "succeeded")) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const drainS = (performance.now() - t0) / 1000;

    // Latency: one probe every LATENCY_GAP_MS; handler start (its Date.now()) minus the moment before the POST.
    const probes: Array<{ id: string; sent: number }> = [];
    for (let i = 0; i < LATENCY_JOBS; i++) {
      const sent = Date.now();
      probes.push({ id: await post(100_000 + i), sent });
      await new Promise((r) => setTimeout(r, LATENCY_GAP_MS));
    }
    const lat: number[] = [];
    for (const p of probes) {
      let s = await status(p.id);
      for (let i = 0; i < 100 && s.status !== "succeeded"; i++) {
        await new Promise((r) => setTimeout(r, 50));
        s = await status(p.id);
      }
      if (s.result === null) throw new Error(`probe ${p.id} did not finish`);
      lat.push((JSON.parse(s.result.body) as { t: number }).t - p.sent);
    }
    const l = sorted(lat);
    return { store: label, enqueuePerS: JOBS / enqueueS, drainS, p50: pct(l, 0.5), p90: pct(l, 0.9), p99: pct(l, 0.99), max: l[l.length - 1] ?? NaN };
  } finally {
    await platform.close();
    await rm(root, { recursive: true, force: true });
  }
}

const before = load();
const rows: Row[] = [await measure("embedded (SQLite, synchronous = FULL)", "")];
const pg = await startPostgres();
try {
  rows.push(await measure("PostgreSQL (same machine, FOR UPDATE SKIP LOCKED)", await pg.createDatabase("bench_async")));
} finally {
  await pg.stop();
}
const after = load();
writeResult("async", [
  "# Async invocation: enqueue rate and end-to-end latency",
  "",
  `\`npx tsx bench/async.ts ${JOBS}\`: the whole platform in one process (process driver), one function answering at once`,
  `(asyncConcurrency 8 on one instance). Enqueue: ${JOBS} \`POST /fn/sink\` with \`x-stratus-invocation-type: async\` from ${CLIENTS}`,
  "clients, each 202 only after the durable commit; drain: until the last of them ran. Latency: enqueue → handler start",
  `(the handler's Date.now() minus the client's just before the POST) over ${LATENCY_JOBS} probes ${LATENCY_GAP_MS} ms apart, so the`,
  "worker is idle when each arrives (the enqueue wakes it; no poll wait).",
  "",
  "| store | enqueue (202/s) | enqueue + run all (s) | latency p50 (ms) | p90 | p99 | max |",
  "|---|---|---|---|---|---|---|",
  ...rows.map((r) => `| ${r.store} | ${r.enqueuePerS.toFixed(0)} | ${r.drainS.toFixed(1)} | ${r.p50} | ${r.p90} | ${r.p99} | ${r.max} |`),
  "",
  machine(before, after),
].join("\n"));
