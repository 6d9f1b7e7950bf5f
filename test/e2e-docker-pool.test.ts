// End to end in Docker mode with the pre-warm pool on, as `stratus up --driver docker` runs by default
// (prewarm 2): the real CLI deploys examples/hello, the first invocations are served by specialised
// slots (base-image containers whose /srv/function is the version's artifact, mounted read-only), and SIGTERM leaves no container — idle slots included.
// test/e2e-docker.test.ts covers the image path (pool off). Needs dockerd and the registry (scripts/services.sh).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { ChildProcess } from "node:child_process";
import { rm } from "node:fs/promises";
import { resolve } from "node:path";
import { once } from "node:events";
import { setTimeout as delay } from "node:timers/promises";
import { bindStratus, ensureDockerServices, killUp, startUpInTempRoot } from "./helpers/stratus-cli";
import Docker from "dockerode";

const docker = new Docker();
let root: string;
let dataDir: string;
let env: NodeJS.ProcessEnv;
let up: ChildProcess;
let url: string;
let upOutputOf: () => string = () => "";

const { ok } = bindStratus(() => ({ env, cwd: root }), 300_000, () => `\n--- stratus up:\n${upOutputOf().slice(-4000)}`);

/** Every container of this platform (its socket or code dirs live in our data dir), running or not. */
async function containersOfThisPlatform(): Promise<Docker.ContainerInspectInfo[]> {
  const list = await docker.listContainers({ all: true });
  const infos = await Promise.all(list.map((c) => docker.getContainer(c.Id).inspect().catch(() => null)));
  return infos.filter((i): i is Docker.ContainerInspectInfo => i !== null && i.Mounts.some((m) => m.Source.startsWith(`${dataDir}/`)));
}

before(async () => {
  ensureDockerServices();
  const p = await startUpInTempRoot("st-e2ep-", ["--driver", "docker"], { STRATUS_REGISTRY: process.env.STRATUS_REGISTRY ?? "127.0.0.1:5000", STRATUS_PREWARM: "2" });
  ({ root, dataDir, env, url, child: up } = p);
  upOutputOf = p.output;
});

after(async () => {
  await killUp(up);
  if (dataDir) for (const c of await containersOfThisPlatform().catch(() => [])) await docker.getContainer(c.Id).remove({ force: true }).catch(() => {});
  if (root) await rm(root, { recursive: true, force: true });
});

test("deploy + invoke: cold starts are served by specialised pool slots", async () => {
  const deployed = JSON.parse(await ok("deploy", resolve("examples/hello"), "--json")) as { functions: Array<{ name: string; status: string }> };
  assert.deepEqual(deployed.functions.map((f) => `${f.name}:${f.status}`).sort(), ["counter:activated", "myFunction:activated"]);
  // The pool fills in the background after `up`; wait until both default slots are idle.
  const slots = async () => (await containersOfThisPlatform()).filter((c) => c.State.Running && c.Config.Labels["stratus.slot"] !== undefined);
  const deadline = Date.now() + 120_000;
  while ((await slots()).length < 2) {
    assert.ok(Date.now() < deadline, `the pool never reached 2 slots:\n${upOutputOf().slice(-2000)}`);
    await delay(200);
  }

  const [a, b] = await Promise.all([fetch(`${url}/fn/counter`), fetch(`${url}/fn/counter`)]);
  assert.equal(a.status, 200);
  assert.equal(b.status, 200);
  // Never two at once in one instance: either two instances (1, 1), or one that served them in turn (1, 2).
  const calls = [((await a.json()) as { calls: number }).calls, ((await b.json()) as { calls: number }).calls].sort();
  assert.ok(JSON.stringify(calls) === "[1,1]" || JSON.stringify(calls) === "[1,2]", `calls ${JSON.stringify(calls)}`);
  assert.equal(a.headers.get("x-stratus-cold-start"), "true");
  assert.equal(await ok("invoke", "myFunction"), "Hello");

  // A specialised slot is renamed after its instance (in the background, off the cold path); the engine
  // keeps a bind's source path as created, so the name is what tells it from an idle slot.
  const specialisedNow = async () => (await slots()).filter((c) => !/^\/stratus-pw-/.test(c.Name));
  let specialised = await specialisedNow();
  while (specialised.length === 0 && Date.now() < deadline) {
    await delay(100);
    specialised = await specialisedNow();
  }
  assert.ok(specialised.length >= 1, `a slot serves an instance now: ${JSON.stringify((await slots()).map((c) => c.Name))}`);
  for (const c of specialised) {
    const code = c.Mounts.find((m) => m.Destination === "/srv/function");
    assert.ok(code, "the code dir is a mount");
    assert.equal(code.RW, false, "read-only");
    assert.equal(code.Propagation, "rslave");
    assert.doesNotMatch(c.Config.Image, /stratus\/(counter|myfunction)/i, "a slot runs the base image, not a version's image");
    assert.deepEqual(c.HostConfig.CapDrop, ["ALL"]);
    assert.equal(c.HostConfig.ReadonlyRootfs, true);
    assert.equal(c.Config.User, "65534:65534");
    assert.ok(!c.Config.Env.some((e) => e.startsWith("STRATUS_ENTRY=")), "the function arrived by message, not on the container's config");
  }
});

test("SIGTERM drains, exits 0 and leaves no container, idle slots included", async () => {
  assert.ok((await containersOfThisPlatform()).length > 0, "control: instances and slots are there before");
  up.kill("SIGTERM");
  const [code] = await once(up, "exit");
  assert.equal(code, 0, upOutputOf());
  assert.deepEqual((await containersOfThisPlatform()).map((c) => c.Name), []);
});
