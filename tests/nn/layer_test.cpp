// The Layer base (culayers/nn/layer.hpp) through a small test layer: build once with initialized
// weights, shape checks, output buffers reused across warmed-up calls, Keras 2 mask rules, update ops
// gated by phase and trainable, configs and the class registry.
#include "culayers/nn/layer.hpp"

#include "tests/support/test_support.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace nn = culayers::nn;
using culayers::ConstTensorView;
using culayers::DType;
using culayers::Shape;
using culayers::Status;
using nn::Json;

/// y = x (a device copy); weights "scale" [features] (trainable) and "iterations" [1] int32
/// (non-trainable); one update op that records its calls.
class CopyLayer final : public nn::Layer {
 public:
  CopyLayer(std::string name, bool masking, nn::Initializer init = nn::Initializer::ones())
      : Layer("CopyLayer", std::move(name)), masking_(masking), init_(init) {}

  bool supports_masking() const noexcept override { return masking_; }
  std::vector<std::string> log;

 protected:
  Status do_build(const Shape& input_shape, cudaStream_t stream) override {
    if (Status s = add_weight("scale", Shape{input_shape.dim(-1)}, DType::kFloat32, init_, true, stream);
        !culayers::ok(s)) {
      return s;
    }
    if (Status s = add_weight("iterations", Shape{1}, DType::kInt32, nn::Initializer::zeros(), false, stream);
        !culayers::ok(s)) {
      return s;
    }
    add_update("first", [this](const nn::CallContext&) {
      log.push_back("first");
      return Status::kSuccess;
    });
    add_update("second", [this](const nn::CallContext&) {
      log.push_back("second");
      return Status::kSuccess;
    });
    return Status::kSuccess;
  }
  Status do_call(const nn::CallContext& ctx, const ConstTensorView& x, const ConstTensorView&,
                 nn::LayerOutput* out) override {
    nn::Tensor* y = nullptr;
    if (Status s = output_buffer(ctx, 0, x.shape(), x.dtype(), &y); !culayers::ok(s)) {
      return s;
    }
    if (y->bytes() > 0 && cudaMemcpyAsync(y->data(), x.data(), y->bytes(), cudaMemcpyDeviceToDevice,
                                          ctx.stream) != cudaSuccess) {
      return Status::kErrorCudaRuntime;
    }
    out->y = y->view();
    return Status::kSuccess;
  }
  void add_config(Json& config) const override {
    config["masking"] = masking_;
    config["scale_initializer"] = init_.to_json();
  }

 private:
  bool masking_;
  nn::Initializer init_;
};

Status make_copy_layer(const Json& config, std::unique_ptr<nn::Layer>* out) {
  std::string name;
  bool trainable = true;
  DType dtype = DType::kFloat32;
  if (Status s = nn::read_base_config(config, &name, &trainable, &dtype); !culayers::ok(s)) {
    return s;
  }
  nn::Initializer init = nn::Initializer::ones();
  if (config.contains("scale_initializer")) {
    if (Status s = nn::Initializer::from_json(config["scale_initializer"], &init); !culayers::ok(s)) {
      return s;
    }
  }
  auto layer = std::make_unique<CopyLayer>(name, config.value("masking", false), init);
  layer->set_trainable(trainable);
  *out = std::move(layer);
  return Status::kSuccess;
}

std::vector<float> download_floats(const nn::Tensor& t) {
  std::vector<float> v(static_cast<std::size_t>(t.numel()));
  EXPECT_EQ(t.copy_to_host(v.data(), v.size() * sizeof(float), nullptr), Status::kSuccess);
  EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  return v;
}

/// One weight "w" [3] of `dtype` initialized by `init`: add_weight's conversion of the initializer's values.
class WeightLayer final : public nn::Layer {
 public:
  WeightLayer(DType dtype, nn::Initializer init)
      : Layer("WeightLayer", "weights"), dtype_(dtype), init_(init) {}

 protected:
  Status do_build(const Shape&, cudaStream_t stream) override {
    return add_weight("w", Shape{3}, dtype_, init_, true, stream);
  }
  Status do_call(const nn::CallContext&, const ConstTensorView&, const ConstTensorView&,
                 nn::LayerOutput*) override {
    return Status::kErrorNotSupported;
  }

