// Tests of kernels/common/numeric.cuh: to_float / from_float for half and bfloat16 on the device, against
// the CUDA headers' host conversions (integer-exact: compared bit for bit, NaNs only as NaN), over every
// bit pattern, random floats, and exact rounding ties (round to nearest even).
#include "kernels/common/common.cuh"
#include "tests/common/common_test_helpers.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace {

namespace ck = culayers::kernels;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::common::bits_of;
using culayers::test::common::DTypeTraits;
using culayers::test::common::seed_trace;

template <class T>
CULAYERS_GLOBAL void convert_kernel(const T* narrow, const float* wide, float* widened, T* narrowed,
                                    T* round_trip, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) {
    return;
  }
  const float f = ck::to_float(ck::load(narrow + i));
  ck::store(widened + i, f);
  ck::store(round_trip + i, ck::from_float<T>(f));
  ck::store(narrowed + i, ck::from_float<T>(ck::load(wide + i)));
}

float float_from_bits(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
}

std::uint16_t bits16(__half h) {
  return static_cast<std::uint16_t>(bits_of(h));
}
std::uint16_t bits16(__nv_bfloat16 h) {
  return static_cast<std::uint16_t>(bits_of(h));
}

template <class T>
T from_bits16(std::uint16_t b) {
  T v;
  std::memcpy(static_cast<void*>(&v), &b, sizeof(v));
  return v;
}

// The reference: conversions written here on the bit patterns, independent of the CUDA headers' (which
// the emulated kernels call too, so comparing with those would check them against themselves): exact
// widening, and narrowing with round to nearest even (overflow to infinity, subnormals). NaN patterns only
// have to stay NaN (checked with isnan), so they get a quiet NaN of the same sign.
float host_to_float(__half h) {
  const std::uint32_t b = bits16(h);
  const std::uint32_t sign = (b & 0x8000u) << 16;
  const std::uint32_t exponent = (b >> 10) & 0x1fu;
  const std::uint32_t mantissa = b & 0x3ffu;
  if (exponent == 0x1fu) {
    return float_from_bits(sign | 0x7f800000u | (mantissa != 0 ? 0x400000u | (mantissa << 13) : 0u));
  }
  if (exponent == 0) { // zero or subnormal: mantissa x 2^-24, exact in float
    const float v = std::ldexp(static_cast<float>(mantissa), -24);
    return sign != 0 ? -v : v;
  }
  return float_from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
}
float host_to_float(__nv_bfloat16 h) {
  return float_from_bits(static_cast<std::uint32_t>(bits16(h)) << 16);
}
template <class T>
T host_from_float(float f);
template <>
__half host_from_float<__half>(float f) {
  const std::uint32_t b = bits_of(f);
  const auto sign = static_cast<std::uint16_t>((b >> 16) & 0x8000u);
  const int exponent = static_cast<int>((b >> 23) & 0xffu);
  const std::uint32_t mantissa = b & 0x7fffffu;
  if (exponent == 0xff) {
    return from_bits16<__half>(static_cast<std::uint16_t>(sign | (mantissa != 0 ? 0x7e00u : 0x7c00u)));
  }
  // |f| = m 2^(e - 23); half keeps 11 significant bits down to 2^-14, then units of 2^-24.
  const std::uint32_t m = exponent == 0 ? mantissa : (mantissa | 0x800000u);
  const int e = exponent == 0 ? -126 : exponent - 127;
  const int shift = e >= -14 ? 13 : 13 + (-14 - e);
  std::uint32_t q = 0;
  if (shift < 32) {
    q = m >> shift;
    const std::uint32_t rest = m & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (q & 1u) != 0)) {
      ++q; // a carry into the next binade (or from subnormal to normal) lands right by itself
    }
  }
  // Normal: q holds the implicit bit (0x400 .. 0x800), so (e + 14) << 10 plus q is the biased exponent e
  // + 15.
  std::uint32_t out = e >= -14 ? (static_cast<std::uint32_t>(e + 14) << 10) + q : q;
  if (out >= 0x7c00u) {
    out = 0x7c00u; // overflow: infinity
  }
  return from_bits16<__half>(static_cast<std::uint16_t>(sign | out));
}
template <>
__nv_bfloat16 host_from_float<__nv_bfloat16>(float f) {
  std::uint32_t b = bits_of(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) {
    return from_bits16<__nv_bfloat16>(static_cast<std::uint16_t>((b >> 16) | 0x40u)); // NaN stays NaN
  }
  b += 0x7fffu + ((b >> 16) & 1u); // round to nearest even on the top 16 bits (overflow carries to infinity)
  return from_bits16<__nv_bfloat16>(static_cast<std::uint16_t>(b >> 16));
}

