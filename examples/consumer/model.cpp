// The README's layer-front-end example, compiled against the installed package (so its headers and the
// nlohmann-json dependency work for a consumer) and run where a device is visible (the emulated backend
// always has one; the CUDA backend needs a GPU).
#include <culayers/nn.hpp>

#include <cuda_runtime_api.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace nn = culayers::nn;

int consumer_check_model() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();
    std::printf("model:   no device visible; the model example is compiled, not run\n");
    return 0;
  }
  const int batch = 2, steps = 5, features = 16;
  nn::Sequential model("encoder");
  bool ok = culayers::ok(model.add(std::make_unique<nn::Masking>()));
  nn::GroupNormalizationOptions gn;
  gn.groups = 8;
  gn.activation = culayers::group_norm::Activation::kSiLU;
  ok = ok && culayers::ok(model.add(std::make_unique<nn::GroupNormalization>(gn)));
  nn::DecayingDropoutOptions dd;
  dd.initial_keep_rate = 0.9;
  ok = ok && culayers::ok(model.add(std::make_unique<nn::DecayingDropout>(dd)));
  ok = ok && culayers::ok(model.add(std::make_unique<nn::BatchNormalization>()));
  ok = ok && culayers::ok(model.add(std::make_unique<nn::MaskedGlobalPooling1D>()));
  ok = ok && culayers::ok(model.build(culayers::Shape{batch, steps, features}));
  if (!ok) {
    std::fprintf(stderr, "model: %s\n", culayers::last_error_message());
    return 1;
  }
  std::printf("%s", model.summary().c_str());

  std::vector<float> host(static_cast<std::size_t>(batch) * steps * features, 1.5f);
  void* x = nullptr;
  if (cudaMalloc(&x, host.size() * sizeof(float)) != cudaSuccess ||
      cudaMemcpy(x, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess) {
    std::fprintf(stderr, "model: device memory\n");
    return 1;
  }
  cudaStream_t stream = nullptr;
  nn::CallContext ctx{stream, nn::Phase::kTraining}; // update ops run after every layer's forward
  nn::LayerOutput out;
  const culayers::ConstTensorView x_view = culayers::ConstTensorView::contiguous(
      x, culayers::DType::kFloat32, culayers::Shape{batch, steps, features});
  const culayers::Status s = model.call(ctx, x_view, /*mask=*/{}, &out); // out.y: [batch, features]
  const bool shape_ok = culayers::ok(s) && out.y.shape() == culayers::Shape{batch, features};
  const std::string config = model.to_json().dump(); // {"class_name": "Sequential", "config": ...}
  (void)cudaFree(x);
  if (!shape_ok || config.find("\"Sequential\"") == std::string::npos) {
    std::fprintf(stderr, "model: call failed: %s\n", culayers::last_error_message());
    return 1;
  }
  std::printf("model:   one training call, output [%d, %d]\n", batch, features);
  return 0;
}
