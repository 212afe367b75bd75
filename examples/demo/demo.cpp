// The culayers demo (the README's main job): a padded batch of sequences through
//   Masking -> GroupNormalization(SiLU) -> DecayingDropout -> BatchNormalization -> MaskedGlobalPooling1D
// built with the layer front end. It runs training-phase steps (the keep rate decays and the moving
// statistics move, both advanced by update ops on the device), then inference; saves the model (Keras-
// layout JSON + safetensors), reloads it twice (C++ and the C API) and checks the reloaded models give
// bit-identical outputs; and prints per-layer times.
//
// Built twice: culayers_demo (CUDA) and culayers_demo_emulated (the CPU emulator, for machines without a
// GPU; its timings say nothing about GPU speed). Usage: culayers_demo [output-directory]
#include "culayers/c/model.h"
#include "culayers/dropout.hpp"
#include "culayers/nn/core_layers.hpp"
#include "culayers/nn/layer.hpp"
#include "culayers/nn/sequential.hpp"
#include "culayers/status.hpp"

#include <cuda_runtime_api.h>

#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

namespace nn = culayers::nn;
using culayers::ConstTensorView;
using culayers::DType;
using culayers::Shape;
using culayers::Status;

namespace {

constexpr int kBatch = 8;
constexpr int kSteps = 32;
constexpr int kFeatures = 64;
constexpr int kTrainingSteps = 30;

bool check(Status s, const char* what) {
  if (!culayers::ok(s)) {
    std::fprintf(stderr, "demo: %s failed: %s (%s)\n", what, culayers::status_string(s),
                 culayers::last_error_message());
    return false;
  }
  return true;
}

bool check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "demo: %s failed: %s\n", what, cudaGetErrorString(e));
    return false;
  }
  return true;
}

/// The five layers, each from its Keras-layout config through the layer registry.
nn::Json model_config() {
  nn::Json layers = nn::Json::array();
  layers.push_back({{"class_name", "Masking"}, {"config", {{"name", "masking"}, {"mask_value", 0.0}}}});
  layers.push_back(
      {{"class_name", "GroupNormalization"},
       {"config", {{"name", "group_norm"}, {"groups", 8}, {"epsilon", 1e-3}, {"activation", "silu"}}}});
  layers.push_back({{"class_name", "DecayingDropout"},
                    {"config",
                     {{"name", "decaying_dropout"},
                      {"initial_keep_rate", 0.9},
                      {"decay_interval", 10},
                      {"decay_rate", 0.8},
                      {"seed", 2024}}}});
  layers.push_back(
      {{"class_name", "BatchNormalization"}, {"config", {{"name", "batch_norm"}, {"momentum", 0.9}}}});
  layers.push_back(
      {{"class_name", "MaskedGlobalPooling1D"}, {"config", {{"name", "pooling"}, {"mode", "mean"}}}});
  return nn::Json{{"class_name", "Sequential"}, {"config", {{"name", "demo"}, {"layers", layers}}}};
}

bool read_floats(const nn::Weight& w, std::vector<float>* out) {
  out->resize(static_cast<std::size_t>(w.value.numel()));
  return check(w.value.copy_to_host(out->data(), out->size() * sizeof(float), nullptr), "copy_to_host") &&
         check_cuda(cudaStreamSynchronize(nullptr), "cudaStreamSynchronize");
}

std::vector<std::uint8_t> read_bytes(const ConstTensorView& v) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(v.shape().numel()) *
                                culayers::dtype_size(v.dtype()));
  if (!out.empty() &&
      !check_cuda(cudaMemcpy(out.data(), v.data(), out.size(), cudaMemcpyDeviceToHost), "cudaMemcpy")) {
    out.clear();
  }
  return out;
}

/// Prints the dropout schedule and the first moving statistics after training step `step`.
bool print_state(nn::Sequential& model, int step) {
  auto* dropout = dynamic_cast<nn::DecayingDropout*>(model.find_layer("decaying_dropout"));
  nn::Layer* bn = model.find_layer("batch_norm");
  if (dropout == nullptr || bn == nullptr) {
    std::fprintf(stderr, "demo: layers not found\n");
    return false;
  }
  culayers::dropout::DropoutState state{};
  std::vector<float> mean;
  std::vector<float> var;
  if (!check(dropout->read_state(&state, nullptr), "read_state") ||
      !read_floats(*bn->find_weight("moving_mean"), &mean) ||
      !read_floats(*bn->find_weight("moving_variance"), &var)) {
    return false;
  }
  const double expected = culayers::dropout::scheduled_keep_rate(0.9, 0.8, 10, state.iterations);
  std::printf(
      "  step %2d  iterations %3" PRId64 "  keep rate %.6f (formula %.6f)  moving_mean[0:3] % .4f % .4f % .4f"
      "  moving_variance[0:3] %.4f %.4f %.4f\n",
      step, state.iterations, state.keep_rate, expected, mean[0], mean[1], mean[2], var[0], var[1], var[2]);
  // The device's double pow may differ from the host's in the last bits (CUDA documents 2 ulp).
  return std::fabs(state.keep_rate - expected) <= 1e-12 * expected;
}

