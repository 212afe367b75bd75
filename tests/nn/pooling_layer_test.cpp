// MaskedGlobalPooling1D and MaskedFlatten (culayers/nn/core_layers.hpp): hand-worked padded batches,
// random inputs of every dtype against the double reference of the masked reductions, empty rows, NaN in
// masked steps, mask expansion bit for bit, views without copies, wrong masks and bad options, configs.
#include "culayers/masked_reduce.hpp"
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
using nn::PoolingMode;

template <class T>
std::vector<T> download(const ConstTensorView& v) {
  std::vector<T> host(static_cast<std::size_t>(v.numel()));
  if (!host.empty()) {
    EXPECT_EQ(cudaMemcpy(host.data(), v.data(), host.size() * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return host;
}

bool message_has(const char* text) {
  return std::string(culayers::last_error_message()).find(text) != std::string::npos;
}

nn::MaskedGlobalPooling1D make_pooling(PoolingMode mode, DType dtype = DType::kFloat32) {
  return nn::MaskedGlobalPooling1D(nn::MaskedGlobalPooling1DOptions{mode, 1}, "", dtype);
}

// ---- MaskedGlobalPooling1D ----------------------------------------------------------------------------

// x (3, 3, 2), mask [[1 1 0] [0 0 0] [1 0 1]]:
//   b0: [1, 2] [3, 4] [NaN, 100]   valid steps 0, 1: the NaN and 100 in the masked step change nothing
//   b1: [5, 6] [7, 8] [9, 10]      no valid step: every mode gives 0
//   b2: [-1, 8] [7, 7] [2, -4]     valid steps 0, 2
TEST(MaskedGlobalPooling1DLayer, HandWorkedPaddedBatch) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  DeviceBuffer<float> x(std::vector<float>{1, 2, 3, 4, nan, 100, 5, 6, 7, 8, 9, 10, -1, 8, 7, 7, 2, -4});
  DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>{1, 1, 0, 0, 0, 0, 1, 0, 1});
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{3, 3, 2});
  const ConstTensorView mv = ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{3, 3});
  const struct {
    PoolingMode mode;
    std::vector<float> want;
  } cases[] = {
      {PoolingMode::kMean, {2, 3, 0, 0, 0.5f, 2}},
      {PoolingMode::kSum, {4, 6, 0, 0, 1, 4}},
      {PoolingMode::kMax, {3, 4, 0, 0, 2, 8}},
      {PoolingMode::kMin, {1, 2, 0, 0, -1, -4}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(nn::pooling_mode_name(c.mode));
    auto layer = make_pooling(c.mode);
    EXPECT_TRUE(layer.supports_masking());
    nn::LayerOutput out;
    for (nn::Phase phase : {nn::Phase::kInference, nn::Phase::kTraining}) {
      nn::CallContext ctx;
      ctx.phase = phase;
      culayers::test::nn_util::poison(out); // the layer reuses its buffer: the call must rewrite it
      ASSERT_EQ(layer.call(ctx, xv, mv, &out), Status::kSuccess) << culayers::last_error_message();
      EXPECT_EQ(out.y.shape(), (Shape{3, 2}));
      EXPECT_EQ(out.mask.data(), nullptr) << "the mask is consumed";
      EXPECT_EQ(download<float>(out.y), c.want);
    }
  }
  // Without a mask every step counts: b0 mean has the NaN in feature 0.
  auto mean = make_pooling(PoolingMode::kMean);
  nn::LayerOutput out;
  ASSERT_EQ(mean.call(nn::CallContext{}, xv, {}, &out), Status::kSuccess);
  const std::vector<float> got = download<float>(out.y);
  EXPECT_TRUE(std::isnan(got[0]));
  EXPECT_EQ(std::vector<float>(got.begin() + 1, got.end()),
            (std::vector<float>{106.0f / 3, 7, 8, 8.0f / 3, 11.0f / 3}));
  EXPECT_EQ(out.mask.data(), nullptr);
}

