// Forward masked-reduction kernels (narrow, wide/split, combine) and their per-dtype launcher; each
// forward_<dtype>.cu instantiates launch_forward<T> once so the three dtypes compile in parallel.
//
// Determinism: every accumulator sees its elements in a fixed order (increasing r per thread), partials
// merge in an order fixed by the launch layout (shared-memory tree over the block's R lanes, butterfly
// over lane groups; in the combine kernel, runs of consecutive chunks in increasing r, then the runs in
// order), and no float atomics are used, so the same arguments on the same device give the same bits.
// Which block runs which item does not matter.
#pragma once

#include "kernels/masked/masked_reduce_device.cuh"

#include <cstdint>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace masked {

/// One thread's partial for N columns, as staged in shared memory by the wide kernel's tree.
template <AccKind K, int N>
struct Slot {
  typename AccTraits<K>::State a[N];
  std::int32_t cnt;
};
static_assert(sizeof(Slot<AccKind::kMoments, 8>) == 8 * acc_bytes(AccKind::kMoments) + 4, "slot layout");
static_assert(sizeof(Slot<AccKind::kMax, 4>) == 4 * acc_bytes(AccKind::kMax) + 4, "slot layout");
static_assert(sizeof(Slot<AccKind::kSum, 2>) == 2 * acc_bytes(AccKind::kSum) + 4, "slot layout");

/// Pushes one step (the N column values of step r) into the thread's accumulators; `cnt` is the
/// thread's valid-step count including this step. Moments share one reciprocal 1 / cnt across the N
/// columns (every column of a thread sees the same steps, so their Welford counts are equal): one MUFU
/// per step instead of N, and no per-column count register (the caller stores cnt into .count once the
/// thread's steps are done).
template <class T, AccKind K, int N>
CULAYERS_DEVICE void push_step(typename AccTraits<K>::State (&acc)[N], const Vec<T, N>& v, std::uint32_t r,
                               std::int32_t cnt) {
  if constexpr (K == AccKind::kMoments) {
    // __fdividef (2 ulp) for the reason given at AccTraits<kMoments>.
    const float inv = __fdividef(1.0f, static_cast<float>(cnt));
    CULAYERS_PRAGMA_UNROLL
    for (int j = 0; j < N; ++j) {
      const float x = to_float(v[j]);
      const float delta = x - acc[j].mean;
      acc[j].mean = welford_next_mean(acc[j].mean, delta, x, inv);
      acc[j].m2 += delta * (x - acc[j].mean);
    }
  } else {
    CULAYERS_PRAGMA_UNROLL
    for (int j = 0; j < N; ++j) {
      AccTraits<K>::push(acc[j], to_float(v[j]), static_cast<std::int32_t>(r));
    }
  }
}

/// Loads in flight per thread of the wide kernel: kUnroll, except for 16-bit moments with 8 columns per
/// thread, whose 16 accumulator registers (mean + m2 per column) leave no room for 4 x 4 registers of
/// loads under the 64-register bound (ptxas spilled 12-52 bytes in bf16); 3 loads of 16 B at 1024
/// resident threads are still 48 KB in flight per SM, 2.7x the ~18 KB Little's law asks for. 16-bit
/// max/min hold 16 too (value + index) but their two-compare update (ExtremumTraits::push) leaves room
/// for 4 loads: 64 registers in bf16 on sm_90, no spill on sm_80-90 (they ran 3 before that update).
template <class T, AccKind K, int N>
constexpr int wide_unroll() {
  return (K == AccKind::kMoments && N == 8 && sizeof(T) == 2) ? kUnroll - 1 : kUnroll;
}

