// cuDNN loaded at run time for the benchmarks' baselines (see cudnn_runtime.hpp).
#include "bench/cudnn_runtime.hpp"

#if CULAYERS_BENCH_HAVE_CUDNN

#  include <dlfcn.h>

namespace culayers {
namespace bench {
namespace {

template <class F>
void resolve(void* lib, const char* name, F* out, std::string* error) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (*out == nullptr && error->empty()) {
    *error = std::string(kBaselineUnavailable) + "cuDNN: dlsym(" + name + ") failed";
  }
}

Cudnn load() {
  Cudnn r;
  void* lib = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
  std::string first_error;
  if (lib == nullptr) {
    const char* e = dlerror(); // the reason for libcudnn.so.9 (e.g. a missing dependency) is the useful one
    first_error = e != nullptr ? e : "?";
    lib = dlopen("libcudnn.so", RTLD_NOW | RTLD_LOCAL);
  }
  if (lib == nullptr) {
    r.error =
        std::string(kBaselineUnavailable) + "cuDNN not found (dlopen libcudnn.so.9: " + first_error + ")";
    return r;
  }
  resolve(lib, "cudnnCreate", &r.create, &r.error);
  resolve(lib, "cudnnSetStream", &r.set_stream, &r.error);
  resolve(lib, "cudnnGetErrorString", &r.error_string, &r.error);
  resolve(lib, "cudnnGetVersion", &r.get_version, &r.error);
  resolve(lib, "cudnnCreateTensorDescriptor", &r.create_tensor, &r.error);
  resolve(lib, "cudnnSetTensorNdDescriptor", &r.set_tensor_nd, &r.error);
  resolve(lib, "cudnnSetTensor4dDescriptor", &r.set_tensor_4d, &r.error);
  resolve(lib, "cudnnDestroyTensorDescriptor", &r.destroy_tensor, &r.error);
  resolve(lib, "cudnnCreateDropoutDescriptor", &r.create_dropout, &r.error);
  resolve(lib, "cudnnDestroyDropoutDescriptor", &r.destroy_dropout, &r.error);
  resolve(lib, "cudnnDropoutGetStatesSize", &r.dropout_states_size, &r.error);
  resolve(lib, "cudnnDropoutGetReserveSpaceSize", &r.dropout_reserve_size, &r.error);
  resolve(lib, "cudnnSetDropoutDescriptor", &r.set_dropout, &r.error);
  resolve(lib, "cudnnDropoutForward", &r.dropout_forward, &r.error);
  resolve(lib, "cudnnDropoutBackward", &r.dropout_backward, &r.error);
  resolve(lib, "cudnnBatchNormalizationForwardTraining", &r.bn_forward_training, &r.error);
  resolve(lib, "cudnnBatchNormalizationForwardInference", &r.bn_forward_inference, &r.error);
  resolve(lib, "cudnnBatchNormalizationBackward", &r.bn_backward, &r.error);
  // The extended batch-norm calls are optional: their candidates report ex_error.
  resolve(lib, "cudnnBatchNormalizationForwardTrainingEx", &r.bn_forward_training_ex, &r.ex_error);
  resolve(lib, "cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize", &r.bn_training_ex_workspace,
          &r.ex_error);
  resolve(lib, "cudnnGetBatchNormalizationTrainingExReserveSpaceSize", &r.bn_training_ex_reserve,
          &r.ex_error);
  if (r.error.empty()) {
    if (const cudnnStatus_t s = r.create(&r.handle); s != CUDNN_STATUS_SUCCESS) {
      r.error = std::string(kBaselineUnavailable) + "cudnnCreate: " + r.error_string(s);
      r.handle = nullptr;
    }
  }
  return r;
}

} // namespace

const Cudnn& cudnn() {
  static const Cudnn c = load();
  return c;
}

std::string cudnn_failure(const char* what, cudnnStatus_t status) {
  const Cudnn& dnn = cudnn();
  const char* text = dnn.error_string != nullptr ? dnn.error_string(status) : "cuDNN not loaded";
  return std::string(what) + ": " + text;
}

bool check_cudnn(benchmark::State& state, cudnnStatus_t status, const char* what) {
  if (status == CUDNN_STATUS_SUCCESS) {
    return true;
  }
  state.SkipWithError(cudnn_failure(what, status).c_str());
  return false;
}

std::string cudnn_version_string() {
  const Cudnn& dnn = cudnn();
  if (!dnn.error.empty()) {
    return "cuDNN";
  }
  // cuDNN 9 encodes major * 10000 + minor * 100 + patch, cuDNN 8 major * 1000 + minor * 100 + patch.
  const std::size_t v = dnn.get_version();
  const std::size_t major = v >= 90000 ? v / 10000 : v / 1000;
  const std::size_t minor = v >= 90000 ? v / 100 % 100 : v / 100 % 10;
  return "cuDNN " + std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(v % 100);
}

} // namespace bench
} // namespace culayers

#endif // CULAYERS_BENCH_HAVE_CUDNN
