// A/B of the instance runtime alone on its Unix socket: CPU time of the runtime process per request
// (utime+stime from /proc, the figure least moved by other load) and median latency, one connection,
// for a GET, a small JSON POST read as req.body, and a 64 KiB body the handler never reads.
// Usage: npm run build && node bench/runtime-body.mjs [runtimeA.cjs] [runtimeB.cjs] [requests=3000]
// (A defaults to this checkout's dist/runtime.cjs; with B given, both run interleaved, 3 rounds each.)
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "undici";

const root = fileURLToPath(new URL("..", import.meta.url));
const runtimes = [process.argv[2] ?? join(root, "dist/runtime.cjs"), process.argv[3]].filter(Boolean);
const requests = Number(process.argv[4] ?? 3000);
const dir = mkdtempSync(join(tmpdir(), "stratus-bench-body-"));
const entry = join(dir, "index.cjs");
writeFileSync(entry, "exports.get = (req, res) => res.send('ok');\nexports.json = (req, res) => res.json(req.body);\nexports.unread = (req, res) => res.send('ok');\n");
const ticks = 100; // USER_HZ
const cpuMs = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return ((Number(f[11]) + Number(f[12])) / ticks) * 1000;
};
const cases = {
  get: { method: "GET" },
  json: { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "x".repeat(60), n: [1, 2, 3] }) },
  unread: { method: "POST", headers: { "content-type": "application/octet-stream" }, body: Buffer.alloc(64 * 1024, 1) },
};

async function run(runtime, exportName, i) {
  const socket = join(dir, `${exportName}-${i}.sock`);
  const child = spawn(process.execPath, [runtime], {
    env: { PATH: "/usr/bin:/bin", STRATUS_ENTRY: entry, STRATUS_EXPORT: exportName, STRATUS_SOCKET: socket, STRATUS_CONFIG: JSON.stringify({ timeout: 10000, memory: 256, concurrency: 1, maxBodyBytes: 6291456, env: {} }) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise((resolve) => child.stdout.on("data", (d) => String(d).includes("stratus:ready") && resolve()));
  const client = new Client("http://localhost", { socketPath: socket });
  const c = cases[exportName];
  const one = async () => {
    const res = await client.request({ path: "/", ...c });
    await res.body.arrayBuffer();
  };
  for (let k = 0; k < 300; k++) await one(); // warm-up
  const cpu0 = cpuMs(child.pid);
  const lat = [];
  for (let k = 0; k < requests; k++) {
    const t = performance.now();
    await one();
    lat.push(performance.now() - t);
  }
  const cpu = cpuMs(child.pid) - cpu0;
  await client.close();
  child.kill("SIGKILL");
  lat.sort((a, b) => a - b);
  return { cpuUs: (cpu * 1000) / requests, p50: lat[Math.floor(lat.length / 2)] };
}

const rows = [];
for (const name of Object.keys(cases)) {
  const acc = runtimes.map(() => ({ cpu: [], p50: [] }));
  for (let round = 0; round < 3; round++) {
    for (const [i, rt] of runtimes.entries()) {
      const r = await run(rt, name, `${round}-${i}`);
      acc[i].cpu.push(r.cpuUs);
      acc[i].p50.push(r.p50);
    }
  }
  const med = (xs) => xs.sort((a, b) => a - b)[1];
  rows.push([name, ...acc.map((a) => `${med(a.cpu).toFixed(1)} µs CPU, p50 ${med(a.p50).toFixed(3)} ms`)]);
}
console.log(`load ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}; ${requests} requests × 3 rounds, medians`);
console.log(`| case | ${runtimes.map((r, i) => (i === 0 ? "A " : "B ") + r).join(" | ")} |`);
for (const r of rows) console.log(`| ${r.join(" | ")} |`);
rmSync(dir, { recursive: true, force: true });
