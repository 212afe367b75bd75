// Helpers shared by the tests of kernels/common (tests/common/*.cu): dtype traits with the unit
// roundoff each tolerance is built from, bit-level comparisons, and (emulated build) a guard that
// silences the emulator's stderr reports around faults planted on purpose.
#pragma once

#include "kernels/common/common.cuh"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace culayers::test::common {

template <class T>
struct DTypeTraits;

// kUnitRoundoff: the largest relative error of one round-to-nearest to T (half an ulp at 1).
template <>
struct DTypeTraits<float> {
  static constexpr double kUnitRoundoff = 0x1p-24;
  static constexpr const char* kName = "float";
};
template <>
struct DTypeTraits<__half> {
  static constexpr double kUnitRoundoff = 0x1p-11;
  static constexpr const char* kName = "half";
};
template <>
struct DTypeTraits<__nv_bfloat16> {
  static constexpr double kUnitRoundoff = 0x1p-8;
  static constexpr const char* kName = "bfloat16";
};

/// The object representation of v as an unsigned integer (bit-exact comparisons of float/half/bf16).
template <class T>
std::uint64_t bits_of(const T& v) {
  static_assert(sizeof(T) <= 8, "at most 8 bytes");
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

/// What to print with every failure so a run can be repeated exactly.
inline std::string seed_trace() {
  return "base seed " + std::to_string(base_seed()) +
         " (rerun with CULAYERS_TEST_SEED=" + std::to_string(base_seed()) + " and the same --gtest_filter)";
}

#if CULAYERS_TEST_EMULATED
/// Around a fault planted on purpose: the emulator does not print it to stderr, the previous emulator
/// message is cleared (so the one checked is this test's), and the pending CUDA error is consumed on
/// exit so it cannot leak into the next test.
class QuietEmulatorFaults {
 public:
  QuietEmulatorFaults() {
    culayers_emu::set_report_to_stderr(false);
    culayers_emu::clear_error_message();
  }
  ~QuietEmulatorFaults() {
    (void)cudaDeviceSynchronize();
    (void)cudaGetLastError();
    culayers_emu::set_report_to_stderr(true);
  }
  QuietEmulatorFaults(const QuietEmulatorFaults&) = delete;
  QuietEmulatorFaults& operator=(const QuietEmulatorFaults&) = delete;
};

/// A kernel fault comes back from the launch itself when streams run work immediately, and from the
/// next synchronization in deferred mode (as an asynchronous fault does on a GPU). Returns the fault.
inline cudaError_t fault_of(cudaError_t launch_result) {
  if (!culayers_emu::deferred()) {
    return launch_result;
  }
  EXPECT_EQ(launch_result, cudaSuccess) << "deferred mode: the launch itself must not fail";
  return cudaDeviceSynchronize();
}
#endif

} // namespace culayers::test::common
