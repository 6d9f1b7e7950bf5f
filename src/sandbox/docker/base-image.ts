/**
 * The base runtime image, built locally (there is no internet registry on Stratus nodes):
 * `FROM scratch` + the host's node binary + the shared libraries it links (from `ldd`) + the
 * instance runtime (dist/runtime.cjs) at fixed paths. Named by content —
 * `stratus-runtime:<sha256(layout, node, libs, runtime)[:16]>` — so it is built once and reused
 * until node or the runtime changes.
 *
 * Why scratch and not debootstrap: a scratch image builds in a few seconds from files already on the
 * host, holds nothing but what node needs (no shell, no package manager for an attacker to use), and
 * runs the same node that the process driver runs.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, mkdir, mkdtemp, realpath, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import type Docker from "dockerode";
import { StratusError } from "../../shared/errors";
import { followProgress, isNotFound } from "./engine";

const execFileAsync = promisify(execFile);

/** Where things live inside every Stratus image. */
export const IMAGE_PATHS = {
  node: "/usr/local/bin/node",
  runtime: "/opt/stratus/runtime.cjs",
  /** The function's artifact (per-function image, or a read-only bind mount for discovery). */
  functionDir: "/srv/function",
  /** The instance's socket directory, bind-mounted from the host. */
  socketDir: "/run/stratus",
  /** The KSM launcher (../ksm/ksm-exec.c), when the base image was built with one: the entrypoint under `docker.ksm`. */
  ksmExec: "/opt/stratus/ksm-exec",
  /** The runtime's boot loader (src/runtime/boot.cjs), when the base image was built with one: pool slots start it. */
  boot: "/opt/stratus/boot.cjs",
  /** Where a slot's container gets the runtime's V8 code cache (a read-only bind of ../code-cache.ts's file). */
  codeCache: "/opt/stratus/runtime.cache",
} as const;

/** The unprivileged user every container runs as (`nobody:nogroup`). */
export const IMAGE_USER = "65534:65534";

/** Bump when the image layout changes, so old base images are not reused. */
const LAYOUT_VERSION = "4";

export interface BaseImageOptions {
  /** Host node binary to ship (default: `process.execPath`). */
  readonly nodeBinary?: string;
  /** The bundled instance runtime (dist/runtime.cjs). */
  readonly runtimeFile: string;
  /** The KSM launcher to ship at IMAGE_PATHS.ksmExec (it needs only the libc node already brings). */
  readonly ksmLauncher?: string;
  /** The runtime's boot loader to ship at IMAGE_PATHS.boot (dist/runtime-boot.cjs). */
  readonly bootFile?: string;
  /** Receives the build output, line by line. */
  readonly onLog?: (line: string) => void;
}

/** Per-file content hashes keyed by path, size and mtime: hashing node (~100 MB) takes ~0.5 s. */
const fileHashes = new Map<string, string>();

async function sha256File(path: string): Promise<string> {
  const st = await stat(path);
  const key = `${path}\0${st.size}\0${st.mtimeMs}`;
  let digest = fileHashes.get(key);
  if (digest === undefined) {
    const hash = createHash("sha256");
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
    digest = hash.digest("hex");
    fileHashes.set(key, digest);
  }
  return digest;
}

/** The shared libraries `ldd` lists for a binary, as absolute paths (vdso excluded). */
async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await execFileAsync("ldd", [binary]);
  const libs = new Set<string>();
  for (const line of stdout.split("\n")) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m?.[1] !== undefined) libs.add(m[1]);
  }
  return [...libs].sort();
}

const building = new Map<string, Promise<string>>();

/**
 * Returns the tag of the base image for this node binary + runtime, building it when the engine
 * does not have it yet. Concurrent calls share one build.
 * @throws StratusError BUILD_FAILED when ldd or the image build fails.
 */
