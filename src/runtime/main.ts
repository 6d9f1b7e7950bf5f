/**
 * Entry of the instance runtime (bundled to dist/runtime.cjs). Follows src/shared/protocol.ts:
 *  1. reads the STRATUS_* environment, then deletes every STRATUS_* variable before user code runs;
 *  2. captures console/stdout/stderr as structured log lines;
 *  3. discovery mode (STRATUS_DISCOVER=1): loads the module, prints the DISCOVERY_PREFIX line, exits;
 *  4. otherwise loads the module once, builds the server, unlinks a stale socket, listens, prints READY_LINE
 *     (a pre-warm slot built its server and listens before its message: it binds the handler, prints READY_LINE).
 *
 * One-shot loading: the module named by STRATUS_ENTRY is the only code this process ever loads on its
 * own account. There is no endpoint that loads code, and the environment that names the entry is gone
 * before user code runs, so nothing reachable from a request can make the runtime load other code.
 *
 * Generic mode (STRATUS_GENERIC=1, a pre-warmed pool slot): the runtime preloads its server code, builds the
 * instance's server, warms it up on STRATUS_SOCKET and keeps it listening there, detached (requests held until
 * the handler is bound after the message: FunctionServer.detach), prints
 * GENERIC_READY_LINE and reads ONE SpecializeMessage from the inherited fd SPECIALIZE_FD (or STRATUS_SPECIALIZE_FD:
 * the Docker driver's attach channel passes 0, the container's one-shot stdin) up to a newline or EOF, then
 * closes the fd before any user code runs — or, with STRATUS_SPECIALIZE_SOCKET (the Docker driver's socket
 * channel), accepts one connection on that Unix socket, stops listening, removes it and reads the message
 * from that connection up to a newline or EOF, the connection closed before user code runs. The driver holds
 * the only other end and closes it after writing, so the channel is gone for good: a specialised runtime can
 * never be told to load other code.
 *
 * Express and zod are loaded lazily (a dynamic import that esbuild keeps lazy),  so discovery does not pay for Express and
 * an instance given STRATUS_CONFIG does not pay for zod.
 */
import { closeSync, openSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { startupSnapshot } from "node:v8";
// Static, not import(): code the boot loader compiles (vm.Script) has no dynamic-import callback of Node's.
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DISCOVERY_PREFIX, ENV, EXIT, GENERIC_READY_LINE, READY_LINE, SPECIALIZE_FD, type CodeCacheState, type SpecializeMessage } from "../shared/protocol";
import { isStratusError } from "../shared/errors";
import type { FunctionConfig } from "../shared/function-config";
import { installOutputCapture } from "./output-capture";
import { listFunctions, loadModule, projectNameOfEntry, readRegistrations, selectFunction, setEntryImporter } from "./loader";
import { describeLoadError } from "./load-error";
import { requestContext } from "./request-context";
import { warmRequests } from "./warm-requests";

/**
 * With a ready file (SpecializeMessage.readyFile), how long after it the READY line is also printed on
 * stdout, ms: the driver's fallback when its watch on the file failed, kept off the first request's path.
 */
const READY_ECHO_DELAY_MS = 250;

interface RuntimeEnv {
  socket?: string;
  entry?: string;
  exportName?: string;
  functionName?: string;
  config?: string;
  dev: boolean;
  instanceId?: string;
  discover: boolean;
  generic: boolean;
  specializeFd?: string;
  specializeSocket?: string;
}

/** Reads the protocol's variables and removes every STRATUS_* variable from `env`. */
function takeEnv(env: NodeJS.ProcessEnv): RuntimeEnv {
  const out: RuntimeEnv = {
    socket: env[ENV.socket],
    entry: env[ENV.entry],
    exportName: env[ENV.exportName],
    functionName: env[ENV.functionName],
    config: env[ENV.config],
    dev: env[ENV.dev] === "1",
    instanceId: env[ENV.instanceId],
    discover: env[ENV.discover] === "1",
    generic: env[ENV.generic] === "1",
    specializeFd: env[ENV.specializeFd],
    specializeSocket: env[ENV.specializeSocket],
  };
  for (const key of Object.keys(env)) if (key.startsWith("STRATUS_")) delete env[key];
  return out;
}