 private:
  DType dtype_;
  nn::Initializer init_;
};

/// The weight's first element as `T`, after a build that must succeed.
template <class T>
T built_value(DType dtype, double value) {
  WeightLayer layer(dtype, nn::Initializer::constant(value));
  EXPECT_EQ(layer.build(Shape{1, 3}), Status::kSuccess) << culayers::last_error_message();
  const nn::Weight* w = layer.find_weight("w");
  T v[3] = {};
  if (w != nullptr) {
    EXPECT_EQ(w->value.copy_to_host(v, sizeof(v), nullptr), Status::kSuccess)
        << culayers::last_error_message();
    EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  }
  return v[0];
}

// Initializer values beyond a float weight's range round as the hardware's conversion does (to the largest
// float below half an ulp above it, else to an infinity); an integer weight takes only integers in its
// range, anything else is refused with the layer, the weight and the value named (no undefined conversion).
TEST(NnLayer, WeightValuesConvertWithoutUndefinedBehaviour) {
  const double flt_max = std::numeric_limits<float>::max();
  EXPECT_EQ(built_value<float>(DType::kFloat32, 1e39), std::numeric_limits<float>::infinity());
  EXPECT_EQ(built_value<float>(DType::kFloat32, -1e39), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(built_value<float>(DType::kFloat32, flt_max * (1.0 + 0x1p-26)),
            std::numeric_limits<float>::max());
  EXPECT_EQ(built_value<float>(DType::kFloat32, flt_max * (1.0 + 0x1p-24)),
            std::numeric_limits<float>::infinity());
  EXPECT_EQ(built_value<float>(DType::kFloat32, 0.1), 0.1f);
  EXPECT_TRUE(std::isnan(built_value<float>(DType::kFloat32, std::numeric_limits<double>::quiet_NaN())));
  EXPECT_EQ(built_value<std::int32_t>(DType::kInt32, 7.0), 7);
  EXPECT_EQ(built_value<std::int32_t>(DType::kInt32, -2147483648.0),
            std::numeric_limits<std::int32_t>::min());
  EXPECT_EQ(built_value<std::int64_t>(DType::kInt64, -0x1p63), std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(built_value<std::uint8_t>(DType::kUInt8, 255.0), 255);
  const struct {
    DType dtype;
    double value;
  } refused[] = {{DType::kInt32, 1.5},          {DType::kInt32, 2147483648.0}, {DType::kInt64, 0x1p63},
                 {DType::kInt64, std::nan("")}, {DType::kUInt8, 256.0},        {DType::kUInt8, -1.0}};
  for (const auto& r : refused) {
    WeightLayer layer(r.dtype, nn::Initializer::constant(r.value));
    EXPECT_EQ(layer.build(Shape{1, 3}), Status::kErrorInvalidValue) << r.value;
    const std::string message = culayers::last_error_message();
    EXPECT_NE(message.find("weights: add_weight: w: initializer value"), std::string::npos) << message;
    EXPECT_FALSE(layer.built());
  }
}

TEST(NnLayer, DefaultNamesAreKerasLike) {
  CopyLayer a("", false);
  CopyLayer b("", false);
  CopyLayer c("mine", false);
  EXPECT_EQ(a.name().rfind("copy_layer", 0), 0u) << a.name();
  EXPECT_NE(a.name(), b.name());
  EXPECT_EQ(c.name(), "mine");
  EXPECT_EQ(c.class_name(), "CopyLayer");
}

TEST(NnLayer, BuildCreatesInitializedWeightsOnce) {
  CopyLayer layer("copy", false, nn::Initializer::constant(0.5));
  EXPECT_FALSE(layer.built());
  ASSERT_EQ(layer.build(Shape{4, 7, 6}), Status::kSuccess) << culayers::last_error_message();
  EXPECT_TRUE(layer.built());
  EXPECT_EQ(layer.built_shape(), (Shape{4, 7, 6}));
  ASSERT_EQ(layer.weights().size(), 2u);
  const nn::Weight* scale = layer.find_weight("scale");
  ASSERT_NE(scale, nullptr);
  EXPECT_EQ(scale->value.shape(), (Shape{6}));
  for (float v : download_floats(scale->value)) {
    EXPECT_EQ(v, 0.5f);
  }
  EXPECT_EQ(layer.count_params(), 7);
  EXPECT_EQ(layer.trainable_weights().size(), 1u);
  EXPECT_EQ(layer.non_trainable_weights().size(), 1u);
  EXPECT_EQ(layer.update_count(), 2u);
  layer.set_trainable(false); // Keras: every weight of a frozen layer is non-trainable
  EXPECT_EQ(layer.trainable_weights().size(), 0u);
  EXPECT_EQ(layer.non_trainable_weights().size(), 2u);
  EXPECT_EQ(layer.build(Shape{4, 7, 6}), Status::kErrorInvalidValue); // once
  EXPECT_EQ(layer.find_weight("missing"), nullptr);
}

TEST(NnLayer, CallBuildsCopiesAndReusesItsOutputBuffer) {
  auto rng = culayers::test::rng_for_test();
  std::vector<float> host(3 * 5 * 4);
  for (float& v : host) {
    v = std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng);
  }
  culayers::test::DeviceBuffer<float> x(host);
  CopyLayer layer("copy", false);
  nn::CallContext ctx;
  nn::LayerOutput out;
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{3, 5, 4});
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_TRUE(layer.built());
  std::vector<float> back(host.size());
  ASSERT_EQ(cudaMemcpy(back.data(), out.y.data(), back.size() * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(back, host);
  EXPECT_EQ(out.mask.data(), nullptr);
  const void* first = out.y.data();
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess);
  EXPECT_EQ(out.y.data(), first) << "a warmed-up call must reuse its output buffer";
  // Another batch size is compatible (a new buffer); another feature size is not.
  const ConstTensorView smaller = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 5, 4});
  ASSERT_EQ(layer.call(ctx, smaller, {}, &out), Status::kSuccess);
  EXPECT_EQ(out.y.shape(), (Shape{2, 5, 4}));
  const ConstTensorView wrong = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{3, 4, 5});
  EXPECT_EQ(layer.call(ctx, wrong, {}, &out), Status::kErrorInvalidShape);
  EXPECT_NE(std::string(culayers::last_error_message()).find("copy: input"), std::string::npos);
  // Only floating inputs are cast (Keras's autocast); an int32 input is refused, nothing run.
  const ConstTensorView ints = ConstTensorView::contiguous(x.get(), DType::kInt32, Shape{3, 5, 4});
  out = nn::LayerOutput{};
  EXPECT_EQ(layer.call(ctx, ints, {}, &out), Status::kErrorInvalidDType);
  EXPECT_NE(std::string(culayers::last_error_message()).find("copy: x: dtype int32"), std::string::npos)
      << culayers::last_error_message();
  EXPECT_EQ(out.y.data(), nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

/// Identity with a workspace of 1000 bytes per batch row (workspace_buffer's growing slot 1).
class WorkspaceLayer final : public nn::Layer {
 public:
  explicit WorkspaceLayer(std::string name) : Layer("WorkspaceLayer", std::move(name)) {}
  std::size_t last_workspace_bytes = 0;

 protected:
  Status do_call(const nn::CallContext& ctx, const ConstTensorView& x, const ConstTensorView&,
                 nn::LayerOutput* out) override {
    void* ws = nullptr;
    if (Status s = workspace_buffer(ctx, 1, static_cast<std::size_t>(x.shape().dim(0)) * 1000, &ws,
                                    &last_workspace_bytes);
        !culayers::ok(s)) {
      return s;
    }
    out->y = x;
    return Status::kSuccess;
  }
};

// The workspace slot grows with the calls and never shrinks by itself (a warmed-up call never reallocates);
// release_buffers() empties it, and the next call takes only what it needs.
TEST(NnLayer, WorkspacesGrowAndReleaseEmptiesThem) {
  culayers::test::DeviceBuffer<float> x(8 * 4);
  WorkspaceLayer layer("ws");
  nn::CallContext ctx;
  nn::LayerOutput out;
  const auto call = [&](std::int64_t batch) {
    ASSERT_EQ(
        layer.call(ctx, ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{batch, 4}), {}, &out),
        Status::kSuccess)
        << culayers::last_error_message();
  };
  call(2);
  EXPECT_EQ(layer.last_workspace_bytes, 2000u);
  call(8);
  EXPECT_EQ(layer.last_workspace_bytes, 8000u);
  call(1);
  EXPECT_EQ(layer.last_workspace_bytes, 8000u) << "a smaller call keeps the grown workspace";
  EXPECT_EQ(layer.buffer_bytes(), 8000u);
  layer.release_buffers();
  EXPECT_EQ(layer.buffer_bytes(), 0u);
  call(1);
  EXPECT_EQ(layer.last_workspace_bytes, 1000u) << "after a release, only what the call needs";
  EXPECT_EQ(layer.buffer_bytes(), 1000u);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

/// Counts allocations (forwarding to the default allocator).
class CountingAllocator final : public nn::Allocator {
 public:
  Status allocate(void** ptr, std::size_t bytes, cudaStream_t stream) override {
    ++count;
    return nn::default_allocator().allocate(ptr, bytes, stream);
  }
  void deallocate(void* ptr, std::size_t bytes, cudaStream_t stream) noexcept override {
    nn::default_allocator().deallocate(ptr, bytes, stream);
  }
  int count = 0;
};

// Keras's autocast: a float16 or bfloat16 input to a float32 layer is converted first (exactly: every
// half value is a float), into a layer-owned buffer kept while the shape stays (a warmed-up call allocates
// nothing, whichever floating dtype comes in); the caller's input is not written.
TEST(NnLayer, FloatingInputsAreCastToTheLayerDtype) {
  auto rng = culayers::test::rng_for_test();
  std::vector<__half> halves(2 * 3 * 4);
  std::vector<__nv_bfloat16> bhalves(halves.size());
  for (std::size_t i = 0; i < halves.size(); ++i) {
    const float v = std::uniform_real_distribution<float>(-100.0f, 100.0f)(rng);
    halves[i] = __float2half_rn(v);
    bhalves[i] = __float2bfloat16_rn(v);
  }
  culayers::test::DeviceBuffer<__half> xh(halves);
  culayers::test::DeviceBuffer<__nv_bfloat16> xb(bhalves);
  CountingAllocator allocator; // declared before the layer: it outlives the layer's buffers
  CopyLayer layer("copy", false);
  nn::CallContext ctx;
  ctx.allocator = &allocator;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, ConstTensorView::contiguous(xh.get(), DType::kFloat16, Shape{2, 3, 4}), {}, &out),
            Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(out.y.dtype(), DType::kFloat32);
  std::vector<float> back(halves.size());
  ASSERT_EQ(cudaMemcpy(back.data(), out.y.data(), back.size() * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  for (std::size_t i = 0; i < back.size(); ++i) {
    ASSERT_EQ(back[i], __half2float(halves[i])) << i;
  }
  ASSERT_EQ(
      layer.call(ctx, ConstTensorView::contiguous(xb.get(), DType::kBFloat16, Shape{2, 3, 4}), {}, &out),
      Status::kSuccess)
      << culayers::last_error_message();
  ASSERT_EQ(cudaMemcpy(back.data(), out.y.data(), back.size() * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  for (std::size_t i = 0; i < back.size(); ++i) {
    ASSERT_EQ(back[i], __bfloat162float(bhalves[i])) << i;
  }
  // Warmed up: calls in either half dtype allocate nothing (the cast buffer is the layer's dtype and shape).
  const int allocations = allocator.count;
  EXPECT_GT(allocations, 0);
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(
        layer.call(ctx, ConstTensorView::contiguous(xh.get(), DType::kFloat16, Shape{2, 3, 4}), {}, &out),
        Status::kSuccess);
    ASSERT_EQ(
        layer.call(ctx, ConstTensorView::contiguous(xb.get(), DType::kBFloat16, Shape{2, 3, 4}), {}, &out),
        Status::kSuccess);
  }
  EXPECT_EQ(allocator.count, allocations) << "a warmed-up casting call allocated";
  const std::vector<__half> after = xh.download();
  EXPECT_EQ(std::memcmp(after.data(), halves.data(), halves.size() * sizeof(__half)), 0) << "x was written";
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(NnLayer, MasksFollowKeras2Rules) {
  culayers::test::DeviceBuffer<float> x(2 * 3 * 4);
  culayers::test::DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>{1, 1, 0, 1, 0, 0});
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 3, 4});
  const ConstTensorView mv = ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{2, 3});
  nn::CallContext ctx;
  nn::LayerOutput out;
  CopyLayer plain("plain", false);
  EXPECT_EQ(plain.call(ctx, xv, mv, &out), Status::kErrorNotSupported);
  EXPECT_NE(std::string(culayers::last_error_message()).find("does not support masking"), std::string::npos);
  CopyLayer masking("masking", true);
  ASSERT_EQ(masking.call(ctx, xv, mv, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(out.mask.data(), mask.get()); // passed through
  const ConstTensorView bad = ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{3, 2});
  EXPECT_EQ(masking.call(ctx, xv, bad, &out), Status::kErrorInconsistentArguments);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(NnLayer, UpdatesRunAfterTrainingCallsOfTrainableLayersOnly) {
  culayers::test::DeviceBuffer<float> x(2 * 4);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 4});
  CopyLayer layer("copy", false);
  nn::CallContext ctx;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess); // inference
  EXPECT_TRUE(layer.log.empty());
  ctx.phase = nn::Phase::kTraining;
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess);
  EXPECT_EQ(layer.log, (std::vector<std::string>{"first", "second"}));
  layer.set_trainable(false);
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess);
  EXPECT_EQ(layer.log.size(), 2u) << "a frozen layer runs no update";
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(NnLayer, ConfigsRoundTripThroughTheRegistry) {
  ASSERT_EQ(nn::register_layer_class("CopyLayer", make_copy_layer), Status::kSuccess);
  EXPECT_TRUE(nn::is_layer_class_registered("CopyLayer"));
  CopyLayer layer("copy_a", true, nn::Initializer::random_normal(0.0, 0.1, 4));
  layer.set_trainable(false);
  const Json j = nn::layer_to_json(layer);
  EXPECT_EQ(j["class_name"], "CopyLayer");
  EXPECT_EQ(j["config"]["name"], "copy_a");
  EXPECT_EQ(j["config"]["trainable"], false);
  EXPECT_EQ(j["config"]["dtype"], "float32");
  std::unique_ptr<nn::Layer> back;
  ASSERT_EQ(nn::layer_from_json(Json::parse(j.dump()), &back), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(nn::layer_to_json(*back), j);
  EXPECT_FALSE(back->trainable());
}

TEST(NnLayer, BadConfigsAreClearErrors) {
  ASSERT_EQ(nn::register_layer_class("CopyLayer", make_copy_layer), Status::kSuccess);
  std::unique_ptr<nn::Layer> out;
  EXPECT_EQ(nn::layer_from_json(Json::parse(R"({"class_name": "Dense", "config": {}})"), &out),
            Status::kErrorUnknownClass);
  EXPECT_NE(std::string(culayers::last_error_message()).find("\"Dense\""), std::string::npos);
  EXPECT_EQ(nn::layer_from_json(Json::parse(R"({"config": {}})"), &out), Status::kErrorParse);
  EXPECT_EQ(nn::layer_from_json(Json::parse(R"({"class_name": "CopyLayer", "config": 3})"), &out),
            Status::kErrorParse);
  EXPECT_EQ(nn::layer_from_json(Json::parse(R"({"class_name": "CopyLayer", "config": {"trainable": "yes"}})"),
                                &out),
            Status::kErrorParse);
  EXPECT_EQ(
      nn::layer_from_json(Json::parse(R"({"class_name": "CopyLayer", "config": {"dtype": "int8"}})"), &out),
      Status::kErrorParse);
  EXPECT_TRUE(out == nullptr);
  EXPECT_EQ(nn::register_layer_class("", make_copy_layer), Status::kErrorInvalidValue);
}

} // namespace
