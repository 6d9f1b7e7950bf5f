#!/usr/bin/env node
// Thin launcher: the CLI is bundled into dist/ by `npm run build`.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
const cli = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
if (!existsSync(cli)) {
  console.error("INTERNAL: dist/cli.js is missing; run `npm run build` in the Stratus checkout first");
  process.exit(1);
}
await import(cli);
