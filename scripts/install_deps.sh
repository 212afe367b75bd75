#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages culayers needs to build and test, if any is missing. Idempotent and
# silent when everything is present. Uses apt-get (through sudo when not root).
#
# Not installed here: the CUDA toolkit (nvcc and its headers, needed by both backends); it is checked
# for and reported.
set -euo pipefail

packages=(
  cmake                # >= 3.25 (presets v6, workflow presets)
  ninja-build
  g++
  libboost-context-dev # emulator fibers (Boost.Context)
  nlohmann-json3-dev   # layer configs (JSON)
  libgtest-dev         # GoogleTest (static)
  libbenchmark-dev     # Google Benchmark (bench/)
  clang-format         # formatting check in scripts/test.sh
)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install_deps: not a Debian-based system (no dpkg-query); install these yourself: ${packages[*]}" >&2
  exit 0
fi

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} > 0)); then
  sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "install_deps: missing packages (${missing[*]}) and not root; sudo is not available" >&2
      exit 1
    fi
    sudo=(sudo)
  fi
  echo "install_deps: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install_deps: done"
fi

# The CUDA toolkit: nvcc on PATH or in /usr/local/cuda/bin (the scripts add the latter to PATH).
if ! command -v nvcc >/dev/null 2>&1 && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  cat >&2 <<'MSG'
install_deps: the CUDA toolkit was not found (no nvcc on PATH or in /usr/local/cuda/bin). Both backends
need its headers (the emulated build compiles against cuda_runtime.h, cuda_fp16.h, ...); install the
CUDA toolkit from NVIDIA's packages for your distribution, or set CUDAToolkit_ROOT.
MSG
  exit 1
fi
