// ksmd's host-wide knobs for a benchmark run (bench/ksm.ts, bench/density-ksm.ts): turns ksmd on at a
// given scan rate, and puts run / pages_to_scan / sleep_millisecs back as they were when the run ends
// (normally, on an error, or on SIGINT/SIGTERM). Root only. Also reads ksmd's CPU time and the merge counters.
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";

const KSM = "/sys/kernel/mm/ksm";
const knob = (k: string): string => readFileSync(`${KSM}/${k}`, "utf8").trim();
const set = (k: string, v: string | number): void => writeFileSync(`${KSM}/${k}`, String(v));

export function ksmdOn(pagesToScan: string, sleepMillisecs: string): { saved: Record<string, string>; restore: () => void } {
  if (!existsSync(`${KSM}/run`)) throw new Error(`this kernel has no KSM (${KSM})`);
  const saved = { run: knob("run"), pages_to_scan: knob("pages_to_scan"), sleep_millisecs: knob("sleep_millisecs") };
  let restored = false;
  const restore = (): void => {
    if (restored) return;
    restored = true;
    set("run", saved.run); // first, so ksmd stops before its rate goes back
    set("pages_to_scan", saved.pages_to_scan);
    set("sleep_millisecs", saved.sleep_millisecs);
    console.error(`ksmd: restored ${JSON.stringify(saved)}`);
  };
  process.on("exit", restore);
  for (const sig of ["SIGINT", "SIGTERM"]) process.once(sig, () => process.exit(130));
  set("pages_to_scan", pagesToScan);
  set("sleep_millisecs", sleepMillisecs);
  set("run", "1");
  return { saved, restore };
}

const ksmdPid = (): string | undefined => readdirSync("/proc").filter((d) => /^\d+$/.test(d)).find((d) => {
  try {
    return readFileSync(`/proc/${d}/comm`, "utf8").trim() === "ksmd";
  } catch {
    return false;
  }
});

/** ksmd's CPU time so far, seconds (utime + stime; USER_HZ 100); NaN without a ksmd thread. */
export function ksmdCpuSeconds(): number {
  const pid = ksmdPid();
  if (!pid) return NaN;
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** The host's merge counters (pages). */
export function ksmCounters(): { sharing: number; shared: number; fullScans: number } {
  return { sharing: Number(knob("pages_sharing")), shared: Number(knob("pages_shared")), fullScans: Number(knob("full_scans")) };
}
