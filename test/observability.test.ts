// Observability against the real process driver (bubblewrap + cgroups), the real runtime, the gateway,
// a real SQLite store and the real API app: invocation records, the log stream, error groups, live
// tails, truncation, retention, traceparent, /metrics.
// Needs root, bubblewrap and util-linux setpriv (Debian: apt-get install bubblewrap util-linux) and `npm run build`.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { AddressInfo } from "node:net";
import { Agent, request } from "undici";
import { createProcessDriver, type ProcessDriver } from "../src/sandbox/process/process-driver";
import { parseFunctionConfig } from "../src/shared/function-config";
import { createSilentLogger } from "../src/shared/logger";
import { createGateway, type Gateway } from "../src/gateway/gateway";
import { openSqliteStore } from "../src/store/sqlite/sqlite-store";
import type { Store } from "../src/store/store";
import { createObservability, type Observability } from "../src/observe/observer";
import { isValidTraceparent } from "../src/shared/traceparent";
import { createApiApp } from "../src/control/api";
import type { ApiContext } from "../src/control/api-context";
import type { InvocationRecord, LogEntry, StoredLogEntry } from "../src/shared/invocation";

const RUNTIME = resolve("dist/runtime.cjs");
const FIXTURES = resolve("test/fixtures/observe");
const FUNCTIONS = ["hello", "chatty", "slowLogger", "thrower", "crasher", "hang", "memoryBomb"];
const MAX_LINES = 50;
const MAX_LINE_BYTES = 1024;

let dir: string;
let driver: ProcessDriver;
let gateway: Gateway;
let store: Store;
let observe: Observability;
let base: string;
let api: Server;
let apiBase: string;
let token: string;
const agent = new Agent({ connections: 16 });

async function call(path: string, headers: Record<string, string> = {}) {
  const r = await request(`${base}${path}`, { dispatcher: agent, headers });
  const text = await r.body.text();
  return { status: r.statusCode, rid: String(r.headers["x-stratus-request-id"]), text };
}

/** Polls `read` (flushing the telemetry buffer first) until `ok` holds. Generous: the machine is shared. */
async function eventually<T>(read: () => Promise<T>, ok: (v: T) => boolean, what: string, timeoutMs = 20_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    await observe.flush();
    const v = await read();
    if (ok(v)) return v;
    assert.ok(Date.now() - t0 < timeoutMs, `timed out waiting for: ${what} (last: ${JSON.stringify(v).slice(0, 500)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const recordOf = (fn: string, rid: string) =>
  eventually(() => store.queryInvocations(fn, { requestId: rid }), (r) => r.length === 1, `record of ${rid}`).then((r) => r[0]!);
const linesOf = (fn: string, pred: (l: StoredLogEntry[]) => boolean, what: string) =>
  eventually(() => store.queryLogs(fn, { limit: 10_000 }), pred, what);

before(async () => {
  assert.ok(existsSync(RUNTIME), "dist/runtime.cjs missing: run `npm run build` first");
  dir = mkdtempSync(join(tmpdir(), "sob-"));
  driver = createProcessDriver({ runtimePath: RUNTIME, stateDir: join(dir, "r"), cgroupRoot: `stratus-obstest-${process.pid}`, pidsMax: 64 });
  void driver.open(); // nothing runs before open(); the pool starts filling now
  await driver.reconcile();
  store = openSqliteStore({ file: join(dir, "s.db"), masterKey: new Uint8Array(32).fill(7) });
  observe = createObservability({
    store, logger: createSilentLogger(),
    settings: { maxLinesPerInvocation: MAX_LINES, maxLineBytes: MAX_LINE_BYTES, flushIntervalMs: 50 },
  });
  gateway = createGateway({ driver, logger: createSilentLogger(), observer: observe.observer, nodeId: "node-a", limits: { sweepIntervalMs: 50, timeoutGraceMs: 1000 } });
  observe.setPoolStats(() => gateway.stats());
  for (const name of FUNCTIONS) {
    gateway.setFunction({ name, version: "v1", artifactDir: FIXTURES, entry: "functions.js", exportName: name, config: parseFunctionConfig(name, name === "hang" ? { timeout: 500 } : name === "memoryBomb" ? { memory: 64, timeout: 20_000 } : {}), env: {} });
    await store.ensureFunction(name);
  }
  await new Promise<void>((r) => gateway.server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}/fn`;
  const ctx = { store, logger: createSilentLogger(), observability: observe } as unknown as ApiContext;
  api = createServer(createApiApp(ctx));
  await new Promise<void>((r) => api.listen(0, "127.0.0.1", r));
  apiBase = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  token = (await store.createToken("t")).token;
});

