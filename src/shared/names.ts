/**
 * Function names: the export's name as written (`myFunction` stays `myFunction`).
 * A letter, then letters, digits, `-` or `_`, at most 63 characters. Names that differ only in case
 * are refused at deploy; drivers that need lowercase (image tags) use `toLowerSafeName`.
 */
import { StratusError } from "./errors";

export const FUNCTION_NAME_MAX = 63;

/** Checks a name with a char-code scan (this runs per request on the gateway; no regex, no URL). */
export function isValidFunctionName(name: string): boolean {
  const n = name.length;
  if (n === 0 || n > FUNCTION_NAME_MAX) return false;
  for (let i = 0; i < n; i++) {
    const c = name.charCodeAt(i);
    const letter = (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
    if (i === 0) {
      if (!letter) return false;
      continue;
    }
    if (!(letter || (c >= 48 && c <= 57) || c === 45 || c === 95)) return false;
  }
  return true;
}

/**
 * Why `name` is not a valid function name (the one message every component uses), or null when it is.
 * `where` is added after the quoted name (e.g. ` in only`, or a hint about default exports).
 */
export function functionNameProblem(name: string, where = ""): string | null {
  if (isValidFunctionName(name)) return null;
  return `Invalid function name ${JSON.stringify(name.slice(0, 80))}${where}: use a letter, then letters, digits, "-" or "_", at most ${FUNCTION_NAME_MAX} characters`;
}

/**
 * The case rule of one project: names that differ only in case are refused (URLs and image names
 * would collide). Returns a checker: call it with each name in order; it returns the problem when the
 * name clashes with an earlier one, else null (and remembers the name).
 */
export function caseClashChecker(): (name: string) => string | null {
  const byLower = new Map<string, string>();
  return (name) => {
    const lower = name.toLowerCase();
    const other = byLower.get(lower);
    if (other !== undefined) return `Function names "${other}" and "${name}" differ only in case`;
    byLower.set(lower, name);
    return null;
  };
}

/** @throws StratusError INVALID_FUNCTION_NAME */
export function assertValidFunctionName(name: string): void {
  const problem = functionNameProblem(name);
  if (problem !== null) throw new StratusError("INVALID_FUNCTION_NAME", problem);
}

/**
 * Maps a valid name to a lowercase, collision-free form for systems that need lowercase
 * (Docker image names): every uppercase letter becomes `_` + its lowercase. `myFunction` → `my_function`
 * would collide with `my_function`, so `_` itself is escaped as `__` first.
 */
export function toLowerSafeName(name: string): string {
  return name.replace(/_/g, "__").replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
