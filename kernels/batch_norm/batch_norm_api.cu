// Host side of the batch-normalization ops (include/culayers/batch_norm.hpp): validation, the apply
// kernel's plan (vector width, shared staging, grid), the moments merge kernel (channels first) and the
// moving-statistics update kernel.
#include "kernels/common/arg_checks.hpp"
#include "kernels/common/device_info.cuh"
#include "kernels/batch_norm/batch_norm_kernels.cuh"

#include "culayers/batch_norm.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace batch_norm {
namespace {

constexpr int kUpdateThreads = 256;
constexpr std::int64_t kMaxUpdateBlocks = 1024;

struct UpdateParams {
  const float* mean;
  const float* variance;
  const std::int32_t* count;
  float* moving_mean;
  float* moving_variance;
  std::int64_t channels;
  float momentum;
  float one_minus_momentum;
};

// Explicit roundings (__fmul_rn / __fmaf_rn): no contraction choice by the compiler, so every backend
// computes the same bits (the header documents the formula).
CULAYERS_GLOBAL void __launch_bounds__(kUpdateThreads) batch_norm_moving_update_kernel(const UpdateParams p) {
  const std::int32_t n = load(p.count);
  if (n < 2) {
    return;
  }
  const float unbias = static_cast<float>(static_cast<double>(n) / static_cast<double>(n - 1));
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < p.channels;
       c += stride) {
    const float mm = load(p.moving_mean + c);
    const float mv = load(p.moving_variance + c);
    const float unbiased = __fmul_rn(load(p.variance + c), unbias);
    store(p.moving_mean + c, __fmaf_rn(load(p.mean + c), p.one_minus_momentum, __fmul_rn(mm, p.momentum)));
    store(p.moving_variance + c, __fmaf_rn(unbiased, p.one_minus_momentum, __fmul_rn(mv, p.momentum)));
  }
}

// A block of 8 warps per tile of 32 consecutive channels, grid-stride over the tiles: lane l owns channel
// tile + l and warp w the rows w, w + 8, ..., so every warp-wide load reads 32 consecutive floats of one
// row (coalesced). Up to 1024 blocks (32768 channels in flight: the merge reads only 3 x rows x C floats,
// so more parallelism buys nothing).
constexpr int kMergeWarps = 8;
constexpr int kMergeThreads = kMergeWarps * kWarpSize;
constexpr std::int64_t kMaxMergeBlocks = 1024;

struct MergeParams {
  const float* mean;     // [rows, channels]
  const float* variance; // [rows, channels]
  float* mean_out;
  float* variance_out;
  std::int32_t* count_out; // optional
  std::int64_t rows;
  std::int64_t channels;
  std::int32_t count; // rows * count_per_row, saturated
  int empty;          // rows * count_per_row == 0: zeros, nothing read
};

