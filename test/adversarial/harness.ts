// Shared helpers of the adversarial suites (test/adversarial/*.test.ts; the catalogue is
// /work/shared/SECURITY-CASES.md, summarised in docs/security.md). Every helper is driver-neutral:
//  - startStack(driver): a real sandbox driver (process: bubblewrap + cgroups; docker: a real engine
//    and registry), the real runtime, a real SQLite store with the observability pipeline, and the
//    gateway on 127.0.0.1:0 — what a node runs, without the control plane's build step.
//  - the canary function (a secret in its env, must keep answering 200) and the spy (counts requests);
//  - rawHttp(): byte-exact requests over net.Socket, answers parsed loosely (status line, headers, body);
//  - decoy listeners on loopback (TCP, UDP, an abstract Unix socket) that count hits;
//  - invariant checks: canary 200, no canary secret in any response / log line / store file, the
//    in-flight gauge back to 0, nothing left running (sandbox processes, containers).
// Traffic goes only to loopback. Every wait is bounded in count and time.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer, connect, type AddressInfo, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createGateway, type Gateway, type GatewayOptions } from "../../src/gateway/gateway";
import type { Deployment } from "../../src/gateway/deployment";
import type { GatewayLimitsInput } from "../../src/gateway/limits";
import { createObservability, type Observability } from "../../src/observe/observer";
import type { SandboxDriver } from "../../src/sandbox/driver";
import type { OutputRateLimits } from "../../src/sandbox/output-lines";
import { parseFunctionConfig, type FunctionConfigInput } from "../../src/shared/function-config";
import { createSilentLogger } from "../../src/shared/logger";
import { openSqliteStore } from "../../src/store/sqlite/sqlite-store";
import type { Store } from "../../src/store/store";

/** The process driver's sandbox subnet of this test process's stacks (10.253/16 is used by no other suite). */
const STACK_SUBNET = `10.253.${process.pid % 256}.0/24`;

export const RUNTIME = resolve("dist/runtime.cjs");
/** The fixture module of the suites. */
export const ADVERSARIAL_FIXTURES = resolve("test/fixtures/adversarial");

/** Configs of the fixture functions (what discovery would read from their `config`). */
export const FIXTURE_CONFIGS: Record<string, FunctionConfigInput> = {
  canary: { maxInstances: 2 },
  spy: { maxInstances: 1, maxQueue: 4, queueTimeout: 2000, timeout: 30_000, maxBodyBytes: 1024 },
  neighbour: { maxInstances: 1 },
  flooder: { maxInstances: 1 },
  desync: { maxInstances: 1 },
  crlf: {},
  suicide: { maxInstances: 1, timeout: 10_000 },
  slow: { maxInstances: 2, maxQueue: 3, queueTimeout: 5000, timeout: 30_000 },
  private: { public: false },
  envProbe: {},
};

export type DriverKind = "process" | "docker";

/** Secrets that must never leave where they were put. */
export interface Canaries {
  /** In the canary function's env only. */
  readonly functionSecret: string;
  /** In this test process's env only (what a platform's own env var is): never in an instance. */
  readonly platformSecret: string;
}

export interface Stack {
  readonly kind: DriverKind;
  readonly driver: SandboxDriver;
  readonly gateway: Gateway;
  readonly store: Store;
  readonly observe: Observability;
  readonly dataDir: string;
  readonly port: number;
  /** `http://127.0.0.1:<port>` */
  readonly base: string;
  readonly canaries: Canaries;
  /** Every response body and header block seen by `call` and `rawHttp` through this stack (for the canary scan). */
  readonly seen: string[];
  /** Deploys a fixture function (`name` is also its export unless `exportName` says otherwise). */
  deploy(name: string, options?: { exportName?: string; config?: FunctionConfigInput; env?: Record<string, string>; version?: string; image?: string }): Promise<void>;
  /** An HTTP request through fetch (recorded in `seen`). */
  call(path: string, init?: { method?: string; headers?: Record<string, string>; body?: string }): Promise<{ status: number; headers: Headers; text: string }>;
  /** A byte-exact request on a fresh socket (recorded in `seen`); see rawHttp. */
  raw(bytes: string | Buffer, options?: RawOptions): Promise<RawResult>;
  /**
   * Stops everything and removes what the stack created; resolves with what the driver's reconcile
   * still found after a clean close (leftover sandboxes / containers: expected 0).
   */
  /** `leftovers`: what reconcile still found; `host`: cgroup roots and iptables rules left (process driver). */
  close(): Promise<{ leftovers: number; host?: string[] }>;
}

