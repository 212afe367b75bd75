// The BatchNormalization layer (culayers/nn/normalization.hpp): a hand-worked padded batch (training, the
// update, then inference), random training calls against the double reference with and without masks (NaN
// in the padded steps), k training steps against the closed form of the moving averages, frozen layers and
// the inference phase run no update, fewer than 2 valid positions leave the moving statistics alone, graph
// capture of a training call with its update replayed N times, channels-first and middle channel axes
// (training against the reference, inference, empty planes), config round trips, bad configs, build
// errors and incompatible inputs.
#include "culayers/masked_reduce.hpp"
#include "culayers/nn/normalization.hpp"
#include "culayers/nn/safetensors.hpp"
#include "culayers/nn/sequential.hpp"

#include "tests/reference/batch_norm_reference.hpp"
#include "tests/reference/group_norm_reference.hpp"
#include "tests/nn/nn_test_util.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace nn = culayers::nn;
namespace bn = culayers::test::bn;
namespace gn = culayers::test::gn;
namespace nn_util = culayers::test::nn_util;
using culayers::ConstTensorView;
using culayers::DType;
using culayers::Shape;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::nn_util::download;
using culayers::test::nn_util::seed_note;
using culayers::test::nn_util::shape_str;
using culayers::test::nn_util::view_of;
using culayers::test::nn_util::weight_floats;
using gn::Dtype;
using nn::Json;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ---- hand-worked ------------------------------------------------------------------------------------------

TEST(BatchNormalizationLayer, HandWorkedPaddedBatch) {
  // B = 2, T = 3, C = 2, step 2 of sample 0 padded (holding NaN and 1000). epsilon 1, gamma 3, beta 0.5,
  // momentum 0.5. Valid values: channel 0 {1, 3, 5, 7, 9}, channel 1 {9, 1, 7, 3, 5}: mean 5, biased
  // variance 8 each, so rstd = 1 / sqrt(8 + 1) = 1/3 and y = (x - 5) / 3 * 3 + 0.5 = x - 4.5, padded step
  // included: (NaN, 995.5).
  const float nan = std::nanf("");
  DeviceBuffer<float> x(std::vector<float>{1, 9, 3, 1, nan, 1000, 5, 7, 7, 3, 9, 5});
  DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>{1, 1, 0, 1, 1, 1});
  nn::BatchNormalizationOptions o;
  o.momentum = 0.5;
  o.epsilon = 1.0;
  o.gamma_initializer = nn::Initializer::constant(3.0);
  o.beta_initializer = nn::Initializer::constant(0.5);
  nn::BatchNormalization layer(o, "bn");
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out;
  const ConstTensorView xv = view_of(x.get(), DType::kFloat32, Shape{2, 3, 2});
  const ConstTensorView mv = view_of(mask.get(), DType::kUInt8, Shape{2, 3});
  ASSERT_EQ(layer.call(ctx, xv, mv, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(out.mask.data(), mask.get()) << "the mask passes through";
  const std::vector<float> want{-3.5f, 4.5f, -1.5f, -3.5f, nan, 995.5f, 0.5f, 2.5f, 2.5f, -1.5f, 4.5f, 0.5f};
  std::vector<float> y = download<float>(out.y);
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(y[i])) << i;
    } else { // float32 statistics and rsqrtf: a few ulps of the largest term (|x - mean| <= 995)
      EXPECT_NEAR(y[i], want[i], 16.0 * gn::kU32 * (std::fabs(want[i]) + 4.0)) << i;
    }
  }
  // The update with n = 5 valid positions: unbiased variance 8 * 5 / 4 = 10;
  // moving_mean = 0 * 0.5 + 5 * 0.5 = 2.5, moving_variance = 1 * 0.5 + 10 * 0.5 = 5.5.
  const std::vector<float> mm = weight_floats(layer, "moving_mean");
  const std::vector<float> mvar = weight_floats(layer, "moving_variance");
  for (int c = 0; c < 2; ++c) {
    EXPECT_NEAR(mm[c], 2.5f, 8.0 * gn::kU32 * 5.0) << c;
    EXPECT_NEAR(mvar[c], 5.5f, 8.0 * gn::kU32 * 10.0) << c;
  }
  // Inference: the moving statistics, y = (x - 2.5) / sqrt(5.5 + 1) * 3 + 0.5 everywhere.
  ctx.phase = nn::Phase::kInference;
  ASSERT_EQ(layer.call(ctx, xv, mv, &out), Status::kSuccess) << culayers::last_error_message();
  y = download<float>(out.y);
  const std::vector<float> xs{1, 9, 3, 1, nan, 1000, 5, 7, 7, 3, 9, 5};
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double w = (xs[i] - 2.5) / std::sqrt(6.5) * 3.0 + 0.5;
    if (std::isnan(xs[i])) {
      EXPECT_TRUE(std::isnan(y[i])) << i;
    } else {
      EXPECT_NEAR(y[i], w, 16.0 * gn::kU32 * (std::fabs(w) + 4.0)) << i;
    }
  }
  EXPECT_TRUE(same_bits(weight_floats(layer, "moving_mean"), mm)) << "inference updates nothing";
}

// ---- random training calls against the reference
// -----------------------------------------------------------

/// The valid rows of a [B, T] mask, or empty (every row).
struct Batch {
  Shape shape;
  std::vector<std::uint8_t> mask; // [B * T] for rank 3, or empty
  bool nan_in_padding = true;     // NaN in every masked step
  int axis = -1;                  // the channel axis (no mask unless it is the last)
};

/// Error bound of y for the layer's float32 statistics (the group-norm error model, per channel) and the
/// apply's epilogue, then one rounding to T.
template <class T>
double y_tolerance(const gn::GroupError& e, double xhat, double gamma, double beta, double want) {
  const double tol_f = gn::pre_error(e, xhat, gamma, beta);
  return tol_f + gn::ulp<T>(std::fabs(want) + tol_f);
}

struct Expected {
  bn::Moments m;
  std::vector<gn::GroupError> err; // per channel
};

