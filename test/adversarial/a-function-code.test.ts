// SECURITY-CASES.md section A (malicious function code), every case on both drivers: the process
// driver (bubblewrap, cgroups, its own netns) and the Docker driver (real engine and registry; scripts/
// services.sh starts both). Cases and invariants: ./a-harness.ts. Needs root and `npm run build`.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, rmdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createHash } from "node:crypto";
import Docker from "dockerode";
import { createProcessDriver } from "../../src/sandbox/process/process-driver";
import { forwardChainOf } from "../../src/shared/netns";
import { createDockerDriver } from "../../src/sandbox/docker/docker-driver";
import { runFunctionCodeCases } from "./a-harness";

const runtimePath = resolve("dist/runtime.cjs");
if (!existsSync(runtimePath)) throw new Error(`${runtimePath} is missing: run \`npm run build\` first`);
if (process.getuid?.() !== 0) throw new Error("the adversarial suite needs root (cgroups, namespaces, iptables, Docker)");
const iptables = (args: string[]): string => spawnSync("iptables", ["-w", ...args], { encoding: "utf8" }).stdout;

runFunctionCodeCases("process", async () => {
  const stateDir = mkdtempSync("/tmp/sadp-");
  const tag = createHash("sha256").update(stateDir).digest("hex").slice(0, 6);
  // prewarm 1: the canary (default limits) runs in a pre-warmed slot, the attack function (128 MB) fresh.
  const driver = createProcessDriver({ runtimePath, stateDir, cgroupRoot: `stratus-advtest-${process.pid}-p`, pidsMax: 64, tmpSizeMb: 64, prewarm: 1 });
  void driver.open(); // nothing runs before open(); the pool starts filling now
  const netns = (): string[] => (existsSync("/run/netns") ? readdirSync("/run/netns").filter((n) => n.startsWith(`sxn-${tag}-`)) : []);
  return {
    driver,
    hostTools: true,
    hostPaths: [stateDir],
    prepare: async (d) => d,
    leftovers: async (id) => {
      const out: string[] = [];
      for (const d of driver.cgroups.rootDirs()) if (existsSync(join(d, id))) out.push(`cgroup ${join(d, id)}`);
      if (netns().some((n) => n.endsWith(`-${id}`))) out.push(`netns of ${id}`);
      if (existsSync(join(stateDir, "box", id))) out.push(`box of ${id}`);
      return out;
    },
    allLeftovers: async () => [...driver.cgroups.list().map((c) => `cgroup ${c}`), ...netns().map((n) => `netns ${n}`), ...(existsSync(join(stateDir, "box")) ? readdirSync(join(stateDir, "box")).map((b) => `box ${b}`) : [])],
    metadataRule: () => iptables(["-S", forwardChainOf("10.200.0.0/16")]),
    cleanup: async () => {
      await driver.close();
      for (const d of driver.cgroups.rootDirs()) if (existsSync(d)) rmdirSync(d);
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
});

runFunctionCodeCases("docker", async () => {
  try {
    execFileSync("bash", ["scripts/services.sh"], { stdio: ["ignore", "ignore", "pipe"], timeout: 300_000 });
  } catch (err) {
    throw new Error(`Docker and the registry are needed: scripts/services.sh failed (run it as root to see why): ${(err as Error).message}`);
  }
  const docker = new Docker();
  const work = mkdtempSync(join(tmpdir(), "sadd-"));
  const nodeId = `advtest-${process.pid}`;
  const driver = createDockerDriver({ registry: process.env.STRATUS_REGISTRY ?? "127.0.0.1:5000", runtimePath: runtimePath, stateDir: work, nodeId, pidsMax: 64, prewarm: 1 });
  void driver.open(); // nothing runs before open(); the pool starts filling now
  const images = new Map<string, Promise<string>>();
  const containers = async (filter: string): Promise<string[]> =>
    (await docker.listContainers({ all: true, filters: { label: [filter] } })).map((c) => `container ${c.Names.join(",")} (${c.State})`);
  return {
    driver,
    hostTools: false,
    hostPaths: [work],
    prepare: async (d) => {
      const key = `${d.name}@${d.version}`;
      let image = images.get(key);
      if (image === undefined) {
        image = driver.prepare({ ...d, instanceId: "prepare", functionName: d.name }).then((r) => r.image);
        images.set(key, image);
      }
      return { ...d, image: await image };
    },
    leftovers: (id) => containers(`stratus.instance=${id}`),
    allLeftovers: () => containers(`stratus.node=${nodeId}`),
    metadataRule: () => iptables(["-S", "DOCKER-USER"]).split("\n").filter((l) => l.includes("stratus-fn0")).join("\n"),
    cleanup: async () => {
      await driver.close();
      await driver.reconcile();
      rmSync(work, { recursive: true, force: true });
    },
  };
});
