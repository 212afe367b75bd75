// Dropout kernels (private header): the forward and the backward are the same elementwise map
// out = keep ? in * scale : +0.0 and differ only in which parameters of the DropoutState they read
// (the current call's, or the last forward's) and in the forward recording them.
//
// Paths (picked on the host by plan_dropout in kernels/dropout/dropout.cu):
//   plain    the mask is drawn on x's own shape. A chunk is C = max(4, V) consecutive elements whose
//            draws q0 .. q0 + C - 1 start at a multiple of 4: one Philox call per 4 elements, all four
//            words used, V-element vector accesses, then a scalar tail of n % C elements.
//   row      x is [rows, F] with F % 4 == 0 and the mask broadcast over some row dimensions, e.g.
//            (B, 1, F) over (B, T, F): the plain chunk loop with a row -> noise row map per chunk.
//   run      the innermost dimension is broadcast, e.g. (N, C, 1, 1) over (N, C, H, W): x is a list of
//            runs of E elements sharing one draw. A chunk of V <= E elements meets at most two runs, so
//            it costs at most two Philox calls (one in almost every chunk when E >> V); only the word
//            (q & 3) of each call is used.
//   generic  anything else (an innermost drawn dimension F % 4 != 0 under a broadcast, or a broadcast
//            tensor of 2^32 elements or more): one element at a time, one Philox call each.
// Counter words never depend on thread or block indices, only on the element's draw index q, so every
// path, vector width and grid size gives the same bits (the tests check it).
#pragma once

#include "kernels/common/common.cuh"
#include "kernels/dropout/philox.cuh"

#include "culayers/dropout.hpp"
#include "culayers/types.hpp"

#include <cstdint>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace dropout {

using culayers::dropout::DropoutState;

// ---- tuning constants --------------------------------------------------------------------------------
// 256 threads x 4 blocks per SM = 1024 resident threads per SM (__launch_bounds__ caps registers at 64
// for that). Each thread decides the keep bits of kUnroll chunks (Philox), then loads them (up to 16
// bytes each) and applies them: 2 x 16 B x 1024 threads = 32 KB in flight per SM, above the ~18 KB
// Little's law asks for on H100 HBM3 (3.35 TB/s x ~700 ns / 132 SMs). kUnroll = 4 made ptxas spill at
// 64 registers on every path (sm_80..sm_90). Derived, not yet measured on a GPU: bench/bench_dropout.cpp
// measures it, and max_blocks overrides the grid for tuning.
inline constexpr int kThreads = 256;
inline constexpr int kBlocksPerSm = 4;
inline constexpr int kUnroll = 2;

/// n / d for a divisor fixed at launch and n < 2^32: one multiply-high (Granlund-Montgomery:
/// s = ceil(log2 d), m = floor(2^32 (2^s - d) / d) + 1, q = (mulhi(n, m) + n) >> s). kWide = true uses
/// the 64-bit division instead (only the generic path, for tensors of 2^32 elements or more: the
/// division is a called subroutine whose register pressure would make the vector kernels spill).
struct DivMod {
  std::uint64_t d;
  std::uint32_t m;
  std::uint32_t s;

  /// Host side. The fast path needs 1 <= d < 2^32.
  static DivMod make(std::uint64_t d) {
    DivMod r{d, 0, 0};
    if (d >= 1 && d <= 0xffffffffull) {
      std::uint32_t s = 0;
      while ((1ull << s) < d) {
        ++s;
      }
      r.s = s;
      r.m = static_cast<std::uint32_t>(((1ull << 32) * ((1ull << s) - d)) / d + 1);
    }
    return r;
  }

  template <bool kWide>
  CULAYERS_HD std::uint64_t div(std::uint64_t n) const {
    if constexpr (kWide) {
      return n / d;
    } else {
      const std::uint32_t n32 = static_cast<std::uint32_t>(n);
      const std::uint64_t hi = (static_cast<std::uint64_t>(n32) * m) >> 32;
      return (hi + n32) >> s;
    }
  }
};