/** The runtime (see the file comment). Exported for the startup snapshot's entry (snapshot-entry.ts). */
export async function main(): Promise<void> {
  const realWrite = process.stdout.write.bind(process.stdout);
  const env = takeEnv(process.env);
  // Set by the boot loader (boot.cjs) when it compiled this bundle; reported on the READY line.
  const codeCacheKey = Symbol.for("stratus.codeCache");
  const codeCache = (globalThis as Record<symbol, unknown>)[codeCacheKey] as CodeCacheState | undefined;
  delete (globalThis as Record<symbol, unknown>)[codeCacheKey];
  const importerKey = Symbol.for("stratus.importEntry");
  const importer = (globalThis as Record<symbol, unknown>)[importerKey] as ((url: string) => Promise<unknown>) | undefined;
  delete (globalThis as Record<symbol, unknown>)[importerKey];
  if (importer !== undefined) setEntryImporter(importer);
  // Source-mapped stacks (file:line of the user's sources) where a human reads them; production keeps
  // the start-up cost of parsing maps off the cold path.
  if (env.dev || env.discover) process.setSourceMapsEnabled(true);
  const capture = installOutputCapture(() => requestContext.getStore()?.requestId);
  const { emit } = capture;
  const die = (code: number, message: string): never => {
    emit("error", message);
    capture.flush();
    process.exit(code);
  };

  let preloaded: Promise<typeof import("./function-server")> | undefined;
  /**
   * A slot's own server, built, warmed up and listening on the instance's socket before the message, its
   * requests held until `bindSlotServer` gives it the function (undefined: build one after the load).
   */
  let slotServer: import("./function-server").FunctionServer | undefined;
  let bindSlotServer: ((fn: import("./function-server").BoundFunction) => void) | undefined;
  /** Where to announce READY besides stdout (SpecializeMessage.readyFile), if the driver asked. */
  let readyFile: string | undefined;
  if (env.generic) {
    // Pay for Express now, while the slot waits, not on the cold path.
    preloaded = import("./function-server");
    const { createFunctionServer: warm } = await preloaded;
    // One throwaway module loaded and forgotten, and one throwaway server answering real requests over a
    // private socket, load and compile everything the function's load and its first request would
    // otherwise pay for (Node's CommonJS loader; Express's lazy parts, the body path — buffering and a JSON
    // parse of req.body — the HTTP parser): measured 25–160 ms off the first request after specialisation
    // (with the body parsers of the time). Nothing of it reaches the function: the module is gone from
    // require.cache, the server and its socket are closed, and a slot's output before its message is
    // never forwarded (nor is any log, metric or invocation record made: no gateway saw these requests).
    // The `performance` global loads perf_hooks on first use (~0.5–0.75 ms in a CPU profile of the cold
    // path, where initMs is measured with it): pay it here.
    performance.now();
    await warmLoader();
    // The instance's own server (Express app, router, HTTP server), built now and warmed up on the
    // instance's socket, where it keeps listening: the message then only loads the module and binds
    // its handler (no app to build, no listen, and the first request meets code that already served
    // this very app). Until bound, it holds whatever arrives (only the driver's side can reach the socket).
    const warmServer = warm({ functionName: "warm-up", handler: warmHandler, config: { timeout: 5000, maxBodyBytes: 1024 } as FunctionConfig, dev: false, emit });
    if (env.socket !== undefined) {
      // What a fresh start does before it listens (a stale socket), done while the slot waits.
      unlinkStale(env.socket);
      if (await warmUp(warmServer.server, env.socket)) {
        try {
          bindSlotServer = warmServer.detach();
          slotServer = warmServer;
        } catch {
          await new Promise<void>((resolve) => warmServer.server.close(() => resolve()));
          unlinkStale(env.socket);
        }
      }
    }
    let message: SpecializeMessage;
    if (env.specializeSocket !== undefined) {
      // Listening before GENERIC_READY_LINE: the driver connects once it has seen that line.
      const received = await listenOnce(env.specializeSocket).catch((err: Error) => die(EXIT.badEnvironment, `cannot listen on ${env.specializeSocket}: ${err.message}`));
      realWrite(`${GENERIC_READY_LINE}\n`);
      try {
        message = JSON.parse(await received.message) as SpecializeMessage;
      } catch (err) {
        die(EXIT.badEnvironment, `no valid specialisation message on ${env.specializeSocket}: ${(err as Error).message}`);
        return;
      }
    } else {
      const fd = env.specializeFd === undefined ? SPECIALIZE_FD : Number(env.specializeFd);
      if (!Number.isInteger(fd) || fd < 0) die(EXIT.badEnvironment, `${ENV.specializeFd} is not an fd number`);
      realWrite(`${GENERIC_READY_LINE}\n`);
      try {
        message = JSON.parse(await readOnce(fd)) as SpecializeMessage;
      } catch (err) {
        die(EXIT.badEnvironment, `no valid specialisation message on fd ${fd}: ${(err as Error).message}`);
        return;
      }
    }
    readyFile = typeof message.readyFile === "string" && message.readyFile !== "" ? message.readyFile : undefined;
    // The code was mounted over the working directory after this process entered it: enter it again so
    // relative paths see the function's files, as after a fresh start (the Docker driver's cwd is the code dir).
    try {
      process.chdir(process.cwd());
    } catch {
      // the cwd is gone: keep it, as a fresh start would have failed the same way
    }
    for (const [k, v] of Object.entries(message.env ?? {})) if (!k.startsWith("STRATUS_")) process.env[k] = String(v);
    env.entry = message.entry;
    env.exportName = message.exportName;
    env.functionName = message.functionName;
    env.config = JSON.stringify(message.config);
    env.instanceId = message.instanceId;
  }

  if (!env.entry) die(EXIT.badEnvironment, `${ENV.entry} is not set`);
  const entry = env.entry as string;

  let mod: unknown;
  const loadStart = performance.now();
  try {
    mod = await loadModule(entry);
  } catch (err) {
    const message = describeLoadError(err);
    if (env.discover) realWrite(`${DISCOVERY_PREFIX}${JSON.stringify({ functions: [], error: { code: "FUNCTION_LOAD_FAILED", message } })}\n`);
    die(EXIT.loadFailed, `The function module failed to load: ${message}`);
  }

  if (env.discover) {
    try {
      const { parseFunctionConfig } = await import("../shared/function-config");
      const functions = listFunctions(mod, projectNameOfEntry(entry), parseFunctionConfig, readRegistrations());
      realWrite(`${DISCOVERY_PREFIX}${JSON.stringify({ functions })}\n`);
    } catch (err) {
      const message = isStratusError(err) ? err.message : String(err);
      realWrite(`${DISCOVERY_PREFIX}${JSON.stringify({ functions: [], error: { code: "FUNCTION_LOAD_FAILED", message } })}\n`);
      die(EXIT.loadFailed, message);
    }
    capture.flush();
    process.exit(EXIT.ok);
  }

  if (!env.socket || !env.exportName) die(EXIT.badEnvironment, `${ENV.socket} and ${ENV.exportName} must be set`);
  const functionName = env.functionName ?? env.exportName!;
  let handler;
  let config: Readonly<FunctionConfig>;
  try {
    const selected = selectFunction(mod, env.exportName!, readRegistrations());
    handler = selected.handler;
    // The platform passes the config it validated at deploy; zod (the largest part of the bundle) is
    // loaded only when the runtime must validate itself.
    config = env.config ? (JSON.parse(env.config) as FunctionConfig) : (await import("../shared/function-config")).parseFunctionConfig(functionName, selected.rawConfig);
    // The Lambda form is an opt-in of the config (never guessed from the handler's arity): src/runtime/lambda-adapter.ts.
    if (config.handlerType === "lambda") handler = (await import("./lambda-adapter")).adaptLambdaHandler(handler, { functionName, memoryMb: config.memory, timeoutMs: config.timeout, maxBodyBytes: config.maxBodyBytes });
  } catch (err) {
    die(EXIT.loadFailed, isStratusError(err) ? err.message : describeLoadError(err));
    return;
  }

  const { createFunctionServer } = await (preloaded ?? import("./function-server"));
  let exiting = false;
  const bound = {
    functionName,
    handler,
    config,
    dev: env.dev,
    onUnusable: () => {
      // The platform replaces this instance; leave once what is in flight has answered.
      void fs.drain().then(() => exit(EXIT.ok));
    },
  };
  const fs = slotServer ?? createFunctionServer({ ...bound, emit });
  const exit = (code: number) => {
    capture.flush();
    process.exit(code);
  };
  const crash = (err: unknown) => {
    const rid = requestContext.getStore()?.requestId;
    emit("error", `Uncaught ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`, rid);
    if (exiting) return;
    exiting = true;
    void fs.answerCrash().then(() => exit(EXIT.crashed));
  };
  process.on("uncaughtException", crash);
  process.on("unhandledRejection", crash);
  process.once("SIGTERM", () => void fs.drain().then(() => exit(EXIT.ok)));

  // Init time: loading (and running the top level of) the user's module, reported with READY.
  const initMs = Math.round((performance.now() - loadStart) * 100) / 100;
  const announce = (): void => {
    const line = `${READY_LINE} ${JSON.stringify(codeCache === undefined ? { initMs } : { initMs, codeCache })}`;
    if (readyFile !== undefined) {
      try {
        // Written aside, then renamed: the driver sees the name only with the whole line in it.
        writeFileSync(`${readyFile}.part`, line);
        renameSync(`${readyFile}.part`, readyFile);
        // The driver takes the file. The line on stdout (its fallback, should its watch have failed) goes
        // through containerd-shim and dockerd to the driver's attach stream: three processes to wake, and
        // the gateway's output parsing, all beside the instance's first request. Printed once that request
        // has had its turn.
        setTimeout(() => realWrite(`${line}\n`), READY_ECHO_DELAY_MS);
        return;
      } catch {
        // the driver gets the line on stdout now
      }
    }
    realWrite(`${line}\n`);
  };
  fs.server.on("error", (err) => die(EXIT.badEnvironment, `Cannot listen on ${env.socket}: ${err.message}`));
  if (bindSlotServer !== undefined) {
    // Listening since the slot's warm-up: bound now, it serves what it held and everything after.
    bindSlotServer(bound);
    announce();
    return;
  }
  // A slot removed any stale socket while it waited (above): an ENOENT here costs an Error with its stack.
  if (!env.generic) unlinkStale(env.socket!);
  fs.server.listen(env.socket, announce);
}

