// The GroupNormalization layer (culayers/nn/normalization.hpp): a hand-worked padded batch, random inputs
// against the double reference for both layouts, every activation and several ranks, masked statistics
// with NaN in the padded steps, weights and options, config round trips through the registry, bad configs,
// build errors and incompatible inputs.
#include "culayers/nn/normalization.hpp"

#include "tests/reference/group_norm_reference.hpp"
#include "tests/nn/nn_test_util.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace nn = culayers::nn;
namespace gn = culayers::test::gn;
namespace nn_util = culayers::test::nn_util;
using culayers::ConstTensorView;
using culayers::DType;
using culayers::Layout;
using culayers::Shape;
using culayers::Status;
using culayers::group_norm::Activation;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::nn_util::download;
using culayers::test::nn_util::seed_note;
using culayers::test::nn_util::shape_str;
using culayers::test::nn_util::view_of;
using gn::Dtype;
using nn::Json;

const char* act_name(Activation a) {
  return a == Activation::kNone ? "linear" : (a == Activation::kSiLU ? "silu" : "relu");
}

std::vector<double> weight_values(const nn::Layer& layer, const char* name) {
  return gn::widen(nn_util::weight_floats(layer, name));
}

// ---- hand-worked ------------------------------------------------------------------------------------------

TEST(GroupNormalizationLayer, HandWorkedPaddedBatch) {
  // B = 2, T = 3, C = 2, one group over both channels, epsilon 12, gamma 2, beta 1.
  // Sample 0: steps (2, 6), (6, 2) valid and (NaN, 100) padded: mean 4, variance 4, rstd 1 / sqrt(16) =
  // 0.25, y = (x - 4) * 0.25 * 2 + 1 -> (0, 2), (2, 0), and the padded step still normalized: (NaN, 49).
  // Sample 1: steps (-1, 3), (3, -1), (-1, 3) all valid: mean 1, variance 4 -> (0, 2), (2, 0), (0, 2).
  const float nan = std::nanf("");
  DeviceBuffer<float> x(std::vector<float>{2, 6, 6, 2, nan, 100, -1, 3, 3, -1, -1, 3});
  DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>{1, 1, 0, 1, 1, 1});
  nn::GroupNormalizationOptions o;
  o.groups = 1;
  o.epsilon = 12.0;
  o.gamma_initializer = nn::Initializer::constant(2.0);
  o.beta_initializer = nn::Initializer::constant(1.0);
  nn::GroupNormalization layer(o, "gn");
  nn::CallContext ctx;
  nn::LayerOutput out;
  const ConstTensorView mv = view_of(mask.get(), DType::kUInt8, Shape{2, 3});
  ASSERT_EQ(layer.call(ctx, view_of(x.get(), DType::kFloat32, Shape{2, 3, 2}), mv, &out), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(out.mask.data(), mask.get()) << "the mask passes through";
  EXPECT_EQ(out.y.shape(), (Shape{2, 3, 2}));
  const std::vector<float> y = download<float>(out.y);
  const std::vector<float> want{0, 2, 2, 0, nan, 49, 0, 2, 2, 0, 0, 2};
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(y[i])) << i;
    } else {
      // Exact in real arithmetic; rsqrtf on a GPU may be 2 ulp off: 8 float32 ulps of the largest term.
      EXPECT_NEAR(y[i], want[i], 8.0 * gn::kU32 * 96.0) << i;
    }
  }
}

// ---- random inputs vs the reference --------------------------------------------------------------------

struct LayerCase {
  Shape shape;
  int axis = -1;
  std::int64_t groups = 1; // the option (-1: one group per channel)
  Activation act = Activation::kNone;
  bool mask = false; // channels-last rank 3 only: NaN in the padded steps
  bool center = true;
  bool scale = true;
};

std::string describe(const LayerCase& c, const char* dtype) {
  return std::string(dtype) + " " + shape_str(c.shape) + " axis=" + std::to_string(c.axis) +
         " groups=" + std::to_string(c.groups) + " act=" + act_name(c.act) + (c.mask ? " mask" : "") +
         (c.center ? "" : " no-center") + (c.scale ? "" : " no-scale") + "; " + seed_note();
}