// A warmed-up call allocates nothing, whatever x's alignment: the op's workspace size follows the vector
// width the alignment allows (few rows, long steps: the split path), and the layer's workspace slot only
// grows, so calls alternating a 16-byte-aligned x and a 4-byte-aligned view of it reuse one buffer (a slot
// sized to each call would be reallocated on every call, whichever width needs more).
TEST(MaskedGlobalPooling1DLayer, WarmedUpCallsAllocateNothingWhateverTheAlignment) {
  // Long enough that the two widths need different workspaces on devices of 1 to 132 SMs, though which one
  // needs more depends on the SM count (2048 steps, 1 / 2 / 4 SMs: 1024 / 1536 / 2560 bytes aligned, 0 /
  // 1024 / 1536 shifted: on 1 SM the shifted call needs no split), so the test asks only that they differ.
  constexpr std::int64_t kSteps = 2048;
  struct Counting final : nn::Allocator {
    Status allocate(void** ptr, std::size_t bytes, cudaStream_t stream) override {
      ++allocations;
      return nn::default_allocator().allocate(ptr, bytes, stream);
    }
    void deallocate(void* ptr, std::size_t bytes, cudaStream_t stream) noexcept override {
      nn::default_allocator().deallocate(ptr, bytes, stream);
    }
    int allocations = 0;
  } counting;
  const Shape shape{1, kSteps, 64};
  std::vector<float> host(static_cast<std::size_t>(shape.numel()) + 1, 0.5f);
  DeviceBuffer<float> x(host);
  const ConstTensorView aligned = ConstTensorView::contiguous(x.get(), DType::kFloat32, shape);
  const ConstTensorView shifted = ConstTensorView::contiguous(x.get() + 1, DType::kFloat32, shape);
  culayers::masked_reduce::MaskedReduceArgs probe;
  probe.op = culayers::masked_reduce::ReduceOp::kMean;
  probe.dtype = DType::kFloat32;
  probe.outer = 1;
  probe.reduce = kSteps;
  probe.inner = 64;
  DeviceBuffer<float> probe_out(64);
  probe.out = probe_out.get();
  probe.x = aligned.data();
  const std::size_t wide = culayers::masked_reduce::workspace_size(probe);
  probe.x = shifted.data();
  const std::size_t narrow = culayers::masked_reduce::workspace_size(probe);
  ASSERT_NE(narrow, wide) << "the case needs workspace sizes that differ with the vector width";

  auto layer = make_pooling(PoolingMode::kMean);
  nn::CallContext ctx;
  ctx.allocator = &counting;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, aligned, {}, &out), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(layer.call(ctx, shifted, {}, &out), Status::kSuccess) << culayers::last_error_message();
  const int warm = counting.allocations;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(layer.call(ctx, aligned, {}, &out), Status::kSuccess) << culayers::last_error_message();
    EXPECT_EQ(download<float>(out.y), std::vector<float>(64, 0.5f));
    ASSERT_EQ(layer.call(ctx, shifted, {}, &out), Status::kSuccess) << culayers::last_error_message();
    EXPECT_EQ(download<float>(out.y), std::vector<float>(64, 0.5f));
  }
  EXPECT_EQ(counting.allocations, warm);
}

