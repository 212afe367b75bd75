// Roofline kernels (see roofline.hpp). Kernel code follows the project's portability rules so that the
// emulator can run it: launches only through CULAYERS_LAUNCH, global memory through the vector
// load/store helpers (which count bytes in the emulated build), reductions through block_reduce_sum.
#include "bench/kernels/roofline.hpp"

#include <cstdint>

#include "kernels/common/common.cuh"

namespace culayers {
namespace bench {
namespace {

using culayers::kernels::block_reduce_sum;
using culayers::kernels::check_launch;
using culayers::kernels::kWarpSize;
using culayers::kernels::load;
using culayers::kernels::load_vec;
using culayers::kernels::store;
using culayers::kernels::store_vec;
using culayers::kernels::Vec;

// splitmix64's finalizer: a counter-based hash, so element i's value needs no state.
CULAYERS_HD std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

CULAYERS_HD float fill_value(std::uint64_t seed, std::int64_t i) {
  const std::uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + static_cast<std::uint64_t>(i));
  // 24 random bits scaled to [-1, 1): exactly representable, identical on host and device.
  return static_cast<float>(static_cast<std::int32_t>(h >> 40) - (1 << 23)) * (1.0f / (1 << 23));
}

CULAYERS_GLOBAL void fill_kernel(float* x, std::int64_t n, std::uint64_t seed) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    store(x + i, fill_value(seed, i));
  }
}

// Grid-stride copy of n floats in vectors of N, kRooflineUnroll vectors in flight per thread, then the
// last n % N elements by the first threads of the grid.
template <int N>
CULAYERS_GLOBAL void copy_kernel(float* __restrict__ dst, const float* __restrict__ src, std::int64_t n) {
  const std::int64_t nvec = n / N;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  std::int64_t i = tid;
  for (; i + (kRooflineUnroll - 1) * stride < nvec; i += kRooflineUnroll * stride) {
    Vec<float, N> v[kRooflineUnroll];
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kRooflineUnroll; ++u) {
      v[u] = load_vec<N>(src + (i + u * stride) * N);
    }
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kRooflineUnroll; ++u) {
      store_vec<N>(dst + (i + u * stride) * N, v[u]);
    }
  }
  for (; i < nvec; i += stride) {
    store_vec<N>(dst + i * N, load_vec<N>(src + i * N));
  }
  if (tid < n - nvec * N) {
    store(dst + nvec * N + tid, load(src + nvec * N + tid));
  }
}

// Each block sums a grid-stride range of x into partials[blockIdx.x]. kRooflineUnroll independent
// accumulators keep that many loads in flight.
template <int N>
CULAYERS_GLOBAL void reduce_partials_kernel(const float* __restrict__ x, std::int64_t n,
                                            float* __restrict__ partials) {
  const std::int64_t nvec = n / N;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  float acc[kRooflineUnroll] = {};
  std::int64_t i = tid;
  for (; i + (kRooflineUnroll - 1) * stride < nvec; i += kRooflineUnroll * stride) {
    Vec<float, N> v[kRooflineUnroll];
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kRooflineUnroll; ++u) {
      v[u] = load_vec<N>(x + (i + u * stride) * N);
    }
    CULAYERS_PRAGMA_UNROLL
    for (int u = 0; u < kRooflineUnroll; ++u) {
      CULAYERS_PRAGMA_UNROLL
      for (int k = 0; k < N; ++k) {
        acc[u] += v[u][k];
      }
    }
  }
  for (; i < nvec; i += stride) {
    const Vec<float, N> v = load_vec<N>(x + i * N);
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < N; ++k) {
      acc[0] += v[k];
    }
  }
  if (tid < n - nvec * N) {
    acc[0] += load(x + nvec * N + tid);
  }
  float sum = 0.0f;
  CULAYERS_PRAGMA_UNROLL
  for (int u = 0; u < kRooflineUnroll; ++u) {
    sum += acc[u];
  }
  __shared__ float scratch[kWarpSize];
  sum = block_reduce_sum(sum, scratch);
  if (threadIdx.x == 0) {
    store(partials + blockIdx.x, sum);
  }
}