/// x as [rows, C, inner]; `valid` (a mask over rows) only with inner = 1. The error model is the group-norm
/// one for a group of the channel's whole count: channels first, the layer's float32 statistics are per
/// (row, channel) plane of inner elements, merged in double, so their error is at most a plane's, which is
/// below that of one group of rows * inner elements.
Expected expected_moments(const std::vector<double>& x, std::int64_t rows, std::int64_t channels,
                          std::int64_t inner, const std::vector<std::uint8_t>& valid, double epsilon) {
  Expected e;
  e.m = inner == 1 ? bn::moments(x, rows, channels, valid)
                   : bn::moments_channels_first(x, rows, channels, inner);
  const auto nc = static_cast<std::size_t>(channels);
  const auto ni = static_cast<std::size_t>(inner);
  std::vector<double> max_abs(nc, 0.0);
  std::vector<double> max_dev(nc, 0.0);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::size_t r = i / (nc * ni);
    const std::size_t c = (i / ni) % nc;
    if (valid.empty() || valid[r] != 0) {
      max_abs[c] = std::max(max_abs[c], std::fabs(x[i]));
      max_dev[c] = std::max(max_dev[c], std::fabs(x[i] - e.m.mean[c]));
    }
  }
  e.err.resize(nc);
  for (std::size_t c = 0; c < nc; ++c) {
    e.err[c] = gn::forward_group_error(e.m.count, max_abs[c], max_dev[c],
                                       1.0 / std::sqrt(e.m.variance[c] + epsilon));
  }
  return e;
}

template <class T>
void check_training_call(std::mt19937_64& rng, const Batch& b) {
  const char* dt = Dtype<T>::kName;
  const std::string what = std::string(dt) + " " + shape_str(b.shape) + " axis " + std::to_string(b.axis) +
                           (b.mask.empty() ? "" : " mask") + "; " + seed_note();
  const int rank = b.shape.rank();
  const int axis = b.axis < 0 ? b.axis + rank : b.axis;
  const std::int64_t channels = b.shape.dim(axis);
  const std::int64_t rows = b.shape.product(0, axis);
  const std::int64_t inner = b.shape.product(axis + 1, rank);
  const auto nc = static_cast<std::size_t>(channels);
  const auto ni = static_cast<std::size_t>(inner);
  nn::BatchNormalizationOptions o;
  o.axis = b.axis;
  o.momentum = 0.9;
  o.gamma_initializer = nn::Initializer::random_normal(1.0, 0.5, rng());
  o.beta_initializer = nn::Initializer::random_normal(0.0, 0.5, rng());
  o.moving_mean_initializer = nn::Initializer::random_normal(0.0, 1.0, rng());
  o.moving_variance_initializer = nn::Initializer::random_uniform(0.5, 2.0, rng());
  nn::BatchNormalization layer(o, "", Dtype<T>::kDType);
  std::vector<T> x = gn::normal_values<T>(rng, static_cast<std::size_t>(b.shape.numel()), 1.5, 2.0);
  for (std::size_t i = 0; i < x.size() && !b.mask.empty() && b.nan_in_padding; ++i) {
    if (b.mask[i / nc] == 0) {
      x[i] = Dtype<T>::from_double(std::nan(""));
    }
  }
  DeviceBuffer<T> d_x(x);
  DeviceBuffer<std::uint8_t> d_mask(b.mask);
  const ConstTensorView mv =
      b.mask.empty() ? ConstTensorView{}
                     : view_of(d_mask.get(), DType::kUInt8, Shape{b.shape.dim(0), b.shape.dim(1)});
  ASSERT_EQ(layer.build(b.shape), Status::kSuccess) << what << ": " << culayers::last_error_message();
  const std::vector<float> mm0 = weight_floats(layer, "moving_mean");
  const std::vector<float> mv0 = weight_floats(layer, "moving_variance");
  const std::vector<float> gamma = weight_floats(layer, "gamma");
  const std::vector<float> beta = weight_floats(layer, "beta");
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, view_of(d_x.get(), Dtype<T>::kDType, b.shape), mv, &out), Status::kSuccess)
      << what << ": " << culayers::last_error_message();
  ASSERT_EQ(out.y.shape(), b.shape);
  const std::vector<T> y = download<T>(out.y);
  const std::vector<float> mm = weight_floats(layer, "moving_mean");
  const std::vector<float> mvar = weight_floats(layer, "moving_variance");

  std::vector<double> xd(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    xd[i] = Dtype<T>::to_double(x[i]);
  }
  const double eps = static_cast<double>(1e-3f);
  const Expected e = expected_moments(xd, rows, channels, inner, b.mask, eps);
  int failures = 0;
  for (std::size_t i = 0; i < x.size() && failures < 5; ++i) {
    const std::size_t c = (i / ni) % nc;
    const double got = Dtype<T>::to_double(y[i]);
    if (std::isnan(xd[i])) {
      if (!std::isnan(got)) {
        ADD_FAILURE() << what << ": y[" << i << "] = " << got << " for a NaN input, want NaN";
        ++failures;
      }
      continue;
    }
    const double rstd = 1.0 / std::sqrt(e.m.variance[c] + eps);
    const double xhat = (xd[i] - e.m.mean[c]) * rstd;
    const double want = xhat * gamma[c] + beta[c];
    const double tol = y_tolerance<T>(e.err[c], xhat, gamma[c], beta[c], want);
    if (!(std::fabs(got - want) <= tol)) {
      ADD_FAILURE() << what << ": y[" << i << "] (channel " << c << ") = " << got << ", want " << want
                    << " +- " << tol;
      ++failures;
    }
  }
  // The moving statistics: one step of the moving average from the batch statistics, which carry the
  // float32 statistics' error (mean absolute, variance relative 2 x rstd's), plus a few roundings.
  const double m = 0.9;
  const double n = static_cast<double>(e.m.count);
  for (std::size_t c = 0; c < nc; ++c) {
    ASSERT_TRUE(std::isfinite(mm[c]) && std::isfinite(mvar[c])) << what << ": NaN reached the statistics";
    if (e.m.count < 2) {
      EXPECT_EQ(mm[c], mm0[c]) << what;
      EXPECT_EQ(mvar[c], mv0[c]) << what;
      continue;
    }
    const double want_m = mm0[c] * m + e.m.mean[c] * (1.0 - m);
    const double unbiased = e.m.variance[c] * n / (n - 1.0);
    const double want_v = mv0[c] * m + unbiased * (1.0 - m);
    const double tol_m =
        (1.0 - m) * e.err[c].mean_abs + 8.0 * gn::kU32 * (std::fabs(mm0[c]) + std::fabs(e.m.mean[c]));
    const double tol_v =
        (1.0 - m) * unbiased * 2.0 * e.err[c].rstd_rel + 8.0 * gn::kU32 * (std::fabs(mv0[c]) + unbiased);
    EXPECT_NEAR(mm[c], want_m, tol_m) << what << " channel " << c;
    EXPECT_NEAR(mvar[c], want_v, tol_v) << what << " channel " << c;
  }
}

