/**
 * Shared helpers of the benchmarks: the machine description (cores, memory, kernel, Node, load average),
 * percentiles over sorted samples, and writing bench/results/<name>.md.
 */
import { cpus, loadavg, release, totalmem, freemem } from "node:os";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The 1/5/15-minute load averages, rounded. */
export function load(): string {
  return loadavg().map((x) => x.toFixed(2)).join(" / ");
}

/** A markdown block describing the machine; `before`/`after` are load() strings. */
export function machine(before: string, after: string): string {
  const c = cpus();
  const busy = loadavg()[0]! > c.length * 0.5;
  return [
    `- machine: ${c.length} × ${c[0]?.model ?? "cpu"}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM (${(freemem() / 2 ** 30).toFixed(1)} free), Linux ${release()}, Node ${process.version}`,
    `- load average (1/5/15 min) before: ${before}; after: ${after}`,
    busy ? `- **the 1-minute load average was above half the core count (other work, or the benchmark's own processes lingering): absolute figures are pessimistic; compare the ratios**` : `- the machine was mostly idle`,
    `- date: ${new Date().toISOString()}`,
  ].join("\n");
}

/** Value at percentile p (0–1) of an ascending array. */
export function pct(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

/** Ascending copy. */
export function sorted(xs: readonly number[]): number[] {
  return [...xs].sort((a, b) => a - b);
}

/** Writes bench/results/<name>.md and echoes it. */
export function writeResult(name: string, markdown: string): void {
  const path = join(dirname(fileURLToPath(import.meta.url)), "..", "results", `${name}.md`);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, markdown.endsWith("\n") ? markdown : `${markdown}\n`);
  process.stdout.write(`${markdown}\n\nwritten to ${path}\n`);
}
