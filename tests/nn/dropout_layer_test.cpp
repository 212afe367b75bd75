// Dropout and DecayingDropout (culayers/nn/core_layers.hpp) against the CPU reference of the dropout op,
// bit for bit: every dtype, noise shapes, inference as the identity with no update, fresh masks on every
// training call of Dropout, DecayingDropout's schedule after k calls, frozen layers, the iterations weight
// (sync_weights / weights_loaded), CUDA graph capture of a training call with its updates, configs and
// errors naming the bad option.
#include "culayers/dropout.hpp"
#include "culayers/nn/core_layers.hpp"
#include "culayers/nn/safetensors.hpp"
#include "culayers/nn/sequential.hpp"
#include "tests/kernels/dropout/dropout_test_util.hpp"
#include "tests/reference/dropout_reference.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace nn = culayers::nn;
namespace cd = culayers::dropout;
namespace td = culayers::test::dropout;
namespace ref = culayers::test::dropout_ref;
using culayers::ConstTensorView;
using culayers::DType;
using culayers::Shape;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::Stream;
using nn::Json;
using nn::NoiseShape;

// The emulated build runs the host's pow, so the device's keep rates equal the host formula exactly; CUDA's
// double pow is documented within 2 ulp (CUDA C Programming Guide, math functions): allow 4.
#if CULAYERS_TEST_EMULATED
constexpr double kDeviceUlps = 0.0;
#else
constexpr double kDeviceUlps = 4.0;
#endif

bool within_ulps(double got, double want, double ulps) {
  return got == want || std::fabs(got - want) <= ulps * DBL_EPSILON * std::fabs(want);
}

template <class T>
std::vector<T> download(const ConstTensorView& v) {
  std::vector<T> host(static_cast<std::size_t>(v.numel()));
  if (!host.empty()) {
    EXPECT_EQ(cudaMemcpy(host.data(), v.data(), host.size() * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return host;
}

std::vector<std::int64_t> dims_of(const Shape& s) {
  return std::vector<std::int64_t>(s.dims(), s.dims() + s.rank());
}

bool message_has(const char* text) {
  return std::string(culayers::last_error_message()).find(text) != std::string::npos;
}

template <class Layer>
cd::DropoutState state_of(const Layer& layer, cudaStream_t stream = nullptr) {
  cd::DropoutState s{};
  EXPECT_EQ(layer.read_state(&s, stream), Status::kSuccess) << culayers::last_error_message();
  return s;
}

/// y of the most recent training call against the reference: the mask of the state's last_* parameters on
/// the noise shape (empty: x's shape), broadcast, and x scaled in float32 and rounded once. Returns the mask.
template <class T>
std::vector<std::uint8_t> expect_reference(const cd::DropoutState& s, const std::vector<T>& x_host,
                                           const std::vector<T>& y, const std::vector<std::int64_t>& dims,
                                           const std::vector<std::int64_t>& noise_dims) {
  const ref::CallParams p = td::last_params(s);
  std::vector<std::uint8_t> keep = ref::mask(p, dims, noise_dims);
  const std::string diff = td::compare_bits(y, ref::apply(x_host, keep, p.scale), x_host.size());
  EXPECT_TRUE(diff.empty()) << "stream " << s.last_stream << ": " << diff << "; " << td::seed_trace();
  return keep;
}

// ---- Dropout ----------------------------------------------------------------------------------------------

TEST(DropoutLayer, InferenceIsTheIdentityAndDrawsNothing) {
  DeviceBuffer<float> x(std::vector<float>(4 * 6, 1.5f));
  DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>{1, 1, 0, 1});
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{4, 1, 6});
  const ConstTensorView mv = ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{4, 1});
  nn::Dropout layer(nn::DropoutOptions{0.5, {}, 11});
  EXPECT_TRUE(layer.supports_masking());
  for (int i = 0; i < 3; ++i) {
    nn::LayerOutput out;
    ASSERT_EQ(layer.call(nn::CallContext{}, xv, mv, &out), Status::kSuccess)
        << culayers::last_error_message();
    EXPECT_EQ(out.y.data(), static_cast<const void*>(x.get())) << "no kernel: y aliases x";
    EXPECT_EQ(out.y.shape(), xv.shape());
    EXPECT_EQ(out.mask.data(), static_cast<const void*>(mask.get()));
  }
  const cd::DropoutState s = state_of(layer);
  EXPECT_EQ(s.iterations, 0);
  EXPECT_EQ(s.last_iteration, -1);
  EXPECT_EQ(s.seed, 11u);
  EXPECT_EQ(s.keep_rate, 0.5);
  EXPECT_EQ(s.decay_rate, 1.0);
  EXPECT_TRUE(layer.weights().empty());
  EXPECT_EQ(layer.update_count(), 0u) << "Dropout advances inside its call, it has no update op";
}

template <class T>
void dropout_training_case(std::mt19937_64& rng, const Shape& shape, double rate, const NoiseShape& noise,
                           const std::vector<std::int64_t>& noise_dims) {
  SCOPED_TRACE(std::string(culayers::dtype_name(td::DTypeOf<T>::kValue)) + " rate " + std::to_string(rate));
  const std::uint64_t seed = rng();
  const std::vector<std::int64_t> dims = dims_of(shape);
  const std::vector<T> x_host = td::random_input<T>(rng, static_cast<std::size_t>(shape.numel()));
  DeviceBuffer<T> x(x_host);
  // A mask with masked steps: Dropout passes it through and ignores it (Keras), so y is still the
  // reference computed without it.
  std::vector<std::uint8_t> mask_host(static_cast<std::size_t>(shape.dim(0) * shape.dim(1)));
  for (auto& m : mask_host) {
    m = rng() % 3 == 0 ? 0 : 1;
  }
  mask_host[0] = 0;
  DeviceBuffer<std::uint8_t> mask(mask_host);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), td::DTypeOf<T>::kValue, shape);
  const ConstTensorView mv =
      ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{shape.dim(0), shape.dim(1)});
  nn::Dropout layer(nn::DropoutOptions{rate, noise, seed}, "", td::DTypeOf<T>::kValue);
  EXPECT_EQ(layer.effective_seed(), seed);
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  std::vector<std::vector<std::uint8_t>> masks;
  for (int k = 0; k < 3; ++k) {
    nn::LayerOutput out;
    ASSERT_EQ(layer.call(ctx, xv, mv, &out), Status::kSuccess) << culayers::last_error_message();
    EXPECT_NE(out.y.data(), static_cast<const void*>(x.get()));
    EXPECT_EQ(out.y.shape(), shape);
    EXPECT_EQ(out.mask.data(), static_cast<const void*>(mask.get())) << "the mask passes through";
    const cd::DropoutState s = state_of(layer);
    EXPECT_EQ(s.iterations, k + 1);
    EXPECT_EQ(s.last_iteration, k);
    EXPECT_EQ(s.last_stream, static_cast<std::uint64_t>(k));
    EXPECT_EQ(s.last_keep_rate, 1.0 - rate) << "a fixed keep rate";
    EXPECT_EQ(s.last_threshold, ref::threshold(1.0 - rate));
    EXPECT_EQ(s.last_scale, static_cast<float>(1.0 / (1.0 - rate)));
    masks.push_back(expect_reference(s, x_host, download<T>(out.y), dims, noise_dims));
    if (k > 0) {
      EXPECT_NE(masks[static_cast<std::size_t>(k)], masks[static_cast<std::size_t>(k - 1)])
          << "two training calls drew the same mask";
    }
  }
}

