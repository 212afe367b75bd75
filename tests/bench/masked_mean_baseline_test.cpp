// The benchmark's framework-shaped unfused masked mean (bench/kernels/masked_mean_unfused.hpp), on both
// backends: against the double reference for every dtype, both vector widths (F a multiple of the 16-byte
// vector and aligned; F odd; a misaligned view), T split over blocks and not, empty rows, T = 0, large
// finite values at masked steps (which must contribute nothing); its plans; and the problems it rejects.
// A baseline that computes the wrong thing would make the comparison with it meaningless.
#include "bench/kernels/masked_mean_unfused.hpp"

#include "tests/reference/masked_reduce_reference.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

namespace b = culayers::bench;
namespace tm = culayers::test::masked;
using culayers::DType;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::seed_note;
using tm::Dtype;

struct Case {
  std::int64_t b, t, f;
  int offset; // elements by which x and out are shifted from their allocations
};

template <class T>
void run_case(const Case& k, int sms, std::mt19937_64& rng) {
  const std::string what = std::string(Dtype<T>::kName) + " B=" + std::to_string(k.b) +
                           " T=" + std::to_string(k.t) + " F=" + std::to_string(k.f) +
                           " offset=" + std::to_string(k.offset) + " SMs=" + std::to_string(sms) + "; " +
                           seed_note();
  SCOPED_TRACE(what);
  const std::size_t count = static_cast<std::size_t>(k.b * k.t * k.f);
  const std::size_t off = static_cast<std::size_t>(k.offset);
  // Lengths: row 0 full, row 1 empty (when there are two), the others random in [0, T].
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(k.b * k.t));
  std::vector<std::int64_t> len(static_cast<std::size_t>(k.b));
  for (std::int64_t o = 0; o < k.b; ++o) {
    len[static_cast<std::size_t>(o)] =
        o == 0 ? k.t : (o == 1 ? 0 : std::uniform_int_distribution<std::int64_t>(0, k.t)(rng));
    for (std::int64_t r = 0; r < k.t; ++r) {
      mask[static_cast<std::size_t>(o * k.t + r)] =
          r < len[static_cast<std::size_t>(o)] ? (r % 3 == 0 ? 1 : 7) : 0;
    }
  }
  std::normal_distribution<double> normal(0.5, 1.0);
  std::vector<T> x(count + off);
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t row = i / static_cast<std::size_t>(k.f);
    // Masked steps hold 1000 (finite): x * 0 must take it out exactly.
    x[i + off] = Dtype<T>::from_double(mask[row] != 0 ? normal(rng) : 1000.0);
  }
  DeviceBuffer<T> x_dev(x);
  DeviceBuffer<std::uint8_t> mask_dev(mask);
  const std::size_t outs = static_cast<std::size_t>(k.b * k.f);
  DeviceBuffer<T> out_dev(outs + off + 1); // one guard element after the view
  out_dev.fill_bytes(0xff);

  b::UnfusedMeanProblem p;
  p.dtype = Dtype<T>::kDType;
  p.x = x_dev.get() + k.offset;
  p.mask = mask_dev.get();
  p.out = out_dev.get() + k.offset;
  p.b = k.b;
  p.t = k.t;
  p.f = k.f;
  b::UnfusedMeanPlan plan;
  ASSERT_EQ(b::unfused_mean_plan(p, sms, &plan), Status::kSuccess) << culayers::last_error_message();
  const bool wide_ok = k.f % static_cast<std::int64_t>(16 / sizeof(T)) == 0 && k.offset == 0;
  EXPECT_EQ(plan.vec, wide_ok ? static_cast<int>(16 / sizeof(T)) : 1);
  EXPECT_GE(plan.splits * plan.rows_per_split, k.t) << "every step covered";
  DeviceBuffer<unsigned char> workspace(b::unfused_mean_workspace_bytes(p, plan));
  ASSERT_EQ(b::unfused_masked_mean(p, workspace.get(), workspace.bytes(), sms, nullptr), Status::kSuccess)
      << culayers::last_error_message();
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<T> out = out_dev.download();

  for (std::int64_t o = 0; o < k.b; ++o) {
    const std::int64_t n = len[static_cast<std::size_t>(o)];
    for (std::int64_t i = 0; i < k.f; ++i) {
      double sum = 0.0;
      double abs_sum = 0.0;
      for (std::int64_t r = 0; r < n; ++r) {
        const double v = Dtype<T>::to_double(x[static_cast<std::size_t>((o * k.t + r) * k.f + i) + off]);
        sum += v;
        abs_sum += std::fabs(v);
      }
      const double want = n > 0 ? sum / static_cast<double>(n) : 0.0;
      // float32 sums over chains of at most T + 8 additions (Higham's recursive-summation bound, 4.3; the
      // splits and the 8 row threads only shorten chains), a float division, one rounding to T.
      const double denom = static_cast<double>(std::max<std::int64_t>(n, 1));
      const double tol = static_cast<double>(k.t + 16) * tm::kU32 * abs_sum / denom +
                         2.0 * tm::kU32 * std::fabs(want) + tm::ulp<T>(want);
      const double got = Dtype<T>::to_double(out[static_cast<std::size_t>(o * k.f + i) + off]);
      ASSERT_NEAR(got, want, tol) << "[" << o << ", " << i << "] count " << n;
    }
  }
  // Nothing before or after the view was written.
  const auto* bytes = reinterpret_cast<const unsigned char*>(out.data());
  for (std::size_t i = 0; i < off * sizeof(T); ++i) {
    ASSERT_EQ(bytes[i], 0xff) << "before the view";
  }
  for (std::size_t i = (outs + off) * sizeof(T); i < out.size() * sizeof(T); ++i) {
    ASSERT_EQ(bytes[i], 0xff) << "after the view";
  }
}

