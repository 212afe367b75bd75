#!/usr/bin/env bash
# The GPU check: runs ON a machine with an NVIDIA GPU, over binaries built elsewhere by
# scripts/gpu_build.sh (the GPU machines have nvcc, CMake, ninja and PyTorch, but no GoogleTest, Google
# Benchmark or network, so nothing is built here).
#
#   scripts/gpu_check.sh                    every step below, in this order, within the deadline
#   scripts/gpu_check.sh bench tests        only the named steps (in the order given)
#
# Steps, most important first (a lent GPU machine gives one command 10 minutes and a session little more
# device time in all, so the whole check runs against one deadline and keeps its report current):
#   tests      the CUDA test binary (every test)
#   bench      culayers_bench in parts, each with its own JSON: masked reductions, dropout, group norm
#              shape 3, shape 2, shape 1, the roofline cases, batch normalization, cast, and last the group-norm
#              ours cases and the few-output masked moments again with CULAYERS_NO_PDL=1 (named ..._no_pdl
#              in the merged JSON) (a part cut off by the deadline loses only itself)
#   examples   the demo (culayers_demo) and the engine example (culayers_engine_example_cuda), which check
#              their own results
#   memcheck   compute-sanitizer memcheck (with leak check) over CULAYERS_SANITIZER_FILTER (default: the
#              *Tsan* small-grid tests, the launch helper's and the NHWC benchmark peer's; every test under
#              memcheck takes far longer than a lent machine's 10 minutes)
#   racecheck  compute-sanitizer racecheck and synccheck over CULAYERS_RACE_FILTER (default *Tsan*: the
#   synccheck  small-grid tests written to drive every shared-memory and barrier path of every kernel
#              family through several blocks and grid-stride rounds)
#   selftest   the self-test of the benchmarks' verifications (culayers_bench --culayers_perturb=K, see
#              bench/harness.hpp): one element of output K of every verification is changed and every
#              verification must fail; output 0 over a case of every verification, outputs 1 and 2 over the
#              cases that have them (nothing is timed; last: it tests the benchmarks, not the library)
# The card, driver, CUDA version and clocks are recorded read-only: clocks, power limits, modes and the
# GPU itself are never changed or reset.
#
# Writes bench/results/<card-slug>-<YYYY-MM-DD>.md (-runN.md where an earlier run of the day left its
# files there, N = 2, 3, ...; and .json: every benchmark part merged; the .md opens
# with bench/goals.py's table of the performance goals against these numbers) after every
# step, and copies both into $OUT when that is set, with the logs and benchmark part JSONs in one archive
# (gpu_check_logs.tar.gz: three files in all), so a run cut off from outside still leaves what it had
# finished. A step that would start with under 20 s left before the deadline is
# reported NOT RUN.
#
# Without a GPU (nvidia-smi -L fails) it says so and exits 0. Otherwise it exits 1 if any step failed,
# timed out or did not run.
#
# Environment (all optional):
#   CULAYERS_GPU_BUILD_DIR        build folder holding tests/ and bench/ (default build/gpu)
#   CULAYERS_GPU_DEADLINE         seconds the whole check may take (default 540, under the 600 s a lent
#                                 machine allows one command, leaving time to bring the results back)
#   CULAYERS_STEP_TIMEOUT         the most seconds one step (or benchmark part) may run (default 200: the
#                                 longest part took 99 s; a hang must not take the whole deadline)
#   CULAYERS_SANITIZER_FILTER     gtest filter for memcheck (default: *Tsan*:CommonLaunch.*:NhwcSums*;
#                                 '*' for every test)
#   CULAYERS_RACE_FILTER          gtest filter for racecheck and synccheck (default: *Tsan*)
#   CULAYERS_BENCH_ARGS           extra arguments for every culayers_bench part, never a filter (e.g.
#                                 --benchmark_repetitions=3)
#   CULAYERS_BENCH_PARTS          the benchmark parts to run, by name, space-separated (default: all of
#                                 them; the names are in bench_parts below)
set -uo pipefail

