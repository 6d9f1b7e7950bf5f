// The cold path's specialisation channel and warm-up, below the driver: a generic runtime
// (dist/runtime.cjs, STRATUS_GENERIC=1, as in a pool slot) acts on a newline-ended message without
// waiting for the channel's EOF and never reads past the newline, on fd 3 and on the one-shot Unix socket
// (STRATUS_SPECIALIZE_SOCKET, the Docker driver's socket channel); an EOF-ended message (the Docker
// driver's attach channel) still works; the slot's warm-up leaves nothing the function can see; the slot mount's
// one-round-trip overlay + move leaves nothing mounted when it fails. Needs root (mounts) and `npm run build`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { connect, type Socket } from "node:net";
import { startMountHelper } from "../src/sandbox/mount-helper";
import { isMountPoint } from "../src/sandbox/slot-mounts";
import { READY_LINE } from "../src/shared/protocol";

const runtimePath = resolve("dist/runtime.cjs");
if (!existsSync(runtimePath)) throw new Error(`${runtimePath} is missing: run \`npm run build\` first`);
if (process.getuid?.() !== 0) throw new Error("the specialisation channel tests need root (mounts)");

const CODE = `
module.exports.first = { func: async (req, res) => res.json({
  export: "first",
  warmFiles: require("node:fs").readdirSync("/tmp").filter((f) => f.startsWith(".stratus-warm-" + process.pid)),
  warmModules: Object.keys(require.cache).filter((k) => k.includes(".stratus-warm")),
}) };
module.exports.second = { func: async (req, res) => res.json({ export: "second" }) };
`;

/** A function dir outside the repository (its package.json says "type": "module"). */
function functionDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "stratus-spc-"));
  writeFileSync(join(dir, "index.js"), CODE);
  return dir;
}

const message = (dir: string, exportName: string): string =>
  JSON.stringify({ entry: join(dir, "index.js"), exportName, functionName: exportName, config: { timeout: 10_000, memory: 256, concurrency: 1, maxBodyBytes: 1_000_000, handlerType: "express" }, instanceId: "spc", env: {} });

/**
 * A generic runtime with fd 3 as its channel (or, with `specializeSocket`, listening on that Unix socket
 * path); resolves once it waits for its message.
 */
