// Device building blocks shared by the masked-reduction kernels: accumulators (sum, max/min with the
// first index, Welford), validity helpers and span loads/stores that fall back to scalars when a
// pointer is not aligned for vectors. Every global access goes through kernels/common's load/store
// helpers so the emulated build counts the bytes exactly.
#pragma once

#include "kernels/common/common.cuh"
#include "kernels/masked/masked_reduce_internal.cuh"

#include <cstdint>
#include <limits>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace masked {

template <AccKind K>
struct AccTraits;

template <>
struct AccTraits<AccKind::kSum> {
  struct State {
    float s;
  };
  static CULAYERS_HD State empty() { return State{0.0f}; }
  static CULAYERS_HD void push(State& a, float v, std::int32_t /*r*/) { a.s += v; }
  static CULAYERS_HD State merge(const State& a, const State& b) { return State{a.s + b.s}; }
  static CULAYERS_DEVICE State shfl_down(const State& a, unsigned delta) {
    return State{__shfl_down_sync(kFullMask, a.s, delta)};
  }
};

// Max/min with the index of the first extremum. NaN beats every number (it propagates, as in
// torch.max); equal values (+0 and -0 included, and two NaNs) keep the smaller index, so the result is
// the same whatever order partials merge in.
template <bool kIsMax>
struct ExtremumTraits {
  struct State {
    float v;
    std::int32_t idx; // -1: no valid element yet
  };
  // a beats b (used by merge): an ordered compare is false when either side is NaN, so NaN beats a number
  // only through the second term.
  static CULAYERS_HD bool beats(float a, float b) {
    const bool a_nan = a != a;
    const bool b_nan = b != b;
    const bool ordered = kIsMax ? a > b : a < b;
    return ordered | (a_nan & !b_nan);
  }
  // A walk (a thread's steps in increasing r) starts from empty(): -inf for max (+inf for min) and no
  // index; merges read only the index of an empty state. push takes the element when it compares
  // greater (less) or unordered and the held value is a number, two compares and two selects per
  // element: any NaN beats a number, nothing replaces a held NaN, equal values keep the earlier step,
  // and the first element is taken unless it equals the start value. A walk whose valid elements all
  // equal the start value ends with idx = -1 and a count above 0; finish then gives it its first valid
  // step (the start value is already its extremum).
  static CULAYERS_HD State empty() {
    return State{kIsMax ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity(),
                 -1};
  }
  static CULAYERS_HD void push(State& a, float v, std::int32_t r) {
    const bool take = !(kIsMax ? v <= a.v : v >= a.v) & (a.v == a.v);
    a.v = take ? v : a.v;
    a.idx = take ? r : a.idx;
  }
  static CULAYERS_HD void finish(State& a, std::int32_t count, std::int32_t first_valid) {
    a.idx = (count > 0 && a.idx < 0) ? first_valid : a.idx;
  }
  static CULAYERS_HD State merge(const State& a, const State& b) {
    if (b.idx < 0) {
      return a;
    }
    if (a.idx < 0) {
      return b;
    }
    if (beats(b.v, a.v)) {
      return b;
    }
    if (beats(a.v, b.v)) {
      return a;
    }
    return b.idx < a.idx ? b : a;
  }
  static CULAYERS_DEVICE State shfl_down(const State& a, unsigned delta) {
    return State{__shfl_down_sync(kFullMask, a.v, delta), __shfl_down_sync(kFullMask, a.idx, delta)};
  }
};

template <>
struct AccTraits<AccKind::kMax> : ExtremumTraits<true> {};
template <>
struct AccTraits<AccKind::kMin> : ExtremumTraits<false> {};

// Welford push and Chan merge as in kernels/common (welford_push / welford_merge), with the divisions by
// counts done by __fdividef (at most 2 ulp): IEEE division carries a slow-path subroutine whose call
// makes ptxas spill in these register-heavy loops, and a 2-ulp weight changes the statistics by far less
// than their own float32 accumulation error.
template <>
struct AccTraits<AccKind::kMoments> {
  using State = Welford;
  static CULAYERS_HD State empty() { return Welford{0.0f, 0.0f, 0.0f}; }
  // No push: the kernels push moments with their integer step count (push_step, narrow_kernel), since a
  // float count stops growing at 2^24; they set .count from it before merging.
  // Chan's merge (the fast-divide one of kernels/common); not commutative bit for bit, so callers fix the
  // order.
  static CULAYERS_DEVICE State merge(const State& a, const State& b) { return welford_merge<true>(a, b); }
  static CULAYERS_DEVICE State shfl_down(const State& a, unsigned delta) {
    return Welford{__shfl_down_sync(kFullMask, a.mean, delta), __shfl_down_sync(kFullMask, a.m2, delta),
                   __shfl_down_sync(kFullMask, a.count, delta)};
  }
};

/// Validity kinds as the kernels see them (masked_reduce::Validity's numbers).
constexpr int kValidNone = static_cast<int>(masked_reduce::Validity::kNone);
constexpr int kValidMask = static_cast<int>(masked_reduce::Validity::kMask);
constexpr int kValidLengths = static_cast<int>(masked_reduce::Validity::kLengths);