/// Noise-index map of the broadcast paths. x's shape, with dimensions of extent 1 dropped and adjacent
/// dimensions of equal broadcast status merged, is [outer dims..., inner]; element (o, p) (o = row-major
/// index over the outer dims, p = position along the inner dim) has the noise index
///   map_outer(o) * inner_noise + (inner drawn ? p : 0),
/// map_outer(o) = sum over the outer dims of digit_j * outer_stride[j] (stride 0 for a broadcast dim).
struct NoiseMap {
  int nd;                               ///< number of outer dims (0 .. kMaxRank - 1)
  DivMod outer[kMaxRank];               ///< outer extents (outer[0] is never divided by)
  std::uint64_t outer_stride[kMaxRank]; ///< noise strides of the outer dims
  DivMod inner;                         ///< extent E of the inner dim (run and generic paths)
  std::uint64_t inner_noise;            ///< E if the inner dim is drawn, 1 if broadcast
  std::uint32_t inner_kept;             ///< 1: the inner dim is drawn (noise index advances along it)
  DivMod chunks_per_row;                ///< row path: F / C
  std::uint64_t row_len;                ///< row path: F
};

/// Per-launch values that never change between graph replays (shapes, offsets); everything that does
/// (seed, stream, threshold, scale) is read from the DropoutState on the device.
struct KernelArgs {
  std::int64_t n;        ///< elements of x
  std::uint64_t offset;  ///< the call's extra Philox offset (multiple of 4)
  std::uint32_t forward; ///< 1: read the current call and record it in last_*; 0: read last_*
  NoiseMap map;
};

// A rolled loop: the map reads the launch parameters in place (kernels take KernelArgs as a
// __grid_constant__), where an unrolled one kept every dimension's constants live in registers and
// made the vector kernels spill.
#if defined(__CUDACC__)
#  define CULAYERS_DROPOUT_NO_UNROLL _Pragma("unroll 1")
#else
#  define CULAYERS_DROPOUT_NO_UNROLL
#endif

template <bool kWide>
CULAYERS_HD std::uint64_t map_outer(const NoiseMap& m, std::uint64_t idx) {
  std::uint64_t acc = 0;
  CULAYERS_DROPOUT_NO_UNROLL
  for (int j = m.nd - 1; j >= 1; --j) {
    const std::uint64_t q = m.outer[j].template div<kWide>(idx);
    acc += (idx - q * m.outer[j].d) * m.outer_stride[j];
    idx = q;
  }
  if (m.nd > 0) {
    acc += idx * m.outer_stride[0];
  }
  return acc;
}

/// Draw index (before the base offset) of element i, and the elements left in its inner segment.
template <bool kWide>
CULAYERS_HD std::uint64_t locate(const NoiseMap& m, std::uint64_t i, std::uint64_t* left) {
  const std::uint64_t seg = m.inner.template div<kWide>(i);
  const std::uint64_t pos = i - seg * m.inner.d;
  *left = m.inner.d - pos;
  return map_outer<kWide>(m, seg) * m.inner_noise + (m.inner_kept != 0 ? pos : 0);
}

/// Parameters of one call read from the state.
struct CallParams {
  std::uint64_t seed;
  std::uint64_t base; ///< state.offset + the call's offset
  std::uint64_t stream;
  std::uint64_t threshold;
  float scale;
};

/// Every thread reads the call's parameters; in the forward, thread 0 of block 0 also records them in
/// the last_* fields (which no thread of this launch reads).
CULAYERS_DEVICE CallParams read_call(DropoutState* state, const KernelArgs& a) {
  CallParams p;
  p.seed = load(&state->seed);
  p.base = load(&state->offset) + a.offset;
  if (a.forward != 0) {
    p.stream = load(&state->stream);
    p.threshold = load(&state->threshold);
    p.scale = load(&state->scale);
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      store(&state->last_stream, p.stream);
      store(&state->last_threshold, p.threshold);
      store(&state->last_scale, p.scale);
      store(&state->last_keep_rate, load(&state->keep_rate));
      store(&state->last_iteration, load(&state->iterations));
    }
  } else {
    p.stream = load(&state->last_stream);
    p.threshold = load(&state->last_threshold);
    p.scale = load(&state->last_scale);
  }
  return p;
}

template <class T>
CULAYERS_DEVICE T zero_value() {
  // +0.0 is all-zero bits in float32, float16 and bfloat16.
  T z;
  const unsigned char zeros[sizeof(T)] = {};
  __builtin_memcpy(&z, zeros, sizeof(T));
  return z;
}

