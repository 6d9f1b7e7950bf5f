/**
 * The node side of the internal node API (src/control/node-api.ts) over a driver and a gateway in
 * this process. src/node/internal-api.ts serves it over HTTP for the control plane.
 */
import { randomBytes } from "node:crypto";
import type { SandboxDriver } from "../sandbox/driver";
import type { Gateway } from "../gateway/gateway";
import type { Logger } from "../shared/logger";
import { EMPTY_NODE_STATUS, type FunctionDeployment, type FunctionNodeStatus, type NodeApi } from "../control/node-api";

/** Grace given to the verification instance to stop, ms (it never served a request). */
const VERIFY_CLOSE_GRACE_MS = 2_000;

/** Creates the in-process node: `verify` starts one sandboxed instance and stops it. */
export function createLocalNode(options: { driver: SandboxDriver; gateway: Gateway; logger: Logger }): NodeApi {
  const { driver, gateway, logger } = options;
  const versions = new Map<string, string>();
  return {
    async setFunction(d: FunctionDeployment) {
      gateway.setFunction(d);
      versions.set(d.name, d.version);
    },
    async removeFunction(name: string) {
      versions.delete(name);
      await gateway.removeFunction(name);
    },
    async prepare(d: FunctionDeployment) {
      const { name, ...rest } = d;
      const log: string[] = [];
      const r = await driver.prepare({ ...rest, functionName: name, instanceId: "prepare" }, { onLog: (line) => log.push(line) });
      return r.image === undefined ? { log } : { image: r.image, log };
    },
    async verify(d: FunctionDeployment) {
      const { name, ...rest } = d;
      const instanceId = `verify-${randomBytes(6).toString("hex")}`;
      const instance = await driver.start(
        { ...rest, functionName: name, instanceId },
        { onLog: (line) => logger.info({ fn: name, instance: line.instanceId, stream: line.stream }, line.message) },
      );
      await instance.close(VERIFY_CLOSE_GRACE_MS);
      return { startMs: instance.startMs };
    },
    async status(name: string): Promise<FunctionNodeStatus> {
      const s = gateway.stats()[name];
      if (s === undefined) return EMPTY_NODE_STATUS;
      return {
        version: versions.get(name) ?? null,
        instances: s.total,
        busy: s.busy,
        idle: Math.max(0, s.ready - s.busy),
        starting: s.starting,
        queued: s.waiting,
      };
    },
  };
}
