// Docker driver start cost: create + start + READY (the driver's startMs) for N sequential instances,
// with the functions network and with `network: "none"`, and the first request after READY.
// Usage: bash scripts/services.sh && npm run build && npx tsx bench/docker-start.ts [N=10]
import { request } from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDockerDriver } from "../src/sandbox/docker/docker-driver";
import { parseFunctionConfig } from "../src/shared/function-config";

const n = Number(process.argv[2] ?? 10);
const dir = mkdtempSync(join(tmpdir(), "stratus-bench-"));
writeFileSync(join(dir, "index.js"), `module.exports.hello = { func: async (req, res) => res.send("Hello") };`);
const driver = createDockerDriver({ runtimePath: join(process.cwd(), "dist", "runtime.cjs"), nodeId: `bench-${process.pid}` });
void driver.open(); // nothing runs before open(); the pool starts filling now
const get = (socketPath: string) =>
  new Promise<void>((resolve, reject) => request({ socketPath, path: "/" }, (r) => r.resume().on("end", resolve)).on("error", reject).end());
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const base = { functionName: "benchHello", version: "1", artifactDir: dir, entry: "index.js", exportName: "hello", env: {} };
const { image } = await driver.prepare({ ...base, instanceId: "prep", config: parseFunctionConfig("benchHello", {}) });
for (const network of ["outbound", "none"] as const) {
  const ready: number[] = [];
  const first: number[] = [];
  for (let i = 0; i < n; i++) {
    const inst = await driver.start({ ...base, instanceId: `bench-${process.pid}-${network}-${i}`, config: parseFunctionConfig("benchHello", { network }), image });
    const t = performance.now();
    await get(inst.endpoint.socketPath);
    first.push(performance.now() - t);
    ready.push(inst.startMs);
    await inst.destroy();
  }
  console.log(`network=${network} n=${n}: start→READY median ${median(ready).toFixed(0)} ms (min ${Math.min(...ready).toFixed(0)}, max ${Math.max(...ready).toFixed(0)}); first request ${median(first).toFixed(1)} ms`);
}
await driver.close();
rmSync(dir, { recursive: true, force: true });