// One block sums the partials: each thread a fixed strided subset, then the block's fixed reduction
// tree, so the result does not depend on timing.
CULAYERS_GLOBAL void reduce_final_kernel(const float* __restrict__ partials, int count,
                                         float* __restrict__ out) {
  float sum = 0.0f;
  for (int i = static_cast<int>(threadIdx.x); i < count; i += static_cast<int>(blockDim.x)) {
    sum += load(partials + i);
  }
  __shared__ float scratch[kWarpSize];
  sum = block_reduce_sum(sum, scratch);
  if (threadIdx.x == 0) {
    store(out, sum);
  }
}

constexpr int kMaxBarrierThreads = 1024;

CULAYERS_GLOBAL void barrier_kernel(unsigned* out, int rounds) {
  __shared__ unsigned ring[kMaxBarrierThreads];
  const unsigned t = threadIdx.x;
  const unsigned threads = blockDim.x;
  unsigned v = t;
  for (int r = 0; r < rounds; ++r) {
    ring[t] = v;
    __syncthreads();
    v = ring[(t + 1) % threads] + 1;
    __syncthreads();
  }
  store(out + static_cast<std::int64_t>(blockIdx.x) * threads + t, v);
}

bool aligned(const void* p, std::uintptr_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

// Blocks for a grid-stride loop over `work` items, kRooflineUnroll per thread, capped at max_blocks.
int grid_for(std::int64_t work, int max_blocks) {
  const std::int64_t per_block = static_cast<std::int64_t>(kRooflineThreads) * kRooflineUnroll;
  const std::int64_t blocks = (work + per_block - 1) / per_block;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > max_blocks ? max_blocks : blocks));
}

} // namespace

float roofline_fill_value(std::uint64_t seed, std::int64_t i) {
  return fill_value(seed, i);
}

Status roofline_fill(float* x, std::int64_t n, std::uint64_t seed, int max_blocks, cudaStream_t stream) {
  if (n < 0 || max_blocks < 1) {
    return detail::set_error(Status::kErrorInvalidValue,
                             "roofline_fill: n=%lld, max_blocks=%d: must be >= 0, >= 1",
                             static_cast<long long>(n), max_blocks);
  }
  if (n == 0) {
    return Status::kSuccess;
  }
  if (x == nullptr) {
    return detail::set_error(Status::kErrorNullPointer, "roofline_fill: x: null");
  }
  const int blocks = grid_for(n, max_blocks);
  return check_launch(
      CULAYERS_LAUNCH(fill_kernel, dim3(blocks), dim3(kRooflineThreads), 0, stream, x, n, seed),
      "roofline_fill");
}

int roofline_copy_vec_width(const float* dst, const float* src) {
  if (aligned(dst, 16) && aligned(src, 16)) {
    return 4;
  }
  if (aligned(dst, 8) && aligned(src, 8)) {
    return 2;
  }
  return 1;
}

Status roofline_copy(float* dst, const float* src, std::int64_t n, int max_blocks, cudaStream_t stream) {
  if (n < 0 || max_blocks < 1) {
    return detail::set_error(Status::kErrorInvalidValue,
                             "roofline_copy: n=%lld, max_blocks=%d: must be >= 0, >= 1",
                             static_cast<long long>(n), max_blocks);
  }
  if (n == 0) {
    return Status::kSuccess;
  }
  if (dst == nullptr || src == nullptr) {
    return detail::set_error(Status::kErrorNullPointer, "roofline_copy: %s: null",
                             dst == nullptr ? "dst" : "src");
  }
  const int width = roofline_copy_vec_width(dst, src);
  const int blocks = grid_for(n / width, max_blocks);
  const dim3 grid(blocks);
  const dim3 block(kRooflineThreads);
  cudaError_t err;
  switch (width) {
  case 4:
    err = CULAYERS_LAUNCH(copy_kernel<4>, grid, block, 0, stream, dst, src, n);
    break;
  case 2:
    err = CULAYERS_LAUNCH(copy_kernel<2>, grid, block, 0, stream, dst, src, n);
    break;
  default:
    err = CULAYERS_LAUNCH(copy_kernel<1>, grid, block, 0, stream, dst, src, n);
    break;
  }
  return check_launch(err, "roofline_copy");
}

