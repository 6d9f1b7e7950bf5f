// End to end, as a user would: the real CLI binary (`node bin/stratus.js …` child processes, after
// `npm run build`) against `stratus up` on port 0 with the real process driver, in a fresh data dir
// and a fresh CLI config dir: up → init → deploy → invoke (and plain HTTP) → redeploy → rollback →
// env and secret changes → tokens → rm → 404, then SIGTERM exits 0.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { ChildProcess } from "node:child_process";
import { readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { once } from "node:events";
import { bindStratus, killUp, startUpInTempRoot } from "./helpers/stratus-cli";

let root: string;
let env: NodeJS.ProcessEnv;
let up: ChildProcess;
let url: string;
let upOutputOf: () => string = () => "";

const { cli, ok } = bindStratus(() => ({ env, cwd: root }), 120_000);

before(async () => {
  const p = await startUpInTempRoot("st-e2e-", []);
  ({ root, env, url, child: up } = p);
  upOutputOf = p.output;
});

after(async () => {
  await killUp(up);
  if (root) await rm(root, { recursive: true, force: true });
});

test("first start prints the admin token once and saves a 0600 profile", async () => {
  assert.match(upOutputOf(), /admin token \(shown once\): stx_/);
  const profileFile = join(root, "cfg", "config.json");
  assert.equal((await stat(profileFile)).mode & 0o777, 0o600);
  const profile = JSON.parse(await readFile(profileFile, "utf8"));
  assert.equal(profile.url, url);
  assert.match(profile.token, /^stx_/);
  assert.match(await ok("ls"), /No functions yet/);
});

test("init → deploy → invoke → redeploy → rollback → env/secrets → rm", async () => {
  const dir = join(root, "proj");
  assert.match(await ok("init", dir), /index\.js/);
  assert.match(await readFile(join(dir, "index.js"), "utf8"), /module\.exports\.hello = \{/);

  const d1 = await cli("deploy", dir);
  assert.equal(d1.code, 0, d1.stderr);
  assert.match(d1.stderr, /Found 1 function/, "the build log is streamed");
  const fnUrl = /(http:\/\/\S+\/fn\/hello)/.exec(d1.stdout)?.[1];
  assert.equal(fnUrl, `${url}/fn/hello`);
  assert.equal(await ok("invoke", "hello"), "Hello from Stratus!");
  const plain = await fetch(fnUrl!);
  assert.equal(plain.status, 200);
  assert.equal(await plain.text(), "Hello from Stratus!");

  // Redeploy changed code; identical code again is "unchanged".
  const src = await readFile(join(dir, "index.js"), "utf8");
  await writeFile(join(dir, "index.js"), src.replace("Hello from", "Hi from"));
  assert.match(await ok("deploy", dir), /hello@\w+ activated/);
  assert.equal(await ok("invoke", "hello"), "Hi from Stratus!");
  assert.match(await ok("deploy", dir), /hello@\w+ unchanged/);
  const versions = JSON.parse(await ok("versions", "hello", "--json")).versions as Array<{ version: string; active: boolean }>;
  assert.equal(versions.length, 2);
  assert.equal(versions[0]!.active, true);

  assert.match(await ok("rollback", "hello"), new RegExp(`→ ${versions[1]!.version}`));
  assert.equal(await ok("invoke", "hello"), "Hello from Stratus!");
  assert.match(await ok("rollback", "hello", "--to", versions[0]!.version), new RegExp(versions[0]!.version));
  assert.equal(await ok("invoke", "hello"), "Hi from Stratus!");

  // Env, then a secret with the same name (secrets win), never printed back.
  assert.match(await ok("env", "set", "hello", "GREETING_FROM=env"), /GREETING_FROM=env/);
  assert.equal(await ok("invoke", "hello"), "Hi from env!");
  const s = await ok("secrets", "set", "hello", "GREETING_FROM=s3cr3t-value");
  assert.ok(!s.includes("s3cr3t-value"));
  assert.equal(await ok("invoke", "hello"), "Hi from s3cr3t-value!");
  assert.ok(!(await ok("secrets", "ls", "hello")).includes("s3cr3t"));
  await ok("secrets", "unset", "hello", "GREETING_FROM");
  await ok("env", "unset", "hello", "GREETING_FROM");
  assert.equal(await ok("invoke", "hello"), "Hi from Stratus!");

  const described = JSON.parse(await ok("describe", "hello", "--json"));
  assert.equal(described.activeVersion, versions[0]!.version);
  assert.equal(described.config.timeout, 10_000);
  assert.ok(described.instances.instances >= 1);
  assert.deepEqual(JSON.parse(await ok("ls", "--json")).functions.map((f: { name: string }) => f.name), ["hello"]);

  await ok("rm", "hello");
  const gone = await cli("invoke", "hello");
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /^FUNCTION_NOT_FOUND: /m);
  assert.equal((await fetch(fnUrl!)).status, 404);
});

test("tokens: create, use, revoke; errors are CODE: message with exit 1", async () => {
  const t = JSON.parse(await ok("token", "create", "--name", "ci", "--json"));
  assert.match(t.token, /^stx_/);
  assert.equal((await cli("ls", "--token", t.token)).code, 0);
  assert.match(await ok("token", "ls"), /ci/);
  await ok("token", "revoke", t.id);
  const refused = await cli("ls", "--token", t.token);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^UNAUTHENTICATED: /m);
  const down = await cli("ls", "--url", "http://127.0.0.1:1");
  assert.equal(down.code, 1);
  assert.match(down.stderr, /^UNAVAILABLE: .*127\.0\.0\.1:1/m);
  const bad = await cli("describe", "9nope");
  assert.match(bad.stderr, /^INVALID_FUNCTION_NAME: /m);
});

test("SIGTERM drains and exits 0", async () => {
  up.kill("SIGTERM");
  const [code] = await once(up, "exit");
  assert.equal(code, 0, upOutputOf());
});
