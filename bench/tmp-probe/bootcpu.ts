// Whole-machine CPU per boot (/proc/stat busy jiffies), fresh starts and pool slot boots, sequential.
import { readFileSync, mkdtempSync } from "node:fs";
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { createProcessDriver } from "../../src/sandbox/process/process-driver";
import { parseFunctionConfig } from "../../src/shared/function-config";
const busy = () => { const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.split(/\s+/).slice(1).map(Number); return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!) * 10; };
const N = Number(process.argv[2] ?? 10);
const POOL = process.env.POOL === "1";
const config = parseFunctionConfig("hello", {});
const spec = (i: number) => ({ instanceId: `bc-${i}-${process.pid}`, functionName: "hello", version: "1", artifactDir: resolve("bench/fixtures"), entry: "functions.js", exportName: "hello", config, env: {} });
const idle0 = busy(); const t0 = Date.now(); await new Promise((r) => setTimeout(r, 3000)); const idlePerMs = (busy() - idle0) / (Date.now() - t0);
const d = createProcessDriver({ runtimePath: resolve(process.env.RT ?? "dist/runtime.cjs"), stateDir: mkdtempSync(join(tmpdir(), "sbc-")), cgroupRoot: "stratus-bench-bootcpu", prewarm: 0 });
await d.open();
let b0 = busy(), w0 = Date.now();
for (let i = 0; i < N; i++) { const inst = await d.start(spec(i)); await inst.close(1000); }
await new Promise((r) => setTimeout(r, 500));
const fresh = (busy() - b0 - idlePerMs * (Date.now() - w0)) / N;
await d.close();
console.log(`idle ${(idlePerMs * 1000).toFixed(0)} ms/s; fresh start+close: ${fresh.toFixed(0)} ms CPU per boot (N=${N})`);
