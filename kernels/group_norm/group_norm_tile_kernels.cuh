// Group normalization, tile path (channels last): kernels that read whole rows of a sample, all its groups
// at once, instead of one group's C/G-channel slice of each row.
//
// Why: channels last, a group's slice of a row is C/G channels (16 bytes of a 512-byte row for bf16 with
// C/G = 8, 8 bytes for the VAE's C/G = 4). The per-group paths fetch those slivers one request per row
// and group; the H100 profile measured the shape-3 block path at 18 % of DRAM bandwidth and the VAE split
// path far below its byte bound. Here a sample [spatial, C] is cut into tiles of consecutive rows, and a
// tile is one contiguous range of memory: every warp reads whole 16-byte-vector runs of it.
//
// Geometry (the host fills Geometry for this path): geo.tx = V = C / N column vectors of a full row (one
// thread each, V <= kTileMaxThreads), geo.ty = k rows walked at once (block = V x k threads), geo.colvecs =
// C/G / N vectors per group (a vector never straddles two groups: N divides C/G), geo.chunk = rows per
// tile, geo.splits = T tiles per sample. Unit u = (n, t), n = u / T. Thread (ix, iy) = (tid % V, tid / V)
// owns column vector ix (channels ix * N .. ix * N + N - 1, group ix / (C/G / N)) for rows r0 + iy,
// r0 + iy + k, ... of its tile, so its group and affine parameters are fixed for the whole tile.
//
// Forward: forward_tile_stats_kernel writes a Welford partial per (n, g, t); forward_tile_merge_kernel
// (group_norm_api.cu, a warp per group) merges a group's T partials in a fixed order (lane l: tiles l,
// l + 32, ...; then a butterfly) and writes mean / rstd (to the caller's buffers and the workspace);
// forward_tile_normalize_kernel reads x again and writes y. x is read twice (x, then x + y: the split
// path's count), but in whole rows, with the whole GPU busy whatever N and G are.
//
// Backward: backward_tile_sums_kernel writes per (n, g, t) (sum g, sum g * xhat, valid elements) and per
// (n, t) the per-channel dgamma / dbeta partials; backward_tile_merge_kernel adds a group's T triples in
// the same fixed order; backward_tile_dx_kernel reads x and dy again and writes dx, and its first
// ceil(C / 8) blocks sum dgamma / dbeta from the per-channel partials (rows = N * T) meanwhile.
//
// Reductions inside a block: a fixed tree over the k thread rows in shared memory, then the group's
// C/G / N lanes merged in lane order by the group's first lane. Deterministic; no atomics.
#pragma once

#include "kernels/group_norm/group_norm_device.cuh"
#include "kernels/group_norm/group_norm_internal.cuh"

#include <cstdint>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace group_norm {

/// Tile `t` of sample `n`: its rows and the element offset of its first row.
struct TileUnit {
  std::int64_t n;
  std::int64_t t;
  std::int64_t r0, r1;
  std::int64_t base; // element offset of (n, r0, channel 0)
};

CULAYERS_DEVICE TileUnit make_tile_unit(const Geometry& geo, std::int64_t u) {
  // 32-bit division: the host keeps N * T below 2^31.
  const auto u32 = static_cast<std::uint32_t>(u);
  const auto tiles = static_cast<std::uint32_t>(geo.splits);
  TileUnit un;
  un.n = u32 / tiles;
  un.t = u32 - static_cast<std::uint32_t>(un.n) * tiles;
  un.r0 = un.t * geo.chunk;
  un.r1 = un.r0 + geo.chunk < geo.rows ? un.r0 + geo.chunk : geo.rows;
  un.base = un.n * geo.n_stride + un.r0 * geo.row_stride;
  return un;
}

/// Visits this thread's rows of the tile (r = rows relative to the tile's first row; walk_strided).
template <class Load, class Use>
CULAYERS_DEVICE void visit_tile_rows(const Geometry& geo, const TileUnit& un, int iy, Load&& load,
                                     Use&& use) {
  walk_strided(iy, un.r1 - un.r0, geo.ty, load, use);
}

/// Sums `kCount` floats per thread over the block's k thread rows in a fixed tree (row i takes row i + s
/// for s = pow2_ceil(k) / 2, ..., 1); afterwards row 0 of `buf` ([threads][kCount], thread-major) holds
/// each column's totals. Every thread of the block calls it; ends with a barrier.
template <int kCount, class Combine>
CULAYERS_DEVICE void tile_row_tree(float* buf, int ix, int iy, int V, int k, Combine&& combine) {
  int span = 1;
  while (span < k) {
    span *= 2;
  }
  __syncthreads();
  for (int s = span / 2; s >= 1; s /= 2) {
    if (iy < s && iy + s < k) {
      combine(buf + static_cast<std::size_t>(iy * V + ix) * kCount,
              buf + static_cast<std::size_t>((iy + s) * V + ix) * kCount);
    }
    __syncthreads();
  }
}

