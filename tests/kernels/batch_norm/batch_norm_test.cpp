// Batch-normalization ops (culayers/batch_norm.hpp) on both backends: the apply against the double
// reference for every dtype over shapes with odd channel counts and tails, both parameter paths (shared
// staging and per-element global reads), grid-stride loops that wrap the channel index, misaligned views
// (narrower vectors down to the scalar path), in place, optional gamma / beta, nothing written outside y,
// (emulated build) the byte model, channels-first views ([rows, C, inner]); the moving-statistics update
// bit-exact against the header's formula for counts 0, 1, 2 and more; the channels-first moments merge
// against the double merge; and every error case with nothing written.
#include "culayers/batch_norm.hpp"

#include "tests/reference/batch_norm_reference.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

namespace bnk = culayers::batch_norm;
namespace bn = culayers::test::bn;
using culayers::DType;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::seed_note;
using culayers::test::masked::Dtype;

std::vector<float> normal_floats(std::mt19937_64& rng, std::size_t n, double mean, double stddev) {
  std::normal_distribution<double> d(mean, stddev);
  std::vector<float> v(n);
  for (float& e : v) {
    e = static_cast<float>(d(rng));
  }
  return v;
}

std::vector<double> widen(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

template <class T>
std::vector<double> to_double(const std::vector<T>& v) {
  std::vector<double> d(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    d[i] = Dtype<T>::to_double(v[i]);
  }
  return d;
}

// ---- apply ---------------------------------------------------------------------------------------------

struct ApplyCase {
  std::int64_t rows = 1;
  std::int64_t channels = 1;
  std::int64_t inner = 1; // > 1: channels first
  bool gamma = true;
  bool beta = true;
  int max_blocks = 0;
  int vector_width = 0;
  int x_offset = 0; // elements: misaligned views
  int y_offset = 0;
  bool in_place = false;
  int expect_vec = 0; // selected_vector_width must return this (0: not checked)
};

std::string describe(const ApplyCase& c, const char* dtype) {
  return std::string(dtype) + " rows=" + std::to_string(c.rows) + " C=" + std::to_string(c.channels) +
         " inner=" + std::to_string(c.inner) + (c.gamma ? " gamma" : "") + (c.beta ? " beta" : "") +
         " max_blocks=" + std::to_string(c.max_blocks) + " vw<=" + std::to_string(c.vector_width) + " x+" +
         std::to_string(c.x_offset) + " y+" + std::to_string(c.y_offset) + (c.in_place ? " in-place" : "") +
         "; " + seed_note();
}

constexpr int kGuard = 16; // poisoned elements on each side of y

/// Runs one apply with y between poisoned guards and checks y against the reference, the guards and (when
/// not in place) x.
template <class T>
void check_apply(std::mt19937_64& rng, const ApplyCase& c) {
  const char* dt = Dtype<T>::kName;
  const std::size_t n = static_cast<std::size_t>(c.rows * c.channels * c.inner);
  const auto nc = static_cast<std::size_t>(c.channels);
  const auto ni = static_cast<std::size_t>(c.inner);
  const std::vector<T> x = culayers::test::masked::normal_values<T>(rng, n, 0.5, 2.0);
  bn::Params p;
  const std::vector<float> mean = normal_floats(rng, nc, 0.5, 1.0);
  std::vector<float> var = normal_floats(rng, nc, 0.0, 2.0);
  for (float& v : var) {
    v = v * v; // >= 0, some near 0 (epsilon matters)
  }
  const std::vector<float> gamma = normal_floats(rng, nc, 1.0, 0.5);
  const std::vector<float> beta = normal_floats(rng, nc, 0.0, 1.0);
  p.mean = widen(mean);
  p.variance = widen(var);
  if (c.gamma) {
    p.gamma = widen(gamma);
  }
  if (c.beta) {
    p.beta = widen(beta);
  }

  // One allocation holds x (at x_offset) and, unless in place, a separate one holds y with guards.
  const T poison = Dtype<T>::from_double(-12345.0);
  std::vector<T> x_host(n + static_cast<std::size_t>(c.x_offset));
  std::copy(x.begin(), x.end(),
            x_host.begin() + c.x_offset); // (memcpy from an empty vector's null data is UB)
  DeviceBuffer<T> d_x(x_host);
  std::vector<T> y_host(n + static_cast<std::size_t>(2 * kGuard + c.y_offset), poison);
  DeviceBuffer<T> d_y(y_host);
  DeviceBuffer<float> d_mean(mean);
  DeviceBuffer<float> d_var(var);
  DeviceBuffer<float> d_gamma(gamma);
  DeviceBuffer<float> d_beta(beta);

  bnk::BatchNormApplyArgs a;
  a.dtype = Dtype<T>::kDType;
  a.x = d_x.get() + c.x_offset;
  a.rows = c.rows;
  a.channels = c.channels;
  a.inner = c.inner;
  a.mean = d_mean.get();
  a.variance = d_var.get();
  a.gamma = c.gamma ? d_gamma.get() : nullptr;
  a.beta = c.beta ? d_beta.get() : nullptr;
  a.epsilon = 1e-3f;
  a.y = c.in_place ? static_cast<void*>(d_x.get() + c.x_offset)
                   : static_cast<void*>(d_y.get() + kGuard + c.y_offset);
  a.max_blocks = c.max_blocks;
  a.vector_width = c.vector_width;
  EXPECT_EQ(bnk::workspace_size(a), 0u);
  if (c.expect_vec != 0) {
    EXPECT_EQ(bnk::selected_vector_width(a), c.expect_vec) << describe(c, dt);
  }
  ASSERT_EQ(bnk::run(a, nullptr, 0, nullptr), Status::kSuccess)
      << describe(c, dt) << ": " << culayers::last_error_message();
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());

  const std::vector<double> want = bn::apply(p, to_double(x), ni);
  const std::vector<T> xb = d_x.download();
  const std::vector<T> yb = d_y.download();
  const T* got = c.in_place ? xb.data() + c.x_offset : yb.data() + kGuard + c.y_offset;
  int failures = 0;
  for (std::size_t i = 0; i < n && failures < 5; ++i) {
    const double g = Dtype<T>::to_double(got[i]);
    const std::size_t ch = (i / ni) % nc;
    const double tol = bn::apply_tolerance<T>(p, ch, Dtype<T>::to_double(x[i]), want[i]);
    if (!(std::fabs(g - want[i]) <= tol)) {
      ADD_FAILURE() << describe(c, dt) << ": y[" << i << "] (row " << i / (nc * ni) << ", channel " << ch
                    << ") = " << g << ", want " << want[i] << " +- " << tol;
      ++failures;
    }
  }
  if (!c.in_place) {
    for (std::size_t i = 0; i < yb.size(); ++i) {
      const bool inside = i >= static_cast<std::size_t>(kGuard + c.y_offset) &&
                          i < static_cast<std::size_t>(kGuard + c.y_offset) + n;
      if (!inside) {
        ASSERT_EQ(culayers::test::masked::bits(yb[i]), culayers::test::masked::bits(poison))
            << describe(c, dt) << ": wrote outside y at " << i;
      }
    }
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_EQ(culayers::test::masked::bits(xb[i + c.x_offset]), culayers::test::masked::bits(x[i]))
          << describe(c, dt) << ": x changed";
    }
  }
}

