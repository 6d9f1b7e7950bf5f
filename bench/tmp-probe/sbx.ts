// Where a sandbox launch's CPU goes: variants of the real command line, CPU from a cpuacct cgroup.
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { join, resolve } from "node:path";
import { buildSandboxCommand } from "../../src/sandbox/process/bwrap-args";
import { buildSeccompFilter, encodeSeccompFilter } from "../../src/sandbox/process/seccomp";
const CG = "/sys/fs/cgroup/cpuacct/sbxprobe";
mkdirSync(CG, { recursive: true });
const stateDir = mkdtempSync("/tmp/sbxp-");
const seccompPath = join(stateDir, "seccomp.bpf");
writeFileSync(seccompPath, encodeSeccompFilter(buildSeccompFilter()));
const usage = () => Number(readFileSync(join(CG, "cpuacct.usage"), "utf8")) / 1e6;
const run = (file: string, args: string[]) => new Promise<number>((res) => {
  const t0 = performance.now();
  const c = spawn(file, args, { stdio: ["ignore", "ignore", "inherit"], env: { PATH: "/usr/bin:/bin" } });
  c.on("exit", () => res(performance.now() - t0));
});
const base = (tail: string[], over: Record<string, unknown> = {}) => {
  const [file, args] = buildSandboxCommand({ bwrapPath: "/usr/bin/bwrap", setprivPath: "/usr/bin/setpriv", nodePath: process.execPath, runtimePath: resolve("dist/runtime.cjs"), artifactDir: resolve("bench/fixtures"), socketDir: stateDir, uid: 60500, gid: 60500, procsFiles: [join(CG, "cgroup.procs")], network: "none", tmpDir: stateDir, seccompPath, maxOpenFiles: 1024, nodeArgs: [], ...over } as never);
  const rt = args.lastIndexOf(process.execPath);
  return [file, [...args.slice(0, rt), ...tail]] as [string, string[]];
};
const [f0, a0] = base(["/bin/true"]);
const shIdx = a0.indexOf("/usr/bin/bwrap");
const bw = a0.slice(shIdx + 1);
const setprivAt = bw.indexOf("/usr/bin/setpriv");
const variants: Record<string, [string, string[]]> = {
  "full, /bin/true": [f0, a0],
  "full, node -e 0": base([process.execPath, "-e", "0"]),
  "no setpriv": [f0, [...a0.slice(0, shIdx + 1), ...bw.slice(0, setprivAt), "/bin/true"]],
  "no seccomp": [f0, a0.filter((x, i) => !(x === "--seccomp" || a0[i - 1] === "--seccomp"))],
  "bwrap alone, same args (no sh)": ["/bin/sh", ["-c", 'exec "$@" 9<' + seccompPath, "sh", "/usr/bin/bwrap", ...bw]],
  "bwrap minimal": ["/usr/bin/bwrap", ["--unshare-pid", "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "/bin/true"]],
  "bwrap minimal, no --proc --dev": ["/usr/bin/bwrap", ["--unshare-pid", "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin", "/bin/true"]],
  "/bin/true": ["/bin/true", []],
  "node -e 0": [process.execPath, ["-e", "0"]],
};
// join the probe cgroup ourselves so spawned children land in it
writeFileSync(join(CG, "cgroup.procs"), String(process.pid));
const N = Number(process.argv[2] ?? 20);
const res: Record<string, { wall: number[]; cpu: number[] }> = {};
for (let i = 0; i < N; i++) for (const [k, [f, a]] of Object.entries(variants)) {
  const u0 = usage(); const me0 = process.cpuUsage();
  const w = await run(f, a);
  const me = process.cpuUsage(me0);
  (res[k] ??= { wall: [], cpu: [] }).wall.push(w);
  res[k].cpu.push(usage() - u0 - (me.user + me.system) / 1000);
}
writeFileSync("/sys/fs/cgroup/cpuacct/cgroup.procs", String(process.pid));
const med = (x: number[]) => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)]!;
for (const [k, v] of Object.entries(res)) console.log(k.padEnd(34), "wall", med(v.wall).toFixed(1), "cpu", med(v.cpu).toFixed(1));
console.log(a0.join(" ").slice(0, 3000));
