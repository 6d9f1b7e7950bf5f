/**
 * One function version, the one type the deploy path carries: builder → store → node protocol → node
 * agent → gateway → driver. Each step uses this type or a narrow Pick/Omit of it, never a shape of its
 * own, so a field means the same thing and has the same name everywhere:
 *
 *   FunctionVersion   what a build produces and the control plane records (src/builder, src/control)
 *   BuiltVersion      + artifactDir: where the builder wrote the artifact (control-plane host)
 *   VersionDeployment − sourceDigest + env: what a node is told to run (src/shared/node-protocol.ts)
 *   ServedVersion     − digest + artifactDir: the deployment with its artifact fetched, verified and
 *                     cached on the node (src/gateway/deployment.ts)
 *   InstanceSpec      (src/sandbox/driver.ts) ServedVersion with `functionName` and an instance id
 *
 * Two places keep another spelling of `name`, on purpose and only there: the store's records
 * (`functionName`, a column of every table) and the artifact manifest on disk (`function`: it is part
 * of every artifact digest, so renaming it would change every version id).
 */
import type { FunctionConfig } from "./function-config";

export interface FunctionVersion {
  /** Function name (rules in src/shared/names.ts). */
  readonly name: string;
  /** The first 12 hex digits of `digest`: identical code deployed twice is the same version. */
  readonly version: string;
  /** `sha256-<hex>` tree digest of the artifact directory (src/shared/tree-digest.ts). */
  readonly digest: string;
  /** Module to load, relative to the artifact directory. */
  readonly entry: string;
  /** The module export that is this function (`default` for a default export). */
  readonly exportName: string;
  /** Resolved config, defaults applied (src/shared/function-config.ts). */
  readonly config: Readonly<FunctionConfig>;
  /** `sha256-<hex>` of the uploaded source tree. */
  readonly sourceDigest: string;
  /** Driver-specific immutable artifact reference from `prepare()` (Docker: `registry/repo@sha256:…`); absent when the driver needs none or it is not prepared yet. */
  readonly image?: string;
}

/** What the builder hands over: a version and the host directory its artifact was written to. */
export type BuiltVersion = FunctionVersion & {
  /** Absolute path of `<dataDir>/artifacts/<digest>`. */
  readonly artifactDir: string;
};

/**
 * One version as a node is told to run it. The artifact is named by its digest (the node fetches and
 * verifies it); `env` is config.env + the function's env vars + its decrypted secrets (later wins).
 */
export type VersionDeployment = Omit<FunctionVersion, "sourceDigest"> & {
  readonly env: Readonly<Record<string, string>>;
};

/** What a node's gateway serves: a deployment whose artifact is on local disk, read-only. */
export type ServedVersion = Omit<VersionDeployment, "digest"> & {
  /** Host directory holding the artifact; mounted read-only in the sandbox. */
  readonly artifactDir: string;
};