const Case kCases[] = {
    {3, 37, 64, 0},   // 16-byte vectors, 4 rows' loads unrolled with a tail
    {3, 37, 64, 1},   // misaligned view: scalar
    {4, 9, 13, 0},    // F odd: scalar
    {2, 1000, 24, 0}, // few outputs: T split over blocks (at the test's SM count)
    {5, 1, 520, 0},   // one step; 520 columns: 3 (16-bit) or 5 (float32) column blocks, the last partly idle
    {2, 0, 16, 0},    // no steps: every output 0
};

TEST(MaskedMeanBaseline, MatchesTheReference) {
  std::mt19937_64 rng = rng_for_test();
  for (const Case& k : kCases) {
    for (const int sms : {culayers::test::sm_count(), 1, 132}) {
      run_case<float>(k, sms, rng);
      run_case<__half>(k, sms, rng);
      run_case<__nv_bfloat16>(k, sms, rng);
    }
  }
}

b::UnfusedMeanProblem shape(std::int64_t bsz, std::int64_t t, std::int64_t f) {
  b::UnfusedMeanProblem p;
  p.b = bsz;
  p.t = t;
  p.f = f;
  return p;
}

// The plans of the benchmark's shapes on an H100 (132 SMs: 1056 blocks of 256 threads fill it once).
TEST(MaskedMeanBaseline, Plans) {
  struct Expect {
    b::UnfusedMeanProblem p;
    unsigned column_blocks;
    std::int64_t splits;
    std::int64_t rows_per_split;
  };
  const Expect expects[] = {
      // Sentence embeddings: 768 / 8 = 96 column vectors, 3 blocks x 128 rows = 384 blocks: 3 splits.
      {shape(128, 512, 768), 3, 3, 171},
      // Long context: 4096 / 8 = 512 vectors, 16 x 16 = 256 blocks: 5 splits of 1639 steps.
      {shape(16, 8192, 4096), 16, 5, 1639},
      // Short rows cap the splits at T / 64.
      {shape(1, 100, 8), 1, 1, 100},
      {shape(1, 256, 8), 1, 4, 64},
  };
  for (const Expect& e : expects) {
    b::UnfusedMeanPlan plan;
    b::UnfusedMeanProblem p = e.p;
    p.dtype = DType::kBFloat16;
    ASSERT_EQ(b::unfused_mean_plan(p, 132, &plan), Status::kSuccess) << culayers::last_error_message();
    EXPECT_EQ(plan.vec, 8) << p.b;
    EXPECT_EQ(plan.column_blocks, e.column_blocks) << p.b;
    EXPECT_EQ(plan.splits, e.splits) << p.b;
    EXPECT_EQ(plan.rows_per_split, e.rows_per_split) << p.b;
    EXPECT_GE(plan.splits * plan.rows_per_split, p.t);
    EXPECT_LT((plan.splits - 1) * plan.rows_per_split, p.t);
  }
}

TEST(MaskedMeanBaseline, RejectsWhatItDoesNotSupport) {
  b::UnfusedMeanPlan plan;
  b::UnfusedMeanProblem p = shape(70000, 4, 8);
  EXPECT_EQ(b::unfused_mean_plan(p, 132, &plan), Status::kErrorInvalidValue);
  culayers::test::expect_message_contains("above 65535", "B=70000");
  p = shape(2, -1, 8);
  EXPECT_EQ(b::unfused_mean_plan(p, 132, &plan), Status::kErrorInvalidValue);
  p = shape(2, 4, 8);
  EXPECT_EQ(b::unfused_mean_plan(p, 0, &plan), Status::kErrorInvalidValue);
  p.dtype = DType::kInt32;
  EXPECT_EQ(b::unfused_mean_plan(p, 132, &plan), Status::kErrorInvalidValue);
  culayers::test::expect_message_contains("not a float type", "int32");

  // A real problem checks its pointers and workspace and writes nothing when they are wrong.
  p.dtype = DType::kFloat32;
  DeviceBuffer<float> x(2 * 4 * 8);
  DeviceBuffer<std::uint8_t> mask(std::vector<std::uint8_t>(8, 1));
  DeviceBuffer<float> out(16);
  out.fill_bytes(0x5a);
  p.x = x.get();
  p.mask = mask.get();
  p.out = out.get();
  ASSERT_EQ(b::unfused_mean_plan(p, 4, &plan), Status::kSuccess);
  DeviceBuffer<unsigned char> ws(b::unfused_mean_workspace_bytes(p, plan));
  EXPECT_EQ(b::unfused_masked_mean(p, nullptr, 0, 4, nullptr), Status::kErrorNullPointer);
  EXPECT_EQ(b::unfused_masked_mean(p, ws.get(), ws.bytes() - 1, 4, nullptr), Status::kErrorWorkspaceTooSmall);
  b::UnfusedMeanProblem no_mask = p;
  no_mask.mask = nullptr;
  EXPECT_EQ(b::unfused_masked_mean(no_mask, ws.get(), ws.bytes(), 4, nullptr), Status::kErrorNullPointer);
  b::UnfusedMeanProblem empty = p;
  empty.f = 0;
  EXPECT_EQ(b::unfused_masked_mean(empty, nullptr, 0, 4, nullptr), Status::kSuccess);
  EXPECT_EQ(b::unfused_masked_mean(p, ws.get(), ws.bytes(), 0, nullptr), Status::kErrorInvalidValue);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  for (float v : out.download()) {
    unsigned char bytes[sizeof(float)];
    std::memcpy(bytes, &v, sizeof(float));
    ASSERT_EQ(bytes[0], 0x5a);
  }
}

} // namespace
