// Adversarial section D: control-plane API abuse, against the whole platform (`stratus up`'s
// createPlatform: SQLite store, API, gateway, process driver) on 127.0.0.1:0. Catalogue:
// docs/security.md. Stratus is single-tenant — there are no namespaces, so D3 and D9 apply as
// "a function has no token and no route to another function's data"; request signing does not exist,
// so D4 is about revoked tokens. Every case ends with the platform invariants (canary 200, the canary
// secret and the admin token in no response and in no byte of the store's files).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { API_OPERATIONS } from "../../src/control/api";
import { deploy, project, startPlatform, type PlatformFixture } from "../helpers/platform-fixture";
import { randomBytes } from "node:crypto";

const FUNCTIONS_JS = readFileSync("test/fixtures/adversarial/gateway-functions.js", "utf8");
const CANARY_SECRET = `dcanary-${randomBytes(12).toString("hex")}`;
/** Routes that answer without a token (src/control/api.ts isPublicPath). */
const PUBLIC_ROUTES = new Set(["get /healthz", "get /readyz", "get /api/v1/openapi.json"]);

interface Seen {
  texts: string[];
}

async function setUp(flags: Record<string, unknown>): Promise<PlatformFixture> {
  const fx = await startPlatform(flags);
  try {
    const out = await deploy(fx, await project({ "index.js": FUNCTIONS_JS, "package.json": JSON.stringify({ name: "adv", version: "1.0.0", main: "index.js" }) }));
    assert.equal(out.final?.type, "result", JSON.stringify(out.final));
    const r = await fetch(`${fx.url}/api/v1/functions/canary/secrets`, {
      method: "PATCH", headers: { authorization: `Bearer ${fx.token}`, "content-type": "application/json" }, body: JSON.stringify({ set: { CANARY_SECRET }, unset: [] }),
    });
    assert.equal(r.status, 200, await r.text());
    return fx;
  } catch (err) {
    // The caller's `after` never sees this fixture: a platform left running keeps the process alive.
    await fx.close();
    throw err;
  }
}

function client(fx: PlatformFixture, seen: Seen) {
  return async (method: string, path: string, init: { token?: string | null; body?: string; headers?: Record<string, string> } = {}) => {
    const headers: Record<string, string> = { ...init.headers };
    const token = init.token === undefined ? fx.token : init.token;
    if (token !== null) headers.authorization = `Bearer ${token}`;
    if (init.body !== undefined) headers["content-type"] ??= "application/json";
    const r = await fetch(`${fx.url}${path}`, { method, headers, body: init.body, signal: AbortSignal.timeout(30_000) });
    const text = await r.text();
    seen.texts.push(JSON.stringify([...r.headers]), text);
    return { status: r.status, text, headers: r.headers, json: () => JSON.parse(text) as { error?: { code: string; message: string } } };
  };
}

/** Canary 200 (it reads its secret), no secret or admin token in any response seen nor in the store's files. */
async function assertPlatformInvariants(fx: PlatformFixture, seen: Seen): Promise<void> {
  const c = await fetch(`${fx.url}/fn/canary`);
  assert.equal(c.status, 200);
  assert.equal(await c.text(), "ok", "the canary must see its secret");
  for (const t of seen.texts) {
    assert.ok(!t.includes(CANARY_SECRET), `the canary secret leaked: ${t.slice(0, 200)}`);
    assert.ok(!t.includes(fx.token), `the admin token leaked: ${t.slice(0, 200)}`);
  }
  for (const f of readdirSync(fx.dataDir)) {
    if (!f.startsWith("stratus.db")) continue;
    const bytes = readFileSync(join(fx.dataDir, f));
    assert.equal(bytes.indexOf(CANARY_SECRET), -1, `plaintext secret in ${f}`);
    assert.equal(bytes.indexOf(fx.token), -1, `plaintext admin token in ${f}`);
  }
}

/** A concrete path for a route pattern. */
const concrete = (path: string) => path.replace(":name", "canary").replace(":id", "tok_x");