template <class T>
void check_layer(std::mt19937_64& rng, const LayerCase& c) {
  const char* dt = Dtype<T>::kName;
  const int rank = c.shape.rank();
  const bool last = c.axis == -1 || c.axis == rank - 1;
  const std::int64_t batch = c.shape.dim(0);
  const std::int64_t channels = last ? c.shape.dim(rank - 1) : c.shape.dim(1);
  const std::int64_t spatial = last ? c.shape.product(1, rank - 1) : c.shape.product(2, rank);
  nn::GroupNormalizationOptions o;
  o.groups = c.groups;
  o.axis = c.axis;
  o.activation = c.act;
  o.center = c.center;
  o.scale = c.scale;
  o.gamma_initializer = nn::Initializer::random_normal(1.0, 0.5, rng());
  o.beta_initializer = nn::Initializer::random_normal(0.0, 0.5, rng());
  nn::GroupNormalization layer(o, "", Dtype<T>::kDType);

  const std::size_t n = static_cast<std::size_t>(c.shape.numel());
  std::vector<T> x = gn::normal_values<T>(rng, n, 0.5, 2.0);
  std::vector<std::uint8_t> mask;
  if (c.mask) {
    mask = gn::make_mask(rng, batch, spatial);
    for (std::size_t i = 0; i < n; ++i) {
      if (mask[i / static_cast<std::size_t>(channels)] == 0) {
        x[i] = Dtype<T>::from_double(std::nan(""));
      }
    }
  }
  DeviceBuffer<T> d_x(x);
  DeviceBuffer<std::uint8_t> d_mask(mask);
  const ConstTensorView mv =
      c.mask ? view_of(d_mask.get(), DType::kUInt8, Shape{batch, spatial}) : ConstTensorView{};
  nn::CallContext ctx;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, view_of(d_x.get(), Dtype<T>::kDType, c.shape), mv, &out), Status::kSuccess)
      << describe(c, dt) << ": " << culayers::last_error_message();
  EXPECT_EQ(out.mask.data(), c.mask ? d_mask.get() : nullptr) << describe(c, dt);
  ASSERT_EQ(out.y.shape(), c.shape);
  ASSERT_EQ(out.y.dtype(), Dtype<T>::kDType);
  const std::vector<T> got = download<T>(out.y);

  gn::Problem p;
  p.layout = last ? Layout::kChannelsLast : Layout::kChannelsFirst;
  p.batch = batch;
  p.channels = channels;
  p.spatial = spatial;
  p.groups = c.groups == -1 ? channels : c.groups;
  p.gamma = weight_values(layer, "gamma");
  p.beta = weight_values(layer, "beta");
  EXPECT_EQ(p.gamma.size(), c.scale ? static_cast<std::size_t>(channels) : 0u);
  EXPECT_EQ(p.beta.size(), c.center ? static_cast<std::size_t>(channels) : 0u);
  p.activation = c.act;
  p.mask = mask;
  const std::vector<double> xd = gn::to_double(x);
  const gn::Stats st = gn::statistics(p, xd);
  const gn::Normalized want = gn::normalize(p, xd, st.mean, st.rstd);
  int failures = 0;
  p.for_each([&](std::int64_t b, std::int64_t g, std::int64_t ch, std::int64_t s, std::size_t i) {
    if (failures >= 5) {
      return;
    }
    const double y = Dtype<T>::to_double(got[i]);
    const std::string where = describe(c, dt) + ": y[n=" + std::to_string(b) + " c=" + std::to_string(ch) +
                              " s=" + std::to_string(s) + "] = " + std::to_string(y);
    if (std::isnan(xd[i])) { // a NaN in a padded step stays there and reaches nothing else
      if (!std::isnan(y)) {
        ADD_FAILURE() << where << ", want NaN";
        ++failures;
      }
      return;
    }
    // The group-norm op's error model (see group_norm_reference.hpp), then one rounding to T.
    const std::size_t k = static_cast<std::size_t>(b * p.groups + g);
    const gn::GroupError e = gn::forward_group_error(st.count[k], st.max_abs[k], st.max_dev[k], st.rstd[k]);
    const double pre_tol = gn::pre_error(e, want.xhat[i], p.gamma_at(ch), p.beta_at(ch));
    const double tol_f = gn::activation_error(c.act, want.pre[i], want.y[i], pre_tol);
    const double tol = tol_f + gn::ulp<T>(std::fabs(want.y[i]) + tol_f);
    if (!(std::fabs(y - want.y[i]) <= tol)) {
      ADD_FAILURE() << where << ", want " << want.y[i] << " (tol " << tol << ")";
      ++failures;
    }
  });
}

