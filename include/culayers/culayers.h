/* culayers C API: status codes, element types, layouts and version queries.
 *
 * Pure C99 (also valid C++) with plain enums and functions, so engines and FFI users (ctypes, Rust
 * bindgen) can bind it without a C++ toolchain. Every enum mirrors its C++ counterpart number for
 * number (checked at compile time in src/capi.cpp); those numbers never change. */
#ifndef CULAYERS_CULAYERS_H_
#define CULAYERS_CULAYERS_H_

#include <stddef.h>

#include "culayers/version.h"

/* Marks the symbols the shared library exports; it is built with hidden visibility by default so
 * only this C API is visible. A build may predefine CULAYERS_API (e.g. to dllexport/dllimport). */
#ifndef CULAYERS_API
#  if defined(__GNUC__) || defined(__clang__)
#    define CULAYERS_API __attribute__((visibility("default")))
#  else
#    define CULAYERS_API
#  endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Largest tensor rank (culayers::kMaxRank). */
#define CULAYERS_MAX_RANK 8

/* Result of every culayers call; see culayers::Status. Grouped by value / 100: 0 success, 1xx bad
 * arguments (nothing was enqueued or written), 2xx resources, 3xx CUDA runtime, 4xx unsupported,
 * 5xx model and file errors, 9xx internal. */
typedef enum culayersStatus_t {
  CULAYERS_STATUS_SUCCESS = 0,

  CULAYERS_STATUS_NULL_POINTER = 100,
  CULAYERS_STATUS_INVALID_SHAPE = 101,
  CULAYERS_STATUS_INVALID_DTYPE = 102,
  CULAYERS_STATUS_INVALID_LAYOUT = 103,
  CULAYERS_STATUS_MISALIGNED = 104,
  CULAYERS_STATUS_INVALID_VALUE = 105,
  CULAYERS_STATUS_SIZE_LIMIT = 106,
  CULAYERS_STATUS_INCONSISTENT_ARGUMENTS = 107,

  CULAYERS_STATUS_WORKSPACE_TOO_SMALL = 200,
  CULAYERS_STATUS_OUT_OF_MEMORY = 201,

  CULAYERS_STATUS_CUDA_LAUNCH = 300,
  CULAYERS_STATUS_CUDA_RUNTIME = 301,
  CULAYERS_STATUS_NO_DEVICE = 302,

  CULAYERS_STATUS_NOT_SUPPORTED = 400,

  CULAYERS_STATUS_PARSE = 500,
  CULAYERS_STATUS_IO = 501,
  CULAYERS_STATUS_UNKNOWN_CLASS = 502,

  CULAYERS_STATUS_INTERNAL = 900
} culayersStatus_t;

/* Element type; see culayers::DType. */
typedef enum culayersDType_t {
  CULAYERS_DTYPE_FLOAT32 = 0,
  CULAYERS_DTYPE_FLOAT16 = 1,
  CULAYERS_DTYPE_BFLOAT16 = 2,
  CULAYERS_DTYPE_INT32 = 3,
  CULAYERS_DTYPE_UINT8 = 4,
  CULAYERS_DTYPE_INT64 = 5
} culayersDType_t;

/* The caller's CUDA stream: the same type as cudaStream_t, declared here so that C callers need no
 * CUDA header. Ops enqueue work on it and never synchronize it. */
#ifndef CULAYERS_STREAM_T_DEFINED
#  define CULAYERS_STREAM_T_DEFINED
typedef struct CUstream_st* culayersStream_t;
#endif

/* Position of the channel axis; see culayers::Layout. */
typedef enum culayersLayout_t {
  CULAYERS_LAYOUT_CHANNELS_FIRST = 0, /* [N, C, *spatial] */
  CULAYERS_LAYOUT_CHANNELS_LAST = 1   /* [N, *spatial, C] */
} culayersLayout_t;

/* CULAYERS_VERSION of the compiled library (MAJOR * 10000 + MINOR * 100 + PATCH). Compare with the
 * CULAYERS_VERSION macro to detect a header/library mismatch. */
CULAYERS_API int culayersGetVersion(void);

/* "MAJOR.MINOR.PATCH" of the compiled library: a static string, never NULL. */
CULAYERS_API const char* culayersGetVersionString(void);

/* Short description of `status`: a static string, never NULL; "unknown status" for values that are
 * not enumerators. */
CULAYERS_API const char* culayersGetStatusString(culayersStatus_t status);

/* Detailed message ("op: argument: reason") of the most recent error on the calling thread, "" if
 * none. Successful calls do not clear it. Valid until the next error on the same thread. */
CULAYERS_API const char* culayersGetLastErrorMessage(void);

/* Bytes per element; 0 for a value that is not an enumerator. */
CULAYERS_API size_t culayersGetDTypeSize(culayersDType_t dtype);

/* Lower-case name ("float32", "bfloat16", ...): a static string, never NULL; "unknown dtype" for a
 * value that is not an enumerator. */
CULAYERS_API const char* culayersGetDTypeName(culayersDType_t dtype);

#ifdef __cplusplus
} /* extern "C" */
#endif

/* The op families (each header declares its own extern "C" block). */
#include "culayers/c/batch_norm.h"
#include "culayers/c/cast.h"
#include "culayers/c/dropout.h"
#include "culayers/c/group_norm.h"
#include "culayers/c/masked_reduce.h"
#include "culayers/c/model.h"

#endif /* CULAYERS_CULAYERS_H_ */
