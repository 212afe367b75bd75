// Warp and block reductions (sum, max, min) and Welford/Chan statistics, built only on the CUDA
// intrinsics the emulator implements (no CUB block primitives, no cooperative groups, no inline PTX).
//
// Determinism: every lane of a warp ends with bit-identical results (butterfly exchanges whose
// combination is commutative, or ordered by lane for Welford), and the combination order depends only
// on the block shape, never on timing: same input, same block size -> same bits.
#pragma once

#include "kernels/common/portability.cuh"

#include "culayers/version.hpp"

#include <cstdint>
#include <cstring>
#include <type_traits>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

struct SumOp {
  template <class T>
  CULAYERS_HD T operator()(T a, T b) const {
    return a + b;
  }
  template <class T>
  static CULAYERS_HD T identity() {
    return T(0);
  }
};

namespace detail {

// Equal operands with different bits (+0/-0) and NaNs with different payloads must give every lane the
// same bits however the operands are ordered: ties pick by sign, any NaN gives one canonical NaN.
template <class T>
constexpr bool kIsFloatLike =
    std::is_floating_point_v<T> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

template <class T>
CULAYERS_HD T pick_extremum(T a, T b, bool want_max) {
  if constexpr (kIsFloatLike<T>) {
    if (a != a || b != b) {
      return static_cast<T>(__builtin_nanf(""));
    }
    if (a == b) {
      const bool a_negative = __builtin_signbit(static_cast<float>(a)) != 0;
      return (a_negative == want_max) ? b : a;
    }
  }
  return ((a > b) == want_max) ? a : b;
}

} // namespace detail

// NaN propagates (as torch.max): a NaN on either side wins.
struct MaxOp {
  template <class T>
  CULAYERS_HD T operator()(T a, T b) const {
    return detail::pick_extremum(a, b, true);
  }
  template <class T>
  static CULAYERS_HD T identity() {
    return -__builtin_huge_valf();
  }
};

struct MinOp {
  template <class T>
  CULAYERS_HD T operator()(T a, T b) const {
    return detail::pick_extremum(a, b, false);
  }
  template <class T>
  static CULAYERS_HD T identity() {
    return __builtin_huge_valf();
  }
};

/// Reduces v over groups of `Width` consecutive lanes (a power of two <= 32); every lane of a group
/// gets the result. All lanes of the warp must call it (full mask).
template <int Width = kWarpSize, class T, class Op>
CULAYERS_DEVICE T warp_reduce(T v, Op op) {
  static_assert(Width >= 1 && Width <= kWarpSize && (Width & (Width - 1)) == 0, "bad width");
  CULAYERS_PRAGMA_UNROLL
  for (int offset = Width / 2; offset > 0; offset /= 2) {
    v = op(v, __shfl_xor_sync(kFullMask, v, offset, Width));
  }
  return v;
}

template <int Width = kWarpSize, class T>
CULAYERS_DEVICE T warp_reduce_sum(T v) {
  return warp_reduce<Width>(v, SumOp{});
}
template <int Width = kWarpSize, class T>
CULAYERS_DEVICE T warp_reduce_max(T v) {
  return warp_reduce<Width>(v, MaxOp{});
}
template <int Width = kWarpSize, class T>
CULAYERS_DEVICE T warp_reduce_min(T v) {
  return warp_reduce<Width>(v, MinOp{});
}

/// Sums v over the lanes reached by XOR offsets hi, hi / 2, ..., lo (powers of two, lo <= hi < 32; nothing
/// when hi < lo): with lo = 1 that is a group of 2 * hi consecutive lanes, with hi = 16 and lo = k it is the
/// lanes congruent modulo k. Every lane of a group gets the same bits (a butterfly of commutative adds).
/// Offsets are runtime values; all lanes of the warp must call it with the same hi and lo (full mask).
CULAYERS_DEVICE float warp_xor_sum(float v, int hi, int lo) {
  for (int offset = hi; offset >= lo && offset > 0; offset /= 2) {
    v += __shfl_xor_sync(kFullMask, v, offset);
  }
  return v;
}

