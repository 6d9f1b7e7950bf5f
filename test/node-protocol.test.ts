// The node protocol's parts against real components: the telemetry shipper's bounded buffer, the
// artifact cache's digest check, and convergence by resync when a push is lost (a real control plane
// and a real node agent over the process driver, in one process, talking HTTP on loopback).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Readable } from "node:stream";
import { createSilentLogger } from "../src/shared/logger";
import { createTelemetryShipper } from "../src/node/telemetry-shipper";
import { createArtifactCache } from "../src/node/artifact-cache";
import { packTree } from "../src/control/artifact-tar";
import { digestTree } from "../src/shared/tree-digest";
import type { TelemetryBatch } from "../src/shared/node-protocol";
import { deriveLinkKeys, TelemetryBatchSchema } from "../src/shared/node-protocol";
import { createLinkClient } from "../src/shared/node-link";
import { resolvePlatformConfig } from "../src/shared/platform-config";
import { createControlPlane } from "../src/control/control-plane";
import { createNodeAgent } from "../src/node/node-agent";
import { createProcessDriver } from "../src/sandbox/process/process-driver";
import { deploy, project } from "./helpers/platform-fixture";

const line = (n: number) => ({ ts: n, stream: "stdout" as const, level: "info", message: `line ${n}`, instanceId: "i1" });

test("telemetry shipper: bounded buffer, drops counted and reported, a refused batch is retried in order", async () => {
  const sent: TelemetryBatch[] = [];
  let accept = false;
  const shipper = createTelemetryShipper({
    nodeId: "n1", logger: createSilentLogger(), pools: () => ({}), flushIntervalMs: 60_000, maxBatch: 4, maxBuffered: 6,
    send: async (b) => {
      if (!accept) throw new Error("control plane down");
      sent.push(b);
    },
  });
  try {
    // Item 3 fills a batch and sends it at once (refused, asynchronously); 4..9 fill the buffer (6).
    for (let i = 0; i < 10; i++) shipper.observer.onInstanceLog("f", line(i));
    await shipper.flush(); // refused: the batches go back in front as far as the bound allows
    assert.equal(sent.length, 0);
    assert.equal(shipper.droppedTotal, 4, "what the bound could not hold back is dropped and counted");
    accept = true;
    await shipper.flush();
    const items = sent.flatMap((b) => b.items);
    assert.deepEqual(items.map((i) => (i.kind === "line" ? i.line.message : "?")), [4, 5, 6, 7, 8, 9].map((n) => `line ${n}`), "order kept across the retry");
    assert.equal(sent.reduce((a, b) => a + b.dropped, 0), 4, "the drop count travels with the next accepted batch");
    assert.ok(sent.every((b) => b.nodeId === "n1" && b.items.length <= 4));
  } finally {
    await shipper.close();
  }
});

test("telemetry shipper: batches stay under the body cap; a batch refused as invalid is dropped, not retried", async () => {
  const sent: TelemetryBatch[] = [];
  let refuse = true;
  const shipper = createTelemetryShipper({
    nodeId: "n1", logger: createSilentLogger(), pools: () => ({}), flushIntervalMs: 60_000,
    send: async (b) => {
      if (refuse) throw Object.assign(new Error("bad batch"), { code: "INVALID_ARGUMENT" });
      sent.push(b);
    },
  });
  try {
    shipper.observer.onInstanceLog("f", line(0));
    await shipper.flush();
    assert.equal(shipper.droppedTotal, 1, "a 4xx refusal drops the batch");
    refuse = false;
    const big = "x".repeat(16 * 1024);
    for (let i = 0; i < 400; i++) shipper.observer.onInstanceLog("f", { ...line(i), message: big });
    await shipper.flush();
    assert.equal(sent.flatMap((b) => b.items).length, 400, "nothing lost, nothing retried twice");
    assert.ok(sent.length >= 3, `400 lines of 16 Ki chars go in several batches (got ${sent.length})`);
    for (const b of sent) assert.ok(JSON.stringify(b).length < 16 * 1024 * 1024, "each batch is under the protocol's body cap");
    assert.equal(sent[0]!.dropped, 1, "the drop is reported with the next accepted batch");
  } finally {
    await shipper.close();
  }
});

