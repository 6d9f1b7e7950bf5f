// Issue 12.3: a function flooding stdout must not slow its neighbours. The whole platform (what
// `stratus up` runs: SQLite store, observability, API, gateway) on each driver, a project deployed
// through the API: the flooder writes short raw lines to fd 1 outside any request as fast as its pipe
// takes them, while a trivial neighbour's median latency is measured against a baseline taken in the
// same run. Without the per-instance output limit this very test measured the neighbour going from
// 1.2 ms to 3,028 ms (process driver; the review saw 5.3 s process and 2.5 s Docker); with it, a few ms.
// Needs root, bubblewrap, `npm run build`; the Docker half needs scripts/services.sh (dockerd + registry).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { deploy, project, startPlatform, type PlatformFixture } from "./helpers/platform-fixture";
import { ensureDocker, median } from "./adversarial/harness";

/** Neighbour requests per measurement. */
const SAMPLES = 40;
/**
 * The bound: under the flood the neighbour's median stays within 5× its baseline + 30 ms. Generous for
 * a shared 2-core machine where the flooder (retrying its blocked writes) competes for CPU; two orders
 * of magnitude below what the flood did without the limit.
 */
const boundMs = (baselineMs: number) => 5 * baselineMs + 30;
const LINES_PER_S = 1000; // the default observe.instanceOutputLinesPerSecond

for (const driver of ["process", "docker"] as const) {
  describe(`output flood (${driver} driver)`, () => {
    let fx: PlatformFixture;
    const auth = () => ({ authorization: `Bearer ${fx.token}` });
    const neighbourMedian = async (): Promise<number> => {
      const times: number[] = [];
      for (let i = 0; i < SAMPLES; i++) {
        const t0 = performance.now();
        const r = await fetch(`${fx.url}/fn/neighbour`, { signal: AbortSignal.timeout(30_000) });
        assert.equal(await r.text(), "n");
        times.push(performance.now() - t0);
      }
      return median(times);
    };
    before(async () => {
      if (driver === "docker") ensureDocker();
      fx = await startPlatform({ driver, prewarm: 0 });
      const src = readFileSync("test/fixtures/adversarial/gateway-functions.js", "utf8");
      const out = await deploy(fx, await project({ "index.js": src, "package.json": JSON.stringify({ name: "adv", version: "1.0.0", main: "index.js" }) }));
      assert.equal(out.final?.type, "result", JSON.stringify(out.final));
    });
    after(async () => {
      if (fx) await fx.close();
    });

    test("the neighbour's median stays within the bound; the flood is cut with a marker and counted", async () => {
      await neighbourMedian(); // warm
      const baseline = await neighbourMedian();
      const started = Date.now();
      assert.equal(await (await fetch(`${fx.url}/fn/flooder`)).text(), "flooding");
      await new Promise((r) => setTimeout(r, 1000)); // the flood is under way
      const flooded = await neighbourMedian();
      const windowS = (Date.now() - started) / 1000;
      console.log(`# ${driver}: neighbour p50 baseline ${baseline.toFixed(1)} ms, under the flood ${flooded.toFixed(1)} ms (bound ${boundMs(baseline).toFixed(1)} ms)`);
      assert.ok(flooded <= boundMs(baseline), `neighbour p50 ${flooded.toFixed(1)} ms under the flood, baseline ${baseline.toFixed(1)} ms`);

      // The marker (a platform line with counts) in the function's log stream, and the counter.
      type Line = { message: string; source: string };
      let markers: Line[] = [];
      let lines: Line[] = [];
      for (let i = 0; i < 100 && markers.length === 0; i++) {
        const r = await fetch(`${fx.url}/api/v1/functions/flooder/logs?limit=1000`, { headers: auth() });
        lines = ((await r.json()) as { lines: Line[] }).lines;
        markers = lines.filter((l) => l.message.startsWith("[output-dropped]"));
        if (markers.length === 0) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(markers.length > 0, `no [output-dropped] marker in ${lines.length} lines`);
      assert.match(markers[0]!.message, /^\[output-dropped\] \d+ lines? \(\d+ bytes\) of this instance's output dropped: over its output limit \(1000 lines\/s, 1048576 bytes\/s\)$/);
      assert.equal(markers[0]!.source, "platform");
      const metrics = await (await fetch(`${fx.url}/metrics`, { headers: auth() })).text();
      const dropped = Number(/stratus_log_lines_dropped_total\{reason="instance_rate"\} (\d+)/.exec(metrics)?.[1] ?? 0);
      // The flooder writes as fast as its sandbox lets it (tens of thousands of lines a second when the machine is
      // quiet, fewer on a loaded Docker engine); anything well above the second's budget shows the cut is counted.
      assert.ok(dropped > 2 * LINES_PER_S, `stratus_log_lines_dropped_total{reason="instance_rate"} = ${dropped}`);
      const accepted = Number(/stratus_log_lines_total\{function="flooder",source="function"\} (\d+)/.exec(metrics)?.[1] ?? 0);
      // What was let through respects the budget: the bucket (2 s) plus the rate over the window (+1 s of slack).
      const elapsedS = (Date.now() - started) / 1000;
      assert.ok(accepted <= LINES_PER_S * (2 + elapsedS + 1), `${accepted} flood lines accepted in ${elapsedS.toFixed(1)} s (window ${windowS.toFixed(1)} s)`);
      assert.ok(accepted > 0);
    });
  });
}
