#!/usr/bin/env bash
# The GPU check: runs ON a machine with an NVIDIA GPU, over binaries built elsewhere by
# scripts/gpu_build.sh (the GPU machines have nvcc, CMake, ninja and PyTorch, but no GoogleTest, Google
# Benchmark or network, so nothing is built here).
#
#   1. records the card, driver, CUDA version and clocks (read only: clocks, power limits, modes and
#      the GPU itself are never changed or reset);
#   2. runs the CUDA test binary;
#   3. runs it again under compute-sanitizer memcheck, racecheck and synccheck (--error-exitcode);
#   4. runs the demo (culayers_demo) and the engine example (culayers_engine_example_cuda), which check
#      their own results;
#   5. runs culayers_bench with JSON output;
#   6. writes bench/results/<card-slug>-<YYYY-MM-DD>.md with the JSON beside it, and copies both (plus
#      the full logs) into $OUT when that variable is set.
#
# Without a GPU (nvidia-smi -L fails) it says so and exits 0. Otherwise it exits 1 if any step failed.
#
# Environment (all optional):
#   CULAYERS_GPU_BUILD_DIR        build folder holding tests/ and bench/ (default build/gpu)
#   CULAYERS_SANITIZER_FILTER     gtest filter for the compute-sanitizer runs (default: all tests)
#   CULAYERS_STEP_TIMEOUT         seconds each step may run (default 300; a lent GPU machine allows one
#                                 command 10 minutes, so keep the sum of the steps under that)
#   CULAYERS_BENCH_ARGS           extra arguments for culayers_bench (e.g. --benchmark_filter=copy)
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no CUDA GPU visible (nvidia-smi -L failed or nvidia-smi is missing); nothing to check."
  echo "gpu_check: without a GPU, run the emulator self-check instead (culayers_selfcheck)."
  exit 0
fi

build_dir="${CULAYERS_GPU_BUILD_DIR:-build/gpu}"
tests_bin="$build_dir/tests/culayers_tests_cuda"
bench_bin="$build_dir/bench/culayers_bench"
demo_bin="$build_dir/examples/demo/culayers_demo"
engine_bin="$build_dir/examples/engine/culayers_engine_example_cuda"
step_timeout="${CULAYERS_STEP_TIMEOUT:-300}"
sanitizer_filter="${CULAYERS_SANITIZER_FILTER:-}"

