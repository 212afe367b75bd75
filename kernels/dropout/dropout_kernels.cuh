// Dropout kernels (private header): the forward and the backward are the same elementwise map
// out = keep ? in * scale : +0.0 and differ only in which parameters of the DropoutState they read
// (the current call's, or the last forward's) and in the forward recording them.
//
// Paths (picked on the host by plan_dropout in kernels/dropout/dropout.cu):
//   plain    the mask is drawn on x's own shape. A chunk is C = max(4, V) consecutive elements whose
//            draws q0 .. q0 + C - 1 start at a multiple of 4: one Philox call per 4 elements, all four
//            words used, V-element vector accesses, then a scalar tail of n % C elements.
//   row      x is [rows, F] with F % 4 == 0 and the mask broadcast over some row dimensions, e.g.
//            (B, 1, F) over (B, T, F): the plain chunk loop with a row -> noise row map per chunk; a
//            chunk whose draws equal the thread's previous chunk's reuses its keep bits (RowMemo).
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
#include <type_traits>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace dropout {

using culayers::dropout::DropoutState;

// ---- tuning constants --------------------------------------------------------------------------------
// Measured on an H100 80GB HBM3 (bf16, keep 0.9, L2 flushed, medians; copy = cudaMemcpyAsync D2D of the
// same bytes: 49.0 us for 8192x4096, 361.6 us for 16384x16384). The previous plan (grid capped at 4
// blocks per SM = 528, grid-stride loop, Philox before the loads, 2 chunks per pass) took 54.5 / 399.3
// us (90%). Issuing the loads before Philox with 4 chunks per pass, same capped grid: no gain (54.9 us);
// a probe with 3 Philox rounds instead of 10 (not a valid mask): 53.8 us, so neither bytes in flight nor
// Philox was the limit. One tile per block instead (the grid below): 50.3 / 366.7 us (97-99% of the
// copy); the same with 2 chunks per thread: 53.4 / 390.5 us. Our reading: 528 long-lived blocks drift
// apart as they stride through the tensor and the DRAM sees a scattered mix of reads and writes, whereas
// short blocks are handed their tiles in address order, as a copy's are.
//   tile:      kThreads x kUnroll = 256 x 4 = 1024 chunks (16 KB of bf16 or float on the 16-byte
//              paths); the grid is one block per tile (4096 for 8192x4096 bf16), capped only by CUDA's
//              grid limit or max_blocks (finish_plan in dropout.cu), beyond which blocks stride over tiles.
//   in flight: 4 x 16 B per thread issued before Philox x 1024 resident threads = 64 KB per SM, ~3.5x
//              the ~18 KB Little's law asks for on HBM3 (3.35 TB/s x ~700 ns / 132 SMs).
//   registers: the 4 chunks' 16 data registers stay live across Philox, under the 64 that
//              __launch_bounds__(256, 4) allows (65536 / 1024 threads); ptxas (sm_90): 44-64, no spills.
//   ALU:       8 bf16 elements need 2 Philox calls (10 rounds x (2 IMAD.WIDE + 2 LOP3) + key bumps, ~50
//              instructions each) plus ~7 per element to convert, scale and select: ~160 per 16 B, i.e.
//              64 MiB / 16 B / 132 SMs x 160 / (4 x 32 lanes per clock) = ~40 k cycles = ~20 us at
//              1.98 GHz for a ~50 us copy, hidden by the other warps (the row path's map added enough to
//              make it ~11% slower than the plain path, see MapIndex; since then the row path reuses a
//              thread's previous keep bits when its next chunk has the same draws (RowMemo), which skips
//              3 of 4 Philox calls for (B, 1, F) over (B, T, F): not yet measured on a GPU).
// kBlocksPerSm also caps the generic (scalar) path's grid-stride grid, which was not re-measured.
inline constexpr int kThreads = 256;
inline constexpr int kBlocksPerSm = 4;
inline constexpr int kUnroll = 4;
inline constexpr std::int64_t kMaxGridBlocks = 0x7fffffff; // CUDA's gridDim.x limit

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

