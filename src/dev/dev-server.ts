/**
 * `stratus dev`: serves every function of a project at `http://localhost:PORT/fn/<name>/…` through the
 * production gateway (src/gateway/gateway.ts) over the unsandboxed dev driver (src/sandbox/dev/), so
 * routing, headers, request ids, limits, pools, queues and error bodies are production's own.
 *
 * A build installs missing npm dependencies from the lockfile (./ensure-deps.ts), bundles the project
 * as a deploy does (src/builder/bundle.ts) into a fresh directory, lists its functions with the
 * driver's discovery (a child process, the shared parser), and deploys each function to the gateway
 * as version `dev-<n>`: a reload is a redeploy, so old instances drain as in production. A function
 * that cannot be served (build error, load error, bad config) is deployed too, with a start that fails
 * at once with FUNCTION_LOAD_FAILED and the error as its message: the developer sees it in the
 * response, through the gateway's own error path.
 *
 * State invariants: `generation` is the latest finished build and every function it lists is deployed
 * at its version; requests that arrive while a build runs are handed to the gateway once it finished;
 * a retired build's directory is removed once no instance runs code from it.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, watch, readdirSync, type FSWatcher } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { StratusError } from "../shared/errors";
import { parseFunctionConfig, type FunctionConfig } from "../shared/function-config";
import { createLogger } from "../shared/logger";
import { HEADERS } from "../shared/protocol";
import { bundleProject, formatBundleMessage } from "../builder/bundle";
import { createDevDriver } from "../sandbox/dev/dev-driver";
import type { SandboxDriver } from "../sandbox/driver";
import { createGateway } from "../gateway/gateway";
import type { Deployment } from "../gateway/deployment";
import { pickRequestId } from "../shared/request-id";
import { parseFunctionRoute } from "../gateway/route";
import { ensureDependencies } from "./ensure-deps";

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
  /** npm's cache for installing missing dependencies (the CLI passes `~/.npm`, npm's own). */
  readonly npmCacheDir: string;
}

interface DevFunction {
  readonly name: string;
  readonly exportName: string;
  readonly config: Readonly<FunctionConfig>;
  /** Why it cannot be served (bad name, bad config, build or load error). */
  readonly error?: string;
}

interface Generation {
  readonly id: number;
  readonly outDir: string;
  /** The bundle's file name inside outDir. */
  readonly entry: string;
  /** Set when the build or discovery failed: every known function answers 502 FUNCTION_LOAD_FAILED. */
  readonly error?: string;
  readonly functions: Map<string, DevFunction>;
}

const IGNORED_DIRS = new Set(["node_modules", ".git", "dist", ".stratus"]);
/** Longest wait for a module to list its functions, ms (as the old dev server and a deploy's default). */
const DISCOVERY_TIMEOUT_MS = 10_000;

