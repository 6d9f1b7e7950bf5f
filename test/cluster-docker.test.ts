// Issue 14 item 7 on one machine: node agents with `--driver docker` (test/helpers/cluster.ts: PostgreSQL,
// one control plane, HAProxy, two docker nodes on 127.0.0.2/.3) and the shared registry at 127.0.0.1:5000
// (scripts/services.sh). A deploy builds and pushes the image on one node (prepare); the function's image
// is then removed from the machine's Docker engine — both nodes share one engine here, so this is how a
// node that never built the function is made — and a node serves it: it pulls the image by digest from
// the registry. Needs root, dockerd, the registry, haproxy, PostgreSQL and `npm run build`.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { startCluster, call, type Cluster } from "./helpers/cluster";

let c: Cluster;

before(async () => {
  // No pre-started generic containers: with prewarm a docker node serves from a base-image slot with the
  // artifact mounted and never needs the function's image; without it each instance runs the image.
  c = await startCluster({ nodes: 2, driver: "docker", nodeEnv: { STRATUS_PREWARM: "0" } });
});

after(async () => {
  await c?.close();
});

const docker = (...args: string[]) => spawnSync("docker", args, { encoding: "utf8", timeout: 60_000 });

test("7 docker nodes: a node without the function's image pulls it by digest from the shared registry and serves it", async () => {
  const d = await c.deploy({
    "package.json": JSON.stringify({ name: "cluster-docker" }),
    "index.js": "module.exports.dock = { func: async (req, res) => res.json({ ok: true, pid: process.pid }) };\n",
  });
  assert.equal(d.final?.type, "result", `deploy: ${JSON.stringify(d.final ?? d.body)}\n${c.log()}`);
  const fn = await c.api("GET", "/api/v1/functions/dock");
  const image = String((fn.json!.version as { image: string }).image);
  assert.match(image, /^127\.0\.0\.1:5000\/.+@sha256:[0-9a-f]{64}$/, "the version's image is a registry reference by digest");
  // The node that never built it: the other node, whose engine (here, the shared one) lacks the image.
  const containers = docker("ps", "-aq", "--filter", "label=stratus.function=dock").stdout.trim().split("\n").filter(Boolean);
  if (containers.length > 0) docker("rm", "-f", ...containers);
  const rmi = docker("image", "rm", "-f", image);
  assert.equal(rmi.status, 0, rmi.stderr);
  assert.notEqual(docker("image", "inspect", image).status, 0, "the image is gone from the engine");
  const served: number[] = [];
  for (const n of c.nodes) {
    const r = await call(`${n.url}/fn/dock/`);
    served.push(r.status);
    assert.equal(r.status, 200, `${n.name}: ${r.status} ${r.text}\n${c.log()}`);
    assert.equal(r.json?.ok, true);
  }
  assert.equal(docker("image", "inspect", image).status, 0, "pulled again by digest");
  const viaLb = await c.invoke("dock");
  assert.equal(viaLb.status, 200, viaLb.text);
});