CULAYERS_DEVICE unsigned linear_thread_index() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
CULAYERS_DEVICE unsigned block_thread_count() {
  return blockDim.x * blockDim.y * blockDim.z;
}

/// Reduces v over the whole block; every thread gets the result. Preconditions: every thread of the
/// block calls it; the block size is a multiple of 32; `scratch` points to at least 32 elements of
/// shared memory. Ends with a barrier, so `scratch` may be reused right away.
template <class T, class Op>
CULAYERS_DEVICE T block_reduce(T v, Op op, T* scratch) {
  const unsigned tid = linear_thread_index();
  const unsigned lane = tid % kWarpSize;
  const unsigned warp = tid / kWarpSize;
  const unsigned warps = block_thread_count() / kWarpSize;
  v = warp_reduce(v, op);
  if (lane == 0) {
    scratch[warp] = v;
  }
  __syncthreads();
  if (warp == 0) {
    T w = lane < warps ? scratch[lane] : Op::template identity<T>();
    w = warp_reduce(w, op);
    if (lane == 0) {
      scratch[0] = w;
    }
  }
  __syncthreads();
  const T result = scratch[0];
  __syncthreads();
  return result;
}

template <class T>
CULAYERS_DEVICE T block_reduce_sum(T v, T* scratch) {
  return block_reduce(v, SumOp{}, scratch);
}
template <class T>
CULAYERS_DEVICE T block_reduce_max(T v, T* scratch) {
  return block_reduce(v, MaxOp{}, scratch);
}
template <class T>
CULAYERS_DEVICE T block_reduce_min(T v, T* scratch) {
  return block_reduce(v, MinOp{}, scratch);
}

/// Compensated (Kahan) summation: the running sum plus the low-order part its last addition lost, added
/// back into the next term. The error stays a few ulp of the sum however many terms, where a plain float
/// sum's grows with their count. Relies on IEEE order (no reassociation: the project builds without
/// fast-math, and (t - sum) - y contains no product for FMA contraction).
struct KahanSum {
  float sum = 0.0f;
  float lost = 0.0f;
  CULAYERS_HD void add(float v) {
    const float y = v - lost;
    const float t = sum + y;
    lost = (t - sum) - y;
    sum = t;
  }
};

/// Running mean and sum of squared deviations (Welford), merged with Chan's formula: numerically stable
/// where E[x^2] - E[x]^2 cancels. `count` is a float: exact up to 2^24 elements per partial; beyond that
/// the merge weights carry float32 rounding, below the accumulation error of the sums themselves.
/// A plain aggregate (no default member initializers) so that it can live in __shared__ memory; use
/// Welford{} for the empty partial.
struct Welford {
  float mean;
  float m2;
  float count;
};

/// ±Inf (not NaN).
CULAYERS_HD bool is_infinite(float v) {
#if defined(__CUDA_ARCH__)
  const std::uint32_t u = __float_as_uint(v);
#else
  std::uint32_t u = 0; // host and emulated builds
  std::memcpy(&u, &v, sizeof(u));
#endif
  return (u & 0x7fffffffu) == 0x7f800000u;
}

/// The Welford mean after pushing x with weight inv = 1 / count (delta = x - mean). Once the mean is infinite
/// (an Inf at a valid step) it continues as a sum would: Inf stays Inf, the opposite Inf or a NaN gives NaN.
/// The plain update turned Inf into NaN at the next finite value (Inf + (x - Inf) / n), so the result
/// depended on where the Inf sat in the walk. Finite values whose difference overflows (opposite signs
/// beyond about 1.7e38: delta infinite, x finite) take mean (1 - inv) + x inv, which cannot overflow, rather
/// than an infinite mean that the rule above would then keep. m2 is NaN from an Inf on, and infinite after
/// an overflowing delta.
CULAYERS_HD float welford_next_mean(float mean, float delta, float x, float inv) {
  if (is_infinite(mean)) {
    return mean + x;
  }
  return is_infinite(delta) && !is_infinite(x) ? mean - mean * inv + x * inv : mean + delta * inv;
}

