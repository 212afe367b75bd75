/* culayers C API: dropout with a device-resident keep-rate schedule (see culayers/dropout.hpp for the
 * full semantics; every function here is a thin shim over the C++ op of the same name).
 *
 * Pure C99 (also valid C++). Usage: allocate a culayersDropoutState_t in device memory, initialize it
 * with culayersDropoutInit, then per training step culayersDropoutForward, culayersDropoutUpdate (the
 * schedule advances on the device) and culayersDropoutBackward (regenerates the last forward's mask).
 * No function synchronizes or allocates; all are safe under CUDA stream capture. On failure a function
 * returns a status and culayersGetLastErrorMessage() says "op: argument: reason"; a 1xx status means
 * nothing was enqueued or written. */
#ifndef CULAYERS_C_DROPOUT_H_
#define CULAYERS_C_DROPOUT_H_

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

/* Threshold value that keeps every element (keep = r < threshold for a 32-bit draw r). */
#define CULAYERS_DROPOUT_THRESHOLD_KEEP_ALL 4294967296ull

/* The device-resident dropout state: 128 bytes in device memory, written only by the ops below; the
 * layout (byte offsets in brackets) is identical to culayers::dropout::DropoutState.
 *   configuration         written by culayersDropoutInit
 *   iterations            init; culayersDropoutUpdate adds 1
 *   current call          init and update (from iterations); read by the forward; culayersDropoutRedraw
 *                         replaces only its stream
 *   redraws               init (its redraws argument, 0 by default); culayersDropoutRedraw adds 1
 *   last_*                the forward copies the current call there; read by the backward (init sets
 *                         them to the current call and last_iteration to -1) */
typedef struct culayersDropoutState_t {
  uint64_t seed;            /* [0]   Philox key */
  uint64_t offset;          /* [8]   base Philox offset (multiple of 4) */
  double initial_keep_rate; /* [16]  in (0, 1] */
  double decay_rate;        /* [24]  clamped to [0, 1]; 1 = fixed rate */
  int64_t decay_interval;   /* [32]  > 0 */
  int64_t iterations;       /* [40]  index k of the next training call */
  uint64_t stream;          /* [48]  Philox stream of call k (= k) */
  uint64_t threshold;       /* [56]  floor(keep_rate * 2^32 + 0.5) */
  double keep_rate;         /* [64]  initial * decay_rate ^ ((k + 1) / decay_interval) */
  float scale;              /* [72]  (float)(1 / keep_rate) */
  uint32_t reserved0;       /* [76] */
  uint64_t last_stream;     /* [80] */
  uint64_t last_threshold;  /* [88] */
  double last_keep_rate;    /* [96] */
  float last_scale;         /* [104] */
  uint32_t reserved1;       /* [108] */
  int64_t last_iteration;   /* [112] iterations at the last forward; -1 before the first */
  uint64_t redraws;         /* [120] redraw ops since init */
} culayersDropoutState_t;

/* Writes every field of *state with one 1-thread kernel (the arguments may live on the stack).
 * culayersDropoutInitArgsInit fills the defaults: keep rate 1, decay_rate 1 (fixed), interval 10000. */
typedef struct culayersDropoutInitArgs_t {
  culayersDropoutState_t* state; /* device memory, 8-byte aligned */
  uint64_t seed;
  uint64_t offset;          /* multiple of 4 */
  double initial_keep_rate; /* in (0, 1] */
  double decay_rate;        /* clamped to [0, 1]; not NaN; 1 = fixed keep rate */
  int64_t decay_interval;   /* > 0 */
  int64_t iterations;       /* starting counter value, >= 0 */
  uint64_t redraws;         /* starting redraw counter (0 for a new state) */
} culayersDropoutInitArgs_t;

/* The update op: iterations += 1 and the next call's keep rate, computed on the device. */
typedef struct culayersDropoutUpdateArgs_t {
  culayersDropoutState_t* state;
} culayersDropoutUpdateArgs_t;

/* The redraw op: a fresh draw without a schedule step (redraws += 1, stream = 2^63 + redraws; iterations
 * and the keep rate stay), for a frozen layer's training calls; with to_schedule nonzero, back to the
 * schedule's stream instead (stream = iterations) (culayers::dropout::DropoutRedrawArgs). Zero-initialize
 * (e.g. culayersDropoutRedrawArgs_t r = {state, 0};), then set the fields. */
typedef struct culayersDropoutRedrawArgs_t {
  culayersDropoutState_t* state;
  int to_schedule;
} culayersDropoutRedrawArgs_t;

/* y = keep ? x * scale : +0.0 over a contiguous tensor; the mask is drawn on the noise shape and
 * broadcast. Zero-initialize, then set the fields: zero means "none" or "automatic" everywhere. */
