// One Stratus node for the cluster tests and bench/cluster.ts: the real process driver (bubblewrap +
// cgroups) and the real gateway, in a child process of its own so a test can SIGKILL it like a crashed
// machine. Spawned by test/helpers/haproxy-cluster.ts with an IPC channel.
// argv[2]: JSON NodeSetup. Listens on setup.host:0 (a 127.0.0.x address) and sends { type: "ready", port }.
// Messages in: { type: "deploy", functions } → "deployed"; { type: "stats" } → { type: "stats", perFunction };
// { type: "accepting", value } → "accepting"; { type: "drain" } → "drained"; { type: "close" } → "closed".
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import type { AddressInfo } from "node:net";
import { createProcessDriver } from "../../src/sandbox/process/process-driver";
import { parseFunctionConfig, type FunctionConfigInput } from "../../src/shared/function-config";
import { createSilentLogger } from "../../src/shared/logger";
import { createGateway } from "../../src/gateway/gateway";
import type { GatewayLimitsInput } from "../../src/gateway/limits";

export interface ClusterFunction {
  readonly name: string;
  /** Export of test/fixtures/cluster/functions.js. */
  readonly exportName: string;
  readonly config?: FunctionConfigInput;
}

export interface NodeSetup {
  readonly name: string;
  readonly host: string;
  readonly stateDir: string;
  readonly cgroupRoot: string;
  readonly prewarm: number;
  readonly limits?: GatewayLimitsInput;
  readonly functions: readonly ClusterFunction[];
}

/** Per function: requests that reached this node, how many ran in an instance, cold starts, statuses. */
export interface FunctionCounts {
  requests: number;
  executed: number;
  cold: number;
  statuses: Record<string, number>;
}

const FIXTURE = resolve("test/fixtures/cluster");

if (process.send !== undefined && process.argv[2] !== undefined) {
  const setup = JSON.parse(process.argv[2]) as NodeSetup;
  mkdirSync(setup.stateDir, { recursive: true });
  const driver = createProcessDriver({ runtimePath: resolve("dist/runtime.cjs"), stateDir: setup.stateDir, cgroupRoot: setup.cgroupRoot, pidsMax: 64, prewarm: setup.prewarm });
  await driver.reconcile();
  await driver.open();
  const counts = new Map<string, FunctionCounts>();
  const gateway = createGateway({
    driver,
    logger: createSilentLogger(),
    nodeId: setup.name,
    limits: { sweepIntervalMs: 100, ...setup.limits },
    observer: {
      onInvocation(r) {
        let c = counts.get(r.functionName);
        if (c === undefined) counts.set(r.functionName, (c = { requests: 0, executed: 0, cold: 0, statuses: {} }));
        c.requests++;
        if (r.instanceId !== null) c.executed++;
        if (r.coldStart) c.cold++;
        c.statuses[String(r.status)] = (c.statuses[String(r.status)] ?? 0) + 1;
      },
      onInstanceLog() {},
      onPlatformEvent() {},
    },
  });
  const deploy = (fns: readonly ClusterFunction[]): void => {
    for (const f of fns) {
      gateway.setFunction({
        name: f.name, version: "1", artifactDir: FIXTURE, entry: "functions.js", exportName: f.exportName,
        config: parseFunctionConfig(f.name, f.config ?? {}), env: { NODE_NAME: setup.name },
      });
    }
  };
  deploy(setup.functions);
  await new Promise<void>((r) => gateway.server.listen(0, setup.host, r));
  const send = (m: unknown): void => void process.send!(m);
  process.on("message", (m: { type: string; functions?: ClusterFunction[]; value?: boolean }) => {
    if (m.type === "deploy") {
      deploy(m.functions ?? []);
      send({ type: "deployed" });
    } else if (m.type === "stats") {
      send({ type: "stats", perFunction: Object.fromEntries(counts) });
    } else if (m.type === "reset") {
      counts.clear();
      send({ type: "reset" });
    } else if (m.type === "accepting") {
      gateway.setAccepting(m.value === true);
      send({ type: "accepting" });
    } else if (m.type === "close") {
      void (async () => {
        await gateway.close();
        await driver.close();
        send({ type: "closed" });
        process.exit(0);
      })();
    }
  });
  // The parent died (a killed test or benchmark): do not linger as an orphan with live sandboxes.
  process.on("disconnect", () => {
    void gateway.close().then(() => driver.close()).finally(() => process.exit(0));
  });
  send({ type: "ready", port: (gateway.server.address() as AddressInfo).port });
}
