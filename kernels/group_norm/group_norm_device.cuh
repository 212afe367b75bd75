// Group-normalization device helpers shared by every path's kernels (group_norm_kernels.cuh: warp, block
// and split paths; group_norm_tile_kernels.cuh: the channels-last tile path): the activation and its
// derivative, Welford pushes of a vector, the normalization of a vector and the backward's per-element
// terms.
#pragma once

#include "kernels/group_norm/group_norm_internal.cuh"

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace group_norm {

// ---- the element walk -------------------------------------------------------------------------------------

/// Visits positions pos, pos + step, ... below end: v = load(q) for kUnroll positions issued before any
/// use(q, v), then the last fewer than kUnroll positions likewise (all their loads, then their uses), uses
/// in increasing q. Every path's walk over a thread's vectors (visit in group_norm_kernels.cuh,
/// visit_tile_rows in group_norm_tile_kernels.cuh).
template <class Load, class Use>
CULAYERS_DEVICE void walk_strided(std::int64_t pos, std::int64_t end, std::int64_t step, Load&& load,
                                  Use&& use) {
  for (; pos + (kUnroll - 1) * step < end; pos += kUnroll * step) {
    decltype(load(pos)) v[kUnroll];
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < kUnroll; ++k) {
      v[k] = load(pos + k * step);
    }
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < kUnroll; ++k) {
      use(pos + k * step, v[k]);
    }
  }
  // The last (fewer than kUnroll) positions: a walk of 2 or 3 (e.g. a forward team with tx = 256 lanes
  // over 512 column vectors) otherwise made one dependent round trip per vector.
  decltype(load(pos)) t[kUnroll - 1] = {};
  CULAYERS_PRAGMA_UNROLL
  for (int k = 0; k < kUnroll - 1; ++k) {
    if (pos + k * step < end) {
      t[k] = load(pos + k * step);
    }
  }
  CULAYERS_PRAGMA_UNROLL
  for (int k = 0; k < kUnroll - 1; ++k) {
    if (pos + k * step < end) {
      use(pos + k * step, t[k]);
    }
  }
}

// ---- scalar helpers --------------------------------------------------------------------------------------

CULAYERS_DEVICE float activate(float v, int act) {
  if (act == static_cast<int>(Act::kSiLU)) {
    // __fdividef: a fast reciprocal-multiply (~2 ulp); the IEEE division's slow path is a called subroutine
    // whose ABI costs spills in the cached kernels. The tests' tolerances cover it.
    return __fdividef(v, 1.0f + expf(-v));
  }
  if (act == static_cast<int>(Act::kReLU)) {
    return (v > 0.0f || v != v) ? v : 0.0f; // NaN propagates
  }
  return v;
}

/// SiLU's derivative s (1 + pre (1 - s)), s = sigmoid(pre), through __expf (ex2.approx: 2 + 1.2 |pre| ulp)
/// and __fdividef: the backward evaluates it for every element in both of its passes, where the IEEE
/// expf's range reduction cost about as many instructions as the rest of the element's work (run 2 on an
/// H100: the UNet shapes' SiLU backward 1.5-1.7x the time of the plain one). The tests' bound
/// (activation_grad_error in tests/reference/group_norm_reference.hpp) is written for these intrinsics.
/// backward_terms keeps one branch per element: hoisting it out of the element loop (straight-line SiLU
/// code over the N elements) raised the 8-wide split statistics kernel from 118 to 138 registers on
/// sm_90, one block per SM instead of two.
CULAYERS_DEVICE float silu_grad(float pre) {
  const float s = __fdividef(1.0f, 1.0f + __expf(-pre));
  return s * (1.0f + pre * (1.0f - s));
}

/// Merges the N values of a vector into w: the vector's own mean and m2 (two passes over registers), then
/// Chan's merge (one division per vector instead of one per element).
template <int N>
CULAYERS_DEVICE void push_vec(Welford& w, const float (&v)[N]) {
  float s = 0.0f;
  CULAYERS_PRAGMA_UNROLL
  for (int j = 0; j < N; ++j) {
    s += v[j];
  }
  const float m = s * (1.0f / static_cast<float>(N));
  float m2 = 0.0f;
  CULAYERS_PRAGMA_UNROLL
  for (int j = 0; j < N; ++j) {
    const float d = v[j] - m;
    m2 += d * d;
  }
  // Chan's merge with the vector (count N) inlined; __fdividef (reciprocal-multiply, ~2 ulp on the merge
  // weight, far below the data's rounding) instead of the IEEE division, whose slow path is a called
  // subroutine that makes the cached kernels spill.
  const float count = w.count + static_cast<float>(N);
  const float wb = __fdividef(static_cast<float>(N), count);
  const float delta = m - w.mean;
  w.mean = chan_merged_mean(w.mean, m, delta, wb);
  // delta * (delta * (count_a * wb)): the weight first, so a thread's first vector (count_a = 0) adds
  // exactly 0 even when delta^2 would overflow (|mean| above 1.8e19: Inf * 0 was NaN, then var 0), and a
  // large delta overflows only when its real contribution does.
  w.m2 += m2 + delta * (delta * (w.count * wb));
  w.count = count;
}

