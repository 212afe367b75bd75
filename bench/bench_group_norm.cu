// Group normalization on docs/performance.md's shapes 1, 2 and 3, forward and backward, against
//   - "naive": a PyTorch-shaped unfused baseline written here. Forward, 3 kernels: per-(n, g) statistics
//     with one block of 512 threads per group (Welford; N * G blocks), per-(n, c) scale/shift, an
//     elementwise apply (vectorized, SiLU fused into it). Backward, 4 kernels: per-channel sums of
//     dpre * xhat and dpre (channels first: one block per (n, c); channels last: one block per (n, g)),
//     per-(n, g) dx coefficients, an elementwise dx, dgamma/dbeta summed over n. x (and dy) are read
//     twice. Both layouts are handled natively, without the channels-last-to-NCHW copy PyTorch makes, so
//     this baseline is stronger than PyTorch's on NHWC.
//   - "cudnn": the classic substitute: cudnnBatchNormalizationForwardTraining on the tensor viewed as
//     (1, N * G, C / G, HW) in NCHW (per-"channel" = per-group statistics, scale 1, bias 0, running
//     averages with factor 0), then an affine (+SiLU) kernel applying gamma/beta per real channel (in
//     place on the BN output). Backward: an affine-backward kernel (one block per (n, c): recomputes xhat
//     from x with cuDNN's saved mean / inverse std, dpre = dy * act'(pre), writes dxhat = dpre * gamma,
//     per-(n, c) partial sums), a kernel summing the partials over n into dgamma/dbeta, then
//     cudnnBatchNormalizationBackward(x, dxhat) for dx. cuDNN's BN needs NCHW: channels-last cases pay
//     for transpose kernels inside the timed region (forward: x in, y out; backward: dy in, dx out, with
//     x's NCHW copy taken as saved by the forward). cuDNN's mode (SPATIAL_PERSISTENT, else SPATIAL) and
//     dtype (bf16 cases: bf16 and fp16 over the same bytes) are the fastest combination that verifies
//     (each probe-timed, verified fastest first: run_fastest_candidate); the label says which, stderr lists
//     the probe times.
//   - "ours_no_tile" (channels-last configurations): ours with Tuning::tile_min_bytes above any tensor, so
//     the automatic choice never takes the tile path: the per-group warp, block or split plan the tile path
//     replaced, measured in the same run.
//   - "ours_no_small" (channels-first configurations of at most kNoSmallMaxBytes of x): ours with
//     Tuning::split_min_bytes = 1, i.e. the block-or-split choice by the in-flight rule alone (the plan
//     before the small-tensor rule); the label names the path, so where both pick the same plan the two
//     rows time the same kernels.
//   - "ours_no_balance" (the VAE shapes and the channels-last training shape: split and tile plans): ours
//     with Tuning::wave_balance = 1, the split or tile count from the target alone, before it is raised to
//     fill both streaming kernels' last waves (kernels/common/wave_balance.hpp); where the count does not
//     change the two rows time the same kernels.
//   - "nhwc_sums" (channels-last forward configurations): the NHWC peer in the structure of the diffusion
//     GroupNorm plugins (TensorRT, ONNX Runtime) and Apex's NHWC GroupNorm, bench/kernels/gn_nhwc_sums.hpp:
//     a memset, a per-(n, g) sum / sum-of-squares kernel with float atomics, a scale kernel with SiLU fused;
//     x read twice. Written here after their published structure (no plugin code), tested on both
//     backends (tests/bench/). Its statistics are not bit-reproducible, so it is checked only for y.
//   - "copy_same_bytes": cudaMemcpyAsync device to device moving the same number of bytes (one case per
//     shape, element size and direction; the harness's pct_of_copy counter compares every case with a copy
//     of exactly its bytes as well).
//
// Byte model (counters "bytes", "GB/s", "pct_of_copy"; docs/performance.md's minimal model, the same for
// every variant of a configuration so that GB/s compares times): forward: read x, write y, read gamma and
// beta, write mean and rstd; backward: read x and dy, write dx, read mean, rstd, gamma (and beta with a
// fused activation), write dgamma and dbeta. A path that reads x (and dy) twice by design — our split path
// (groups too large to stay on chip), our channels-last tile path, the naive baseline — is charged the same
// minimal bytes; the counter "x_reads" (1 or 2) and the label say which model the path follows, so its DRAM
// traffic is bytes + |x|
// (+ |dy|) when it is 2. cuDNN's internal passes are unknown: its GB/s is an effective rate.
//
// Verification, once per configuration and variant before timing: x (and dy) are downloaded and a double
// precision CPU reference (statistics, y, dx, dgamma, dbeta) is computed from them; every output element
// is compared with a tolerance scaled to the output dtype's rounding unit (and, for dx, to the group's
// gradient scale). Ours is also checked run to run for bit-identical outputs, and its mean/rstd (and the
// naive baseline's) against the reference. A mismatch skips the case with the reason.
//
// Timing: the harness's run_timed (CUDA events, L2 flush before every iteration, warm-up, median over
// repetitions), with a fixed number of iterations per repetition (20 to 200, from the byte count): the
// smallest shapes run for a few microseconds, and timing them until 0.1 s of device time accumulates
// would take tens of thousands of flush + synchronize round trips per repetition.
//
// cuDNN is loaded at run time (bench/cudnn_runtime.hpp): no link-time dependency; without it (or without
// cudnn.h at build time) the cuDNN cases skip with a message.
//
// CUDA source: the baseline kernels are here and launch through CULAYERS_LAUNCH like every kernel of
// the project.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include "bench/cudnn_runtime.hpp"
#include "bench/harness.hpp"
#include "bench/kernels/gn_nhwc_sums.hpp"
#include "bench/variant.hpp"
#include "culayers/group_norm.hpp"
#include "kernels/common/common.cuh"

namespace culayers {
namespace bench {
namespace {

namespace ck = culayers::kernels;
namespace gn = culayers::group_norm;

constexpr float kEpsilon = 1e-5f; // PyTorch's GroupNorm default
constexpr int kActNone = 0;
constexpr int kActSiLU = 1;
static_assert(kActSiLU == static_cast<int>(gn::Activation::kSiLU), "activation numbers");

constexpr std::uint64_t kSeedX = 0x67726f75706e6f72ull;
constexpr std::uint64_t kSeedDy = 0x6772616469656e74ull;
constexpr std::uint64_t kSeedChannel = 0x6368616e6e656c73ull;

// ---- deterministic data (identical on host and device) ----------------------------------------------------

CULAYERS_HD std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// x[n, c, s] = a per-channel offset in {-1, -0.75, ..., 0.75} plus an odd multiple of 1/32 in (-2, 2):
// |x| < 3 with at most 7 significant bits, so x is exact in bf16, fp16 and fp32, and group means are not 0.
CULAYERS_HD float x_value(std::int64_t logical, std::int64_t channel) {
  const int offset = static_cast<int>(mix(kSeedChannel + static_cast<std::uint64_t>(channel)) >> 61) - 4;
  const int k = static_cast<int>(mix(kSeedX + static_cast<std::uint64_t>(logical)) >> 58) - 32;
  return 0.25f * static_cast<float>(offset) + static_cast<float>(2 * k + 1) * (1.0f / 32.0f);
}

// dy: odd multiples of 1/64 in (-4, 4), plus a per-channel offset in {0.75, 1, 1.25, 1.5} and x / 2. The
// offset and the x term give each group's sums of dy and dy x xhat (the terms the split and tile paths
// merge across blocks) a size of the order of the group's, so a dx that drops or mis-merges them, and a
// dgamma / dbeta near 0, fail the check (with zero-mean noise alone those sums were below bf16's rounding
// of dx). |dy| < 7 in steps of 1/64: exact in fp16 and fp32, rounded in bf16 (the reference uses the dy
// downloaded after rounding).
CULAYERS_HD float dy_value(std::int64_t logical, std::int64_t channel) {
  const int k = static_cast<int>(mix(kSeedDy + static_cast<std::uint64_t>(logical)) >> 56) - 128;
  const int offset = static_cast<int>(mix(kSeedDy ^ static_cast<std::uint64_t>(channel)) >> 62); // 0..3
  return static_cast<float>(2 * k + 1) * (1.0f / 64.0f) + 0.75f + 0.25f * static_cast<float>(offset) +
         0.5f * x_value(logical, channel);
}

float gamma_value(std::int64_t c) {
  return 0.75f + 0.03125f * static_cast<float>((c * 7) % 16);
}
float beta_value(std::int64_t c) {
  return 0.125f * static_cast<float>((c * 3) % 9 - 4);
}

// Memory index of element e (0 <= e < C/G * HW) of group (b, g); *channel receives its channel.
CULAYERS_HD std::int64_t group_element(std::int64_t b, std::int64_t g, std::int64_t e, std::int64_t c,
                                       std::int64_t hw, std::int64_t cpg, bool channels_last,
                                       std::int64_t* channel) {
  if (channels_last) {
    const std::int64_t s = e / cpg;
    const std::int64_t j = e - s * cpg;
    *channel = g * cpg + j;
    return (b * hw + s) * c + g * cpg + j;
  }
  *channel = g * cpg + e / hw;
  return (b * c + g * cpg) * hw + e;
}

template <int Act>
CULAYERS_HD float act_forward(float pre) {
  if constexpr (Act == kActSiLU) {
    return pre / (1.0f + expf(-pre));
  } else {
    return pre;
  }
}

// d act / d pre.
template <int Act>
CULAYERS_HD float act_derivative(float pre) {
  if constexpr (Act == kActSiLU) {
    const float s = 1.0f / (1.0f + expf(-pre));
    return s * (1.0f + pre * (1.0f - s));
  } else {
    (void)pre;
    return 1.0f;
  }
}

// ---- kernels: inputs ------------------------------------------------------------------------------------

// out (layout given by channels_last) = x_value (which == 0) or dy_value (which == 1) of each logical
// element.
template <class T>
CULAYERS_GLOBAL void fill_kernel(T* out, std::int64_t n, std::int64_t c, std::int64_t hw, int channels_last,
                                 int which) {
  const std::int64_t total = n * c * hw;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    std::int64_t b;
    std::int64_t ch;
    std::int64_t s;
    if (channels_last) {
      ch = i % c;
      const std::int64_t bs = i / c;
      s = bs % hw;
      b = bs / hw;
    } else {
      s = i % hw;
      const std::int64_t bc = i / hw;
      ch = bc % c;
      b = bc / c;
    }
    const std::int64_t logical = (b * c + ch) * hw + s;
    ck::store(out + i, ck::from_float<T>(which == 0 ? x_value(logical, ch) : dy_value(logical, ch)));
  }
}

// ---- kernels: the naive (PyTorch-shaped) baseline, shared pieces of the cuDNN composite ------------------

constexpr int kStatsThreads = 512;
constexpr int kSumsThreads = 256;
constexpr int kElementwiseThreads = 256;

// Forward kernel 1: mean and rstd of group (b, g) = blockIdx.x, one block per group, Welford per thread.
template <class T>
CULAYERS_GLOBAL void naive_stats_kernel(const T* x, std::int64_t c, std::int64_t hw, std::int64_t groups,
                                        int channels_last, float epsilon, float* mean, float* rstd) {
  const std::int64_t ng = blockIdx.x;
  const std::int64_t b = ng / groups;
  const std::int64_t g = ng % groups;
  const std::int64_t cpg = c / groups;
  const std::int64_t m = cpg * hw;
  ck::Welford w{0.0f, 0.0f, 0.0f};
  for (std::int64_t e = threadIdx.x; e < m; e += blockDim.x) {
    std::int64_t ch;
    const std::int64_t i = group_element(b, g, e, c, hw, cpg, channels_last != 0, &ch);
    ck::welford_push(w, ck::to_float(ck::load(x + i)));
  }
  __shared__ ck::Welford scratch[ck::kWarpSize];
  w = ck::block_welford(w, scratch);
  if (threadIdx.x == 0) {
    ck::store(mean + ng, w.mean);
    ck::store(rstd + ng, rsqrtf(ck::welford_variance(w) + epsilon));
  }
}

// Forward kernel 2: scale[n, c] = rstd * gamma[c], shift[n, c] = beta[c] - mean * scale.
CULAYERS_GLOBAL void naive_params_kernel(const float* mean, const float* rstd, const float* gamma,
                                         const float* beta, std::int64_t n, std::int64_t c,
                                         std::int64_t groups, float* scale, float* shift) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n * c;
       i += stride) {
    const std::int64_t b = i / c;
    const std::int64_t ch = i % c;
    const std::int64_t ng = b * groups + ch / (c / groups);
    const float a = ck::load(rstd + ng) * ck::load(gamma + ch);
    ck::store(scale + i, a);
    ck::store(shift + i, ck::load(beta + ch) - ck::load(mean + ng) * a);
  }
}