/// Index arithmetic of the maps: 64-bit when kWide, else 32-bit. Without kWide the tensor has fewer than
/// 2^32 elements, so every index, digit, extent, stride and noise index is below 2^32 and no 32-bit
/// product or sum wraps: the same values, but a 32-bit multiply is one IMAD where a 64-bit one is three,
/// on the pipe Philox's multiplies already load (H100, bf16 (32, 1, 1024) over (32, 2048, 1024): the row
/// path went from 118.5 to 107.0 us with this, against 96.4 us for the plain path on the same tensor).
template <bool kWide>
using MapIndex = std::conditional_t<kWide, std::uint64_t, std::uint32_t>;

template <bool kWide>
CULAYERS_HD MapIndex<kWide> map_outer(const NoiseMap& m, MapIndex<kWide> idx) {
  using I = MapIndex<kWide>;
  I acc = 0;
  CULAYERS_DROPOUT_NO_UNROLL
  for (int j = m.nd - 1; j >= 1; --j) {
    const auto q = static_cast<I>(m.outer[j].template div<kWide>(idx));
    acc += (idx - q * static_cast<I>(m.outer[j].d)) * static_cast<I>(m.outer_stride[j]);
    idx = q;
  }
  if (m.nd > 0) {
    acc += idx * static_cast<I>(m.outer_stride[0]);
  }
  return acc;
}

/// Draw index (before the base offset) of element i, and the elements left in its inner segment.
template <bool kWide>
CULAYERS_HD std::uint64_t locate(const NoiseMap& m, std::uint64_t i64, std::uint64_t* left) {
  using I = MapIndex<kWide>;
  const auto i = static_cast<I>(i64);
  const auto seg = static_cast<I>(m.inner.template div<kWide>(i));
  const I pos = i - seg * static_cast<I>(m.inner.d);
  *left = m.inner.d - pos;
  return map_outer<kWide>(m, seg) * static_cast<I>(m.inner_noise) + (m.inner_kept != 0 ? pos : I{0});
}

/// Parameters of one call read from the state.
struct CallParams {
  std::uint64_t seed;
  std::uint64_t base; ///< state.offset + the call's offset
  std::uint64_t stream;
  std::uint64_t threshold;
  float scale;
  bool raw; ///< scale == 1: kept values are copied bit for bit (keep rate 1 is an exact identity)
};

/// Every thread reads the call's parameters; in the forward, thread 0 of block 0 also records them in
/// the last_* fields (which no thread of this launch reads). Nothing branches on them before a thread's
/// first data loads are issued (the bodies load first), so their latency overlaps the data's.
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
  p.raw = p.scale == 1.0f;
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

/// out = keep ? in * scale : +0.0 (raw: the scale is exactly 1 and kept values are copied bit for bit,
/// so keep rate 1 is an exact identity even for NaN payloads). `raw` is uniform across the grid; it is a
/// select rather than a branch around the whole body so that no thread waits for the state's scale
/// before issuing its first loads.
template <class T>
CULAYERS_DEVICE T apply_keep(T x, bool keep, const CallParams& p) {
  // Unconditional arithmetic, then selects: a conditional conversion became a branch per element that
  // the compiler placed before the Philox calls, making them wait for the loads.
  const T scaled = from_float<T>(to_float(x) * p.scale);
  const T kept = p.raw ? x : scaled;
  return keep ? kept : zero_value<T>();
}

/// r < T for T in [0, 2^32] with one 32-bit compare.
struct Threshold {
  std::uint32_t t;
  bool all;
  CULAYERS_DEVICE explicit Threshold(std::uint64_t threshold)
      : t(static_cast<std::uint32_t>(threshold)), all(threshold >= kThresholdKeepAll) {}
  CULAYERS_DEVICE bool keep(std::uint32_t r) const { return all || r < t; }
};

/// One scalar element: draw q (base included) decides element i. Tails and the generic path. The load is
/// issued before the Philox call, whose latency then overlaps it.
template <class T>
CULAYERS_DEVICE void scalar_element(const T* in, T* out, std::uint8_t* mask, std::int64_t i, std::uint64_t q,
                                    const CallParams& p, const Threshold& th) {
  const T x = load<CacheHint::kStreaming>(in + i);
  const bool keep = th.keep(philox_draw(p.seed, p.stream, q));
  store(out + i, apply_keep(x, keep, p));
  if (mask != nullptr) {
    store(mask + i, static_cast<std::uint8_t>(keep ? 1 : 0));
  }
}