/// gamma and beta of channels c0 .. c0 + N - 1 (1 and 0 when absent).
template <int N>
CULAYERS_DEVICE void tile_affine(const float* gamma, const float* beta, std::int64_t c0, float (&gam)[N],
                                 float (&bet)[N]) {
  CULAYERS_PRAGMA_UNROLL
  for (int j = 0; j < N; ++j) {
    gam[j] = gamma != nullptr ? load<CacheHint::kReadOnly>(gamma + c0 + j) : 1.0f;
    bet[j] = beta != nullptr ? load<CacheHint::kReadOnly>(beta + c0 + j) : 0.0f;
  }
}

// ---- forward ---------------------------------------------------------------------------------------------

/// Kernel 1: a block per tile; a Welford partial per (n, g, t).
template <class T, int N>
CULAYERS_GLOBAL void __launch_bounds__(kTileMaxThreads, 1) forward_tile_stats_kernel(const ForwardParams p) {
  allow_dependent_launch(); // forward_tile_merge_kernel follows
  CULAYERS_DYNAMIC_SMEM(float, smem);
  const Geometry& geo = p.geo;
  const int tid = static_cast<int>(threadIdx.x);
  const int V = geo.tx;
  const int k = geo.ty;
  const int ix = tid % V;
  const int iy = tid / V;
  const int vpg = static_cast<int>(geo.colvecs);
  const std::int64_t units = geo.batch * geo.splits;
  const T* x = static_cast<const T*>(p.x);
  for (std::int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const TileUnit un = make_tile_unit(geo, u);
    // Offsets, not pointers, until a row exists: an empty tensor may come with null x and mask.
    const std::int64_t off = un.base + static_cast<std::int64_t>(ix) * N;
    const std::int64_t moff = un.n * geo.spatial + un.r0;
    Welford w{};
    visit_tile_rows(
        geo, un, iy,
        [&](std::int64_t r) {
          return load_vec<N>(x + off + r * geo.row_stride); // default policy: tile_normalize reads it again
        },
        [&](std::int64_t r, const Vec<T, N>& v) {
          if (p.mask == nullptr || load<CacheHint::kReadOnly>(p.mask + moff + r) != 0) {
            float f[N];
            to_floats(v, f);
            push_vec(w, f);
          }
        });
    float* mine = smem + static_cast<std::size_t>(tid) * 3;
    mine[0] = w.mean;
    mine[1] = w.m2;
    mine[2] = w.count;
    tile_row_tree<3>(smem, ix, iy, V, k, [](float* a, const float* b) {
      const Welford m = welford_merge<true>(Welford{a[0], a[1], a[2]}, Welford{b[0], b[1], b[2]});
      a[0] = m.mean;
      a[1] = m.m2;
      a[2] = m.count;
    });
    if (iy == 0 && ix % vpg == 0) {
      Welford g{};
      for (int l = 0; l < vpg; ++l) {
        const float* s = smem + static_cast<std::size_t>(ix + l) * 3;
        g = welford_merge<true>(g, Welford{s[0], s[1], s[2]});
      }
      const std::int64_t ng = un.n * geo.groups + ix / vpg;
      float* part = p.partials + 3 * group_partial_slot(geo, ng, un.t);
      store(part + 0, g.mean);
      store(part + 1, g.m2);
      store(part + 2, g.count);
    }
    __syncthreads(); // smem is rewritten by the next tile
  }
}

// Kernel 2 (forward_tile_merge_kernel, group_norm_api.cu: the same for every dtype) merges a group's
// partials; see launch_tile_merge.

