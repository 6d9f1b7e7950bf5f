/**
 * `stratus dev [dir] [--port N] [--host H] [--runtime PATH]`: serves a project's functions locally with
 * reload on change (see src/dev/dev-server.ts and docs/dev.md).
 */
import type { Command } from "commander";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** dist/runtime.cjs beside the bundled dist/cli.js this code runs in. */
function defaultRuntimePath(): string {
  return fileURLToPath(new URL("./runtime.cjs", import.meta.url));
}

/** Registers the `dev` command. */
export function registerDevCommand(program: Command): void {
  program
    .command("dev")
    .description("serve a function project locally at http://localhost:PORT/fn/<name>/, reloading on change")
    .argument("[dir]", "project folder", ".")
    .option("-p, --port <port>", "port (0 picks a free one)", "3000")
    .option("--host <host>", "address to bind", "127.0.0.1")
    .option("--runtime <path>", "path of runtime.cjs (default: beside the CLI bundle)")
    .option("--no-watch", "do not reload on file changes")
    .action(async (dir: string, opts: { port: string; host: string; runtime?: string; watch: boolean }) => {
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        program.error(`--port must be an integer 0–65535, got ${JSON.stringify(opts.port)}`);
      }
      // Loaded lazily so that other commands do not load the bundler at start-up.
      const { createDevServer } = await import("../../dev/dev-server");
      const server = createDevServer({
        dir, port, host: opts.host, runtimePath: opts.runtime ?? defaultRuntimePath(), watch: opts.watch, npmCacheDir: join(homedir(), ".npm"),
      });
      // Instances run in their own process groups: whatever ends this process must not leave them running.
      process.once("exit", () => server.kill());
      const stop = () => void server.close().then(() => process.exit(0));
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      try {
        await server.listen();
      } catch (err) {
        console.error(`stratus dev: ${err instanceof Error ? err.message : String(err)}`);
        await server.close();
        process.exit(1);
      }
    });
}