// Forward kernel 3 (and the cuDNN composite's affine kernel): y = act(x * scale + shift), the parameters
// at [n * param_batch_stride + c] (stride C: per (n, c); stride 0: per channel). V elements per access:
// V divides HW (channels first) or C (channels last). y may be x (in place).
template <class T, int V, int Act>
CULAYERS_GLOBAL void apply_kernel(const T* x, const float* scale, const float* shift,
                                  std::int64_t param_batch_stride, T* y, std::int64_t n, std::int64_t c,
                                  std::int64_t hw, int channels_last) {
  const std::int64_t nvec = n * c * hw / V;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < nvec;
       i += stride) {
    const std::int64_t e = i * V;
    std::int64_t b;
    std::int64_t ch;
    if (channels_last) {
      ch = e % c;
      b = e / (c * hw);
    } else {
      const std::int64_t bc = e / hw;
      ch = bc % c;
      b = bc / c;
    }
    const ck::Vec<T, V> in = ck::load_vec<V>(x + e);
    ck::Vec<T, V> out;
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < V; ++k) {
      const std::int64_t p = b * param_batch_stride + (channels_last ? ch + k : ch);
      const float a = ck::load<ck::CacheHint::kReadOnly>(scale + p);
      const float sh = ck::load<ck::CacheHint::kReadOnly>(shift + p);
      out[k] = ck::from_float<T>(act_forward<Act>(ck::to_float(in[k]) * a + sh));
    }
    ck::store_vec<V>(y + e, out);
  }
}

// Backward kernel 1, channels first (and the cuDNN composite's affine backward): block (b, c) =
// blockIdx.x sums over its HW positions p_sum = sum(dpre * xhat), q_sum = sum(dpre) with
// xhat = (x - mean) * rstd, pre = xhat * gamma + beta, dpre = dy * act'(pre); with WriteDg it also
// writes dg = dpre * gamma (the gradient of the BN output, for cuDNN's BN backward).
template <class T, int Act, bool WriteDg>
CULAYERS_GLOBAL void nc_sums_kernel(const T* x, const T* dy, const float* mean, const float* rstd,
                                    const float* gamma, const float* beta, std::int64_t c, std::int64_t hw,
                                    std::int64_t groups, T* dg, float* p_sum, float* q_sum) {
  const std::int64_t nc = blockIdx.x;
  const std::int64_t b = nc / c;
  const std::int64_t ch = nc % c;
  const std::int64_t ng = b * groups + ch / (c / groups);
  const float mu = ck::load(mean + ng);
  const float rs = ck::load(rstd + ng);
  const float ga = ck::load(gamma + ch);
  const float be = ck::load(beta + ch);
  const std::int64_t base = nc * hw;
  float p = 0.0f;
  float q = 0.0f;
  for (std::int64_t s = threadIdx.x; s < hw; s += blockDim.x) {
    const float xh = (ck::to_float(ck::load(x + base + s)) - mu) * rs;
    const float dpre = ck::to_float(ck::load(dy + base + s)) * act_derivative<Act>(xh * ga + be);
    p += dpre * xh;
    q += dpre;
    if constexpr (WriteDg) {
      ck::store(dg + base + s, ck::from_float<T>(dpre * ga));
    }
  }
  __shared__ float scratch[ck::kWarpSize];
  p = ck::block_reduce_sum(p, scratch);
  q = ck::block_reduce_sum(q, scratch);
  if (threadIdx.x == 0) {
    ck::store(p_sum + nc, p);
    ck::store(q_sum + nc, q);
  }
}

// Backward kernel 1, channels last: block (b, g) = blockIdx.x (kSumsThreads threads) computes the same
// per-channel sums for the C/G channels of its group: thread t handles channel t % cpg at positions
// t / cpg, t / cpg + lanes, ... (lanes = kSumsThreads / cpg), so each row of lanes reads cpg contiguous
// values; the lanes' partials are then added per channel in a fixed order.
template <class T, int Act>
CULAYERS_GLOBAL void ng_channel_sums_kernel(const T* x, const T* dy, const float* mean, const float* rstd,
                                            const float* gamma, const float* beta, std::int64_t c,
                                            std::int64_t hw, std::int64_t groups, float* p_sum,
                                            float* q_sum) {
  const std::int64_t ng = blockIdx.x;
  const std::int64_t b = ng / groups;
  const std::int64_t g = ng % groups;
  const int cpg = static_cast<int>(c / groups);
  const int lanes = kSumsThreads / cpg;
  const int t = static_cast<int>(threadIdx.x);
  const int j = t % cpg;
  const int lane = t / cpg;
  const std::int64_t ch = g * cpg + j;
  float p = 0.0f;
  float q = 0.0f;
  if (lane < lanes) {
    const float mu = ck::load(mean + ng);
    const float rs = ck::load(rstd + ng);
    const float ga = ck::load(gamma + ch);
    const float be = ck::load(beta + ch);
    for (std::int64_t s = lane; s < hw; s += lanes) {
      const std::int64_t i = (b * hw + s) * c + ch;
      const float xh = (ck::to_float(ck::load(x + i)) - mu) * rs;
      const float dpre = ck::to_float(ck::load(dy + i)) * act_derivative<Act>(xh * ga + be);
      p += dpre * xh;
      q += dpre;
    }
  }
  __shared__ float sp[kSumsThreads];
  __shared__ float sq[kSumsThreads];
  sp[t] = p;
  sq[t] = q;
  __syncthreads();
  if (t < cpg) {
    float ps = 0.0f;
    float qs = 0.0f;
    for (int l = 0; l < lanes; ++l) {
      ps += sp[l * cpg + t];
      qs += sq[l * cpg + t];
    }
    ck::store(p_sum + b * c + g * cpg + t, ps);
    ck::store(q_sum + b * c + g * cpg + t, qs);
  }
}

// Backward kernel 2: per (n, g), with A = sum_c gamma[c] p_sum[n, c] (= sum of g * xhat) and
// B = sum_c gamma[c] q_sum[n, c] (= sum of g), M = C/G * HW:
//   dx = rstd * gamma[c] * dpre + c2 * x + c3,  c2 = -rstd^2 A / M,  c3 = -rstd B / M - c2 * mean.
CULAYERS_GLOBAL void naive_coeffs_kernel(const float* p_sum, const float* q_sum, const float* mean,
                                         const float* rstd, const float* gamma, std::int64_t n,
                                         std::int64_t c, std::int64_t hw, std::int64_t groups, float* c2,
                                         float* c3) {
  const std::int64_t cpg = c / groups;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t ng = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; ng < n * groups;
       ng += stride) {
    const std::int64_t b = ng / groups;
    const std::int64_t g = ng % groups;
    float a = 0.0f;
    float bb = 0.0f;
    for (std::int64_t j = 0; j < cpg; ++j) {
      const std::int64_t ch = g * cpg + j;
      const float ga = ck::load(gamma + ch);
      a += ga * ck::load(p_sum + b * c + ch);
      bb += ga * ck::load(q_sum + b * c + ch);
    }
    const float inv_m = 1.0f / static_cast<float>(cpg * hw);
    const float rs = ck::load(rstd + ng);
    const float k2 = -rs * rs * a * inv_m;
    ck::store(c2 + ng, k2);
    ck::store(c3 + ng, -rs * bb * inv_m - k2 * ck::load(mean + ng));
  }
}

// Backward kernel 3: dx elementwise (dpre recomputed from x for a fused activation).
template <class T, int V, int Act>
CULAYERS_GLOBAL void naive_dx_kernel(const T* x, const T* dy, const float* mean, const float* rstd,
                                     const float* gamma, const float* beta, const float* c2, const float* c3,
                                     std::int64_t n, std::int64_t c, std::int64_t hw, std::int64_t groups,
                                     int channels_last, T* dx) {
  const std::int64_t cpg = c / groups;
  const std::int64_t nvec = n * c * hw / V;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < nvec;
       i += stride) {
    const std::int64_t e = i * V;
    std::int64_t b;
    std::int64_t ch;
    if (channels_last) {
      ch = e % c;
      b = e / (c * hw);
    } else {
      const std::int64_t bc = e / hw;
      ch = bc % c;
      b = bc / c;
    }
    const ck::Vec<T, V> xv = ck::load_vec<V>(x + e);
    const ck::Vec<T, V> dyv = ck::load_vec<V>(dy + e);
    ck::Vec<T, V> out;
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < V; ++k) {
      const std::int64_t chk = channels_last ? ch + k : ch;
      const std::int64_t ng = b * groups + chk / cpg;
      const float rs = ck::load<ck::CacheHint::kReadOnly>(rstd + ng);
      const float ga = ck::load<ck::CacheHint::kReadOnly>(gamma + chk);
      const float xf = ck::to_float(xv[k]);
      float dpre = ck::to_float(dyv[k]);
      if constexpr (Act != kActNone) {
        const float mu = ck::load<ck::CacheHint::kReadOnly>(mean + ng);
        const float be = ck::load<ck::CacheHint::kReadOnly>(beta + chk);
        dpre *= act_derivative<Act>((xf - mu) * rs * ga + be);
      }
      out[k] = ck::from_float<T>(rs * ga * dpre + ck::load<ck::CacheHint::kReadOnly>(c2 + ng) * xf +
                                 ck::load<ck::CacheHint::kReadOnly>(c3 + ng));
    }
    ck::store_vec<V>(dx + e, out);
  }
}

// Backward kernel 4 (and the cuDNN composite's): dgamma[c] = sum_n p_sum[n, c], dbeta[c] = sum_n q_sum[n, c].
CULAYERS_GLOBAL void reduce_batch_kernel(const float* p_sum, const float* q_sum, std::int64_t n,
                                         std::int64_t c, float* dgamma, float* dbeta) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t ch = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; ch < c;
       ch += stride) {
    float p = 0.0f;
    float q = 0.0f;
    for (std::int64_t b = 0; b < n; ++b) {
      p += ck::load(p_sum + b * c + ch);
      q += ck::load(q_sum + b * c + ch);
    }
    ck::store(dgamma + ch, p);
    ck::store(dbeta + ch, q);
  }
}