// ---- vector paths (plain, row, run) ------------------------------------------------------------------

/// What decide() carries from one chunk of a thread's tile to the next: nothing, except on the row path.
struct NoMemo {};

/// A chunk of kC elements moved as kC / V vectors of V. The paths differ only in their static decide()
/// (the chunk's keep bits: bit k keeps element k); loading, applying and storing are shared.
template <class T, int V, int kChunk>
struct ChunkData {
  static constexpr int kC = kChunk;
  using Memo = NoMemo;
  static constexpr int kLoads = kC / V;
  Vec<T, V> v[kLoads];

  CULAYERS_DEVICE void load_from(const T* in, std::int64_t c) {
    CULAYERS_PRAGMA_UNROLL
    for (int l = 0; l < kLoads; ++l) {
      v[l] = load_vec<V, CacheHint::kStreaming>(in + c * kC + l * V);
    }
  }

  CULAYERS_DEVICE void apply_store(T* out, std::int64_t c, std::uint32_t bits, const CallParams& p) {
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < kC; ++k) {
      v[k / V][k % V] = apply_keep(v[k / V][k % V], ((bits >> k) & 1u) != 0, p);
    }
    CULAYERS_PRAGMA_UNROLL
    for (int l = 0; l < kLoads; ++l) {
      store_vec<V, CacheHint::kStreaming>(out + c * kC + l * V, v[l]);
    }
  }

  static CULAYERS_DEVICE void store_mask(std::uint8_t* mask, std::int64_t c, std::uint32_t bits) {
    CULAYERS_PRAGMA_UNROLL
    for (int l = 0; l < kLoads; ++l) {
      Vec<std::uint8_t, V> kept;
      CULAYERS_PRAGMA_UNROLL
      for (int j = 0; j < V; ++j) {
        kept[j] = static_cast<std::uint8_t>((bits >> (l * V + j)) & 1u);
      }
      store_vec<V>(mask + c * kC + l * V, kept);
    }
  }
};

/// The vector paths' loop. Chunks form tiles of kU x blockDim consecutive chunks; block b takes tiles
/// b, b + gridDim, ... (one tile per block with the planned grid) and thread t chunks t, t + blockDim,
/// ..., so each of a warp's kU loads covers 32 consecutive chunks. Per tile every load is issued first,
/// then the keep bits are decided (Philox) while those loads are in flight, then the chunks are scaled
/// and stored. The decisions run in a rolled loop, one chunk at a time: unrolled, the scheduler
/// interleaved all kU chunks' Philox calls (4 state words each) next to the loaded data and spilled at
/// 64 registers; one chunk's calls (2 on the V = 8 path) still give each round 4 independent multiplies.
/// The last nchunks % tile chunks go one per thread (grid-stride); the n % C element tail is the caller's.
template <int kU, class Chunk, class T>
CULAYERS_DEVICE void chunk_loop(const T* in, T* out, std::uint8_t* mask, const CallParams& p,
                                const Threshold& th, const KernelArgs& a, std::int64_t nchunks) {
  constexpr int kC = Chunk::kC;
  static_assert(kU * kC <= 32, "the keep bits of a tile's chunks must fit one 32-bit word");
  const std::int64_t step = blockDim.x; // between a thread's chunks in a tile
  const std::int64_t tile = kU * step;
  const std::int64_t full = nchunks / tile;
  for (std::int64_t t = blockIdx.x; t < full; t += gridDim.x) {
    const std::int64_t c = t * tile + threadIdx.x;
    Chunk chunks[kU];
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kU; ++u) {
      chunks[u].load_from(in, c + u * step);
    }
    std::uint32_t bits = 0; // chunk u's keep bits at bit u * kC
    typename Chunk::Memo memo{};
    CULAYERS_DROPOUT_NO_UNROLL
    for (int u = 0; u < kU; ++u) {
      bits |= Chunk::decide(c + u * step, p, th, a, memo) << (u * kC);
    }
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kU; ++u) {
      chunks[u].apply_store(out, c + u * step, bits >> (u * kC), p);
    }
    if (mask != nullptr) {
      CULAYERS_PRAGMA_UNROLL
      for (int u = 0; u < kU; ++u) {
        Chunk::store_mask(mask, c + u * step, bits >> (u * kC));
      }
    }
  }
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t c = full * tile + static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       c < nchunks; c += stride) {
    Chunk chunk;
    chunk.load_from(in, c);
    typename Chunk::Memo memo{};
    const std::uint32_t bits = Chunk::decide(c, p, th, a, memo);
    chunk.apply_store(out, c, bits, p);
    if (mask != nullptr) {
      Chunk::store_mask(mask, c, bits);
    }
  }
}

