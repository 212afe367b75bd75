// Batch-normalization apply kernel (private header): y = (x - mean[c]) * scale[c] + beta[c] with
// scale[c] = rsqrt(variance[c] + epsilon) * gamma[c], over x viewed as [rows, C, inner] (flat index i has
// channel (i / inner) % C; channels last is inner = 1). Included by apply_f32.cu, apply_f16.cu and
// apply_bf16.cu (one dtype each, compiled in parallel) and by batch_norm_api.cu for the launch interface.
//
// Each thread walks vectors of V elements with a grid-stride loop and never divides inside it. Channels
// last (kPlanes = false): the channel of a vector's first element is computed once per thread with a
// 64-bit modulo and then advanced by `step` = (grid stride x V) mod C per iteration (one add and one
// conditional subtract), and inside the vector by one with wrap-around, so V never has to divide C.
// Channels first or any inner extent (kPlanes = true): the position is the pair (c, j), j the offset in
// the current run of `inner` elements of channel c, advanced the same way with a carry from j into c; the
// factors are fetched again only when the channel changes. The last n % V elements are a scalar tail, one
// per thread.
#pragma once

#include "kernels/common/common.cuh"

#include "culayers/batch_norm.hpp"
#include "culayers/status.hpp"

#include <cstddef>
#include <cstdint>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace batch_norm {

// ---- tuning constants --------------------------------------------------------------------------------
// 256 threads per block and up to threads_per_sm / 256 blocks per SM (8 on sm_80/sm_90): every resident
// thread has one 16-byte load in flight, 2048 x 16 B = 32 KB per SM, above HBM3's bandwidth x latency per
// SM (3.35 TB/s x ~0.7 us / 132 SMs ~ 18 KB). Measured on an H100 (bench/results, 2026-11-26): the
// inference apply at 93-100 % of a copy of the same bytes; the training apply ran at 72 % of DRAM
// bandwidth in the profile. max_blocks overrides the grid for tuning.
inline constexpr int kThreads = 256;
inline constexpr std::int64_t kSharedChannels = ::culayers::batch_norm::kMaxSharedChannels;

struct ApplyParams {
  const void* x;
  void* y;
  const float* mean;
  const float* variance;
  const float* gamma; // null: 1
  const float* beta;  // null: 0
  std::int64_t n;     // rows * C * inner
  std::int64_t channels;
  std::int64_t inner;  // elements per run of one channel (1: channels last)
  std::int64_t step;   // inner == 1: (gridDim.x * blockDim.x * V) % C; else (that / inner) % C
  std::int64_t step_j; // inner > 1: (gridDim.x * blockDim.x * V) % inner
  float epsilon;
};

struct ApplyPlan {
  int vec;
  int shared; // 1: per-channel factors staged in shared memory (C <= kSharedChannels)
  int planes; // 1: inner > 1 (the kPlanes kernel)
  unsigned blocks;
  std::size_t smem;
};

/// The factors of channel c from global memory.
CULAYERS_DEVICE void channel_factors(const ApplyParams& p, std::int64_t c, float* mean, float* scale,
                                     float* shift) {
  *mean = load<CacheHint::kReadOnly>(p.mean + c);
  const float rstd = rsqrtf(load<CacheHint::kReadOnly>(p.variance + c) + p.epsilon);
  *scale = p.gamma != nullptr ? rstd * load<CacheHint::kReadOnly>(p.gamma + c) : rstd;
  *shift = p.beta != nullptr ? load<CacheHint::kReadOnly>(p.beta + c) : 0.0f;
}

template <bool kShared>
struct Factors {
  const float* smem; // kShared: [3][C] mean, scale, shift

  CULAYERS_DEVICE void get(const ApplyParams& p, std::int64_t c, float* mean, float* scale,
                           float* shift) const {
    if constexpr (kShared) {
      *mean = smem[c];
      *scale = smem[p.channels + c];
      *shift = smem[2 * p.channels + c];
    } else {
      channel_factors(p, c, mean, scale, shift);
    }
  }
};

template <class T>
CULAYERS_DEVICE T normalize(T v, float mean, float scale, float shift) {
  return from_float<T>(__fmaf_rn(to_float(v) - mean, scale, shift));
}

template <bool kShared>
CULAYERS_DEVICE Factors<kShared> stage_factors(const ApplyParams& p) {
  Factors<kShared> f{nullptr};
  if constexpr (kShared) {
    CULAYERS_DYNAMIC_SMEM(float, smem);
    for (std::int64_t c = threadIdx.x; c < p.channels; c += blockDim.x) {
      float m;
      float s;
      float b;
      channel_factors(p, c, &m, &s, &b);
      smem[c] = m;
      smem[p.channels + c] = s;
      smem[2 * p.channels + c] = b;
    }
    __syncthreads();
    f.smem = smem;
  }
  return f;
}

