/**
 * Runs of the instances' Node outside any sandbox, by the platform itself (the runtime's startup-snapshot
 * build and check, ./runtime-snapshot.ts; the code-cache producer, ./code-cache.ts): a minimal environment,
 * bounded by a timeout, output kept for an error message.
 */
import { spawn, type ChildProcess } from "node:child_process";

/**
 * Runs `file args` with a minimal environment (PATH, then `env`); resolves with its exit code and output
 * once it closed. Killed after `timeoutMs`. `onStdout` sees the stdout kept so far after each chunk (the
 * producer answers a line the runtime prints). Output is kept to its last 64 KiB: the snapshot builder
 * prints one warning per unverified built-in module.
 */
export function runNode(file: string, args: string[], env: Record<string, string>, timeoutMs: number, onStdout?: (stdout: string, child: ChildProcess) => void): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: { PATH: "/usr/local/bin:/usr/bin:/bin", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout = (stdout + d.toString()).slice(-65_536);
      onStdout?.(stdout, child);
    });
    child.stderr.on("data", (d: Buffer) => void (stderr = (stderr + d.toString()).slice(-65_536)));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The last line of `text` that says something, for an error message. */
export function lastWords(text: string): string {
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l !== "" && l.length < 300 && !l.startsWith("at ") && !/^\d+: 0x/.test(l));
  // The thrown error ("TypeError: methods.toSorted is not a function") or V8's fatal message, else the end.
  const error = lines.findLast((l) => /^(\w*Error\b|# Fatal error|.*not serialized)/.test(l));
  return error ?? (lines.slice(-2).join(" / ") || "no output");
}
