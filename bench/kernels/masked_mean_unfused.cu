// The framework-shaped unfused masked mean (see masked_mean_unfused.hpp). Kernel code follows the
// project's portability rules (launches through CULAYERS_LAUNCH, global memory through the vector
// load/store helpers, the project's warp reduction) so that the emulated tests can run it.
#include "bench/kernels/masked_mean_unfused.hpp"

#include <algorithm>
#include <cstdint>

#include "kernels/common/arg_checks.hpp"
#include "kernels/common/common.cuh"

namespace culayers {
namespace bench {
namespace {

namespace ck = culayers::kernels;
using ck::from_float;
using ck::load;
using ck::load_vec;
using ck::store;
using ck::store_vec;
using ck::to_float;
using ck::Vec;

// Column sums: 32 threads across the columns (one 128- to 512-byte row segment per warp) and 8 across T,
// each issuing kUnroll rows' loads before using them, as a framework's reduction kernel for an outer
// reduced axis does (block 32 x 8, several inputs in flight per thread).
constexpr int kColumnThreads = 32;
constexpr int kRowThreads = 8;
constexpr int kUnroll = 4;
// Resident threads per SM the column sums are sized for (an sm_80-90 SM holds 2048): T is split over
// blocks until about one full wave of 256-thread blocks exists, each split at least kMinRowsPerSplit
// long (8 rows per thread).
constexpr int kThreadsPerSm = 2048;
constexpr std::int64_t kMinRowsPerSplit = 64;
// The elementwise kernels: 256 threads, a grid of at most 8 blocks per SM striding over the elements.
constexpr int kThreads = 256;
constexpr std::size_t kAlign = 256;

std::size_t aligned(std::size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

// tmp[i] = x[i] * (mask[row(i)] != 0), V elements at a time (a vector never crosses a row: V divides F).
template <class T, int V>
CULAYERS_GLOBAL void multiply_kernel(const T* __restrict__ x, const std::uint8_t* __restrict__ mask,
                                     T* __restrict__ tmp, std::int64_t vectors, std::int64_t row_vectors) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < vectors;
       i += stride) {
    const float m = load(mask + i / row_vectors) != 0 ? 1.0f : 0.0f;
    const Vec<T, V> v = load_vec<V>(x + i * V);
    Vec<T, V> out;
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < V; ++k) {
      out[k] = from_float<T>(to_float(v[k]) * m);
    }
    store_vec<V>(tmp + i * V, out);
  }
}

// partial[(split, b), col .. col + V) = sum over this split's rows of tmp[b, r, col .. col + V), in float.
template <class T, int V>
CULAYERS_GLOBAL void column_sum_kernel(const T* __restrict__ tmp, float* __restrict__ partial, std::int64_t t,
                                       std::int64_t f, std::int64_t rows_per_split) {
  __shared__ float s[kRowThreads][kColumnThreads * V];
  const int tx = static_cast<int>(threadIdx.x);
  const int ty = static_cast<int>(threadIdx.y);
  const std::int64_t col = (static_cast<std::int64_t>(blockIdx.x) * kColumnThreads + tx) * V;
  const std::int64_t b = blockIdx.y;
  const std::int64_t split = blockIdx.z;
  const std::int64_t r0 = split * rows_per_split;
  const std::int64_t r1 = r0 + rows_per_split < t ? r0 + rows_per_split : t;
  float acc[V];
  CULAYERS_PRAGMA_UNROLL
  for (int k = 0; k < V; ++k) {
    acc[k] = 0.0f;
  }
  if (col < f) {
    const T* base = tmp + b * t * f + col;
    std::int64_t r = r0 + ty;
    for (; r + (kUnroll - 1) * kRowThreads < r1; r += kUnroll * kRowThreads) {
      Vec<T, V> v[kUnroll];
      CULAYERS_PRAGMA_UNROLL
      for (int u = 0; u < kUnroll; ++u) {
        v[u] = load_vec<V>(base + (r + u * kRowThreads) * f);
      }
      CULAYERS_PRAGMA_UNROLL
      for (int u = 0; u < kUnroll; ++u) {
        CULAYERS_PRAGMA_UNROLL
        for (int k = 0; k < V; ++k) {
          acc[k] += to_float(v[u][k]);
        }
      }
    }
    for (; r < r1; r += kRowThreads) {
      const Vec<T, V> v = load_vec<V>(base + r * f);
      CULAYERS_PRAGMA_UNROLL
      for (int k = 0; k < V; ++k) {
        acc[k] += to_float(v[k]);
      }
    }
  }
  CULAYERS_PRAGMA_UNROLL
  for (int k = 0; k < V; ++k) {
    s[ty][tx * V + k] = acc[k];
  }
  __syncthreads();
  if (ty == 0 && col < f) {
    float* out = partial + (split * static_cast<std::int64_t>(gridDim.y) + b) * f + col;
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < V; ++k) {
      float v = s[0][tx * V + k];
      for (int j = 1; j < kRowThreads; ++j) {
        v += s[j][tx * V + k];
      }
      store(out + k, v);
    }
  }
}

