import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { copyPackageClosure, declaredExternals, readsOwnFiles } from "./external-packages";

const root = mkdtempSync(join(tmpdir(), "stratus-ext-"));
after(() => rmSync(root, { recursive: true, force: true }));

function tree(dir: string, files: Record<string, string>): string {
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(join(dir, file, ".."), { recursive: true });
    writeFileSync(join(dir, file), text);
  }
  return dir;
}

const pkg = (name: string, deps: Record<string, string> = {}, optional: Record<string, string> = {}) =>
  JSON.stringify({ name, dependencies: deps, optionalDependencies: optional });

test("readsOwnFiles: a __dirname path and non-code files, both needed; tests, docs and nested node_modules do not count", () => {
  const dir = join(root, "detect");
  tree(dir, {
    "yes/package.json": pkg("yes"), "yes/index.js": "module.exports = `${__dirname}/t.html`;", "yes/t.html": "<p>",
    "code/package.json": pkg("code"), "code/index.js": "require(require('path').resolve(__dirname, 'x.js'));", "code/x.js": "", "code/README.md": "",
    "data/package.json": pkg("data"), "data/index.js": "module.exports = 1;", "data/x.wasm": "",
    "testonly/package.json": pkg("testonly"), "testonly/index.js": "module.exports = 1;", "testonly/test/t.js": "require('path').join(__dirname, 'f.txt')", "testonly/test/f.txt": "",
    "nested/package.json": pkg("nested"), "nested/index.js": "module.exports = __dirname + '/x';", "nested/node_modules/dep/asset.bin": "",
  });
  assert.equal(readsOwnFiles(join(dir, "yes")), true);
  assert.equal(readsOwnFiles(join(dir, "code")), false, "__dirname, but only code and docs beside it");
  assert.equal(readsOwnFiles(join(dir, "data")), false, "assets, but no __dirname path");
  assert.equal(readsOwnFiles(join(dir, "testonly")), false, "its tests are not what it runs");
  assert.equal(readsOwnFiles(join(dir, "nested")), false, "a nested package's files are not its own");
});

test("declaredExternals: package names only", () => {
  assert.deepEqual(declaredExternals({}), []);
  assert.deepEqual(declaredExternals({ stratus: { allowScripts: true } }), []);
  assert.deepEqual(declaredExternals({ stratus: { external: ["b", "@s/a", "b"] } }), ["@s/a", "b"]);
  for (const bad of ["../x", "/etc", "a/../../b", "", 3]) {
    assert.throws(() => declaredExternals({ stratus: { external: [bad] } }), (e: { code?: string }) => e.code === "BUILD_FAILED", String(bad));
  }
  assert.throws(() => declaredExternals({ stratus: { external: "cowsay" } }), (e: { code?: string }) => e.code === "BUILD_FAILED");
});

test("copyPackageClosure: the package and its dependencies where Node finds them, nothing else; outside the project refused", async () => {
  const project = tree(join(root, "proj"), {
    "node_modules/top/package.json": pkg("top", { a: "^1", b: "^2" }, { "not-installed": "*" }),
    "node_modules/top/cows/x.cow": "moo",
    // top needs b@2 (nested), the hoisted b is 1 and used by a.
    "node_modules/top/node_modules/b/package.json": JSON.stringify({ name: "b", version: "2.0.0" }),
    "node_modules/a/package.json": pkg("a", { b: "^1" }),
    "node_modules/b/package.json": JSON.stringify({ name: "b", version: "1.0.0" }),
    "node_modules/unrelated/package.json": pkg("unrelated"),
    "node_modules/top/node_modules/unused/package.json": pkg("unused"),
  });
  const out = join(root, "out");
  const lines: string[] = [];
  const copied = await copyPackageClosure(project, ["top"], out, (l) => lines.push(l));
  assert.deepEqual(copied, ["node_modules/a", "node_modules/b", "node_modules/top", "node_modules/top/node_modules/b"]);
  assert.equal(existsSync(join(out, "node_modules/top/cows/x.cow")), true);
  assert.equal(existsSync(join(out, "node_modules/unrelated")), false);
  assert.equal(existsSync(join(out, "node_modules/top/node_modules/unused")), false, "a nested folder nobody depends on stays behind");
  assert.deepEqual(lines, [], "a missing optional dependency is no news");

  await assert.rejects(copyPackageClosure(project, ["missing"], join(root, "out2"), () => {}), (e: { code?: string }) => e.code === "BUILD_FAILED");
  const outside = tree(join(root, "outside-pkg"), { "package.json": pkg("evil") });
  symlinkSync(outside, join(project, "node_modules", "evil"));
  await assert.rejects(copyPackageClosure(project, ["evil"], join(root, "out3"), () => {}), (e: { code?: string }) => e.code === "BUILD_IMPORT_OUTSIDE_PROJECT");
});
