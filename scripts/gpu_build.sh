#!/usr/bin/env bash
# Builds the CUDA binaries that scripts/gpu_check.sh runs on a GPU machine. Runs HERE (no GPU needed:
# nvcc compiles without one): configures the `gpu` preset (build/gpu: CUDA backend only, sm_90, Release,
# GoogleTest and cudart linked statically), builds culayers_tests_cuda, culayers_bench, the demo
# (culayers_demo) and the engine example (culayers_engine_example_cuda), puts the
# shared Google Benchmark library beside culayers_bench (its RUNPATH is $ORIGIN; the GPU machine has no
# Google Benchmark), and checks that what must travel to the GPU machine stays well under 64 MiB.
#
# Usage: scripts/gpu_build.sh            (from anywhere inside the repository)
# Then, on the GPU machine, with the printed paths carried: scripts/gpu_check.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

build_dir=build/gpu
limit_mib=64
# "Well under" the carry limit: leave room for the working tree that travels with it.
budget_mib=48

echo "== configure (preset gpu -> $build_dir)"
cmake --preset gpu

echo "== build culayers_tests_cuda culayers_bench culayers_demo culayers_engine_example_cuda"
cmake --build "$build_dir" --target culayers_tests_cuda culayers_bench culayers_demo culayers_engine_example_cuda

tests_bin="$build_dir/tests/culayers_tests_cuda"
bench_bin="$build_dir/bench/culayers_bench"
demo_bin="$build_dir/examples/demo/culayers_demo"
engine_bin="$build_dir/examples/engine/culayers_engine_example_cuda"
for bin in "$tests_bin" "$bench_bin" "$demo_bin" "$engine_bin"; do
  if [[ ! -x "$bin" ]]; then
    echo "gpu_build: expected binary $bin is missing" >&2
    exit 1
  fi
done

# Ship every shared library the GPU machine lacks beside the binary that needs it. Today that is only
# Google Benchmark (GoogleTest and cudart are static); it is found through ldd, under its SONAME.
# A copy shipped by an earlier run would shadow the system library in ldd's answer: drop it first.
rm -f "$build_dir"/bench/libbenchmark.so*
ship=()
while read -r soname path; do
  [[ -n "$path" && -f "$path" ]] || continue
  cp -L "$path" "$build_dir/bench/$soname"
  ship+=("$build_dir/bench/$soname")
  echo "shipped $path -> $build_dir/bench/$soname"
done < <(ldd "$bench_bin" | awk '/libbenchmark/ { print $1, $3 }')
if [[ ${#ship[@]} -eq 0 ]]; then
  echo "gpu_build: ldd found no libbenchmark for $bench_bin (static Google Benchmark? nothing to ship)"
fi

# The binaries must not need libcudart.so, GoogleTest or Boost at run time.
for bin in "$tests_bin" "$bench_bin" "$demo_bin" "$engine_bin"; do
  if ldd "$bin" | grep -E 'libcudart|libgtest|libboost' >/dev/null; then
    echo "gpu_build: $bin links a shared library the GPU machine lacks:" >&2
    ldd "$bin" | grep -E 'libcudart|libgtest|libboost' >&2
    exit 1
  fi
done
# shellcheck disable=SC2016  # a literal $ORIGIN
readelf -d "$bench_bin" | grep -E 'RUNPATH|RPATH' | grep -qF '$ORIGIN' || {
  echo "gpu_build: $bench_bin has no \$ORIGIN run path; the shipped libbenchmark would not be found" >&2
  exit 1
}

# What the binaries were built from: gpu_check.sh reports it (the GPU machine's copy of the checkout may not
# carry this git history).
build_info="$build_dir/culayers_build_info.txt"
{
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    echo "dirty yes (uncommitted changes to tracked files)"
  else
    echo "dirty no"
  fi
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$build_info"

carry=("$tests_bin" "$bench_bin" "$demo_bin" "$engine_bin" "${ship[@]}" "$build_info")
total=$(du -cb "${carry[@]}" | tail -n1 | cut -f1)
total_mib=$(( (total + 1048575) / 1048576 ))
echo
echo "== run-time files (total $total bytes, about $total_mib MiB; carry limit $limit_mib MiB)"
du -b "${carry[@]}"
if (( total_mib > budget_mib )); then
  echo "gpu_build: run-time files are $total_mib MiB, over the $budget_mib MiB budget" >&2
  exit 1
fi

echo
echo "== carry these paths to the GPU machine, then run scripts/gpu_check.sh there:"
printf '%s\n' "${carry[@]}"
printf 'carry (JSON): ['
sep=''
for c in "${carry[@]}"; do
  printf '%s"%s"' "$sep" "$c"
  sep=', '
done
printf ']\n'
whole_mib=$(( ($(du -sb "$build_dir" | cut -f1) + 1048575) / 1048576 ))
echo "(or carry \"$build_dir\" whole: about $whole_mib MiB)"