/// Accumulates steps r = first, first + stride, ... < end of the N columns at `xcol` (x + row base +
/// column) into acc; `flags` (a mask tile, indexed by r - flag_base) gates each step when kMasked.
/// wide_unroll() loads are issued before any is consumed. Moments leave acc[j].count alone (see push_step).
/// Max/min with kMasked record the thread's first valid step in first_valid (for finish); without a
/// mask it is the walk's first step, which the caller knows.
/// Steps are 32-bit unsigned (r < R < 2^31 and r + kUnroll x stride < 2^32 never wraps) and the row pointer
/// advances by a precomputed stride: fewer 64-bit registers in the unrolled loop.
template <class T, AccKind K, int N, bool kMasked>
CULAYERS_DEVICE void accumulate_steps(const T* xcol, std::int64_t inner, std::uint32_t first,
                                      std::uint32_t end, std::uint32_t stride, const std::uint8_t* flags,
                                      std::uint32_t flag_base, typename AccTraits<K>::State (&acc)[N],
                                      std::int32_t& cnt, std::uint32_t& first_valid) {
  constexpr bool kTrackFirst = kMasked && (K == AccKind::kMax || K == AccKind::kMin);
  const std::int64_t step = static_cast<std::int64_t>(stride) * inner;
  const T* ptr = xcol + static_cast<std::int64_t>(first) * inner;
  constexpr int kU = wide_unroll<T, K, N>();
  std::uint32_t r = first;
  for (; r + (kU - 1) * stride < end; r += kU * stride, ptr += kU * step) {
    bool f[kU];
    Vec<T, N> v[kU];
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kU; ++u) {
      f[u] = !kMasked || flags[r + u * stride - flag_base] != 0;
    }
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kU; ++u) {
      if (f[u]) {
        v[u] = load_vec<N, CacheHint::kStreaming>(ptr + u * step);
      } else {
        v[u] = Vec<T, N>{};
      }
    }
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kU; ++u) {
      if (f[u]) {
        ++cnt;
        if constexpr (kTrackFirst) {
          first_valid = cnt == 1 ? r + u * stride : first_valid;
        }
        push_step<T, K, N>(acc, v[u], r + u * stride, cnt);
      }
    }
  }
  for (; r < end; r += stride, ptr += step) {
    if (!kMasked || flags[r - flag_base] != 0) {
      const Vec<T, N> v = load_vec<N, CacheHint::kStreaming>(ptr);
      ++cnt;
      if constexpr (kTrackFirst) {
        first_valid = cnt == 1 ? r : first_valid;
      }
      push_step<T, K, N>(acc, v, r, cnt);
    }
  }
}