export interface StackOptions {
  readonly limits?: GatewayLimitsInput;
  readonly outputLimits?: OutputRateLimits;
  readonly authorize?: GatewayOptions["authorize"];
  readonly trustedProxies?: readonly string[];
  readonly fallback?: GatewayOptions["fallback"];
  /** Pre-warm slots (default 0: fresh starts, fewer moving parts). */
  readonly prewarm?: number;
  /** More options for the driver's factory (e.g. a `bwrapPath` that is about to disappear). */
  readonly driverOptions?: Record<string, unknown>;
}

/** Fails with how to get Docker when the engine or the registry is missing. */
export function ensureDocker(): void {
  try {
    execFileSync("bash", ["scripts/services.sh"], { stdio: ["ignore", "ignore", "pipe"], timeout: 300_000 });
  } catch (err) {
    throw new Error(`Docker and the registry are needed: scripts/services.sh failed (run it as root to see why): ${(err as Error).message}`);
  }
}

/** Starts a node stack on `kind` (see the file comment). */
export async function startStack(kind: DriverKind, options: StackOptions = {}): Promise<Stack> {
  if (!existsSync(RUNTIME)) throw new Error(`${RUNTIME} is missing: run \`npm run build\` first`);
  // Short: instance socket paths must stay under 108 bytes.
  const dataDir = mkdtempSync(join(tmpdir(), "sadv-"));
  const canaries: Canaries = { functionSecret: `fncanary-${randomBytes(12).toString("hex")}`, platformSecret: `platcanary-${randomBytes(12).toString("hex")}` };
  process.env.STRATUS_ADVERSARIAL_CANARY = canaries.platformSecret;
  const tag = `adv${process.pid}${randomBytes(2).toString("hex")}`;
  let driver: SandboxDriver;
  let prepare: (d: Deployment) => Promise<Deployment> = async (d) => d;
  if (kind === "process") {
    const { createProcessDriver } = await import("../../src/sandbox/process/process-driver");
    driver = createProcessDriver({
      runtimePath: RUNTIME, stateDir: join(dataDir, "run"), cgroupRoot: `stratus-${tag}`, pidsMax: 64, prewarm: options.prewarm ?? 0,
      // A /24 of its own (no other suite's sandboxes on it), so that close() can check its rules are gone.
      sandboxSubnet: STACK_SUBNET,
      ...(options.outputLimits ? { outputLimits: options.outputLimits } : {}),
      ...options.driverOptions,
    });
  } else {
    ensureDocker();
    const { createDockerDriver } = await import("../../src/sandbox/docker/docker-driver");
    const docker = createDockerDriver({
      registry: process.env.STRATUS_REGISTRY ?? "127.0.0.1:5000", runtimePath: RUNTIME, stateDir: join(dataDir, "dk"), nodeId: tag,
      pidsMax: 64, prewarm: options.prewarm ?? 0, ...(options.outputLimits ? { outputLimits: options.outputLimits } : {}),
      ...options.driverOptions,
    });
    driver = docker;
    const images = new Map<string, Promise<string>>();
    prepare = async (d) => {
      let image = images.get(d.name);
      if (image === undefined) {
        image = docker.prepare({ ...d, instanceId: "prepare", functionName: d.name }).then((r) => r.image!);
        images.set(d.name, image);
      }
      return { ...d, image: await image };
    };
  }
  await driver.reconcile();
  await driver.open();
  const store = openSqliteStore({ file: join(dataDir, "stratus.db"), masterKey: randomBytes(32) });
  const observe = createObservability({ store, logger: createSilentLogger(), defaultMetrics: false, settings: { flushIntervalMs: 50 } });
  const gateway = createGateway({
    driver, logger: createSilentLogger(), observer: observe.observer, nodeId: tag,
    limits: { sweepIntervalMs: 50, ...options.limits },
    ...(options.authorize ? { authorize: options.authorize } : {}),
    ...(options.trustedProxies ? { trustedProxies: options.trustedProxies } : {}),
    ...(options.fallback ? { fallback: options.fallback } : {}),
  });
  observe.setPoolStats(() => gateway.stats());
  await new Promise<void>((r) => gateway.server.listen(0, "127.0.0.1", r));
  const port = (gateway.server.address() as AddressInfo).port;
  const base = `http://127.0.0.1:${port}`;
  const seen: string[] = [];
  let closed = false;
  const stack: Stack = {
    kind, driver, gateway, store, observe, dataDir, port, base, canaries, seen,
    async deploy(name, o = {}) {
      const exportName = o.exportName ?? name;
      const env = { ...(o.env ?? {}), ...(exportName === "canary" ? { CANARY_SECRET: canaries.functionSecret } : {}) };
      const d: Deployment = {
        name, version: o.version ?? "v1", artifactDir: ADVERSARIAL_FIXTURES, entry: "gateway-functions.js", exportName,
        config: parseFunctionConfig(name, o.config ?? FIXTURE_CONFIGS[exportName] ?? {}), env,
      };
      gateway.setFunction(o.image === undefined ? await prepare(d) : { ...d, image: o.image });
    },
    async call(path, init = {}) {
      const r = await fetch(`${base}${path}`, { method: init.method ?? "GET", headers: init.headers, body: init.body, signal: AbortSignal.timeout(60_000) });
      const text = await r.text();
      seen.push(JSON.stringify([...r.headers]), text);
      return { status: r.status, headers: r.headers, text };
    },
    async raw(bytes, o) {
      const r = await rawHttp(port, bytes, o);
      seen.push(r.text);
      return r;
    },
    async close() {
      if (closed) return { leftovers: 0 };
      closed = true;
      await gateway.close();
      await observe.close();
      await store.close();
      await driver.close();
      const { removed } = await driver.reconcile();
      // Issue 12.8: nothing of the process driver stays on the host after a clean close.
      const host: string[] = [];
      if (kind === "process") {
        const { cgroups } = driver as unknown as { cgroups: { rootDirs(): string[] } };
        for (const d of cgroups.rootDirs()) if (existsSync(d)) host.push(`cgroup root ${d}`);
        for (const table of ["filter", "nat"]) {
          for (const r of execFileSync("iptables", ["-w", "-t", table, "-S"], { encoding: "utf8" }).split("\n")) if (r.includes(STACK_SUBNET)) host.push(`${table}: ${r}`);
        }
      }
      rmSync(dataDir, { recursive: true, force: true });
      delete process.env.STRATUS_ADVERSARIAL_CANARY;
      return { leftovers: removed, host };
    },
  };
  return stack;
}

