/* culayers C API: group normalization (forward with an optional fused activation; backward giving dx,
 * dgamma and dbeta; masked statistics for channels-last sequence tensors).
 *
 * Pure C99 (also valid C++). Mirrors include/culayers/group_norm.hpp field for field; read that header for
 * the semantics (shapes, statistics, the backward formulas, the dispatch heuristic). Every function
 * validates its arguments first; on failure it returns the status, enqueues nothing and writes nothing
 * (culayersGetLastErrorMessage() says "group_norm[_backward]: <argument>: <reason>"). Launch functions
 * enqueue on `stream` and never synchronize or allocate; all are safe under CUDA stream capture. Include
 * "culayers/culayers.h" (which includes this header) or this header directly. */
#ifndef CULAYERS_C_GROUP_NORM_H_
#define CULAYERS_C_GROUP_NORM_H_

#include <stddef.h>
#include <stdint.h>

#include "culayers/culayers.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Activation fused into the forward's store; mirrors culayers::group_norm::Activation. */
typedef enum culayersActivation_t {
  CULAYERS_ACTIVATION_NONE = 0,
  CULAYERS_ACTIVATION_SILU = 1, /* pre * sigmoid(pre) */
  CULAYERS_ACTIVATION_RELU = 2  /* pre where pre > 0 or NaN, else +0; gradient passed where pre > 0 */
} culayersActivation_t;

/* Kernel path; mirrors culayers::group_norm::Path. */
typedef enum culayersGroupNormPath_t {
  CULAYERS_GROUP_NORM_PATH_AUTO = 0,
  CULAYERS_GROUP_NORM_PATH_WARP = 1,  /* one warp per group, staged in shared memory */
  CULAYERS_GROUP_NORM_PATH_BLOCK = 2, /* one block per group, staged in shared memory */
  CULAYERS_GROUP_NORM_PATH_SPLIT =
      3,                            /* each group split over `splits` blocks, merged through the workspace */
  CULAYERS_GROUP_NORM_PATH_TILE = 4 /* channels last: tiles of whole rows, all groups of a sample per block */
} culayersGroupNormPath_t;

/* Dispatch overrides; every field 0 (or AUTO) = automatic (culayers::group_norm::Tuning documents the
 * heuristic). */
typedef struct culayersGroupNormTuning_t {
  culayersGroupNormPath_t path;
  int vector_width;           /* upper bound on the vector width (1, 2, 4, 8); 0 = widest legal */
  int64_t warp_max_elements;  /* 0 = 1024 */
  int64_t block_max_bytes;    /* 0 = the device's shared memory per block minus scratch */
  int64_t min_split_elements; /* 0 = 8192; <= 2^31 - 1 */
  int64_t target_blocks;      /* blocks that count as "the whole GPU"; 0 = from the device */
  int64_t splits;             /* > 0: force the split path with this many chunks per group (<= 1024) */
  int64_t tile_rows;          /* tile path: rows per tile; 0 = automatic */
  int64_t tile_min_bytes;     /* x bytes from which the tile path is automatic; 0 = SMs x 32 KB */
  int64_t split_min_bytes;    /* channels first: x bytes from which the split path may replace a block
                                 path that fits; 0 = SMs x 64 KB */
  int64_t wave_balance;       /* 0 = automatic split / tile counts raised to fill the kernels' last waves;
                                 1 = the first count from the target alone */
  int64_t max_blocks;         /* grid cap of the streaming kernels (tests: grid-stride loops); 0 = as
                                 planned; results do not depend on it */
} culayersGroupNormTuning_t;

/* Forward: x [N, C, *spatial] (channels first) or [N, *spatial, C] (channels last) -> y of the same shape
 * and dtype; optional per-group mean and rstd [N, G] in float32. */
typedef struct culayersGroupNormArgs_t {
  culayersDType_t dtype; /* of x and y: float32, float16 or bfloat16 */
  culayersLayout_t layout;
  const void* x;
  int64_t batch;      /* N */
  int64_t channels;   /* C */
  int64_t spatial;    /* product of the spatial sizes (1 with none); 0 = empty tensor */
  int64_t groups;     /* G: divides C; C/G x spatial < 2^31 */
  float epsilon;      /* > 0 and finite */
  const float* gamma; /* optional [C] (scale) */
  const float* beta;  /* optional [C] (center) */
  culayersActivation_t activation;
  const uint8_t* mask; /* optional [N, spatial], nonzero = valid; channels last only */
  void* y;             /* may equal x (in place) */
  float* mean;         /* optional [N, G] */
  float* rstd;         /* optional [N, G] */
  culayersGroupNormTuning_t tuning;
} culayersGroupNormArgs_t;