// out[b][j][i] = in[b][i][j] for in [batch, rows, cols]: 32 x 32 tiles through shared memory (both sides
// coalesced). grid (ceil(cols / 32), <= ceil(rows / 32), batch), block (32, 8).
template <class T>
CULAYERS_GLOBAL void transpose_kernel(const T* in, T* out, std::int64_t rows, std::int64_t cols) {
  __shared__ float tile[32][33];
  const std::int64_t offset = static_cast<std::int64_t>(blockIdx.z) * rows * cols;
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.x) * 32;
  for (std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * 32; r0 < rows;
       r0 += static_cast<std::int64_t>(gridDim.y) * 32) {
    for (int j = static_cast<int>(threadIdx.y); j < 32; j += static_cast<int>(blockDim.y)) {
      const std::int64_t r = r0 + j;
      const std::int64_t col = c0 + threadIdx.x;
      if (r < rows && col < cols) {
        tile[j][threadIdx.x] = ck::to_float(ck::load(in + offset + r * cols + col));
      }
    }
    __syncthreads();
    for (int j = static_cast<int>(threadIdx.y); j < 32; j += static_cast<int>(blockDim.y)) {
      const std::int64_t col = c0 + j;
      const std::int64_t r = r0 + threadIdx.x;
      if (r < rows && col < cols) {
        ck::store(out + offset + col * rows + r, ck::from_float<T>(tile[threadIdx.x][j]));
      }
    }
    __syncthreads();
  }
}

// ---- configurations -------------------------------------------------------------------------------------

struct Config {
  std::string shape; // e.g. "s1_C320_64x64"
  std::int64_t n = 0;
  std::int64_t c = 0;
  std::int64_t hw = 0;
  std::int64_t g = 0;
  DType dtype = DType::kBFloat16;
  Layout layout = Layout::kChannelsFirst;
  gn::Activation act = gn::Activation::kNone;
  bool backward = false;
  bool no_tile = false;    // "ours_no_tile": the tile path never chosen (the per-group plans it replaced)
  bool no_small = false;   // "ours_no_small": the small-tensor block rule off (split_min_bytes = 1)
  bool no_balance = false; // "ours_no_balance": split / tile counts before the balance (wave_balance 1)

  std::int64_t numel() const { return n * c * hw; }
  std::int64_t cpg() const { return c / g; }
  bool channels_last() const { return layout == Layout::kChannelsLast; }
  int act_id() const { return static_cast<int>(act); }
};

const char* dtype_tag(DType d) {
  switch (d) {
  case DType::kFloat32:
    return "fp32";
  case DType::kFloat16:
    return "fp16";
  case DType::kBFloat16:
    return "bf16";
  default:
    return "?";
  }
}

std::string config_name(const Config& cfg, const char* variant) {
  return std::string("group_norm/") + cfg.shape + "/" + dtype_tag(cfg.dtype) + "/" +
         (cfg.channels_last() ? "nhwc" : "nchw") + "/" +
         (cfg.act == gn::Activation::kSiLU ? "silu" : "none") + "/" + (cfg.backward ? "bwd" : "fwd") + "/" +
         variant;
}

// docs/performance.md's minimal byte model (see the file comment).
std::uint64_t model_bytes(const Config& cfg) {
  const std::uint64_t tensor = static_cast<std::uint64_t>(cfg.numel()) * dtype_size(cfg.dtype);
  const std::uint64_t stats = 2 * static_cast<std::uint64_t>(cfg.n * cfg.g) * 4;
  const std::uint64_t param = static_cast<std::uint64_t>(cfg.c) * 4;
  if (!cfg.backward) {
    return 2 * tensor + 2 * param + stats; // x, y; gamma, beta; mean, rstd
  }
  // x, dy, dx; mean, rstd; gamma (+ beta with an activation); dgamma, dbeta
  return 3 * tensor + stats + (cfg.act != gn::Activation::kNone ? 2 : 1) * param + 2 * param;
}

// ---- host helpers ----------------------------------------------------------------------------------------

std::string cuda_text(cudaError_t e, const char* what) {
  (void)cudaGetLastError();
  return std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

std::string status_text(Status s, const char* what) {
  return std::string(what) + ": " + status_string(s) + " (" + last_error_message() + ")";
}

// Allocates buffers one after another; the first failure is kept in error().
class Allocator {
 public:
  void operator()(DeviceBuffer* b, std::size_t bytes, const char* what) {
    if (!error_.empty()) {
      return;
    }
    *b = DeviceBuffer(bytes);
    if (!b->ok()) {
      error_ = cuda_text(b->error(),
                         (std::string("cudaMalloc(") + std::to_string(bytes) + ") for " + what).c_str());
    }
  }
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

// Synchronous upload: a pageable cudaMemcpy may return before its DMA lands, and the bench stream does not
// synchronize with the legacy stream, so the device is synchronized before returning.
std::string upload_floats(DeviceBuffer& dst, const std::vector<float>& src, const char* what) {
  cudaError_t e = cudaMemcpy(dst.data(), src.data(), src.size() * sizeof(float), cudaMemcpyHostToDevice);
  if (e == cudaSuccess) {
    e = cudaDeviceSynchronize();
  }
  return e == cudaSuccess ? std::string() : cuda_text(e, what);
}

std::string memset_async(DeviceBuffer& b, int value) {
  const cudaError_t e = cudaMemsetAsync(b.data(), value, b.bytes(), bench_stream());
  return e == cudaSuccess ? std::string() : cuda_text(e, "cudaMemsetAsync");
}

std::string synchronize(const char* what) {
  const cudaError_t e = cudaStreamSynchronize(bench_stream());
  return e == cudaSuccess ? std::string() : cuda_text(e, what);
}

// The verification self-test (harness.hpp, --culayers_perturb): hands a verification's outputs over in
// order, the first (y or dx) of `dtype`, the others (mean, rstd or dgamma, dbeta) float32.
std::string perturb_outputs(const std::vector<DeviceBuffer*>& outs, DType dtype) {
  for (std::size_t k = 0; k < outs.size(); ++k) {
    const DType d = k == 0 ? dtype : DType::kFloat32;
    const auto count = static_cast<std::int64_t>(outs[k]->bytes() / dtype_size(d));
    if (std::string e = perturb_output(outs[k]->data(), d, count); !e.empty()) {
      return e;
    }
  }
  return {};
}

std::string download(const DeviceBuffer& b, std::vector<unsigned char>* out) {
  out->resize(b.bytes());
  const cudaError_t e = cudaMemcpy(out->data(), b.data(), b.bytes(), cudaMemcpyDeviceToHost);
  return e == cudaSuccess ? std::string() : cuda_text(e, "download");
}

// Runs fn(group) for every group in [0, count) on all host cores (the harness's parallel_for, one group per
// step).
void for_each_group(std::int64_t count, const std::function<void(std::int64_t)>& fn) {
  parallel_for(count, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t g = begin; g < end; ++g) {
      fn(g);
    }
  });
}

// The error of the smallest failing group, whichever thread finds it first: a group above a known failure
// need not be checked (skip()), every group below one is, so the report does not depend on the schedule.
class SmallestGroupError {
 public:
  bool skip(std::int64_t group) const { return group > smallest_.load(); }
  void set(std::int64_t group, const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (group < smallest_.load()) {
      smallest_.store(group);
      message_ = message;
    }
  }
  bool failed() const { return smallest_.load() != kNone; }
  std::string get() {
    std::lock_guard<std::mutex> lock(mutex_);
    return message_;
  }

 private:
  static constexpr std::int64_t kNone = std::numeric_limits<std::int64_t>::max();
  std::mutex mutex_;
  std::string message_;
  std::atomic<std::int64_t> smallest_{kNone};
};

// A downloaded tensor of dtype `dtype`, read as doubles.
struct HostTensor {
  DType dtype = DType::kFloat32;
  std::vector<unsigned char> bytes;

  double operator[](std::int64_t i) const {
    const unsigned char* p = bytes.data();
    switch (dtype) {
    case DType::kFloat32: {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    }
    case DType::kBFloat16: {
      std::uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
      float f;
      std::memcpy(&f, &u, 4);
      return f;
    }
    default: {
      __half_raw r;
      std::memcpy(&r.x, p + 2 * i, 2);
      return static_cast<double>(__half2float(__half(r)));
    }
    }
  }
};

std::string download_tensor(const DeviceBuffer& b, DType dtype, HostTensor* out) {
  out->dtype = dtype;
  return download(b, &out->bytes);
}

std::string download_floats(const DeviceBuffer& b, std::vector<float>* out) {
  out->resize(b.bytes() / sizeof(float));
  const cudaError_t e = cudaMemcpy(out->data(), b.data(), b.bytes(), cudaMemcpyDeviceToHost);
  return e == cudaSuccess ? std::string() : cuda_text(e, "download");
}

// Rounding unit of the output dtype (fp32 loosened to cover float32 accumulation over large groups).
double unit_roundoff(DType d) {
  switch (d) {
  case DType::kBFloat16:
    return std::ldexp(1.0, -8);
  case DType::kFloat16:
    return std::ldexp(1.0, -11);
  default:
    return std::ldexp(1.0, -18);
  }
}

double host_act(int act, double pre) {
  return act == kActSiLU ? pre / (1.0 + std::exp(-pre)) : pre;
}
double host_act_derivative(int act, double pre) {
  if (act != kActSiLU) {
    return 1.0;
  }
  const double s = 1.0 / (1.0 + std::exp(-pre));
  return s * (1.0 + pre * (1.0 - s));
}

std::vector<float> host_gamma(std::int64_t c) {
  std::vector<float> v(static_cast<std::size_t>(c));
  for (std::int64_t i = 0; i < c; ++i) {
    v[static_cast<std::size_t>(i)] = gamma_value(i);
  }
  return v;
}
std::vector<float> host_beta(std::int64_t c) {
  std::vector<float> v(static_cast<std::size_t>(c));
  for (std::int64_t i = 0; i < c; ++i) {
    v[static_cast<std::size_t>(i)] = beta_value(i);
  }
  return v;
}

struct GroupStats {
  double mean = 0.0;
  double rstd = 0.0;
  double sd = 0.0;
};

GroupStats group_stats(const Config& cfg, const HostTensor& x, std::int64_t b, std::int64_t g) {
  const std::int64_t cpg = cfg.cpg();
  const std::int64_t m = cpg * cfg.hw;
  std::int64_t ch;
  double sum = 0.0;
  for (std::int64_t e = 0; e < m; ++e) {
    sum += x[group_element(b, g, e, cfg.c, cfg.hw, cpg, cfg.channels_last(), &ch)];
  }
  GroupStats s;
  s.mean = sum / static_cast<double>(m);
  double m2 = 0.0;
  for (std::int64_t e = 0; e < m; ++e) {
    const double d = x[group_element(b, g, e, cfg.c, cfg.hw, cpg, cfg.channels_last(), &ch)] - s.mean;
    m2 += d * d;
  }
  const double var = m2 / static_cast<double>(m);
  s.sd = std::sqrt(var);
  s.rstd = 1.0 / std::sqrt(var + static_cast<double>(kEpsilon));
  return s;
}

// Checks the optional mean/rstd outputs of group ng; "" when they match.
std::string check_stats(const GroupStats& ref, const std::vector<float>& mean, const std::vector<float>& rstd,
                        std::int64_t ng) {
  if (mean.empty()) {
    return {};
  }
  const double gm = mean[static_cast<std::size_t>(ng)];
  const double gr = rstd[static_cast<std::size_t>(ng)];
  if (!(std::fabs(gm - ref.mean) <= 1e-4 * (ref.sd + std::fabs(ref.mean)) + 1e-7) ||
      !(std::fabs(gr - ref.rstd) <= 1e-4 * ref.rstd)) {
    char buf[200];
    std::snprintf(buf, sizeof(buf), "group %lld: mean %.9g rstd %.9g, want %.9g %.9g",
                  static_cast<long long>(ng), gm, gr, ref.mean, ref.rstd);
    return buf;
  }
  return {};
}

