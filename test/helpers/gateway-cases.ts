// The gateway's integration cases, run once per sandbox driver (as src/sandbox/conformance.ts is):
// test/gateway.test.ts (process driver) and test/gateway-docker.test.ts (Docker driver) call
// `runGatewayCases` with a driver factory. Real driver, real runtime (dist/runtime.cjs, `npm run build`).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { request as httpRequest } from "node:http";
import { resolve } from "node:path";
import type { AddressInfo } from "node:net";
import { once } from "node:events";
import { Agent, request } from "undici";
import type { SandboxDriver } from "../../src/sandbox/driver";
import { parseFunctionConfig, type FunctionConfigInput } from "../../src/shared/function-config";
import { createSilentLogger } from "../../src/shared/logger";
import { createGateway, type Gateway } from "../../src/gateway/gateway";
import type { Deployment } from "../../src/gateway/deployment";

const RUNTIME = resolve("dist/runtime.cjs");
/** The fixture module of every case: test/fixtures/gateway/functions.js (and broken.js). */
export const GATEWAY_FIXTURES = resolve("test/fixtures/gateway");
const CONFIGS: Record<string, FunctionConfigInput> = {
  sleeper: { maxInstances: 5, timeout: 30_000 },
  limited: { maxInstances: 2, maxQueue: 8, queueTimeout: 20_000, idleTimeout: 1000 },
  tinyQueue: { minInstances: 1, maxInstances: 1, maxQueue: 1, queueTimeout: 300, timeout: 30_000 },
  hang: { timeout: 500 },
  memoryBomb: { memory: 64, timeout: 20_000 },
  forkBomb: { timeout: 20_000 },
  exiter: {},
  echo: { maxBodyBytes: 1024 },
  private: { public: false },
  spin: { timeout: 300 },
  stream: {},
  abortable: { maxInstances: 1, timeout: 30_000 },
};
/** The gateway's disconnectGraceMs in these cases: shorter than `slowMs`, longer than a loaded machine's hiccups. */
const DISCONNECT_GRACE_MS = 1000;

/** A driver for the cases, and what the deploy pipeline does with it before the gateway serves a version. */
export interface GatewayDriverFixture {
  readonly driver: SandboxDriver;
  /**
   * Makes a deployment runnable on this driver, as the control plane's activation does before
   * `setFunction` (Docker: `prepare()` builds and pushes the image and the deployment gets `image`).
   */
  prepare(deployment: Deployment): Promise<Deployment>;
  /** Removes what the fixture created (the gateway has already closed its instances). */
  cleanup(): Promise<void>;
}

/** Per-driver timing of the cases. */
export interface GatewayCaseOptions {
  /**
   * How long a "slow" handler sleeps, ms: longer than any cold start on this driver under load, so
   * that an instance which is busy with it stays busy while other instances start.
   */
  readonly slowMs: number;
}

/**
 * Registers the gateway's integration cases (routing, pool, failures, limits, drain) against the
 * driver `setup` creates. Call it once per test file, at the top level.
 */