/* Backward: dx (and optionally dgamma, dbeta [C] in float32) from x, dy and the forward's mean and rstd. */
typedef struct culayersGroupNormBackwardArgs_t {
  culayersDType_t dtype; /* of x, dy and dx */
  culayersLayout_t layout;
  const void* x;
  const void* dy;
  int64_t batch;
  int64_t channels;
  int64_t spatial;
  int64_t groups;
  const float* mean;  /* [N, G], required */
  const float* rstd;  /* [N, G], required */
  const float* gamma; /* as given to the forward */
  const float* beta;  /* as given to the forward (needed only with a fused activation) */
  culayersActivation_t activation;
  const uint8_t* mask; /* the forward's mask, channels last only */
  void* dx;            /* required; must not overlap any input */
  float* dgamma;       /* optional [C] */
  float* dbeta;        /* optional [C] */
  culayersGroupNormTuning_t tuning;
} culayersGroupNormBackwardArgs_t;

/* Set every field to the C++ defaults (float32, channels first, spatial 1, epsilon 1e-3, no activation,
 * null pointers, zero sizes, automatic tuning). NULL is ignored. */
CULAYERS_API void culayersGroupNormArgsInit(culayersGroupNormArgs_t* args);
CULAYERS_API void culayersGroupNormBackwardArgsInit(culayersGroupNormBackwardArgs_t* args);

/* Validation only: never touches device memory, but plans with the device's limits (queried once per
 * device, cached), so without a usable device it is CULAYERS_STATUS_NO_DEVICE. A NULL args is
 * CULAYERS_STATUS_NULL_POINTER. */
CULAYERS_API culayersStatus_t culayersGroupNormCanImplement(const culayersGroupNormArgs_t* args);
CULAYERS_API culayersStatus_t
culayersGroupNormBackwardCanImplement(const culayersGroupNormBackwardArgs_t* args);

/* The shape checks alone, for planning before buffers exist (C++ group_norm::check_sizes): no device
 * needed. CULAYERS_STATUS_INVALID_SHAPE for a negative size or groups that do not divide channels,
 * CULAYERS_STATUS_SIZE_LIMIT beyond the limits. Both CanImplement functions apply exactly these checks. */
CULAYERS_API culayersStatus_t culayersGroupNormCheckSizes(int64_t batch, int64_t channels, int64_t spatial,
                                                          int64_t groups);

/* Stores the workspace bytes the launch needs in *bytes (0 when none, or for arguments the op would
 * reject: CanImplement says why). A NULL args or bytes is CULAYERS_STATUS_NULL_POINTER, nothing stored. */
CULAYERS_API culayersStatus_t culayersGroupNormWorkspaceSize(const culayersGroupNormArgs_t* args,
                                                             size_t* bytes);
CULAYERS_API culayersStatus_t
culayersGroupNormBackwardWorkspaceSize(const culayersGroupNormBackwardArgs_t* args, size_t* bytes);

/* The path the launch would take on the current device (AUTO for invalid arguments, an empty tensor or a
 * NULL args). */
CULAYERS_API culayersGroupNormPath_t culayersGroupNormSelectedPath(const culayersGroupNormArgs_t* args);
CULAYERS_API culayersGroupNormPath_t
culayersGroupNormBackwardSelectedPath(const culayersGroupNormBackwardArgs_t* args);

/* Enqueue on `stream` (NULL = the legacy default stream). */
CULAYERS_API culayersStatus_t culayersGroupNorm(const culayersGroupNormArgs_t* args, void* workspace,
                                                size_t workspace_bytes, culayersStream_t stream);
CULAYERS_API culayersStatus_t culayersGroupNormBackward(const culayersGroupNormBackwardArgs_t* args,
                                                        void* workspace, size_t workspace_bytes,
                                                        culayersStream_t stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CULAYERS_C_GROUP_NORM_H_ */