/** Removes a stale socket at `path` (a previous instance's), if there is one. */
function unlinkStale(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // no stale socket: the usual case
  }
}

/** The warm-up server's handler: echoes a POST's JSON body, answers a GET with text (as res.send does). */
function warmHandler(req: unknown, res: unknown): void {
  const r = res as { json(b: unknown): void; send(b: string): void };
  if ((req as { method: string }).method === "POST") r.json((req as { body: unknown }).body);
  else r.send("warm");
}

/**
 * Loads and forgets one throwaway CommonJS module from /tmp (the sandbox's own tmpfs) through
 * `loadModule`, the path the function's module takes: the first `require` of a file in a process
 * compiles Node's resolver and module wrapper (measured: the function's load then takes 0.4–0.5 ms of
 * CPU instead of 0.8–1.1). Failures are ignored: warming is an optimisation only.
 */
async function warmLoader(): Promise<void> {
  // tmpdir(): /tmp in a sandbox; the code-cache producer runs outside one and gives its own private dir.
  const path = join(tmpdir(), `.stratus-warm-${process.pid}.js`);
  try {
    writeFileSync(path, "module.exports = { warm: { func: (req, res) => res.send('warm'), config: {} } };\n", { mode: 0o600 });
    selectFunction(await loadModule(path), "warm", readRegistrations());
    delete createRequire(path).cache[path];
  } catch {
    // not warmed: the function's load pays instead
  } finally {
    try {
      unlinkSync(path);
    } catch {
      // not written
    }
  }
}