// Forward reference from the downloaded x; y in `dtype` and the config's layout. mean/rstd: optional.
std::string check_forward(const Config& cfg, DType dtype, const DeviceBuffer& x_dev,
                          const DeviceBuffer& y_dev, const DeviceBuffer* mean_dev,
                          const DeviceBuffer* rstd_dev) {
  HostTensor x;
  HostTensor y;
  std::vector<float> mean;
  std::vector<float> rstd;
  std::string err = download_tensor(x_dev, dtype, &x);
  if (err.empty()) {
    err = download_tensor(y_dev, dtype, &y);
  }
  if (err.empty() && mean_dev != nullptr) {
    err = download_floats(*mean_dev, &mean);
  }
  if (err.empty() && rstd_dev != nullptr) {
    err = download_floats(*rstd_dev, &rstd);
  }
  if (!err.empty()) {
    return err;
  }
  const std::vector<float> gamma = host_gamma(cfg.c);
  const std::vector<float> beta = host_beta(cfg.c);
  const double u = unit_roundoff(dtype);
  const std::int64_t cpg = cfg.cpg();
  const std::int64_t m = cpg * cfg.hw;
  SmallestGroupError first;
  for_each_group(cfg.n * cfg.g, [&](std::int64_t ng) {
    if (first.skip(ng)) {
      return;
    }
    const std::int64_t b = ng / cfg.g;
    const std::int64_t g = ng % cfg.g;
    const GroupStats s = group_stats(cfg, x, b, g);
    if (std::string e = check_stats(s, mean, rstd, ng); !e.empty()) {
      first.set(ng, e);
      return;
    }
    for (std::int64_t e = 0; e < m; ++e) {
      std::int64_t ch;
      const std::int64_t i = group_element(b, g, e, cfg.c, cfg.hw, cpg, cfg.channels_last(), &ch);
      const double xh = (x[i] - s.mean) * s.rstd;
      const double ga = gamma[static_cast<std::size_t>(ch)];
      const double be = beta[static_cast<std::size_t>(ch)];
      const double ref = host_act(cfg.act_id(), xh * ga + be);
      const double got = y[i];
      const double tol =
          4.0 * u * (std::fabs(ref) + std::fabs(xh * ga) + std::fabs(be)) + 1e-5 * (1.0 + std::fabs(xh * ga));
      if (!(std::fabs(got - ref) <= tol)) {
        char buf[256];
        std::snprintf(
            buf, sizeof(buf), "y at n=%lld c=%lld (memory index %lld) = %.9g, want %.9g (tolerance %.3g)",
            static_cast<long long>(b), static_cast<long long>(ch), static_cast<long long>(i), got, ref, tol);
        first.set(ng, buf);
        return;
      }
    }
  });
  return first.get();
}

// Backward reference from the downloaded x and dy (statistics recomputed in double).
std::string check_backward(const Config& cfg, DType dtype, const DeviceBuffer& x_dev,
                           const DeviceBuffer& dy_dev, const DeviceBuffer& dx_dev,
                           const DeviceBuffer& dgamma_dev, const DeviceBuffer& dbeta_dev) {
  HostTensor x;
  HostTensor dy;
  HostTensor dx;
  std::vector<float> dgamma;
  std::vector<float> dbeta;
  std::string err = download_tensor(x_dev, dtype, &x);
  if (err.empty()) {
    err = download_tensor(dy_dev, dtype, &dy);
  }
  if (err.empty()) {
    err = download_tensor(dx_dev, dtype, &dx);
  }
  if (err.empty()) {
    err = download_floats(dgamma_dev, &dgamma);
  }
  if (err.empty()) {
    err = download_floats(dbeta_dev, &dbeta);
  }
  if (!err.empty()) {
    return err;
  }
  const std::vector<float> gamma = host_gamma(cfg.c);
  const std::vector<float> beta = host_beta(cfg.c);
  const double u = unit_roundoff(dtype);
  const std::int64_t cpg = cfg.cpg();
  const std::int64_t m = cpg * cfg.hw;
  const std::size_t nc = static_cast<std::size_t>(cfg.n * cfg.c);
  // Per-(n, c) partials of dgamma and dbeta and of their absolute values (each group owns its channels).
  std::vector<double> pg(nc, 0.0);
  std::vector<double> pg_abs(nc, 0.0);
  std::vector<double> pb(nc, 0.0);
  std::vector<double> pb_abs(nc, 0.0);
  const int act = cfg.act_id();
  SmallestGroupError first;
  for_each_group(cfg.n * cfg.g, [&](std::int64_t ng) {
    if (first.skip(ng)) {
      return;
    }
    const std::int64_t b = ng / cfg.g;
    const std::int64_t g = ng % cfg.g;
    const GroupStats s = group_stats(cfg, x, b, g);
    double sum_g = 0.0;
    double sum_gx = 0.0;
    double sum_gg = 0.0;
    std::int64_t ch;
    for (std::int64_t e = 0; e < m; ++e) {
      const std::int64_t i = group_element(b, g, e, cfg.c, cfg.hw, cpg, cfg.channels_last(), &ch);
      const double xh = (x[i] - s.mean) * s.rstd;
      const double ga = gamma[static_cast<std::size_t>(ch)];
      const double dpre = dy[i] * host_act_derivative(act, xh * ga + beta[static_cast<std::size_t>(ch)]);
      const double gv = dpre * ga;
      sum_g += gv;
      sum_gx += gv * xh;
      sum_gg += gv * gv;
      const std::size_t p = static_cast<std::size_t>(b * cfg.c + ch);
      pg[p] += dpre * xh;
      pg_abs[p] += std::fabs(dpre * xh);
      pb[p] += dpre;
      pb_abs[p] += std::fabs(dpre);
    }
    const double rms_g = std::sqrt(sum_gg / static_cast<double>(m));
    for (std::int64_t e = 0; e < m; ++e) {
      const std::int64_t i = group_element(b, g, e, cfg.c, cfg.hw, cpg, cfg.channels_last(), &ch);
      const double xh = (x[i] - s.mean) * s.rstd;
      const double ga = gamma[static_cast<std::size_t>(ch)];
      const double gv = dy[i] * host_act_derivative(act, xh * ga + beta[static_cast<std::size_t>(ch)]) * ga;
      const double ref = s.rstd * (gv - (sum_g + xh * sum_gx) / static_cast<double>(m));
      const double got = dx[i];
      const double tol =
          8.0 * u * (std::fabs(ref) + s.rstd * (std::fabs(gv) + rms_g)) + 1e-6 * s.rstd * rms_g;
      if (!(std::fabs(got - ref) <= tol)) {
        char buf[256];
        std::snprintf(
            buf, sizeof(buf), "dx at n=%lld c=%lld (memory index %lld) = %.9g, want %.9g (tolerance %.3g)",
            static_cast<long long>(b), static_cast<long long>(ch), static_cast<long long>(i), got, ref, tol);
        first.set(ng, buf);
        return;
      }
    }
  });
  if (first.failed()) {
    return first.get();
  }
  // dgamma / dbeta are float32 sums whatever the dtype (of exact products of the downloaded inputs): the
  // float32 accumulation bound of the tests (4 (sqrt(n) + 16) 2^-24 over n = N x HW terms) twice, plus
  // 1e-4 for the recomputed xhat and activation derivative, relative to the sum of |terms|. (4 x the
  // dtype's unit roundoff, as before, passed dgamma = dbeta = 0 in bf16.)
  const double rel =
      1e-4 + 8.0 * (std::sqrt(static_cast<double>(cfg.n * cfg.hw)) + 16.0) * std::ldexp(1.0, -24);
  for (std::int64_t ch = 0; ch < cfg.c; ++ch) {
    double rg = 0.0;
    double rg_abs = 0.0;
    double rb = 0.0;
    double rb_abs = 0.0;
    for (std::int64_t b = 0; b < cfg.n; ++b) {
      const std::size_t p = static_cast<std::size_t>(b * cfg.c + ch);
      rg += pg[p];
      rg_abs += pg_abs[p];
      rb += pb[p];
      rb_abs += pb_abs[p];
    }
    const double gg = dgamma[static_cast<std::size_t>(ch)];
    const double gb = dbeta[static_cast<std::size_t>(ch)];
    if (!(std::fabs(gg - rg) <= rel * rg_abs + 1e-6) || !(std::fabs(gb - rb) <= rel * rb_abs + 1e-6)) {
      char buf[256];
      std::snprintf(buf, sizeof(buf), "channel %lld: dgamma %.9g dbeta %.9g, want %.9g %.9g",
                    static_cast<long long>(ch), gg, gb, rg, rb);
      return buf;
    }
  }
  return {};
}

// ---- launches -------------------------------------------------------------------------------------------

dim3 grid_for(std::int64_t work, int threads) {
  const std::int64_t blocks = (work + threads - 1) / threads;
  return dim3(static_cast<unsigned>(std::clamp<std::int64_t>(blocks, 1, max_blocks(16))));
}

// Elements per access of the elementwise kernels: 4 when groups of 4 never straddle a channel
// (channels first) or a position (channels last), else 1.
int elementwise_width(const Config& cfg) {
  return (cfg.channels_last() ? cfg.c % 4 : cfg.hw % 4) == 0 ? 4 : 1;
}

template <class T>
Status launch_fill(const Config& cfg, T* out, int which, cudaStream_t s) {
  return ck::check_launch(CULAYERS_LAUNCH((fill_kernel<T>), grid_for(cfg.numel(), 256), dim3(256), 0, s, out,
                                          cfg.n, cfg.c, cfg.hw, cfg.channels_last() ? 1 : 0, which),
                          "fill");
}

template <class T>
Status launch_stats(const Config& cfg, const T* x, float* mean, float* rstd, cudaStream_t s) {
  return ck::check_launch(CULAYERS_LAUNCH((naive_stats_kernel<T>), dim3(static_cast<unsigned>(cfg.n * cfg.g)),
                                          dim3(kStatsThreads), 0, s, x, cfg.c, cfg.hw, cfg.g,
                                          cfg.channels_last() ? 1 : 0, kEpsilon, mean, rstd),
                          "naive stats");
}

template <class T, int V, int Act>
cudaError_t launch_apply_as(const Config& cfg, const T* x, const float* scale, const float* shift,
                            std::int64_t param_batch_stride, T* y, cudaStream_t s) {
  return CULAYERS_LAUNCH((apply_kernel<T, V, Act>), grid_for(cfg.numel() / V, kElementwiseThreads),
                         dim3(kElementwiseThreads), 0, s, x, scale, shift, param_batch_stride, y, cfg.n,
                         cfg.c, cfg.hw, cfg.channels_last() ? 1 : 0);
}

template <class T>
Status launch_apply(const Config& cfg, const T* x, const float* scale, const float* shift,
                    std::int64_t param_batch_stride, T* y, cudaStream_t s) {
  const bool silu = cfg.act_id() == kActSiLU;
  cudaError_t e;
  if (elementwise_width(cfg) == 4) {
    e = silu ? launch_apply_as<T, 4, kActSiLU>(cfg, x, scale, shift, param_batch_stride, y, s)
             : launch_apply_as<T, 4, kActNone>(cfg, x, scale, shift, param_batch_stride, y, s);
  } else {
    e = silu ? launch_apply_as<T, 1, kActSiLU>(cfg, x, scale, shift, param_batch_stride, y, s)
             : launch_apply_as<T, 1, kActNone>(cfg, x, scale, shift, param_batch_stride, y, s);
  }
  return ck::check_launch(e, "apply");
}

template <class T, int Act, bool WriteDg>
cudaError_t launch_nc_sums_as(const Config& cfg, const T* x, const T* dy, const float* mean,
                              const float* rstd, const float* gamma, const float* beta, T* dg, float* p_sum,
                              float* q_sum, cudaStream_t s) {
  return CULAYERS_LAUNCH((nc_sums_kernel<T, Act, WriteDg>), dim3(static_cast<unsigned>(cfg.n * cfg.c)),
                         dim3(kSumsThreads), 0, s, x, dy, mean, rstd, gamma, beta, cfg.c, cfg.hw, cfg.g, dg,
                         p_sum, q_sum);
}

