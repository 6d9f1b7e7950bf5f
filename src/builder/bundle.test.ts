import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { bundleProject, projectNameOf, resolveEntry } from "./bundle";
import { SDK_RUNTIME_SOURCE } from "./sdk-source";
import { defineFunction, FUNCTION_BRAND } from "../sdk/index";

const root = mkdtempSync(join(tmpdir(), "stratus-bundle-"));
after(() => rmSync(root, { recursive: true, force: true }));

function project(name: string, files: Record<string, string>): string {
  const dir = join(root, name);
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(join(dir, file, ".."), { recursive: true });
    writeFileSync(join(dir, file), text);
  }
  return dir;
}

test("entry: package.json main, else index.js / index.ts / …; project name without scope", () => {
  const a = project("entry-a", { "package.json": '{"name":"@acme/api","main":"src/app.ts"}', "src/app.ts": "" });
  assert.equal(resolveEntry(a), join(a, "src/app.ts"));
  assert.equal(projectNameOf(a), "api");
  const b = project("entry-b", { "index.ts": "" });
  assert.equal(resolveEntry(b), join(b, "index.ts"));
  assert.equal(projectNameOf(b), "entry-b");
  assert.throws(() => resolveEntry(project("entry-c", { "other.js": "" })), (e: { code?: string }) => e.code === "BUILD_FAILED");
});

test("CJS, TypeScript (with the stratus SDK) and ESM with top-level await all bundle and load", async () => {
  const cjs = await bundleProject(project("cjs", { "package.json": "{}", "index.js": 'const fs = require("fs"); module.exports.a = { func: async () => typeof fs.readFileSync };' }), join(root, "out-cjs"));
  assert.equal(cjs.format, "cjs");
  const m1 = createRequire(cjs.outFile)(cjs.outFile);
  assert.equal(await m1.a.func(), "function");

  const ts = await bundleProject(
    project("ts", { "index.ts": 'import { defineFunction } from "stratus";\nexport const t = defineFunction({ handler: async (): Promise<string> => import.meta.url, config: { timeout: 1000 } });' }),
    join(root, "out-ts"),
  );
  const m2 = createRequire(ts.outFile)(ts.outFile);
  // import.meta.url is the module's own file in the project, placed beside the bundle (the artifact root).
  assert.equal(await m2.t.handler(), pathToFileURL(join(root, "out-ts", "index.ts")).href);
  assert.equal(m2.t[Symbol.for("stratus.function")], true);

  const esm = await bundleProject(
    project("tla", { "package.json": '{"type":"module"}', "dep.cjs": 'module.exports = require("path").sep + typeof __dirname;', "index.js": 'import dep from "./dep.cjs";\nconst v = await Promise.resolve(7);\nexport const e = async () => dep + v;' }),
    join(root, "out-tla"),
  );
  assert.equal(esm.format, "esm");
  const m3 = await import(pathToFileURL(esm.outFile).href);
  assert.equal(await m3.e(), "/string7");
});

test("a syntax error is BUILD_FAILED with file:line:column", async () => {
  const dir = project("bad", { "index.ts": "export const x = 1;\nexport const y = (;\n" });
  await assert.rejects(bundleProject(dir, join(root, "out-bad")), (err: { code?: string; message: string; details?: { errors: Array<{ file: string; line: number }> } }) => {
    assert.equal(err.code, "BUILD_FAILED");
    assert.match(err.message, /index\.ts:2:\d+: /);
    assert.deepEqual({ file: err.details!.errors[0]!.file, line: err.details!.errors[0]!.line }, { file: "index.ts", line: 2 });
    return true;
  });
});

test("packages with native addons stay external and are reported", async () => {
  const dir = project("native", {
    "index.js": 'const n = require("fake-native"); module.exports.f = () => n;',
    "node_modules/fake-native/package.json": '{"name":"fake-native","main":"index.js"}',
    "node_modules/fake-native/index.js": "module.exports = 1;",
    "node_modules/fake-native/build/Release/addon.node": "",
  });
  const r = await bundleProject(dir, join(root, "out-native"));
  assert.deepEqual(r.externalNative, ["fake-native"]);
});

