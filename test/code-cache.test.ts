// The runtime's V8 code cache (src/sandbox/code-cache.ts, src/runtime/boot.cjs; platform setting
// process.codeCache; docs/prewarm.md "Code cache"): the producer's cache is accepted by a runtime started
// with the same Node flags and refused (compiled from source, still serving) with other flags or when it is
// garbage; a second store (a restart) reuses the file;
// through the process driver, fresh starts and pool slots say `accepted` on READY (CommonJS and ES module
// entries), `codeCache: false` starts the bundle directly, and a cache V8 rejects is logged once per driver.
// Needs root (cgroups, mounts, bwrap), bubblewrap, setpriv, perl and `npm run build`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Writable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import { invokeInstance } from "../src/sandbox/conformance";
import { createRuntimeCodeCaches } from "../src/sandbox/code-cache";
import { instanceNodeArgs } from "../src/sandbox/driver-core";
import { createProcessDriver } from "../src/sandbox/process/process-driver";
import { parseOutputLine } from "../src/sandbox/output-lines";
import { createLogger, createSilentLogger } from "../src/shared/logger";
import { parseFunctionConfig } from "../src/shared/function-config";
import { ENV, READY_LINE } from "../src/shared/protocol";
import type { InstanceSpec } from "../src/sandbox/driver";

const bootPath = resolve("dist/runtime-boot.cjs");
const runtimePath = resolve("dist/runtime.cjs");
if (!existsSync(bootPath) || !existsSync(runtimePath)) throw new Error("dist/runtime-boot.cjs or dist/runtime.cjs is missing: run `npm run build` first");
if (process.getuid?.() !== 0) throw new Error("the code cache tests need root (the process driver's cgroups, mounts and bwrap)");
const fixtures = resolve("test/fixtures/snapshot");

