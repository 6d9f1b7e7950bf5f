// Packing is deterministic and honours ignore files; unpacking refuses hostile archives built here,
// with the right code, and leaves nothing behind (neither the fresh dir nor anything outside it).
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile, chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { gzipSync } from "node:zlib";
import * as tar from "tar-stream";
import { unpackArchive, normalizeEntryPath } from "../src/shared/archive";
import { packProject } from "../src/builder/pack";
import { makeTarGz, type TarEntry } from "./helpers/make-tar-gz";

async function sandboxDir(t: { after: (fn: () => Promise<void>) => void }): Promise<{ root: string; parent: string }> {
  const root = await mkdtemp(join(tmpdir(), "stratus-archive-test-"));
  t.after(() => rm(root, { recursive: true, force: true }));
  // Unpacking happens in root/a/b so that "../x" and "../../x" would land inside root where we can look.
  const parent = join(root, "a", "b");
  await mkdir(parent, { recursive: true });
  return { root, parent };
}

async function listAll(dir: string): Promise<string[]> {
  return ((await readdir(dir, { recursive: true })) as string[]).sort();
}

const hostile: { title: string; entries: TarEntry[]; code: string; mention: RegExp }[] = [
  { title: "absolute path", entries: [{ name: "/tmp/stratus-evil-abs" }], code: "INVALID_ARCHIVE", mention: /absolute.*|stratus-evil-abs/ },
  { title: "dot-dot component", entries: [{ name: "ok.txt" }, { name: "../../evil.txt" }], code: "INVALID_ARCHIVE", mention: /evil\.txt.*"\.\."/ },
  { title: "dot-dot inside", entries: [{ name: "src/../../evil.txt" }], code: "INVALID_ARCHIVE", mention: /evil/ },
  { title: "symlink", entries: [{ name: "link", type: "symlink", linkname: "/etc/passwd" }], code: "INVALID_ARCHIVE", mention: /"link" is a symlink/ },
  { title: "symlink then write through it", entries: [{ name: "d", type: "symlink", linkname: ".." }, { name: "d/evil.txt" }], code: "INVALID_ARCHIVE", mention: /symlink/ },
  { title: "hardlink", entries: [{ name: "h", type: "link", linkname: "/etc/passwd" }], code: "INVALID_ARCHIVE", mention: /"h" is a hardlink/ },
  { title: "character device", entries: [{ name: "null", type: "character-device" }], code: "INVALID_ARCHIVE", mention: /character-device/ },
  { title: "block device", entries: [{ name: "sda", type: "block-device" }], code: "INVALID_ARCHIVE", mention: /block-device/ },
  { title: "fifo", entries: [{ name: "pipe", type: "fifo" }], code: "INVALID_ARCHIVE", mention: /fifo/ },
  { title: "duplicate entry", entries: [{ name: "a.js" }, { name: "./a.js" }], code: "INVALID_ARCHIVE", mention: /twice/ },
  { title: "file under a file", entries: [{ name: "a" }, { name: "a/b" }], code: "INVALID_ARCHIVE", mention: /conflicting/ },
  { title: "backslash path", entries: [{ name: "..\\..\\evil.txt" }], code: "INVALID_ARCHIVE", mention: /backslash/ },
  { title: "drive letter", entries: [{ name: "C:..\\evil.txt" }], code: "INVALID_ARCHIVE", mention: /backslash|drive letter/ },
  { title: "drive letter, forward slashes", entries: [{ name: "C:/evil.txt" }], code: "INVALID_ARCHIVE", mention: /drive letter/ },
  { title: "case collision", entries: [{ name: "Index.js" }, { name: "index.js" }], code: "INVALID_ARCHIVE", mention: /collide/ },
  { title: "ß / ss collision", entries: [{ name: "straße.txt" }, { name: "strasse.txt" }], code: "INVALID_ARCHIVE", mention: /collide/ },
  { title: "NFC / NFD collision", entries: [{ name: "caf\u00e9.txt" }, { name: "cafe\u0301.txt" }], code: "INVALID_ARCHIVE", mention: /collide/ },
  { title: "folder case collision", entries: [{ name: "src/a.js" }, { name: "SRC/b.js" }], code: "INVALID_ARCHIVE", mention: /"src".*"SRC"|collide/ },
];

