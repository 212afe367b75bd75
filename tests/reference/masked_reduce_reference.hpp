// Double-precision CPU oracle of the masked-reduction family (culayers/masked_reduce.hpp) and the host
// helpers its tests share: dtype conversions and ulps, validity data with empty and full rows, and
// exactly representable inputs. Host-only: no device code, no CUDA runtime calls.
#pragma once

#include "culayers/masked_reduce.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace culayers::test::masked {

using culayers::masked_reduce::ReduceOp;
using culayers::masked_reduce::Validity;

// ---- dtype helpers ----------------------------------------------------------------------------------------

template <class T>
struct Dtype;
template <>
struct Dtype<float> {
  static constexpr DType kDType = DType::kFloat32;
  static constexpr const char* kName = "float32";
  static constexpr int kMantissaBits = 24;  // significand bits including the implicit one
  static constexpr int kMinExponent = -126; // of the smallest normal number
  static double to_double(float v) { return v; }
  static float from_double(double v) { return static_cast<float>(v); }
};
template <>
struct Dtype<__half> {
  static constexpr DType kDType = DType::kFloat16;
  static constexpr const char* kName = "float16";
  static constexpr int kMantissaBits = 11;
  static constexpr int kMinExponent = -14;
  static double to_double(__half v) { return static_cast<double>(__half2float(v)); }
  static __half from_double(double v) { return __double2half(v); }
};
template <>
struct Dtype<__nv_bfloat16> {
  static constexpr DType kDType = DType::kBFloat16;
  static constexpr const char* kName = "bfloat16";
  static constexpr int kMantissaBits = 8;
  static constexpr int kMinExponent = -126;
  static double to_double(__nv_bfloat16 v) { return static_cast<double>(__bfloat162float(v)); }
  static __nv_bfloat16 from_double(double v) { return __double2bfloat16(v); }
};

/// Unit roundoff of float32, the accumulation type.
constexpr double kU32 = 0x1p-24;

/// Spacing of T's representable numbers at |v| (its ulp there), never below T's subnormal spacing.
template <class T>
double ulp(double v) {
  if (!std::isfinite(v)) {
    return std::numeric_limits<double>::infinity();
  }
  const double a = std::max(std::fabs(v), 1e-300);
  const double normal = std::ldexp(1.0, std::ilogb(a) - (Dtype<T>::kMantissaBits - 1));
  return std::max(normal, std::ldexp(1.0, Dtype<T>::kMinExponent - (Dtype<T>::kMantissaBits - 1)));
}

/// v rounded once to T (round to nearest even), back as double.
template <class T>
double round_to(double v) {
  return Dtype<T>::to_double(Dtype<T>::from_double(v));
}

