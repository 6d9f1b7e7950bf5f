/**
 * `stratus init [dir] [--ts]`: scaffolds a function project, in the original CommonJS form or in
 * TypeScript with defineFunction. Refuses to overwrite existing files.
 */
import type { Command } from "commander";
import { mkdir, writeFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { StratusError } from "../../shared/errors";
import { reportError } from "../command-kit";

const CJS = `// A Stratus function project. Each export is a function, served at /fn/<exportName>/.
module.exports.hello = {
  func: async (req, res) => res.send(\`Hello from \${process.env.GREETING_FROM ?? "Stratus"}!\`),
  config: { timeout: 10_000 },
};
`;

const TS = `// A Stratus function project in TypeScript. \`stratus\` resolves to the SDK at build time.
import { defineFunction } from "stratus";

export const hello = defineFunction({
  config: { timeout: 10_000 },
  handler: async (req) => ({ message: \`Hello, \${typeof req.query.name === "string" ? req.query.name : "world"}!\` }),
});
`;

/** Registers the `init` command. */
export function registerInitCommand(program: Command): void {
  program
    .command("init")
    .description("create a function project")
    .argument("[dir]", "project folder", ".")
    .option("--ts", "TypeScript with defineFunction instead of the CommonJS form")
    .option("--json", "machine-readable output")
    .action(async (dir: string, opts: { ts?: boolean; json?: boolean }) => {
      try {
        const root = resolve(dir);
        await mkdir(root, { recursive: true });
        const name = basename(root).toLowerCase().replace(/[^a-z0-9-]/g, "-") || "functions";
        const entry = opts.ts ? "index.ts" : "index.js";
        const files: Record<string, string> = {
          [entry]: opts.ts ? TS : CJS,
          "package.json": JSON.stringify({ name, private: true, main: entry }, null, 2) + "\n",
          ".gitignore": "node_modules/\n",
        };
        for (const [f, content] of Object.entries(files)) {
          await writeFile(join(root, f), content, { flag: "wx" }).catch((err: NodeJS.ErrnoException) => {
            if (err.code === "EEXIST") throw new StratusError("CONFLICT", `${join(root, f)} already exists`);
            throw err;
          });
        }
        if (opts.json) process.stdout.write(JSON.stringify({ dir: root, files: Object.keys(files) }) + "\n");
        else process.stdout.write(`Created ${Object.keys(files).join(", ")} in ${root}\nNext: stratus deploy ${dir}\n`);
      } catch (err) {
        reportError(err);
      }
    });
}
