/**
 * Installs a project's npm dependencies for a build: `npm ci` from the committed lockfile, lifecycle
 * scripts off unless the project opts in with `"stratus": { "allowScripts": true }` in package.json,
 * a clean environment (nothing of the platform's env leaks into npm or install scripts), a timeout,
 * and every output line streamed to `onLog`.
 *
 * Policy (see docs/build.md): a project with dependencies must ship `package-lock.json` (or
 * `npm-shrinkwrap.json`); without one the build fails with BUILD_FAILED rather than resolving versions
 * at deploy time, so what runs is what was tested.
 */
import { spawn } from "node:child_process";
import { mkdir, readFile, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { StratusError } from "../shared/errors";

/** What the build needs to know from package.json. */
export interface ProjectPackage {
  readonly name?: string;
  readonly hasDependencies: boolean;
  readonly allowScripts: boolean;
}

/**
 * Reads `<dir>/package.json`; a missing file means "no dependencies".
 * @throws StratusError BUILD_FAILED when it is not valid JSON or `stratus.allowScripts` is not a boolean.
 */
export async function readProjectPackage(dir: string): Promise<ProjectPackage> {
  let text: string;
  try {
    text = await readFile(join(dir, "package.json"), "utf8");
  } catch {
    return { hasDependencies: false, allowScripts: false };
  }
  let pkg: Record<string, unknown>;
  try {
    pkg = JSON.parse(text) as Record<string, unknown>;
  } catch (cause) {
    throw new StratusError("BUILD_FAILED", `package.json is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  const count = (v: unknown) => (v !== null && typeof v === "object" ? Object.keys(v).length : 0);
  const stratus = (pkg.stratus ?? {}) as Record<string, unknown>;
  if (stratus.allowScripts !== undefined && typeof stratus.allowScripts !== "boolean") {
    throw new StratusError("BUILD_FAILED", 'package.json "stratus.allowScripts" must be true or false');
  }
  return {
    name: typeof pkg.name === "string" && pkg.name !== "" ? pkg.name.replace(/^@[^/]+\//, "") : undefined,
    hasDependencies: count(pkg.dependencies) + count(pkg.devDependencies) + count(pkg.optionalDependencies) > 0,
    allowScripts: stratus.allowScripts === true,
  };
}

export interface InstallOptions {
  /** The unpacked project. */
  readonly dir: string;
  /** Shared npm cache directory (content-addressed by npm, safe to share between builds). */
  readonly cacheDir: string;
  /** Empty directory used as HOME for npm. */
  readonly homeDir: string;
  readonly allowScripts: boolean;
  /** Kill npm after this long, ms. Default 300,000. */
  readonly timeoutMs?: number;
  /** Receives each output line of npm. */
  readonly onLog: (line: string) => void;
  /** Aborting kills npm. */
  readonly signal?: AbortSignal;
}

/**
 * Runs `npm ci` in `dir`.
 * @throws StratusError BUILD_FAILED (no lockfile, npm failed, timed out, aborted).
 */
export async function installDependencies(options: InstallOptions): Promise<void> {
  const { dir } = options;
  const hasLock = (f: string) => stat(join(dir, f)).then(() => true, () => false);
  if (!(await hasLock("package-lock.json")) && !(await hasLock("npm-shrinkwrap.json"))) {
    throw new StratusError("BUILD_FAILED", "package.json declares dependencies but there is no package-lock.json: run `npm install` locally and deploy the lockfile with the project");
  }
  await mkdir(options.cacheDir, { recursive: true });
  await mkdir(options.homeDir, { recursive: true });
  const args = ["ci", "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=warn"];
  if (!options.allowScripts) args.push("--ignore-scripts");
  options.onLog(`$ npm ${args.join(" ")}${options.allowScripts ? "   (lifecycle scripts allowed by package.json stratus.allowScripts)" : ""}`);
  // npm sits next to node in every official distribution; the explicit PATH keeps the host's out.
  const env: Record<string, string> = {
    PATH: `${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`,
    HOME: options.homeDir,
    npm_config_cache: options.cacheDir,
    npm_config_update_notifier: "false",
    npm_config_userconfig: join(options.homeDir, ".npmrc"),
    LANG: "C.UTF-8",
  };
  const timeoutMs = options.timeoutMs ?? 300_000;
  await new Promise<void>((resolve, reject) => {
    const child = spawn("npm", args, { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let why: string | null = null;
    const kill = (reason: string) => {
      why ??= reason;
      // detached: npm and its children form one process group; kill them all.
      try { if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL"); } catch { /* already gone */ }
    };
    const timer = setTimeout(() => kill(`npm ci timed out after ${timeoutMs} ms`), timeoutMs);
    const onAbort = () => kill("the build was cancelled");
    options.signal?.addEventListener("abort", onAbort, { once: true });
    const tail: string[] = [];
    for (const stream of [child.stdout, child.stderr]) {
      let buf = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk: string) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n")) !== -1) {
          const line = buf.slice(0, i).trimEnd();
          buf = buf.slice(i + 1);
          if (line !== "") { options.onLog(line); tail.push(line); if (tail.length > 5) tail.shift(); }
        }
      });
      stream.on("end", () => { if (buf.trim() !== "") { options.onLog(buf.trimEnd()); tail.push(buf.trimEnd()); } });
    }
    child.on("error", (err) => { clearTimeout(timer); reject(new StratusError("BUILD_FAILED", `Could not run npm: ${err.message}`, { cause: err })); });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      if (why !== null) reject(new StratusError("BUILD_FAILED", why));
      else if (code !== 0) reject(new StratusError("BUILD_FAILED", `npm ci failed (${signal ?? `exit ${code}`}): ${tail.join(" | ") || "no output"}`));
      else resolve();
    });
  });
}
