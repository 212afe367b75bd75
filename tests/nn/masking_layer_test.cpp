// The Masking layer (culayers/nn/core_layers.hpp): a hand-worked padded batch, rank 2 (every value a
// step), random inputs of every dtype against the CPU reference of the Masking op (bit for bit), the
// incoming mask ignored, buffers reused by warmed-up calls, option and shape errors, configs.
#include "culayers/nn/core_layers.hpp"

#include "tests/nn/nn_test_util.hpp"
#include "tests/reference/masked_reduce_reference.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

namespace nn = culayers::nn;
namespace tm = culayers::test::masked;
using culayers::ConstTensorView;
using culayers::DType;
using culayers::Shape;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using nn::Json;

template <class T>
std::vector<T> download(const ConstTensorView& v) {
  std::vector<T> host(static_cast<std::size_t>(v.numel()));
  if (!host.empty()) {
    EXPECT_EQ(cudaMemcpy(host.data(), v.data(), host.size() * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return host;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

bool message_has(const char* text) {
  return std::string(culayers::last_error_message()).find(text) != std::string::npos;
}

// Batch of 2 sequences of 3 steps with 2 features, mask value 0:
//   b0: [1, 2]  [0, 0]   [0, 3]      -> mask 1 0 1; the all-zero step is masked
//   b1: [0, 0]  [-0, 0]  [NaN, 0]    -> mask 0 0 1; -0 equals 0 (masked, written back as +0); NaN != 0
TEST(MaskingLayer, HandWorkedPaddedBatch) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x_host = {1, 2, 0, 0, 0, 3, 0, 0, -0.0f, 0, nan, 0};
  DeviceBuffer<float> x(x_host);
  DeviceBuffer<std::uint8_t> incoming(std::vector<std::uint8_t>{0, 0, 0, 1, 1, 1});
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 3, 2});
  const ConstTensorView mv = ConstTensorView::contiguous(incoming.get(), DType::kUInt8, Shape{2, 3});
  nn::Masking layer(nn::MaskingOptions{0.0}, "masking");
  EXPECT_TRUE(layer.supports_masking());
  nn::LayerOutput out;
  for (nn::Phase phase : {nn::Phase::kInference, nn::Phase::kTraining}) {
    SCOPED_TRACE(nn::phase_name(phase));
    nn::CallContext ctx;
    ctx.phase = phase;
    culayers::test::nn_util::poison(out); // the layer reuses its buffers: the call must rewrite them
    // The incoming mask is ignored (Keras): the output mask is the layer's own.
    ASSERT_EQ(layer.call(ctx, xv, mv, &out), Status::kSuccess) << culayers::last_error_message();
    EXPECT_EQ(out.y.shape(), (Shape{2, 3, 2}));
    EXPECT_EQ(out.mask.shape(), (Shape{2, 3}));
    EXPECT_EQ(out.mask.dtype(), DType::kUInt8);
    EXPECT_NE(out.mask.data(), static_cast<const void*>(incoming.get()));
    EXPECT_EQ(download<std::uint8_t>(out.mask), (std::vector<std::uint8_t>{1, 0, 1, 0, 0, 1}));
    const std::vector<float> want = {1, 2, 0, 0, 0, 3, 0, 0, 0, 0, nan, 0}; // +0 in masked steps
    EXPECT_TRUE(same_bits(download<float>(out.y), want));
  }
  EXPECT_EQ(layer.update_count(), 0u);
  EXPECT_TRUE(layer.weights().empty());
}

// Rank 2 (decision): (batch, steps) with every value a step of its own; mask value 1.5.
TEST(MaskingLayer, RankTwoMasksEachValue) {
  DeviceBuffer<float> x(std::vector<float>{1.5f, 2.0f, 1.5f, 0.0f, -1.5f, 1.5f, 1.5f, 1.5f});
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 4});
  nn::Masking layer(nn::MaskingOptions{1.5});
  Shape shape;
  ASSERT_EQ(layer.compute_output_shape(Shape{2, 4}, &shape), Status::kSuccess);
  EXPECT_EQ(shape, (Shape{2, 4}));
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(nn::CallContext{}, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(out.mask.shape(), (Shape{2, 4}));
  EXPECT_EQ(download<std::uint8_t>(out.mask), (std::vector<std::uint8_t>{0, 1, 0, 1, 1, 0, 0, 0}));
  EXPECT_TRUE(same_bits(download<float>(out.y), std::vector<float>{0, 2, 0, 0, -1.5f, 0, 0, 0}));
}

