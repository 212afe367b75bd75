// The sum / sum-of-squares channels-last group normalization peer (see gn_nhwc_sums.hpp). Kernel code
// follows the project's portability rules (launches through CULAYERS_LAUNCH, global memory through the
// vector load/store helpers) so that the emulated tests can run it.
#include "bench/kernels/gn_nhwc_sums.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/common/arg_checks.hpp"
#include "kernels/common/common.cuh"

namespace culayers {
namespace bench {
namespace {

using culayers::kernels::check_launch;
using culayers::kernels::from_float;
using culayers::kernels::load;
using culayers::kernels::load_vec;
using culayers::kernels::misaligned;
using culayers::kernels::store_vec;
using culayers::kernels::to_float;
using culayers::kernels::Vec;

constexpr int kMaxThreads = 512;
// Rows whose loads a thread issues before using them (independent accesses in flight).
constexpr int kUnroll = 4;
// Resident threads per SM the grid is sized for (an sm_80-90 SM holds 2048): the grid has about
// SMs x 2048 / threads blocks, one wave at full occupancy, each block taking an equal share of the rows.
constexpr int kThreadsPerSm = 2048;

struct Geometry {
  std::int64_t hw;
  std::int64_t c;
  std::int64_t cpg;
  std::int64_t cpb;
  std::int64_t hw_per_block;
  std::int64_t groups;
};

// Sums of x and x^2 over (this block's rows) x (this thread's V channels), merged per group in shared
// memory, then added to red[(n, g)] = {sum, sum of squares}.
template <class T, int V>
CULAYERS_GLOBAL void sums_kernel(const T* __restrict__ x, Geometry geo, float* __restrict__ red) {
  __shared__ float s_sum[kMaxThreads];
  __shared__ float s_sq[kMaxThreads];
  const int t = static_cast<int>(threadIdx.x);
  const int groups_here = static_cast<int>(geo.cpb / geo.cpg);
  if (t < groups_here) {
    s_sum[t] = 0.0f;
    s_sq[t] = 0.0f;
  }
  __syncthreads();
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.x) * geo.cpb;
  const std::int64_t n = blockIdx.z;
  const std::int64_t h0 = static_cast<std::int64_t>(blockIdx.y) * geo.hw_per_block;
  const std::int64_t h1 = h0 + geo.hw_per_block < geo.hw ? h0 + geo.hw_per_block : geo.hw;
  const T* base = x + n * geo.hw * geo.c + c0 + static_cast<std::int64_t>(t) * V;
  float sum = 0.0f;
  float sq = 0.0f;
  std::int64_t h = h0;
  for (; h + kUnroll <= h1; h += kUnroll) {
    Vec<T, V> v[kUnroll];
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kUnroll; ++u) {
      v[u] = load_vec<V>(base + (h + u) * geo.c);
    }
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kUnroll; ++u) {
      CULAYERS_PRAGMA_UNROLL
      for (int k = 0; k < V; ++k) {
        const float f = to_float(v[u][k]);
        sum += f;
        sq += f * f;
      }
    }
  }
  for (; h < h1; ++h) {
    const Vec<T, V> v = load_vec<V>(base + h * geo.c);
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < V; ++k) {
      const float f = to_float(v[k]);
      sum += f;
      sq += f * f;
    }
  }
  // A thread's V channels lie in one group (V = 2 only when C / G is even).
  const int local_group = static_cast<int>(static_cast<std::int64_t>(t) * V / geo.cpg);
  atomicAdd(&s_sum[local_group], sum);
  atomicAdd(&s_sq[local_group], sq);
  __syncthreads();
  if (t < groups_here) {
    float* out = red + (n * geo.groups + c0 / geo.cpg + t) * 2;
    atomicAdd(out, s_sum[t]);
    atomicAdd(out + 1, s_sq[t]);
  }
}

template <bool Silu>
CULAYERS_DEVICE float activate(float v) {
  if constexpr (Silu) {
    return v / (1.0f + expf(-v));
  } else {
    return v;
  }
}

