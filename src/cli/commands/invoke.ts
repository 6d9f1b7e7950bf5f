/**
 * `stratus invoke <fn> [--data <json|@file>] [-X METHOD] [--path /x] [-H 'K: V']… [--verbose]`: calls a
 * function over HTTP and prints the response body (status and headers too with --verbose). An error
 * answer exits 1 with `CODE: message` on stderr.
 * `--async [--idempotency-key K] [--wait]`: enqueues instead (202) and prints the invocation id and
 * status URL; `--wait` polls until it finished and prints the result (exit 1 when dead-lettered).
 */
import type { Command } from "commander";
import { readFile } from "node:fs/promises";
import { StratusError } from "../../shared/errors";
import { parseErrorBody } from "../api-client";
import { apiAction, output, withCommonOptions, type CommonOptions } from "../command-kit";

interface InvokeOptions extends CommonOptions {
  data?: string;
  request?: string;
  path?: string;
  header: string[];
  verbose?: boolean;
  async?: boolean;
  idempotencyKey?: string;
  wait?: boolean;
}

/** Longest `--wait`, ms (the default maxEventAgeS is 6 h; a CLI should not hang that long). */
const WAIT_MAX_MS = 15 * 60_000;

/** Registers the `invoke` command. */
export function registerInvokeCommand(program: Command): void {
  withCommonOptions(program.command("invoke").description("call a function and print its response").argument("<fn>", "function name"))
    .option("-d, --data <data>", "request body: JSON text, or @file")
    .option("-X, --request <method>", "HTTP method (default GET, or POST with --data)")
    .option("--path <path>", "path below the function root", "/")
    .option("-H, --header <header>", "extra header 'Name: value' (repeatable)", (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option("-v, --verbose", "print the status line and headers (to stderr)")
    .option("--async", "invoke asynchronously: 202 after the request is durably queued; prints the invocation id")
    .option("--idempotency-key <key>", "with --async: the same key within 24 h returns the original invocation")
    .option("--wait", "with --async: wait for the result (at most 15 min)")
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
      if (opts.async === true) {
        headers["x-stratus-invocation-type"] = "async";
        if (opts.idempotencyKey !== undefined) headers["idempotency-key"] = opts.idempotencyKey;
      }
      const r = await client.invoke(name, { ...(opts.request ? { method: opts.request.toUpperCase() } : {}), path: opts.path ?? "/", headers, ...(body ? { body } : {}) });
      if (opts.async === true && r.status === 202) {
        const accepted = JSON.parse(r.body.toString("utf8")) as { invocationId: string; statusUrl: string; created: boolean };
        if (opts.wait !== true) {
          output(opts, accepted, () => `${accepted.invocationId}${accepted.created ? "" : " (idempotent repeat)"}\n${accepted.statusUrl}`);
          return;
        }
        const until = Date.now() + WAIT_MAX_MS;
        let j = await client.getAsyncInvocation(accepted.invocationId);
        for (let delay = 100; (j.status === "queued" || j.status === "running") && Date.now() < until; delay = Math.min(2000, delay * 2)) {
          await new Promise((res) => setTimeout(res, delay));
          j = await client.getAsyncInvocation(accepted.invocationId);
        }
        output(opts, j, () => j.result ? j.result.body : `${j.invocationId}: ${j.status}${j.error ? ` (${j.error.code}: ${j.error.message})` : ""}`);
        if (j.status !== "succeeded") process.exitCode = 1;
        return;
      }
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
