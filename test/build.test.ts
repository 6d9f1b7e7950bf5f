// The build pipeline end to end: real archives, real npm ci, real esbuild bundling, real discovery by
// the instance runtime inside the process driver's sandbox (bubblewrap + cgroups; dist/runtime.cjs,
// run `npm run build` first), artifacts on disk.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { buildProject, MANIFEST_FILE, type BuildOptions } from "../src/builder/build";
import { packProject } from "../src/builder/pack";
import { digestTree } from "../src/shared/tree-digest";
import { unpackArchive, type UnpackResult } from "../src/shared/archive";
import { createSilentLogger } from "../src/shared/logger";
import { createProcessDriver, type ProcessDriver } from "../src/sandbox/process/process-driver";

const RUNTIME = resolve("dist/runtime.cjs");
const EXAMPLES = resolve("examples");

let root: string;
let driver: ProcessDriver;

before(async () => {
  assert.ok(existsSync(RUNTIME), `${RUNTIME} is missing: run \`npm run build\` first`);
  root = await mkdtemp(join(tmpdir(), "stratus-build-test-"));
  // Socket paths must stay short (≤ 107 bytes): the state dir sits just below /tmp.
  driver = createProcessDriver({ runtimePath: RUNTIME, stateDir: join(root, "st"), cgroupRoot: `stratus-buildtest-${process.pid}` });
  void driver.open(); // nothing runs before open(); the pool starts filling now
});
after(async () => {
  await driver?.close();
  await rm(root, { recursive: true, force: true });
});

/** A fresh project dir holding `files`. */
async function project(name: string, files: Record<string, string>): Promise<string> {
  const dir = join(root, "projects", name);
  await rm(dir, { recursive: true, force: true });
  for (const [rel, text] of Object.entries(files)) {
    await mkdir(join(dir, rel, ".."), { recursive: true });
    await writeFile(join(dir, rel), text);
  }
  return dir;
}

async function build(opts: Partial<BuildOptions> & ({ dir: string } | { archive: Buffer } | { unpacked: UnpackResult }), dataDir = join(root, "data")) {
  const lines: string[] = [];
  const result = await buildProject({ dataDir, driver, logger: createSilentLogger(), onLog: (l) => lines.push(l), ...opts });
  return { result, lines };
}

async function expectBuildError(p: Promise<unknown>, code: string, ...mentions: RegExp[]) {
  await assert.rejects(p, (err: { code?: string; message?: string }) => {
    assert.equal(err.code, code, err.message);
    for (const m of mentions) assert.match(err.message ?? "", m);
    return true;
  });
}

/** npm ci in an example that has a lockfile, so the bundler can see node_modules when built from the dir. */
function lockfileOf(dir: string): boolean {
  return existsSync(join(dir, "package-lock.json"));
}

