/**
 * `stratus invoke <fn> [--data <json|@file>] [-X METHOD] [--path /x] [-H 'K: V']… [--verbose]`: calls a
 * function over HTTP and prints the response body (status and headers too with --verbose). An error
 * answer exits 1 with `CODE: message` on stderr.
 */
import type { Command } from "commander";
import { readFile } from "node:fs/promises";
import { StratusError } from "../../shared/errors";
import { parseErrorBody } from "../api-client";
import { apiAction, withCommonOptions, type CommonOptions } from "../command-kit";

interface InvokeOptions extends CommonOptions {
  data?: string;
  request?: string;
  path?: string;
  header: string[];
  verbose?: boolean;
}

/** Registers the `invoke` command. */
export function registerInvokeCommand(program: Command): void {
  withCommonOptions(program.command("invoke").description("call a function and print its response").argument("<fn>", "function name"))
    .option("-d, --data <data>", "request body: JSON text, or @file")
    .option("-X, --request <method>", "HTTP method (default GET, or POST with --data)")
    .option("--path <path>", "path below the function root", "/")
    .option("-H, --header <header>", "extra header 'Name: value' (repeatable)", (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option("-v, --verbose", "print the status line and headers (to stderr)")
    .action(apiAction<[string], InvokeOptions>(async (client, opts, name) => {
      const headers: Record<string, string> = {};
      for (const h of opts.header) {
        const i = h.indexOf(":");
        if (i <= 0) throw new StratusError("INVALID_ARGUMENT", `Expected 'Name: value', got ${JSON.stringify(h)}`);
        headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
      }
      let body: Buffer | undefined;
      if (opts.data !== undefined) {
        body = opts.data.startsWith("@") ? await readFile(opts.data.slice(1)) : Buffer.from(opts.data);
        headers["content-type"] ??= "application/json";
      }
      const r = await client.invoke(name, { ...(opts.request ? { method: opts.request.toUpperCase() } : {}), path: opts.path ?? "/", headers, ...(body ? { body } : {}) });
      if (opts.json) {
        const text = r.body.toString("utf8");
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // keep the text
        }
        process.stdout.write(JSON.stringify({ status: r.status, headers: r.headers, body: parsed }, null, 2) + "\n");
      } else {
        if (opts.verbose) {
          process.stderr.write(`HTTP ${r.status}\n`);
          for (const [k, v] of Object.entries(r.headers)) process.stderr.write(`${k}: ${v}\n`);
          process.stderr.write("\n");
        }
        if (r.status < 400 || parseErrorBody(r.body) === null) process.stdout.write(r.body);
      }
      if (r.status >= 400) {
        const e = parseErrorBody(r.body);
        process.stderr.write(e ? `${e.code}: ${e.message}\n` : `HTTP ${r.status}\n`);
        process.exitCode = 1;
      }
    }));
}