template <class T>
void pooling_case(std::mt19937_64& rng, PoolingMode mode, const Shape& shape, bool with_mask) {
  SCOPED_TRACE(std::string(tm::Dtype<T>::kName) + " " + nn::pooling_mode_name(mode) +
               (with_mask ? " mask" : ""));
  const std::int64_t outer = shape.dim(0);
  const std::int64_t steps = shape.dim(1);
  const std::int64_t inner = shape.product(2, shape.rank());
  // Exact inputs: every float32 sum is exact, so sum/max/min are the reference rounded once to T.
  const std::vector<T> x_host = tm::exact_values<T>(rng, static_cast<std::size_t>(shape.numel()));
  const tm::ValidityData valid = tm::make_validity(rng, with_mask ? tm::Validity::kMask : tm::Validity::kNone,
                                                   outer, steps); // row 1 empty, row 2 full
  std::vector<double> xd(x_host.size());
  for (std::size_t i = 0; i < xd.size(); ++i) {
    xd[i] = tm::Dtype<T>::to_double(x_host[i]);
  }
  const tm::ReduceOp op = mode == PoolingMode::kMean  ? tm::ReduceOp::kMean
                          : mode == PoolingMode::kSum ? tm::ReduceOp::kSum
                          : mode == PoolingMode::kMax ? tm::ReduceOp::kMax
                                                      : tm::ReduceOp::kMin;
  const tm::ForwardRef ref = tm::forward_reference(op, xd, outer, steps, inner, valid, 0.0);
  DeviceBuffer<T> x(x_host);
  DeviceBuffer<std::uint8_t> mask(valid.mask.empty() ? std::vector<std::uint8_t>{0} : valid.mask);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), tm::Dtype<T>::kDType, shape);
  const ConstTensorView mv = with_mask
                                 ? ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{outer, steps})
                                 : ConstTensorView{};
  auto layer = make_pooling(mode, tm::Dtype<T>::kDType);
  Shape want_shape;
  ASSERT_EQ(layer.compute_output_shape(shape, &want_shape), Status::kSuccess);
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, xv, mv, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(out.y.shape(), want_shape);
  EXPECT_EQ(out.mask.data(), nullptr);
  const std::vector<T> got = download<T>(out.y);
  ASSERT_EQ(got.size(), ref.value.size());
  int bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = tm::Dtype<T>::to_double(got[i]);
    const double want = tm::round_to<T>(ref.value[i]);
    // Mean: the exact float32 sum divided in float32 (half a float32 ulp), then rounded once more to T (one
    // ulp of T at a rounding boundary). Sum, max and min are exact here: the sum is, and so its rounding.
    const double tol =
        op == tm::ReduceOp::kMean ? tm::kU32 * std::fabs(ref.value[i]) + tm::ulp<T>(ref.value[i]) : 0.0;
    if (!(std::fabs(g - want) <= tol) && bad++ < 5) {
      ADD_FAILURE() << "[" << i << "] got " << g << " want " << want << " (seed "
                    << culayers::test::base_seed() << ")";
    }
  }
  // Row 1 is empty with a mask: 0 for every mode.
  if (with_mask && outer > 1) {
    for (std::int64_t i = 0; i < inner; ++i) {
      EXPECT_EQ(tm::Dtype<T>::to_double(got[static_cast<std::size_t>(inner + i)]), 0.0);
    }
  }
}

TEST(MaskedGlobalPooling1DLayer, RandomInputsMatchTheDoubleReference) {
  auto rng = rng_for_test();
  for (PoolingMode mode : {PoolingMode::kMean, PoolingMode::kSum, PoolingMode::kMax, PoolingMode::kMin}) {
    for (bool with_mask : {true, false}) {
      pooling_case<float>(rng, mode, Shape{5, 7, 3, 4}, with_mask);
      pooling_case<__half>(rng, mode, Shape{4, 33, 5}, with_mask);
      pooling_case<__nv_bfloat16>(rng, mode, Shape{3, 9, 40}, with_mask);
      pooling_case<float>(rng, mode, Shape{6, 65}, with_mask); // rank 2: (batch, steps) -> (batch)
    }
  }
}

