// Compatibility suite: real published sample functions of other platforms (test/fixtures/compat/, origin,
// commit and licence of each in its README) deployed unchanged through the real CLI (`stratus deploy`)
// to one `stratus up` (process driver), each checked for what the sample's own tests or probes check:
// Google Cloud Functions' nodejs-docs-samples, the Functions Framework's own HTTP test table, Firebase's
// HTTPS samples, Vercel's Node fixtures, and AWS Lambda function URL patterns. The samples' npm
// dependencies come from their lockfiles (`npm ci` in the build, so the npm registry must be reachable).
// Checks run one sample after the other (two pairs share a function name), each removed after its checks;
// deploys run ahead. Known differences not resolved yet are TODO tests with their reason (see sample()).
// Needs root (bubblewrap, cgroups) and `npm run build`.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { cp, readFile, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { once } from "node:events";
import { request as httpRequest } from "node:http";
import { bindStratus, killUp, startUpInTempRoot, type SuitePlatform } from "./helpers/stratus-cli";

const FIXTURES = resolve("test/fixtures/compat");
let p: SuitePlatform;
const { cli, ok } = bindStratus(() => ({ env: p.env, cwd: p.root }), 300_000, () => `\n--- stratus up:\n${p?.output().slice(-4000) ?? ""}`);

// Deploys are mostly `npm ci`: they run ahead of the checks, DEPLOYS_AHEAD at a time, in the order of the
// tests; a sample whose function name another sample uses waits until that one was removed.
const DEPLOYS_AHEAD = 4;
let active = 0;
const waiting: Array<() => void> = [];
async function limited<T>(work: () => Promise<T>): Promise<T> {
  if (active >= DEPLOYS_AHEAD) await new Promise<void>((r) => waiting.push(r));
  active++;
  try {
    return await work();
  } finally {
    active--;
    waiting.shift()?.();
  }
}

interface Scheduled {
  /** Settles with the deploy's CLI result (never rejects). */
  readonly deployed: Promise<{ code: number; stdout: string; stderr: string }>;
  /** Called once the sample's function is removed: the next sample with that name may deploy. */
  readonly release: () => void;
}
const released = new Map<string, Promise<void>>();
const scheduled = new Map<string, Scheduled>();
let platformUp: () => void;
const upReady = new Promise<void>((r) => (platformUp = r));

/** Queues the deploy of `dir` (a fixture) whose functions are `fn`. Key: the test's name for it. */
function schedule(key: string, fn: string, dir: () => string | Promise<string>): void {
  const previous = released.get(fn) ?? Promise.resolve();
  let release!: () => void;
  released.set(fn, new Promise<void>((r) => (release = r)));
  const deployed = Promise.all([previous, upReady]).then(async () => {
    const path = await dir();
    return limited(() => cli("deploy", path));
  });
  scheduled.set(key, { deployed: deployed.catch((err: Error) => ({ code: -1, stdout: "", stderr: String(err?.stack ?? err) })), release });
}

before(async () => {
  p = await startUpInTempRoot("st-cmp-", []);
  platformUp();
});
after(async () => {
  // SIGTERM first: a drained `stratus up` unmounts its pre-warmed slots, so the temp root can be removed.
  if (p?.child && p.child.exitCode === null) {
    p.child.kill("SIGTERM");
    await Promise.race([once(p.child, "exit"), new Promise((r) => setTimeout(r, 30_000).unref())]);
  }
  await killUp(p?.child);
  if (p?.root) await rm(p.root, { recursive: true, force: true });
});

/** Waits for a scheduled deploy; asserts it printed `<fn>@… activated <url>` and returns the URL and the CLI output. */
async function deployed(key: string, fn: string): Promise<{ url: string; output: string }> {
  const r = await scheduled.get(key)!.deployed;
  const output = `${r.stdout}\n${r.stderr}`;
  assert.equal(r.code, 0, `deploy ${key} failed:\n${output}`);
  const m = new RegExp(`${fn}@\\w+ activated\\s+(http://\\S+/fn/${fn})`).exec(r.stdout);
  assert.ok(m, `deploy ${key}: no "${fn}@… activated <url>" line:\n${output}`);
  return { url: m[1]!, output };
}

/** A request and its whole answer (body as text). */
async function call(url: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; text: string }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(60_000) });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

