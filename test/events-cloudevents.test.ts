// The event model end to end through `stratus up` (a child process, process driver, SQLite): a TypeScript
// function written with `defineEventFunction` from "stratus" and a `rate` trigger receives each slot as a
// typed CloudEvent (io.stratus.schedule.fired, its source, the slot's stable id and time); its throw on
// the first attempt is a failure the platform retries with the same event id; a request that is not a
// CloudEvent gets 400 INVALID_CLOUDEVENT; a structured-mode event posted directly is parsed too.
// The trigger is `rate: 1 second` with a 200 ms scheduler tick: no wall-clock-minute waits.
// Needs root (bubblewrap, cgroups) and `npm run build`.
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { bindStratus, stopSuitePlatform, startUpInTempRoot, type SuitePlatform } from "./helpers/stratus-cli";

const SOURCE = `import { defineEventFunction } from "stratus";

interface Slot { trigger: { id: string; index: number; rate?: string }; slot: string }

export const ticker = defineEventFunction<Slot>(async (event, context) => {
  console.log("EVENT " + JSON.stringify({
    id: event.id, type: event.type, source: event.source, subject: event.subject, time: event.time, specversion: event.specversion,
    data: event.data, attempt: context.attempt, trigger: context.trigger, invocationId: context.invocationId,
  }));
  if (event.type === "io.stratus.schedule.fired" && context.attempt === 1) throw new Error("first attempts fail, on purpose");
  return event.type === "com.example.direct" ? { got: event.data } : undefined;
}, { triggers: [{ rate: "1 second", catchUp: "latest" }], retryDelayMs: 10, maxAttempts: 3, timeout: 5000 });
`;

interface Seen {
  id: string; type: string; source: string; subject: string; time: string; specversion: string;
  data: { trigger: { id: string; index: number; rate: string }; slot: string } | { n: number };
  attempt: number; trigger: string | null; invocationId: string | null;
}

let p: SuitePlatform;
const { cli, ok } = bindStratus(() => ({ env: p.env, cwd: p.root }), 120_000, () => `\n--- stratus up ---\n${p?.output() ?? ""}`);

before(async () => {
  p = await startUpInTempRoot("st-ce-", [], { STRATUS_EVENTS_POLL_INTERVAL_MS: "50", STRATUS_EVENTS_SCHEDULE_INTERVAL_MS: "200" });
  const dir = join(p.root, "proj");
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "package.json"), JSON.stringify({ name: "ce", main: "index.ts" }));
  await writeFile(join(dir, "index.ts"), SOURCE);
  await ok("deploy", dir);
});
after(async () => {
  await stopSuitePlatform(p);
});

/** The EVENT lines the function logged so far. */
async function seen(): Promise<Seen[]> {
  const out = await ok("logs", "ticker", "--limit", "1000");
  return out.split("\n").flatMap((l) => {
    const i = l.indexOf("EVENT {");
    return i === -1 ? [] : [JSON.parse(l.slice(i + 6)) as Seen];
  });
}