/**
 * Serves a few requests (a JSON POST and a plain GET, each on its own connection with the headers the
 * gateway sends, as a first request arrives) on the Unix socket `path` to `server`, which then stays
 * listening there (true). On a failure it is closed and the socket removed (false): warming is an
 * optimisation only, and the instance then builds its server after the message, as a fresh start does.
 */
async function warmUp(server: import("node:http").Server, path: string): Promise<boolean> {
  let listening = false;
  let ok = false;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => {
        server.off("error", reject);
        resolve();
      });
    });
    listening = true;
    await warmRequests(path, "warm-up");
    ok = true;
  } catch {
    // not warmed: the first request pays instead
  }
  if (ok) return true;
  if (listening) await new Promise<void>((resolve) => server.close(() => resolve()));
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
  return false;
}

/**
 * Listens on the Unix socket `path` for ONE connection (the driver's): resolves once listening with a
 * promise of the message (wrapped). The first connection stops the listener at once (server.close(): no second
 * connection can be accepted, a queued one is reset) and removes the path; the message is read up to its first
 * newline, or to EOF when the sender sends none (≤ 1 MiB; nothing after the newline is ever read), and the
 * connection destroyed before the promise resolves, so no user code ever runs while any end of the channel is
 * open in this process. Only root (the driver) and this sandbox can reach the path: the socket dir is private
 * to the sandbox (mode 0700, inside a root-only dir on the host).
 */
