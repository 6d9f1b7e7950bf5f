// KSM for Docker instances (driver option `ksm`, platform setting docker.ksm; docs/security.md "Memory
// deduplication"): the base image carries the launcher as the entrypoint before node, so a fresh instance's
// and a pool slot's node run with PR_SET_MEMORY_MERGE (read from the host in /proc/<pid>/ksm_stat). Never
// writes /sys/kernel/mm/ksm. Needs root, dockerd + the registry (scripts/services.sh), Linux >= 6.4 with
// KSM and `npm run build` (with a C compiler).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Docker from "dockerode";
import { createDockerDriver } from "../src/sandbox/docker/docker-driver";
import { IMAGE_PATHS } from "../src/sandbox/docker/base-image";
import { processKsmState } from "../src/sandbox/ksm/ksm";
import { parseFunctionConfig } from "../src/shared/function-config";
import type { InstanceSpec } from "../src/sandbox/driver";

const REGISTRY = process.env.STRATUS_REGISTRY ?? "127.0.0.1:5000";
const RUNTIME = join(process.cwd(), "dist", "runtime.cjs");
if (!existsSync(RUNTIME) || !existsSync(join(process.cwd(), "dist", "stratus-ksm-exec"))) throw new Error("dist/runtime.cjs or dist/stratus-ksm-exec is missing: run `npm run build` (with cc) first");
if (!existsSync("/sys/kernel/mm/ksm/run")) throw new Error("this kernel has no KSM (/sys/kernel/mm/ksm): the KSM tests need Linux >= 6.4 with CONFIG_KSM");
try {
  execFileSync("bash", ["scripts/services.sh"], { stdio: ["ignore", "ignore", "pipe"], timeout: 300_000 });
} catch (err) {
  throw new Error(`Docker and the registry are needed: scripts/services.sh failed: ${(err as Error).message}`);
}
const docker = new Docker();
const nodeId = `ksmtest-${process.pid}`;
const work = mkdtempSync(join(tmpdir(), "stratus-ksm-docker-"));

function get(socketPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    request({ socketPath, path: "/", headers: { host: "fn" }, timeout: 30_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    }).on("error", reject).end();
  });
}

/** The host pid of each running container of this node, with its entrypoint. */
async function containers(): Promise<Array<{ pid: number; entrypoint: string[]; slot: boolean }>> {
  const out = [];
  for (const c of await docker.listContainers({ filters: { label: [`stratus.node=${nodeId}`] } })) {
    const info = await docker.getContainer(c.Id).inspect();
    const ep = info.Config.Entrypoint;
    out.push({ pid: info.State.Pid, entrypoint: Array.isArray(ep) ? ep : [String(ep)], slot: info.Config.Labels["stratus.instance"] === undefined });
  }
  return out;
}

test("docker.ksm: a fresh instance's and a pool slot's node run mergeable, started through the launcher", { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(join(work, "fn-"));
  writeFileSync(join(dir, "index.js"), 'module.exports.hello = { func: (req, res) => res.send("Hello") };');
  const driver = createDockerDriver({ registry: REGISTRY, runtimePath: RUNTIME, stateDir: join(work, "s"), nodeId, ksm: true, prewarm: 1 });
  void driver.open();
  try {
    const spec: InstanceSpec = { instanceId: `ksm${process.pid}-1`, functionName: "ksmHello", version: "1", artifactDir: dir, entry: "index.js", exportName: "hello", config: parseFunctionConfig("ksmHello", { memory: 128 }), env: {} };
    const { image } = await driver.prepare(spec);
    const inst = await driver.start({ ...spec, image });
    try {
      assert.deepEqual(await get(inst.endpoint.socketPath), { status: 200, body: "Hello" });
      // The pool's slot (256 MB, the default key) boots beside it: wait for it, bounded.
      let list = await containers();
      for (let i = 0; i < 300 && list.length < 2; i++) {
        await new Promise((r) => setTimeout(r, 200));
        list = await containers();
      }
      assert.ok(list.some((c) => c.slot) && list.some((c) => !c.slot), `a slot and an instance run: ${JSON.stringify(list)}`);
      for (const c of list) {
        assert.deepEqual(c.entrypoint, [IMAGE_PATHS.ksmExec, IMAGE_PATHS.node]);
        // The engine's init (docker-init, the container's pid 1) runs the entrypoint as its child.
        const init = readFileSync(`/proc/${c.pid}/comm`, "utf8").trim();
        const node = init === "node" ? c.pid : Number(readFileSync(`/proc/${c.pid}/task/${c.pid}/children`, "utf8").trim().split(" ")[0]);
        assert.equal(readFileSync(`/proc/${node}/comm`, "utf8").trim(), "node", "the launcher exec'd node");
        assert.equal(processKsmState(node)?.mergeAny, true, `node ${node} of the ${c.slot ? "slot" : "instance"} container is mergeable`);
      }
    } finally {
      await inst.close(5000);
    }
  } finally {
    await driver.close();
    await driver.reconcile();
    rmSync(work, { recursive: true, force: true });
  }
});
