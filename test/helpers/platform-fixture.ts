// Starts a real platform (process driver, SQLite, gateway, API) on port 0 in a temp data dir, for
// API-level tests. Needs `npm run build` (the sandbox runs dist/runtime.cjs).
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createPlatform, type Platform } from "../../src/up/platform";
import { resolvePlatformConfig } from "../../src/shared/platform-config";
import { createSilentLogger } from "../../src/shared/logger";
import { makeTarGz } from "./make-tar-gz";

export const RUNTIME_PATH = resolve("dist/runtime.cjs");

export interface PlatformFixture {
  platform: Platform;
  url: string;
  readonly token: string;
  readonly dataDir: string;
  close(): Promise<void>;
  /** Stops the platform (keeping the data dir) and starts a new one on it. */
  restart(): Promise<void>;
}

/** Starts the platform. `flags` are platform-config flags (dotted keys). */
export async function startPlatform(flags: Record<string, unknown> = {}): Promise<PlatformFixture> {
  if (!existsSync(RUNTIME_PATH)) throw new Error(`${RUNTIME_PATH} is missing: run \`npm run build\` first`);
  // Short paths: instance sockets live under the data dir (Unix socket paths are limited to 107 bytes).
  const root = await mkdtemp(join(tmpdir(), "st-api-"));
  const dataDir = join(root, "d");
  // Suites deploy and poll far faster than a person: the API's per-token limits (rateLimit.*, tested
  // by test/adversarial/d-api.test.ts with its own values) are raised unless a suite sets them.
  const config = resolvePlatformConfig({ flags: { port: 0, dataDir, logLevel: "silent", "rateLimit.deployBurst": 1_000_000, "rateLimit.requestBurst": 10_000_000, ...flags } });
  const platform = createPlatform(config, { logger: createSilentLogger(), runtimePath: RUNTIME_PATH });
  const started = await platform.listen();
  if (started.adminToken === null) throw new Error("a fresh data dir must yield an admin token");
  const fx: PlatformFixture = {
    platform, url: started.url, token: started.adminToken, dataDir,
    async close() {
      await fx.platform.close();
      await rm(root, { recursive: true, force: true });
    },
    async restart() {
      await fx.platform.close();
      fx.platform = createPlatform(config, { logger: createSilentLogger(), runtimePath: RUNTIME_PATH });
      const again = await fx.platform.listen();
      if (again.adminToken !== null) throw new Error("a restart must not mint another admin token");
      fx.url = again.url;
    },
  };
  return fx;
}

/** A project archive from `{ path: content }`. */
export function project(files: Record<string, string>): Promise<Buffer> {
  return makeTarGz(Object.entries(files).map(([name, body]) => ({ name, body })));
}

/** The outcome of a deploy through the API: status, NDJSON events and the final line. */
export interface DeployOutcome {
  status: number;
  body: unknown;
  events: Array<{ type: string; [k: string]: unknown }>;
  final: { type: string; functions?: Array<{ name: string; version: string; url: string; status: string }>; error?: { code: string; message: string } } | null;
}

/** POSTs an archive to /api/v1/deployments and reads the whole answer. */
export async function deploy(fx: Pick<PlatformFixture, "url" | "token">, archive: Buffer, query = "", headers: Record<string, string> = {}): Promise<DeployOutcome> {
  const res = await fetch(`${fx.url}/api/v1/deployments${query}`, {
    method: "POST",
    headers: { authorization: `Bearer ${fx.token}`, "content-type": "application/gzip", ...headers },
    body: archive,
  });
  const text = await res.text();
  if (res.status !== 200) {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      // Not the platform's answer (e.g. a load balancer's own error page): say what came back.
      throw new Error(`deploy: HTTP ${res.status} with a body that is not JSON: ${text.slice(0, 300)}`);
    }
    return { status: res.status, body, events: [], final: null };
  }
  const events = text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
  return { status: 200, body: null, events, final: events[events.length - 1] ?? null };
}