// Every case draws at least 42 noise elements at a keep rate in [0.5, 0.7], so two independent masks agree
// with probability below 0.58^42 < 1e-9: "two calls drew the same mask" is then a real failure.
TEST(DropoutLayer, TrainingCallsMatchTheReferenceAndDrawFreshMasks) {
  auto rng = rng_for_test();
  dropout_training_case<float>(rng, Shape{4, 5, 7}, 0.3, {}, {});
  dropout_training_case<__half>(rng, Shape{3, 9, 8}, 0.5, {}, {});
  dropout_training_case<__nv_bfloat16>(rng, Shape{2, 33}, 0.3, {}, {});
  // Keras noise shapes: null entries take x's extent.
  const NoiseShape shared_steps = std::vector<std::optional<std::int64_t>>{std::nullopt, 1, std::nullopt};
  dropout_training_case<float>(rng, Shape{4, 5, 16}, 0.4, shared_steps, {4, 1, 16});
  const NoiseShape shared_batch = std::vector<std::optional<std::int64_t>>{1, std::nullopt, 6};
  dropout_training_case<__half>(rng, Shape{3, 7, 6}, 0.4, shared_batch, {1, 7, 6});
  const NoiseShape features_only = std::vector<std::optional<std::int64_t>>{std::nullopt, 1, 1};
  dropout_training_case<__nv_bfloat16>(rng, Shape{48, 4, 3}, 0.5, features_only, {48, 1, 1});
}

TEST(DropoutLayer, FrozenLayersStillDrawFreshMasksAndRateZeroIsTheIdentity) {
  DeviceBuffer<float> x(std::vector<float>(64, 2.0f));
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{4, 16});
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  nn::Dropout frozen(nn::DropoutOptions{0.5, {}, 5});
  frozen.set_trainable(false); // Keras: Dropout's randomness does not depend on trainable
  nn::LayerOutput out;
  const std::vector<float> x_host(64, 2.0f);
  std::vector<std::vector<std::uint8_t>> masks;
  for (int call = 0; call < 2; ++call) {
    // The output poisoned first (NaN): a frozen call that skipped its forward would leave it, or return x.
    if (out.y.data() != nullptr) {
      ASSERT_EQ(cudaMemset(const_cast<void*>(out.y.data()), 0xff, 64 * sizeof(float)), cudaSuccess);
    }
    ASSERT_EQ(frozen.call(ctx, xv, {}, &out), Status::kSuccess);
    EXPECT_NE(out.y.data(), static_cast<const void*>(x.get())) << "a frozen Dropout still drops";
    const cd::DropoutState s = state_of(frozen);
    masks.push_back(expect_reference(s, x_host, download<float>(out.y), {4, 16}, {}));
  }
  EXPECT_EQ(state_of(frozen).iterations, 2);
  EXPECT_NE(masks[0], masks[1]) << "each frozen call draws a fresh mask (64 draws at keep 0.5)";

  nn::Dropout none(nn::DropoutOptions{0.0, {}, 5});
  ASSERT_EQ(none.call(ctx, xv, {}, &out), Status::kSuccess);
  EXPECT_EQ(out.y.data(), static_cast<const void*>(x.get())) << "rate 0: identity, as Keras";
  EXPECT_EQ(state_of(none).iterations, 0);
}

TEST(DropoutLayer, GraphReplayEqualsEagerCalls) {
  auto rng = rng_for_test();
  Stream stream;
  const std::uint64_t seed = rng();
  const Shape shape{3, 5, 12};
  const std::vector<__half> x_host = td::random_input<__half>(rng, static_cast<std::size_t>(shape.numel()));
  DeviceBuffer<__half> x(x_host);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat16, shape);
  const NoiseShape noise = std::vector<std::optional<std::int64_t>>{std::nullopt, 1, std::nullopt};
  nn::Dropout captured(nn::DropoutOptions{0.35, noise, seed}, "", DType::kFloat16);
  nn::Dropout eager(nn::DropoutOptions{0.35, noise, seed}, "", DType::kFloat16);
  nn::CallContext ctx;
  ctx.stream = stream.get();
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out_c;
  nn::LayerOutput out_e;
  // Warm-up (builds, allocates the output buffer): call 0 on both.
  ASSERT_EQ(captured.call(ctx, xv, {}, &out_c), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(eager.call(ctx, xv, {}, &out_e), Status::kSuccess);

  cudaGraph_t graph = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeGlobal));
  const Status cs = captured.call(ctx, xv, {}, &out_c);
  CULAYERS_ASSERT_CUDA(cudaStreamEndCapture(stream.get(), &graph));
  ASSERT_EQ(cs, Status::kSuccess) << culayers::last_error_message();
  cudaGraphExec_t exec = nullptr;
  CULAYERS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  EXPECT_EQ(state_of(captured, stream.get()).iterations, 1) << "capture enqueued nothing";

  for (int r = 0; r < 5; ++r) {
    CULAYERS_ASSERT_CUDA(cudaGraphLaunch(exec, stream.get()));
    ASSERT_EQ(eager.call(ctx, xv, {}, &out_e), Status::kSuccess);
    CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream.get()));
    const cd::DropoutState sc = state_of(captured, stream.get());
    const cd::DropoutState se = state_of(eager, stream.get());
    EXPECT_EQ(sc.iterations, r + 2);
    EXPECT_EQ(sc.iterations, se.iterations);
    EXPECT_EQ(sc.last_stream, se.last_stream);
    const std::vector<__half> yc = download<__half>(out_c.y);
    const std::vector<__half> ye = download<__half>(out_e.y);
    EXPECT_TRUE(td::compare_bits(yc, ye, yc.size()).empty()) << "replay " << r;
    expect_reference(sc, x_host, yc, dims_of(shape), {3, 1, 12});
  }
  CULAYERS_ASSERT_CUDA(cudaGraphExecDestroy(exec));
  CULAYERS_ASSERT_CUDA(cudaGraphDestroy(graph));
}