// y = act((x - mean) * rstd * gamma + beta) over the same grid as sums_kernel.
template <class T, int V, bool Silu>
CULAYERS_GLOBAL void scale_kernel(const T* __restrict__ x, T* __restrict__ y, const float* __restrict__ gamma,
                                  const float* __restrict__ beta, const float* __restrict__ red, Geometry geo,
                                  float epsilon) {
  const int t = static_cast<int>(threadIdx.x);
  const std::int64_t ch = static_cast<std::int64_t>(blockIdx.x) * geo.cpb + static_cast<std::int64_t>(t) * V;
  const std::int64_t n = blockIdx.z;
  const float* stats = red + (n * geo.groups + ch / geo.cpg) * 2;
  const float count = static_cast<float>(geo.cpg * geo.hw);
  const float mean = load(stats) / count;
  const float var = fmaxf(load(stats + 1) / count - mean * mean, 0.0f);
  const float rstd = rsqrtf(var + epsilon);
  float scale[V];
  float shift[V];
  CULAYERS_PRAGMA_UNROLL
  for (int k = 0; k < V; ++k) {
    const float ga = gamma != nullptr ? load(gamma + ch + k) : 1.0f;
    const float be = beta != nullptr ? load(beta + ch + k) : 0.0f;
    scale[k] = ga * rstd;
    shift[k] = be - mean * scale[k];
  }
  const std::int64_t h0 = static_cast<std::int64_t>(blockIdx.y) * geo.hw_per_block;
  const std::int64_t h1 = h0 + geo.hw_per_block < geo.hw ? h0 + geo.hw_per_block : geo.hw;
  const std::int64_t offset = n * geo.hw * geo.c + ch;
  const auto apply = [&](const Vec<T, V>& in) {
    Vec<T, V> out;
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < V; ++k) {
      out[k] = from_float<T>(activate<Silu>(to_float(in[k]) * scale[k] + shift[k]));
    }
    return out;
  };
  std::int64_t h = h0;
  for (; h + kUnroll <= h1; h += kUnroll) {
    Vec<T, V> v[kUnroll];
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kUnroll; ++u) {
      v[u] = load_vec<V>(x + offset + (h + u) * geo.c);
    }
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kUnroll; ++u) {
      store_vec<V>(y + offset + (h + u) * geo.c, apply(v[u]));
    }
  }
  for (; h < h1; ++h) {
    store_vec<V>(y + offset + h * geo.c, apply(load_vec<V>(x + offset + h * geo.c)));
  }
}

template <class T, int V>
cudaError_t launch_as(const NhwcSumsProblem& p, const NhwcSumsPlan& plan, const Geometry& geo, float* red,
                      cudaStream_t stream) {
  const dim3 grid(plan.grid_x, plan.grid_y, plan.grid_z);
  const dim3 block(static_cast<unsigned>(plan.threads));
  cudaError_t e =
      CULAYERS_LAUNCH((sums_kernel<T, V>), grid, block, 0, stream, static_cast<const T*>(p.x), geo, red);
  if (e != cudaSuccess) {
    return e;
  }
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  return p.silu ? CULAYERS_LAUNCH((scale_kernel<T, V, true>), grid, block, 0, stream, x, y, p.gamma, p.beta,
                                  red, geo, p.epsilon)
                : CULAYERS_LAUNCH((scale_kernel<T, V, false>), grid, block, 0, stream, x, y, p.gamma, p.beta,
                                  red, geo, p.epsilon);
}

template <class T>
cudaError_t launch_typed(const NhwcSumsProblem& p, const NhwcSumsPlan& plan, const Geometry& geo, float* red,
                         cudaStream_t stream) {
  return plan.vec == 2 ? launch_as<T, 2>(p, plan, geo, red, stream)
                       : launch_as<T, 1>(p, plan, geo, red, stream);
}

} // namespace