// Number of explicit mantissa bits of T (10 for half, 7 for bfloat16): where float's extra bits start.
template <class T>
constexpr int kMantissaBits = std::is_same<T, __half>::value ? 10 : 7;

template <class T>
void check_conversions(std::mt19937_64& rng) {
  SCOPED_TRACE(DTypeTraits<T>::kName);
  constexpr int kN = 1 << 16; // every 16-bit pattern
  std::vector<T> narrow(kN);
  for (int i = 0; i < kN; ++i) {
    narrow[static_cast<std::size_t>(i)] = from_bits16<T>(static_cast<std::uint16_t>(i));
  }

  // Floats to narrow: a quarter arbitrary bit patterns (overflow, underflow, subnormals), a quarter
  // exact ties halfway between two neighbouring T values (round to nearest even decides), a quarter
  // just above/below ties, a quarter exactly representable.
  std::uniform_int_distribution<std::uint32_t> any_bits;
  std::uniform_int_distribution<int> pattern(0, kN - 1);
  std::vector<float> wide(kN);
  for (int i = 0; i < kN; ++i) {
    float f;
    do {
      const int category = i % 4;
      if (category == 0) {
        f = float_from_bits(any_bits(rng));
      } else {
        const float base = host_to_float(from_bits16<T>(static_cast<std::uint16_t>(pattern(rng))));
        std::uint32_t b;
        std::memcpy(&b, &base, sizeof(b));
        const std::uint32_t half_ulp = 1u << (22 - kMantissaBits<T>); // below T's last mantissa bit
        // Only normal T values: their float image has the T-precision mantissa in the top bits.
        // (half's smallest normal is 2^-14; bfloat16 shares float's exponent range).
        const bool normal = std::fpclassify(base) == FP_NORMAL &&
                            (std::is_same<T, __nv_bfloat16>::value || std::fabs(base) >= 0x1p-14f);
        if (category == 1 && normal) {
          b |= half_ulp;
        } else if (category == 2 && normal) {
          b |= half_ulp;
          b += (any_bits(rng) & 1u) ? 1u : static_cast<std::uint32_t>(-1);
        }
        f = float_from_bits(b);
      }
    } while (std::isnan(f));
    wide[static_cast<std::size_t>(i)] = f;
  }

  DeviceBuffer<T> d_narrow(narrow);
  DeviceBuffer<float> d_wide(wide);
  DeviceBuffer<float> d_widened(kN);
  DeviceBuffer<T> d_narrowed(kN);
  DeviceBuffer<T> d_round_trip(kN);
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH((convert_kernel<T>), dim3(kN / 256), dim3(256), 0, nullptr,
                                       d_narrow.get(), d_wide.get(), d_widened.get(), d_narrowed.get(),
                                       d_round_trip.get(), kN));
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> widened = d_widened.download();
  const std::vector<T> narrowed = d_narrowed.download();
  const std::vector<T> round_trip = d_round_trip.download();

  int failures = 0;
  for (int i = 0; i < kN && failures < 5; ++i) {
    const std::size_t k = static_cast<std::size_t>(i);
    const float expected_wide = host_to_float(narrow[k]);
    if (std::isnan(expected_wide)) {
      if (!std::isnan(widened[k]) || !std::isnan(ck::to_float(round_trip[k]))) {
        ADD_FAILURE() << "pattern 0x" << std::hex << i << std::dec << ": NaN must stay NaN";
        ++failures;
      }
    } else {
      // Widening is exact, and narrowing the result again gives back the same bits (-0, subnormals and
      // infinities included).
      if (bits_of(widened[k]) != bits_of(expected_wide)) {
        ADD_FAILURE() << "to_float(0x" << std::hex << i << ") = " << std::dec << widened[k] << ", host says "
                      << expected_wide;
        ++failures;
      }
      if (bits16(round_trip[k]) != static_cast<std::uint16_t>(i)) {
        ADD_FAILURE() << "round trip of 0x" << std::hex << i << " gave 0x" << bits16(round_trip[k])
                      << std::dec;
        ++failures;
      }
    }
    const T expected_narrow = host_from_float<T>(wide[k]);
    if (bits16(narrowed[k]) != bits16(expected_narrow)) {
      ADD_FAILURE() << "from_float(" << wide[k] << " = 0x" << std::hex << bits_of(wide[k]) << ") = 0x"
                    << bits16(narrowed[k]) << ", host says 0x" << bits16(expected_narrow) << std::dec;
      ++failures;
    }
  }
}