after(async () => {
  api.closeAllConnections();
  await new Promise((r) => api.close(r));
  await gateway.close();
  await driver.close();
  await observe.close();
  await store.close();
  await agent.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("invocation records and the log stream", () => {
  test("a cold then a warm invocation: every field of the record, lines tagged, REPORT and platform events", async () => {
    const a = await call("/hello/a");
    const b = await call("/hello/b");
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    const cold = await recordOf("hello", a.rid);
    const warm = await recordOf("hello", b.rid);
    assert.equal(cold.coldStart, true);
    assert.ok(cold.startMs > 0, "a cold start has a start time");
    assert.ok(cold.initMs !== null && cold.initMs > 0 && cold.initMs < cold.startMs, `init time ${cold.initMs} within start ${cold.startMs}`);
    assert.equal(warm.coldStart, false);
    assert.equal(warm.startMs, 0);
    assert.equal(warm.initMs, null);
    assert.equal(warm.instanceId, cold.instanceId, "the warm request reuses the instance");
    for (const r of [cold, warm]) {
      assert.equal(r.functionName, "hello");
      assert.equal(r.version, "v1");
      assert.equal(r.nodeId, "node-a");
      assert.equal(r.status, 200);
      assert.equal(r.errorCode, null);
      assert.deepEqual([r.trigger, r.eventId, r.attempt], [null, null, null], "not an event dispatch");
      assert.equal(r.bytesIn, 0);
      assert.equal(r.bytesOut, Buffer.byteLength(r === cold ? a.text : b.text));
      assert.ok(r.handlerMs > 0 && r.totalMs >= r.handlerMs, `durations ${r.handlerMs} ${r.totalMs}`);
      assert.ok(r.queueMs >= 0);
      assert.ok(r.peakMemoryBytes !== null && r.peakMemoryBytes > 1024 * 1024, `peak memory ${r.peakMemoryBytes}`);
      assert.ok(isValidTraceparent(r.traceparent));
      assert.ok(Math.abs(r.ts - Date.now()) < 60_000);
    }
    const lines = await linesOf("hello", (l) => l.filter((x) => x.message.startsWith("REPORT")).length >= 2 && l.some((x) => x.message === "hello from /b"), "lines of both");
    const out = lines.find((l) => l.message === "hello from /a")!;
    assert.deepEqual({ rid: out.requestId, inst: out.instanceId, src: out.source, lvl: out.level }, { rid: a.rid, inst: cold.instanceId, src: "function", lvl: "info" });
    const report = lines.find((l) => l.message.startsWith(`REPORT RequestId: ${a.rid}`))!;
    assert.equal(report.source, "platform");
    assert.match(report.message, /Status: 200\tDuration: [\d.]+ ms.*Start: [\d.]+ ms \(cold\).*Max Memory Used: \d+ MB/);
    assert.ok(lines.some((l) => l.source === "platform" && l.message.startsWith("[instance-started]") && l.instanceId === cold.instanceId));
    assert.ok(lines.some((l) => l.source === "platform" && l.message.startsWith("[version-activated] version v1")));
  });

  test("traceparent: a valid one is propagated and recorded; a malformed one is replaced and its tracestate dropped", async () => {
    const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const ok = await call("/hello/t", { traceparent: tp, tracestate: "vendor=x" });
    assert.deepEqual(JSON.parse(ok.text), { traceparent: tp, tracestate: "vendor=x" });
    assert.equal((await recordOf("hello", ok.rid)).traceparent, tp);
    const bad = await call("/hello/t", { traceparent: "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", tracestate: "vendor=x" });
    const seen = JSON.parse(bad.text) as { traceparent: string; tracestate: string | null };
    assert.ok(isValidTraceparent(seen.traceparent));
    assert.notEqual(seen.traceparent.slice(3, 35), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert.equal(seen.tracestate, null);
    assert.equal((await recordOf("hello", bad.rid)).traceparent, seen.traceparent);
  });

  test("a crash, a timeout and an out-of-memory kill: codes in the records, platform events in the stream", async () => {
    const [crash, hang, oom] = await Promise.all([call("/crasher"), call("/hang"), call("/memoryBomb")]);
    assert.equal(crash.status, 502);
    assert.equal(hang.status, 504);
    assert.equal(oom.status, 502);
    assert.equal((await recordOf("crasher", crash.rid)).errorCode, "FUNCTION_CRASHED");
    assert.equal((await recordOf("hang", hang.rid)).errorCode, "FUNCTION_TIMEOUT");
    const oomRecord = await recordOf("memoryBomb", oom.rid);
    assert.equal(oomRecord.errorCode, "FUNCTION_OUT_OF_MEMORY");
    assert.equal(oomRecord.status, 502);
    await linesOf("crasher", (l) => l.some((x) => x.source === "platform" && x.level === "error" && x.message.startsWith("[instance-crashed]")), "crash event");
    await linesOf("hang", (l) => l.some((x) => x.source === "platform" && x.message.startsWith("[invocation-timed-out]") && x.requestId === hang.rid), "timeout event");
    await linesOf("memoryBomb", (l) => l.some((x) => x.source === "platform" && x.level === "error" && x.message.startsWith("[instance-out-of-memory]")), "oom event");
  });

  test("error groups: the same failure with different ids is one group with a count", async () => {
    const rids: string[] = [];
    // The first asks as a JSON client (the envelope), the second as curl does (Accept: */*), the third with
    // no Accept (text, as on Cloud Functions): both text bodies are still recorded under their code.
    const accepts: Record<string, Record<string, string>> = { "17": { accept: "application/json" }, "4242": { accept: "*/*" }, "99999": {} };
    for (const id of ["17", "4242", "99999"]) {
      const r = await call(`/thrower?id=${id}`, accepts[id]);
      assert.equal(r.status, 500);
      if (id === "17") assert.equal(JSON.parse(r.text).error.code, "FUNCTION_ERROR");
      else assert.match(r.text, /^FUNCTION_ERROR: /);
      rids.push(r.rid);
    }
    const groups = await eventually(() => store.listErrorGroups("thrower"), (g) => g.length === 1 && g[0]!.count === 3, "one group of 3");
    const g = groups[0]!;
    assert.equal(g.code, "FUNCTION_ERROR");
    assert.equal(g.messageShape, "Error: order <n> not found (ref <hex>)");
    assert.match(g.topFrame ?? "", /functions\.js:\d+/);
    assert.equal(g.sampleRequestId, rids[2]);
    assert.ok(g.firstSeen <= g.lastSeen);
  });

  test("truncation: a long line is cut, lines past the per-invocation cap are dropped with a visible marker", async () => {
    const long = await call(`/chatty?n=0&long=${MAX_LINE_BYTES * 3}`);
    const cut = await linesOf("chatty", (l) => l.some((x) => x.requestId === long.rid && x.source === "function"), "long line");
    const line = cut.find((x) => x.requestId === long.rid && x.source === "function")!;
    assert.ok(line.message.endsWith(`… [truncated ${MAX_LINE_BYTES * 2} bytes]`), line.message.slice(-60));

    const many = await call(`/chatty?n=${MAX_LINES + 30}`);
    const all = await linesOf("chatty", (l) => {
      const markers = l.filter((x) => x.requestId === many.rid && x.source === "platform" && x.message.includes("truncated"));
      return markers.reduce((n, m) => n + Number(/\[… (\d+)/.exec(m.message)?.[1] ?? 0), 0) === 30;
    }, "markers counting 30 dropped lines");
    const kept = all.filter((x) => x.requestId === many.rid && x.source === "function");
    assert.equal(kept.length, MAX_LINES);
    assert.equal(kept[0]!.message, "line 0");
    assert.match(await observe.metrics.render(), /stratus_log_lines_dropped_total\{reason="invocation_cap"\} 30/);
  });
});

describe("live tail, API and metrics", () => {
  test("GET …/logs?follow=1 receives a line while the invocation is still running", async () => {
    const res = await request(`${apiBase}/api/v1/functions/slowLogger/logs?follow=1`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers["content-type"]), /text\/event-stream/);
    const got: LogEntry[] = [];
    let buf = "";
    let resolveFirst!: () => void;
    const first = new Promise<void>((r) => (resolveFirst = r));
    res.body.on("data", (chunk: Buffer) => {
      buf += chunk.toString("utf8");
      let i;
      while ((i = buf.indexOf("\n\n")) !== -1) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = event.split("\n").find((l) => l.startsWith("data: "));
        if (data !== undefined) got.push(JSON.parse(data.slice(6)) as LogEntry);
        if (got.some((e) => e.message === "first")) resolveFirst();
      }
    });
    let finished = false;
    const invocation = call("/slowLogger?ms=1500").then((r) => ((finished = true), r));
    await first;
    assert.equal(finished, false, "the line arrived before the invocation ended");
    const r = await invocation;
    assert.equal(got.find((e) => e.message === "first")!.requestId, r.rid);
    res.body.destroy();
  });

  test("GET …/logs, …/invocations, …/errors with filters", async () => {
    const auth = { authorization: `Bearer ${token}` };
    const get = async (path: string) => {
      const r = await request(`${apiBase}${path}`, { headers: auth });
      return { status: r.statusCode, json: (await r.body.json()) as Record<string, unknown[]> };
    };
    const one = await call("/hello/api");
    await recordOf("hello", one.rid);
    await linesOf("hello", (l) => l.some((x) => x.requestId === one.rid && x.message.startsWith("REPORT")), "report of api call");
    const logs = await get(`/api/v1/functions/hello/logs?request=${one.rid}`);
    assert.equal(logs.status, 200);
    assert.deepEqual((logs.json.lines as LogEntry[]).map((l) => l.source), ["function", "platform"]);
    const warn = await get("/api/v1/functions/hang/logs?level=error&since=10m");
    assert.ok((warn.json.lines as LogEntry[]).length > 0 && (warn.json.lines as LogEntry[]).every((l) => l.level === "error"));
    const cold = await get("/api/v1/functions/hello/invocations?cold=1");
    assert.ok((cold.json.invocations as InvocationRecord[]).length >= 1 && (cold.json.invocations as InvocationRecord[]).every((r) => r.coldStart));
    const fails = await get("/api/v1/functions/thrower/invocations?status=5xx&slowerThanMs=0");
    assert.ok((fails.json.invocations as InvocationRecord[]).length >= 3);
    const errors = await get("/api/v1/functions/thrower/errors");
    assert.equal((errors.json.groups as unknown[]).length, 1);
    assert.equal((await get("/api/v1/functions/hello/logs?since=yesterday-ish")).status, 400);
    assert.equal((await get("/api/v1/functions/nope/logs")).status, 404);
  });

  test("/metrics needs a token and exposes the documented names with sane values", async () => {
    assert.equal((await request(`${apiBase}/metrics`)).statusCode, 401);
    const r = await request(`${apiBase}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(r.statusCode, 200);
    const text = await r.body.text();
    const value = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
    assert.ok(value(/^stratus_invocations_total\{function="hello",status_class="2xx",code="none"\} (\d+)/m) >= 4);
    assert.equal(value(/^stratus_invocations_total\{function="thrower",status_class="5xx",code="FUNCTION_ERROR"\} (\d+)/m), 3);
    assert.ok(value(/^stratus_cold_starts_total\{function="hello"\} (\d+)/m) >= 1);
    assert.ok(value(/^stratus_invocation_duration_seconds_count\{function="hello"\} (\d+)/m) >= 4);
    assert.ok(value(/^stratus_handler_duration_seconds_count\{function="hello"\} (\d+)/m) >= 4);
    assert.ok(value(/^stratus_queue_wait_seconds_count\{function="hello"\} (\d+)/m) >= 4);
    assert.equal(value(/^stratus_instance_oom_total\{function="memoryBomb"\} (\d+)/m), 1);
    assert.equal(value(/^stratus_invocation_timeouts_total\{function="hang"\} (\d+)/m), 1);
    assert.ok(value(/^stratus_instance_crashes_total\{function="crasher"\} (\d+)/m) >= 1);
    assert.equal(value(/^stratus_queue_depth\{function="hello"\} (\d+)/m), 0);
    assert.equal(value(/^stratus_instances\{function="hello",state="idle"\} (\d+)/m), 1);
    assert.match(text, /^stratus_log_lines_dropped_total\{reason="buffer_full"\} 0$/m);
    assert.match(text, /^process_cpu_seconds_total /m);
  });
});

test("retention: the periodic purge deletes rows older than retentionMs", async () => {
  const d = mkdtempSync(join(tmpdir(), "sob-ret-"));
  const s = openSqliteStore({ file: join(d, "s.db"), masterKey: new Uint8Array(32).fill(1) });
  let clock = 1_000_000_000_000;
  const o = createObservability({ store: s, logger: createSilentLogger(), defaultMetrics: false, now: () => clock, settings: { retentionMs: 60_000 } });
  try {
    o.observer.onPlatformEvent({ ts: clock, functionName: "f", kind: "version-activated", level: "info", instanceId: null, requestId: null, message: "old" });
    await o.flush();
    clock += 120_000;
    o.observer.onPlatformEvent({ ts: clock, functionName: "f", kind: "version-activated", level: "info", instanceId: null, requestId: null, message: "new" });
    const deleted = await o.purge();
    assert.equal(deleted.logs, 1);
    assert.deepEqual((await s.queryLogs("f")).map((l) => l.message), ["[version-activated] new"]);
  } finally {
    await o.close();
    await s.close();
    rmSync(d, { recursive: true, force: true });
  }
});
