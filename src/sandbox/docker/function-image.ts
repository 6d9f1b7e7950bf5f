/**
 * The image of one function version: a generated Dockerfile (`FROM <base>` + COPY of the artifact),
 * built through the engine's API, tagged `<registry>/stratus/<toLowerSafeName(fn)>:<version>`, pushed,
 * and referred to by digest from then on (`<registry>/stratus/<name>@sha256:…`), so every node runs
 * exactly the bytes that were deployed.
 *
 * Identical artifacts do not rebuild: the image carries `stratus.digest` (a hash of the artifact's
 * files and the base image), and an image with the same digest and function that is already in the
 * registry is reused.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, cp, lstat, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import type Docker from "dockerode";
import { StratusError } from "../../shared/errors";
import { toLowerSafeName } from "../../shared/names";
import { IMAGE_PATHS, IMAGE_USER } from "./base-image";
import { followProgress } from "./engine";

/** Registry credentials, in the engine's `X-Registry-Auth` form. */
export interface RegistryAuth {
  readonly username: string;
  readonly password: string;
  /** Registry host:port; defaults to the driver's registry address. */
  readonly serveraddress?: string;
}

export interface FunctionImageInput {
  readonly functionName: string;
  readonly version: string;
  readonly artifactDir: string;
  /** Tag of the base image (see ensureBaseImage). */
  readonly baseImage: string;
  /** Registry `host:port`, e.g. `127.0.0.1:5000`. */
  readonly registry: string;
  readonly auth?: RegistryAuth;
  readonly onLog?: (line: string) => void;
}

/** Labels Stratus puts on images and containers. */
export const LABELS = {
  function: "stratus.function",
  version: "stratus.version",
  digest: "stratus.digest",
  instance: "stratus.instance",
  node: "stratus.node",
  /** On pre-warm slot containers (they start before any instance id exists): the slot id. */
  slot: "stratus.slot",
} as const;

/** A Docker tag allows `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; anything else in a version becomes `-`. */
export function versionTag(version: string): string {
  const t = version.replace(/[^A-Za-z0-9_.-]/g, "-").slice(0, 128);
  return /^[A-Za-z0-9_]/.test(t) ? t : `v${t}`.slice(0, 128);
}

/** `<registry>/stratus/<lower-safe function name>` */
export function repositoryOf(registry: string, functionName: string): string {
  return `${registry}/stratus/${toLowerSafeName(functionName)}`;
}

/** sha256 over the artifact's relative paths, modes and contents (sorted), and the base image. */
export async function artifactDigest(artifactDir: string, baseImage: string): Promise<string> {
  const hash = createHash("sha256").update(`base ${baseImage}\n`);
  const walk = async (dir: string): Promise<void> => {
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const path = join(dir, e.name);
      const st = await lstat(path);
      hash.update(`${relative(artifactDir, path)}\0${st.mode.toString(8)}\0`);
      if (e.isDirectory()) await walk(path);
      else if (e.isFile()) for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
    }
  };
  await walk(artifactDir);
  return `sha256:${hash.digest("hex")}`;
}

/**
 * Copies an artifact so that the container's unprivileged user can read it whatever the artifact's own
 * modes (an artifact dir is often 0700 root): directories 0755, files 0644 (0755 when executable).
 * Owned by root, so the function cannot change its own code. Symlinks are kept as they are.
 */
export async function copyReadable(from: string, to: string): Promise<void> {
  await cp(from, to, { recursive: true, dereference: false, verbatimSymlinks: true });
  const walk = async (dir: string): Promise<void> => {
    await chmod(dir, 0o755);
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      if (e.isDirectory()) await walk(path);
      else if (e.isFile()) await chmod(path, ((await lstat(path)).mode & 0o111) !== 0 ? 0o755 : 0o644);
    }
  };
  await walk(to);
}

/** The Dockerfile of a function version. Labels are JSON-quoted: the function name and version are user input. */
export function functionDockerfile(input: { baseImage: string; functionName: string; version: string; digest: string }): string {
  return [
    `FROM ${input.baseImage}`,
    // Owned by root and not writable by the function's user: the code is immutable at run time.
    `COPY fn/ ${IMAGE_PATHS.functionDir}/`,
    `LABEL ${LABELS.function}=${JSON.stringify(input.functionName)} ${LABELS.version}=${JSON.stringify(input.version)} ${LABELS.digest}=${JSON.stringify(input.digest)}`,
    `USER ${IMAGE_USER}`,
    "",
  ].join("\n");
}

function authConfig(input: FunctionImageInput): Record<string, string> | undefined {
  if (input.auth === undefined) return undefined;
  return { username: input.auth.username, password: input.auth.password, serveraddress: input.auth.serveraddress ?? input.registry };
}

/**
 * Builds (unless an identical image exists) and pushes the image of a function version.
 * Resolves with the digest reference `<registry>/stratus/<name>@sha256:…`.
 * @throws StratusError BUILD_FAILED (build or push failed; the engine's message is included)
 */
export async function buildFunctionImage(docker: Docker, input: FunctionImageInput): Promise<string> {
  const repo = repositoryOf(input.registry, input.functionName);
  const tag = `${repo}:${versionTag(input.version)}`;
  const digest = await artifactDigest(input.artifactDir, input.baseImage);

  const existing = await docker.listImages({ filters: { label: [`${LABELS.digest}=${digest}`, `${LABELS.function}=${input.functionName}`] } });
  for (const image of existing) {
    const pushed = (image.RepoDigests ?? []).find((d) => d.startsWith(`${repo}@sha256:`));
    if (pushed !== undefined) {
      input.onLog?.(`Reusing ${pushed}: identical artifact`);
      return pushed;
    }
  }

  const ctx = await mkdtemp(join(tmpdir(), "stratus-fn-image-"));
  try {
    if (existing.length === 0) {
      await copyReadable(input.artifactDir, join(ctx, "fn"));
      await writeFile(join(ctx, "Dockerfile"), functionDockerfile({ ...input, digest }));
      const build = await docker.buildImage({ context: ctx, src: ["Dockerfile", "fn"] }, { t: tag, rm: true, forcerm: true });
      await followProgress(build, (e) => {
        if (e.stream !== undefined) for (const l of e.stream.split("\n")) if (l.trim() !== "") input.onLog?.(l);
      });
    } else {
      await docker.getImage(existing[0]!.Id).tag({ repo, tag: versionTag(input.version) });
    }
    const push = await docker.getImage(repo).push({ tag: versionTag(input.version), authconfig: authConfig(input) } as Docker.ImagePushOptions);
    let pushedDigest: string | undefined;
    await followProgress(push, (e) => {
      if (e.aux?.Digest !== undefined) pushedDigest = e.aux.Digest;
      if (e.status !== undefined && e.id === undefined) input.onLog?.(e.status);
    });
    if (pushedDigest === undefined) throw new Error("the registry did not report a digest");
    return `${repo}@${pushedDigest}`;
  } catch (err) {
    throw new StratusError("BUILD_FAILED", `Could not build or push ${tag}: ${(err as Error).message}`, { cause: err });
  } finally {
    await rm(ctx, { recursive: true, force: true });
  }
}