/// Kernel 3: a block per tile normalizes it with its groups' statistics; tiles last first (see "Second
/// passes" in group_norm_internal.cuh).
template <class T, int N>
CULAYERS_GLOBAL void __launch_bounds__(kTileMaxThreads, 1)
    forward_tile_normalize_kernel(const ForwardParams p) {
  grid_dependency_wait(); // a dependent launch after forward_tile_merge_kernel
  const Geometry& geo = p.geo;
  const int tid = static_cast<int>(threadIdx.x);
  const int V = geo.tx;
  const int ix = tid % V;
  const int iy = tid / V;
  const int vpg = static_cast<int>(geo.colvecs);
  const std::int64_t units = geo.batch * geo.splits;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const std::int64_t c0 = static_cast<std::int64_t>(ix) * N;
  for (std::int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const TileUnit un = make_tile_unit(geo, units - 1 - u);
    const std::int64_t ng = un.n * geo.groups + ix / vpg;
    const float mean = load(p.stats + 2 * ng + 0);
    const float rstd = load(p.stats + 2 * ng + 1);
    // gamma is only needed for the scale: loaded per tile (from cache) instead of held in registers.
    float scale[N];
    float bet[N];
    CULAYERS_PRAGMA_UNROLL
    for (int j = 0; j < N; ++j) {
      scale[j] = (p.gamma != nullptr ? load<CacheHint::kReadOnly>(p.gamma + c0 + j) : 1.0f) * rstd;
      bet[j] = p.beta != nullptr ? load<CacheHint::kReadOnly>(p.beta + c0 + j) : 0.0f;
    }
    const std::int64_t off = un.base + c0;
    visit_tile_rows(
        geo, un, iy,
        [&](std::int64_t r) { return load_vec<N, CacheHint::kStreaming>(x + off + r * geo.row_stride); },
        [&](std::int64_t r, const Vec<T, N>& v) {
          store_vec<N, CacheHint::kStreaming>(y + off + r * geo.row_stride,
                                              normalize_vec<T, N>(v, mean, scale, bet, p.act));
        });
  }
}

// ---- backward --------------------------------------------------------------------------------------------

/// Floats per thread in the backward sums' tree: sum g, sum g * xhat, valid rows, then N dgamma and N dbeta
/// partials (tile_backward_smem).
template <int N>
constexpr int kTileBackwardFloats = 3 + 2 * N;

/// Backward kernel 1: a block per tile writes (sum g, sum g * xhat, valid elements) per (n, g, t) and,
/// when dgamma / dbeta are wanted, the tile's per-channel partials as row n * T + t of channel_partials.
template <class T, int N>
CULAYERS_GLOBAL void __launch_bounds__(kTileMaxThreads, 1) backward_tile_sums_kernel(const BackwardParams p) {
  allow_dependent_launch(); // backward_tile_merge_kernel follows
  CULAYERS_DYNAMIC_SMEM(float, smem);
  constexpr int kF = kTileBackwardFloats<N>;
  const Geometry& geo = p.geo;
  const int tid = static_cast<int>(threadIdx.x);
  const int V = geo.tx;
  const int k = geo.ty;
  const int ix = tid % V;
  const int iy = tid / V;
  const int vpg = static_cast<int>(geo.colvecs);
  const std::int64_t units = geo.batch * geo.splits;
  const std::int64_t partial_rows = geo.batch * geo.splits;
  const T* x = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  const std::int64_t c0 = static_cast<std::int64_t>(ix) * N;
  float gam[N];
  float bet[N];
  tile_affine(p.gamma, p.beta, c0, gam, bet);
  for (std::int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const TileUnit un = make_tile_unit(geo, u);
    const std::int64_t ng = un.n * geo.groups + ix / vpg;
    const float mean = load(p.mean + ng);
    const float rstd = load(p.rstd + ng);
    const std::int64_t off = un.base + c0;
    float sg = 0.0f;
    float sgx = 0.0f;
    float dg[N];
    float db[N];
    CULAYERS_PRAGMA_UNROLL
    for (int j = 0; j < N; ++j) {
      dg[j] = 0.0f;
      db[j] = 0.0f;
    }
    visit_tile_rows(
        geo, un, iy,
        [&](std::int64_t r) {
          const std::int64_t o = off + r * geo.row_stride;
          return Pair<T, N>{load_vec<N>(x + o), load_vec<N>(dy + o)}; // default policy: tile_dx rereads
        },
        [&](std::int64_t, const Pair<T, N>& v) {
          float xhat[N];
          float dpre[N];
          backward_terms<T, N>(v.x, v.dy, mean, rstd, gam, bet, p.act, xhat, dpre);
          accumulate_backward<N, N>(xhat, dpre, gam, sg, sgx, dg, db);
        });
    // Valid rows among this thread's rows (every column counts the same rows; the group leader keeps its
    // own column's count).
    float valid = 0.0f;
    const std::int64_t rows = un.r1 - un.r0;
    if (p.mask == nullptr) {
      valid = static_cast<float>(rows > iy ? (rows - iy + k - 1) / k : 0);
    } else {
      const std::uint8_t* mrow = p.mask + un.n * geo.spatial + un.r0;
      for (std::int64_t r = iy; r < rows; r += k) {
        valid += load<CacheHint::kReadOnly>(mrow + r) != 0 ? 1.0f : 0.0f;
      }
    }
    float* mine = smem + static_cast<std::size_t>(tid) * kF;
    mine[0] = sg;
    mine[1] = sgx;
    mine[2] = valid;
    CULAYERS_PRAGMA_UNROLL
    for (int j = 0; j < N; ++j) {
      mine[3 + j] = dg[j];
      mine[3 + N + j] = db[j];
    }
    tile_row_tree<kF>(smem, ix, iy, V, k, [](float* a, const float* b) {
      CULAYERS_PRAGMA_UNROLL
      for (int i = 0; i < kF; ++i) {
        a[i] += b[i];
      }
    });
    if (iy == 0) {
      const float* col = smem + static_cast<std::size_t>(ix) * kF;
      if (p.channel_partials != nullptr) {
        const std::int64_t row = un.n * geo.splits + un.t;
        float* dgamma_part = p.channel_partials + row * geo.channels + c0;
        float* dbeta_part = p.channel_partials + (partial_rows + row) * geo.channels + c0;
        CULAYERS_PRAGMA_UNROLL
        for (int j = 0; j < N; ++j) {
          store(dgamma_part + j, col[3 + j]);
          store(dbeta_part + j, col[3 + N + j]);
        }
      }
      if (ix % vpg == 0) {
        float tg = 0.0f;
        float tgx = 0.0f;
        for (int l = 0; l < vpg; ++l) {
          tg += col[static_cast<std::size_t>(l) * kF + 0];
          tgx += col[static_cast<std::size_t>(l) * kF + 1];
        }
        float* part = p.group_partials + 3 * group_partial_slot(geo, ng, un.t);
        store(part + 0, tg);
        store(part + 1, tgx);
        store(part + 2, col[2] * static_cast<float>(geo.cpg));
      }
    }
    __syncthreads(); // smem is rewritten by the next tile
  }
}