TEST(GroupNormalizationLayer, RandomInputsMatchReferenceInBothLayouts) {
  auto rng = rng_for_test();
  const LayerCase shapes[] = {
      {Shape{3, 5, 8}, -1, 4},     // channels last (B, T, C)
      {Shape{2, 4, 3, 6}, -1, -1}, // channels last (B, H, W, C), one group per channel
      {Shape{2, 3, 2, 8}, 3, 2},   // channels last spelled as a positive axis
      {Shape{4, 6}, -1, 2},        // (B, C)
      {Shape{2, 6, 7}, 1, 3},      // channels first (B, C, T)
      {Shape{2, 4, 3, 5}, 1, 2},   // channels first (B, C, H, W)
      {Shape{3, 4}, 1, 4},         // (B, C) with axis 1: the same memory as channels last
  };
  for (const Activation act : {Activation::kNone, Activation::kSiLU, Activation::kReLU}) {
    for (LayerCase c : shapes) {
      c.act = act;
      check_layer<float>(rng, c);
      check_layer<__nv_bfloat16>(rng, c);
    }
  }
  // Without gamma / beta, and half precision.
  LayerCase c{Shape{2, 5, 6}, -1, 3};
  c.center = false;
  check_layer<float>(rng, c);
  c.center = true;
  c.scale = false;
  check_layer<__half>(rng, c);
  c = LayerCase{Shape{2, 6, 5}, 1, 2};
  c.center = false;
  c.scale = false;
  check_layer<__half>(rng, c);
}

TEST(GroupNormalizationLayer, MaskedStatisticsIgnoreNaNInPaddedSteps) {
  auto rng = rng_for_test();
  // gn::make_mask: sample 1 fully masked (mean 0, variance 0), sample 2 with one valid step.
  for (const Activation act : {Activation::kNone, Activation::kSiLU, Activation::kReLU}) {
    LayerCase c{Shape{4, 7, 8}, -1, 2, act, true};
    check_layer<float>(rng, c);
    check_layer<__nv_bfloat16>(rng, c);
    c.groups = -1;
    check_layer<float>(rng, c);
  }
}

// ---- weights, options, buffers ---------------------------------------------------------------------------

TEST(GroupNormalizationLayer, WeightsAreFloat32PerChannelAndOnlyThoseEnabled) {
  DeviceBuffer<__half> x(2 * 3 * 8);
  const ConstTensorView xv = view_of(x.get(), DType::kFloat16, Shape{2, 3, 8});
  struct Want {
    bool center, scale;
    std::vector<std::string> names;
  };
  for (const Want& w : {Want{true, true, {"gamma", "beta"}}, Want{false, true, {"gamma"}},
                        Want{true, false, {"beta"}}, Want{false, false, {}}}) {
    nn::GroupNormalizationOptions o;
    o.groups = 4;
    o.center = w.center;
    o.scale = w.scale;
    nn::GroupNormalization layer(o, "", DType::kFloat16);
    EXPECT_EQ(layer.class_name(), "GroupNormalization");
    EXPECT_EQ(layer.name().rfind("group_normalization", 0), 0u) << layer.name();
    EXPECT_TRUE(layer.supports_masking());
    ASSERT_EQ(layer.build(xv.shape()), Status::kSuccess) << culayers::last_error_message();
    ASSERT_EQ(layer.weights().size(), w.names.size());
    for (std::size_t i = 0; i < w.names.size(); ++i) {
      const nn::Weight& wt = *layer.weights()[i];
      EXPECT_EQ(wt.name, w.names[i]);
      EXPECT_EQ(wt.value.shape(), (Shape{8}));
      EXPECT_EQ(wt.value.dtype(), DType::kFloat32);
      EXPECT_TRUE(wt.trainable);
    }
    EXPECT_EQ(layer.update_count(), 0u);
    for (const double v : weight_values(layer, "gamma")) {
      EXPECT_EQ(v, 1.0);
    }
    for (const double v : weight_values(layer, "beta")) {
      EXPECT_EQ(v, 0.0);
    }
  }
}

