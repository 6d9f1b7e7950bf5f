// Warm latency of a hello function: through the gateway vs. straight to an instance's Unix socket.
// Usage: npm run build && npx tsx bench/gateway-latency.ts [requests=2000]
// One connection, sequential requests, after a warm-up; prints p50/p90/p99 in µs. Needs root + bubblewrap.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { AddressInfo } from "node:net";
import { Client } from "undici";
import { createProcessDriver } from "../src/sandbox/process/process-driver";
import { parseFunctionConfig } from "../src/shared/function-config";
import { createSilentLogger } from "../src/shared/logger";
import { createGateway } from "../src/gateway/gateway";

const N = Number(process.argv[2] ?? 2000);
const stateDir = mkdtempSync(join(tmpdir(), "sgb-"));
const driver = createProcessDriver({ runtimePath: resolve("dist/runtime.cjs"), stateDir, cgroupRoot: "stratus-bench" });
void driver.open(); // nothing runs before open(); the pool starts filling now
const dep = {
  name: "hello", version: "1", artifactDir: resolve("test/fixtures/gateway"), entry: "hello.js", exportName: "hello",
  config: parseFunctionConfig("hello", { timeout: 10_000 }), env: {},
};
const gateway = createGateway({ driver, logger: createSilentLogger() });
gateway.setFunction(dep);
await new Promise<void>((r) => gateway.server.listen(0, "127.0.0.1", r));
const port = (gateway.server.address() as AddressInfo).port;
const direct = await driver.start({ ...dep, instanceId: "benchdirect", functionName: "hello" });

async function measure(client: Client, path: string): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < N + 200; i++) {
    const t0 = performance.now();
    const r = await client.request({ method: "GET", path });
    await r.body.text();
    if (r.statusCode !== 200) throw new Error(`status ${r.statusCode}`);
    if (i >= 200) times.push((performance.now() - t0) * 1000);
  }
  return times.sort((a, b) => a - b);
}
const pct = (t: number[], p: number) => Math.round(t[Math.min(t.length - 1, Math.floor(t.length * p))]!);

const viaGateway = new Client(`http://127.0.0.1:${port}`);
const viaSocket = new Client("http://localhost", { socketPath: direct.endpoint.socketPath });
// Interleave two rounds each so background load affects both alike.
const g: number[] = [];
const d: number[] = [];
for (let round = 0; round < 2; round++) {
  d.push(...(await measure(viaSocket, "/")));
  g.push(...(await measure(viaGateway, "/fn/hello")));
}
g.sort((a, b) => a - b);
d.sort((a, b) => a - b);
console.log(`requests per path: ${g.length}`);
console.log(`direct to socket: p50 ${pct(d, 0.5)} µs, p90 ${pct(d, 0.9)} µs, p99 ${pct(d, 0.99)} µs`);
console.log(`through gateway:  p50 ${pct(g, 0.5)} µs, p90 ${pct(g, 0.9)} µs, p99 ${pct(g, 0.99)} µs`);
console.log(`gateway hop p50: +${pct(g, 0.5) - pct(d, 0.5)} µs`);
await viaGateway.close();
await viaSocket.close();
await gateway.close();
await direct.destroy();
await driver.close();
rmSync(stateDir, { recursive: true, force: true });
