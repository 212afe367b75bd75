// Vectorized global loads and stores. Kernels move global memory through these helpers so that
//  - the vector width is explicit (16-byte accesses where alignment allows, scalar tails otherwise),
//  - the emulated build checks every access (alignment, and that it lies inside one allocation: an
//    off-by-one read is a clear error naming the kernel and line even without ASan), and
//  - the emulated build counts the bytes moved, so tests can assert an op's byte model.
#pragma once

#include "kernels/common/portability.cuh"

#include "culayers/version.hpp"

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#if CULAYERS_EMULATED_BUILD
#  define CULAYERS_CALLER_LOCATION                                                                           \
    , const char *culayers_file_ = __builtin_FILE(), int culayers_line_ = __builtin_LINE()
#  define CULAYERS_CHECK_ACCESS(p, bytes, align, write)                                                      \
    ::culayers_emu::detail::check_global_access(p, bytes, align, write, culayers_file_, culayers_line_)
#else
#  define CULAYERS_CALLER_LOCATION
#  define CULAYERS_CHECK_ACCESS(p, bytes, align, write) ((void)0)
#endif

CULAYERS_NAMESPACE_BEGIN
namespace kernels {

/// N values of T moved as one access of N * sizeof(T) bytes (at most 16, the widest sm_80-sm_90 access).
template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  static_assert(N >= 1 && (N & (N - 1)) == 0, "vector width must be a power of two");
  static_assert(sizeof(T) * N <= 16, "at most 16 bytes per access");
  T v[N];

  CULAYERS_HD T& operator[](int i) { return v[i]; }
  CULAYERS_HD const T& operator[](int i) const { return v[i]; }
};

/// Cache policy of a load or store. kStreaming: data touched once (evict first); kReadOnly: read-only
/// for the kernel's lifetime (non-coherent path). Plain accesses on the emulated build.
enum class CacheHint { kDefault, kStreaming, kReadOnly };

namespace detail {

template <int Bytes>
struct RawWord;
template <>
struct RawWord<2> {
  using type = unsigned short;
};
template <>
struct RawWord<4> {
  using type = unsigned int;
};
template <>
struct RawWord<8> {
  using type = uint2;
};
template <>
struct RawWord<16> {
  using type = uint4;
};

template <CacheHint Hint, class W>
CULAYERS_DEVICE W load_word(const W* p) {
#if defined(__CUDACC__)
  if constexpr (Hint == CacheHint::kStreaming) {
    return __ldcs(p);
  } else if constexpr (Hint == CacheHint::kReadOnly) {
    return __ldg(p);
  } else {
    return *p;
  }
#else
  return *p;
#endif
}

template <CacheHint Hint, class W>
CULAYERS_DEVICE void store_word(W* p, const W& w) {
#if defined(__CUDACC__)
  if constexpr (Hint == CacheHint::kStreaming) {
    __stcs(p, w);
  } else {
    *p = w;
  }
#else
  *p = w;
#endif
}

} // namespace detail

/// Loads N consecutive values starting at p; p must be aligned to N * sizeof(T).
template <int N, CacheHint Hint = CacheHint::kDefault, class T>
CULAYERS_DEVICE Vec<T, N> load_vec(const T* p CULAYERS_CALLER_LOCATION) {
  constexpr int kBytes = static_cast<int>(sizeof(T)) * N;
  CULAYERS_CHECK_ACCESS(p, kBytes, kBytes, false);
  if constexpr (kBytes == 1) {
    return *reinterpret_cast<const Vec<T, N>*>(p);
  } else {
    using W = typename detail::RawWord<kBytes>::type;
    W w = detail::load_word<Hint>(reinterpret_cast<const W*>(p));
    Vec<T, N> out;
    static_assert(sizeof(out) == sizeof(w), "vector and raw word differ in size");
    __builtin_memcpy(&out, &w, sizeof(w));
    return out;
  }
}

/// Stores N consecutive values starting at p; p must be aligned to N * sizeof(T).
template <int N, CacheHint Hint = CacheHint::kDefault, class T>
CULAYERS_DEVICE void store_vec(T* p, const Vec<T, N>& v CULAYERS_CALLER_LOCATION) {
  constexpr int kBytes = static_cast<int>(sizeof(T)) * N;
  CULAYERS_CHECK_ACCESS(p, kBytes, kBytes, true);
  if constexpr (kBytes == 1) {
    *reinterpret_cast<Vec<T, N>*>(p) = v;
  } else {
    using W = typename detail::RawWord<kBytes>::type;
    W w;
    __builtin_memcpy(&w, &v, sizeof(w));
    detail::store_word<Hint>(reinterpret_cast<W*>(p), w);
  }
}

/// Scalar load through the same checks and counters (tails, gathers).
template <CacheHint Hint = CacheHint::kDefault, class T>
CULAYERS_DEVICE T load(const T* p CULAYERS_CALLER_LOCATION) {
  CULAYERS_CHECK_ACCESS(p, sizeof(T), alignof(T), false);
#if defined(__CUDACC__)
  if constexpr (Hint == CacheHint::kReadOnly && (sizeof(T) == 4 || sizeof(T) == 8 || sizeof(T) == 2)) {
    return __ldg(p);
  } else if constexpr (Hint == CacheHint::kStreaming &&
                       (sizeof(T) == 4 || sizeof(T) == 8 || sizeof(T) == 2)) {
    return __ldcs(p);
  }
#endif
  return *p;
}

/// Scalar store through the same checks and counters.
template <CacheHint Hint = CacheHint::kDefault, class T>
CULAYERS_DEVICE void store(T* p, const T& v CULAYERS_CALLER_LOCATION) {
  CULAYERS_CHECK_ACCESS(p, sizeof(T), alignof(T), true);
  *p = v;
}

/// Host side: the widest vector width N (a power of two, N * sizeof(T) <= 16) such that every pointer
/// is aligned to N * sizeof(T) and `row_elements` (a row length or stride that vectors must not cross)
/// is a multiple of N. Null pointers impose nothing; row_elements <= 0 imposes nothing.
template <class T>
int max_vec_width(std::int64_t row_elements, std::initializer_list<const void*> pointers) {
  int n = static_cast<int>(16 / sizeof(T));
  if (n < 1) {
    n = 1;
  }
  for (; n > 1; n /= 2) {
    const std::uintptr_t bytes = static_cast<std::uintptr_t>(n) * sizeof(T);
    bool ok = row_elements <= 0 || row_elements % n == 0;
    for (const void* p : pointers) {
      ok = ok && (reinterpret_cast<std::uintptr_t>(p) % bytes == 0);
    }
    if (ok) {
      break;
    }
  }
  return n;
}

} // namespace kernels
CULAYERS_NAMESPACE_END