TEST(DropoutLayer, BadOptionsAndNoiseShapesAreErrorsNamingThem) {
  DeviceBuffer<float> x(std::vector<float>(4 * 5 * 6, 1.0f));
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{4, 5, 6});
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  for (double rate : {1.0, -0.1, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    nn::Dropout layer(nn::DropoutOptions{rate, {}, 1}, "drop");
    EXPECT_EQ(layer.check_options(), Status::kErrorInvalidValue);
    nn::LayerOutput out;
    EXPECT_EQ(layer.call(ctx, xv, {}, &out), Status::kErrorInvalidValue);
    EXPECT_TRUE(message_has("drop: rate")) << culayers::last_error_message();
    EXPECT_FALSE(layer.built());
    EXPECT_EQ(out.y.data(), nullptr);
    cd::DropoutState s{};
    EXPECT_EQ(layer.read_state(&s, nullptr), Status::kErrorInvalidValue) << "not built";
  }
  const NoiseShape zero_entry = std::vector<std::optional<std::int64_t>>{std::nullopt, 0, std::nullopt};
  const NoiseShape short_list = std::vector<std::optional<std::int64_t>>{std::nullopt, 1};
  const NoiseShape not_broadcast = std::vector<std::optional<std::int64_t>>{std::nullopt, 3, std::nullopt};
  const std::pair<const NoiseShape*, Status> noise_cases[] = {{&zero_entry, Status::kErrorInvalidValue},
                                                              {&short_list, Status::kErrorInvalidShape},
                                                              {&not_broadcast, Status::kErrorInvalidShape}};
  for (const auto& [noise, want] : noise_cases) {
    nn::Dropout layer(nn::DropoutOptions{0.5, *noise, 1}, "drop");
    nn::LayerOutput out;
    EXPECT_EQ(layer.call(ctx, xv, {}, &out), want);
    EXPECT_TRUE(message_has("drop: noise_shape")) << culayers::last_error_message();
    EXPECT_FALSE(layer.built());
  }
  // A fixed batch entry: other batch sizes fail at call time, with nothing written and no draw.
  const NoiseShape fixed_batch = std::vector<std::optional<std::int64_t>>{4, 1, std::nullopt};
  nn::Dropout layer(nn::DropoutOptions{0.5, fixed_batch, 1}, "drop");
  nn::LayerOutput good;
  ASSERT_EQ(layer.call(ctx, xv, {}, &good), Status::kSuccess) << culayers::last_error_message();
  const std::vector<float> before = download<float>(good.y);
  nn::LayerOutput out = good;
  EXPECT_EQ(layer.call(ctx, ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 5, 6}), {}, &out),
            Status::kErrorInvalidShape);
  EXPECT_TRUE(message_has("drop: noise_shape")) << culayers::last_error_message();
  EXPECT_EQ(out.y.data(), good.y.data());
  EXPECT_EQ(download<float>(good.y), before);
  EXPECT_EQ(state_of(layer).iterations, 1);
  EXPECT_EQ(layer.read_state(nullptr, nullptr), Status::kErrorNullPointer);
  Shape s;
  EXPECT_EQ(layer.compute_output_shape(Shape{4, 5, 6}, &s), Status::kSuccess);
  EXPECT_EQ(s, (Shape{4, 5, 6}));
  EXPECT_EQ(layer.compute_output_shape(Shape{4, 5}, &s), Status::kErrorInvalidShape);
  nn::Dropout int_layer(nn::DropoutOptions{0.5, {}, 1}, "drop", DType::kInt32);
  EXPECT_EQ(int_layer.check_options(), Status::kErrorInvalidDType);
  EXPECT_TRUE(message_has("drop: dtype")) << culayers::last_error_message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(DropoutLayer, ConfigRoundTripsAndBadConfigsAreParseErrors) {
  ASSERT_EQ(nn::register_layer_class("Dropout", &nn::Dropout::from_config), Status::kSuccess);
  const NoiseShape noise = std::vector<std::optional<std::int64_t>>{std::nullopt, 1, std::nullopt};
  nn::Dropout layer(nn::DropoutOptions{0.25, noise, 1234}, "drop", DType::kBFloat16);
  layer.set_trainable(false);
  const Json config = layer.get_config();
  EXPECT_EQ(config, Json::parse(R"({"name": "drop", "trainable": false, "dtype": "bfloat16", "rate": 0.25,
                                    "noise_shape": [null, 1, null], "seed": 1234})"));
  std::unique_ptr<nn::Layer> back;
  ASSERT_EQ(nn::layer_from_json(Json::parse(nn::layer_to_json(layer).dump()), &back), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(back->get_config(), config);
  auto& copy = static_cast<nn::Dropout&>(*back);
  EXPECT_EQ(copy.rate(), 0.25);
  EXPECT_EQ(copy.noise_shape(), noise);
  EXPECT_EQ(copy.seed(), std::optional<std::uint64_t>(1234));

  auto rng = rng_for_test();
  const std::vector<__nv_bfloat16> x_host = td::random_input<__nv_bfloat16>(rng, 3 * 4 * 8);
  DeviceBuffer<__nv_bfloat16> x(x_host);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kBFloat16, Shape{3, 4, 8});
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  for (int k = 0; k < 2; ++k) {
    nn::LayerOutput a;
    nn::LayerOutput b;
    ASSERT_EQ(layer.call(ctx, xv, {}, &a), Status::kSuccess);
    ASSERT_EQ(back->call(ctx, xv, {}, &b), Status::kSuccess);
    const std::vector<__nv_bfloat16> ya = download<__nv_bfloat16>(a.y);
    EXPECT_TRUE(td::compare_bits(ya, download<__nv_bfloat16>(b.y), ya.size()).empty()) << "call " << k;
  }

  // Unseeded: the config reports the argument (null), each layer draws its own seed.
  nn::Dropout unseeded_a(nn::DropoutOptions{0.5, {}, {}});
  nn::Dropout unseeded_b(nn::DropoutOptions{0.5, {}, {}});
  EXPECT_TRUE(unseeded_a.get_config()["seed"].is_null());
  EXPECT_TRUE(unseeded_a.get_config()["noise_shape"].is_null());
  EXPECT_NE(unseeded_a.effective_seed(), unseeded_b.effective_seed());
  // The seed the device state holds is the effective one (seeded or drawn), and two unseeded layers draw
  // different masks.
  EXPECT_EQ(state_of(layer).seed, 1234u);
  const DeviceBuffer<float> ones(std::vector<float>(256, 1.0f));
  const ConstTensorView onesv = ConstTensorView::contiguous(ones.get(), DType::kFloat32, Shape{4, 64});
  nn::LayerOutput ua;
  nn::LayerOutput ub;
  ASSERT_EQ(unseeded_a.call(ctx, onesv, {}, &ua), Status::kSuccess);
  ASSERT_EQ(unseeded_b.call(ctx, onesv, {}, &ub), Status::kSuccess);
  EXPECT_EQ(state_of(unseeded_a).seed, unseeded_a.effective_seed());
  EXPECT_EQ(state_of(unseeded_b).seed, unseeded_b.effective_seed());
  EXPECT_NE(download<float>(ua.y), download<float>(ub.y)) << "two unseeded layers drew the same mask";

  // Keras takes a negative seed: read as its two's complement, which is written back and reads back the same.
  std::unique_ptr<nn::Layer> negative;
  ASSERT_EQ(nn::Dropout::from_config(Json::parse(R"({"rate": 0.5, "seed": -1})"), &negative),
            Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(static_cast<nn::Dropout&>(*negative).seed(), std::optional<std::uint64_t>(UINT64_MAX));
  EXPECT_EQ(negative->get_config()["seed"], Json(UINT64_MAX));

  std::unique_ptr<nn::Layer> bad;
  const struct {
    const char* json;
    const char* key;
  } cases[] = {
      {R"({"rate": 1.5})", "rate"},
      {R"({"rate": "half"})", "rate"},
      {R"({"seed": 1.5})", "seed"},
      {R"({"seed": -9223372036854775809})", "seed"},
      {R"({"noise_shape": 3})", "noise_shape"},
      {R"({"noise_shape": [null, 0]})", "noise_shape"},
      {R"({"noise_shape": [null, "a"]})", "noise_shape"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(nn::Dropout::from_config(Json::parse(c.json), &bad), Status::kErrorParse) << c.json;
    EXPECT_TRUE(message_has(c.key)) << c.json << ": " << culayers::last_error_message();
  }
  EXPECT_TRUE(bad == nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// ---- DecayingDropout --------------------------------------------------------------------------------------

nn::DecayingDropoutOptions decaying(double initial, std::int64_t interval, double decay, std::uint64_t seed,
                                    NoiseShape noise = {}) {
  nn::DecayingDropoutOptions o;
  o.initial_keep_rate = initial;
  o.decay_interval = interval;
  o.decay_rate = decay;
  o.noise_shape = std::move(noise);
  o.seed = seed;
  return o;
}

TEST(DecayingDropoutLayer, DefaultsWeightAndInference) {
  nn::DecayingDropout defaults;
  EXPECT_EQ(defaults.initial_keep_rate(), 1.0);
  EXPECT_EQ(defaults.decay_interval(), 10000);
  EXPECT_EQ(defaults.decay_rate(), 0.977);
  EXPECT_FALSE(defaults.seed().has_value());
  EXPECT_FALSE(defaults.noise_shape().has_value());
  EXPECT_EQ(defaults.class_name(), "DecayingDropout");

  DeviceBuffer<float> x(std::vector<float>(2 * 3 * 4, 1.0f));
  DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>{1, 0, 1, 1, 1, 0});
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 3, 4});
  const ConstTensorView mv = ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{2, 3});
  nn::DecayingDropout layer(decaying(0.9, 100, 0.5, 3));
  ASSERT_EQ(layer.build(Shape{2, 3, 4}), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(layer.weights().size(), 1u);
  const nn::Weight* w = layer.find_weight("iterations");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->value.dtype(), DType::kInt64);
  EXPECT_EQ(w->value.shape(), Shape{}) << "a scalar";
  EXPECT_FALSE(w->trainable);
  EXPECT_EQ(layer.count_params(), 1);
  EXPECT_TRUE(layer.trainable_weights().empty());
  EXPECT_EQ(layer.non_trainable_weights().size(), 1u);
  EXPECT_EQ(layer.update_count(), 1u);
  std::int64_t value = -1;
  ASSERT_EQ(w->value.copy_to_host(&value, sizeof(value), nullptr), Status::kSuccess);
  ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  EXPECT_EQ(value, 0);

  // Inference: the identity, no kernel, no update.
  for (int i = 0; i < 3; ++i) {
    nn::LayerOutput out;
    ASSERT_EQ(layer.call(nn::CallContext{}, xv, mv, &out), Status::kSuccess);
    EXPECT_EQ(out.y.data(), static_cast<const void*>(x.get()));
    EXPECT_EQ(out.mask.data(), static_cast<const void*>(mask.get()));
  }
  const cd::DropoutState s = state_of(layer);
  EXPECT_EQ(s.iterations, 0);
  EXPECT_EQ(s.last_iteration, -1);
  // Training: the mask passes through as well.
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, xv, mv, &out), Status::kSuccess);
  EXPECT_EQ(out.mask.data(), static_cast<const void*>(mask.get()));
  EXPECT_EQ(state_of(layer).iterations, 1);
}