// Per-(n, c) sums of dpre * xhat and dpre. Channels first: one block per (n, c) (writing dg = dpre * gamma
// when dg is not null); channels last: one block per (n, g) (dg must be null).
template <class T>
Status launch_channel_sums(const Config& cfg, const T* x, const T* dy, const float* mean, const float* rstd,
                           const float* gamma, const float* beta, T* dg, float* p_sum, float* q_sum,
                           cudaStream_t s) {
  const bool silu = cfg.act_id() == kActSiLU;
  cudaError_t e;
  if (cfg.channels_last()) {
    const dim3 grid(static_cast<unsigned>(cfg.n * cfg.g));
    e = silu ? CULAYERS_LAUNCH((ng_channel_sums_kernel<T, kActSiLU>), grid, dim3(kSumsThreads), 0, s, x, dy,
                               mean, rstd, gamma, beta, cfg.c, cfg.hw, cfg.g, p_sum, q_sum)
             : CULAYERS_LAUNCH((ng_channel_sums_kernel<T, kActNone>), grid, dim3(kSumsThreads), 0, s, x, dy,
                               mean, rstd, gamma, beta, cfg.c, cfg.hw, cfg.g, p_sum, q_sum);
  } else if (dg != nullptr) {
    e = silu ? launch_nc_sums_as<T, kActSiLU, true>(cfg, x, dy, mean, rstd, gamma, beta, dg, p_sum, q_sum, s)
             : launch_nc_sums_as<T, kActNone, true>(cfg, x, dy, mean, rstd, gamma, beta, dg, p_sum, q_sum, s);
  } else {
    e = silu
            ? launch_nc_sums_as<T, kActSiLU, false>(cfg, x, dy, mean, rstd, gamma, beta, dg, p_sum, q_sum, s)
            : launch_nc_sums_as<T, kActNone, false>(cfg, x, dy, mean, rstd, gamma, beta, dg, p_sum, q_sum, s);
  }
  return ck::check_launch(e, "channel sums");
}

template <class T, int V, int Act>
cudaError_t launch_dx_as(const Config& cfg, const T* x, const T* dy, const float* mean, const float* rstd,
                         const float* gamma, const float* beta, const float* c2, const float* c3, T* dx,
                         cudaStream_t s) {
  return CULAYERS_LAUNCH((naive_dx_kernel<T, V, Act>), grid_for(cfg.numel() / V, kElementwiseThreads),
                         dim3(kElementwiseThreads), 0, s, x, dy, mean, rstd, gamma, beta, c2, c3, cfg.n,
                         cfg.c, cfg.hw, cfg.g, cfg.channels_last() ? 1 : 0, dx);
}

template <class T>
Status launch_dx(const Config& cfg, const T* x, const T* dy, const float* mean, const float* rstd,
                 const float* gamma, const float* beta, const float* c2, const float* c3, T* dx,
                 cudaStream_t s) {
  const bool silu = cfg.act_id() == kActSiLU;
  cudaError_t e;
  if (elementwise_width(cfg) == 4) {
    e = silu ? launch_dx_as<T, 4, kActSiLU>(cfg, x, dy, mean, rstd, gamma, beta, c2, c3, dx, s)
             : launch_dx_as<T, 4, kActNone>(cfg, x, dy, mean, rstd, gamma, beta, c2, c3, dx, s);
  } else {
    e = silu ? launch_dx_as<T, 1, kActSiLU>(cfg, x, dy, mean, rstd, gamma, beta, c2, c3, dx, s)
             : launch_dx_as<T, 1, kActNone>(cfg, x, dy, mean, rstd, gamma, beta, c2, c3, dx, s);
  }
  return ck::check_launch(e, "naive dx");
}

Status launch_reduce_batch(const Config& cfg, const float* p_sum, const float* q_sum, float* dgamma,
                           float* dbeta, cudaStream_t s) {
  return ck::check_launch(CULAYERS_LAUNCH(reduce_batch_kernel, grid_for(cfg.c, 256), dim3(256), 0, s, p_sum,
                                          q_sum, cfg.n, cfg.c, dgamma, dbeta),
                          "reduce over n");
}

// out[b] = in[b]^T for in [batch, rows, cols].
template <class T>
Status launch_transpose(const T* in, T* out, std::int64_t batch, std::int64_t rows, std::int64_t cols,
                        cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32),
                  static_cast<unsigned>(std::min<std::int64_t>((rows + 31) / 32, 65535)),
                  static_cast<unsigned>(batch));
  return ck::check_launch(
      CULAYERS_LAUNCH((transpose_kernel<T>), grid, dim3(32, 8), 0, s, in, out, rows, cols), "transpose");
}

// ---- the tensors every variant uses ----------------------------------------------------------------------

struct Tensors {
  DeviceBuffer x;
  DeviceBuffer y; // also the backward's scratch for the forward run that produces its statistics
  DeviceBuffer dy;
  DeviceBuffer dx;
  DeviceBuffer gamma;
  DeviceBuffer beta;
  DeviceBuffer mean;
  DeviceBuffer rstd;
  DeviceBuffer dgamma;
  DeviceBuffer dbeta;
};

// Allocates and fills the tensors of cfg with element type T (x, and dy for the backward, in cfg's layout).
template <class T>
std::string make_tensors(const Config& cfg, Tensors* t) {
  const std::size_t tensor = static_cast<std::size_t>(cfg.numel()) * sizeof(T);
  const std::size_t params = static_cast<std::size_t>(cfg.c) * sizeof(float);
  const std::size_t stats = static_cast<std::size_t>(cfg.n * cfg.g) * sizeof(float);
  Allocator alloc;
  alloc(&t->x, tensor, "x");
  alloc(&t->y, tensor, "y");
  alloc(&t->gamma, params, "gamma");
  alloc(&t->beta, params, "beta");
  alloc(&t->mean, stats, "mean");
  alloc(&t->rstd, stats, "rstd");
  if (cfg.backward) {
    alloc(&t->dy, tensor, "dy");
    alloc(&t->dx, tensor, "dx");
    alloc(&t->dgamma, params, "dgamma");
    alloc(&t->dbeta, params, "dbeta");
  }
  if (!alloc.error().empty()) {
    return alloc.error();
  }
  std::string err = upload_floats(t->gamma, host_gamma(cfg.c), "upload gamma");
  if (err.empty()) {
    err = upload_floats(t->beta, host_beta(cfg.c), "upload beta");
  }
  if (!err.empty()) {
    return err;
  }
  Status st = launch_fill(cfg, t->x.as<T>(), 0, bench_stream());
  if (st == Status::kSuccess && cfg.backward) {
    st = launch_fill(cfg, t->dy.as<T>(), 1, bench_stream());
  }
  if (st != Status::kSuccess) {
    return status_text(st, "fill");
  }
  const cudaError_t e = cudaDeviceSynchronize();
  return e == cudaSuccess ? std::string() : cuda_text(e, "fill synchronize");
}

// ---- one benchmarked variant ------------------------------------------------------------------------------

// ---- ours -------------------------------------------------------------------------------------------------

template <class T>
class Ours final : public Variant {
 public:
  explicit Ours(const Config& cfg) : cfg_(cfg) {}

  std::string setup() override {
    if (std::string e = make_tensors<T>(cfg_, &t_); !e.empty()) {
      return e;
    }
    fwd_.dtype = dtype_of<T>();
    fwd_.layout = cfg_.layout;
    fwd_.x = t_.x.data();
    fwd_.batch = cfg_.n;
    fwd_.channels = cfg_.c;
    fwd_.spatial = cfg_.hw;
    fwd_.groups = cfg_.g;
    fwd_.epsilon = kEpsilon;
    fwd_.gamma = t_.gamma.as<float>();
    fwd_.beta = t_.beta.as<float>();
    fwd_.activation = cfg_.act;
    fwd_.y = t_.y.data();
    fwd_.mean = t_.mean.as<float>();
    fwd_.rstd = t_.rstd.as<float>();
    if (cfg_.no_tile) {
      fwd_.tuning.tile_min_bytes = std::numeric_limits<std::int64_t>::max();
    }
    if (cfg_.no_small) {
      fwd_.tuning.split_min_bytes = 1;
    }
    if (cfg_.no_balance) {
      fwd_.tuning.wave_balance = 1;
    }
    if (Status st = gn::can_implement(fwd_); st != Status::kSuccess) {
      return status_text(st, "group_norm forward can_implement");
    }
    Allocator alloc;
    alloc(&ws_fwd_, gn::workspace_size(fwd_), "forward workspace");
    if (cfg_.backward) {
      bwd_.dtype = fwd_.dtype;
      bwd_.layout = cfg_.layout;
      bwd_.x = t_.x.data();
      bwd_.dy = t_.dy.data();
      bwd_.batch = cfg_.n;
      bwd_.channels = cfg_.c;
      bwd_.spatial = cfg_.hw;
      bwd_.groups = cfg_.g;
      bwd_.mean = t_.mean.as<float>();
      bwd_.rstd = t_.rstd.as<float>();
      bwd_.gamma = t_.gamma.as<float>();
      bwd_.beta = t_.beta.as<float>();
      bwd_.activation = cfg_.act;
      bwd_.dx = t_.dx.data();
      bwd_.dgamma = t_.dgamma.as<float>();
      bwd_.dbeta = t_.dbeta.as<float>();
      bwd_.tuning = fwd_.tuning;
      if (Status st = gn::can_implement(bwd_); st != Status::kSuccess) {
        return status_text(st, "group_norm backward can_implement");
      }
      alloc(&ws_bwd_, gn::workspace_size(bwd_), "backward workspace");
    }
    if (!alloc.error().empty()) {
      return alloc.error();
    }
    if (cfg_.backward) {
      // The statistics the backward consumes come from our forward (untimed).
      if (Status st = run_forward(bench_stream()); st != Status::kSuccess) {
        return status_text(st, "group_norm forward");
      }
      return synchronize("forward synchronize");
    }
    return {};
  }

  std::string verify() override {
    const std::vector<DeviceBuffer*> outs = cfg_.backward
                                                ? std::vector<DeviceBuffer*>{&t_.dx, &t_.dgamma, &t_.dbeta}
                                                : std::vector<DeviceBuffer*>{&t_.y, &t_.mean, &t_.rstd};
    for (DeviceBuffer* b : outs) {
      if (std::string e = memset_async(*b, 0xff); !e.empty()) {
        return e;
      }
    }
    if (Status st = op(bench_stream()); st != Status::kSuccess) {
      return status_text(st, "group_norm run");
    }
    if (std::string e = synchronize("run synchronize"); !e.empty()) {
      return e;
    }
    // The first run's bits for the run-to-run check, taken before the self-test's perturbation (so only the
    // comparison with the reference can catch it).
    std::vector<std::vector<unsigned char>> first(outs.size());
    for (std::size_t k = 0; k < outs.size(); ++k) {
      if (std::string d = download(*outs[k], &first[k]); !d.empty()) {
        return d;
      }
    }
    if (std::string e = perturb_outputs(outs, dtype_of<T>()); !e.empty()) {
      return e;
    }
    std::string e = cfg_.backward
                        ? check_backward(cfg_, dtype_of<T>(), t_.x, t_.dy, t_.dx, t_.dgamma, t_.dbeta)
                        : check_forward(cfg_, dtype_of<T>(), t_.x, t_.y, &t_.mean, &t_.rstd);
    if (!e.empty()) {
      return e;
    }
    // Run to run: the same arguments give the same bits.
    for (DeviceBuffer* b : outs) {
      if (std::string m = memset_async(*b, 0); !m.empty()) {
        return m;
      }
    }
    if (Status st = op(bench_stream()); st != Status::kSuccess) {
      return status_text(st, "group_norm second run");
    }
    if (std::string s = synchronize("second run synchronize"); !s.empty()) {
      return s;
    }
    for (std::size_t k = 0; k < outs.size(); ++k) {
      std::vector<unsigned char> again;
      if (std::string d = download(*outs[k], &again); !d.empty()) {
        return d;
      }
      if (again != first[k]) {
        return "outputs not bit-identical run to run";
      }
    }
    return {};
  }