// counts[b] = number of nonzero mask bytes of row b: one warp per row.
CULAYERS_GLOBAL void count_kernel(const std::uint8_t* __restrict__ mask, int* __restrict__ counts,
                                  std::int64_t rows, std::int64_t t) {
  const std::int64_t row = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / ck::kWarpSize;
  const int lane = static_cast<int>(threadIdx.x % ck::kWarpSize);
  if (row >= rows) { // whole warps leave together: rows are per warp
    return;
  }
  int c = 0;
  for (std::int64_t r = lane; r < t; r += ck::kWarpSize) {
    c += load(mask + row * t + r) != 0 ? 1 : 0;
  }
  c = ck::warp_reduce_sum(c);
  if (lane == 0) {
    store(counts + row, c);
  }
}

// out[b, f] = (sum of the splits' partial sums, in split order) / max(count[b], 1), rounded to T.
template <class T>
CULAYERS_GLOBAL void divide_kernel(const float* __restrict__ partial, const int* __restrict__ counts,
                                   T* __restrict__ out, std::int64_t rows, std::int64_t f,
                                   std::int64_t splits) {
  const std::int64_t n = rows * f;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    float s = 0.0f;
    for (std::int64_t sp = 0; sp < splits; ++sp) {
      s += load(partial + sp * n + i);
    }
    const int c = load(counts + i / f);
    store(out + i, from_float<T>(s / static_cast<float>(c > 1 ? c : 1)));
  }
}

unsigned elementwise_blocks(std::int64_t work, int sm_count) {
  const std::int64_t needed = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::clamp<std::int64_t>(needed, 1, static_cast<std::int64_t>(sm_count) * 8));
}

template <class T, int V>
cudaError_t launch_as(const UnfusedMeanProblem& p, const UnfusedMeanPlan& plan, T* tmp, float* partial,
                      int* counts, cudaStream_t stream) {
  const int sm_count = plan.sm_count;
  const T* x = static_cast<const T*>(p.x);
  const std::int64_t vectors = p.b * p.t * p.f / V;
  if (vectors > 0) {
    if (cudaError_t e = CULAYERS_LAUNCH((multiply_kernel<T, V>), dim3(elementwise_blocks(vectors, sm_count)),
                                        dim3(kThreads), 0, stream, x, p.mask, tmp, vectors, p.f / V);
        e != cudaSuccess) {
      return e;
    }
  }
  const dim3 grid(plan.column_blocks, static_cast<unsigned>(p.b), static_cast<unsigned>(plan.splits));
  if (cudaError_t e = CULAYERS_LAUNCH((column_sum_kernel<T, V>), grid, dim3(kColumnThreads, kRowThreads), 0,
                                      stream, tmp, partial, p.t, p.f, plan.rows_per_split);
      e != cudaSuccess) {
    return e;
  }
  const unsigned warps_per_block = kThreads / ck::kWarpSize;
  if (cudaError_t e = CULAYERS_LAUNCH(
          count_kernel, dim3(static_cast<unsigned>((p.b + warps_per_block - 1) / warps_per_block)),
          dim3(kThreads), 0, stream, p.mask, counts, p.b, p.t);
      e != cudaSuccess) {
    return e;
  }
  return CULAYERS_LAUNCH((divide_kernel<T>), dim3(elementwise_blocks(p.b * p.f, sm_count)), dim3(kThreads), 0,
                         stream, partial, counts, static_cast<T*>(p.out), p.b, p.f, plan.splits);
}

// Where the temporary (at 0), the partial sums and the counts lie in the workspace, and its size.
struct WorkspaceLayout {
  std::size_t partial;
  std::size_t counts;
  std::size_t total;
};
WorkspaceLayout workspace_layout(const UnfusedMeanProblem& p, const UnfusedMeanPlan& plan) {
  const auto n = [](std::int64_t v) { return static_cast<std::size_t>(std::max<std::int64_t>(v, 0)); };
  WorkspaceLayout l;
  l.partial = aligned(n(p.b) * n(p.t) * n(p.f) * dtype_size(p.dtype));
  l.counts = l.partial + aligned(n(plan.splits) * n(p.b) * n(p.f) * 4);
  l.total = l.counts + aligned(n(p.b) * 4);
  return l;
}

} // namespace