template <class T>
void schedule_case(std::mt19937_64& rng, const Shape& shape, int calls) {
  SCOPED_TRACE(culayers::dtype_name(td::DTypeOf<T>::kValue));
  const double initial = 0.9;
  const double decay = 0.5;
  const std::int64_t interval = 3;
  const std::vector<std::int64_t> dims = dims_of(shape);
  const std::vector<T> x_host = td::random_input<T>(rng, static_cast<std::size_t>(shape.numel()));
  DeviceBuffer<T> x(x_host);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), td::DTypeOf<T>::kValue, shape);
  nn::DecayingDropout layer(decaying(initial, interval, decay, rng()), "", td::DTypeOf<T>::kValue);
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  for (int k = 0; k < calls; ++k) {
    nn::LayerOutput out;
    ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
    const cd::DropoutState s = state_of(layer);
    EXPECT_EQ(s.iterations, k + 1);
    EXPECT_EQ(s.last_iteration, k);
    EXPECT_EQ(s.last_stream, static_cast<std::uint64_t>(k));
    // keep_k = initial * decay ^ ((k + 1) / interval), in double: against the long double formula (one ulp
    // of pow, half of the product, and ln(decay) * y ulps from rounding the exponent y) and the host's
    // evaluation of the device's formula (equal on the emulator).
    const long double want = ref::keep_rate(initial, decay, interval, k);
    const double y = (k + 1.0) / static_cast<double>(interval);
    EXPECT_TRUE(
        within_ulps(s.last_keep_rate, static_cast<double>(want), 2.0 + kDeviceUlps + std::log(2.0) * y))
        << "k " << k << ": " << s.last_keep_rate << " vs " << static_cast<double>(want);
    EXPECT_TRUE(
        within_ulps(s.last_keep_rate, cd::scheduled_keep_rate(initial, decay, interval, k), kDeviceUlps));
    EXPECT_EQ(s.last_threshold, ref::threshold(s.last_keep_rate));
    EXPECT_EQ(s.last_scale, static_cast<float>(1.0 / s.last_keep_rate));
    expect_reference(s, x_host, download<T>(out.y), dims, {});
  }
}

