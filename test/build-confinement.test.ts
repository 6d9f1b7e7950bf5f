// Issue 12.1: a deployer must not read files of the build host. Real exploit uploads (absolute path,
// ../ traversal out of the build dir into the data dir, a symlinked dependency, tsconfig extends,
// package.json main) against the real build pipeline: npm ci and esbuild in the build sandbox
// (bubblewrap), discovery in the process driver. The canary secret sits in the data dir, where the
// master key and the store live, and must appear in no error, log line or artifact.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { buildProject } from "../src/builder/build";
import { createBuildSandbox, DEFAULT_BUILD_UID } from "../src/builder/build-sandbox";
import { packProject } from "../src/builder/pack";
import { createSilentLogger } from "../src/shared/logger";
import { createProcessDriver, type ProcessDriver } from "../src/sandbox/process/process-driver";

const RUNTIME = resolve("dist/runtime.cjs");
const CANARY = "CANARY-7f3a9c-host-secret";

let root: string;
let dataDir: string;
let driver: ProcessDriver;

before(async () => {
  assert.ok(existsSync(RUNTIME) && existsSync(resolve("dist/build-worker.cjs")), "dist/ is missing: run `npm run build` first");
  root = await mkdtemp(join(tmpdir(), "stratus-confine-"));
  dataDir = join(root, "data");
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  // What a platform data dir holds: the key, a JSON file a require() would inline.
  await writeFile(join(dataDir, "master.key"), `${CANARY}-key\n`);
  await writeFile(join(dataDir, "secret.json"), JSON.stringify({ secret: `${CANARY}-json` }));
  await writeFile(join(root, "host-secret.json"), JSON.stringify({ secret: `${CANARY}-outside` }));
  driver = createProcessDriver({ runtimePath: RUNTIME, stateDir: join(root, "st"), cgroupRoot: `stratus-confinetest-${process.pid}` });
  void driver.open(); // nothing runs before open(); the pool starts filling now
});
after(async () => {
  await driver?.close();
  await rm(root, { recursive: true, force: true });
});

async function project(name: string, files: Record<string, string>): Promise<string> {
  const dir = join(root, "projects", name);
  await rm(dir, { recursive: true, force: true });
  for (const [rel, text] of Object.entries(files)) {
    await mkdir(join(dir, rel, ".."), { recursive: true });
    await writeFile(join(dir, rel), text);
  }
  return dir;
}

/** Every file under `dir`, concatenated (bounded by the test's own small trees). */
async function allText(dir: string): Promise<string> {
  if (!existsSync(dir)) return "";
  let out = "";
  for (const rel of await readdir(dir, { recursive: true })) {
    const p = join(dir, String(rel));
    try {
      out += await readFile(p, "utf8");
    } catch { /* a directory */ }
  }
  return out;
}

/** Builds as an upload would be; returns the error and every log line. */
async function buildUpload(dir: string): Promise<{ err: { code?: string; message?: string; details?: unknown }; lines: string[] }> {
  const lines: string[] = [];
  const archive = (await packProject(dir)).archive;
  try {
    await buildProject({ archive, dataDir, driver, logger: createSilentLogger(), onLog: (l) => lines.push(l) });
  } catch (err) {
    return { err: err as { code?: string; message?: string; details?: unknown }, lines };
  }
  assert.fail(`the build of ${dir} succeeded; it must be refused`);
}

function assertNoCanary(what: string, ...texts: unknown[]): void {
  for (const t of texts) {
    const s = typeof t === "string" ? t : (JSON.stringify(t) ?? "");
    assert.ok(!s.includes(CANARY), `${what}: the canary secret leaked: ${s.slice(0, 300)}`);
  }
}

