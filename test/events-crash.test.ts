// The platform killed with async jobs leased: `stratus up` (a child process, real process driver) is
// SIGKILLed while jobs run; after a restart on the same data every accepted job ends succeeded or in the
// DLQ — the lost attempts recorded as LEASE_EXPIRED — and nothing ran twice to completion. Once with the
// embedded SQLite store, once with `--store postgres://…` (a real PostgreSQL this test starts).
// Also drives the CLI as a user would: invoke --async (--wait), invocation, dlq ls|show|replay|purge,
// triggers ls, describe. Needs root (bubblewrap, cgroups) and `npm run build`.
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import pg from "pg";
import Database from "better-sqlite3";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { bindStratus, killUp, startUpInTempRoot, startStratusUp, type RunningUp, type SuitePlatform } from "./helpers/stratus-cli";
import { startPostgres, type PostgresServer } from "./helpers/postgres-server";

const SOURCE = `
module.exports.slow = {
  func: async (req, res) => { await new Promise((r) => setTimeout(r, 2500)); res.send("done " + req.get("x-stratus-attempt")); },
  config: { timeout: 4000, asyncConcurrency: 3, maxInstances: 3, retryDelayMs: 50, maxAttempts: 3 },
};
module.exports.bad = { func: (req, res) => res.status(500).send("bad"), config: { maxAttempts: 1 } };
module.exports.cron = {
  func: (req, res) => res.send("tick"),
  config: { triggers: [{ schedule: "0 3 * * *", timezone: "Europe/Berlin" }, { rate: "5 minutes", catchUp: "none" }] },
};
`;

/** Starts `stratus up` again on existing data (see startStratusUp). */
const restartUp = (args: readonly string[], env: NodeJS.ProcessEnv): Promise<RunningUp> => startStratusUp(args, env, { restart: true });

interface Row { id: string; status: string; attempts: number; history: string }

/** Reads the jobs of a function straight from the platform's database (SQLite file or PostgreSQL). */
type JobReader = (fn: string) => Promise<Row[]>;

const ENV = { STRATUS_EVENTS_LEASE_MARGIN_MS: "1500", STRATUS_EVENTS_POLL_INTERVAL_MS: "50" };

let pgServer: PostgresServer | null = null;
after(async () => {
  await pgServer?.stop();
});

