// A whole Stratus cluster on one machine for test/cluster.test.ts (issue 14): a real PostgreSQL
// (test/helpers/postgres-server.ts, private port and socket dir), ONE control plane process
// (`stratus control --store postgres://… --haproxy-socket A,B`) that keeps HAProxy's node slots in step
// with its node table, two real HAProxy 2.6 processes (generated config, private stats socket and state
// file under /var/tmp — not /tmp, which was seen cleaned under running tests): the main one (the issue's
// hash-balance-factor 200, `/api/` and `/fn/`) and a second one at factor 300 on the same ring for the
// locality case (CLUSTER-NOTES finding 2, docs/cluster.md "Choosing the factor"), and node agent
// processes (`stratus node --control URL --listen 127.0.0.N:PORT`, joining with a join token,
// gateway.queueFullStatus=503). Loopback only; every wait is bounded; `close()` tears everything down.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Agent, request } from "undici";
import { STRATUS_BIN } from "./stratus-cli";
import { startPostgres, type PostgresServer } from "./postgres-server";
import { freePort } from "./free-port";
import { startHaproxy, waitUntil, type RunningHaproxy } from "./haproxy-cluster";
import { deploy as deployArchive, project, type DeployOutcome } from "./platform-fixture";
import type { InvocationRecord } from "../../src/shared/invocation";

export { waitUntil } from "./haproxy-cluster";

const WORK_ROOT = process.env.STRATUS_LB_TEST_DIR ?? "/var/tmp";

export const agent = new Agent({ connections: 256, headersTimeout: 30_000, bodyTimeout: 30_000 });

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: Record<string, unknown> | null;
  ms: number;
}

/** One HTTP request (undici, bounded by the agent's 30 s timeouts). A transport error is status 0. */
export async function call(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  const t0 = Date.now();
  try {
    const r = await request(url, { dispatcher: agent, method: (init.method ?? "GET") as "GET", headers: init.headers, body: init.body });
    const text = await r.body.text();
    let json: Record<string, unknown> | null = null;
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      /* not JSON */
    }
    return { status: r.statusCode, headers: r.headers, text, json, ms: Date.now() - t0 };
  } catch (err) {
    return { status: 0, headers: {}, text: String((err as Error).message), json: null, ms: Date.now() - t0 };
  }
}

/** Runs `jobs` with `clients` concurrent workers; bounded by the job count. */
export async function runClients<T>(clients: number, jobs: readonly T[], work: (job: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: clients }, async () => {
    while (next < jobs.length) await work(jobs[next++]!);
  }));
}

export interface ClusterNode {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly url: string;
  readonly dataDir: string;
  /** Stable numeric id (HAProxy slot), from the join. */
  id: number;
  child: ChildProcess | null;
  alive(): boolean;
}

export interface Cluster {
  readonly root: string;
  readonly pg: PostgresServer;
  readonly storeUrl: string;
  /** The control plane's own URL (tests read stats here, not through HAProxy). */
  readonly controlUrl: string;
  readonly adminToken: string;
  readonly joinToken: string;
  /** Main HAProxy: factor 200, `/api/` and `/fn/`. */
  readonly lb: RunningHaproxy;
  /** Second HAProxy on the same ring at factor 300 (locality at low in-flight counts). */
  readonly lbLocal: RunningHaproxy;
  readonly nodes: ClusterNode[];
  /** Output of every child (for failure messages), last `n` characters. */
  log(n?: number): string;
  /** Starts (and joins) a node agent on `host`; `driver` process (default) or docker. */
  addNode(name: string, host: string, opts?: { driver?: "process" | "docker" }): Promise<ClusterNode>;
  /** SIGKILL, like a crashed machine. */
  kill(node: ClusterNode): Promise<void>;
  /** SIGTERM (graceful), bounded. */
  stop(node: ClusterNode): Promise<void>;
  /** Starts a stopped or killed node again on the same address, data dir and credential (no join token). */
  restart(node: ClusterNode): Promise<void>;
  /** Deploys a project through the main HAProxy's `/api/`. */
  deploy(files: Record<string, string>): Promise<DeployOutcome>;
  /** An API call through the main HAProxy. */
  api(method: string, path: string, body?: unknown): Promise<Reply>;
  /** Invokes `/fn/<name>/<rest>` through the main HAProxy (or `lbLocal`). */
  invoke(name: string, rest?: string, init?: { method?: string; headers?: Record<string, string>; body?: string; via?: RunningHaproxy }): Promise<Reply>;
  /** A function's invocation records (from the store, written from each node's telemetry). */
  invocations(name: string): Promise<InvocationRecord[]>;
  /** Per node name: requests, executed (reached an instance), cold starts of `names`. */
  stats(names: readonly string[]): Promise<Map<string, { requests: number; executed: number; cold: number }>>;
  /** The node (name) that executed each function most, from the invocation records. */
  owners(names: readonly string[]): Promise<Map<string, string>>;
  /** `stratus <args>` against the control plane (bounded). */
  cli(args: string[], ms?: number): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** HAProxy's view of slot `id` in the nodes backend: `show stat` status (UP, DOWN, NOLB, MAINT, …). */
  slotStatus(id: number, lb?: RunningHaproxy): Promise<string>;
  /** Waits (bounded) until every function's record count reaches `expected` (telemetry flushed). */
  settle(expected: Map<string, number>, ms?: number): Promise<boolean>;
  close(): Promise<void>;
}