/// lengths[o] clamped into [0, R]; an out-of-range length is counted once in `errors` when
/// `count_error` (the caller guarantees one counting thread per row and call).
CULAYERS_DEVICE std::int64_t read_length(const std::int32_t* lengths, std::uint32_t* errors, std::int64_t o,
                                         std::int64_t reduce, bool count_error) {
  const std::int64_t raw = load<CacheHint::kReadOnly>(lengths + o);
  if (raw >= 0 && raw <= reduce) {
    return raw;
  }
  if (count_error && errors != nullptr) {
    atomicAdd(errors, 1u);
  }
  return raw < 0 ? 0 : reduce;
}

/// N values in registers with no width limit (Vec is limited to one 16-byte access); the span
/// helpers below move it as 16-byte chunks or scalars.
template <class U, int N>
struct Array {
  U v[N];
  CULAYERS_HD U& operator[](int i) { return v[i]; }
  CULAYERS_HD const U& operator[](int i) const { return v[i]; }
};

/// Stores N consecutive values: 16-byte (or narrower) vectors when `vec_ok` (p aligned to the chunk),
/// scalars otherwise. The same bytes are counted either way.
template <int N, class U>
CULAYERS_DEVICE void store_span(U* p, const Array<U, N>& v, bool vec_ok) {
  constexpr int kChunk = (N * static_cast<int>(sizeof(U)) <= 16) ? N : static_cast<int>(16 / sizeof(U));
  if (vec_ok) {
    CULAYERS_PRAGMA_UNROLL
    for (int c = 0; c < N / kChunk; ++c) {
      Vec<U, kChunk> part;
      CULAYERS_PRAGMA_UNROLL
      for (int j = 0; j < kChunk; ++j) {
        part[j] = v[c * kChunk + j];
      }
      store_vec<kChunk>(p + c * kChunk, part);
    }
  } else {
    CULAYERS_PRAGMA_UNROLL
    for (int j = 0; j < N; ++j) {
      store(p + j, v[j]);
    }
  }
}

/// Loads N consecutive values, as store_span.
template <int N, CacheHint Hint = CacheHint::kDefault, class U>
CULAYERS_DEVICE Array<U, N> load_span(const U* p, bool vec_ok) {
  constexpr int kChunk = (N * static_cast<int>(sizeof(U)) <= 16) ? N : static_cast<int>(16 / sizeof(U));
  Array<U, N> v;
  if (vec_ok) {
    CULAYERS_PRAGMA_UNROLL
    for (int c = 0; c < N / kChunk; ++c) {
      const Vec<U, kChunk> part = load_vec<kChunk, Hint>(p + c * kChunk);
      CULAYERS_PRAGMA_UNROLL
      for (int j = 0; j < kChunk; ++j) {
        v[c * kChunk + j] = part[j];
      }
    }
  } else {
    CULAYERS_PRAGMA_UNROLL
    for (int j = 0; j < N; ++j) {
      v[j] = load<Hint>(p + j);
    }
  }
  return v;
}

/// Writes the final outputs of N consecutive columns [col, col + N) of row o from their accumulators
/// and the row's valid-step count.
template <class T, AccKind K, int N>
CULAYERS_DEVICE void write_outputs(const ForwardParams& p, std::int64_t o, std::int64_t col,
                                   const typename AccTraits<K>::State (&acc)[N], std::int32_t cnt) {
  const std::int64_t at = o * p.inner + col;
  const bool empty = cnt <= 0;
  if constexpr (K == AccKind::kSum) {
    const float denom = static_cast<float>(cnt);
    Array<T, N> v;
    CULAYERS_PRAGMA_UNROLL
    for (int j = 0; j < N; ++j) {
      v[j] = from_float<T>(empty ? p.fill : (p.divide ? acc[j].s / denom : acc[j].s));
    }
    store_span<N>(static_cast<T*>(p.out) + at, v, p.out_vec != 0);
  } else if constexpr (K == AccKind::kMax || K == AccKind::kMin) {
    Array<T, N> v;
    Array<std::int32_t, N> idx;
    CULAYERS_PRAGMA_UNROLL
    for (int j = 0; j < N; ++j) {
      v[j] = from_float<T>(empty ? p.fill : acc[j].v);
      idx[j] = empty ? -1 : acc[j].idx;
    }
    store_span<N>(static_cast<T*>(p.out) + at, v, p.out_vec != 0);
    if (p.indices != nullptr) {
      store_span<N>(p.indices + at, idx, p.aux_vec != 0);
    }
  } else {
    Array<float, N> mean;
    Array<float, N> var;
    CULAYERS_PRAGMA_UNROLL
    for (int j = 0; j < N; ++j) {
      mean[j] = empty ? p.fill : acc[j].mean;
      // __fdividef (2 ulp) for the reason given at AccTraits<kMoments>.
      var[j] = empty ? p.fill : __fdividef(acc[j].m2, acc[j].count);
    }
    store_span<N>(p.out_mean + at, mean, p.aux_vec != 0);
    store_span<N>(p.out_var + at, var, p.aux_vec != 0);
  }
}

/// Raw bits of one element are all zero (+0.0).
template <class T>
CULAYERS_DEVICE bool is_positive_zero(const T& v) {
  if constexpr (sizeof(T) == 4) {
    std::uint32_t b;
    __builtin_memcpy(&b, &v, 4);
    return b == 0u;
  } else {
    static_assert(sizeof(T) == 2, "16- or 32-bit element types");
    std::uint16_t b;
    __builtin_memcpy(&b, &v, 2);
    return b == 0u;
  }
}

} // namespace masked
} // namespace kernels
CULAYERS_NAMESPACE_END
