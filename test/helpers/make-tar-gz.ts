// Builds tar.gz archives entry by entry with headers exactly as given (no sanitising), for tests of
// hostile uploads.
import { createGzip } from "node:zlib";
import * as tar from "tar-stream";

/** One archive entry. */
export type TarEntry = {
  name: string;
  type?: "file" | "directory" | "symlink" | "link" | "character-device" | "block-device" | "fifo";
  body?: string;
  linkname?: string;
};

/** The gzip'd tar of `entries`, in order. */
export async function makeTarGz(entries: readonly TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const gz = createGzip();
  const done = new Promise<void>((res, rej) => {
    gz.on("data", (c: Buffer) => chunks.push(c));
    gz.on("end", res);
    gz.on("error", rej);
  });
  pack.pipe(gz);
  for (const e of entries) {
    const type = e.type ?? "file";
    if (type === "file") pack.entry({ name: e.name, type, mode: 0o644 }, e.body ?? "x");
    else pack.entry({ name: e.name, type, mode: 0o755, linkname: e.linkname ?? "", devmajor: 1, devminor: 3 });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}