# ---- the card ---------------------------------------------------------------------------------------
query() { nvidia-smi -i 0 --query-gpu="$1" --format=csv,noheader 2>/dev/null | head -n1; }
card="$(query name)"
driver="$(query driver_version)"
cuda_driver="$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: *[0-9.]*' | head -n1 | sed 's/.*: *//')"
nvcc_version="$(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' | sed 's/release //')"
slug="$(printf '%s' "$card" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')"
[[ -n "$slug" ]] || slug="unknown-gpu"
day="$(date -u +%Y-%m-%d)"
stamp="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty=""
if [[ "$commit" != unknown ]] && [[ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  dirty=" (with uncommitted changes)"
fi

results_dir="$root/bench/results"
mkdir -p "$results_dir"
report="$results_dir/$slug-$day.md"
json="$results_dir/$slug-$day.json"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

echo "gpu_check: $card (driver $driver, CUDA $cuda_driver) -> $report"

# cuDNN lives in the Python environment (nvidia/cudnn/lib); binaries that need it find it this way.
cudnn_lib="$(python3 - <<'PY' 2>/dev/null
import glob, importlib.util, os, site, sys
dirs = []
try:
    spec = importlib.util.find_spec("nvidia.cudnn")
    if spec and spec.submodule_search_locations:
        dirs += [os.path.join(p, "lib") for p in spec.submodule_search_locations]
except Exception:
    pass
roots = list(getattr(site, "getsitepackages", lambda: [])()) + [site.getusersitepackages()] + sys.path
for r in roots:
    dirs += glob.glob(os.path.join(r, "nvidia", "cudnn", "lib"))
for d in dirs:
    if os.path.isdir(d):
        print(os.path.realpath(d))
        break
PY
)"
if [[ -n "$cudnn_lib" ]]; then
  export LD_LIBRARY_PATH="$cudnn_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# ---- steps ------------------------------------------------------------------------------------------
declare -a step_names step_results step_seconds
failed=0

# run_step <name> <log> <command...>: runs under a timeout, records PASS/FAIL/TIMEOUT and the duration.
run_step() {
  local name="$1" log="$2"
  shift 2
  echo "== $name: $*"
  local start end rc
  start=$(date +%s)
  { echo "\$ $*"; timeout "$step_timeout" "$@"; } >"$log" 2>&1
  rc=$?
  end=$(date +%s)
  local result=PASS
  if (( rc == 124 )); then
    result="TIMEOUT after ${step_timeout}s"
  elif (( rc != 0 )); then
    result="FAIL (exit $rc)"
  fi
  [[ "$result" == PASS ]] || failed=1
  step_names+=("$name")
  step_results+=("$result")
  step_seconds+=("$((end - start))")
  echo "   $result in $((end - start)) s"
}

# mark_last_failed <reason>: a step that exited 0 but did not do its job (e.g. saw no GPU).
mark_last_failed() {
  local last=$((${#step_results[@]} - 1))
  if [[ "${step_results[$last]}" == PASS ]]; then
    step_results[last]="FAIL ($1)"
    failed=1
    echo "   but FAIL: $1"
  fi
}

skip_step() {
  step_names+=("$1")
  step_results+=("NOT RUN: $2")
  step_seconds+=("0")
  failed=1
  echo "== $1: NOT RUN: $2"
}

nvidia-smi -q -d CLOCK >"$logs/clocks_before.txt" 2>&1
nvidia-smi -q -d PERFORMANCE >"$logs/performance.txt" 2>&1

gtest_filter_args=()
[[ -n "$sanitizer_filter" ]] && gtest_filter_args=("--gtest_filter=$sanitizer_filter")

if [[ -x "$tests_bin" ]]; then
  run_step "tests" "$logs/tests.log" "$tests_bin"
  # nvidia-smi sees a GPU, so a test binary that skipped for want of one is a failure here.
  if grep -q "no CUDA GPU visible" "$logs/tests.log"; then
    mark_last_failed "the test binary saw no usable GPU"
  fi
  if command -v compute-sanitizer >/dev/null 2>&1; then
    run_step "memcheck" "$logs/memcheck.log" compute-sanitizer --tool memcheck --leak-check full \
      --error-exitcode 1 "$tests_bin" "${gtest_filter_args[@]}"
    run_step "racecheck" "$logs/racecheck.log" compute-sanitizer --tool racecheck --error-exitcode 1 \
      "$tests_bin" "${gtest_filter_args[@]}"
    run_step "synccheck" "$logs/synccheck.log" compute-sanitizer --tool synccheck --error-exitcode 1 \
      "$tests_bin" "${gtest_filter_args[@]}"
  else
    for t in memcheck racecheck synccheck; do skip_step "$t" "compute-sanitizer not found"; done
  fi
else
  skip_step "tests" "$tests_bin missing (build it with scripts/gpu_build.sh and carry it)"
  for t in memcheck racecheck synccheck; do skip_step "$t" "no test binary"; done
fi

for example in "$demo_bin" "$engine_bin"; do
  name="$(basename "$example")"
  if [[ -x "$example" ]]; then
    if [[ "$name" == culayers_demo ]]; then
      run_step "$name" "$logs/$name.log" "$example" "$logs/demo_output"
    else
      run_step "$name" "$logs/$name.log" "$example"
    fi
  else
    skip_step "$name" "$example missing (build it with scripts/gpu_build.sh and carry it)"
  fi
done

rm -f "$json" # never report an earlier run's numbers as this run's
if [[ -x "$bench_bin" ]]; then
  # shellcheck disable=SC2086  # CULAYERS_BENCH_ARGS is a list of flags
  run_step "benchmarks" "$logs/bench.log" "$bench_bin" --benchmark_out="$json" --benchmark_out_format=json \
    ${CULAYERS_BENCH_ARGS:-}
  if grep -q "no CUDA GPU visible" "$logs/bench.log" || [[ ! -s "$json" ]]; then
    mark_last_failed "no benchmark results: see the console output"
  elif grep -q '"error_occurred": true' "$json"; then
    mark_last_failed "some benchmarks failed verification or errored: see the table"
  fi
else
  skip_step "benchmarks" "$bench_bin missing (build it with scripts/gpu_build.sh and carry it)"
fi
nvidia-smi -q -d CLOCK >"$logs/clocks_after.txt" 2>&1

# ---- report -----------------------------------------------------------------------------------------
fence() { echo '```'; cat "$1"; echo '```'; }
tail_fence() { echo '```'; tail -n "$2" "$1"; echo '```'; }

bench_table() {
  [[ -s "$json" ]] || { echo "(no benchmark JSON)"; return; }
  python3 - "$json" <<'PY' || echo "(could not summarize $json; see the JSON)"
import json, sys
data = json.load(open(sys.argv[1]))
benchmarks = data.get("benchmarks", [])
cv = {b.get("run_name"): b.get("real_time") for b in benchmarks if b.get("aggregate_name") == "cv"}
print("Median over repetitions (times from CUDA events; each iteration after an L2 flush; cv = spread of")
print("the repetitions' times).\n")
print("| benchmark | time (us) | GB/s | % of copy | bytes | cv % |")
print("|---|---:|---:|---:|---:|---:|")
seen = set()
f = lambda v, fmt: (fmt % v) if isinstance(v, (int, float)) else ""
for b in benchmarks:
    name = b.get("run_name", b.get("name"))
    if b.get("error_occurred"):
        if name not in seen:
            seen.add(name)
            print(f"| {name} | error: {b.get('error_message', '')} | | | | |")
        continue
    if b.get("aggregate_name", "median") != "median":
        continue
    unit = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}.get(b.get("time_unit", "us"), 1.0)
    t = b.get("real_time", float("nan")) * unit
    spread = cv.get(name)
    print(f"| {name} | {t:.1f} | {f(b.get('GB/s'), '%.1f')} | {f(b.get('pct_of_copy'), '%.1f')} "
          f"| {f(b.get('bytes'), '%.0f')} | {f(spread * 100 if spread is not None else None, '%.1f')} |")
PY
}

{
  echo "# culayers GPU check: $card, $day"
  echo
  echo "- card: $card (nvidia-smi -i 0)"
  echo "- driver: $driver; CUDA version reported by the driver: ${cuda_driver:-unknown}; nvcc on the machine: ${nvcc_version:-none}"
  echo "- culayers commit: $commit$dirty; binaries from $build_dir (built by scripts/gpu_build.sh, sm_90, Release)"
  echo "- run at: $stamp on $(hostname 2>/dev/null || echo unknown)"
  echo "- cuDNN library folder on LD_LIBRARY_PATH: ${cudnn_lib:-not found}"
  echo "- clocks: not changed by this script (no locking, no power or mode changes); the card ran as found"
  echo
  echo "## Steps"
  echo
  echo "| step | result | seconds |"
  echo "|---|---|---:|"
  for i in "${!step_names[@]}"; do
    echo "| ${step_names[$i]} | ${step_results[$i]} | ${step_seconds[$i]} |"
  done
  echo
  echo "## Benchmarks"
  echo
  bench_table
  echo
  [[ -f "$logs/bench.log" ]] && { echo "Console output:"; echo; fence "$logs/bench.log"; echo; }
  echo "## Tests, compute-sanitizer and examples (last lines of each log)"
  for name in tests memcheck racecheck synccheck culayers_demo culayers_engine_example_cuda; do
    [[ -f "$logs/$name.log" ]] || continue
    echo
    echo "### $name"
    echo
    tail_fence "$logs/$name.log" 25
  done
  echo
  echo "## Clocks before the run (nvidia-smi -q -d CLOCK)"
  echo
  fence "$logs/clocks_before.txt"
  echo
  echo "## Clocks after the run"
  echo
  fence "$logs/clocks_after.txt"
  echo
  echo "## Performance state and throttle reasons before the run (nvidia-smi -q -d PERFORMANCE)"
  echo
  fence "$logs/performance.txt"
} >"$report"

echo
echo "gpu_check: wrote $report"
[[ -s "$json" ]] && echo "gpu_check: wrote $json"

if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  cp "$report" "$OUT/"
  [[ -s "$json" ]] && cp "$json" "$OUT/"
  for name in tests memcheck racecheck synccheck bench culayers_demo culayers_engine_example_cuda; do
    [[ -f "$logs/$name.log" ]] && cp "$logs/$name.log" "$OUT/$name.log"
  done
  echo "gpu_check: copied the report, JSON and logs to \$OUT"
fi

echo
for i in "${!step_names[@]}"; do
  printf '%-12s %s (%ss)\n' "${step_names[$i]}" "${step_results[$i]}" "${step_seconds[$i]}"
done
exit "$failed"
