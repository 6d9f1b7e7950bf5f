/**
 * One API operation as the route files declare it: the OpenAPI document (src/control/openapi.ts) is
 * generated from these declarations, and the route files register their handlers for the same paths.
 * A test walks the Express router and checks every registered route appears in the document.
 */
import type { ZodType } from "zod";

/** HTTP methods the API uses. */
export const API_METHODS = ["get", "post", "put", "patch", "delete"] as const;
export type ApiMethod = (typeof API_METHODS)[number];

export interface Operation {
  readonly method: ApiMethod;
  /** Express form (`/api/v1/functions/:name`); the OpenAPI document shows `{name}`. */
  readonly path: string;
  readonly operationId: string;
  readonly summary: string;
  /** False for health checks; everything else needs a bearer token. */
  readonly auth: boolean;
  readonly query?: Readonly<Record<string, string>>;
  /** JSON body schema (zod), or a raw content type with a description. */
  readonly body?: ZodType | { readonly contentType: string; readonly description: string };
  /** Success status → description (and content type when not JSON). */
  readonly responses: Readonly<Record<string, string>>;
  /** Error codes this operation may answer with (beyond UNAUTHENTICATED and INTERNAL). */
  readonly errors?: readonly string[];
}
