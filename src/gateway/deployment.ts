/**
 * What the gateway serves for one function: the version with its artifact on local disk
 * (src/shared/function-version.ts, ServedVersion).
 */
import type { ServedVersion } from "../shared/function-version";

/** One deployed version of one function (`name`, `version`, artifact dir, resolved config, env, image?). */
export type Deployment = ServedVersion;
