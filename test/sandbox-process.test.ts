// The process driver (bubblewrap + cgroups) against the shared conformance suite, plus what only this
// driver has: cgroup layout detection, a v2 cgroup round trip, reconcile after the node was SIGKILLed,
// start cost. Needs root, bubblewrap, setpriv, iptables (scripts/test.sh installs them) and `npm run build`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { once } from "node:events";
import { createHash } from "node:crypto";
import { runDriverConformance, invokeInstance } from "../src/sandbox/conformance";
import { createProcessDriver, type ProcessDriver } from "../src/sandbox/process/process-driver";
import { CgroupManager, detectCgroupLayout } from "../src/sandbox/process/cgroups";
import { forwardChainOf } from "../src/shared/netns";
import { parseFunctionConfig } from "../src/shared/function-config";
import type { Instance } from "../src/sandbox/driver";

const runtimePath = resolve("dist/runtime.cjs");
const fixtures = resolve("test/fixtures/functions");
if (!existsSync(runtimePath)) throw new Error(`${runtimePath} is missing: run \`npm run build\` first`);
if (process.getuid?.() !== 0) throw new Error("the process driver tests need root (cgroups, iptables, bwrap binding host paths)");

const rootName = `stratus-test-${process.pid}`;
const newDriver = (suffix: string, extra: { pidsMax?: number; sandboxSubnet?: string } = {}): { driver: ProcessDriver; stateDir: string; cleanup: () => Promise<void> } => {
  // Short state dir: socket paths must stay under 108 bytes.
  const stateDir = mkdtempSync("/tmp/sst-");
  const driver = createProcessDriver({ runtimePath, stateDir, cgroupRoot: `${rootName}-${suffix}`, ...extra });
  void driver.open(); // nothing runs before open(); the pool starts filling now
  return {
    driver,
    stateDir,
    cleanup: async () => {
      await driver.close();
      for (const d of driver.cgroups.rootDirs()) if (existsSync(d)) rmdirSync(d);
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
};

/** Mount points under `dir` in this mount namespace. */
const mountsUnder = (dir: string): string[] => readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4] ?? "").filter((p) => p.startsWith(`${dir}/`));

/** This driver's network namespaces and host veths (tag: ./netns.ts). */
const netnsOf = (tag: string): string[] => (existsSync("/run/netns") ? readdirSync("/run/netns").filter((n) => n.startsWith(`sxn-${tag}-`)).sort() : []);
const vethsOf = (tag: string): string[] => readdirSync("/sys/class/net").filter((n) => n.startsWith(`sx${tag}`));
const sh = (cmd: string, args: string[]): string => {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
};

const leftoversOf = (driver: ProcessDriver, stateDir: string) => async (inst: Instance): Promise<string[]> => {
  const out: string[] = [];
  for (const d of driver.cgroups.rootDirs()) if (existsSync(join(d, inst.id))) out.push(`cgroup ${join(d, inst.id)}`);
  if (existsSync(join(stateDir, "sockets", inst.id))) out.push(`socket dir of ${inst.id}`);
  return out;
};

let conf: ReturnType<typeof newDriver> | undefined;
runDriverConformance(
  "process",
  async () => {
    conf = newDriver("conf");
    return { driver: conf.driver, cleanup: conf.cleanup };
  },
  {
    fixturesDir: fixtures,
    hostSecretPaths: ["/root", "/work", "/var/lib"],
    hostTools: true,
    writableDirs: ["/stratus/run"],
    leftovers: (inst) => leftoversOf(conf!.driver, conf!.stateDir)(inst),
  },
);

test("cgroup layout detection matches the mounts", () => {
  const mounts = readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" "));
  const rootIsV2 = mounts.some((m) => m[1] === "/sys/fs/cgroup" && m[2] === "cgroup2");
  const layout = detectCgroupLayout();
  assert.equal(layout.mode, rootIsV2 ? "v2" : "v1");
  assert.throws(() => detectCgroupLayout("/tmp"), /no usable cgroup hierarchy/);
  if (existsSync("/sys/fs/cgroup/unified/cgroup.procs")) assert.equal(detectCgroupLayout("/sys/fs/cgroup/unified").mode, "v2");
});