// No steps: every row is empty and gives 0; an empty batch gives an empty output.
TEST(MaskedGlobalPooling1DLayer, NoStepsAndEmptyBatches) {
  DeviceBuffer<float> x(std::vector<float>(8, 1.0f));
  for (PoolingMode mode : {PoolingMode::kMean, PoolingMode::kSum, PoolingMode::kMax, PoolingMode::kMin}) {
    SCOPED_TRACE(nn::pooling_mode_name(mode));
    auto layer = make_pooling(mode);
    nn::LayerOutput out;
    ASSERT_EQ(layer.call(nn::CallContext{},
                         ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{3, 0, 2}), {}, &out),
              Status::kSuccess)
        << culayers::last_error_message();
    EXPECT_EQ(out.y.shape(), (Shape{3, 2}));
    EXPECT_EQ(download<float>(out.y), std::vector<float>(6, 0.0f));
    auto other = make_pooling(mode);
    ASSERT_EQ(other.call(nn::CallContext{},
                         ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{0, 4, 2}), {}, &out),
              Status::kSuccess)
        << culayers::last_error_message();
    EXPECT_EQ(out.y.shape(), (Shape{0, 2}));
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(MaskedGlobalPooling1DLayer, WrongMasksAndShapesAreErrors) {
  DeviceBuffer<float> x(std::vector<float>(2 * 3 * 4, 1.0f));
  DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>(12, 1));
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 3, 4});
  auto layer = make_pooling(PoolingMode::kSum);
  nn::LayerOutput good;
  ASSERT_EQ(layer.call(nn::CallContext{}, xv, {}, &good), Status::kSuccess);
  EXPECT_EQ(download<float>(good.y), std::vector<float>(8, 3.0f));
  // Another input now, with masks of the wrong shape or dtype: errors, and the earlier output is untouched.
  DeviceBuffer<float> x2(std::vector<float>(2 * 3 * 4, 5.0f));
  const ConstTensorView x2v = ConstTensorView::contiguous(x2.get(), DType::kFloat32, Shape{2, 3, 4});
  const ConstTensorView wrong[] = {
      ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{3, 2}),
      ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{2, 4}),
      ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{2, 3, 1}),
      ConstTensorView::contiguous(mask.get(), DType::kInt32, Shape{2, 3}),
  };
  for (const ConstTensorView& m : wrong) {
    nn::LayerOutput out = good;
    EXPECT_EQ(layer.call(nn::CallContext{}, x2v, m, &out), Status::kErrorInconsistentArguments);
    EXPECT_TRUE(message_has("mask")) << culayers::last_error_message();
    EXPECT_EQ(out.y.data(), good.y.data());
  }
  EXPECT_EQ(download<float>(good.y), std::vector<float>(8, 3.0f)) << "nothing was written";

  auto fresh = make_pooling(PoolingMode::kMean);
  nn::LayerOutput out;
  EXPECT_EQ(fresh.call(nn::CallContext{}, ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{24}),
                       {}, &out),
            Status::kErrorInvalidShape);
  EXPECT_TRUE(message_has("input_shape")) << culayers::last_error_message();
  EXPECT_FALSE(fresh.built());
  Shape s;
  EXPECT_EQ(fresh.compute_output_shape(Shape{24}, &s), Status::kErrorInvalidShape);
  ASSERT_EQ(fresh.compute_output_shape(Shape{4, 7, 3, 5}, &s), Status::kSuccess);
  EXPECT_EQ(s, (Shape{4, 3, 5}));
  ASSERT_EQ(fresh.compute_output_shape(Shape{4, 7}, &s), Status::kSuccess);
  EXPECT_EQ(s, (Shape{4}));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(MaskedGlobalPooling1DLayer, BadOptionsAreErrorsNamingThem) {
  DeviceBuffer<float> x(std::vector<float>(2 * 3 * 4, 1.0f));
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 3, 4});
  for (int axis : {0, 2, -1, -2}) {
    nn::MaskedGlobalPooling1D layer(nn::MaskedGlobalPooling1DOptions{PoolingMode::kMean, axis}, "pool");
    nn::LayerOutput out;
    EXPECT_EQ(layer.call(nn::CallContext{}, xv, {}, &out), Status::kErrorNotSupported);
    EXPECT_TRUE(message_has("pool: axis")) << culayers::last_error_message();
    EXPECT_FALSE(layer.built());
    EXPECT_EQ(out.y.data(), nullptr);
  }
  nn::MaskedGlobalPooling1D bad_mode(nn::MaskedGlobalPooling1DOptions{static_cast<PoolingMode>(7), 1},
                                     "pool");
  EXPECT_EQ(bad_mode.check_options(), Status::kErrorInvalidValue);
  EXPECT_TRUE(message_has("pool: mode")) << culayers::last_error_message();
  EXPECT_STREQ(nn::pooling_mode_name(static_cast<PoolingMode>(7)), "unknown mode");
  nn::MaskedGlobalPooling1D bad_dtype(nn::MaskedGlobalPooling1DOptions{}, "pool", DType::kUInt8);
  EXPECT_EQ(bad_dtype.check_options(), Status::kErrorInvalidDType);
  EXPECT_TRUE(message_has("pool: dtype")) << culayers::last_error_message();
}