TEST(CommonNumeric, HalfConversionsMatchHostOnEveryPattern) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  check_conversions<__half>(rng);
}

TEST(CommonNumeric, BFloat16ConversionsMatchHostOnEveryPattern) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  check_conversions<__nv_bfloat16>(rng);
}

// Known answers, independent of the host conversion functions: ties go to the even neighbour, the
// largest finite values round up to infinity past the last tie.
TEST(CommonNumeric, RoundToNearestEvenKnownAnswers) {
  struct Case {
    float in;
    std::uint16_t half_bits;
    std::uint16_t bf16_bits;
  };
  const Case cases[] = {
      {1.0f, 0x3C00, 0x3F80},
      {1.0f + 0x1p-11f, 0x3C00, 0x3F80},           // half: tie between 1 and 1+2^-10 -> 1 (even)
      {1.0f + 3 * 0x1p-11f, 0x3C02, 0x3F80},       // half: tie -> 1+2^-9 (even)
      {-(1.0f + 0x1p-11f), 0xBC00, 0xBF80},        // sign symmetric
      {1.0f + 0x1p-8f, 0x3C04, 0x3F80},            // bf16: tie between 1 and 1+2^-7 -> 1 (even)
      {1.0f + 3 * 0x1p-8f, 0x3C0C, 0x3F82},        // bf16: tie -> 1+2^-6 (even)
      {1.0f + 0x1p-8f + 0x1p-20f, 0x3C04, 0x3F81}, // bf16: just above the tie -> up
      {65504.0f, 0x7BFF, 0x4780},                  // half max
      {65519.0f, 0x7BFF, 0x4780},                  // below the tie to 65536: half max
      {65520.0f, 0x7C00, 0x4780},                  // half: tie with an odd max -> infinity
      {0x1p-24f, 0x0001, 0x3380},                  // half: smallest subnormal
      {0x1p-25f, 0x0000, 0x3300},                  // half: tie between 0 and 2^-24 -> 0 (even)
      {3 * 0x1p-25f, 0x0002, 0x33C0},              // half: tie -> 2^-23 (even)
      {-0.0f, 0x8000, 0x8000},
      {std::numeric_limits<float>::max(), 0x7C00, 0x7F80}, // bf16: rounds up to infinity
      {std::numeric_limits<float>::infinity(), 0x7C00, 0x7F80},
  };
  constexpr int kN = static_cast<int>(sizeof(cases) / sizeof(cases[0]));
  std::vector<float> wide;
  for (const Case& c : cases) {
    wide.push_back(c.in);
  }
  std::vector<__half> narrow_h(kN, from_bits16<__half>(0));
  std::vector<__nv_bfloat16> narrow_b(kN, from_bits16<__nv_bfloat16>(0));
  DeviceBuffer<float> d_wide(wide);
  DeviceBuffer<__half> d_h(narrow_h);
  DeviceBuffer<__nv_bfloat16> d_b(narrow_b);
  DeviceBuffer<float> scratch_f(kN);
  DeviceBuffer<__half> out_h(kN);
  DeviceBuffer<__half> trip_h(kN);
  DeviceBuffer<__nv_bfloat16> out_b(kN);
  DeviceBuffer<__nv_bfloat16> trip_b(kN);
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH((convert_kernel<__half>), dim3(1), dim3(32), 0, nullptr, d_h.get(),
                                       d_wide.get(), scratch_f.get(), out_h.get(), trip_h.get(), kN));
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH((convert_kernel<__nv_bfloat16>), dim3(1), dim3(32), 0, nullptr,
                                       d_b.get(), d_wide.get(), scratch_f.get(), out_b.get(), trip_b.get(),
                                       kN));
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<__half> got_h = out_h.download();
  const std::vector<__nv_bfloat16> got_b = out_b.download();
  for (int i = 0; i < kN; ++i) {
    const Case& c = cases[i];
    SCOPED_TRACE(testing::Message() << "input " << c.in << " (0x" << std::hex << bits_of(c.in) << std::dec
                                    << ")");
    EXPECT_EQ(bits16(got_h[static_cast<std::size_t>(i)]), c.half_bits) << "device half";
    EXPECT_EQ(bits16(got_b[static_cast<std::size_t>(i)]), c.bf16_bits) << "device bfloat16";
    EXPECT_EQ(bits16(ck::from_float<__half>(c.in)), c.half_bits) << "host half";
    EXPECT_EQ(bits16(ck::from_float<__nv_bfloat16>(c.in)), c.bf16_bits) << "host bfloat16";
  }
  EXPECT_EQ(ck::to_float(1.5f), 1.5f);
  EXPECT_EQ(ck::from_float<float>(-2.25f), -2.25f);
}

} // namespace

