// Queue triggers end to end, the way a user runs them: `stratus up` (a child process, real process
// driver, SQLite store) and a Redis server this test starts; deploy a function with a Redis Streams
// trigger whose URL is a secret, set the secret with the CLI, publish messages with a Redis client, and
// see them handled (the function's log lines carry each message's ce-id), a poison message in the DLQ
// (`stratus dlq ls|show|replay`), and the trigger's state in `stratus triggers ls`.
// Needs root (bubblewrap, cgroups), `npm run build` and Debian's redis-server.
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Redis } from "ioredis";
import { startRedis, type BrokerServer } from "./helpers/brokers";
import { bindStratus, stopSuitePlatform, startUpInTempRoot, type SuitePlatform } from "./helpers/stratus-cli";

const SOURCE = `
module.exports.consumer = {
  func: (req, res) => {
    const body = req.rawBody ? req.rawBody.toString() : "";
    console.log("handled " + req.get("ce-id") + " attempt " + req.get("x-stratus-attempt") + " type " + req.get("ce-type") + " body " + body);
    if (body === "poison") return res.status(500).send("cannot");
    res.sendStatus(204);
  },
  config: {
    maxAttempts: 2, retryDelayMs: 50, timeout: 5000,
    triggers: [{ queue: { type: "redis", urlSecret: "REDIS_URL", stream: "orders", concurrency: 2 } }],
  },
};
`;

let redis: BrokerServer;
let p: SuitePlatform;
const { ok } = bindStratus(() => ({ env: p.env, cwd: p.root }), 120_000, () => `\n--- stratus up ---\n${p?.output() ?? ""}`);

before(async () => {
  redis = await startRedis();
  p = await startUpInTempRoot("st-evq-", [], { STRATUS_EVENTS_SOURCE_SYNC_INTERVAL_MS: "200", STRATUS_EVENTS_LEASE_MARGIN_MS: "2000" });
});
after(async () => {
  await stopSuitePlatform(p);
  await redis?.stop();
});

/** Runs `probe` every 200 ms until it returns true (bounded). */
async function eventually(what: string, probe: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await probe()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`timed out waiting for ${what}\n--- stratus up ---\n${p.output()}`);
}

test("a Redis Streams trigger: the URL from a secret, messages handled as CloudEvents, a poison message in the DLQ and replayable", { timeout: 240_000 }, async () => {
  const dir = join(p.root, "proj");
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "package.json"), JSON.stringify({ name: "queue-e2e", main: "index.js" }));
  await writeFile(join(dir, "index.js"), SOURCE);
  await ok("deploy", dir);

  // Deployed, but the secret the trigger names is not set yet: it says so, and does not run.
  await eventually("the missing secret reported", async () => /not running: secret REDIS_URL is not set/.test(await ok("triggers", "ls", "consumer")));
  await ok("secrets", "set", "consumer", `REDIS_URL=${redis.url}`);
  await eventually("the source connected", async () => /queue \(redis\)\s+redis:\/\/orders\s+-\s+-\s+connected/.test(await ok("triggers", "ls", "consumer")));

  const r = new Redis(redis.url);
  const ids: string[] = [];
  try {
    for (const body of ["first", "second", "third"]) ids.push((await r.xadd("orders", "*", "data", body)) as string);
    ids.push((await r.xadd("orders", "*", "data", "poison")) as string);
  } finally {
    r.disconnect();
  }
  await eventually("three messages handled", async () => {
    const logs = await ok("logs", "consumer", "--limit", "500");
    return ids.slice(0, 3).every((id) => logs.includes(`handled ${id} attempt 1 type io.stratus.queue.redis.message`));
  });
  await eventually("the poison message dead-lettered", async () => (await ok("dlq", "ls", "consumer")).includes("event"));
  // The DLQ entry is committed by the control plane; the second attempt's log line comes with the node's
  // next telemetry flush, which may land a moment later.
  await eventually("both attempts of the poison message logged", async () => {
    const l = await ok("logs", "consumer", "--limit", "500");
    return l.includes(`handled ${ids[3]} attempt 1`) && l.includes(`handled ${ids[3]} attempt 2`);
  });
  const logs = await ok("logs", "consumer", "--limit", "500");
  assert.ok(!logs.includes(`handled ${ids[3]} attempt 3`), "maxAttempts 2: no third attempt");

  const dlq = JSON.parse(await ok("dlq", "ls", "consumer", "--json")) as { entries: Array<{ invocationId: string; attempts: number; origin: { kind: string; eventId?: string } }> };
  assert.equal(dlq.entries.length, 1);
  const entry = dlq.entries[0]!;
  assert.equal(entry.attempts, 2);
  assert.deepEqual([entry.origin.kind, entry.origin.eventId], ["event", ids[3]]);
  const shown = await ok("dlq", "show", "consumer", entry.invocationId);
  assert.match(shown, new RegExp(`event ${ids[3]}`));

  // A replay goes through the async path with the same CloudEvent (ce-id kept); it fails again, as the message is poison.
  await ok("dlq", "replay", "consumer", entry.invocationId);
  await eventually("the replay ran", async () => ((await ok("logs", "consumer", "--limit", "500")).match(new RegExp(`handled ${ids[3]} attempt 1`, "g")) ?? []).length >= 2);

  const state = await ok("triggers", "ls", "consumer");
  assert.match(state, /acked 3, retried 1, dead 1/, state);
});
