/**
 * Streams an artifact tree as the node protocol's `GET /internal/v1/artifacts/<digest>` body: a gzip tar
 * of regular files and directories only, modes 0644/0755 (the executable bit is part of the tree digest,
 * src/shared/tree-digest.ts), times and owners zeroed. The node unpacks it with the builder's safe
 * unpacker and recomputes the digest, so a corrupted or substituted transfer is refused there.
 */
import { createReadStream } from "node:fs";
import { join } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import * as tar from "tar-stream";
import { listTree } from "../shared/tree-digest";

/** A gzip tar stream of `dir` (entries in sorted order). Errors surface as a stream error. */
export function packTree(dir: string): Readable {
  const pack = tar.pack();
  const out = new PassThrough();
  const fixed = { mtime: new Date(0), uid: 0, gid: 0, uname: "", gname: "" };
  void (async () => {
    for (const e of await listTree(dir)) {
      if (e.kind === "dir") {
        await new Promise<void>((res, rej) => pack.entry({ ...fixed, name: `${e.path}/`, type: "directory", mode: 0o755 }, (err) => (err ? rej(err) : res())));
        continue;
      }
      const sink = pack.entry({ ...fixed, name: e.path, type: "file", mode: e.executable ? 0o755 : 0o644, size: e.size });
      await pipeline(createReadStream(join(dir, e.path)), sink);
    }
    pack.finalize();
  })().catch((err: unknown) => pack.destroy(err as Error));
  pipeline(pack, createGzip({ level: 1 }), out).catch((err: unknown) => out.destroy(err as Error));
  return out;
}
