// Double-precision CPU oracle of the batch-normalization ops (culayers/batch_norm.hpp) and of the
// BatchNormalization layer's statistics, with the float32 error model their tests share. Host-only: no
// device code, no CUDA runtime calls. The dtype helpers (Dtype<T>, ulp, round_to, kU32) are the
// masked-reduction reference's.
#pragma once

#include "tests/reference/masked_reduce_reference.hpp"

#include <cmath>
#include <cstdint>
#include <vector>

namespace culayers::test::bn {

using masked::Dtype;
using masked::kU32;
using masked::round_to;
using masked::ulp;

/// Per-channel parameters in double (gamma / beta empty = absent).
struct Params {
  std::vector<double> mean;
  std::vector<double> variance;
  std::vector<double> gamma;
  std::vector<double> beta;
  double epsilon = static_cast<double>(1e-3f);

  double gamma_at(std::size_t c) const { return gamma.empty() ? 1.0 : gamma[c]; }
  double beta_at(std::size_t c) const { return beta.empty() ? 0.0 : beta[c]; }
  double scale_at(std::size_t c) const { return gamma_at(c) / std::sqrt(variance[c] + epsilon); }
};

/// y = (x - mean[c]) / sqrt(variance[c] + epsilon) * gamma[c] + beta[c] over x as [rows, C, inner]
/// (channel (i / inner) % C; inner = 1: channels last).
inline std::vector<double> apply(const Params& p, const std::vector<double>& x, std::size_t inner = 1) {
  const std::size_t channels = p.mean.size();
  std::vector<double> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::size_t c = (i / inner) % channels;
    y[i] = (x[i] - p.mean[c]) * p.scale_at(c) + p.beta_at(c);
  }
  return y;
}

/// Error bound of one element of the float32 apply before the output rounding: x - mean (one rounding),
/// scale = rsqrt(variance + epsilon) * gamma (the sum's rounding, rsqrtf's 2 ulp on the GPU, the product:
/// 4 u with margin) and the fused multiply-add's rounding; plus one ulp of T for the rounding to the output
/// dtype (a half ulp, doubled because the float32 result may sit across a rounding boundary of T).
template <class T>
double apply_tolerance(const Params& p, std::size_t c, double x, double y) {
  const double term = std::fabs((x - p.mean[c]) * p.scale_at(c));
  return 8.0 * kU32 * (term + std::fabs(p.beta_at(c))) + ulp<T>(y);
}

/// Mean and biased variance per channel of x [rows, C] over the valid rows (valid empty = every row), with
/// the number of valid rows; mean 0 and variance 0 when none is valid (masked_reduce's fill value).
struct Moments {
  std::vector<double> mean;
  std::vector<double> variance;
  std::int64_t count = 0;
};

inline Moments moments(const std::vector<double>& x, std::int64_t rows, std::int64_t channels,
                       const std::vector<std::uint8_t>& valid) {
  Moments m;
  const auto nc = static_cast<std::size_t>(channels);
  m.mean.assign(nc, 0.0);
  m.variance.assign(nc, 0.0);
  auto ok = [&](std::int64_t r) { return valid.empty() || valid[static_cast<std::size_t>(r)] != 0; };
  for (std::int64_t r = 0; r < rows; ++r) {
    if (ok(r)) {
      ++m.count;
      for (std::size_t c = 0; c < nc; ++c) {
        m.mean[c] += x[static_cast<std::size_t>(r) * nc + c];
      }
    }
  }
  if (m.count == 0) {
    return m;
  }
  for (double& v : m.mean) {
    v /= static_cast<double>(m.count);
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    if (ok(r)) {
      for (std::size_t c = 0; c < nc; ++c) {
        const double d = x[static_cast<std::size_t>(r) * nc + c] - m.mean[c];
        m.variance[c] += d * d;
      }
    }
  }
  for (double& v : m.variance) {
    v /= static_cast<double>(m.count);
  }
  return m;
}

/// batch_norm_merge_moments: per-channel mean and biased variance of the union of rows equal-count parts
/// given each part's mean and biased variance ([rows, C]), in double; zeros when there is no element.
inline Moments merge_moments(const std::vector<double>& mean, const std::vector<double>& variance,
                             std::int64_t rows, std::int64_t channels, std::int64_t count_per_row) {
  Moments m;
  const auto nc = static_cast<std::size_t>(channels);
  m.mean.assign(nc, 0.0);
  m.variance.assign(nc, 0.0);
  m.count = rows * count_per_row;
  if (m.count == 0) {
    return m;
  }
  for (std::size_t c = 0; c < nc; ++c) {
    double sum = 0.0;
    for (std::int64_t r = 0; r < rows; ++r) {
      sum += mean[static_cast<std::size_t>(r) * nc + c];
    }
    m.mean[c] = sum / static_cast<double>(rows);
    double m2 = 0.0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const double d = mean[static_cast<std::size_t>(r) * nc + c] - m.mean[c];
      m2 += variance[static_cast<std::size_t>(r) * nc + c] + d * d;
    }
    m.variance[c] = m2 / static_cast<double>(rows);
  }
  return m;
}

/// Mean and biased variance per channel of x viewed as [rows, C, inner] (channels first), in double.
inline Moments moments_channels_first(const std::vector<double>& x, std::int64_t rows, std::int64_t channels,
                                      std::int64_t inner) {
  Moments m;
  const auto nc = static_cast<std::size_t>(channels);
  const auto ni = static_cast<std::size_t>(inner);
  m.mean.assign(nc, 0.0);
  m.variance.assign(nc, 0.0);
  m.count = rows * inner;
  if (m.count == 0) {
    return m;
  }
  for (std::size_t i = 0; i < x.size(); ++i) {
    m.mean[(i / ni) % nc] += x[i];
  }
  for (double& v : m.mean) {
    v /= static_cast<double>(m.count);
  }
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = x[i] - m.mean[(i / ni) % nc];
    m.variance[(i / ni) % nc] += d * d;
  }
  for (double& v : m.variance) {
    v /= static_cast<double>(m.count);
  }
  return m;
}

/// The update op's exact float32 arithmetic (the header's formula), for bit-exact expectations.
struct MovingUpdate {
  float momentum;
  float one_minus;

  explicit MovingUpdate(float m) : momentum(m), one_minus(static_cast<float>(1.0 - static_cast<double>(m))) {}

  static float unbias(std::int64_t n) {
    return static_cast<float>(static_cast<double>(n) / static_cast<double>(n - 1));
  }
  float mean(float moving, float batch) const { return std::fma(batch, one_minus, moving * momentum); }
  float variance(float moving, float batch_biased, std::int64_t n) const {
    return std::fma(batch_biased * unbias(n), one_minus, moving * momentum);
  }
};

} // namespace culayers::test::bn
