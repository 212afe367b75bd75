// CPU oracle of the dropout ops (tests of both backends): the mask drawn element by element on the
// noise shape, broadcast to x's shape by explicit multi-index arithmetic, the output computed in
// float32 and rounded once, and the DecayingDropout schedule in long double.
//
// It uses Philox4x32-10 from kernels/dropout/philox.cuh, which the known-answer and cuRAND tests pin
// down independently; everything above Philox (draw index, word selection, threshold, broadcast,
// rounding) is written here again, plainly, without the kernels' index maps.
#pragma once

#include "kernels/common/numeric.cuh"
#include "kernels/dropout/philox.cuh"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace culayers::test::dropout_ref {

/// The parameters one call reads from the state.
struct CallParams {
  std::uint64_t seed = 0;
  std::uint64_t base = 0; ///< state.offset + the call's offset
  std::uint64_t stream = 0;
  std::uint64_t threshold = 0;
  float scale = 1.0f;
};

/// Draw number q of (seed, stream): word (q mod 4) of Philox(counter (q / 4, stream), key seed).
inline std::uint32_t draw(std::uint64_t seed, std::uint64_t stream, std::uint64_t q) {
  kernels::dropout::PhiloxWords ctr;
  ctr.w[0] = static_cast<std::uint32_t>(q / 4);
  ctr.w[1] = static_cast<std::uint32_t>((q / 4) >> 32);
  ctr.w[2] = static_cast<std::uint32_t>(stream);
  ctr.w[3] = static_cast<std::uint32_t>(stream >> 32);
  const kernels::dropout::PhiloxWords out = kernels::dropout::philox4x32_10(
      ctr, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
  return out.w[q % 4];
}

/// T = floor(p * 2^32 + 0.5) in double, 2^32 for p >= 1, 0 for p <= 0.
inline std::uint64_t threshold(double p) {
  if (!(p > 0.0)) {
    return 0;
  }
  if (p >= 1.0) {
    return std::uint64_t{1} << 32;
  }
  return static_cast<std::uint64_t>(std::floor(p * 4294967296.0 + 0.5));
}

/// DecayingDropout's keep rate at call k, in long double (the "double reference" with margin).
inline long double keep_rate(double initial, double decay_rate, std::int64_t interval, std::int64_t k) {
  const long double exponent = (static_cast<long double>(k) + 1.0L) / static_cast<long double>(interval);
  return static_cast<long double>(initial) * std::pow(static_cast<long double>(decay_rate), exponent);
}

inline std::int64_t numel(const std::vector<std::int64_t>& dims) {
  std::int64_t n = 1;
  for (std::int64_t d : dims) {
    n *= d;
  }
  return n;
}

/// Keep flags on the noise shape: element j uses draw base + j.
inline std::vector<std::uint8_t> noise_mask(const CallParams& p, std::int64_t noise_numel) {
  std::vector<std::uint8_t> m(static_cast<std::size_t>(noise_numel));
  for (std::int64_t j = 0; j < noise_numel; ++j) {
    const std::uint32_t r = draw(p.seed, p.stream, p.base + static_cast<std::uint64_t>(j));
    m[static_cast<std::size_t>(j)] = static_cast<std::uint64_t>(r) < p.threshold ? 1 : 0;
  }
  return m;
}

/// The noise mask broadcast to x's shape: for each x element, its multi-index with the broadcast
/// coordinates set to 0, flattened row-major in the noise shape. Empty noise dims = x's shape.
inline std::vector<std::uint8_t> mask(const CallParams& p, const std::vector<std::int64_t>& dims,
                                      std::vector<std::int64_t> noise_dims) {
  if (noise_dims.empty()) {
    noise_dims = dims;
  }
  const std::vector<std::uint8_t> noise = noise_mask(p, numel(noise_dims));
  const std::int64_t n = numel(dims);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(n));
  std::vector<std::int64_t> idx(dims.size(), 0);
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t j = 0;
    for (std::size_t a = 0; a < dims.size(); ++a) {
      j = j * noise_dims[a] + (noise_dims[a] == 1 ? 0 : idx[a]);
    }
    out[static_cast<std::size_t>(i)] = noise[static_cast<std::size_t>(j)];
    for (std::size_t a = dims.size(); a-- > 0;) { // odometer increment
      if (++idx[a] < dims[a]) {
        break;
      }
      idx[a] = 0;
    }
  }
  return out;
}

/// y = keep ? x * scale (float32, rounded once to T) : +0.0; a scale of exactly 1 copies the bits.
template <class T>
std::vector<T> apply(const std::vector<T>& x, const std::vector<std::uint8_t>& keep, float scale) {
  std::vector<T> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (keep[i] == 0) {
      std::memset(static_cast<void*>(&y[i]), 0, sizeof(T));
    } else if (scale == 1.0f) {
      y[i] = x[i];
    } else {
      y[i] = kernels::from_float<T>(kernels::to_float(x[i]) * scale);
    }
  }
  return y;
}

} // namespace culayers::test::dropout_ref
