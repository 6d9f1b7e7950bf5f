/**
 * Encryption of secrets at rest and hashing of API tokens, shared by every store implementation.
 *
 * Secrets: AES-256-GCM with a fresh 96-bit random nonce per value; the function and secret names are
 * bound in as additional authenticated data, so a ciphertext copied onto another secret's row fails
 * to decrypt instead of leaking under the wrong name. Stored form: `v1.<nonce>.<tag>.<ciphertext>`
 * (base64url parts); the version prefix leaves room for key rotation.
 *
 * Tokens: `stx_<id>_<secret>`; the id locates the row, only sha256(token) is stored, and the
 * comparison uses crypto.timingSafeEqual.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { StratusError } from "../shared/errors";

/** Bytes of a master key (AES-256). */
export const MASTER_KEY_BYTES = 32;

/** @throws StratusError INTERNAL when the key is not 32 bytes. */
export function assertMasterKey(key: Uint8Array): void {
  if (key.byteLength !== MASTER_KEY_BYTES) {
    throw new StratusError("INTERNAL", `The master key must be ${MASTER_KEY_BYTES} bytes, got ${key.byteLength}`);
  }
}

/** Encrypts `plaintext` for the secret `(functionName, name)`. */
export function encryptSecret(key: Uint8Array, functionName: string, name: string, plaintext: string): string {
  assertMasterKey(key);
  const nonce = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(Buffer.from(`${functionName.toLowerCase()}\u0000${name}`));
  const ct = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
  return ["v1", nonce.toString("base64url"), cipher.getAuthTag().toString("base64url"), ct.toString("base64url")].join(".");
}

/**
 * Decrypts a value from `encryptSecret`.
 * @throws StratusError INTERNAL when it does not decrypt (wrong key, tampering, moved row).
 */
export function decryptSecret(key: Uint8Array, functionName: string, name: string, stored: string): string {
  assertMasterKey(key);
  const parts = stored.split(".");
  if (parts.length !== 4 || parts[0] !== "v1") throw new StratusError("INTERNAL", `Secret ${name} has an unknown format`);
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(parts[1]!, "base64url"));
    decipher.setAAD(Buffer.from(`${functionName.toLowerCase()}\u0000${name}`));
    decipher.setAuthTag(Buffer.from(parts[2]!, "base64url"));
    return Buffer.concat([decipher.update(Buffer.from(parts[3]!, "base64url")), decipher.final()]).toString("utf8");
  } catch (cause) {
    throw new StratusError("INTERNAL", `Secret ${name} of ${functionName} could not be decrypted (wrong master key?)`, { cause });
  }
}

/** A new token: `stx_<id>_<43 base64url chars of 256 random bits>`, its id and sha256 hash (hex). */
export function generateToken(): { id: string; token: string; hash: string } {
  const id = randomBytes(9).toString("base64url").replace(/[-_]/g, "x");
  const token = `stx_${id}_${randomBytes(32).toString("base64url")}`;
  return { id, token, hash: hashToken(token) };
}

/** sha256 hex of a token. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** The id part of a token, or null when it does not have the token shape. */
export function tokenId(token: string): string | null {
  if (!token.startsWith("stx_")) return null;
  const end = token.indexOf("_", 4);
  if (end <= 4) return null;
  return token.slice(4, end);
}

/** Constant-time comparison of a presented token with a stored hex hash. */
export function tokenMatches(token: string, storedHash: string): boolean {
  const a = Buffer.from(hashToken(token), "hex");
  const b = Buffer.from(storedHash, "hex");
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Reads the master key from `<dataDir>/master.key` (64 hex chars), creating it with mode 0600 when
 * absent. The embedded set-up keeps it there; other set-ups pass their own key to the store.
 * @throws StratusError INTERNAL when the file exists but is not a valid key.
 */
export async function loadOrCreateMasterKey(dataDir: string): Promise<Buffer> {
  const file = join(dataDir, "master.key");
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  try {
    await writeFile(file, randomBytes(MASTER_KEY_BYTES).toString("hex") + "\n", { flag: "wx", mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  // Tighten in case the file predates us with looser permissions.
  await chmod(file, 0o600);
  const text = (await readFile(file, "utf8")).trim();
  if (!/^[0-9a-f]{64}$/.test(text)) throw new StratusError("INTERNAL", `${file} does not hold a 64-hex-character key`);
  return Buffer.from(text, "hex");
}

/**
 * A prefixed secret `<prefix>_<id>_<43 base64url chars of 256 random bits>` (join tokens `sjt_`, node
 * credentials `snc_<node id>_…`), with its sha256 hash (hex).
 */
export function generatePrefixedSecret(prefix: string, id: string): { token: string; hash: string } {
  const token = `${prefix}_${id}_${randomBytes(32).toString("base64url")}`;
  return { token, hash: hashToken(token) };
}

/** The id part of `<prefix>_<id>_<secret>`, or null for another shape. */
export function prefixedSecretId(prefix: string, token: string): string | null {
  if (typeof token !== "string" || !token.startsWith(`${prefix}_`)) return null;
  const start = prefix.length + 1;
  const end = token.indexOf("_", start);
  if (end <= start) return null;
  return token.slice(start, end);
}
