// cuDNN for the benchmarks' baselines, loaded at run time: dlopen of libcudnn.so.9 (else libcudnn.so) as
// found on LD_LIBRARY_PATH (scripts/gpu_check.sh puts the Python environment's nvidia/cudnn/lib there), so
// the bench binary has no link-time dependency on cuDNN and runs on machines without it: the cuDNN cases
// then skip with cudnn().error. cudnn.h supplies the types only; without it at build time
// CULAYERS_BENCH_HAVE_CUDNN is 0, nothing here is declared, and the cuDNN cases are registered but skip.
//
// Every entry point any benchmark uses is resolved once, on first use; a missing one leaves error set
// (naming it) and the handle null.
#pragma once

#if __has_include(<cudnn.h>)
#  include <cudnn.h>
#  define CULAYERS_BENCH_HAVE_CUDNN 1
#else
#  define CULAYERS_BENCH_HAVE_CUDNN 0
#endif

#include <string>
#include <type_traits>

#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace culayers {
namespace bench {

/// Prefix of the error of a baseline case that cannot run on this machine (cuDNN missing or not built in):
/// scripts/gpu_check.sh reports such cases without failing the part, unlike a verification failure.
inline constexpr const char* kBaselineUnavailable = "baseline unavailable: ";

#if CULAYERS_BENCH_HAVE_CUDNN

struct Cudnn {
  std::string error; ///< empty when every entry point was found and the handle created; else starts with
                     ///< kBaselineUnavailable
  cudnnHandle_t handle = nullptr;

  decltype(&cudnnCreate) create = nullptr;
  decltype(&cudnnSetStream) set_stream = nullptr;
  decltype(&cudnnGetErrorString) error_string = nullptr;
  decltype(&cudnnGetVersion) get_version = nullptr;
  // Tensor descriptors.
  decltype(&cudnnCreateTensorDescriptor) create_tensor = nullptr;
  decltype(&cudnnSetTensorNdDescriptor) set_tensor_nd = nullptr;
  decltype(&cudnnSetTensor4dDescriptor) set_tensor_4d = nullptr;
  decltype(&cudnnDestroyTensorDescriptor) destroy_tensor = nullptr;
  // Dropout.
  decltype(&cudnnCreateDropoutDescriptor) create_dropout = nullptr;
  decltype(&cudnnDestroyDropoutDescriptor) destroy_dropout = nullptr;
  decltype(&cudnnDropoutGetStatesSize) dropout_states_size = nullptr;
  decltype(&cudnnDropoutGetReserveSpaceSize) dropout_reserve_size = nullptr;
  decltype(&cudnnSetDropoutDescriptor) set_dropout = nullptr;
  decltype(&cudnnDropoutForward) dropout_forward = nullptr;
  decltype(&cudnnDropoutBackward) dropout_backward = nullptr;
  // Batch normalization (the legacy API: deprecated in cuDNN 9, still shipped).
  decltype(&cudnnBatchNormalizationForwardTraining) bn_forward_training = nullptr;
  decltype(&cudnnBatchNormalizationForwardInference) bn_forward_inference = nullptr;
  decltype(&cudnnBatchNormalizationBackward) bn_backward = nullptr;
  // Optional (null when this cuDNN lacks them): the extended training call, the one whose NHWC
  // SPATIAL_PERSISTENT form with a workspace runs cuDNN's fast channels-last kernels.
  decltype(&cudnnBatchNormalizationForwardTrainingEx) bn_forward_training_ex = nullptr;
  decltype(&cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize) bn_training_ex_workspace = nullptr;
  decltype(&cudnnGetBatchNormalizationTrainingExReserveSpaceSize) bn_training_ex_reserve = nullptr;
  std::string ex_error; // why the extended calls are missing (empty when they resolved)
};

/// The process's cuDNN (loaded and its handle created on the first call).
const Cudnn& cudnn();

/// "<what>: <cuDNN's message>" for a failed call.
std::string cudnn_failure(const char* what, cudnnStatus_t status);

/// For a benchmark: true on CUDNN_STATUS_SUCCESS; otherwise state.SkipWithError(cudnn_failure(...)).
bool check_cudnn(benchmark::State& state, cudnnStatus_t status, const char* what);

/// cuDNN's data type of an element type (float, __half, __nv_bfloat16).
template <class T>
cudnnDataType_t cudnn_type() {
  if constexpr (std::is_same_v<T, float>) {
    return CUDNN_DATA_FLOAT;
  } else if constexpr (std::is_same_v<T, __half>) {
    return CUDNN_DATA_HALF;
  } else {
    return CUDNN_DATA_BFLOAT16;
  }
}

/// "cuDNN 9.19.0" (the loaded library's version), or "cuDNN" when it is not loaded.
std::string cudnn_version_string();

#endif // CULAYERS_BENCH_HAVE_CUDNN

} // namespace bench
} // namespace culayers
