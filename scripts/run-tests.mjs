// Runs node:test over every *.test.ts under the given folders (default: src and test), several files at
// once where they share nothing (2 cores: most suites wait on sandboxes, Docker or sleeps, not the CPU).
// Node 20's `--test` does not expand globs, so the files are listed here.
//
// Usage: node scripts/run-tests.mjs [dir-or-file ...]   (extra flags after `--` go to each node --test)
// Env:   STRATUS_TEST_CONCURRENCY   files at once (default 3; 1 = one after another)
//        STRATUS_TEST_FILE_TIMEOUT_S  a file still running after this is killed and counted failed (default 600: twice the longest file)
//
// One file runs as before (`node --test` with its output as it comes). Several: each file is its own
// `node --test --test-reporter=spec` process; its output is printed in one block when it ends (never
// interleaved), then a per-file time table, then one combined summary in node:test's own form
// (`ℹ pass N` / `ℹ fail N` …) and, alone on the last line, `N passed, N failed`. The exit code is
// non-zero when any test failed, any file exited non-zero (a crash, a hook that threw) or was killed.
//
// Scheduling (SCHEDULE below): files marked `alone` run when nothing else runs (timing-sensitive
// assertions that a neighbour's load would make noisy); files that share a machine-wide resource carry a
// lock and never run beside another file with the same lock (`docker`: the one engine, whose function
// images a node's prune removes whoever made them). The rest run freely, the longest first.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { spawn, spawnSync } from "node:child_process";

const argv = process.argv.slice(2);
const sep = argv.indexOf("--");
const targets = (sep === -1 ? argv : argv.slice(0, sep));
const extra = sep === -1 ? [] : argv.slice(sep + 1);
const roots = targets.length > 0 ? targets : ["src", "test"];

const files = [];
for (const root of roots) {
  if (statSync(root).isFile()) { files.push(root); continue; }
  for (const rel of readdirSync(root, { recursive: true })) {
    const p = join(root, String(rel));
    if (p.endsWith(".test.ts") && !p.includes("node_modules")) files.push(p);
  }
}
files.sort();
if (files.length === 0) {
  console.error(`no test files under ${roots.join(", ")}`);
  process.exit(1);
}

const nodeArgs = (list, reporter) => ["--import", "tsx", "--test", "--test-concurrency=1", ...reporter, ...extra, ...list];

if (files.length === 1) {
  const reporter = process.env.CI ? ["--test-reporter=spec"] : [];
  const r = spawnSync(process.execPath, nodeArgs(files, reporter), { stdio: "inherit" });
  process.exit(r.status ?? 1);
}

/**
 * Per file: `alone`, `locks` (more than the automatic ones).
 * A file that uses Docker gets the `docker` lock by itself (see dockerLock).
 */
const SCHEDULE = {
  // Timing-sensitive: latency / "served within" bounds, or 2,000 sockets at once.
  "test/adversarial/c-http.test.ts": { alone: true },
  "test/output-flood.test.ts": { alone: true },
  "test/prewarm.test.ts": { alone: true },
};
/** Seconds each long file took in a parallel run on this machine (2 cores); the rest count 5. */
const WEIGHTS = {
  "test/compat.test.ts": 330, "test/cluster.test.ts": 170, "test/sandbox-docker.test.ts": 120, "test/lb-haproxy.test.ts": 110, "test/events.test.ts": 80, "test/event-sources.test.ts": 85, "test/event-sources-e2e.test.ts": 30,
  "test/prewarm-docker.test.ts": 80, "test/gateway-docker.test.ts": 57, "test/events-crash.test.ts": 52, "test/e2e-docker.test.ts": 47,
  "test/e2e-cli.test.ts": 43, "test/e2e-events-s3.test.ts": 39, "test/events-postgres-trigger.test.ts": 16, "test/events-s3.test.ts": 13, "test/events-s3-postgres.test.ts": 10, "test/events-postgres-changes.test.ts": 8, "test/cluster-membership.test.ts": 42, "test/adversarial/a-function-code.test.ts": 41,
  "test/adversarial/b-uploads.test.ts": 34, "test/gateway.test.ts": 31, "test/dev.test.ts": 30, "test/build.test.ts": 29,
  "test/adversarial/e-faults.test.ts": 55, "test/adversarial/d-api.test.ts": 21, "test/build-files.test.ts": 20,
};

