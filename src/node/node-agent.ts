/**
 * The node agent: one sandbox driver plus the gateway in front of it. Built, not started: `start()`
 * first removes what a previous, killed run left behind (`driver.reconcile()`), then listens.
 * The control plane calls `gateway.setFunction` / `removeFunction` as deployments change.
 */
import type { AddressInfo } from "node:net";
import type { SandboxDriver } from "../sandbox/driver";
import type { Logger } from "../shared/logger";
import { createGateway, type AuthorizeHook, type Gateway, type GatewayOptions } from "../gateway/gateway";
import type { GatewayLimitsInput } from "../gateway/limits";
import type { GatewayObserver } from "../gateway/observer-hook";

export interface NodeAgentOptions {
  readonly driver: SandboxDriver;
  readonly logger: Logger;
  /** Gateway limits (defaults in src/gateway/limits.ts). */
  readonly limits?: GatewayLimitsInput;
  /** Access check for non-public functions (default: deny with 401). */
  readonly authorize?: AuthorizeHook;
  /** Receives invocation records, instance output and lifecycle events (src/observe/). */
  readonly observer?: GatewayObserver;
  /** Answers requests outside `/fn/…` on the gateway's server (see GatewayOptions.fallback). */
  readonly fallback?: GatewayOptions["fallback"];
  /** Async invocations and the worker's dispatch token (see GatewayOptions; docs/events.md). */
  readonly asyncIntake?: GatewayOptions["asyncIntake"];
  readonly dispatchToken?: string;
}

export interface NodeAgent {
  readonly gateway: Gateway;
  /**
   * Reconciles the driver, then listens. `port` 0 picks a free one; `host` defaults to 127.0.0.1.
   * Resolves with the bound address. @throws the listen error (EADDRINUSE…)
   */
  start(options: { port: number; host?: string }): Promise<{ host: string; port: number; removed: number }>;
  /** Drains the gateway within `deadlineMs` (a duration, ms), then closes the driver. Idempotent. */
  drain(deadlineMs: number): Promise<void>;
  /** Immediate stop of gateway and driver. Idempotent. */
  close(): Promise<void>;
}

/** Composes driver + gateway (see the file comment). */
export function createNodeAgent(options: NodeAgentOptions): NodeAgent {
  const { driver, logger } = options;
  const gateway = createGateway({
    driver, logger, limits: options.limits, authorize: options.authorize, ...(options.observer ? { observer: options.observer } : {}),
    ...(options.fallback ? { fallback: options.fallback } : {}),
    ...(options.asyncIntake ? { asyncIntake: options.asyncIntake } : {}),
    ...(options.dispatchToken ? { dispatchToken: options.dispatchToken } : {}),
  });
  return {
    gateway,
    async start({ port, host = "127.0.0.1" }) {
      const { removed } = await driver.reconcile();
      if (removed > 0) logger.info({ removed }, "reconcile removed leftovers of an earlier run");
      const server = gateway.server;
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error): void => reject(err);
        server.once("error", onError);
        server.listen(port, host, () => {
          server.off("error", onError);
          resolve();
        });
      });
      const address = gateway.server.address() as AddressInfo;
      logger.info({ host: address.address, port: address.port, driver: driver.name }, "node agent listening");
      return { host: address.address, port: address.port, removed };
    },
    async drain(deadlineMs) {
      await gateway.drain(deadlineMs);
      await driver.close();
    },
    async close() {
      await gateway.close();
      await driver.close();
    },
  };
}