/// Wide and split paths. Block = tx column vectors x ty lanes of R (threads beyond tx * ty only help with
/// the mask tiles and barriers). Item = (outer row o, column block cb, chunk s of R); the grid strides
/// over items. Each thread walks its steps of the chunk, the ty partials of a column merge through a
/// shared-memory tree (lower lane first), and lane 0 writes the final outputs (wide path) or the
/// chunk's partial (split path: p.partials, combined by combine_kernel).
/// Mask tiles are double-buffered: the next tile's bytes are loaded into registers before the current
/// tile's steps and stored into the other buffer after them, one barrier per tile.
/// Dynamic shared memory: blockDim.x Slots, 2 x kMaskTile mask flags, one int64 (the row's length).
template <class T, AccKind K, int N>
CULAYERS_GLOBAL void __launch_bounds__(kWideMaxThreads, kWideMinBlocks) wide_kernel(const ForwardParams p) {
  allow_dependent_launch(); // split path: combine_kernel follows
  using Tr = AccTraits<K>;
  using State = typename Tr::State;
  using SlotT = Slot<K, N>;
  CULAYERS_DYNAMIC_SMEM(unsigned char, smem);
  const int threads = static_cast<int>(blockDim.x);
  SlotT* slots = reinterpret_cast<SlotT*>(smem);
  std::uint8_t* flags = smem + static_cast<std::size_t>(threads) * sizeof(SlotT);
  // The row length after the flags, 8-byte aligned (the host sizes the buffer the same way).
  const std::size_t slot_bytes = static_cast<std::size_t>(threads) * sizeof(SlotT);
  std::int64_t* row_length = reinterpret_cast<std::int64_t*>(smem + (slot_bytes + 7) / 8 * 8 + 2 * kMaskTile);
  // Steps per mask tile: every thread loads at most kMaskLoadsPerThread bytes of the next tile.
  const int tile = threads * kMaskLoadsPerThread < kMaskTile ? threads * kMaskLoadsPerThread : kMaskTile;

  const T* x = static_cast<const T*>(p.x);
  const int tid = static_cast<int>(threadIdx.x);
  const int cx = tid % p.tx;
  const int cy = tid / p.tx;
  const bool in_layout = cy < p.ty;
  const std::int64_t vecs = p.inner / N;
  const std::int64_t items = p.outer * p.col_blocks * p.splits;
  int levels_half = 1;
  while (levels_half < p.ty) {
    levels_half *= 2;
  }
  levels_half /= 2; // largest power of two below ty (0 when ty == 1)

  for (std::int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const std::int64_t s = item % p.splits;
    const std::int64_t rest = item / p.splits;
    const std::int64_t cb = rest % p.col_blocks;
    const std::int64_t o = rest / p.col_blocks;
    const std::int64_t v = cb * p.tx + cx;
    const bool active = in_layout && v < vecs;
    const std::int64_t col = v * N;
    // Steps of R as 32-bit unsigned values: R < 2^31, so r_begin + rows_per_split < 2^32.
    const std::uint32_t reduce = static_cast<std::uint32_t>(p.reduce);
    const std::uint32_t r_begin =
        static_cast<std::uint32_t>(s) * static_cast<std::uint32_t>(p.rows_per_split);
    std::uint32_t r_end = r_begin + static_cast<std::uint32_t>(p.rows_per_split);
    r_end = r_end < reduce ? r_end : reduce;

    if (p.validity == kValidLengths) {
      if (tid == 0) {
        *row_length = read_length(p.lengths, p.length_errors, o, p.reduce, cb == 0 && s == 0);
      }
      __syncthreads();
      const std::uint32_t len = static_cast<std::uint32_t>(*row_length);
      r_end = r_end < len ? r_end : len;
    }

    State acc[N];
    CULAYERS_PRAGMA_UNROLL
    for (int j = 0; j < N; ++j) {
      acc[j] = Tr::empty();
    }
    std::int32_t cnt = 0;
    std::uint32_t first_valid = r_begin + static_cast<std::uint32_t>(cy); // max/min: see finish
    const T* xcol = x + o * p.reduce * p.inner + col;
    if (p.validity == kValidMask) {
      const std::uint8_t* mask_row = p.mask + o * p.reduce;
      static_assert(kMaskLoadsPerThread <= 4, "the next tile's bytes are packed into one 32-bit register");
      std::uint32_t next = 0;
      // Loads the mask bytes of the tile at t0 that this thread stages (byte k of `next`: tile index
      // tid + k x threads).
      auto fetch = [&](std::uint32_t t0) {
        next = 0;
        CULAYERS_PRAGMA_UNROLL
        for (int k = 0; k < kMaskLoadsPerThread; ++k) {
          const std::uint32_t i = static_cast<std::uint32_t>(tid + k * threads);
          if (i < static_cast<std::uint32_t>(tile) && t0 + i < r_end) {
            next |= static_cast<std::uint32_t>(load<CacheHint::kReadOnly>(mask_row + t0 + i)) << (8 * k);
          }
        }
      };
      auto stage = [&](std::uint8_t* buf) {
        CULAYERS_PRAGMA_UNROLL
        for (int k = 0; k < kMaskLoadsPerThread; ++k) {
          const int i = tid + k * threads;
          if (i < tile) {
            buf[i] = static_cast<std::uint8_t>(next >> (8 * k));
          }
        }
      };
      int cur = 0;
      if (r_begin < r_end) {
        fetch(r_begin);
        stage(flags);
      }
      __syncthreads();
      for (std::uint32_t t0 = r_begin; t0 < r_end; t0 += tile) {
        const std::uint32_t tile_end = t0 + tile < r_end ? t0 + tile : r_end;
        const bool more = tile_end < r_end;
        if (more) {
          fetch(tile_end); // in flight while this tile's x loads are
        }
        if (active) {
          accumulate_steps<T, K, N, true>(xcol, p.inner, t0 + cy, tile_end, static_cast<std::uint32_t>(p.ty),
                                          flags + cur * kMaskTile, t0, acc, cnt, first_valid);
        }
        if (more) {
          stage(flags + (1 - cur) * kMaskTile); // last read before the previous barrier
        }
        __syncthreads();
        cur = 1 - cur;
      }
    } else if (active) {
      accumulate_steps<T, K, N, false>(xcol, p.inner, r_begin + cy, r_end, static_cast<std::uint32_t>(p.ty),
                                       nullptr, 0u, acc, cnt, first_valid);
    }
    if constexpr (K == AccKind::kMax || K == AccKind::kMin) {
      CULAYERS_PRAGMA_UNROLL
      for (int j = 0; j < N; ++j) {
        Tr::finish(acc[j], cnt, static_cast<std::int32_t>(first_valid));
      }
    }
    if constexpr (K == AccKind::kMoments) {
      CULAYERS_PRAGMA_UNROLL
      for (int j = 0; j < N; ++j) {
        acc[j].count = static_cast<float>(cnt);
      }
    }

    // Merge the ty partials of each column: level h merges lane cy + h into lane cy for cy < h.
    if (levels_half > 0) {
      if (in_layout) {
        CULAYERS_PRAGMA_UNROLL
        for (int j = 0; j < N; ++j) {
          slots[tid].a[j] = acc[j];
        }
        slots[tid].cnt = cnt;
      }
      __syncthreads();
      for (int half = levels_half; half >= 1; half /= 2) {
        if (in_layout && cy < half && cy + half < p.ty) {
          const SlotT& other = slots[tid + half * p.tx];
          CULAYERS_PRAGMA_UNROLL
          for (int j = 0; j < N; ++j) {
            acc[j] = Tr::merge(acc[j], other.a[j]);
            slots[tid].a[j] = acc[j];
          }
          cnt += other.cnt;
          slots[tid].cnt = cnt;
        }
        __syncthreads();
      }
    }

    if (active && cy == 0) {
      if (!p.partials) {
        write_outputs<T, K, N>(p, o, col, acc, cnt);
        if (cb == 0 && cx == 0 && p.counts != nullptr) {
          store(p.counts + o, cnt);
        }
      } else {
        const std::int64_t at = (o * p.splits + s) * p.inner + col;
        Array<float, N> a;
        if constexpr (K == AccKind::kSum) {
          CULAYERS_PRAGMA_UNROLL
          for (int j = 0; j < N; ++j) {
            a[j] = acc[j].s;
          }
        } else if constexpr (K == AccKind::kMoments) {
          Array<float, N> b;
          CULAYERS_PRAGMA_UNROLL
          for (int j = 0; j < N; ++j) {
            a[j] = acc[j].mean;
            b[j] = acc[j].m2;
          }
          store_span<N>(p.part_b + at, b, true);
        } else {
          Array<std::int32_t, N> idx;
          CULAYERS_PRAGMA_UNROLL
          for (int j = 0; j < N; ++j) {
            a[j] = acc[j].v;
            idx[j] = acc[j].idx;
          }
          store_span<N>(p.part_idx + at, idx, true);
        }
        store_span<N>(p.part_a + at, a, true);
        if (cb == 0 && cx == 0) {
          store(p.part_count + o * p.splits + s, cnt);
        }
      }
    }
    __syncthreads(); // shared memory (slots, row length) is reused by the next item
  }
}