/// out = keep ? in * scale : +0.0 (kRaw: the scale is exactly 1 and kept values are copied bit for bit,
/// so keep rate 1 is an exact identity even for NaN payloads).
template <bool kRaw, class T>
CULAYERS_DEVICE T apply_keep(T x, bool keep, float scale) {
  if constexpr (kRaw) {
    (void)scale;
    return keep ? x : zero_value<T>();
  } else {
    return keep ? from_float<T>(to_float(x) * scale) : zero_value<T>();
  }
}

/// r < T for T in [0, 2^32] with one 32-bit compare.
struct Threshold {
  std::uint32_t t;
  bool all;
  CULAYERS_DEVICE explicit Threshold(std::uint64_t threshold)
      : t(static_cast<std::uint32_t>(threshold)), all(threshold >= kThresholdKeepAll) {}
  CULAYERS_DEVICE bool keep(std::uint32_t r) const { return all || r < t; }
};

/// One scalar element: draw q (base included) decides element i. Tails and the generic path.
template <bool kRaw, class T>
CULAYERS_DEVICE void scalar_element(const T* in, T* out, std::uint8_t* mask, std::int64_t i, std::uint64_t q,
                                    const CallParams& p, const Threshold& th) {
  const bool keep = th.keep(philox_draw(p.seed, p.stream, q));
  store(out + i, apply_keep<kRaw>(load<CacheHint::kStreaming>(in + i), keep, p.scale));
  if (mask != nullptr) {
    store(mask + i, static_cast<std::uint8_t>(keep ? 1 : 0));
  }
}

// ---- plain and row paths -----------------------------------------------------------------------------

template <class T, int V, bool kRow, bool kRaw>
struct ContigChunk {
  static constexpr int kC = V < 4 ? 4 : V; // elements per chunk: whole Philox groups
  static constexpr int kLoads = kC / V;
  std::uint32_t bits; // bit k: element k of the chunk is kept
  Vec<T, V> v[kLoads];

  // The keep bits are decided before the loads are issued, so only one register per chunk stays live
  // next to the loaded vectors (the unrolled chunks in flight then fit in 64 registers without spills).
  CULAYERS_DEVICE void decide(std::int64_t c, const CallParams& p, const Threshold& th, const KernelArgs& a) {
    const auto uc = static_cast<std::uint64_t>(c);
    std::uint64_t q0; // first draw of the chunk: a multiple of 4
    if constexpr (kRow) {
      const std::uint64_t row = a.map.chunks_per_row.template div<false>(uc);
      const std::uint64_t col = (uc - row * a.map.chunks_per_row.d) * kC;
      q0 = p.base + map_outer<false>(a.map, row) * a.map.row_len + col;
    } else {
      q0 = p.base + uc * kC;
    }
    bits = 0;
    CULAYERS_PRAGMA_UNROLL
    for (int g = 0; g < kC / 4; ++g) {
      const PhiloxWords w = philox_group(p.seed, p.stream, (q0 >> 2) + g);
      CULAYERS_PRAGMA_UNROLL
      for (int e = 0; e < 4; ++e) {
        bits |= th.keep(w.w[e]) ? 1u << (g * 4 + e) : 0u;
      }
    }
  }

  CULAYERS_DEVICE void load_from(const T* in, std::int64_t c) {
    CULAYERS_PRAGMA_UNROLL
    for (int l = 0; l < kLoads; ++l) {
      v[l] = load_vec<V, CacheHint::kStreaming>(in + c * kC + l * V);
    }
  }

  CULAYERS_DEVICE void process_store(T* out, std::uint8_t* mask, std::int64_t c, const CallParams& p) {
    Vec<std::uint8_t, V> kept[kLoads];
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < kC; ++k) {
      const bool keep = ((bits >> k) & 1u) != 0;
      v[k / V][k % V] = apply_keep<kRaw>(v[k / V][k % V], keep, p.scale);
      kept[k / V][k % V] = keep ? 1 : 0;
    }
    CULAYERS_PRAGMA_UNROLL
    for (int l = 0; l < kLoads; ++l) {
      store_vec<V, CacheHint::kStreaming>(out + c * kC + l * V, v[l]);
    }
    if (mask != nullptr) {
      CULAYERS_PRAGMA_UNROLL
      for (int l = 0; l < kLoads; ++l) {
        store_vec<V>(mask + c * kC + l * V, kept[l]);
      }
    }
  }
};