const concurrency = Math.max(1, Number(process.env.STRATUS_TEST_CONCURRENCY ?? 3) || 3);
const fileTimeoutMs = Math.max(1, Number(process.env.STRATUS_TEST_FILE_TIMEOUT_S ?? 600) || 600) * 1000;

// A file that makes a Docker driver or platform (directly or through the adversarial harness).
const dockerLock = (file) => /createDockerDriver|ensureDocker\(|startStack\("docker"|"--driver", "docker"|driver: "docker"|STRATUS_DRIVER: "docker"/.test(readFileSync(file, "utf8"));
const jobs = files.map((file) => {
  const s = SCHEDULE[file] ?? {};
  const locks = new Set(s.locks ?? []);
  if (dockerLock(file)) locks.add("docker");
  return { file, alone: s.alone === true, locks, weight: WEIGHTS[file] ?? 5 };
});
// Longest first, `alone` ones at the end. Locked files wait for their lock without holding up the others.
jobs.sort((a, b) => Number(a.alone) - Number(b.alone) || b.weight - a.weight || a.file.localeCompare(b.file));

const ANSI = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");
const COUNTERS = ["tests", "suites", "pass", "fail", "cancelled", "skipped", "todo"];
/** The closing counters of one node --test run (spec: `ℹ pass 3`, tap: `# pass 3`). */
function countersOf(text) {
  const out = {};
  for (const line of text.replace(ANSI, "").split("\n")) {
    const m = /^(?:ℹ|#) (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)\s*$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

const reporter = extra.some((a) => a.startsWith("--test-reporter")) ? [] : ["--test-reporter=spec"];
const t0 = Date.now();
const running = new Set();
const results = [];

function runJob(job) {
  return new Promise((resolve) => {
    const started = Date.now();
    // Its own process group: a timeout kills the file's runner, the file and whatever it spawned.
    const child = spawn(process.execPath, nodeArgs([job.file], reporter), { stdio: ["ignore", "pipe", "pipe"], detached: true });
    job.child = child;
    const chunks = [];
    child.stdout.on("data", (c) => chunks.push(c));
    child.stderr.on("data", (c) => chunks.push(c));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child, "SIGTERM");
      setTimeout(() => killGroup(child, "SIGKILL"), 10_000).unref();
    }, fileTimeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const output = Buffer.concat(chunks).toString("utf8");
      resolve({ file: job.file, code, signal, timedOut, output, ms: Date.now() - started, counters: countersOf(output) });
    });
  });
}

function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    for (const job of running) if (job.child) killGroup(job.child, "SIGKILL");
    process.exit(130);
  });
}

function canStart(job) {
  if (running.size >= concurrency) return false;
  if (job.alone) return running.size === 0;
  for (const r of running) {
    if (r.alone) return false;
    for (const l of job.locks) if (r.locks.has(l)) return false;
  }
  return true;
}

console.log(`running ${jobs.length} test files, up to ${concurrency} at once (STRATUS_TEST_CONCURRENCY)`);
await new Promise((done) => {
  const pending = [...jobs];
  const pump = () => {
    for (let i = 0; i < pending.length;) {
      const job = pending[i];
      // An `alone` file waits for the others; nothing is started past it meanwhile (they are last).
      if (job.alone && running.size > 0) break;
      if (!canStart(job)) { i++; continue; }
      pending.splice(i, 1);
      running.add(job);
      void runJob(job).then((r) => {
        running.delete(job);
        results.push(r);
        report(r);
        if (pending.length === 0 && running.size === 0) done();
        else pump();
      });
    }
  };
  pump();
});