std::size_t roofline_reduce_workspace_bytes(int max_blocks) {
  return max_blocks < 1 ? 0 : static_cast<std::size_t>(max_blocks) * sizeof(float);
}

Status roofline_reduce_sum(const float* x, std::int64_t n, float* out, void* workspace,
                           std::size_t workspace_bytes, int max_blocks, cudaStream_t stream) {
  if (n < 0 || max_blocks < 1) {
    return detail::set_error(Status::kErrorInvalidValue,
                             "roofline_reduce_sum: n=%lld, max_blocks=%d: must be >= 0, >= 1",
                             static_cast<long long>(n), max_blocks);
  }
  if (out == nullptr || workspace == nullptr || (n > 0 && x == nullptr)) {
    return detail::set_error(Status::kErrorNullPointer, "roofline_reduce_sum: %s: null",
                             out == nullptr ? "out" : (workspace == nullptr ? "workspace" : "x"));
  }
  if (workspace_bytes < roofline_reduce_workspace_bytes(max_blocks)) {
    return detail::set_error(Status::kErrorWorkspaceTooSmall,
                             "roofline_reduce_sum: workspace_bytes: %zu < %zu needed for max_blocks=%d",
                             workspace_bytes, roofline_reduce_workspace_bytes(max_blocks), max_blocks);
  }
  if (!aligned(workspace, alignof(float))) {
    return detail::set_error(Status::kErrorMisaligned, "roofline_reduce_sum: workspace: not 4-byte aligned");
  }
  float* partials = static_cast<float*>(workspace);
  const int width = aligned(x, 16) ? 4 : (aligned(x, 8) ? 2 : 1);
  const int blocks = grid_for(n / width, max_blocks);
  const dim3 grid(blocks);
  const dim3 block(kRooflineThreads);
  cudaError_t err;
  switch (width) {
  case 4:
    err = CULAYERS_LAUNCH(reduce_partials_kernel<4>, grid, block, 0, stream, x, n, partials);
    break;
  case 2:
    err = CULAYERS_LAUNCH(reduce_partials_kernel<2>, grid, block, 0, stream, x, n, partials);
    break;
  default:
    err = CULAYERS_LAUNCH(reduce_partials_kernel<1>, grid, block, 0, stream, x, n, partials);
    break;
  }
  const Status status = check_launch(err, "roofline_reduce_sum: partials");
  if (status != Status::kSuccess) {
    return status;
  }
  return check_launch(CULAYERS_LAUNCH(reduce_final_kernel, dim3(1), block, 0, stream,
                                      static_cast<const float*>(partials), blocks, out),
                      "roofline_reduce_sum: final");
}

Status roofline_barrier(unsigned* out, int blocks, int threads, int rounds, cudaStream_t stream) {
  if (blocks < 1 || threads < 1 || threads > kMaxBarrierThreads || rounds < 0) {
    return detail::set_error(Status::kErrorInvalidValue,
                             "roofline_barrier: blocks=%d, threads=%d, rounds=%d: need blocks >= 1, "
                             "1 <= threads <= %d, rounds >= 0",
                             blocks, threads, rounds, kMaxBarrierThreads);
  }
  if (out == nullptr) {
    return detail::set_error(Status::kErrorNullPointer, "roofline_barrier: out: null");
  }
  return check_launch(CULAYERS_LAUNCH(barrier_kernel, dim3(blocks), dim3(threads), 0, stream, out, rounds),
                      "roofline_barrier");
}

unsigned roofline_barrier_expected(int t, int threads, int rounds) {
  return static_cast<unsigned>((t + rounds) % threads) + static_cast<unsigned>(rounds);
}

} // namespace bench
} // namespace culayers
