#!/usr/bin/env bash
# Coverage-guided fuzzing of the safetensors reader with libFuzzer (fuzz/safetensors_fuzzer.cpp).
#
#   scripts/fuzz.sh                      build, then fuzz for 60 seconds
#   scripts/fuzz.sh --seconds 3600       longer
#   scripts/fuzz.sh --out DIR            build and corpus directory (default build/fuzz)
#   scripts/fuzz.sh --include DIR        another include directory (repeatable; the CUDA toolkit's and
#                                        nlohmann-json's when they are not on the default path; CMake passes
#                                        its own)
#   scripts/fuzz.sh --check              only report whether a clang++ with libFuzzer that finds the headers
#                                        is here (prints it; exit 0 / 1)
#
# Needs clang++ with libFuzzer (Debian: clang and libclang-rt-dev; not installed by install_deps.sh, since
# the test command does not need them). The reader is host code, so it is built on its own with
# -fsanitize=fuzzer,address,undefined; the rest of the library is not involved. The corpus starts from
# valid images written by this script and grows in DIR/corpus between runs; the fuzzer is rebuilt only when
# a source it depends on changed. A crash or a sanitizer report
# leaves the input in DIR/artifacts and exits non-zero; rerun one with: DIR/safetensors_fuzzer <file>.
#
# The model configs and weights are fuzzed by the test suite as well (tests/nn/config_fuzz_test.cpp, a
# mutation fuzzer through the whole model loader on both backends).
set -euo pipefail

export LC_ALL=C # byte lengths (the seeds' header lengths)
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds=60
out="$root/build/fuzz"
check_only=0
includes=(-I"$root" -I"$root/include")
usage() {
  echo "fuzz.sh: $1 (see the header of this script)" >&2
  exit 2
}
while (($# > 0)); do
  case "$1" in
    --seconds | --out | --include)
      (($# >= 2)) || usage "$1 needs a value"
      case "$1" in
        --seconds) seconds="$2" ;;
        --out) out="$2" ;;
        --include) # the compiler's own system directories are searched anyway; naming them breaks
          # the C++ library's #include_next
          [[ "$2" == /usr/include || "$2" == /usr/local/include ]] || includes+=(-isystem "$2") ;;
      esac
      shift 2
      ;;
    --check) check_only=1; shift ;;
    *) usage "unknown argument '$1'" ;;
  esac
done
# The CUDA toolkit's headers (the reader's headers include cuda_runtime_api.h for the front end's types),
# where nvcc or the usual install puts them, unless given.
for cuda_include in "$(dirname "$(command -v nvcc 2>/dev/null || echo /nonexistent/bin/nvcc)")/../include" \
  /usr/local/cuda/include; do
  if [[ -f "$cuda_include/cuda_runtime_api.h" ]]; then
    includes+=(-isystem "$cuda_include")
    break
  fi
done
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "fuzz.sh: --seconds needs a positive whole number, got '$seconds'" >&2
  exit 2
fi

# A clang++ that links libFuzzer and finds the headers the reader includes.
find_clang() {
  local probe_dir c
  probe_dir="$(mktemp -d)"
  printf '%s\n' '#include <cstddef>' '#include <cstdint>' '#include <cuda_runtime_api.h>' \
    '#include <nlohmann/json.hpp>' \
    'extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) { return 0; }' >"$probe_dir/p.cpp"
  for c in clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
    if command -v "$c" >/dev/null 2>&1 &&
      "$c" -std=c++17 "${includes[@]}" -fsanitize=fuzzer,address "$probe_dir/p.cpp" -o "$probe_dir/p" \
        >/dev/null 2>&1; then
      rm -rf "$probe_dir"
      echo "$c"
      return 0
    fi
  done
  rm -rf "$probe_dir"
  return 1
}

if ! clang="$(find_clang)"; then
  echo "fuzz.sh: no clang++ with libFuzzer that finds cuda_runtime_api.h and nlohmann/json.hpp" \
    "(Debian: apt-get install clang libclang-rt-dev; --include DIR for the headers)" >&2
  exit 1
fi
if ((check_only)); then
  echo "$clang"
  exit 0
fi

mkdir -p "$out/corpus" "$out/artifacts"
bin="$out/safetensors_fuzzer"
sources=("$root/fuzz/safetensors_fuzzer.cpp" "$root/layers/safetensors.cpp" "$root/src/status.cpp"
  "$root/src/types.cpp")
# Rebuilt when missing or older than a source, a header of the library or this script.
if [[ ! -x "$bin" ]] || [[ -n "$(find "${sources[@]}" "$root/include" "$root/layers" "${BASH_SOURCE[0]}" \
  -newer "$bin" -print -quit)" ]]; then
  echo "fuzz.sh: building $bin with $clang"
  "$clang" -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined "${includes[@]}" "${sources[@]}" -o "$bin.tmp"
  mv "$bin.tmp" "$bin"
fi

# Seeds: valid images (every dtype, a scalar, an empty tensor, metadata, an empty file). Written with
# printf: the 8-byte little-endian header length, the header, the data.
seed() { # name header data
  local name="$1" header="$2" data="$3" n i
  n=${#header}
  {
    for ((i = 0; i < 8; ++i)); do
      # shellcheck disable=SC2059 # the format is the octal escape of one length byte, on purpose
      printf "\\$(printf '%03o' $(((n >> (8 * i)) & 255)))"
    done
    printf '%s' "$header"
    printf '%b' "$data"
  } >"$out/corpus/$name"
}
seed seed_f32_f16 '{"__metadata__":{"format":"pt"},"l/beta":{"dtype":"F16","shape":[2,2],"data_offsets":[16,24]},"l/gamma":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}' \
  '\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x00\x40\x40\x00\x00\x80\x40\x00\x3c\x00\x40\x00\x42\x00\x44'
seed seed_types '{"s":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},"e":{"dtype":"I64","shape":[0,3],"data_offsets":[2,2]},"u":{"dtype":"U8","shape":[3],"data_offsets":[2,5]},"i":{"dtype":"I32","shape":[1,1,1],"data_offsets":[5,9]}}' \
  '\x80\x3f\x01\x02\x03\x01\x00\x00\x00'
seed seed_empty '{}' ''

echo "fuzz.sh: fuzzing for ${seconds} s (corpus $out/corpus, crashes in $out/artifacts)"
"$bin" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$out/artifacts/" "$out/corpus"
