/**
 * Turns stored versions into what nodes run, and moves functions between versions. The one place that
 * composes a function's environment: config.env, then its env vars, then its secrets (later wins), so
 * secrets reach only that function's instances (over the node protocol, in memory on the node) and never
 * the store listings or the logs.
 */
import type { Store, VersionRecord } from "../store/store";
import { parseFunctionConfig } from "../shared/function-config";
import { StratusError } from "../shared/errors";
import type { Logger } from "../shared/logger";
import type { WireDeployment } from "../shared/node-protocol";
import type { NodeFleetApi } from "./node-api";

/** What the activator needs. */
export interface ActivatorOptions {
  readonly store: Store;
  readonly node: NodeFleetApi;
  readonly logger: Logger;
}

/** Version moves: deploy activation, rollback, env/secret rolls. */
export interface Activator {
  /** The deployment of a stored version with the function's current env and secrets (artifact by digest). */
  deploymentOf(version: VersionRecord): Promise<WireDeployment>;
  /**
   * Prepares each version for the nodes' driver when it has no image yet (Docker: build + push; the
   * image is recorded on the version), verifies each version loads on a node (one instance started and
   * stopped), then switches all the active pointers at once (compare-and-swap on the active versions read
   * before), then publishes the new desired state to the nodes. On any failure before the switch nothing
   * changes: the previous versions keep serving.
   * @throws StratusError FUNCTION_LOAD_FAILED | INSTANCE_START_FAILED | CONFLICT | UNAVAILABLE
   */
  activate(versions: readonly VersionRecord[], onLog?: (line: string) => void): Promise<void>;
  /** After an env or secret change of a served function: publishes (its instances roll, no rebuild). */
  push(functionName: string): Promise<void>;
}

/** Creates the activator. */
export function createActivator(options: ActivatorOptions): Activator {
  const { store, node, logger } = options;

  async function deploymentOf(v: VersionRecord): Promise<WireDeployment> {
    const config = parseFunctionConfig(v.functionName, v.config);
    const env = { ...config.env, ...(await store.getEnvVars(v.functionName)), ...(await store.getSecretValues(v.functionName)) };
    const d: WireDeployment = {
      name: v.functionName,
      version: v.version,
      digest: v.digest,
      entry: v.entry,
      exportName: v.exportName,
      config,
      env,
    };
    return v.image ? { ...d, image: v.image } : d;
  }

  return {
    deploymentOf,
    async activate(versions, onLog) {
      if (versions.length === 0) return;
      // One at a time: an image build uses the whole machine.
      const prepared: VersionRecord[] = [];
      for (const v of versions) {
        if (v.image !== null) {
          prepared.push(v);
          continue;
        }
        const r = await node.prepare(await deploymentOf(v));
        for (const line of r.log) onLog?.(line);
        prepared.push(r.image === undefined ? v : await store.updateVersion(v.functionName, v.version, { image: r.image }));
      }
      versions = prepared;
      const before = await Promise.all(versions.map(async (v) => (await store.getFunction(v.functionName))?.activeVersion ?? null));
      const deployments = await Promise.all(versions.map(deploymentOf));
      for (const d of deployments) {
        onLog?.(`verifying ${d.name}@${d.version}: starting one instance`);
        const { startMs } = await node.verify(d);
        onLog?.(`verified ${d.name}@${d.version}: ready in ${Math.round(startMs)} ms`);
      }
      await store.activateVersions(versions.map((v, i) => ({ functionName: v.functionName, version: v.version, expectedActive: before[i]! })));
      const revision = await node.publish();
      for (const d of deployments) logger.info({ function: d.name, version: d.version, revision }, "version activated");
    },
    async push(functionName) {
      const v = await store.getActiveVersion(functionName);
      if (v === null) throw new StratusError("FUNCTION_NOT_FOUND", `Function ${functionName} has no active version`);
      await node.publish();
    },
  };
}