/// A [B, T] mask with about 60% valid steps and at least one valid step overall.
std::vector<std::uint8_t> random_mask(std::mt19937_64& rng, std::int64_t batch, std::int64_t steps) {
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(batch * steps));
  std::bernoulli_distribution keep(0.6);
  for (auto& v : mask) {
    v = keep(rng) ? 1 : 0;
  }
  mask[0] = 7; // any nonzero byte is valid
  return mask;
}

TEST(BatchNormalizationLayer, TrainingCallsMatchReference) {
  auto rng = rng_for_test();
  const Shape shapes[] = {Shape{6, 5}, Shape{1, 3}, Shape{3, 7, 6}, Shape{2, 3, 4, 5}, Shape{4, 9, 33}};
  for (const Shape& s : shapes) {
    check_training_call<float>(rng, Batch{s, {}});
    check_training_call<__nv_bfloat16>(rng, Batch{s, {}});
  }
  check_training_call<__half>(rng, Batch{Shape{5, 4, 7}, {}});
  for (const Shape& s : {Shape{3, 7, 6}, Shape{4, 9, 33}, Shape{2, 40, 3}}) {
    check_training_call<float>(rng, Batch{s, random_mask(rng, s.dim(0), s.dim(1))});
    check_training_call<__nv_bfloat16>(rng, Batch{s, random_mask(rng, s.dim(0), s.dim(1))});
  }
}

TEST(BatchNormalizationLayer, ChannelsFirstAndMiddleAxesMatchReference) {
  auto rng = rng_for_test();
  // Channels first (axis 1) of rank 3 to 5, including planes shorter than a vector, one long plane per
  // channel (the moments' split path), a middle axis of rank 4 (rows = B x 3), spatial 1 x 1 (inner 1:
  // the channels-last path), and a batch of one.
  const Batch batches[] = {{Shape{4, 3, 5}, {}, true, 1},    {Shape{2, 6, 4, 5}, {}, true, 1},
                           {Shape{1, 3, 4099}, {}, true, 1}, {Shape{3, 2, 3, 2, 2}, {}, true, 1},
                           {Shape{2, 3, 5, 4}, {}, true, 2}, {Shape{3, 5, 1, 1}, {}, true, 1},
                           {Shape{1, 7, 2}, {}, true, 1},    {Shape{5, 33, 3}, {}, true, 1}};
  for (const Batch& b : batches) {
    check_training_call<float>(rng, b);
    check_training_call<__nv_bfloat16>(rng, b);
  }
  check_training_call<__half>(rng, Batch{Shape{3, 4, 6, 6}, {}, true, 1});
}

TEST(BatchNormalizationLayer, ChannelsFirstInferenceUsesMovingStatisticsAndEmptyPlanes) {
  // Inference of a channels-first layer: y = (x - moving_mean[c]) / sqrt(moving_variance[c] + eps) * gamma[c]
  // + beta[c] with channel (i / HW) % C; then empty spatial axes (inner = 0) and an empty batch in training.
  auto rng = rng_for_test();
  nn::BatchNormalizationOptions o;
  o.axis = 1;
  o.gamma_initializer = nn::Initializer::random_normal(1.0, 0.5, rng());
  o.beta_initializer = nn::Initializer::random_normal(0.0, 0.5, rng());
  o.moving_mean_initializer = nn::Initializer::random_normal(0.0, 1.0, rng());
  o.moving_variance_initializer = nn::Initializer::random_uniform(0.5, 2.0, rng());
  nn::BatchNormalization layer(o, "bn_cf");
  const Shape shape{2, 3, 7};
  const std::vector<float> x = gn::normal_values<float>(rng, 42, 0.5, 2.0);
  DeviceBuffer<float> d_x(x);
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kInference;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, view_of(d_x.get(), DType::kFloat32, shape), {}, &out), Status::kSuccess)
      << culayers::last_error_message();
  const std::vector<float> y = download<float>(out.y);
  bn::Params p;
  for (const char* w : {"moving_mean", "moving_variance", "gamma", "beta"}) {
    const std::vector<float> v = weight_floats(layer, w);
    std::vector<double>& dst = std::string(w) == "moving_mean"       ? p.mean
                               : std::string(w) == "moving_variance" ? p.variance
                               : std::string(w) == "gamma"           ? p.gamma
                                                                     : p.beta;
    dst.assign(v.begin(), v.end());
  }
  std::vector<double> xd(x.begin(), x.end());
  const std::vector<double> want = bn::apply(p, xd, 7);
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(y[i], want[i], bn::apply_tolerance<float>(p, (i / 7) % 3, xd[i], want[i])) << i;
  }
  // Empty spatial axes and an empty batch (training: the call runs the update op): nothing to normalize,
  // the batch statistics are over no element (count 0), so the moving statistics stay as they are.
  ctx.phase = nn::Phase::kTraining;
  const std::vector<float> mv0 = weight_floats(layer, "moving_variance");
  const std::vector<float> mm0 = weight_floats(layer, "moving_mean");
  ASSERT_EQ(layer.call(ctx, view_of(d_x.get(), DType::kFloat32, Shape{2, 3, 0}), {}, &out), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(out.y.shape(), (Shape{2, 3, 0}));
  ASSERT_EQ(layer.call(ctx, view_of(d_x.get(), DType::kFloat32, Shape{0, 3, 7}), {}, &out), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_TRUE(same_bits(weight_floats(layer, "moving_variance"), mv0));
  EXPECT_TRUE(same_bits(weight_floats(layer, "moving_mean"), mm0));
}

TEST(BatchNormalizationLayer, FewerThanTwoValidPositionsUpdateNothing) {
  auto rng = rng_for_test();
  // One valid step: the batch variance is 0 (the step normalizes to beta) and nothing is updated.
  std::vector<std::uint8_t> one(2 * 4, 0);
  one[5] = 1;
  check_training_call<float>(rng, Batch{Shape{2, 4, 3}, one});
  // Fully masked: mean 0 and variance 0 (y = x / sqrt(epsilon) * gamma + beta), nothing updated.
  check_training_call<float>(rng, Batch{Shape{2, 4, 3}, std::vector<std::uint8_t>(8, 0), false});
  check_training_call<float>(rng, Batch{Shape{2, 4, 3}, std::vector<std::uint8_t>(8, 0), true});
  // A batch of one row (rank 2) and an empty batch.
  check_training_call<float>(rng, Batch{Shape{1, 4}, {}});
  nn::BatchNormalization layer(nn::BatchNormalizationOptions{}, "bn_empty");
  DeviceBuffer<float> x(4);
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, view_of(x.get(), DType::kFloat32, Shape{1, 4}), {}, &out), Status::kSuccess);
  const std::vector<float> before = weight_floats(layer, "moving_variance");
  ASSERT_EQ(layer.call(ctx, view_of(x.get(), DType::kFloat32, Shape{0, 4}), {}, &out), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(out.y.shape(), (Shape{0, 4}));
  EXPECT_TRUE(same_bits(weight_floats(layer, "moving_variance"), before));
}