template <class T>
void apply_sweep() {
  auto rng = rng_for_test();
  constexpr int kWidest = static_cast<int>(16 / sizeof(T));
  // The shared-memory limit and just above it (the per-element parameter path), from the header's constant.
  constexpr std::int64_t kLimit = culayers::batch_norm::kMaxSharedChannels;
  const std::int64_t shapes[][2] = {{1, 1},          {5, 3},          {7, 7},   {3, 33},
                                    {17, 64},        {31, 65},        {2, 511}, {4, kLimit},
                                    {2, kLimit + 1}, {3, kLimit + 5}, {0, 5},   {4, 0}};
  for (const auto& s : shapes) {
    for (int affine = 0; affine < 4; ++affine) {
      ApplyCase c;
      c.rows = s[0];
      c.channels = s[1];
      c.gamma = (affine & 1) != 0;
      c.beta = (affine & 2) != 0;
      c.expect_vec = s[0] * s[1] > 0 ? kWidest : 0;
      check_apply<T>(rng, c);
    }
  }
  // Grid-stride loops: few blocks over many vectors, so every thread advances its channel by `step` many
  // times (C = 37 and 33 do not divide the stride; 64 does).
  for (const std::int64_t channels : {std::int64_t{37}, std::int64_t{33}, std::int64_t{64}, kLimit + 1}) {
    for (const int blocks : {1, 2, 3}) {
      ApplyCase c;
      c.rows = 97;
      c.channels = channels;
      c.max_blocks = blocks;
      check_apply<T>(rng, c);
    }
  }
  // The 16-byte shared-memory path (C a multiple of the vector width, within the shared limit) with a
  // nonzero channel step: 256 threads x V elements per block do not divide C = 40, 96 or 2040, so with
  // one to three blocks each thread's channel advances, with wrap-arounds, over many vectors.
  for (const std::int64_t channels : {std::int64_t{40}, std::int64_t{96}, std::int64_t{2040}}) {
    for (const int blocks : {1, 2, 3}) {
      ApplyCase c;
      c.rows = channels == 2040 ? 9 : 200;
      c.channels = channels;
      c.max_blocks = blocks;
      c.gamma = true;
      c.beta = blocks != 2;
      c.expect_vec = kWidest;
      check_apply<T>(rng, c);
    }
  }
  // Channels first ([rows, C, inner], inner > 1): runs shorter than, equal to, not dividing and longer
  // than a vector (a vector spans several channels when inner < V), C above the shared-memory limit, and
  // few blocks so that the (channel, offset) pair advances with a carry many times.
  const std::int64_t planes[][3] = {{1, 1, 2},           {2, 3, 5},  {3, 4, 7},    {2, 5, 8},
                                    {4, 3, 64},          {2, 3, 65}, {1, 2, 4099}, {2, kLimit + 1, 3},
                                    {3, kLimit + 2, 16}, {5, 1, 9},  {0, 3, 4},    {2, 0, 4}};
  for (const auto& s : planes) {
    for (int affine = 0; affine < 4; affine += 3) {
      ApplyCase c;
      c.rows = s[0];
      c.channels = s[1];
      c.inner = s[2];
      c.gamma = affine != 0;
      c.beta = affine != 0;
      check_apply<T>(rng, c);
    }
  }
  for (const std::int64_t inner : {2, 3, 5, 17, 49}) {
    for (const int blocks : {1, 3}) {
      for (const int vw : {0, 1}) {
        ApplyCase c;
        c.rows = 7;
        c.channels = 5;
        c.inner = inner;
        c.max_blocks = blocks;
        c.vector_width = vw;
        check_apply<T>(rng, c);
      }
    }
  }
  // C not dividing grid_elements / inner and inner not dividing grid_elements: both parts of the
  // (channel, offset) advance are nonzero, with carries (one block: V = 1 gives step 5 and step_j 9, V = 4
  // step 1 and step_j 10, V = 8 step 3 and step_j 7).
  for (const int vw : {0, 4, 1}) {
    ApplyCase c;
    c.rows = 40;
    c.channels = 7;
    c.inner = 13;
    c.max_blocks = 1;
    c.vector_width = vw;
    check_apply<T>(rng, c);
  }
  for (const int off : {1, 2, 3}) {
    ApplyCase c;
    c.rows = 3;
    c.channels = 6;
    c.inner = 13;
    c.x_offset = off;
    c.y_offset = 4 - off;
    check_apply<T>(rng, c);
    c.in_place = true;
    check_apply<T>(rng, c);
  }
}

