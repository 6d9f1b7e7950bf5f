/**
 * `stratus dev`: serves every function of a project at `http://localhost:PORT/fn/<name>/…`.
 * Bundles the project (src/builder/bundle.ts) into a temp dir, runs discovery in a child, then starts one
 * runtime child per function on its first request (cold) and proxies to it over its Unix socket with
 * undici, streaming bodies both ways. A file change rebuilds (debounced); the old children drain and the
 * next request starts a new one. The runtime enforces config, timeouts and body limits exactly as in
 * production; a child that timed out or crashed is replaced on the next request.
 *
 * State invariant: `generation` is the latest finished build; requests wait for a build in progress.
 * Children belong to one generation and are closed when it is replaced.
 */
import http from "node:http";
import { mkdtempSync, rmSync, watch, readdirSync, type FSWatcher } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pipeline } from "node:stream/promises";
import { randomUUID } from "node:crypto";
import { StratusError, toErrorResponse } from "../shared/errors";
import { parseFunctionConfig, type FunctionConfig } from "../shared/function-config";
import { isValidFunctionName } from "../shared/names";
import { HEADERS } from "../shared/protocol";
import { bundleProject, formatBundleMessage } from "../builder/bundle";
import { runDiscovery } from "./run-discovery";
import { DevInstance, type DevLogLine } from "./dev-instance";

export interface DevServerOptions {
  /** Project folder. */
  readonly dir: string;
  /** Path of dist/runtime.cjs. */
  readonly runtimePath: string;
  /** Port to listen on; 0 picks a free one. Default 3000. */
  readonly port?: number;
  /** Default "127.0.0.1" (loopback only). */
  readonly host?: string;
  /** Human output (one line per request, function output, build results). Default console.log. */
  readonly print?: (line: string) => void;
  /** Watch files and reload on change. Default true. */
  readonly watch?: boolean;
  /** Debounce of file events, ms. Default 100. */
  readonly debounceMs?: number;
}

interface DevFunction {
  readonly name: string;
  readonly exportName: string;
  readonly config?: Readonly<FunctionConfig>;
  /** Why it cannot be served (bad name, bad config). */
  readonly error?: string;
  instance?: DevInstance;
  starting?: Promise<DevInstance>;
}

interface Generation {
  readonly id: number;
  readonly outDir: string;
  readonly entry?: string;
  /** Set when the build or discovery failed: every function answers 502 FUNCTION_LOAD_FAILED. */
  readonly error?: string;
  readonly functions: Map<string, DevFunction>;
}

const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te", "trailer", "expect", "host"]);
const IGNORED_DIRS = new Set(["node_modules", ".git", "dist", ".stratus"]);

export interface DevServer {
  /** Builds, then listens. Resolves with the bound port. */
  listen(): Promise<number>;
  /** Rebuilds now (the watcher calls this). Resolves when the new generation serves. */
  reload(): Promise<void>;
  /** Stops watching, closes the server and every child, removes temp dirs. Idempotent. */
  close(): Promise<void>;
  /** Names of the functions of the current generation. */
  functionNames(): string[];
}