for (const kind of ["sqlite", "postgres"] as const) {
  describe(`platform killed with jobs leased (${kind})`, () => {
    let p: SuitePlatform;
    let up: RunningUp;
    let read: JobReader;
    let pgClient: pg.Client | null = null;
    const { cli, ok } = bindStratus(() => ({ env: p.env, cwd: p.root }), 120_000, () => `\n--- stratus up ---\n${up?.output() ?? ""}`);

    after(async () => {
      // Graceful first (a SIGKILLed node leaves its sandbox mounts for the next start to reconcile).
      if (up && up.child.exitCode === null && up.child.signalCode === null) {
        up.child.kill("SIGTERM");
        await Promise.race([once(up.child, "exit"), new Promise((res) => setTimeout(res, 30_000))]);
      }
      await killUp(up?.child);
      await pgClient?.end();
      if (p) {
        // A platform left SIGKILLed (a failed test) leaves its driver's mounts for a next start's
        // reconcile: unmount ours, deepest first, then remove the tree.
        const mounts = readFileSync("/proc/self/mounts", "utf8").split("\n").map((l) => l.split(" ")[1] ?? "").filter((m) => m.startsWith(`${p.root}/`));
        for (const m of mounts.sort((a, b) => b.length - a.length)) spawnSync("umount", ["-l", m]);
        await rm(p.root, { recursive: true, force: true });
      }
    });

    test("every accepted job ends succeeded or dead-lettered after a SIGKILL and a restart", async () => {
      let storeArgs: string[] = [];
      if (kind === "postgres") {
        pgServer ??= await startPostgres();
        const url = await pgServer.createDatabase(`events_crash_${process.pid}`);
        storeArgs = ["--store", url];
        pgClient = new pg.Client({ connectionString: url });
        await pgClient.connect();
        const c = pgClient;
        read = async (fn) => (await c.query<Row>("SELECT id, status, attempts, history FROM event_jobs WHERE function_name = $1", [fn])).rows;
      }
      p = await startUpInTempRoot(`st-ev${kind[0]}-`, storeArgs, ENV);
      up = p;
      if (kind === "sqlite") {
        const file = join(p.dataDir, "stratus.db");
        read = async (fn) => {
          const db = new Database(file, { readonly: true });
          try {
            return db.prepare("SELECT id, status, attempts, history FROM event_jobs WHERE function_name = ?").all(fn) as Row[];
          } finally {
            db.close();
          }
        };
      }
      const dir = join(p.root, "proj");
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, "package.json"), JSON.stringify({ name: "crash", main: "index.js" }));
      await writeFile(join(dir, "index.js"), SOURCE);
      await ok("deploy", dir);

      // Two through the CLI, six over HTTP.
      const ids: string[] = [];
      for (let i = 0; i < 2; i++) {
        const out = await ok("invoke", "slow", "--async", "--data", JSON.stringify({ i }));
        const id = out.split("\n")[0]?.trim() ?? "";
        assert.match(id, /^[0-9a-f-]{36}$/, out);
        ids.push(id);
      }
      for (let i = 2; i < 8; i++) {
        const r = await fetch(`${up.url}/fn/slow`, { method: "POST", headers: { "x-stratus-invocation-type": "async" }, body: String(i) });
        assert.equal(r.status, 202);
        ids.push(((await r.json()) as { invocationId: string }).invocationId);
      }
      // Wait until 3 are leased (asyncConcurrency), then kill.
      let running: Row[] = [];
      for (let i = 0; i < 200 && running.length < 3; i++) {
        running = (await read("slow")).filter((r) => r.status === "running");
        if (running.length < 3) await new Promise((res) => setTimeout(res, 50));
      }
      assert.equal(running.length, 3, "three jobs leased before the kill");
      up.child.kill("SIGKILL");
      await once(up.child, "exit");
      const before = await read("slow");
      assert.equal(before.length, 8, "every accepted job is in the store");
      // The first jobs start while the CLI still submits the others: on a slow machine one may finish
      // (2.5 s) before the kill. The three leased at the kill had not; none ran past its one attempt.
      const finishedBefore = before.filter((r) => r.status === "succeeded");
      const leased = new Set(running.map((r) => r.id));
      assert.ok(finishedBefore.every((r) => !leased.has(r.id)), "the jobs leased at the kill had not finished");
      assert.ok(finishedBefore.length <= 8 - 3, `${finishedBefore.length} finished before the kill`);
      assert.ok(finishedBefore.every((r) => r.attempts === 1), JSON.stringify(finishedBefore));

      // Same port, so the saved CLI profile still points at it (a restart prints no "saved to").
      up = await restartUp(["--port", new URL(up.url).port, "--data-dir", p.dataDir, ...storeArgs], p.env);
      let rows: Row[] = [];
      for (let i = 0; i < 600; i++) {
        rows = await read("slow");
        if (rows.every((r) => r.status === "succeeded" || r.status === "dead")) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      assert.deepEqual(rows.map((r) => r.status).sort(), Array(8).fill("succeeded"), JSON.stringify(rows.map((r) => [r.status, r.attempts])));
      const byId = new Map(rows.map((r) => [r.id, r]));
      for (const r of running) {
        const done = byId.get(r.id);
        assert.ok(done);
        const history = (typeof done.history === "string" ? JSON.parse(done.history) : done.history) as Array<{ attempt: number; errorCode: string | null }>;
        assert.deepEqual(history.map((a) => [a.attempt, a.errorCode]), [[1, "LEASE_EXPIRED"], [2, null]], "the killed attempt is recorded, the next one succeeded");
      }
      for (const id of ids) assert.ok(byId.has(id));
      // What had finished before the kill did not run again after the restart.
      for (const r of finishedBefore) {
        const done = byId.get(r.id)!;
        const history = (typeof done.history === "string" ? JSON.parse(done.history) : done.history) as Array<{ attempt: number; errorCode: string | null }>;
        assert.deepEqual(history.map((a) => [a.attempt, a.errorCode]), [[1, null]], `${r.id} ran once`);
      }

      // The status through the CLI.
      const shown = await ok("invocation", running[0]?.id ?? "");
      assert.match(shown, /status: +succeeded/);
      assert.match(shown, /LEASE_EXPIRED/);
    });

    test("CLI: invoke --async --wait, dlq ls|show|replay|purge, triggers ls, describe", async () => {
      const waited = await cli("invoke", "bad", "--async", "--wait");
      assert.equal(waited.code, 1, "a dead-lettered invocation exits 1");
      const id = /^([0-9a-f-]{36}): dead/.exec(waited.stdout)?.[1];
      assert.ok(id, waited.stdout + waited.stderr);
      assert.match(await ok("dlq", "ls", "bad"), new RegExp(`${id}.*FUNCTION_ERROR`));
      const show = await ok("dlq", "show", "bad", id);
      assert.match(show, /request:\n {2}GET \//);
      assert.match(show, new RegExp(`1 .* 500 .*FUNCTION_ERROR.*${id}-1`));
      const replay = await ok("dlq", "replay", "bad", id);
      const fresh = new RegExp(`${id} → ([0-9a-f-]{36})`).exec(replay)?.[1];
      assert.ok(fresh, replay);
      for (let i = 0; i < 100; i++) {
        if ((await ok("invocation", fresh)).includes("status:     dead")) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      assert.match(await ok("dlq", "ls", "bad"), new RegExp(fresh));
      assert.doesNotMatch(await ok("dlq", "ls", "bad"), new RegExp(id), "the replayed entry left the DLQ");
      assert.match(await ok("dlq", "purge", "bad"), /purged 1 dead-lettered invocation$/m);
      assert.match(await ok("dlq", "ls", "bad"), /empty/);

      const triggers = await ok("triggers", "ls", "cron");
      assert.match(triggers, /cron#0:\w+ +schedule +0 3 \* \* \* \(Europe\/Berlin\) +latest/);
      assert.match(triggers, /cron#1:\w+ +rate +every 5 minutes +none/);
      const described = await ok("describe", "cron");
      assert.match(described, /triggers:\n {2}- schedule "0 3 \* \* \*" \(Europe\/Berlin\), catchUp latest\n {2}- rate 5 minutes, catchUp none/);
      const idem = await ok("invoke", "slow", "--async", "--idempotency-key", "cli-1");
      assert.match(await ok("invoke", "slow", "--async", "--idempotency-key", "cli-1"), new RegExp(`^${idem.split("\n")[0]} \\(idempotent repeat\\)`));
      const conflict = await cli("invoke", "slow", "--async", "--idempotency-key", "cli-1", "--data", "{}");
      assert.equal(conflict.code, 1);
      assert.match(conflict.stderr, /IDEMPOTENCY_CONFLICT/);

      up.child.kill("SIGTERM");
      const [code] = (await once(up.child, "exit")) as [number | null];
      assert.equal(code, 0, up.output());
    });
  });
}
