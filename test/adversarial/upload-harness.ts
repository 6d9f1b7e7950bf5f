// Harness of the malicious-upload cases (SECURITY-CASES.md, section B): a real platform (process driver,
// SQLite, gateway, API on port 0), a canary function holding a secret, a victim function whose previous
// version must keep serving, a sentinel dir outside everything, archives crafted byte by byte, raw
// HTTP over net.Socket, and one check of every invariant after each case.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { deploy, project, startPlatform, type DeployOutcome, type PlatformFixture } from "../helpers/platform-fixture";

/** Secrets the platform holds or can see; none may appear in any response, log line or store file. */
export interface Canaries {
  /** A secret of the canary function (stored encrypted). */
  readonly functionSecret: string;
  /** A variable of the platform's own environment. */
  readonly platformEnv: string;
  /** The content of a host file in the sentinel dir. */
  readonly hostFile: string;
}

export interface UploadHarness {
  readonly fx: PlatformFixture;
  readonly canaries: Canaries;
  /** A dir outside the platform's; it must hold only `host-secret.json` at every check. */
  readonly sentinelDir: string;
  /** Host path of a JSON file whose content is `canaries.hostFile`. */
  readonly hostSecretFile: string;
  /** The victim's active version before any case ran. */
  readonly victimVersion: string;
  deploy(archive: Buffer, query?: string, headers?: Record<string, string>): Promise<DeployOutcome>;
  /** Asserts every invariant; `texts` are the case's responses (bodies, NDJSON). */
  check(label: string, ...texts: unknown[]): Promise<void>;
  close(): Promise<void>;
}

const SENTINEL_FILE = "host-secret.json";

/** Starts the platform and deploys the canary and the victim. `flags` are platform-config flags. */
export async function startUploadHarness(flags: Record<string, unknown> = {}): Promise<UploadHarness> {
  const tag = randomBytes(6).toString("hex");
  const canaries: Canaries = {
    functionSecret: `CANARY-FNSECRET-${tag}`,
    platformEnv: `CANARY-PLATFORMENV-${tag}`,
    hostFile: `CANARY-HOSTFILE-${tag}`,
  };
  process.env.STRATUS_ADVERSARIAL_CANARY = canaries.platformEnv;
  const sentinelDir = await mkdtemp(join(tmpdir(), "stratus-b-sentinel-"));
  const hostSecretFile = join(sentinelDir, SENTINEL_FILE);
  await writeFile(hostSecretFile, JSON.stringify({ secret: canaries.hostFile }));
  const fx = await startPlatform(flags);
  const auth = { authorization: `Bearer ${fx.token}` };

  const canary = await deploy(fx, await project({ "index.js": "module.exports.canary = (req, res) => res.send('alive');\n" }));
  assert.equal(canary.final?.type, "result", JSON.stringify(canary.final));
  const patched = await fetch(`${fx.url}/api/v1/functions/canary/secrets`, {
    method: "PATCH", headers: { ...auth, "content-type": "application/json" },
    body: JSON.stringify({ set: { CANARY_SECRET: canaries.functionSecret }, unset: [] }),
  });
  assert.equal(patched.status, 200, await patched.text());
  const victim = await deploy(fx, await project({ "index.js": "module.exports.victim = (req, res) => res.send('v1');\n" }));
  assert.equal(victim.final?.type, "result", JSON.stringify(victim.final));
  const victimVersion = victim.final!.functions![0]!.version;

  const texts = (t: unknown[]): string[] => t.map((x) => (typeof x === "string" ? x : Buffer.isBuffer(x) ? x.toString("latin1") : (JSON.stringify(x) ?? "")));

  return {
    fx, canaries, sentinelDir, hostSecretFile, victimVersion,
    deploy: (archive, query = "", headers = {}) => deploy(fx, archive, query, headers),
    async check(label, ...caseTexts) {
      // The canary answers, the victim's previous version still serves.
      const c = await fetch(`${fx.url}/fn/canary`);
      assert.equal(`${c.status} ${await c.text()}`, "200 alive", `${label}: the canary must answer`);
      const v = await fetch(`${fx.url}/fn/victim`);
      assert.equal(`${v.status} ${await v.text()}`, "200 v1", `${label}: the victim's previous version must serve`);
      const fn = (await (await fetch(`${fx.url}/api/v1/functions/victim`, { headers: auth })).json()) as { activeVersion?: string };
      assert.equal(fn.activeVersion, victimVersion, `${label}: the victim's active version is unchanged`);
      // Nothing written outside: the sentinel dir is as it was, no "evil" file anywhere we can see.
      assert.deepEqual(readdirSync(sentinelDir), [SENTINEL_FILE], `${label}: the sentinel dir is untouched`);
      for (const p of ["/tmp/evil", "/tmp/evil.txt", "/etc/evil.txt", "/evil", "/evil.txt", join(tmpdir(), "stratus-evil-abs")]) {
        assert.equal(existsSync(p), false, `${label}: ${p} must not exist`);
      }
      assert.deepEqual(findNamed(join(fx.dataDir, ".."), /evil/i, 50_000), [], `${label}: no file named evil* under the platform's root`);
      // Temp dirs of uploads and builds are gone once the answer is complete.
      assert.deepEqual(await readdir(join(fx.dataDir, "tmp")), [], `${label}: no temp dir left behind`);
      // No canary in any response, nor in the store's files (the function secret is encrypted at rest).
      const store = ["stratus.db", "stratus.db-wal"].map((f) => join(fx.dataDir, f)).filter((f) => existsSync(f)).map((f) => readFileSync(f).toString("latin1"));
      for (const [what, text] of [...texts(caseTexts).map((t) => ["response", t] as const), ...store.map((t) => ["store file", t] as const)]) {
        for (const secret of [canaries.functionSecret, canaries.platformEnv, canaries.hostFile, ...(what === "response" ? [fx.token] : [])]) {
          assert.ok(!text.includes(secret), `${label}: a canary secret appears in a ${what}: ${text.slice(0, 200)}`);
        }
      }
    },
    async close() {
      await fx.close();
      await rm(sentinelDir, { recursive: true, force: true });
      delete process.env.STRATUS_ADVERSARIAL_CANARY;
    },
  };
}

