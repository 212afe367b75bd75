// Tests of kernels/common/reduce.cuh: warp and block reductions (sum/max/min) and Welford statistics,
// checked against double-precision CPU references on fresh random inputs, on both backends.
#include "kernels/common/common.cuh"
#include "tests/common/common_test_helpers.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace {

namespace ck = culayers::kernels;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::common::bits_of;
using culayers::test::common::DTypeTraits;
using culayers::test::common::seed_trace;

enum class Kind { kSum, kMax, kMin };

const char* kind_name(Kind k) {
  return k == Kind::kSum ? "sum" : (k == Kind::kMax ? "max" : "min");
}

constexpr int log2_int(int v) {
  int l = 0;
  while ((1 << l) < v) {
    ++l;
  }
  return l;
}

// ---- warp reductions ----------------------------------------------------------------------------------

template <int Width, Kind K, class T>
CULAYERS_GLOBAL void warp_reduce_kernel(const T* in, T* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const T v = ck::load(in + i);
  T r;
  if constexpr (K == Kind::kSum) {
    r = ck::warp_reduce_sum<Width>(v);
  } else if constexpr (K == Kind::kMax) {
    r = ck::warp_reduce_max<Width>(v);
  } else {
    r = ck::warp_reduce_min<Width>(v);
  }
  ck::store(out + i, r);
}

constexpr unsigned kWarpTestBlock = 64; // two warps per block: groups never straddle warps
constexpr unsigned kWarpTestGrid = 2;
constexpr unsigned kWarpTestThreads = kWarpTestBlock * kWarpTestGrid;

template <class T, int Width, Kind K>
void check_warp_reduce(std::mt19937_64& rng, bool plant_nans) {
  SCOPED_TRACE(testing::Message() << DTypeTraits<T>::kName << " warp_reduce_" << kind_name(K)
                                  << "<Width=" << Width << ">" << (plant_nans ? " with NaNs" : ""));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<T> host(kWarpTestThreads);
  for (auto& v : host) {
    v = ck::from_float<T>(normal(rng));
  }
  constexpr int kGroups = static_cast<int>(kWarpTestThreads) / Width;
  std::vector<bool> group_has_nan(kGroups, false);
  if (plant_nans) {
    // One NaN (always the same quiet NaN, so every lane agrees on its bits) in every other group, at a
    // random lane: the NaN must win wherever it sits in the butterfly.
    std::uniform_int_distribution<int> lane(0, Width - 1);
    for (int g = 0; g < kGroups; g += 2) {
      host[static_cast<std::size_t>(g * Width + lane(rng))] =
          ck::from_float<T>(std::numeric_limits<float>::quiet_NaN());
      group_has_nan[static_cast<std::size_t>(g)] = true;
    }
  }
  DeviceBuffer<T> in(host);
  DeviceBuffer<T> out(kWarpTestThreads);
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH((warp_reduce_kernel<Width, K, T>), dim3(kWarpTestGrid),
                                       dim3(kWarpTestBlock), 0, nullptr, in.get(), out.get()));
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<T> got = out.download();

  int failures = 0;
  for (int g = 0; g < kGroups && failures < 5; ++g) {
    const std::size_t first = static_cast<std::size_t>(g * Width);
    double sum = 0.0;
    double abs_sum = 0.0;
    float mx = -std::numeric_limits<float>::infinity();
    float mn = std::numeric_limits<float>::infinity();
    for (int l = 0; l < Width; ++l) {
      const float x = ck::to_float(host[first + static_cast<std::size_t>(l)]);
      sum += x;
      abs_sum += std::fabs(x);
      mx = std::max(mx, x);
      mn = std::min(mn, x);
    }
    for (int l = 0; l < Width; ++l) {
      const std::size_t i = first + static_cast<std::size_t>(l);
      // Every lane of a group must hold the same bits (callers broadcast by using any lane's value).
      if (bits_of(got[i]) != bits_of(got[first])) {
        ADD_FAILURE() << "group " << g << " lane " << l << ": bits 0x" << std::hex << bits_of(got[i])
                      << " differ from lane 0's 0x" << bits_of(got[first]) << std::dec;
        ++failures;
      }
    }
    const double value = ck::to_float(got[first]);
    if (group_has_nan[static_cast<std::size_t>(g)]) {
      if (!std::isnan(value)) {
        ADD_FAILURE() << "group " << g << ": a NaN input must give NaN, got " << value;
        ++failures;
      }
      continue;
    }
    if (K == Kind::kSum) {
      // The butterfly does log2(Width) rounding additions in T; each rounds a partial sum bounded by
      // sum|x| with relative error <= u(T), so |error| <= log2(Width) * u * sum|x| (first order). One
      // extra level of slack.
      const double tol = (log2_int(Width) + 1) * DTypeTraits<T>::kUnitRoundoff * abs_sum;
      if (!(std::fabs(value - sum) <= tol)) {
        ADD_FAILURE() << "group " << g << ": sum " << value << " vs reference " << sum << " (tol " << tol
                      << ")";
        ++failures;
      }
    } else {
      // max/min select one of the inputs: exact.
      const double expected = K == Kind::kMax ? mx : mn;
      if (value != expected) {
        ADD_FAILURE() << "group " << g << ": " << kind_name(K) << " " << value << " vs " << expected;
        ++failures;
      }
    }
  }
}