/** Builds a dev server (not yet listening). */
export function createDevServer(options: DevServerOptions): DevServer {
  const dir = resolve(options.dir);
  const print = options.print ?? ((line: string) => console.log(line));
  let port = options.port ?? 3000;
  let generation: Generation | undefined;
  let building: Promise<Generation> | undefined;
  let rebuildQueued = false;
  let genCounter = 0;
  let closed = false;
  let listening = false;
  const watchers: FSWatcher[] = [];
  let debounce: NodeJS.Timeout | undefined;

  const onLog = (line: DevLogLine) => {
    const rid = line.requestId ? ` ${line.requestId.slice(0, 8)}` : "";
    const level = line.level === "log" || line.level === "info" ? "" : ` ${line.level}`;
    print(`[${line.functionName}${rid}]${level} ${line.message}`);
  };

  const build = async (): Promise<Generation> => {
    const id = ++genCounter;
    const outDir = mkdtempSync(join(tmpdir(), "stratus-dev-"));
    const functions = new Map<string, DevFunction>();
    let entry: string;
    try {
      const bundle = await bundleProject(dir, outDir, { filesRoot: resolve(dir) });
      for (const w of bundle.warnings) print(`warning: ${formatBundleMessage(w)}`);
      if (bundle.externalNative.length > 0) print(`note: native packages left external: ${bundle.externalNative.join(", ")}`);
      entry = bundle.outFile;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      print(`✗ ${message}`);
      return { id, outDir, error: message, functions };
    }
    try {
      for (const f of await runDiscovery(options.runtimePath, entry)) {
        for (const w of f.warnings ?? []) print(`warning: ${f.name}: ${w}`);
        if (f.error) {
          print(`✗ ${f.name}: ${f.error.message}`);
          functions.set(f.name, { name: f.name, exportName: f.exportName, error: f.error.message });
          continue;
        }
        functions.set(f.name, { name: f.name, exportName: f.exportName, config: parseFunctionConfig(f.name, f.config) });
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      print(`✗ ${message}`);
      return { id, outDir, entry, error: message, functions };
    }
    return { id, outDir, entry, functions };
  };

  const retire = (gen: Generation) => {
    const closing = [...gen.functions.values()].map(async (f) => {
      const inst = f.instance ?? (await f.starting?.catch(() => undefined));
      await inst?.close();
    });
    void Promise.all(closing).then(() => rmSync(gen.outDir, { recursive: true, force: true }));
  };

  const reload = async (): Promise<void> => {
    if (building) {
      rebuildQueued = true;
      await building;
      return;
    }
    const started = performance.now();
    building = build();
    const next = await building;
    building = undefined;
    const old = generation;
    generation = next;
    if (old) retire(old);
    if (closed) {
      retire(next);
      return;
    }
    if (!next.error) {
      const ms = Math.round(performance.now() - started);
      print(`${old ? "reloaded" : "built"} in ${ms} ms`);
      if (listening) printFunctions(next);
    }
    if (rebuildQueued) {
      rebuildQueued = false;
      await reload();
    }
  };

  const printFunctions = (gen: Generation) => {
    for (const f of gen.functions.values()) if (!f.error) print(`  ${f.name} → http://localhost:${port}/fn/${f.name}/`);
  };

  const current = async (): Promise<Generation> => {
    if (building) await building;
    return generation!;
  };

  const instanceFor = async (gen: Generation, f: DevFunction): Promise<{ inst: DevInstance; cold: boolean }> => {
    if (f.instance?.alive) return { inst: f.instance, cold: false };
    f.instance = undefined;
    f.starting ??= (async () => {
      const inst = new DevInstance({
        runtimePath: options.runtimePath,
        entry: gen.entry!,
        exportName: f.exportName,
        functionName: f.name,
        config: f.config!,
        socketPath: join(gen.outDir, `${f.name}.sock`),
        onLog,
      });
      try {
        await inst.start();
        f.instance = inst;
        return inst;
      } finally {
        f.starting = undefined;
      }
    })();
    return { inst: await f.starting, cold: true };
  };

  const sendError = (res: http.ServerResponse, err: unknown, requestId: string) => {
    const r = toErrorResponse(err, requestId);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(r.status, { ...r.headers, "content-type": "application/json; charset=utf-8", [HEADERS.errorSource]: r.source, [HEADERS.requestId]: requestId });
    res.end(JSON.stringify(r.body));
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<number> => {
    const url = req.url ?? "/";
    const requestId = (req.headers[HEADERS.requestId] as string | undefined) ?? randomUUID();
    if (!url.startsWith("/fn/")) {
      sendError(res, new StratusError("NOT_FOUND", "Functions are served under /fn/<name>/"), requestId);
      return 404;
    }
    let end = 4;
    while (end < url.length && url[end] !== "/" && url[end] !== "?") end++;
    const name = decodeURIComponent(url.slice(4, end));
    const rest = url.slice(end);
    const path = rest === "" ? "/" : rest.startsWith("?") ? `/${rest}` : rest;
    if (!isValidFunctionName(name)) {
      sendError(res, new StratusError("INVALID_FUNCTION_NAME"), requestId);
      return 400;
    }
    const gen = await current();
    if (gen.error) {
      sendError(res, new StratusError("FUNCTION_LOAD_FAILED", gen.error), requestId);
      return 502;
    }
    const f = gen.functions.get(name);
    if (!f) {
      sendError(res, new StratusError("FUNCTION_NOT_FOUND", `No function "${name}" in this project`), requestId);
      return 404;
    }
    if (f.error) {
      sendError(res, new StratusError("FUNCTION_LOAD_FAILED", f.error), requestId);
      return 502;
    }
    let inst: DevInstance;
    let cold: boolean;
    try {
      ({ inst, cold } = await instanceFor(gen, f));
    } catch (err) {
      sendError(res, err, requestId);
      return 502;
    }
    res.setHeader(HEADERS.coldStart, String(cold));
    (res as http.ServerResponse & { stratusCold?: boolean }).stratusCold = cold;
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
    headers[HEADERS.requestId] = requestId;
    const hasBody = req.headers["transfer-encoding"] !== undefined || (req.headers["content-length"] !== undefined && req.headers["content-length"] !== "0");
    try {
      const up = await inst.client!.request({ path, method: req.method as "GET", headers, body: hasBody ? req : undefined });
      const out: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
      if (up.headers[HEADERS.instanceUnusable] === "1" && f.instance === inst) {
        // The runtime exits once it answered; the next request starts a fresh child.
        f.instance = undefined;
        void inst.close();
      }
      res.writeHead(up.statusCode, out);
      await pipeline(up.body, res);
      return up.statusCode;
    } catch (err) {
      if (req.destroyed && res.destroyed) return 499;
      if (f.instance === inst) f.instance = undefined;
      const exit = await Promise.race([inst.exited, new Promise<null>((r) => setTimeout(() => r(null), 1000))]);
      void inst.close();
      const why = exit ? ` (exit ${exit.code ?? exit.signal})` : "";
      sendError(res, new StratusError("FUNCTION_CRASHED", `The function instance ended without answering${why}`, { cause: err }), requestId);
      return 502;
    }
  };

  const server = http.createServer((req, res) => {
    const t0 = performance.now();
    const method = req.method ?? "GET";
    const url = req.url ?? "/";
    handle(req, res).then(
      (status) => {
        const ms = (performance.now() - t0).toFixed(1);
        const cold = (res as http.ServerResponse & { stratusCold?: boolean }).stratusCold;
        const temp = cold === undefined ? "" : cold ? " cold" : " warm";
        print(`${method} ${url} ${status} ${ms}ms${temp}`);
      },
      (err: unknown) => {
        print(`internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        sendError(res, new StratusError("INTERNAL"), "");
      },
    );
  });

  const watchTree = (root: string) => {
    const add = (d: string) => {
      try {
        const w = watch(d, (_event, file) => {
          if (file && IGNORED_DIRS.has(String(file))) return;
          if (file) {
            // A new folder needs its own watcher (non-recursive watches, so node_modules is never walked).
            try {
              const p = join(d, String(file));
              if (readdirSync(p, { withFileTypes: true }) && !watchers.some((x) => (x as FSWatcher & { path?: string }).path === p)) add(p);
            } catch {
              // not a directory, or gone
            }
          }
          clearTimeout(debounce);
          debounce = setTimeout(() => void reload(), options.debounceMs ?? 100);
        });
        (w as FSWatcher & { path?: string }).path = d;
        watchers.push(w);
      } catch {
        return;
      }
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory() && !IGNORED_DIRS.has(e.name) && !e.name.startsWith(".")) add(join(d, e.name));
      }
    };
    add(root);
  };

  return {
    async listen() {
      await reload();
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, options.host ?? "127.0.0.1", () => resolve());
      });
      port = (server.address() as { port: number }).port;
      listening = true;
      print(`Stratus dev server: http://localhost:${port}/fn/<name>/ (project ${dir})`);
      if (generation) printFunctions(generation);
      if (options.watch !== false) watchTree(dir);
      return port;
    },
    reload,
    functionNames: () => [...(generation?.functions.keys() ?? [])],
    async close() {
      if (closed) return;
      closed = true;
      clearTimeout(debounce);
      for (const w of watchers) w.close();
      server.close();
      server.closeAllConnections();
      if (building) await building.catch(() => undefined);
      if (generation) {
        const gen = generation;
        await Promise.all(
          [...gen.functions.values()].map(async (f) => {
            const inst = f.instance ?? (await f.starting?.catch(() => undefined));
            await inst?.close(2000);
          }),
        );
        rmSync(gen.outDir, { recursive: true, force: true });
      }
    },
  };
}