TEST(MaskedGlobalPooling1DLayer, ConfigRoundTripsAndBadConfigsAreParseErrors) {
  ASSERT_EQ(nn::register_layer_class("MaskedGlobalPooling1D", &nn::MaskedGlobalPooling1D::from_config),
            Status::kSuccess);
  nn::MaskedGlobalPooling1D layer(nn::MaskedGlobalPooling1DOptions{PoolingMode::kMax, 1}, "pool_max",
                                  DType::kFloat16);
  layer.set_trainable(false);
  const Json config = layer.get_config();
  EXPECT_EQ(config, Json::parse(R"({"name": "pool_max", "trainable": false, "dtype": "float16",
                                    "mode": "max", "axis": 1})"));
  std::unique_ptr<nn::Layer> back;
  ASSERT_EQ(nn::layer_from_json(Json::parse(nn::layer_to_json(layer).dump()), &back), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(back->get_config(), config);
  EXPECT_EQ(static_cast<nn::MaskedGlobalPooling1D&>(*back).mode(), PoolingMode::kMax);
  EXPECT_EQ(static_cast<nn::MaskedGlobalPooling1D&>(*back).axis(), 1);

  auto rng = rng_for_test();
  const std::vector<__half> x_host = tm::normal_values<__half>(rng, 4 * 6 * 3);
  const tm::ValidityData valid = tm::make_validity(rng, tm::Validity::kMask, 4, 6);
  DeviceBuffer<__half> x(x_host);
  DeviceBuffer<std::uint8_t> mask(valid.mask);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat16, Shape{4, 6, 3});
  const ConstTensorView mv = ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{4, 6});
  nn::LayerOutput a;
  nn::LayerOutput b;
  ASSERT_EQ(layer.call(nn::CallContext{}, xv, mv, &a), Status::kSuccess);
  ASSERT_EQ(back->call(nn::CallContext{}, xv, mv, &b), Status::kSuccess);
  const std::vector<__half> ya = download<__half>(a.y);
  const std::vector<__half> yb = download<__half>(b.y);
  EXPECT_EQ(std::memcmp(ya.data(), yb.data(), ya.size() * sizeof(__half)), 0);

  ASSERT_EQ(nn::MaskedGlobalPooling1D::from_config(Json::object(), &back), Status::kSuccess);
  EXPECT_EQ(static_cast<nn::MaskedGlobalPooling1D&>(*back).mode(), PoolingMode::kMean);
  std::unique_ptr<nn::Layer> bad;
  EXPECT_EQ(nn::MaskedGlobalPooling1D::from_config(Json{{"mode", "median"}}, &bad), Status::kErrorParse);
  EXPECT_TRUE(message_has("\"mode\"")) << culayers::last_error_message();
  EXPECT_EQ(nn::MaskedGlobalPooling1D::from_config(Json{{"mode", 2}}, &bad), Status::kErrorParse);
  EXPECT_TRUE(message_has("\"mode\"")) << culayers::last_error_message();
  EXPECT_EQ(nn::MaskedGlobalPooling1D::from_config(Json{{"axis", 2}}, &bad), Status::kErrorParse);
  // Above INT64_MAX: an error, not wrapped to -2.
  EXPECT_EQ(
      nn::MaskedGlobalPooling1D::from_config(Json{{"axis", std::uint64_t{18446744073709551614u}}}, &bad),
      Status::kErrorParse);
  EXPECT_TRUE(message_has("axis")) << culayers::last_error_message();
  EXPECT_EQ(nn::MaskedGlobalPooling1D::from_config(Json{{"axis", "1"}}, &bad), Status::kErrorParse);
  EXPECT_TRUE(message_has("axis")) << culayers::last_error_message();
  EXPECT_TRUE(bad == nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// ---- MaskedFlatten --------------------------------------------------------------------------------------

// x (2, 3, 2), mask [[1 0 1] [0 1 1]] -> y (2, 6) viewing x, mask [[1 1 0 0 1 1] [0 0 1 1 1 1]].
TEST(MaskedFlattenLayer, HandWorkedPaddedBatch) {
  DeviceBuffer<float> x(std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>{1, 0, 1, 0, 1, 1});
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 3, 2});
  const ConstTensorView mv = ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{2, 3});
  nn::MaskedFlatten layer;
  EXPECT_TRUE(layer.supports_masking());
  for (nn::Phase phase : {nn::Phase::kInference, nn::Phase::kTraining}) {
    nn::CallContext ctx;
    ctx.phase = phase;
    nn::LayerOutput out;
    ASSERT_EQ(layer.call(ctx, xv, mv, &out), Status::kSuccess) << culayers::last_error_message();
    EXPECT_EQ(out.y.data(), static_cast<const void*>(x.get())) << "a view, not a copy";
    EXPECT_EQ(out.y.shape(), (Shape{2, 6}));
    EXPECT_TRUE(out.y.is_contiguous());
    EXPECT_EQ(download<float>(out.y), (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
    EXPECT_EQ(out.mask.shape(), (Shape{2, 6}));
    EXPECT_EQ(download<std::uint8_t>(out.mask),
              (std::vector<std::uint8_t>{1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1}));
  }
  // No mask in, no mask out.
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(nn::CallContext{}, xv, {}, &out), Status::kSuccess);
  EXPECT_EQ(out.mask.data(), nullptr);
  EXPECT_EQ(out.y.data(), static_cast<const void*>(x.get()));
}