  Status op(cudaStream_t s) override {
    if (cfg_.backward) {
      return gn::run(bwd_, ws_bwd_.data(), ws_bwd_.bytes(), s);
    }
    return run_forward(s);
  }

  gn::Path path() const { return cfg_.backward ? gn::selected_path(bwd_) : gn::selected_path(fwd_); }

  int x_reads() const override { return path() == gn::Path::kSplit || path() == gn::Path::kTile ? 2 : 1; }

  std::string label() const override {
    const gn::Path p = path();
    std::string l = std::string("path=") + gn::path_name(p) +
                    ", ws=" + std::to_string(cfg_.backward ? ws_bwd_.bytes() : ws_fwd_.bytes()) + " B, ";
    if (p == gn::Path::kSplit || p == gn::Path::kTile) {
      l += cfg_.backward ? "x and dy read twice by design (traffic = bytes + |x| + |dy|)"
                         : "x read twice by design (traffic = bytes + |x|)";
    } else {
      l += cfg_.backward ? "group on chip: x and dy read once" : "group on chip: x read once";
    }
    return l;
  }

 private:
  Status run_forward(cudaStream_t s) { return gn::run(fwd_, ws_fwd_.data(), ws_fwd_.bytes(), s); }

  Config cfg_;
  Tensors t_;
  DeviceBuffer ws_fwd_;
  DeviceBuffer ws_bwd_;
  gn::GroupNormArgs fwd_;
  gn::GroupNormBackwardArgs bwd_;
};

// ---- naive (PyTorch-shaped) -------------------------------------------------------------------------------

template <class T>
class Naive final : public Variant {
 public:
  explicit Naive(const Config& cfg) : cfg_(cfg) {}

  std::string setup() override {
    if (cfg_.channels_last() && cfg_.cpg() > kSumsThreads) {
      return "naive channels-last backward: C/G > " + std::to_string(kSumsThreads);
    }
    if (std::string e = make_tensors<T>(cfg_, &t_); !e.empty()) {
      return e;
    }
    const std::size_t nc = static_cast<std::size_t>(cfg_.n * cfg_.c) * sizeof(float);
    const std::size_t ng = static_cast<std::size_t>(cfg_.n * cfg_.g) * sizeof(float);
    Allocator alloc;
    if (cfg_.backward) {
      alloc(&a_, nc, "p_sum");
      alloc(&b_, nc, "q_sum");
      alloc(&c2_, ng, "c2");
      alloc(&c3_, ng, "c3");
    } else {
      alloc(&a_, nc, "scale");
      alloc(&b_, nc, "shift");
    }
    if (!alloc.error().empty()) {
      return alloc.error();
    }
    if (cfg_.backward) {
      // mean and rstd as saved by the forward (untimed).
      if (Status st =
              launch_stats(cfg_, t_.x.as<T>(), t_.mean.as<float>(), t_.rstd.as<float>(), bench_stream());
          st != Status::kSuccess) {
        return status_text(st, "naive stats");
      }
      return synchronize("naive stats synchronize");
    }
    return {};
  }

  std::string verify() override {
    const std::vector<DeviceBuffer*> outs = cfg_.backward
                                                ? std::vector<DeviceBuffer*>{&t_.dx, &t_.dgamma, &t_.dbeta}
                                                : std::vector<DeviceBuffer*>{&t_.y, &t_.mean, &t_.rstd};
    for (DeviceBuffer* b : outs) {
      if (std::string e = memset_async(*b, 0xff); !e.empty()) {
        return e;
      }
    }
    if (Status st = op(bench_stream()); st != Status::kSuccess) {
      return status_text(st, "naive run");
    }
    if (std::string e = synchronize("naive synchronize"); !e.empty()) {
      return e;
    }
    if (std::string e = perturb_outputs(outs, dtype_of<T>()); !e.empty()) {
      return e;
    }
    return cfg_.backward ? check_backward(cfg_, dtype_of<T>(), t_.x, t_.dy, t_.dx, t_.dgamma, t_.dbeta)
                         : check_forward(cfg_, dtype_of<T>(), t_.x, t_.y, &t_.mean, &t_.rstd);
  }

  Status op(cudaStream_t s) override {
    const float* mean = t_.mean.as<float>();
    const float* rstd = t_.rstd.as<float>();
    const float* gamma = t_.gamma.as<float>();
    const float* beta = t_.beta.as<float>();
    if (!cfg_.backward) {
      Status st = launch_stats(cfg_, t_.x.as<T>(), t_.mean.as<float>(), t_.rstd.as<float>(), s);
      if (st == Status::kSuccess) {
        st = ck::check_launch(CULAYERS_LAUNCH(naive_params_kernel, grid_for(cfg_.n * cfg_.c, 256), dim3(256),
                                              0, s, mean, rstd, gamma, beta, cfg_.n, cfg_.c, cfg_.g,
                                              a_.as<float>(), b_.as<float>()),
                              "naive params");
      }
      if (st == Status::kSuccess) {
        st = launch_apply(cfg_, t_.x.as<T>(), a_.as<float>(), b_.as<float>(), cfg_.c, t_.y.as<T>(), s);
      }
      return st;
    }
    Status st = launch_channel_sums<T>(cfg_, t_.x.as<T>(), t_.dy.as<T>(), mean, rstd, gamma, beta, nullptr,
                                       a_.as<float>(), b_.as<float>(), s);
    if (st == Status::kSuccess) {
      const std::int64_t ng = cfg_.n * cfg_.g;
      st = ck::check_launch(CULAYERS_LAUNCH(naive_coeffs_kernel, grid_for(ng, 128), dim3(128), 0, s,
                                            a_.as<float>(), b_.as<float>(), mean, rstd, gamma, cfg_.n, cfg_.c,
                                            cfg_.hw, cfg_.g, c2_.as<float>(), c3_.as<float>()),
                            "naive coefficients");
    }
    if (st == Status::kSuccess) {
      st = launch_dx(cfg_, t_.x.as<T>(), t_.dy.as<T>(), mean, rstd, gamma, beta, c2_.as<float>(),
                     c3_.as<float>(), t_.dx.as<T>(), s);
    }
    if (st == Status::kSuccess) {
      st = launch_reduce_batch(cfg_, a_.as<float>(), b_.as<float>(), t_.dgamma.as<float>(),
                               t_.dbeta.as<float>(), s);
    }
    return st;
  }

  int x_reads() const override { return 2; }

  std::string label() const override {
    if (!cfg_.backward) {
      return std::string("3 kernels: stats (1 block/(n,g), ") + std::to_string(cfg_.n * cfg_.g) +
             " blocks), scale/shift, apply" + (cfg_.act == gn::Activation::kSiLU ? "+SiLU" : "") +
             "; x read twice; native layout (PyTorch copies channels_last to NCHW first)";
    }
    return std::string("4 kernels: channel sums (1 block/") + (cfg_.channels_last() ? "(n,g)" : "(n,c)") +
           "), coefficients, dx, dgamma/dbeta over n" +
           (cfg_.act == gn::Activation::kSiLU ? "; SiLU' recomputed from x" : "") +
           "; x, dy read twice; native layout";
  }

 private:
  Config cfg_;
  Tensors t_;
  DeviceBuffer a_; // scale (forward) or p_sum (backward), [N, C]
  DeviceBuffer b_; // shift or q_sum
  DeviceBuffer c2_;
  DeviceBuffer c3_;
};

// ---- the NHWC sum / sum-of-squares peer (bench/kernels/gn_nhwc_sums.hpp) --------------------------------

// Channels-last forward only: the structure of the NHWC diffusion GroupNorm plugins (memset, a sums kernel
// with float atomics, a scale kernel with the activation fused). Its statistics are not bit-reproducible
// (atomics) and use sum of squares; it writes no mean / rstd.
template <class T>
class NhwcSums final : public Variant {
 public:
  explicit NhwcSums(const Config& cfg) : cfg_(cfg) {}

  std::string setup() override {
    if (std::string e = make_tensors<T>(cfg_, &t_); !e.empty()) {
      return e;
    }
    problem_.dtype = dtype_of<T>();
    problem_.x = t_.x.data();
    problem_.y = t_.y.data();
    problem_.gamma = t_.gamma.as<float>();
    problem_.beta = t_.beta.as<float>();
    problem_.n = cfg_.n;
    problem_.hw = cfg_.hw;
    problem_.c = cfg_.c;
    problem_.groups = cfg_.g;
    problem_.epsilon = kEpsilon;
    problem_.silu = cfg_.act == gn::Activation::kSiLU;
    if (Status st = nhwc_sums_plan(problem_, sm_count(), &plan_); st != Status::kSuccess) {
      return status_text(st, "nhwc_sums plan");
    }
    Allocator alloc;
    alloc(&workspace_, nhwc_sums_workspace_bytes(problem_), "nhwc_sums workspace");
    return alloc.error();
  }

  std::string verify() override {
    if (std::string e = memset_async(t_.y, 0xff); !e.empty()) {
      return e;
    }
    if (Status st = op(bench_stream()); st != Status::kSuccess) {
      return status_text(st, "nhwc_sums run");
    }
    if (std::string e = synchronize("nhwc_sums synchronize"); !e.empty()) {
      return e;
    }
    if (std::string e = perturb_outputs({&t_.y}, dtype_of<T>()); !e.empty()) {
      return e;
    }
    return check_forward(cfg_, dtype_of<T>(), t_.x, t_.y, nullptr, nullptr);
  }

  Status op(cudaStream_t s) override {
    return nhwc_sums_group_norm(problem_, workspace_.data(), workspace_.bytes(), sm_count(), s);
  }

  int x_reads() const override { return 2; }

  std::string label() const override {
    return "memset + sums (float atomics) + scale" + std::string(problem_.silu ? "+SiLU" : "") + ": " +
           std::to_string(plan_.channels_per_block) + " channels x " + std::to_string(plan_.hw_per_block) +
           " rows per block of " + std::to_string(plan_.threads) + " threads (" + std::to_string(plan_.vec) +
           " channels each), grid " + std::to_string(plan_.grid_x) + "x" + std::to_string(plan_.grid_y) +
           "x" + std::to_string(plan_.grid_z) + "; x read twice; sum of squares";
  }

 private:
  static int sm_count() {
    const DeviceInfo& d = device_info();
    return d.ok ? d.prop.multiProcessorCount : 1;
  }

  Config cfg_;
  Tensors t_;
  NhwcSumsProblem problem_;
  NhwcSumsPlan plan_;
  DeviceBuffer workspace_;
};

// ---- the device-to-device copy of the same bytes ----------------------------------------------------------

class Copy final : public Variant {
 public:
  explicit Copy(std::uint64_t bytes) : half_(static_cast<std::size_t>(bytes / 2)) {}

  std::string setup() override {
    Allocator alloc;
    alloc(&src_, half_, "copy source");
    alloc(&dst_, half_, "copy destination");
    if (!alloc.error().empty()) {
      return alloc.error();
    }
    if (std::string e = memset_async(src_, 0x5a); !e.empty()) {
      return e;
    }
    return synchronize("copy setup");
  }

