/**
 * The load loops the latency and throughput benchmarks share: a bare Node server to compare with, sequential
 * requests at one connection, autocannon at 50 connections, and warming a function's instances. Every loop is
 * bounded (a request count, a duration or a deadline).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import autocannon from "autocannon";
import { Client, Pool } from "undici";
import type { BenchGateway } from "./spawn-gateway";

/** Starts bench/fixtures/bare-server.cjs on `listenOn` (a port, 0 for any, or a socket path) and waits for its line. */
export async function spawnBareServer(listenOn: string, extraArgs: readonly string[] = []): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, ["bench/fixtures/bare-server.cjs", listenOn, ...extraArgs], { stdio: ["ignore", "pipe", "inherit"] });
  const [line] = (await once(child.stdout!, "data")) as [Buffer];
  return { child, port: Number(/listening (\d+)/.exec(line.toString())?.[1] ?? NaN) };
}

/** `n` sequential GETs of `url` over one connection after `warmup` more, each checked to answer 200 "Hello": times in µs. */
export async function sequential(url: string, n: number, warmup = 200): Promise<number[]> {
  const u = new URL(url);
  const client = new Client(u.origin, { pipelining: 1 });
  const times: number[] = [];
  try {
    for (let i = 0; i < n + warmup; i++) {
      const t0 = performance.now();
      const r = await client.request({ method: "GET", path: u.pathname });
      const body = await r.body.text();
      if (r.statusCode !== 200 || body !== "Hello") throw new Error(`${url}: ${r.statusCode} ${body}`);
      if (i >= warmup) times.push((performance.now() - t0) * 1000);
    }
  } finally {
    await client.close();
  }
  return times;
}

/** 50 connections for `durationS` (autocannon): mean req/s, errors (+ timeouts), non-2xx, p99 ms. */
export async function throughput(url: string, durationS: number): Promise<{ rps: number; errors: number; non2xx: number; p99: number }> {
  const r = await autocannon({ url, connections: 50, duration: durationS, pipelining: 1 });
  return { rps: r.requests.average, errors: r.errors + r.timeouts, non2xx: r.non2xx, p99: r.latency.p99 };
}

/**
 * Bursts of `want` parallel requests to `fn` until the node runs `want` ready instances of it, or the deadline.
 * `required`: throw when the deadline passes (else return: the pool may rightly decide to run fewer).
 */
export async function warmInstances(gw: BenchGateway, fn: string, want: number, o: { timeoutMs?: number; required?: boolean } = {}): Promise<void> {
  const client = new Pool(`http://127.0.0.1:${gw.port}`, { connections: want, pipelining: 1 });
  const deadline = Date.now() + (o.timeoutMs ?? 30_000);
  try {
    while (Date.now() < deadline) {
      const st = (await gw.stats()).gateway[fn];
      if (st !== undefined && st.ready >= want && st.starting === 0) return;
      await Promise.all(Array.from({ length: want }, async () => (await client.request({ method: "GET", path: `/fn/${fn}/` })).body.text()));
      await new Promise((r) => setTimeout(r, 20));
    }
    if (o.required !== false) throw new Error(`${fn}: could not warm ${want} instances in ${Math.round((o.timeoutMs ?? 30_000) / 1000)} s`);
  } finally {
    await client.close();
  }
}
