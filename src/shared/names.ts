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

/** @throws StratusError INVALID_FUNCTION_NAME */
export function assertValidFunctionName(name: string): void {
  if (!isValidFunctionName(name)) {
    throw new StratusError(
      "INVALID_FUNCTION_NAME",
      `Invalid function name ${JSON.stringify(name.slice(0, 80))}: use a letter, then letters, digits, "-" or "_", at most ${FUNCTION_NAME_MAX} characters`,
    );
  }
}

/**
 * Maps a valid name to a lowercase, collision-free form for systems that need lowercase
 * (Docker image names): every uppercase letter becomes `_` + its lowercase. `myFunction` → `my_function`
 * would collide with `my_function`, so `_` itself is escaped as `__` first.
 */
export function toLowerSafeName(name: string): string {
  return name.replace(/_/g, "__").replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