TEST(BatchNormalizationLayer, MovingStatisticsAfterKStepsMatchTheClosedFormThenInferenceUsesThem) {
  auto rng = rng_for_test();
  const Shape shape{3, 8, 6};
  const std::int64_t rows = 24;
  const std::size_t nc = 6;
  const double m = 0.8;
  nn::BatchNormalizationOptions o;
  o.momentum = m;
  o.gamma_initializer = nn::Initializer::random_normal(1.0, 0.3, rng());
  o.beta_initializer = nn::Initializer::random_normal(0.0, 0.3, rng());
  nn::BatchNormalization layer(o, "bn_steps");
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out;
  DeviceBuffer<float> d_x(static_cast<std::size_t>(shape.numel()));
  DeviceBuffer<std::uint8_t> d_mask(static_cast<std::size_t>(rows));
  const ConstTensorView xv = view_of(d_x.get(), DType::kFloat32, shape);
  const ConstTensorView mv = view_of(d_mask.get(), DType::kUInt8, Shape{3, 8});
  // Closed form: moving_k = m^k moving_0 + sum over updating steps j of (1 - m) m^(k-1-j) batch_j, with the
  // steps that have fewer than 2 valid positions skipped (they leave the average alone).
  std::vector<double> want_m(nc, 0.0);
  std::vector<double> want_v(nc, 1.0);
  std::vector<double> tol_m(nc, 0.0);
  std::vector<double> tol_v(nc, 0.0);
  const int kSteps = 5;
  for (int k = 0; k < kSteps; ++k) {
    std::vector<float> x =
        gn::normal_values<float>(rng, static_cast<std::size_t>(shape.numel()), k - 1.0, 1.0 + k);
    std::vector<std::uint8_t> mask = random_mask(rng, 3, 8);
    if (k == 2) {
      std::fill(mask.begin(), mask.end(), 0);
      mask[3] = 1; // one valid position: no update this step
    }
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (mask[i / nc] == 0) {
        x[i] = std::nanf("");
      }
    }
    d_x.upload(x);
    d_mask.upload(mask);
    ASSERT_EQ(layer.call(ctx, xv, mv, &out), Status::kSuccess) << culayers::last_error_message();
    const Expected e = expected_moments(gn::widen(x), rows, static_cast<std::int64_t>(nc), 1, mask, 1e-3);
    if (e.m.count < 2) {
      continue;
    }
    const double n = static_cast<double>(e.m.count);
    for (std::size_t c = 0; c < nc; ++c) {
      const double unbiased = e.m.variance[c] * n / (n - 1.0);
      want_m[c] = want_m[c] * m + e.m.mean[c] * (1.0 - m);
      want_v[c] = want_v[c] * m + unbiased * (1.0 - m);
      // Earlier errors decay by m per step; each step adds its statistics' error and a few roundings.
      tol_m[c] = tol_m[c] * m + (1.0 - m) * e.err[c].mean_abs +
                 8.0 * gn::kU32 * (std::fabs(want_m[c]) + std::fabs(e.m.mean[c]));
      tol_v[c] = tol_v[c] * m + (1.0 - m) * unbiased * 2.0 * e.err[c].rstd_rel +
                 8.0 * gn::kU32 * (std::fabs(want_v[c]) + unbiased);
    }
  }
  const std::vector<float> mm = weight_floats(layer, "moving_mean");
  const std::vector<float> mvar = weight_floats(layer, "moving_variance");
  for (std::size_t c = 0; c < nc; ++c) {
    EXPECT_NEAR(mm[c], want_m[c], tol_m[c]) << "channel " << c << "; " << seed_note();
    EXPECT_NEAR(mvar[c], want_v[c], tol_v[c]) << "channel " << c << "; " << seed_note();
  }
  // Inference normalizes with exactly these moving statistics.
  const std::vector<float> x =
      gn::normal_values<float>(rng, static_cast<std::size_t>(shape.numel()), 0.0, 2.0);
  d_x.upload(x);
  ctx.phase = nn::Phase::kInference;
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
  const std::vector<float> y = download<float>(out.y);
  bn::Params p;
  p.mean = gn::widen(mm);
  p.variance = gn::widen(mvar);
  p.gamma = gn::widen(weight_floats(layer, "gamma"));
  p.beta = gn::widen(weight_floats(layer, "beta"));
  const std::vector<double> want = bn::apply(p, gn::widen(x));
  for (std::size_t i = 0; i < x.size(); ++i) {
    ASSERT_NEAR(y[i], want[i], bn::apply_tolerance<float>(p, i % nc, x[i], want[i])) << i;
  }
  EXPECT_TRUE(same_bits(weight_floats(layer, "moving_mean"), mm)) << "inference updates nothing";
}

