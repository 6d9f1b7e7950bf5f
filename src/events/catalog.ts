/**
 * The functions the worker and the scheduler act on: each function's active version's config (defaults
 * applied), read from the store and cached for `ttlMs`, so a busy worker does not query the store per job.
 */
import { parseFunctionConfig, type FunctionConfig } from "../shared/function-config";
import type { Logger } from "../shared/logger";
import type { FunctionStore } from "../store/store";

export interface CatalogEntry {
  readonly name: string;
  readonly version: string;
  readonly config: Readonly<FunctionConfig>;
  /** When the active pointer last moved, epoch ms (a new trigger's slots start after it). */
  readonly activatedAt: number;
}

export interface FunctionCatalog {
  /** The function's active version, or null (unknown, or nothing active). `fresh`: skip the cache (API reads). */
  get(name: string, fresh?: boolean): Promise<CatalogEntry | null>;
  /** Every function with an active version. */
  list(): Promise<CatalogEntry[]>;
  /** True when the store knows the function (active version or not). */
  exists(name: string): Promise<boolean>;
}

/** Builds the catalog over the store. `ttlMs` default 1000. */
export function createFunctionCatalog(store: FunctionStore, logger: Logger, ttlMs = 1000, now: () => number = Date.now): FunctionCatalog {
  let cached: { at: number; entries: Map<string, CatalogEntry> } | null = null;
  async function load(fresh = false): Promise<Map<string, CatalogEntry>> {
    if (!fresh && cached !== null && now() - cached.at < ttlMs) return cached.entries;
    const entries = new Map<string, CatalogEntry>();
    for (const fn of await store.listFunctions()) {
      if (fn.activeVersion === null) continue;
      const v = await store.getActiveVersion(fn.name);
      if (v === null) continue;
      try {
        entries.set(fn.name, { name: fn.name, version: v.version, config: parseFunctionConfig(fn.name, v.config), activatedAt: fn.activatedAt ?? fn.createdAt });
      } catch (err) {
        logger.warn({ err, fn: fn.name }, "stored config does not parse; its events are skipped");
      }
    }
    cached = { at: now(), entries };
    return entries;
  }
  return {
    get: async (name, fresh = false) => (await load(fresh)).get(name) ?? null,
    list: async () => [...(await load()).values()],
    exists: async (name) => (await store.getFunction(name)) !== null,
  };
}