Status nhwc_sums_plan(const NhwcSumsProblem& p, int sm_count, NhwcSumsPlan* plan) {
  if (p.n < 0 || p.hw < 0 || p.c < 1 || p.groups < 1 || p.c % p.groups != 0 || sm_count < 1) {
    return detail::set_error(
        Status::kErrorInvalidValue,
        "nhwc_sums_group_norm: N=%lld HW=%lld C=%lld G=%lld SMs=%d: need N, HW >= 0, C >= 1 "
        "divisible by G >= 1, SMs >= 1",
        static_cast<long long>(p.n), static_cast<long long>(p.hw), static_cast<long long>(p.c),
        static_cast<long long>(p.groups), sm_count);
  }
  if (p.dtype != DType::kFloat32 && p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16) {
    return detail::set_error(Status::kErrorInvalidValue, "nhwc_sums_group_norm: dtype: not a float type");
  }
  if (p.n > 65535) {
    return detail::set_error(Status::kErrorInvalidValue, "nhwc_sums_group_norm: N=%lld above 65535 (grid z)",
                             static_cast<long long>(p.n));
  }
  const std::int64_t cpg = p.c / p.groups;
  const std::size_t eb = dtype_size(p.dtype);
  const int vec = cpg % 2 == 0 && !misaligned(p.x, 2 * eb) && !misaligned(p.y, 2 * eb) ? 2 : 1;
  if (cpg / vec > kMaxThreads) {
    return detail::set_error(Status::kErrorInvalidValue,
                             "nhwc_sums_group_norm: C/G=%lld: a group wider than %d threads x %d channels",
                             static_cast<long long>(cpg), kMaxThreads, vec);
  }
  std::int64_t cpb = cpg;
  for (std::int64_t k = p.groups; k >= 1; --k) {
    if (p.groups % k == 0 && cpg * k / vec <= kMaxThreads) {
      cpb = cpg * k;
      break;
    }
  }
  plan->vec = vec;
  plan->channels_per_block = cpb;
  plan->threads = static_cast<int>(cpb / vec);
  plan->grid_x = static_cast<unsigned>(p.c / cpb);
  plan->grid_z = static_cast<unsigned>(std::max<std::int64_t>(p.n, 1));
  const std::int64_t target =
      static_cast<std::int64_t>(sm_count) * std::max(1, kThreadsPerSm / plan->threads);
  const std::int64_t columns = static_cast<std::int64_t>(plan->grid_x) * plan->grid_z;
  const std::int64_t hw_blocks =
      std::clamp<std::int64_t>((target + columns - 1) / columns, 1, std::clamp<std::int64_t>(p.hw, 1, 65535));
  plan->hw_per_block = std::max<std::int64_t>((p.hw + hw_blocks - 1) / hw_blocks, 1);
  plan->grid_y =
      static_cast<unsigned>(std::max<std::int64_t>((p.hw + plan->hw_per_block - 1) / plan->hw_per_block, 1));
  return Status::kSuccess;
}

std::size_t nhwc_sums_workspace_bytes(const NhwcSumsProblem& p) {
  return static_cast<std::size_t>(std::max<std::int64_t>(p.n * p.groups, 0)) * 2 * sizeof(float);
}

Status nhwc_sums_group_norm(const NhwcSumsProblem& p, void* workspace, std::size_t workspace_bytes,
                            int sm_count, cudaStream_t stream) {
  NhwcSumsPlan plan;
  if (Status s = nhwc_sums_plan(p, sm_count, &plan); s != Status::kSuccess) {
    return s;
  }
  if (p.n == 0 || p.hw == 0) {
    return Status::kSuccess;
  }
  if (p.x == nullptr || p.y == nullptr || workspace == nullptr) {
    return detail::set_error(Status::kErrorNullPointer, "nhwc_sums_group_norm: x, y or workspace: null");
  }
  if (workspace_bytes < nhwc_sums_workspace_bytes(p) || misaligned(workspace, sizeof(float))) {
    return detail::set_error(Status::kErrorWorkspaceTooSmall,
                             "nhwc_sums_group_norm: workspace: %zu bytes (need %zu, 4-byte aligned)",
                             workspace_bytes, nhwc_sums_workspace_bytes(p));
  }
  float* red = static_cast<float*>(workspace);
  if (cudaMemsetAsync(red, 0, nhwc_sums_workspace_bytes(p), stream) != cudaSuccess) {
    return detail::set_error(Status::kErrorCudaRuntime, "nhwc_sums_group_norm: cudaMemsetAsync: %s",
                             cudaGetErrorString(cudaGetLastError()));
  }
  const Geometry geo{p.hw, p.c, p.c / p.groups, plan.channels_per_block, plan.hw_per_block, p.groups};
  cudaError_t e;
  switch (p.dtype) {
  case DType::kFloat32:
    e = launch_typed<float>(p, plan, geo, red, stream);
    break;
  case DType::kFloat16:
    e = launch_typed<__half>(p, plan, geo, red, stream);
    break;
  default:
    e = launch_typed<__nv_bfloat16>(p, plan, geo, red, stream);
    break;
  }
  return check_launch(e, "nhwc_sums_group_norm");
}

} // namespace bench
} // namespace culayers
