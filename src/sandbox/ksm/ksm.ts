/**
 * KSM (kernel same-page merging) for sandboxes, opt-in (platform setting `process.ksm`): the process
 * driver starts each sandbox through `stratus-ksm-exec` (./ksm-exec.c), which sets
 * prctl(PR_SET_MEMORY_MERGE) and execs the rest of the command line; the flag is inherited across fork
 * and exec, so bubblewrap, setpriv and node all run mergeable. ksmd then shares identical anonymous pages
 * between instances (measured −13 to −15 % PSS per idle instance, bench/results/ksm.md).
 *
 * Stratus never writes /sys/kernel/mm/ksm: those knobs are host-wide (every mergeable process on the
 * host, and ksmd's CPU). Starting ksmd and its scan rate are the operator's call; with ksmd off the
 * setting costs nothing and merges nothing, and the driver says so at start (docs/security.md
 * "Memory deduplication" for why the setting is off by default).
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Logger } from "../../shared/logger";

/** File name of the launcher `npm run build` compiles into dist/, beside runtime.cjs. */
export const KSM_LAUNCHER_NAME = "stratus-ksm-exec";
/** ksmd's sysfs directory. */
export const KSM_SYSFS_DIR = "/sys/kernel/mm/ksm";

/** The launcher beside a runtime bundle (dist/runtime.cjs → dist/stratus-ksm-exec). */
export function ksmLauncherBeside(runtimePath: string): string {
  return join(dirname(runtimePath), KSM_LAUNCHER_NAME);
}

/** What checkKsm found: whether ksmd is running now (`run` = 1), and the sysfs values read. */
export interface KsmHostState {
  readonly ksmdRunning: boolean;
  readonly run: string;
  readonly pagesToScan: string;
  readonly sleepMillisecs: string;
}

/**
 * Fails fast when the setting cannot work: no launcher (not built: no C compiler at build time), a kernel
 * without KSM, or a kernel that refuses PR_SET_MEMORY_MERGE (before 6.4) — the launcher is run once on
 * `/bin/true` to find out. Reads (never writes) ksmd's state for the caller's warning.
 * @throws Error naming what is missing and how to get it.
 */
export function checkKsm(launcherPath: string, sysfsDir: string = KSM_SYSFS_DIR, setting = "process.ksm"): KsmHostState {
  if (!existsSync(launcherPath)) {
    throw new Error(`${setting}: the KSM launcher ${launcherPath} is missing: \`npm run build\` compiles it with a C compiler (Debian: apt-get install gcc libc6-dev)`);
  }
  if (!existsSync(join(sysfsDir, "run"))) throw new Error(`${setting}: this kernel has no KSM (${sysfsDir} does not exist; needs CONFIG_KSM)`);
  try {
    execFileSync(launcherPath, ["/bin/true"], { stdio: ["ignore", "ignore", "pipe"], timeout: 10_000, env: {} });
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? "").trim();
    throw new Error(`${setting}: the kernel refused to mark a process mergeable: ${stderr || (err as Error).message}`, { cause: err });
  }
  const read = (k: string): string => readFileSync(join(sysfsDir, k), "utf8").trim();
  const run = read("run");
  return { ksmdRunning: run === "1", run, pagesToScan: read("pages_to_scan"), sleepMillisecs: read("sleep_millisecs") };
}

/**
 * What a driver does at creation when its `ksm` option is on: checkKsm (throws), then a warning when ksmd
 * is not running — nothing is merged until the operator starts it; Stratus never does — or an info line
 * with ksmd's rate. `setting` names the platform setting in the lines (`process.ksm`, `docker.ksm`).
 */
export function checkKsmForDriver(launcherPath: string, setting: string, log: Logger): void {
  const ksm = checkKsm(launcherPath, KSM_SYSFS_DIR, setting);
  if (!ksm.ksmdRunning) {
    log.warn({ ksmRun: ksm.run }, `${setting} is on but ksmd is not running (/sys/kernel/mm/ksm/run is not 1): instances start mergeable and nothing is merged until the operator starts ksmd (echo 1 > /sys/kernel/mm/ksm/run; its scan rate is pages_to_scan / sleep_millisecs there). Stratus does not change these host-wide settings. See docs/security.md "Memory deduplication"`);
  } else {
    log.info({ ksmPagesToScan: Number(ksm.pagesToScan), ksmSleepMillisecs: Number(ksm.sleepMillisecs) }, `${setting}: instances start mergeable by ksmd`);
  }
}

/**
 * Whether a process runs with PR_SET_MEMORY_MERGE (`ksm_merge_any` in /proc/<pid>/ksm_stat), and how many
 * of its pages KSM has merged; null when the process is gone or the kernel has no such file.
 */
export function processKsmState(pid: number): { mergeAny: boolean; mergingPages: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/ksm_stat`, "utf8");
    const mergeAny = /^ksm_merge_any:\s+yes$/m.test(stat);
    const mergingPages = Number(/^ksm_merging_pages\s+(\d+)$/m.exec(stat)?.[1] ?? readFileSync(`/proc/${pid}/ksm_merging_pages`, "utf8").trim());
    return { mergeAny, mergingPages };
  } catch {
    return null;
  }
}