// Each thread accumulates its rows in double; the 8 warps' partials of a channel are then added in warp
// order by warp 0 (deterministic: the order depends only on the block shape). Two passes over the tile:
// the mean, then the within-part variances and the spread of the part means around it.
CULAYERS_GLOBAL void __launch_bounds__(kMergeThreads) batch_norm_merge_moments_kernel(const MergeParams p) {
  CULAYERS_DYNAMIC_SMEM(double, partial); // [2][kMergeWarps][32]
  const std::int64_t C = p.channels;
  const unsigned lane = threadIdx.x % kWarpSize;
  const unsigned warp = threadIdx.x / kWarpSize;
  if (blockIdx.x == 0 && threadIdx.x == 0 && p.count_out != nullptr) {
    store(p.count_out, p.count);
  }
  const double inv_rows = p.rows > 0 ? 1.0 / static_cast<double>(p.rows) : 0.0;
  double* part0 = partial;
  double* part1 = partial + kMergeWarps * kWarpSize;
  for (std::int64_t tile = static_cast<std::int64_t>(blockIdx.x) * kWarpSize; tile < C;
       tile += static_cast<std::int64_t>(gridDim.x) * kWarpSize) {
    const std::int64_t c = tile + lane;
    const bool active = c < C;
    if (p.empty != 0) {
      if (warp == 0 && active) {
        store(p.mean_out + c, 0.0f);
        store(p.variance_out + c, 0.0f);
      }
      continue;
    }
    double sum = 0.0;
    if (active) {
      for (std::int64_t r = warp; r < p.rows; r += kMergeWarps) {
        sum += static_cast<double>(load(p.mean + r * C + c));
      }
    }
    part0[warp * kWarpSize + lane] = sum;
    __syncthreads();
    if (warp == 0) {
      double total = 0.0;
      for (int w = 0; w < kMergeWarps; ++w) {
        total += part0[w * kWarpSize + lane];
      }
      part1[lane] = total * inv_rows; // the mean, for every warp
    }
    __syncthreads();
    const double mean = part1[lane];
    __syncthreads(); // part1 is rewritten below
    double within = 0.0;
    double between = 0.0;
    if (active) {
      for (std::int64_t r = warp; r < p.rows; r += kMergeWarps) {
        within += static_cast<double>(load(p.variance + r * C + c));
        const double d = static_cast<double>(load(p.mean + r * C + c)) - mean;
        between += d * d;
      }
    }
    part0[warp * kWarpSize + lane] = within;
    part1[warp * kWarpSize + lane] = between;
    __syncthreads();
    if (warp == 0 && active) {
      double w_total = 0.0;
      double b_total = 0.0;
      for (int w = 0; w < kMergeWarps; ++w) {
        w_total += part0[w * kWarpSize + lane];
        b_total += part1[w * kWarpSize + lane];
      }
      store(p.mean_out + c, static_cast<float>(mean));
      store(p.variance_out + c, static_cast<float>((w_total + b_total) * inv_rows));
    }
    __syncthreads(); // the partials are rewritten by the next tile
  }
}

} // namespace
} // namespace batch_norm
} // namespace kernels