function report(r) {
  const took = `${(r.ms / 1000).toFixed(1)} s`;
  process.stdout.write(`\n━━ ${r.file} (${took}, exit ${r.code ?? r.signal})\n`);
  process.stdout.write(r.output.endsWith("\n") || r.output === "" ? r.output : `${r.output}\n`);
  if (r.timedOut) process.stdout.write(`✖ ${r.file}: still running after ${fileTimeoutMs / 1000} s (STRATUS_TEST_FILE_TIMEOUT_S): killed. A test or hook that never settles, or handles left open after the last test (the process cannot exit).\n`);
}

// The combined summary.
const total = Object.fromEntries(COUNTERS.map((k) => [k, 0]));
const broken = [];
for (const r of results) {
  for (const k of COUNTERS) total[k] += r.counters[k] ?? 0;
  const failedTests = (r.counters.fail ?? 0) + (r.counters.cancelled ?? 0);
  if (r.timedOut) broken.push(`${r.file}: killed after ${fileTimeoutMs / 1000} s`);
  else if (r.code !== 0 && failedTests === 0) broken.push(`${r.file}: exited ${r.code ?? r.signal} with no failed test (a crash, or a hook that threw)`);
  else if (r.code === 0 && r.counters.tests === undefined) broken.push(`${r.file}: printed no test summary`);
  else if (r.code !== 0) broken.push(`${r.file}: ${failedTests} failed`);
}
// A file that failed without a failed test still fails the run, and counts as one failure.
const fileFailures = results.filter((r) => r.timedOut || (r.code !== 0 && (r.counters.fail ?? 0) + (r.counters.cancelled ?? 0) === 0) || (r.code === 0 && r.counters.tests === undefined)).length;

console.log("\n━━ time per file");
for (const r of [...results].sort((a, b) => b.ms - a.ms)) console.log(`${(r.ms / 1000).toFixed(1).padStart(7)} s  ${r.file}`);
if (broken.length > 0) {
  console.log("\n━━ failed files");
  for (const b of broken) console.log(`✖ ${b}`);
  // CI shows the tail of this output: repeat what failed and why (the spec reporter's own
  // "failing tests" section of each file, else its ✖ lines), bounded per file.
  for (const r of results) {
    const failedTests = (r.counters.fail ?? 0) + (r.counters.cancelled ?? 0);
    if (failedTests === 0 && r.code === 0 && !r.timedOut) continue;
    console.log(`\n━━ why ${r.file} failed`);
    for (const line of failureDetail(r.output)) console.log(line);
  }
}

/** The spec reporter's "failing tests" section of one file's output, or its ✖ lines with the error after each; ≤ 60 lines. */
function failureDetail(output) {
  const lines = output.replace(ANSI, "").split("\n");
  const at = lines.findIndex((l) => /^✖ failing tests:/.test(l));
  let picked = [];
  if (at !== -1) picked = lines.slice(at + 1).filter((l) => !/^\s*at /.test(l) && !/^ℹ /.test(l));
  else {
    for (let i = 0; i < lines.length; i++) {
      if (!/^\s*✖ /.test(lines[i])) continue;
      picked.push(lines[i]);
      for (let j = i + 1; j < lines.length && j <= i + 8 && !/^\s*[✔✖▶ℹ] /.test(lines[j]); j++) if (!/^\s*at /.test(lines[j])) picked.push(lines[j]);
    }
  }
  picked = picked.filter((l) => l.trim() !== "");
  if (picked.length === 0) return ["(no failing test printed: see the file's output above, and its last lines:)", ...lines.filter((l) => l.trim() !== "").slice(-15)];
  return picked.length > 60 ? [...picked.slice(0, 60), `… ${picked.length - 60} more line(s) above`] : picked;
}
const failed = total.fail + total.cancelled + fileFailures;
console.log("");
for (const k of COUNTERS) console.log(`ℹ ${k} ${k === "fail" ? total.fail + fileFailures : total[k]}`);
console.log(`ℹ duration_ms ${Date.now() - t0}`);
console.log(`${total.pass} passed, ${failed} failed`);
process.exit(failed > 0 || results.some((r) => r.code !== 0) ? 1 : 0);