TEST(DecayingDropoutLayer, KeepRateAfterKTrainingCallsFollowsTheSchedule) {
  auto rng = rng_for_test();
  schedule_case<float>(rng, Shape{4, 6, 10}, 9);
  schedule_case<__half>(rng, Shape{3, 5, 16}, 4);
  schedule_case<__nv_bfloat16>(rng, Shape{2, 7, 9}, 4);
}

// A frozen call whose forward the op rejects (here x misaligned for its dtype, which the layer's own checks
// do not look at) fails with the op's status and launches nothing: the redraw before the forward included,
// so the state (redraw counter, current stream, last_*) is as it was.
TEST(DecayingDropoutLayer, FrozenCallTheOpRejectsLaunchesNothing) {
  auto rng = rng_for_test();
  const Shape shape{2, 3, 8};
  const std::size_t n = static_cast<std::size_t>(shape.numel());
  DeviceBuffer<float> x(td::random_input<float>(rng, n + 1));
  nn::DecayingDropout layer(decaying(0.8, 2, 0.7, rng()));
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, ConstTensorView::contiguous(x.get(), DType::kFloat32, shape), {}, &out),
            Status::kSuccess);
  layer.set_trainable(false);
  const cd::DropoutState before = state_of(layer);
  const void* odd = reinterpret_cast<const unsigned char*>(x.get()) + 2;
#if CULAYERS_TEST_EMULATED
  const std::uint64_t launches = culayers_emu::stats().launches;
#endif
  EXPECT_EQ(layer.call(ctx, ConstTensorView::contiguous(odd, DType::kFloat32, shape), {}, &out),
            Status::kErrorMisaligned);
  EXPECT_NE(std::string(culayers::last_error_message()).find(layer.name()), std::string::npos)
      << culayers::last_error_message();
#if CULAYERS_TEST_EMULATED
  EXPECT_EQ(culayers_emu::stats().launches, launches) << "a rejected frozen call launched a kernel";
#endif
  const cd::DropoutState after = state_of(layer);
  EXPECT_EQ(std::memcmp(&before, &after, sizeof before), 0)
      << "the state changed (redraws " << before.redraws << " -> " << after.redraws << ")";
}

// A frozen layer keeps its schedule (iteration 1's keep rate, no update op) but, as Keras's dropout,
// draws new noise on every training call, each from a redraw stream: 2^63 + 1, + 2, + 3, never a schedule
// stream. Unfrozen again, call 1 draws from stream 1 (as an unfrozen layer's call 1 did, and as a layer
// loaded at iteration 1 does), then the update op moves to iteration 2. The redraw count survives
// weights_loaded, so a reloaded frozen layer does not repeat earlier redraw streams.
TEST(DecayingDropoutLayer, FrozenLayerKeepsItsRateAndDrawsFreshMasks) {
  auto rng = rng_for_test();
  const Shape shape{3, 4, 8};
  const std::vector<float> x_host = td::random_input<float>(rng, static_cast<std::size_t>(shape.numel()));
  DeviceBuffer<float> x(x_host);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, shape);
  nn::DecayingDropout layer(decaying(0.8, 2, 0.7, rng()));
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess); // k = 0, then iterations = 1
  layer.set_trainable(false);
  std::vector<std::vector<std::uint8_t>> masks;
  const std::uint64_t high = std::uint64_t{1} << 63;
  const std::uint64_t streams[] = {high + 1, high + 2, high + 3};
  for (int i = 0; i < 3; ++i) {
    // The output buffer poisoned (NaN) first: a frozen call that skipped its kernel would leave it.
    ASSERT_EQ(
        cudaMemset(const_cast<void*>(out.y.data()), 0xff, static_cast<std::size_t>(out.y.storage_bytes())),
        cudaSuccess);
    ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess);
    const cd::DropoutState s = state_of(layer);
    EXPECT_EQ(s.iterations, 1) << "no update op runs for a non-trainable layer";
    EXPECT_EQ(s.last_iteration, 1);
    EXPECT_EQ(s.last_stream, streams[i]);
    EXPECT_EQ(s.redraws, static_cast<std::uint64_t>(i + 1)) << "one redraw before each frozen call";
    EXPECT_EQ(s.stream, 1u) << "stream k is restored after each frozen call";
    EXPECT_TRUE(within_ulps(s.last_keep_rate, cd::scheduled_keep_rate(0.8, 0.7, 2, 1), kDeviceUlps));
    const std::vector<float> y = download<float>(out.y);
    masks.push_back(expect_reference(s, x_host, y, dims_of(shape), {}));
    if (i > 0) { // 96 draws at keep ~0.74: two equal masks have probability below 0.62^96
      EXPECT_NE(masks[static_cast<std::size_t>(i)], masks[static_cast<std::size_t>(i - 1)])
          << "frozen calls must draw fresh masks";
    }
  }
  // The same calls on a layer that was never frozen: its call 1 draws the mask the unfrozen call 1 draws.
  nn::DecayingDropout never_frozen(layer.options());
  nn::LayerOutput reference;
  ASSERT_EQ(never_frozen.call(ctx, xv, {}, &reference), Status::kSuccess);
  ASSERT_EQ(never_frozen.call(ctx, xv, {}, &reference), Status::kSuccess);
  layer.set_trainable(true);
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess);
  cd::DropoutState s = state_of(layer);
  EXPECT_EQ(s.last_stream, 1u) << "call k draws from stream k, frozen calls or not";
  EXPECT_EQ(s.last_iteration, 1);
  EXPECT_EQ(s.iterations, 2);
  EXPECT_EQ(s.stream, 2u);
  EXPECT_EQ(s.redraws, 3u);
  const std::vector<float> y1 = download<float>(out.y);
  EXPECT_TRUE(td::compare_bits(y1, download<float>(reference.y), y1.size()).empty())
      << "the unfrozen call 1 differs from a never-frozen layer's call 1";
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess);
  s = state_of(layer);
  EXPECT_EQ(s.last_stream, 2u) << "the schedule's streams resume";
  EXPECT_EQ(s.iterations, 3);
  // Reloaded (the counter written back, as loading weights does) and frozen again: the redraw streams
  // continue after the ones already used.
  ASSERT_EQ(layer.sync_weights(nullptr), Status::kSuccess);
  ASSERT_EQ(layer.weights_loaded(nullptr), Status::kSuccess) << culayers::last_error_message();
  layer.set_trainable(false);
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess);
  s = state_of(layer);
  EXPECT_EQ(s.iterations, 3);
  EXPECT_EQ(s.last_stream, high + 4) << "redraw streams are not reused after weights_loaded";
}

