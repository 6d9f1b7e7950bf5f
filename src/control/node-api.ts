/**
 * The internal node API: what the control plane asks of a node agent. The control plane and the node
 * agent are separate components; `stratus up` runs both in one process, but they only ever talk
 * through this contract, which has an HTTP form (`/internal/v1/…`, served by src/node/internal-api.ts
 * on a Unix socket in the data dir, authenticated with the node token) so they can later run on
 * different machines. docs/api.md documents the wire format.
 *
 * Invariant: the node holds no state of its own that the control plane cannot push again; on start the
 * control plane pushes every active function version (`setFunction`), so a restart serves what was deployed.
 */
import type { Deployment } from "../gateway/deployment";

/**
 * One function version as the node runs it: the gateway's Deployment (an InstanceSpec minus the instance
 * id). `artifactDir` is a host path shared by control plane and node in `up`; `env` is config.env + the
 * function's env vars + its decrypted secrets (secrets win); `image` is the Docker reference, if any.
 */
export type FunctionDeployment = Deployment;

/** Instance counts of one function on a node. */
export interface FunctionNodeStatus {
  readonly version: string | null;
  readonly instances: number;
  readonly busy: number;
  readonly idle: number;
  readonly starting: number;
  readonly queued: number;
}

export interface NodeApi {
  /**
   * Serves `deployment` for its function: new requests go to it, old instances drain. Calling it again
   * with the same version and another env rolls the instances without a rebuild.
   */
  setFunction(deployment: FunctionDeployment): Promise<void>;
  /** Stops serving a function (its instances drain). Idempotent. */
  removeFunction(name: string): Promise<void>;
  /**
   * Turns a version's artifact into what the node's driver runs, once per version (Docker: builds and
   * pushes the image; process driver: nothing). Resolves with the image reference, if any, and the log.
   * @throws StratusError BUILD_FAILED
   */
  prepare(deployment: FunctionDeployment): Promise<{ image?: string; log: string[] }>;
  /**
   * Starts one instance of `deployment` in the sandbox and waits for it to be ready, then stops it:
   * proof that the version loads before it is activated. Resolves with the start time in ms.
   * @throws StratusError FUNCTION_LOAD_FAILED | INSTANCE_START_FAILED
   */
  verify(deployment: FunctionDeployment): Promise<{ startMs: number }>;
  /** Instance counts of a function (zeros when the node does not serve it). */
  status(name: string): Promise<FunctionNodeStatus>;
}

/** Counts of a function the node does not know. */
export const EMPTY_NODE_STATUS: FunctionNodeStatus = Object.freeze({ version: null, instances: 0, busy: 0, idle: 0, starting: 0, queued: 0 });