for (const h of hostile) {
  test(`unpack refuses: ${h.title}`, async (t) => {
    const { root, parent } = await sandboxDir(t);
    const archive = await makeTarGz(h.entries);
    await assert.rejects(unpackArchive(archive, { parentDir: parent }), (err: { code?: string; message?: string }) => {
      assert.equal(err.code, h.code);
      assert.match(err.message ?? "", h.mention);
      return true;
    });
    assert.deepEqual(await listAll(root), ["a", "a/b"], "nothing may be left behind or written outside");
  });
}

test("unpack refuses garbage, truncated and empty archives", async (t) => {
  const { parent } = await sandboxDir(t);
  const good = await makeTarGz([{ name: "index.js", body: "x".repeat(5000) }]);
  for (const bad of [Buffer.from("not gzip at all"), good.subarray(0, good.length - 30), gzipSync(Buffer.from("not a tar header".repeat(64))), await makeTarGz([])]) {
    await assert.rejects(unpackArchive(bad, { parentDir: parent }), { code: "INVALID_ARCHIVE" });
  }
  assert.deepEqual(await readdir(parent), []);
});

test("unpack caps: compressed size, unpacked size, entry count", async (t) => {
  const { parent } = await sandboxDir(t);
  const archive = await makeTarGz([{ name: "a.txt", body: "a".repeat(4000) }, { name: "b.txt", body: "b".repeat(4000) }]);
  await assert.rejects(unpackArchive(archive, { parentDir: parent, limits: { maxCompressedBytes: archive.length - 1 } }), { code: "ARCHIVE_TOO_LARGE" });
  // The same cap holds for a streamed upload, whose size is unknown up front.
  await assert.rejects(unpackArchive(Readable.from([archive.subarray(0, 50), archive.subarray(50)]), { parentDir: parent, limits: { maxCompressedBytes: 60 } }), { code: "ARCHIVE_TOO_LARGE" });
  await assert.rejects(unpackArchive(archive, { parentDir: parent, limits: { maxUnpackedBytes: 6000 } }), (err: { code?: string; message?: string }) => {
    assert.equal(err.code, "ARCHIVE_TOO_LARGE");
    assert.match(err.message ?? "", /b\.txt/);
    return true;
  });
  const many = await makeTarGz(Array.from({ length: 11 }, (_, i) => ({ name: `f${i}.js` })));
  await assert.rejects(unpackArchive(many, { parentDir: parent, limits: { maxEntries: 10 } }), { code: "ARCHIVE_TOO_LARGE" });
  assert.deepEqual(await readdir(parent), []);
  const ok = await unpackArchive(archive, { parentDir: parent, limits: { maxUnpackedBytes: 8000, maxEntries: 2 } });
  assert.equal(ok.fileCount, 2);
  assert.equal(ok.unpackedBytes, 8000);
});