// Backward kernel 2 (backward_tile_merge_kernel, group_norm_api.cu) adds a group's triples; see
// launch_tile_merge.

/// Blocks of the tile path's dx kernel that sum dgamma / dbeta instead: one per kTileSumChannels channels
/// (none when neither is wanted). p.channel_partials is carved exactly when dgamma or dbeta is wanted and
/// the op has elements, which is when the host leaves channel_sums_kernel out.
constexpr int kTileSumChannels = 8;
CULAYERS_HD std::int64_t tile_channel_sum_blocks(const BackwardParams& p) {
  return p.channel_partials != nullptr ? (p.geo.channels + kTileSumChannels - 1) / kTileSumChannels : 0;
}

/// Backward kernel 3: a block per tile writes dx; tiles last first. The grid's first
/// tile_channel_sum_blocks(p) blocks sum dgamma / dbeta from the per-(n, tile) channel partials instead
/// (8 channels by threads / 8 row lanes each: about as few rows per lane as the separate kernel's 32 warps
/// walked, so these blocks free their slots early), while the others write dx: a separate kernel after
/// this one was a serial step of ceil(C / 32) blocks walking N x T partial rows (528 on the training
/// shape).
template <class T, int N>
CULAYERS_GLOBAL void __launch_bounds__(kTileMaxThreads, 1) backward_tile_dx_kernel(const BackwardParams p) {
  grid_dependency_wait(); // a dependent launch after backward_tile_merge_kernel (its partials before it)
  const Geometry& geo = p.geo;
  const int tid = static_cast<int>(threadIdx.x);
  const std::int64_t sum_blocks = tile_channel_sum_blocks(p);
  if (static_cast<std::int64_t>(blockIdx.x) < sum_blocks) {
    CULAYERS_DYNAMIC_SMEM(float, smem);
    channel_sums_block<kTileSumChannels>(p, geo.batch * geo.splits, blockIdx.x, tid,
                                         static_cast<int>(blockDim.x), smem);
    return;
  }
  const int V = geo.tx;
  const int ix = tid % V;
  const int iy = tid / V;
  const int vpg = static_cast<int>(geo.colvecs);
  const std::int64_t units = geo.batch * geo.splits;
  const T* x = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  T* dx = static_cast<T*>(p.dx);
  const std::int64_t c0 = static_cast<std::int64_t>(ix) * N;
  float gam[N];
  float bet[N];
  tile_affine(p.gamma, p.beta, c0, gam, bet);
  const std::int64_t dx_blocks = static_cast<std::int64_t>(gridDim.x) - sum_blocks;
  for (std::int64_t u = blockIdx.x - sum_blocks; u < units; u += dx_blocks) {
    const TileUnit un = make_tile_unit(geo, units - 1 - u);
    const std::int64_t ng = un.n * geo.groups + ix / vpg;
    const float mean = load(p.mean + ng);
    const float rstd = load(p.rstd + ng);
    const float m = load(p.group_totals + 3 * ng + 2);
    const float k1 = m > 0.0f ? __fdividef(load(p.group_totals + 3 * ng + 0), m) : 0.0f;
    const float k2 = m > 0.0f ? __fdividef(load(p.group_totals + 3 * ng + 1), m) : 0.0f;
    const std::uint8_t* mrow = p.mask != nullptr ? p.mask + un.n * geo.spatial + un.r0 : nullptr;
    const std::int64_t off = un.base + c0;
    visit_tile_rows(
        geo, un, iy,
        [&](std::int64_t r) {
          const std::int64_t o = off + r * geo.row_stride;
          return Pair<T, N>{load_vec<N, CacheHint::kStreaming>(x + o),
                            load_vec<N, CacheHint::kStreaming>(dy + o)};
        },
        [&](std::int64_t r, const Pair<T, N>& v) {
          float xhat[N];
          float dpre[N];
          backward_terms<T, N>(v.x, v.dy, mean, rstd, gam, bet, p.act, xhat, dpre);
          const float w = mrow == nullptr ? 1.0f : (load<CacheHint::kReadOnly>(mrow + r) != 0 ? 1.0f : 0.0f);
          Vec<T, N> out;
          CULAYERS_PRAGMA_UNROLL
          for (int j = 0; j < N; ++j) {
            out[j] = from_float<T>(rstd * (dpre[j] * gam[j] - w * (k1 + xhat[j] * k2)));
          }
          store_vec<N, CacheHint::kStreaming>(dx + off + r * geo.row_stride, out);
        });
  }
}