/** Paths under `root` whose name matches `re` (bounded walk). */
function findNamed(root: string, re: RegExp, maxEntries: number): string[] {
  const out: string[] = [];
  let seen = 0;
  const walk = (dir: string): void => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (++seen > maxEntries) throw new Error(`findNamed: more than ${maxEntries} entries under ${root}`);
      const p = join(dir, e.name);
      if (re.test(e.name)) out.push(p);
      if (e.isDirectory() && !e.isSymbolicLink()) walk(p);
    }
  };
  walk(root);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Archives, byte by byte.

/** One raw tar member. `size` defaults to the body's length (set it to lie). */
export interface RawEntry {
  readonly name: string;
  readonly body?: Buffer | string;
  /** ustar typeflag: "0" file, "1" hardlink, "2" symlink, "3" char device, "4" block device, "5" dir, "6" fifo, "x" pax. */
  readonly type?: "0" | "1" | "2" | "3" | "4" | "5" | "6" | "x";
  readonly mode?: number;
  readonly size?: number;
  readonly linkname?: string;
}

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, "0")}\0`;
}

/** A 512-byte ustar header, checksum computed as POSIX says (the field counted as 8 spaces). */
export function ustarHeader(e: RawEntry): Buffer {
  const h = Buffer.alloc(512, 0);
  const body = typeof e.body === "string" ? Buffer.from(e.body) : (e.body ?? Buffer.alloc(0));
  const name = Buffer.from(e.name);
  if (name.length > 100) throw new Error(`ustarHeader: name over 100 bytes (${name.length}); use a pax header`);
  name.copy(h, 0);
  h.write(octal(e.mode ?? (e.type === "5" ? 0o755 : 0o644), 8), 100, "latin1");
  h.write(octal(0, 8), 108, "latin1");
  h.write(octal(0, 8), 116, "latin1");
  h.write(octal(e.size ?? (e.type === undefined || e.type === "0" || e.type === "x" ? body.length : 0), 12), 124, "latin1");
  h.write(octal(0, 12), 136, "latin1");
  h.write("        ", 148, "latin1");
  h.write(e.type ?? "0", 156, "latin1");
  if (e.linkname) Buffer.from(e.linkname).copy(h, 157);
  h.write("ustar\u000000", 257, "latin1");
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  return h;
}

/** A pax extended header (type "x") carrying a long path for the next member. */
export function paxPath(path: string): Buffer {
  const record = (len: number) => `${len} path=${path}\n`;
  let len = Buffer.byteLength(record(0));
  while (Buffer.byteLength(record(len)) !== len) len = Buffer.byteLength(record(len));
  const body = Buffer.from(record(len));
  return Buffer.concat([ustarHeader({ name: "PaxHeader", type: "x", size: body.length }), pad(body)]);
}

function pad(b: Buffer): Buffer {
  const rest = b.length % 512;
  return rest === 0 ? b : Buffer.concat([b, Buffer.alloc(512 - rest)]);
}

/** The tar bytes of `entries` (+ the two zero end blocks), not compressed. */
export function rawTar(entries: readonly (RawEntry | Buffer)[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (Buffer.isBuffer(e)) { parts.push(e); continue; }
    const body = typeof e.body === "string" ? Buffer.from(e.body) : (e.body ?? Buffer.alloc(0));
    parts.push(ustarHeader(e), pad(body));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** `rawTar` gzip'd. */
export function rawTarGz(entries: readonly (RawEntry | Buffer)[]): Buffer {
  return gzipSync(rawTar(entries));
}

// ---------------------------------------------------------------------------------------------------
// Raw HTTP.

/** What a raw request got back; `status` 0 when the connection closed without a status line. */
export interface RawAnswer {
  readonly status: number;
  readonly text: string;
  readonly ms: number;
}

/**
 * Sends `head` (request line + headers, CRLF-terminated, blank line included) and then `body` over a
 * fresh TCP connection, and reads until the server closes or `timeoutMs` (then status -1: no answer).
 */
export function rawRequest(url: string, head: string, body: Buffer | null, timeoutMs: number): Promise<RawAnswer> {
  const u = new URL(url);
  const started = performance.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const sock = connect(Number(u.port), u.hostname);
    let done = false;
    const finish = (status?: number) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      const text = Buffer.concat(chunks).toString("latin1");
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ status: status ?? (m ? Number(m[1]) : 0), text, ms: performance.now() - started });
    };
    const timer = setTimeout(() => finish(-1), timeoutMs);
    sock.on("connect", () => {
      sock.write(head);
      if (body !== null) sock.write(body);
    });
    sock.on("data", (c: Buffer) => {
      chunks.push(c);
      // A complete answer with Content-Length: stop reading (keep-alive would hold the socket).
      const text = Buffer.concat(chunks).toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      const len = /\r\ncontent-length: (\d+)/i.exec(text.slice(0, end));
      if (end !== -1 && len && text.length - end - 4 >= Number(len[1])) finish();
    });
    sock.on("error", () => finish());
    sock.on("close", () => finish());
  });
}

/** The head of a deploy POST (Content-Length given, or chunked when `length` is null). */
export function deployHead(fx: Pick<PlatformFixture, "url" | "token">, length: number | null): string {
  const u = new URL(fx.url);
  return [
    "POST /api/v1/deployments HTTP/1.1",
    `Host: ${u.host}`,
    `Authorization: Bearer ${fx.token}`,
    "Content-Type: application/gzip",
    length === null ? "Transfer-Encoding: chunked" : `Content-Length: ${length}`,
    "Connection: close",
    "", "",
  ].join("\r\n");
}

/** `data` as one HTTP chunk (no terminator). */
export function chunk(data: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from("\r\n")]);
}
