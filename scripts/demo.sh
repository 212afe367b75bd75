#!/usr/bin/env bash
# The main job: builds culayers (preset default) and runs what the machine can run.
#   - GPU visible (nvidia-smi -L succeeds): the demo model on CUDA (examples/demo: a padded batch through
#     Masking -> GroupNormalization(SiLU) -> DecayingDropout -> BatchNormalization -> pooling, training
#     steps, inference, save + reload), then the benchmark harness build/default/bench/culayers_bench
#     (ours vs baselines vs the device-to-device copy). Extra arguments go to the benchmarks (Google
#     Benchmark flags, e.g. --benchmark_filter=group_norm).
#   - No GPU: the same demo on the CPU emulator, then the emulator self-check
#     (build/default/examples/selfcheck/culayers_selfcheck). Emulator timings mean nothing.
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
demo_cuda=build/default/examples/demo/culayers_demo
demo_emulated=build/default/examples/demo/culayers_demo_emulated
selfcheck=build/default/examples/selfcheck/culayers_selfcheck
out_dir=build/default/demo_output

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo
  echo "==== GPU found:"
  nvidia-smi -L
  for f in "$demo_cuda" "$bench"; do
    if [[ ! -x "$f" ]]; then
      echo "demo: $f was not built (the CUDA backend needs nvcc; the benchmarks Google Benchmark:" \
        "scripts/install_deps.sh installs it)" >&2
      exit 1
    fi
  done
  echo "==== $demo_cuda $out_dir"
  "$demo_cuda" "$out_dir"
  echo
  echo "==== $bench $*"
  exec "$bench" "$@"
fi

echo
echo "==== NOTICE: no GPU is visible (nvidia-smi -L failed or is missing)."
echo "     This runs the demo model and the kernel self-check on the CPU EMULATOR instead: the project's"
echo "     kernels executed on the CPU with CUDA's semantics. It proves the code works; it measures"
echo "     nothing (emulator timings are meaningless). On a GPU machine this script runs the CUDA demo"
echo "     ($demo_cuda) and the benchmarks ($bench)."
for f in "$demo_emulated" "$selfcheck"; do
  if [[ ! -x "$f" ]]; then
    echo "demo: $f was not built" >&2
    exit 1
  fi
done
echo "==== $demo_emulated $out_dir"
"$demo_emulated" "$out_dir"
echo
echo "==== $selfcheck"
exec "$selfcheck"