TEST(BatchNormApply, Float32MatchesReference) {
  apply_sweep<float>();
}
TEST(BatchNormApply, Float16MatchesReference) {
  apply_sweep<__half>();
}
TEST(BatchNormApply, BFloat16MatchesReference) {
  apply_sweep<__nv_bfloat16>();
}

template <class T>
void alignment_sweep() {
  auto rng = rng_for_test();
  constexpr int kWidest = static_cast<int>(16 / sizeof(T));
  // Offsets of k elements from a 256-byte aligned allocation: the widest legal vector is the largest power
  // of two dividing k (capped at the widest), down to the scalar path for odd k.
  for (int off = 0; off <= kWidest; ++off) {
    int want = kWidest;
    while (off % want != 0) {
      want /= 2;
    }
    ApplyCase xc;
    xc.rows = 9;
    xc.channels = 13;
    xc.x_offset = off;
    xc.expect_vec = want;
    check_apply<T>(rng, xc);
    ApplyCase yc = xc;
    yc.x_offset = 0;
    yc.y_offset = off;
    check_apply<T>(rng, yc);
    ApplyCase ip = xc;
    ip.in_place = true;
    check_apply<T>(rng, ip);
  }
  for (int cap = 1; cap <= kWidest; cap *= 2) {
    ApplyCase c;
    c.rows = 11;
    c.channels = 9;
    c.vector_width = cap;
    c.expect_vec = cap;
    check_apply<T>(rng, c);
  }
}

TEST(BatchNormApply, MisalignedViewsAndInPlaceFloat32) {
  alignment_sweep<float>();
}
TEST(BatchNormApply, MisalignedViewsAndInPlaceFloat16) {
  alignment_sweep<__half>();
}
TEST(BatchNormApply, MisalignedViewsAndInPlaceBFloat16) {
  alignment_sweep<__nv_bfloat16>();
}

TEST(BatchNormApply, HandWorkedValues) {
  // x [2, 2], epsilon 0.25. Channel 0: mean 1, variance 3.75 (rstd = 1 / sqrt(4) = 0.5), gamma 2, beta 1.
  // Channel 1: mean -1, variance 0 (rstd = 1 / sqrt(0.25) = 2), gamma 1, beta 0.
  DeviceBuffer<float> x(std::vector<float>{3.0f, 0.0f, -1.0f, 2.5f});
  DeviceBuffer<float> mean(std::vector<float>{1.0f, -1.0f});
  DeviceBuffer<float> var(std::vector<float>{3.75f, 0.0f});
  DeviceBuffer<float> gamma(std::vector<float>{2.0f, 1.0f});
  DeviceBuffer<float> beta(std::vector<float>{1.0f, 0.0f});
  DeviceBuffer<float> y(4);
  bnk::BatchNormApplyArgs a;
  a.x = x.get();
  a.rows = 2;
  a.channels = 2;
  a.mean = mean.get();
  a.variance = var.get();
  a.gamma = gamma.get();
  a.beta = beta.get();
  a.epsilon = 0.25f;
  a.y = y.get();
  ASSERT_EQ(bnk::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
  // (3 - 1) * 0.5 * 2 + 1 = 3; (0 + 1) * 2 = 2; (-1 - 1) * 0.5 * 2 + 1 = -1; (2.5 + 1) * 2 = 7. Exact on the
  // emulator; the GPU's rsqrtf may be off by 2 ulp (4 ulp of slack).
  const std::vector<float> want{3.0f, 2.0f, -1.0f, 7.0f};
  const std::vector<float> got = y.download();
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 4.0 * bn::kU32 * 2.0 * std::fabs(want[i])) << i;
  }
}

