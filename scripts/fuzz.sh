#!/usr/bin/env bash
# Coverage-guided fuzzing of the safetensors reader with libFuzzer (fuzz/safetensors_fuzzer.cpp).
#
#   scripts/fuzz.sh                      build, then fuzz for 60 seconds
#   scripts/fuzz.sh --seconds 3600       longer
#   scripts/fuzz.sh --out DIR            build and corpus directory (default build/fuzz)
#   scripts/fuzz.sh --check              only report whether a clang with libFuzzer is here (exit 0 / 1)
#
# Needs clang++ with libFuzzer (Debian: clang and libclang-rt-dev; not installed by install_deps.sh, since
# the test command does not need them). The reader is host code, so it is built on its own with
# -fsanitize=fuzzer,address,undefined; the rest of the library is not involved. The corpus starts from
# valid images written by this script and grows in DIR/corpus between runs. A crash or a sanitizer report
# leaves the input in DIR/artifacts and exits non-zero; rerun one with: DIR/safetensors_fuzzer <file>.
#
# The model configs and weights are fuzzed by the test suite as well (tests/nn/config_fuzz_test.cpp, a
# mutation fuzzer through the whole model loader on both backends).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds=60
out="$root/build/fuzz"
check_only=0
while (($# > 0)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --check) check_only=1; shift ;;
    *) echo "fuzz.sh: unknown argument '$1' (see the header of this script)" >&2; exit 2 ;;
  esac
done
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "fuzz.sh: --seconds needs a positive whole number, got '$seconds'" >&2
  exit 2
fi

# A clang++ that links libFuzzer.
find_clang() {
  local probe_dir c
  probe_dir="$(mktemp -d)"
  printf '%s\n' '#include <cstddef>' '#include <cstdint>' \
    'extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) { return 0; }' >"$probe_dir/p.cpp"
  for c in clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
    if command -v "$c" >/dev/null 2>&1 &&
      "$c" -fsanitize=fuzzer,address "$probe_dir/p.cpp" -o "$probe_dir/p" >/dev/null 2>&1; then
      rm -rf "$probe_dir"
      echo "$c"
      return 0
    fi
  done
  rm -rf "$probe_dir"
  return 1
}

if ! clang="$(find_clang)"; then
  echo "fuzz.sh: no clang++ with libFuzzer found (Debian: apt-get install clang libclang-rt-dev)" >&2
  exit 1
fi
if ((check_only)); then
  echo "$clang"
  exit 0
fi

mkdir -p "$out/corpus" "$out/artifacts"
bin="$out/safetensors_fuzzer"
echo "fuzz.sh: building $bin with $clang"
"$clang" -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=undefined -I"$root" -I"$root/include" \
  "$root/fuzz/safetensors_fuzzer.cpp" "$root/layers/safetensors.cpp" "$root/src/status.cpp" \
  "$root/src/types.cpp" -o "$bin"

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
