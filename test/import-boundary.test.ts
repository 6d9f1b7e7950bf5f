// The control/node line is crossed only by the node protocol: src/control never imports the gateway,
// the sandbox or the node agent; the node agent and the gateway never import the store or the control
// plane, nor src/events (the async queue, worker and scheduler are control-side: they touch the store),
// and src/events never imports the node side. Both sides share src/shared/ (node-protocol.ts is the protocol; the rest is the small kernel).
// Checked twice: each file's own imports (RULES), and everything a side reaches through any chain of
// imports (SIDES, transitive): the control side (control, store, builder, observe, events) never reaches a
// node-side module (node, gateway, sandbox), nor the other way round; src/shared imports only src/shared.
// docs/architecture.md ("Two sides") lists the same folders.
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

/** Which side of the control/node line each top-level folder is on (entry folders up, cli, dev compose both). */
export const SIDES = {
  control: ["control", "store", "builder", "observe", "events"],
  node: ["node", "gateway", "sandbox"],
} as const;
const ENTRY = ["up", "cli", "dev"];

/** The file a relative specifier of `file` names (`.ts`, `.js`→`.ts`, or `index.ts`), or null. */
function resolveFile(file: string, spec: string, exists: (p: string) => boolean): string | null {
  if (!spec.startsWith(".")) return null;
  const base = resolve(dirname(file), spec);
  for (const c of [base, base.replace(/\.js$/, ".ts"), `${base}.ts`, join(base, "index.ts")]) if (exists(c)) return c;
  return null;
}

/**
 * Every chain of imports from a file of one side to a file of the other side (or to an entry folder),
 * as `a.ts → b.ts → c.ts`; and every import of src/shared that leaves src/shared.
 */
function transitiveViolations(files: ReadonlyArray<{ path: string; text: string }>): string[] {
  const byPath = new Map(files.map((f) => [f.path, f]));
  const areaOf = (p: string) => relative(SRC, p).split("/")[0]!;
  const sideOf = (area: string) => (SIDES.control as readonly string[]).includes(area) ? "control" : (SIDES.node as readonly string[]).includes(area) ? "node" : null;
  const edges = new Map<string, string[]>();
  for (const f of files) edges.set(f.path, importSpecifiers(f.text).map((s) => resolveFile(f.path, s, (p) => byPath.has(p))).filter((p): p is string => p !== null));
  const found: string[] = [];
  for (const f of files) {
    const area = areaOf(f.path);
    if (area === "shared") {
      for (const to of edges.get(f.path)!) if (areaOf(to) !== "shared") found.push(`${relative(SRC, f.path)} → ${relative(SRC, to)} (src/shared imports only src/shared)`);
      continue;
    }
    const side = sideOf(area);
    if (side === null) continue;
    // Breadth-first over the import graph; each file visited once, so the walk is bounded by the file count.
    const parent = new Map<string, string | null>([[f.path, null]]);
    const queue = [f.path];
    for (let i = 0; i < queue.length; i++) {
      const at = queue[i]!;
      for (const to of edges.get(at) ?? []) {
        if (parent.has(to)) continue;
        parent.set(to, at);
        const toArea = areaOf(to);
        const toSide = sideOf(toArea);
        if ((toSide !== null && toSide !== side) || ENTRY.includes(toArea)) {
          const chain: string[] = [];
          for (let p: string | null = to; p !== null; p = parent.get(p) ?? null) chain.unshift(relative(SRC, p));
          found.push(`${side} side reaches ${toSide ?? toArea}: ${chain.join(" → ")}`);
          continue;
        }
        queue.push(to);
      }
    }
  }
  return found;
}

test("the transitive checker follows chains of imports (so the strengthened test can fail)", () => {
  const fake = [
    { path: join(SRC, "control", "a.ts"), text: 'import { b } from "../builder/b";' },
    { path: join(SRC, "builder", "b.ts"), text: 'import type { D } from "../shared/s";\nimport { c } from "./c";' },
    { path: join(SRC, "builder", "c.ts"), text: 'export type { X } from "../sandbox/driver";' },
    { path: join(SRC, "sandbox", "driver.ts"), text: 'import { x } from "../shared/s";' },
    { path: join(SRC, "shared", "s.ts"), text: 'import { y } from "../gateway/limits";' },
    { path: join(SRC, "gateway", "limits.ts"), text: 'const o = await import("../observe/observer");' },
    { path: join(SRC, "observe", "observer.ts"), text: "" },
  ];
  const v = transitiveViolations(fake);
  assert.ok(v.includes("control side reaches node: control/a.ts → builder/b.ts → builder/c.ts → sandbox/driver.ts"), v.join("\n"));
  assert.ok(v.includes("shared/s.ts → gateway/limits.ts (src/shared imports only src/shared)"), v.join("\n"));
  assert.ok(v.includes("node side reaches control: gateway/limits.ts → observe/observer.ts"), v.join("\n"));
  // Through src/shared too: sandbox → shared → gateway is node → node, but shared → gateway is flagged above.
  assert.ok(v.some((l) => l.startsWith("node side reaches control: sandbox/driver.ts → shared/s.ts → gateway/limits.ts → observe/observer.ts")), v.join("\n"));
});

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

test("no chain of imports crosses the control/node line, and src/shared imports only src/shared", () => {
  const files = filesUnder(SRC).map((path) => ({ path, text: readFileSync(path, "utf8") }));
  for (const area of [...SIDES.control, ...SIDES.node]) assert.ok(files.some((f) => relative(SRC, f.path).startsWith(`${area}/`)), `the scan reached src/${area}`);
  assert.deepEqual(transitiveViolations(files), []);
});