TEST(GroupNormalizationLayer, WarmedUpCallsReuseTheirBuffersAndPhaseDoesNotMatter) {
  auto rng = rng_for_test();
  const Shape shape{2, 16, 8};
  const std::vector<float> host = gn::normal_values<float>(rng, static_cast<std::size_t>(shape.numel()));
  DeviceBuffer<float> x(host);
  nn::GroupNormalization layer(nn::GroupNormalizationOptions{4});
  nn::CallContext ctx;
  nn::LayerOutput out;
  const ConstTensorView xv = view_of(x.get(), DType::kFloat32, shape);
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
  const void* first = out.y.data();
  const std::vector<float> y_inference = download<float>(out.y);
  ctx.phase = nn::Phase::kTraining;
  nn_util::poison(out); // the same buffer is reused: the second call must rewrite it
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(out.y.data(), first);
  EXPECT_EQ(download<float>(out.y), y_inference) << "group normalization has no phase-dependent behaviour";
}

// Groups too large for one warp (one group of SMs x 8192 elements: 32768 on the emulator) in a tensor of
// 32 KB per SM (the tile path's default threshold on every device) take the op's tile path (channels last,
// a 32-byte group slice per row), whose workspace comes from a layer-owned slot: still the reference's
// answer, and a warmed-up call captured in a CUDA graph and replayed gives the eager call's bits. (The
// op's own tests cover every path's workspace.)
TEST(GroupNormalizationLayer, LargeGroupsUseTheWorkspaceSlotAndCapture) {
  auto rng = rng_for_test();
  const std::int64_t steps = std::int64_t{culayers::test::sm_count()} * 1024; // x: SMs x 32 KB
  LayerCase c{Shape{1, steps, 8}, -1, 1, Activation::kSiLU};
  check_layer<float>(rng, c);

  const std::vector<float> host =
      gn::normal_values<float>(rng, static_cast<std::size_t>(c.shape.numel()), 3.0);
  DeviceBuffer<float> x(host);
  const ConstTensorView xv = view_of(x.get(), DType::kFloat32, c.shape);
  nn::GroupNormalizationOptions o;
  o.groups = 1;
  o.activation = Activation::kSiLU;
  const culayers::test::Stream stream_owner; // before the layers: they free their buffers on it
  nn::GroupNormalization layer(o, "gn_big");
  {
    culayers::group_norm::GroupNormArgs a;
    a.layout = Layout::kChannelsLast;
    a.x = x.get();
    a.y = x.get();
    a.batch = 1;
    a.channels = 8;
    a.spatial = steps;
    a.groups = 1;
    EXPECT_EQ(culayers::group_norm::selected_path(a), culayers::group_norm::Path::kTile);
    EXPECT_GT(culayers::group_norm::workspace_size(a), 0u);
  }
  const cudaStream_t stream = stream_owner.get();
  nn::CallContext ctx;
  ctx.stream = stream;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream));
  const std::vector<float> eager = download<float>(out.y);
  const void* first = out.y.data();
  // Poison the output, then capture the call and replay it.
  CULAYERS_ASSERT_CUDA(
      cudaMemsetAsync(const_cast<void*>(out.y.data()), 0xff, eager.size() * sizeof(float), stream));
  cudaGraph_t graph = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const Status cs = layer.call(ctx, xv, {}, &out);
  CULAYERS_ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  ASSERT_EQ(cs, Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(out.y.data(), first) << "a warmed-up call reuses its buffers";
  cudaGraphExec_t exec = nullptr;
  CULAYERS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int k = 0; k < 2; ++k) {
    CULAYERS_ASSERT_CUDA(cudaGraphLaunch(exec, stream));
  }
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream));
  const std::vector<float> replayed = download<float>(out.y);
  EXPECT_EQ(std::memcmp(replayed.data(), eager.data(), eager.size() * sizeof(float)), 0);
  CULAYERS_ASSERT_CUDA(cudaGraphExecDestroy(exec));
  CULAYERS_ASSERT_CUDA(cudaGraphDestroy(graph));
}

// ---- errors -----------------------------------------------------------------------------------------------

/// Calls a fresh layer and expects `want` with a message naming the layer and `arg`; the output is untouched.
void expect_call_error(nn::GroupNormalization& layer, const ConstTensorView& x, const ConstTensorView& mask,
                       Status want, const std::string& arg) {
  nn::CallContext ctx;
  nn::LayerOutput out;
  int sentinel = 0;
  out.y = ConstTensorView::contiguous(&sentinel, DType::kFloat32, Shape{1});
  EXPECT_EQ(layer.call(ctx, x, mask, &out), want) << arg;
  const std::string msg = culayers::last_error_message();
  EXPECT_NE(msg.find(layer.name() + ": " + arg), std::string::npos) << msg;
  EXPECT_EQ(out.y.data(), &sentinel) << arg << ": the output was written";
  EXPECT_EQ(out.mask.data(), nullptr);
}