template <class T>
void random_case(std::mt19937_64& rng, const Shape& shape, float mask_value) {
  SCOPED_TRACE(std::string(tm::Dtype<T>::kName) + " mask_value " + std::to_string(mask_value));
  const std::int64_t rows = shape.dim(0) * shape.dim(1);
  const std::int64_t inner = shape.product(2, shape.rank());
  std::vector<T> x_host = tm::exact_values<T>(rng, static_cast<std::size_t>(shape.numel()), 4);
  // Every third step entirely the mask value (masked), every fifth the mask value but one NaN (valid).
  for (std::int64_t r = 0; r < rows; ++r) {
    T* p = x_host.data() + r * inner;
    if (r % 3 == 1 || r % 5 == 2) {
      std::fill(p, p + inner, tm::Dtype<T>::from_double(mask_value));
    }
    if (r % 5 == 2) {
      p[r % inner] = tm::Dtype<T>::from_double(std::numeric_limits<double>::quiet_NaN());
    }
  }
  std::vector<std::uint8_t> want_mask;
  std::vector<T> want_y;
  tm::masking_reference(x_host, rows, inner, mask_value, &want_mask, &want_y);
  DeviceBuffer<T> x(x_host);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), tm::Dtype<T>::kDType, shape);
  nn::Masking layer(nn::MaskingOptions{mask_value}, "", tm::Dtype<T>::kDType);
  nn::LayerOutput out;
  for (nn::Phase phase : {nn::Phase::kTraining, nn::Phase::kInference}) {
    nn::CallContext ctx;
    ctx.phase = phase;
    culayers::test::nn_util::poison(out); // the layer reuses its buffers: the call must rewrite them
    ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
    EXPECT_EQ(download<std::uint8_t>(out.mask), want_mask) << "seed " << culayers::test::base_seed();
    EXPECT_TRUE(same_bits(download<T>(out.y), want_y)) << "seed " << culayers::test::base_seed();
  }
}

TEST(MaskingLayer, RandomInputsMatchTheReferenceInEveryDtype) {
  auto rng = rng_for_test();
  for (float mask_value : {0.0f, 0.25f, -1.0f}) {
    random_case<float>(rng, Shape{3, 7, 2, 5}, mask_value);
    random_case<__half>(rng, Shape{4, 9, 3}, mask_value);
    random_case<__nv_bfloat16>(rng, Shape{2, 33, 4}, mask_value);
  }
}