export interface RawOptions {
  /** Written after `bytes`, each after `delayMs` (slow clients). */
  readonly more?: readonly (string | Buffer)[];
  readonly delayMs?: number;
  /** Give up (and destroy the socket) after this long, ms (default 10 s). */
  readonly timeoutMs?: number;
  /** Half-close after writing (default false: wait for the server to close or the timeout). */
  readonly end?: boolean;
}

export interface RawResult {
  /** Everything the server sent, latin1. */
  readonly text: string;
  /** Status codes of every response head in `text`, in order. */
  readonly statuses: number[];
  /** The server closed the connection (rather than our timeout). */
  readonly closedByServer: boolean;
  readonly ms: number;
}

/**
 * Sends `bytes` as is on a new TCP connection to 127.0.0.1:`port` and collects the answer until the
 * server closes the connection or `timeoutMs` passes. Never throws on resets (they are answers too).
 */
export function rawHttp(port: number, bytes: string | Buffer, options: RawOptions = {}): Promise<RawResult> {
  const t0 = Date.now();
  return new Promise((resolveResult) => {
    const chunks: Buffer[] = [];
    let done = false;
    let byServer = false;
    const sock: Socket = connect(port, "127.0.0.1");
    const timeoutMs = options.timeoutMs ?? 10_000;
    const timer = setTimeout(() => finish(), timeoutMs);
    function finish(): void {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      const text = Buffer.concat(chunks).toString("latin1");
      resolveResult({ text, statuses: statusesOf(text), closedByServer: byServer, ms: Date.now() - t0 });
    }
    sock.on("data", (b: Buffer) => chunks.push(b));
    sock.on("end", () => {
      byServer = true;
      finish();
    });
    sock.on("close", () => {
      byServer = true;
      finish();
    });
    sock.on("error", () => finish());
    sock.on("connect", async () => {
      sock.write(bytes);
      for (const m of options.more ?? []) {
        await new Promise((r) => setTimeout(r, options.delayMs ?? 100));
        if (done || sock.destroyed) return;
        sock.write(m);
      }
      if (options.end === true) sock.end();
    });
  });
}

/** Status codes of every `HTTP/1.1 NNN` response head in a raw answer. */
export function statusesOf(text: string): number[] {
  const out: number[] = [];
  let i = 0;
  for (let n = 0; n < 100; n++) {
    const at = text.indexOf("HTTP/1.1 ", i);
    if (at === -1) break;
    out.push(Number(text.slice(at + 9, at + 12)));
    i = at + 12;
  }
  return out;
}

/** A loopback listener that counts connections and datagrams (expected: 0). */
export interface Decoys {
  readonly tcp: Array<{ host: string; port: number }>;
  readonly udp: { host: string; port: number };
  /** Abstract Unix socket name (without the leading NUL). */
  readonly abstractName: string;
  hits(): number;
  close(): Promise<void>;
}