async function genericRuntime(dir: string, specializeSocket?: string): Promise<{ child: ChildProcess; channel: Socket; socket: string; lines: string[]; until: (needle: string, ms?: number) => Promise<void> }> {
  const socket = join(dir, "s.sock");
  const child = spawn(process.execPath, [runtimePath], {
    env: { PATH: "/usr/bin:/bin", HOME: dir, STRATUS_SOCKET: socket, STRATUS_GENERIC: "1", ...(specializeSocket === undefined ? {} : { STRATUS_SPECIALIZE_SOCKET: specializeSocket }) },
    stdio: ["ignore", "pipe", "pipe", "pipe"], cwd: dir,
  });
  const lines: string[] = [];
  let buf = "";
  child.stdout!.on("data", (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split("\n");
    buf = parts.pop()!;
    lines.push(...parts);
  });
  child.stderr!.on("data", (d: Buffer) => lines.push(`stderr: ${d.toString()}`));
  const until = async (needle: string, ms = 20_000): Promise<void> => {
    const deadline = Date.now() + ms;
    while (!lines.some((l) => l.includes(needle))) {
      if (Date.now() > deadline) throw new Error(`no "${needle}" within ${ms} ms; output:\n${lines.join("\n")}`);
      if (child.exitCode !== null) throw new Error(`the runtime exited (${child.exitCode}); output:\n${lines.join("\n")}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  await until("stratus:generic-ready");
  return { child, channel: child.stdio[3] as Socket, socket, lines, until };
}

type GenericRuntime = Awaited<ReturnType<typeof genericRuntime>>;

/**
 * Runs `body` against a fresh generic runtime in a function dir of its own — with `socketChannel`, listening
 * for its message on `path` (the one-shot socket), else on fd 3 — then stops it and removes the dir.
 */
async function withGenericRuntime(socketChannel: boolean, body: (t: { rt: GenericRuntime; dir: string; path: string }) => Promise<void>): Promise<void> {
  const dir = functionDir();
  const path = join(dir, "specialize.sock");
  const rt = await genericRuntime(dir, socketChannel ? path : undefined);
  try {
    await body({ rt, dir, path });
  } finally {
    await stop(rt.child);
    rmSync(dir, { recursive: true, force: true });
  }
}

function get(socketPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolvePromise, reject) => {
    const req = request({ socketPath, path: "/", headers: { connection: "close" } }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => resolvePromise({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** The instance answers GET / with 200 from the export `name`. */
async function assertServes(rt: GenericRuntime, name: string, why?: string): Promise<void> {
  const r = await get(rt.socket);
  assert.equal(r.status, 200, r.body);
  assert.equal((JSON.parse(r.body) as { export: string }).export, name, why);
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  }
}

test("a newline ends the message: the runtime specialises with the channel still open, closes it, and never reads past the newline", { timeout: 60_000 }, async () => {
  await withGenericRuntime(false, async ({ rt, dir }) => {
    const peerClosed = new Promise<void>((r) => rt.channel.once("end", () => r()));
    rt.channel.resume();
    // The driver's end stays open (no EOF); a second message follows the newline.
    rt.channel.write(`${message(dir, "first")}\n${message(dir, "second")}\n`);
    await rt.until("stratus:ready");
    await peerClosed; // the runtime closed its end of the channel
    const r = await get(rt.socket);
    assert.equal(r.status, 200, r.body);
    const seen = JSON.parse(r.body) as { export: string; warmFiles: string[]; warmModules: string[] };
    assert.equal(seen.export, "first", "only the first message counts");
    // The slot's warm-up (a throwaway module and a throwaway server in /tmp) left nothing behind.
    assert.deepEqual(seen.warmFiles, [], "no warm-up file or socket is left in /tmp");
    assert.deepEqual(seen.warmModules, [], "the warm-up module is gone from require.cache");
  });
});

test("a message without a newline is read to EOF (the Docker driver's attach channel)", { timeout: 60_000 }, async () => {
  await withGenericRuntime(false, async ({ rt, dir }) => {
    rt.channel.end(message(dir, "second"));
    await rt.until("stratus:ready");
    await assertServes(rt, "second");
  });
});

test("the one-shot socket channel: a newline ends the message with the connection still open; the runtime closes it, never reads past the newline, and the path is gone", { timeout: 60_000 }, async () => {
  await withGenericRuntime(true, async ({ rt, dir, path }) => {
    assert.equal(existsSync(path), true, "the runtime listens before it announces the slot");
    const conn = connect(path);
    await new Promise<void>((r, j) => conn.once("connect", () => r()).once("error", j));
    const peerClosed = new Promise<void>((r) => conn.once("end", () => r()));
    conn.resume();
    // The driver's end stays open (no EOF); a second message follows the newline.
    conn.write(`${message(dir, "first")}\n${message(dir, "second")}\n`);
    await rt.until("stratus:ready");
    await peerClosed; // the runtime closed its end of the connection
    conn.destroy();
    assert.equal(existsSync(path), false, "the socket path was removed at the first connection");
    await assertServes(rt, "first", "only the first message counts");
  });
});

test("the one-shot socket channel: a message without a newline is read to EOF", { timeout: 60_000 }, async () => {
  await withGenericRuntime(true, async ({ rt, dir, path }) => {
    const conn = connect(path);
    conn.on("error", () => {});
    conn.end(message(dir, "second"));
    await rt.until("stratus:ready");
    await assertServes(rt, "second");
  });
});

test("the one-shot socket channel, the message written before the mount and its newline after (the Docker driver's begin/commit): nothing happens until the newline", { timeout: 60_000 }, async () => {
  await withGenericRuntime(true, async ({ rt, dir, path }) => {
    const conn = connect(path);
    conn.on("error", () => {});
    await new Promise<void>((r, j) => conn.once("connect", () => r()).once("error", j));
    conn.resume();
    conn.write(message(dir, "second"));
    // The runtime has accepted and read the message (the path is gone at the first connection), but
    // acts only at its newline: no READY, and a request to the instance's socket (where the slot's own
    // server already listens) is held, not answered, however long the mount takes.
    const deadline = Date.now() + 5000;
    while (existsSync(path) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(existsSync(path), false, "the runtime accepted the connection");
    assert.equal(existsSync(rt.socket), true, "the slot's server listens on the instance's socket before its message");
    let answered = false;
    const early = get(rt.socket).finally(() => (answered = true));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(rt.lines.some((l) => l.includes("stratus:ready")), false, "no READY before the newline");
    assert.equal(answered, false, "a request before the newline is held, not answered");
    conn.end("\n");
    await rt.until("stratus:ready");
    const r = await early;
    assert.equal(r.status, 200, r.body);
    assert.equal((JSON.parse(r.body) as { export: string }).export, "second", "the held request reaches the function, once bound");
    await assertServes(rt, "second");
  });
});

test("a ready file (SpecializeMessage.readyFile) holds the READY line; the line on stdout, the driver's fallback, follows a quarter second later, off the first request's path", { timeout: 60_000 }, async () => {
  await withGenericRuntime(true, async ({ rt, dir, path }) => {
    const readyFile = join(dir, "ready");
    const conn = connect(path);
    conn.on("error", () => {});
    conn.end(`${JSON.stringify({ ...JSON.parse(message(dir, "second")), readyFile })}\n`);
    const deadline = Date.now() + 20_000;
    while (!existsSync(readyFile) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    const fileAt = Date.now();
    const line = readFileSync(readyFile, "utf8");
    assert.ok(line.startsWith(`${READY_LINE} `), line);
    assert.equal(typeof (JSON.parse(line.slice(READY_LINE.length + 1)) as { initMs: number }).initMs, "number");
    assert.equal(existsSync(`${readyFile}.part`), false, "written aside and renamed into place");
    // The instance serves at once, before the stdout line.
    const r = await get(rt.socket);
    assert.equal(r.status, 200, r.body);
    await rt.until("stratus:ready");
    assert.ok(Date.now() - fileAt >= 200, `the stdout line came ${Date.now() - fileAt} ms after the file`);
  });
});

test("the slot mount in one helper round trip: read-only on the target; a failed overlay leaves nothing mounted", { timeout: 30_000 }, async () => {
  const root = mkdtempSync("/tmp/stratus-spm-");
  const helper = startMountHelper();
  const source = join(root, "artifact");
  const stage = join(root, "stage");
  const target = join(root, "target");
  try {
    for (const d of [source, stage, target]) mkdirSync(d);
    writeFileSync(join(source, "index.js"), "ok");
    // A move's source must not sit under a shared mount: make the stage's parent private, as slot-mounts does.
    await helper.makePrivate(stage);
    const inner = join(stage, "s");
    mkdirSync(inner);
    await helper.mountViewAt(source, join(root, "view"), inner, target);
    assert.equal(readFileSync(join(target, "index.js"), "utf8"), "ok");
    assert.equal(isMountPoint(target), true);
    assert.equal(isMountPoint(inner), false, "the overlay moved off the stage");
    assert.throws(() => writeFileSync(join(target, "x"), "x"), /EROFS/);
    await helper.unmount(target);
    // A source that does not exist: the overlay fails, the move after it finds nothing to move.
    await assert.rejects(helper.mountViewAt(join(root, "missing"), join(root, "view2"), inner, target), /overlay/);
    assert.equal(isMountPoint(inner), false);
    assert.equal(isMountPoint(target), false);
    // A target that does not exist: the overlay succeeds, the move fails, and the stage is unmounted again.
    await assert.rejects(helper.mountViewAt(source, join(root, "view3"), inner, join(root, "no-target")), /No such file/);
    assert.equal(isMountPoint(inner), false, "the failed move left nothing on the stage");
    // And a good one still works on the same helper afterwards.
    await helper.mountViewAt(source, join(root, "view4"), inner, target);
    assert.equal(readFileSync(join(target, "index.js"), "utf8"), "ok");
    await helper.unmount(target);
  } finally {
    for (const d of [target, join(stage, "s"), stage]) await helper.unmount(d).catch(() => {});
    helper.close();
    rmSync(root, { recursive: true, force: true });
  }
});