test("artifact cache: fetches by digest, verifies, caches; a tampered transfer is refused", async () => {
  const root = await mkdtemp(join(tmpdir(), "st-ac-"));
  try {
    const src = join(root, "src");
    await mkdir(join(src, "lib"), { recursive: true });
    await writeFile(join(src, "index.cjs"), "module.exports = 1;\n");
    await writeFile(join(src, "lib", "x.js"), "x\n");
    const digest = await digestTree(src);
    const other = join(root, "other");
    await mkdir(other);
    await writeFile(join(other, "index.cjs"), "module.exports = 2;\n");
    let fetches = 0;
    const cache = createArtifactCache(join(root, "cache"), async (d) => {
      fetches++;
      return d === digest ? packTree(src) : packTree(other);
    });
    const [a, b] = await Promise.all([cache.ensure(digest), cache.ensure(digest)]);
    assert.equal(a, join(root, "cache", digest));
    assert.equal(a, b);
    assert.equal(fetches, 1, "concurrent asks share one fetch");
    assert.equal(await digestTree(a), digest);
    await cache.ensure(digest);
    assert.equal(fetches, 1, "a cached artifact is not fetched again");
    const wrong = `sha256-${"a".repeat(64)}`;
    await assert.rejects(cache.ensure(wrong), { code: "ARTIFACT_DIGEST_MISMATCH" });
    assert.ok(!(await readdir(join(root, "cache"))).includes(wrong), "nothing is cached under a digest that did not verify");
    await assert.rejects(cache.ensure("../../etc"), { code: "INVALID_ARGUMENT" });
    await assert.rejects(createArtifactCache(join(root, "c2"), async () => Readable.from([Buffer.from("not a tarball")])).ensure(digest), { code: "INVALID_ARCHIVE" });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("convergence: a node that missed a push catches up at its next resync", async (t) => {
  const runtimePath = resolve("dist/runtime.cjs");
  assert.ok(existsSync(runtimePath), "dist/runtime.cjs missing: run `npm run build` first");
  const RESYNC_MS = 1_500;
  const root = await mkdtemp(join(tmpdir(), "st-cv-"));
  const secret = "convergence-test-secret-0123456789";
  const config = resolvePlatformConfig({ flags: { port: 0, dataDir: join(root, "c"), logLevel: "silent" } });
  const control = createControlPlane(config, { logger: createSilentLogger(), nodeSecret: secret, listen: true });
  const driver = createProcessDriver({ runtimePath, stateDir: join(root, "run"), cgroupRoot: `stratus-cvtest-${process.pid}` });
  let agent: ReturnType<typeof createNodeAgent> | null = null;
  try {
    const { url, adminToken } = await control.start();
    agent = createNodeAgent({
      driver, logger: createSilentLogger(),
      control: { url: url!, secret, nodeId: "cv-node", dataDir: join(root, "n"), resyncIntervalMs: RESYNC_MS },
    });
    const { port } = await agent.start({ port: 0 });
    const fnUrl = `http://127.0.0.1:${port}/fn/cv/`;
    const d = await deploy({ url: url!, token: adminToken! }, await project({ "index.js": `module.exports.cv = { handler: async () => process.env.MODE ?? "none" };` }));
    assert.equal(d.final?.type, "result", JSON.stringify(d.events));
    assert.equal(await (await fetch(fnUrl)).text(), "none");
    const revBefore = agent.revision!.revision;

    // Make every push fail: the same node says hello again with an address nothing listens on.
    const asNode = createLinkClient(url!, deriveLinkKeys(secret).node, "control plane");
    await asNode.call("POST", "/internal/v1/nodes/hello", { nodeId: "cv-node", url: "http://127.0.0.1:9", driver: "process" });
    await asNode.close();
    const patchedAt = Date.now();
    const patched = await fetch(`${url}/api/v1/functions/cv/env`, {
      method: "PATCH", headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" }, body: JSON.stringify({ set: { MODE: "resynced" } }),
    });
    assert.equal(patched.status, 200);
    const right = await (await fetch(fnUrl)).text();
    // Only meaningful before the next resync could have run (a loaded machine can take longer than that).
    if (Date.now() - patchedAt < RESYNC_MS) assert.equal(right, "none", "the push was lost: still the old env right after the change");
    else t.diagnostic(`the check right after the change took ${Date.now() - patchedAt} ms (≥ the resync period): not asserted`);
    const deadline = Date.now() + 5_000;
    let text = "";
    while (Date.now() < deadline) {
      text = await (await fetch(fnUrl)).text();
      if (text === "resynced") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(text, "resynced", "the resync applied the newer revision");
    assert.ok(agent.revision!.revision > revBefore);
  } finally {
    await agent?.close();
    await control.close();
    await rm(root, { recursive: true, force: true });
  }
});

test("discovery bundles: two builds of identical code publish one digest; each unpublishes only its own, the other is still served", async () => {
  const root = await mkdtemp(join(tmpdir(), "st-pb-"));
  const secret = "publish-bundle-test-secret-0123456789";
  const config = resolvePlatformConfig({ flags: { port: 0, dataDir: join(root, "c"), logLevel: "silent" } });
  const control = createControlPlane(config, { logger: createSilentLogger(), nodeSecret: secret, listen: true });
  const asNode = { client: null as ReturnType<typeof createLinkClient> | null };
  try {
    const { url } = await control.start();
    // Two work dirs with the same tree, as two concurrent deploys of one project have.
    const dirs = [join(root, "w1"), join(root, "w2")];
    for (const d of dirs) {
      await mkdir(d);
      await writeFile(join(d, "index.js"), "module.exports.f = () => 'same';\n");
    }
    const digest = await digestTree(dirs[0]!);
    assert.equal(await digestTree(dirs[1]!), digest);
    asNode.client = createLinkClient(url!, deriveLinkKeys(secret).node, "control plane");
    const client = asNode.client;
    const fetchDigest = async (): Promise<string> => {
      const cache = createArtifactCache(await mkdtemp(join(root, "cache-")), (d) => client.stream(`/internal/v1/artifacts/${d}`));
      const t = await cache.fetchTemp(digest);
      try {
        return await digestTree(t.dir);
      } finally {
        await t.cleanup();
      }
    };
    const unpublishFirst = control.fleet!.publishBundle(digest, dirs[0]!);
    const unpublishSecond = control.fleet!.publishBundle(digest, dirs[1]!);
    assert.equal(await fetchDigest(), digest);
    // The second build ends first and removes its work dir: the first one's discovery still fetches.
    unpublishSecond();
    await rm(dirs[1]!, { recursive: true });
    assert.equal(await fetchDigest(), digest, "the first build's bundle is still published");
    unpublishSecond(); // twice: no effect on the other's
    assert.equal(await fetchDigest(), digest);
    unpublishFirst();
    await assert.rejects(fetchDigest(), (err: { code?: string }) => err.code === "NOT_FOUND", "nothing published any more");
  } finally {
    await asNode.client?.close();
    await control.close();
    await rm(root, { recursive: true, force: true });
  }
});

test("telemetry keeps every field of an output line, the output-dropped marker's counts included", () => {
  const line = { ts: 1, stream: "stderr" as const, level: "warn", message: "[output-dropped] 5 lines (50 bytes)…", instanceId: "i-1", requestId: "r-1", dropped: { lines: 5, bytes: 50 } };
  const batch = TelemetryBatchSchema.parse({ nodeId: "n", items: [{ kind: "line", functionName: "f", line }], dropped: 0, pools: {} });
  assert.deepEqual(batch.items[0], { kind: "line", functionName: "f", line });
});

test("async dispatch goes only to nodes that reported applying this control-plane run's state", async () => {
  const { createNodeFleet } = await import("../src/control/node-fleet");
  const { openStore } = await import("../src/store/open-store");
  const { createServer } = await import("node:http");
  const { randomBytes } = await import("node:crypto");
  const root = await mkdtemp(join(tmpdir(), "st-dt-"));
  const store = await openStore(join(root, "s.db"), { masterKey: randomBytes(32) });
  const secret = "dispatch-target-test-secret-0123456789";
  const fleet = createNodeFleet({
    secret, membership: store, controlKeyOf: () => "", logger: createSilentLogger(), artifactsDir: join(root, "a"),
    ingest: () => {}, buildState: async () => ({ functions: [], tokenHashes: [] }),
  });
  const server = createServer((req, res) => fleet.handle(req, res));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const asNode = createLinkClient(url, deriveLinkKeys(secret).node, "control plane");
  const load = { inFlight: 0, queued: 0, instances: 0, memUsedBytes: 0, memFreeBytes: 1e9, warm: [] };
  try {
    const hello = { nodeId: "n1", url: "http://127.0.0.1:9", driver: "process", gatewayUrl: "http://127.0.0.1:19" };
    const state = await asNode.call<{ controlId: string; revision: number }>("POST", "/internal/v1/nodes/hello", hello);
    assert.equal(fleet.dispatchTarget(), null, "connected, but nothing applied yet: no dispatch");
    const beat = (applied?: object) => asNode.call("POST", "/internal/v1/nodes/heartbeat", { nodeId: "n1", url: hello.url, load, ...(applied ? { applied } : {}) });
    await beat({ controlId: "another-run", revision: state.revision, complete: true });
    assert.equal(fleet.dispatchTarget(), null, "a report about another control-plane run does not count");
    await beat({ controlId: state.controlId, revision: state.revision, complete: true });
    assert.equal(fleet.dispatchTarget(), hello.gatewayUrl, "applied this run's state: dispatchable");
    await asNode.call("POST", "/internal/v1/nodes/hello", hello);
    assert.equal(fleet.dispatchTarget(), null, "a hello again (a restarted node) resets it until it reports again");
    await beat({ controlId: state.controlId, revision: state.revision, complete: false });
    assert.equal(fleet.dispatchTarget(), hello.gatewayUrl, "an incomplete apply still serves the functions it has, when no node is complete");
  } finally {
    await asNode.close();
    await fleet.close();
    await new Promise((r) => server.close(r));
    await store.close();
    await rm(root, { recursive: true, force: true });
  }
});

test("telemetry: an invocation record's trigger, eventId and attempt cross the wire; a previous node's record without them reads as nulls", () => {
  const base = {
    requestId: "r", functionName: "f", version: "v1", instanceId: null, nodeId: "n", coldStart: false, queueMs: 0, startMs: 0, initMs: null,
    handlerMs: 1, totalMs: 1, status: 200, errorCode: null, bytesIn: 0, bytesOut: 0, peakMemoryBytes: null, traceparent: "00-x", ts: 1,
  };
  const parse = (record: object) => TelemetryBatchSchema.parse({ nodeId: "n", items: [{ kind: "invocation", record }], dropped: 0, pools: {} }).items[0];
  const event = { ...base, trigger: "f#0:abcd1234", eventId: "f#0:abcd1234@2026-03-01T12:00:00.000Z", attempt: 2 };
  assert.deepEqual(parse(event), { kind: "invocation", record: event });
  assert.deepEqual(parse(base), { kind: "invocation", record: { ...base, trigger: null, eventId: null, attempt: null } });
  assert.throws(() => parse({ ...base, attempt: 0 }), "attempts are 1-based");
  assert.throws(() => parse({ ...base, eventId: "x".repeat(513) }), "the gateway cuts event ids to 512");
});
