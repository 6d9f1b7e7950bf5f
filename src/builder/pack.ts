/**
 * Packs a project directory into a deterministic tar.gz for upload (the CLI side of a deploy).
 *
 * Honours `.gitignore` and `.stratusignore` at the project root (gitignore syntax, via the `ignore`
 * package; nested .gitignore files are not read) and always leaves out `node_modules/` and `.git/`
 * (dependencies are installed by the build from the lockfile). Deterministic: entries sorted, mtimes,
 * uids and gids zeroed, modes normalised to 0644/0755, so the same tree gives the same bytes.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createGzip } from "node:zlib";
import { lstat, readdir } from "node:fs/promises";
import ignore from "ignore";
import * as tar from "tar-stream";
import { StratusError } from "../shared/errors";

/** Always excluded, whatever the ignore files say. */
export const ALWAYS_IGNORED = ["node_modules/", ".git/"] as const;

/** Files read for ignore rules, at the project root. */
export const IGNORE_FILES = [".gitignore", ".stratusignore"] as const;

export interface PackResult {
  /** The tar.gz bytes. */
  readonly archive: Buffer;
  /** Relative POSIX paths of the files packed, sorted. */
  readonly files: readonly string[];
}

/**
 * Packs `dir` into a tar.gz held in memory (projects are small once node_modules is left out; the
 * server caps uploads at 50 MB by default anyway).
 * @throws StratusError INVALID_ARGUMENT when `dir` is not a directory, or holds a symlink or special
 *   file that is not ignored (the server refuses them; ignore them in .stratusignore).
 */
export async function packProject(dir: string): Promise<PackResult> {
  const st = await lstat(dir).catch(() => null);
  if (st === null || !st.isDirectory()) throw new StratusError("INVALID_ARGUMENT", `${dir} is not a directory`);
  const ig = ignore().add([...ALWAYS_IGNORED]);
  for (const f of IGNORE_FILES) {
    const text = await readFile(join(dir, f), "utf8").catch(() => null);
    if (text !== null) ig.add(text);
  }

  const entries: { path: string; dir: boolean; mode: number }[] = [];
  async function walk(rel: string): Promise<void> {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const s = await lstat(join(dir, r));
      if (s.isDirectory()) {
        if (ig.ignores(`${r}/`)) continue;
        entries.push({ path: r, dir: true, mode: 0o755 });
        await walk(r);
      } else {
        if (ig.ignores(r)) continue;
        if (!s.isFile()) {
          throw new StratusError("INVALID_ARGUMENT", `${r} is a ${s.isSymbolicLink() ? "symlink" : "special file"}; archives may hold only regular files and directories (list it in .stratusignore to leave it out)`);
        }
        entries.push({ path: r, dir: false, mode: (s.mode & 0o111) !== 0 ? 0o755 : 0o644 });
      }
    }
  }
  await walk("");
  entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));

  const pack = tar.pack();
  const gzip = createGzip({ level: 9 });
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    gzip.on("data", (c: Buffer) => chunks.push(c));
    gzip.on("end", resolve);
    gzip.on("error", reject);
    pack.on("error", reject);
  });
  pack.pipe(gzip);
  const fixed = { mtime: new Date(0), uid: 0, gid: 0, uname: "", gname: "" };
  for (const e of entries) {
    if (e.dir) {
      await new Promise<void>((res, rej) => pack.entry({ ...fixed, name: `${e.path}/`, type: "directory", mode: e.mode }, (err) => (err ? rej(err) : res())));
    } else {
      const body = await readFile(join(dir, e.path));
      await new Promise<void>((res, rej) => pack.entry({ ...fixed, name: e.path, type: "file", mode: e.mode, size: body.length }, body, (err) => (err ? rej(err) : res())));
    }
  }
  pack.finalize();
  await done;
  return { archive: Buffer.concat(chunks), files: entries.filter((e) => !e.dir).map((e) => e.path) };
}