  std::string verify() override {
    if (std::string e = memset_async(dst_, 0); !e.empty()) {
      return e;
    }
    if (op(bench_stream()) != Status::kSuccess) {
      return "cudaMemcpyAsync failed";
    }
    if (std::string e = synchronize("copy synchronize"); !e.empty()) {
      return e;
    }
    std::vector<unsigned char> got(std::min<std::size_t>(half_, 4096));
    for (std::size_t at : {std::size_t{0}, half_ - got.size()}) {
      if (cudaMemcpy(got.data(), dst_.as<unsigned char>() + at, got.size(), cudaMemcpyDeviceToHost) !=
          cudaSuccess) {
        return cuda_text(cudaGetLastError(), "download");
      }
      for (unsigned char v : got) {
        if (v != 0x5a) {
          return "copy mismatch";
        }
      }
    }
    return {};
  }

  Status op(cudaStream_t s) override {
    return cudaMemcpyAsync(dst_.data(), src_.data(), half_, cudaMemcpyDeviceToDevice, s) == cudaSuccess
               ? Status::kSuccess
               : Status::kErrorCudaRuntime;
  }

  std::string label() const override { return "cudaMemcpyAsync D2D, bytes/2 read + bytes/2 written"; }

 private:
  std::size_t half_;
  DeviceBuffer src_;
  DeviceBuffer dst_;
};

// ---- cuDNN batch normalization on (1, N*G, C/G, HW) + affine, loaded at run time
// ---------------------------

#if CULAYERS_BENCH_HAVE_CUDNN

// The cuDNN composite for cfg with element type T (T differs from cfg.dtype only for the fp16 fallback of
// a bf16 configuration: the same bytes, fp16 data).
template <class T>
class CudnnComposite final : public Variant {
 public:
  CudnnComposite(const Config& cfg, cudnnBatchNormMode_t mode) : cfg_(cfg), mode_(mode) {}

  ~CudnnComposite() override {
    if (x_desc_ != nullptr) {
      cudnn().destroy_tensor(x_desc_);
    }
    if (bn_desc_ != nullptr) {
      cudnn().destroy_tensor(bn_desc_);
    }
  }
  CudnnComposite(const CudnnComposite&) = delete;
  CudnnComposite& operator=(const CudnnComposite&) = delete;

  std::string setup() override {
    const Cudnn& dnn = cudnn();
    if (!dnn.error.empty()) {
      return dnn.error;
    }
    if (std::string e = make_tensors<T>(cfg_, &t_); !e.empty()) {
      return e;
    }
    const std::size_t tensor = static_cast<std::size_t>(cfg_.numel()) * sizeof(T);
    const std::int64_t ng = cfg_.n * cfg_.g;
    const std::size_t ng_bytes = static_cast<std::size_t>(ng) * sizeof(float);
    const std::size_t nc_bytes = static_cast<std::size_t>(cfg_.n * cfg_.c) * sizeof(float);
    Allocator alloc;
    alloc(&ones_, ng_bytes, "BN scale");
    alloc(&zeros_, ng_bytes, "BN bias");
    alloc(&running_mean_, ng_bytes, "BN running mean");
    alloc(&running_var_, ng_bytes, "BN running variance");
    if (cfg_.channels_last()) {
      alloc(&xt_, tensor, "x (NCHW)");
      alloc(&yt_, tensor, "y (NCHW)");
    }
    if (cfg_.backward) {
      alloc(&dg_, tensor, "dxhat");
      alloc(&p_sum_, nc_bytes, "p_sum");
      alloc(&q_sum_, nc_bytes, "q_sum");
      alloc(&dscale_, ng_bytes, "BN dscale");
      alloc(&dbias_, ng_bytes, "BN dbias");
      if (cfg_.channels_last()) {
        alloc(&dyt_, tensor, "dy (NCHW)");
        alloc(&dxt_, tensor, "dx (NCHW)");
      }
    }
    if (!alloc.error().empty()) {
      return alloc.error();
    }
    std::string err =
        upload_floats(ones_, std::vector<float>(static_cast<std::size_t>(ng), 1.0f), "upload ones");
    if (err.empty()) {
      err = upload_floats(zeros_, std::vector<float>(static_cast<std::size_t>(ng), 0.0f), "upload zeros");
    }
    if (err.empty()) {
      err = memset_async(running_mean_, 0);
    }
    if (err.empty()) {
      err = memset_async(running_var_, 0);
    }
    if (!err.empty()) {
      return err;
    }
    if (dnn.set_stream(dnn.handle, bench_stream()) != CUDNN_STATUS_SUCCESS ||
        dnn.create_tensor(&x_desc_) != CUDNN_STATUS_SUCCESS ||
        dnn.create_tensor(&bn_desc_) != CUDNN_STATUS_SUCCESS) {
      return "cuDNN handle/descriptor setup failed";
    }
    cudnnStatus_t s = dnn.set_tensor_4d(x_desc_, CUDNN_TENSOR_NCHW, cudnn_type<T>(), 1, static_cast<int>(ng),
                                        static_cast<int>(cfg_.cpg()), static_cast<int>(cfg_.hw));
    if (s == CUDNN_STATUS_SUCCESS) {
      s = dnn.set_tensor_4d(bn_desc_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, static_cast<int>(ng), 1, 1);
    }
    if (s != CUDNN_STATUS_SUCCESS) {
      last_status_ = s;
      return std::string("cudnnSetTensor4dDescriptor: ") + dnn.error_string(s);
    }
    // A first forward (and backward) tells whether cuDNN takes this dtype and mode; the backward's
    // statistics and x's NCHW copy are what the forward saves (untimed).
    if (cfg_.channels_last()) {
      if (Status st = launch_transpose(t_.x.as<T>(), xt_.as<T>(), cfg_.n, cfg_.hw, cfg_.c, bench_stream());
          st != Status::kSuccess) {
        return status_text(st, "transpose");
      }
    }
    if (Status st = bn_forward(bn_out()); st != Status::kSuccess) {
      return last_error_message();
    }
    if (cfg_.backward) {
      if (Status st = op(bench_stream()); st != Status::kSuccess) {
        return last_error_message();
      }
    }
    return synchronize("cuDNN setup synchronize");
  }

  std::string verify() override {
    const std::vector<DeviceBuffer*> outs = cfg_.backward
                                                ? std::vector<DeviceBuffer*>{&t_.dx, &t_.dgamma, &t_.dbeta}
                                                : std::vector<DeviceBuffer*>{&t_.y};
    for (DeviceBuffer* b : outs) {
      if (std::string e = memset_async(*b, 0xff); !e.empty()) {
        return e;
      }
    }
    if (Status st = op(bench_stream()); st != Status::kSuccess) {
      return status_text(st, "cuDNN composite");
    }
    if (std::string e = synchronize("cuDNN synchronize"); !e.empty()) {
      return e;
    }
    if (std::string e = perturb_outputs(outs, dtype_of<T>()); !e.empty()) {
      return e;
    }
    return cfg_.backward ? check_backward(cfg_, dtype_of<T>(), t_.x, t_.dy, t_.dx, t_.dgamma, t_.dbeta)
                         : check_forward(cfg_, dtype_of<T>(), t_.x, t_.y, nullptr, nullptr);
  }

  Status op(cudaStream_t s) override {
    const bool cl = cfg_.channels_last();
    Config nchw = cfg_;
    nchw.layout = Layout::kChannelsFirst;
    if (!cfg_.backward) {
      Status st =
          cl ? launch_transpose(t_.x.as<T>(), xt_.as<T>(), cfg_.n, cfg_.hw, cfg_.c, s) : Status::kSuccess;
      T* out = bn_out();
      if (st == Status::kSuccess) {
        st = bn_forward(out);
      }
      if (st == Status::kSuccess) { // gamma/beta per real channel (+SiLU), in place on the BN output
        st = launch_apply(nchw, static_cast<const T*>(out), t_.gamma.as<float>(), t_.beta.as<float>(), 0, out,
                          s);
      }
      if (st == Status::kSuccess && cl) {
        st = launch_transpose(static_cast<const T*>(out), t_.y.as<T>(), cfg_.n, cfg_.c, cfg_.hw, s);
      }
      return st;
    }
    const T* x = cl ? xt_.as<T>() : t_.x.as<T>();
    const T* dy = cl ? dyt_.as<T>() : t_.dy.as<T>();
    T* dx = cl ? dxt_.as<T>() : t_.dx.as<T>();
    Status st =
        cl ? launch_transpose(t_.dy.as<T>(), dyt_.as<T>(), cfg_.n, cfg_.hw, cfg_.c, s) : Status::kSuccess;
    if (st == Status::kSuccess) { // affine (+SiLU) backward: dxhat and per-(n, c) partials
      st =
          launch_channel_sums<T>(nchw, x, dy, t_.mean.as<float>(), t_.rstd.as<float>(), t_.gamma.as<float>(),
                                 t_.beta.as<float>(), dg_.as<T>(), p_sum_.as<float>(), q_sum_.as<float>(), s);
    }
    if (st == Status::kSuccess) {
      st = launch_reduce_batch(cfg_, p_sum_.as<float>(), q_sum_.as<float>(), t_.dgamma.as<float>(),
                               t_.dbeta.as<float>(), s);
    }
    if (st == Status::kSuccess) {
      const float one = 1.0f;
      const float zero = 0.0f;
      const Cudnn& dnn = cudnn();
      const cudnnStatus_t cs =
          dnn.bn_backward(dnn.handle, mode_, &one, &zero, &one, &zero, x_desc_, x, x_desc_, dg_.data(),
                          x_desc_, dx, bn_desc_, ones_.data(), dscale_.data(), dbias_.data(),
                          static_cast<double>(kEpsilon), t_.mean.data(), t_.rstd.data());
      if (cs != CUDNN_STATUS_SUCCESS) {
        last_status_ = cs;
        return detail::set_error(Status::kErrorCudaRuntime, "cudnnBatchNormalizationBackward (%s): %s",
                                 mode_name(), dnn.error_string(cs));
      }
    }
    if (st == Status::kSuccess && cl) {
      st = launch_transpose(static_cast<const T*>(dx), t_.dx.as<T>(), cfg_.n, cfg_.c, cfg_.hw, s);
    }
    return st;
  }

  bool unsupported() const override {
    return CUDNN_STATUS_CATEGORY(last_status_) == CUDNN_STATUS_NOT_SUPPORTED;
  }

  std::string label() const override {
    std::string l = cudnn_version_string() + " BN " + mode_name() + " on (1," +
                    std::to_string(cfg_.n * cfg_.g) + "," + std::to_string(cfg_.cpg()) + "," +
                    std::to_string(cfg_.hw) + ") " + dtype_tag(dtype_of<T>());
    if (dtype_of<T>() != cfg_.dtype) {
      l += " (over the bf16 bytes)";
    }
    l += cfg_.backward ? " + affine-bwd (1 block/(n,c)) + dgamma/dbeta over n"
                       : (cfg_.act == gn::Activation::kSiLU ? " + affine+SiLU kernel" : " + affine kernel");
    if (cfg_.channels_last()) {
      l += cfg_.backward ? "; NHWC: dy in, dx out transposed (timed), x's NCHW copy from the forward"
                         : "; NHWC: x in, y out transposed (timed)";
    }
    return l;
  }

 private:
  const char* mode_name() const {
    return mode_ == CUDNN_BATCHNORM_SPATIAL_PERSISTENT ? "SPATIAL_PERSISTENT" : "SPATIAL";
  }

  // The BN output in NCHW: y itself (channels first) or its NCHW staging buffer.
  T* bn_out() { return cfg_.channels_last() ? yt_.as<T>() : t_.y.as<T>(); }

