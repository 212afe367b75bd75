#!/usr/bin/env bash
# The main job: builds culayers (preset default) and runs what the machine can run.
#   - GPU visible (nvidia-smi -L succeeds): the benchmark harness, build/default/bench/culayers_bench
#     (copy roofline and read-only reduction vs the device-to-device copy bandwidth). Extra arguments are
#     passed to it (Google Benchmark flags, e.g. --benchmark_filter=copy).
#   - No GPU: the emulator self-check, build/default/examples/selfcheck/culayers_selfcheck, which runs
#     the project's kernels on the CPU emulator and checks them. Its timings mean nothing.
#
# Environment: CULAYERS_CUDA_ARCHITECTURES (CUDA architectures to build), CULAYERS_JOBS (build jobs).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

scripts/install_deps.sh

configure_args=()
if [[ -n "${CULAYERS_CUDA_ARCHITECTURES:-}" ]]; then
  configure_args+=("-DCMAKE_CUDA_ARCHITECTURES=${CULAYERS_CUDA_ARCHITECTURES}")
fi
build_args=()
if [[ -n "${CULAYERS_JOBS:-}" ]]; then
  build_args+=(-j "${CULAYERS_JOBS}")
fi

echo "==== configure + build (preset default)"
cmake --preset default "${configure_args[@]}"
cmake --build --preset default "${build_args[@]}"

bench=build/default/bench/culayers_bench
selfcheck=build/default/examples/selfcheck/culayers_selfcheck

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo
  echo "==== GPU found:"
  nvidia-smi -L
  if [[ ! -x "$bench" ]]; then
    echo "demo: $bench was not built (is Google Benchmark installed? scripts/install_deps.sh installs it)" >&2
    exit 1
  fi
  echo "==== $bench $*"
  exec "$bench" "$@"
fi

echo
echo "==== NOTICE: no GPU is visible (nvidia-smi -L failed or is missing)."
echo "     The benchmarks need a GPU, so this runs the emulator self-check instead: the project's"
echo "     kernels executed on the CPU by the CUDA emulator and checked against CPU references."
echo "     It proves the kernel code works; it measures nothing (emulator timings are meaningless)."
echo "     On a GPU machine this script runs $bench."
if [[ ! -x "$selfcheck" ]]; then
  echo "demo: $selfcheck was not built" >&2
  exit 1
fi
echo "==== $selfcheck"
exec "$selfcheck"