// The host dtype dispatch runs its callable with the activation dtype's C++ type, and for any other dtype
// (integer dtypes, values that are not enumerators) runs nothing and returns the failure value: a caller
// that forgot to validate gets an error, never a kernel on the wrong element type.
TEST(CommonNumeric, DTypeDispatchRunsOnlyActivationTypes) {
  using culayers::DType;
  using culayers::Status;
  const auto size_of = [](auto tag) { return static_cast<int>(sizeof(tag)); };
  EXPECT_EQ(ck::with_activation_type(DType::kFloat32, size_of, -1), 4);
  EXPECT_EQ(ck::with_activation_type(DType::kFloat16, size_of, -1), 2);
  EXPECT_EQ(ck::with_activation_type(DType::kBFloat16, size_of, -1), 2);
  EXPECT_TRUE((ck::with_activation_type(
      DType::kBFloat16, [](auto tag) { return std::is_same<decltype(tag), __nv_bfloat16>::value; }, false)));
  EXPECT_TRUE((ck::with_activation_type(
      DType::kFloat16, [](auto tag) { return std::is_same<decltype(tag), __half>::value; }, false)));
  for (const DType d :
       {DType::kInt32, DType::kUInt8, DType::kInt64, static_cast<DType>(-1), static_cast<DType>(77)}) {
    SCOPED_TRACE(static_cast<int>(d));
    int runs = 0;
    EXPECT_EQ(ck::with_activation_type(
                  d, [&](auto) { return ++runs; }, -1),
              -1);
    EXPECT_EQ(ck::with_activation_type(d,
                                       [&](auto) {
                                         ++runs;
                                         return Status::kSuccess;
                                       }),
              Status::kErrorInvalidDType);
    EXPECT_NE(std::string(culayers::last_error_message()).find("is not float32, float16 or bfloat16"),
              std::string::npos)
        << culayers::last_error_message();
    EXPECT_EQ(ck::with_activation_type(d,
                                       [&](auto) {
                                         ++runs;
                                         return cudaSuccess;
                                       }),
              cudaErrorInvalidValue);
    EXPECT_EQ(runs, 0);
  }
}