  // BN forward training on x (NCHW) into out; saves mean and inverse std into t_.mean / t_.rstd.
  Status bn_forward(T* out) {
    const float one = 1.0f;
    const float zero = 0.0f;
    const Cudnn& dnn = cudnn();
    const void* x = cfg_.channels_last() ? xt_.data() : t_.x.data();
    const cudnnStatus_t cs =
        dnn.bn_forward_training(dnn.handle, mode_, &one, &zero, x_desc_, x, x_desc_, out, bn_desc_,
                                ones_.data(), zeros_.data(), 0.0, running_mean_.data(), running_var_.data(),
                                static_cast<double>(kEpsilon), t_.mean.data(), t_.rstd.data());
    if (cs != CUDNN_STATUS_SUCCESS) {
      last_status_ = cs;
      return detail::set_error(Status::kErrorCudaRuntime,
                               "cudnnBatchNormalizationForwardTraining (%s, %s): %s", mode_name(),
                               dtype_tag(dtype_of<T>()), dnn.error_string(cs));
    }
    return Status::kSuccess;
  }

  Config cfg_;
  cudnnBatchNormMode_t mode_;
  Tensors t_;
  DeviceBuffer ones_;
  DeviceBuffer zeros_;
  DeviceBuffer running_mean_;
  DeviceBuffer running_var_;
  DeviceBuffer xt_;
  DeviceBuffer yt_;
  DeviceBuffer dyt_;
  DeviceBuffer dxt_;
  DeviceBuffer dg_;
  DeviceBuffer p_sum_;
  DeviceBuffer q_sum_;
  DeviceBuffer dscale_;
  DeviceBuffer dbias_;
  cudnnTensorDescriptor_t x_desc_ = nullptr;
  cudnnTensorDescriptor_t bn_desc_ = nullptr;
  cudnnStatus_t last_status_ = CUDNN_STATUS_SUCCESS; // the last cuDNN call's failure, for unsupported()
};

// Candidate (dtype, mode) combinations for cfg; run_fastest_candidate times the fastest that verifies.
int cudnn_candidates(const Config& cfg) {
  return cfg.dtype == DType::kBFloat16 ? 4 : 2;
}

std::unique_ptr<Variant> make_cudnn(const Config& cfg, int candidate) {
  const cudnnBatchNormMode_t mode =
      candidate % 2 == 0 ? CUDNN_BATCHNORM_SPATIAL_PERSISTENT : CUDNN_BATCHNORM_SPATIAL;
  if (candidate >= 2) {
    return std::make_unique<CudnnComposite<__half>>(cfg, mode); // fp16 over the same bytes
  }
  switch (cfg.dtype) {
  case DType::kFloat32:
    return std::make_unique<CudnnComposite<float>>(cfg, mode);
  case DType::kFloat16:
    return std::make_unique<CudnnComposite<__half>>(cfg, mode);
  default:
    return std::make_unique<CudnnComposite<__nv_bfloat16>>(cfg, mode);
  }
}

#endif // CULAYERS_BENCH_HAVE_CUDNN

// ---- benchmark functions ----------------------------------------------------------------------------------

template <template <class> class V>
std::unique_ptr<Variant> make_typed(const Config& cfg) {
  switch (cfg.dtype) {
  case DType::kFloat32:
    return std::make_unique<V<float>>(cfg);
  case DType::kFloat16:
    return std::make_unique<V<__half>>(cfg);
  default:
    return std::make_unique<V<__nv_bfloat16>>(cfg);
  }
}

void BM_ours(benchmark::State& st, Config cfg) {
  std::unique_ptr<Variant> v = make_typed<Ours>(cfg);
  run_variant(st, config_name(cfg, "ours"), model_bytes(cfg), *v);
}

void BM_ours_no_tile(benchmark::State& st, Config cfg) {
  cfg.no_tile = true;
  std::unique_ptr<Variant> v = make_typed<Ours>(cfg);
  run_variant(st, config_name(cfg, "ours_no_tile"), model_bytes(cfg), *v);
}

void BM_ours_no_small(benchmark::State& st, Config cfg) {
  cfg.no_small = true;
  std::unique_ptr<Variant> v = make_typed<Ours>(cfg);
  run_variant(st, config_name(cfg, "ours_no_small"), model_bytes(cfg), *v);
}

void BM_ours_no_balance(benchmark::State& st, Config cfg) {
  cfg.no_balance = true;
  std::unique_ptr<Variant> v = make_typed<Ours>(cfg);
  run_variant(st, config_name(cfg, "ours_no_balance"), model_bytes(cfg), *v);
}

void BM_naive(benchmark::State& st, Config cfg) {
  std::unique_ptr<Variant> v = make_typed<Naive>(cfg);
  run_variant(st, config_name(cfg, "naive"), model_bytes(cfg), *v);
}

void BM_nhwc_sums(benchmark::State& st, Config cfg) {
  std::unique_ptr<Variant> v = make_typed<NhwcSums>(cfg);
  run_variant(st, config_name(cfg, "nhwc_sums"), model_bytes(cfg), *v);
}

void BM_copy(benchmark::State& st, std::uint64_t bytes, std::string key) {
  Copy v(bytes);
  run_variant(st, key, bytes, v);
}

#if CULAYERS_BENCH_HAVE_CUDNN
void BM_cudnn(benchmark::State& st, Config cfg) {
  if (!cudnn().error.empty()) {
    st.SkipWithError(cudnn().error.c_str());
    return;
  }
  run_fastest_candidate(st, config_name(cfg, "cudnn"), model_bytes(cfg), cudnn_candidates(cfg),
                        [&](int i) { return make_cudnn(cfg, i); });
}
#else
void BM_cudnn(benchmark::State& st, Config) {
  st.SkipWithError((std::string(kBaselineUnavailable) + "built without cudnn.h").c_str());
}
#endif

// ---- registration
// ------------------------------------------------------------------------------------------

std::string hw_tag(std::int64_t h, std::int64_t w) {
  return std::to_string(h) + "x" + std::to_string(w);
}

std::vector<Config> all_configs() {
  std::vector<Config> out;
  const auto add = [&](const std::string& shape, std::int64_t n, std::int64_t c, std::int64_t hw,
                       std::int64_t g, DType dtype, Layout layout, gn::Activation act, bool backward) {
    Config cfg;
    cfg.shape = shape;
    cfg.n = n;
    cfg.c = c;
    cfg.hw = hw;
    cfg.g = g;
    cfg.dtype = dtype;
    cfg.layout = layout;
    cfg.act = act;
    cfg.backward = backward;
    out.push_back(cfg);
  };
  constexpr Layout kNchw = Layout::kChannelsFirst;
  constexpr Layout kNhwc = Layout::kChannelsLast;
  constexpr gn::Activation kNone = gn::Activation::kNone;
  constexpr gn::Activation kSiLU = gn::Activation::kSiLU;

  // Shape 1, diffusion UNet (N = 2, G = 32). Of the 8 (dtype, layout, activation) combinations, the half
  // fraction in which every pair of factors still appears in all 4 of its combinations; each forward and
  // backward.
  struct S1 {
    std::int64_t c, h, w;
  };
  const S1 s1[] = {{320, 64, 64}, {640, 32, 32},   {1280, 16, 16},
                   {1280, 8, 8},  {320, 128, 128}, {1280, 32, 32}};
  struct Combo {
    DType dtype;
    Layout layout;
    gn::Activation act;
  };
  const Combo combos[] = {{DType::kBFloat16, kNhwc, kSiLU},
                          {DType::kBFloat16, kNchw, kNone},
                          {DType::kFloat16, kNhwc, kNone},
                          {DType::kFloat16, kNchw, kSiLU}};
  for (const S1& s : s1) {
    const std::string shape = "s1_C" + std::to_string(s.c) + "_" + hw_tag(s.h, s.w);
    for (const Combo& k : combos) {
      for (const bool bwd : {false, true}) {
        add(shape, 2, s.c, s.h * s.w, 32, k.dtype, k.layout, k.act, bwd);
      }
    }
  }
  // Shape 2, VAE decoder (N = 1, G = 32), bf16: forward with SiLU in both layouts, backward channels first.
  for (const S1& s : {S1{128, 1024, 1024}, S1{256, 512, 512}}) {
    const std::string shape = "s2_C" + std::to_string(s.c) + "_" + hw_tag(s.h, s.w);
    add(shape, 1, s.c, s.h * s.w, 32, DType::kBFloat16, kNchw, kSiLU, false);
    add(shape, 1, s.c, s.h * s.w, 32, DType::kBFloat16, kNhwc, kSiLU, false);
    add(shape, 1, s.c, s.h * s.w, 32, DType::kBFloat16, kNchw, kNone, true);
  }
  // Shape 3, training (N = 16, C = 256, 56x56, G = 32): fp32 and bf16, both layouts, forward and backward
  // with dgamma/dbeta.
  for (const DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    for (const Layout layout : {kNchw, kNhwc}) {
      for (const bool bwd : {false, true}) {
        add("s3_N16_C256_56x56", 16, 256, 56 * 56, 32, dtype, layout, kNone, bwd);
      }
    }
  }
  return out;
}

// ours_no_small only where the small-tensor rule can matter: the default threshold is 64 KB per SM (8.7 MB
// on an H100 or H200, 132 SMs), so 16 MB covers the cards this is run on.
constexpr std::int64_t kNoSmallMaxBytes = 16 << 20;

bool register_all() {
  // One copy case per (shape, element size, direction), moving the bytes of the first configuration with
  // that key (the backward's byte count differs by C * 4 with and without an activation; the harness's
  // pct_of_copy counter uses each case's exact bytes).
  std::set<std::string> copied;
  for (const Config& cfg : all_configs()) {
    const std::uint64_t bytes = model_bytes(cfg);
    const std::int64_t iterations = iterations_for(bytes);
    const auto reg = [&](const std::string& name, auto fn, auto... args) {
      benchmark::RegisterBenchmark(name.c_str(), fn, args...)->Apply(configure)->Iterations(iterations);
    };
    reg(config_name(cfg, "ours"), BM_ours, cfg);
    if (cfg.channels_last()) {
      // What the tile path replaced (the per-group block, split or warp plan), in the same run.
      reg(config_name(cfg, "ours_no_tile"), BM_ours_no_tile, cfg);
    } else if (cfg.numel() * static_cast<std::int64_t>(dtype_size(cfg.dtype)) <= kNoSmallMaxBytes) {
      // The plan before the small-tensor rule (split_min_bytes), in the same run.
      reg(config_name(cfg, "ours_no_small"), BM_ours_no_small, cfg);
    }
    if (cfg.shape.rfind("s2_", 0) == 0 || (cfg.shape.rfind("s3_", 0) == 0 && cfg.channels_last())) {
      // The split / tile count before the whole-wave balance, in the same run.
      reg(config_name(cfg, "ours_no_balance"), BM_ours_no_balance, cfg);
    }
    reg(config_name(cfg, "naive"), BM_naive, cfg);
    reg(config_name(cfg, "cudnn"), BM_cudnn, cfg);
    if (cfg.channels_last() && !cfg.backward) {
      reg(config_name(cfg, "nhwc_sums"), BM_nhwc_sums, cfg);
    }
    const std::string copy_name = std::string("group_norm/") + cfg.shape + "/" +
                                  std::to_string(dtype_size(cfg.dtype)) + "B/" +
                                  (cfg.backward ? "bwd" : "fwd") + "/copy_same_bytes";
    if (copied.insert(copy_name).second) {
      reg(copy_name, BM_copy, bytes, copy_name);
    }
  }
  return true;
}

[[maybe_unused]] const bool kRegistered = register_all();

} // namespace
} // namespace bench
} // namespace culayers