// ---- plain and row paths -----------------------------------------------------------------------------

/// The row path's memo: a chunk whose first draw equals the previous chunk's (the rows of a broadcast
/// dimension share their draws) takes that chunk's keep bits instead of calling Philox again. A thread's
/// chunks in a tile are blockDim chunks apart (2 rows of 1024 bf16), so for (B, 1, F) over (B, T, F) three
/// of its four decisions are reused; where no two of them share a noise row (e.g. (1, T, F) over
/// (B, T, F)) the memo costs one compare per chunk. q0 starts odd, never equal to a first draw (a
/// multiple of 4).
struct RowMemo {
  std::uint64_t q0 = 1;
  std::uint32_t bits = 0;
};

template <class T, int V, bool kRow>
struct ContigChunk : ChunkData<T, V, (V < 4 ? 4 : V)> { // chunks of whole Philox groups
  using ChunkData<T, V, (V < 4 ? 4 : V)>::kC;
  using Memo = std::conditional_t<kRow, RowMemo, NoMemo>;

  static CULAYERS_DEVICE std::uint32_t decide(std::int64_t c, const CallParams& p, const Threshold& th,
                                              const KernelArgs& a, Memo& memo) {
    std::uint64_t q0; // first draw of the chunk: a multiple of 4
    if constexpr (kRow) {
      // 32-bit arithmetic (see MapIndex): the row path runs only for tensors below 2^32 elements.
      const auto uc = static_cast<std::uint32_t>(c);
      const auto row = static_cast<std::uint32_t>(a.map.chunks_per_row.template div<false>(uc));
      const std::uint32_t col = (uc - row * static_cast<std::uint32_t>(a.map.chunks_per_row.d)) * kC;
      q0 = p.base + (map_outer<false>(a.map, row) * static_cast<std::uint32_t>(a.map.row_len) + col);
      if (q0 == memo.q0) {
        return memo.bits;
      }
    } else {
      q0 = p.base + static_cast<std::uint64_t>(c) * kC;
    }
    std::uint32_t b = 0;
    CULAYERS_PRAGMA_UNROLL
    for (int g = 0; g < kC / 4; ++g) {
      // (q0 + 4 g) >> 2, not (q0 >> 2) + g: draw numbers wrap modulo 2^64 as philox_draw's do, so a chunk
      // straddling q = 2^64 continues at group 0 (the scalar paths and the reference agree).
      const PhiloxWords w = philox_group(p.seed, p.stream, (q0 + 4u * static_cast<unsigned>(g)) >> 2);
      CULAYERS_PRAGMA_UNROLL
      for (int e = 0; e < 4; ++e) {
        b |= th.keep(w.w[e]) ? 1u << (g * 4 + e) : 0u;
      }
    }
    if constexpr (kRow) {
      memo.q0 = q0;
      memo.bits = b;
    }
    return b;
  }
};

template <class T, int V, bool kRow>
CULAYERS_DEVICE void contig_body(const T* in, T* out, std::uint8_t* mask, const CallParams& p,
                                 const KernelArgs& a) {
  using Chunk = ContigChunk<T, V, kRow>;
  constexpr int kC = Chunk::kC;
  const Threshold th(p.threshold);
  const std::int64_t nchunks = a.n / kC;
  chunk_loop<kUnroll, Chunk>(in, out, mask, p, th, a, nchunks);
  if constexpr (!kRow) {
    // The last n % C elements (rows of the row path are whole chunks). Same draws as the vector code:
    // element i uses word (q & 3) of Philox group q >> 2.
    const std::int64_t i = nchunks * kC + static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < a.n) {
      scalar_element(in, out, mask, i, p.base + static_cast<std::uint64_t>(i), p, th);
    }
  }
}

