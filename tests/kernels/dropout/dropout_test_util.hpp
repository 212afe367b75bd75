// Helpers shared by the dropout tests (tests/kernels/dropout/, tests/nn/dropout_layer_test.cpp): dtype lists,
// device state setup, seeded inputs, and bit-exact comparisons that print the first mismatches and the seed.
#pragma once

#include "culayers/dropout.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "kernels/common/numeric.cuh"
#include "tests/reference/dropout_reference.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace culayers::test::dropout {

namespace cd = culayers::dropout;
using cd::DropoutState;

template <class T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType kValue = DType::kFloat32;
  static constexpr int kMaxWidth = 4;
};
template <>
struct DTypeOf<__half> {
  static constexpr DType kValue = DType::kFloat16;
  static constexpr int kMaxWidth = 8;
};
template <>
struct DTypeOf<__nv_bfloat16> {
  static constexpr DType kValue = DType::kBFloat16;
  static constexpr int kMaxWidth = 8;
};

inline std::string seed_trace() {
  return "base seed " + std::to_string(base_seed()) +
         " (rerun with CULAYERS_TEST_SEED=" + std::to_string(base_seed()) + " and the same --gtest_filter)";
}

inline Shape shape_of(const std::vector<std::int64_t>& dims) {
  Shape s;
  EXPECT_EQ(Shape::make(dims.data(), static_cast<int>(dims.size()), &s), Status::kSuccess);
  return s;
}

/// Values in [-4, 4) with 16 random mantissa bits (finite, exactly representable in float32).
template <class T>
std::vector<T> random_input(std::mt19937_64& rng, std::size_t n) {
  std::uniform_int_distribution<int> d(-(1 << 15), (1 << 15) - 1);
  std::vector<T> v(n);
  for (auto& x : v) {
    x = kernels::from_float<T>(static_cast<float>(d(rng)) * (1.0f / (1 << 13)));
  }
  return v;
}

/// Random bit patterns: any sign, exponent, NaN payload, infinity or subnormal.
template <class T>
std::vector<T> random_bits(std::mt19937_64& rng, std::size_t n) {
  std::vector<T> v(n);
  for (auto& x : v) {
    const std::uint64_t b = rng();
    std::memcpy(static_cast<void*>(&x), &b, sizeof(T));
  }
  return v;
}

template <class T>
std::uint32_t bits_of(const T& v) {
  std::uint32_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

/// Bit-exact comparison; describes the first few mismatches (empty when equal).
template <class T>
std::string compare_bits(const std::vector<T>& got, const std::vector<T>& want, std::size_t n) {
  std::ostringstream os;
  int shown = 0;
  std::size_t count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (bits_of(got[i]) != bits_of(want[i])) {
      if (shown < 5) {
        os << " [" << i << "] got 0x" << std::hex << bits_of(got[i]) << " want 0x" << bits_of(want[i])
           << std::dec;
        ++shown;
      }
      ++count;
    }
  }
  if (count == 0) {
    return {};
  }
  return std::to_string(count) + " of " + std::to_string(n) + " differ:" + os.str();
}

/// A DropoutState in device memory, initialized through the op.
class DeviceState {
 public:
  explicit DeviceState(const cd::DropoutInitArgs& init, cudaStream_t stream = nullptr) : buf_(1) {
    cd::DropoutInitArgs a = init;
    a.state = buf_.get();
    status_ = cd::run(a, nullptr, 0, stream);
  }
  Status init_status() const { return status_; }
  DropoutState* get() const { return buf_.get(); }
  /// Synchronous copy (waits for the device).
  DropoutState read() const {
    DropoutState s{};
    EXPECT_EQ(cudaMemcpy(&s, buf_.get(), sizeof(s), cudaMemcpyDeviceToHost), cudaSuccess);
    return s;
  }
  Status update(cudaStream_t stream = nullptr) const {
    cd::DropoutUpdateArgs u;
    u.state = buf_.get();
    return cd::run(u, nullptr, 0, stream);
  }
  Status redraw(cudaStream_t stream = nullptr, bool to_schedule = false) const {
    cd::DropoutRedrawArgs r;
    r.state = buf_.get();
    r.to_schedule = to_schedule;
    return cd::run(r, nullptr, 0, stream);
  }

 private:
  DeviceBuffer<DropoutState> buf_;
  Status status_ = Status::kErrorInternal;
};

inline cd::DropoutInitArgs fixed_rate(std::uint64_t seed, double keep, std::int64_t iterations = 0) {
  cd::DropoutInitArgs a;
  a.seed = seed;
  a.initial_keep_rate = keep;
  a.decay_rate = 1.0;
  a.iterations = iterations;
  return a;
}

/// The current call's parameters of a state (what the next forward will use).
inline dropout_ref::CallParams current_params(const DropoutState& s, std::uint64_t offset = 0) {
  dropout_ref::CallParams p;
  p.seed = s.seed;
  p.base = s.offset + offset;
  p.stream = s.stream;
  p.threshold = s.threshold;
  p.scale = s.scale;
  return p;
}

/// The last forward's parameters (what the backward uses).
inline dropout_ref::CallParams last_params(const DropoutState& s, std::uint64_t offset = 0) {
  dropout_ref::CallParams p;
  p.seed = s.seed;
  p.base = s.offset + offset;
  p.stream = s.last_stream;
  p.threshold = s.last_threshold;
  p.scale = s.last_scale;
  return p;
}

inline std::string mask_mismatch(const std::vector<std::uint8_t>& got,
                                 const std::vector<std::uint8_t>& want) {
  std::ostringstream os;
  std::size_t count = 0;
  int shown = 0;
  for (std::size_t i = 0; i < want.size() && i < got.size(); ++i) {
    if (got[i] != want[i]) {
      if (shown++ < 5) {
        os << " [" << i << "] got " << int(got[i]) << " want " << int(want[i]);
      }
      ++count;
    }
  }
  if (count == 0 && got.size() >= want.size()) {
    return {};
  }
  return std::to_string(count) + " of " + std::to_string(want.size()) + " mask bytes differ:" + os.str();
}

} // namespace culayers::test::dropout
