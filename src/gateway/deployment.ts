/**
 * What the gateway serves for one function: an InstanceSpec minus the instance id.
 */
import type { InstanceSpec } from "../sandbox/driver";

/** One deployed version of one function (`name`, `version`, artifact, resolved config, env, image?). */
export type Deployment = Omit<InstanceSpec, "instanceId" | "functionName"> & { readonly name: string };