template <class T>
void flatten_case(std::mt19937_64& rng, const Shape& shape) {
  SCOPED_TRACE(std::string(tm::Dtype<T>::kName));
  const std::int64_t batch = shape.dim(0);
  const std::int64_t steps = shape.dim(1);
  const std::int64_t features = shape.product(2, shape.rank());
  DeviceBuffer<T> x(tm::exact_values<T>(rng, static_cast<std::size_t>(shape.numel())));
  const tm::ValidityData valid = tm::make_validity(rng, tm::Validity::kMask, batch, steps); // bytes 0..255
  DeviceBuffer<std::uint8_t> mask(valid.mask);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), tm::Dtype<T>::kDType, shape);
  const ConstTensorView mv = ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{batch, steps});
  nn::MaskedFlatten layer(nn::MaskedFlattenOptions{}, "", tm::Dtype<T>::kDType);
  nn::LayerOutput first;
  ASSERT_EQ(layer.call(nn::CallContext{}, xv, mv, &first), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(first.y.shape(), (Shape{batch, steps * features}));
  EXPECT_EQ(first.y.data(), static_cast<const void*>(x.get()));
  EXPECT_EQ(download<std::uint8_t>(first.mask), tm::expand_reference(valid.mask, features));
  nn::LayerOutput second;
  ASSERT_EQ(layer.call(nn::CallContext{}, xv, mv, &second), Status::kSuccess);
  EXPECT_EQ(second.mask.data(), first.mask.data()) << "a warmed-up call reuses its mask buffer";
}

TEST(MaskedFlattenLayer, RandomMasksExpandBitExactly) {
  auto rng = rng_for_test();
  flatten_case<float>(rng, Shape{3, 5, 2, 3});
  flatten_case<__half>(rng, Shape{4, 33, 7});
  flatten_case<__nv_bfloat16>(rng, Shape{2, 17, 16});
}

// A warm-up call without a mask, then a captured call with one for the same shape: the expanded mask's
// buffer was taken at the warm-up (before, the first call with a mask allocated inside the capture, which
// invalidated it on the emulator and would record an allocation node on a GPU). Replays expand the mask.
TEST(MaskedFlattenLayer, WarmUpWithoutAMaskKeepsACallWithOneCapturable) {
  auto rng = rng_for_test();
  const Shape shape{3, 5, 4};
  DeviceBuffer<float> x(tm::exact_values<float>(rng, static_cast<std::size_t>(shape.numel())));
  const tm::ValidityData valid = tm::make_validity(rng, tm::Validity::kMask, 3, 5);
  DeviceBuffer<std::uint8_t> mask(valid.mask);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, shape);
  const ConstTensorView mv = ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{3, 5});
  cudaStream_t stream = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto layer_owner = std::make_unique<nn::MaskedFlatten>(); // destroyed before the stream it freed on
  nn::MaskedFlatten& layer = *layer_owner;
  nn::CallContext ctx;
  ctx.stream = stream;
  nn::LayerOutput out;
  for (int k = 0; k < 2; ++k) {
    ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
  }
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream));
  cudaGraph_t graph = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const Status cs = layer.call(ctx, xv, mv, &out);
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  ASSERT_EQ(cs, Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(end, cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  CULAYERS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int k = 0; k < 2; ++k) {
    CULAYERS_ASSERT_CUDA(cudaGraphLaunch(exec, stream));
  }
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream));
  EXPECT_EQ(download<std::uint8_t>(out.mask), tm::expand_reference(valid.mask, 4));
  CULAYERS_ASSERT_CUDA(cudaGraphExecDestroy(exec));
  CULAYERS_ASSERT_CUDA(cudaGraphDestroy(graph));
  layer_owner.reset();
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(stream));
}