TEST(DecayingDropoutLayer, DecayRateIsClampedAndZeroKeepDropsEverything) {
  EXPECT_EQ(nn::DecayingDropout(decaying(0.8, 7, 1.7, 1)).decay_rate(), 1.0);
  EXPECT_EQ(nn::DecayingDropout(decaying(0.8, 7, 1.7, 1)).get_config()["decay_rate"], 1.0);
  nn::DecayingDropout zero(decaying(0.8, 7, -0.5, 1));
  EXPECT_EQ(zero.decay_rate(), 0.0);
  EXPECT_EQ(zero.get_config()["decay_rate"], 0.0);
  // decay 0: keep rate 0.8 * 0 ^ (1 / 7) = 0 at the first call: T = 0, every value dropped (+0, never NaN).
  std::vector<float> x_host(2 * 3 * 5, std::numeric_limits<float>::infinity());
  x_host[3] = std::numeric_limits<float>::quiet_NaN();
  DeviceBuffer<float> x(x_host);
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out;
  ASSERT_EQ(zero.call(ctx, ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 3, 5}), {}, &out),
            Status::kSuccess);
  EXPECT_EQ(state_of(zero).last_threshold, 0u);
  const std::vector<float> y = download<float>(out.y);
  EXPECT_TRUE(td::compare_bits(y, std::vector<float>(y.size(), 0.0f), y.size()).empty());
}

TEST(DecayingDropoutLayer, SyncWeightsAndWeightsLoadedRoundTripTheCounter) {
  auto rng = rng_for_test();
  const std::uint64_t seed = rng();
  const Shape shape{2, 5, 6};
  const std::vector<float> x_host = td::random_input<float>(rng, static_cast<std::size_t>(shape.numel()));
  DeviceBuffer<float> x(x_host);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, shape);
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;

  nn::DecayingDropout unbuilt(decaying(0.9, 4, 0.8, seed));
  EXPECT_EQ(unbuilt.sync_weights(nullptr), Status::kSuccess) << "nothing to do before build";
  EXPECT_EQ(unbuilt.weights_loaded(nullptr), Status::kSuccess);

  nn::DecayingDropout a(decaying(0.9, 4, 0.8, seed));
  nn::LayerOutput out_a;
  for (int k = 0; k < 5; ++k) {
    ASSERT_EQ(a.call(ctx, xv, {}, &out_a), Status::kSuccess) << culayers::last_error_message();
  }
  nn::Weight* wa = a.find_weight("iterations");
  ASSERT_NE(wa, nullptr);
  std::int64_t value = -1;
  ASSERT_EQ(wa->value.copy_to_host(&value, sizeof(value), nullptr), Status::kSuccess);
  ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  EXPECT_EQ(value, 0) << "the weight follows the state only through sync_weights";
  ASSERT_EQ(a.sync_weights(nullptr), Status::kSuccess);
  ASSERT_EQ(wa->value.copy_to_host(&value, sizeof(value), nullptr), Status::kSuccess);
  ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  EXPECT_EQ(value, 5);

  // "Load" the weight into a fresh layer with the same seed: it continues at iteration 5.
  nn::DecayingDropout b(decaying(0.9, 4, 0.8, seed));
  ASSERT_EQ(b.build(shape), Status::kSuccess);
  nn::Weight* wb = b.find_weight("iterations");
  ASSERT_NE(wb, nullptr);
  ASSERT_EQ(wb->value.copy_from(wa->value, nullptr), Status::kSuccess);
  ASSERT_EQ(b.weights_loaded(nullptr), Status::kSuccess) << culayers::last_error_message();
  const cd::DropoutState sa = state_of(a);
  const cd::DropoutState sb = state_of(b);
  EXPECT_EQ(sb.iterations, 5);
  EXPECT_EQ(sb.stream, sa.stream);
  EXPECT_EQ(sb.keep_rate, sa.keep_rate);
  EXPECT_EQ(sb.threshold, sa.threshold);
  nn::LayerOutput out_b;
  ASSERT_EQ(a.call(ctx, xv, {}, &out_a), Status::kSuccess);
  ASSERT_EQ(b.call(ctx, xv, {}, &out_b), Status::kSuccess);
  const std::vector<float> ya = download<float>(out_a.y);
  EXPECT_TRUE(td::compare_bits(ya, download<float>(out_b.y), ya.size()).empty());
  EXPECT_EQ(state_of(b).last_stream, 5u);

  // A negative counter is rejected, naming the weight; the state is left as it was.
  const std::int64_t negative = -3;
  ASSERT_EQ(wb->value.copy_from_host(&negative, sizeof(negative), nullptr), Status::kSuccess);
  EXPECT_EQ(b.weights_loaded(nullptr), Status::kErrorInvalidValue);
  EXPECT_TRUE(message_has("iterations")) << culayers::last_error_message();
  EXPECT_EQ(state_of(b).iterations, 6);
}

