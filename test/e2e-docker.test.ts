// End to end in Docker mode, as an operator and a user would: the real CLI (`node bin/stratus.js …`
// child processes, after `npm run build`) runs `stratus up --driver docker` on port 0 in a fresh data
// dir and CLI config dir, then `stratus deploy` of every example. For each function: invoke it, find
// its image reference (`describe`), check the registry serves that manifest by digest (v2 API), and
// check the running container's hardening from the engine's own inspect data. SIGTERM exits 0 and
// leaves no container. Needs dockerd and the registry (scripts/services.sh, run here first).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { spawnSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { appendFile, cp, rm } from "node:fs/promises";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { once } from "node:events";
import { bindStratus, ensureDockerServices, killUp, startUpInTempRoot } from "./helpers/stratus-cli";
import Docker from "dockerode";

const EXAMPLES = resolve("examples");
const REGISTRY = process.env.STRATUS_REGISTRY ?? "127.0.0.1:5000";
const docker = new Docker();
let root: string;
let dataDir: string;
let env: NodeJS.ProcessEnv;
let up: ChildProcess;
let url: string;
let upOutputOf: () => string = () => "";

const { ok } = bindStratus(() => ({ env, cwd: root }), 300_000, () => `\n--- stratus up:\n${upOutputOf().slice(-4000)}`);

/** The containers of this platform (their socket dirs live in our data dir) serving `fn`. */
async function containersOf(fn?: string): Promise<Docker.ContainerInspectInfo[]> {
  const list = await docker.listContainers({ all: true, filters: { label: [fn === undefined ? "stratus.function" : `stratus.function=${fn}`] } });
  const infos = await Promise.all(list.map((c) => docker.getContainer(c.Id).inspect().catch(() => null)));
  return infos.filter((i): i is Docker.ContainerInspectInfo => i !== null && i.Mounts.some((m) => m.Source.startsWith(`${dataDir}/`)));
}

before(async () => {
  ensureDockerServices();
  for (const ex of ["npm-dependency", "express-middleware"]) {
    const dir = join(EXAMPLES, ex);
    if (existsSync(join(dir, "node_modules"))) continue;
    const r = spawnSync("npm", ["ci", "--no-audit", "--no-fund", "--prefer-offline"], { cwd: dir, stdio: "inherit" });
    assert.equal(r.status, 0, `npm ci failed in ${dir}`);
  }
  const p = await startUpInTempRoot("st-e2ed-", ["--driver", "docker"], {
    STRATUS_REGISTRY: REGISTRY,
    // Short, so the pruning test below sees a sweep within seconds (default: 10 minutes).
    STRATUS_DOCKER_IMAGE_PRUNE_INTERVAL_MS: "1500",
    // This suite checks the image path (the container runs the version's image by digest, pulled after a
    // prune): the pre-warm pool would serve these starts from base-image slots instead. The pooled path
    // has its own suites: test/e2e-docker-pool.test.ts, test/prewarm-docker.test.ts, test/gateway-docker.test.ts.
    STRATUS_PREWARM: "0",
  });
  ({ root, dataDir, env, url, child: up } = p);
  upOutputOf = p.output;
});

after(async () => {
  await killUp(up);
  // Whatever a failed run left: containers of this data dir, then the dir.
  if (dataDir) for (const c of await containersOf().catch(() => [])) await docker.getContainer(c.Id).remove({ force: true }).catch(() => {});
  if (root) await rm(root, { recursive: true, force: true });
});

/** What each example deploys, and how to call each function. */
const EXAMPLE_FUNCTIONS: Record<string, Array<{ fn: string; memoryMb: number; call: () => Promise<void> }>> = {
  hello: [
    {
      fn: "myFunction", memoryMb: 256,
      call: async () => assert.equal(await ok("invoke", "myFunction"), "Hello"),
    },
    {
      fn: "counter", memoryMb: 256,
      call: async () => {
        const r = await fetch(`${url}/fn/counter`);
        assert.equal(r.status, 200);
        assert.deepEqual(await r.json(), { calls: 1 });
      },
    },
  ],
  typescript: [
    {
      fn: "greet", memoryMb: 128,
      call: async () => {
        const r = await fetch(`${url}/fn/greet/x?name=Docker`);
        assert.equal(r.status, 200);
        assert.deepEqual(await r.json(), { message: "Hello, Docker!", method: "GET", path: "/x" });
      },
    },
  ],
  "npm-dependency": [
    {
      fn: "duration", memoryMb: 256,
      call: async () => {
        const r = await fetch(`${url}/fn/duration?d=2h`);
        assert.equal(r.status, 200);
        assert.deepEqual(await r.json(), { input: "2h", ms: 7_200_000 });
      },
    },
  ],
  "express-middleware": [
    {
      fn: "notes", memoryMb: 256,
      call: async () => {
        assert.equal((await fetch(`${url}/fn/notes/notes`)).status, 401, "the router's own middleware runs");
        const auth = { authorization: "Bearer demo" };
        const created = await fetch(`${url}/fn/notes/notes`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ text: "from docker" }) });
        assert.equal(created.status, 201);
        assert.equal(created.headers.get("location"), "/notes/1");
        const list = await fetch(`${url}/fn/notes/notes`, { headers: auth });
        assert.deepEqual(await list.json(), { notes: [{ id: 1, text: "from docker" }] });
      },
    },
  ],
};

