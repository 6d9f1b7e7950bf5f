// A Docker node that test/prewarm-docker.test.ts kills with SIGKILL: a driver with a pool of 1, one
// instance specialised from a slot, and a refilled idle slot; then it prints "ready" and waits.
// argv[2]: JSON { socketRoot, nodeId, registry, runtimeFile, artifactDir }.
import { setTimeout as delay } from "node:timers/promises";
import { createDockerDriver } from "../../src/sandbox/docker/docker-driver";
import { parseFunctionConfig } from "../../src/shared/function-config";

const args = JSON.parse(process.argv[2]!) as { socketRoot: string; nodeId: string; registry: string; runtimeFile: string; artifactDir: string };
const driver = createDockerDriver({ registry: args.registry, runtimePath: args.runtimeFile, stateDir: args.socketRoot, nodeId: args.nodeId, prewarm: 1 });
void driver.open(); // nothing runs before open(); the pool starts filling now
const spec = { instanceId: "killed-node-1", functionName: "oneshot", version: "1", artifactDir: args.artifactDir, entry: "oneshot.js", exportName: "oneshot", config: parseFunctionConfig("oneshot", {}), env: {} };
const { image } = await driver.prepare(spec);
const idle = async (): Promise<void> => {
  for (let i = 0; driver.prewarm.idleCount() < 1; i++) {
    if (i > 3600) throw new Error("no idle slot within 90 s");
    await delay(25);
  }
};
await idle();
await driver.start({ ...spec, image });
if (driver.prewarm.counts().hits !== 1) throw new Error("the instance did not come from the pool");
await idle();
process.stdout.write(`ready ${spec.instanceId}\n`);
setInterval(() => {}, 1 << 30);
