/**
 * The CLI profile: where the platform is and the token to use, saved by `stratus up` on its first
 * start so `stratus` on the same machine works without flags. File: `$STRATUS_CONFIG_DIR/config.json`,
 * default `~/.stratus/config.json`, mode 0600 (it holds a token).
 * Precedence for every command: `--url`/`--token` > `STRATUS_URL`/`STRATUS_TOKEN` > the profile.
 */
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { StratusError } from "../shared/errors";

/** The saved profile. `dataDir` ties it to the platform whose `up` wrote it. */
export interface Profile {
  url?: string;
  token?: string;
  dataDir?: string;
}

/** The profile's directory for this environment. */
export function profileDir(env: Record<string, string | undefined>): string {
  return env.STRATUS_CONFIG_DIR || join(env.HOME || homedir(), ".stratus");
}

/** Reads the profile; `{}` when absent. @throws StratusError INVALID_ARGUMENT when the file is not valid JSON. */
export async function loadProfile(env: Record<string, string | undefined>): Promise<Profile> {
  const file = join(profileDir(env), "config.json");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw err;
  }
  try {
    const p = JSON.parse(text) as Profile;
    return typeof p === "object" && p !== null ? p : {};
  } catch {
    throw new StratusError("INVALID_ARGUMENT", `${file} is not valid JSON`);
  }
}

/** Writes the profile atomically with mode 0600 (directory 0700). */
export async function saveProfile(env: Record<string, string | undefined>, profile: Profile): Promise<string> {
  const dir = profileDir(env);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, "config.json");
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(profile, null, 2) + "\n", { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, file);
  return file;
}

/** Resolves the connection: flag > env > profile. @throws StratusError INVALID_ARGUMENT when no URL is known. */
export async function resolveConnection(
  flags: { url?: string; token?: string },
  env: Record<string, string | undefined>,
): Promise<{ url: string; token?: string }> {
  const profile = await loadProfile(env);
  const url = flags.url || env.STRATUS_URL || profile.url;
  const token = flags.token || env.STRATUS_TOKEN || profile.token;
  if (!url) throw new StratusError("INVALID_ARGUMENT", "No platform URL: run `stratus up` on this machine, or pass --url / set STRATUS_URL");
  return token ? { url, token } : { url };
}
