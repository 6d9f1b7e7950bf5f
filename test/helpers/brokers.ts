// Private message brokers for tests: Debian's `redis-server`, `nats-server` (JetStream) and
// `rabbitmq-server`, each started by the test on free loopback ports with its own data dir in a temp
// dir, never the system services. `kill()` SIGKILLs the broker (data kept), `restart()` starts it again
// on the same port and data, `stop()` ends it and removes the dir. `connections()` counts established
// TCP connections to the broker's port (`ss`), so a test sees that a client closed its connection.
//
// Never silently skipped: a missing binary throws with the apt-get line that installs it
// (scripts/test.sh installs all three).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./free-port";

export interface BrokerServer {
  /** Client URL (credentials included where the broker needs them). */
  readonly url: string;
  readonly port: number;
  /** SIGKILLs the broker process; its data dir stays. */
  kill(): Promise<void>;
  /** Starts it again on the same port and data (after `kill`). */
  restart(): Promise<void>;
  /** Established TCP connections to the broker's client port. */
  connections(): number;
  /** Everything the broker printed (for failure messages). */
  output(): string;
  /** Ends the broker and removes its dir. Idempotent. */
  stop(): Promise<void>;
}

function need(bin: string, pkg: string): void {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: apt-get install -y ${pkg} (scripts/test.sh installs it)`);
}

/** True once a TCP connect to 127.0.0.1:port succeeds. */
function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** Polls `check` every 100 ms until true, up to `timeoutMs`. */
async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, output: () => string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not become ready within ${timeoutMs} ms:\n${output().slice(-3000)}`);
}

function established(port: number): number {
  const r = spawnSync("ss", ["-Htn", "state", "established", `( dport = :${port} )`], { encoding: "utf8" });
  return r.stdout.split("\n").filter((l) => l.trim() !== "").length;
}

/** A broker process the helper can kill and start again with the same arguments. */
function managed(name: string, start: () => ChildProcess, ready: () => Promise<boolean>, timeoutMs: number, cleanup: () => Promise<void>, extraStop: () => Promise<void> = async () => {}) {
  let child: ChildProcess | null = null;
  let out = "";
  const output = () => out;
  const launch = async () => {
    const c = start();
    c.stdout?.on("data", (d: Buffer) => (out += d.toString()));
    c.stderr?.on("data", (d: Buffer) => (out += d.toString()));
    c.once("exit", (code, sig) => (out += `\n[${name} exited ${code ?? sig}]\n`));
    child = c;
    await waitFor(name, async () => {
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`${name} exited during start:\n${out.slice(-3000)}`);
      return ready();
    }, timeoutMs, output);
  };
  const kill = async () => {
    const c = child;
    child = null;
    if (c === null || c.exitCode !== null || c.signalCode !== null) return;
    c.kill("SIGKILL");
    await once(c, "exit");
  };
  let stopped = false;
  return {
    launch, kill, output,
    async stop() {
      if (stopped) return;
      stopped = true;
      await kill();
      await extraStop();
      await cleanup();
    },
  };
}

/** redis-server with AOF (appendfsync always), no RDB snapshots. */
export async function startRedis(): Promise<BrokerServer> {
  need("/usr/bin/redis-server", "redis-server");
  const dir = await mkdtemp(join(tmpdir(), "stratus-redis-"));
  const port = await freePort();
  const m = managed("redis-server", () => spawn("/usr/bin/redis-server", [
    "--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no", "--daemonize", "no",
  ], { stdio: ["ignore", "pipe", "pipe"] }), async () => /Ready to accept connections/.test(m.output()) && canConnect(port), 30_000, () => rm(dir, { recursive: true, force: true }));
  await m.launch();
  return { url: `redis://127.0.0.1:${port}`, port, kill: m.kill, restart: m.launch, connections: () => established(port), output: m.output, stop: m.stop };
}