// ---- launchers (called from launch_forward_typed / launch_backward_typed) ---------------------------------

/// Launches the three forward kernels (plan.grid blocks of plan.threads for the tile kernels; the merge
/// kernel is sized by launch_tile_merge).
template <class T, int N>
Status launch_forward_tile(const Plan& plan, const ForwardParams& p, cudaStream_t stream) {
  constexpr const char* kOp = "group_norm";
  const std::size_t smem = tile_forward_smem(static_cast<int>(plan.threads));
  if (Status st = check_launch(CULAYERS_LAUNCH((forward_tile_stats_kernel<T, N>), dim3(plan.grid),
                                               dim3(plan.threads), smem, stream, p),
                               kOp);
      st != Status::kSuccess) {
    return st;
  }
  if (Status st = launch_tile_merge(p, stream); st != Status::kSuccess) {
    return st;
  }
  return check_launch(CULAYERS_LAUNCH_DEPENDENT((forward_tile_normalize_kernel<T, N>), dim3(plan.grid),
                                                dim3(plan.threads), 0, stream, p),
                      kOp);
}

template <class T, int N>
Status launch_backward_tile(const Plan& plan, const BackwardParams& p, cudaStream_t stream) {
  constexpr const char* kOp = "group_norm_backward";
  auto sums = backward_tile_sums_kernel<T, N>;
  const std::size_t smem = tile_backward_smem(static_cast<int>(plan.threads), N);
  if (plan.smem_optin) {
    if (cudaError_t e = set_max_dynamic_smem(sums, smem); e != cudaSuccess) {
      return check_launch(e, kOp);
    }
  }
  if (Status st =
          check_launch(CULAYERS_LAUNCH(sums, dim3(plan.grid), dim3(plan.threads), smem, stream, p), kOp);
      st != Status::kSuccess) {
    return st;
  }
  if (Status st = launch_tile_merge(p, stream); st != Status::kSuccess) {
    return st;
  }
  // The dgamma / dbeta blocks first, so they are scheduled with the first dx blocks (the grid stays below
  // 2^31: the plan's grid is at most 2^31 - 1 - 512, and C / 8 <= 512 on this path).
  const std::int64_t sum_blocks = tile_channel_sum_blocks(p);
  const std::size_t dx_smem =
      sum_blocks > 0 ? channel_sums_smem<kTileSumChannels>(static_cast<int>(plan.threads)) : 0;
  return check_launch(CULAYERS_LAUNCH_DEPENDENT((backward_tile_dx_kernel<T, N>),
                                                dim3(static_cast<unsigned>(plan.grid + sum_blocks)),
                                                dim3(plan.threads), dx_smem, stream, p),
                      kOp);
}

} // namespace group_norm
} // namespace kernels
CULAYERS_NAMESPACE_END
