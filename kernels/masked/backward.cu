// Backward of the masked reductions (all dtypes): dx is written everywhere, +0 at masked positions,
// beyond the lengths and in empty rows. Layout as the forward's wide path: a block covers tx column
// vectors x ty steps of R, items (outer row, column block, chunk of R) are strided over the grid. A
// thread loads its columns' dy (or indices, or dmean/dvar/mean) once per item and walks its steps.
#include "kernels/masked/masked_reduce_device.cuh"

#include <algorithm>
#include <cstdint>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace masked {
namespace {

/// counts[o] += the nonzero bytes of mask row o in this block's chunks: an item is kCountChunk bytes of one
/// row, each thread reading kCountLoads bytes kBackwardThreads apart (coalesced, all independent), the
/// block's sum added with one integer atomic per item (exact, so the result does not depend on the order).
/// `counts` is zeroed on the stream first. Many blocks share a long row, so few rows with a long R (B = 2,
/// T = 65536) do not serialize on one warp per row.
CULAYERS_GLOBAL void __launch_bounds__(kBackwardThreads)
    count_kernel(const std::uint8_t* mask, std::int64_t outer, std::int64_t reduce, std::int32_t* counts) {
  allow_dependent_launch(); // backward_kernel follows
  __shared__ std::int32_t warp_sums[kBackwardThreads / kWarpSize];
  const int tid = static_cast<int>(threadIdx.x);
  const std::int64_t chunks = (reduce + kCountChunk - 1) / kCountChunk;
  for (std::int64_t item = blockIdx.x; item < outer * chunks; item += gridDim.x) {
    const std::int64_t o = item / chunks;
    const std::int64_t r0 = (item % chunks) * kCountChunk;
    const std::uint8_t* row = mask + o * reduce;
    std::int32_t n = 0;
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < kCountLoads; ++k) {
      const std::int64_t r = r0 + static_cast<std::int64_t>(k) * kBackwardThreads + tid;
      if (r < reduce) {
        n += load<CacheHint::kStreaming>(row + r) != 0 ? 1 : 0;
      }
    }
    n = warp_reduce_sum(n);
    if (tid % kWarpSize == 0) {
      warp_sums[tid / kWarpSize] = n;
    }
    __syncthreads();
    if (tid == 0) {
      std::int32_t total = 0;
      for (int w = 0; w < kBackwardThreads / kWarpSize; ++w) {
        total += warp_sums[w];
      }
      if (total != 0) {
        atomicAdd(counts + o, total);
      }
    }
    __syncthreads(); // warp_sums is reused by the next item
  }
}