template <class T, int V, bool kRow, bool kRaw>
CULAYERS_DEVICE void contig_body(const T* in, T* out, std::uint8_t* mask, const CallParams& p,
                                 const KernelArgs& a) {
  using Chunk = ContigChunk<T, V, kRow, kRaw>;
  constexpr int kU = kUnroll;
  constexpr int kC = Chunk::kC;
  const Threshold th(p.threshold);
  const std::int64_t nchunks = a.n / kC;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  std::int64_t c = tid;
  for (; c + (kU - 1) * stride < nchunks; c += kU * stride) {
    Chunk chunks[kU];
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kU; ++u) {
      chunks[u].decide(c + u * stride, p, th, a);
    }
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kU; ++u) {
      chunks[u].load_from(in, c + u * stride);
    }
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kU; ++u) {
      chunks[u].process_store(out, mask, c + u * stride, p);
    }
  }
  for (; c < nchunks; c += stride) {
    Chunk chunk;
    chunk.decide(c, p, th, a);
    chunk.load_from(in, c);
    chunk.process_store(out, mask, c, p);
  }
  if constexpr (!kRow) {
    // The last n % C elements (rows of the row path are whole chunks). Same draws as the vector code:
    // element i uses word (q & 3) of Philox group q >> 2.
    const std::int64_t i = nchunks * kC + tid;
    if (i < a.n) {
      scalar_element<kRaw>(in, out, mask, i, p.base + static_cast<std::uint64_t>(i), p, th);
    }
  }
}

/// The scale lives on the device, so the choice between multiplying and copying kept values bit for
/// bit (scale exactly 1) is a uniform branch at the top of each kernel.
template <class T, int V, bool kRow>
CULAYERS_GLOBAL void __launch_bounds__(kThreads, kBlocksPerSm)
    dropout_contig_kernel(const T* in, T* out, std::uint8_t* mask, DropoutState* state,
                          const __grid_constant__ KernelArgs a) {
  const CallParams p = read_call(state, a);
  if (p.scale == 1.0f) {
    contig_body<T, V, kRow, true>(in, out, mask, p, a);
  } else {
    contig_body<T, V, kRow, false>(in, out, mask, p, a);
  }
}

// ---- run path ----------------------------------------------------------------------------------------

template <class T, int V, bool kRaw>
struct RunChunk {
  std::uint32_t bits; // bit j: element j of the chunk is kept
  Vec<T, V> v;

  // The keep bits are decided before the loads are issued: one register per chunk stays live instead
  // of two 64-bit draw indices (the loaded vectors of the unrolled chunks then fit without spills).
  CULAYERS_DEVICE void decide(std::int64_t c, const CallParams& p, const Threshold& th, const KernelArgs& a) {
    const std::uint64_t i0 = static_cast<std::uint64_t>(c) * V;
    std::uint64_t run_left = 0;
    const std::uint64_t qa = p.base + locate<false>(a.map, i0, &run_left);
    constexpr std::uint32_t kAll = V == 32 ? 0xffffffffu : (1u << V) - 1u;
    const bool keep_a = th.keep(philox_draw(p.seed, p.stream, qa));
    if (run_left >= static_cast<std::uint64_t>(V)) {
      bits = keep_a ? kAll : 0u;
    } else {
      // The chunk reaches the next run (at most one crossing: V <= E).
      std::uint64_t unused = 0;
      const std::uint64_t qb = p.base + locate<false>(a.map, i0 + run_left, &unused);
      const bool keep_b = th.keep(philox_draw(p.seed, p.stream, qb));
      const std::uint32_t first = (1u << run_left) - 1u;
      bits = (keep_a ? first : 0u) | (keep_b ? (kAll & ~first) : 0u);
    }
  }

  CULAYERS_DEVICE void load_from(const T* in, std::int64_t c) {
    v = load_vec<V, CacheHint::kStreaming>(in + c * V);
  }