export function runGatewayCases(setup: () => Promise<GatewayDriverFixture>, options: GatewayCaseOptions): void {
  const { slowMs } = options;
  function deployment(name: string, version = "v1"): Deployment {
    return { name, version, artifactDir: GATEWAY_FIXTURES, entry: "functions.js", exportName: name, config: parseFunctionConfig(name, CONFIGS[name]), env: {} };
  }

  let fixture: GatewayDriverFixture;
  let gateway: Gateway;
  let base: string;
  // Many connections: parallel requests must not be serialized by the client.
  const agent = new Agent({ connections: 64 });

  async function deploy(d: Deployment): Promise<void> {
    gateway.setFunction(await fixture.prepare(d));
  }

  async function call(path: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) {
    const r = await request(`${base}${path}`, { dispatcher: agent, method: (init.method ?? "GET") as "GET", headers: init.headers, body: init.body });
    const text = await r.body.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return { status: r.statusCode, headers: r.headers, text, json: json as Record<string, unknown> & { error?: { code: string; requestId?: string } } };
  }

  /**
   * Polls a condition (the gateway's own counters) until true. The machine is shared and often loaded
   * (load average 30+ on 2 cores was seen), so the margin is generous; it only costs time on failure.
   */
  async function waitFor(cond: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    const t0 = Date.now();
    while (!cond()) {
      assert.ok(Date.now() - t0 < timeoutMs, `timed out waiting for: ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  before(async () => {
    assert.ok(existsSync(RUNTIME), "dist/runtime.cjs missing: run `npm run build` first");
    fixture = await setup();
    gateway = createGateway({
      driver: fixture.driver,
      logger: createSilentLogger(),
      limits: { sweepIntervalMs: 50, maxHeaderBytes: 4096, headersTimeoutMs: 500, requestTimeoutMs: 1000, connectionsCheckingIntervalMs: 100, timeoutGraceMs: 1000, disconnectGraceMs: DISCONNECT_GRACE_MS },
    });
    for (const name of Object.keys(CONFIGS)) await deploy(deployment(name));
    gateway.server.listen(0, "127.0.0.1");
    await once(gateway.server, "listening");
    base = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await gateway?.close();
    await fixture?.cleanup();
    await agent.close();
  });

  describe("routing and headers", () => {
    test("400 for a bad name, 404 for an unknown function and an unknown path", async () => {
      const bad = await call("/fn/1bad/x");
      assert.equal(bad.status, 400);
      assert.equal(bad.json.error?.code, "INVALID_FUNCTION_NAME");
      assert.equal(bad.headers["x-stratus-error-source"], "platform");
      const unknown = await call("/fn/nope");
      assert.equal(unknown.status, 404);
      assert.equal(unknown.json.error?.code, "FUNCTION_NOT_FOUND");
      assert.equal(unknown.json.error?.requestId, unknown.headers["x-stratus-request-id"]);
      assert.equal((await call("/elsewhere")).status, 404);
    });

    test("path and query forwarded; request id, cold start and Server-Timing on every response", async () => {
      const r = await call("/fn/sleeper/a/b?x=1", { headers: { "x-stratus-request-id": "my-req-1", "x-stratus-instance-unusable": "1" } });
      assert.equal(r.status, 200);
      assert.equal(r.json.path, "/a/b");
      assert.deepEqual(r.json.query, { x: "1" });
      assert.equal(r.json.requestId, "my-req-1");
      assert.equal(r.json.forged, null, "client x-stratus-* headers are stripped");
      assert.equal(r.headers["x-stratus-request-id"], "my-req-1");
      assert.match(String(r.headers["x-stratus-cold-start"]), /^(true|false)$/);
      assert.match(String(r.headers["server-timing"]), /^queue;dur=[\d.]+, start;dur=[\d.]+, handler;dur=[\d.]+/);
      const root = await call("/fn/sleeper");
      assert.equal(root.json.path, "/");
      assert.equal(root.headers["x-stratus-cold-start"], "false", "second request is warm");
    });

    test("a large streamed response reaches a slow reader intact; repeated headers and the function's Server-Timing kept", async () => {
      const r = await request(`${base}/fn/stream?mib=8`, { dispatcher: agent });
      assert.equal(r.statusCode, 200);
      assert.deepEqual(r.headers["set-cookie"], ["a=1", "b=2"]);
      assert.match(String(r.headers["server-timing"]), /^queue;dur=[\d.]+, start;dur=[\d.]+, handler;dur=[\d.]+, fn;dur=1$/);
      assert.equal(r.headers["content-length"], undefined, "chunked, not buffered");
      let seen = 0;
      let bad = -1;
      for await (const chunk of r.body as AsyncIterable<Buffer>) {
        for (let i = 0; i < chunk.length && bad < 0; i++) if (chunk[i] !== (seen + i) % 251) bad = seen + i;
        seen += chunk.length;
        // Slower than the instance writes, so the gateway has to pause it (backpressure).
        await new Promise((resolveTick) => setImmediate(resolveTick));
      }
      assert.equal(bad, -1, "every byte in order");
      assert.equal(seen, 8 * 1024 * 1024);
      assert.equal((await call("/fn/stream?mib=0")).status, 200, "the instance is reused after a long stream");
    });

    test("non-public function: 401 by default", async () => {
      const r = await call("/fn/private", { headers: { authorization: "Bearer x" } });
      assert.equal(r.status, 401);
      assert.equal(r.json.error?.code, "UNAUTHENTICATED");
    });
  });

  describe("pool", () => {
    test("five parallel requests reach five fresh instances; the next one reuses a warm instance", async () => {
      // A new version so earlier tests' warm instances don't count.
      await deploy(deployment("sleeper", "v-par"));
      // Each handler outlasts every cold start (even on a loaded machine), so no instance frees up
      // early and takes a second request from the queue.
      const rs = await Promise.all([1, 2, 3, 4, 5].map(() => call(`/fn/sleeper?ms=${slowMs}`)));
      assert.deepEqual(rs.map((r) => r.status), [200, 200, 200, 200, 200]);
      const ids = new Set(rs.map((r) => r.json.instance));
      assert.equal(ids.size, 5, "five different instances");
      assert.ok(rs.every((r) => r.json.state === 1), "each saw fresh module state");
      assert.ok(rs.every((r) => r.headers["x-stratus-cold-start"] === "true"));
      const next = await call("/fn/sleeper");
      assert.ok(ids.has(next.json.instance), "reused a warm instance");
      assert.equal(next.json.state, 2, "and saw its state");
      assert.equal(next.headers["x-stratus-cold-start"], "false");
    });

    test("maxInstances 2: ten parallel requests all succeed on at most two instances; idle ones are reaped", async () => {
      let peak = 0;
      const watch = setInterval(() => (peak = Math.max(peak, gateway.stats().limited!.total)), 5);
      const rs = await Promise.all(Array.from({ length: 10 }, () => call("/fn/limited?ms=100")));
      clearInterval(watch);
      assert.deepEqual(rs.map((r) => r.status), Array(10).fill(200));
      assert.ok(new Set(rs.map((r) => r.json.instance)).size <= 2);
      assert.ok(peak <= 2, `peak ${peak} instances`);
      assert.ok(peak >= 1);
      // idleTimeout is 1000 ms, the sweep runs every 50 ms.
      await waitFor(() => gateway.stats().limited!.total === 0, "idle instances reaped");
    });

    test("full queue gives 429 with Retry-After; waiting past queueTimeout gives 503 QUEUE_TIMEOUT", async () => {
      // Long enough that the only instance stays busy while the queue fills and times out, even under load.
      // queueTimeout also bounds waiting for a cold start, so wait for the pre-warmed instance first.
      await waitFor(() => gateway.stats().tinyQueue?.ready === 1, "the minInstances instance ready");
      const busy = call(`/fn/tinyQueue?ms=${slowMs}`);
      await waitFor(() => gateway.stats().tinyQueue?.busy === 1, "the only instance busy");
      const queued = call("/fn/tinyQueue");
      await waitFor(() => gateway.stats().tinyQueue?.waiting === 1, "one request queued");
      const full = await call("/fn/tinyQueue");
      assert.equal(full.status, 429);
      assert.equal(full.json.error?.code, "QUEUE_FULL");
      assert.equal(full.headers["retry-after"], "1");
      // Single-node default: still 429, now also saying it was not executed (docs/gateway.md).
      assert.equal(full.headers["x-stratus-reject"], "overload");
      const timedOut = await queued;
      assert.equal(timedOut.status, 503);
      assert.equal(timedOut.json.error?.code, "QUEUE_TIMEOUT");
      assert.equal(timedOut.headers["x-stratus-reject"], "queue-timeout");
      assert.equal(timedOut.headers["retry-after"], "1");
      assert.equal((await busy).status, 200);
    });
  });

  describe("failures", () => {
    test("past its timeout: 504 and the instance is gone", async () => {
      const r = await call("/fn/hang");
      assert.equal(r.status, 504);
      assert.equal(r.json.error?.code, "FUNCTION_TIMEOUT");
      assert.equal(r.headers["x-stratus-error-source"], "function");
      assert.equal(r.headers["x-stratus-instance-unusable"], undefined, "internal header stripped");
      await waitFor(() => gateway.stats().hang!.total === 0, "timed-out instance gone");
    });

    test("a wedged instance (blocked event loop) hits the backstop: 504 and it is destroyed", async () => {
      const t0 = Date.now();
      const r = await call("/fn/spin");
      const tookMs = Date.now() - t0;
      assert.equal(r.status, 504);
      assert.equal(r.json.error?.code, "FUNCTION_TIMEOUT");
      // timeout 300 + grace 1000, on undici's coarse timers: a timer of d ms fires between d − 302 and
      // d + 197 ms after it is set (one 499 ms tick is credited at the first tick; undici/lib/util/timers.js).
      // 1178 ms was seen here (load 15), so the lower bound is d minus one tick: not before the backstop,
      // and not much later.
      assert.ok(tookMs >= 800 && tookMs < 20_000, `answered after ${tookMs} ms`);
      await waitFor(() => gateway.stats().spin!.total === 0, "wedged instance gone");
    });

    test("memory bomb: 502 FUNCTION_OUT_OF_MEMORY while another function keeps serving", async () => {
      const bomb = call("/fn/memoryBomb");
      const other = await call("/fn/sleeper?ms=10");
      assert.equal(other.status, 200);
      const r = await bomb;
      assert.equal(r.status, 502);
      assert.equal(r.json.error?.code, "FUNCTION_OUT_OF_MEMORY");
      assert.equal(r.headers["x-stratus-error-source"], "function");
      assert.equal((await call("/fn/sleeper")).status, 200);
    });

    test("fork bomb is contained by the pids limit", async () => {
      const r = await call("/fn/forkBomb");
      // Either the function survives with failed spawns, or the instance dies: never the node.
      if (r.status === 200) {
        const out = r.json as { failed: number; codes: string[] };
        assert.ok(out.failed > 0, "some spawns must fail under the pids limit");
        assert.deepEqual(out.codes, ["EAGAIN"], "and fail for lack of pids, nothing else");
      } else {
        assert.equal(r.status, 502);
      }
      assert.equal((await call("/fn/sleeper")).status, 200);
    });

    test("a module that fails to load: parallel and queued requests all get 502 FUNCTION_LOAD_FAILED, none hang", async () => {
      await deploy({ ...deployment("exiter"), name: "broken", entry: "broken.js", exportName: "broken", config: parseFunctionConfig("broken", { maxInstances: 1 }) });
      const rs = await Promise.all([1, 2, 3].map(() => call("/fn/broken")));
      for (const r of rs) {
        assert.equal(r.status, 502);
        assert.equal(r.json.error?.code, "FUNCTION_LOAD_FAILED");
        assert.equal(r.headers["x-stratus-error-source"], "function");
      }
      assert.equal(gateway.stats().broken!.total, 0);
      await gateway.removeFunction("broken");
      assert.equal((await call("/fn/broken")).status, 404);
    });

    test("process.exit() in a handler gives 502 and the next request works", async () => {
      const r = await call("/fn/exiter?exit=1");
      assert.equal(r.status, 502);
      assert.equal(r.json.error?.code, "FUNCTION_CRASHED");
      const next = await call("/fn/exiter");
      assert.equal(next.status, 200);
      assert.equal(next.text, "alive");
    });
  });

  describe("limits", () => {
    test("413 from Content-Length up front", async () => {
      const r = await call("/fn/echo", { method: "POST", body: "x".repeat(2000) });
      assert.equal(r.status, 413);
      assert.equal(r.json.error?.code, "PAYLOAD_TOO_LARGE");
      const ok = await call("/fn/echo", { method: "POST", body: "x".repeat(500) });
      assert.equal(ok.status, 200);
      assert.equal(ok.json.bytes, 500);
    });

    test("413 for a chunked body counted while streaming", async () => {
      const port = (gateway.server.address() as AddressInfo).port;
      const res = await new Promise<{ status: number; body: string }>((resolvePromise, reject) => {
        const req = httpRequest({ host: "127.0.0.1", port, method: "POST", path: "/fn/echo", headers: { "transfer-encoding": "chunked" } }, (r) => {
          let body = "";
          r.on("data", (c) => (body += c));
          r.on("end", () => resolvePromise({ status: r.statusCode ?? 0, body }));
        });
        req.on("error", reject);
        for (let i = 0; i < 4; i++) req.write("y".repeat(400));
        req.end();
      });
      assert.equal(res.status, 413);
      assert.equal(JSON.parse(res.body).error.code, "PAYLOAD_TOO_LARGE");
    });

    test("431 for oversized headers, with the common body", async () => {
      const r = await call("/fn/sleeper", { headers: { "x-big": "z".repeat(8000) } });
      assert.equal(r.status, 431);
      assert.equal(r.json.error?.code, "HEADERS_TOO_LARGE");
      assert.equal(r.headers["x-stratus-error-source"], "platform");
      assert.ok(r.headers["x-stratus-request-id"]);
    });

    test("408 for a client that never finishes its headers", async () => {
      const port = (gateway.server.address() as AddressInfo).port;
      const sock = connect(port, "127.0.0.1");
      sock.write("GET /fn/sleeper HTTP/1.1\r\nHost: x\r\n");
      let data = "";
      sock.on("data", (c) => (data += c));
      await once(sock, "close");
      assert.match(data, /^HTTP\/1\.1 408 /);
      assert.match(data, /"REQUEST_TIMEOUT"/);
    });

    test("a handler still running past the disconnect grace is destroyed; only the untouched instance serves", async () => {
      await deploy(deployment("sleeper", "v-abort"));
      assert.ok(slowMs > DISCONNECT_GRACE_MS);
      const ac = new AbortController();
      const p = request(`${base}/fn/sleeper?ms=${slowMs}`, { dispatcher: agent, signal: ac.signal }).catch((e: unknown) => e);
      await waitFor(() => gateway.stats().sleeper?.busy === 1, "the request reached an instance");
      const aborted = await call("/fn/sleeper"); // warm-up of a second instance while the first is busy
      ac.abort();
      await p;
      await waitFor(() => gateway.stats().sleeper!.busy === 0 && gateway.stats().sleeper!.total === 1, "abandoned instance destroyed");
      const next = await call("/fn/sleeper");
      assert.equal(next.status, 200);
      assert.equal(next.json.instance, aborted.json.instance, "only the untouched instance serves");
    });

    /** Starts a request to `abortable`, reads its first line (the handler runs), then disconnects. */
    async function disconnectWhileRunning(query: string): Promise<void> {
      const ac = new AbortController();
      const r = await request(`${base}/fn/abortable${query}`, { dispatcher: agent, signal: ac.signal });
      assert.equal(r.statusCode, 200);
      for await (const chunk of r.body) {
        assert.match(String(chunk), /^started/);
        break;
      }
      ac.abort();
      await r.body.text().catch(() => undefined);
    }

    test("a client disconnect aborts req.signal; the instance is reused, warm, once its handler returns", async () => {
      await deploy(deployment("abortable", "v-signal"));
      const first = await call("/fn/abortable?report=1");
      assert.equal(first.status, 200);
      await disconnectWhileRunning("");
      // maxInstances 1: this request waits for the instance the disconnected one held.
      const next = await call("/fn/abortable?report=1");
      assert.equal(next.status, 200, next.text);
      assert.equal(next.json.instance, first.json.instance, "the same instance serves the next request");
      assert.equal(next.headers["x-stratus-cold-start"], "false");
      assert.deepEqual(next.json.seen, { aborted: true, closed: true, signalAborted: true, reason: "AbortError" });
      assert.equal(gateway.stats().abortable!.total, 1);
    });

    test("a handler that ignores the disconnect but ends within the grace keeps its instance", async () => {
      await deploy(deployment("abortable", "v-ignore"));
      const first = await call("/fn/abortable?report=1");
      await disconnectWhileRunning("?ignore=200");
      const next = await call("/fn/abortable?report=1");
      assert.equal(next.status, 200, next.text);
      assert.equal(next.json.instance, first.json.instance);
      assert.equal(next.headers["x-stratus-cold-start"], "false");
      assert.equal((next.json.seen as { signalAborted: boolean }).signalAborted, false, "it never looked at the signal");
    });
  });

  describe("drain", () => {
    test("drain finishes an in-flight request and refuses new ones with 503", async () => {
      const inflight = call("/fn/sleeper?ms=1500");
      await waitFor(() => (gateway.stats().sleeper?.busy ?? 0) >= 1, "the request reached an instance");
      const drained = gateway.drain(10_000);
      const refused = await call("/fn/sleeper");
      assert.equal(refused.status, 503);
      assert.equal(refused.json.error?.code, "SHUTTING_DOWN");
      assert.equal(refused.headers.connection, "close");
      assert.equal(refused.headers["x-stratus-reject"], "draining");
      const readyz = await call("/readyz");
      assert.equal(readyz.status, 404, "draining: /readyz 404 (HAProxy disable-on-404)");
      const r = await inflight;
      assert.equal(r.status, 200, r.text);
      await drained;
      assert.equal(gateway.server.listening, false);
      assert.ok(Object.values(gateway.stats()).every((s) => s.total === 0), "every instance closed");
    });
  });
}
