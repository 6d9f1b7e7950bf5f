/**
 * Safe unpacking of an uploaded project archive (tar.gz) into a fresh temporary directory.
 *
 * Threat model: the archive is hostile. Only regular files and directories are written; absolute
 * paths, `..` components, backslashes, drive letters, NUL bytes, symlinks, hardlinks, devices, fifos
 * and any other entry type are refused, as are duplicate paths and paths equal after Unicode
 * normalisation or case folding. Because no link is ever created and every file is opened with
 * O_EXCL inside the fresh directory, nothing can be written outside it. Three caps bound the work:
 * compressed bytes, unpacked bytes (checked against each header *before* its body is read, and the
 * decompressed stream is counted too, so a gzip bomb is stopped early) and entry count.
 * On any violation the fresh directory is removed and a StratusError names the entry:
 * INVALID_ARCHIVE (400) or ARCHIVE_TOO_LARGE (413). A failure of the host itself while writing
 * (disk full, quota, I/O error) is BUILD_STORAGE_ERROR (507), never blamed on the archive.
 */
import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import * as tar from "tar-stream";
import { StratusError } from "./errors";

const MiB = 1024 * 1024;

/** Caps of one archive. */
export interface ArchiveLimits {
  /** Largest upload, bytes. Default 50 MiB. */
  readonly maxCompressedBytes: number;
  /** Largest sum of file sizes once unpacked, bytes. Default 200 MiB. */
  readonly maxUnpackedBytes: number;
  /** Most entries (files + directories). Default 10,000. */
  readonly maxEntries: number;
}

export const DEFAULT_ARCHIVE_LIMITS: Readonly<ArchiveLimits> = Object.freeze({
  maxCompressedBytes: 50 * MiB,
  maxUnpackedBytes: 200 * MiB,
  maxEntries: 10_000,
});

/** Longest relative path accepted, characters (Linux PATH_MAX is 4096; real projects stay far below). */
export const MAX_PATH_CHARS = 1024;

export interface UnpackResult {
  /** The fresh directory holding the tree; the caller owns it and removes it. */
  readonly dir: string;
  readonly fileCount: number;
  readonly unpackedBytes: number;
}

export interface UnpackOptions {
  /** Caps; missing fields take the defaults. */
  readonly limits?: Partial<ArchiveLimits>;
  /** Where the fresh directory is created (default os.tmpdir()). */
  readonly parentDir?: string;
}

/**
 * Normalises an entry path: strips leading `./` and trailing `/`, collapses empty components.
 * @throws StratusError INVALID_ARCHIVE for absolute paths, `..`, NUL, or over-long paths.
 */
export function normalizeEntryPath(name: string): string {
  const shown = JSON.stringify(name.slice(0, 200));
  if (name.includes("\u0000")) throw new StratusError("INVALID_ARCHIVE", `Entry ${shown} has a NUL byte in its path`);
  if (name.startsWith("/")) throw new StratusError("INVALID_ARCHIVE", `Entry ${shown} has an absolute path`);
  // Windows-made paths: a backslash is a separator there (`..\\evil`), a drive letter makes it absolute.
  if (name.includes("\\")) throw new StratusError("INVALID_ARCHIVE", `Entry ${shown} has a backslash in its path; use "/" as the separator`);
  if (/^[A-Za-z]:/.test(name)) throw new StratusError("INVALID_ARCHIVE", `Entry ${shown} has a drive letter`);
  const parts: string[] = [];
  for (const part of name.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") throw new StratusError("INVALID_ARCHIVE", `Entry ${shown} has a ".." component`);
    parts.push(part);
  }
  const path = parts.join("/");
  if (path.length > MAX_PATH_CHARS) throw new StratusError("INVALID_ARCHIVE", `Entry ${shown} has a path longer than ${MAX_PATH_CHARS} characters`);
  return path;
}

/** A path's collision key: NFC, then full case folding (upper then lower maps "ß" to "ss"). */
export function foldName(path: string): string {
  return path.normalize("NFC").toUpperCase().toLowerCase();
}

/** Counts bytes flowing through and fails once past `max`. */
function byteCap(max: number, onExceed: () => StratusError): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > max) cb(onExceed());
      else cb(null, chunk);
    },
  });
}

/** errno codes that mean the host could not store the upload: the platform's failure, not the client's. */
const STORAGE_CODES = new Set(["ENOSPC", "EDQUOT", "EIO", "EROFS", "EFBIG", "EMFILE", "ENFILE"]);

