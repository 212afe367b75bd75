/* culayers C API: models. Loads a Sequential model (culayers/nn/sequential.hpp) from its Keras-layout
 * JSON config and a safetensors weights file, and runs it on caller-owned device buffers and a stream, so
 * an engine can use the layer front end without C++.
 *
 * Pure C99 (also valid C++). Every function validates its arguments first; on failure it returns the
 * status and writes nothing (culayersGetLastErrorMessage() says what was wrong: "<model or layer name>:
 * <argument>: <reason>"). A model handle may be used by one thread at a time. */
#ifndef CULAYERS_C_MODEL_H_
#define CULAYERS_C_MODEL_H_

#include <stddef.h>
#include <stdint.h>

#include "culayers/culayers.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Keras's learning phase; mirrors culayers::nn::Phase. */
typedef enum culayersPhase_t {
  CULAYERS_PHASE_INFERENCE = 0, /* dropout is the identity, normalization uses moving statistics */
  CULAYERS_PHASE_TRAINING =
      1 /* dropout drops, batch statistics, update ops run after every layer's forward */
} culayersPhase_t;

typedef struct culayersModel_st* culayersModel_t;

/* Creates a model from the JSON text of its config ({"class_name": "Sequential", "config": {...}}; it
 * must give its input shape with every extent past the batch known: "build_input_shape", as configs
 * saved by culayers do, or a Keras-written InputLayer or "build_config") and, unless `weights_path` is NULL,
 * loads its weights from that safetensors file (every weight present with its dtype and shape, nothing
 * else). Weights are created and loaded on `stream`, which is synchronized. *model is written only on
 * success. */
CULAYERS_API culayersStatus_t culayersModelCreate(culayersModel_t* model, const char* config_json,
                                                  const char* weights_path, culayersStream_t stream);
/* As culayersModelCreate with the config read from the file `config_path`. */
CULAYERS_API culayersStatus_t culayersModelCreateFromFile(culayersModel_t* model, const char* config_path,
                                                          const char* weights_path, culayersStream_t stream);
/* Options of the culayersModelCreate*WithOptions functions. Initialize with culayersModelOptionsInit. Like
 * the other argument structs it carries no size or version field: a field added later changes its layout. */
typedef struct culayersModelOptions_t {
  /* Nonzero: a key of the model document, its config, a layer entry, a layer or InputLayer config, the
   * model's build_config, or an initializer or dtype-policy object in them, that neither culayers nor
   * Keras knows for its place (a misspelt "epsilom") is CULAYERS_STATUS_PARSE naming its path, before
   * anything is made, as Keras refuses unknown arguments. Zero (the default, and culayersModelCreate):
   * such keys are passed over, as newer Keras versions add keys; culayersModelGetUnusedConfigKeys lists
   * them. */
  int reject_unknown_config_keys;
} culayersModelOptions_t;

/* Zeroes every field. */
CULAYERS_API void culayersModelOptionsInit(culayersModelOptions_t* options);
/* culayersModelCreate and culayersModelCreateFromFile with `options` (NULL: the defaults). */
CULAYERS_API culayersStatus_t culayersModelCreateWithOptions(culayersModel_t* model, const char* config_json,
                                                             const char* weights_path,
                                                             const culayersModelOptions_t* options,
                                                             culayersStream_t stream);
CULAYERS_API culayersStatus_t culayersModelCreateFromFileWithOptions(culayersModel_t* model,
                                                                     const char* config_path,
                                                                     const char* weights_path,
                                                                     const culayersModelOptions_t* options,
                                                                     culayersStream_t stream);
/* The config keys creating the model did not use, one per line in reading order (the model's keys, its
 * config's, its build_config's, then each layer entry's and its config's; each object's keys sorted): the
 * key's path ("config.layers[2].config.epsilom"), then " (unknown)" for a key neither culayers nor Keras
 * knows, or " (Keras, not applied)" for a Keras key culayers does not apply that holds other than its
 * default (a regularizer or a constraint: they act in training steps, which culayers does not run). Empty
 * when every key was used. Written into `buffer` as culayersModelGetSummary writes. */
CULAYERS_API culayersStatus_t culayersModelGetUnusedConfigKeys(culayersModel_t model, char* buffer,
                                                               size_t capacity, size_t* length);

