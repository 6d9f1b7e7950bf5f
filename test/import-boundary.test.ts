// The control/node line is crossed only by the node protocol: src/control never imports the gateway,
// the sandbox or the node agent; the node agent and the gateway never import the store or the control
// plane, nor src/events (the async queue, worker and scheduler are control-side: they touch the store),
// and src/events never imports the node side. Both sides share src/shared/ (node-protocol.ts is the protocol; the rest is the small kernel).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const SRC = resolve("src");

/** Every import/require/dynamic import specifier in `text`. */
export function importSpecifiers(text: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\brequire\s*\(\s*)["']([^"']+)["']/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) out.push(m[1]!);
  return out;
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else if (/\.(ts|mts|cts|js|mjs)$/.test(name)) out.push(p);
  }
  return out;
}

/** The top-level src folder a relative specifier of `file` lands in (null: a package or outside src). */
function targetArea(file: string, spec: string): string | null {
  if (!spec.startsWith(".")) return null;
  const rel = relative(SRC, resolve(dirname(file), spec));
  if (rel.startsWith("..")) return null;
  return rel.split("/")[0]!.replace(/\.(ts|js)$/, "");
}

const RULES: Array<{ from: string; forbidden: readonly string[] }> = [
  { from: "control", forbidden: ["gateway", "sandbox", "node", "up", "cli"] },
  { from: "node", forbidden: ["store", "control", "events", "observe", "up", "cli"] },
  { from: "gateway", forbidden: ["store", "control", "events", "node", "up", "cli"] },
  { from: "events", forbidden: ["gateway", "sandbox", "node", "up", "cli"] },
];
/** The protocol modules themselves import nothing but src/shared. */
const PROTOCOL_FILES = ["shared/node-protocol.ts", "shared/node-link.ts"];

function violations(files: Array<{ path: string; text: string }>): string[] {
  const found: string[] = [];
  for (const { path, text } of files) {
    const area = relative(SRC, path).split("/")[0]!;
    const rule = RULES.find((r) => r.from === area);
    const isProtocol = PROTOCOL_FILES.includes(relative(SRC, path));
    if (rule === undefined && !isProtocol) continue;
    for (const spec of importSpecifiers(text)) {
      const target = targetArea(path, spec);
      if (target === null) continue;
      if (isProtocol ? target !== "shared" : rule!.forbidden.includes(target)) found.push(`${relative(SRC, path)} imports ${spec} (src/${target})`);
    }
  }
  return found;
}

test("the checker sees every import form (so the boundary test can fail)", () => {
  const fake = [
    { path: join(SRC, "control", "x.ts"), text: 'import type { A } from "../gateway/gateway";\nconst d = await import("../sandbox/docker/docker-driver");\nimport "../node/node-agent";' },
    { path: join(SRC, "node", "y.ts"), text: 'import { openSqliteStore } from "../store/sqlite/sqlite-store";\nconst c = require("../control/api");\nimport { createAsyncIntake } from "../events/intake";' },
    { path: join(SRC, "events", "w.ts"), text: 'import type { AsyncTarget } from "../gateway/gateway";' },
    { path: join(SRC, "gateway", "z.ts"), text: 'import { x } from "../shared/node-protocol";' },
    { path: join(SRC, "shared", "node-protocol.ts"), text: 'import type { Store } from "../store/store";\nimport { z } from "zod";' },
  ];
  assert.deepEqual(violations(fake), [
    "control/x.ts imports ../gateway/gateway (src/gateway)",
    "control/x.ts imports ../sandbox/docker/docker-driver (src/sandbox)",
    "control/x.ts imports ../node/node-agent (src/node)",
    "node/y.ts imports ../store/sqlite/sqlite-store (src/store)",
    "node/y.ts imports ../control/api (src/control)",
    "node/y.ts imports ../events/intake (src/events)",
    "events/w.ts imports ../gateway/gateway (src/gateway)",
    "shared/node-protocol.ts imports ../store/store (src/store)",
  ]);
});

test("only the protocol crosses the control/node line", () => {
  const files = filesUnder(SRC).map((path) => ({ path, text: readFileSync(path, "utf8") }));
  assert.ok(files.some((f) => f.path.endsWith("control/control-plane.ts")) && files.some((f) => f.path.endsWith("node/node-agent.ts")) && files.some((f) => f.path.endsWith("events/intake.ts")), "the scan reached both sides and src/events");
  assert.deepEqual(violations(files), []);
  // And both sides do speak it.
  const uses = (suffix: string) => files.filter((f) => f.path.includes(suffix)).some((f) => f.text.includes("shared/node-protocol"));
  assert.ok(uses("/src/control/"), "src/control imports src/shared/node-protocol");
  assert.ok(uses("/src/node/"), "src/node imports src/shared/node-protocol");
});
