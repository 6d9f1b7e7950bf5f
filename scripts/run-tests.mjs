// Runs node:test over every *.test.ts under the given folders (default: src and test).
// Node 20's `--test` does not expand globs, so the files are listed here.
// Usage: node scripts/run-tests.mjs [dir-or-file ...]   (extra flags after `--` go to node)
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";

const argv = process.argv.slice(2);
const sep = argv.indexOf("--");
const targets = (sep === -1 ? argv : argv.slice(0, sep));
const extra = sep === -1 ? [] : argv.slice(sep + 1);
const roots = targets.length > 0 ? targets : ["src", "test"];

const files = [];
for (const root of roots) {
  if (statSync(root).isFile()) { files.push(root); continue; }
  for (const rel of readdirSync(root, { recursive: true })) {
    const p = join(root, String(rel));
    if (p.endsWith(".test.ts") && !p.includes("node_modules")) files.push(p);
  }
}
files.sort();
if (files.length === 0) {
  console.error(`no test files under ${roots.join(", ")}`);
  process.exit(1);
}
const reporter = process.env.CI ? ["--test-reporter=spec"] : [];
const r = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-concurrency=1", ...reporter, ...extra, ...files], { stdio: "inherit" });
process.exit(r.status ?? 1);