describe("build pipeline", () => {
  test("hello (CJS): artifacts per function, content-addressed, identical rebuild reused", async () => {
    const dir = join(EXAMPLES, "hello");
    assert.ok(existsSync(dir), "examples/hello is missing (it comes from the runtime branch)");
    const dataDir = join(root, "data-hello");
    const { result, lines } = await build({ dir }, dataDir);
    assert.equal(result.reused, false);
    assert.deepEqual(result.functions.map((f) => f.name), ["counter", "myFunction"]);
    const fn = result.functions.find((f) => f.name === "myFunction")!;
    assert.equal(fn.exportName, "myFunction");
    assert.equal(fn.config.timeout, 10_000);
    assert.equal(fn.config.memory, 256, "defaults applied");
    assert.match(fn.digest, /^sha256-[0-9a-f]{64}$/);
    assert.equal(fn.version, fn.digest.slice(7, 19));
    assert.equal(fn.artifactDir, join(dataDir, "artifacts", fn.digest));
    // The directory's name is the digest of its content.
    assert.equal(await digestTree(fn.artifactDir), fn.digest);
    const manifest = JSON.parse(await readFile(join(fn.artifactDir, MANIFEST_FILE), "utf8")) as Record<string, unknown>;
    assert.equal(manifest.function, "myFunction");
    assert.equal(manifest.entry, fn.entry);
    assert.equal(manifest.sourceDigest, result.sourceDigest);
    assert.ok(existsSync(join(fn.artifactDir, fn.entry)));
    assert.ok(lines.some((l) => /Found 2 function/.test(l)));

    const again = await build({ dir }, dataDir);
    assert.equal(again.result.reused, true);
    assert.deepEqual(again.result.functions, result.functions);
    assert.ok(again.lines.some((l) => /reusing/.test(l)), "the log says the build was reused");
    // The same archive bytes built into an empty data dir give the same digests (nothing depends on time or paths).
    const fresh = await build({ archive: (await packProject(dir)).archive }, join(root, "data-hello-2"));
    assert.deepEqual(fresh.result.functions.map((f) => f.digest), result.functions.map((f) => f.digest));
    // What the control plane does: unpack the upload once (before answering), then build that very
    // directory — taken over (moved), never packed and unpacked again; the same digests; the source
    // digest reported once through onSource.
    const dataDir3 = join(root, "data-hello-3");
    await mkdir(join(dataDir3, "tmp"), { recursive: true });
    const unpacked = await unpackArchive((await packProject(dir)).archive, { parentDir: join(dataDir3, "tmp") });
    const sources: string[] = [];
    const taken = await build({ unpacked, onSource: (d) => { sources.push(d); } }, dataDir3);
    assert.deepEqual(taken.result.functions.map((f) => f.digest), result.functions.map((f) => f.digest));
    assert.deepEqual(sources, [result.sourceDigest]);
    assert.equal(existsSync(unpacked.dir), false, "the unpacked upload was moved into the build, not copied");
    assert.match(taken.lines[0]!, new RegExp(`^Unpacked ${unpacked.fileCount} files \\(${unpacked.unpackedBytes} bytes\\)`));
    assert.deepEqual(await readdir(join(dataDir3, "tmp")), []);
    // Nothing left in the temp area.
    assert.deepEqual(await readdir(join(dataDir, "tmp")), []);
    assert.deepEqual((await readdir(join(dataDir, "artifacts"))).filter((n) => n.startsWith(".tmp")), []);
  });

  test("typescript example and an ESM default export named after the project", async () => {
    const dir = join(EXAMPLES, "typescript");
    assert.ok(existsSync(dir), "examples/typescript is missing (it comes from the runtime branch)");
    const { result } = await build({ dir });
    assert.deepEqual(result.functions.map((f) => [f.name, f.config.timeout, f.config.memory]), [["greet", 5000, 128]]);

    const esm = await project("my-default", { "index.mjs": "export default async () => 'hi';\n" });
    const { result: r2 } = await build({ dir: esm });
    assert.deepEqual(r2.functions.map((f) => [f.name, f.exportName]), [["my-default", "default"]]);
    const named = await build({ archive: (await packProject(esm)).archive, projectName: "fromCli" }, join(root, "data-named"));
    assert.deepEqual(named.result.functions.map((f) => f.name), ["fromCli"]);
  });

  for (const ex of ["npm-dependency", "express-middleware"]) {
    test(`${ex} example: npm ci from its lockfile, dependency bundled`, async () => {
      const dir = join(EXAMPLES, ex);
      assert.ok(existsSync(dir), `examples/${ex} is missing (it comes from the runtime branch)`);
      assert.ok(lockfileOf(dir), `examples/${ex} has no package-lock.json`);
      const { result, lines } = await build({ dir });
      assert.ok(result.functions.length >= 1);
      assert.ok(lines.some((l) => l.startsWith("$ npm ci")), "npm ci ran");
      const bundle = await readFile(join(result.functions[0]!.artifactDir, result.functions[0]!.entry), "utf8");
      assert.doesNotMatch(bundle, /require\("(ms|express)"\)/, "the dependency is bundled, not required at run time");
    });
  }

  test("syntax error → BUILD_FAILED with file:line", async () => {
    const dir = await project("syntax", { "index.js": "module.exports.a = { func: async (req, res) => {\n  res.send('x'\n};\n" });
    await expectBuildError(build({ dir }), "BUILD_FAILED", /index\.js:3/);
  });

  test("a module that throws while loading → BUILD_FAILED with its message", async () => {
    const dir = await project("throws", { "index.js": "module.exports.a = () => 1;\nthrow new Error('boom at load');\n" });
    await expectBuildError(build({ dir }), "BUILD_FAILED", /boom at load/);
  });

  test("bad config → INVALID_CONFIG naming every function and field at once", async () => {
    const dir = await project("badconfig", {
      "index.js": [
        "module.exports.slow = { func: () => 1, config: { timeout: 5 } };",
        "module.exports.big = { func: () => 1, config: { memory: 'lots', colour: 'red' } };",
        "module.exports.fine = () => 1;",
      ].join("\n"),
    });
    await assert.rejects(build({ dir }), (err: { code?: string; message?: string; details?: { function: string }[] }) => {
      assert.equal(err.code, "INVALID_CONFIG");
      assert.match(err.message ?? "", /"slow".*timeout/);
      assert.match(err.message ?? "", /"big".*memory/);
      assert.match(err.message ?? "", /colour/);
      assert.deepEqual(err.details?.map((d) => d.function).sort(), ["big", "slow"]);
      return true;
    });
  });

  test("names differing only in case, and invalid names, are refused", async () => {
    const clash = await project("clash", { "index.js": "module.exports.hello = () => 1;\nmodule.exports.Hello = () => 2;\n" });
    await expectBuildError(build({ dir: clash }), "INVALID_FUNCTION_NAME", /hello/, /Hello/);
    const bad = await project("badname", { "index.js": "module.exports['1st'] = () => 1;\n" });
    await expectBuildError(build({ dir: bad }), "INVALID_FUNCTION_NAME", /1st/);
  });

  test("dependencies without a lockfile → BUILD_FAILED saying so", async () => {
    const dir = await project("nolock", {
      "package.json": JSON.stringify({ name: "nolock", dependencies: { ms: "^2.1.3" } }),
      "index.js": "module.exports.a = () => 1;\n",
    });
    await expectBuildError(build({ dir }), "BUILD_FAILED", /package-lock\.json/);
  });

  for (const [file, text, tool] of [["pnpm-lock.yaml", "lockfileVersion: '9.0'\n", /pnpm/], ["yarn.lock", "__metadata:\n  version: 8\n", /Yarn 2\+/]] as const) {
    test(`dependencies locked only by ${file} (${tool.source}) → UNSUPPORTED_LOCKFILE saying what to do`, async () => {
      const dir = await project(`lock-${file}`, {
        "package.json": JSON.stringify({ name: "otherlock", dependencies: { ms: "^2.1.3" } }),
        [file]: text,
        "index.js": "module.exports.a = () => 1;\n",
      });
      await expectBuildError(build({ dir }), "UNSUPPORTED_LOCKFILE", new RegExp(file.replace(".", "\\.")), tool, /npm install --package-lock-only/);
    });
  }

  test("a Yarn 1 yarn.lock installs with the pinned Yarn 1 in the build sandbox: frozen lockfile, engines checked", async () => {
    const yarn = resolve("node_modules/yarn/bin/yarn.js");
    const make = async (name: string, depEngines?: string) => {
      const dir = await project(name, {
        "package.json": JSON.stringify({ name, version: "1.0.0", dependencies: { "yarn-dep": "file:./yarn-dep" } }),
        "yarn-dep/package.json": JSON.stringify({ name: "yarn-dep", version: "1.0.0", main: "index.js", ...(depEngines ? { engines: { node: depEngines } } : {}) }),
        "yarn-dep/index.js": "module.exports = 'installed by yarn';\n",
        "index.js": "const d = require('yarn-dep');\nmodule.exports.a = () => d;\n",
      });
      const r = spawnSync(process.execPath, [yarn, "install", "--ignore-scripts", "--ignore-engines", "--non-interactive", "--no-progress", "--cache-folder", join(root, "yarn-cache")], { cwd: dir, encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.match(await readFile(join(dir, "yarn.lock"), "utf8"), /yarn lockfile v1/);
      return dir;
    };
    const dir = await make("yarn-one");
    const { result, lines } = await build({ dir });
    assert.ok(lines.some((l) => l.startsWith("$ yarn install --frozen-lockfile")), lines.join("\n"));
    const bundle = await readFile(join(result.functions[0]!.artifactDir, result.functions[0]!.entry), "utf8");
    assert.match(bundle, /installed by yarn/, "the dependency Yarn installed is bundled");

    // The lockfile is the truth: a package.json that no longer matches it fails.
    const stale = await make("yarn-stale");
    await writeFile(join(stale, "package.json"), JSON.stringify({ name: "yarn-stale", version: "1.0.0", dependencies: { "yarn-dep": "file:./yarn-dep", other: "file:./yarn-dep" } }));
    await expectBuildError(build({ dir: stale }), "BUILD_FAILED", /yarn install failed/, /lockfile/i);

    const engines = await make("yarn-engines", ">=99");
    await expectBuildError(build({ dir: engines }), "UNSUPPORTED_NODE_VERSION", /yarn-dep/);
  });

  test("lifecycle scripts are off by default, on only when the project opts in, and run inside the build sandbox", async () => {
    // Inside the build sandbox the npm cache (/cache/npm = <dataDir>/cache/npm) is the only writable
    // path besides the project: a script that ran leaves its marker there, and its attempt to write
    // to a host path (markerDir) must fail.
    const markerDir = join(root, "markers");
    await mkdir(markerDir, { recursive: true });
    const cacheDir = join(root, "data", "cache", "npm");
    const make = async (name: string, allowScripts: boolean | undefined) => {
      const hostMarker = join(markerDir, name);
      const script = (who: string) => `node -e "const fs = require('fs'); fs.writeFileSync('/cache/npm/${who}', 'ran'); try { fs.writeFileSync('${hostMarker}-${who}', 'escaped'); } catch {}"`;
      const dir = await project(name, {
        "package.json": JSON.stringify({
          name, version: "1.0.0", dependencies: { "local-dep": "file:./local-dep" },
          scripts: { postinstall: script(name) }, ...(allowScripts === undefined ? {} : { stratus: { allowScripts } }),
        }),
        "local-dep/package.json": JSON.stringify({ name: "local-dep", version: "1.0.0", main: "index.js", scripts: { postinstall: script(`${name}-dep`) } }),
        "local-dep/index.js": "module.exports = 'from local dep';\n",
        "index.js": "const d = require('local-dep');\nmodule.exports.a = () => d;\n",
      });
      const r = spawnSync("npm", ["install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: dir, encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      return { dir, name };
    };
    const off = await make("scripts-off", undefined);
    const { result } = await build({ dir: off.dir });
    assert.equal(result.functions.length, 1);
    assert.equal(existsSync(join(cacheDir, off.name)), false, "the root postinstall must not run");
    assert.equal(existsSync(join(cacheDir, `${off.name}-dep`)), false, "the dependency's postinstall must not run");

    const on = await make("scripts-on", true);
    await build({ dir: on.dir });
    assert.equal(existsSync(join(cacheDir, on.name)), true, "with stratus.allowScripts the root postinstall runs");
    assert.equal(existsSync(join(cacheDir, `${on.name}-dep`)), true, "with stratus.allowScripts the dependency's postinstall runs");
    assert.deepEqual(await readdir(markerDir), [], "a script cannot write outside the build sandbox");
  });

  test("engines.node the platform's Node cannot satisfy → UNSUPPORTED_NODE_VERSION at deploy, before npm runs", async () => {
    const dir = await project("engines-root", {
      "package.json": JSON.stringify({ name: "engines-root", engines: { node: ">=22" } }),
      "index.js": "module.exports.a = () => 1;\n",
    });
    const lines: string[] = [];
    await expectBuildError(build({ dir, onLog: (l) => lines.push(l) }), "UNSUPPORTED_NODE_VERSION", />=22/, new RegExp(process.version.slice(1).replace(/\./g, "\\.")));
    assert.ok(!lines.some((l) => l.startsWith("$ npm")), "npm never ran");
    const fine = await project("engines-ok", {
      "package.json": JSON.stringify({ name: "engines-ok", engines: { node: `>=${process.versions.node.split(".")[0]}` } }),
      "index.js": "module.exports.a = () => 1;\n",
    });
    assert.equal((await build({ dir: fine })).result.functions.length, 1);
  });

  test("a dependency whose engines exclude this Node fails npm ci (--engine-strict), not a silent skip", async () => {
    const dir = await project("engines-dep", {
      "package.json": JSON.stringify({ name: "engines-dep", version: "1.0.0", dependencies: { "needs-node-99": "file:./needs-node-99" } }),
      "needs-node-99/package.json": JSON.stringify({ name: "needs-node-99", version: "1.0.0", main: "index.js", engines: { node: ">=99" } }),
      "needs-node-99/index.js": "module.exports = 1;\n",
      "index.js": "const d = require('needs-node-99');\nmodule.exports.a = () => d;\n",
    });
    const r = spawnSync("npm", ["install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: dir, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    await expectBuildError(build({ dir }), "UNSUPPORTED_NODE_VERSION", /needs-node-99@1\.0\.0/, />=99/);
  });

  test("a failed build leaves no artifact and no temp files", async () => {
    const dataDir = join(root, "data-fail");
    const dir = await project("partial", { "index.js": "module.exports.good = () => 1;\nmodule.exports.bad = { func: () => 1, config: { timeout: -1 } };\n" });
    await expectBuildError(build({ dir }, dataDir), "INVALID_CONFIG");
    assert.deepEqual(await readdir(join(dataDir, "artifacts")), []);
    assert.deepEqual(await readdir(join(dataDir, "tmp")), []);
  });

  test("a hostile upload is refused before anything is built", async () => {
    const dir = await project("copy", { "index.js": "module.exports.a = () => 1;\n" });
    const copy = join(root, "copy2");
    await cp(dir, copy, { recursive: true });
    await expectBuildError(build({ archive: Buffer.from("definitely not a tarball") }), "INVALID_ARCHIVE");
    await expectBuildError(build({ archive: (await packProject(copy)).archive, archiveLimits: { maxEntries: 0 } }), "ARCHIVE_TOO_LARGE");
  });
});