template <class T, Kind K>
void check_all_widths(std::mt19937_64& rng, bool plant_nans) {
  check_warp_reduce<T, 1, K>(rng, plant_nans);
  check_warp_reduce<T, 2, K>(rng, plant_nans);
  check_warp_reduce<T, 4, K>(rng, plant_nans);
  check_warp_reduce<T, 8, K>(rng, plant_nans);
  check_warp_reduce<T, 16, K>(rng, plant_nans);
  check_warp_reduce<T, 32, K>(rng, plant_nans);
}

template <class T>
void check_all_kinds(std::mt19937_64& rng, bool plant_nans) {
  check_all_widths<T, Kind::kSum>(rng, plant_nans);
  check_all_widths<T, Kind::kMax>(rng, plant_nans);
  check_all_widths<T, Kind::kMin>(rng, plant_nans);
}

TEST(CommonWarpReduce, FloatMatchesReferenceAndLanesAgree) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  check_all_kinds<float>(rng, false);
}

TEST(CommonWarpReduce, HalfMatchesReferenceAndLanesAgree) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  check_all_kinds<__half>(rng, false);
}

TEST(CommonWarpReduce, BFloat16MatchesReferenceAndLanesAgree) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  check_all_kinds<__nv_bfloat16>(rng, false);
}

TEST(CommonWarpReduce, NanPropagatesThroughMaxMinAndSum) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  check_all_kinds<float>(rng, true);
  check_all_kinds<__half>(rng, true);
}

template <int Width>
CULAYERS_GLOBAL void warp_sum_int_kernel(const int* in, int* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  ck::store(out + i, ck::warp_reduce_sum<Width>(ck::load(in + i)));
}

template <int Width>
void check_int_sum(std::mt19937_64& rng) {
  SCOPED_TRACE(testing::Message() << "int warp_reduce_sum<Width=" << Width << ">");
  std::uniform_int_distribution<int> dist(-1000000, 1000000);
  std::vector<int> host(kWarpTestThreads);
  for (auto& v : host) {
    v = dist(rng);
  }
  DeviceBuffer<int> in(host);
  DeviceBuffer<int> out(kWarpTestThreads);
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH((warp_sum_int_kernel<Width>), dim3(kWarpTestGrid),
                                       dim3(kWarpTestBlock), 0, nullptr, in.get(), out.get()));
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<int> got = out.download();
  for (std::size_t i = 0; i < got.size(); ++i) {
    const std::size_t first = i / Width * Width;
    long long expected = 0;
    for (std::size_t l = 0; l < static_cast<std::size_t>(Width); ++l) {
      expected += host[first + l];
    }
    ASSERT_EQ(got[i], expected) << "lane " << i;
  }
}

TEST(CommonWarpReduce, IntSumIsExact) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  check_int_sum<1>(rng);
  check_int_sum<2>(rng);
  check_int_sum<4>(rng);
  check_int_sum<8>(rng);
  check_int_sum<16>(rng);
  check_int_sum<32>(rng);
}

