/**
 * The conformance suite every sandbox driver runs (process, docker, …): one list of node:test cases
 * over the contract in ./driver.ts, against the real sandbox and the real runtime. A driver's test file
 * calls `runDriverConformance(name, makeDriver, options)` at top level.
 *
 * Functions under test live in test/fixtures/functions (plain CJS in the original form); each case
 * builds an InstanceSpec pointing at that directory as the artifact. The suite calls `prepare()` once per
 * function before its first start, as the deploy pipeline does, and starts with the image it returns
 * (Docker: the version's image; process and dev: none). It opens the driver (`open()`) before the
 * first case and closes it in the last one ("reconcile-close").
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { connect, createServer, type Server } from "node:net";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { networkInterfaces, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";
import type { Instance, InstanceLogLine, InstanceSpec, SandboxDriver } from "./driver";
import { parseFunctionConfig, type FunctionConfigInput } from "../shared/function-config";

/** Names of the cases, for `skip`. */
export const CONFORMANCE_CASES = [
  "serves-http", "load-failure", "idempotent-stop", "exit-reasons", "logs", "memory-limit", "heap-limit", "pids-limit",
  "isolation-fs-env", "isolation-processes", "network-outbound", "network-none", "nothing-left", "stats", "discover", "discover-problems",
  "seccomp", "noexec", "nofile", "prepare", "invalid-instance-id", "abort-during-start",
  // Last: it closes the driver.
  "reconcile-close",
] as const;
export type ConformanceCase = (typeof CONFORMANCE_CASES)[number];

/** Options of runDriverConformance. */
export interface ConformanceOptions {
  /** Directory of the fixture functions (default: test/fixtures/functions of this repository). */
  readonly fixturesDir?: string;
  /**
   * Host paths a function must not be able to read (the platform's data dir, the store…). The suite
   * adds a temp dir holding a secret file of its own.
   */
  readonly hostSecretPaths?: readonly string[];
  /** Leftovers of an instance after it exited (processes, cgroups, containers, sockets), described; [] when clean. */
  readonly leftovers?: (instance: Instance) => Promise<string[]>;
  /** Cases this driver cannot pass, each with the reason (printed as the skip message). */
  readonly skip?: Partial<Record<ConformanceCase, string>>;
  /** Per-test timeout, ms (default 60000). */
  readonly timeoutMs?: number;
  /**
   * Whether the sandbox sees the host's /usr (perl, util-linux's unshare), so the "seccomp" case can
   * probe denied syscalls from inside. A minimal image (Docker's: node and its libraries only) gives
   * function code no way to issue a raw syscall, so there the case asserts the status fields only.
   */
  readonly hostTools?: boolean;
  /** Writable dirs of the sandbox other than /tmp (the socket dir): each must be noexec. */
  readonly writableDirs?: readonly string[];
}

/** What the `kernel` fixture function reports (test/fixtures/functions/probe.js). */
export interface KernelReport {
  readonly threads: Record<string, { name?: string; seccomp?: string; noNewPrivs?: string; capEff?: string; capPrm?: string; error?: string }>;
  readonly exec: Record<string, string>;
  readonly syscalls: Record<string, string>;
  readonly unshareR: { status: number | null; stdout: string; stderr: string } | null;
  readonly nofile: { soft: number; hard: number } | null;
  readonly mountinfo: string;
  readonly fds: string[];
}

/** What an HTTP call to an instance returned. */
export interface InvokeResult {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/**
 * Sends one HTTP request to an instance over its Unix socket.
 * @throws Error when the connection fails or is reset (e.g. the instance died mid-request).
 */
export function invokeInstance(instance: Instance, path = "/", headers: Record<string, string> = {}, timeoutMs = 30_000): Promise<InvokeResult> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: instance.endpoint.socketPath, path, headers, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}

const defaultFixtures = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "test", "fixtures", "functions");