// A request with exactly these headers (plus Host, Content-Length, Connection): fetch would add
// `Accept: */*`, supertest (the Functions Framework's table) sends no Accept at all.
function callBare(url: string, method: string, headers: Record<string, string>, body?: string): Promise<{ status: number; headers: Headers; text: string }> {
  return new Promise((resolvePromise, reject) => {
    const req = httpRequest(url, { method, headers, timeout: 60_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(", ") : v);
        resolvePromise({ status: res.statusCode ?? 0, headers: h, text: Buffer.concat(chunks).toString("utf8") });
      });
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${url}: no answer in 60 s`)));
    req.on("error", reject);
    req.end(body);
  });
}

const json = (body: unknown): RequestInit => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

/**
 * One sample: queued for deploy now (when this file loads), checked when its test runs, then removed
 * with `stratus rm` (always, so the next sample with the same name can deploy). `known` names a known
 * difference the platform has not resolved yet: the test still runs every check and is reported as
 * TODO with that reason (node:test counts it apart; it never passes silently, and it shows as
 * "ok … # TODO" the day it passes).
 */
function sample(title: string, fixture: string, fn: string, checks: (url: string, deployOutput: string) => Promise<void>, known?: string): void {
  schedule(fixture, fn, () => join(FIXTURES, fixture));
  test(title, known === undefined ? {} : { todo: known }, async () => {
    try {
      const { url, output } = await deployed(fixture, fn);
      await checks(url, output);
    } finally {
      await cli("rm", fn);
      scheduled.get(fixture)!.release();
    }
  });
}

// ---- Google Cloud Functions: GoogleCloudPlatform/nodejs-docs-samples, functions/helloworld and functions/http

sample(
  "gcf-hello-get (functions/helloworld/helloworldGet): functions.http registration, GET",
  "gcf-hello-get", "helloGET", async (url) => {
  const r = await call(url);
  assert.equal(r.status, 200);
  assert.equal(r.text, "Hello World!");
});

sample(
  "gcf-hello-http (functions/helloworld/helloworldHttp): query, JSON body, no body (req.body is {}), XSS escaped",
  "gcf-hello-http", "helloHttp", async (url) => {
  const byQuery = await call(`${url}?name=John`);
  assert.deepEqual([byQuery.status, byQuery.text], [200, "Hello John!"]);
  const byBody = await call(url, json({ name: "John" }));
  assert.deepEqual([byBody.status, byBody.text], [200, "Hello John!"]);
  // req.body.name on a GET without a body: Cloud Functions gives req.body = {} (issue 11, item 3).
  const none = await call(url);
  assert.deepEqual([none.status, none.text], [200, "Hello World!"], `GET without a body: ${none.text}`);
  const xss = await call(url, json({ name: "<script>alert(1)</script>" }));
  assert.equal(xss.status, 200);
  assert.equal(xss.text.includes("<script>"), false, xss.text);
});

sample(
  "gcf-http-content (functions/http/httpContent): each content type parsed as Cloud Functions parses it",
  "gcf-http-content", "helloContent", async (url) => {
  const rows: Array<[string, string, string]> = [
    ["application/json", '{"name":"John"}', "Hello John!"],
    ["application/octet-stream", "John", "Hello John!"],
    ["text/plain", "John", "Hello John!"],
    ["application/x-www-form-urlencoded", "name=John", "Hello John!"],
    ["text/plain", "<script>alert(1)</script>", "Hello &lt;script&gt;alert(1)&lt;/script&gt;!"],
  ];
  for (const [type, body, expected] of rows) {
    const r = await call(url, { method: "POST", headers: { "content-type": type }, body });
    assert.deepEqual([r.status, r.text], [200, expected], `${type}: ${body}`);
  }
  const other = await call(url);
  assert.deepEqual([other.status, other.text], [200, "Hello World!"]);
});

sample(
  "gcf-cors (functions/http/corsEnabledFunction): preflight 204 with the CORS headers, then the GET",
  "gcf-cors", "corsEnabledFunction", async (url) => {
  const pre = await call(url, { method: "OPTIONS", headers: { origin: "https://example.com", "access-control-request-method": "GET" } });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("access-control-allow-origin"), "*");
  assert.equal(pre.headers.get("access-control-allow-methods"), "GET");
  assert.equal(pre.headers.get("access-control-allow-headers"), "Content-Type");
  assert.equal(pre.headers.get("access-control-max-age"), "3600");
  const get = await call(url, { headers: { origin: "https://example.com" } });
  assert.deepEqual([get.status, get.text], [200, "Hello World!"]);
  assert.equal(get.headers.get("access-control-allow-origin"), "*");
});

sample(
  "gcf-upload-file (functions/http/uploadFile): a multipart upload parsed by busboy from req.rawBody",
  "gcf-upload-file", "uploadFile", async (url) => {
  const notPost = await call(url);
  assert.equal(notPost.status, 405);
  const form = new FormData();
  form.append("title", "compat");
  form.append("file", new Blob(["file content\n"], { type: "text/plain" }), "hello.txt");
  // busboy.end(req.rawBody): without rawBody busboy never finishes and the function times out.
  const r = await call(url, { method: "POST", body: form });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.text, "");
});

sample(
  "gcf-parse-xml (functions/http/parseXML): XML read from req.rawBody, parsed by xml2js",
  "gcf-parse-xml", "parseXML", async (url) => {
  const r = await call(url, { method: "POST", headers: { "content-type": "text/xml" }, body: "<foo>bar</foo>" });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(JSON.parse(r.text), { foo: "bar" });
});

// ---- The Functions Framework's own HTTP table: GoogleCloudPlatform/functions-framework-nodejs, test/integration/http.ts

sample(
  "ff-http-table (functions-framework-nodejs test/integration/http.ts): every row of its table",
  "ff-http-table", "testHttpFunction", async (url) => {
  // { name, verb, path, body the table expects (supertest's parsed body: {} = nothing parsed as JSON), status }
  const table: Array<{ name: string; verb: "GET" | "POST"; path: string; body: unknown; status: number }> = [
    { name: "POST to empty path", verb: "POST", path: "/", body: { result: "hello" }, status: 200 },
    { name: "POST to /foo", verb: "POST", path: "/foo", body: { result: "hello" }, status: 200 },
    { name: "GET with query params", verb: "GET", path: "/foo?param=val", body: { query: "val" }, status: 200 },
    { name: "GET throws exception", verb: "GET", path: "/foo?crash=true", body: {}, status: 500 },
    { name: "GET favicon.ico", verb: "GET", path: "/favicon.ico", body: {}, status: 404 },
    { name: "with robots.txt", verb: "GET", path: "/robots.txt", body: {}, status: 404 },
  ];
  for (const row of table) {
    // As the table's supertest call: JSON content-type on every request, a {text: "hello"} body on POSTs, no Accept header.
    const r = await callBare(`${url}${row.path}`, row.verb, { "content-type": "application/json" }, row.verb === "POST" ? '{"text":"hello"}' : undefined);
    const isJson = /json/.test(r.headers.get("content-type") ?? "");
    const parsed = isJson ? JSON.parse(r.text) : {};
    assert.equal(r.status, row.status, `${row.name}: ${r.text}`);
    assert.deepEqual(parsed, row.body, `${row.name}: ${r.headers.get("content-type")} ${r.text}`);
    assert.equal(r.headers.get("etag"), null, `${row.name}: no ETag`);
  }
});

// ---- Firebase: firebase/functions-samples

sample(
  "firebase-https-time-server (Node/quickstarts/https-time-server): v2 onRequest with options; query and body formats; PUT 403",
  "firebase-https-time-server", "date", async (url, output) => {
  const year = String(new Date().getUTCFullYear());
  const byQuery = await call(`${url}?format=YYYY`);
  assert.equal(byQuery.status, 200, byQuery.text);
  assert.ok([year, String(Number(year) + 1), String(Number(year) - 1)].includes(byQuery.text), byQuery.text);
  const byBody = await call(url, json({ format: "YYYY" }));
  assert.equal(byBody.status, 200, byBody.text);
  assert.equal(byBody.text, byQuery.text);
  const put = await call(url, { method: "PUT" });
  assert.deepEqual([put.status, put.text], [403, "Forbidden!"]);
  // onRequest({ timeoutSeconds: 1200, region: [...] }): mapped where Stratus has the setting, warned about otherwise (issue 11, item 9).
  assert.match(output, /region/i, `deploy warns that "region" has no Stratus equivalent:\n${output}`);
  assert.match(output, /timeoutSeconds 1200 s is above Stratus's maximum timeout \(900 s\): clamped to 900 s/, `deploy says what became of timeoutSeconds: 1200 (above Stratus's 900 s maximum):\n${output}`);
  const described = JSON.parse(await ok("describe", "date", "--json"));
  assert.equal(described.config.timeout, 900_000, "timeoutSeconds 1200 clamped to Stratus's 900 s");
});

// The same sample with its published engines.node ("24"): built from a copy, queued like the others.
schedule("engines-24", "date", async () => {
  const dir = join(p.root, "engines-24");
  await cp(join(FIXTURES, "firebase-https-time-server"), dir, { recursive: true });
  const pkg = JSON.parse(await readFile(join(dir, "package.json"), "utf8"));
  pkg.engines = { node: "24" };
  await writeFile(join(dir, "package.json"), JSON.stringify(pkg, null, 2));
  return dir;
});
test("firebase-https-time-server as published (engines.node 24): refused at deploy with a clear error, never a silent skip", async () => {
  try {
    const r = await scheduled.get("engines-24")!.deployed;
    assert.equal(r.code, 1, `a project that needs Node 24 must not deploy on Node ${process.versions.node}:\n${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /engines/, r.stderr);
    assert.match(r.stderr, /24/, r.stderr);
    assert.equal((await fetch(`${p.url}/fn/date`)).status, 404, "nothing was activated");
  } finally {
    await cli("rm", "date");
    scheduled.get("engines-24")!.release();
  }
});

schedule("firebase-authorized-https-endpoint", "app", () => join(FIXTURES, "firebase-authorized-https-endpoint"));
test("firebase-authorized-https-endpoint (Node-1st-gen/authorized-https-endpoint): Express app, async token check, cookies, CORS", async () => {
  try {
    const { url } = await deployed("firebase-authorized-https-endpoint", "app");
    // Firebase sets the project id in the environment; firebase-admin reads it instead of asking a metadata server.
    await ok("env", "set", "app", "GOOGLE_CLOUD_PROJECT=stratus-compat-demo");
    const none = await call(`${url}/hello`);
    assert.deepEqual([none.status, none.text], [403, "Unauthorized"]);
    // The middleware awaits verifyIdToken before it answers: the handler's promise settles before the
    // response (issue 11, item 2: an empty 204 then ERR_HTTP_HEADERS_SENT before the fix).
    const bad = await call(`${url}/hello`, { headers: { authorization: "Bearer not-a-firebase-id-token" } });
    assert.deepEqual([bad.status, bad.text], [403, "Unauthorized"]);
    const cookie = await call(`${url}/hello`, { headers: { cookie: "__session=not-a-token" } });
    assert.deepEqual([cookie.status, cookie.text], [403, "Unauthorized"]);
    const pre = await call(`${url}/hello`, { method: "OPTIONS", headers: { origin: "https://app.example", "access-control-request-method": "GET", "access-control-request-headers": "authorization" } });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get("access-control-allow-origin"), "https://app.example");
    assert.equal(pre.headers.get("access-control-allow-headers"), "authorization");
  } finally {
    await cli("rm", "app");
    scheduled.get("firebase-authorized-https-endpoint")!.release();
  }
});

// ---- Vercel: vercel/vercel packages/node/test/fixtures (their vercel.json probes)

sample(
  "vercel-helpers (15-helpers): req.query, req.body, req.cookies as Vercel's helpers give them",
  "vercel-helpers", "vercel-helpers", async (url) => {
  const probes: Array<[string, RequestInit, string]> = [
    ["/", {}, "hello anonymous:RANDOMNESS_PLACEHOLDER"],
    ["/?who=bill", {}, "hello bill:RANDOMNESS_PLACEHOLDER"],
    ["/", json({ who: "john" }), "hello john:RANDOMNESS_PLACEHOLDER"],
    ["/", { headers: { cookie: "who=chris" } }, "hello chris:RANDOMNESS_PLACEHOLDER"],
  ];
  for (const [path, init, text] of probes) {
    const r = await call(`${url}${path}`, init);
    assert.equal(r.status, 200, `${path} ${JSON.stringify(init)}: ${r.text}`);
    assert.ok(r.text.includes(text), `${path} ${JSON.stringify(init)}: ${r.text}`);
  }
  const emptyJson = await call(`${url}/`, { method: "POST", headers: { "content-type": "application/json" } });
  assert.equal(emptyJson.status, 200, `POST, JSON content-type, no body: ${emptyJson.text}`);
});

sample(
  "vercel-micro-compat (15-helpers/micro-compat): micro's json(req) reads the request stream itself",
  "vercel-micro-compat", "vercel-micro-compat", async (url) => {
  const r = await call(url, json({ who: "katie" }));
  assert.equal(r.status, 200, r.text);
  assert.ok(r.text.includes("hello katie:RANDOMNESS_PLACEHOLDER"), r.text);
});

sample(
  "vercel-assets (08-assets): files next to the code are deployed and readable",
  "vercel-assets", "vercel-assets", async (url) => {
  const r = await call(url);
  assert.equal(r.status, 200, r.text);
  assert.ok(r.text.includes("asset1:RANDOMNESS_PLACEHOLDER,asset2:RANDOMNESS_PLACEHOLDER"), r.text);
});

sample(
  "vercel-cowsay (01-cowsay): an npm dependency reading its own files (left external, shipped), process.env written at load",
  "vercel-cowsay", "vercel-cowsay", async (url) => {
  const r = await call(url);
  assert.equal(r.status, 200, r.text);
  assert.ok(r.text.includes("cow:RANDOMNESS_PLACEHOLDER"), r.text);
});

// ---- AWS Lambda function URLs: aws-samples/serverless-patterns (handlerType "lambda", docs/migrating.md)

sample(
  "lambda-function-url (lambda-function-url/src/app.js): the unchanged handler behind a Stratus entry",
  "lambda-function-url", "FURLFunction", async (url) => {
  const r = await call(url);
  assert.deepEqual([r.status, r.text], [200, "Hello World"]);
  const described = JSON.parse(await ok("describe", "FURLFunction", "--json"));
  assert.equal(described.config.handlerType, "lambda");
});

sample(
  "lambda-function-url-sls (lambda-function-url-sls/src/lambda.ts): the sample's own test events, replayed over HTTP",
  "lambda-function-url-sls", "hellolambda", async (url) => {
  const expected: Record<string, { status: number; body: (text: string) => void }> = {
    getHello: { status: 200, body: (t) => assert.equal(t, "hello from a lambda function url") },
    postHello: { status: 200, body: (t) => assert.deepEqual(JSON.parse(t), { output: "added", greetings: "foobar" }) },
    deleteHello: { status: 400, body: (t) => assert.equal(t, "Invalid HTTP method: DELETE") },
  };
  for (const [name, want] of Object.entries(expected)) {
    const event = JSON.parse(await readFile(join(FIXTURES, "lambda-function-url-sls", "test", `${name}.json`), "utf8")) as {
      rawPath: string; rawQueryString: string; headers: Record<string, string>; requestContext: { http: { method: string } }; body?: string;
    };
    const method = event.requestContext.http.method;
    const query = event.rawQueryString ? `?${event.rawQueryString}` : "";
    const headers = event.body !== undefined ? { "content-type": "application/json" } : undefined;
    const r = await call(`${url}${event.rawPath}${query}`, { method, headers, body: event.body });
    assert.equal(r.status, want.status, `${name}: ${r.text}`);
    want.body(r.text);
  }
});

// ---- Samples whose function name an earlier sample uses (helloHttp, date): last, so their deploys, which
// wait for that sample's removal, do not hold up the others.

sample(
  "gcf-http-methods (functions/http/httpMethods): GET 200, PUT 403, other methods 405 with a JSON body",
  "gcf-http-methods", "helloHttp", async (url) => {
  const get = await call(url);
  assert.deepEqual([get.status, get.text], [200, "Hello World!"]);
  const put = await call(url, { method: "PUT" });
  assert.deepEqual([put.status, put.text], [403, "Forbidden!"]);
  const post = await call(url, { method: "POST" });
  assert.equal(post.status, 405);
  assert.deepEqual(JSON.parse(post.text), { error: "Something blew up!" });
});

sample(
  "firebase-https-time-server-v1 (Node-1st-gen/quickstarts/https-time-server): v1 onRequest, cors middleware, PUT 403",
  "firebase-https-time-server-v1", "date", async (url) => {
  const r = await call(`${url}?format=YYYY`, { headers: { origin: "https://app.example" } });
  assert.equal(r.status, 200, r.text);
  assert.match(r.text, /^\d{4}$/);
  assert.equal(r.headers.get("access-control-allow-origin"), "https://app.example", "cors({ origin: true }) reflects the origin");
  const put = await call(url, { method: "PUT" });
  assert.deepEqual([put.status, put.text], [403, "Forbidden!"]);
});