// Ties that compare equal but differ in bits: +0 / -0, and two NaNs with different payloads (the emulator
// fills fresh allocations with 0xFF bytes, a NaN unlike the one arithmetic produces). reduce.cuh promises
// bit-identical lanes: MaxOp/MinOp break such ties by value (the sign, one canonical NaN), so every lane
// ends with the same bits whatever operand the butterfly puts on the left.
CULAYERS_GLOBAL void warp_max_min_kernel(const float* in, float* out) {
  const unsigned i = threadIdx.x;
  const float v = ck::load(in + i);
  ck::store(out + i, ck::warp_reduce_max(v));
  ck::store(out + 32 + i, ck::warp_reduce_min(v));
}

TEST(CommonWarpReduce, MaxMinLanesAgreeOnEqualValuesWithDifferentBits) {
  const std::uint32_t nan_a = 0x7fc00000u;
  const std::uint32_t nan_b = 0xffffffffu;
  float nan_a_f;
  float nan_b_f;
  std::memcpy(&nan_a_f, &nan_a, sizeof(float));
  std::memcpy(&nan_b_f, &nan_b, sizeof(float));
  struct Case {
    const char* what;
    float fill;
    float x;
    float y;
  };
  // For max the other lanes are below the tie, for min above it; each case runs both.
  const Case cases[] = {{"+0 and -0 (max)", -1.0f, 0.0f, -0.0f},
                        {"+0 and -0 (min)", 1.0f, 0.0f, -0.0f},
                        {"two NaN payloads", 1.0f, nan_a_f, nan_b_f}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<float> host(32, c.fill);
    host[3] = c.x;
    host[20] = c.y;
    DeviceBuffer<float> in(host);
    DeviceBuffer<float> out(64);
    CULAYERS_ASSERT_CUDA(
        CULAYERS_LAUNCH(warp_max_min_kernel, dim3(1), dim3(32), 0, nullptr, in.get(), out.get()));
    CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
    const std::vector<float> got = out.download();
    int max_disagree = 0;
    int min_disagree = 0;
    for (std::size_t l = 0; l < 32; ++l) {
      max_disagree += bits_of(got[l]) != bits_of(got[0]) ? 1 : 0;
      min_disagree += bits_of(got[32 + l]) != bits_of(got[32]) ? 1 : 0;
    }
    EXPECT_EQ(max_disagree, 0) << "lanes whose warp_reduce_max bits differ from lane 0's";
    EXPECT_EQ(min_disagree, 0) << "lanes whose warp_reduce_min bits differ from lane 0's";
    // And the value they agree on is the tie's: a zero (of either sign) or a NaN, not the fill.
    const bool nan_case = std::isnan(c.x);
    if (c.fill < 0.0f || nan_case) { // max: the others are below the tie
      EXPECT_TRUE(nan_case ? std::isnan(got[0]) : got[0] == 0.0f) << "warp_reduce_max gave " << got[0];
    }
    if (c.fill > 0.0f || nan_case) { // min: the others are above the tie
      EXPECT_TRUE(nan_case ? std::isnan(got[32]) : got[32] == 0.0f) << "warp_reduce_min gave " << got[32];
    }
  }
}

// ---- block reductions ---------------------------------------------------------------------------------

// Six reductions back to back through one scratch array: a missing trailing barrier in block_reduce lets
// warp 0 overwrite scratch[0] with the next reduction's partial before every thread has read the result.
// Negated inputs give results with known exact relations to the first three (rounding is symmetric).
constexpr int kBlockResults = 6;