function listenOnce(path: string): Promise<{ message: Promise<string> }> {
  try {
    unlinkSync(path);
  } catch {
    // no stale socket
  }
  return new Promise((listening, failed) => {
    let resolveMessage!: (text: string) => void;
    let rejectMessage!: (err: Error) => void;
    const message = new Promise<string>((resolve, reject) => {
      resolveMessage = resolve;
      rejectMessage = reject;
    });
    const server = createServer({ allowHalfOpen: true });
    server.once("connection", (sock) => {
      server.close();
      try {
        unlinkSync(path);
      } catch {
        // libuv removed it with the listener
      }
      readMessage(sock).then(resolveMessage, rejectMessage);
    });
    server.once("error", failed);
    // Wrapped: resolving with the promise itself would wait for the message.
    server.listen(path, () => listening({ message }));
  });
}

/**
 * Reads one message from `fd` — up to its first newline, or to EOF when the sender sends none (it closes
 * its end after one message either way) — then closes the fd: after this the process holds no
 * specialisation channel, and nothing sent after the newline is ever read. Not waiting for the EOF
 * saves a wake-up when the newline and the sender's close arrive apart. Resolves with the text; rejects
 * on a read error or > 1 MiB.
 */
function readOnce(fd: number): Promise<string> {
  return readMessage(new Socket({ fd, readable: true, writable: false }), () => {
    // libuv never closes fds 0–2 with their handle: close it here. Then put /dev/null in its place (the
    // lowest free fd, which is this one), as Node does at start-up for a missing stdio fd, so a later
    // `process.stdin` works.
    if (fd <= 2) {
      try {
        closeSync(fd);
        const n = openSync("/dev/null", "r");
        if (n !== fd) closeSync(n);
      } catch {
        // no /dev/null: user code that reads stdin gets an error instead of EOF
      }
    }
  });
}

/**
 * The one way both channels read the message: up to the first newline, or to the end when the sender
 * sends none (≤ 1 MiB; nothing after the newline is read), then the socket is destroyed and, once it is
 * closed (`afterClose` first), the text resolves. Rejects on a read error or a message over 1 MiB.
 */
function readMessage(sock: Socket, afterClose: () => void = () => {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      sock.once("close", () => {
        afterClose();
        resolve(Buffer.concat(chunks).toString("utf8"));
      });
      sock.destroy();
    };
    sock.on("data", (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > 1024 * 1024) return void sock.destroy(new Error("specialisation message too large"));
      const nl = c.indexOf(10);
      chunks.push(nl < 0 ? c : c.subarray(0, nl));
      if (nl >= 0) finish();
    });
    sock.once("error", reject);
    sock.once("end", finish);
  });
}

// Building the startup snapshot (snapshot-entry.ts), main() runs when an instance starts from the blob.
if (!startupSnapshot.isBuildingSnapshot()) void main();