/** nats-server with JetStream in its own store dir, and its monitoring port for readiness. */
export async function startNats(): Promise<BrokerServer> {
  need("/usr/sbin/nats-server", "nats-server");
  const dir = await mkdtemp(join(tmpdir(), "stratus-nats-"));
  const port = await freePort();
  const monitor = await freePort();
  const m = managed("nats-server", () => spawn("/usr/sbin/nats-server", ["-js", "-sd", dir, "-a", "127.0.0.1", "-p", String(port), "-m", String(monitor)], { stdio: ["ignore", "pipe", "pipe"] }),
    async () => {
      try {
        return (await fetch(`http://127.0.0.1:${monitor}/healthz?js-enabled-only=true`)).ok;
      } catch {
        return false;
      }
    }, 30_000, () => rm(dir, { recursive: true, force: true }));
  await m.launch();
  return { url: `nats://127.0.0.1:${port}`, port, kill: m.kill, restart: m.launch, connections: () => established(port), output: m.output, stop: m.stop };
}

/**
 * rabbitmq-server (Debian's, run directly from /usr/lib/rabbitmq/bin as the current user) with a unique
 * node name, its own epmd on a free port (started here, bound to loopback), mnesia and logs in a temp
 * dir. Takes several seconds to boot: start it once per suite. The `guest` user may connect from loopback.
 */
export async function startRabbitmq(): Promise<BrokerServer> {
  const bin = "/usr/lib/rabbitmq/bin/rabbitmq-server";
  need(bin, "rabbitmq-server");
  need("/usr/bin/epmd", "erlang-base");
  const dir = await mkdtemp(join(tmpdir(), "stratus-rabbit-"));
  const [port, dist, epmdPort] = [await freePort(), await freePort(), await freePort()];
  const node = `stratus-${process.pid}-${port}@localhost`;
  const env = {
    PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", HOME: dir, LANG: "C.UTF-8",
    RABBITMQ_NODE_PORT: String(port), RABBITMQ_NODE_IP_ADDRESS: "127.0.0.1", RABBITMQ_NODENAME: node, RABBITMQ_DIST_PORT: String(dist),
    ERL_EPMD_PORT: String(epmdPort), ERL_EPMD_ADDRESS: "127.0.0.1", RABBITMQ_MNESIA_BASE: join(dir, "mnesia"), RABBITMQ_LOG_BASE: join(dir, "log"),
    RABBITMQ_CONFIG_FILE: join(dir, "rabbitmq"), RABBITMQ_ADVANCED_CONFIG_FILE: join(dir, "advanced.config"), RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, "enabled_plugins"),
    RABBITMQ_PID_FILE: join(dir, "rabbit.pid"), RUNNING_UNDER_SYSTEMD: "true", RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: "-kernel inet_dist_use_interface {127,0,0,1}",
  };
  const epmd = spawn("/usr/bin/epmd", ["-port", String(epmdPort), "-address", "127.0.0.1"], { stdio: "ignore", env });
  await waitFor("epmd", () => canConnect(epmdPort), 10_000, () => "");
  // With RUNNING_UNDER_SYSTEMD the script `exec`s the Erlang VM, so the child is the broker itself and
  // SIGKILL ends it (else a shell stays in between).
  const m = managed("rabbitmq-server", () => spawn(bin, [], { stdio: ["ignore", "pipe", "pipe"], env, cwd: dir }),
    async () => /Starting broker\.\.\. completed/.test(m.output()) && canConnect(port), 120_000, () => rm(dir, { recursive: true, force: true }),
    async () => {
      if (epmd.exitCode === null && epmd.signalCode === null) {
        epmd.kill("SIGKILL");
        await once(epmd, "exit");
      }
    });
  try {
    await m.launch();
  } catch (err) {
    await m.stop();
    throw err;
  }
  return { url: `amqp://guest:guest@127.0.0.1:${port}`, port, kill: m.kill, restart: m.launch, connections: () => established(port), output: m.output, stop: m.stop };
}