test("cgroup v2: create, join before exec, kill everything, remove", async (t) => {
  const fsRoot = existsSync("/sys/fs/cgroup/cgroup.controllers") ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified";
  if (!existsSync(join(fsRoot, "cgroup.procs"))) return t.skip("no cgroup v2 hierarchy mounted on this machine");
  // Here the v2 hierarchy has no controllers (they live in v1), so limits cannot be checked, only the lifecycle.
  const mgr = new CgroupManager({ mode: "v2", fsRoot }, `${rootName}-v2`, { requireControllers: false });
  const cg = mgr.create("probe", { memoryMb: 64, pidsMax: 32, cpuWeight: 100 });
  try {
    const child = spawn("/bin/sh", ["-c", 'echo $$ > "$1" && exec sh -c "sleep 60 & sleep 60"', "sh", cg.procsFiles[0]!], { stdio: "ignore" });
    const deadline = Date.now() + 5000;
    while (cg.pids().length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(cg.pids().length >= 2, `the wrapper and its forks are in the cgroup: ${cg.pids().join(",")}`);
    assert.ok(cg.pids().includes(child.pid!));
    const killed = await cg.killAll();
    assert.ok(killed >= 2);
    assert.deepEqual(cg.pids(), []);
    assert.equal(cg.memory()?.currentBytes ?? 0, cg.memory()?.currentBytes ?? 0);
    assert.deepEqual(mgr.list(), ["probe"]);
  } finally {
    await cg.killAll();
    await cg.remove();
    for (const d of mgr.rootDirs()) if (existsSync(d)) rmdirSync(d);
  }
  assert.equal(existsSync(join(fsRoot, `${rootName}-v2`, "probe")), false);
});

test("reconcile after the node process was SIGKILLed removes every process, cgroup and socket dir", { timeout: 60_000 }, async () => {
  const { driver, stateDir, cleanup } = newDriver("reconcile");
  try {
    const child = spawn(process.execPath, ["--import", "tsx", "test/fixtures/sandbox/start-two-and-wait.ts", runtimePath, stateDir, driver.cgroups.rootName, fixtures], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.setEncoding("utf8");
    await new Promise<void>((resolveStarted, reject) => {
      child.stdout.on("data", (c: string) => {
        out += c;
        if (out.includes("started")) resolveStarted();
      });
      child.on("exit", (code) => reject(new Error(`child exited early (${code})`)));
    });
    assert.deepEqual(driver.cgroups.list().sort(), ["orphan-1", "orphan-2"]);
    const tag = createHash("sha256").update(stateDir).digest("hex").slice(0, 6);
    assert.deepEqual(netnsOf(tag), [`sxn-${tag}-orphan-1`, `sxn-${tag}-orphan-2`], "each outbound sandbox has its own network namespace");
    child.kill("SIGKILL");
    await once(child, "exit");
    const { removed } = await driver.reconcile();
    assert.equal(removed, 2);
    assert.deepEqual(driver.cgroups.list(), [], "no instance cgroup left");
    for (const d of driver.cgroups.rootDirs()) {
      // An empty root may already be gone: another driver's reconcile on this machine removes empty sibling roots.
      const procs = existsSync(d) ? readFileSync(join(d, "cgroup.procs"), "utf8").trim() : "";
      assert.equal(procs, "", `no process left in ${d}`);
    }
    assert.equal(existsSync(join(stateDir, "sockets", "orphan-1")), false, "stale socket dirs are removed");
    // The driver-wide runtime copy (`shared/`) stays for this driver to reuse; close() unmounts it.
    assert.deepEqual(mountsUnder(stateDir).filter((m) => m !== join(stateDir, "shared")), [], "the killed run's instance boxes (tmpfs) are unmounted");
    assert.deepEqual(netnsOf(tag), [], "and its network namespaces deleted");
    assert.deepEqual(vethsOf(tag), [], "with their veths");
    assert.deepEqual(readdirSync(join(stateDir, "box")), [], "and removed");
    assert.deepEqual(await driver.reconcile(), { removed: 0 }, "reconcile is idempotent");
    await driver.close();
    assert.deepEqual(mountsUnder(stateDir), [], "close unmounts the rest");
  } finally {
    await cleanup();
  }
});

test("cgroup roots: a clean close removes the driver's empty root; reconcile removes empty sibling roots, never busy ones", { timeout: 60_000 }, async () => {
  const { driver, cleanup } = newDriver("roots");
  const siblings = driver.cgroups.rootDirs().map((d) => join(d, "..", `${rootName}-leftover`));
  const busy = driver.cgroups.rootDirs().map((d) => join(d, "..", `${rootName}-busy`));
  const unrelated = driver.cgroups.rootDirs().map((d) => join(d, "..", `sbh-unrelated-${process.pid}`));
  try {
    for (const d of [...siblings, ...unrelated]) mkdirSync(d);
    for (const d of busy) mkdirSync(join(d, "child"), { recursive: true });
    const inst = await driver.start({ instanceId: "roots-1", functionName: "hello", version: "1", artifactDir: fixtures, entry: "probe.js", exportName: "hello", config: parseFunctionConfig("hello", {}), env: {} });
    assert.equal((await invokeInstance(inst, "/")).body, "Hello");
    await driver.reconcile();
    for (const d of siblings) assert.equal(existsSync(d), false, `empty leftover root ${d} removed`);
    for (const d of busy) assert.equal(existsSync(join(d, "child")), true, `a root with a child cgroup stays: ${d}`);
    for (const d of unrelated) assert.equal(existsSync(d), true, `a root without our prefix stays: ${d}`);
    for (const d of driver.cgroups.rootDirs()) assert.equal(existsSync(d), true, "our own root stays while the driver runs");
    await inst.close(5000);
    await driver.close();
    for (const d of driver.cgroups.rootDirs()) assert.equal(existsSync(d), false, `a clean close leaves no empty root: ${d}`);
  } finally {
    for (const d of busy) {
      if (existsSync(join(d, "child"))) rmdirSync(join(d, "child"));
      if (existsSync(d)) rmdirSync(d);
    }
    for (const d of [...siblings, ...unrelated]) if (existsSync(d)) rmdirSync(d);
    await cleanup();
  }
});

test("outbound: each sandbox has its own network namespace; a test host is reachable through NAT, the host and the metadata range are not; nothing is left after destroy", { timeout: 60_000 }, async () => {
  // The "test host" is a network namespace this test makes (198.51.100.0/24, TEST-NET-2, on a veth of
  // our own): no packet leaves the machine.
  const ns = `sbh-th-${process.pid}`;
  const hv = `sbhth${process.pid % 100_000}`;
  // A subnet of its own (no other suite's sandboxes on it): its rules must be gone after close.
  const subnet = `10.${232 + (process.pid % 20)}.0.0/16`;
  const subnetRe = new RegExp(subnet.replace(/\./g, "\\.").replace("/", "\\/"));
  const { driver, stateDir, cleanup } = newDriver("net", { sandboxSubnet: subnet });
  const tag = createHash("sha256").update(stateDir).digest("hex").slice(0, 6);
  let server: ReturnType<typeof spawn> | undefined;
  try {
    sh("ip", ["netns", "add", ns]);
    sh("ip", ["link", "add", hv, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    sh("ip", ["addr", "add", "198.51.100.1/24", "dev", hv]);
    sh("ip", ["link", "set", hv, "up"]);
    for (const args of [["addr", "add", "198.51.100.2/24", "dev", "eth0"], ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"]]) sh("ip", ["-n", ns, ...args]);
    server = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", 'const s = require("net").createServer((c) => { console.log("hit"); c.end("test host"); }); s.listen(0, "198.51.100.2", () => console.log("port " + s.address().port)); setTimeout(() => process.exit(0), 50000);'], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    server.stdout!.setEncoding("utf8");
    const port = await new Promise<number>((resolvePort, reject) => {
      server!.stdout!.on("data", (c: string) => {
        out += c;
        const m = /port (\d+)/.exec(out);
        if (m) resolvePort(Number(m[1]));
      });
      server!.on("exit", (code) => reject(new Error(`test host server exited (${code})`)));
    });
    const inst = await driver.start({ instanceId: "net-1", functionName: "connect", version: "1", artifactDir: fixtures, entry: "probe.js", exportName: "connect", config: parseFunctionConfig("connect", {}), env: {} });
    assert.deepEqual(netnsOf(tag), [`sxn-${tag}-net-1`]);
    const reach = JSON.parse((await invokeInstance(inst, `/?host=198.51.100.2&port=${port}`)).body) as { connected: boolean };
    assert.equal(reach.connected, true, "outbound to the test host works (veth, forwarding, MASQUERADE)");
    for (let waited = 0; !out.includes("hit") && waited < 5000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    assert.ok(out.includes("hit"), "the test host saw the connection");
    // The sandbox's gateway address is the host's: refused like every other local address.
    const hostSide = sh("ip", ["-4", "-o", "addr", "show", "dev", vethsOf(tag)[0]!]).match(/inet (\S+)\//)?.[1];
    assert.ok(hostSide, "the host end of the veth has an address");
    const gw = JSON.parse((await invokeInstance(inst, `/?host=${hostSide}&port=${port}`)).body) as { connected: boolean };
    assert.equal(gw.connected, false, "the host's end of the veth is unreachable");
    // A11: the metadata range is rejected by rule (inspected, never probed).
    assert.match(sh("iptables", ["-S", forwardChainOf(subnet)]), /-d 169\.254\.0\.0\/16 -j REJECT/);
    assert.match(sh("iptables", ["-S", "STRATUS-NET-IN"]), /-j REJECT/);
    assert.match(sh("iptables", ["-S", "INPUT"]), new RegExp(`-s ${subnetRe.source} -j STRATUS-NET-IN`));
    assert.match(sh("iptables", ["-t", "nat", "-S", "POSTROUTING"]), new RegExp(`-s ${subnetRe.source} ! -d ${subnetRe.source} -j MASQUERADE`));
    await inst.destroy();
    assert.deepEqual(netnsOf(tag), [], "destroy deletes the namespace");
    assert.deepEqual(vethsOf(tag), [], "and its veth");
    // A clean close removes every rule of the subnet (issue 12.8: they piled up per subnet).
    await driver.close();
    for (const table of ["filter", "nat"]) {
      const left = sh("iptables", ["-t", table, "-S"]).split("\n").filter((l) => subnetRe.test(l) || l.includes(forwardChainOf(subnet)));
      assert.deepEqual(left, [], `${table} rules of ${subnet} left after close`);
    }
  } finally {
    server?.kill();
    spawnSync("ip", ["netns", "del", ns]);
    spawnSync("ip", ["link", "del", hv]);
    await cleanup();
  }
});

test("mountinfo inside names no host path of the driver: state dir, sockets, runtime install dir", { timeout: 60_000 }, async () => {
  const { driver, stateDir, cleanup } = newDriver("mounts");
  try {
    const inst = await driver.start({ instanceId: "mounts-1", functionName: "kernel", version: "1", artifactDir: fixtures, entry: "probe.js", exportName: "kernel", config: parseFunctionConfig("kernel", {}), env: {} });
    const { mountinfo } = JSON.parse((await invokeInstance(inst, "/")).body) as { mountinfo: string };
    const lines = mountinfo.split("\n").filter(Boolean);
    const at = (dest: string): string[] => (lines.find((l) => l.split(" ")[4] === dest) ?? "").split(" ");
    assert.ok(!mountinfo.includes(stateDir), `the state dir is not named:\n${mountinfo}`);
    assert.ok(!mountinfo.includes(resolve("dist")), "the runtime's install dir is not named");
    for (const [dest, root] of [["/tmp", "/tmp"], ["/stratus/run", "/run"], ["/stratus/runtime.cjs", "/runtime.cjs"]] as const) {
      const f = at(dest);
      assert.equal(f[3], root, `${dest} is ${root} of a tmpfs: ${f.join(" ")}`);
      assert.ok(f.includes("tmpfs"), f.join(" "));
    }
    for (const dest of ["/tmp", "/stratus/run"]) assert.match(at(dest)[5] ?? "", /(^|,)noexec(,|$)/, `${dest} is noexec`);
    // The code dir is a read-only overlay whose line names neither the artifact's path nor its layers'.
    const code = at("/fn");
    assert.equal(code[3], "/", code.join(" "));
    assert.ok(code.includes("overlay") && / ro,|^ro,|,ro,| ro /.test(` ${code[5]},`), code.join(" "));
    assert.ok(!mountinfo.includes(fixtures), `the artifact's host path is not named:\n${mountinfo}`);
    await inst.destroy();
    await driver.close();
    assert.deepEqual(mountsUnder(stateDir), [], "close leaves no mount in the state dir");
  } finally {
    await cleanup();
  }
});

test("pids limit: the cgroup never holds more tasks than pids.max", { timeout: 60_000 }, async () => {
  const { driver, cleanup } = newDriver("pids", { pidsMax: 64 });
  try {
    const inst = await driver.start({ instanceId: "bomb", functionName: "forkbomb", version: "1", artifactDir: fixtures, entry: "probe.js", exportName: "forkbomb", config: parseFunctionConfig("forkbomb", {}), env: {} });
    await invokeInstance(inst, "/").catch(() => undefined);
    const pidsDir = driver.cgroups.rootDirs().find((d) => d.includes("/pids/"));
    if (pidsDir) {
      const current = Number(readFileSync(join(pidsDir, "bomb", "pids.current"), "utf8"));
      assert.ok(current <= 64, `pids.current ${current}`);
    }
    assert.equal(spawnSync("true").status, 0, "the host still forks");
    await inst.destroy();
  } finally {
    await cleanup();
  }
});

test("start cost: time from start() to ready for a hello function", { timeout: 60_000 }, async (t) => {
  const { driver, cleanup } = newDriver("cost");
  try {
    const config = parseFunctionConfig("hello", {});
    const times: number[] = [];
    for (let i = 0; i < 7; i++) {
      const inst = await driver.start({ instanceId: `cost-${i}`, functionName: "hello", version: "1", artifactDir: fixtures, entry: "probe.js", exportName: "hello", config, env: {} });
      times.push(inst.startMs);
      await inst.destroy();
    }
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)]!;
    t.diagnostic(`start→ready ms: median ${median.toFixed(1)}, min ${times[0]!.toFixed(1)}, max ${times.at(-1)!.toFixed(1)}`);
    assert.ok(median < 2000, `median start ${median} ms`);
  } finally {
    await cleanup();
  }
});
