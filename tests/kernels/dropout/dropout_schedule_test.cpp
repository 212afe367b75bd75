// DecayingDropout's device-resident schedule: the keep-rate formula over a million steps against a long
// double reference, the update op on the device step by step (across 2^24, where a float32 counter
// would stop), decay-rate clamping, the backward of call k after the update op, and CUDA graph capture
// of forward + update replayed 100 times.
#include "culayers/dropout.hpp"
#include "kernels/dropout/philox.cuh"
#include "tests/kernels/dropout/dropout_test_util.hpp"
#include "tests/reference/dropout_reference.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace cd = culayers::dropout;
namespace kd = culayers::kernels::dropout;
namespace ref = culayers::test::dropout_ref;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::dropout::compare_bits;
using culayers::test::dropout::current_params;
using culayers::test::dropout::DeviceState;
using culayers::test::dropout::last_params;
using culayers::test::dropout::mask_mismatch;
using culayers::test::dropout::random_input;
using culayers::test::dropout::seed_trace;
using culayers::test::dropout::shape_of;

// The device's pow may differ from the host's: the emulated build runs the host's (exact agreement);
// CUDA's double pow is documented within 2 ulp (CUDA C Programming Guide, math functions): allow 4.
#if CULAYERS_TEST_EMULATED
constexpr double kDeviceUlps = 0.0;
#else
constexpr double kDeviceUlps = 4.0;
#endif

bool within_ulps(double got, double want, double ulps) {
  if (got == want) {
    return true;
  }
  return std::fabs(got - want) <= ulps * DBL_EPSILON * std::fabs(want);
}

struct Schedule {
  double initial;
  double decay;
  std::int64_t interval;
};

// The formula the device runs (the same source, evaluated on the host) against long double, for every
// step k < 10^6. Error budget of the double formula, relative: 1 ulp for pow (glibc) + 0.5 for the
// product with the initial rate, and |ln(decay)| * y ulp inherited from rounding the exponent
// y = (k + 1) / interval to double (d(x^y) / x^y = ln(x) dy). Thresholds must be equal except where
// p * 2^32 + 0.5 lies within that error of an integer (then within 1).
TEST(DropoutSchedule, FormulaOverAMillionSteps) {
  const Schedule schedules[] = {
      {1.0, 0.977, 10000}, {0.9, 0.977, 1000}, {0.8731, 0.5, 100000}, {0.75, 1.0, 7}};
  for (const Schedule& s : schedules) {
    int bad = 0;
    for (std::int64_t k = 0; k < 1000000; ++k) {
      const double got = cd::scheduled_keep_rate(s.initial, s.decay, s.interval, k);
      const long double want = ref::keep_rate(s.initial, s.decay, s.interval, k);
      const double want_d = static_cast<double>(want);
      const double y = (static_cast<double>(k) + 1.0) / static_cast<double>(s.interval);
      const double ulps = 2.0 + (s.decay > 0.0 ? std::fabs(std::log(s.decay)) * y : 0.0);
      if (!within_ulps(got, want_d, ulps) && bad++ < 5) {
        ADD_FAILURE() << "k " << k << ": " << got << " vs " << want_d;
      }
      if (s.decay == 1.0 && got != s.initial && bad++ < 5) {
        ADD_FAILURE() << "a fixed rate must stay exactly " << s.initial << ", got " << got << " at k " << k;
      }
      const std::uint64_t t = cd::keep_threshold(got);
      const long double exact = want * 4294967296.0L + 0.5L;
      const auto t_want = static_cast<std::uint64_t>(std::floor(exact));
      const bool near_integer = std::fabs(exact - std::round(exact)) < 1e-5L;
      if (t != t_want && !(near_integer && (t + 1 == t_want || t == t_want + 1)) && bad++ < 5) {
        ADD_FAILURE() << "k " << k << ": threshold " << t << " vs " << t_want;
      }
    }
    EXPECT_EQ(bad, 0) << "schedule " << s.initial << ", " << s.decay << ", " << s.interval;
  }
}