describe("D: control-plane API abuse", () => {
  let fx: PlatformFixture;
  const seen: Seen = { texts: [] };
  let api: ReturnType<typeof client>;
  before(async () => {
    // A failure limit high enough for D1/D2's hundreds of refusals; D5 runs its own platform.
    fx = await setUp({ "auth.failureBurst": 1_000_000 });
    api = client(fx, seen);
  });
  after(async () => {
    if (fx) await fx.close();
  });

  test("D1: no token on every route of the router table: 401, except the explicit allowlist", async () => {
    assert.ok(API_OPERATIONS.length >= 18, `${API_OPERATIONS.length} operations`);
    for (const op of API_OPERATIONS) {
      const key = `${op.method} ${op.path}`;
      for (const auth of [undefined, "", "Basic YWRtaW46YWRtaW4=", `bearer ${fx.token}`, `Bearer  `]) {
        const headers: Record<string, string> = auth === undefined ? {} : { authorization: auth };
        const r = await api(op.method.toUpperCase(), concrete(op.path), { token: null, headers, ...(op.method === "get" || op.method === "delete" ? {} : { body: "{}" }) });
        if (PUBLIC_ROUTES.has(key)) {
          assert.equal(r.status, 200, `${key} is on the allowlist`);
          continue;
        }
        assert.equal(r.status, 401, `${key} with ${JSON.stringify(auth)} → ${r.status} ${r.text.slice(0, 200)}`);
        assert.equal(r.json().error?.code, "UNAUTHENTICATED");
        assert.equal(r.headers.get("x-stratus-error-source"), "platform");
      }
    }
    // Also what is not in the table: unknown paths and methods are 401 before 404/405 (no route enumeration).
    for (const [m, p] of [["GET", "/api/v1/nope"], ["PUT", "/api/v1/functions"], ["GET", "/api/v1/functions/canary/../../tokens"], ["GET", "/internal/v1/verify"]] as const) {
      const r = await api(m, p, { token: null });
      assert.equal(r.status, 401, `${m} ${p} → ${r.status}`);
    }
    await assertPlatformInvariants(fx, seen);
  });

  test("D2: expired, truncated, wrong, alg:none and oversized tokens: 401 (hashed compare)", async () => {
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const tokens = [
      fx.token.slice(0, -1), fx.token.slice(0, 8), `${fx.token}x`, fx.token.toUpperCase(), `${fx.token.slice(0, -1)}${fx.token.endsWith("a") ? "b" : "a"}`,
      `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: "admin", exp: 9_999_999_999 })}.`, `${b64({ alg: "HS256" })}.${b64({ sub: "admin" })}.AAAA`,
      "x".repeat(8000), "' OR '1'='1", "%00", "null", "undefined", " ",
    ];
    for (const t of tokens) {
      const r = await api("GET", "/api/v1/functions", { token: t });
      assert.equal(r.status, 401, `${JSON.stringify(t.slice(0, 40))} → ${r.status}`);
      assert.equal(r.json().error?.code, "UNAUTHENTICATED");
    }
    // Private functions on the gateway check the same way.
    for (const t of [fx.token.slice(0, -1), "garbage"]) {
      const r = await fetch(`${fx.url}/fn/private`, { headers: { authorization: `Bearer ${t}` } });
      assert.equal(r.status, 401);
    }
    const ok = await fetch(`${fx.url}/fn/private`, { headers: { authorization: `Bearer ${fx.token}` } });
    assert.equal(ok.status, 200);
    assert.equal(((await ok.json()) as { sawAuthorization: string | null }).sawAuthorization, null, "the platform's token is not forwarded to the function");
    await assertPlatformInvariants(fx, seen);
  });

  test("D3 (no namespaces here): unknown functions and ids answer 404 the same way whether they exist in any form or not", async () => {
    // Stratus has one tenant: any valid token may manage every function (docs/security.md). What
    // applies: no existence oracle — a name never deployed and a deleted one answer alike.
    const a = await api("GET", "/api/v1/functions/neverDeployed");
    const b = await api("GET", "/api/v1/functions/neverDeployed/logs");
    assert.equal(a.status, 404);
    assert.equal(a.json().error?.code, "FUNCTION_NOT_FOUND");
    assert.ok(b.status === 404 || b.status === 200, String(b.status));
    const tok = await api("DELETE", "/api/v1/tokens/tok_doesnotexist");
    assert.equal(tok.status, 404);
    await assertPlatformInvariants(fx, seen);
  });

  test("D4: a revoked token is refused on the very next request, on the API and on private functions", async () => {
    const created = (await api("POST", "/api/v1/tokens", { body: JSON.stringify({ name: "d4" }) }));
    assert.equal(created.status, 201);
    const { id, token } = JSON.parse(created.text) as { id: string; token: string };
    seen.texts.pop(); // the one response allowed to show a (new, soon revoked) token
    assert.equal((await api("GET", "/api/v1/functions", { token })).status, 200);
    assert.equal((await fetch(`${fx.url}/fn/private`, { headers: { authorization: `Bearer ${token}` } })).status, 200);
    assert.equal((await api("DELETE", `/api/v1/tokens/${id}`)).status, 200);
    assert.equal((await api("GET", "/api/v1/functions", { token })).status, 401);
    assert.equal((await fetch(`${fx.url}/fn/private`, { headers: { authorization: `Bearer ${token}` } })).status, 401);
    await assertPlatformInvariants(fx, seen);
  });

  test("D6: function, secret and env names with `../`, separators or NUL: 400/404, nothing outside its function", async () => {
    for (const name of ["..", "..%2f..%2fetc", "a%2f..%2fb", "canary%00", "%2e%2e"]) {
      const r = await api("GET", `/api/v1/functions/${name}/secrets`);
      assert.ok(r.status === 400 || r.status === 404, `${name} → ${r.status}`);
    }
    for (const key of ["../x", "a/b", "A\u0000B", "..", "STRATUS_TOKEN", "1ABC", "A-B", ""]) {
      for (const what of ["secrets", "env"]) {
        const r = await api("PATCH", `/api/v1/functions/canary/${what}`, { body: JSON.stringify({ set: { [key]: "v" }, unset: [] }) });
        assert.equal(r.status, 400, `${what} ${JSON.stringify(key)} → ${r.status} ${r.text.slice(0, 200)}`);
        assert.equal(r.json().error?.code, "INVALID_ARGUMENT");
      }
    }
    await assertPlatformInvariants(fx, seen);
  });

  test("D7: SQL metacharacters in names and filters: 400, never 5xx, no SQL, stack or path in a body", async () => {
    const probes = [
      ["GET", "/api/v1/functions/x'%20OR%20'1'='1/logs"], ["GET", "/api/v1/functions/canary/logs?level=info'%20OR%201=1--"],
      ["GET", "/api/v1/functions/canary/logs?since=1;DROP%20TABLE%20logs"], ["GET", "/api/v1/functions/canary/logs?limit=1%20UNION%20SELECT%20*"],
      ["GET", "/api/v1/functions/canary/logs?request=%27%3B--"], ["GET", "/api/v1/functions/canary/invocations?status=5xx'--"],
      ["GET", "/api/v1/functions/canary%22%3B--/versions"], ["POST", "/api/v1/functions/canary/rollback"],
    ] as const;
    for (const [m, p] of probes) {
      const r = await api(m, p, m === "POST" ? { body: JSON.stringify({ version: "' OR 1=1 --" }) } : {});
      assert.ok(r.status < 500, `${m} ${p} → ${r.status} ${r.text.slice(0, 200)}`);
      assert.doesNotMatch(r.text, /sqlite|SQLITE_|SELECT |syntax error|\/work\/|node_modules|\n\s+at /i, `${m} ${p} leaks internals: ${r.text.slice(0, 300)}`);
    }
    // The store still works and still holds the canary's version.
    assert.equal((await api("GET", "/api/v1/functions/canary")).status, 200);
    await assertPlatformInvariants(fx, seen);
  });

  test("D8: huge and deeply nested JSON, `__proto__` keys: 413/400, no prototype pollution", async () => {
    const huge = await api("PATCH", "/api/v1/functions/canary/env", { body: JSON.stringify({ set: { A: "x".repeat(2 * 1024 * 1024) }, unset: [] }) });
    assert.equal(huge.status, 413);
    const deep = await api("PATCH", "/api/v1/functions/canary/env", { body: `${"[".repeat(100_000)}${"]".repeat(100_000)}` });
    assert.equal(deep.status, 400, deep.text.slice(0, 200));
    for (const body of ['{"__proto__":{"polluted":1},"set":{},"unset":[]}', '{"set":{"__proto__":{"polluted":1}},"unset":[]}', '{"constructor":{"prototype":{"polluted":1}},"set":{},"unset":[]}', '{"set":{"A":"1"},"unset":["__proto__"]}']) {
      const r = await api("PATCH", "/api/v1/functions/canary/env", { body });
      assert.ok(r.status === 400 || r.status === 200, `${body} → ${r.status}`);
      assert.equal(({} as { polluted?: unknown }).polluted, undefined, `${body} polluted Object.prototype`);
    }
    assert.equal(({} as { polluted?: unknown }).polluted, undefined);
    await assertPlatformInvariants(fx, seen);
  });

  test("D9 (no function tokens here): a function's environment holds no platform token or platform variable", async () => {
    const r = await fetch(`${fx.url}/fn/envProbe`);
    assert.equal(r.status, 200);
    const text = await r.text();
    const env = (JSON.parse(text) as { env: Record<string, string> }).env;
    assert.ok(!text.includes(fx.token), "the admin token is in a function's env");
    assert.ok(!text.includes(CANARY_SECRET), "another function's secret is in this function's env");
    assert.ok(!text.includes(readFileSync(join(fx.dataDir, "node.token"), "utf8").trim()), "the node token is in a function's env");
    for (const k of Object.keys(env)) assert.ok(!/TOKEN|DATABASE_URL|MASTER|STRATUS_(?!SOCKET|GENERIC|FUNCTION|SPEC)/.test(k) || k.startsWith("STRATUS_RUNTIME"), `unexpected platform variable ${k}`);
    await assertPlatformInvariants(fx, seen);
  });
});