export async function ensureBaseImage(docker: Docker, options: BaseImageOptions): Promise<string> {
  const node = await realpath(options.nodeBinary ?? process.execPath);
  const libs = await sharedLibraries(node).catch((cause: unknown) => {
    throw new StratusError("BUILD_FAILED", `ldd ${node} failed`, { cause });
  });
  const hash = createHash("sha256").update(`stratus-base:${LAYOUT_VERSION}\n`);
  for (const file of [node, ...libs, options.runtimeFile, ...(options.ksmLauncher === undefined ? [] : [options.ksmLauncher]), ...(options.bootFile === undefined ? [] : [options.bootFile])]) {
    hash.update(`${file} ${await sha256File(file)}\n`);
  }
  const tag = `stratus-runtime:${hash.digest("hex").slice(0, 16)}`;
  let pending = building.get(tag);
  if (pending === undefined) {
    pending = buildIfMissing(docker, tag, node, libs, options).finally(() => building.delete(tag));
    building.set(tag, pending);
  }
  return pending;
}

async function buildIfMissing(docker: Docker, tag: string, node: string, libs: string[], options: BaseImageOptions): Promise<string> {
  try {
    await docker.getImage(tag).inspect();
    return tag;
  } catch (err) {
    if (!isNotFound(err)) throw new StratusError("BUILD_FAILED", `Docker engine: ${(err as Error).message}`, { cause: err });
  }
  const ctx = await mkdtemp(join(tmpdir(), "stratus-base-"));
  try {
    const rootfs = join(ctx, "rootfs");
    const put = async (from: string, to: string) => {
      await mkdir(dirname(join(rootfs, to)), { recursive: true });
      await copyFile(from, join(rootfs, to)); // copyFile follows symlinks: the image gets real files
    };
    await put(node, IMAGE_PATHS.node);
    for (const lib of libs) await put(lib, lib);
    await put(options.runtimeFile, IMAGE_PATHS.runtime);
    if (options.ksmLauncher !== undefined) await put(options.ksmLauncher, IMAGE_PATHS.ksmExec);
    if (options.bootFile !== undefined) await put(options.bootFile, IMAGE_PATHS.boot);
    // os.userInfo() and some libraries need the user to exist; /tmp is a tmpfs at run time.
    await mkdir(join(rootfs, "etc"), { recursive: true });
    await writeFile(join(rootfs, "etc/passwd"), "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/tmp:/sbin/nologin\n");
    await writeFile(join(rootfs, "etc/group"), "root:x:0:\nnogroup:x:65534:\n");
    // No /tmp in the image: the engine would copy that directory's mode onto the tmpfs mounted there,
    // overriding `mode=1777`, and the build context's tar applies the umask (a 1777 dir arrives as 1755).
    for (const dir of [IMAGE_PATHS.functionDir.slice(1), IMAGE_PATHS.socketDir.slice(1)]) await mkdir(join(rootfs, dir), { recursive: true });
    await writeFile(
      join(ctx, "Dockerfile"),
      [
        "FROM scratch",
        "COPY rootfs/ /",
        `LABEL stratus.base="${LAYOUT_VERSION}"`,
        `USER ${IMAGE_USER}`,
        `WORKDIR ${IMAGE_PATHS.functionDir}`,
        `ENTRYPOINT ["${IMAGE_PATHS.node}"]`,
        `CMD ["${IMAGE_PATHS.runtime}"]`,
        "",
      ].join("\n"),
    );
    const stream = await docker.buildImage({ context: ctx, src: ["Dockerfile", "rootfs"] }, { t: tag, rm: true, forcerm: true });
    await followProgress(stream, (e) => {
      if (e.stream !== undefined) for (const l of e.stream.split("\n")) if (l.trim() !== "") options.onLog?.(l);
    });
    return tag;
  } catch (err) {
    throw new StratusError("BUILD_FAILED", `Could not build the base image ${tag}: ${(err as Error).message}`, { cause: err });
  } finally {
    await rm(ctx, { recursive: true, force: true });
  }
}
