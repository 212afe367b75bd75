// Batch normalization's two small ops (the BatchNormalization layer's device work; the statistics
// themselves come from masked_reduce's kMoments, see docs/semantics.md, "Layers": BatchNormalization):
//
//  - batch_norm_apply: with x viewed as [rows, C, inner] (channels last: inner = 1 and every axis but
//    the last flattened into rows; channels first [N, C, *spatial]: rows = N, inner = the spatial
//    product), per element
//        y = (x - mean[c]) * rsqrt(variance[c] + epsilon) * gamma[c] + beta[c]
//    (gamma = 1 / beta = 0 when absent). x and y are float32, float16 or bfloat16; mean, variance,
//    gamma and beta are float32 [C] (Keras's mixed-precision convention: variables stay float32); the
//    arithmetic is float32 and y is rounded once to its dtype. x is read once and y written once:
//    16-byte vector accesses when x and y are 16-byte aligned (any C: a vector's channels wrap around
//    the row), narrower vectors for narrower alignment, a scalar path for pointers aligned only to their
//    element, and a scalar tail for the last rows * C * inner % N elements (a vector may span channels:
//    the kernel tracks the channel incrementally, no division per element). The per-channel factors (mean,
//    rsqrt(variance + epsilon) * gamma, beta) are computed by every block once into shared memory when C
//    is at most kMaxSharedChannels, otherwise per element from global memory (cached reads). A
//    grid-stride loop over a grid sized to the whole GPU.
//
//  - batch_norm_merge_moments: per-channel batch statistics for channels-first input from the per-(row,
//    channel) moments masked_reduce's kMoments computes over x viewed as [rows * C, inner, 1] (each
//    plane has the same count, inner): Chan's merge for equal counts, in double and in row order
//    (deterministic), rounded once to float:
//        mean[c]     = sum_r mean[r, c] / rows
//        variance[c] = sum_r variance[r, c] / rows + sum_r (mean[r, c] - mean[c])^2 / rows
//    (the biased variance of the union), and the total count rows * inner for the moving update
//    (saturated at INT32_MAX, where n / (n - 1) is 1 in float anyway). Reads 3 x rows x C floats
//    (the means twice), coalesced: a block per 32 consecutive channels.
//
//  - batch_norm_moving_update: Keras's moving-average update with the unbiased batch variance, guarded
//    by the number of valid positions n = *count, which lives in device memory (masked_reduce's counts
//    output) and is never read by the host:
//        if n >= 2:
//          moving_mean[c]     = moving_mean[c] * momentum + mean[c] * (1 - momentum)
//          moving_variance[c] = moving_variance[c] * momentum + variance[c] * n / (n - 1) * (1 - momentum)
//        else: nothing changes.
//    Exact arithmetic, identical bits on every backend: 1 - momentum is computed on the host in double
//    from the float momentum and rounded once to float; n / (n - 1) is a double division rounded once to
//    float; then float32 with explicit roundings: v' = fma(batch, 1 - momentum, v * momentum), the
//    unbiased variance being the float product variance[c] * float(n / (n - 1)).
//
// Every run() enqueues on the caller's stream and returns; it never synchronizes or allocates, queries
// device properties once per device (cached), and is safe under CUDA graph capture (all state is read on
// the device). The apply and the update are elementwise and the merge adds in a fixed order, so all three are
// deterministic. Errors: "<op>: <argument>: <reason>" in
// last_error_message(); on any error nothing is launched or written.
//
// C API: culayers/c/batch_norm.h (culayersBatchNormApply, culayersBatchNormMergeMoments,
// culayersBatchNormMovingUpdate).
#ifndef CULAYERS_BATCH_NORM_HPP_
#define CULAYERS_BATCH_NORM_HPP_

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace batch_norm {

/// Above this many channels the apply kernel reads its per-channel parameters from global memory per
/// element instead of staging them in shared memory (3 floats per channel: 24 KB at 2048 channels, so 8
/// blocks of 256 threads still fit an sm_90 SM).
inline constexpr std::int64_t kMaxSharedChannels = 2048;

/// y = (x - mean) * rsqrt(variance + epsilon) * gamma + beta over x viewed as [rows, channels, inner].
/// Preconditions: y == x (in place) or y does not overlap x; no tensor overlaps the parameters; every
/// pointer aligned to its element size. rows * channels * inner == 0 launches nothing (pointers may be
/// null).
struct BatchNormApplyArgs {
  DType dtype = DType::kFloat32; ///< of x and y: float32, float16 or bfloat16
  const void* x = nullptr;       ///< [rows, channels, inner]
  std::int64_t rows = 0;
  std::int64_t channels = 0;
  std::int64_t inner = 1;          ///< elements per (row, channel) run: 1 = channels last; >= 0
  const float* mean = nullptr;     ///< [channels], required
  const float* variance = nullptr; ///< [channels], required (biased or moving variance, >= 0)
  const float* gamma = nullptr;    ///< optional [channels] (scale)
  const float* beta = nullptr;     ///< optional [channels] (center)
  float epsilon = 1e-3f;           ///< > 0 and finite
  void* y = nullptr;               ///< [rows, channels, inner] in dtype
  int vector_width = 0; ///< upper bound on the vector width in elements (0, 1, 2, 4, 8); 0 = widest
  int max_blocks = 0;   ///< grid cap (tuning and tests); 0 = the whole GPU
};

/// Validates everything run() would use; never touches device memory.
[[nodiscard]] Status can_implement(const BatchNormApplyArgs& args);
/// Always 0.
std::size_t workspace_size(const BatchNormApplyArgs& args);
/// The vector width (elements per access) run() uses for these arguments; 0 if they are invalid.
int selected_vector_width(const BatchNormApplyArgs& args);
/// Enqueues the apply on `stream` (workspace unused: pass nullptr, 0).
[[nodiscard]] Status run(const BatchNormApplyArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);

/// Per-channel statistics from per-(row, channel) moments of equal counts (see the file comment).
/// Preconditions: the outputs overlap neither each other nor the inputs; pointers aligned to 4 bytes.
/// channels == 0 launches nothing; rows == 0 or count_per_row == 0 writes mean 0, variance 0, count 0
/// without reading the inputs (they may be null then).
struct BatchNormMergeMomentsArgs {
  std::int64_t rows = 0;
  std::int64_t channels = 0;
  std::int64_t count_per_row = 0;    ///< elements behind each (row, channel) moment (>= 0)
  const float* mean = nullptr;       ///< [rows, channels]
  const float* variance = nullptr;   ///< [rows, channels], biased
  float* mean_out = nullptr;         ///< [channels]
  float* variance_out = nullptr;     ///< [channels], biased
  std::int32_t* count_out = nullptr; ///< optional, one int32: rows * count_per_row, saturated
  int max_blocks = 0; ///< grid cap (tests: the grid-stride loop over 32-channel tiles); 0 = automatic
};

[[nodiscard]] Status can_implement(const BatchNormMergeMomentsArgs& args);
/// Always 0.
std::size_t workspace_size(const BatchNormMergeMomentsArgs& args);
[[nodiscard]] Status run(const BatchNormMergeMomentsArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);

/// The moving-statistics update (see the file comment). Preconditions: moving_mean and moving_variance
/// overlap neither each other nor any input; pointers aligned to 4 bytes.
struct BatchNormMovingUpdateArgs {
  std::int64_t channels = 0;           ///< C; 0 launches nothing
  float momentum = 0.99f;              ///< in [0, 1]
  const float* mean = nullptr;         ///< [C] batch mean
  const float* variance = nullptr;     ///< [C] batch biased variance
  const std::int32_t* count = nullptr; ///< one int32 in device memory: valid positions of the batch
  float* moving_mean = nullptr;        ///< [C], updated in place
  float* moving_variance = nullptr;    ///< [C], updated in place
};

[[nodiscard]] Status can_implement(const BatchNormMovingUpdateArgs& args);
/// Always 0.
std::size_t workspace_size(const BatchNormMovingUpdateArgs& args);
[[nodiscard]] Status run(const BatchNormMovingUpdateArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);

} // namespace batch_norm
CULAYERS_NAMESPACE_END

#endif // CULAYERS_BATCH_NORM_HPP_