// The Keras layer of the tutorial keeps its counter as float32 of shape (1,): set_weights converts a whole
// number in [0, 2^63) to the int64 count and refuses any other value by name, writing nothing.
TEST(DecayingDropoutLayer, KerasFloatCountersLoadAsTheCount) {
  nn::Sequential model("m");
  ASSERT_EQ(model.add(std::make_unique<nn::DecayingDropout>(decaying(0.9, 4, 0.8, 7), "dd")),
            Status::kSuccess);
  ASSERT_EQ(model.build(Shape{1, 5, 6}), Status::kSuccess) << culayers::last_error_message();
  auto* dd = dynamic_cast<nn::DecayingDropout*>(model.find_layer("dd"));
  ASSERT_NE(dd, nullptr);
  auto file_of = [](DType dtype, const Shape& shape, const std::vector<std::uint8_t>& data) {
    nn::SafetensorsFile f;
    nn::SafetensorsTensor t;
    t.name = "dd/iterations";
    t.dtype = dtype;
    t.shape = shape;
    t.data = data;
    f.tensors.push_back(std::move(t));
    return f;
  };
  auto float_bytes = [](std::vector<float> v) {
    std::vector<std::uint8_t> b(v.size() * sizeof(float));
    std::memcpy(b.data(), v.data(), b.size());
    return b;
  };
  struct Loads {
    Shape shape;
    float value;
    std::int64_t count;
  };
  for (const Loads& l :
       {Loads{Shape{1}, 12.0f, 12}, Loads{Shape{}, 7.0f, 7},
        Loads{Shape{1}, 4611686018427387904.0f, std::int64_t{1} << 62}, Loads{Shape{1}, 0.0f, 0}}) {
    ASSERT_EQ(model.set_weights(file_of(DType::kFloat32, l.shape, float_bytes({l.value}))), Status::kSuccess)
        << l.value << ": " << culayers::last_error_message();
    EXPECT_EQ(state_of(*dd).iterations, l.count) << l.value;
  }
  ASSERT_EQ(model.set_weights(file_of(DType::kFloat32, Shape{1}, float_bytes({5.0f}))), Status::kSuccess);
  for (const float bad : {3.5f, -1.0f, 9223372036854775808.0f, std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(model.set_weights(file_of(DType::kFloat32, Shape{1}, float_bytes({bad}))),
              Status::kErrorInvalidValue)
        << bad;
    EXPECT_TRUE(message_has("dd: iterations: the float32 count") && message_has("not a whole number"))
        << culayers::last_error_message();
    EXPECT_EQ(state_of(*dd).iterations, 5) << "a refused count changes nothing";
  }
  // Other layouts are not converted: the mismatch is reported as before.
  EXPECT_EQ(model.set_weights(file_of(DType::kFloat32, Shape{2}, float_bytes({1.0f, 2.0f}))),
            Status::kErrorInvalidDType);
  EXPECT_EQ(model.set_weights(file_of(DType::kInt32, Shape{}, std::vector<std::uint8_t>(4, 0))),
            Status::kErrorInvalidDType);
  std::vector<std::uint8_t> one(8, 0);
  one[0] = 1;
  EXPECT_EQ(model.set_weights(file_of(DType::kInt64, Shape{1}, one)), Status::kErrorInvalidShape);
  EXPECT_EQ(state_of(*dd).iterations, 5);
}

TEST(DecayingDropoutLayer, GraphReplayEqualsEagerCalls) {
  auto rng = rng_for_test();
  Stream stream;
  const std::uint64_t seed = rng();
  const Shape shape{4, 3, 16};
  const std::vector<__nv_bfloat16> x_host =
      td::random_input<__nv_bfloat16>(rng, static_cast<std::size_t>(shape.numel()));
  DeviceBuffer<__nv_bfloat16> x(x_host);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kBFloat16, shape);
  nn::DecayingDropout captured(decaying(0.95, 2, 0.6, seed), "", DType::kBFloat16);
  nn::DecayingDropout eager(decaying(0.95, 2, 0.6, seed), "", DType::kBFloat16);
  nn::CallContext ctx;
  ctx.stream = stream.get();
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out_c;
  nn::LayerOutput out_e;
  ASSERT_EQ(captured.call(ctx, xv, {}, &out_c), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(eager.call(ctx, xv, {}, &out_e), Status::kSuccess);

  cudaGraph_t graph = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeGlobal));
  const Status cs = captured.call(ctx, xv, {}, &out_c); // forward + the update op
  CULAYERS_ASSERT_CUDA(cudaStreamEndCapture(stream.get(), &graph));
  ASSERT_EQ(cs, Status::kSuccess) << culayers::last_error_message();
  cudaGraphExec_t exec = nullptr;
  CULAYERS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  EXPECT_EQ(state_of(captured, stream.get()).iterations, 1) << "capture enqueued nothing";

  for (int r = 0; r < 6; ++r) {
    CULAYERS_ASSERT_CUDA(cudaGraphLaunch(exec, stream.get()));
    ASSERT_EQ(eager.call(ctx, xv, {}, &out_e), Status::kSuccess);
    CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream.get()));
    const cd::DropoutState sc = state_of(captured, stream.get());
    const cd::DropoutState se = state_of(eager, stream.get());
    EXPECT_EQ(sc.iterations, r + 2);
    EXPECT_EQ(sc.iterations, se.iterations);
    EXPECT_EQ(sc.last_stream, se.last_stream);
    EXPECT_EQ(sc.last_keep_rate, se.last_keep_rate);
    const std::vector<__nv_bfloat16> yc = download<__nv_bfloat16>(out_c.y);
    const std::vector<__nv_bfloat16> ye = download<__nv_bfloat16>(out_e.y);
    EXPECT_TRUE(td::compare_bits(yc, ye, yc.size()).empty()) << "replay " << r;
    expect_reference(sc, x_host, yc, dims_of(shape), {});
  }
  // The counter reaches the weight through sync_weights, enqueued on the same stream.
  ASSERT_EQ(captured.sync_weights(stream.get()), Status::kSuccess);
  std::int64_t value = -1;
  ASSERT_EQ(captured.find_weight("iterations")->value.copy_to_host(&value, sizeof(value), stream.get()),
            Status::kSuccess);
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream.get()));
  EXPECT_EQ(value, 7);
  CULAYERS_ASSERT_CUDA(cudaGraphExecDestroy(exec));
  CULAYERS_ASSERT_CUDA(cudaGraphDestroy(graph));
}

// Freezing between replays of a graph captured trainable (forward + update), and replays of a graph
// captured frozen (redraw, forward, back to the schedule): the state is on the schedule after every call,
// so each trainable replay draws call k's stream k and each frozen one a fresh redraw stream, whatever ran
// before (a host-side flag captured in neither graph would not see the eager calls in between).
TEST(DecayingDropoutLayer, FreezingBetweenGraphReplaysKeepsTheSchedule) {
  auto rng = rng_for_test();
  Stream stream;
  const Shape shape{2, 5, 8};
  DeviceBuffer<float> x(td::random_input<float>(rng, static_cast<std::size_t>(shape.numel())));
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, shape);
  nn::DecayingDropout layer(decaying(0.9, 3, 0.8, rng()));
  nn::CallContext ctx;
  ctx.stream = stream.get();
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message(); // k = 0
  const auto capture = [&](cudaGraphExec_t* exec) {
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeGlobal), cudaSuccess);
    const Status cs = layer.call(ctx, xv, {}, &out);
    ASSERT_EQ(cudaStreamEndCapture(stream.get(), &graph), cudaSuccess);
    ASSERT_EQ(cs, Status::kSuccess) << culayers::last_error_message();
    ASSERT_EQ(cudaGraphInstantiate(exec, graph, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  };
  cudaGraphExec_t trainable_step = nullptr;
  ASSERT_NO_FATAL_FAILURE(capture(&trainable_step));
  layer.set_trainable(false);
  cudaGraphExec_t frozen_step = nullptr;
  ASSERT_NO_FATAL_FAILURE(capture(&frozen_step));
  const std::uint64_t high = std::uint64_t{1} << 63;
  // Eager frozen call (k = 1), then the trainable graph: call 1 draws stream 1.
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess);
  CULAYERS_ASSERT_CUDA(cudaGraphLaunch(trainable_step, stream.get()));
  cd::DropoutState s = state_of(layer, stream.get());
  EXPECT_EQ(s.last_stream, 1u);
  EXPECT_EQ(s.iterations, 2);
  EXPECT_EQ(s.redraws, 1u);
  // The frozen graph twice, then the trainable one: redraw streams 2 and 3, then call 2 on stream 2.
  CULAYERS_ASSERT_CUDA(cudaGraphLaunch(frozen_step, stream.get()));
  s = state_of(layer, stream.get());
  EXPECT_EQ(s.last_stream, high + 2);
  EXPECT_EQ(s.stream, 2u);
  CULAYERS_ASSERT_CUDA(cudaGraphLaunch(frozen_step, stream.get()));
  CULAYERS_ASSERT_CUDA(cudaGraphLaunch(trainable_step, stream.get()));
  s = state_of(layer, stream.get());
  EXPECT_EQ(s.last_stream, 2u);
  EXPECT_EQ(s.iterations, 3);
  EXPECT_EQ(s.redraws, 3u);
  CULAYERS_ASSERT_CUDA(cudaGraphExecDestroy(trainable_step));
  CULAYERS_ASSERT_CUDA(cudaGraphExecDestroy(frozen_step));
}