template <class T, int V, bool kShared, bool kPlanes>
CULAYERS_GLOBAL void __launch_bounds__(kThreads) batch_norm_apply_kernel(const ApplyParams p) {
  const Factors<kShared> f = stage_factors<kShared>(p);
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const std::int64_t C = p.channels;
  const std::int64_t nvec = p.n / V;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if constexpr (!kPlanes) {
    std::int64_t c0 = (tid * V) % C;
    if constexpr (kShared && V >= 4) {
      // C a multiple of V: a vector's V channels are consecutive and c0 is a multiple of V, so its factors
      // are read as 16-byte vectors. Per-element reads would conflict: the lanes' channels are V apart, so
      // with V = 8 a warp's 32 scalar reads land on 4 banks (8-way), 24 times per vector, which costs more
      // shared-memory cycles than the vector's DRAM traffic; 16-byte reads with lanes 32 bytes apart are
      // at most 2-way.
      if (C % V == 0) {
        for (std::int64_t i = tid; i < nvec; i += stride) {
          Vec<T, V> v = load_vec<V, CacheHint::kStreaming>(x + i * V);
          CULAYERS_PRAGMA_UNROLL
          for (int q = 0; q < V / 4; ++q) {
            const Vec<float, 4> m = *reinterpret_cast<const Vec<float, 4>*>(f.smem + c0 + 4 * q);
            const Vec<float, 4> sc = *reinterpret_cast<const Vec<float, 4>*>(f.smem + C + c0 + 4 * q);
            const Vec<float, 4> sh = *reinterpret_cast<const Vec<float, 4>*>(f.smem + 2 * C + c0 + 4 * q);
            CULAYERS_PRAGMA_UNROLL
            for (int k = 0; k < 4; ++k) {
              v[4 * q + k] = normalize(v[4 * q + k], m[k], sc[k], sh[k]);
            }
          }
          store_vec<V, CacheHint::kStreaming>(y + i * V, v);
          c0 += p.step;
          c0 = c0 >= C ? c0 - C : c0;
        }
        return; // no tail: C % V == 0 makes n a multiple of V
      }
    }
    for (std::int64_t i = tid; i < nvec; i += stride) {
      Vec<T, V> v = load_vec<V, CacheHint::kStreaming>(x + i * V);
      std::int64_t c = c0;
      CULAYERS_PRAGMA_UNROLL
      for (int k = 0; k < V; ++k) {
        float m;
        float s;
        float b;
        f.get(p, c, &m, &s, &b);
        v[k] = normalize(v[k], m, s, b);
        c = c + 1 == C ? 0 : c + 1;
      }
      store_vec<V, CacheHint::kStreaming>(y + i * V, v);
      c0 += p.step;
      c0 = c0 >= C ? c0 - C : c0;
    }
  } else {
    const std::int64_t inner = p.inner;
    std::int64_t c0 = ((tid * V) / inner) % C;
    std::int64_t j0 = (tid * V) % inner;
    for (std::int64_t i = tid; i < nvec; i += stride) {
      Vec<T, V> v = load_vec<V, CacheHint::kStreaming>(x + i * V);
      std::int64_t c = c0;
      std::int64_t j = j0;
      float m;
      float s;
      float b;
      f.get(p, c, &m, &s, &b);
      CULAYERS_PRAGMA_UNROLL
      for (int k = 0; k < V; ++k) {
        v[k] = normalize(v[k], m, s, b);
        if (k + 1 < V && ++j == inner) {
          j = 0;
          c = c + 1 == C ? 0 : c + 1;
          f.get(p, c, &m, &s, &b);
        }
      }
      store_vec<V, CacheHint::kStreaming>(y + i * V, v);
      j0 += p.step_j;
      c0 += p.step;
      if (j0 >= inner) {
        j0 -= inner;
        c0 += 1;
      }
      c0 = c0 >= C ? c0 - C : c0;
    }
  }
  if constexpr (V > 1) {
    const std::int64_t t = nvec * V + tid;
    if (t < p.n) {
      float m;
      float s;
      float b;
      f.get(p, (kPlanes ? t / p.inner : t) % C, &m, &s, &b);
      store(y + t, normalize(load(x + t), m, s, b));
    }
  }
}

/// Launches the instantiation for (plan.vec, plan.shared, plan.planes); defined per dtype in
/// apply_<dtype>.cu.
template <class T>
Status launch_apply(const ApplyPlan& plan, const ApplyParams& params, cudaStream_t stream);

} // namespace batch_norm
} // namespace kernels
CULAYERS_NAMESPACE_END