// The minimum of 1 block per SM lifts ptxas's default register target, under which it spills around the
// IEEE division's slow-path call on sm_80 (4 bytes); the kernel uses about 66 registers either way.
template <class T, BackwardKind K, int N>
CULAYERS_GLOBAL void __launch_bounds__(kBackwardThreads, 1) backward_kernel(const BackwardParams p) {
  grid_dependency_wait(); // after count_kernel, a dependent launch that reads its counts
  const int tid = static_cast<int>(threadIdx.x);
  const int cx = tid % p.tx;
  const int cy = tid / p.tx;
  if (cy >= p.ty) {
    return; // padding threads of the last warp (no barriers in this kernel)
  }
  T* dx = static_cast<T*>(p.dx);
  const std::int64_t vecs = p.inner / N;
  const std::int64_t items = p.outer * p.col_blocks * p.splits;
  const bool needs_count = p.divide != 0 || K == BackwardKind::kMoments;
  const T zero = from_float<T>(0.0f);

  for (std::int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const std::int64_t s = item % p.splits;
    const std::int64_t rest = item / p.splits;
    const std::int64_t cb = rest % p.col_blocks;
    const std::int64_t o = rest / p.col_blocks;
    const std::int64_t v = cb * p.tx + cx;
    if (v >= vecs) {
      continue;
    }
    const std::int64_t col = v * N;
    const std::int64_t r_begin = s * p.rows_per_split;
    const std::int64_t r_end = r_begin + p.rows_per_split < p.reduce ? r_begin + p.rows_per_split : p.reduce;

    std::int64_t valid_end = p.reduce;
    std::int64_t n = p.reduce;
    if (p.validity == kValidLengths) {
      valid_end = read_length(p.lengths, p.length_errors, o, p.reduce, cb == 0 && s == 0 && tid == 0);
      n = valid_end;
    } else if (p.validity == kValidMask && needs_count) {
      // Not the read-only path: the count kernel before this dependent launch wrote it.
      n = load(p.counts + o);
    }
    if (n <= 0) {
      valid_end = 0; // an empty row: every dx is 0
    }
    const std::uint8_t* mask_row = p.validity == kValidMask ? p.mask + o * p.reduce : nullptr;
    const std::int64_t at = o * p.inner + col; // [outer, inner] inputs
    T* dx_col = dx + o * p.reduce * p.inner + col;
    const float denom = static_cast<float>(n > 0 ? n : 1);

    // Per-column values, loaded once per item.
    Array<T, N> g{}; // kScale: the valid value; kExtremum: dy
    Array<std::int32_t, N> idx{};
    Array<float, N> a{}; // kMoments: dmean / n
    Array<float, N> b{}; // kMoments: 2 dvar / n
    Array<float, N> m{}; // kMoments: mean
    if constexpr (K == BackwardKind::kScale) {
      const Array<T, N> dy =
          load_span<N, CacheHint::kReadOnly>(static_cast<const T*>(p.dy) + at, p.dy_vec != 0);
      CULAYERS_PRAGMA_UNROLL
      for (int j = 0; j < N; ++j) {
        g[j] = p.divide ? from_float<T>(to_float(dy[j]) / denom) : dy[j];
      }
    } else if constexpr (K == BackwardKind::kExtremum) {
      g = load_span<N, CacheHint::kReadOnly>(static_cast<const T*>(p.dy) + at, p.dy_vec != 0);
      idx = load_span<N, CacheHint::kReadOnly>(p.indices + at, p.aux_vec != 0);
    } else {
      if (p.dmean != nullptr) {
        const Array<float, N> dm = load_span<N, CacheHint::kReadOnly>(p.dmean + at, p.aux_vec != 0);
        CULAYERS_PRAGMA_UNROLL
        for (int j = 0; j < N; ++j) {
          a[j] = dm[j] / denom;
        }
      }
      if (p.dvar != nullptr) {
        const Array<float, N> dv = load_span<N, CacheHint::kReadOnly>(p.dvar + at, p.aux_vec != 0);
        m = load_span<N, CacheHint::kReadOnly>(p.mean + at, p.aux_vec != 0);
        CULAYERS_PRAGMA_UNROLL
        for (int j = 0; j < N; ++j) {
          b[j] = 2.0f * dv[j] / denom;
        }
      }
    }

    for (std::int64_t r = r_begin + cy; r < r_end; r += p.ty) {
      const bool valid =
          r < valid_end && (mask_row == nullptr || load<CacheHint::kReadOnly>(mask_row + r) != 0);
      Vec<T, N> out;
      if constexpr (K == BackwardKind::kScale) {
        CULAYERS_PRAGMA_UNROLL
        for (int j = 0; j < N; ++j) {
          out[j] = valid ? g[j] : zero;
        }
      } else if constexpr (K == BackwardKind::kExtremum) {
        CULAYERS_PRAGMA_UNROLL
        for (int j = 0; j < N; ++j) {
          out[j] = valid && idx[j] == r ? g[j] : zero;
        }
      } else {
        if (valid && p.dvar != nullptr) {
          const Vec<T, N> xv = load_vec<N, CacheHint::kStreaming>(static_cast<const T*>(p.x) +
                                                                  o * p.reduce * p.inner + col + r * p.inner);
          CULAYERS_PRAGMA_UNROLL
          for (int j = 0; j < N; ++j) {
            out[j] = from_float<T>(a[j] + b[j] * (to_float(xv[j]) - m[j]));
          }
        } else {
          CULAYERS_PRAGMA_UNROLL
          for (int j = 0; j < N; ++j) {
            out[j] = valid ? from_float<T>(a[j]) : zero;
          }
        }
      }
      store_vec<N, CacheHint::kStreaming>(dx_col + r * p.inner, out);
    }
  }
}