TEST(GroupNormalizationLayer, BadOptionsAreClearErrorsAtBuild) {
  DeviceBuffer<float> x(2 * 3 * 4 * 8);
  const ConstTensorView x3 = view_of(x.get(), DType::kFloat32, Shape{2, 3, 8});
  const ConstTensorView x4 = view_of(x.get(), DType::kFloat32, Shape{2, 3, 4, 8});
  const ConstTensorView x1 = view_of(x.get(), DType::kFloat32, Shape{8});
  struct Bad {
    std::int64_t groups;
    int axis;
    double epsilon;
    const ConstTensorView* x;
    Status want;
    const char* arg;
  };
  const Bad bad[] = {
      {3, -1, 1e-3, &x3, Status::kErrorInvalidShape, "groups"},  // 8 % 3 != 0
      {16, -1, 1e-3, &x3, Status::kErrorInvalidShape, "groups"}, // more groups than channels
      {0, -1, 1e-3, &x3, Status::kErrorInvalidValue, "groups"},
      {-2, -1, 1e-3, &x3, Status::kErrorInvalidValue, "groups"},
      {4, -1, 0.0, &x3, Status::kErrorInvalidValue, "epsilon"},
      {4, -1, -1.0, &x3, Status::kErrorInvalidValue, "epsilon"},
      {4, -1, 1e-60, &x3, Status::kErrorInvalidValue, "epsilon"}, // 0 in float32
      {4, 2, 1e-3, &x4, Status::kErrorNotSupported, "axis"},      // neither last nor 1
      {4, 0, 1e-3, &x3, Status::kErrorNotSupported, "axis"},
      {4, 3, 1e-3, &x3, Status::kErrorInvalidValue, "axis"},
      {4, -4, 1e-3, &x3, Status::kErrorInvalidValue, "axis"},
      {1, -1, 1e-3, &x1, Status::kErrorInvalidShape, "input"}, // rank 1
  };
  for (const Bad& b : bad) {
    nn::GroupNormalizationOptions o;
    o.groups = b.groups;
    o.axis = b.axis;
    o.epsilon = b.epsilon;
    nn::GroupNormalization layer(o, "bad_gn");
    expect_call_error(layer, *b.x, {}, b.want, b.arg);
    EXPECT_FALSE(layer.built()) << b.arg;
    EXPECT_TRUE(layer.weights().empty()) << b.arg;
  }
}

// A standalone layer's first call builds, then runs the checks that need the built layer (the op's limits
// for the shape); one they reject leaves the layer unbuilt (no weights), so the next call builds for its own
// shape, as a model's first call does.
TEST(GroupNormalizationLayer, FirstCallTheOpLimitsRejectLeavesTheLayerUnbuilt) {
  nn::GroupNormalizationOptions o;
  o.groups = 2;
  nn::GroupNormalization layer(o, "gn_limits");
  // Batch x groups = 2^32 (rows of the statistics) over an empty spatial axis: nothing to read, but past
  // the op's 32-bit group count.
  const std::int64_t batch = std::int64_t{1} << 31;
  expect_call_error(layer, view_of(nullptr, DType::kFloat32, Shape{batch, 0, 8}), {}, Status::kErrorSizeLimit,
                    "");
  EXPECT_FALSE(layer.built());
  EXPECT_TRUE(layer.weights().empty());
  DeviceBuffer<float> x(2 * 3 * 8);
  nn::CallContext ctx;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, view_of(x.get(), DType::kFloat32, Shape{2, 3, 8}), {}, &out), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_TRUE(layer.built());
  EXPECT_EQ(layer.built_shape().dim(2), 8);
}