CULAYERS_GLOBAL void block_reduce_kernel(const float* in, float* out) {
  __shared__ float scratch[32];
  const unsigned threads = ck::block_thread_count();
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * threads + ck::linear_thread_index();
  const std::size_t total = static_cast<std::size_t>(gridDim.x) * threads;
  const float v = ck::load(in + i);
  float r[kBlockResults];
  r[0] = ck::block_reduce_sum(v, scratch);
  r[1] = ck::block_reduce_max(v, scratch);
  r[2] = ck::block_reduce_min(v, scratch);
  r[3] = ck::block_reduce_sum(-v, scratch);
  r[4] = ck::block_reduce_max(-v, scratch);
  r[5] = ck::block_reduce_min(-v, scratch);
  for (int k = 0; k < kBlockResults; ++k) {
    ck::store(out + static_cast<std::size_t>(k) * total + i, r[k]);
  }
}

std::vector<float> run_block_reduce(const std::vector<float>& host, dim3 block, unsigned grid) {
  const std::size_t threads = static_cast<std::size_t>(block.x) * block.y * block.z;
  DeviceBuffer<float> in(host);
  DeviceBuffer<float> out(kBlockResults * threads * grid);
  const cudaError_t e =
      CULAYERS_LAUNCH(block_reduce_kernel, dim3(grid), block, 0, nullptr, in.get(), out.get());
  EXPECT_EQ(e, cudaSuccess) << cudaGetErrorString(e);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return out.download();
}

TEST(CommonBlockReduce, EveryThreadGetsTheReferenceResultAndRunsAreBitIdentical) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const dim3 blocks[] = {dim3(32),   dim3(64),    dim3(96),    dim3(256),
                         dim3(1024), dim3(32, 4), dim3(16, 4), dim3(8, 4, 4)};
  constexpr unsigned kGrid = 2;
  for (const dim3 block : blocks) {
    SCOPED_TRACE(testing::Message() << "block (" << block.x << "," << block.y << "," << block.z << ")");
    const std::size_t threads = static_cast<std::size_t>(block.x) * block.y * block.z;
    const std::size_t total = threads * kGrid;
    std::vector<float> host(total);
    for (auto& v : host) {
      v = normal(rng);
    }
    const std::vector<float> got = run_block_reduce(host, block, kGrid);
    ASSERT_EQ(got.size(), kBlockResults * total);

    // Same input, same block shape: the same bits (the combination order depends only on the shape).
    const std::vector<float> again = [&] { // emulated: another lane / warp order
      culayers::test::ScheduleSeed seed(0x5eed1234);
      return run_block_reduce(host, block, kGrid);
    }();
    ASSERT_EQ(std::memcmp(got.data(), again.data(), got.size() * sizeof(float)), 0) << "two runs differ";

    for (unsigned b = 0; b < kGrid; ++b) {
      SCOPED_TRACE(testing::Message() << "block index " << b);
      const std::size_t first = b * threads;
      double sum = 0.0;
      double abs_sum = 0.0;
      float mx = -std::numeric_limits<float>::infinity();
      float mn = std::numeric_limits<float>::infinity();
      for (std::size_t t = 0; t < threads; ++t) {
        const float x = host[first + t];
        sum += x;
        abs_sum += std::fabs(x);
        mx = std::max(mx, x);
        mn = std::min(mn, x);
      }
      auto result = [&](int k, std::size_t t) {
        return got[static_cast<std::size_t>(k) * total + first + t];
      };
      for (int k = 0; k < kBlockResults; ++k) {
        for (std::size_t t = 0; t < threads; ++t) {
          ASSERT_EQ(bits_of(result(k, t)), bits_of(result(k, 0)))
              << "result " << k << ": thread " << t << " disagrees with thread 0";
        }
      }
      // Two butterfly stages of at most log2(32) = 5 rounding levels each (the second stage pads with
      // exact zeros), each level's error <= 2^-24 * sum|x|: <= 10 * 2^-24 * sum|x|; one level of slack.
      const double tol = 11 * 0x1p-24 * abs_sum;
      EXPECT_NEAR(result(0, 0), sum, tol);
      EXPECT_EQ(result(1, 0), mx);
      EXPECT_EQ(result(2, 0), mn);
      // Negation commutes with round-to-nearest-even and the order is the same: exact relations.
      EXPECT_EQ(bits_of(result(3, 0)), bits_of(-result(0, 0)));
      EXPECT_EQ(result(4, 0), -mn);
      EXPECT_EQ(result(5, 0), -mx);
    }
  }
}

