/**
 * Content digest of a directory tree: `sha256-<hex>` over the sorted list of entries, each entry
 * contributing its kind, its relative POSIX path, whether it is executable, and (files) the sha256 of
 * its bytes. Times, owners and the order the filesystem lists entries in do not count, so the same
 * tree always gives the same digest. Symlinks and other special files are refused (unpacked archives
 * never contain them).
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import { StratusError } from "./errors";

/** Every entry under `root` (relative POSIX paths, directories included), sorted by code unit. */
export async function listTree(root: string): Promise<{ path: string; kind: "file" | "dir"; executable: boolean; size: number }[]> {
  const out: { path: string; kind: "file" | "dir"; executable: boolean; size: number }[] = [];
  async function walk(rel: string): Promise<void> {
    const names = (await readdir(join(root, rel))).sort();
    for (const name of names) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const st = await lstat(join(root, r));
      if (st.isDirectory()) {
        out.push({ path: r, kind: "dir", executable: false, size: 0 });
        await walk(r);
      } else if (st.isFile()) {
        out.push({ path: r, kind: "file", executable: (st.mode & 0o111) !== 0, size: st.size });
      } else {
        throw new StratusError("INTERNAL", `Unexpected special file ${r} in a build tree`);
      }
    }
  }
  await walk("");
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

async function hashFile(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/**
 * The digest of the tree under `root`, as `sha256-<64 hex>`.
 * @param exclude relative paths left out (e.g. a manifest that records the digest itself).
 */
export async function digestTree(root: string, exclude: readonly string[] = []): Promise<string> {
  const h = createHash("sha256");
  h.update("stratus-tree-v1\n");
  for (const e of await listTree(root)) {
    if (exclude.includes(e.path)) continue;
    // JSON-encoding each record keeps paths with newlines or spaces unambiguous.
    const fileHash = e.kind === "file" ? await hashFile(join(root, e.path)) : "";
    h.update(JSON.stringify([e.kind, e.path, e.executable, fileHash]) + "\n");
  }
  return `sha256-${h.digest("hex")}`;
}