TEST(GroupNormalizationLayer, MasksOnlyWithChannelsLastSequencesAndShapesMustMatch) {
  DeviceBuffer<float> x(2 * 8 * 3 * 4);
  DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>(2 * 8, 1));
  // Channels first (B, C, T): a [B, C] mask passes the base class's check but is not a time mask here.
  nn::GroupNormalizationOptions first;
  first.groups = 4;
  first.axis = 1;
  nn::GroupNormalization cf(first, "gn_cf");
  expect_call_error(cf, view_of(x.get(), DType::kFloat32, Shape{2, 8, 3}),
                    view_of(mask.get(), DType::kUInt8, Shape{2, 8}), Status::kErrorNotSupported, "mask");
  // Channels last of rank 4 (B, H, W, C): no time axis.
  nn::GroupNormalization cl4(nn::GroupNormalizationOptions{4}, "gn_cl4");
  expect_call_error(cl4, view_of(x.get(), DType::kFloat32, Shape{2, 3, 4, 8}),
                    view_of(mask.get(), DType::kUInt8, Shape{2, 3}), Status::kErrorNotSupported, "mask");
  // A later call with other channels (or rank) than the build: the base class's shape check.
  nn::GroupNormalization layer(nn::GroupNormalizationOptions{4}, "gn_shape");
  nn::CallContext ctx;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, view_of(x.get(), DType::kFloat32, Shape{2, 3, 8}), {}, &out), Status::kSuccess)
      << culayers::last_error_message();
  expect_call_error(layer, view_of(x.get(), DType::kFloat32, Shape{2, 3, 16}), {}, Status::kErrorInvalidShape,
                    "input");
  expect_call_error(layer, view_of(x.get(), DType::kFloat32, Shape{2, 3, 2, 8}), {},
                    Status::kErrorInvalidShape, "input");
  // Another batch or step count is fine.
  ASSERT_EQ(layer.call(ctx, view_of(x.get(), DType::kFloat32, Shape{3, 5, 8}), {}, &out), Status::kSuccess)
      << culayers::last_error_message();
  ASSERT_EQ(layer.call(ctx, view_of(x.get(), DType::kFloat32, Shape{0, 5, 8}), {}, &out), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(out.y.shape(), (Shape{0, 5, 8}));
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
}

// ---- configs ----------------------------------------------------------------------------------------------

void register_class() {
  ASSERT_EQ(nn::register_layer_class("GroupNormalization", &nn::GroupNormalization::from_config),
            Status::kSuccess);
}

TEST(GroupNormalizationLayer, ConfigsRoundTripToIdenticalOutputs) {
  register_class();
  auto rng = rng_for_test();
  struct Variant {
    Shape shape;
    nn::GroupNormalizationOptions o;
  };
  std::vector<Variant> variants(3);
  variants[0].shape = Shape{2, 6, 8};
  variants[0].o.groups = 4;
  variants[0].o.epsilon = 1e-2;
  variants[0].o.activation = Activation::kSiLU;
  variants[0].o.gamma_initializer = nn::Initializer::random_normal(1.0, 0.3, 7);
  variants[0].o.beta_initializer = nn::Initializer::random_uniform(-0.5, 0.5, 8);
  variants[1].shape = Shape{2, 8, 3, 3};
  variants[1].o.groups = -1;
  variants[1].o.axis = 1;
  variants[1].o.center = false;
  variants[1].o.activation = Activation::kReLU;
  variants[1].o.gamma_initializer = nn::Initializer::constant(0.75);
  variants[2].shape = Shape{3, 8};
  variants[2].o.groups = 2;
  variants[2].o.scale = false;
  variants[2].o.beta_initializer = nn::Initializer::random_normal(0.0, 1.0, 9);
  for (const Variant& v : variants) {
    const std::vector<float> host = gn::normal_values<float>(rng, static_cast<std::size_t>(v.shape.numel()));
    DeviceBuffer<float> x(host);
    const ConstTensorView xv = view_of(x.get(), DType::kFloat32, v.shape);
    nn::GroupNormalization a(v.o, "gn_a");
    a.set_trainable(false);
    const Json j = nn::layer_to_json(a);
    EXPECT_EQ(j["class_name"], "GroupNormalization");
    const Json& cfg = j["config"];
    for (const char* key : {"name", "trainable", "dtype", "groups", "axis", "epsilon", "center", "scale",
                            "beta_initializer", "gamma_initializer"}) {
      EXPECT_TRUE(cfg.contains(key)) << key;
    }
    EXPECT_EQ(cfg["groups"], v.o.groups);
    // "activation" only for a fused activation: Keras's GroupNormalization.from_config rejects the key.
    if (v.o.activation == Activation::kNone) {
      EXPECT_FALSE(cfg.contains("activation"));
    } else {
      EXPECT_EQ(cfg["activation"], act_name(v.o.activation));
    }
    EXPECT_EQ(cfg["gamma_initializer"], v.o.gamma_initializer.to_json());
    std::unique_ptr<nn::Layer> b;
    ASSERT_EQ(nn::layer_from_json(Json::parse(j.dump()), &b), Status::kSuccess)
        << culayers::last_error_message();
    EXPECT_EQ(nn::layer_to_json(*b), j);
    EXPECT_FALSE(b->trainable());
    nn::CallContext ctx;
    nn::LayerOutput oa;
    nn::LayerOutput ob;
    ASSERT_EQ(a.call(ctx, xv, {}, &oa), Status::kSuccess) << culayers::last_error_message();
    ASSERT_EQ(b->call(ctx, xv, {}, &ob), Status::kSuccess) << culayers::last_error_message();
    const std::vector<float> ya = download<float>(oa.y);
    const std::vector<float> yb = download<float>(ob.y);
    ASSERT_EQ(ya.size(), yb.size());
    EXPECT_EQ(std::memcmp(ya.data(), yb.data(), ya.size() * sizeof(float)), 0) << "outputs differ";
    EXPECT_EQ(nn::layer_to_json(*b), j) << "building changes no config key";
  }
}