/// Split path, second kernel: merges every outer row's chunk partials column by column and writes the final
/// outputs. A block takes kCombineCols columns of one row (items = outer x column blocks, grid-strided) with
/// kCombineLanes lanes per column: lane q merges the q-th run of ceil(splits / kCombineLanes) consecutive
/// chunks in increasing r, then lane 0 merges the lanes' results in q order through shared memory. The
/// serial chain per thread is splits / kCombineLanes + kCombineLanes merges instead of splits, and the
/// order depends on the split count alone, so the result is deterministic. No dynamic shared memory.
template <class T, AccKind K>
CULAYERS_GLOBAL void __launch_bounds__(kCombineThreads) combine_kernel(const ForwardParams p) {
  static_assert(kCombineCols == kWarpSize, "a combine lane is one warp");
  grid_dependency_wait(); // launched dependent on wide_kernel, whose partials it reads
  using Tr = AccTraits<K>;
  using State = typename Tr::State;
  __shared__ State lane_acc[kCombineLanes][kCombineCols];
  __shared__ std::int32_t lane_cnt[kCombineLanes][kCombineCols];
  const int cx = static_cast<int>(threadIdx.x) % kCombineCols;
  const int q = static_cast<int>(threadIdx.x) / kCombineCols;
  const std::int64_t col_blocks = (p.inner + kCombineCols - 1) / kCombineCols;
  const std::int64_t run = (p.splits + kCombineLanes - 1) / kCombineLanes;
  const std::int64_t s_begin = q * run < p.splits ? q * run : p.splits;
  const std::int64_t s_end = s_begin + run < p.splits ? s_begin + run : p.splits;
  for (std::int64_t item = blockIdx.x; item < p.outer * col_blocks; item += gridDim.x) {
    const std::int64_t o = item / col_blocks;
    const std::int64_t col = (item % col_blocks) * kCombineCols + cx;
    State acc = Tr::empty();
    std::int32_t cnt = 0;
    // Warp q is lane q of all 32 columns: every thread of it walks the same chunks, so lane 0 (whose column
    // always exists) reads each chunk's count once and shuffles it to the others. kUnroll chunks are
    // loaded before any is merged (merged in increasing s, as before).
    for (std::int64_t s0 = s_begin; s0 < s_end; s0 += kUnroll) {
      std::int32_t c[kUnroll];
      float va[kUnroll];
      float vb[kUnroll];
      std::int32_t vi[kUnroll];
      CULAYERS_PRAGMA_UNROLL
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t s = s0 + u;
        c[u] = 0;
        va[u] = 0.0f;
        vb[u] = 0.0f;
        vi[u] = -1;
        if (s < s_end) {
          if (cx == 0) {
            c[u] = load(p.part_count + o * p.splits + s);
          }
          if (col < p.inner) {
            const std::int64_t at = (o * p.splits + s) * p.inner + col;
            va[u] = load(p.part_a + at);
            if constexpr (K == AccKind::kMoments) {
              vb[u] = load(p.part_b + at);
            } else if constexpr (K == AccKind::kMax || K == AccKind::kMin) {
              vi[u] = load(p.part_idx + at);
            }
          }
        }
      }
      CULAYERS_PRAGMA_UNROLL
      for (int u = 0; u < kUnroll; ++u) {
        c[u] = __shfl_sync(kFullMask, c[u], 0);
      }
      if (col < p.inner) {
        CULAYERS_PRAGMA_UNROLL
        for (int u = 0; u < kUnroll; ++u) {
          if (s0 + u < s_end) {
            State part;
            if constexpr (K == AccKind::kSum) {
              part = State{va[u]};
            } else if constexpr (K == AccKind::kMoments) {
              part = Welford{va[u], vb[u], static_cast<float>(c[u])};
            } else {
              part = State{va[u], vi[u]};
            }
            acc = Tr::merge(acc, part);
            cnt += c[u];
          }
        }
      }
    }
    lane_acc[q][cx] = acc;
    lane_cnt[q][cx] = cnt;
    __syncthreads();
    if (q == 0 && col < p.inner) {
      State total[1] = {lane_acc[0][cx]};
      std::int32_t n = lane_cnt[0][cx];
      for (int k = 1; k < kCombineLanes; ++k) {
        total[0] = Tr::merge(total[0], lane_acc[k][cx]);
        n += lane_cnt[k][cx];
      }
      write_outputs<T, K, 1>(p, o, col, total, n);
      if (col == 0 && p.counts != nullptr) {
        store(p.counts + o, n);
      }
    }
    __syncthreads(); // lane_acc and lane_cnt are reused by the next item
  }
}