Status unfused_mean_plan(const UnfusedMeanProblem& p, int sm_count, UnfusedMeanPlan* plan) {
  if (p.b < 0 || p.t < 0 || p.f < 0 || sm_count < 1) {
    return detail::set_error(Status::kErrorInvalidValue,
                             "unfused_masked_mean: B=%lld T=%lld F=%lld SMs=%d: need sizes >= 0, SMs >= 1",
                             static_cast<long long>(p.b), static_cast<long long>(p.t),
                             static_cast<long long>(p.f), sm_count);
  }
  if (!is_floating_point(p.dtype)) {
    return detail::set_error(Status::kErrorInvalidValue, "unfused_masked_mean: dtype: not a float type");
  }
  if (p.b > 65535) {
    return detail::set_error(Status::kErrorInvalidValue, "unfused_masked_mean: B=%lld above 65535 (grid y)",
                             static_cast<long long>(p.b));
  }
  const std::size_t eb = dtype_size(p.dtype);
  const int wide = static_cast<int>(16 / eb);
  plan->vec = p.f % wide == 0 && !ck::misaligned(p.x, 16) && !ck::misaligned(p.out, eb) ? wide : 1;
  const std::int64_t column_vectors = p.f / plan->vec;
  plan->column_blocks = static_cast<unsigned>(
      std::max<std::int64_t>((column_vectors + kColumnThreads - 1) / kColumnThreads, 1));
  const std::int64_t target =
      static_cast<std::int64_t>(sm_count) * (kThreadsPerSm / (kColumnThreads * kRowThreads));
  const std::int64_t base = static_cast<std::int64_t>(plan->column_blocks) * std::max<std::int64_t>(p.b, 1);
  const std::int64_t wanted = std::max<std::int64_t>((target + base - 1) / base, 1);
  const std::int64_t most = std::clamp<std::int64_t>(p.t / kMinRowsPerSplit, 1, 65535);
  const std::int64_t splits = std::min(wanted, most);
  plan->sm_count = sm_count;
  plan->rows_per_split = (p.t + splits - 1) / splits;
  plan->splits = plan->rows_per_split > 0 ? (p.t + plan->rows_per_split - 1) / plan->rows_per_split : 1;
  return Status::kSuccess;
}

std::size_t unfused_mean_workspace_bytes(const UnfusedMeanProblem& p, const UnfusedMeanPlan& plan) {
  return workspace_layout(p, plan).total;
}

Status unfused_masked_mean(const UnfusedMeanProblem& p, void* workspace, std::size_t workspace_bytes,
                           int sm_count, cudaStream_t stream) {
  UnfusedMeanPlan plan;
  if (Status s = unfused_mean_plan(p, sm_count, &plan); s != Status::kSuccess) {
    return s;
  }
  if (p.b == 0 || p.f == 0) {
    return Status::kSuccess;
  }
  if (p.out == nullptr || workspace == nullptr || (p.t > 0 && (p.x == nullptr || p.mask == nullptr))) {
    return detail::set_error(Status::kErrorNullPointer,
                             "unfused_masked_mean: x, mask, out or workspace: null");
  }
  const std::size_t need = unfused_mean_workspace_bytes(p, plan);
  if (workspace_bytes < need || ck::misaligned(workspace, kAlign)) {
    return detail::set_error(Status::kErrorWorkspaceTooSmall,
                             "unfused_masked_mean: workspace: %zu bytes (need %zu, 256-byte aligned)",
                             workspace_bytes, need);
  }
  auto* base = static_cast<unsigned char*>(workspace);
  const WorkspaceLayout layout = workspace_layout(p, plan);
  float* partial = reinterpret_cast<float*>(base + layout.partial);
  int* counts = reinterpret_cast<int*>(base + layout.counts);
  const cudaError_t e = ck::with_activation_type(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* tmp = reinterpret_cast<T*>(base);
    constexpr int kWide = static_cast<int>(16 / sizeof(T));
    return plan.vec == kWide ? launch_as<T, kWide>(p, plan, tmp, partial, counts, stream)
                             : launch_as<T, 1>(p, plan, tmp, partial, counts, stream);
  });
  return ck::check_launch(e, "unfused_masked_mean");
}

} // namespace bench
} // namespace culayers