test("a rate trigger delivers typed CloudEvents to defineEventFunction; a failed attempt is retried with the same event id", async () => {
  let events: Seen[] = [];
  let retried: Seen | undefined;
  for (let i = 0; i < 120; i++) {
    events = (await seen()).filter((e) => e.type === "io.stratus.schedule.fired");
    retried = events.find((e) => e.attempt === 2);
    if (retried !== undefined) break;
    await new Promise((res) => setTimeout(res, 250));
  }
  assert.ok(retried, `a slot retried within 30 s: ${JSON.stringify(events)}${p.output()}`);
  const first = events.find((e) => e.attempt === 1 && e.id === retried!.id);
  assert.ok(first, "attempt 1 of that slot was seen, with the same ce-id");
  const data = retried.data as { trigger: { id: string; index: number; rate: string }; slot: string };
  assert.equal(retried.specversion, "1.0");
  assert.equal(retried.source, "stratus://functions/ticker/triggers/0");
  assert.match(retried.id, /^ticker#0:[0-9a-f]{8}@\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/);
  assert.equal(retried.id, `${data.trigger.id}@${data.slot}`);
  assert.equal(retried.time, data.slot, "time is the slot");
  assert.equal(Date.parse(data.slot) % 1000, 0, "a rate slot is a multiple of the rate");
  assert.equal(retried.subject, data.trigger.id);
  assert.equal(retried.trigger, data.trigger.id, "context.trigger");
  assert.deepEqual({ index: data.trigger.index, rate: data.trigger.rate }, { index: 0, rate: "1 second" });
  assert.equal(retried.invocationId, first.invocationId, "one invocation, two attempts");
  assert.match(retried.invocationId ?? "", /^[0-9a-f-]{36}$/);
  const shown = await ok("invocation", retried.invocationId!);
  assert.match(shown, /status: +succeeded/);
  assert.match(shown, /FUNCTION_ERROR/, "attempt 1 failed with the function's 500");

  // Recorded per invocation: which trigger, which event, which attempt (`stratus invocations`, `stratus logs`).
  let rows: string[] = [];
  for (let i = 0; i < 60 && rows.length < 2; i++) {
    const out = await ok("invocations", "ticker", "--event", retried.id);
    rows = out.split("\n").slice(1).filter((l) => l.trim() !== "");
    if (rows.length < 2) await new Promise((res) => setTimeout(res, 250));
  }
  assert.equal(rows.length, 2, rows.join("\n"));
  const cols = (l: string) => l.trim().split(/\s+/);
  const head = (await ok("invocations", "ticker", "--event", retried.id)).split("\n")[0] ?? "";
  assert.deepEqual(cols(head).slice(-3), ["ATTEMPT", "TRIGGER", "EVENT"]);
  assert.deepEqual(rows.map((l) => cols(l).slice(-3)), [["2", data.trigger.id, retried.id], ["1", data.trigger.id, retried.id]], "newest first");
  assert.deepEqual(rows.map((l) => cols(l).slice(-12, -10)), [["204", "-"], ["500", "FUNCTION_ERROR"]], "STATUS and ERROR (TIME is two words)");
  const json = JSON.parse(await ok("invocations", "ticker", "--trigger", data.trigger.id, "--limit", "1000", "--json")) as { invocations: Array<{ trigger: string; eventId: string; attempt: number }> };
  assert.ok(json.invocations.some((r) => r.eventId === retried!.id && r.attempt === 2));
  assert.ok(json.invocations.every((r) => r.trigger === data.trigger.id));
  const reports = (await ok("logs", "ticker", "--request", `${retried.invocationId}-2`)).split("\n").filter((l) => l.includes("REPORT"));
  assert.match(reports[0] ?? "", new RegExp(`Attempt: 2\tTrigger: ${data.trigger.id.replace(/[#:]/g, ".")}\tEvent: ${retried.id.replace(/[#:.]/g, ".")}`));
});

test("a request that is not a CloudEvent gets 400 INVALID_CLOUDEVENT; a structured-mode event posted directly is handled", async () => {
  const bad = await fetch(`${p.url}/fn/ticker`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  assert.equal(bad.status, 400);
  const err = ((await bad.json()) as { error: { code: string; requestId: string } }).error;
  assert.equal(err.code, "INVALID_CLOUDEVENT");
  assert.equal(err.requestId, bad.headers.get("x-stratus-request-id"));
  const direct = await fetch(`${p.url}/fn/ticker`, {
    method: "POST", headers: { "content-type": "application/cloudevents+json" },
    body: JSON.stringify({ specversion: "1.0", id: "d-1", source: "/tests", type: "com.example.direct", data: { n: 5 } }),
  });
  assert.equal(direct.status, 200);
  assert.deepEqual(await direct.json(), { got: { n: 5 } });
  const binaryNoSource = await fetch(`${p.url}/fn/ticker`, { method: "POST", headers: { "ce-id": "x", "ce-type": "t", "ce-specversion": "1.0" } });
  assert.equal(binaryNoSource.status, 400, "binary mode without ce-source");
  // Log lines reach the store in telemetry batches: poll (bounded).
  let e: Seen | undefined;
  for (let i = 0; i < 60 && e === undefined; i++) {
    e = (await seen()).find((x) => x.id === "d-1");
    if (e === undefined) await new Promise((res) => setTimeout(res, 250));
  }
  assert.deepEqual(e && { data: e.data, attempt: e.attempt, trigger: e.trigger, invocationId: e.invocationId }, { data: { n: 5 }, attempt: 1, trigger: null, invocationId: null });
  const r = await cli("invoke", "ticker", "--data", "{}");
  assert.equal(r.code, 1, "stratus invoke without CloudEvent headers is refused by the function");
  assert.match(r.stderr, /^INVALID_CLOUDEVENT: Not a CloudEvent/m);
});