TEST(MaskingLayer, WarmedUpCallsReuseTheirBuffers) {
  DeviceBuffer<float> x(std::vector<float>(4 * 5 * 3, 1.0f));
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{4, 5, 3});
  nn::Masking layer;
  nn::LayerOutput first;
  nn::LayerOutput second;
  ASSERT_EQ(layer.call(nn::CallContext{}, xv, {}, &first), Status::kSuccess);
  ASSERT_EQ(layer.call(nn::CallContext{}, xv, {}, &second), Status::kSuccess);
  EXPECT_EQ(first.y.data(), second.y.data());
  EXPECT_EQ(first.mask.data(), second.mask.data());
  // A smaller batch and another step count are compatible (Keras gives Masking no input spec); another
  // rank is not.
  const ConstTensorView smaller = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 5, 3});
  ASSERT_EQ(layer.call(nn::CallContext{}, smaller, {}, &second), Status::kSuccess);
  EXPECT_EQ(second.mask.shape(), (Shape{2, 5}));
  const ConstTensorView other = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{4, 3, 5});
  ASSERT_EQ(layer.call(nn::CallContext{}, other, {}, &second), Status::kSuccess);
  EXPECT_EQ(second.mask.shape(), (Shape{4, 3}));
  const ConstTensorView rank2 = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{4, 15});
  EXPECT_EQ(layer.call(nn::CallContext{}, rank2, {}, &second), Status::kErrorInvalidShape);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(MaskingLayer, BadOptionsAndInputsAreErrorsNamingThem) {
  DeviceBuffer<float> x(std::vector<float>(8, 1.0f));
  const ConstTensorView rank1 = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{8});
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 2, 2});
  const nn::LayerOutput sentinel{ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{1}), {}};
  {
    nn::Masking layer(nn::MaskingOptions{}, "m1");
    nn::LayerOutput out = sentinel;
    EXPECT_EQ(layer.call(nn::CallContext{}, rank1, {}, &out), Status::kErrorInvalidShape);
    EXPECT_TRUE(message_has("m1: input_shape")) << culayers::last_error_message();
    EXPECT_FALSE(layer.built());
    EXPECT_EQ(out.y.data(), sentinel.y.data()) << "nothing is written on an error";
    Shape s;
    EXPECT_EQ(layer.compute_output_shape(Shape{8}, &s), Status::kErrorInvalidShape);
  }
  {
    nn::Masking layer(nn::MaskingOptions{1e300}, "m2");
    EXPECT_EQ(layer.check_options(), Status::kErrorInvalidValue);
    nn::LayerOutput out = sentinel;
    EXPECT_EQ(layer.call(nn::CallContext{}, xv, {}, &out), Status::kErrorInvalidValue);
    EXPECT_TRUE(message_has("m2: mask_value")) << culayers::last_error_message();
    EXPECT_FALSE(layer.built());
    EXPECT_EQ(out.y.data(), sentinel.y.data());
  }
  {
    nn::Masking layer(nn::MaskingOptions{}, "m3", DType::kInt32);
    EXPECT_EQ(layer.check_options(), Status::kErrorInvalidDType);
    EXPECT_TRUE(message_has("m3: dtype")) << culayers::last_error_message();
  }
  {
    nn::Masking layer(nn::MaskingOptions{}, "m4", DType::kFloat16);
    nn::LayerOutput out = sentinel;
    const ConstTensorView ints = ConstTensorView::contiguous(xv.data(), DType::kInt32, xv.shape());
    EXPECT_EQ(layer.call(nn::CallContext{}, ints, {}, &out), Status::kErrorInvalidDType); // float32 is cast
    EXPECT_EQ(out.y.data(), sentinel.y.data());
  }
  // Infinite and NaN mask values are allowed (NaN masks nothing).
  EXPECT_EQ(nn::Masking(nn::MaskingOptions{std::numeric_limits<double>::infinity()}).check_options(),
            Status::kSuccess);
  nn::Masking nan_layer(nn::MaskingOptions{std::numeric_limits<double>::quiet_NaN()});
  DeviceBuffer<float> nans(std::vector<float>(8, std::numeric_limits<float>::quiet_NaN()));
  nn::LayerOutput out;
  ASSERT_EQ(nan_layer.call(nn::CallContext{},
                           ConstTensorView::contiguous(nans.get(), DType::kFloat32, Shape{2, 2, 2}), {},
                           &out),
            Status::kSuccess);
  EXPECT_EQ(download<std::uint8_t>(out.mask), (std::vector<std::uint8_t>{1, 1, 1, 1}));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(MaskingLayer, ConfigRoundTripsAndBadConfigsAreParseErrors) {
  ASSERT_EQ(nn::register_layer_class("Masking", &nn::Masking::from_config), Status::kSuccess);
  nn::Masking layer(nn::MaskingOptions{-1.25}, "pad_mask", DType::kBFloat16);
  layer.set_trainable(false);
  const Json config = layer.get_config();
  EXPECT_EQ(config, Json::parse(R"({"name": "pad_mask", "trainable": false, "dtype": "bfloat16",
                                    "mask_value": -1.25})"));
  std::unique_ptr<nn::Layer> back;
  ASSERT_EQ(nn::layer_from_json(Json::parse(nn::layer_to_json(layer).dump()), &back), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(back->get_config(), config);
  EXPECT_EQ(static_cast<nn::Masking&>(*back).mask_value(), -1.25);

  // Identical outputs.
  auto rng = rng_for_test();
  std::vector<__nv_bfloat16> x_host = tm::exact_values<__nv_bfloat16>(rng, 3 * 4 * 2, 2);
  for (std::size_t i = 0; i < x_host.size(); i += 4) {
    x_host[i] = x_host[i + 1] = __double2bfloat16(-1.25);
  }
  DeviceBuffer<__nv_bfloat16> x(x_host);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kBFloat16, Shape{3, 4, 2});
  nn::LayerOutput a;
  nn::LayerOutput b;
  ASSERT_EQ(layer.call(nn::CallContext{}, xv, {}, &a), Status::kSuccess);
  ASSERT_EQ(back->call(nn::CallContext{}, xv, {}, &b), Status::kSuccess);
  EXPECT_TRUE(same_bits(download<__nv_bfloat16>(a.y), download<__nv_bfloat16>(b.y)));
  EXPECT_EQ(download<std::uint8_t>(a.mask), download<std::uint8_t>(b.mask));
  EXPECT_EQ(download<std::uint8_t>(a.mask), (std::vector<std::uint8_t>{0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1}));

  // Non-finite mask values round-trip as the strings Python's json writes for them ("NaN", "Infinity",
  // "-Infinity"); a JSON number cannot hold them (nlohmann-json would write null).
  for (const double v : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                         -std::numeric_limits<double>::infinity()}) {
    const nn::Masking special(nn::MaskingOptions{v}, "special");
    const std::string text = nn::layer_to_json(special).dump();
    EXPECT_EQ(text.find("null"), std::string::npos) << text;
    ASSERT_EQ(nn::layer_from_json(Json::parse(text), &back), Status::kSuccess)
        << text << ": " << culayers::last_error_message();
    const double got = static_cast<nn::Masking&>(*back).mask_value();
    EXPECT_TRUE(std::isnan(v) ? std::isnan(got) : got == v) << text;
  }
  EXPECT_EQ(nn::Masking(nn::MaskingOptions{-std::numeric_limits<double>::infinity()}, "m")
                .get_config()["mask_value"],
            "-Infinity");

  // Defaults, and errors naming the key.
  ASSERT_EQ(nn::Masking::from_config(Json::object(), &back), Status::kSuccess);
  EXPECT_EQ(static_cast<nn::Masking&>(*back).mask_value(), 0.0);
  std::unique_ptr<nn::Layer> bad;
  EXPECT_EQ(nn::Masking::from_config(Json{{"mask_value", "zero"}}, &bad), Status::kErrorParse);
  EXPECT_TRUE(message_has("mask_value")) << culayers::last_error_message();
  EXPECT_EQ(nn::Masking::from_config(Json{{"mask_value", 1e300}}, &bad), Status::kErrorParse);
  EXPECT_TRUE(message_has("mask_value")) << culayers::last_error_message();
  EXPECT_EQ(nn::Masking::from_config(Json{{"dtype", "int32"}}, &bad), Status::kErrorParse);
  EXPECT_TRUE(bad == nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

} // namespace
