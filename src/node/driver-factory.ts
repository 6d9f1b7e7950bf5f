/**
 * Picks and builds a node's sandbox driver from the platform config (what `stratus up` and
 * `stratus node` both run). Driver state lives under the node's data dir: `<dataDir>/run` (process
 * driver sockets and state), `<dataDir>/docker` (Docker socket root). `nodeSuffix` keeps two nodes on
 * one host apart (cgroup root, container labels): reconcile() removes only this node's leftovers.
 * The driver settings come from the platform sections `process.*` / `docker.*`
 * (src/shared/config/driver-settings.ts, one set of names for both drivers).
 */
import { join, resolve } from "node:path";
import type { PlatformConfig } from "../shared/platform-config";
import { StratusError } from "../shared/errors";
import type { Logger } from "../shared/logger";
import type { SandboxDriver } from "../sandbox/driver";
import { createProcessDriver } from "../sandbox/process/process-driver";
import type { NodeAgentOptions } from "./node-agent";
import { gatewayLimitsOf } from "../shared/config/gateway-settings";

/** @throws StratusError INTERNAL when the process driver has no runtimePath */
export async function createNodeDriver(config: Readonly<PlatformConfig>, o: { dataDir: string; nodeId: string; nodeSuffix: string; runtimePath?: string; logger: Logger }): Promise<SandboxDriver> {
  const logger = o.logger.child({ component: "driver" });
  if (config.driver === "process") {
    if (!o.runtimePath) throw new StratusError("INTERNAL", "runtimePath is required for the process driver");
    const p = config.process;
    return createProcessDriver({
      runtimePath: o.runtimePath, stateDir: join(o.dataDir, "run"), cgroupRoot: `stratus-${o.nodeSuffix}`, prewarm: config.prewarm, ...prewarmMaxOf(config), prewarmRefill: config.prewarmRefill, outputLimits: outputLimitsFrom(config), logger,
      sandboxSubnet: p.sandboxSubnet, blockedCidrs: p.blockedCidrs, startTimeoutMs: p.startTimeoutMs, pidsMax: p.pidsMax, tmpSizeMb: p.tmpSizeMb,
      ...(p.instanceNode !== "" ? { nodePath: resolve(p.instanceNode) } : {}), runtimeSnapshot: p.runtimeSnapshot === "auto",
      ksm: p.ksm, codeCache: p.codeCache,
    });
  }
  const { createDockerDriver } = await import("../sandbox/docker/docker-driver");
  const { username, password, address } = config.registry;
  const d = config.docker;
  return createDockerDriver({
    startTimeoutMs: d.startTimeoutMs, pidsMax: d.pidsMax, tmpSizeMb: d.tmpSizeMb, blockedCidrs: d.blockedCidrs, cpuSharesPerGb: d.cpuSharesPerGb, ksm: d.ksm, codeCache: d.codeCache,
    registry: address,
    ...(username !== "" ? { registryAuth: { username, password } } : {}),
    ...(o.runtimePath ? { runtimePath: o.runtimePath } : {}),
    stateDir: join(o.dataDir, "docker"),
    nodeId: o.nodeId,
    prewarm: config.prewarm,
    ...prewarmMaxOf(config),
    prewarmRefill: config.prewarmRefill,
    outputLimits: outputLimitsFrom(config),
    logger,
  });
}

/** The per-instance output budget both drivers read with (platform config `observe.instanceOutput*`). */
function outputLimitsFrom(config: Readonly<PlatformConfig>): { bytesPerSecond: number; linesPerSecond: number } {
  return { bytesPerSecond: config.observe.instanceOutputBytesPerSecond, linesPerSecond: config.observe.instanceOutputLinesPerSecond };
}

/**
 * The node agent's gateway settings from the platform config, the same for `stratus up` and `stratus node`:
 * limits, trusted load balancers and the per-address limit on failed token checks.
 */
export function nodeGatewaySettings(config: Readonly<PlatformConfig>): Pick<NodeAgentOptions, "limits" | "trustedProxies" | "authFailures"> {
  return {
    limits: gatewayLimitsOf(config.gateway),
    trustedProxies: config.gateway.trustedProxies,
    authFailures: config.auth,
  };
}

/** The pool's upper bound (platform config `prewarmMax`; 0: the driver's default, 4 × prewarm ≤ 32; the pool never keeps it below `prewarm`). */
function prewarmMaxOf(config: Readonly<PlatformConfig>): { prewarmMax?: number } {
  return config.prewarmMax === 0 ? {} : { prewarmMax: config.prewarmMax };
}