TEST(GroupNormalizationLayer, KerasConfigsAndAliasesAreRead) {
  register_class();
  // A tf.keras GroupNormalization config (its regularizers and constraints are ignored) plus "swish".
  const Json j = Json::parse(R"({"class_name": "GroupNormalization", "config": {
      "name": "gn_keras", "trainable": true, "dtype": "bfloat16", "groups": 8, "axis": -1, "epsilon": 0.001,
      "center": true, "scale": false,
      "beta_initializer": {"class_name": "Zeros", "config": {}}, "gamma_initializer": "ones",
      "beta_regularizer": null, "gamma_regularizer": null, "beta_constraint": null, "gamma_constraint": null,
      "activation": "swish"}})");
  std::unique_ptr<nn::Layer> layer;
  ASSERT_EQ(nn::layer_from_json(j, &layer), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(layer->name(), "gn_keras");
  EXPECT_EQ(layer->dtype(), DType::kBFloat16);
  const auto* g = dynamic_cast<const nn::GroupNormalization*>(layer.get());
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->options().groups, 8);
  EXPECT_EQ(g->options().activation, Activation::kSiLU);
  EXPECT_FALSE(g->options().scale);
  EXPECT_EQ(layer->get_config()["activation"], "silu");
  // Defaults: an empty config is Keras's defaults.
  ASSERT_EQ(nn::GroupNormalization::from_config(Json::object(), &layer), Status::kSuccess);
  g = dynamic_cast<const nn::GroupNormalization*>(layer.get());
  EXPECT_EQ(g->options().groups, 32);
  EXPECT_EQ(g->options().axis, -1);
  EXPECT_EQ(g->options().epsilon, 1e-3);
  EXPECT_TRUE(g->options().center && g->options().scale);
  EXPECT_EQ(g->options().activation, Activation::kNone);
  EXPECT_EQ(g->options().gamma_initializer, nn::Initializer::ones());
  EXPECT_EQ(g->options().beta_initializer, nn::Initializer::zeros());
}

TEST(GroupNormalizationLayer, BadConfigsAreClearErrors) {
  register_class();
  struct Bad {
    const char* config;
    Status want;
    const char* key;
  };
  const Bad bad[] = {
      {R"({"groups": "four"})", Status::kErrorParse, "groups"},
      {R"({"groups": 0})", Status::kErrorParse, "groups"},
      {R"({"groups": 2.5})", Status::kErrorParse, "groups"},
      {R"({"axis": 1.5})", Status::kErrorParse, "axis"},
      // Above INT64_MAX: nlohmann-json's get<int64_t>() would wrap these to -1 (a valid groups) and -2.
      {R"({"groups": 18446744073709551615})", Status::kErrorParse, "groups"},
      {R"({"axis": 18446744073709551614})", Status::kErrorParse, "axis"},
      {R"({"epsilon": 0})", Status::kErrorParse, "epsilon"},
      {R"({"epsilon": "small"})", Status::kErrorParse, "epsilon"},
      {R"({"center": 1})", Status::kErrorParse, "center"},
      {R"({"scale": "yes"})", Status::kErrorParse, "scale"},
      {R"({"activation": "tanh"})", Status::kErrorParse, "activation"},
      {R"({"activation": 3})", Status::kErrorParse, "activation"},
      {R"({"gamma_initializer": {"class_name": "Orthogonal"}})", Status::kErrorUnknownClass,
       "gamma_initializer"},
      {R"({"beta_initializer": 5})", Status::kErrorParse, "beta_initializer"},
      {R"({"dtype": "int8"})", Status::kErrorParse, "dtype"},
  };
  for (const Bad& b : bad) {
    std::unique_ptr<nn::Layer> out;
    const Json j{{"class_name", "GroupNormalization"}, {"config", Json::parse(b.config)}};
    EXPECT_EQ(nn::layer_from_json(j, &out), b.want) << b.config;
    EXPECT_NE(std::string(culayers::last_error_message()).find(std::string("\"") + b.key + "\""),
              std::string::npos)
        << culayers::last_error_message();
    EXPECT_EQ(out, nullptr);
  }
}