TEST(CommonBlockReduce, NanPropagates) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const dim3 block(256);
  constexpr unsigned kGrid = 2;
  std::vector<float> host(256 * kGrid);
  for (auto& v : host) {
    v = normal(rng);
  }
  // Block 0 gets one NaN in its last warp (it must survive both butterfly stages); block 1 none.
  std::uniform_int_distribution<int> pos(224, 255);
  host[static_cast<std::size_t>(pos(rng))] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> got = run_block_reduce(host, block, kGrid);
  const std::size_t total = host.size();
  for (int k = 0; k < kBlockResults; ++k) {
    EXPECT_TRUE(std::isnan(got[static_cast<std::size_t>(k) * total])) << "result " << k << " of block 0";
    EXPECT_FALSE(std::isnan(got[static_cast<std::size_t>(k) * total + 256]))
        << "result " << k << " of block 1";
  }
}

// Small grid for the TSan subset (*Tsan*): back-to-back reductions through one scratch array are exactly
// where a missing barrier is a data race. Checked: with block_reduce's trailing barrier deleted, TSan
// reports the race here, while the plain emulator passes under every schedule seed (it completes warp
// collectives only after all runnable threads of the block have run, so every thread reads the result
// before warp 0 can overwrite it).
TEST(CommonBlockReduceTsan, BackToBackReductionsShareScratchSafely) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const dim3 block(32, 3);
  std::vector<float> host(96);
  double sum = 0.0;
  double abs_sum = 0.0;
  for (auto& v : host) {
    v = dist(rng);
    sum += v;
    abs_sum += std::fabs(v);
  }
  const std::vector<float> got = run_block_reduce(host, block, 1);
  // Same bound as above: two stages of at most 5 rounding levels, one of slack.
  EXPECT_NEAR(got[0], sum, 11 * 0x1p-24 * abs_sum);
  EXPECT_EQ(bits_of(got[3 * 96]), bits_of(-got[0]));
}

// ---- Welford --------------------------------------------------------------------------------------------

struct Moments {
  double mean = 0.0;
  double variance = 0.0; // biased (divides by n)
  double stddev() const { return std::sqrt(variance); }
};

// Two-pass in double over the float inputs the device sees, so input rounding is not part of the error.
Moments reference_moments(const float* x, std::size_t n) {
  Moments m;
  if (n == 0) {
    return m;
  }
  for (std::size_t i = 0; i < n; ++i) {
    m.mean += x[i];
  }
  m.mean /= static_cast<double>(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double d = x[i] - m.mean;
    m.variance += d * d;
  }
  m.variance /= static_cast<double>(n);
  return m;
}

// Error bounds for float Welford/Chan against the double reference (u = 2^-24, float's unit roundoff):
//  - mean: |error| <= 4 u sqrt(n) |mean| + 8 u sigma. Each push rounds the running mean by up to u |mean|;
//    step j's error survives with weight j/n and the roundings partly cancel, so the error grows like
//    sqrt(n) (measured: at most 1.2 u sqrt(n) |mean| over 2000 random sequences per case, n <= 20000).
//  - biased variance: |error| <= 1e-4 var + 16 u |mean| sigma. Welford accumulates deviations from the
//    running mean (computed exactly, Sterbenz), never x^2, so the offset does not cancel catastrophically;
//    but that mean is off by a few u |mean|, which gives every squared deviation a first-order error of
//    about 2 sigma * (a few u |mean|). Measured worst: 6.2 u |mean| sigma (n = 20000), 2.8 for n <= 4096;
//    the relative term covers the rounding of the m2 sum itself (measured <= 1e-5 for zero-mean data).
//    For x = 1e4 + N(0,1) this is a relative variance error of about 1e-2 at most (measured worst 1.8e-3
//    for n <= 4096, so a flat 1e-3 would be flaky), whereas E[x^2] - E[x]^2 in float is off by about
//    u * 1e8 = 6, i.e. loses every digit.
constexpr double kUnitRoundoff = 0x1p-24;