/** True when `err` is a write failure of the host's storage (disk full, quota, I/O error). */
export function isStorageError(err: unknown): boolean {
  return STORAGE_CODES.has((err as { code?: string } | undefined)?.code ?? "");
}

function asError(err: unknown): StratusError {
  if (err instanceof StratusError) return err;
  const cause = err as { code?: string; message?: string } | undefined;
  if (isStorageError(err)) {
    return new StratusError("BUILD_STORAGE_ERROR", `The build host could not store the upload (${cause?.code})`, { cause: err });
  }
  if (cause?.code === "ERR_STREAM_PREMATURE_CLOSE" || cause?.code === "ECONNRESET") {
    return new StratusError("INVALID_ARCHIVE", "The archive ended unexpectedly", { cause: err });
  }
  if (cause?.code === "Z_DATA_ERROR" || cause?.code === "Z_BUF_ERROR") {
    return new StratusError("INVALID_ARCHIVE", `The archive is not a valid gzip stream (${cause.message ?? cause.code})`, { cause: err });
  }
  if (/tar|header|unexpected end/i.test(cause?.message ?? "")) {
    return new StratusError("INVALID_ARCHIVE", `The archive is not a valid tar: ${cause?.message}`, { cause: err });
  }
  if (cause?.code === "EEXIST" || cause?.code === "ENOTDIR" || cause?.code === "EISDIR") {
    return new StratusError("INVALID_ARCHIVE", `The archive has conflicting entries (${cause.message})`, { cause: err });
  }
  return new StratusError("INTERNAL", "Unpacking the archive failed", { cause: err });
}

/**
 * Unpacks a tar.gz (Buffer or stream) into a fresh directory.
 *
 * Every way out settles: a failure on the feeding side (bad gzip, a truncated stream, a cap, the
 * client going away) destroys the entry being written, so the loop below never waits on a body that
 * will not come; the fresh directory is removed before the error is thrown. The input stream itself
 * is never destroyed (an HTTP request must stay answerable): it is unpiped and drained.
 * @throws StratusError INVALID_ARCHIVE | ARCHIVE_TOO_LARGE (the client's archive),
 *   BUILD_STORAGE_ERROR (the host could not write: disk full, quota, I/O error), INTERNAL.
 */