// The update op run on the device step by step: iterations, stream, keep rate, threshold and scale
// after every step, against the host evaluation of the same formula; then the counter across 2^24.
void check_device_steps(const cd::DropoutInitArgs& init, int steps) {
  DeviceState state(init);
  ASSERT_EQ(state.init_status(), Status::kSuccess) << culayers::last_error_message();
  const double decay = init.decay_rate < 0 ? 0.0 : (init.decay_rate > 1 ? 1.0 : init.decay_rate);
  int bad = 0;
  for (int step = 0; step <= steps; ++step) {
    if (step > 0) {
      ASSERT_EQ(state.update(), Status::kSuccess) << culayers::last_error_message();
    }
    const cd::DropoutState s = state.read();
    const std::int64_t k = init.iterations + step;
    const double want = cd::scheduled_keep_rate(init.initial_keep_rate, decay, init.decay_interval, k);
    const bool ok = s.iterations == k && s.stream == static_cast<std::uint64_t>(k) &&
                    within_ulps(s.keep_rate, want, kDeviceUlps) &&
                    s.threshold == cd::keep_threshold(s.keep_rate) &&
                    s.scale == cd::keep_scale(s.keep_rate) && s.decay_rate == decay && s.last_iteration == -1;
    if (!ok && bad++ < 5) {
      ADD_FAILURE() << "step " << step << ": iterations " << s.iterations << " (want " << k << "), stream "
                    << s.stream << ", keep " << s.keep_rate << " (want " << want << "), threshold "
                    << s.threshold << ", scale " << s.scale;
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST(DropoutSchedule, DeviceUpdateOpFollowsTheFormula) {
  cd::DropoutInitArgs init;
  init.seed = 1;
  init.initial_keep_rate = 0.9;
  init.decay_rate = 0.977;
  init.decay_interval = 7;
  check_device_steps(init, 3000);
}

// A float32 counter stops at 2^24 (2^24 + 1 is not representable); the int64 one keeps counting, and
// the keep rate keeps decaying.
TEST(DropoutSchedule, CounterPasses2To24) {
  cd::DropoutInitArgs init;
  init.initial_keep_rate = 0.95;
  init.decay_rate = 0.977;
  init.decay_interval = 3;
  init.iterations = (1 << 24) - 6;
  check_device_steps(init, 12);
  init.decay_interval = 1 << 22;
  check_device_steps(init, 12);
  DeviceState state(init);
  for (int i = 0; i < 12; ++i) {
    ASSERT_EQ(state.update(), Status::kSuccess);
  }
  const cd::DropoutState s = state.read();
  EXPECT_EQ(s.iterations, (1 << 24) + 6);
  EXPECT_LT(s.keep_rate, cd::scheduled_keep_rate(0.95, 0.977, 1 << 22, 1 << 24));
}

// A redraw gives the current call a fresh stream (2^63 + r) and changes nothing else; a plain update after
// it moves to the next iteration as usual. The counter saturates at 2^63 - 1 instead of wrapping.
TEST(DropoutSchedule, RedrawChangesOnlyTheStreamAndTheCounterSaturates) {
  cd::DropoutInitArgs init;
  init.seed = 9;
  init.initial_keep_rate = 0.9;
  init.decay_rate = 0.977;
  init.decay_interval = 5;
  init.iterations = 11;
  DeviceState state(init);
  ASSERT_EQ(state.init_status(), Status::kSuccess);
  const cd::DropoutState before = state.read();
  EXPECT_EQ(before.redraws, 0u);
  EXPECT_EQ(before.stream, 11u);
  for (std::uint64_t r = 1; r <= 3; ++r) {
    ASSERT_EQ(state.redraw(), Status::kSuccess);
    cd::DropoutState s = state.read();
    EXPECT_EQ(s.redraws, r);
    EXPECT_EQ(s.stream, (std::uint64_t{1} << 63) + r);
    // Everything else as before.
    s.redraws = before.redraws;
    s.stream = before.stream;
    EXPECT_EQ(std::memcmp(&s, &before, sizeof(s)), 0) << "redraw " << r << " changed another field";
  }
  // to_schedule: back to iteration 11's stream, the redraw count kept, nothing else changed.
  ASSERT_EQ(state.redraw(nullptr, true), Status::kSuccess);
  {
    cd::DropoutState s = state.read();
    EXPECT_EQ(s.stream, 11u);
    EXPECT_EQ(s.redraws, 3u);
    s.redraws = before.redraws;
    EXPECT_EQ(std::memcmp(&s, &before, sizeof(s)), 0) << "to_schedule changed another field";
  }
  // An init that keeps a redraw count continues from it.
  {
    cd::DropoutInitArgs kept = init;
    kept.redraws = 3;
    DeviceState again(kept);
    ASSERT_EQ(again.init_status(), Status::kSuccess);
    EXPECT_EQ(again.read().redraws, 3u);
    ASSERT_EQ(again.redraw(), Status::kSuccess);
    EXPECT_EQ(again.read().stream, (std::uint64_t{1} << 63) + 4);
  }
  ASSERT_EQ(state.redraw(), Status::kSuccess); // redraw 4, then the update returns to the schedule
  ASSERT_EQ(state.update(), Status::kSuccess);
  const cd::DropoutState next = state.read();
  EXPECT_EQ(next.iterations, 12);
  EXPECT_EQ(next.stream, 12u);
  EXPECT_EQ(next.redraws, 4u);
  // Iteration 12's rate, threshold and scale (the update after a redraw computes the schedule as ever).
  EXPECT_TRUE(within_ulps(next.keep_rate, cd::scheduled_keep_rate(0.9, 0.977, 5, 12), kDeviceUlps))
      << next.keep_rate;
  EXPECT_EQ(next.threshold, ref::threshold(next.keep_rate));
  EXPECT_EQ(next.scale, static_cast<float>(1.0 / next.keep_rate));
  EXPECT_LT(next.keep_rate, before.keep_rate);

  init.decay_rate = 1.0;
  init.iterations = INT64_MAX - 1;
  DeviceState end(init);
  ASSERT_EQ(end.init_status(), Status::kSuccess);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(end.update(), Status::kSuccess);
    const cd::DropoutState s = end.read();
    EXPECT_EQ(s.iterations, INT64_MAX) << "update " << i;
    EXPECT_EQ(s.keep_rate, 0.9);
    EXPECT_EQ(s.threshold, cd::keep_threshold(0.9));
  }
}

TEST(DropoutSchedule, DecayRateIsClampedAndFixedRateStays) {
  cd::DropoutInitArgs init;
  init.initial_keep_rate = 0.8;
  init.decay_rate = 1.5; // clamped to 1: fixed
  init.decay_interval = 1;
  check_device_steps(init, 20);
  DeviceState fixed(init);
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(fixed.update(), Status::kSuccess);
  }
  EXPECT_EQ(fixed.read().keep_rate, 0.8);
  EXPECT_EQ(fixed.read().decay_rate, 1.0);
  init.decay_rate = -0.25; // clamped to 0: nothing is kept
  DeviceState zero(init);
  EXPECT_EQ(zero.read().decay_rate, 0.0);
  EXPECT_EQ(zero.read().threshold, 0u);
}

// Backward of call k after the update op: regenerates call k's mask (with call k's scale), not the
// mask of the next call, for the plain and a broadcast noise shape.
template <class T>
void backward_after_update(const std::vector<std::int64_t>& dims, const std::vector<std::int64_t>& noise,
                           std::uint64_t base_offset = 0) {
  auto rng = rng_for_test();
  cd::DropoutInitArgs init;
  init.seed = rng();
  init.initial_keep_rate = 0.9;
  init.decay_rate = 0.5;
  init.decay_interval = 2; // fast decay: consecutive calls have different rates and scales
  init.offset = base_offset;
  DeviceState state(init);
  const std::size_t n = static_cast<std::size_t>(ref::numel(dims));
  DeviceBuffer<T> x(random_input<T>(rng, n));
  DeviceBuffer<T> y(n);
  DeviceBuffer<std::uint8_t> mask(n);
  DeviceBuffer<T> dy(random_input<T>(rng, n));
  DeviceBuffer<T> dx(n);
  const std::vector<T> dy_host = dy.download();
  for (int k = 0; k < 6; ++k) {
    const cd::DropoutState before = state.read();
    cd::DropoutForwardArgs f;
    f.x = x.get();
    f.y = y.get();
    f.dtype = culayers::test::dropout::DTypeOf<T>::kValue;
    f.shape = shape_of(dims);
    if (!noise.empty()) {
      f.noise_shape = shape_of(noise);
    }
    f.state = state.get();
    f.offset = 12;
    f.mask = mask.get();
    ASSERT_EQ(cd::run(f, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
    ASSERT_EQ(state.update(), Status::kSuccess);
    cd::DropoutBackwardArgs b;
    b.dy = dy.get();
    b.dx = dx.get();
    b.dtype = f.dtype;
    b.shape = f.shape;
    b.noise_shape = f.noise_shape;
    b.state = state.get();
    b.offset = 12;
    ASSERT_EQ(cd::run(b, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
    CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
    const cd::DropoutState after = state.read();
    ASSERT_EQ(after.iterations, k + 1);
    ASSERT_EQ(after.last_iteration, k);
    ASSERT_NE(after.threshold, before.threshold) << "the test needs the update op to change the rate";
    const ref::CallParams p = current_params(before, 12);
    const std::vector<std::uint8_t> keep = ref::mask(p, dims, noise);
    EXPECT_TRUE(mask_mismatch(mask.download(), keep).empty()) << "call " << k << "; " << seed_trace();
    const std::vector<T> want = ref::apply(dy_host, keep, p.scale);
    const std::string diff = compare_bits(dx.download(), want, n);
    EXPECT_TRUE(diff.empty()) << "call " << k << ": dx: " << diff << "; " << seed_trace();
    // The same through last_params(): what the state says the backward uses.
    EXPECT_EQ(last_params(after, 12).threshold, p.threshold);
    EXPECT_EQ(last_params(after, 12).stream, p.stream);
  }
}

TEST(DropoutSchedule, BackwardAfterUpdateReproducesForwardMaskFloat) {
  backward_after_update<float>({1027}, {});
}
TEST(DropoutSchedule, BackwardAfterUpdateReproducesForwardMaskBFloat16Broadcast) {
  backward_after_update<__nv_bfloat16>({3, 5, 16}, {3, 1, 16});
  backward_after_update<__nv_bfloat16>({2, 4, 3, 5}, {2, 4, 1, 1});
}
// Base offsets whose draws straddle Philox counter group 2^32 (the counter's high word) and wrap past 2^64,
// on the plain, row, run and generic paths (the forward test checks the same for the forward alone).
TEST(DropoutSchedule, BackwardAtOffsetsInTheHighCounterWord) {
  for (const std::uint64_t base : {(std::uint64_t{1} << 34) - 8, ~std::uint64_t{0} - 15}) {
    SCOPED_TRACE("base offset " + std::to_string(base));
    backward_after_update<float>({1027}, {}, base);
    backward_after_update<float>({3, 5, 16}, {3, 1, 16}, base);
    backward_after_update<__nv_bfloat16>({2, 4, 3, 5}, {2, 4, 1, 1}, base);
    backward_after_update<float>({4, 5, 6}, {4, 1, 6}, base);
  }
}

// Before any forward, the backward uses the current call (init mirrors it into last_*).
TEST(DropoutSchedule, BackwardBeforeAnyForwardUsesTheCurrentCall) {
  auto rng = rng_for_test();
  DeviceState state(culayers::test::dropout::fixed_rate(rng(), 0.3, 4));
  const std::size_t n = 515;
  DeviceBuffer<float> dy(random_input<float>(rng, n));
  DeviceBuffer<float> dx(n);
  cd::DropoutBackwardArgs b;
  b.dy = dy.get();
  b.dx = dx.get();
  b.shape = shape_of({static_cast<std::int64_t>(n)});
  b.state = state.get();
  ASSERT_EQ(cd::run(b, nullptr, 0, nullptr), Status::kSuccess);
  const ref::CallParams p = current_params(state.read());
  const std::vector<float> want =
      ref::apply(dy.download(), ref::mask(p, {static_cast<std::int64_t>(n)}, {}), p.scale);
  EXPECT_TRUE(compare_bits(dx.download(), want, n).empty());
}

// Capture forward + update + backward once, replay 100 times: each replay uses the next step's stream and
// keep rate, read from the state on the device (no host involvement), and its forward and backward match
// the reference.
TEST(DropoutSchedule, GraphReplayAdvancesTheSchedule) {
  auto rng = rng_for_test();
  cd::DropoutInitArgs init;
  init.seed = rng();
  init.initial_keep_rate = 0.95;
  init.decay_rate = 0.9;
  init.decay_interval = 10;
  cudaStream_t stream = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  DeviceState state(init, stream);
  const std::vector<std::int64_t> dims = {3, 7, 64};
  const std::vector<std::int64_t> noise = {3, 1, 64};
  const std::size_t n = static_cast<std::size_t>(ref::numel(dims));
  const std::vector<__nv_bfloat16> x_host = random_input<__nv_bfloat16>(rng, n);
  DeviceBuffer<__nv_bfloat16> x(x_host);
  DeviceBuffer<__nv_bfloat16> y(n);
  DeviceBuffer<std::uint8_t> mask(n);
  const std::vector<__nv_bfloat16> dy_host = random_input<__nv_bfloat16>(rng, n);
  DeviceBuffer<__nv_bfloat16> dy(dy_host);
  DeviceBuffer<__nv_bfloat16> dx(n);
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream));

  // Forward, update, then the backward of that forward (after the update: it reads last_*), captured
  // once. The argument structs live only for the capture and are overwritten afterwards: a launch that read
  // host memory at replay would see garbage.
  auto f = std::make_unique<cd::DropoutForwardArgs>();
  f->x = x.get();
  f->y = y.get();
  f->dtype = culayers::DType::kBFloat16;
  f->shape = shape_of(dims);
  f->noise_shape = shape_of(noise);
  f->state = state.get();
  f->mask = mask.get();
  auto u = std::make_unique<cd::DropoutUpdateArgs>();
  u->state = state.get();
  auto b = std::make_unique<cd::DropoutBackwardArgs>();
  b->dy = dy.get();
  b->dx = dx.get();
  b->dtype = f->dtype;
  b->shape = f->shape;
  b->noise_shape = f->noise_shape;
  b->state = state.get();

  cudaGraph_t graph = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const Status fs = cd::run(*f, nullptr, 0, stream);
  const Status us = cd::run(*u, nullptr, 0, stream);
  const Status bs = cd::run(*b, nullptr, 0, stream);
  CULAYERS_ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  ASSERT_EQ(fs, Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(us, Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(bs, Status::kSuccess) << culayers::last_error_message();
  std::memset(static_cast<void*>(f.get()), 0xA5, sizeof(*f));
  std::memset(static_cast<void*>(u.get()), 0xA5, sizeof(*u));
  std::memset(static_cast<void*>(b.get()), 0xA5, sizeof(*b));
  f.reset();
  u.reset();
  b.reset();
  cudaGraphExec_t exec = nullptr;
  CULAYERS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  // Capture enqueued nothing: the state is still at step 0.
  ASSERT_EQ(state.read().iterations, 0);

  for (int k = 0; k < 100; ++k) {
    CULAYERS_ASSERT_CUDA(cudaGraphLaunch(exec, stream));
    CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream));
    const cd::DropoutState s = state.read();
    ASSERT_EQ(s.iterations, k + 1);
    ASSERT_EQ(s.last_iteration, k);
    ASSERT_EQ(s.last_stream, static_cast<std::uint64_t>(k));
    const double want_rate =
        cd::scheduled_keep_rate(init.initial_keep_rate, init.decay_rate, init.decay_interval, k);
    ASSERT_TRUE(within_ulps(s.last_keep_rate, want_rate, kDeviceUlps))
        << s.last_keep_rate << " vs " << want_rate;
    ASSERT_EQ(s.last_threshold, cd::keep_threshold(s.last_keep_rate));
    const ref::CallParams p = last_params(s);
    const std::vector<std::uint8_t> keep = ref::mask(p, dims, noise);
    const std::string mdiff = mask_mismatch(mask.download(), keep);
    ASSERT_TRUE(mdiff.empty()) << "replay " << k << ": " << mdiff << "; " << seed_trace();
    const std::string ydiff = compare_bits(y.download(), ref::apply(x_host, keep, p.scale), n);
    ASSERT_TRUE(ydiff.empty()) << "replay " << k << ": y: " << ydiff << "; " << seed_trace();
    const std::string dxdiff = compare_bits(dx.download(), ref::apply(dy_host, keep, p.scale), n);
    ASSERT_TRUE(dxdiff.empty()) << "replay " << k << ": dx: " << dxdiff << "; " << seed_trace();
  }
  CULAYERS_ASSERT_CUDA(cudaGraphExecDestroy(exec));
  CULAYERS_ASSERT_CUDA(cudaGraphDestroy(graph));
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(stream));
}

} // namespace
