/* culayers C API: the batch-normalization ops (see culayers/batch_norm.hpp for the full semantics; every
 * function here is a thin shim over the C++ op of the same name).
 *
 * Pure C99 (also valid C++). A training-phase batch normalization is: the statistics (channels last:
 * culayersMaskedReduce with CULAYERS_MASKED_REDUCE_MOMENTS over x viewed as [1, rows, C]; channels first:
 * CULAYERS_MASKED_REDUCE_MOMENTS over [rows * C, inner, 1], then culayersBatchNormMergeMoments), then
 * culayersBatchNormApply with those statistics, then culayersBatchNormMovingUpdate. Inference is
 * culayersBatchNormApply with the moving statistics. No function synchronizes or allocates; all are safe
 * under CUDA stream capture. On failure a function returns a status and culayersGetLastErrorMessage()
 * says "op: argument: reason"; nothing was enqueued or written. */
#ifndef CULAYERS_C_BATCH_NORM_H_
#define CULAYERS_C_BATCH_NORM_H_

#include <stddef.h>
#include <stdint.h>

#include "culayers/culayers.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The C stream type, in case this header is seen before culayers.h declares it. */
#ifndef CULAYERS_STREAM_T_DEFINED
#  define CULAYERS_STREAM_T_DEFINED
typedef struct CUstream_st* culayersStream_t;
#endif

/* y = (x - mean[c]) * rsqrt(variance[c] + epsilon) * gamma[c] + beta[c] over x viewed as
 * [rows, channels, inner] (channel of flat index i: (i / inner) % channels; inner 1 = channels last).
 * culayersBatchNormApplyArgsInit fills the defaults (float32, inner 1, epsilon 1e-3, everything else
 * zero / NULL). */
typedef struct culayersBatchNormApplyArgs_t {
  culayersDType_t dtype; /* of x and y: float32, float16 or bfloat16 */
  const void* x;
  int64_t rows;
  int64_t channels;
  int64_t inner;
  const float* mean;     /* [channels], required */
  const float* variance; /* [channels], required, >= 0 */
  const float* gamma;    /* optional [channels] (NULL: 1) */
  const float* beta;     /* optional [channels] (NULL: 0) */
  float epsilon;         /* > 0 and finite */
  void* y;               /* may equal x */
  int vector_width;      /* upper bound on the vector width in elements (0 = widest; 1, 2, 4, 8) */
  int max_blocks;        /* grid cap, 0 = the whole GPU (tuning/test override) */
} culayersBatchNormApplyArgs_t;

/* Per-channel mean and biased variance of the union of rows equal-count parts from each part's moments
 * ([rows, channels] float32), in double and in row order; count_out (optional, one int32) receives
 * rows * count_per_row, saturated at INT32_MAX. */
typedef struct culayersBatchNormMergeMomentsArgs_t {
  int64_t rows;
  int64_t channels;
  int64_t count_per_row; /* >= 0; 0 (or rows 0): zeros written, nothing read */
  const float* mean;     /* [rows, channels] */
  const float* variance; /* [rows, channels], biased */
  float* mean_out;       /* [channels] */
  float* variance_out;   /* [channels], biased */
  int32_t* count_out;    /* optional */
  int max_blocks;        /* grid cap, 0 = automatic (test override) */
} culayersBatchNormMergeMomentsArgs_t;

/* Keras's moving-average update with the unbiased batch variance, when the valid count *count (device
 * memory, never read by the host) is at least 2:
 *   moving_mean     = moving_mean * momentum + mean * (1 - momentum)
 *   moving_variance = moving_variance * momentum + variance * n / (n - 1) * (1 - momentum) */
typedef struct culayersBatchNormMovingUpdateArgs_t {
  int64_t channels;
  float momentum;        /* in [0, 1] */
  const float* mean;     /* [channels] batch mean */
  const float* variance; /* [channels] batch biased variance */
  const int32_t* count;  /* one int32 in device memory */
  float* moving_mean;    /* [channels], updated in place */
  float* moving_variance;
} culayersBatchNormMovingUpdateArgs_t;

/* Fill *args with the C++ defaults (apply: see above; merge: everything zero / NULL; moving update:
 * momentum 0.99, everything else zero / NULL -- a zeroed struct would mean momentum 0, i.e. the moving
 * statistics replaced by the batch's). A NULL args does nothing. */
CULAYERS_API void culayersBatchNormApplyArgsInit(culayersBatchNormApplyArgs_t* args);
CULAYERS_API void culayersBatchNormMergeMomentsArgsInit(culayersBatchNormMergeMomentsArgs_t* args);
CULAYERS_API void culayersBatchNormMovingUpdateArgsInit(culayersBatchNormMovingUpdateArgs_t* args);

/* For each op: CanImplement validates (no device access), WorkspaceSize stores the workspace bytes
 * (always 0) in *bytes, and the op itself validates and enqueues on `stream`. `workspace` may be NULL. */
CULAYERS_API culayersStatus_t culayersBatchNormApplyCanImplement(const culayersBatchNormApplyArgs_t* args);
CULAYERS_API culayersStatus_t culayersBatchNormApplyWorkspaceSize(const culayersBatchNormApplyArgs_t* args,
                                                                  size_t* bytes);
CULAYERS_API culayersStatus_t culayersBatchNormApply(const culayersBatchNormApplyArgs_t* args,
                                                     void* workspace, size_t workspace_bytes,
                                                     culayersStream_t stream);

CULAYERS_API culayersStatus_t
culayersBatchNormMergeMomentsCanImplement(const culayersBatchNormMergeMomentsArgs_t* args);
CULAYERS_API culayersStatus_t
culayersBatchNormMergeMomentsWorkspaceSize(const culayersBatchNormMergeMomentsArgs_t* args, size_t* bytes);
CULAYERS_API culayersStatus_t culayersBatchNormMergeMoments(const culayersBatchNormMergeMomentsArgs_t* args,
                                                            void* workspace, size_t workspace_bytes,
                                                            culayersStream_t stream);

CULAYERS_API culayersStatus_t
culayersBatchNormMovingUpdateCanImplement(const culayersBatchNormMovingUpdateArgs_t* args);
CULAYERS_API culayersStatus_t
culayersBatchNormMovingUpdateWorkspaceSize(const culayersBatchNormMovingUpdateArgs_t* args, size_t* bytes);
CULAYERS_API culayersStatus_t culayersBatchNormMovingUpdate(const culayersBatchNormMovingUpdateArgs_t* args,
                                                            void* workspace, size_t workspace_bytes,
                                                            culayersStream_t stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CULAYERS_C_BATCH_NORM_H_ */
