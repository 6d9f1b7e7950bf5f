// Time from spawn to the READY line of dist/runtime.cjs serving examples/hello, against `node -e 0`
// in the same run (machines are noisy). Usage: npm run build && node bench/runtime-start.mjs [runs=15]
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const runs = Number(process.argv[2] ?? 15);
const root = fileURLToPath(new URL("..", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "stratus-bench-"));
const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const env = (i) => ({
  PATH: "/usr/bin:/bin",
  STRATUS_ENTRY: join(root, "examples/hello/index.js"),
  STRATUS_EXPORT: "myFunction",
  STRATUS_SOCKET: join(dir, `s${i}.sock`),
  STRATUS_CONFIG: JSON.stringify({ timeout: 10000, memory: 256, concurrency: 1, maxBodyBytes: 6291456, env: {} }),
});
const ready = (i) =>
  new Promise((resolve) => {
    const t0 = performance.now();
    const c = spawn(process.execPath, [join(root, "dist/runtime.cjs")], { env: env(i), stdio: ["ignore", "pipe", "inherit"] });
    c.stdout.on("data", (d) => {
      if (String(d).includes("stratus:ready")) {
        resolve(performance.now() - t0);
        c.kill("SIGKILL");
      }
    });
  });
const base = [];
const rt = [];
for (let i = 0; i < runs; i++) {
  let t0 = performance.now();
  spawnSync(process.execPath, ["-e", "0"], { env: { PATH: "/usr/bin:/bin" } });
  base.push(performance.now() - t0);
  rt.push(await ready(i));
}
rmSync(dir, { recursive: true, force: true });
const b = median(base);
const r = median(rt);
console.log(`node -e 0: ${b.toFixed(1)} ms; runtime to READY: ${r.toFixed(1)} ms; runtime's own cost: ${(r - b).toFixed(1)} ms (medians of ${runs})`);