// Streams: a layer's memory is freed on the stream that used it last. Built and called on stream A,
// called on B, then on A with another batch (the output buffer is replaced: the old one is freed on A, the
// stream of the call that replaces it, since an output is valid only until the layer's next call, so its
// readers, on any stream, are ordered before that call; B's later work need not be after them), then
// destroyed (the weights and the new buffer on A).
TEST(GroupNormalizationLayer, MemoryIsFreedOnTheStreamOfItsLastUse) {
  struct Recorder final : nn::Allocator {
    Status allocate(void** ptr, std::size_t bytes, cudaStream_t stream) override {
      return nn::default_allocator().allocate(ptr, bytes, stream);
    }
    void deallocate(void* ptr, std::size_t bytes, cudaStream_t stream) noexcept override {
      freed.push_back({ptr, stream});
      nn::default_allocator().deallocate(ptr, bytes, stream);
    }
    std::vector<std::pair<void*, cudaStream_t>> freed;
  } recorder;
  cudaStream_t a = nullptr;
  cudaStream_t b = nullptr;
  ASSERT_EQ(cudaStreamCreate(&a), cudaSuccess);
  ASSERT_EQ(cudaStreamCreate(&b), cudaSuccess);
  DeviceBuffer<float> x(4 * 6 * 8);
  x.fill_bytes(0);
  {
    nn::GroupNormalizationOptions o;
    o.groups = 2;
    nn::GroupNormalization layer(o, "gn");
    nn::CallContext ctx;
    ctx.allocator = &recorder;
    nn::LayerOutput out;
    ctx.stream = a;
    ASSERT_EQ(layer.call(ctx, view_of(x.get(), DType::kFloat32, Shape{2, 6, 8}), {}, &out), Status::kSuccess)
        << culayers::last_error_message();
    const void* first = out.y.data();
    ASSERT_NE(layer.find_weight("gamma"), nullptr);
    EXPECT_EQ(layer.find_weight("gamma")->value.release_stream(), a);
    ctx.stream = b;
    ASSERT_EQ(layer.call(ctx, view_of(x.get(), DType::kFloat32, Shape{2, 6, 8}), {}, &out), Status::kSuccess)
        << culayers::last_error_message();
    EXPECT_EQ(out.y.data(), first) << "same shape: the buffer is reused";
    EXPECT_EQ(layer.find_weight("gamma")->value.release_stream(), b);
    EXPECT_EQ(layer.find_weight("beta")->value.release_stream(), b);
    ctx.stream = a;
    ASSERT_EQ(layer.call(ctx, view_of(x.get(), DType::kFloat32, Shape{4, 6, 8}), {}, &out), Status::kSuccess)
        << culayers::last_error_message();
    ASSERT_EQ(recorder.freed.size(), 1u);
    EXPECT_EQ(recorder.freed[0].first, first);
    EXPECT_EQ(recorder.freed[0].second, a) << "the replaced output is freed on the replacing call's stream";
    EXPECT_EQ(layer.find_weight("gamma")->value.release_stream(), a);
    recorder.freed.clear();
    ASSERT_EQ(cudaStreamSynchronize(b), cudaSuccess);
    // Destroyed here: the output buffer goes back through the call's allocator, on stream a.
  }
  ASSERT_EQ(recorder.freed.size(), 1u);
  EXPECT_EQ(recorder.freed[0].second, a);
  ASSERT_EQ(cudaStreamSynchronize(a), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(a), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(b), cudaSuccess);
}

} // namespace
