#!/usr/bin/env bash
# The test command: builds culayers and runs every check that needs no GPU.
#
#   scripts/test.sh                  all stages below, in order
#   scripts/test.sh default tsan     only the named stages (lint, default, asan, tsan, consumer)
#
# Stages:
#   deps      install missing Debian packages (scripts/install_deps.sh); always runs
#   lint      clang-format check of every C/C++/CUDA source; `<<<` only in the launch helper
#   default   preset default: both backends; ctest runs the emulated suite plainly and with deferred
#             streams, the CUDA test binary (Skipped without a GPU) and the install + consumer package test
#   asan      preset asan: the emulated suite under ASan + UBSan
#   tsan      preset tsan: the TSan subset of the emulated suite
#   consumer  install build/default into build/consumer/prefix; configure, build and run
#             examples/consumer against it
#
# Environment:
#   CULAYERS_CUDA_ARCHITECTURES  CUDA architectures for the default build (CI: 90); default 80/86/89/90
#   CULAYERS_CUDA_CHECK_ARCHITECTURES
#                                more real architectures whose device code the default build compiles only
#                                to check it: ptxas spills are errors (CI: 80;86, default ones it
#                                does not build)
#   CULAYERS_JOBS                parallel build jobs (default: ninja's choice)
#
# Exits non-zero if any stage failed; a summary with timings is printed at the end.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1

if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

all_stages=(lint default asan tsan consumer)
if (($# > 0)); then
  stages=("$@")
  for s in "${stages[@]}"; do
    if [[ " ${all_stages[*]} " != *" $s "* ]]; then
      echo "test.sh: unknown stage '$s' (stages: ${all_stages[*]})" >&2
      exit 2
    fi
  done
else
  stages=("${all_stages[@]}")
fi

configure_args=()
if [[ -n "${CULAYERS_CUDA_ARCHITECTURES:-}" ]]; then
  configure_args+=("-DCMAKE_CUDA_ARCHITECTURES=${CULAYERS_CUDA_ARCHITECTURES}")
fi
if [[ -n "${CULAYERS_CUDA_CHECK_ARCHITECTURES:-}" ]]; then
  configure_args+=("-DCULAYERS_CUDA_CHECK_ARCHITECTURES=${CULAYERS_CUDA_CHECK_ARCHITECTURES}")
fi
build_args=()
if [[ -n "${CULAYERS_JOBS:-}" ]]; then
  build_args+=(-j "${CULAYERS_JOBS}")
fi

summary=()
failed=0
overall_start=$SECONDS

# run_step <label> <command...>: runs one command, records its result and time; returns its status.
run_step() {
  local label="$1"
  shift
  local start=$SECONDS
  echo
  echo "==== [$label] $*"
  "$@"
  local rc=$?
  local secs=$((SECONDS - start))
  if ((rc == 0)); then
    summary+=("$(printf '%-34s %-6s %5ds' "$label" ok "$secs")")
  else
    summary+=("$(printf '%-34s %-6s %5ds  (exit %d)' "$label" FAILED "$secs" "$rc")")
    failed=1
  fi
  return $rc
}

skip_rest() {
  summary+=("$(printf '%-34s %-6s' "$1" skipped)")
}

# Every C/C++/CUDA file in the repository (tracked or new, not ignored).
source_files() {
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- \
      '*.c' '*.h' '*.cpp' '*.hpp' '*.cu' '*.cuh' | xargs -0 -r ls -1 2>/dev/null
  else
    find . -path ./build -prune -o -type f \
      \( -name '*.c' -o -name '*.h' -o -name '*.cpp' -o -name '*.hpp' -o -name '*.cu' -o -name '*.cuh' \) -print |
      sed 's|^\./||'
  fi
}

lint_format() {
  if ! command -v clang-format >/dev/null 2>&1; then
    echo "clang-format not found (scripts/install_deps.sh installs it)" >&2
    return 1
  fi
  local files
  mapfile -t files < <(source_files)
  local bad=() f
  for f in "${files[@]}"; do
    clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  echo "clang-format: ${#files[@]} files checked, ${#bad[@]} not formatted"
  if ((${#bad[@]} > 0)); then
    printf '  %s\n' "${bad[@]}" >&2
    echo "  fix with: clang-format -i <file> (style: .clang-format)" >&2
    return 1
  fi
}

# Kernels launch only through CULAYERS_LAUNCH: the file defining it is the only place `<<<` may appear.
lint_launch() {
  local files helper offenders
  mapfile -t files < <(source_files)
  ((${#files[@]} > 0)) || return 0
  helper="$(grep -lE '^[[:space:]]*#[[:space:]]*define[[:space:]]+CULAYERS_LAUNCH\b' "${files[@]}" | head -n1)"
  echo "launch helper: ${helper:-<none yet>}"
  offenders="$(grep -n '<<<' "${files[@]}" | grep -v "^${helper:-/nonexistent}:" || true)"
  if [[ -n "$offenders" ]]; then
    echo "\`<<<\` outside the launch helper:" >&2
    echo "$offenders" >&2
    return 1
  fi
}

# configure + build + test one preset.
preset_stage() {
  local preset="$1"
  shift
  run_step "$preset: configure" cmake --preset "$preset" "$@" || {
    skip_rest "$preset: build"
    skip_rest "$preset: test"
    return
  }
  run_step "$preset: build" cmake --build --preset "$preset" "${build_args[@]}" || {
    skip_rest "$preset: test"
    return
  }
  run_step "$preset: test" ctest --preset "$preset"
}

consumer_stage() {
  local prefix="$root/build/consumer/prefix" bdir="$root/build/consumer/build"
  if [[ ! -f build/default/CMakeCache.txt ]]; then
    run_step "consumer: install" false
    echo "consumer: build/default is missing; run the default stage first" >&2
    return
  fi
  rm -rf "$root/build/consumer"
  run_step "consumer: install" cmake --install build/default --prefix "$prefix" || return
  run_step "consumer: configure" cmake -S examples/consumer -B "$bdir" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$prefix" || return
  run_step "consumer: build" cmake --build "$bdir" "${build_args[@]}" || return
  run_step "consumer: run" ctest --test-dir "$bdir" -V
}

run_step "deps" scripts/install_deps.sh || {
  echo "test.sh: dependencies are missing; stopping" >&2
  printf '%s\n' "${summary[@]}"
  exit 1
}

for stage in "${stages[@]}"; do
  case "$stage" in
    lint)
      run_step "lint: clang-format" lint_format
      run_step "lint: <<< only in launch helper" lint_launch
      ;;
    default) preset_stage default "${configure_args[@]}" ;;
    asan) preset_stage asan ;;
    tsan) preset_stage tsan ;;
    consumer) consumer_stage ;;
  esac
done

echo
echo "==== culayers test summary (total $((SECONDS - overall_start))s)"
printf '%s\n' "${summary[@]}"
if ((failed)); then
  echo "RESULT: FAILED"
  exit 1
fi
echo "RESULT: all passed"
