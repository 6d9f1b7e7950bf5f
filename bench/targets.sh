#!/usr/bin/env bash
# Runs the benchmark behind each of issue 16's targets, one after another (never in parallel: each needs the
# machine to itself), and writes their result files under bench/results/. Every script measures its own
# baseline in the same run; this one only sequences them and records the load before each.
#
#   npm run build && bash bench/targets.sh            # all (~20 min on 2 cores)
#   BENCH_TARGETS="2 5 6" bash bench/targets.sh       # some of them
#   BENCH_BASELINE_RUNTIME=<old runtime.cjs> …        # passed on to the scripts that take it (2/8a, 3)
#
# Docker rows (5 Docker, 9) need dockerd and the registry: `bash scripts/services.sh` first.
# Needs root and bubblewrap, like every process-driver benchmark. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

targets="${BENCH_TARGETS:-2 3 5 5d 6 1 7 8b 9}"
log_dir="${BENCH_LOG_DIR:-bench/results/logs}"
mkdir -p "$log_dir"

run() {
  local name="$1"; shift
  echo "==> [$name] load $(cut -d' ' -f1-3 /proc/loadavg) · $*"
  local t0=$SECONDS
  if "$@" >"$log_dir/$name.log" 2>&1; then
    echo "    done in $((SECONDS - t0)) s (log: $log_dir/$name.log)"
  else
    echo "    FAILED after $((SECONDS - t0)) s — tail of $log_dir/$name.log:"
    tail -n 20 "$log_dir/$name.log" | sed 's/^/    /'
    failed+=("$name")
  fi
}

failed=()
for t in $targets; do
  case "$t" in
    2|8a) run warm-overhead npx tsx bench/warm-overhead.ts ;;        # targets 2 and 8a
    3)    run instance-cost npx tsx bench/instance-cost.ts ;;        # target 3a/3b
    5)    run cold-start-process npx tsx bench/cold-start.ts 20 process ;;
    5d)   run cold-start-docker env BENCH_COLD_DRIVERS=docker-pool npx tsx bench/cold-start.ts 20 ;;
    6)    run burst env BENCH_BURST_POOLS="${BENCH_BURST_POOLS:-0,32,100}" npx tsx bench/burst.ts 1000 ;;
    1)    run cold-tail npx tsx bench/cold-tail.ts ;;
    7)    run density npx tsx bench/density.ts ;;
    8b)   run tail npx tsx bench/tail.ts ;;
    9)    run burst-docker env BENCH_BURST_DRIVER=docker BENCH_BURST_POOLS="${BENCH_BURST_DOCKER_POOLS:-0,16}" npx tsx bench/burst.ts 200 ;;
    *)    echo "unknown target '$t' (known: 1 2 3 5 5d 6 7 8b 9)" >&2; exit 2 ;;
  esac
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
echo "all done; the tables are in bench/results/*.md, bench/RESULTS.md sets them against the targets"
