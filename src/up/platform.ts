/**
 * `stratus up` as a factory: the whole platform on one machine with no external service — the same two
 * components a cluster runs, wired through the same protocol:
 *  - the control plane (src/control/control-plane.ts: store, API, builder, observability, fleet), serving
 *    the node protocol on `<dataDir>/control.sock`,
 *  - one node agent (src/node/node-agent.ts: driver + gateway), serving its side of the protocol on
 *    `<dataDir>/node.sock`, with its own data dir `<dataDir>/node` (artifact cache), fetching artifacts,
 *    desired state and tokens from the control plane and sending it telemetry — never sharing an object;
 *  - one public listener (the gateway's server): `/fn/<name>/…` goes to the gateway, everything else to
 *    the control plane's API handler.
 * Both sockets are 0600 and authenticated with keys derived from `<dataDir>/node.token` (deriveLinkKeys).
 * `createPlatform` returns something not yet listening; `listen()` starts it; `close()` drains.
 *
 * Start-up order: the control plane opens the store and listens on its socket; the node reconciles the
 * driver's leftovers, listens, says hello and applies the full desired state (a restart serves what was
 * deployed); then `/readyz` reports ready.
 */
import { chmod, mkdir } from "node:fs/promises";
import { createHash } from "node:crypto";
import { loadOrCreateNodeToken } from "../control/node-token";
import { hostname } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import type { PlatformConfig } from "../shared/platform-config";
import type { Logger } from "../shared/logger";
import { AuthFailureLimiter } from "../shared/auth-failure-limiter";
import type { SandboxDriver } from "../sandbox/driver";
import { createNodeDriver, nodeGatewaySettings } from "../node/driver-factory";
import { createNodeAgent, type NodeAgent } from "../node/node-agent";
import type { Store } from "../store/store";
import { createControlPlane, type ControlPlane } from "../control/control-plane";

/** Dependencies of the platform; everything but the logger has a default. */
export interface PlatformDeps {
  readonly logger: Logger;
  /** Path of dist/runtime.cjs (the process driver runs it in every sandbox). */
  readonly runtimePath?: string;
  /** A ready-made driver (tests, the Docker driver); default: the process driver. The platform closes it. */
  readonly driver?: SandboxDriver;
  /** Stratus version, shown in the OpenAPI document. */
  readonly version?: string;
}

/** What `listen()` reports. `adminToken` is set only on the very first start of a data dir. */
export interface PlatformStarted {
  readonly url: string;
  readonly adminToken: string | null;
}

export interface Platform {
  /** Starts everything and listens on config.host:config.port (0: a free port). */
  listen(): Promise<PlatformStarted>;
  /** Graceful stop: drain the gateway, close the driver, close the store. Idempotent. */
  close(): Promise<void>;
  /** The store (for tests and embedding); available after `listen()`. */
  readonly store: Store | null;
  /** The public base URL; available after `listen()`. */
  readonly url: string | null;
  /** The node agent (tests); available after `listen()`. */
  readonly node: NodeAgent | null;
}

/**
 * Builds the platform from a resolved config (src/shared/platform-config.ts). Nothing starts until `listen()`.
 */
export function createPlatform(config: Readonly<PlatformConfig>, deps: PlatformDeps): Platform {
  const { logger } = deps;
  const dataDir = config.dataDir;
  let url: string | null = null;
  let driver: SandboxDriver | null = null;
  let agent: NodeAgent | null = null;
  let control: ControlPlane | null = null;
  let closing: Promise<void> | null = null;

  async function listen(): Promise<PlatformStarted> {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await chmod(dataDir, 0o700);
    const secret = await loadOrCreateNodeToken(dataDir);
    const controlSocket = join(dataDir, "control.sock");
    // One bucket of failed token checks per client address for the API and the private functions
    // (docs/api.md): both components run in this process, so they are handed the same limiter.
    const authFailures = new AuthFailureLimiter(config.auth);
    control = createControlPlane(config, { logger, nodeSecret: secret, protocolSocket: controlSocket, authFailures, ...(deps.version ? { version: deps.version } : {}) });
    const theControl = control;
    const { adminToken } = await control.start();

    // One node per data dir: reconcile() at start-up removes this node's leftovers (cgroups,
    // containers), and must not take the live instances of another platform on the same host.
    const nodeSuffix = createHash("sha256").update(dataDir).digest("hex").slice(0, 8);
    const nodeId = `${hostname()}-${nodeSuffix}`;
    driver = deps.driver ?? await createNodeDriver(config, { dataDir, nodeId, nodeSuffix, logger, ...(deps.runtimePath ? { runtimePath: deps.runtimePath } : {}) });
    agent = createNodeAgent({
      driver,
      logger: logger.child({ component: "node-agent" }),
      ...nodeGatewaySettings(config),
      authFailureLimiter: authFailures,
      // The API shares the gateway's server (and so its limits and drain): `/fn/…` is the gateway's,
      // everything else the API's. This is the front door's routing, not a shared object: the API
      // reaches the node only through the protocol.
      fallback: (req, res) => theControl.handleApi(req, res),
      control: {
        url: `unix:${controlSocket}`,
        secret,
        nodeId,
        dataDir: join(dataDir, "node"),
        internalSocket: join(dataDir, "node.sock"),
        imagePruneIntervalMs: config.driver === "docker" || deps.driver?.name === "docker" ? config.docker.imagePruneIntervalMs : 0,
      },
    });

    // Reconciles the driver's leftovers of an earlier run, listens, converges on the desired state.
    await agent.start({ port: config.port, host: config.host });
    const addr = agent.gateway.server.address() as AddressInfo;
    const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
    url = config.publicUrl !== "" ? config.publicUrl.replace(/\/+$/, "") : `http://${host}:${addr.port}`;
    control.setPublicUrl(url);
    logger.info({ url, revision: agent.revision?.revision ?? null }, "platform ready");
    return { url, adminToken };
  }

  async function doClose(): Promise<void> {
    // Stop leasing async jobs (in-flight dispatches finish within the drain deadline), then drain (in-flight
    // requests finish, their telemetry reaches the control plane), then the control plane.
    if (control) await control.stopEvents(config.gateway.drainTimeoutMs);
    if (agent) await agent.drain(config.gateway.drainTimeoutMs).catch((err) => logger.error({ err }, "drain failed"));
    if (agent) await agent.close().catch(() => {});
    if (driver && !agent) await driver.close().catch((err) => logger.error({ err }, "driver close failed"));
    if (control) await control.close();
  }

  return {
    listen,
    close: () => (closing ??= doClose()),
    get store() {
      return control?.store ?? null;
    },
    get url() {
      return url;
    },
    get node() {
      return agent;
    },
  };
}