template <class T, int N>
CULAYERS_DEVICE void to_floats(const Vec<T, N>& v, float (&f)[N]) {
  CULAYERS_PRAGMA_UNROLL
  for (int j = 0; j < N; ++j) {
    f[j] = to_float(v[j]);
  }
}

/// Index of chunk `chunk` (split path) or tile `chunk` (tile path) of group `ng` among the per-chunk group
/// partials: a group's chunks are adjacent and in order, whatever order the units run in, so the merges
/// read them in chunk order (and a tile-path merge warp reads them contiguously).
CULAYERS_DEVICE std::int64_t group_partial_slot(const Geometry& geo, std::int64_t ng, std::int64_t chunk) {
  return ng * geo.splits + chunk;
}

// ---- normalization and backward terms ---------------------------------------------------------------

/// Normalizes one vector: y = act((x - mean) * rstd * gamma + beta).
template <class T, int N>
CULAYERS_DEVICE Vec<T, N> normalize_vec(const Vec<T, N>& xv, float mean, const float (&scale)[N],
                                        const float (&bet)[N], int act) {
  Vec<T, N> out;
  CULAYERS_PRAGMA_UNROLL
  for (int j = 0; j < N; ++j) {
    out[j] = from_float<T>(activate((to_float(xv[j]) - mean) * scale[j] + bet[j], act));
  }
  return out;
}

CULAYERS_DEVICE void finish_stats(const Welford& w, float epsilon, float& mean, float& rstd) {
  mean = w.count > 0.0f ? w.mean : 0.0f;
  // A clamp that lets NaN through (fmaxf(NaN, 0) is 0): a NaN at a valid position gives a NaN rstd too.
  const float v = __fdividef(w.m2, w.count);
  const float var = w.count > 0.0f ? (v < 0.0f ? 0.0f : v) : 0.0f;
  rstd = rsqrtf(var + epsilon); // ~2 ulp, as cuDNN and PyTorch use
}

/// Per-element backward quantities of one vector: xhat, dpre (gradient at the pre-activation) and
/// g = dpre * gamma.
template <class T, int N>
CULAYERS_DEVICE void backward_terms(const Vec<T, N>& xv, const Vec<T, N>& dyv, float mean, float rstd,
                                    const float (&gam)[N], const float (&bet)[N], int act, float (&xhat)[N],
                                    float (&dpre)[N]) {
  CULAYERS_PRAGMA_UNROLL
  for (int j = 0; j < N; ++j) {
    const float centered = to_float(xv[j]) - mean;
    xhat[j] = centered * rstd;
    float d = to_float(dyv[j]);
    if (act != static_cast<int>(Act::kNone)) {
      // The pre-activation rounded exactly as the forward rounds it, (x - mean) * fl(gamma * rstd) + beta
      // (normalize_vec's scale), not xhat * gamma + beta: otherwise ReLU's gate can open where the
      // forward's pre was exactly 0 (and SiLU's derivative be taken at a slightly different point).
      const float pre = centered * (gam[j] * rstd) + bet[j];
      if (act == static_cast<int>(Act::kSiLU)) {
        d *= silu_grad(pre);
      } else {
        d *= pre > 0.0f ? 1.0f : 0.0f; // a multiply: Inf * 0 stays NaN
      }
    }
    dpre[j] = d;
  }
}

