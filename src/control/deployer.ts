/**
 * The deploy pipeline of the control plane: an uploaded project archive → unpacked safely → built
 * (src/builder) → versions recorded → each changed version verified on the node → all switched at once
 * → pushed to the node. Activation is all-or-nothing per deploy: a failed build, a bad config or a
 * version that crashes on its first load leaves every previous version serving.
 *
 * The unpack and build steps are injected (src/control/control-plane.ts wires the builder's), so this file
 * holds only the control plane's part: ordering, the store records and activation.
 */
import type { Readable } from "node:stream";
import { StratusError, isStratusError } from "../shared/errors";
import type { Logger } from "../shared/logger";
import type { Store, VersionRecord } from "../store/store";
import type { Activator } from "./activation";
import type { FunctionVersion } from "../shared/function-version";

/**
 * A project unpacked into a fresh temp dir; `cleanup()` removes it (idempotent). The build takes the
 * directory over as it is (no second pack/unpack).
 */
export interface ReceivedProject {
  readonly dir: string;
  readonly fileCount: number;
  readonly unpackedBytes: number;
  cleanup(): Promise<void>;
}

/** What the deployer needs of a built version (src/shared/function-version.ts). */
export type BuiltVersion = Pick<FunctionVersion, "name" | "version" | "digest" | "entry" | "exportName" | "config" | "sourceDigest" | "image">;

/** The outcome for one function of a deploy. */
export interface DeployedFunction {
  readonly name: string;
  readonly version: string;
  readonly url: string;
  readonly status: "activated" | "unchanged";
}

export interface DeployerOptions {
  readonly store: Store;
  readonly activator: Activator;
  readonly logger: Logger;
  /**
   * Reads a gzip tarball and unpacks it into a fresh temp dir, refusing hostile entries.
   * @throws StratusError INVALID_ARGUMENT-family: INVALID_ARCHIVE | ARCHIVE_TOO_LARGE
   */
  readonly unpack: (body: Readable) => Promise<ReceivedProject>;
  /**
   * Builds an unpacked project into function versions (artifacts written, nothing activated).
   * @throws StratusError BUILD_FAILED | INVALID_CONFIG | INVALID_FUNCTION_NAME | CONFLICT
   */
  readonly build: (project: ReceivedProject, options: {
    buildId: string; projectName?: string;
    /** The one route of build lines: recorded on the build, in order, and streamed to the client. */
    onLog: (line: string) => void;
    onSource: (sourceDigest: string) => Promise<void>;
  }) => Promise<readonly BuiltVersion[]>;
  readonly functionUrl: (name: string) => string;
}

/** Options of one deploy. */
export interface DeployOptions {
  /** Deploy only these functions of the project (default: all). */
  readonly only?: readonly string[];
  /** Names a default-export function when package.json has no `name` (the CLI sends the folder name). */
  readonly projectName?: string;
  /** Receives each build log line. Must not throw. */
  readonly onLog: (line: string) => void;
}

export interface Deployer {
  /** Unpacks an upload (before the API answers, so a hostile archive gets a plain error status). */
  receive(body: Readable): Promise<ReceivedProject>;
  /**
   * Builds and activates a received project; `only` limits the deploy to those function names.
   * The project dir is removed afterwards whatever happens.
   * @throws StratusError from the build or the activation (nothing switched in that case)
   */
  deploy(project: ReceivedProject, options: DeployOptions): Promise<DeployedFunction[]>;
}

/** Creates the deploy pipeline. */
export function createDeployer(options: DeployerOptions): Deployer {
  const { store, activator, logger } = options;
  // Deploys are serialised: two racing deploys would otherwise both verify and then one would fail its
  // compare-and-swap; queuing them gives the user a clear order instead.
  let tail: Promise<unknown> = Promise.resolve();

  async function run(project: ReceivedProject, { only, projectName, onLog }: DeployOptions): Promise<DeployedFunction[]> {
    const build = await store.createBuild();
    // The one route of build log lines (the builder's and activation's): streamed to the client and
    // recorded on the build, one append after the other so they keep their order in any store.
    let recorded: Promise<void> = Promise.resolve();
    const log = (line: string) => {
      onLog(line);
      recorded = recorded.then(() => store.appendBuildLog(build.id, [line])).catch((err: unknown) => logger.warn({ err }, "could not store a build log line"));
    };
    try {
      const built = await options.build(project, {
        buildId: build.id, ...(projectName ? { projectName } : {}), onLog: log,
        onSource: (digest) => store.setBuildSource(build.id, digest),
      });
      const selected = only ? built.filter((b) => only.includes(b.name)) : built;
      if (only) {
        const missing = only.filter((n) => !built.some((b) => b.name === n));
        if (missing.length > 0) throw new StratusError("FUNCTION_NOT_FOUND", `The project has no function named ${missing.join(", ")}`, { details: { missing } });
      }
      if (selected.length === 0) throw new StratusError("BUILD_FAILED", "The project exports no functions");
      const records: VersionRecord[] = [];
      const changed: VersionRecord[] = [];
      for (const b of selected) {
        const rec = await store.addVersion({
          functionName: b.name, version: b.version, digest: b.digest, entry: b.entry, exportName: b.exportName,
          config: b.config, sourceDigest: b.sourceDigest, image: b.image ?? null,
        });
        records.push(rec);
        const fn = await store.getFunction(b.name);
        if (fn?.activeVersion !== rec.version) changed.push(rec);
      }
      await activator.activate(changed, log);
      const result = records.map((r): DeployedFunction => ({
        name: r.functionName,
        version: r.version,
        url: options.functionUrl(r.functionName),
        status: changed.includes(r) ? "activated" : "unchanged",
      }));
      await recorded;
      await store.finishBuild(build.id, { status: "succeeded", result });
      return result;
    } catch (err) {
      const e = isStratusError(err) ? err : new StratusError("INTERNAL");
      if (!isStratusError(err)) logger.error({ err }, "deploy failed");
      await recorded;
      await store.finishBuild(build.id, { status: "failed", error: { code: e.code, message: e.message } }).catch(() => {});
      throw e;
    } finally {
      await project.cleanup();
    }
  }

  return {
    receive: (body) => options.unpack(body),
    deploy(project, deployOptions) {
      const p = tail.then(() => run(project, deployOptions));
      tail = p.catch(() => {});
      return p;
    },
  };
}
