/** The node link secret of a data dir: `<dataDir>/node.token` (0600), 256 random bits, created on first use. */
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { StratusError } from "../shared/errors";

/** Reads `<dataDir>/node.token`, creating it (0600) first. @throws StratusError INTERNAL when too short */
export async function loadOrCreateNodeToken(dataDir: string): Promise<string> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, "node.token");
  try {
    await writeFile(file, randomBytes(32).toString("base64url") + "\n", { flag: "wx", mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  await chmod(file, 0o600);
  const token = (await readFile(file, "utf8")).trim();
  if (token.length < 32) throw new StratusError("INTERNAL", `${file} holds a token that is too short`);
  return token;
}