#if CULAYERS_TEST_EMULATED
// The byte model: x read once and y written once; with shared staging each block also reads its per-channel
// parameters once (mean, variance, and gamma / beta when given), so with a fixed grid the loads are exact.
TEST(BatchNormApply, ByteModel) {
  auto rng = rng_for_test();
  const std::int64_t rows = 100;
  const std::int64_t channels = 33;
  const std::int64_t max_inner = 5;
  const std::size_t n_max = static_cast<std::size_t>(rows * channels * max_inner);
  DeviceBuffer<float> x(culayers::test::masked::normal_values<float>(rng, n_max));
  DeviceBuffer<float> y(n_max);
  DeviceBuffer<float> mean(std::vector<float>(static_cast<std::size_t>(channels), 0.5f));
  DeviceBuffer<float> var(std::vector<float>(static_cast<std::size_t>(channels), 2.0f));
  for (const std::int64_t inner : {std::int64_t{1}, max_inner}) { // channels last and first
    const std::size_t n = static_cast<std::size_t>(rows * channels * inner);
    for (const int blocks : {1, 3}) {
      for (const bool affine : {false, true}) {
        bnk::BatchNormApplyArgs a;
        a.x = x.get();
        a.rows = rows;
        a.channels = channels;
        a.inner = inner;
        a.mean = mean.get();
        a.variance = var.get();
        a.gamma = affine ? mean.get() : nullptr;
        a.beta = affine ? var.get() : nullptr;
        a.y = y.get();
        a.max_blocks = blocks; // 825 vectors of 4 need 4 blocks of 256 threads: the cap applies
        culayers_emu::reset_byte_counters();
        ASSERT_EQ(bnk::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
        CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
        const culayers_emu::ByteCounters b = culayers_emu::byte_counters();
        const std::uint64_t params = static_cast<std::uint64_t>(blocks * channels) * 4u * (affine ? 4u : 2u);
        EXPECT_EQ(b.read, n * 4u + params)
            << "inner " << inner << " blocks " << blocks << " affine " << affine;
        EXPECT_EQ(b.written, n * 4u) << "inner " << inner << " blocks " << blocks << " affine " << affine;
      }
    }
  }
}
#endif

// ---- apply errors
// -------------------------------------------------------------------------------------------

class BatchNormApplyErrors : public ::testing::Test {
 protected:
  static constexpr std::int64_t kRows = 4;
  static constexpr std::int64_t kChannels = 8;
  DeviceBuffer<float> x{std::vector<float>(kRows * kChannels, 1.0f)};
  DeviceBuffer<float> y{static_cast<std::size_t>(kRows * kChannels)};
  DeviceBuffer<float> params{std::vector<float>(4 * kChannels, 1.0f)};

  void SetUp() override { y.fill_bytes(0xa5); }

  bnk::BatchNormApplyArgs valid() const {
    bnk::BatchNormApplyArgs a;
    a.x = x.get();
    a.rows = kRows;
    a.channels = kChannels;
    a.mean = params.get();
    a.variance = params.get() + kChannels;
    a.gamma = params.get() + 2 * kChannels;
    a.beta = params.get() + 3 * kChannels;
    a.y = y.get();
    return a;
  }

  /// run() fails with `want`, its message names the op and `arg`, and neither y nor the parameters change.
  void expect_error(const bnk::BatchNormApplyArgs& a, Status want, const char* arg) {
    EXPECT_EQ(bnk::can_implement(a), want);
    EXPECT_EQ(bnk::selected_vector_width(a), 0);
    EXPECT_EQ(bnk::run(a, nullptr, 0, nullptr), want) << arg;
    const std::string msg = culayers::last_error_message();
    EXPECT_NE(msg.find(std::string("batch_norm_apply: ") + arg), std::string::npos) << msg;
    CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
    for (const float v : y.download()) {
      std::uint32_t b = 0;
      std::memcpy(&b, &v, 4);
      ASSERT_EQ(b, 0xa5a5a5a5u) << arg << ": y was written";
    }
    for (const float v : params.download()) {
      ASSERT_EQ(v, 1.0f) << arg << ": a parameter was written";
    }
  }
};

TEST_F(BatchNormApplyErrors, BadArgumentsWriteNothing) {
  auto a = valid();
  EXPECT_EQ(bnk::can_implement(a), Status::kSuccess);
  a.dtype = DType::kInt32;
  expect_error(a, Status::kErrorInvalidDType, "dtype");
  a = valid();
  a.rows = -1;
  expect_error(a, Status::kErrorInvalidShape, "sizes");
  a = valid();
  a.inner = -1;
  expect_error(a, Status::kErrorInvalidShape, "sizes");
  a = valid();
  a.rows = std::numeric_limits<std::int64_t>::max() / 2;
  expect_error(a, Status::kErrorSizeLimit, "sizes");
  a = valid();
  a.inner = std::numeric_limits<std::int64_t>::max() / 16; // rows x channels x inner overflows
  expect_error(a, Status::kErrorSizeLimit, "sizes");
  for (const float eps : {0.0f, -1e-3f, std::numeric_limits<float>::infinity(), std::nanf("")}) {
    a = valid();
    a.epsilon = eps;
    expect_error(a, Status::kErrorInvalidValue, "epsilon");
  }
  for (const int vw : {3, 8, -1, 16}) { // 8 floats = 32 bytes
    a = valid();
    a.vector_width = vw;
    expect_error(a, Status::kErrorInvalidValue, "vector_width");
  }
  a = valid();
  a.max_blocks = -1;
  expect_error(a, Status::kErrorInvalidValue, "max_blocks");
  a = valid();
  a.x = nullptr;
  expect_error(a, Status::kErrorNullPointer, "x");
  a = valid();
  a.y = nullptr;
  expect_error(a, Status::kErrorNullPointer, "y");
  a = valid();
  a.mean = nullptr;
  expect_error(a, Status::kErrorNullPointer, "mean");
  a = valid();
  a.variance = nullptr;
  expect_error(a, Status::kErrorNullPointer, "variance");
  a = valid();
  a.x = reinterpret_cast<const unsigned char*>(x.get()) + 1;
  expect_error(a, Status::kErrorMisaligned, "x");
  a = valid();
  a.y = reinterpret_cast<unsigned char*>(y.get()) + 2;
  a.rows = kRows - 1;
  expect_error(a, Status::kErrorMisaligned, "y");
  // Each parameter named: mean, variance, gamma, beta.
  for (int which = 0; which < 4; ++which) {
    a = valid();
    const float** param[] = {&a.mean, &a.variance, &a.gamma, &a.beta};
    *param[which] = reinterpret_cast<const float*>(reinterpret_cast<const unsigned char*>(*param[which]) + 2);
    expect_error(a, Status::kErrorMisaligned,
                 (std::string(which == 0   ? "mean"
                              : which == 1 ? "variance"
                              : which == 2 ? "gamma"
                                           : "beta") +
                  ": not aligned")
                     .c_str());
  }
  // y overlapping x without being x; y over a parameter.
  a = valid();
  a.x = y.get();
  a.y = y.get() + 1;
  a.rows = kRows - 1;
  expect_error(a, Status::kErrorInconsistentArguments, "y");
  a = valid();
  a.y = params.get() + 2 * kChannels;
  a.rows = 1;
  expect_error(a, Status::kErrorInconsistentArguments, "y: overlaps gamma");
}

TEST_F(BatchNormApplyErrors, EmptyTensorsLaunchNothing) {
  bnk::BatchNormApplyArgs a;
  a.rows = 0;
  a.channels = 5;
  EXPECT_EQ(bnk::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
  a.rows = 3;
  a.channels = 0;
  EXPECT_EQ(bnk::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
}

// ---- moving update
// --------------------------------------------------------------------------------------------

struct UpdateBuffers {
  std::vector<float> mean;
  std::vector<float> var;
  std::vector<float> moving_mean;
  std::vector<float> moving_var;
};

UpdateBuffers random_update_inputs(std::mt19937_64& rng, std::size_t channels) {
  UpdateBuffers u;
  u.mean = normal_floats(rng, channels, 0.3, 2.0);
  u.var = normal_floats(rng, channels, 0.0, 1.5);
  u.moving_mean = normal_floats(rng, channels, 0.0, 1.0);
  u.moving_var = normal_floats(rng, channels, 1.0, 0.3);
  for (float& v : u.var) {
    v = v * v;
  }
  for (float& v : u.moving_var) {
    v = v * v;
  }
  return u;
}

TEST(BatchNormMovingUpdate, MatchesTheFormulaForEveryCount) {
  auto rng = rng_for_test();
  const std::int64_t counts[] = {0, 1, 2, 3, 7, 1000, std::numeric_limits<std::int32_t>::max(), -5};
  for (const std::int64_t channels : {1, 7, 300}) { // 300: two blocks
    for (const float momentum : {0.99f, 0.9f, 0.5f, 0.0f, 1.0f}) {
      for (const std::int64_t count : counts) {
        const auto nc = static_cast<std::size_t>(channels);
        const UpdateBuffers in = random_update_inputs(rng, nc);
        DeviceBuffer<float> d_mean(in.mean);
        DeviceBuffer<float> d_var(in.var);
        DeviceBuffer<float> d_mm(in.moving_mean);
        DeviceBuffer<float> d_mv(in.moving_var);
        DeviceBuffer<std::int32_t> d_count(std::vector<std::int32_t>{static_cast<std::int32_t>(count)});
        bnk::BatchNormMovingUpdateArgs a;
        a.channels = channels;
        a.momentum = momentum;
        a.mean = d_mean.get();
        a.variance = d_var.get();
        a.count = d_count.get();
        a.moving_mean = d_mm.get();
        a.moving_variance = d_mv.get();
        EXPECT_EQ(bnk::workspace_size(a), 0u);
        ASSERT_EQ(bnk::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
        CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
        const std::vector<float> mm = d_mm.download();
        const std::vector<float> mv = d_mv.download();
        const std::string what = "C=" + std::to_string(channels) + " momentum=" + std::to_string(momentum) +
                                 " count=" + std::to_string(count) + "; " + seed_note();
        const bn::MovingUpdate f(momentum);
        for (std::size_t c = 0; c < nc; ++c) {
          if (count < 2) {
            ASSERT_EQ(mm[c], in.moving_mean[c]) << what << ": no update below 2 valid positions";
            ASSERT_EQ(mv[c], in.moving_var[c]) << what;
            continue;
          }
          // Bit-exact: the header fixes every rounding.
          ASSERT_EQ(mm[c], f.mean(in.moving_mean[c], in.mean[c])) << what << " channel " << c;
          ASSERT_EQ(mv[c], f.variance(in.moving_var[c], in.var[c], count)) << what << " channel " << c;
          // And close to the exact moving average (a few roundings of terms of these magnitudes).
          const double m = momentum;
          const double n = static_cast<double>(count);
          const double want_m = in.moving_mean[c] * m + in.mean[c] * (1.0 - m);
          const double want_v = in.moving_var[c] * m + in.var[c] * n / (n - 1.0) * (1.0 - m);
          const double tol_m = 4.0 * bn::kU32 * (std::fabs(in.moving_mean[c]) + std::fabs(in.mean[c]));
          const double tol_v = 6.0 * bn::kU32 * (std::fabs(in.moving_var[c]) + 2.0 * std::fabs(in.var[c]));
          EXPECT_NEAR(mm[c], want_m, tol_m) << what;
          EXPECT_NEAR(mv[c], want_v, tol_v) << what;
        }
      }
    }
  }
}

TEST(BatchNormMovingUpdate, HandWorkedValues) {
  // momentum 0.75 (1 - momentum exact; 0.5 would hide momentum and 1 - momentum swapped), n = 5:
  // unbiased = var * 1.25.
  DeviceBuffer<float> mean(std::vector<float>{2.0f, -4.0f});
  DeviceBuffer<float> var(std::vector<float>{4.0f, 0.8f});
  DeviceBuffer<float> mm(std::vector<float>{0.0f, 1.0f});
  DeviceBuffer<float> mv(std::vector<float>{1.0f, 3.0f});
  DeviceBuffer<std::int32_t> count(std::vector<std::int32_t>{5});
  bnk::BatchNormMovingUpdateArgs a;
  a.channels = 2;
  a.momentum = 0.75f;
  a.mean = mean.get();
  a.variance = var.get();
  a.count = count.get();
  a.moving_mean = mm.get();
  a.moving_variance = mv.get();
  ASSERT_EQ(bnk::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
  // 0 * 0.75 + 2 * 0.25 = 0.5; 1 * 0.75 - 4 * 0.25 = -0.25.
  EXPECT_EQ(mm.download(), (std::vector<float>{0.5f, -0.25f}));
  // 1 * 0.75 + 4 * 1.25 * 0.25 = 2; 3 * 0.75 + 0.8 * 1.25 * 0.25 = 2.5 (0.8f * 1.25f rounds to 1 exactly).
  EXPECT_EQ(mv.download(), (std::vector<float>{2.0f, 2.5f}));
}

TEST(BatchNormMovingUpdate, BadArgumentsWriteNothing) {
  const std::size_t channels = 6;
  DeviceBuffer<float> buf(std::vector<float>(5 * channels, 1.0f));
  DeviceBuffer<std::int32_t> count(std::vector<std::int32_t>{10});
  auto valid = [&] {
    bnk::BatchNormMovingUpdateArgs a;
    a.channels = static_cast<std::int64_t>(channels);
    a.mean = buf.get();
    a.variance = buf.get() + channels;
    a.count = count.get();
    a.moving_mean = buf.get() + 2 * channels;
    a.moving_variance = buf.get() + 3 * channels;
    return a;
  };
  auto expect_error = [&](const bnk::BatchNormMovingUpdateArgs& a, Status want, const char* arg) {
    EXPECT_EQ(bnk::can_implement(a), want) << arg;
    EXPECT_EQ(bnk::run(a, nullptr, 0, nullptr), want) << arg;
    const std::string msg = culayers::last_error_message();
    EXPECT_NE(msg.find(std::string("batch_norm_moving_update: ") + arg), std::string::npos) << msg;
    CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
    for (const float v : buf.download()) {
      ASSERT_EQ(v, 1.0f) << arg << ": something was written";
    }
  };
  EXPECT_EQ(bnk::can_implement(valid()), Status::kSuccess);
  auto a = valid();
  a.channels = -1;
  expect_error(a, Status::kErrorInvalidShape, "channels");
  for (const float m : {-0.1f, 1.5f, std::nanf("")}) {
    a = valid();
    a.momentum = m;
    expect_error(a, Status::kErrorInvalidValue, "momentum");
  }
  a = valid();
  a.mean = nullptr;
  expect_error(a, Status::kErrorNullPointer, "mean");
  a = valid();
  a.variance = nullptr;
  expect_error(a, Status::kErrorNullPointer, "variance");
  a = valid();
  a.count = nullptr;
  expect_error(a, Status::kErrorNullPointer, "count");
  a = valid();
  a.moving_mean = nullptr;
  expect_error(a, Status::kErrorNullPointer, "moving_mean");
  a = valid();
  a.moving_variance = nullptr;
  expect_error(a, Status::kErrorNullPointer, "moving_variance");
  a = valid();
  a.moving_mean = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(buf.get()) + 2);
  expect_error(a, Status::kErrorMisaligned, "moving_mean");
  a = valid();
  a.moving_variance = a.moving_mean + 1;
  expect_error(a, Status::kErrorInconsistentArguments, "moving_variance");
  a = valid();
  a.moving_mean = buf.get(); // == mean
  expect_error(a, Status::kErrorInconsistentArguments, "moving_mean: overlaps mean");
  a = valid();
  a.moving_variance = buf.get() + channels; // == variance
  expect_error(a, Status::kErrorInconsistentArguments, "moving_variance: overlaps variance");
  a = valid();
  a.count = reinterpret_cast<std::int32_t*>(a.moving_variance + 2);
  expect_error(a, Status::kErrorInconsistentArguments, "moving_variance: overlaps count");
  // Nothing to do: channels 0 needs no pointers.
  bnk::BatchNormMovingUpdateArgs empty;
  EXPECT_EQ(bnk::run(empty, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
}

// ---- merge moments (channels-first statistics)
// -------------------------------------------------------------------------------

struct MergeRun {
  std::vector<float> mean;
  std::vector<float> variance;
  std::int32_t count = -7; // poison: left alone unless count_out is written
};

MergeRun run_merge(const std::vector<float>& mean, const std::vector<float>& var, std::int64_t rows,
                   std::int64_t channels, std::int64_t count_per_row, int max_blocks = 0) {
  const auto nc = static_cast<std::size_t>(channels);
  DeviceBuffer<float> d_mean(mean);
  DeviceBuffer<float> d_var(var);
  DeviceBuffer<float> out(std::vector<float>(2 * nc, -99.0f));
  DeviceBuffer<std::int32_t> count(std::vector<std::int32_t>{-7});
  bnk::BatchNormMergeMomentsArgs a;
  a.rows = rows;
  a.channels = channels;
  a.count_per_row = count_per_row;
  a.mean = d_mean.get();
  a.variance = d_var.get();
  a.mean_out = out.get();
  a.variance_out = out.get() + nc;
  a.count_out = count.get();
  a.max_blocks = max_blocks;
  EXPECT_EQ(bnk::workspace_size(a), 0u);
  EXPECT_EQ(bnk::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess); // (ASSERT_* needs a void function)
  const std::vector<float> o = out.download();
  MergeRun r;
  r.mean.assign(o.begin(), o.begin() + static_cast<std::ptrdiff_t>(nc));
  r.variance.assign(o.begin() + static_cast<std::ptrdiff_t>(nc), o.end());
  r.count = count.download()[0];
  return r;
}

TEST(BatchNormMergeMoments, MatchesTheDoubleMergeAndRepeatsBitForBit) {
  auto rng = rng_for_test();
  // {rows, C, count_per_row, max_blocks}: rows above the block's 8 warps (each thread sums several rows), C
  // not a multiple of the 32-channel tile, grids capped below the tile count (the grid-stride loop over
  // tiles: 100 channels = 4 tiles in 1 block, 70 = 3 tiles in 2 blocks), empty inputs.
  const std::int64_t shapes[][4] = {{1, 1, 5, 0},   {3, 7, 4, 0}, {130, 5, 2, 0}, {8, 300, 1000, 0},
                                    {2, 100, 3, 1}, {1, 3, 1, 0}, {257, 2, 9, 0}, {33, 70, 4, 2},
                                    {9, 33, 2, 0},  {0, 4, 3, 0}, {5, 3, 0, 0}};
  for (const auto& s : shapes) {
    const std::int64_t rows = s[0];
    const std::int64_t channels = s[1];
    const std::int64_t per_row = s[2];
    const int max_blocks = static_cast<int>(s[3]);
    const auto n = static_cast<std::size_t>(rows * channels);
    const std::vector<float> mean = normal_floats(rng, n, 3.0, 2.0);
    std::vector<float> var = normal_floats(rng, n, 0.0, 1.5);
    for (float& v : var) {
      v = v * v;
    }
    const MergeRun got = run_merge(mean, var, rows, channels, per_row, max_blocks);
    const bn::Moments want = bn::merge_moments(widen(mean), widen(var), rows, channels, per_row);
    const std::string what = "rows=" + std::to_string(rows) + " C=" + std::to_string(channels) +
                             " per_row=" + std::to_string(per_row) +
                             " max_blocks=" + std::to_string(max_blocks) + "; " + seed_note();
    EXPECT_EQ(got.count, rows * per_row) << what;
    for (std::size_t c = 0; c < static_cast<std::size_t>(channels); ++c) {
      // Double sums rounded once to float: half an ulp of float, plus the double sums' own error (relative
      // 2^-53 per term, far below) -- one float ulp of slack.
      EXPECT_NEAR(got.mean[c], want.mean[c], bn::ulp<float>(want.mean[c])) << what << " channel " << c;
      EXPECT_NEAR(got.variance[c], want.variance[c], bn::ulp<float>(want.variance[c]))
          << what << " channel " << c;
    }
    const MergeRun again = [&] { // emulated: another lane / warp order
      culayers::test::ScheduleSeed seed(0x5eed1234);
      return run_merge(mean, var, rows, channels, per_row, max_blocks);
    }();
    EXPECT_EQ(std::memcmp(again.mean.data(), got.mean.data(), got.mean.size() * 4), 0) << what;
    EXPECT_EQ(std::memcmp(again.variance.data(), got.variance.data(), got.variance.size() * 4), 0) << what;
  }
}

TEST(BatchNormMergeMoments, HandWorkedValuesAndSaturatedCount) {
  // Two rows of one channel: parts {0, 2} (mean 1, variance 1) and {4, 6} (mean 5, variance 1); the union
  // {0, 2, 4, 6} has mean 3 and biased variance (9 + 1 + 1 + 9) / 4 = 5 = 1 + ((1-3)^2 + (5-3)^2) / 2.
  MergeRun r = run_merge({1.0f, 5.0f}, {1.0f, 1.0f}, 2, 1, 2);
  EXPECT_EQ(r.mean, std::vector<float>{3.0f});
  EXPECT_EQ(r.variance, std::vector<float>{5.0f});
  EXPECT_EQ(r.count, 4);
  // rows x count_per_row beyond int32: the count saturates (n / (n - 1) is 1 in float there).
  r = run_merge({1.0f, 5.0f}, {1.0f, 1.0f}, 2, 1, std::numeric_limits<std::int32_t>::max());
  EXPECT_EQ(r.count, std::numeric_limits<std::int32_t>::max());
  EXPECT_EQ(r.mean, std::vector<float>{3.0f});
}

TEST(BatchNormMergeMoments, BadArgumentsWriteNothing) {
  const std::size_t channels = 4;
  const std::size_t rows = 3;
  DeviceBuffer<float> in(std::vector<float>(2 * rows * channels, 1.0f));
  DeviceBuffer<float> out(std::vector<float>(2 * channels + 1, 2.0f));
  DeviceBuffer<std::int32_t> count(std::vector<std::int32_t>{-7});
  auto valid = [&] {
    bnk::BatchNormMergeMomentsArgs a;
    a.rows = static_cast<std::int64_t>(rows);
    a.channels = static_cast<std::int64_t>(channels);
    a.count_per_row = 10;
    a.mean = in.get();
    a.variance = in.get() + rows * channels;
    a.mean_out = out.get();
    a.variance_out = out.get() + channels;
    a.count_out = count.get();
    return a;
  };
  auto expect_error = [&](const bnk::BatchNormMergeMomentsArgs& a, Status want, const char* arg) {
    EXPECT_EQ(bnk::can_implement(a), want) << arg;
    EXPECT_EQ(bnk::run(a, nullptr, 0, nullptr), want) << arg;
    const std::string msg = culayers::last_error_message();
    EXPECT_NE(msg.find(std::string("batch_norm_merge_moments: ") + arg), std::string::npos) << msg;
    CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
    for (const float v : out.download()) {
      ASSERT_EQ(v, 2.0f) << arg << ": an output was written";
    }
    ASSERT_EQ(count.download()[0], -7) << arg << ": count_out was written";
    for (const float v : in.download()) {
      ASSERT_EQ(v, 1.0f) << arg << ": an input was written";
    }
  };
  EXPECT_EQ(bnk::can_implement(valid()), Status::kSuccess);
  auto a = valid();
  a.rows = -1;
  expect_error(a, Status::kErrorInvalidShape, "sizes");
  a = valid();
  a.count_per_row = -2;
  expect_error(a, Status::kErrorInvalidShape, "sizes");
  a = valid();
  a.channels = std::numeric_limits<std::int64_t>::max() / 2;
  expect_error(a, Status::kErrorSizeLimit, "sizes");
  a = valid();
  a.max_blocks = -1;
  expect_error(a, Status::kErrorInvalidValue, "max_blocks");
  a = valid();
  a.mean = nullptr;
  expect_error(a, Status::kErrorNullPointer, "mean");
  a = valid();
  a.variance = nullptr;
  expect_error(a, Status::kErrorNullPointer, "variance");
  a = valid();
  a.mean_out = nullptr;
  expect_error(a, Status::kErrorNullPointer, "mean_out");
  a = valid();
  a.variance_out = nullptr;
  expect_error(a, Status::kErrorNullPointer, "variance_out");
  a = valid();
  a.variance_out = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(out.get()) + 2);
  expect_error(a, Status::kErrorMisaligned, "variance_out");
  a = valid();
  a.variance_out = out.get() + 1; // overlaps mean_out
  expect_error(a, Status::kErrorInconsistentArguments, "variance_out");
  a = valid();
  a.count_out = reinterpret_cast<std::int32_t*>(out.get() + channels + 3); // inside variance_out
  expect_error(a, Status::kErrorInconsistentArguments, "count_out");
  a = valid();
  a.mean_out = const_cast<float*>(a.variance); // over an input
  expect_error(a, Status::kErrorInconsistentArguments, "mean_out");
  // Nothing to read: null inputs are fine, zeros are written.
  a = valid();
  a.count_per_row = 0;
  a.mean = nullptr;
  a.variance = nullptr;
  EXPECT_EQ(bnk::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(count.download()[0], 0);
  const std::vector<float> o = out.download();
  for (std::size_t c = 0; c < 2 * channels; ++c) {
    EXPECT_EQ(o[c], 0.0f) << c;
  }
  bnk::BatchNormMergeMomentsArgs empty;
  EXPECT_EQ(bnk::run(empty, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
}

// ---- TSan subset -----------------------------------------------------------------------------------------

// Small grids for the TSan preset (which runs only *Tsan* tests): the merge kernel's shared partials
// (three barriers per tile, reused by the next tile of the grid-stride loop) and the apply kernel's
// shared staging of the per-channel factors, channels last and first.
TEST(BatchNormTsan, MergeAndApplySmallGrids) {
  auto rng = rng_for_test();
  const std::int64_t rows = 20;
  const std::int64_t channels = 70; // 3 tiles of 32 channels in 1 block
  const auto n = static_cast<std::size_t>(rows * channels);
  const std::vector<float> mean = normal_floats(rng, n, 1.0, 2.0);
  std::vector<float> var = normal_floats(rng, n, 0.0, 1.0);
  for (float& v : var) {
    v = v * v;
  }
  const MergeRun got = run_merge(mean, var, rows, channels, 6, 1);
  const bn::Moments want = bn::merge_moments(widen(mean), widen(var), rows, channels, 6);
  for (std::size_t c = 0; c < static_cast<std::size_t>(channels); ++c) {
    EXPECT_NEAR(got.mean[c], want.mean[c], bn::ulp<float>(want.mean[c])) << c << "; " << seed_note();
    EXPECT_NEAR(got.variance[c], want.variance[c], bn::ulp<float>(want.variance[c]))
        << c << "; " << seed_note();
  }
  for (const std::int64_t inner : {std::int64_t{1}, std::int64_t{9}}) {
    ApplyCase c;
    c.rows = 6;
    c.channels = 40;
    c.inner = inner;
    c.max_blocks = 2;
    check_apply<float>(rng, c);
  }
}

} // namespace