/// Narrow path: one warp per outer row (the grid strides over rows). The 32 lanes form tx groups (a power
/// of two) of `inner` lanes; lane (g, c) owns column c and steps r = g * N + k * tx * N (+ N - 1), so a
/// warp reads tx * N consecutive steps (contiguous memory) at a time. N > 1 only when inner == 1 (a
/// lane's vector then holds N consecutive steps of the one column). Groups merge with a butterfly of
/// shfl_down (lower group first) and group 0 writes the outputs.
// The minimum of 1 block per SM lifts ptxas's default register target, under which the moments variants
// spilled a few bytes; they use at most 69 registers (bf16 sum, N = 8, sm_90; 60 on sm_80 / sm_86; the
// planner's budget is 80), so 3 blocks of 256 share an SM (the 3/4 of kNarrowResidentNum /
// kNarrowResidentDen).
template <class T, AccKind K, int N>
CULAYERS_GLOBAL void __launch_bounds__(kNarrowThreads, 1) narrow_kernel(const ForwardParams p) {
  using Tr = AccTraits<K>;
  using State = typename Tr::State;
  const T* x = static_cast<const T*>(p.x);
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int inner = static_cast<int>(p.inner);
  const int groups = p.tx;
  const int g = lane / inner;
  const int c = lane % inner;
  const bool lane_in = g < groups;
  const int mask_src = lane_in ? g * inner : lane; // the lane of this group that reads the mask byte
  const std::int64_t warps_per_block = blockDim.x / kWarpSize;
  const std::int64_t first_row =
      static_cast<std::int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / kWarpSize;
  const std::int64_t row_stride = static_cast<std::int64_t>(gridDim.x) * warps_per_block;
  const std::int64_t step_rows = static_cast<std::int64_t>(groups) * N;
  // Mask rows whose N-step pieces are N-byte aligned are read N bytes at a time; a misaligned mask view one
  // byte at a time. (The planner takes N > 1 only when R is a multiple of N; the kernel checks it too.)
  const bool mask_vectors = N > 1 && p.validity == kValidMask && p.reduce % N == 0 &&
                            reinterpret_cast<std::uintptr_t>(p.mask) % N == 0;

  for (std::int64_t o = first_row; o < p.outer; o += row_stride) {
    std::int64_t r_end = p.reduce;
    if (p.validity == kValidLengths) {
      std::int64_t len = 0;
      if (lane == 0) {
        len = read_length(p.lengths, p.length_errors, o, p.reduce, true);
      }
      r_end = __shfl_sync(kFullMask, len, 0);
    }
    const T* xrow = x + o * p.reduce * p.inner;
    const std::uint8_t* mask_row = p.validity == kValidMask ? p.mask + o * p.reduce : nullptr;
    State acc = Tr::empty();
    std::int32_t cnt = 0;
    std::int32_t first_valid = 0; // max/min: the lane's first valid step, see ExtremumTraits::finish
    // r_end is warp-uniform, so every lane runs the same iterations (the mask shuffle needs all lanes).
    for (std::int64_t r0 = 0; r0 < r_end; r0 += kUnroll * step_rows) {
      bool f[kUnroll][N];
      Vec<T, N> v[kUnroll];
      CULAYERS_PRAGMA_UNROLL
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t rb = r0 + u * step_rows + static_cast<std::int64_t>(g) * N;
        if (p.validity == kValidMask) {
          if constexpr (N == 1) {
            std::uint32_t m = 0;
            if (lane_in && c == 0 && rb < r_end) {
              m = load<CacheHint::kReadOnly>(mask_row + rb);
            }
            m = __shfl_sync(kFullMask, m, mask_src);
            f[u][0] = lane_in && rb < r_end && m != 0;
          } else if (mask_vectors && lane_in && rb + N <= p.reduce) {
            // The lane's N mask bytes in one access (rb is a multiple of N): one load instruction instead
            // of N one-byte loads, whose warp-wide accesses each touched 8 to 32 sectors for 32 bytes.
            const Vec<std::uint8_t, N> m = load_vec<N, CacheHint::kReadOnly>(mask_row + rb);
            CULAYERS_PRAGMA_UNROLL
            for (int j = 0; j < N; ++j) {
              f[u][j] = rb + j < r_end && m[j] != 0;
            }
          } else {
            CULAYERS_PRAGMA_UNROLL
            for (int j = 0; j < N; ++j) {
              f[u][j] = lane_in && rb + j < r_end && load<CacheHint::kReadOnly>(mask_row + rb + j) != 0;
            }
          }
        } else {
          CULAYERS_PRAGMA_UNROLL
          for (int j = 0; j < N; ++j) {
            f[u][j] = lane_in && rb + j < r_end;
          }
        }
      }
      CULAYERS_PRAGMA_UNROLL
      for (int u = 0; u < kUnroll; ++u) {
        bool any = false;
        CULAYERS_PRAGMA_UNROLL
        for (int j = 0; j < N; ++j) {
          any = any || f[u][j];
        }
        const std::int64_t rb = r0 + u * step_rows + static_cast<std::int64_t>(g) * N;
        if (any) {
          v[u] = load_vec<N, CacheHint::kStreaming>(xrow + rb * inner + c);
        } else {
          v[u] = Vec<T, N>{};
        }
      }
      CULAYERS_PRAGMA_UNROLL
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t rb = r0 + u * step_rows + static_cast<std::int64_t>(g) * N;
        CULAYERS_PRAGMA_UNROLL
        for (int j = 0; j < N; ++j) {
          if (f[u][j]) {
            ++cnt;
            if constexpr (K == AccKind::kMax || K == AccKind::kMin) {
              first_valid = cnt == 1 ? static_cast<std::int32_t>(rb + j) : first_valid;
            }
            if constexpr (K == AccKind::kMoments) {
              // Weighted by the integer count, as push_step does (a float count stops growing at 2^24:
              // a lane with more valid steps gave a wrong variance); .count is set from cnt below.
              const float x = to_float(v[u][j]);
              const float delta = x - acc.mean;
              acc.mean = welford_next_mean(acc.mean, delta, x, __fdividef(1.0f, static_cast<float>(cnt)));
              acc.m2 += delta * (x - acc.mean);
            } else {
              Tr::push(acc, to_float(v[u][j]), static_cast<std::int32_t>(rb + j));
            }
          }
        }
      }
    }
    if constexpr (K == AccKind::kMax || K == AccKind::kMin) {
      Tr::finish(acc, cnt, first_valid);
    }
    if constexpr (K == AccKind::kMoments) {
      acc.count = static_cast<float>(cnt);
    }
    // Butterfly over groups: group g merges group g + half (same column, interleaved steps) as the left
    // operand; the order depends only on the layout, so the bits are reproducible.
    for (int half = groups / 2; half >= 1; half /= 2) {
      const State other = Tr::shfl_down(acc, static_cast<unsigned>(half * inner));
      const std::int32_t other_cnt = __shfl_down_sync(kFullMask, cnt, static_cast<unsigned>(half * inner));
      if (g < half) {
        acc = Tr::merge(acc, other);
        cnt += other_cnt;
      }
    }
    if (lane < inner) {
      const State out[1] = {acc};
      write_outputs<T, K, 1>(p, o, c, out, cnt);
      if (lane == 0 && p.counts != nullptr) {
        store(p.counts + o, cnt);
      }
    }
  }
}