export async function unpackArchive(source: Buffer | Readable, options: UnpackOptions = {}): Promise<UnpackResult> {
  const limits: ArchiveLimits = { ...DEFAULT_ARCHIVE_LIMITS, ...options.limits };
  const input = Buffer.isBuffer(source) ? Readable.from([source]) : source;
  const drain = () => {
    // Unread request bytes are discarded (the HTTP server bounds how long a client may keep sending).
    input.unpipe();
    input.on("error", () => {});
    input.resume();
  };
  if (Buffer.isBuffer(source) && source.length > limits.maxCompressedBytes) {
    throw new StratusError("ARCHIVE_TOO_LARGE", `The archive is ${source.length} bytes; the limit is ${limits.maxCompressedBytes} bytes compressed`);
  }
  let dir: string;
  try {
    dir = await mkdtemp(join(options.parentDir ?? tmpdir(), "stratus-src-"));
  } catch (err) {
    drain();
    throw asError(err);
  }
  // The tar stream itself is larger than the files it holds: 512-byte headers (more for pax/long
  // names) and padding per entry, plus the end blocks. Allow for that, no more.
  const maxTarBytes = limits.maxUnpackedBytes + (limits.maxEntries + 1) * 3 * 512 + 10_240;
  const extract = tar.extract();
  let failure: StratusError | null = null;
  /** The entry whose body is being written, if any: destroyed when the feeding side fails. */
  let current: Readable | null = null;
  const fail = (err: unknown) => {
    failure ??= asError(err);
    current?.destroy(failure);
    extract.destroy(failure);
  };
  const first = byteCap(limits.maxCompressedBytes, () => new StratusError("ARCHIVE_TOO_LARGE", `The archive exceeds ${limits.maxCompressedBytes} bytes compressed`));
  const onInputError = (err: Error) => first.destroy(err);
  const onInputClose = () => {
    if (!input.readableEnded) first.destroy(Object.assign(new Error("the upload ended before its end"), { code: "ERR_STREAM_PREMATURE_CLOSE" }));
  };
  input.on("error", onInputError);
  input.on("close", onInputClose);
  input.pipe(first);
  const feeding = pipeline(
    first,
    createGunzip(),
    byteCap(maxTarBytes, () => new StratusError("ARCHIVE_TOO_LARGE", `The archive unpacks to more than ${limits.maxUnpackedBytes} bytes (decompression stopped early)`)),
    extract as unknown as NodeJS.WritableStream,
  ).catch(fail);

  let entries = 0;
  let unpackedBytes = 0;
  let fileCount = 0;
  const seen = new Set<string>();
  const foldedSeen = new Map<string, string>();
  try {
    for await (const entry of extract) {
      const h = entry.header;
      const shown = JSON.stringify(h.name.slice(0, 200));
      entries++;
      if (entries > limits.maxEntries) throw new StratusError("ARCHIVE_TOO_LARGE", `The archive has more than ${limits.maxEntries} entries (at ${shown})`);
      const path = normalizeEntryPath(h.name);
      if (h.type !== "file" && h.type !== "directory") {
        const what = h.type === "symlink" ? "a symlink" : h.type === "link" ? "a hardlink" : `of type ${h.type}`;
        throw new StratusError("INVALID_ARCHIVE", `Entry ${shown} is ${what}; only regular files and directories are allowed`);
      }
      if (path === "") {
        if (h.type === "directory") { entry.resume(); continue; }
        throw new StratusError("INVALID_ARCHIVE", `Entry ${shown} has an empty path`);
      }
      if (seen.has(path)) throw new StratusError("INVALID_ARCHIVE", `Entry ${shown} appears twice`);
      seen.add(path);
      // Names equal after Unicode normalisation or case folding (NFC/NFD, "ß"/"ss", "A"/"a") are one
      // file on some filesystems and two here: refuse the ambiguity rather than pick one.
      // Every prefix counts: "src/a.js" and "SRC/b.js" put two folders where one filesystem sees one.
      const parts = path.split("/");
      for (let i = 1; i <= parts.length; i++) {
        const prefix = parts.slice(0, i).join("/");
        const folded = foldName(prefix);
        const other = foldedSeen.get(folded);
        if (other !== undefined && other !== prefix) {
          throw new StratusError("INVALID_ARCHIVE", `Entries ${JSON.stringify(other.slice(0, 200))} and ${JSON.stringify(prefix.slice(0, 200))} collide (equal after Unicode normalisation or case folding)`);
        }
        foldedSeen.set(folded, prefix);
      }
      const target = join(dir, path);
      const parent = path.includes("/") ? join(dir, path.slice(0, path.lastIndexOf("/"))) : dir;
      if (h.type === "directory") {
        await mkdir(target, { recursive: true, mode: 0o755 });
        entry.resume();
        continue;
      }
      unpackedBytes += h.size;
      if (unpackedBytes > limits.maxUnpackedBytes) {
        throw new StratusError("ARCHIVE_TOO_LARGE", `The archive unpacks to more than ${limits.maxUnpackedBytes} bytes (at ${shown}, ${h.size} bytes)`);
      }
      await mkdir(parent, { recursive: true, mode: 0o755 });
      current = entry as unknown as Readable;
      if (failure !== null) throw failure;
      // wx: O_CREAT|O_EXCL never follows or overwrites anything already there.
      await pipeline(entry as unknown as NodeJS.ReadableStream, createWriteStream(target, { flags: "wx", mode: (h.mode & 0o111) !== 0 ? 0o755 : 0o644 }));
      current = null;
      fileCount++;
    }
    await feeding;
    if (failure !== null) throw failure;
    if (entries === 0) throw new StratusError("INVALID_ARCHIVE", "The archive is empty");
    return { dir, fileCount, unpackedBytes };
  } catch (err) {
    // Our own verdict on an entry, or the host's storage failing, wins; otherwise the feeding side's
    // (caps, bad gzip, truncation) is the real cause.
    const fsCode = (err as { code?: string } | undefined)?.code ?? "";
    const own = err instanceof StratusError ? err
      : isStorageError(err) || ["EEXIST", "ENOTDIR", "EISDIR"].includes(fsCode) ? asError(err) : null;
    const verdict = own ?? failure ?? asError(err);
    current?.destroy();
    extract.destroy();
    first.destroy();
    await feeding;
    drain();
    await rm(dir, { recursive: true, force: true }).catch(() => {});
    throw verdict;
  } finally {
    input.off("error", onInputError);
    input.off("close", onInputClose);
  }
}
