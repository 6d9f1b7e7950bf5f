/**
 * Parses `/fn/<name>/<path…>` with an index scan: no `new URL()` and no regex per request.
 */

/** Prefix of every function route. */
export const FUNCTION_PREFIX = "/fn/";

/** A parsed function route: the raw name (not yet validated) and the path forwarded to the instance. */
export interface FunctionRoute {
  readonly name: string;
  /** Path below the function root plus the query: `/fn/f/a/b?x=1` → `/a/b?x=1`, `/fn/f` → `/`. */
  readonly path: string;
}

/** Returns the route, or null when `url` is not under `/fn/`. The name may be empty or invalid. */
export function parseFunctionRoute(url: string): FunctionRoute | null {
  if (!url.startsWith(FUNCTION_PREFIX)) return null;
  const start = FUNCTION_PREFIX.length;
  let end = start;
  const n = url.length;
  for (; end < n; end++) {
    const c = url.charCodeAt(end);
    if (c === 47 /* / */ || c === 63 /* ? */) break;
  }
  const name = url.slice(start, end);
  if (end === n) return { name, path: "/" };
  return { name, path: url.charCodeAt(end) === 47 ? url.slice(end) : `/${url.slice(end)}` };
}