void expect_moments(float mean, float variance, float count, const float* x, std::size_t n) {
  const Moments ref = reference_moments(x, n);
  EXPECT_EQ(count, static_cast<float>(n));
  const double mean_tol = 4 * kUnitRoundoff * std::sqrt(static_cast<double>(n)) * std::fabs(ref.mean) +
                          8 * kUnitRoundoff * ref.stddev();
  const double variance_tol = 1e-4 * ref.variance + 16 * kUnitRoundoff * std::fabs(ref.mean) * ref.stddev();
  EXPECT_NEAR(mean, ref.mean, mean_tol);
  EXPECT_NEAR(variance, ref.variance, variance_tol);
}

enum class Distribution { kStandard, kShifted, kOffset1e4 };

std::vector<float> draw(std::mt19937_64& rng, Distribution d, std::size_t n) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<float> x(n);
  for (auto& v : x) {
    const double z = normal(rng);
    v = static_cast<float>(
        d == Distribution::kStandard ? z : (d == Distribution::kShifted ? 3.0 * z - 1.0 : 1e4 + z));
  }
  return x;
}

const char* distribution_name(Distribution d) {
  return d == Distribution::kStandard ? "N(0,1)"
                                      : (d == Distribution::kShifted ? "3*N(0,1)-1" : "1e4+N(0,1)");
}

TEST(CommonWelford, HostPushAndMergeMatchDoubleReference) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  for (const Distribution d : {Distribution::kStandard, Distribution::kShifted, Distribution::kOffset1e4}) {
    for (const std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{1025}, std::size_t{4096}}) {
      SCOPED_TRACE(testing::Message() << distribution_name(d) << ", n = " << n);
      const std::vector<float> x = draw(rng, d, n);
      ck::Welford all{};
      for (const float v : x) {
        ck::welford_push(all, v);
      }
      expect_moments(all.mean, ck::welford_variance(all), all.count, x.data(), n);

      // Uneven chunks (some empty) pushed separately, then merged left to right.
      std::uniform_int_distribution<std::size_t> cut(0, n);
      std::vector<std::size_t> cuts = {0, n};
      for (int c = 0; c < 6; ++c) {
        cuts.push_back(cut(rng));
      }
      std::sort(cuts.begin(), cuts.end());
      ck::Welford merged{};
      for (std::size_t c = 0; c + 1 < cuts.size(); ++c) {
        ck::Welford part{};
        for (std::size_t i = cuts[c]; i < cuts[c + 1]; ++i) {
          ck::welford_push(part, x[i]);
        }
        merged = ck::welford_merge(merged, part);
      }
      expect_moments(merged.mean, ck::welford_variance(merged), merged.count, x.data(), n);
    }
  }
}

TEST(CommonWelford, EmptyPartialsMergeAsIdentity) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  const ck::Welford empty{};
  EXPECT_EQ(empty.count, 0.0f);
  EXPECT_EQ(ck::welford_variance(empty), 0.0f);
  const ck::Welford both = ck::welford_merge(empty, empty);
  EXPECT_EQ(both.count, 0.0f);
  EXPECT_EQ(both.mean, 0.0f);
  EXPECT_EQ(ck::welford_variance(both), 0.0f);

  ck::Welford a{};
  for (const float v : draw(rng, Distribution::kShifted, 9)) {
    ck::welford_push(a, v);
  }
  for (const ck::Welford& m : {ck::welford_merge(a, empty), ck::welford_merge(empty, a)}) {
    EXPECT_EQ(bits_of(m.mean), bits_of(a.mean));
    EXPECT_EQ(bits_of(m.m2), bits_of(a.m2));
    EXPECT_EQ(bits_of(m.count), bits_of(a.count));
  }
  ck::Welford one{};
  ck::welford_push(one, 5.0f);
  EXPECT_EQ(one.mean, 5.0f);
  EXPECT_EQ(one.count, 1.0f);
  EXPECT_EQ(ck::welford_variance(one), 0.0f);
}