/// Adds one vector's backward sums: sum g and sum g * xhat (g = dpre * gamma), and the per-channel dgamma /
/// dbeta partials: one pair per element (kPairs = N, channels last: N channels per vector) or one for the
/// whole vector (kPairs = 1, channels first: the vector is one channel).
template <int N, int kPairs>
CULAYERS_DEVICE void accumulate_backward(const float (&xhat)[N], const float (&dpre)[N],
                                         const float (&gam)[N], float& sg, float& sgx, float (&dg)[kPairs],
                                         float (&db)[kPairs]) {
  static_assert(kPairs == N || kPairs == 1, "a pair per element or one per vector");
  CULAYERS_PRAGMA_UNROLL
  for (int j = 0; j < N; ++j) {
    const float g = dpre[j] * gam[j];
    sg += g;
    sgx += g * xhat[j];
    const int k = kPairs == N ? j : 0;
    dg[k] += dpre[j] * xhat[j];
    db[k] += dpre[j];
  }
}

/// Both vectors of a backward position.
template <class T, int N>
struct Pair {
  Vec<T, N> x;
  Vec<T, N> dy;
};

/// dgamma[c], dbeta[c] for the kChannels channels of `chunk` (c = chunk x kChannels + tid % kChannels) from
/// the `rows` per-channel partial rows (p.channel_partials: the dgamma plane, then the dbeta plane). The
/// block's threads form kChannels columns by R = threads / kChannels row lanes (a last partial row of
/// threads idles); row lane l sums rows l, l + R, ... in order (four rows' loads issued before they are
/// added, same order), then row lane 0 adds the R lanes' sums in order. `smem`: 2 x R x kChannels floats
/// (channel_sums_smem). Every thread of the block calls it (one barrier). The same bits for the same R:
/// channel_sums_kernel runs kChannels = 32 (a warp reads 128 contiguous bytes of a row) with R = 32; the
/// tile path's dx kernel kChannels = 8 (32-byte sectors of partial rows that L2 holds) with its block's
/// threads, so that a block walks about as few rows per lane and its blocks leave the dx blocks' slots
/// quickly.
template <int kChannels>
CULAYERS_DEVICE void channel_sums_block(const BackwardParams& p, std::int64_t rows, std::int64_t chunk,
                                        int tid, int threads, float* smem) {
  const int lanes = threads / kChannels;
  const int tx = tid % kChannels;
  const int ty = tid / kChannels;
  const std::int64_t c = chunk * kChannels + tx;
  const std::int64_t channels = p.geo.channels;
  // A lane adds rows / lanes partial rows in sequence: N x ssplits of them (spatial chunks, or tiles), with N
  // up to 2^31 / G. A plain float sum's error grows linearly with that count when the terms share a sign
  // (e.g. dbeta of a positive dy: 1.7 % at N = 2^26, C = 8, against the tests' sqrt(N) model); compensated
  // (Kahan) summation keeps it at a few ulp whatever the count, for 3 more additions per term in a loop that
  // waits on its loads anyway.
  KahanSum sg;
  KahanSum sb;
  if (ty < lanes && c < channels) {
    const float* pg = p.channel_partials + c;
    const float* pb = p.channel_partials + rows * channels + c;
    std::int64_t r = ty;
    for (; r + 3 * lanes < rows; r += 4 * lanes) {
      float g[4];
      float b[4];
      CULAYERS_PRAGMA_UNROLL
      for (int k = 0; k < 4; ++k) {
        g[k] = load(pg + (r + k * lanes) * channels);
        b[k] = load(pb + (r + k * lanes) * channels);
      }
      CULAYERS_PRAGMA_UNROLL
      for (int k = 0; k < 4; ++k) {
        sg.add(g[k]);
        sb.add(b[k]);
      }
    }
    for (; r < rows; r += lanes) {
      sg.add(load(pg + r * channels));
      sb.add(load(pb + r * channels));
    }
  }
  if (ty < lanes) {
    smem[ty * kChannels + tx] = sg.sum;
    smem[(lanes + ty) * kChannels + tx] = sb.sum;
  }
  __syncthreads();
  if (ty == 0 && c < channels) {
    float tg = 0.0f;
    float tb = 0.0f;
    for (int k = 0; k < lanes; ++k) {
      tg += smem[k * kChannels + tx];
      tb += smem[(lanes + k) * kChannels + tx];
    }
    if (p.dgamma != nullptr) {
      store(p.dgamma + c, tg);
    }
    if (p.dbeta != nullptr) {
      store(p.dbeta + c, tb);
    }
  }
}

/// Shared-memory bytes channel_sums_block<kChannels> needs with `threads` threads.
template <int kChannels>
constexpr std::size_t channel_sums_smem(int threads) {
  return static_cast<std::size_t>(2 * (threads / kChannels) * kChannels) * sizeof(float);
}

} // namespace group_norm
} // namespace kernels
CULAYERS_NAMESPACE_END