test("packages that read their own files stay external (detected, or listed in stratus.external); the others are bundled", async () => {
  const dir = project("own-files", {
    "package.json": JSON.stringify({ name: "own-files", stratus: { external: ["declared"] } }),
    "index.js": 'const a = require("reads-assets"), b = require("plain"), c = require("code-only"), d = require("declared"); module.exports.f = () => [a, b, c, d];',
    // As cowsay: a path from __dirname to its own data files.
    "node_modules/reads-assets/package.json": '{"name":"reads-assets","main":"lib/index.js"}',
    "node_modules/reads-assets/lib/index.js": 'const fs = require("fs"), path = require("path");\nmodule.exports = fs.readFileSync(path.join(__dirname, "../data", "x.cow"), "utf8");',
    "node_modules/reads-assets/data/x.cow": "moo",
    // No __dirname path: bundled.
    "node_modules/plain/package.json": '{"name":"plain"}',
    "node_modules/plain/index.js": "module.exports = 'plain';",
    "node_modules/plain/README.md": "docs are not assets",
    // __dirname, but only code, docs and tests beside it: bundled.
    "node_modules/code-only/package.json": '{"name":"code-only"}',
    "node_modules/code-only/index.js": 'module.exports = require("path").join(__dirname, "x");',
    "node_modules/code-only/LICENSE": "MIT",
    "node_modules/code-only/test/fixture.txt": "a test fixture is not what the package runs",
    "node_modules/declared/package.json": '{"name":"declared"}',
    "node_modules/declared/index.js": "module.exports = 'declared';",
  });
  const out = join(root, "out-own-files");
  const r = await bundleProject(dir, out, { sourcemap: false });
  assert.deepEqual(r.externalPackages, ["declared", "reads-assets"]);
  assert.deepEqual(r.externalNative, []);
  const text = (await import("node:fs")).readFileSync(r.outFile, "utf8");
  assert.match(text, /require\("reads-assets"\)/, "left as a run-time require");
  assert.doesNotMatch(text, /x\.cow/, "its code is not in the bundle");
  assert.match(text, /module\.exports = "plain"|"plain"/, "plain is bundled");
  assert.doesNotMatch(text, /require\("plain"\)/);
  const bad = project("own-files-bad", { "package.json": JSON.stringify({ name: "b", stratus: { external: ["../etc"] } }), "index.js": "module.exports.f = () => 1;" });
  await assert.rejects(bundleProject(bad, join(root, "out-own-files-bad")), (err: { code?: string; message: string }) => err.code === "BUILD_FAILED" && /stratus\.external/.test(err.message));
});

test("the SDK served to bundles behaves like src/sdk", async () => {
  const file = join(root, "sdk.mjs");
  writeFileSync(file, SDK_RUNTIME_SOURCE);
  const served = await import(pathToFileURL(file).href);
  assert.equal(served.FUNCTION_BRAND, FUNCTION_BRAND);
  for (const define of [served.defineFunction, defineFunction]) {
    const def = { handler: () => 1 };
    assert.equal(define(def), def);
    assert.equal((def as Record<symbol, unknown>)[FUNCTION_BRAND], true);
    assert.deepEqual(Object.keys(def), ["handler"]);
  }
});

test("each project module sees its own __dirname/__filename; filesRoot points them at the project (stratus dev)", async () => {
  const dir = project("paths", {
    "index.js": 'const path = require("path");\nconst sub = require("./lib/sub");\nmodule.exports.p = { func: async () => [__dirname, __filename, sub.dir, typeof path.join] };',
    "lib/sub.js": "module.exports.dir = __dirname;\n",
  });
  const r = await bundleProject(dir, join(root, "out-paths"));
  const m = createRequire(r.outFile)(r.outFile);
  const out = join(root, "out-paths");
  assert.deepEqual(await m.p.func(), [out, join(out, "index.js"), join(out, "lib"), "function"]);
  const dev = await bundleProject(dir, join(root, "out-paths-dev"), { filesRoot: dir });
  const m2 = createRequire(dev.outFile)(dev.outFile);
  assert.deepEqual(await m2.p.func(), [dir, join(dir, "index.js"), join(dir, "lib"), "function"]);
});