/**
 * Registers the conformance cases for one driver. `makeDriver` runs once before the cases; `cleanup`
 * once after them (it should close the driver and remove what the test created).
 */
export function runDriverConformance(
  name: string,
  makeDriver: () => Promise<{ driver: SandboxDriver; cleanup: () => Promise<void> }>,
  options: ConformanceOptions = {},
): void {
  const fixtures = options.fixturesDir ?? defaultFixtures;
  const timeout = options.timeoutMs ?? 60_000;
  let driver!: SandboxDriver;
  let cleanup: (() => Promise<void>) | undefined;
  let secretDir = "";
  const hostSentinel = `STRATUS_CONFORMANCE_HOST_${randomBytes(4).toString("hex")}`;
  const started: Instance[] = [];
  let seq = 0;

  const spec = (exportName: string, config: FunctionConfigInput = {}, extra: Partial<InstanceSpec> = {}): InstanceSpec => ({
    instanceId: `conf-${process.pid}-${++seq}-${randomBytes(3).toString("hex")}`,
    functionName: exportName,
    version: "1",
    artifactDir: fixtures,
    entry: "probe.js",
    exportName,
    config: parseFunctionConfig(exportName, config),
    env: {},
    ...extra,
  });
  /** prepare() once per function and artifact, as deploy does; the spec then carries its image. */
  const images = new Map<string, Promise<string | undefined>>();
  const prepared = async (s: InstanceSpec): Promise<InstanceSpec> => {
    const key = `${s.functionName}\0${s.artifactDir}`;
    let image = images.get(key);
    if (image === undefined) {
      image = driver.prepare(s).then((r) => r.image);
      images.set(key, image);
    }
    const ref = await image;
    return ref === undefined ? s : { ...s, image: ref };
  };
  const start = async (s: InstanceSpec, onLog?: (l: InstanceLogLine) => void, signal?: AbortSignal): Promise<Instance> => {
    const inst = await driver.start(await prepared(s), { ...(onLog ? { onLog } : {}), ...(signal ? { signal } : {}) });
    started.push(inst);
    return inst;
  };
  const json = async (inst: Instance, path: string): Promise<Record<string, unknown>> => {
    const r = await invokeInstance(inst, path);
    assert.equal(r.status, 200, `GET ${path}: ${r.status} ${r.body}`);
    return JSON.parse(r.body) as Record<string, unknown>;
  };
  const expectClean = async (inst: Instance): Promise<void> => {
    assert.equal(existsSync(inst.endpoint.socketPath), false, "the socket is removed");
    if (options.leftovers) assert.deepEqual(await options.leftovers(inst), [], "nothing is left of the instance");
  };
  const cases = (c: ConformanceCase, fn: () => Promise<void>): void => {
    const reason = options.skip?.[c];
    if (reason) test(c, { skip: reason }, () => {});
    else test(c, { timeout }, fn);
  };

  describe(`sandbox driver conformance: ${name}`, () => {
    before(async () => {
      process.env[hostSentinel] = "host-secret";
      secretDir = mkdtempSync(join(tmpdir(), "stratus-conf-secret-"));
      writeFileSync(join(secretDir, "secret.txt"), "do not read");
      ({ driver, cleanup } = await makeDriver());
      await driver.open();
      await driver.open(); // idempotent
    });
    after(async () => {
      delete process.env[hostSentinel];
      await Promise.all(started.map((i) => i.destroy()));
      await cleanup?.();
      rmSync(secretDir, { recursive: true, force: true });
    });

    cases("serves-http", async () => {
      const inst = await start(spec("hello"));
      assert.equal(typeof inst.startMs, "number");
      const r = await invokeInstance(inst, "/", { "x-stratus-request-id": "conf-rid-1" });
      assert.equal(r.status, 200);
      assert.equal(r.body, "Hello");
      const again = await invokeInstance(inst, "/");
      assert.equal(again.body, "Hello", "the instance serves sequential requests");
      await inst.destroy();
    });

    cases("load-failure", async () => {
      const s = spec("hello", {}, { entry: "throws-at-load.js" });
      await assert.rejects(driver.start(await prepared(s)), (err: { code?: string; message?: string }) => {
        assert.equal(err.code, "FUNCTION_LOAD_FAILED");
        assert.match(String(err.message), /kaboom at load time/, "the message carries the module's error");
        return true;
      });
      const missing = spec("no-such-export");
      await assert.rejects(driver.start(await prepared(missing)), { code: "FUNCTION_LOAD_FAILED" });
      if (options.leftovers) {
        const ghost = { id: s.instanceId, spec: s, endpoint: { socketPath: "" } } as unknown as Instance;
        assert.deepEqual(await options.leftovers(ghost), [], "a failed start leaves nothing behind");
      }
    });

    cases("idempotent-stop", async () => {
      const a = await start(spec("hello"));
      const [c1, c2] = await Promise.all([a.close(5_000), a.close(5_000)]);
      assert.equal(c1.reason, "closed");
      assert.deepEqual(c2, c1);
      assert.deepEqual(await a.destroy(), c1, "destroy after close returns the same exit");
      assert.deepEqual(await a.exited, c1);
      await expectClean(a);

      const b = await start(spec("hello"));
      const [d1, d2] = await Promise.all([b.destroy(), b.destroy()]);
      assert.equal(d1.reason, "destroyed");
      assert.deepEqual(d2, d1);
      assert.deepEqual(await b.close(), d1);
      await expectClean(b);
    });

    cases("exit-reasons", async () => {
      const inst = await start(spec("crash"));
      let resolutions = 0;
      void inst.exited.then(() => resolutions++);
      await invokeInstance(inst, "/").catch(() => undefined);
      const exit = await inst.exited;
      assert.equal(exit.reason, "crashed");
      assert.notEqual(exit.exitCode, 0);
      await inst.destroy();
      await new Promise((r) => setImmediate(r));
      assert.equal(resolutions, 1, "exited resolves once");
      await expectClean(inst);
    });

    cases("logs", async () => {
      const lines: InstanceLogLine[] = [];
      const inst = await start(spec("hello"), (l) => lines.push(l));
      await invokeInstance(inst, "/", { "x-stratus-request-id": "conf-log-rid" });
      await inst.close(5_000);
      const line = lines.find((l) => l.message.includes("hello called"));
      assert.ok(line, `the console line arrives (got ${JSON.stringify(lines.map((l) => l.message))})`);
      assert.equal(line.requestId, "conf-log-rid");
      assert.equal(line.instanceId, inst.id);
      assert.equal(line.stream, "stdout");
      assert.ok(!lines.some((l) => l.message.includes("stratus:ready")), "the READY line is not function output");
    });

    cases("memory-limit", async () => {
      const inst = await start(spec("memhog", { memory: 64 }));
      await invokeInstance(inst, "/").then(
        (r) => assert.fail(`expected the instance to die, got ${r.status}`),
        () => undefined,
      );
      const exit = await inst.exited;
      assert.equal(exit.reason, "out-of-memory", JSON.stringify(exit));
      await expectClean(inst);
    });

    cases("heap-limit", async () => {
      const inst = await start(spec("heaphog", { memory: 128 }));
      await invokeInstance(inst, "/").catch(() => undefined);
      const exit = await inst.exited;
      assert.equal(exit.reason, "out-of-memory", JSON.stringify(exit));
    });

    cases("pids-limit", async () => {
      const inst = await start(spec("forkbomb"));
      const r = await invokeInstance(inst, "/", {}, 30_000).catch((err: Error) => ({ status: 0, body: String(err) }));
      if (r.status === 200) {
        const out = JSON.parse(r.body) as { spawned: number; error: string | null };
        assert.ok(out.error !== null, `spawning was refused at some point (spawned ${out.spawned})`);
        assert.ok(out.spawned < 1000, `the sandbox capped processes (spawned ${out.spawned})`);
      }
      // The host still starts processes promptly while the bomb runs.
      const t0 = Date.now();
      const host = spawnSync(process.execPath, ["-e", "0"], { timeout: 20_000 });
      assert.equal(host.status, 0, "the host can still start a process");
      assert.ok(Date.now() - t0 < 20_000);
      await inst.destroy();
      await expectClean(inst);
    });

    cases("isolation-fs-env", async () => {
      const inst = await start(spec("isolation", {}, { env: { FN_VAR: "visible" } }));
      const reads = [...(options.hostSecretPaths ?? []), secretDir, join(secretDir, "secret.txt")];
      const q = reads.map((p) => `read=${encodeURIComponent(p)}`).join("&");
      const out = (await json(inst, `/?${q}`)) as { writeTmp: string; writeCode: string; writeRoot: string; readShadow: string; reads: Record<string, string>; env: string[]; uid: number };
      assert.equal(out.writeTmp, "ok", "/tmp is writable");
      assert.notEqual(out.writeCode, "ok", "the code dir is read-only");
      assert.notEqual(out.writeRoot, "ok", "/ is read-only");
      assert.notEqual(out.readShadow, "ok", "/etc/shadow is unreadable");
      for (const p of reads) assert.notEqual(out.reads[p], "ok", `${p} is unreadable`);
      assert.ok(out.env.includes("FN_VAR"), "the function's env is visible");
      assert.ok(!out.env.includes(hostSentinel), "the host's env is not visible");
      assert.ok(!out.env.some((k) => k.startsWith("STRATUS_")), "no platform variables reach user code");
      assert.notEqual(out.uid, 0, "the function does not run as root");
    });

    cases("seccomp", async () => {
      const inst = await start(spec("kernel"));
      const out = (await json(inst, "/")) as unknown as KernelReport;
      const threads = Object.entries(out.threads);
      assert.ok(threads.length >= 2, `the function sees its own threads: ${JSON.stringify(out.threads)}`);
      // Every process and every thread of the sandbox, as Firecracker's jailer tests check.
      for (const [id, t] of threads) {
        assert.equal(t.seccomp, "2", `thread ${id} (${t.name}) runs under a seccomp filter`);
        assert.equal(t.noNewPrivs, "1", `thread ${id} (${t.name}) has no_new_privs`);
        assert.equal(t.capEff, "0000000000000000", `thread ${id} (${t.name}) has no effective capabilities`);
      }
      if (options.hostTools) {
        const names = Object.keys(out.syscalls);
        assert.ok(names.length >= 10, `the syscall probes ran: ${JSON.stringify(out.syscalls)}`);
        // errno 1 = EPERM: the filter's verdict (without it, ptrace(TRACEME), keyctl and unshare succeed).
        for (const [name, result] of Object.entries(out.syscalls)) assert.equal(result, "1", `${name} is refused with EPERM (got ${result})`);
        assert.ok(out.unshareR, "unshare(1) is there to try");
        assert.notEqual(out.unshareR.status, 0, "`unshare -r` fails");
        assert.match(out.unshareR.stderr, /Operation not permitted/);
      } else {
        // Deliberately not a skip: the status fields above are the assertion for a minimal image.
        assert.deepEqual(out.syscalls, {}, "no perl in the sandbox: nothing to probe with (see ConformanceOptions.hostTools)");
      }
    });

    cases("noexec", async () => {
      // The probe binary is a real program: on the host it runs and exits 42, so EACCES inside is noexec.
      const hostDir = mkdtempSync(join(tmpdir(), "stratus-conf-exec-"));
      try {
        const { TINY_ELF_BASE64 } = createRequire(import.meta.url)(join(fixtures, "probe.js")) as { TINY_ELF_BASE64: string };
        writeFileSync(join(hostDir, "tiny"), Buffer.from(TINY_ELF_BASE64, "base64"), { mode: 0o755 });
        assert.equal(spawnSync(join(hostDir, "tiny")).status, 42, "the probe binary runs where exec is allowed");
      } finally {
        rmSync(hostDir, { recursive: true, force: true });
      }
      const inst = await start(spec("kernel"));
      const out = (await json(inst, "/")) as unknown as KernelReport;
      const dirs = ["/tmp", ...(options.writableDirs ?? [])];
      for (const d of dirs) assert.equal(out.exec[d], "EACCES", `exec of a binary written to ${d} fails with EACCES: ${JSON.stringify(out.exec)}`);
      for (const [d, r] of Object.entries(out.exec)) assert.ok(r === "EACCES" || r.startsWith("write:"), `${d}: exec refused or not writable (${r})`);
    });

    cases("nofile", async () => {
      const byDefault = await start(spec("kernel"));
      const d = (await json(byDefault, "/")) as unknown as KernelReport;
      assert.deepEqual(d.nofile, { soft: 1024, hard: 1024 }, "RLIMIT_NOFILE defaults to the function config's 1024");
      await byDefault.destroy();
      const inst = await start(spec("fdbomb", { maxOpenFiles: 128 }));
      const out = (await json(inst, "/")) as { opened: number; error: string | null };
      assert.equal(out.error, "EMFILE", `opening files stops at the limit: ${JSON.stringify(out)}`);
      assert.ok(out.opened > 50 && out.opened < 128, `opened ${out.opened} of at most 128 (the runtime holds some)`);
      const k = await start(spec("kernel", { maxOpenFiles: 128 }));
      assert.deepEqual(((await json(k, "/")) as unknown as KernelReport).nofile, { soft: 128, hard: 128 });
      assert.equal((await invokeInstance(inst, "/")).status, 200, "the instance survives hitting its limit");
    });

    cases("isolation-processes", async () => {
      const marker = `marker${randomBytes(6).toString("hex")}`;
      const a = await start(spec("hello", {}, { env: { CONF_MARKER: marker } }));
      const b = await start(spec("isolation"));
      const killer = await start(spec("killall"));
      const out = (await json(b, `/?marker=${marker}`)) as { pids: number; markerSeen: boolean };
      assert.equal(out.markerSeen, false, "another instance's processes are invisible");
      assert.ok(out.pids < 10, `only the sandbox's own processes are visible (saw ${out.pids})`);
      await invokeInstance(killer, "/").catch(() => undefined);
      const r = await invokeInstance(a, "/");
      assert.equal(r.body, "Hello", "kill(-1) in one sandbox leaves the others alive");
      assert.equal((await invokeInstance(b, "/")).status, 200);
    });

    const hostAddresses = (): string[] => {
      const out: string[] = [];
      for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (!a.internal && a.family === "IPv4") out.push(a.address);
      return out;
    };
    const withServers = async (fn: (targets: Array<{ host: string; port: number }>) => Promise<void>): Promise<void> => {
      const servers: Server[] = [];
      const targets: Array<{ host: string; port: number }> = [];
      try {
        for (const host of ["127.0.0.1", ...hostAddresses()]) {
          const s = createServer((c) => c.end("platform secret"));
          // Other sandboxes come and go meanwhile: an address of their veth listed above may be gone by
          // now (EADDRNOTAVAIL). It is no longer the host's, so there is nothing to test on it.
          const bound = await new Promise<boolean>((resolve, reject) => {
            s.once("error", (err: NodeJS.ErrnoException) => (err.code === "EADDRNOTAVAIL" && host !== "127.0.0.1" ? resolve(false) : reject(err)));
            s.listen(0, host, () => resolve(true));
          });
          if (!bound) continue;
          servers.push(s);
          targets.push({ host, port: (s.address() as { port: number }).port });
        }
        await fn(targets);
      } finally {
        // Every listener closes whatever happened: one left open keeps the test process from exiting.
        await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
      }
    };

    cases("network-outbound", async () => {
      const inst = await start(spec("connect", { network: "outbound" }));
      await withServers(async (targets) => {
        // All at once: a dropped SYN costs the probe's whole 3 s timeout, and a busy host has dozens of
        // addresses (every sandbox's veth adds one) — one after another that outlasts the case's timeout.
        const outs = await Promise.all(targets.map((t) => json(inst, `/?host=${t.host}&port=${t.port}`)));
        targets.forEach((t, i) => assert.equal(outs[i]!.connected, false, `${t.host}:${t.port} (a host port) is unreachable: ${JSON.stringify(outs[i])}`));
      });
      // An abstract Unix socket of the host: no packet filter sees these, only a network namespace of
      // the sandbox's own keeps them out of reach.
      const name = `stratus-conf-decoy-${randomBytes(6).toString("hex")}`;
      let hits = 0;
      const decoy = createServer((c) => {
        hits++;
        c.on("error", () => {});
        c.end("platform secret");
      });
      await new Promise<void>((resolve, reject) => decoy.listen({ path: `\0${name}` }, resolve).on("error", reject));
      try {
        const control = await new Promise<boolean>((resolve) => {
          const c = connect({ path: `\0${name}` }, () => resolve(true)).on("error", () => resolve(false));
          c.on("connect", () => c.destroy());
        });
        assert.equal(control, true, "the decoy answers on the host");
        const out = await json(inst, `/?abstract=${name}`);
        assert.equal(out.connected, false, `the host's abstract socket is unreachable: ${JSON.stringify(out)}`);
        assert.equal(hits, 1, "only the host's own control connection reached the decoy");
      } finally {
        await new Promise((r) => decoy.close(r));
      }
    });

    cases("network-none", async () => {
      const inst = await start(spec("connect", { network: "none" }));
      await withServers(async (targets) => {
        const all = [...targets, { host: "1.1.1.1", port: 443 }];
        const outs = await Promise.all(all.map((t) => json(inst, `/?host=${t.host}&port=${t.port}`)));
        all.forEach((t, i) => assert.equal(outs[i]!.connected, false, `${t.host}:${t.port} is unreachable: ${JSON.stringify(outs[i])}`));
      });
    });

    cases("nothing-left", async () => {
      const inst = await start(spec("hello"));
      assert.ok(existsSync(inst.endpoint.socketPath), "the socket exists while the instance lives");
      await inst.destroy();
      await expectClean(inst);
      assert.equal(await inst.stats(), null, "stats() of a gone instance is null");
    });

    cases("stats", async () => {
      const inst = await start(spec("hello"));
      const s = await inst.stats();
      assert.ok(s, "stats of a live instance");
      assert.ok(Number.isFinite(s.memoryBytes) && s.memoryBytes > 0, `memoryBytes ${s.memoryBytes}`);
      assert.ok(Number.isFinite(s.peakMemoryBytes) && s.peakMemoryBytes >= 0);
      await inst.destroy();
    });

    cases("discover", async () => {
      const found = await driver.discover({ artifactDir: fixtures, entry: "probe.js", timeoutMs: 20_000 });
      const names = found.map((f) => f.name).sort();
      assert.ok(names.includes("hello") && names.includes("memhog"), `found ${names.join(", ")}`);
      const memhog = found.find((f) => f.name === "memhog");
      assert.deepEqual(memhog?.config, { memory: 64 });
      await assert.rejects(driver.discover({ artifactDir: fixtures, entry: "throws-at-load.js", timeoutMs: 20_000 }), (err: { code?: string; message?: string }) => {
        assert.equal(err.code, "FUNCTION_LOAD_FAILED");
        assert.match(String(err.message), /kaboom at load time/);
        return true;
      });
    });

    cases("discover-problems", async () => {
      const found = await driver.discover({ artifactDir: fixtures, entry: "partly-broken.js", timeoutMs: 20_000 });
      const byName = new Map(found.map((f) => [f.name, f]));
      assert.deepEqual([...byName.keys()].sort(), ["badConfig", "good", "noHandler"]);
      assert.equal(byName.get("good")?.error, undefined);
      assert.equal(byName.get("noHandler")?.error?.code, "FUNCTION_LOAD_FAILED");
      assert.equal(byName.get("badConfig")?.error?.code, "INVALID_CONFIG");
      assert.match(String(byName.get("badConfig")?.error?.message), /timeout/);
    });

    cases("prepare", async () => {
      const s = spec("hello");
      const r = await driver.prepare(s);
      assert.equal(typeof r, "object");
      if (r.image !== undefined) assert.match(r.image, /\S/, "an image reference, when the driver has one");
      const inst = await driver.start(r.image === undefined ? s : { ...s, image: r.image });
      started.push(inst);
      assert.equal((await invokeInstance(inst, "/")).body, "Hello", "an instance starts from what prepare() returned");
      await inst.destroy();
    });

    cases("invalid-instance-id", async () => {
      const base = await prepared(spec("hello"));
      for (const id of ["", "Upper", "a/b", "../x", "a b", "x".repeat(65), "pw-abc123"]) {
        await assert.rejects(driver.start({ ...base, instanceId: id }), (err: { code?: string; message?: string }) => {
          assert.equal(err.code, "INSTANCE_START_FAILED", `id ${JSON.stringify(id)}`);
          assert.match(String(err.message), /invalid instance id/);
          return true;
        });
      }
      const inst = await start(base);
      await assert.rejects(driver.start(base), { code: "INSTANCE_START_FAILED" }, "an id in use is refused");
      assert.equal((await invokeInstance(inst, "/")).body, "Hello", "the refused start left the live instance alone");
      await inst.destroy();
    });

    cases("abort-during-start", async () => {
      const s = await prepared(spec("hello"));
      const already = new AbortController();
      already.abort(new Error("gone before start"));
      await assert.rejects(driver.start(s, { signal: already.signal }), { code: "INSTANCE_START_FAILED", message: /start aborted/ });
      const ac = new AbortController();
      const p = driver.start(s, { signal: ac.signal });
      setTimeout(() => ac.abort(new Error("client went away")), 0);
      await assert.rejects(p, { code: "INSTANCE_START_FAILED", message: /start aborted/ });
      const ghost = { id: s.instanceId, spec: s, endpoint: { socketPath: "" } } as unknown as Instance;
      if (options.leftovers) assert.deepEqual(await options.leftovers(ghost), [], "an aborted start leaves nothing behind");
      // Nothing holds the id: the same instance starts now.
      const inst = await start(s);
      assert.equal((await invokeInstance(inst, "/")).body, "Hello");
      await inst.destroy();
      await expectClean(inst);
    });

    cases("reconcile-close", async () => {
      const inst = await start(spec("hello"));
      await driver.reconcile();
      assert.equal((await invokeInstance(inst, "/")).body, "Hello", "reconcile leaves this run's live instances alone");
      let exits = 0;
      void inst.exited.then(() => exits++);
      await Promise.all([driver.close(), driver.close()]);
      const exit = await inst.exited;
      assert.equal(exit.reason, "destroyed", "close() destroys every instance");
      await expectClean(inst);
      await driver.close(); // idempotent
      await assert.rejects(driver.start(await prepared(spec("hello"))), { code: "SHUTTING_DOWN" });
      await assert.rejects(driver.open(), { code: "SHUTTING_DOWN" });
      await new Promise((r) => setImmediate(r));
      assert.equal(exits, 1, "exited resolved once");
    });
  });
}