export interface DevServer {
  /** Builds, then listens. Resolves with the bound port. */
  listen(): Promise<number>;
  /** Rebuilds now (the watcher calls this). Resolves when the new generation serves. */
  reload(): Promise<void>;
  /** Stops watching, closes the server and every instance, removes temp dirs. Idempotent. */
  close(): Promise<void>;
  /** Names of the functions of the current generation. */
  functionNames(): string[];
  /** Synchronous, for a process `exit` handler: kills every instance at once (close() is the graceful way). */
  kill(): void;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** Builds a dev server (not yet listening; nothing is written to disk before `listen` or `reload`). */
export function createDevServer(options: DevServerOptions): DevServer {
  const dir = resolve(options.dir);
  const print = options.print ?? ((line: string) => console.log(line));
  let port = options.port ?? 3000;
  const root = join(tmpdir(), `stratus-dev-${randomBytes(6).toString("hex")}`);
  let generation: Generation | undefined;
  let building: Promise<Generation> | undefined;
  let rebuildQueued = false;
  let genCounter = 0;
  let closed = false;
  let listening = false;
  const watchers: FSWatcher[] = [];
  let debounce: NodeJS.Timeout | undefined;
  /** Output dirs of replaced generations, removed once no instance uses them. */
  const retired: string[] = [];
  /** Functions deployed to the gateway, with their last good config (kept when they break). */
  const deployed = new Map<string, Readonly<FunctionConfig>>();
  /** `name@version` → the error a start of that version answers, for functions that cannot be served. */
  const unloadable = new Map<string, string>();
  /** Method and URL of requests to deployed functions by request id, until their invocation record. */
  const pendingLines = new Map<string, Array<{ method: string; url: string }>>();

  const devDriver = createDevDriver({ runtimePath: options.runtimePath, stateDir: join(root, "s") });
  void devDriver.open(); // nothing runs before open(); the pool starts filling now
  // A function that cannot be served is deployed anyway; its starts fail at once with its error.
  const driver: SandboxDriver = {
    ...devDriver,
    start(spec, startOptions) {
      const error = unloadable.get(`${spec.functionName}@${spec.version}`);
      if (error !== undefined) return Promise.reject(new StratusError("FUNCTION_LOAD_FAILED", error));
      return devDriver.start(spec, startOptions);
    },
  };
  // The gateway's own logs: only its internal errors are worth a developer's line.
  const logger = createLogger({ level: "error", name: "stratus-dev" }, {
    write(line: string) {
      const j = JSON.parse(line) as { msg?: string; err?: { message?: string } };
      print(`stratus dev: ${j.msg ?? ""}${j.err?.message ? `: ${j.err.message}` : ""}`);
    },
  });
  const gateway = createGateway({
    driver,
    logger,
    nodeId: "dev",
    // Everything is callable locally: `public: false` is about tokens issued by a control plane.
    authorize: () => undefined,
    observer: {
      onInvocation(r) {
        const queue = pendingLines.get(r.requestId);
        const line = queue?.shift();
        if (queue?.length === 0) pendingLines.delete(r.requestId);
        if (line === undefined) return;
        const temp = r.instanceId === null ? "" : r.coldStart ? " cold" : " warm";
        print(`${line.method} ${line.url} ${r.status} ${r.totalMs.toFixed(1)}ms${temp}`);
      },
      onInstanceLog(functionName, line) {
        const rid = line.requestId ? ` ${line.requestId.slice(0, 8)}` : "";
        const level = line.level === "log" || line.level === "info" ? "" : ` ${line.level}`;
        print(`[${functionName}${rid}]${level} ${line.message}`);
      },
      onPlatformEvent(event) {
        if (event.level !== "error") return;
        // A load error was printed when the build found it; its failed starts would repeat it per request.
        if (event.kind === "instance-start-failed" && generation?.functions.get(event.functionName)?.error !== undefined) return;
        print(`[${event.functionName}] ${event.message}`);
      },
    },
  });

  // Requests wait for a build in progress (a saved file is served at once), then go to the gateway's
  // own handler. The gateway registers exactly one.
  const server = gateway.server;
  const handlers = server.listeners("request") as Handler[];
  if (handlers.length !== 1) throw new Error(`dev server: expected the gateway's one request handler, found ${handlers.length}`);
  const gatewayHandler = handlers[0]!;
  server.removeAllListeners("request");
  const handOver = (req: IncomingMessage, res: ServerResponse, t0: number): void => {
    const method = req.method ?? "GET";
    const url = req.url ?? "/";
    const route = parseFunctionRoute(url);
    if (route !== null && deployed.has(route.name) && !closed) {
      // The gateway records this request: name its id now, with the gateway's own sanitiser (the
      // gateway then keeps it), so the record finds its method and URL.
      const requestId = pickRequestId(req.headers);
      req.headers[HEADERS.requestId] = requestId;
      const queue = pendingLines.get(requestId);
      if (queue === undefined) pendingLines.set(requestId, [{ method, url }]);
      else queue.push({ method, url });
    } else {
      res.once("close", () => print(`${method} ${url} ${res.statusCode} ${(performance.now() - t0).toFixed(1)}ms`));
    }
    gatewayHandler(req, res);
  };
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const t0 = performance.now();
    if (building === undefined) return handOver(req, res, t0);
    void building.then(() => handOver(req, res, t0), () => handOver(req, res, t0));
  });

  const build = async (): Promise<Generation> => {
    const id = ++genCounter;
    mkdirSync(root, { recursive: true });
    const outDir = mkdtempSync(join(root, `g${id}-`));
    const functions = new Map<string, DevFunction>();
    let entry = "index.cjs";
    const failed = (err: unknown): Generation => {
      const message = err instanceof Error ? err.message : String(err);
      print(`✗ ${message}`);
      return { id, outDir, entry, error: message, functions };
    };
    try {
      await ensureDependencies(dir, { npmCacheDir: options.npmCacheDir, print });
      const bundle = await bundleProject(dir, outDir, { filesRoot: resolve(dir) });
      for (const w of bundle.warnings) print(`warning: ${formatBundleMessage(w)}`);
      if (bundle.externalNative.length > 0) print(`note: native packages left external: ${bundle.externalNative.join(", ")}`);
      if (bundle.externalPackages.length > 0) print(`note: packages reading their own files left external: ${bundle.externalPackages.join(", ")}`);
      // External packages load at run time: in dev, from the project's own node_modules (a plain child
      // process on the user's files; a deploy ships them in the artifact instead).
      const modules = join(resolve(dir), "node_modules");
      if (bundle.externalNative.length + bundle.externalPackages.length > 0 && existsSync(modules)) symlinkSync(modules, join(outDir, "node_modules"), "dir");
      entry = basename(bundle.outFile);
    } catch (err) {
      return failed(err);
    }
    try {
      for (const f of await devDriver.discover({ artifactDir: outDir, entry, timeoutMs: DISCOVERY_TIMEOUT_MS })) {
        const fallbackConfig = deployed.get(f.name) ?? parseFunctionConfig(f.name, {});
        for (const w of f.warnings ?? []) print(`warning: ${f.name}: ${w}`);
        if (f.error) {
          print(`✗ ${f.name}: ${f.error.message}`);
          functions.set(f.name, { name: f.name, exportName: f.exportName, config: fallbackConfig, error: f.error.message });
          continue;
        }
        try {
          functions.set(f.name, { name: f.name, exportName: f.exportName, config: parseFunctionConfig(f.name, f.config) });
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err);
          print(`✗ ${f.name}: ${message}`);
          functions.set(f.name, { name: f.name, exportName: f.exportName, config: fallbackConfig, error: message });
        }
      }
    } catch (err) {
      return failed(err);
    }
    return { id, outDir, entry, functions };
  };

  /** Deploys a generation to the gateway: every function at `dev-<id>`, gone ones removed. */
  const deploy = async (gen: Generation): Promise<void> => {
    const version = `dev-${gen.id}`;
    const old = new Set(deployed.keys());
    unloadable.clear();
    // A failed build keeps every known function, each answering the build's error.
    const list: DevFunction[] = gen.error === undefined
      ? [...gen.functions.values()]
      : [...deployed].map(([name, config]) => ({ name, exportName: name, config, error: gen.error }));
    for (const f of list) {
      if (f.error !== undefined) unloadable.set(`${f.name}@${version}`, f.error);
      const d: Deployment = { name: f.name, version, artifactDir: gen.outDir, entry: gen.entry, exportName: f.exportName, config: f.config, env: { ...f.config.env } };
      gateway.setFunction(d);
      deployed.set(f.name, f.config);
      old.delete(f.name);
    }
    for (const name of old) {
      deployed.delete(name);
      await gateway.removeFunction(name);
    }
  };

  /** Removes the output dirs of replaced generations no instance runs code from any more. */
  const sweepRetired = (): void => {
    for (let i = retired.length - 1; i >= 0; i--) {
      if (devDriver.inUse(retired[i]!)) continue;
      rmSync(retired[i]!, { recursive: true, force: true });
      retired.splice(i, 1);
    }
  };

  const reload = async (): Promise<void> => {
    if (closed) return;
    if (building) {
      rebuildQueued = true;
      await building;
      return;
    }
    const started = performance.now();
    building = (async () => {
      const next = await build();
      if (!closed) await deploy(next);
      return next;
    })();
    let next: Generation;
    try {
      next = await building;
    } finally {
      building = undefined;
    }
    const old = generation;
    generation = next;
    if (old) retired.push(old.outDir);
    if (closed) {
      retired.push(next.outDir);
      return;
    }
    sweepRetired();
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

  const watchTree = (top: string) => {
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
          debounce = setTimeout(() => {
            reload().catch((err: unknown) => print(`✗ reload failed: ${err instanceof Error ? err.message : String(err)}`));
          }, options.debounceMs ?? 100);
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
    add(top);
  };

  return {
    async listen() {
      await reload();
      await new Promise<void>((resolveListen, reject) => {
        server.once("error", reject);
        server.listen(port, options.host ?? "127.0.0.1", () => resolveListen());
      });
      port = (server.address() as { port: number }).port;
      listening = true;
      // Watch before saying so: a change made right after the line below must trigger a reload.
      if (options.watch !== false) watchTree(dir);
      print(`Stratus dev server: http://localhost:${port}/fn/<name>/ (project ${dir})`);
      if (generation) printFunctions(generation);
      return port;
    },
    reload,
    functionNames: () => [...(generation?.functions.keys() ?? [])],
    kill: () => devDriver.killAllNow(),
    async close() {
      if (closed) return;
      closed = true;
      clearTimeout(debounce);
      for (const w of watchers) w.close();
      if (building) await building.catch(() => undefined);
      // Instances get a short grace to finish what they serve; then the driver ends whatever is left.
      await gateway.drain(2000);
      await devDriver.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
}