/// Chan's merged mean of partial means a and b, wb = n_b / (n_a + n_b), delta = b - a; every merge of
/// Welford partials (welford_merge, group norm's per-vector merge) goes through it. An infinite mean on
/// either side merges as a sum would (as welford_next_mean): Inf + finite = Inf, opposite Infs give NaN (the
/// weighted form gave NaN for Inf + finite whenever the Inf was on the left). Finite means whose difference
/// overflows merge as a (1 - wb) + b wb, which cannot overflow.
CULAYERS_HD float chan_merged_mean(float a, float b, float delta, float wb) {
  if (is_infinite(a) || is_infinite(b)) {
    return a + b;
  }
  return is_infinite(delta) ? a - a * wb + b * wb : a + delta * wb;
}

CULAYERS_HD void welford_push(Welford& w, float x) {
  w.count += 1.0f;
  const float delta = x - w.mean;
  w.mean = welford_next_mean(w.mean, delta, x, 1.0f / w.count);
  w.m2 += delta * (x - w.mean);
}

/// Chan's parallel merge. Not commutative bit for bit: callers fix the order (lower index first).
/// kFastDivide: the merge weight through __fdividef (reciprocal-multiply, ~2 ulp on the weight, far below
/// the data's own rounding) instead of the IEEE division, whose slow path is a called subroutine; kernels
/// with high register pressure use it to avoid spills around that call.
template <bool kFastDivide = false>
CULAYERS_HD Welford welford_merge(const Welford& a, const Welford& b) {
  if (b.count == 0.0f) {
    return a;
  }
  if (a.count == 0.0f) {
    return b;
  }
  Welford out;
  out.count = a.count + b.count;
  float wb = 0.0f;
#if defined(__CUDA_ARCH__)
  if constexpr (kFastDivide) {
    wb = __fdividef(b.count, out.count);
  } else {
    wb = b.count / out.count;
  }
#else
  wb = b.count / out.count; // host and emulated builds: an exact division either way
#endif
  const float delta = b.mean - a.mean;
  out.mean = chan_merged_mean(a.mean, b.mean, delta, wb);
  out.m2 = a.m2 + b.m2 + delta * (delta * (a.count * wb)); // weight first: no needless overflow of delta^2
  return out;
}

/// Biased variance of the merged partials (0 for an empty set).
CULAYERS_HD float welford_variance(const Welford& w) {
  return w.count > 0.0f ? w.m2 / w.count : 0.0f;
}

/// Merges Welford partials over groups of `Width` lanes; every lane gets the same bits (the lower lane's
/// partial is always the left operand).
template <int Width = kWarpSize, bool kFastDivide = false>
CULAYERS_DEVICE Welford warp_welford(Welford w) {
  const unsigned lane = linear_thread_index() % kWarpSize;
  CULAYERS_PRAGMA_UNROLL
  for (int offset = Width / 2; offset > 0; offset /= 2) {
    Welford o;
    o.mean = __shfl_xor_sync(kFullMask, w.mean, offset, Width);
    o.m2 = __shfl_xor_sync(kFullMask, w.m2, offset, Width);
    o.count = __shfl_xor_sync(kFullMask, w.count, offset, Width);
    w = (lane & static_cast<unsigned>(offset)) ? welford_merge<kFastDivide>(o, w)
                                               : welford_merge<kFastDivide>(w, o);
  }
  return w;
}

/// Block-wide Welford merge; same preconditions as block_reduce (`scratch`: 32 Welford in shared memory).
template <bool kFastDivide = false>
CULAYERS_DEVICE Welford block_welford(Welford w, Welford* scratch) {
  const unsigned tid = linear_thread_index();
  const unsigned lane = tid % kWarpSize;
  const unsigned warp = tid / kWarpSize;
  const unsigned warps = block_thread_count() / kWarpSize;
  w = warp_welford<kWarpSize, kFastDivide>(w);
  if (lane == 0) {
    scratch[warp] = w;
  }
  __syncthreads();
  if (warp == 0) {
    Welford v = lane < warps ? scratch[lane] : Welford{};
    v = warp_welford<kWarpSize, kFastDivide>(v);
    if (lane == 0) {
      scratch[0] = v;
    }
  }
  __syncthreads();
  const Welford result = scratch[0];
  __syncthreads();
  return result;
}

} // namespace kernels
CULAYERS_NAMESPACE_END