/** Runs the runtime through the boot loader (fresh mode, `entry`'s `exportName`) until READY; answers one GET; returns what READY said. */
async function bootOnce(nodeArgs: string[], env: Record<string, string>, entry = "index.js", exportName = "info"): Promise<{ codeCache: string | null; status: number; body: string }> {
  const dir = mkdtempSync(join(tmpdir(), "stcc-"));
  const socket = join(dir, "fn.sock");
  const child = spawn(process.execPath, [...nodeArgs, bootPath], {
    env: {
      PATH: "/usr/bin:/bin", [ENV.entry]: join(fixtures, entry), [ENV.exportName]: exportName, [ENV.socket]: socket,
      [ENV.config]: JSON.stringify({ timeout: 10_000, memory: 256, concurrency: 1, maxBodyBytes: 1024 * 1024, env: {} }), ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  try {
    let out = "";
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()));
    const line = await new Promise<string>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`no READY within 20 s: ${stderr}`)), 20_000);
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const l = out.split("\n").find((x) => x.startsWith(READY_LINE));
        if (l !== undefined) {
          clearTimeout(timer);
          res(l);
        }
      });
      child.once("exit", (code) => rej(new Error(`the runtime exited (${code}) before READY: ${stderr}`)));
    });
    const parsed = parseOutputLine(line, "stdout", "t");
    assert.equal(parsed.kind, "ready");
    const answer = await new Promise<{ status: number; body: string }>((res, rej) => {
      const req = request({ socketPath: socket, path: "/", headers: { "x-stratus-request-id": "cc-1", "x-stratus-deadline-ms": "5000" } }, (r) => {
        let body = "";
        r.on("data", (c: Buffer) => void (body += c.toString()));
        r.on("end", () => res({ status: r.statusCode ?? 0, body }));
      });
      req.on("error", rej);
      req.end();
    });
    return { codeCache: parsed.kind === "ready" ? parsed.codeCache : null, ...answer };
  } finally {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

test("a produced cache is accepted with the same flags, refused with others or when corrupt (and the runtime still serves); a second store reuses the file", { timeout: 120_000 }, async () => {
  const cacheDir = mkdtempSync(join(tmpdir(), "stccd-"));
  try {
    const flags256 = instanceNodeArgs(256);
    const flags512 = instanceNodeArgs(512);
    const caches = createRuntimeCodeCaches({ nodePath: process.execPath, bootPath, cacheDir, logger: createSilentLogger() });
    assert.equal(caches.get(flags256), undefined, "none yet: get() starts producing it in the background");
    const file = await caches.ensure(flags256);
    assert.ok(file !== undefined && existsSync(file), "produced");
    assert.equal(caches.get(flags256), file, "ready now");
    assert.equal(statSync(file).mode & 0o777, 0o644, "readable by the sandbox user, written by the platform only");
    assert.ok(statSync(file).size > 100_000, `a cache of the bundle and its warm-up (${statSync(file).size} bytes)`);
    const other = await caches.ensure(flags512);
    assert.ok(other !== undefined && other !== file, "one cache per flag set (the heap limit is a V8 flag)");
    await caches.close();
    assert.deepEqual(readdirSync(cacheDir).sort(), [file, other].map((f) => f.slice(cacheDir.length + 1)).sort(), "nothing else is left in the cache dir");

    // A new store (a restart) finds the file instead of producing it again.
    const mtime = statSync(file).mtimeMs;
    const again = createRuntimeCodeCaches({ nodePath: process.execPath, bootPath, cacheDir, logger: createSilentLogger() });
    assert.equal(again.get(flags256), file);
    assert.equal(await again.ensure(flags256), file);
    assert.equal(statSync(file).mtimeMs, mtime, "reused, not rewritten");

    const accepted = await bootOnce(flags256, { STRATUS_CODE_CACHE: file });
    assert.equal(accepted.codeCache, "accepted");
    assert.equal(accepted.status, 200, accepted.body);
    const esm = await bootOnce(flags256, { STRATUS_CODE_CACHE: file }, "esm.mjs", "esm");
    assert.equal(esm.codeCache, "accepted");
    assert.equal(esm.status, 200, esm.body);
    assert.match(esm.body, /^esm required at load /, "an ES module entry loads through the loader's import()");
    const otherFlags = await bootOnce(flags512, { STRATUS_CODE_CACHE: file });
    assert.equal(otherFlags.codeCache, "rejected", "V8 refuses a cache made with other flags");
    assert.equal(otherFlags.status, 200, "and the runtime, compiled from source, serves");
    const garbage = join(cacheDir, "garbage.cache");
    writeFileSync(garbage, readFileSync(file).subarray(0, 4096));
    const corrupt = await bootOnce(flags256, { STRATUS_CODE_CACHE: garbage });
    assert.equal(corrupt.codeCache, "rejected");
    assert.equal(corrupt.status, 200);
    const none = await bootOnce(flags256, { STRATUS_CODE_CACHE: join(cacheDir, "missing.cache") });
    assert.equal(none.codeCache, "absent");
    assert.equal(none.status, 200);
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
});

test("process driver: fresh starts and pool slots compile the runtime from the cache (READY says accepted); codeCache: false starts the bundle", { timeout: 180_000 }, async () => {
  const rootName = `stratus-cctest-${process.pid}`;
  let seq = 0;
  const spec = (exportName: string, entry = "index.js", memory = 256): InstanceSpec => ({
    instanceId: `cct-${process.pid}-${++seq}`, functionName: exportName, version: "1", artifactDir: fixtures, entry, exportName,
    config: parseFunctionConfig(exportName, { timeout: 10_000, memory }), env: {},
  });
  for (const codeCache of [true, false]) {
    const stateDir = mkdtempSync("/tmp/scc-");
    const driver = createProcessDriver({ runtimePath, stateDir, cgroupRoot: `${rootName}-${codeCache}`, prewarm: 1, codeCache });
    try {
      await driver.reconcile();
      await driver.open();
      if (codeCache) assert.equal(readdirSync(join(stateDir, "code-cache")).filter((f) => f.endsWith(".cache")).length, 1, "open() produced the pool's cache");
      else assert.equal(existsSync(join(stateDir, "code-cache")), false, "no cache without the option");
      const expected = codeCache ? "accepted" : null;

      const deadline = Date.now() + 60_000;
      while (driver.prewarm.idleCount() < 1 && Date.now() < deadline) await delay(25);
      const hits = driver.prewarm.counts().hits;
      const slot = await driver.start(spec("info"));
      assert.equal(driver.prewarm.counts().hits, hits + 1, "served from the pool");
      assert.equal(slot.codeCache, expected, "a slot booted through the loader");
      assert.equal((await invokeInstance(slot, "/")).status, 200);

      const esm = await driver.start(spec("esm", "esm.mjs"));
      assert.equal(esm.codeCache, expected);
      const e = await invokeInstance(esm, "/");
      assert.equal(e.status, 200, e.body);
      assert.match(e.body, /^esm required at load /);

      for (const i of [slot, esm]) await i.close(2000);
    } finally {
      await driver.close();
      for (const d of driver.cgroups.rootDirs()) if (existsSync(d)) rmdirSync(d);
      rmSync(stateDir, { recursive: true, force: true });
    }
  }

  // Another memory size, on a driver without a pool (a slot of that size would race the cache): no cache for
  // its flags yet, so the first start compiles from source and the driver produces one in the background; a
  // later start uses it.
  const stateDir = mkdtempSync("/tmp/scc-");
  const driver = createProcessDriver({ runtimePath, stateDir, cgroupRoot: `${rootName}-sizes`, prewarm: 0 });
  try {
    await driver.reconcile();
    await driver.open();
    const first = await driver.start(spec("info", "index.js", 512));
    assert.equal(first.codeCache, "absent");
    assert.equal((await invokeInstance(first, "/")).status, 200);
    const until = Date.now() + 60_000;
    while (readdirSync(join(stateDir, "code-cache")).filter((f) => f.endsWith(".cache")).length < 2 && Date.now() < until) await delay(50);
    const later = await driver.start(spec("info", "index.js", 512));
    assert.equal(later.codeCache, "accepted", "the 512 MB cache was produced and is used");
    assert.equal((await invokeInstance(later, "/")).status, 200);
    for (const i of [first, later]) await i.close(2000);
  } finally {
    await driver.close();
    for (const d of driver.cgroups.rootDirs()) if (existsSync(d)) rmdirSync(d);
    rmSync(stateDir, { recursive: true, force: true });
  }
});

test("process driver: a cache V8 rejects (here: cut short) is logged once per driver, and the instances still serve", { timeout: 120_000 }, async () => {
  const stateDir = mkdtempSync("/tmp/scc-");
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, cb) { for (const l of chunk.toString("utf8").split("\n")) if (l) logs.push(JSON.parse(l) as Record<string, unknown>); cb(); } });
  const driver = createProcessDriver({ runtimePath, stateDir, cgroupRoot: `stratus-cctest-${process.pid}-rejected`, prewarm: 0, logger: createLogger({ level: "info" }, sink) });
  try {
    await driver.reconcile();
    await driver.open();
    const [file] = readdirSync(join(stateDir, "code-cache")).filter((f) => f.endsWith(".cache"));
    assert.ok(file !== undefined, "open() produced the default size's cache");
    const path = join(stateDir, "code-cache", file);
    writeFileSync(path, readFileSync(path).subarray(0, 4096));
    let seq = 0;
    const start = () => driver.start({
      instanceId: `ccr-${process.pid}-${++seq}`, functionName: "info", version: "1", artifactDir: fixtures, entry: "index.js", exportName: "info",
      config: parseFunctionConfig("info", { timeout: 10_000 }), env: {},
    });
    const a = await start();
    const b = await start();
    assert.deepEqual([a.codeCache, b.codeCache], ["rejected", "rejected"]);
    for (const i of [a, b]) assert.equal((await invokeInstance(i, "/")).status, 200, "compiled from source, it serves");
    const warnings = logs.filter((l) => typeof l.msg === "string" && l.msg.includes("rejected the runtime's code cache"));
    assert.equal(warnings.length, 1, "one warning for the driver, not one per instance");
    assert.equal(warnings[0]!.level, 40, "at warn");
    for (const i of [a, b]) await i.close(2000);
  } finally {
    await driver.close();
    for (const d of driver.cgroups.rootDirs()) if (existsSync(d)) rmdirSync(d);
    rmSync(stateDir, { recursive: true, force: true });
  }
});