TEST(DecayingDropoutLayer, BadOptionsAreErrorsNamingThem) {
  DeviceBuffer<float> x(std::vector<float>(2 * 3 * 4, 1.0f));
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 3, 4});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const struct {
    nn::DecayingDropoutOptions options;
    const char* key;
  } cases[] = {
      {decaying(0.0, 10, 0.9, 1), "dd: initial_keep_rate"},
      {decaying(1.5, 10, 0.9, 1), "dd: initial_keep_rate"},
      {decaying(nan, 10, 0.9, 1), "dd: initial_keep_rate"},
      {decaying(0.9, 0, 0.9, 1), "dd: decay_interval"},
      {decaying(0.9, -5, 0.9, 1), "dd: decay_interval"},
      {decaying(0.9, 10, nan, 1), "dd: decay_rate"},
      {decaying(0.9, 10, 0.9, 1, std::vector<std::optional<std::int64_t>>{std::nullopt, -1, std::nullopt}),
       "dd: noise_shape"},
  };
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  for (const auto& c : cases) {
    nn::DecayingDropout layer(c.options, "dd");
    EXPECT_EQ(layer.check_options(), Status::kErrorInvalidValue) << c.key;
    nn::LayerOutput out;
    EXPECT_EQ(layer.call(ctx, xv, {}, &out), Status::kErrorInvalidValue) << c.key;
    EXPECT_TRUE(message_has(c.key)) << culayers::last_error_message();
    EXPECT_FALSE(layer.built());
    EXPECT_TRUE(layer.weights().empty());
    EXPECT_EQ(out.y.data(), nullptr);
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(DecayingDropoutLayer, ConfigRoundTripsAndBadConfigsAreParseErrors) {
  ASSERT_EQ(nn::register_layer_class("DecayingDropout", &nn::DecayingDropout::from_config), Status::kSuccess);
  const NoiseShape noise = std::vector<std::optional<std::int64_t>>{std::nullopt, 1, std::nullopt};
  nn::DecayingDropout layer(decaying(0.8, 7, 0.9, 77, noise), "dd", DType::kFloat16);
  const Json config = layer.get_config();
  EXPECT_EQ(config, Json::parse(R"({"name": "dd", "trainable": true, "dtype": "float16",
                                    "initial_keep_rate": 0.8, "decay_interval": 7, "decay_rate": 0.9,
                                    "noise_shape": [null, 1, null], "seed": 77})"));
  std::unique_ptr<nn::Layer> back;
  ASSERT_EQ(nn::layer_from_json(Json::parse(nn::layer_to_json(layer).dump()), &back), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(back->get_config(), config);

  auto rng = rng_for_test();
  const std::vector<__half> x_host = td::random_input<__half>(rng, 3 * 5 * 8);
  DeviceBuffer<__half> x(x_host);
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), DType::kFloat16, Shape{3, 5, 8});
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  for (int k = 0; k < 3; ++k) {
    nn::LayerOutput a;
    nn::LayerOutput b;
    ASSERT_EQ(layer.call(ctx, xv, {}, &a), Status::kSuccess);
    ASSERT_EQ(back->call(ctx, xv, {}, &b), Status::kSuccess);
    const std::vector<__half> ya = download<__half>(a.y);
    EXPECT_TRUE(td::compare_bits(ya, download<__half>(b.y), ya.size()).empty()) << "call " << k;
  }
  EXPECT_EQ(state_of(static_cast<nn::DecayingDropout&>(*back)).iterations, 3);

  // A clamped decay rate round-trips as the clamped value; absent keys take the defaults.
  ASSERT_EQ(nn::DecayingDropout::from_config(Json{{"decay_rate", 3.0}}, &back), Status::kSuccess);
  EXPECT_EQ(back->get_config()["decay_rate"], 1.0);
  EXPECT_EQ(back->get_config()["decay_interval"], 10000);
  EXPECT_EQ(back->get_config()["initial_keep_rate"], 1.0);
  EXPECT_TRUE(back->get_config()["seed"].is_null());
  // The tutorial's layer divides by float(decay_interval): a whole float reads as the integer.
  ASSERT_EQ(nn::DecayingDropout::from_config(Json::parse(R"({"decay_interval": 1e4, "seed": -4})"), &back),
            Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(back->get_config()["decay_interval"], Json(10000));
  EXPECT_EQ(back->get_config()["seed"], Json(static_cast<std::uint64_t>(-4)));
  // The device state holds the effective seed, given or drawn.
  auto seeded = static_cast<nn::DecayingDropout*>(back.get());
  nn::DecayingDropoutOptions unseeded_options;
  nn::DecayingDropout unseeded(unseeded_options);
  const DeviceBuffer<float> ones(std::vector<float>(64, 1.0f));
  const ConstTensorView onesv = ConstTensorView::contiguous(ones.get(), DType::kFloat32, Shape{4, 16});
  nn::LayerOutput o;
  ASSERT_EQ(seeded->call(ctx, onesv, {}, &o), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(unseeded.call(ctx, onesv, {}, &o), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(state_of(*seeded).seed, static_cast<std::uint64_t>(-4));
  EXPECT_EQ(state_of(unseeded).seed, unseeded.effective_seed());

  std::unique_ptr<nn::Layer> bad;
  const struct {
    const char* json;
    const char* key;
  } cases[] = {
      {R"({"decay_interval": 1e19})", "decay_interval"},
      {R"({"decay_interval": -1e4})", "decay_interval"},
      {R"({"initial_keep_rate": 0})", "initial_keep_rate"},
      {R"({"initial_keep_rate": "x"})", "initial_keep_rate"},
      {R"({"decay_interval": 2.5})", "decay_interval"},
      {R"({"decay_interval": 0})", "decay_interval"},
      {R"({"decay_rate": null})", "decay_rate"},
      {R"({"seed": 2.5})", "seed"},
      {R"({"noise_shape": [1, 0, 1]})", "noise_shape"},
      {R"({"noise_shape": {"a": 1}})", "noise_shape"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(nn::DecayingDropout::from_config(Json::parse(c.json), &bad), Status::kErrorParse) << c.json;
    EXPECT_TRUE(message_has(c.key)) << c.json << ": " << culayers::last_error_message();
  }
  EXPECT_TRUE(bad == nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

} // namespace
