// A private PostgreSQL server for tests: Debian's `postgresql` (initdb + pg_ctl) in a temp dir, on a
// free loopback port and a unix socket in that dir, run as an unprivileged user (`postgres` when we
// are root; the current user otherwise). `stop()` shuts it down and removes the dir.
//
// Used by test/store-postgres.test.ts; the cluster tests reuse it. Never silently skipped: when the
// binaries are missing, `startPostgres` throws with the command that installs them.
import { execFile, spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { chown, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { freePort } from "./free-port";

const exec = promisify(execFile);

/** A running private server. */
export interface PostgresServer {
  /** 127.0.0.1 */
  readonly host: string;
  readonly port: number;
  /** Directory of the unix socket (`.s.PGSQL.<port>`). */
  readonly socketDir: string;
  /** Database superuser (trust authentication on loopback and the socket). */
  readonly user: string;
  /** `postgres://user@127.0.0.1:port/<database>` */
  url(database?: string): string;
  /** Creates an empty database (a fresh name when none is given) and returns its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Drops a database, disconnecting its sessions first. */
  dropDatabase(name: string): Promise<void>;
  /** Runs SQL on the `postgres` database as the superuser. */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<pg.QueryResult<R>>;
  /** Stops the server (fast shutdown) and restarts it on the same port and data (for failure tests). */
  restart(): Promise<void>;
  /** Stops the server (fast shutdown), keeping its data, until `resume()` (for failure tests). */
  halt(): Promise<void>;
  /** Starts a halted server again on the same port and data. */
  resume(): Promise<void>;
  /** Stops the server and removes its directory (idempotent). */
  stop(): Promise<void>;
}

/** Options of `startPostgres`. */
export interface StartPostgresOptions {
  /** Extra `-c name=value` server settings. */
  readonly settings?: Readonly<Record<string, string>>;
  /** pg_ctl start/stop wait, seconds; default 60 (the machine is shared and slow). */
  readonly timeoutS?: number;
  /**
   * Logical replication on (wal_level=logical, 10 replication slots and WAL senders), for the
   * table-change trigger tests; default off (wal_level=replica, PostgreSQL's default).
   */
  readonly logicalReplication?: boolean;
}

/** Highest installed PostgreSQL's bin dir (Debian layout), or null. */
export function findPostgresBin(): string | null {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return null;
  const versions = readdirSync(root).filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, "bin", "initdb"))).sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? null : join(root, versions[0], "bin");
}

/** The OS user the server runs as, and how to run a command as it. */
function serverUser(): { name: string; uid: number; gid: number; wrap: (argv: string[]) => [string, string[]] } {
  const uid = process.getuid?.() ?? 0;
  if (uid !== 0) {
    const name = spawnSync("id", ["-un"], { encoding: "utf8" }).stdout.trim();
    return { name, uid, gid: process.getgid?.() ?? 0, wrap: (argv) => [argv[0]!, argv.slice(1)] };
  }
  // PostgreSQL refuses to run as root. Debian's package creates `postgres`; without it, make a system user.
  let name = "postgres";
  if (spawnSync("id", ["-u", name]).status !== 0) {
    name = "stratus-pg";
    if (spawnSync("id", ["-u", name]).status !== 0) {
      const r = spawnSync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`could not create the user ${name} to run PostgreSQL: ${r.stderr}`);
    }
  }
  const id = (flag: string) => Number(spawnSync("id", [flag, name], { encoding: "utf8" }).stdout.trim());
  return { name, uid: id("-u"), gid: id("-g"), wrap: (argv) => ["runuser", ["-u", name, "--", ...argv]] };
}

/**
 * Initialises and starts a private server.
 * @throws Error when PostgreSQL is not installed (with the install command), or it does not start (with its log).
 */
export async function startPostgres(options: StartPostgresOptions = {}): Promise<PostgresServer> {
  const bin = findPostgresBin();
  if (bin === null) {
    throw new Error("PostgreSQL is not installed: run `apt-get install postgresql` (scripts/test.sh does it through scripts/lib/ensure-deps.sh)");
  }
  const timeoutS = options.timeoutS ?? 60;
  const user = serverUser();
  const dir = await mkdtemp(join(tmpdir(), "stratus-pg-"));
  await chown(dir, user.uid, user.gid);
  const dataDir = join(dir, "data");
  const logFile = join(dir, "server.log");
  const port = await freePort();
  const run = async (argv: string[]) => {
    const [cmd, args] = user.wrap(argv);
    return exec(cmd, args, { cwd: dir, timeout: (timeoutS + 10) * 1000 });
  };
  // Test settings: no fsync (the data is thrown away), and small enough for a shared 2-core machine.
  const settings: Record<string, string> = {
    listen_addresses: "127.0.0.1", fsync: "off", synchronous_commit: "off", full_page_writes: "off",
    max_connections: "100", shared_buffers: "32MB",
    ...(options.logicalReplication === true ? { wal_level: "logical", max_replication_slots: "10", max_wal_senders: "10" } : {}),
    ...options.settings,
  };
  const serverOpts = [`-p ${port}`, `-k ${dir}`, ...Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`)].join(" ");
  const start = () => run([join(bin, "pg_ctl"), "-D", dataDir, "-l", logFile, "-w", "-t", String(timeoutS), "-o", serverOpts, "start"]);
  const stopServer = () => run([join(bin, "pg_ctl"), "-D", dataDir, "-m", "fast", "-w", "-t", String(timeoutS), "stop"]);

  let started = false;
  try {
    await run([join(bin, "initdb"), "-D", dataDir, "-A", "trust", "-U", user.name, "-E", "UTF8", "--locale=C", "--no-sync"]);
    await start();
    started = true;
  } catch (err) {
    const log = await readFile(logFile, "utf8").catch(() => "");
    if (started) await stopServer().catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw new Error(`PostgreSQL did not start: ${(err as Error).message}\n${log.slice(-2000)}`, { cause: err });
  }

  // If the test process ends without stop() (a crash, an uncaught error), take the server down with it:
  // SIGQUIT is PostgreSQL's immediate shutdown, and an exit handler can only do synchronous work.
  const onExit = () => {
    try {
      const pid = Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
      if (pid > 0) process.kill(pid, "SIGQUIT");
    } catch {
      // Already stopped.
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", onExit);

  const url = (database = "postgres") => `postgres://${encodeURIComponent(user.name)}@127.0.0.1:${port}/${database}`;
  const query = async <R extends pg.QueryResultRow>(sql: string, params?: unknown[]) => {
    const client = new pg.Client({ connectionString: url() });
    await client.connect();
    try {
      return await client.query<R>(sql, params);
    } finally {
      await client.end();
    }
  };
  let counter = 0;
  let stopped = false;
  return {
    host: "127.0.0.1", port, socketDir: dir, user: user.name, url, query,
    async createDatabase(name) {
      const db = name ?? `t_${process.pid}_${++counter}`;
      if (!/^[a-z_][a-z0-9_]*$/.test(db)) throw new Error(`database name ${db} must be [a-z_][a-z0-9_]*`);
      await query(`CREATE DATABASE ${db} TEMPLATE template0`);
      return url(db);
    },
    async dropDatabase(name) {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`database name ${name} must be [a-z_][a-z0-9_]*`);
      await query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
    async restart() {
      await stopServer();
      await start();
    },
    async halt() {
      await stopServer();
    },
    async resume() {
      await start();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      process.removeListener("exit", onExit);
      await stopServer().catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
}