int run(const std::filesystem::path& out_dir) {
  int device = 0;
  cudaDeviceProp prop{};
  if (!check_cuda(cudaGetDevice(&device), "cudaGetDevice") ||
      !check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties")) {
    return 1;
  }
#if defined(CULAYERS_EMULATED)
  std::printf(
      "culayers demo on the CPU EMULATOR (no GPU in use): kernels run with CUDA's semantics on the CPU;\n"
      "the times printed below say nothing about GPU speed. On a GPU machine scripts/demo.sh runs the\n"
      "CUDA build instead.\n\n");
#else
  std::printf("culayers demo on %s (sm_%d%d, %d SMs)\n\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount);
#endif

  // A padded batch: sequence b has lengths[b] valid steps; padded steps are exactly 0 (Masking's value).
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> length_dist(3, kSteps);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<int> lengths(kBatch);
  std::vector<float> host(static_cast<std::size_t>(kBatch) * kSteps * kFeatures, 0.0f);
  for (int b = 0; b < kBatch; ++b) {
    lengths[static_cast<std::size_t>(b)] = b == 0 ? kSteps : length_dist(rng);
    for (int t = 0; t < lengths[static_cast<std::size_t>(b)]; ++t) {
      for (int f = 0; f < kFeatures; ++f) {
        host[(static_cast<std::size_t>(b) * kSteps + t) * kFeatures + f] =
            3.0f + 2.0f * normal(rng) + 0.05f * f;
      }
    }
  }
  std::printf("input: %d sequences x %d steps x %d features (float32), valid lengths:", kBatch, kSteps,
              kFeatures);
  for (int l : lengths) {
    std::printf(" %d", l);
  }
  std::printf("\n\n");
  void* x_dev = nullptr;
  if (!check_cuda(cudaMalloc(&x_dev, host.size() * sizeof(float)), "cudaMalloc") ||
      !check_cuda(cudaMemcpy(x_dev, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice),
                  "cudaMemcpy")) {
    return 1;
  }
  std::unique_ptr<void, decltype(&cudaFree)> x_owner(x_dev, &cudaFree);
  const ConstTensorView x =
      ConstTensorView::contiguous(x_dev, DType::kFloat32, Shape{kBatch, kSteps, kFeatures});

  std::unique_ptr<nn::Sequential> model;
  if (!check(nn::Sequential::from_json(model_config(), &model), "Sequential::from_json") ||
      !check(model->build(x.shape()), "build")) {
    return 1;
  }
  std::printf("%s\n", model->summary().c_str());

  // Training-phase steps: each call normalizes with batch statistics and drops with the current keep
  // rate; the update ops (iterations += 1 and the next keep rate; the moving averages) run on the stream.
  std::printf("training phase (%d steps; the update ops advance the schedule and the moving statistics):\n",
              kTrainingSteps);
  nn::CallContext train{};
  train.phase = nn::Phase::kTraining;
  nn::LayerOutput out{};
  bool schedule_ok = print_state(*model, 0);
  for (int step = 1; step <= kTrainingSteps; ++step) {
    if (!check(model->call(train, x, {}, &out), "training call")) {
      return 1;
    }
    if (step % 5 == 0) {
      schedule_ok = print_state(*model, step) && schedule_ok;
    }
  }

  // Inference: moving statistics, dropout is the identity, nothing is updated.
  nn::CallContext infer{};
  if (!check(model->call(infer, x, {}, &out), "inference call")) {
    return 1;
  }
  const std::vector<std::uint8_t> reference = read_bytes(out.y);
  std::vector<float> pooled(reference.size() / sizeof(float));
  std::memcpy(pooled.data(), reference.data(), reference.size());
  std::printf(
      "\ninference output (%d x %d, pooled over the valid steps), row 0 [0:4]: % .5f % .5f % .5f % .5f\n",
      static_cast<int>(out.y.shape().dim(0)), static_cast<int>(out.y.shape().dim(1)), pooled[0], pooled[1],
      pooled[2], pooled[3]);

  // Per-layer times of one training and one inference call (CUDA events between the layers).
  for (const nn::CallContext* ctx : {&train, &infer}) {
    std::vector<nn::LayerTiming> times;
    if (!check(model->profile(*ctx, x, {}, &out, &times), "profile")) {
      return 1;
    }
    std::printf("\nper-layer time, %s phase:\n", nn::phase_name(ctx->phase));
    float total = 0.0f;
    for (const auto& t : times) {
      std::printf("  %-20s %-24s %9.3f ms\n", t.name.c_str(), t.class_name.c_str(), t.milliseconds);
      total += t.milliseconds;
    }
    std::printf("  %-45s %9.3f ms\n", "total", total);
  }
  // The profiled training call advanced the model once more: take the reference output again.
  if (!check(model->call(infer, x, {}, &out), "inference call")) {
    return 1;
  }
  const std::vector<std::uint8_t> expected = read_bytes(out.y);

  // Save (config JSON + safetensors weights) and reload, twice.
  std::filesystem::create_directories(out_dir);
  const std::string config_path = (out_dir / "demo_model.json").string();
  const std::string weights_path = (out_dir / "demo_model.safetensors").string();
  {
    std::ofstream config_file(config_path);
    config_file << model->to_json().dump(2) << "\n";
    if (!config_file) {
      std::fprintf(stderr, "demo: cannot write %s\n", config_path.c_str());
      return 1;
    }
  }
  if (!check(model->save_weights(weights_path), "save_weights")) {
    return 1;
  }
  std::printf("\nsaved %s and %s\n", config_path.c_str(), weights_path.c_str());

  std::unique_ptr<nn::Sequential> reloaded;
  std::ifstream config_in(config_path);
  const std::string config_text((std::istreambuf_iterator<char>(config_in)),
                                std::istreambuf_iterator<char>());
  // What culayers wrote must read back with every key known: a strict read refuses unknown keys.
  nn::ConfigReadOptions strict;
  strict.reject_unknown_keys = true;
  if (!check(nn::Sequential::from_json_string(config_text, strict, &reloaded), "reload config") ||
      !check(reloaded->load_weights(weights_path), "reload weights") ||
      !check(reloaded->call(infer, x, {}, &out), "reloaded inference call")) {
    return 1;
  }
  const bool cpp_same = read_bytes(out.y) == expected;
  std::printf("reloaded (C++ API): inference output %s\n", cpp_same ? "bit-identical" : "DIFFERS");

  culayersModel_t handle = nullptr;
  culayersModelOptions_t options;
  culayersModelOptionsInit(&options);
  options.reject_unknown_config_keys = 1;
  if (culayersModelCreateFromFileWithOptions(&handle, config_path.c_str(), weights_path.c_str(), &options,
                                             nullptr) != CULAYERS_STATUS_SUCCESS) {
    std::fprintf(stderr, "demo: culayersModelCreateFromFileWithOptions: %s\n", culayersGetLastErrorMessage());
    return 1;
  }
  void* y_dev = nullptr;
  if (!check_cuda(cudaMalloc(&y_dev, expected.size()), "cudaMalloc")) {
    culayersModelDestroy(handle);
    return 1;
  }
  culayersModelRunArgs_t args;
  culayersModelRunArgsInit(&args);
  args.x = x_dev;
  args.rank = 3;
  args.dims[0] = kBatch;
  args.dims[1] = kSteps;
  args.dims[2] = kFeatures;
  args.y = y_dev;
  args.y_bytes = expected.size();
  const culayersStatus_t run_status = culayersModelRun(handle, &args, nullptr, nullptr);
  std::vector<std::uint8_t> c_out(expected.size());
  const bool copied =
      run_status == CULAYERS_STATUS_SUCCESS &&
      check_cuda(cudaMemcpy(c_out.data(), y_dev, c_out.size(), cudaMemcpyDeviceToHost), "cudaMemcpy");
  if (run_status != CULAYERS_STATUS_SUCCESS) {
    std::fprintf(stderr, "demo: culayersModelRun: %s\n", culayersGetLastErrorMessage());
  }
  (void)cudaFree(y_dev);
  culayersModelDestroy(handle);
  const bool c_same = copied && c_out == expected;
  std::printf("reloaded (C API):   inference output %s\n", c_same ? "bit-identical" : "DIFFERS");

  const bool ok = schedule_ok && cpp_same && c_same;
  std::printf("\ndemo %s\n", ok ? "passed" : "FAILED");
  return ok ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  const std::filesystem::path out_dir =
      argc > 1 ? std::filesystem::path(argv[1])
               : std::filesystem::temp_directory_path() / ("culayers_demo_" + std::to_string(::getpid()));
  return run(out_dir);
}
