// One benchmarked variant of an op (ours, a baseline, a copy) and the steps every variant goes through:
// set up, verify once against the reference, time. Shared by the benchmarks that compare several
// implementations of one configuration (group norm, batch norm).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>

#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <culayers/status.hpp>
#include <culayers/types.hpp>

namespace culayers {
namespace bench {

class Variant {
 public:
  virtual ~Variant() = default;
  /// Allocates, fills, runs untimed prerequisites (e.g. the forward before a backward). "" on success.
  virtual std::string setup() = 0;
  /// Runs the op once and compares it with the reference. "" on success.
  virtual std::string verify() = 0;
  /// The timed work.
  virtual Status op(cudaStream_t s) = 0;
  virtual std::string label() const = 0;
  /// Reads of x (and dy) the variant makes by design; 0 when unknown.
  virtual int x_reads() const { return 0; }
  /// True when the variant could not run because its library rejected the configuration as unsupported.
  virtual bool unsupported() const { return false; }
};

/// The DType of an element type (float, __half, __nv_bfloat16).
template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) {
    return DType::kFloat32;
  } else if constexpr (std::is_same_v<T, __half>) {
    return DType::kFloat16;
  } else {
    return DType::kBFloat16;
  }
}

/// Times a set-up, verified variant (run_timed) and sets its label and the x_reads counter.
void time_variant(benchmark::State& state, std::uint64_t bytes, Variant& v);

/// setup(), verify() once per key (verify_once), then time_variant().
void run_variant(benchmark::State& state, const std::string& key, std::uint64_t bytes, Variant& v);

/// For a baseline with several candidate setups (library modes, dtypes): once per key, every candidate is
/// set up and probe-timed (median_time_ms), then verified in order of speed until one passes; that one is
/// timed in every repetition, so the baseline is the fastest correct one the library offers here. stderr
/// names the choice, the probe times and the candidates passed over with their reasons. When every candidate
/// failed as unsupported() the case errors as a baseline that cannot run here (kBaselineUnavailable); any
/// other failure is a verification failure.
void run_fastest_candidate(benchmark::State& state, const std::string& key, std::uint64_t bytes,
                           int candidates, const std::function<std::unique_ptr<Variant>(int)>& make);

} // namespace bench
} // namespace culayers
