/* culayers C API: masked reductions (forward, backward), Masking and mask expansion.
 *
 * Pure C99 (also valid C++). Mirrors include/culayers/masked_reduce.hpp field for field; read that header
 * for the semantics. Every function validates its arguments first; on failure it returns the status,
 * enqueues nothing and writes nothing (culayersGetLastErrorMessage() says why). Launch functions enqueue
 * on `stream` and never synchronize. Include "culayers/culayers.h" (which includes this header) or this
 * header directly. */
#ifndef CULAYERS_C_MASKED_REDUCE_H_
#define CULAYERS_C_MASKED_REDUCE_H_

#include <stddef.h>
#include <stdint.h>

#include "culayers/culayers.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The reduction; numbers mirror culayers::masked_reduce::ReduceOp. */
typedef enum culayersMaskedReduceOp_t {
  CULAYERS_MASKED_REDUCE_SUM = 0,
  CULAYERS_MASKED_REDUCE_MEAN = 1,
  CULAYERS_MASKED_REDUCE_MAX = 2,
  CULAYERS_MASKED_REDUCE_MIN = 3,
  CULAYERS_MASKED_REDUCE_MOMENTS = 4
} culayersMaskedReduceOp_t;

/* Where validity comes from; mirrors culayers::masked_reduce::Validity. */
typedef enum culayersValidity_t {
  CULAYERS_VALIDITY_NONE = 0,
  CULAYERS_VALIDITY_MASK = 1,   /* uint8 mask [outer, R], nonzero = valid */
  CULAYERS_VALIDITY_LENGTHS = 2 /* int32 lengths [outer], clamped into [0, R] */
} culayersValidity_t;

/* Forward kernel path; mirrors culayers::masked_reduce::Path. */
typedef enum culayersMaskedReducePath_t {
  CULAYERS_MASKED_REDUCE_PATH_AUTO = 0,
  CULAYERS_MASKED_REDUCE_PATH_NARROW = 1,
  CULAYERS_MASKED_REDUCE_PATH_WIDE = 2,
  CULAYERS_MASKED_REDUCE_PATH_SPLIT = 3
} culayersMaskedReducePath_t;

/* Dispatch overrides; 0 = automatic (culayers::masked_reduce::Tuning documents the heuristic). */
typedef struct culayersMaskedReduceTuning_t {
  culayersMaskedReducePath_t path;
  int vector_width;
  int64_t target_threads;
  int64_t narrow_max_inner;
  int64_t narrow_max_row;
  int64_t min_rows_per_thread;
  int64_t splits;
} culayersMaskedReduceTuning_t;

/* Forward: x [outer, R, inner] -> out [outer, inner] (moments: mean and variance in float32). */
typedef struct culayersMaskedReduceArgs_t {
  culayersMaskedReduceOp_t op;
  culayersDType_t dtype;
  const void* x;
  int64_t outer;
  int64_t reduce;
  int64_t inner;
  culayersValidity_t validity;
  const uint8_t* mask;
  const int32_t* lengths;
  uint32_t* length_errors;
  void* out;
  float* mean;
  float* variance;
  float fill_value;
  int32_t* counts;
  int32_t* indices;
  culayersMaskedReduceTuning_t tuning;
} culayersMaskedReduceArgs_t;

/* Backward: dx [outer, R, inner]. */
typedef struct culayersMaskedReduceBackwardArgs_t {
  culayersMaskedReduceOp_t op;
  culayersDType_t dtype;
  int64_t outer;
  int64_t reduce;
  int64_t inner;
  culayersValidity_t validity;
  const uint8_t* mask;
  const int32_t* lengths;
  uint32_t* length_errors;
  const void* dy;
  const int32_t* indices;
  const float* dmean;
  const float* dvar;
  const float* mean;
  const void* x;
  const int32_t* counts; /* optional: mean and moments with a mask only (else INCONSISTENT_ARGUMENTS) */
  void* dx;
  int vector_width;
  int64_t row_chunks;
} culayersMaskedReduceBackwardArgs_t;