TEST(MaskedFlattenLayer, LowRanksAndErrors) {
  DeviceBuffer<float> x(std::vector<float>{1, 2, 3, 4, 5, 6});
  DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>{1, 0, 1, 1, 0, 0});
  nn::LayerOutput out;
  {
    // Rank 2 (batch, steps): already flat; the mask passes through as it is.
    nn::MaskedFlatten layer;
    const ConstTensorView mv = ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{2, 3});
    ASSERT_EQ(layer.call(nn::CallContext{},
                         ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 3}), mv, &out),
              Status::kSuccess);
    EXPECT_EQ(out.y.shape(), (Shape{2, 3}));
    EXPECT_EQ(out.mask.data(), static_cast<const void*>(mask.get()));
  }
  {
    // Rank 1 (batch) -> (batch, 1), as Keras's Flatten.
    nn::MaskedFlatten layer;
    Shape s;
    ASSERT_EQ(layer.compute_output_shape(Shape{6}, &s), Status::kSuccess);
    EXPECT_EQ(s, (Shape{6, 1}));
    ASSERT_EQ(layer.call(nn::CallContext{}, ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{6}),
                         {}, &out),
              Status::kSuccess);
    EXPECT_EQ(out.y.shape(), (Shape{6, 1}));
    EXPECT_EQ(layer.compute_output_shape(Shape{}, &s), Status::kErrorInvalidShape);
  }
  {
    // A mask of the wrong shape or dtype; x of another dtype.
    nn::MaskedFlatten layer(nn::MaskedFlattenOptions{}, "flat");
    const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 3, 1});
    const nn::LayerOutput sentinel{xv, {}};
    for (const ConstTensorView& m : {ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{3, 2}),
                                     ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{6}),
                                     ConstTensorView::contiguous(mask.get(), DType::kFloat16, Shape{2, 3})}) {
      out = sentinel;
      EXPECT_EQ(layer.call(nn::CallContext{}, xv, m, &out), Status::kErrorInconsistentArguments);
      EXPECT_TRUE(message_has("flat: mask")) << culayers::last_error_message();
      EXPECT_EQ(out.y.data(), sentinel.y.data());
      EXPECT_EQ(out.mask.data(), nullptr);
    }
    EXPECT_EQ(layer.call(nn::CallContext{}, ConstTensorView::contiguous(x.get(), DType::kInt32, Shape{2, 3}),
                         {}, &out),
              Status::kErrorInvalidDType); // floating inputs are cast; int32 is not
  }
  nn::MaskedFlatten bad_dtype(nn::MaskedFlattenOptions{}, "flat", DType::kInt32);
  EXPECT_EQ(bad_dtype.check_options(), Status::kErrorInvalidDType);
  EXPECT_TRUE(message_has("flat: dtype")) << culayers::last_error_message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// Between calls a built layer takes only the shapes its check allows: MaskedGlobalPooling1D a new batch or
