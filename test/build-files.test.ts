// Issue 11.6: the project's files are deployed beside the bundle, read-only, and each source module
// sees its own __dirname / __filename / import.meta.url, so `fs.readFileSync(path.join(__dirname,
// "template.html"))` works — through the real API, the real build (sandboxed npm/esbuild) and real
// instances of the process driver (artifact mounted read-only at /fn).
import assert from "node:assert/strict";
import { readdir, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { deploy, project, startPlatform, type PlatformFixture } from "./helpers/platform-fixture";
import { digestTree } from "../src/shared/tree-digest";

let fx: PlatformFixture;
before(async () => {
  fx = await startPlatform();
});
after(async () => {
  await fx?.close();
});

async function call(name: string, path = ""): Promise<{ status: number; text: string }> {
  const res = await fetch(`${fx.url}/fn/${name}${path}`);
  return { status: res.status, text: await res.text() };
}

const FILES: Record<string, string> = {
  "package.json": JSON.stringify({ name: "files-demo", main: "src/index.js" }),
  ".stratusignore": "secret-notes.txt\n",
  "secret-notes.txt": "must not ship",
  "src/index.js": [
    'const fs = require("fs");',
    'const path = require("path");',
    'const render = require("./lib/render");',
    "module.exports.page = (req, res) => res.send(fs.readFileSync(path.join(__dirname, 'template.html'), 'utf8').replace('{{name}}', 'Ada'));",
    "module.exports.nested = (req, res) => res.send(render());",
    "module.exports.where = (req, res) => res.json({ dirname: __dirname, filename: __filename, root: fs.readdirSync(path.join(__dirname, '..')).sort() });",
    "module.exports.write = (req, res) => { try { fs.writeFileSync(path.join(__dirname, 'x.txt'), 'x'); res.send('wrote'); } catch (e) { res.send(e.code); } };",
    "module.exports.ignored = (req, res) => res.send(String(fs.existsSync(path.join(__dirname, '..', 'secret-notes.txt'))));",
  ].join("\n"),
  "src/template.html": "<h1>Hello {{name}}</h1>",
  "src/lib/render.js": 'const fs = require("fs");\nconst path = require("path");\nmodule.exports = () => fs.readFileSync(path.join(__dirname, "partials", "p.txt"), "utf8");\n',
  "src/lib/partials/p.txt": "partial from lib/partials",
};

describe("project files ship with the bundle", () => {
  test("files next to the code are readable at run time, per module, read-only, minus ignored ones", async () => {
    const d = await deploy(fx, await project(FILES));
    assert.equal(d.final?.type, "result", JSON.stringify(d.final));
    assert.deepEqual((await call("page")).text, "<h1>Hello Ada</h1>");
    assert.deepEqual((await call("nested")).text, "partial from lib/partials");
    const where = JSON.parse((await call("where")).text) as { dirname: string; filename: string; root: string[] };
    assert.equal(where.dirname, "/fn/src", "a module's __dirname is its own folder in the project");
    assert.equal(where.filename, "/fn/src/index.js");
    assert.ok(where.root.includes("package.json") && where.root.includes("src"), JSON.stringify(where.root));
    assert.ok(!where.root.includes("node_modules"), "node_modules is bundled, not shipped");
    assert.match((await call("write")).text, /^(EROFS|EACCES)$/, "the shipped files are read-only");
    assert.equal((await call("ignored")).text, "false", ".stratusignore'd files are not shipped");

    // On disk: the artifact holds the files, read-only, and the digest covers them.
    const versions = d.final!.functions!;
    const fn = await (await fetch(`${fx.url}/api/v1/functions/page`, { headers: { authorization: `Bearer ${fx.token}` } })).json() as { activeVersion?: string };
    assert.equal(typeof fn.activeVersion, "string");
    const artifacts = await readdir(join(fx.dataDir, "artifacts"));
    const withTemplate: string[] = [];
    for (const a of artifacts) {
      const p = join(fx.dataDir, "artifacts", a, "src", "template.html");
      if (await stat(p).then(() => true, () => false)) {
        withTemplate.push(a);
        assert.equal((await stat(p)).mode & 0o777, 0o444);
        assert.equal(await readFile(p, "utf8"), FILES["src/template.html"]);
      }
    }
    assert.equal(withTemplate.length, versions.length, "every function's artifact holds the files");

    // Changing only a shipped file gives new versions (the digest covers the files).
    const changed = await deploy(fx, await project({ ...FILES, "src/template.html": "<h2>Bye {{name}}</h2>" }));
    assert.equal(changed.final?.type, "result", JSON.stringify(changed.final));
    const before = new Map(versions.map((v) => [v.name, v.version]));
    for (const v of changed.final!.functions!) assert.notEqual(v.version, before.get(v.name), `${v.name} got a new version`);
    assert.equal((await call("page")).text, "<h2>Bye Ada</h2>");
  });

  test("ESM: import.meta.url is the module's own file", async () => {
    const d = await deploy(fx, await project({
      "package.json": JSON.stringify({ name: "esm-files", type: "module" }),
      "index.js": [
        'import { readFileSync } from "node:fs";',
        'import { dirname, join } from "node:path";',
        'import { fileURLToPath } from "node:url";',
        "const here = dirname(fileURLToPath(import.meta.url));",
        "const data = await Promise.resolve(readFileSync(join(here, 'assets', 'data.json'), 'utf8'));",
        "export const esmfiles = (req, res) => res.type('json').send(data);",
      ].join("\n"),
      "assets/data.json": JSON.stringify({ ok: true }),
    }));
    assert.equal(d.final?.type, "result", JSON.stringify(d.final));
    assert.deepEqual(JSON.parse((await call("esmfiles")).text), { ok: true });
  });

  test("a file named like the bundle or the manifest is refused", async () => {
    const d = await deploy(fx, await project({ "index.js": "module.exports.x = (req, res) => res.send('x');", "stratus-manifest.json": "{}" }));
    assert.equal(d.final?.type, "error");
    assert.equal(d.final?.error?.code, "BUILD_FAILED");
    assert.match(d.final?.error?.message ?? "", /stratus-manifest\.json/);
  });
});

// Issue 11, vercel-cowsay: an npm dependency that reads its own files at run time (cowsay's
// `path.join(__dirname, "../cows")`) stays external and ships in the artifact's node_modules with its
// dependencies, read-only; the real package from the fixture's lockfile (`npm ci` in the build sandbox).
describe("dependencies that read their own files ship unbundled", () => {
  const COWSAY = resolve("test/fixtures/compat/vercel-cowsay");
  const cowsayFiles = async (extra: Record<string, string> = {}): Promise<Record<string, string>> => ({
    "package.json": JSON.stringify({ ...JSON.parse(await readFile(join(COWSAY, "package.json"), "utf8")), name: "cowsay-demo" }),
    "package-lock.json": await readFile(join(COWSAY, "package-lock.json"), "utf8"),
    "index.js": "const cowsay = require('cowsay').say;\nmodule.exports.cow = (req, res) => res.end(cowsay({ text: 'moo ' + (req.query.n || '') }));\n",
    ...extra,
  });

  test("cowsay: detected, left external, shipped with its dependencies read-only; artifacts stay deterministic", async () => {
    const d = await deploy(fx, await project(await cowsayFiles({ "notes.txt": "one" })));
    assert.equal(d.final?.type, "result", JSON.stringify(d.final));
    const log = d.events.filter((e) => e.type === "log").map((e) => String(e.line ?? "")).join("\n");
    assert.match(log, /reading their own files stay external: cowsay/, log);
    const r = await call("cow", "?n=42");
    assert.equal(r.status, 200, r.text);
    assert.match(r.text, /< moo 42 >/);
    assert.match(r.text, /\(oo\)/, "the default cow, read from node_modules/cowsay/cows/default.cow");

    const version = d.final!.functions![0]!.version;
    const artifact = join(fx.dataDir, "artifacts", (await readdir(join(fx.dataDir, "artifacts"))).find((a) => a.replace(/^sha256-/, "").startsWith(version)) ?? "");
    const cow = join(artifact, "node_modules", "cowsay", "cows", "default.cow");
    assert.equal((await stat(cow)).mode & 0o777, 0o444, "shipped read-only");
    for (const dep of ["string-width", "optimist", "get-stdin", "strip-eof"]) {
      assert.ok(await stat(join(artifact, "node_modules", dep, "package.json")).then(() => true, () => false), `cowsay's dependency ${dep} ships too`);
    }
    const bundle = await readFile(join(artifact, ".stratus-bundle.cjs"), "utf8");
    assert.match(bundle, /require\("cowsay"\)/, "cowsay is required at run time, not inlined");

    // The same project with only a shipped text file changed: rebuilt from scratch (npm ci, bundle, copy);
    // the bundle and the shipped node_modules are byte-identical.
    const again = await deploy(fx, await project(await cowsayFiles({ "notes.txt": "two" })));
    assert.equal(again.final?.type, "result", JSON.stringify(again.final));
    const againLog = again.events.filter((e) => e.type === "log").map((e) => String(e.line ?? "")).join("\n");
    assert.doesNotMatch(againLog, /reusing/, "a new source, so a real rebuild");
    const againVersion = again.final!.functions![0]!.version;
    const againArtifact = join(fx.dataDir, "artifacts", (await readdir(join(fx.dataDir, "artifacts"))).find((a) => a.replace(/^sha256-/, "").startsWith(againVersion)) ?? "");
    assert.notEqual(againArtifact, artifact);
    assert.equal(await digestTree(join(againArtifact, "node_modules")), await digestTree(join(artifact, "node_modules")), "the shipped node_modules are byte-identical");
    assert.equal(await readFile(join(againArtifact, ".stratus-bundle.cjs"), "utf8"), bundle, "the bundle is byte-identical");
  });
});