// Each lane pushes a lane-dependent number of values (lane % 3: some lanes stay empty), then merges over
// groups of Width lanes. Output: mean, m2, count per lane.
template <int Width>
CULAYERS_GLOBAL void warp_welford_kernel(const float* in, float* out, int per_lane) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const int count = static_cast<int>(threadIdx.x % 3u) * per_lane / 2;
  ck::Welford w{};
  for (int k = 0; k < count; ++k) {
    ck::welford_push(w, ck::load(in + static_cast<std::size_t>(i) * static_cast<std::size_t>(per_lane) +
                                 static_cast<std::size_t>(k)));
  }
  w = ck::warp_welford<Width>(w);
  ck::store(out + 3 * i, w.mean);
  ck::store(out + 3 * i + 1, w.m2);
  ck::store(out + 3 * i + 2, w.count);
}

template <int Width>
void check_warp_welford(std::mt19937_64& rng, Distribution d) {
  SCOPED_TRACE(testing::Message() << "warp_welford<Width=" << Width << ">, " << distribution_name(d));
  constexpr int kPerLane = 8;
  constexpr unsigned kThreads = 64;
  const std::vector<float> x = draw(rng, d, kThreads * kPerLane);
  DeviceBuffer<float> in(x);
  DeviceBuffer<float> out(3 * kThreads);
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH((warp_welford_kernel<Width>), dim3(1), dim3(kThreads), 0, nullptr,
                                       in.get(), out.get(), kPerLane));
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> got = out.download();
  for (unsigned g = 0; g < kThreads / Width; ++g) {
    SCOPED_TRACE(testing::Message() << "group " << g);
    const unsigned first = g * Width;
    std::vector<float> values;
    for (unsigned l = first; l < first + Width; ++l) {
      const int count = static_cast<int>(l % 3u) * kPerLane / 2;
      values.insert(values.end(), x.begin() + l * kPerLane, x.begin() + l * kPerLane + count);
      for (int c = 0; c < 3; ++c) {
        ASSERT_EQ(bits_of(got[3 * l + c]), bits_of(got[3 * first + c])) << "lane " << l << " field " << c;
      }
    }
    const float count = got[3 * first + 2];
    const float variance = count > 0.0f ? got[3 * first + 1] / count : 0.0f;
    if (values.empty()) {
      EXPECT_EQ(count, 0.0f);
      EXPECT_EQ(variance, 0.0f);
    } else {
      expect_moments(got[3 * first], variance, count, values.data(), values.size());
    }
  }
}

TEST(CommonWelford, WarpWelfordMatchesReferenceAndLanesAgree) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  for (const Distribution d : {Distribution::kStandard, Distribution::kOffset1e4}) {
    check_warp_welford<1>(rng, d);
    check_warp_welford<2>(rng, d);
    check_warp_welford<4>(rng, d);
    check_warp_welford<8>(rng, d);
    check_warp_welford<16>(rng, d);
    check_warp_welford<32>(rng, d);
  }
}

// One row of n values per block; thread t pushes t, t + threads, ...; then a block-wide merge, twice
// through the same scratch (the second merge of identical partials from all threads checks the trailing
// barrier and that merging an already merged result is not corrupted by stale scratch).
CULAYERS_GLOBAL void block_welford_kernel(const float* in, int n, float* out) {
  __shared__ ck::Welford scratch[32];
  const unsigned threads = ck::block_thread_count();
  const unsigned tid = ck::linear_thread_index();
  const float* row = in + static_cast<std::size_t>(blockIdx.x) * static_cast<std::size_t>(n);
  ck::Welford w{};
  for (int i = static_cast<int>(tid); i < n; i += static_cast<int>(threads)) {
    ck::welford_push(w, ck::load(row + i));
  }
  const ck::Welford first = ck::block_welford(w, scratch);
  // Only thread 0 contributes the second time: the result must be `first` again, bit for bit.
  const ck::Welford second = ck::block_welford(tid == 0 ? first : ck::Welford{}, scratch);
  float* o = out + 6 * (static_cast<std::size_t>(blockIdx.x) * threads + tid);
  ck::store(o + 0, first.mean);
  ck::store(o + 1, first.m2);
  ck::store(o + 2, first.count);
  ck::store(o + 3, second.mean);
  ck::store(o + 4, second.m2);
  ck::store(o + 5, second.count);
}