export interface ClusterOptions {
  /** Node agents at start (names node2… on 127.0.0.2…). Default 3. */
  readonly nodes?: number;
  /** Control plane's membership sync period, ms (default 500). */
  readonly syncIntervalMs?: number;
  /** Extra env for every node. */
  readonly nodeEnv?: Record<string, string>;
  /** Sandbox driver of the nodes started at start (default process). */
  readonly driver?: "process" | "docker";
}

/** Starts the whole cluster (bounded: each piece has its own start-up timeout). */
export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  if (!existsSync(resolve("dist/cli.js")) || !existsSync(resolve("dist/runtime.cjs"))) throw new Error("dist/ is missing: run `npm run build` first");
  const root = mkdtempSync(join(WORK_ROOT, "scl-"));
  const output: string[] = [];
  const children = new Set<ChildProcess>();
  const nodes: ClusterNode[] = [];
  let pg: PostgresServer | undefined;
  let lb: RunningHaproxy | undefined;
  let lbLocal: RunningHaproxy | undefined;
  let cpChild: ChildProcess | undefined;
  const haA = join(root, "ha");
  const haB = join(root, "hb");
  spawnSync("mkdir", ["-p", "-m", "700", haA, haB, join(root, "home"), join(root, "cfg")]);

  const baseEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
    PATH: process.env.PATH, HOME: join(root, "home"), STRATUS_CONFIG_DIR: join(root, "cfg"), STRATUS_LOG_LEVEL: "warn", ...extra,
  });

  function startJson(args: string[], env: NodeJS.ProcessEnv, label: string): Promise<{ child: ChildProcess; info: Record<string, unknown> }> {
    const child = spawn(process.execPath, [STRATUS_BIN, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    child.once("exit", () => children.delete(child));
    const tag = (s: string) => s.split("\n").filter(Boolean).map((l) => `[${label}] ${l}\n`).join("");
    child.stderr!.on("data", (c: Buffer) => output.push(tag(c.toString())));
    return new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`${label} did not start in 90 s:\n${output.join("").slice(-3000)}`)), 90_000);
      let out = "";
      let done = false;
      child.stdout!.on("data", (c: Buffer) => {
        if (done) return void output.push(tag(c.toString()));
        out += c.toString();
        for (let nl = out.indexOf("\n"); nl !== -1 && !done; nl = out.indexOf("\n")) {
          const line = out.slice(0, nl);
          out = out.slice(nl + 1);
          let parsed: Record<string, unknown> | null = null;
          try {
            parsed = JSON.parse(line) as Record<string, unknown>;
          } catch {
            /* a non-JSON line */
          }
          if (parsed === null || "level" in parsed) {
            output.push(tag(line));
            continue;
          }
          done = true;
          clearTimeout(timer);
          if (out !== "") output.push(tag(out));
          res({ child, info: parsed });
        }
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        if (!done) rej(new Error(`${label} exited (${code ?? signal}) before it started:\n${output.join("").slice(-3000)}`));
      });
    });
  }

  async function stopChild(child: ChildProcess | null | undefined, signal: NodeJS.Signals = "SIGTERM", ms = 20_000): Promise<void> {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit").catch(() => {});
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), ms);
    await exited;
    clearTimeout(timer);
  }

  async function close(): Promise<void> {
    for (const n of nodes) await stopChild(n.child);
    await stopChild(cpChild);
    for (const c of [...children]) await stopChild(c);
    await lb?.stop().catch(() => {});
    await lbLocal?.stop().catch(() => {});
    await pg?.stop().catch(() => {});
    // A SIGKILLed node leaves its driver's mounts behind: unmount ours, deepest first, then remove the tree.
    const mounts = readFileSync("/proc/self/mounts", "utf8").split("\n").map((l) => l.split(" ")[1] ?? "").filter((m) => m.startsWith(`${root}/`));
    for (const m of mounts.sort((a, b) => b.length - a.length)) spawnSync("umount", ["-l", m]);
    await rm(root, { recursive: true, force: true }).catch(() => {});
  }

  try {
    pg = await startPostgres();
    const storeUrl = await pg.createDatabase(`cluster_${process.pid}`);
    const cpPort = await freePort("127.0.0.1");
    const cp = await startJson([
      "control", "--host", "127.0.0.1", "--port", String(cpPort), "--data-dir", join(root, "cp"), "--store", storeUrl,
      "--haproxy-socket", `${join(haA, "haproxy.sock")},${join(haB, "haproxy.sock")}`,
      "--haproxy-state-file", `${join(haA, "haproxy.state")},${join(haB, "haproxy.state")}`, "--json",
    ], baseEnv({ STRATUS_NODE_TOKEN: `cluster-test-link-secret-${process.pid}-0123456789`, STRATUS_LB_SYNC_INTERVAL_MS: String(options.syncIntervalMs ?? 500) }), "control");
    cpChild = cp.child;
    const controlUrl = String(cp.info.url);
    const adminToken = String(cp.info.adminToken);
    const spec = { controlPlanes: [`127.0.0.1:${cpPort}`], maxNodes: 8 };
    lb = await startHaproxy(haA, { ...spec, hashBalanceFactor: 200 });
    lbLocal = await startHaproxy(haB, { ...spec, hashBalanceFactor: 300 });
    const jt = await call(`${controlUrl}/api/v1/join-tokens`, {
      method: "POST", headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" }, body: JSON.stringify({ name: "cluster-test", ttlSeconds: 3600 }),
    });
    if (jt.status !== 201) throw new Error(`join token: ${jt.status} ${jt.text}`);
    const joinToken = String(jt.json!.token);
    let subnet = 0;

    const argsOf = (n: ClusterNode, driver: string) => [
      "node", "--control", controlUrl, "--listen", `${n.host}:${n.port}`, "--data-dir", n.dataDir, "--node-id", n.name, "--driver", driver, "--json",
    ];
    const envOf = new Map<string, NodeJS.ProcessEnv>();
    const driverOf = new Map<string, string>();

    async function launch(n: ClusterNode): Promise<void> {
      const s = await startJson(argsOf(n, driverOf.get(n.name)!), envOf.get(n.name)!, n.name);
      n.child = s.child;
      n.id = Number(s.info.id);
    }

    const api = (method: string, path: string, body?: unknown, base = lb!.url): Promise<Reply> => call(`${base}${path}`, {
      method, headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });

    const invocations = async (name: string): Promise<InvocationRecord[]> => {
      const r = await api("GET", `/api/v1/functions/${name}/invocations?limit=10000`, undefined, controlUrl);
      if (r.status !== 200) throw new Error(`invocations of ${name}: ${r.status} ${r.text}`);
      return (r.json!.invocations as InvocationRecord[]);
    };

    const cluster: Cluster = {
      root, pg, storeUrl, controlUrl, adminToken, joinToken, lb, lbLocal, nodes,
      log: (n = 4000) => output.join("").slice(-n),
      async addNode(name, host, opts = {}) {
        const n: ClusterNode = {
          name, host, port: await freePort(host), url: "", dataDir: join(root, name), id: 0, child: null,
          alive() {
            return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
          },
        };
        (n as { url: string }).url = `http://${host}:${n.port}`;
        envOf.set(name, baseEnv({
          STRATUS_JOIN_TOKEN: joinToken, STRATUS_GATEWAY_QUEUE_FULL_STATUS: "503", STRATUS_PREWARM: "1",
          STRATUS_PROCESS_SANDBOX_SUBNET: `10.${180 + subnet++}.0.0/16`, ...options.nodeEnv,
        }));
        driverOf.set(name, opts.driver ?? "process");
        await launch(n);
        nodes.push(n);
        return n;
      },
      async kill(n) {
        await stopChild(n.child, "SIGKILL");
      },
      async stop(n) {
        await stopChild(n.child, "SIGTERM");
      },
      async restart(n) {
        if (n.alive()) throw new Error(`${n.name} is running`);
        await launch(n);
      },
      deploy: async (files) => deployArchive({ url: lb!.url, token: adminToken }, await project(files)),
      api: (method, path, body) => api(method, path, body),
      invoke: (name, rest = "", init = {}) => call(`${(init.via ?? lb!).url}/fn/${name}/${rest}`, init),
      invocations,
      async stats(names) {
        const out = new Map<string, { requests: number; executed: number; cold: number }>();
        for (const fn of names) {
          for (const r of await invocations(fn)) {
            let s = out.get(r.nodeId);
            if (s === undefined) out.set(r.nodeId, (s = { requests: 0, executed: 0, cold: 0 }));
            s.requests++;
            if (r.instanceId !== null) s.executed++;
            if (r.coldStart) s.cold++;
          }
        }
        return out;
      },
      async owners(names) {
        const out = new Map<string, string>();
        for (const fn of names) {
          const by = new Map<string, number>();
          for (const r of await invocations(fn)) if (r.instanceId !== null) by.set(r.nodeId, (by.get(r.nodeId) ?? 0) + 1);
          const best = [...by].sort((a, b) => b[1] - a[1])[0];
          if (best !== undefined) out.set(fn, best[0]);
        }
        return out;
      },
      async cli(args, ms = 60_000) {
        const child = spawn(process.execPath, [STRATUS_BIN, ...args], { env: baseEnv({ STRATUS_URL: controlUrl, STRATUS_TOKEN: adminToken }), stdio: ["ignore", "pipe", "pipe"] });
        let stdout = "";
        let stderr = "";
        child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
        child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
        const timer = setTimeout(() => child.kill("SIGKILL"), ms);
        const [code] = (await once(child, "exit")) as [number | null];
        clearTimeout(timer);
        return { code, stdout, stderr };
      },
      async slotStatus(id, which = lb!) {
        const rows = await which.runtime.stat();
        return rows.find((r) => r.pxname === "stratus_nodes" && r.svname === `node${id}`)?.status ?? "";
      },
      async settle(expected, ms = 15_000) {
        return waitUntil(async () => {
          for (const [fn, n] of expected) if ((await invocations(fn)).length < n) return false;
          return true;
        }, ms);
      },
      close,
    };
    for (let i = 0; i < (options.nodes ?? 3); i++) await cluster.addNode(`node${i + 2}`, `127.0.0.${i + 2}`, { driver: options.driver ?? "process" });
    // Membership reaches both HAProxies through the control plane; the checks then bring the slots UP.
    for (const which of [lb, lbLocal]) {
      const up = await waitUntil(async () => {
        for (const n of nodes) if (!(await cluster.slotStatus(n.id, which)).startsWith("UP")) return false;
        return true;
      }, 30_000);
      if (!up) throw new Error(`HAProxy did not get every node UP within 30 s: ${JSON.stringify((await which.runtime.stat()).filter((r) => r.pxname === "stratus_nodes" && !(r.status ?? "").startsWith("MAINT")).map((r) => [r.svname, r.status]))}\n${output.join("").slice(-3000)}`);
    }
    return cluster;
  } catch (err) {
    await close();
    throw err;
  }
}
