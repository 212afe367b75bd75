// The benchmark's sum / sum-of-squares channels-last group-norm peer (bench/kernels/gn_nhwc_sums.hpp), on
// both backends: against the double reference for every dtype, with and without gamma / beta and SiLU,
// both vector widths (C / G even and aligned; odd C / G; a misaligned view), groups per block from one to
// all, HW ranges with tails; its plans; and the problems it rejects. A baseline that computes the wrong
// thing would make every comparison with it meaningless, so it is held to the tolerance the benchmark's
// own verification uses (bench/bench_group_norm.cu, check_forward).
#include "bench/kernels/gn_nhwc_sums.hpp"

#include "tests/reference/masked_reduce_reference.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace {

namespace b = culayers::bench;
using culayers::DType;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::seed_note;
using culayers::test::masked::Dtype;

struct Case {
  std::int64_t n, hw, c, g;
  bool affine;
  bool silu;
  int offset; // elements by which x and y are shifted from their allocations
};

// sms: the SM count the plan is made for (the device's, or 1: fewer, longer HW ranges, so the kernels'
// 4-row unrolled loops run as well as their tails).
template <class T>
void run_case(const Case& k, int sms, std::mt19937_64& rng) {
  const std::string what =
      std::string(Dtype<T>::kName) + " N=" + std::to_string(k.n) + " HW=" + std::to_string(k.hw) +
      " C=" + std::to_string(k.c) + " G=" + std::to_string(k.g) + (k.affine ? " affine" : "") +
      (k.silu ? " silu" : "") + " offset=" + std::to_string(k.offset) + "; " + seed_note();
  SCOPED_TRACE(what);
  const std::size_t count = static_cast<std::size_t>(k.n * k.hw * k.c);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<double> offsets(static_cast<std::size_t>(k.c));
  for (double& o : offsets) {
    o = uniform(rng);
  }
  std::vector<T> x(count + static_cast<std::size_t>(k.offset));
  std::vector<double> xd(count);
  for (std::size_t i = 0; i < count; ++i) {
    x[i + static_cast<std::size_t>(k.offset)] =
        Dtype<T>::from_double(offsets[i % static_cast<std::size_t>(k.c)] + normal(rng));
    xd[i] = Dtype<T>::to_double(x[i + static_cast<std::size_t>(k.offset)]);
  }
  std::vector<float> gamma(static_cast<std::size_t>(k.c));
  std::vector<float> beta(static_cast<std::size_t>(k.c));
  for (std::size_t ch = 0; ch < gamma.size(); ++ch) {
    gamma[ch] = static_cast<float>(1.0 + 0.5 * uniform(rng));
    beta[ch] = static_cast<float>(0.5 * uniform(rng));
  }
  DeviceBuffer<T> x_dev(x);
  DeviceBuffer<T> y_dev(x.size() + 1); // one guard element after the view
  DeviceBuffer<float> gamma_dev(gamma);
  DeviceBuffer<float> beta_dev(beta);
  y_dev.fill_bytes(0xff);

  b::NhwcSumsProblem p;
  p.dtype = Dtype<T>::kDType;
  p.x = x_dev.get() + k.offset;
  p.y = y_dev.get() + k.offset;
  p.gamma = k.affine ? gamma_dev.get() : nullptr;
  p.beta = k.affine ? beta_dev.get() : nullptr;
  p.n = k.n;
  p.hw = k.hw;
  p.c = k.c;
  p.groups = k.g;
  p.silu = k.silu;
  DeviceBuffer<float> workspace(b::nhwc_sums_workspace_bytes(p) / sizeof(float) + 1);
  b::NhwcSumsPlan plan;
  ASSERT_EQ(b::nhwc_sums_plan(p, sms, &plan), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(b::nhwc_sums_group_norm(p, workspace.get(), workspace.bytes(), sms, nullptr), Status::kSuccess)
      << culayers::last_error_message();
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<T> y = y_dev.download();

  const std::int64_t cpg = k.c / k.g;
  const double m = static_cast<double>(cpg * k.hw);
  const double u = std::ldexp(1.0, -Dtype<T>::kMantissaBits);
  for (std::int64_t n = 0; n < k.n; ++n) {
    for (std::int64_t g = 0; g < k.g; ++g) {
      double sum = 0.0;
      for (std::int64_t s = 0; s < k.hw; ++s) {
        for (std::int64_t j = 0; j < cpg; ++j) {
          sum += xd[static_cast<std::size_t>((n * k.hw + s) * k.c + g * cpg + j)];
        }
      }
      const double mean = sum / m;
      double m2 = 0.0;
      for (std::int64_t s = 0; s < k.hw; ++s) {
        for (std::int64_t j = 0; j < cpg; ++j) {
          const double d = xd[static_cast<std::size_t>((n * k.hw + s) * k.c + g * cpg + j)] - mean;
          m2 += d * d;
        }
      }
      const double rstd = 1.0 / std::sqrt(m2 / m + static_cast<double>(p.epsilon));
      for (std::int64_t s = 0; s < k.hw; ++s) {
        for (std::int64_t j = 0; j < cpg; ++j) {
          const std::int64_t ch = g * cpg + j;
          const std::size_t i = static_cast<std::size_t>((n * k.hw + s) * k.c + ch);
          const double ga = k.affine ? gamma[static_cast<std::size_t>(ch)] : 1.0;
          const double be = k.affine ? beta[static_cast<std::size_t>(ch)] : 0.0;
          const double xh = (xd[i] - mean) * rstd;
          const double pre = xh * ga + be;
          const double ref = k.silu ? pre / (1.0 + std::exp(-pre)) : pre;
          const double got = Dtype<T>::to_double(y[i + static_cast<std::size_t>(k.offset)]);
          // The benchmark's verification tolerance (check_forward): 4 rounding units of the output's dtype
          // over the terms' magnitudes, plus 1e-5 for float32 statistics.
          const double tol = 4.0 * u * (std::fabs(ref) + std::fabs(xh * ga) + std::fabs(be)) +
                             1e-5 * (1.0 + std::fabs(xh * ga));
          ASSERT_NEAR(got, ref, tol) << "n=" << n << " s=" << s << " c=" << ch;
        }
      }
    }
  }
  // Nothing before or after the view was written.
  const auto* bytes = reinterpret_cast<const unsigned char*>(y.data());
  for (std::size_t i = 0; i < static_cast<std::size_t>(k.offset) * sizeof(T); ++i) {
    ASSERT_EQ(bytes[i], 0xff) << "before the view";
  }
  for (std::size_t i = (count + static_cast<std::size_t>(k.offset)) * sizeof(T); i < y.size() * sizeof(T);
       ++i) {
    ASSERT_EQ(bytes[i], 0xff) << "after the view";
  }
  if (sms == 1 && k.hw >= 20) {
    EXPECT_GE(plan.hw_per_block, 4) << "the unrolled loops should run";
  }
}

const Case kCases[] = {
    {2, 37, 320, 32, true, false, 0},  // C/G = 10: 2-wide, all 32 groups in a 160-thread block
    {2, 37, 320, 32, true, true, 1},   // misaligned view: 1-wide
    {1, 101, 128, 32, false, true, 0}, // C/G = 4: 64-thread blocks, no affine
    {3, 5, 12, 4, true, false, 0},     // C/G = 3: 1-wide
    {1, 9, 1280, 32, true, true, 0},   // C/G = 40: 16 groups per 320-thread block, two blocks across C
    {2, 3, 1000, 1, true, false, 0},   // one group of 1000 channels: a 500-thread block
    {4, 23, 256, 32, true, false, 0},  // the training shape's channels
};

TEST(NhwcSumsBaseline, MatchesTheReference) {
  std::mt19937_64 rng = rng_for_test();
  for (const Case& k : kCases) {
    for (const int sms : {culayers::test::sm_count(), 1}) {
      run_case<float>(k, sms, rng);
      run_case<__half>(k, sms, rng);
      run_case<__nv_bfloat16>(k, sms, rng);
    }
  }
}

b::NhwcSumsProblem shape(std::int64_t n, std::int64_t hw, std::int64_t c, std::int64_t g) {
  b::NhwcSumsProblem p;
  p.n = n;
  p.hw = hw;
  p.c = c;
  p.groups = g;
  return p;
}

// The plans the benchmark's shapes get on an H100 (132 SMs): channels per block, threads, rows per block.
TEST(NhwcSumsBaseline, Plans) {
  struct Expect {
    b::NhwcSumsProblem p;
    int vec;
    std::int64_t cpb;
    int threads;
    unsigned grid_x, grid_y;
    std::int64_t hw_per_block;
  };
  const Expect expects[] = {
      // UNet C320 64x64: 160 threads, 2 x 132 x 12 blocks wanted: 792 ranges of 6 rows -> 683 ranges.
      {shape(2, 64 * 64, 320, 32), 2, 320, 160, 1, 683, 6},
      // C1280: 40 channels per group, 16 groups per 320-thread block.
      {shape(2, 32 * 32, 1280, 32), 2, 640, 320, 2, 171, 6},
      // VAE C128 1024x1024: 64 threads, 132 x 32 ranges of 249 rows (the last one shorter).
      {shape(1, 1024 * 1024, 128, 32), 2, 128, 64, 1, 4212, 249},
      // C/G = 3: one channel per thread, 12 channels in a 12-thread block.
      {shape(3, 5, 12, 4), 1, 12, 12, 1, 5, 1},
  };
  for (const Expect& e : expects) {
    b::NhwcSumsPlan plan;
    ASSERT_EQ(b::nhwc_sums_plan(e.p, 132, &plan), Status::kSuccess) << culayers::last_error_message();
    EXPECT_EQ(plan.vec, e.vec) << e.p.c;
    EXPECT_EQ(plan.channels_per_block, e.cpb) << e.p.c;
    EXPECT_EQ(plan.threads, e.threads) << e.p.c;
    EXPECT_EQ(plan.grid_x, e.grid_x) << e.p.c;
    EXPECT_EQ(plan.grid_y, e.grid_y) << e.p.c;
    EXPECT_EQ(plan.grid_z, static_cast<unsigned>(e.p.n)) << e.p.c;
    EXPECT_EQ(plan.hw_per_block, e.hw_per_block) << e.p.c;
    // Every row is covered once.
    EXPECT_GE(static_cast<std::int64_t>(plan.grid_y) * plan.hw_per_block, e.p.hw);
    EXPECT_LT(static_cast<std::int64_t>(plan.grid_y - 1) * plan.hw_per_block, e.p.hw);
  }
}

// The HW ranges stop at the grid's y limit: 1024 SMs x 64 blocks of 32 threads would want 65536.
TEST(NhwcSumsBaseline, HwRangesStopAtTheGridLimit) {
  b::NhwcSumsPlan plan;
  ASSERT_EQ(b::nhwc_sums_plan(shape(1, 1 << 20, 32, 32), 1024, &plan), Status::kSuccess);
  EXPECT_EQ(plan.threads, 32);
  EXPECT_EQ(plan.hw_per_block, 17); // ceil(2^20 / 65535)
  EXPECT_EQ(plan.grid_y, 61681u);
  EXPECT_LE(plan.grid_y, 65535u);
}

TEST(NhwcSumsBaseline, RejectsWhatItDoesNotSupport) {
  struct Bad {
    b::NhwcSumsProblem p;
    const char* message;
  };
  const Bad bad[] = {
      {shape(2, 16, 30, 4), "divisible by G"},  // C % G != 0
      {shape(1, 16, 2048, 1), "wider than"},    // 1024 threads of 2 channels
      {shape(70000, 1, 32, 32), "above 65535"}, // grid z
      {shape(1, 16, 32, 0), "divisible by G"},  // G = 0
  };
  for (const Bad& k : bad) {
    b::NhwcSumsPlan plan;
    EXPECT_EQ(b::nhwc_sums_plan(k.p, 132, &plan), Status::kErrorInvalidValue) << k.p.c;
    culayers::test::expect_message_contains(k.message, "C=" + std::to_string(k.p.c));
  }
  // Nothing is launched for an empty problem, and a real one checks its pointers and workspace.
  DeviceBuffer<float> x(64);
  DeviceBuffer<float> y(64);
  y.fill_bytes(0x5a);
  b::NhwcSumsProblem p = shape(1, 2, 32, 8);
  p.dtype = DType::kFloat32;
  p.x = x.get();
  p.y = y.get();
  DeviceBuffer<float> ws(2 * 8);
  EXPECT_EQ(b::nhwc_sums_group_norm(p, nullptr, 0, 4, nullptr), Status::kErrorNullPointer);
  EXPECT_EQ(b::nhwc_sums_group_norm(p, ws.get(), ws.bytes() - 4, 4, nullptr),
            Status::kErrorWorkspaceTooSmall);
  p.hw = 0;
  EXPECT_EQ(b::nhwc_sums_group_norm(p, nullptr, 0, 4, nullptr), Status::kSuccess);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  for (float v : y.download()) {
    unsigned char bytes[sizeof(float)];
    std::memcpy(bytes, &v, sizeof(float));
    ASSERT_EQ(bytes[0], 0x5a);
  }
}

} // namespace