test("unpack stops a gzip bomb early", async (t) => {
  const { parent } = await sandboxDir(t);
  // 64 MiB of zeros gzips to ~64 KiB. Two shapes: raw zeros (no tar at all), and one tar entry whose
  // header is honest about its huge size.
  const zeros = Buffer.alloc(64 * 1024 * 1024);
  const raw = gzipSync(zeros, { level: 1 });
  assert.ok(raw.length < 1024 * 1024);
  const started = performance.now();
  await assert.rejects(unpackArchive(raw, { parentDir: parent, limits: { maxUnpackedBytes: 1024 * 1024, maxEntries: 10 } }), { code: "ARCHIVE_TOO_LARGE" });
  const pack = tar.pack();
  const hdrChunks: Buffer[] = [];
  pack.on("data", (c: unknown) => hdrChunks.push(c as Buffer));
  pack.entry({ name: "big.bin", size: 32 * 1024 * 1024, type: "file", mode: 0o644 }).end(Buffer.alloc(32 * 1024 * 1024));
  pack.finalize();
  await new Promise<void>((r) => pack.on("end", () => r()));
  const bomb = gzipSync(Buffer.concat(hdrChunks), { level: 1 });
  await assert.rejects(unpackArchive(bomb, { parentDir: parent, limits: { maxUnpackedBytes: 1024 * 1024 } }), (err: { code?: string; message?: string }) => {
    assert.equal(err.code, "ARCHIVE_TOO_LARGE");
    assert.match(err.message ?? "", /big\.bin/);
    return true;
  });
  assert.ok(performance.now() - started < 5000, "the bombs must be refused quickly");
  assert.deepEqual(await readdir(parent), []);
});

/** A stream fed like an HTTP request body: 16 KiB chunks, a turn of the event loop between them. */
function slowStream(bytes: Buffer): Readable {
  const src = new PassThrough();
  void (async () => {
    for (let o = 0; o < bytes.length; o += 16_384) {
      if (!src.write(bytes.subarray(o, o + 16_384))) await new Promise((r) => src.once("drain", r));
      await new Promise((r) => setImmediate(r));
    }
    src.end();
  })().catch(() => {});
  return src;
}

