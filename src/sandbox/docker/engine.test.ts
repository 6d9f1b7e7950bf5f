import { test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { Agent, createServer, request, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { inspect } from "node:util";
import Docker from "dockerode";
import { EngineAgent, engineClient } from "./engine";

/**
 * Opens `n` requests through `agent` to `port` that the server holds open (as dockerd holds a container's
 * attach stream), so the agent has `n` live sockets; resolves once the server has them all.
 */
async function holdSockets(agent: Agent, port: number, held: ServerResponse[], n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const req = request({ port, host: "127.0.0.1", path: `/${i}`, agent });
    req.on("error", () => undefined);
    req.end();
  }
  for (let deadline = Date.now() + 10_000; held.length < n;) {
    if (Date.now() > deadline) throw new Error(`only ${held.length} of ${n} requests arrived`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("EngineAgent: docker-modem's per-request inspect of the options does not walk the agent's open sockets", async () => {
  const held: ServerResponse[] = [];
  const server = createServer((_req, res) => void held.push(res));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as AddressInfo).port;
  const plain = new Agent({ keepAlive: false });
  const engine = new EngineAgent();
  try {
    await holdSockets(plain, port, held, 20);
    await holdSockets(engine, port, held, 40);
    // What docker-modem's Modem.buildRequest formats before every engine call (its debug line).
    const opts = { showHidden: true, depth: null } as const;
    const plainText = inspect({ path: "/containers/x/start", method: "POST", agent: plain }, opts);
    const engineText = inspect({ path: "/containers/x/start", method: "POST", agent: engine }, opts);
    // The plain agent's text carries every socket (this is what cost the gateway seconds of CPU in a burst).
    assert.ok(plainText.length > 100_000, `plain agent inspected to ${plainText.length} chars`);
    assert.ok(engineText.includes("agent: EngineAgent"), engineText);
    assert.ok(engineText.length < 200, engineText);
    assert.equal(Object.values(engine.sockets).flat().length, 40, "the agent holds its sockets all the same");
  } finally {
    for (const res of held) res.end("done");
    plain.destroy();
    engine.destroy();
    server.close();
  }
});

test("engineClient (the driver's default): its modem uses an EngineAgent", () => {
  const modem = engineClient().modem as unknown as { agent?: unknown };
  assert.ok(modem.agent instanceof EngineAgent);
  assert.equal(inspect(modem.agent, { showHidden: true, depth: null }), "EngineAgent");
});

test("EngineAgent: an engine connection through it works and keeps no socket (no keep-alive)", async () => {
  const agent = new EngineAgent();
  const docker = new Docker({ agent } as Docker.DockerOptions);
  const pong = await docker.ping();
  assert.equal(String(pong), "OK");
  await docker.version();
  for (let deadline = Date.now() + 5000; Object.values(agent.freeSockets).flat().length + Object.values(agent.sockets).flat().length > 0;) {
    if (Date.now() > deadline) assert.fail("the agent kept a socket to the engine");
    await new Promise((r) => setTimeout(r, 10));
  }
});