describe("D5: repeated authentication failures are slowed per client address", () => {
  let fx: PlatformFixture;
  const seen: Seen = { texts: [] };
  before(async () => {
    fx = await setUp({ "auth.failureBurst": 5, "auth.failuresPerMinute": 60 });
  });
  after(async () => {
    if (fx) await fx.close();
  });

  test("D5: after the burst, 429 TOO_MANY_AUTH_FAILURES with Retry-After, before any token is checked; API and private functions share the bucket; it refills", async () => {
    const api = client(fx, seen);
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await api("GET", "/api/v1/functions", { token: `wrong-${i}` })).status);
    assert.deepEqual(statuses, [401, 401, 401, 401, 401]);
    const limited = await api("GET", "/api/v1/functions", { token: "wrong-again" });
    assert.equal(limited.status, 429);
    assert.equal(limited.json().error?.code, "TOO_MANY_AUTH_FAILURES");
    assert.ok(Number(limited.headers.get("retry-after")) >= 1, `Retry-After ${limited.headers.get("retry-after")}`);
    assert.equal(limited.headers.get("x-stratus-error-source"), "platform");
    // The valid token waits too (a guesser must not learn that it guessed right), on the API and the gateway.
    assert.equal((await api("GET", "/api/v1/functions")).status, 429);
    const priv = await fetch(`${fx.url}/fn/private`, { headers: { authorization: `Bearer ${fx.token}` } });
    assert.equal(priv.status, 429);
    assert.equal(((await priv.json()) as { error: { code: string } }).error.code, "TOO_MANY_AUTH_FAILURES");
    // Public functions and health are never limited.
    assert.equal((await fetch(`${fx.url}/fn/canary`)).status, 200);
    assert.equal((await fetch(`${fx.url}/healthz`)).status, 200);
    // 60/min: one failure allowed again after ~1 s.
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await api("GET", "/api/v1/functions")).status, 200);
    await assertPlatformInvariants(fx, seen);
  });
});

