// The benchmark harness's verification self-test (bench/harness.hpp: --culayers_perturb=K), on the emulated
// backend: perturb_output changes exactly one element of output K by more than any tolerance, in every
// dtype; the verdicts (caught, missed, failed with nothing perturbed, no output K, baseline unavailable) and
// the tally; verifications run once per key; parallel_for covers its range once. The benchmarks themselves
// need a GPU (scripts/gpu_check.sh runs the self-test there); this checks the harness's side of it.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "bench/cudnn_runtime.hpp"
#include "bench/harness.hpp"

namespace culayers {
namespace bench {
namespace {

// A device buffer holding `bytes`, uploaded and read back synchronously.
class Buffer {
 public:
  explicit Buffer(const std::vector<unsigned char>& bytes) : size_(bytes.size()) {
    EXPECT_EQ(cudaMalloc(&ptr_, size_), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr_, bytes.data(), size_, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~Buffer() { (void)cudaFree(ptr_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const { return ptr_; }
  std::vector<unsigned char> read() const {
    std::vector<unsigned char> out(size_);
    EXPECT_EQ(cudaMemcpy(out.data(), ptr_, size_, cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }

 private:
  void* ptr_ = nullptr;
  std::size_t size_ = 0;
};

std::vector<unsigned char> random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<unsigned char> v(n);
  for (unsigned char& b : v) {
    b = static_cast<unsigned char>(rng());
  }
  return v;
}

// Random finite values of `dtype` (for the 16-bit types: floats of a few units, rounded by the conversion).
std::vector<unsigned char> random_values(DType dtype, std::size_t n, std::uint64_t seed) {
  if (dtype != DType::kFloat32 && dtype != DType::kFloat16 && dtype != DType::kBFloat16) {
    return random_bytes(n * dtype_size(dtype), seed);
  }
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<unsigned char> out(n * dtype_size(dtype));
  for (std::size_t i = 0; i < n; ++i) {
    const float f = normal(rng);
    if (dtype == DType::kFloat32) {
      std::memcpy(out.data() + 4 * i, &f, 4);
    } else {
      std::uint32_t bits;
      std::memcpy(&bits, &f, 4);
      // bf16: the top half (truncation is fine for test data); fp16: a value in [1, 4) of either sign.
      std::uint16_t h = static_cast<std::uint16_t>(bits >> 16);
      if (dtype == DType::kFloat16) {
        h = static_cast<std::uint16_t>(0x3c00 + (rng() % 0x0800));
        h = static_cast<std::uint16_t>(h | ((rng() & 1) << 15));
      }
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

double float_value(const unsigned char* p, DType dtype) {
  if (dtype == DType::kFloat32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  if (dtype == DType::kBFloat16) {
    const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  // fp16 -> double, by hand (normal and subnormal numbers, infinity and NaN).
  const int sign = (h >> 15) != 0 ? -1 : 1;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  if (exponent == 0x1f) {
    return mantissa != 0 ? std::numeric_limits<double>::quiet_NaN()
                         : sign * std::numeric_limits<double>::infinity();
  }
  if (exponent == 0) {
    return sign * std::ldexp(mantissa, -24);
  }
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

// The indices of the elements that differ between a and b.
std::vector<std::size_t> changed(const std::vector<unsigned char>& a, const std::vector<unsigned char>& b,
                                 std::size_t elem) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i * elem < a.size(); ++i) {
    if (std::memcmp(a.data() + i * elem, b.data() + i * elem, elem) != 0) {
      out.push_back(i);
    }
  }
  return out;
}

TEST(BenchSelfTest, OffChangesNothing) {
  set_perturb_output(-1);
  EXPECT_FALSE(perturb_enabled());
  const std::vector<unsigned char> before = random_values(DType::kFloat32, 257, 1);
  Buffer b(before);
  perturb_begin();
  EXPECT_EQ(perturb_output(b.data(), DType::kFloat32, 257), "");
  EXPECT_EQ(b.read(), before);
  int runs = 0;
  static int repeat = 0; // keys of their own on every run of this test (--gtest_repeat)
  const std::string key = "selftest/off/" + std::to_string(repeat++);
  EXPECT_EQ(verify_cached(key, [&] { return ++runs, std::string(); }), "");
  EXPECT_EQ(verify_cached(key, [&] { return ++runs, std::string("not run again"); }), "");
  EXPECT_EQ(runs, 1);
}

TEST(BenchSelfTest, OneElementOfEveryDtypeChangedBeyondAnyTolerance) {
  set_perturb_output(0);
  ASSERT_TRUE(perturb_enabled());
  const DType dtypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16,
                          DType::kInt32,   DType::kUInt8,   DType::kInt64};
  for (const DType dtype : dtypes) {
    const std::size_t elem = dtype_size(dtype);
    for (const std::size_t n : {std::size_t{1}, std::size_t{3}, std::size_t{1000}}) {
      for (int round = 0; round < 20; ++round) {
        SCOPED_TRACE("dtype " + std::to_string(static_cast<int>(dtype)) + ", n " + std::to_string(n));
        const std::vector<unsigned char> before = random_values(dtype, n, 100 * n + round);
        Buffer b(before);
        perturb_begin();
        ASSERT_EQ(perturb_output(b.data(), dtype, static_cast<std::int64_t>(n)), "");
        const std::vector<unsigned char> after = b.read();
        const std::vector<std::size_t> diff = changed(before, after, elem);
        ASSERT_EQ(diff.size(), 1u);
        const unsigned char* was = before.data() + diff[0] * elem;
        const unsigned char* now = after.data() + diff[0] * elem;
        if (dtype == DType::kFloat32 || dtype == DType::kFloat16 || dtype == DType::kBFloat16) {
          const double v = float_value(was, dtype);
          const double w = float_value(now, dtype);
          // v + 1024 (1 + |v|), rounded to the dtype (8 significant bits at least): off by over 1000 (1 +
          // |v|).
          EXPECT_TRUE(std::isinf(w) || std::fabs(w - v) >= 1000.0 * (1.0 + std::fabs(v))) << v << " -> " << w;
        } else {
          for (std::size_t k = 0; k < elem; ++k) {
            EXPECT_EQ(now[k], static_cast<unsigned char>(~was[k]));
          }
        }
      }
    }
  }
}

// The position is drawn over the whole output: the first and the last element too (a check that skips its
// tail must be able to miss).
TEST(BenchSelfTest, EveryPositionCanBeChosen) {
  set_perturb_output(0);
  const std::vector<unsigned char> before = random_values(DType::kFloat32, 3, 5);
  std::vector<int> hits(3, 0);
  for (int round = 0; round < 100; ++round) { // a position missed 100 times: (2/3)^100, about 2e-18
    Buffer b(before);
    perturb_begin();
    ASSERT_EQ(perturb_output(b.data(), DType::kFloat32, 3), "");
    const std::vector<std::size_t> diff = changed(before, b.read(), 4);
    ASSERT_EQ(diff.size(), 1u);
    ++hits[diff[0]];
  }
  EXPECT_GT(hits[0], 0);
  EXPECT_GT(hits[1], 0);
  EXPECT_GT(hits[2], 0);
}

// Output K handed over as a null pointer with elements is an error (a verification that lost its output must
// not read as "no output K"); an empty output is skipped.
TEST(BenchSelfTest, NullOutputKIsAnError) {
  set_perturb_output(0);
  perturb_begin();
  EXPECT_NE(perturb_output(nullptr, DType::kFloat32, 4).find("null pointer"), std::string::npos);
  set_perturb_output(0);
  perturb_begin();
  EXPECT_EQ(perturb_output(nullptr, DType::kFloat32, 0), "");
  EXPECT_FALSE(perturb_applied());
  set_perturb_output(-1);
}

TEST(BenchSelfTest, NonFiniteValuesBecomeZero) {
  set_perturb_output(0);
  // float32, fp16 and bf16 bit patterns of NaN, +infinity and -infinity.
  const struct {
    DType dtype;
    std::vector<std::uint32_t> bits;
  } cases[] = {{DType::kFloat32, {0x7fc00000u, 0x7f800000u, 0xff800000u}},
               {DType::kFloat16, {0x7e00u, 0x7c00u, 0xfc00u}},
               {DType::kBFloat16, {0x7fc0u, 0x7f80u, 0xff80u}}};
  for (const auto& c : cases) {
    const std::size_t elem = dtype_size(c.dtype);
    for (const std::uint32_t v : c.bits) {
      std::vector<unsigned char> bytes(elem);
      std::memcpy(bytes.data(), &v, elem); // little endian: the low bytes
      Buffer b(bytes);
      perturb_begin();
      ASSERT_EQ(perturb_output(b.data(), c.dtype, 1), "");
      const std::vector<unsigned char> after = b.read();
      EXPECT_EQ(float_value(after.data(), c.dtype), 0.0)
          << "dtype " << static_cast<int>(c.dtype) << ", bits " << v;
    }
  }
}

TEST(BenchSelfTest, OnlyOutputKOfEachVerificationIsChanged) {
  set_perturb_output(1);
  std::vector<std::vector<unsigned char>> before;
  std::vector<std::unique_ptr<Buffer>> outs;
  for (int k = 0; k < 3; ++k) {
    before.push_back(random_values(DType::kFloat32, 64, 7 + k));
    outs.push_back(std::make_unique<Buffer>(before.back()));
  }
  for (int verification = 0; verification < 2; ++verification) {
    perturb_begin(); // the numbering restarts: output 1 is changed again, once
    for (int k = 0; k < 3; ++k) {
      ASSERT_EQ(perturb_output(outs[k]->data(), DType::kFloat32, 64), "");
    }
    EXPECT_EQ(outs[0]->read(), before[0]);
    EXPECT_EQ(changed(before[1], outs[1]->read(), 4).size(), 1u);
    EXPECT_EQ(outs[2]->read(), before[2]);
    before[1] = outs[1]->read();
  }
}

// A verification of one float32 output against `want`, every element compared; perturbed first when asked.
std::string check_all(const Buffer& out, const std::vector<unsigned char>& want, bool hand_over) {
  if (hand_over) {
    if (std::string e =
            perturb_output(out.data(), DType::kFloat32, static_cast<std::int64_t>(want.size() / 4));
        !e.empty()) {
      return e;
    }
  }
  const std::vector<unsigned char> got = out.read();
  const std::vector<std::size_t> diff = changed(want, got, 4);
  return diff.empty() ? std::string() : "element " + std::to_string(diff[0]) + " differs";
}

TEST(BenchSelfTest, VerdictsAndTally) {
  // Keys of their own on every run of this test (--gtest_repeat): verify_cached remembers results per key.
  static int run = 0;
  const std::string tag = "selftest/" + std::to_string(run++) + "/";
  const std::vector<unsigned char> want = random_values(DType::kFloat32, 1000, 42);
  Buffer out(want);
  const auto reset = [&] {
    ASSERT_EQ(cudaMemcpy(out.data(), want.data(), want.size(), cudaMemcpyHostToDevice), cudaSuccess);
  };

  set_perturb_output(0);
  EXPECT_FALSE(perturb_report()) << "nothing exercised yet";
  std::string r = verify_cached(tag + "caught", [&] { return check_all(out, want, true); });
  EXPECT_EQ(r.rfind("self-test: caught (output 0, element ", 0), 0u) << r;
  EXPECT_NE(r.find(" of 1000: "), std::string::npos) << r;
  EXPECT_NE(r.find("differs"), std::string::npos) << r;
  reset();
  r = verify_cached(tag + "none", [&] { return check_all(out, want, false); });
  EXPECT_EQ(r, "self-test: no output 0 here (its verification passed)");
  r = verify_cached(tag + "unavailable", [] { return std::string(kBaselineUnavailable) + "no library"; });
  EXPECT_EQ(r, std::string(kBaselineUnavailable) + "no library");
  EXPECT_TRUE(perturb_report()) << "caught one, the rest not exercised";

  // A verification that does not look at what it was handed, and one that fails unperturbed.
  r = verify_cached(tag + "missed", [&] {
    return perturb_output(out.data(), DType::kFloat32, 1000); // "" : and nothing is compared
  });
  EXPECT_EQ(r.rfind("self-test: MISSED: output 0, element ", 0), 0u) << r;
  EXPECT_FALSE(perturb_report());
  reset();
  set_perturb_output(0);
  EXPECT_EQ(verify_cached(tag + "caught2", [&] { return check_all(out, want, true); })
                .rfind("self-test: caught", 0),
            0u);
  r = verify_cached(tag + "failed", [] { return std::string("wrong before anything was perturbed"); });
  EXPECT_EQ(r, "self-test: FAILED with nothing perturbed: wrong before anything was perturbed");
  EXPECT_FALSE(perturb_report());

  // A verification seen before keeps its verdict (it is not run again).
  int runs = 0;
  EXPECT_EQ(
      verify_cached(tag + "failed", [&] { return ++runs, std::string(); }).rfind("self-test: FAILED", 0), 0u);
  EXPECT_EQ(runs, 0);
  set_perturb_output(-1);
}

TEST(BenchSelfTest, FirstIndexWhereFindsTheSmallestHit) {
  std::mt19937_64 rng(9);
  for (const std::int64_t n : {0, 1, 2, 17, 1000, 100000}) {
    for (const std::int64_t grain : {std::int64_t{1}, std::int64_t{64}, std::int64_t{1} << 16}) {
      // No hit, one hit anywhere (the last element too), and many hits (the smallest wins, whichever part
      // finds its own first).
      EXPECT_EQ(first_index_where(n, grain, [](std::int64_t) { return false; }), n);
      for (int round = 0; round < 5 && n > 0; ++round) {
        const std::int64_t at =
            round == 0 ? n - 1 : static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n));
        EXPECT_EQ(first_index_where(n, grain, [&](std::int64_t i) { return i == at; }), at)
            << n << " " << grain;
        EXPECT_EQ(first_index_where(n, grain, [&](std::int64_t i) { return i >= at && (i - at) % 3 == 0; }),
                  at);
      }
    }
  }
}

TEST(BenchSelfTest, ParallelForCoversItsRangeOnce) {
  for (const std::int64_t n : {0, 1, 7, 1000, 100000}) {
    for (const std::int64_t grain : {std::int64_t{1}, std::int64_t{64}, std::int64_t{1} << 16}) {
      std::vector<int> hits(static_cast<std::size_t>(n), 0);
      parallel_for(n, grain, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) {
          ++hits[static_cast<std::size_t>(i)]; // parts are disjoint: no two threads touch one element
        }
      });
      for (std::int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(hits[static_cast<std::size_t>(i)], 1) << "n " << n << ", grain " << grain << ", at " << i;
      }
    }
  }
}

} // namespace
} // namespace bench
} // namespace culayers