// step extent but the same feature extent and rank, MaskedFlatten, Masking, Dropout and DecayingDropout the
// same rank. A refused call is kErrorInvalidShape naming the input, and leaves the previous output as it
// was (poisoned here, so a write would show); the same layer then takes an allowed shape.
TEST(BuiltLayers, ShapesBetweenCallsAreChecked) {
  struct Case {
    const char* what;
    std::unique_ptr<nn::Layer> layer;
    Shape built, refused, allowed;
  };
  std::vector<Case> cases;
  cases.push_back({"pooling: another feature extent",
                   std::make_unique<nn::MaskedGlobalPooling1D>(
                       nn::MaskedGlobalPooling1DOptions{PoolingMode::kMean, 1}, "pool"),
                   Shape{2, 3, 4}, Shape{2, 3, 5}, Shape{4, 6, 4}});
  cases.push_back({"pooling: another rank",
                   std::make_unique<nn::MaskedGlobalPooling1D>(
                       nn::MaskedGlobalPooling1DOptions{PoolingMode::kMax, 1}, "pool"),
                   Shape{2, 3, 4}, Shape{2, 3, 2, 2}, Shape{3, 2, 4}});
  cases.push_back({"flatten: another rank",
                   std::make_unique<nn::MaskedFlatten>(nn::MaskedFlattenOptions{}, "flat"), Shape{2, 3, 4},
                   Shape{2, 12}, Shape{2, 5, 6}});
  cases.push_back({"masking: another rank", std::make_unique<nn::Masking>(nn::MaskingOptions{0.0}, "masking"),
                   Shape{2, 3, 4}, Shape{2, 3, 2, 2}, Shape{4, 6, 10}});
  cases.push_back({"dropout: another rank",
                   std::make_unique<nn::Dropout>(nn::DropoutOptions{0.5, {}, 3}, "drop"), Shape{2, 3, 4},
                   Shape{6, 4}, Shape{4, 6, 10}});
  cases.push_back({"decaying dropout: another rank",
                   std::make_unique<nn::DecayingDropout>(nn::DecayingDropoutOptions{}, "dd"), Shape{2, 3, 4},
                   Shape{2, 12}, Shape{2, 5, 6}});
  for (Case& c : cases) {
    SCOPED_TRACE(c.what);
    DeviceBuffer<float> x(std::vector<float>(4 * 6 * 10, 1.0f)); // each case its own input
    const auto view = [&](const Shape& s) {
      return ConstTensorView::contiguous(x.get(), DType::kFloat32, s);
    };
    nn::CallContext ctx;
    ctx.phase = nn::Phase::kTraining;
    nn::LayerOutput out;
    ASSERT_EQ(c.layer->call(ctx, view(c.built), {}, &out), Status::kSuccess)
        << culayers::last_error_message();
    // MaskedFlatten's y is a view of x (no kernel): poisoned like the others, it is x that a refused call
    // must leave alone.
    culayers::test::nn_util::poison(out);
    const std::vector<float> poisoned = culayers::test::nn_util::download<float>(out.y);
    nn::LayerOutput refused = out;
    EXPECT_EQ(c.layer->call(ctx, view(c.refused), {}, &refused), Status::kErrorInvalidShape);
    EXPECT_NE(std::string(culayers::last_error_message()).find(c.layer->name() + ": input"),
              std::string::npos)
        << culayers::last_error_message();
    EXPECT_EQ(refused.y.data(), out.y.data()) << "the output view was replaced";
    const std::vector<float> after = culayers::test::nn_util::download<float>(out.y);
    EXPECT_EQ(std::memcmp(after.data(), poisoned.data(), after.size() * sizeof(float)), 0)
        << "the previous output was written";
    EXPECT_EQ(c.layer->call(ctx, view(c.allowed), {}, &out), Status::kSuccess)
        << culayers::last_error_message();
  }
}

TEST(MaskedFlattenLayer, ConfigRoundTrips) {
  ASSERT_EQ(nn::register_layer_class("MaskedFlatten", &nn::MaskedFlatten::from_config), Status::kSuccess);
  nn::MaskedFlatten layer(nn::MaskedFlattenOptions{}, "flat", DType::kBFloat16);
  const Json config = layer.get_config();
  EXPECT_EQ(config, Json::parse(R"({"name": "flat", "trainable": true, "dtype": "bfloat16"})"));
  std::unique_ptr<nn::Layer> back;
  ASSERT_EQ(nn::layer_from_json(Json::parse(nn::layer_to_json(layer).dump()), &back), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(back->get_config(), config);
  EXPECT_EQ(back->dtype(), DType::kBFloat16);
  DeviceBuffer<__nv_bfloat16> x(std::vector<__nv_bfloat16>(2 * 3 * 4));
  DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>{1, 1, 0, 1, 0, 0});
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kBFloat16, Shape{2, 3, 4});
  const ConstTensorView mv = ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{2, 3});
  nn::LayerOutput a;
  nn::LayerOutput b;
  ASSERT_EQ(layer.call(nn::CallContext{}, xv, mv, &a), Status::kSuccess);
  ASSERT_EQ(back->call(nn::CallContext{}, xv, mv, &b), Status::kSuccess);
  EXPECT_EQ(a.y.shape(), b.y.shape());
  EXPECT_EQ(a.y.data(), b.y.data());
  EXPECT_EQ(download<std::uint8_t>(a.mask), download<std::uint8_t>(b.mask));
  std::unique_ptr<nn::Layer> bad;
  EXPECT_EQ(nn::MaskedFlatten::from_config(Json{{"trainable", 1}}, &bad), Status::kErrorParse);
  EXPECT_TRUE(bad == nullptr);
}

} // namespace