typedef struct culayersDropoutForwardArgs_t {
  const void* x;
  void* y;                               /* may equal x */
  culayersDType_t dtype;                 /* float32, float16 or bfloat16 */
  int rank;                              /* 0 .. CULAYERS_MAX_RANK */
  int64_t dims[CULAYERS_MAX_RANK];       /* x's shape, outermost first */
  int noise_rank;                        /* 0: x's shape; else == rank */
  int64_t noise_dims[CULAYERS_MAX_RANK]; /* each equal to x's dimension or 1 */
  culayersDropoutState_t* state;         /* read; its last_* fields are written */
  uint64_t offset;                       /* extra Philox offset of this tensor (multiple of 4) */
  uint8_t* mask;                         /* optional: 1 kept / 0 dropped, x's shape */
  int max_blocks;                        /* grid cap, 0 = automatic (tuning/test override) */
  int force_vector_width;                /* 0 = automatic, or 1, 2, 4, 8 (test/tuning override) */
} culayersDropoutForwardArgs_t;

/* dx = keep ? dy * scale : +0.0 with the mask of the most recent forward on the state. */
typedef struct culayersDropoutBackwardArgs_t {
  const void* dy;
  void* dx; /* may equal dy */
  culayersDType_t dtype;
  int rank;
  int64_t dims[CULAYERS_MAX_RANK];
  int noise_rank;
  int64_t noise_dims[CULAYERS_MAX_RANK];
  const culayersDropoutState_t* state;
  uint64_t offset;
  int max_blocks;
  int force_vector_width;
} culayersDropoutBackwardArgs_t;

/* Fills *args with the defaults (state NULL, seed 0, offset 0, keep rate 1, decay rate 1, interval
 * 10000, iterations 0, redraws 0). A NULL args does nothing. */
CULAYERS_API void culayersDropoutInitArgsInit(culayersDropoutInitArgs_t* args);

/* For each op: CanImplement validates (no device access), WorkspaceSize stores the workspace bytes
 * (always 0) in *bytes, and the op itself validates and enqueues on `stream`. `workspace` may be NULL. */
CULAYERS_API culayersStatus_t culayersDropoutInitCanImplement(const culayersDropoutInitArgs_t* args);
CULAYERS_API culayersStatus_t culayersDropoutInitWorkspaceSize(const culayersDropoutInitArgs_t* args,
                                                               size_t* bytes);
CULAYERS_API culayersStatus_t culayersDropoutInit(const culayersDropoutInitArgs_t* args, void* workspace,
                                                  size_t workspace_bytes, culayersStream_t stream);

CULAYERS_API culayersStatus_t culayersDropoutRedrawCanImplement(const culayersDropoutRedrawArgs_t* args);
CULAYERS_API culayersStatus_t culayersDropoutRedrawWorkspaceSize(const culayersDropoutRedrawArgs_t* args,
                                                                 size_t* bytes);
CULAYERS_API culayersStatus_t culayersDropoutRedraw(const culayersDropoutRedrawArgs_t* args, void* workspace,
                                                    size_t workspace_bytes, culayersStream_t stream);

CULAYERS_API culayersStatus_t culayersDropoutUpdateCanImplement(const culayersDropoutUpdateArgs_t* args);
CULAYERS_API culayersStatus_t culayersDropoutUpdateWorkspaceSize(const culayersDropoutUpdateArgs_t* args,
                                                                 size_t* bytes);
CULAYERS_API culayersStatus_t culayersDropoutUpdate(const culayersDropoutUpdateArgs_t* args, void* workspace,
                                                    size_t workspace_bytes, culayersStream_t stream);

CULAYERS_API culayersStatus_t culayersDropoutForwardCanImplement(const culayersDropoutForwardArgs_t* args);
CULAYERS_API culayersStatus_t culayersDropoutForwardWorkspaceSize(const culayersDropoutForwardArgs_t* args,
                                                                  size_t* bytes);
CULAYERS_API culayersStatus_t culayersDropoutForward(const culayersDropoutForwardArgs_t* args,
                                                     void* workspace, size_t workspace_bytes,
                                                     culayersStream_t stream);

CULAYERS_API culayersStatus_t culayersDropoutBackwardCanImplement(const culayersDropoutBackwardArgs_t* args);
CULAYERS_API culayersStatus_t culayersDropoutBackwardWorkspaceSize(const culayersDropoutBackwardArgs_t* args,
                                                                   size_t* bytes);
CULAYERS_API culayersStatus_t culayersDropoutBackward(const culayersDropoutBackwardArgs_t* args,
                                                      void* workspace, size_t workspace_bytes,
                                                      culayersStream_t stream);

/* Host evaluation of the device's schedule formula: initial * clamp(decay_rate, 0, 1) ^ ((k + 1) /
 * decay_interval) in double (on a GPU the device's pow may differ in the last bits; read the state back
 * for the exact value used). NaN for arguments the init op refuses (initial_keep_rate outside (0, 1],
 * decay_rate NaN, decay_interval <= 0) and for k < 0. */
CULAYERS_API double culayersDropoutScheduledKeepRate(double initial_keep_rate, double decay_rate,
                                                     int64_t decay_interval, int64_t k);

/* The draws the kernels use, on the host: out[j] = Philox draw (first + j) of (seed, stream), j < count
 * (see culayers::dropout::philox_draws). `out` is host memory; NULL with count > 0 does nothing. */
CULAYERS_API void culayersDropoutPhiloxDraws(uint64_t seed, uint64_t stream, uint64_t first, size_t count,
                                             uint32_t* out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CULAYERS_C_DROPOUT_H_ */