script_start=$(date +%s)
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1
# shellcheck source=scripts/gpu_common.sh
source "$root/scripts/gpu_common.sh"

all_steps=(tests bench examples memcheck racecheck synccheck selftest)
if (($# > 0)); then
  steps=("$@")
  for s in "${steps[@]}"; do
    known=0
    for k in "${all_steps[@]}"; do
      [[ "$s" == "$k" ]] && known=1
    done
    if ((!known)); then
      echo "gpu_check: unknown step '$s' (steps: ${all_steps[*]}; give them as separate arguments)" >&2
      exit 2
    fi
  done
else
  steps=("${all_steps[@]}")
fi

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
deadline="${CULAYERS_GPU_DEADLINE:-540}"
step_timeout="${CULAYERS_STEP_TIMEOUT:-200}"
sanitizer_filter="${CULAYERS_SANITIZER_FILTER:-*Tsan*:CommonLaunch.*:NhwcSums*}"
race_filter="${CULAYERS_RACE_FILTER:-*Tsan*}"
for v in deadline step_timeout; do
  if [[ ! "${!v}" =~ ^[0-9]+$ ]]; then
    echo "gpu_check: $v must be a whole number of seconds (got '${!v}')" >&2
    exit 2
  fi
done
deadline=$((10#$deadline)) # "08" is eight seconds, not a bad octal number
step_timeout=$((10#$step_timeout))
# Each benchmark part sets its own --benchmark_filter; one in CULAYERS_BENCH_ARGS would come later and win,
# running the same set in every part.
if [[ "${CULAYERS_BENCH_ARGS:-}" == *--benchmark_filter* ]]; then
  echo "gpu_check: CULAYERS_BENCH_ARGS may not hold --benchmark_filter (the parts set their own); run" \
    "build/gpu/bench/culayers_bench --benchmark_filter=... directly for a subset" >&2
  exit 2
fi
# Seconds kept back for the last report and the copy into $OUT; a step needs at least min_step to start.
reserve=10
min_step=20

# The benchmark parts: name, then the --benchmark_filter regex. Issue targets first (shapes 3-7), then
# the rest of group norm's shapes, the roofline, and batch normalization (no issue target).
bench_parts=(
  "masked_reduce" "^masked_reduce/"
  "dropout" "^dropout_"
  "group_norm_s3" "^group_norm/s3_"
  "group_norm_s2" "^group_norm/s2_"
  "group_norm_s1" "^group_norm/s1_"
  "roofline" "^BM_"
  "batch_norm" "^batch_norm/"
  "cast" "^cast/"
  # ours again with CULAYERS_NO_PDL=1 (plain launches for every kernel): the few-output masked moments and
  # every group-norm ours case (the one-kernel forward cases among them show the drift between the two
  # processes); the merged JSON names these cases ..._no_pdl (bench/goals.py lists them next to ours).
  "no_pdl" "^(masked_reduce/s6_moments_f32_B2_T65536_F256/ours_(lengths|mask)|group_norm/s[123]_[^/]*/[^/]*/[^/]*/[^/]*/[^/]*/ours)(/|$)"
)

# The verification self-test: output number, then the --benchmark_filter regex. Output 0 (y, dx, the
# reduction's output, the mean of moments) over one case of every verification and kernel path of the small
# shapes (their CPU references take seconds); outputs 1 and 2 (mean / rstd, dgamma / dbeta, the variance of
# moments, the backward's or a later replay's dropout output, the moving statistics) over the cases that have
# them. The copies and the roofline are not in it (their checks read windows of the output).
selftest_runs=(
  "0" "^(group_norm/s3_N16_C256_56x56/(fp32|bf16)/(nchw|nhwc)/none/(fwd|bwd)/[a-z_]+|group_norm/s1_C320_64x64/bf16/nchw/none/(fwd|bwd)/ours_no_small|masked_reduce/s[46]_[^/]*/(ours_lengths|ours_mask|unfused_cub|unfused_framework)|dropout_(fwd|bwd)/(ours|cudnn)/8191x4095/keep0.8731|dropout_(fwd|bwd)/ours/32x2048x1024/noise32x1x1024/keep0.9|dropout_graph/ours/[^/]*/[^/]*|batch_norm/(resnet_N32_C256_56x56/bf16/nchw|seq_B128_T512_F768/bf16/nhwc)/[a-z_]+/(ours|cudnn)|cast/8192x4096/(f32_to_bf16|f16_to_bf16)/(ours|cub))/"
  "1" "^(group_norm/s3_N16_C256_56x56/bf16/nhwc/none/(fwd/(ours|naive)|bwd/(ours|naive|cudnn))|masked_reduce/s6_moments_f32_B128_T300_F1536/ours_mask|dropout_bwd/(ours|cudnn)/8191x4095/keep0.8731|dropout_graph/ours/[^/]*/[^/]*|batch_norm/resnet_N32_C256_56x56/bf16/nchw/train/(ours|cudnn))/"
  "2" "^(group_norm/s3_N16_C256_56x56/bf16/nhwc/none/(fwd/(ours|naive)|bwd/(ours|naive|cudnn))|dropout_graph/ours/[^/]*/[^/]*|batch_norm/resnet_N32_C256_56x56/bf16/nchw/train/ours)/"
)

if [[ -n "${CULAYERS_BENCH_PARTS:-}" ]]; then
  chosen=()
  for want in $CULAYERS_BENCH_PARTS; do
    found=0
    for ((i = 0; i < ${#bench_parts[@]}; i += 2)); do
      if [[ "${bench_parts[$i]}" == "$want" ]]; then
        chosen+=("${bench_parts[$i]}" "${bench_parts[$((i + 1))]}")
        found=1
      fi
    done
    if ((!found)); then
      echo "gpu_check: CULAYERS_BENCH_PARTS: unknown part '$want'" >&2
      exit 2
    fi
  done
  bench_parts=("${chosen[@]}")
fi

# ---- the card ---------------------------------------------------------------------------------------
query() { nvidia-smi -i 0 --query-gpu="$1" --format=csv,noheader 2>/dev/null | head -n1; }
card="$(query name)"
driver="$(query driver_version)"
cuda_driver="$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: *[0-9.]*' | head -n1 | sed 's/.*: *//')"
nvcc_version="$(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' | sed 's/release //')"
slug="$(card_slug "$card")"
day="$(date -u +%Y-%m-%d)"
stamp="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# The commit the binaries were built from (written by gpu_build.sh and carried with them); else the
# checkout's HEAD here.
build_info="$build_dir/culayers_build_info.txt"
built_from=""
if [[ -f "$build_info" ]]; then
  built_from="$(awk '$1 == "commit" { c = $2 } $1 == "dirty" { d = $2 } END { printf "%s%s", c, (d == "yes" ? " (with uncommitted changes)" : "") }' "$build_info")"
fi
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty=""
if [[ "$commit" != unknown ]] && [[ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  dirty=" (with uncommitted changes)"
fi

results_dir="$root/bench/results"
mkdir -p "$results_dir"
# A later run on the same day gets its own name: the results of the day's earlier runs (committed, or left
# by a run cut off) are never overwritten. (Runs committed before this rule were renamed -run1, -run2 by
# hand: a -run1 takes the plain name too.)
name="$slug-$day"
run=2
while [[ -e "$results_dir/$name.md" || -e "$results_dir/$name.json" ||
  ("$name" == "$slug-$day" && -e "$results_dir/$slug-$day-run1.md") ]]; do
  name="$slug-$day-run$run"
  run=$((run + 1))
done
report="$results_dir/$name.md"
json="$results_dir/$name.json"
rm -f "$json" # never report an earlier run's numbers as this run's
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

echo "gpu_check: $card (driver $driver, CUDA $cuda_driver) -> $report; steps: ${steps[*]}; deadline ${deadline}s"

# cuDNN lives in the Python environment (nvidia/cudnn/lib); binaries that need it find it this way.
use_cudnn_from_python

timeout 20 nvidia-smi -q -d CLOCK >"$logs/clocks_before.txt" 2>&1
timeout 20 nvidia-smi -q -d PERFORMANCE >"$logs/performance.txt" 2>&1

# ---- report (rewritten after every step) -------------------------------------------------------------
declare -a step_names step_results step_seconds step_logs
failed=0

fence() { echo '```'; cat "$1"; echo '```'; }
tail_fence() { echo '```'; tail -n "$2" "$1"; echo '```'; }

# Merges the benchmark parts' JSON files into $json (the first part's context, every part's benchmarks).
merge_json() {
  local parts=() i f
  for ((i = 0; i < ${#bench_parts[@]}; i += 2)); do
    f="$logs/bench-${bench_parts[$i]}.json"
    [[ -s "$f" ]] && parts+=("$f")
  done
  ((${#parts[@]} > 0)) || return 0
  python3 - "$json" "${parts[@]}" <<'PY' || echo "gpu_check: could not merge the benchmark JSON parts" >&2
import json, re, sys
out, merged = sys.argv[1], None
for path in sys.argv[2:]:
    try:
        data = json.load(open(path))
    except Exception:  # a part cut off mid-write: skipped; its step is TIMEOUT and its console log is kept
        continue
    if path.endswith("bench-no_pdl.json"):  # the same cases as the other parts: renamed ours..._no_pdl
        for b in data.get("benchmarks", []):
            for key in ("name", "run_name"):
                if key in b:
                    b[key] = re.sub(r"/(ours[a-z_]*)(?=/|$)", r"/\1_no_pdl", b[key], count=1)
    if merged is None:
        merged = data
    else:
        merged.setdefault("benchmarks", []).extend(data.get("benchmarks", []))
if merged is not None:
    json.dump(merged, open(out, "w"), indent=1)
PY
}

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

write_report() {
  merge_json
  timeout 20 nvidia-smi -q -d CLOCK >"$logs/clocks_after.txt" 2>&1
  {
    echo "# culayers GPU check: $card, $day"
    echo
    echo "- card: $card (nvidia-smi -i 0)"
    echo "- driver: $driver; CUDA version reported by the driver: ${cuda_driver:-unknown}; nvcc on the machine: ${nvcc_version:-none}"
    echo "- binaries: $build_dir, built by scripts/gpu_build.sh (sm_90, Release) from ${built_from:-an unrecorded commit}; the checkout here: $commit$dirty"
    echo "- run at: $stamp on $(hostname 2>/dev/null || echo unknown); steps asked for: ${steps[*]}; deadline ${deadline} s"
    echo "- cuDNN library folder on LD_LIBRARY_PATH: ${cudnn_lib:-not found}"
    echo "- clocks: not changed by this script (no locking, no power or mode changes); the card ran as found"
    echo "- memcheck filter: ${sanitizer_filter:-every test}; racecheck / synccheck filter: $race_filter"
    echo
    echo "## Steps"
    echo
    echo "| step | result | seconds |"
    echo "|---|---|---:|"
    local i
    for i in "${!step_names[@]}"; do
      echo "| ${step_names[$i]} | ${step_results[$i]} | ${step_seconds[$i]} |"
    done
    echo
    echo "## Goals (bench/goals.py)"
    echo
    if [[ -s "$json" ]]; then
      python3 "$root/bench/goals.py" "$json" 2>&1 || echo "(bench/goals.py could not read $json)"
    else
      echo "(no benchmark JSON)"
    fi
    echo
    echo "## Benchmarks"
    echo
    bench_table
    echo
    for i in "${!step_names[@]}"; do
      [[ "${step_names[$i]}" == bench/* && -f "${step_logs[$i]}" ]] || continue
      echo "Console output of ${step_names[$i]}:"
      echo
      fence "${step_logs[$i]}"
      echo
    done
    echo "## Tests, compute-sanitizer and examples (last lines of each log)"
    for i in "${!step_names[@]}"; do
      [[ "${step_names[$i]}" != bench/* && -f "${step_logs[$i]}" ]] || continue
      echo
      echo "### ${step_names[$i]}"
      echo
      tail_fence "${step_logs[$i]}" 25
    done
    echo
    echo "## Clocks before the run (nvidia-smi -q -d CLOCK)"
    echo
    fence "$logs/clocks_before.txt"
    echo
    echo "## Clocks at the last report"
    echo
    fence "$logs/clocks_after.txt"
    echo
    echo "## Performance state and throttle reasons before the run (nvidia-smi -q -d PERFORMANCE)"
    echo
    fence "$logs/performance.txt"
  } >"$report"
  if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    cp "$report" "$OUT/"
    [[ -s "$json" ]] && cp "$json" "$OUT/"
    # The logs and part JSONs travel as one archive: a lent machine brings back only a few files.
    (cd "$logs" && tar -czf "$OUT/gpu_check_logs.tar.gz" --exclude=demo_output ./*.log ./*.txt ./bench-*.json ./selftest-*.json) \
      2>/dev/null
  fi
}

# ---- steps ------------------------------------------------------------------------------------------
record() { # record <name> <result> <seconds> <log>
  step_names+=("$1")
  step_results+=("$2")
  step_seconds+=("$3")
  step_logs+=("$4")
  [[ "$2" == PASS ]] || failed=1
  write_report
}

skip_step() { # skip_step <name> <why>
  echo "== $1: NOT RUN: $2"
  record "$1" "NOT RUN: $2" 0 ""
}

# run_step <name> <log> <command...>: runs under a timeout (the step cap, or the time left before the
# deadline), records PASS / FAIL / TIMEOUT and the duration; returns the command's status.
run_step() {
  local name="$1" log="$2"
  shift 2
  local left=$((deadline - ($(date +%s) - script_start) - reserve))
  if ((left < min_step)); then
    skip_step "$name" "the ${deadline} s deadline was reached"
    return 1
  fi
  local limit=$((left < step_timeout ? left : step_timeout))
  echo "== $name (at most ${limit} s): $*"
  local start rc
  start=$(date +%s)
  { echo "\$ $*"; timeout -k 10 "$limit" "$@"; } >"$log" 2>&1
  rc=$?
  local secs=$(($(date +%s) - start))
  local result=PASS
  if ((rc == 124 || rc == 137)); then
    result="TIMEOUT after ${limit}s"
  elif ((rc != 0)); then
    result="FAIL (exit $rc)"
  fi
  # A binary that exited 0 without doing its job (it saw no GPU although nvidia-smi does) failed.
  if [[ "$result" == PASS ]] && grep -q "no CUDA GPU visible" "$log"; then
    result="FAIL (the binary saw no usable GPU)"
  fi
  # A gtest filter that matched nothing (a renamed suite), or tests that all skipped, checked nothing.
  if [[ "$result" == PASS ]] && grep -q "^\[  PASSED  \] 0 tests" "$log"; then
    result="FAIL (no test ran: the filter matched none, or every one skipped)"
  fi
  echo "   $result in ${secs} s"
  record "$name" "$result" "$secs" "$log"
  return "$rc"
}

step_tests() {
  [[ -x "$tests_bin" ]] || { skip_step tests "$tests_bin missing (build it with scripts/gpu_build.sh and carry it)"; return; }
  run_step tests "$logs/tests.log" "$tests_bin"
}

# Prints "<failed> <unavailable>" for a benchmark part's JSON: the benchmarks that errored (failed their
# verification, or could not run), and how many of those are baseline cases that cannot run on this machine
# (error message starting with "baseline unavailable: ", e.g. cuDNN not found), which do not fail the part;
# "-1 0" when the JSON cannot be read.
count_errors() {
  python3 - "$1" <<'PY' 2>/dev/null || echo "-1 0"
import json
import sys

errored = {}
for b in json.load(open(sys.argv[1])).get("benchmarks", []):
    if b.get("error_occurred"):
        errored[b.get("run_name", b.get("name"))] = str(b.get("error_message", ""))
unavailable = sum(1 for m in errored.values() if m.startswith("baseline unavailable: "))
print(len(errored) - unavailable, unavailable)
PY
}

step_bench() {
  if [[ ! -x "$bench_bin" ]]; then
    skip_step bench "$bench_bin missing (build it with scripts/gpu_build.sh and carry it)"
    return
  fi
  local i name filter part_json last n_failed n_unavailable
  for ((i = 0; i < ${#bench_parts[@]}; i += 2)); do
    name="${bench_parts[$i]}"
    filter="${bench_parts[$((i + 1))]}"
    part_json="$logs/bench-$name.json"
    local env_args=()
    [[ "$name" == no_pdl ]] && env_args=(env CULAYERS_NO_PDL=1)
    # shellcheck disable=SC2086  # CULAYERS_BENCH_ARGS is a list of flags
    run_step "bench/$name" "$logs/bench-$name.log" ${env_args[@]+"${env_args[@]}"} "$bench_bin" "--benchmark_filter=$filter" \
      --benchmark_out="$part_json" --benchmark_out_format=json ${CULAYERS_BENCH_ARGS:-}
    last=$((${#step_results[@]} - 1))
    [[ "${step_results[$last]}" == PASS ]] || continue
    n_failed=0
    n_unavailable=0
    if [[ -s "$part_json" ]]; then
      read -r n_failed n_unavailable < <(count_errors "$part_json")
    fi
    if [[ ! -s "$part_json" ]]; then
      step_results[last]="FAIL (no benchmark JSON: see the console output)"
    elif ((n_failed < 0)); then
      step_results[last]="FAIL (the benchmark JSON could not be read: see the console output)"
    elif ((n_failed > 0)); then
      step_results[last]="FAIL (benchmarks that failed verification or errored: $n_failed; see the table)"
    elif ! grep -q '"run_name"' "$part_json"; then
      step_results[last]="FAIL (the filter matched no benchmark)"
    else
      if ((n_unavailable > 0)); then
        step_results[last]="PASS (baseline cases that cannot run here: $n_unavailable; see the table)"
        write_report
      fi
      continue
    fi
    failed=1
    write_report
  done
}

# Prints how many cases of a self-test run's JSON errored with something other than a self-test verdict
# ("self-test: caught" or "self-test: no output") or an unavailable baseline: cases that failed in set-up
# never reached their verification, so the run checked less than it selected; -1 when the JSON cannot be
# read, -2 when it lists no case.
count_selftest_errors() {
  python3 - "$1" <<'PY' 2>/dev/null || echo "-1"
import json
import sys

cases = {}
for b in json.load(open(sys.argv[1])).get("benchmarks", []):
    cases[b.get("run_name", b.get("name"))] = str(b.get("error_message", "")) if b.get("error_occurred") else ""
ok = ("self-test: caught", "self-test: no output", "baseline unavailable: ")
print(sum(1 for m in cases.values() if not m.startswith(ok)) if cases else -2)
PY
}

# Each run must exit 0 (every verification it exercised caught the perturbation: bench/harness.hpp), and
# every case it selected must have reached its verification.
step_selftest() {
  if [[ ! -x "$bench_bin" ]]; then
    skip_step selftest "$bench_bin missing (build it with scripts/gpu_build.sh and carry it)"
    return
  fi
  local i k out last n
  for ((i = 0; i < ${#selftest_runs[@]}; i += 2)); do
    k="${selftest_runs[$i]}"
    out="$logs/selftest-output$k.json"
    run_step "selftest/output$k" "$logs/selftest-output$k.log" "$bench_bin" "--culayers_perturb=$k" \
      "--benchmark_filter=${selftest_runs[$((i + 1))]}" --benchmark_out="$out" --benchmark_out_format=json
    last=$((${#step_results[@]} - 1))
    [[ "${step_results[$last]}" == PASS ]] || continue
    n=-1
    [[ -s "$out" ]] && n="$(count_selftest_errors "$out")"
    if ((n == 0)); then
      continue
    elif ((n == -2)); then
      step_results[last]="FAIL (the filter matched no benchmark)"
    elif ((n < 0)); then
      step_results[last]="FAIL (no readable benchmark JSON: see the log)"
    else
      step_results[last]="FAIL (cases that errored before their verification: $n; see the log)"
    fi
    failed=1
    write_report
  done
}

step_examples() {
  if [[ -x "$demo_bin" ]]; then
    run_step culayers_demo "$logs/culayers_demo.log" "$demo_bin" "$logs/demo_output"
  else
    skip_step culayers_demo "$demo_bin missing (build it with scripts/gpu_build.sh and carry it)"
  fi
  if [[ -x "$engine_bin" ]]; then
    run_step culayers_engine_example_cuda "$logs/culayers_engine_example_cuda.log" "$engine_bin"
  else
    skip_step culayers_engine_example_cuda "$engine_bin missing (build it with scripts/gpu_build.sh and carry it)"
  fi
}

step_sanitizer() { # step_sanitizer <tool> <filter> <extra compute-sanitizer flags...>
  local tool="$1" filter="$2"
  shift 2
  if [[ ! -x "$tests_bin" ]]; then
    skip_step "$tool" "no test binary"
  elif ! command -v compute-sanitizer >/dev/null 2>&1; then
    skip_step "$tool" "compute-sanitizer not found"
  else
    local args=() api=()
    [[ -n "$filter" ]] && args=("--gtest_filter=$filter")
    # Some tests make CUDA calls fail on purpose (invalid launch configurations, shared memory over the
    # limit) and check the returned error; the tools would count those as errors. The tests check every
    # API result themselves, so the tools look only at device code (when this compute-sanitizer has the
    # option).
    # (The whole help text is read first: `--help | grep -q` under pipefail fails when grep stops early.)
    local help
    help="$(compute-sanitizer --help 2>&1 || true)"
    if [[ "$help" == *--report-api-errors* ]]; then
      api=(--report-api-errors no)
    fi
    run_step "$tool" "$logs/$tool.log" compute-sanitizer --tool "$tool" "${api[@]}" "$@" --error-exitcode 1 \
      "$tests_bin" "${args[@]}"
  fi
}

for step in "${steps[@]}"; do
  case "$step" in
    tests) step_tests ;;
    bench) step_bench ;;
    examples) step_examples ;;
    memcheck) step_sanitizer memcheck "$sanitizer_filter" --leak-check full ;;
    racecheck) step_sanitizer racecheck "$race_filter" ;;
    synccheck) step_sanitizer synccheck "$race_filter" ;;
    selftest) step_selftest ;;
  esac
done
write_report

echo
echo "gpu_check: wrote $report after $(($(date +%s) - script_start)) s"
[[ -s "$json" ]] && echo "gpu_check: wrote $json"
[[ -n "${OUT:-}" ]] && echo "gpu_check: copied the report, JSON and logs to \$OUT"
echo
for i in "${!step_names[@]}"; do
  printf '%-34s %s (%ss)\n' "${step_names[$i]}" "${step_results[$i]}" "${step_seconds[$i]}"
done
exit "$failed"
