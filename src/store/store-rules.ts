/**
 * The store's business rules, written once for every implementation: `createStore(persistence, …)`
 * turns a StorePersistence (which only persists, atomically) into the `Store` the control plane uses.
 *
 * Rules kept here (see src/store/store.ts for the contract):
 *  - function names: `assertValidFunctionName`; unique regardless of case (the persistence keys on
 *    the lowercased name, this layer refuses a name that differs only in case);
 *  - versions: status is one of VERSION_STATUSES; the same version id with another digest is a CONFLICT;
 *  - activation: a non-empty list, each function once, only `ready` versions, `expectedActive` as a
 *    compare-and-swap guard — checked under the persistence's lock (`ActivationCheck`);
 *  - env vars and secrets: names `[A-Za-z_][A-Za-z0-9_]*`, at most 256 characters, not `STRATUS_*`;
 *    values are strings; a bad patch is refused before anything is written;
 *  - secrets are encrypted here (AES-256-GCM, src/store/secret-box.ts), so a persistence only ever
 *    sees ciphertext;
 *  - tokens: names of 1–200 characters; generated and verified here, the persistence keeps the hash;
 *  - telemetry query limits: default 100, at most TELEMETRY_QUERY_MAX.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { StratusError } from "../shared/errors";
import { assertValidFunctionName } from "../shared/names";
import type { ActivationCheck, StorePersistence } from "./persistence";
import { assertMasterKey, decryptSecret, encryptSecret, generatePrefixedSecret, generateToken, prefixedSecretId, tokenId, tokenMatches } from "./secret-box";
import type { InvocationQuery, LogQuery, Store } from "./store";
import { BUILD_STATUSES, MAX_NODES, NODE_STATES, TELEMETRY_QUERY_MAX, VERSION_STATUSES } from "./store";

/** Options of `createStore`. */
export interface CreateStoreOptions {
  /** 32-byte AES-256 key for secrets (see `loadOrCreateMasterKey`). */
  readonly masterKey: Uint8Array;
  /** Clock, epoch ms; default Date.now (tests pass a fake). */
  readonly now?: () => number;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** @throws StratusError INVALID_ARGUMENT unless `name` is a valid env var / secret name. */
export function assertEnvName(kind: string, name: string): void {
  if (typeof name !== "string" || !ENV_NAME.test(name) || name.startsWith("STRATUS_") || name.length > 256) {
    throw new StratusError("INVALID_ARGUMENT", `Invalid ${kind} name ${JSON.stringify(String(name).slice(0, 80))}: use [A-Za-z_][A-Za-z0-9_]*, not the reserved STRATUS_ prefix`);
  }
}

/** @throws StratusError INVALID_ARGUMENT unless `name` is a token name (1–200 characters, not blank). */
export function assertTokenName(name: string): void {
  if (typeof name !== "string" || name.trim() === "" || name.length > 200) {
    throw new StratusError("INVALID_ARGUMENT", "A token needs a name of 1 to 200 characters");
  }
}

/** A telemetry query limit: default 100, capped at TELEMETRY_QUERY_MAX. @throws StratusError INVALID_ARGUMENT */
export function resolveLimit(limit: number | undefined): number {
  if (limit === undefined) return 100;
  if (!Number.isInteger(limit) || limit < 1) throw new StratusError("INVALID_ARGUMENT", "limit must be a positive integer");
  return Math.min(limit, TELEMETRY_QUERY_MAX);
}

const functionNotFound = (name: string) => new StratusError("FUNCTION_NOT_FOUND", `Function ${JSON.stringify(name)} does not exist`);
const buildNotFound = (id: string) => new StratusError("NOT_FOUND", `Build ${id} does not exist`);

/** The activation rules, run by the persistence under its lock. */
const activationCheck: ActivationCheck = (a, fn, ver) => {
  if (fn === null) throw functionNotFound(a.functionName);
  if (ver === null) throw new StratusError("VERSION_NOT_FOUND", `Version ${a.version} of ${fn.name} does not exist`);
  if (ver.status !== "ready") throw new StratusError("CONFLICT", `Version ${a.version} of ${fn.name} is ${ver.status}, not ready`);
  if (a.expectedActive !== undefined && a.expectedActive !== fn.activeVersion) {
    throw new StratusError("CONFLICT", `The active version of ${fn.name} changed meanwhile (expected ${a.expectedActive ?? "none"}, found ${fn.activeVersion ?? "none"})`);
  }
};

/**
 * The Store over `persistence`, with the rules above. Closing the store closes the persistence.
 * @throws StratusError INTERNAL for a master key that is not 32 bytes.
 */
export function createStore(persistence: StorePersistence, options: CreateStoreOptions): Store {
  assertMasterKey(options.masterKey);
  const key = Buffer.from(options.masterKey);
  const now = options.now ?? Date.now;
  const p = persistence;

  async function ensureFunction(name: string) {
    assertValidFunctionName(name);
    const fn = await p.ensureFunction(name, name.toLowerCase(), now());
    if (fn.name !== name) {
      throw new StratusError("CONFLICT", `Function ${JSON.stringify(name)} clashes with the existing function ${JSON.stringify(fn.name)} (names are unique regardless of case)`);
    }
    return fn;
  }

  return {
    ensureFunction,
    getFunction: (name) => p.getFunction(name),
    listFunctions: () => p.listFunctions(),
    async deleteFunction(name) {
      if (!(await p.deleteFunction(name))) throw functionNotFound(name);
    },

    async addVersion(v) {
      const status = v.status ?? "ready";
      if (!VERSION_STATUSES.includes(status)) throw new StratusError("INVALID_ARGUMENT", `Unknown version status ${JSON.stringify(status)}`);
      const fn = await ensureFunction(v.functionName);
      const stored = await p.insertVersion({
        functionName: fn.name, version: v.version, digest: v.digest, entry: v.entry, exportName: v.exportName,
        config: v.config ?? {}, sourceDigest: v.sourceDigest, status, image: v.image ?? null, createdAt: now(),
      });
      // The function was deleted between the two steps: report it as such rather than resurrect it.
      if (stored === null) throw functionNotFound(v.functionName);
      if (stored.digest !== v.digest) throw new StratusError("CONFLICT", `Version ${v.version} of ${fn.name} already exists with another digest`);
      return stored;
    },
    getVersion: (fn, v) => p.getVersion(fn, v),
    async listVersions(functionName) {
      const list = await p.listVersions(functionName);
      if (list === null) throw functionNotFound(functionName);
      return list;
    },
    async updateVersion(functionName, version, patch) {
      if (patch.status !== undefined && !VERSION_STATUSES.includes(patch.status)) {
        throw new StratusError("INVALID_ARGUMENT", `Unknown version status ${JSON.stringify(patch.status)}`);
      }
      const row = await p.updateVersion(functionName, version, patch);
      if (row === null) throw new StratusError("VERSION_NOT_FOUND", `Version ${version} of ${functionName} does not exist`);
      return row;
    },
    getActiveVersion: (fn) => p.getActiveVersion(fn),
    async activateVersions(activations) {
      if (activations.length === 0) throw new StratusError("INVALID_ARGUMENT", "Nothing to activate");
      const seen = new Set<string>();
      for (const a of activations) {
        if (seen.has(a.functionName)) throw new StratusError("INVALID_ARGUMENT", `Function ${a.functionName} is named twice`);
        seen.add(a.functionName);
      }
      return p.activateVersions(activations, now(), activationCheck);
    },

    async getEnvVars(functionName) {
      const env = await p.getEnvVars(functionName);
      if (env === null) throw functionNotFound(functionName);
      return env;
    },
    async setEnvVars(functionName, patch) {
      // Every name and value is checked before anything is written, so a bad patch changes nothing.
      for (const [name, value] of Object.entries(patch)) {
        assertEnvName("environment variable", name);
        if (value !== null && typeof value !== "string") throw new StratusError("INVALID_ARGUMENT", `The value of ${name} must be a string or null`);
      }
      const env = await p.patchEnvVars(functionName, patch);
      if (env === null) throw functionNotFound(functionName);
      return env;
    },
    async setSecret(functionName, name, value) {
      assertEnvName("secret", name);
      if (typeof value !== "string") throw new StratusError("INVALID_ARGUMENT", `The value of secret ${name} must be a string`);
      if (!(await p.putSecret(functionName, name, encryptSecret(key, functionName, name, value), now()))) throw functionNotFound(functionName);
    },
    async deleteSecret(functionName, name) {
      const r = await p.deleteSecret(functionName, name);
      if (r === "no-function") throw functionNotFound(functionName);
      if (r === "no-secret") throw new StratusError("NOT_FOUND", `Secret ${name} of ${functionName} does not exist`);
    },
    async listSecretNames(functionName) {
      const list = await p.listSecrets(functionName);
      if (list === null) throw functionNotFound(functionName);
      return list.map((s) => s.name);
    },
    async getSecretValues(functionName) {
      const list = await p.listSecrets(functionName);
      if (list === null) throw functionNotFound(functionName);
      return Object.fromEntries(list.map((s) => [s.name, decryptSecret(key, functionName, s.name, s.ciphertext)]));
    },

    async createToken(name) {
      assertTokenName(name);
      const t = generateToken();
      const record = { id: t.id, name, createdAt: now(), revokedAt: null };
      await p.insertToken({ ...record, hash: t.hash });
      return { token: t.token, record };
    },
    listTokens: () => p.listTokens(),
    listTokenHashes: () => p.listTokenHashes(),
    async revokeToken(id) {
      const r = await p.revokeToken(id, now());
      if (r === null) throw new StratusError("NOT_FOUND", `Token ${id} does not exist`);
      return r;
    },
    async verifyToken(token) {
      if (typeof token !== "string") return null;
      const id = tokenId(token);
      if (id === null) return null;
      const row = await p.getToken(id);
      if (row === null || row.revokedAt !== null || !tokenMatches(token, row.hash)) return null;
      return { id: row.id, name: row.name, createdAt: row.createdAt, revokedAt: row.revokedAt };
    },

    async createJoinToken(name, ttlMs) {
      assertTokenName(name);
      if (!Number.isInteger(ttlMs) || ttlMs < 1000 || ttlMs > 365 * 86_400_000) throw new StratusError("INVALID_ARGUMENT", "A join token's ttl is 1 s to 365 days");
      const id = randomBytes(9).toString("base64url").replace(/[-_]/g, "x");
      const t = generatePrefixedSecret("sjt", id);
      const at = now();
      const record = { id, name, createdAt: at, expiresAt: at + ttlMs, revokedAt: null };
      await p.insertJoinToken({ ...record, hash: t.hash });
      return { token: t.token, record };
    },
    listJoinTokens: () => p.listJoinTokens(),
    async revokeJoinToken(id) {
      const r = await p.revokeJoinToken(id, now());
      if (r === null) throw new StratusError("NOT_FOUND", `Join token ${id} does not exist`);
      return r;
    },
    async joinNode(joinToken, node) {
      const id = prefixedSecretId("sjt", joinToken);
      const row = id === null ? null : await p.getJoinToken(id);
      if (row === null || !tokenMatches(joinToken, row.hash)) throw new StratusError("JOIN_TOKEN_INVALID");
      if (row.revokedAt !== null) throw new StratusError("JOIN_TOKEN_REVOKED", `Join token ${row.id} was revoked`);
      if (now() >= row.expiresAt) throw new StratusError("JOIN_TOKEN_EXPIRED", `Join token ${row.id} expired at ${new Date(row.expiresAt).toISOString()}`);
      if (!/^[A-Za-z0-9._-]{1,100}$/.test(node.name)) throw new StratusError("INVALID_ARGUMENT", "A node name is 1–100 of [A-Za-z0-9._-]");
      const credentialId = randomBytes(9).toString("base64url").replace(/[-_]/g, "x");
      const c = generatePrefixedSecret("snc", credentialId);
      const record = await p.registerNode({ ...node, credentialId, credentialHash: c.hash, at: now() }, MAX_NODES);
      if (record === null) throw new StratusError("CONFLICT", `All ${MAX_NODES} node ids are taken; remove a node first`);
      return { record, credential: c.token };
    },
    async verifyNodeCredential(credential) {
      const credentialId = prefixedSecretId("snc", credential);
      const row = credentialId === null ? null : await p.getNodeByCredential(credentialId);
      if (row === null || !tokenMatches(credential, row.credentialHash)) throw new StratusError("NODE_CREDENTIAL_INVALID");
      if (row.removedAt !== null) throw new StratusError("NODE_CREDENTIAL_REVOKED", `Node ${row.id} (${row.name}) was removed`);
      const { credentialHash: _h, removedAt: _r, ...record } = row;
      return record;
    },
    recordHeartbeat: (id, load, url) => p.heartbeatNode(id, now(), load, url),
    async setNodeState(id, state) {
      if (!(NODE_STATES as readonly string[]).includes(state)) throw new StratusError("INVALID_ARGUMENT", `A node state is one of ${NODE_STATES.join(", ")}`);
      const r = await p.setNodeState(id, state);
      if (r === null) throw new StratusError("NOT_FOUND", `Node ${id} does not exist`);
      return r;
    },
    async removeNode(id) {
      const r = await p.removeNode(id, now());
      if (r === null) throw new StratusError("NOT_FOUND", `Node ${id} does not exist`);
      return r;
    },
    listNodes: () => p.listNodes(),
    bumpConfigRevision: () => p.bumpConfigRevision(),
    configRevision: () => p.configRevision(),
    watchConfig: (onChange) => p.watchConfig(onChange),

    createBuild: () => p.insertBuild(randomUUID(), now()),
    async appendBuildLog(id, lines) {
      if (!(await p.appendBuildLog(id, lines.map(String)))) throw buildNotFound(id);
    },
    async setBuildSource(id, sourceDigest) {
      if (!(await p.setBuildSource(id, sourceDigest))) throw buildNotFound(id);
    },
    async finishBuild(id, outcome) {
      if (outcome.status !== "succeeded" && outcome.status !== "failed") {
        throw new StratusError("INVALID_ARGUMENT", `A build ends as one of ${BUILD_STATUSES.slice(1).join(", ")}`);
      }
      const r = await p.finishBuild(id, outcome, now());
      if (r === null) throw buildNotFound(id);
      if (!r.finished) throw new StratusError("CONFLICT", `Build ${id} already ended (${r.record.status})`);
      return r.record;
    },
    getBuild: (id) => p.getBuild(id),
    async getBuildLog(id, fromLine = 0) {
      if (!Number.isInteger(fromLine) || fromLine < 0) throw new StratusError("INVALID_ARGUMENT", "fromLine must be a non-negative integer");
      const lines = await p.getBuildLog(id, fromLine);
      if (lines === null) throw buildNotFound(id);
      return lines;
    },

    writeTelemetry: (batch) => p.writeTelemetry(batch),
    queryLogs: async (functionName, query: LogQuery = {}) => p.queryLogs(functionName, { ...query, limit: resolveLimit(query.limit) }),
    queryInvocations: async (functionName, query: InvocationQuery = {}) => p.queryInvocations(functionName, { ...query, limit: resolveLimit(query.limit) }),
    listErrorGroups: async (functionName, limit) => p.listErrorGroups(functionName, resolveLimit(limit)),
    purgeTelemetry: (policy) => p.purgeTelemetry(policy),

    close: () => p.close(),
  };
}