/** Starts decoys on 127.0.0.53, 127.8.9.10 and ::1 (TCP, where bindable), UDP on 127.8.9.10, and an abstract socket. */
export async function startDecoys(): Promise<Decoys> {
  let hits = 0;
  const servers: Server[] = [];
  const tcp: Array<{ host: string; port: number }> = [];
  for (const host of ["127.0.0.53", "127.8.9.10", "::1"]) {
    const s = createServer((c) => {
      hits++;
      c.destroy();
    });
    const ok = await new Promise<boolean>((r) => {
      s.once("error", () => r(false));
      s.listen(0, host, () => r(true));
    });
    if (!ok) continue;
    servers.push(s);
    tcp.push({ host, port: (s.address() as AddressInfo).port });
  }
  const udpSock = createSocket("udp4");
  udpSock.on("message", () => hits++);
  await new Promise<void>((r) => udpSock.bind(0, "127.8.9.10", r));
  const abstractName = `stratus-decoy-${process.pid}-${randomBytes(3).toString("hex")}`;
  const abs = createServer((c) => {
    hits++;
    c.destroy();
  });
  await new Promise<void>((r) => abs.listen(`\0${abstractName}`, r));
  servers.push(abs);
  return {
    tcp, udp: { host: "127.8.9.10", port: udpSock.address().port }, abstractName,
    hits: () => hits,
    async close() {
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
      await new Promise<void>((r) => udpSock.close(() => r()));
    },
  };
}

/** Polls `check` every 50 ms until it returns true, at most `timeoutMs`; returns whether it did. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<boolean> {
  const t0 = Date.now();
  for (let i = 0; i < 10_000; i++) {
    if (await check()) return true;
    if (Date.now() - t0 > timeoutMs) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

/**
 * Requests the spy function's handler received, over every instance it ever had: its `spy-hit` lines
 * in the store. Waits (bounded) until the count is stable, since lines arrive through the output pipe.
 */
export async function spyHits(stack: Stack, name = "spy"): Promise<Array<{ message: string }>> {
  let last = -1;
  let hits: Array<{ message: string }> = [];
  for (let i = 0; i < 40; i++) {
    await new Promise((r) => setTimeout(r, 150));
    await stack.observe.flush();
    hits = (await stack.store.queryLogs(name, { limit: 10_000 })).filter((l) => l.source === "function" && l.message.startsWith("spy-hit "));
    if (hits.length === last) break;
    last = hits.length;
  }
  return hits;
}

/** Runs `attack`, then asserts the spy's handler received exactly `expected` more requests. */
export async function assertSpyDelta(stack: Stack, attack: () => Promise<void>, expected: number, name = "spy"): Promise<void> {
  const before = (await spyHits(stack, name)).length;
  await attack();
  const after = await spyHits(stack, name);
  assert.equal(after.length - before, expected, `the spy received ${after.length - before} requests: ${JSON.stringify(after.slice(before).map((l) => l.message))}`);
}

/**
 * The invariants every case ends with: the canary answers 200 "ok"; no canary secret in any response
 * seen, any stored log line or any byte of the store's files; the gateway's in-flight count back to 0
 * (bounded wait). `extraTexts`: more outputs to scan (a CLI's stdout, a function's answer).
 */
export async function assertInvariants(stack: Stack, extraTexts: readonly string[] = []): Promise<void> {
  const canary = await stack.call("/fn/canary/");
  assert.equal(canary.status, 200, `canary: ${canary.status} ${canary.text}`);
  assert.equal(canary.text, "ok");
  assert.ok(await waitFor(() => stack.gateway.inFlight() === 0, 15_000), `in-flight stays at ${stack.gateway.inFlight()}`);
  await stack.observe.flush();
  const secrets = [stack.canaries.functionSecret, stack.canaries.platformSecret];
  const texts = [...stack.seen, ...extraTexts];
  for (const s of secrets) {
    for (const t of texts) assert.ok(!t.includes(s), `a canary secret leaked into a response: ${t.slice(0, 200)}`);
  }
  for (const f of readdirSync(stack.dataDir)) {
    if (!f.startsWith("stratus.db")) continue;
    const bytes = readFileSync(join(stack.dataDir, f));
    for (const s of secrets) assert.equal(bytes.indexOf(s), -1, `a canary secret is in the store file ${f}`);
  }
}

/** Closes the stack and asserts nothing was left running (the driver's reconcile found nothing). */
export async function closeAndAssertNothingLeft(stack: Stack): Promise<void> {
  const { leftovers, host } = await stack.close();
  assert.equal(leftovers, 0, "reconcile found sandboxes or containers left after a clean close");
  assert.deepEqual(host ?? [], [], "cgroup roots or iptables rules left on the host after a clean close");
}

/** Median of a list of numbers. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)]!;
}
