/**
 * The pieces every settings schema is built from. A setting is a zod schema carrying its documentation
 * as zod metadata (`doc`, `unit`, optionally `env` when its variable is not derived from its key), so
 * the platform schema, the docs table (docs/configuration.md) and the STRATUS_* names all come from one
 * place: src/shared/platform-config.ts composes the component schemas of this folder, and each
 * component validates with the very same field schemas, so a value the platform accepts is never
 * refused later by a component.
 *
 * Values are typed (numbers are numbers); strings from the environment, flags or a file are converted
 * by the platform resolver (see `settingKind`), never by the component schemas.
 */
import { z } from "zod";
import { cidrProblem } from "../cidr";

/** Documentation of one setting: shown in docs/configuration.md. */
export interface SettingDoc {
  /** Unit or form of the value (`ms`, `bytes`, `CIDR`…); "" when it has none. */
  readonly unit: string;
  /** One or two sentences: what it does, what happens past it. */
  readonly doc: string;
  /** The environment variable, when it is not `STRATUS_` + the key in UPPER_SNAKE (kept for compatibility). */
  readonly env?: string;
}

/** Attaches `d` to `schema` (zod metadata). */
export function setting<T extends z.ZodType>(schema: T, d: SettingDoc): T {
  return schema.meta({ ...d }) as T;
}

/** The documentation attached by `setting()`, or undefined. */
export function settingDoc(schema: z.ZodType): SettingDoc | undefined {
  const m = schema.meta() as Partial<SettingDoc> | undefined;
  return m !== undefined && typeof m.doc === "string" ? { unit: m.unit ?? "", doc: m.doc, ...(m.env !== undefined ? { env: m.env } : {}) } : undefined;
}

/** An integer from `min` to `max` inclusive. */
export const int = (min: number, max: number) => z.number().int().min(min).max(max);

/** How a string from the environment or a flag becomes the setting's value. */
export type SettingKind = "string" | "number" | "boolean" | "list";

/** The kind of `schema` (looks through defaults, optionals, pipes and unions of literals). */
export function settingKind(schema: z.ZodType): SettingKind {
  const def = (schema as unknown as { _zod: { def: { type: string; innerType?: z.ZodType; in?: z.ZodType; options?: z.ZodType[]; values?: unknown[] } } })._zod.def;
  switch (def.type) {
    case "default": case "prefault": case "optional": case "nullable": case "readonly":
      return settingKind(def.innerType!);
    case "pipe":
      return settingKind(def.in!);
    case "number": return "number";
    case "boolean": return "boolean";
    case "array": return "list";
    case "literal": return typeof def.values?.[0] === "number" ? "number" : typeof def.values?.[0] === "boolean" ? "boolean" : "string";
    case "union": {
      const kinds = new Set((def.options ?? []).map(settingKind));
      return kinds.size === 1 ? [...kinds][0]! : "string";
    }
    default: return "string";
  }
}

/**
 * A string as a value of `kind`: a number literal as a number, `true/false/1/0` as a boolean, a
 * comma-separated list as an array. A string that does not convert is returned as it is, so the
 * schema reports it (never a silent fallback).
 */
export function fromString(kind: SettingKind, v: string): unknown {
  const s = v.trim();
  if (kind === "number") return /^-?\d+(?:\.\d+)?(?:e\d+)?$/i.test(s) ? Number(s) : v;
  if (kind === "boolean") return s === "true" || s === "1" ? true : s === "false" || s === "0" ? false : v;
  if (kind === "list") return s === "" ? [] : s.split(",").map((p) => p.trim()).filter((p) => p !== "");
  return v;
}

const IPV4_CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

/** An IPv4 CIDR (`a.b.c.d/n`, octets 0–255, prefix `minPrefix`–`maxPrefix`). */
export const ipv4Cidr = (minPrefix = 0, maxPrefix = 32) =>
  z.string().refine((v) => {
    const m = IPV4_CIDR.exec(v);
    if (m === null) return false;
    const prefix = Number(m[5]);
    return m.slice(1, 5).every((o) => Number(o) <= 255) && prefix >= minPrefix && prefix <= maxPrefix;
  }, `an IPv4 CIDR (a.b.c.d/n) with a prefix of ${minPrefix} to ${maxPrefix}`);

/** A list of IPv4 or IPv6 CIDRs or bare addresses (src/shared/cidr.ts, what the gateway's matcher takes). */
export const cidrList = () =>
  z.array(z.string().superRefine((v, ctx) => {
    const problem = cidrProblem(v);
    if (problem !== null) ctx.addIssue({ code: "custom", message: problem });
  }));

/** Every key of a zod object shape, for `z.strictObject(shape)`. */
export type Shape = Record<string, z.ZodType>;

/** The keys of `shape` out of `value` (a platform section holding a component's settings and more). */
export function pickShape(shape: Shape, value: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(shape)) if (k in value) out[k] = (value as Record<string, unknown>)[k];
  return out;
}