  CULAYERS_DEVICE void process_store(T* out, std::uint8_t* mask, std::int64_t c, const CallParams& p) {
    Vec<std::uint8_t, V> kept;
    CULAYERS_PRAGMA_UNROLL
    for (int j = 0; j < V; ++j) {
      const bool keep = ((bits >> j) & 1u) != 0;
      v[j] = apply_keep<kRaw>(v[j], keep, p.scale);
      kept[j] = keep ? 1 : 0;
    }
    store_vec<V, CacheHint::kStreaming>(out + c * V, v);
    if (mask != nullptr) {
      store_vec<V>(mask + c * V, kept);
    }
  }
};

template <class T, int V, bool kRaw>
CULAYERS_DEVICE void run_body(const T* in, T* out, std::uint8_t* mask, const CallParams& p,
                              const KernelArgs& a) {
  using Chunk = RunChunk<T, V, kRaw>;
  constexpr int kU = kUnroll;
  const Threshold th(p.threshold);
  const std::int64_t nchunks = a.n / V;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  std::int64_t c = tid;
  for (; c + (kU - 1) * stride < nchunks; c += kU * stride) {
    Chunk chunks[kU];
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kU; ++u) {
      chunks[u].decide(c + u * stride, p, th, a);
    }
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kU; ++u) {
      chunks[u].load_from(in, c + u * stride);
    }
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kU; ++u) {
      chunks[u].process_store(out, mask, c + u * stride, p);
    }
  }
  for (; c < nchunks; c += stride) {
    Chunk chunk;
    chunk.decide(c, p, th, a);
    chunk.load_from(in, c);
    chunk.process_store(out, mask, c, p);
  }
  const std::int64_t i = nchunks * V + tid;
  if (i < a.n) {
    std::uint64_t unused = 0;
    scalar_element<kRaw>(in, out, mask, i,
                         p.base + locate<false>(a.map, static_cast<std::uint64_t>(i), &unused), p, th);
  }
}

template <class T, int V>
CULAYERS_GLOBAL void __launch_bounds__(kThreads, kBlocksPerSm)
    dropout_run_kernel(const T* in, T* out, std::uint8_t* mask, DropoutState* state,
                       const __grid_constant__ KernelArgs a) {
  const CallParams p = read_call(state, a);
  if (p.scale == 1.0f) {
    run_body<T, V, true>(in, out, mask, p, a);
  } else {
    run_body<T, V, false>(in, out, mask, p, a);
  }
}

// ---- generic path ------------------------------------------------------------------------------------

template <class T, bool kWide, bool kRaw>
CULAYERS_DEVICE void generic_body(const T* in, T* out, std::uint8_t* mask, const CallParams& p,
                                  const KernelArgs& a) {
  const Threshold th(p.threshold);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.n;
       i += stride) {
    std::uint64_t unused = 0;
    scalar_element<kRaw>(in, out, mask, i,
                         p.base + locate<kWide>(a.map, static_cast<std::uint64_t>(i), &unused), p, th);
  }
}

template <class T, bool kWide>
CULAYERS_GLOBAL void __launch_bounds__(kThreads, kBlocksPerSm)
    dropout_generic_kernel(const T* in, T* out, std::uint8_t* mask, DropoutState* state,
                           const __grid_constant__ KernelArgs a) {
  const CallParams p = read_call(state, a);
  if (p.scale == 1.0f) {
    generic_body<T, kWide, true>(in, out, mask, p, a);
  } else {
    generic_body<T, kWide, false>(in, out, mask, p, a);
  }
}

// ---- dispatch (instantiated per dtype in dropout_<dtype>.cu) -----------------------------------------

enum class Path : int { kPlain = 0, kRow = 1, kRun = 2, kGeneric = 3 };

/// Everything a launch needs, decided on the host by plan_dropout (kernels/dropout/dropout.cu).
struct LaunchPlan {
  Path path;
  int vec;    ///< V: elements per global access (1, 2, 4, 8); 1 on the generic path
  int blocks; ///< grid size (kThreads threads per block)
  bool wide;  ///< generic path: indices or divisors may reach 2^32 (64-bit divisions)
  KernelArgs args;
};

/// Launches the planned kernel (kernels/dropout/dropout_dispatch.cuh; instantiated per dtype).
template <class T>
Status launch_dropout(const LaunchPlan& plan, const T* in, T* out, std::uint8_t* mask, DropoutState* state,
                      cudaStream_t stream, const char* op);

} // namespace dropout
} // namespace kernels
CULAYERS_NAMESPACE_END