describe("D5: deployments and API requests are limited per token", () => {
  let fx: PlatformFixture;
  const seen: Seen = { texts: [] };
  before(async () => {
    // Deploys: 2 in a row, then one a minute (setUp's deploy is the first). Requests: 30 in a row, then 1/s.
    fx = await setUp({ "rateLimit.deployBurst": 2, "rateLimit.deploysPerMinute": 1, "rateLimit.requestBurst": 30, "rateLimit.requestsPerMinute": 60 });
  });
  after(async () => {
    if (fx) await fx.close();
  });

  test("D5 (deploy flood): past the burst, 429 API_RATE_LIMITED with Retry-After before the upload is read; another token is unaffected; nothing half-deployed", async () => {
    const api = client(fx, seen);
    const archive = await project({ "index.js": FUNCTIONS_JS, "package.json": JSON.stringify({ name: "adv", version: "1.0.0", main: "index.js" }) });
    const second = await deploy(fx, archive);
    assert.equal(second.final?.type, "result", JSON.stringify(second.final));
    const versions = (await api("GET", "/api/v1/functions/canary/versions")).text;
    const t0 = performance.now();
    const refused = await deploy(fx, archive);
    assert.equal(refused.status, 429, JSON.stringify(refused.body));
    assert.equal((refused.body as { error: { code: string } }).error.code, "API_RATE_LIMITED");
    const head = await fetch(`${fx.url}/api/v1/deployments`, { method: "POST", headers: { authorization: `Bearer ${fx.token}`, "content-type": "application/gzip" }, body: archive });
    const retry = Number(head.headers.get("retry-after"));
    assert.equal(head.status, 429);
    await head.text();
    assert.ok(retry >= 30 && retry <= 60, `Retry-After ${retry} (one deploy a minute)`);
    assert.equal(head.headers.get("x-stratus-error-source"), "platform");
    assert.ok(performance.now() - t0 < 5000, "refused at once, no build started");
    // Rollbacks share the deploy bucket.
    const rb = await api("POST", "/api/v1/functions/canary/rollback", { body: "{}" });
    assert.equal(rb.status, 429, rb.text);
    assert.equal(rb.json().error?.code, "API_RATE_LIMITED");
    // Nothing was built or activated by the refused calls.
    assert.equal((await api("GET", "/api/v1/functions/canary/versions")).text, versions);
    // Another token has its own buckets: its (empty, invalid) upload gets past the limiter to the unpacker.
    const created = await api("POST", "/api/v1/tokens", { body: JSON.stringify({ name: "d5-other" }) });
    assert.equal(created.status, 201);
    const other = (JSON.parse(created.text) as { token: string }).token;
    seen.texts.pop(); // the one response allowed to show a new token
    const o = await fetch(`${fx.url}/api/v1/deployments`, { method: "POST", headers: { authorization: `Bearer ${other}`, "content-type": "application/gzip" }, body: Buffer.from("not gzip") });
    const oText = await o.text();
    assert.equal(o.status, 400, oText);
    assert.equal((JSON.parse(oText) as { error: { code: string } }).error.code, "INVALID_ARCHIVE");
    await assertPlatformInvariants(fx, seen);
  });

  test("D5 (request flood): one token's cheap requests are limited too; the gateway's functions are not", async () => {
    const api = client(fx, seen);
    const statuses: number[] = [];
    for (let i = 0; i < 40; i++) statuses.push((await api("GET", "/api/v1/functions")).status);
    const first429 = statuses.indexOf(429);
    assert.ok(first429 > 0 && first429 <= 30, `limited within the burst of 30: ${statuses.join(",")}`);
    assert.ok(statuses.slice(first429).every((s) => s === 429), statuses.join(","));
    const r = await api("GET", "/api/v1/functions");
    assert.equal(r.json().error?.code, "API_RATE_LIMITED");
    assert.ok(Number(r.headers.get("retry-after")) >= 1);
    assert.equal((await fetch(`${fx.url}/healthz`)).status, 200, "health is never limited");
    for (let i = 0; i < 5; i++) assert.equal((await fetch(`${fx.url}/fn/canary`)).status, 200, "functions are not API calls");
    await new Promise((res) => setTimeout(res, 1100)); // 60/min: one request again after ~1 s
    assert.equal((await api("GET", "/api/v1/functions")).status, 200);
    await assertPlatformInvariants(fx, seen);
  });
});