TEST(BatchNormalizationLayer, FrozenLayersAndTheInferencePhaseUseMovingStatisticsAndUpdateNothing) {
  auto rng = rng_for_test();
  const Shape shape{4, 5, 7};
  const std::vector<float> x =
      gn::normal_values<float>(rng, static_cast<std::size_t>(shape.numel()), 2.0, 3.0);
  DeviceBuffer<float> d_x(x);
  const ConstTensorView xv = view_of(d_x.get(), DType::kFloat32, shape);
  nn::BatchNormalization layer(nn::BatchNormalizationOptions{}, "bn_frozen");
  EXPECT_EQ(layer.update_count(), 0u);
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(layer.update_count(), 1u);
  const std::vector<float> y_train = download<float>(out.y);
  const std::vector<float> mm = weight_floats(layer, "moving_mean");
  const std::vector<float> mvar = weight_floats(layer, "moving_variance");
  ctx.phase = nn::Phase::kInference;
  nn_util::poison(out);
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
  const std::vector<float> y_inference = download<float>(out.y);
  EXPECT_FALSE(same_bits(y_inference, y_train))
      << "one step of momentum 0.99 is far from the batch statistics";
  EXPECT_TRUE(same_bits(weight_floats(layer, "moving_mean"), mm));
  EXPECT_TRUE(same_bits(weight_floats(layer, "moving_variance"), mvar));
  // Frozen (Keras): the training phase normalizes with the moving statistics and runs no update.
  layer.set_trainable(false);
  EXPECT_EQ(layer.trainable_weights().size(), 0u);
  ctx.phase = nn::Phase::kTraining;
  nn_util::poison(out); // the same buffer is reused: the frozen call must rewrite it
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_TRUE(same_bits(download<float>(out.y), y_inference));
  EXPECT_TRUE(same_bits(weight_floats(layer, "moving_mean"), mm));
  EXPECT_TRUE(same_bits(weight_floats(layer, "moving_variance"), mvar));
  // Trainable again: the update runs.
  layer.set_trainable(true);
  ASSERT_EQ(layer.call(ctx, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_TRUE(same_bits(download<float>(out.y), y_train));
  EXPECT_FALSE(same_bits(weight_floats(layer, "moving_mean"), mm));
}

// A moving-variance initializer that can draw a negative value is refused at build by its kind and
// parameters, whatever it would draw (an unseeded RandomUniform(-0.05, 1.5) made one config build or fail
// depending on the draw); the ones that cannot are built.
TEST(BatchNormalizationLayer, MovingVarianceInitializerThatMayDrawNegativesIsRefused) {
  for (const nn::Initializer& bad :
       {nn::Initializer::random_uniform(-0.05, 1.5), nn::Initializer::random_uniform(-0.05, 1.5, 7),
        nn::Initializer::random_normal(1.0, 0.1, 3), nn::Initializer::random_normal(-1.0, 0.0),
        nn::Initializer::glorot_uniform(5)}) {
    for (int attempt = 0; attempt < 8; ++attempt) { // the same outcome every time, seeded or not
      nn::BatchNormalizationOptions o;
      o.moving_variance_initializer = bad;
      nn::BatchNormalization layer(o, "bn");
      EXPECT_EQ(layer.build(Shape{2, 40}), Status::kErrorInvalidValue) << bad.to_json().dump();
      culayers::test::expect_message_contains("moving_variance_initializer", bad.to_json().dump());
      EXPECT_TRUE(layer.weights().empty());
    }
  }
  for (const nn::Initializer& good :
       {nn::Initializer::ones(), nn::Initializer::constant(0.0), nn::Initializer::random_uniform(0.0, 2.0),
        nn::Initializer::random_normal(1.0, 0.0)}) {
    nn::BatchNormalizationOptions o;
    o.moving_variance_initializer = good;
    nn::BatchNormalization layer(o, "bn");
    EXPECT_EQ(layer.build(Shape{2, 40}), Status::kSuccess)
        << good.to_json().dump() << ": " << culayers::last_error_message();
  }
}

TEST(BatchNormalizationLayer, WeightsFollowKerasOrderAndTrainability) {
  struct Want {
    bool center, scale;
    std::vector<std::string> names;
  };
  for (const Want& w : {Want{true, true, {"gamma", "beta", "moving_mean", "moving_variance"}},
                        Want{false, true, {"gamma", "moving_mean", "moving_variance"}},
                        Want{true, false, {"beta", "moving_mean", "moving_variance"}},
                        Want{false, false, {"moving_mean", "moving_variance"}}}) {
    nn::BatchNormalizationOptions o;
    o.center = w.center;
    o.scale = w.scale;
    nn::BatchNormalization layer(o, "", DType::kBFloat16);
    EXPECT_EQ(layer.class_name(), "BatchNormalization");
    EXPECT_EQ(layer.name().rfind("batch_normalization", 0), 0u) << layer.name();
    EXPECT_TRUE(layer.supports_masking());
    ASSERT_EQ(layer.build(Shape{2, 3, 5}), Status::kSuccess) << culayers::last_error_message();
    ASSERT_EQ(layer.weights().size(), w.names.size());
    for (std::size_t i = 0; i < w.names.size(); ++i) {
      const nn::Weight& wt = *layer.weights()[i];
      EXPECT_EQ(wt.name, w.names[i]);
      EXPECT_EQ(wt.value.shape(), (Shape{5}));
      EXPECT_EQ(wt.value.dtype(), DType::kFloat32);
      EXPECT_EQ(wt.trainable, wt.name == "gamma" || wt.name == "beta") << wt.name;
    }
    for (const float v : weight_floats(layer, "moving_mean")) {
      EXPECT_EQ(v, 0.0f);
    }
    for (const float v : weight_floats(layer, "moving_variance")) {
      EXPECT_EQ(v, 1.0f);
    }
  }
}

// Loaded moving statistics must be usable: a NaN or infinite mean, a negative, NaN or infinite variance is
// refused by name before anything is written; gamma and beta are loaded as given.
TEST(BatchNormalizationLayer, UnusableMovingStatisticsAreRefusedOnLoad) {
  nn::Sequential model("m");
  ASSERT_EQ(model.add(std::make_unique<nn::BatchNormalization>(nn::BatchNormalizationOptions{}, "bn")),
            Status::kSuccess);
  ASSERT_EQ(model.build(Shape{2, 3, 4}), Status::kSuccess) << culayers::last_error_message();
  nn::SafetensorsFile good;
  ASSERT_EQ(model.get_weights(&good), Status::kSuccess);
  auto with = [&](const std::string& weight, std::size_t channel, float v) {
    nn::SafetensorsFile f = good;
    for (nn::SafetensorsTensor& t : f.tensors) {
      if (t.name == "bn/" + weight) {
        std::memcpy(t.data.data() + channel * sizeof(float), &v, sizeof(v));
      }
    }
    return f;
  };
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const auto& [weight, v] : {std::pair<const char*, float>{"moving_variance", -0.5f},
                                  {"moving_variance", nan},
                                  {"moving_variance", inf},
                                  {"moving_mean", nan},
                                  {"moving_mean", -inf}}) {
    EXPECT_EQ(model.set_weights(with(weight, 2, v)), Status::kErrorInvalidValue) << weight << " " << v;
    const std::string msg = culayers::last_error_message();
    EXPECT_NE(msg.find(std::string("bn: ") + weight + ": channel 2"), std::string::npos) << msg;
    EXPECT_EQ(weight_floats(*model.find_layer("bn"), "moving_variance"), std::vector<float>(4, 1.0f));
    EXPECT_EQ(weight_floats(*model.find_layer("bn"), "moving_mean"), std::vector<float>(4, 0.0f));
  }
  // A zero variance, large values and non-finite gamma / beta load.
  EXPECT_EQ(model.set_weights(with("moving_variance", 1, 0.0f)), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(model.set_weights(with("moving_mean", 0, 3e38f)), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(model.set_weights(with("gamma", 0, nan)), Status::kSuccess) << culayers::last_error_message();
}

// ---- graph capture
// --------------------------------------------------------------------------------------------

// A training-phase call and its update captured once and replayed N times give exactly the moving
// statistics (and output) of N eager calls: the call allocates nothing once warmed up, and the update reads
// the batch statistics and the valid count on the device.
TEST(BatchNormalizationLayer, CapturedTrainingCallReplaysLikeEagerCalls) {
  auto rng = rng_for_test();
  // Long enough along the reduced axis for the moments' split path (its workspace comes from a slot).
  const Shape shape{4, 1024, 8};
  const std::vector<float> x =
      gn::normal_values<float>(rng, static_cast<std::size_t>(shape.numel()), 1.0, 2.0);
  std::vector<std::uint8_t> mask = random_mask(rng, 4, 1024);
  DeviceBuffer<float> d_x(x);
  DeviceBuffer<std::uint8_t> d_mask(mask);
  const ConstTensorView xv = view_of(d_x.get(), DType::kFloat32, shape);
  const ConstTensorView mv = view_of(d_mask.get(), DType::kUInt8, Shape{4, 1024});
  {
    DeviceBuffer<float> stats(16);
    culayers::masked_reduce::MaskedReduceArgs m;
    m.op = culayers::masked_reduce::ReduceOp::kMoments;
    m.x = d_x.get();
    m.outer = 1;
    m.reduce = 4 * 1024;
    m.inner = 8;
    m.validity = culayers::masked_reduce::Validity::kMask;
    m.mask = d_mask.get();
    m.mean = stats.get();
    m.variance = stats.get() + 8;
    EXPECT_EQ(culayers::masked_reduce::selected_path(m), culayers::masked_reduce::Path::kSplit);
  }
  nn::BatchNormalizationOptions o;
  o.momentum = 0.7;
  o.gamma_initializer = nn::Initializer::random_normal(1.0, 0.2, 11);
  const culayers::test::Stream stream_owner; // before the layers: they free their buffers on it
  nn::BatchNormalization captured(o, "bn_graph");
  nn::BatchNormalization eager(o, "bn_eager");
  const cudaStream_t stream = stream_owner.get();
  nn::CallContext ctx;
  ctx.stream = stream;
  nn::LayerOutput out;
  // Warm-up in the inference phase: builds and acquires every buffer of both phases; updates nothing.
  ctx.phase = nn::Phase::kInference;
  ASSERT_EQ(captured.call(ctx, xv, mv, &out), Status::kSuccess) << culayers::last_error_message();
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream));
  const std::vector<float> mm0 = weight_floats(captured, "moving_mean");

  ctx.phase = nn::Phase::kTraining;
  cudaGraph_t graph = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const Status cs = captured.call(ctx, xv, mv, &out);
  CULAYERS_ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  ASSERT_EQ(cs, Status::kSuccess) << culayers::last_error_message();
  const ConstTensorView y_captured = out.y;
  cudaGraphExec_t exec = nullptr;
  CULAYERS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  EXPECT_TRUE(same_bits(weight_floats(captured, "moving_mean"), mm0)) << "capture must not run anything";

  constexpr int kReplays = 5;
  for (int k = 0; k < kReplays; ++k) {
    CULAYERS_ASSERT_CUDA(cudaGraphLaunch(exec, stream));
    ASSERT_EQ(eager.call(ctx, xv, mv, &out), Status::kSuccess) << culayers::last_error_message();
  }
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream));
  const std::pair<const char*, std::vector<float>> initial[] = {
      {"moving_mean", mm0}, {"moving_variance", std::vector<float>(8, 1.0f)}};
  for (const auto& [w, start] : initial) {
    const std::vector<float> a = weight_floats(captured, w);
    const std::vector<float> b = weight_floats(eager, w);
    EXPECT_TRUE(same_bits(a, b)) << w << " after " << kReplays << " replays vs eager calls";
    EXPECT_FALSE(same_bits(a, start)) << w << " never moved";
  }
  const std::vector<float> ya = download<float>(y_captured);
  const std::vector<float> yb = download<float>(out.y);
  EXPECT_TRUE(same_bits(ya, yb)) << "outputs of the last replay and the last eager call";
  CULAYERS_ASSERT_CUDA(cudaGraphExecDestroy(exec));
  CULAYERS_ASSERT_CUDA(cudaGraphDestroy(graph));
}