namespace batch_norm {
namespace {

using ::culayers::detail::set_error;
namespace kb = ::culayers::kernels::batch_norm;

constexpr const char* kApplyOp = "batch_norm_apply";
constexpr const char* kUpdateOp = "batch_norm_moving_update";
constexpr const char* kMergeOp = "batch_norm_merge_moments";

using kernels::misaligned;
using kernels::overlaps;

std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

/// Widest V (power of two, V * elem <= 16, V <= cap when cap > 0) with x and y aligned to V * elem bytes.
int widest_vector(std::size_t elem, const void* x, const void* y, int cap) {
  int v = static_cast<int>(16 / elem);
  if (cap > 0) {
    v = std::min(v, cap);
  }
  while (v > 1 && (misaligned(x, static_cast<std::size_t>(v) * elem) ||
                   misaligned(y, static_cast<std::size_t>(v) * elem))) {
    v /= 2;
  }
  return v;
}

Status check_apply(const BatchNormApplyArgs& a) {
  const char* op = kApplyOp;
  if (!is_floating_point(a.dtype)) {
    return set_error(Status::kErrorInvalidDType, "%s: dtype: %s (%d) is not float32, float16 or bfloat16", op,
                     dtype_name(a.dtype), static_cast<int>(a.dtype));
  }
  if (a.rows < 0 || a.channels < 0 || a.inner < 0) {
    return set_error(
        Status::kErrorInvalidShape, "%s: sizes: rows %lld, channels %lld and inner %lld must be >= 0", op,
        static_cast<long long>(a.rows), static_cast<long long>(a.channels), static_cast<long long>(a.inner));
  }
  const std::size_t elem = dtype_size(a.dtype);
  std::int64_t planes = 0;
  std::int64_t n = 0;
  std::int64_t bytes = 0;
  if (!culayers::detail::checked_mul(a.rows, a.channels, &planes) ||
      !culayers::detail::checked_mul(planes, a.inner, &n) || !culayers::detail::checked_mul(n, 16, &bytes)) {
    return set_error(Status::kErrorSizeLimit,
                     "%s: sizes: rows x channels x inner overflows 64-bit byte offsets", op);
  }
  if (!(a.epsilon > 0.0f) || !std::isfinite(a.epsilon)) {
    return set_error(Status::kErrorInvalidValue, "%s: epsilon: %g, must be positive and finite", op,
                     static_cast<double>(a.epsilon));
  }
  const int vw = a.vector_width;
  if (vw != 0 && ((vw != 1 && vw != 2 && vw != 4 && vw != 8) || static_cast<std::size_t>(vw) * elem > 16)) {
    return set_error(Status::kErrorInvalidValue,
                     "%s: vector_width: %d is not 0, or 1, 2, 4, 8 with at most 16 bytes of %s", op, vw,
                     dtype_name(a.dtype));
  }
  if (a.max_blocks < 0) {
    return set_error(Status::kErrorInvalidValue, "%s: max_blocks: %d is negative", op, a.max_blocks);
  }
  if (n > 0) {
    const struct {
      const void* p;
      const char* name;
    } required[] = {{a.x, "x"}, {a.y, "y"}, {a.mean, "mean"}, {a.variance, "variance"}};
    for (const auto& r : required) {
      if (r.p == nullptr) {
        return set_error(Status::kErrorNullPointer, "%s: %s: is null", op, r.name);
      }
    }
  }
  if (misaligned(a.x, elem) || misaligned(a.y, elem)) {
    return set_error(Status::kErrorMisaligned, "%s: %s: not aligned to its %zu-byte elements", op,
                     misaligned(a.x, elem) ? "x" : "y", elem);
  }
  const struct {
    const float* p;
    const char* name;
  } params[] = {{a.mean, "mean"}, {a.variance, "variance"}, {a.gamma, "gamma"}, {a.beta, "beta"}};
  for (const auto& param : params) {
    if (misaligned(param.p, 4)) {
      return set_error(Status::kErrorMisaligned, "%s: %s: not aligned to 4 bytes", op, param.name);
    }
  }
  const std::size_t nb = static_cast<std::size_t>(n) * elem;
  const std::size_t cb = static_cast<std::size_t>(a.channels) * 4;
  if (a.x != a.y && overlaps(a.x, nb, a.y, nb)) {
    return set_error(Status::kErrorInconsistentArguments,
                     "%s: y: overlaps x without being equal to it (only exact in-place is allowed)", op);
  }
  for (const auto& param : params) {
    if (overlaps(a.y, nb, param.p, cb)) {
      return set_error(Status::kErrorInconsistentArguments, "%s: y: overlaps %s (it would be overwritten)",
                       op, param.name);
    }
  }
  return Status::kSuccess;
}

/// Precondition: check_apply(a) succeeded and rows * channels * inner > 0.
Status plan_apply(const BatchNormApplyArgs& a, kb::ApplyPlan* plan, kb::ApplyParams* params) {
  const std::size_t elem = dtype_size(a.dtype);
  const std::int64_t n = a.rows * a.channels * a.inner;
  const int vec = widest_vector(elem, a.x, a.y, a.vector_width);
  const bool shared = a.channels <= kb::kSharedChannels;
  const std::size_t smem = shared ? static_cast<std::size_t>(a.channels) * 3 * sizeof(float) : 0;
  std::int64_t blocks = std::max<std::int64_t>(1, ceil_div(n / vec, kb::kThreads));
  std::int64_t cap = a.max_blocks;
  if (cap == 0) {
    kernels::DeviceInfo info{};
    if (Status s = kernels::device_info(&info, kApplyOp); !ok(s)) {
      return s;
    }
    std::int64_t per_sm = std::max(1, info.threads_per_sm / kb::kThreads);
    if (smem > 0) {
      per_sm = std::clamp<std::int64_t>(static_cast<std::int64_t>(info.smem_per_sm) / smem, 1, per_sm);
    }
    cap = per_sm * info.sm_count;
  }
  blocks = std::min(blocks, cap);
  plan->vec = vec;
  plan->shared = shared ? 1 : 0;
  plan->planes = a.inner > 1 ? 1 : 0;
  plan->blocks = static_cast<unsigned>(blocks);
  plan->smem = smem;
  params->x = a.x;
  params->y = a.y;
  params->mean = a.mean;
  params->variance = a.variance;
  params->gamma = a.gamma;
  params->beta = a.beta;
  params->n = n;
  params->channels = a.channels;
  params->inner = a.inner;
  const std::int64_t grid_elements = blocks * kb::kThreads * vec;
  params->step = (grid_elements / a.inner) % a.channels;
  params->step_j = grid_elements % a.inner;
  params->epsilon = a.epsilon;
  return Status::kSuccess;
}

} // namespace

Status can_implement(const BatchNormApplyArgs& args) {
  return check_apply(args);
}

std::size_t workspace_size(const BatchNormApplyArgs&) {
  return 0;
}

int selected_vector_width(const BatchNormApplyArgs& args) {
  if (!ok(check_apply(args))) {
    return 0;
  }
  return widest_vector(dtype_size(args.dtype), args.x, args.y, args.vector_width);
}

Status run(const BatchNormApplyArgs& args, void*, std::size_t, cudaStream_t stream) {
  if (Status s = check_apply(args); !ok(s)) {
    return s;
  }
  if (args.rows * args.channels * args.inner == 0) {
    return Status::kSuccess;
  }
  kb::ApplyPlan plan{};
  kb::ApplyParams params{};
  if (Status s = plan_apply(args, &plan, &params); !ok(s)) {
    return s;
  }
  return kernels::with_activation_type(
      args.dtype, [&](auto tag) { return kb::launch_apply<decltype(tag)>(plan, params, stream); });
}

Status can_implement(const BatchNormMergeMomentsArgs& a) {
  const char* op = kMergeOp;
  if (a.rows < 0 || a.channels < 0 || a.count_per_row < 0) {
    return set_error(Status::kErrorInvalidShape,
                     "%s: sizes: rows %lld, channels %lld and count_per_row %lld must be >= 0", op,
                     static_cast<long long>(a.rows), static_cast<long long>(a.channels),
                     static_cast<long long>(a.count_per_row));
  }
  std::int64_t n = 0;
  std::int64_t bytes = 0;
  if (!culayers::detail::checked_mul(a.rows, a.channels, &n) ||
      !culayers::detail::checked_mul(n, 4, &bytes)) {
    return set_error(Status::kErrorSizeLimit, "%s: sizes: rows x channels overflows 64-bit byte offsets", op);
  }
  if (a.max_blocks < 0) {
    return set_error(Status::kErrorInvalidValue, "%s: max_blocks: %d is negative", op, a.max_blocks);
  }
  if (a.channels == 0) {
    return Status::kSuccess;
  }
  const bool reads = a.rows > 0 && a.count_per_row > 0;
  const struct {
    const void* p;
    const char* name;
    bool required;
  } ptrs[] = {{a.mean, "mean", reads},
              {a.variance, "variance", reads},
              {a.mean_out, "mean_out", true},
              {a.variance_out, "variance_out", true},
              {a.count_out, "count_out", false}};
  for (const auto& r : ptrs) {
    if (r.required && r.p == nullptr) {
      return set_error(Status::kErrorNullPointer, "%s: %s: is null", op, r.name);
    }
    if (misaligned(r.p, 4)) {
      return set_error(Status::kErrorMisaligned, "%s: %s: not aligned to 4 bytes", op, r.name);
    }
  }
  const std::size_t cb = static_cast<std::size_t>(a.channels) * 4;
  const std::size_t ib = reads ? static_cast<std::size_t>(n) * 4 : 0;
  const struct {
    const void* p;
    std::size_t bytes;
    const char* name;
  } outs[] = {
      {a.mean_out, cb, "mean_out"}, {a.variance_out, cb, "variance_out"}, {a.count_out, 4, "count_out"}};
  for (std::size_t i = 0; i < 3; ++i) {
    for (std::size_t k = i + 1; k < 3; ++k) {
      if (overlaps(outs[i].p, outs[i].bytes, outs[k].p, outs[k].bytes)) {
        return set_error(Status::kErrorInconsistentArguments, "%s: %s: overlaps %s", op, outs[k].name,
                         outs[i].name);
      }
    }
    if (overlaps(outs[i].p, outs[i].bytes, a.mean, ib) ||
        overlaps(outs[i].p, outs[i].bytes, a.variance, ib)) {
      return set_error(Status::kErrorInconsistentArguments, "%s: %s: overlaps mean or variance", op,
                       outs[i].name);
    }
  }
  return Status::kSuccess;
}

std::size_t workspace_size(const BatchNormMergeMomentsArgs&) {
  return 0;
}

Status run(const BatchNormMergeMomentsArgs& a, void*, std::size_t, cudaStream_t stream) {
  if (Status s = can_implement(a); !ok(s)) {
    return s;
  }
  if (a.channels == 0) {
    return Status::kSuccess;
  }
  std::int64_t total = 0;
  const bool fits = culayers::detail::checked_mul(a.rows, a.count_per_row, &total) && total <= INT32_MAX;
  kb::MergeParams p{};
  p.mean = a.mean;
  p.variance = a.variance;
  p.mean_out = a.mean_out;
  p.variance_out = a.variance_out;
  p.count_out = a.count_out;
  p.rows = a.rows;
  p.channels = a.channels;
  p.count = fits ? static_cast<std::int32_t>(total) : INT32_MAX;
  p.empty = a.rows == 0 || a.count_per_row == 0 ? 1 : 0;
  std::int64_t blocks = std::min(ceil_div(a.channels, kernels::kWarpSize), kb::kMaxMergeBlocks);
  if (a.max_blocks > 0) {
    blocks = std::min<std::int64_t>(blocks, a.max_blocks);
  }
  return kernels::check_launch(CULAYERS_LAUNCH(kb::batch_norm_merge_moments_kernel,
                                               dim3(static_cast<unsigned>(blocks)), dim3(kb::kMergeThreads),
                                               2 * kb::kMergeThreads * sizeof(double), stream, p),
                               kMergeOp);
}

Status can_implement(const BatchNormMovingUpdateArgs& a) {
  const char* op = kUpdateOp;
  if (a.channels < 0) {
    return set_error(Status::kErrorInvalidShape, "%s: channels: %lld must be >= 0", op,
                     static_cast<long long>(a.channels));
  }
  if (a.channels > INT64_MAX / 4) {
    return set_error(Status::kErrorSizeLimit, "%s: channels: %lld overflows 64-bit byte offsets", op,
                     static_cast<long long>(a.channels));
  }
  if (!(a.momentum >= 0.0f && a.momentum <= 1.0f)) {
    return set_error(Status::kErrorInvalidValue, "%s: momentum: %g is not in [0, 1]", op,
                     static_cast<double>(a.momentum));
  }
  if (a.channels == 0) {
    return Status::kSuccess;
  }
  const struct {
    const void* p;
    const char* name;
  } required[] = {{a.mean, "mean"},
                  {a.variance, "variance"},
                  {a.count, "count"},
                  {a.moving_mean, "moving_mean"},
                  {a.moving_variance, "moving_variance"}};
  for (const auto& r : required) {
    if (r.p == nullptr) {
      return set_error(Status::kErrorNullPointer, "%s: %s: is null", op, r.name);
    }
    if (misaligned(r.p, 4)) {
      return set_error(Status::kErrorMisaligned, "%s: %s: not aligned to 4 bytes", op, r.name);
    }
  }
  const std::size_t cb = static_cast<std::size_t>(a.channels) * 4;
  if (overlaps(a.moving_mean, cb, a.moving_variance, cb)) {
    return set_error(Status::kErrorInconsistentArguments, "%s: moving_variance: overlaps moving_mean", op);
  }
  const struct {
    const void* p;
    std::size_t bytes;
    const char* name;
  } inputs[] = {{a.mean, cb, "mean"}, {a.variance, cb, "variance"}, {a.count, 4, "count"}};
  for (const auto& in : inputs) {
    for (const auto& [out, name] : {std::pair<const float*, const char*>{a.moving_mean, "moving_mean"},
                                    {a.moving_variance, "moving_variance"}}) {
      if (overlaps(out, cb, in.p, in.bytes)) {
        return set_error(Status::kErrorInconsistentArguments, "%s: %s: overlaps %s", op, name, in.name);
      }
    }
  }
  return Status::kSuccess;
}

std::size_t workspace_size(const BatchNormMovingUpdateArgs&) {
  return 0;
}

Status run(const BatchNormMovingUpdateArgs& a, void*, std::size_t, cudaStream_t stream) {
  if (Status s = can_implement(a); !ok(s)) {
    return s;
  }
  if (a.channels == 0) {
    return Status::kSuccess;
  }
  const kb::UpdateParams p{a.mean,
                           a.variance,
                           a.count,
                           a.moving_mean,
                           a.moving_variance,
                           a.channels,
                           a.momentum,
                           static_cast<float>(1.0 - static_cast<double>(a.momentum))};
  const std::int64_t blocks = std::min(ceil_div(a.channels, kb::kUpdateThreads), kb::kMaxUpdateBlocks);
  return kernels::check_launch(CULAYERS_LAUNCH(kb::batch_norm_moving_update_kernel,
                                               dim3(static_cast<unsigned>(blocks)), dim3(kb::kUpdateThreads),
                                               0, stream, p),
                               kUpdateOp);
}

} // namespace batch_norm
CULAYERS_NAMESPACE_END