template <class T, BackwardKind K, int N>
Status launch_backward_n(const BackwardLaunch& l, const BackwardParams& p, cudaStream_t stream) {
  // A dependent launch after count_kernel; else the op's first kernel.
  const cudaError_t e =
      l.count_first
          ? CULAYERS_LAUNCH_DEPENDENT((backward_kernel<T, K, N>), dim3(l.grid), dim3(l.threads), 0, stream, p)
          : CULAYERS_LAUNCH((backward_kernel<T, K, N>), dim3(l.grid), dim3(l.threads), 0, stream, p);
  return check_launch(e, "masked_reduce_backward");
}

template <class T, BackwardKind K>
Status launch_backward_kind(const BackwardLaunch& l, const BackwardParams& p, cudaStream_t stream) {
  constexpr int kMaxVec = static_cast<int>(16 / sizeof(T));
  switch (l.vec) {
  case 1:
    return launch_backward_n<T, K, 1>(l, p, stream);
  case 2:
    return launch_backward_n<T, K, 2>(l, p, stream);
  case 4:
    return launch_backward_n<T, K, 4>(l, p, stream);
  default:
    if constexpr (kMaxVec >= 8) {
      if (l.vec == 8) {
        return launch_backward_n<T, K, 8>(l, p, stream);
      }
    }
    return ::culayers::detail::set_error(Status::kErrorInternal,
                                         "masked_reduce_backward: vector width %d not instantiated", l.vec);
  }
}

} // namespace

template <class T>
Status launch_backward(BackwardKind kind, const BackwardLaunch& l, const BackwardParams& p,
                       cudaStream_t stream) {
  if (l.count_first) {
    // Zeroed on the stream (a memset node under capture), then summed into by the count kernel.
    if (const cudaError_t e = cudaMemsetAsync(
            l.counts_workspace, 0, static_cast<std::size_t>(p.outer) * sizeof(std::int32_t), stream);
        e != cudaSuccess) {
      (void)cudaGetLastError(); // reported by the status
      return ::culayers::detail::set_error(
          is_no_device_error(e) ? Status::kErrorNoDevice : Status::kErrorCudaRuntime,
          "masked_reduce_backward: zeroing the counts workspace: %s", cudaGetErrorString(e));
    }
    const std::int64_t items = p.outer * ((p.reduce + kCountChunk - 1) / kCountChunk);
    const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(items, l.count_grid_cap));
    const Status st = check_launch(CULAYERS_LAUNCH(count_kernel, dim3(grid), dim3(kBackwardThreads), 0,
                                                   stream, p.mask, p.outer, p.reduce, l.counts_workspace),
                                   "masked_reduce_backward");
    if (!ok(st)) {
      return st;
    }
  }
  switch (kind) {
  case BackwardKind::kScale:
    return launch_backward_kind<T, BackwardKind::kScale>(l, p, stream);
  case BackwardKind::kExtremum:
    return launch_backward_kind<T, BackwardKind::kExtremum>(l, p, stream);
  case BackwardKind::kMoments:
    return launch_backward_kind<T, BackwardKind::kMoments>(l, p, stream);
  }
  return ::culayers::detail::set_error(Status::kErrorInternal, "masked_reduce_backward: unknown kind %d",
                                       static_cast<int>(kind));
}

template Status launch_backward<float>(BackwardKind, const BackwardLaunch&, const BackwardParams&,
                                       cudaStream_t);
template Status launch_backward<__half>(BackwardKind, const BackwardLaunch&, const BackwardParams&,
                                        cudaStream_t);
template Status launch_backward<__nv_bfloat16>(BackwardKind, const BackwardLaunch&, const BackwardParams&,
                                               cudaStream_t);

} // namespace masked
} // namespace kernels
CULAYERS_NAMESPACE_END