TEST(CommonWelford, BlockWelfordMatchesReferenceAndThreadsAgree) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  const dim3 blocks[] = {dim3(32), dim3(96), dim3(256), dim3(1024), dim3(32, 4)};
  // 0: every partial empty; 37: most threads empty; others: uneven per-thread counts.
  const int sizes[] = {0, 1, 37, 1025, 4099};
  constexpr unsigned kGrid = 2; // row 0 ~ 3*N(0,1)-1, row 1 ~ 1e4+N(0,1)
  for (const dim3 block : blocks) {
    for (const int n : sizes) {
      SCOPED_TRACE(testing::Message() << "block (" << block.x << "," << block.y << "), n = " << n);
      const unsigned threads = block.x * block.y * block.z;
      std::vector<float> x = draw(rng, Distribution::kShifted, static_cast<std::size_t>(n));
      const std::vector<float> x1 = draw(rng, Distribution::kOffset1e4, static_cast<std::size_t>(n));
      x.insert(x.end(), x1.begin(), x1.end());
      DeviceBuffer<float> in(x);
      DeviceBuffer<float> out(6 * threads * kGrid);
      CULAYERS_ASSERT_CUDA(
          CULAYERS_LAUNCH(block_welford_kernel, dim3(kGrid), block, 0, nullptr, in.get(), n, out.get()));
      CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
      const std::vector<float> got = out.download();
      for (unsigned b = 0; b < kGrid; ++b) {
        SCOPED_TRACE(testing::Message() << "row " << b);
        const std::size_t first = 6 * static_cast<std::size_t>(b) * threads;
        for (unsigned t = 0; t < threads; ++t) {
          for (int c = 0; c < 6; ++c) {
            ASSERT_EQ(bits_of(got[first + 6 * t + c]), bits_of(got[first + c % 3]))
                << "thread " << t << " field " << c;
          }
        }
        const float mean = got[first];
        const float count = got[first + 2];
        ck::Welford w{mean, got[first + 1], count};
        if (n == 0) {
          EXPECT_EQ(count, 0.0f);
          EXPECT_EQ(mean, 0.0f);
          EXPECT_EQ(ck::welford_variance(w), 0.0f);
        } else {
          expect_moments(mean, ck::welford_variance(w), count, x.data() + static_cast<std::size_t>(b) * n,
                         static_cast<std::size_t>(n));
        }
      }
    }
  }
}

// Compensated summation: ten million terms of the float nearest 0.1 (one sign, so a plain float sum's
// error grows with the count: it ends near 1.09e6) stay within a few ulp of the exact double sum. Used by
// the group-norm backward's dgamma / dbeta walk over N x splits partial rows (the same CULAYERS_HD code
// runs on the device).
TEST(CommonKahanSum, ErrorDoesNotGrowWithTheCount) {
  constexpr int kTerms = 10000000;
  const float term = 0.1f;
  ck::KahanSum kahan;
  float plain = 0.0f;
  for (int i = 0; i < kTerms; ++i) {
    kahan.add(term);
    plain += term;
  }
  const double exact = static_cast<double>(term) * kTerms;
  const double ulp = std::ldexp(1.0, std::ilogb(exact) - 23);
  EXPECT_LE(std::fabs(kahan.sum - exact), 2.0 * ulp) << kahan.sum << " vs " << exact;
  EXPECT_GT(std::fabs(plain - exact), 1000.0 * ulp) << "the plain sum should drift: " << plain;
  // Mixed signs and magnitudes: compensated, within a few ulp of the largest partial sum.
  std::mt19937_64 rng = rng_for_test();
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  ck::KahanSum mixed;
  double exact_mixed = 0.0;
  double largest = 0.0;
  for (int i = 0; i < 1000000; ++i) {
    const float v = dist(rng) * (i % 7 == 0 ? 1e4f : 1.0f);
    mixed.add(v);
    exact_mixed += v;
    largest = std::max(largest, std::fabs(exact_mixed));
  }
  EXPECT_LE(std::fabs(mixed.sum - exact_mixed), 4.0 * std::ldexp(1.0, std::ilogb(largest) - 23));
}

} // namespace