template <class T>
std::uint32_t bits(T v) {
  std::uint32_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

// ---- inputs ---------------------------------------------------------------------------------------------

/// Values k / 16 with k in [-128, 128]: exact in float32, float16 and bfloat16 (at most 8 significant
/// bits), and any sum of up to 2^15 of them is exact in float32 (|sum| <= 2^18 on a 2^-4 grid needs 23
/// bits), so sums are independent of the order of accumulation. `levels` < 128 gives many ties.
template <class T>
std::vector<T> exact_values(std::mt19937_64& rng, std::size_t n, int levels = 128) {
  std::uniform_int_distribution<int> k(-levels, levels);
  std::vector<T> v(n);
  for (auto& e : v) {
    e = Dtype<T>::from_double(k(rng) / 16.0);
  }
  return v;
}

/// Normally distributed values rounded to T (inexact sums: order-dependent bits).
template <class T>
std::vector<T> normal_values(std::mt19937_64& rng, std::size_t n, double mean = 0.0, double stddev = 1.0) {
  std::normal_distribution<double> d(mean, stddev);
  std::vector<T> v(n);
  for (auto& e : v) {
    e = Dtype<T>::from_double(d(rng));
  }
  return v;
}

/// Validity data for [outer, R]: row 1 is empty and row 2 full (when they exist), other rows random
/// (a random mask with about 60% valid steps, or a random length in [0, R]).
struct ValidityData {
  Validity kind = Validity::kNone;
  std::int64_t outer = 0;
  std::int64_t reduce = 0;
  std::vector<std::uint8_t> mask;    // [outer, R] (kMask)
  std::vector<std::int32_t> lengths; // [outer] (kLengths), may be out of [0, R]

  std::int64_t clamped_length(std::int64_t o) const {
    const std::int64_t raw = lengths[static_cast<std::size_t>(o)];
    return std::clamp<std::int64_t>(raw, 0, reduce);
  }
  bool valid(std::int64_t o, std::int64_t r) const {
    switch (kind) {
    case Validity::kMask:
      return mask[static_cast<std::size_t>(o * reduce + r)] != 0;
    case Validity::kLengths:
      return r < clamped_length(o);
    default:
      return true;
    }
  }
  std::int64_t count(std::int64_t o) const {
    std::int64_t n = 0;
    for (std::int64_t r = 0; r < reduce; ++r) {
      n += valid(o, r) ? 1 : 0;
    }
    return n;
  }
  /// Lengths outside [0, R] (what the op's error counter must report).
  std::uint32_t out_of_range() const {
    std::uint32_t n = 0;
    if (kind == Validity::kLengths) {
      for (std::int32_t l : lengths) {
        n += (l < 0 || l > reduce) ? 1u : 0u;
      }
    }
    return n;
  }
};

inline ValidityData make_validity(std::mt19937_64& rng, Validity kind, std::int64_t outer,
                                  std::int64_t reduce) {
  ValidityData v;
  v.kind = kind;
  v.outer = outer;
  v.reduce = reduce;
  if (kind == Validity::kMask) {
    v.mask.resize(static_cast<std::size_t>(outer * reduce));
    std::bernoulli_distribution keep(0.6);
    std::uniform_int_distribution<int> value(1, 255); // any nonzero byte means valid
    for (std::int64_t o = 0; o < outer; ++o) {
      for (std::int64_t r = 0; r < reduce; ++r) {
        bool on = keep(rng);
        if (o == 1) {
          on = false;
        } else if (o == 2) {
          on = true;
        }
        v.mask[static_cast<std::size_t>(o * reduce + r)] = on ? static_cast<std::uint8_t>(value(rng)) : 0;
      }
    }
  } else if (kind == Validity::kLengths) {
    v.lengths.resize(static_cast<std::size_t>(outer));
    std::uniform_int_distribution<std::int64_t> len(0, reduce);
    for (std::int64_t o = 0; o < outer; ++o) {
      std::int64_t l = len(rng);
      if (o == 1) {
        l = 0;
      } else if (o == 2) {
        l = reduce;
      }
      v.lengths[static_cast<std::size_t>(o)] = static_cast<std::int32_t>(l);
    }
  }
  return v;
}

// ---- forward oracle ---------------------------------------------------------------------------------------

struct ForwardRef {
  std::vector<double> value;       // [outer, inner]: sum/mean/max/min, or the moments mean
  std::vector<double> variance;    // [outer, inner]: moments (biased)
  std::vector<std::int32_t> index; // [outer, inner]: max/min first arg-extremum, -1 if empty
  std::vector<std::int32_t> count; // [outer]
  std::vector<double> abs_sum;     // [outer, inner]: sum of |x| over valid steps (tolerances)
  std::vector<double> abs_max;     // [outer, inner]: max |x| over valid steps (tolerances)
  std::vector<double> max_dev;     // [outer, inner]: moments: max |x - mean| over valid steps (tolerances)
};

/// NaN beats every number; otherwise strictly greater (max) or smaller (min).
inline bool beats(double a, double b, bool is_max) {
  if (std::isnan(a) || std::isnan(b)) {
    return std::isnan(a) && !std::isnan(b);
  }
  return is_max ? a > b : a < b;
}

/// x as doubles [outer, R, inner]. Empty rows get `fill` (both outputs for moments), index -1, count 0.
inline ForwardRef forward_reference(ReduceOp op, const std::vector<double>& x, std::int64_t outer,
                                    std::int64_t reduce, std::int64_t inner, const ValidityData& valid,
                                    double fill) {
  ForwardRef ref;
  const std::size_t n_out = static_cast<std::size_t>(outer * inner);
  ref.value.assign(n_out, fill);
  ref.variance.assign(n_out, fill);
  ref.index.assign(n_out, -1);
  ref.count.assign(static_cast<std::size_t>(outer), 0);
  ref.abs_sum.assign(n_out, 0.0);
  ref.abs_max.assign(n_out, 0.0);
  ref.max_dev.assign(n_out, 0.0);
  for (std::int64_t o = 0; o < outer; ++o) {
    const std::int64_t n = valid.count(o);
    ref.count[static_cast<std::size_t>(o)] = static_cast<std::int32_t>(n);
    for (std::int64_t i = 0; i < inner; ++i) {
      const std::size_t at = static_cast<std::size_t>(o * inner + i);
      double sum = 0.0;
      double best = 0.0;
      std::int32_t best_r = -1;
      for (std::int64_t r = 0; r < reduce; ++r) {
        if (!valid.valid(o, r)) {
          continue;
        }
        const double v = x[static_cast<std::size_t>((o * reduce + r) * inner + i)];
        sum += v;
        ref.abs_sum[at] += std::fabs(v);
        ref.abs_max[at] = std::max(ref.abs_max[at], std::fabs(v));
        if (best_r < 0 || beats(v, best, op == ReduceOp::kMax)) {
          best = v;
          best_r = static_cast<std::int32_t>(r);
        }
      }
      if (n == 0) {
        continue;
      }
      switch (op) {
      case ReduceOp::kSum:
        ref.value[at] = sum;
        break;
      case ReduceOp::kMean:
        ref.value[at] = sum / static_cast<double>(n);
        break;
      case ReduceOp::kMax:
      case ReduceOp::kMin:
        ref.value[at] = best;
        ref.index[at] = best_r;
        break;
      case ReduceOp::kMoments: {
        const double mean = sum / static_cast<double>(n);
        double m2 = 0.0;
        for (std::int64_t r = 0; r < reduce; ++r) {
          if (valid.valid(o, r)) {
            const double d = x[static_cast<std::size_t>((o * reduce + r) * inner + i)] - mean;
            m2 += d * d;
            ref.max_dev[at] = std::max(ref.max_dev[at], std::fabs(d));
          }
        }
        ref.value[at] = mean;
        ref.variance[at] = m2 / static_cast<double>(n);
        break;
      }
      }
    }
  }
  return ref;
}

// ---- backward oracle --------------------------------------------------------------------------------------

/// dx [outer, R, inner] in double. dy: [outer, inner] (sum/mean/max/min); indices: the forward's; dmean,
/// dvar, mean: [outer, inner] (moments; empty vectors mean "not given"); x: [outer, R, inner] (moments).
inline std::vector<double> backward_reference(
    ReduceOp op, std::int64_t outer, std::int64_t reduce, std::int64_t inner, const ValidityData& valid,
    const std::vector<double>& dy, const std::vector<std::int32_t>& indices, const std::vector<double>& dmean,
    const std::vector<double>& dvar, const std::vector<double>& mean, const std::vector<double>& x) {
  std::vector<double> dx(static_cast<std::size_t>(outer * reduce * inner), 0.0);
  for (std::int64_t o = 0; o < outer; ++o) {
    const double n = static_cast<double>(valid.count(o));
    for (std::int64_t r = 0; r < reduce; ++r) {
      if (!valid.valid(o, r)) {
        continue;
      }
      for (std::int64_t i = 0; i < inner; ++i) {
        const std::size_t at = static_cast<std::size_t>(o * inner + i);
        const std::size_t xi = static_cast<std::size_t>((o * reduce + r) * inner + i);
        double g = 0.0;
        switch (op) {
        case ReduceOp::kSum:
          g = dy[at];
          break;
        case ReduceOp::kMean:
          g = dy[at] / n;
          break;
        case ReduceOp::kMax:
        case ReduceOp::kMin:
          g = indices[at] == r ? dy[at] : 0.0;
          break;
        case ReduceOp::kMoments:
          g = (dmean.empty() ? 0.0 : dmean[at] / n) +
              (dvar.empty() ? 0.0 : dvar[at] * 2.0 * (x[xi] - mean[at]) / n);
          break;
        }
        dx[xi] = g;
      }
    }
  }
  return dx;
}

// ---- Masking and expansion oracles ----------------------------------------------------------------------

/// mask[o, r] = any_i (x != mask_value) with mask_value rounded to T; y = x on valid steps, +0 elsewhere.
template <class T>
void masking_reference(const std::vector<T>& x, std::int64_t rows, std::int64_t inner, float mask_value,
                       std::vector<std::uint8_t>* mask, std::vector<T>* y) {
  const double mv = round_to<T>(mask_value);
  mask->assign(static_cast<std::size_t>(rows), 0);
  y->assign(x.size(), Dtype<T>::from_double(0.0));
  for (std::int64_t row = 0; row < rows; ++row) {
    bool any = false;
    for (std::int64_t i = 0; i < inner; ++i) {
      const double v = Dtype<T>::to_double(x[static_cast<std::size_t>(row * inner + i)]);
      any = any || v != mv; // NaN != anything
    }
    (*mask)[static_cast<std::size_t>(row)] = any ? 1 : 0;
    if (any) {
      for (std::int64_t i = 0; i < inner; ++i) {
        (*y)[static_cast<std::size_t>(row * inner + i)] = x[static_cast<std::size_t>(row * inner + i)];
      }
    }
  }
}

inline std::vector<std::uint8_t> expand_reference(const std::vector<std::uint8_t>& mask,
                                                  std::int64_t features) {
  std::vector<std::uint8_t> out;
  out.reserve(mask.size() * static_cast<std::size_t>(features));
  for (std::uint8_t m : mask) {
    out.insert(out.end(), static_cast<std::size_t>(features), m);
  }
  return out;
}

} // namespace culayers::test::masked