template <class T, AccKind K, int N>
Status launch_forward_n(const ForwardLaunch& l, const ForwardParams& p, cudaStream_t stream) {
  const char* op = "masked_reduce";
  if (l.path == masked_reduce::Path::kNarrow) {
    return check_launch(
        CULAYERS_LAUNCH((narrow_kernel<T, K, N>), dim3(l.grid), dim3(l.threads), 0, stream, p), op);
  }
  Status st = check_launch(
      CULAYERS_LAUNCH((wide_kernel<T, K, N>), dim3(l.grid), dim3(l.threads), l.smem, stream, p), op);
  if (!ok(st) || l.path != masked_reduce::Path::kSplit) {
    return st;
  }
  return check_launch(CULAYERS_LAUNCH_DEPENDENT((combine_kernel<T, K>), dim3(l.combine_grid),
                                                dim3(kCombineThreads), l.combine_smem, stream, p),
                      op);
}

template <class T, AccKind K>
Status launch_forward_kind(const ForwardLaunch& l, const ForwardParams& p, cudaStream_t stream) {
  constexpr int kMaxVec = static_cast<int>(16 / sizeof(T));
  switch (l.vec) {
  case 1:
    return launch_forward_n<T, K, 1>(l, p, stream);
  case 2:
    return launch_forward_n<T, K, 2>(l, p, stream);
  case 4:
    return launch_forward_n<T, K, 4>(l, p, stream);
  default:
    if constexpr (kMaxVec >= 8) {
      if (l.vec == 8) {
        return launch_forward_n<T, K, 8>(l, p, stream);
      }
    }
    return ::culayers::detail::set_error(Status::kErrorInternal,
                                         "masked_reduce: vector width %d not instantiated", l.vec);
  }
}

template <class T>
Status launch_forward(AccKind kind, const ForwardLaunch& l, const ForwardParams& p, cudaStream_t stream) {
  switch (kind) {
  case AccKind::kSum:
    return launch_forward_kind<T, AccKind::kSum>(l, p, stream);
  case AccKind::kMax:
    return launch_forward_kind<T, AccKind::kMax>(l, p, stream);
  case AccKind::kMin:
    return launch_forward_kind<T, AccKind::kMin>(l, p, stream);
  case AccKind::kMoments:
    return launch_forward_kind<T, AccKind::kMoments>(l, p, stream);
  }
  return ::culayers::detail::set_error(Status::kErrorInternal, "masked_reduce: unknown accumulator %d",
                                       static_cast<int>(kind));
}

} // namespace masked
} // namespace kernels
CULAYERS_NAMESPACE_END