/* Keras Masking: mask [outer, R] = any over inner of x != mask_value; optional y with masked steps zeroed. */
typedef struct culayersMaskingArgs_t {
  culayersDType_t dtype;
  const void* x;
  int64_t outer;
  int64_t reduce;
  int64_t inner;
  float mask_value;
  uint8_t* mask;
  void* y;
} culayersMaskingArgs_t;

/* Mask expansion: out[b, t * features + f] = mask[b, t]. */
typedef struct culayersMaskExpandArgs_t {
  const uint8_t* mask;
  uint8_t* out;
  int64_t outer;
  int64_t steps;
  int64_t features;
} culayersMaskExpandArgs_t;

/* Set every field to the C++ defaults (sum, float32, no validity, null pointers, fill 0, automatic
 * tuning). NULL is ignored. */
CULAYERS_API void culayersMaskedReduceArgsInit(culayersMaskedReduceArgs_t* args);
CULAYERS_API void culayersMaskedReduceBackwardArgsInit(culayersMaskedReduceBackwardArgs_t* args);
CULAYERS_API void culayersMaskingArgsInit(culayersMaskingArgs_t* args);
CULAYERS_API void culayersMaskExpandArgsInit(culayersMaskExpandArgs_t* args);

/* Validation only (no device access). A NULL args is CULAYERS_STATUS_NULL_POINTER. */
CULAYERS_API culayersStatus_t culayersMaskedReduceCanImplement(const culayersMaskedReduceArgs_t* args);
CULAYERS_API culayersStatus_t
culayersMaskedReduceBackwardCanImplement(const culayersMaskedReduceBackwardArgs_t* args);
CULAYERS_API culayersStatus_t culayersMaskingCanImplement(const culayersMaskingArgs_t* args);
CULAYERS_API culayersStatus_t culayersMaskExpandCanImplement(const culayersMaskExpandArgs_t* args);

/* The size limits alone, for planning before buffers exist (C++ masked_reduce::check_sizes and
 * check_masking_sizes): a negative size is CULAYERS_STATUS_INVALID_SHAPE, sizes beyond the op's limits
 * CULAYERS_STATUS_SIZE_LIMIT. The CanImplement functions apply exactly these checks to their sizes. */
CULAYERS_API culayersStatus_t culayersMaskedReduceCheckSizes(int64_t outer, int64_t reduce, int64_t inner);
CULAYERS_API culayersStatus_t culayersMaskingCheckSizes(int64_t outer, int64_t reduce, int64_t inner);

/* Stores the workspace bytes the launch needs in *bytes (0 when none, or for arguments the op would
 * reject: CanImplement says why). A NULL args or bytes is CULAYERS_STATUS_NULL_POINTER, nothing stored. */
CULAYERS_API culayersStatus_t culayersMaskedReduceWorkspaceSize(const culayersMaskedReduceArgs_t* args,
                                                                size_t* bytes);
CULAYERS_API culayersStatus_t
culayersMaskedReduceBackwardWorkspaceSize(const culayersMaskedReduceBackwardArgs_t* args, size_t* bytes);

/* The forward path the launch would take on the current device (AUTO for invalid arguments). */
CULAYERS_API culayersMaskedReducePath_t
culayersMaskedReduceSelectedPath(const culayersMaskedReduceArgs_t* args);

/* Enqueue on `stream` (NULL = the legacy default stream). */
CULAYERS_API culayersStatus_t culayersMaskedReduce(const culayersMaskedReduceArgs_t* args, void* workspace,
                                                   size_t workspace_bytes, culayersStream_t stream);
CULAYERS_API culayersStatus_t culayersMaskedReduceBackward(const culayersMaskedReduceBackwardArgs_t* args,
                                                           void* workspace, size_t workspace_bytes,
                                                           culayersStream_t stream);
CULAYERS_API culayersStatus_t culayersMasking(const culayersMaskingArgs_t* args, culayersStream_t stream);
CULAYERS_API culayersStatus_t culayersMaskExpand(const culayersMaskExpandArgs_t* args,
                                                 culayersStream_t stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CULAYERS_C_MASKED_REDUCE_H_ */