for (const [example, functions] of Object.entries(EXAMPLE_FUNCTIONS)) {
  test(`examples/${example}: deploy with the Docker driver, invoke, image in the registry by digest, hardened container`, async (t) => {
    const t0 = Date.now();
    const deployed = JSON.parse(await ok("deploy", join(EXAMPLES, example), "--json")) as { functions: Array<{ name: string; status: string }> };
    t.diagnostic(`deploy took ${Date.now() - t0} ms`);
    assert.deepEqual(deployed.functions.map((f) => f.name).sort(), functions.map((f) => f.fn).sort());
    for (const f of deployed.functions) assert.equal(f.status, "activated", f.name);

    for (const { fn, memoryMb, call } of functions) {
      await call();

      // The version's image, by digest, as the API records it.
      const described = JSON.parse(await ok("describe", fn, "--json")) as { version: { image: string | null } };
      const image = described.version.image ?? "";
      const m = /^([^/]+)\/(stratus\/[a-z0-9_.-]+)@(sha256:[0-9a-f]{64})$/.exec(image);
      assert.ok(m, `${fn}: unexpected image reference ${JSON.stringify(image)}`);
      const [, registry, repository, digest] = m;
      assert.equal(registry, REGISTRY);
      const head = await fetch(`http://${registry}/v2/${repository}/manifests/${digest}`, {
        method: "HEAD",
        headers: { accept: "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json" },
      });
      assert.equal(head.status, 200, `${fn}: the registry serves ${repository}@${digest}`);
      assert.equal(head.headers.get("docker-content-digest"), digest);

      // The instance that just served, as the engine sees it.
      const running = (await containersOf(fn)).filter((c) => c.State.Running);
      assert.equal(running.length, 1, `${fn}: one warm container (${running.map((c) => c.Name).join(", ")})`);
      const c = running[0]!;
      assert.equal(c.Config.Image, image, "the container runs the deployed image by digest");
      assert.equal(c.Config.Labels["stratus.function"], fn);
      assert.match(c.Config.Labels["stratus.node"] ?? "", new RegExp(`^${hostname()}-[0-9a-f]{8}$`), "a node id of its own: another platform's reconcile leaves it alone");
      assert.ok(!["", "0", "root", "0:0"].includes(c.Config.User), `non-root user, got ${JSON.stringify(c.Config.User)}`);
      assert.equal(c.Config.User, "65534:65534");
      const h = c.HostConfig;
      assert.equal(h.ReadonlyRootfs, true);
      assert.deepEqual(h.CapDrop, ["ALL"]);
      assert.equal(h.CapAdd ?? null, null);
      assert.equal(h.Privileged, false);
      assert.ok(h.SecurityOpt?.includes("no-new-privileges"), `SecurityOpt ${JSON.stringify(h.SecurityOpt)}`);
      assert.equal(h.Memory, memoryMb * 1024 * 1024, `${fn}: memory limit from its config`);
      assert.equal(h.MemorySwap, h.Memory, "no swap");
      assert.ok((h.PidsLimit ?? 0) > 0, `PidsLimit ${String(h.PidsLimit)}`);
      assert.ok(Object.keys(h.Tmpfs ?? {}).every((p) => p === "/tmp"), `tmpfs ${JSON.stringify(h.Tmpfs)}`);
      assert.equal(c.Mounts.length, 1, `only the socket dir is mounted: ${JSON.stringify(c.Mounts)}`);
      const [mount] = c.Mounts;
      assert.equal(mount!.Type, "bind");
      assert.equal(mount!.Destination, "/run/stratus");
      assert.match(mount!.Source, new RegExp(`^${dataDir}/docker/[a-z0-9-]+$`));
      assert.ok(!c.Mounts.some((x) => /docker\.sock/.test(x.Source)), "no Docker socket");
    }
  });
}

test("a new version's deploy lets the node prune the old image; the registry keeps it and a rollback pulls it by digest", async () => {
  const imageOf = async (fn: string) => (JSON.parse(await ok("describe", fn, "--json")) as { version: { image: string } }).version.image;
  const old = await imageOf("myFunction");
  await docker.getImage(old).inspect(); // control: on the engine now
  const project = join(root, "hello-v2");
  await cp(join(EXAMPLES, "hello"), project, { recursive: true });
  await appendFile(join(project, "index.js"), "\n// v2\n");
  await ok("deploy", project);
  const current = await imageOf("myFunction");
  assert.notEqual(current, old);
  let gone = false;
  for (let waited = 0; !gone && waited < 60_000; waited += 500) {
    gone = await docker.getImage(old).inspect().then(() => false, (e: { statusCode?: number }) => e.statusCode === 404);
    if (!gone) await new Promise((r) => setTimeout(r, 500));
  }
  assert.ok(gone, `the old image ${old} was pruned from the engine`);
  await docker.getImage(current).inspect(); // the active version's image stays
  const m = /^([^/]+)\/(stratus\/[a-z0-9_.-]+)@(sha256:[0-9a-f]{64})$/.exec(old)!;
  const head = await fetch(`http://${m[1]}/v2/${m[2]}/manifests/${m[3]}`, {
    method: "HEAD", headers: { accept: "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json" },
  });
  assert.equal(head.status, 200, "the registry still serves the old version");
  await ok("rollback", "myFunction");
  assert.equal(await imageOf("myFunction"), old);
  assert.equal(await ok("invoke", "myFunction"), "Hello");
});

test("SIGTERM drains, exits 0 and leaves no container", async () => {
  assert.ok((await containersOf()).length > 0, "control: the warm instances are there before");
  up.kill("SIGTERM");
  const [code] = await once(up, "exit");
  assert.equal(code, 0, upOutputOf());
  assert.deepEqual((await containersOf()).map((c) => c.Name), []);
});
