/**
 * The node's artifact cache: `<nodeDataDir>/artifacts/sha256-<hex>/`, filled by digest from the control
 * plane (GET /internal/v1/artifacts/<digest>), never by a host path. A fetched tree is unpacked with the
 * builder's safe unpacker into a temp dir of the same filesystem, its tree digest recomputed and compared
 * with the name it was asked for (ARTIFACT_DIGEST_MISMATCH otherwise), made read-only, then renamed into
 * place: a cache entry is complete and verified, or absent. Concurrent asks for one digest share one fetch.
 */
import { chmod, mkdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { StratusError } from "../shared/errors";
import { isArtifactDigest } from "../shared/node-protocol";
import { unpackArchive } from "../shared/archive";
import { digestTree, listTree } from "../shared/tree-digest";

/** Caps of one transferred artifact (a bundle with native dependencies can be large). */
const TRANSFER_LIMITS = { maxCompressedBytes: 2 * 1024 ** 3, maxUnpackedBytes: 4 * 1024 ** 3, maxEntries: 500_000 };

export interface ArtifactCache {
  /** The directory of `digest`, fetching and verifying it first when absent. @throws StratusError */
  ensure(digest: string): Promise<string>;
  /** Fetches `digest` into a fresh verified temp dir the caller removes (discovery bundles). */
  fetchTemp(digest: string): Promise<{ dir: string; cleanup(): Promise<void> }>;
  /** How many artifacts were fetched since start (tests, logs). */
  readonly fetched: number;
}

/** Creates the cache under `dir`; `fetch(digest)` streams the gzip tar from the control plane. */
export function createArtifactCache(dir: string, fetch: (digest: string) => Promise<Readable>): ArtifactCache {
  const tmpDir = join(dir, ".tmp");
  const inflight = new Map<string, Promise<string>>();
  let fetched = 0;

  async function download(digest: string): Promise<string> {
    if (!isArtifactDigest(digest)) throw new StratusError("INVALID_ARGUMENT", `Not an artifact digest: ${String(digest).slice(0, 80)}`);
    await mkdir(tmpDir, { recursive: true, mode: 0o700 });
    const body = await fetch(digest);
    const { dir: unpacked } = await unpackArchive(body, { limits: TRANSFER_LIMITS, parentDir: tmpDir });
    try {
      const actual = await digestTree(unpacked);
      if (actual !== digest) throw new StratusError("ARTIFACT_DIGEST_MISMATCH", `Artifact ${digest} arrived with digest ${actual}`);
      fetched++;
      // mkdtemp made it 0700; the sandbox's unprivileged uid must read (never write) it.
      await chmod(unpacked, 0o755);
      return unpacked;
    } catch (err) {
      await rm(unpacked, { recursive: true, force: true });
      throw err;
    }
  }

  async function fill(digest: string): Promise<string> {
    const target = join(dir, digest);
    if (await exists(target)) return target;
    const unpacked = await download(digest);
    try {
      for (const e of await listTree(unpacked)) if (e.kind === "file") await chmod(join(unpacked, e.path), e.executable ? 0o555 : 0o444);
      await rename(unpacked, target).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
      });
    } finally {
      await rm(unpacked, { recursive: true, force: true });
    }
    return target;
  }

  return {
    ensure(digest) {
      let p = inflight.get(digest);
      if (p === undefined) {
        p = fill(digest).finally(() => inflight.delete(digest));
        inflight.set(digest, p);
      }
      return p;
    },
    async fetchTemp(digest) {
      const d = await download(digest);
      return { dir: d, cleanup: () => rm(d, { recursive: true, force: true }) };
    },
    get fetched() {
      return fetched;
    },
  };
}

const exists = (p: string) => stat(p).then(() => true, () => false);