// ---- errors -----------------------------------------------------------------------------------------------

void expect_call_error(nn::BatchNormalization& layer, const ConstTensorView& x, const ConstTensorView& mask,
                       Status want, const std::string& arg) {
  nn::CallContext ctx;
  ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput out;
  int sentinel = 0;
  out.y = ConstTensorView::contiguous(&sentinel, DType::kFloat32, Shape{1});
  // A built layer's weights (the moving statistics above all: this is a training-phase call) must not move.
  std::vector<std::pair<std::string, std::vector<float>>> before;
  for (const auto& w : layer.weights()) {
    before.emplace_back(w->name, weight_floats(layer, w->name.c_str()));
  }
  EXPECT_EQ(layer.call(ctx, x, mask, &out), want) << arg;
  const std::string msg = culayers::last_error_message();
  EXPECT_NE(msg.find(layer.name() + ": " + arg), std::string::npos) << msg;
  EXPECT_EQ(out.y.data(), &sentinel) << arg << ": the output was written";
  for (const auto& [name, values] : before) {
    EXPECT_TRUE(same_bits(weight_floats(layer, name.c_str()), values)) << arg << ": " << name << " changed";
  }
}

TEST(BatchNormalizationLayer, BadOptionsAndUnsupportedLayoutsAreClearErrors) {
  DeviceBuffer<float> x(2 * 3 * 4 * 8);
  const ConstTensorView x2 = view_of(x.get(), DType::kFloat32, Shape{6, 8});
  const ConstTensorView x3 = view_of(x.get(), DType::kFloat32, Shape{2, 3, 8});
  const ConstTensorView x4 = view_of(x.get(), DType::kFloat32, Shape{2, 8, 3, 4});
  const ConstTensorView x1 = view_of(x.get(), DType::kFloat32, Shape{8});
  struct Bad {
    int axis;
    double momentum;
    double epsilon;
    const ConstTensorView* x;
    Status want;
    const char* arg;
  };
  const Bad bad[] = {
      {0, 0.99, 1e-3, &x2, Status::kErrorInvalidValue, "axis"}, // the batch axis
      {-3, 0.99, 1e-3, &x3, Status::kErrorInvalidValue, "axis"},
      {3, 0.99, 1e-3, &x3, Status::kErrorInvalidValue, "axis"},
      {-3, 0.99, 1e-3, &x2, Status::kErrorInvalidValue, "axis"},
      {-1, 1.5, 1e-3, &x3, Status::kErrorInvalidValue, "momentum"},
      {-1, -0.1, 1e-3, &x3, Status::kErrorInvalidValue, "momentum"},
      {-1, std::nan(""), 1e-3, &x3, Status::kErrorInvalidValue, "momentum"},
      {-1, 0.99, 0.0, &x3, Status::kErrorInvalidValue, "epsilon"},
      {-1, 0.99, std::nan(""), &x3, Status::kErrorInvalidValue, "epsilon"},
      {-1, 0.99, 1e-3, &x1, Status::kErrorInvalidShape, "input"},
  };
  for (const Bad& b : bad) {
    nn::BatchNormalizationOptions o;
    o.axis = b.axis;
    o.momentum = b.momentum;
    o.epsilon = b.epsilon;
    nn::BatchNormalization layer(o, "bad_bn");
    expect_call_error(layer, *b.x, {}, b.want, b.arg);
    EXPECT_FALSE(layer.built()) << b.arg;
    EXPECT_TRUE(layer.weights().empty()) << b.arg;
    EXPECT_EQ(layer.update_count(), 0u) << b.arg;
  }
  // Rank 2 with axis 1 (its last axis) and rank 3 with axis 2 are channels last; axis 1 of rank 3 and 4 is
  // channels first, axis 2 of rank 4 a middle axis.
  for (const auto& [axis, xv] :
       {std::pair<int, const ConstTensorView*>{1, &x2}, {2, &x3}, {1, &x3}, {1, &x4}, {2, &x4}, {-2, &x4}}) {
    nn::BatchNormalizationOptions o;
    o.axis = axis;
    nn::BatchNormalization layer(o);
    nn::CallContext ctx;
    nn::LayerOutput out;
    EXPECT_EQ(layer.call(ctx, *xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
  }
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
}

TEST(BatchNormalizationLayer, MasksNeedRank3AndShapesMustMatch) {
  DeviceBuffer<float> x(2 * 3 * 4 * 8);
  DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>(2 * 8, 1));
  nn::BatchNormalization r2(nn::BatchNormalizationOptions{}, "bn_r2");
  expect_call_error(r2, view_of(x.get(), DType::kFloat32, Shape{2, 8}),
                    view_of(mask.get(), DType::kUInt8, Shape{2, 8}), Status::kErrorNotSupported, "mask");
  nn::BatchNormalization r4(nn::BatchNormalizationOptions{}, "bn_r4");
  expect_call_error(r4, view_of(x.get(), DType::kFloat32, Shape{2, 3, 4, 8}),
                    view_of(mask.get(), DType::kUInt8, Shape{2, 3}), Status::kErrorNotSupported, "mask");
  nn::BatchNormalizationOptions first;
  first.axis = 1;
  nn::BatchNormalization cf(first, "bn_cf");
  // The mask is rejected by check_call, so a model checks it before running any layer.
  EXPECT_EQ(cf.check_call(Shape{2, 8, 3}, DType::kFloat32, true), Status::kErrorNotSupported);
  expect_call_error(cf, view_of(x.get(), DType::kFloat32, Shape{2, 8, 3}),
                    view_of(mask.get(), DType::kUInt8, Shape{2, 8}), Status::kErrorNotSupported, "mask");
  nn::BatchNormalization layer(nn::BatchNormalizationOptions{}, "bn_shape");
  nn::CallContext ctx;
  nn::LayerOutput out;
  ASSERT_EQ(layer.call(ctx, view_of(x.get(), DType::kFloat32, Shape{2, 3, 8}), {}, &out), Status::kSuccess)
      << culayers::last_error_message();
  expect_call_error(layer, view_of(x.get(), DType::kFloat32, Shape{2, 3, 16}), {}, Status::kErrorInvalidShape,
                    "input");
  expect_call_error(layer, view_of(x.get(), DType::kFloat32, Shape{2, 24}), {}, Status::kErrorInvalidShape,
                    "input");
  ASSERT_EQ(layer.call(ctx, view_of(x.get(), DType::kFloat32, Shape{4, 5, 8}), {}, &out), Status::kSuccess)
      << culayers::last_error_message();
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
}

// ---- configs ----------------------------------------------------------------------------------------------

void register_class() {
  ASSERT_EQ(nn::register_layer_class("BatchNormalization", &nn::BatchNormalization::from_config),
            Status::kSuccess);
}

TEST(BatchNormalizationLayer, ConfigsRoundTripToIdenticalOutputsAndStatistics) {
  register_class();
  auto rng = rng_for_test();
  const Shape shape{3, 6, 5};
  const std::vector<float> host =
      gn::normal_values<float>(rng, static_cast<std::size_t>(shape.numel()), 1.0, 2.0);
  DeviceBuffer<float> x(host);
  DeviceBuffer<std::uint8_t> mask(random_mask(rng, 3, 6));
  const ConstTensorView xv = view_of(x.get(), DType::kFloat32, shape);
  const ConstTensorView mv = view_of(mask.get(), DType::kUInt8, Shape{3, 6});
  nn::BatchNormalizationOptions o;
  o.axis = 2;
  o.momentum = 0.9;
  o.epsilon = 1e-2;
  o.center = false;
  o.gamma_initializer = nn::Initializer::random_normal(1.0, 0.3, 5);
  o.moving_mean_initializer = nn::Initializer::random_uniform(-1.0, 1.0, 6);
  o.moving_variance_initializer = nn::Initializer::constant(2.0);
  nn::BatchNormalization a(o, "bn_a");
  const Json j = nn::layer_to_json(a);
  EXPECT_EQ(j["class_name"], "BatchNormalization");
  const Json& cfg = j["config"];
  for (const char* key :
       {"name", "trainable", "dtype", "axis", "momentum", "epsilon", "center", "scale", "beta_initializer",
        "gamma_initializer", "moving_mean_initializer", "moving_variance_initializer"}) {
    EXPECT_TRUE(cfg.contains(key)) << key;
  }
  EXPECT_EQ(cfg["axis"], 2);
  EXPECT_EQ(cfg["momentum"], 0.9);
  EXPECT_EQ(cfg["center"], false);
  EXPECT_EQ(cfg["moving_variance_initializer"], nn::Initializer::constant(2.0).to_json());
  std::unique_ptr<nn::Layer> b;
  ASSERT_EQ(nn::layer_from_json(Json::parse(j.dump()), &b), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(nn::layer_to_json(*b), j);
  nn::CallContext ctx;
  nn::LayerOutput oa;
  nn::LayerOutput ob;
  for (const nn::Phase phase : {nn::Phase::kTraining, nn::Phase::kTraining, nn::Phase::kInference}) {
    ctx.phase = phase;
    ASSERT_EQ(a.call(ctx, xv, mv, &oa), Status::kSuccess) << culayers::last_error_message();
    ASSERT_EQ(b->call(ctx, xv, mv, &ob), Status::kSuccess) << culayers::last_error_message();
    EXPECT_TRUE(same_bits(download<float>(oa.y), download<float>(ob.y))) << nn::phase_name(phase);
    for (const char* w : {"gamma", "moving_mean", "moving_variance"}) {
      EXPECT_TRUE(same_bits(weight_floats(a, w), weight_floats(*b, w))) << w;
    }
  }
  EXPECT_EQ(nn::layer_to_json(*b), j) << "building changes no config key";
}

TEST(BatchNormalizationLayer, KerasConfigsAreRead) {
  register_class();
  // tf.keras 2 writes the axis as a list; regularizers, constraints and other keys are ignored, and so are
  // the renorm / virtual-batch options at their defaults.
  const Json j = Json::parse(R"({"class_name": "BatchNormalization", "config": {
      "name": "bn_keras", "trainable": false, "dtype": "float16", "axis": [-1], "momentum": 0.9,
      "epsilon": 0.001, "center": true, "scale": true,
      "beta_initializer": {"class_name": "Zeros", "config": {}},
      "gamma_initializer": {"class_name": "Ones", "config": {}},
      "moving_mean_initializer": "zeros", "moving_variance_initializer": {"class_name": "Ones", "config": {}},
      "beta_regularizer": null, "gamma_regularizer": null, "beta_constraint": null, "gamma_constraint": null,
      "synchronized": false, "renorm": false, "renorm_clipping": null, "renorm_momentum": 0.99,
      "virtual_batch_size": null, "adjustment": null}})");
  std::unique_ptr<nn::Layer> layer;
  ASSERT_EQ(nn::layer_from_json(j, &layer), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(layer->name(), "bn_keras");
  EXPECT_FALSE(layer->trainable());
  EXPECT_EQ(layer->dtype(), DType::kFloat16);
  const auto* bnl = dynamic_cast<const nn::BatchNormalization*>(layer.get());
  ASSERT_NE(bnl, nullptr);
  EXPECT_EQ(bnl->options().axis, -1);
  EXPECT_EQ(bnl->options().momentum, 0.9);
  EXPECT_EQ(layer->get_config()["axis"], -1);
  ASSERT_EQ(nn::BatchNormalization::from_config(Json::object(), &layer), Status::kSuccess);
  bnl = dynamic_cast<const nn::BatchNormalization*>(layer.get());
  EXPECT_EQ(bnl->options().axis, -1);
  EXPECT_EQ(bnl->options().momentum, 0.99);
  EXPECT_EQ(bnl->options().epsilon, 1e-3);
  EXPECT_TRUE(bnl->options().center && bnl->options().scale);
  EXPECT_EQ(bnl->options().moving_variance_initializer, nn::Initializer::ones());
}

TEST(BatchNormalizationLayer, BadConfigsAreClearErrors) {
  register_class();
  struct Bad {
    const char* config;
    Status want;
    const char* key;
  };
  const Bad bad[] = {
      {R"({"axis": "last"})", Status::kErrorParse, "axis"},
      {R"({"axis": [1, 2]})", Status::kErrorParse, "axis"},
      {R"({"axis": 2.5})", Status::kErrorParse, "axis"},
      {R"({"axis": 18446744073709551614})", Status::kErrorParse, "axis"}, // not wrapped to -2
      {R"({"momentum": 1.5})", Status::kErrorParse, "momentum"},
      {R"({"momentum": "high"})", Status::kErrorParse, "momentum"},
      {R"({"epsilon": -1})", Status::kErrorParse, "epsilon"},
      {R"({"center": 0})", Status::kErrorParse, "center"},
      {R"({"scale": null})", Status::kErrorParse, "scale"},
      {R"({"moving_mean_initializer": {"class_name": "Identity"}})", Status::kErrorUnknownClass,
       "moving_mean_initializer"},
      {R"({"moving_variance_initializer": [1]})", Status::kErrorParse, "moving_variance_initializer"},
      {R"({"trainable": "no"})", Status::kErrorParse, "trainable"},
      // Keras options that change the computation and are not implemented: an error, not plain batch norm.
      {R"({"renorm": true, "renorm_momentum": 0.99})", Status::kErrorNotSupported, "renorm"},
      {R"({"virtual_batch_size": 8})", Status::kErrorNotSupported, "virtual_batch_size"},
      {R"({"adjustment": "lambda"})", Status::kErrorNotSupported, "adjustment"},
  };
  for (const Bad& b : bad) {
    std::unique_ptr<nn::Layer> out;
    const Json j{{"class_name", "BatchNormalization"}, {"config", Json::parse(b.config)}};
    EXPECT_EQ(nn::layer_from_json(j, &out), b.want) << b.config;
    EXPECT_NE(std::string(culayers::last_error_message()).find(std::string("\"") + b.key + "\""),
              std::string::npos)
        << culayers::last_error_message();
    EXPECT_EQ(out, nullptr);
  }
}

} // namespace