/** Rejects when `p` has not settled within `ms` (the hang this guards against never settled at all). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, rej) => { timer = setTimeout(() => rej(new Error(`${what}: no answer within ${ms} ms`)), ms); })]).finally(() => clearTimeout(timer));
}

test("a truncated archive, cut at any point (also mid-entry, streamed), is refused at once and leaves nothing", async (t) => {
  const { parent } = await sandboxDir(t);
  // Incompressible body: the cut points fall inside its entry while it is being written to disk
  // (this used to hang forever: the entry's body stream never ended, its fd stayed open).
  const body = randomBytes(300_000).toString("base64");
  const gz = await makeTarGz([{ name: "a.txt", body: "hello" }, { name: "big.txt", body }, { name: "c.txt", body: "c" }]);
  const fdsBefore = (await readdir("/proc/self/fd")).length;
  for (let i = 1; i < 40; i++) {
    const cut = gz.subarray(0, Math.floor((gz.length * i) / 40));
    // Made lazily: a stream started early would be fully buffered before it is read.
    for (const source of [() => cut, () => slowStream(cut)]) {
      await within(assert.rejects(unpackArchive(source(), { parentDir: parent }), (err: { code?: string; status?: number }) => {
        assert.equal(err.code, "INVALID_ARCHIVE", `cut at ${i}/40`);
        assert.equal(err.status, 400);
        return true;
      }), 5000, `cut at ${i}/40`);
    }
  }
  assert.deepEqual(await readdir(parent), [], "every temp dir removed");
  // A few fds may come and go (the event loop, zlib); leaking one per case would show as ~78.
  assert.ok((await readdir("/proc/self/fd")).length <= fdsBefore + 4, "no file descriptor leaked");
});

test("a full disk while unpacking is the host's failure: 507 BUILD_STORAGE_ERROR, not INVALID_ARCHIVE", async (t) => {
  assert.equal(process.getuid?.(), 0, "this test mounts a tmpfs: run it as root");
  const { root } = await sandboxDir(t);
  const small = join(root, "small");
  await mkdir(small);
  // A 256 KiB tmpfs stands for a full data disk; a 1 MiB upload cannot fit.
  const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=256k,nr_inodes=64", "stratus-test-full", small], { encoding: "utf8" });
  assert.equal(m.status, 0, `mount tmpfs: ${m.stderr}`);
  // Unmounted before the temp dir is removed (after-hooks run in the order they were added).
  try {
    const archive = await makeTarGz([{ name: "index.js", body: "module.exports.a = () => 1;\n" }, { name: "big.bin", body: randomBytes(768 * 1024).toString("base64") }]);
    for (const source of [() => archive, () => slowStream(archive)]) {
      await within(assert.rejects(unpackArchive(source(), { parentDir: small }), (err: { code?: string; status?: number; message?: string }) => {
        assert.equal(err.code, "BUILD_STORAGE_ERROR", err.message);
        assert.equal(err.status, 507);
        assert.match(err.message ?? "", /ENOSPC/);
        return true;
      }), 10_000, "disk full");
      assert.deepEqual(await readdir(small), [], "the partial tree is removed");
    }
    // Out of inodes is a full disk too.
    const many = await makeTarGz(Array.from({ length: 100 }, (_, i) => ({ name: `f${i}.txt`, body: "x" })));
    await assert.rejects(unpackArchive(many, { parentDir: small }), { code: "BUILD_STORAGE_ERROR" });
    assert.deepEqual(await readdir(small), []);
  } finally {
    spawnSync("umount", ["-l", small]);
  }
});

test("normalizeEntryPath", () => {
  assert.equal(normalizeEntryPath("./src//a.js"), "src/a.js");
  assert.equal(normalizeEntryPath("dir/"), "dir");
  for (const bad of ["/etc/passwd", "a/../b", "..", "a\u0000b", "x".repeat(2000)]) {
    assert.throws(() => normalizeEntryPath(bad), { code: "INVALID_ARCHIVE" });
  }
});

test("pack honours ignore files, is deterministic, and round-trips through unpack", async (t) => {
  const { root } = await sandboxDir(t);
  const proj = join(root, "proj");
  await mkdir(join(proj, "node_modules", "dep"), { recursive: true });
  await mkdir(join(proj, ".git"), { recursive: true });
  await mkdir(join(proj, "src"), { recursive: true });
  await mkdir(join(proj, "build"), { recursive: true });
  await writeFile(join(proj, "node_modules", "dep", "index.js"), "dep");
  await writeFile(join(proj, ".git", "HEAD"), "ref");
  await writeFile(join(proj, ".gitignore"), "build/\n*.log\n");
  await writeFile(join(proj, ".stratusignore"), "secret.txt\n");
  await writeFile(join(proj, "secret.txt"), "no");
  await writeFile(join(proj, "debug.log"), "no");
  await writeFile(join(proj, "build", "out.js"), "no");
  await writeFile(join(proj, "index.js"), "module.exports = {}");
  await writeFile(join(proj, "src", "run.sh"), "#!/bin/sh");
  await chmod(join(proj, "src", "run.sh"), 0o755);

  const a = await packProject(proj);
  assert.deepEqual(a.files, [".gitignore", ".stratusignore", "index.js", "src/run.sh"]);
  // Same tree, other mtimes: same bytes.
  await writeFile(join(proj, "index.js"), "module.exports = {}");
  const b = await packProject(proj);
  assert.ok(a.archive.equals(b.archive), "packing must be deterministic");

  const out = await unpackArchive(a.archive, { parentDir: root });
  t.after(() => rm(out.dir, { recursive: true, force: true }));
  assert.equal(await readFile(join(out.dir, "index.js"), "utf8"), "module.exports = {}");
  assert.equal((await stat(join(out.dir, "src", "run.sh"))).mode & 0o777, 0o755);
  assert.equal((await stat(join(out.dir, "index.js"))).mode & 0o777, 0o644);

  await symlink("/etc/passwd", join(proj, "link"));
  await assert.rejects(packProject(proj), (err: { code?: string; message?: string }) => err.code === "INVALID_ARGUMENT" && /link is a symlink/.test(err.message ?? ""));
  await writeFile(join(proj, ".stratusignore"), "secret.txt\nlink\n");
  assert.ok(!(await packProject(proj)).files.includes("link"));
});
