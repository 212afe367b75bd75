/* culayers C API: elementwise conversion between float32, float16 and bfloat16 (the C++ op:
 * culayers/cast.hpp, which states the rounding and the special values).
 *
 * Pure C99 (also valid C++). No function synchronizes or allocates; culayersCast is safe under CUDA stream
 * capture. On failure a function returns a status and culayersGetLastErrorMessage() says
 * "cast: argument: reason"; nothing was enqueued or written. */
#ifndef CULAYERS_C_CAST_H_
#define CULAYERS_C_CAST_H_

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

/* y[i] = x[i] converted to y_dtype (rounded once, to nearest even), i < count. y may equal x when both
 * dtypes have the same size; otherwise they must not overlap. culayersCastArgsInit fills the defaults
 * (float32 to float32, everything else zero / NULL). */
typedef struct culayersCastArgs_t {
  culayersDType_t x_dtype; /* float32, float16 or bfloat16 */
  const void* x;           /* [count] */
  culayersDType_t y_dtype; /* float32, float16 or bfloat16 */
  void* y;                 /* [count] */
  int64_t count;           /* >= 0; 0 launches nothing */
  int vector_width;        /* upper bound on the vector width in elements (0 = widest; 1, 2, 4, 8) */
  int max_blocks;          /* grid cap, 0 = the whole GPU (tuning/test override) */
} culayersCastArgs_t;

/* Fill *args with the C++ defaults. A NULL args does nothing. */
CULAYERS_API void culayersCastArgsInit(culayersCastArgs_t* args);

/* CanImplement validates (no device access), WorkspaceSize stores the workspace bytes (always 0) in
 * *bytes, and culayersCast validates and enqueues on `stream`. `workspace` may be NULL. */
CULAYERS_API culayersStatus_t culayersCastCanImplement(const culayersCastArgs_t* args);
CULAYERS_API culayersStatus_t culayersCastWorkspaceSize(const culayersCastArgs_t* args, size_t* bytes);
CULAYERS_API culayersStatus_t culayersCast(const culayersCastArgs_t* args, void* workspace,
                                           size_t workspace_bytes, culayersStream_t stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CULAYERS_C_CAST_H_ */