/// The scale lives on the device, so the choice between multiplying and copying kept values bit for
/// bit (scale exactly 1) is a uniform select per element (CallParams::raw).
template <class T, int V, bool kRow>
CULAYERS_GLOBAL void __launch_bounds__(kThreads, kBlocksPerSm)
    dropout_contig_kernel(const T* in, T* out, std::uint8_t* mask, DropoutState* state,
                          const __grid_constant__ KernelArgs a) {
  contig_body<T, V, kRow>(in, out, mask, read_call(state, a), a);
}

// ---- run path ----------------------------------------------------------------------------------------

template <class T, int V>
struct RunChunk : ChunkData<T, V, V> {
  static CULAYERS_DEVICE std::uint32_t decide(std::int64_t c, const CallParams& p, const Threshold& th,
                                              const KernelArgs& a, NoMemo& /*memo*/) {
    const std::uint64_t i0 = static_cast<std::uint64_t>(c) * V;
    std::uint64_t run_left = 0;
    const std::uint64_t qa = p.base + locate<false>(a.map, i0, &run_left);
    constexpr std::uint32_t kAll = V == 32 ? 0xffffffffu : (1u << V) - 1u;
    const bool keep_a = th.keep(philox_draw(p.seed, p.stream, qa));
    if (run_left >= static_cast<std::uint64_t>(V)) {
      return keep_a ? kAll : 0u;
    }
    // The chunk reaches the next run (at most one crossing: V <= E).
    std::uint64_t unused = 0;
    const std::uint64_t qb = p.base + locate<false>(a.map, i0 + run_left, &unused);
    const bool keep_b = th.keep(philox_draw(p.seed, p.stream, qb));
    const std::uint32_t first = (1u << run_left) - 1u;
    return (keep_a ? first : 0u) | (keep_b ? (kAll & ~first) : 0u);
  }
};

template <class T, int V>
CULAYERS_DEVICE void run_body(const T* in, T* out, std::uint8_t* mask, const CallParams& p,
                              const KernelArgs& a) {
  const Threshold th(p.threshold);
  const std::int64_t nchunks = a.n / V;
  chunk_loop<kUnroll, RunChunk<T, V>>(in, out, mask, p, th, a, nchunks);
  const std::int64_t i = nchunks * V + static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < a.n) {
    std::uint64_t unused = 0;
    scalar_element(in, out, mask, i, p.base + locate<false>(a.map, static_cast<std::uint64_t>(i), &unused), p,
                   th);
  }
}

template <class T, int V>
CULAYERS_GLOBAL void __launch_bounds__(kThreads, kBlocksPerSm)
    dropout_run_kernel(const T* in, T* out, std::uint8_t* mask, DropoutState* state,
                       const __grid_constant__ KernelArgs a) {
  run_body<T, V>(in, out, mask, read_call(state, a), a);
}

// ---- generic path ------------------------------------------------------------------------------------

template <class T, bool kWide>
CULAYERS_DEVICE void generic_body(const T* in, T* out, std::uint8_t* mask, const CallParams& p,
                                  const KernelArgs& a) {
  const Threshold th(p.threshold);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.n;
       i += stride) {
    std::uint64_t unused = 0;
    scalar_element(in, out, mask, i, p.base + locate<kWide>(a.map, static_cast<std::uint64_t>(i), &unused), p,
                   th);
  }
}

template <class T, bool kWide>
CULAYERS_GLOBAL void __launch_bounds__(kThreads, kBlocksPerSm)
    dropout_generic_kernel(const T* in, T* out, std::uint8_t* mask, DropoutState* state,
                           const __grid_constant__ KernelArgs a) {
  generic_body<T, kWide>(in, out, mask, read_call(state, a), a);
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
