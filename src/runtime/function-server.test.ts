// FunctionServer.detach (a pre-warm slot's server, built and warmed up before its function is known): requests
// are held until the one bind, then served by the bound function with its config; detach and bind work once.
// A real instance server on a TCP port 0.
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { parseFunctionConfig } from "../shared/function-config";
import { createFunctionServer } from "./function-server";
import type { RuntimeHandler } from "./loader";

const warmHandler: RuntimeHandler = (_req, res) => void (res as { send(b: string): void }).send("warm");

test("detach: requests are held until the bind, then the bound function answers them and every later one; detach and bind work once", async () => {
  const fs = createFunctionServer({ functionName: "warm-up", handler: warmHandler, config: parseFunctionConfig("warm-up", { timeout: 5000 }), emit: () => {} });
  await new Promise<void>((r) => fs.server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(fs.server.address() as AddressInfo).port}`;
  try {
    // Before detach: the warm-up handler answers (the slot's warm-up requests).
    assert.equal(await (await fetch(`${base}/`)).text(), "warm");
    const bind = fs.detach();
    assert.throws(() => fs.detach(), /already detached/, "detach works once");
    let answered = false;
    const early = fetch(`${base}/early`).then(async (r) => {
      answered = true;
      return { status: r.status, body: await r.text() };
    });
    await delay(200);
    assert.equal(answered, false, "a request while detached is held, not answered");
    assert.equal(fs.inFlight(), 0, "a held request is not in flight");
    const seen: string[] = [];
    // The bound config's timeout (100 ms) applies, not the warm-up's (5000 ms).
    bind({
      functionName: "fn", config: parseFunctionConfig("fn", { timeout: 100 }),
      handler: (req, res) => {
        const url = (req as { url: string }).url;
        seen.push(url);
        if (url === "/slow") return; // never answers: the bound deadline must answer 504
        (res as { send(b: string): void }).send(`fn ${url}`);
      },
    });
    assert.throws(() => bind({ functionName: "other", handler: warmHandler, config: parseFunctionConfig("other", {}) }), /already bound/, "bind works once");
    assert.deepEqual(await early, { status: 200, body: "fn /early" }, "the held request reaches the bound function");
    assert.equal(await (await fetch(`${base}/later`)).text(), "fn /later");
    const t0 = performance.now();
    const slow = await fetch(`${base}/slow`);
    assert.equal(slow.status, 504, "the bound function's timeout answers");
    assert.ok(performance.now() - t0 < 3000, `answered at the bound 100 ms timeout, not the warm-up's 5 s (${Math.round(performance.now() - t0)} ms)`);
    await slow.arrayBuffer();
    assert.deepEqual(seen, ["/early", "/later", "/slow"], "the warm-up handler never ran again");
  } finally {
    await fs.drain();
  }
});

test("detach refuses while a request is in flight", async () => {
  let release!: () => void;
  const fs = createFunctionServer({
    functionName: "warm-up", config: parseFunctionConfig("warm-up", { timeout: 5000 }), emit: () => {},
    handler: (_req, res) => new Promise<void>((r) => (release = r)).then(() => (res as { send(b: string): void }).send("done")),
  });
  await new Promise<void>((r) => fs.server.listen(0, "127.0.0.1", r));
  try {
    const pending = fetch(`http://127.0.0.1:${(fs.server.address() as AddressInfo).port}/`);
    while (fs.inFlight() === 0) await delay(5);
    assert.throws(() => fs.detach(), /cannot be detached now/);
    release();
    assert.equal(await (await pending).text(), "done");
  } finally {
    await fs.drain();
  }
});