describe("build confinement", () => {
  test("the build sandbox: unprivileged uid, no data dir, only the work dir writable, no network for the bundler", async () => {
    const sandbox = createBuildSandbox();
    const work = join(dataDir, "tmp", "sandbox-probe");
    await mkdir(join(work, "src"), { recursive: true });
    await sandbox.prepareWorkDir(work);
    const lines: string[] = [];
    const probe = [
      "id -u",
      `cat ${join(dataDir, "master.key")} 2>/dev/null || echo no-data-dir`,
      "echo x > /build/src/written && echo work-writable",
      "(echo x > /usr/probe) 2>/dev/null || echo usr-read-only",
      "(echo x > /probe) 2>/dev/null || echo root-read-only",
      "cat /proc/self/status | grep -E '^CapEff'",
      "echo net-interfaces=$(grep -c : /proc/net/dev)",
      "grep 'Max processes' /proc/self/limits | tr -s ' '",
    ].join("; ");
    const exit = await sandbox.run({ workDir: work, network: "none", cwd: "/build", argv: ["/bin/sh", "-c", probe], env: { PATH: "/usr/bin:/bin" }, timeoutMs: 30_000, onLine: (l) => lines.push(l) });
    assert.equal(exit.code, 0, lines.join("\n"));
    assert.equal(lines[0], String(DEFAULT_BUILD_UID));
    assert.ok(lines.includes("no-data-dir"), lines.join("\n"));
    assert.ok(lines.includes("work-writable") && existsSync(join(work, "src", "written")), lines.join("\n"));
    assert.ok(lines.includes("usr-read-only") && lines.includes("root-read-only"), lines.join("\n"));
    assert.ok(lines.some((l) => /^CapEff:\s+0+$/.test(l)), lines.join("\n"));
    assert.ok(lines.includes("net-interfaces=1"), `only loopback: ${lines.join("\n")}`);
    assert.ok(lines.includes("Max processes 512 512 processes"), `RLIMIT_NPROC set: ${lines.join("\n")}`);
    assertNoCanary("sandbox probe", lines);
    await rm(work, { recursive: true, force: true });
  });

  test("absolute paths and ../ traversal are refused, every offending import listed", async () => {
    const dir = await project("abs-and-dotdot", {
      "package.json": JSON.stringify({ name: "abs" }),
      "index.js": [
        `const a = require(${JSON.stringify(join(dataDir, "secret.json"))});`,
        // The upload is unpacked at <dataDir>/tmp/build-<id>/src: three levels up is the data dir.
        'const b = require("../../../secret.json");',
        'const c = require("./lib/up.js");',
        `const ok = require("./lib/ok.json");`,
        "module.exports.leak = () => [a, b, c, ok];",
      ].join("\n"),
      "lib/up.js": `module.exports = require(${JSON.stringify(join(root, "host-secret.json"))});\n`,
      "lib/ok.json": "{\"fine\": true}",
    });
    const { err, lines } = await buildUpload(dir);
    assert.equal(err.code, "BUILD_IMPORT_OUTSIDE_PROJECT", err.message);
    const imports = (err.details as { imports: { specifier: string; importer: string; line?: number }[] }).imports;
    assert.deepEqual(imports.map((i) => [i.importer, i.specifier, i.line]), [
      ["index.js", join(dataDir, "secret.json"), 1],
      ["index.js", "../../../secret.json", 2],
      ["lib/up.js", join(root, "host-secret.json"), 1],
    ]);
    assert.match(err.message ?? "", /3 import\(s\) resolve outside/);
    assertNoCanary("error and log", err.message, err.details, lines);
    assert.deepEqual(await readdir(join(dataDir, "artifacts")), [], "nothing was written");
  });

  test("a dependency symlinked out of the project (file: dependency) is refused", async () => {
    // npm ci links a `file:` directory dependency: node_modules/evil -> a package of npm's own (`ms`,
    // no bin: npm would chmod a bin and fail on the read-only /usr), which exists inside the build
    // sandbox. The bundler must refuse what the link points at.
    const npmDir = resolve(spawnSync("npm", ["root", "-g"], { encoding: "utf8" }).stdout.trim(), "npm", "node_modules", "ms");
    assert.ok(npmDir.startsWith("/usr/"), `npm lives under /usr here (${npmDir}); the test needs a package visible in the sandbox`);
    const dir = await project("symlinked-dep", {
      "package.json": JSON.stringify({ name: "symdep", version: "1.0.0", dependencies: { evil: `file:${npmDir}` } }),
      "index.js": 'const pkg = require("evil/package.json");\nmodule.exports.leak = () => pkg;\n',
    });
    // npm keys a link target by its path relative to the project: make the lockfile at the depth the
    // build sandbox unpacks to (/build/src, two levels), so npm ci accepts it and creates the link.
    const lockDir = await mkdtemp("/tmp/stratus-lk-");
    try {
      await writeFile(join(lockDir, "package.json"), await readFile(join(dir, "package.json")));
      const lock = spawnSync("npm", ["install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: lockDir, encoding: "utf8" });
      assert.equal(lock.status, 0, lock.stderr);
      await writeFile(join(dir, "package-lock.json"), await readFile(join(lockDir, "package-lock.json")));
    } finally {
      await rm(lockDir, { recursive: true, force: true });
    }
    const { err, lines } = await buildUpload(dir);
    assert.equal(err.code, "BUILD_IMPORT_OUTSIDE_PROJECT", err.message);
    assert.match(err.message ?? "", /evil\/package\.json/);
    assertNoCanary("error and log", err.message, err.details, lines);
  });

  test("a dependency symlinked into the data dir sees nothing: the data dir is not in the build sandbox", async () => {
    const dir = await project("symlinked-data", {
      "package.json": JSON.stringify({ name: "symdata", version: "1.0.0", dependencies: { evil: `file:${dataDir}` } }),
      "index.js": 'const s = require("evil/secret.json");\nmodule.exports.leak = () => s;\n',
    });
    // The lockfile is made on the host, where the data dir exists (a package.json makes it a package).
    await writeFile(join(dataDir, "package.json"), JSON.stringify({ name: "evil", version: "1.0.0" }));
    const lock = spawnSync("npm", ["install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: dir, encoding: "utf8" });
    await rm(join(dataDir, "package.json"));
    assert.equal(lock.status, 0, lock.stderr);
    const { err, lines } = await buildUpload(dir);
    assert.ok(["BUILD_FAILED", "BUILD_IMPORT_OUTSIDE_PROJECT"].includes(err.code ?? ""), `${err.code}: ${err.message}`);
    assertNoCanary("error and log", err.message, err.details, lines);
  });

  test("tsconfig extends and package.json main pointing at host files leak nothing", async () => {
    const ts = await project("tsconfig-extends", {
      "package.json": JSON.stringify({ name: "tsext" }),
      "tsconfig.json": JSON.stringify({ extends: join(dataDir, "master.key") }),
      "index.ts": "export const a = (): string => 'x';\n",
    });
    const lines: string[] = [];
    let message = "";
    try {
      const r = await buildProject({ archive: (await packProject(ts)).archive, dataDir, driver, logger: createSilentLogger(), onLog: (l) => lines.push(l) });
      // esbuild may only warn about an unreadable tsconfig: then the artifact must not hold the key.
      for (const f of r.functions) assertNoCanary("artifact", await allText(f.artifactDir));
    } catch (err) {
      message = `${(err as Error).message} ${JSON.stringify((err as { details?: unknown }).details ?? null)}`;
    }
    assertNoCanary("tsconfig extends", message, lines);

    const main = await project("main-outside", {
      "package.json": JSON.stringify({ name: "mainout", main: "../../../secret.json" }),
      "index.js": "module.exports.a = () => 1;\n",
    });
    const { err, lines: mainLines } = await buildUpload(main);
    assert.equal(err.code, "BUILD_IMPORT_OUTSIDE_PROJECT", err.message);
    assertNoCanary("package.json main", err.message, err.details, mainLines);
  });

  test("control: an import inside the project builds, and the artifact holds no host secret", async () => {
    const dir = await project("inside", {
      "package.json": JSON.stringify({ name: "inside" }),
      "index.js": 'const c = require("./conf/settings.json");\nmodule.exports.ok = () => c.greeting;\n',
      "conf/settings.json": JSON.stringify({ greeting: "hello" }),
    });
    const r = await buildProject({ archive: (await packProject(dir)).archive, dataDir, driver, logger: createSilentLogger() });
    assert.deepEqual(r.functions.map((f) => f.name), ["ok"]);
    const text = await allText(r.functions[0]!.artifactDir);
    assert.match(text, /"greeting": "hello"|greeting: "hello"/);
    assertNoCanary("artifact", text);
  });
});
