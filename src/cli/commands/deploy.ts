/**
 * `stratus deploy [dir] [--only a,b]`: packs the project (honouring .gitignore and .stratusignore),
 * uploads it, streams the build log (a spinner on a TTY, plain lines otherwise) and prints each
 * function's URL.
 */
import type { Command } from "commander";
import { basename, resolve } from "node:path";
import type { DeployEvent } from "../api-client";
import { apiAction, withCommonOptions, type CommonOptions } from "../command-kit";

const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** Registers the `deploy` command. */
export function registerDeployCommand(program: Command): void {
  withCommonOptions(program.command("deploy").description("build and activate a project's functions").argument("[dir]", "project folder", "."))
    .option("--only <names>", "deploy only these functions (comma-separated)")
    .action(apiAction<[string], CommonOptions & { only?: string }>(async (client, opts, dir) => {
      const root = resolve(dir);
      const { packProject } = await import("../../builder/pack");
      const { archive, files } = await packProject(root);
      const tty = process.stderr.isTTY === true && !opts.json;
      const only = opts.only?.split(",").map((s) => s.trim()).filter(Boolean);
      let frame = 0;
      let status = `uploading ${files.length} files (${Math.ceil(archive.length / 1024)} KiB)`;
      const draw = () => process.stderr.write(`\r\x1b[2K${SPINNER[frame++ % SPINNER.length]} ${status}`);
      const timer = tty ? setInterval(draw, 80) : null;
      if (!tty && !opts.json) process.stderr.write(`${status}\n`);
      const onEvent = (e: DeployEvent) => {
        if (e.type !== "log") return;
        if (opts.json) return;
        if (tty) {
          process.stderr.write(`\r\x1b[2K  ${e.line}\n`);
          status = "building";
          draw();
        } else process.stderr.write(`${e.line}\n`);
      };
      try {
        const fns = await client.deploy(archive, { ...(only ? { only } : {}), project: basename(root) }, onEvent);
        if (opts.json) {
          process.stdout.write(JSON.stringify({ functions: fns }, null, 2) + "\n");
          return;
        }
        if (tty) process.stderr.write("\r\x1b[2K");
        for (const f of fns) process.stdout.write(`${f.status === "activated" ? "✓" : "="} ${f.name}@${f.version} ${f.status}  ${f.url}\n`);
      } finally {
        if (timer) {
          clearInterval(timer);
          process.stderr.write("\r\x1b[2K");
        }
      }
    }));
}