/* Frees the model and its device memory. The memory goes back stream-ordered: the weights on the stream of
 * the last run (the creation stream before any run), layer buffers on the run streams that took them; so
 * destroy the model before destroying any stream it was created or run on. NULL is a no-op. */
CULAYERS_API void culayersModelDestroy(culayersModel_t model);

/* The input dtype the model computes in (its first layer's dtype). */
CULAYERS_API culayersStatus_t culayersModelGetInputDType(culayersModel_t model, culayersDType_t* dtype);

/* The output shape for an input of `input_rank` dimensions `input_dims` (batch first): writes
 * *output_rank and output_dims[0 .. *output_rank) (room for CULAYERS_MAX_RANK). */
CULAYERS_API culayersStatus_t culayersModelGetOutputShape(culayersModel_t model, int input_rank,
                                                          const int64_t* input_dims, int* output_rank,
                                                          int64_t* output_dims);

/* One call of the model. */
typedef struct culayersModelRunArgs_t {
  const void* x;         /* device, contiguous [dims] in dtype */
  culayersDType_t dtype; /* float32, float16 or bfloat16: another than the model's input dtype is cast to
                          * it at the first layer (Keras's autocast) */
  int rank;              /* 1 .. CULAYERS_MAX_RANK */
  int64_t dims[CULAYERS_MAX_RANK];
  const uint8_t* mask;   /* optional device uint8 [dims[0], dims[1]] (nonzero = valid step), or NULL */
  void* y;               /* device output, contiguous in the output shape and the last layer's dtype; may
                            equal x (a model that returns its input, e.g. dropout in inference, then
                            copies nothing unless x was cast), else must not overlap it (nor mask); an
                            overlap is CULAYERS_STATUS_INCONSISTENT_ARGUMENTS before anything runs */
  size_t y_bytes;        /* capacity of y in bytes: at least the output's size */
  uint8_t* y_mask;       /* optional device uint8 output mask, written when the model produces one; may
                            equal mask, else must not overlap it, x or y (checked only when the model
                            produces a mask) */
  size_t y_mask_bytes;   /* capacity of y_mask in bytes (checked only when the model produces a mask) */
  culayersPhase_t phase; /* training runs the update ops (counters, moving statistics) */
} culayersModelRunArgs_t;

/* Zeroes every field (inference phase, float32, no mask). */
CULAYERS_API void culayersModelRunArgsInit(culayersModelRunArgs_t* args);

/* Enqueues the model on `stream` and copies its output (and output mask, if there is one and y_mask is
 * not NULL) into the caller's buffers; *wrote_mask (optional) says whether a mask was written. After the
 * first call for a shape, a call allocates nothing and never synchronizes (it can be captured in a CUDA
 * graph). */
CULAYERS_API culayersStatus_t culayersModelRun(culayersModel_t model, const culayersModelRunArgs_t* args,
                                               int* wrote_mask, culayersStream_t stream);

/* *bytes receives the device memory the model's layers keep between runs (output buffers, workspaces,
 * autocast buffers; weights and state not counted). */
CULAYERS_API culayersStatus_t culayersModelGetBufferBytes(culayersModel_t model, size_t* bytes);

/* Frees the buffers culayersModelGetBufferBytes counts (each ordered after the last run that used it, on
 * that run's stream); weights and state stay. A CUDA graph captured from an earlier run holds the freed
 * buffers: never replay it. The next run allocates them again, so it is not a warmed-up run: do not
 * capture it in a CUDA graph. For an engine that ran a larger batch, or inputs of
 * another dtype, and wants the memory back. */
CULAYERS_API culayersStatus_t culayersModelReleaseBuffers(culayersModel_t model);

/* Writes the model's weights to a safetensors file ("<layer>/<weight>"), e.g. after training-phase calls
 * moved its statistics. Synchronizes `stream`. */
CULAYERS_API culayersStatus_t culayersModelSaveWeights(culayersModel_t model, const char* path,
                                                       culayersStream_t stream);

/* Keras's summary() table into `buffer` (NUL-terminated, truncated to `capacity`); *length (optional)
 * receives the full length without the NUL. */
CULAYERS_API culayersStatus_t culayersModelGetSummary(culayersModel_t model, char* buffer, size_t capacity,
                                                      size_t* length);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CULAYERS_C_MODEL_H_ */
