// Philox4x32-10 and the draw mapping of docs/semantics.md ("Dropout"): Random123's known answers on the host
// and in a kernel, cuRAND's curand() after curand_init(seed, stream, offset + i) as an independent oracle,
// the threshold rule, and the launch-time divider of the broadcast paths.
#if defined(__CUDACC__)
// cuRAND's device API as a host-side oracle: its functions are __device__ only unless QUALIFIERS says
// otherwise (the emulated build's device header includes curand_kernel.h on its own).
#  define QUALIFIERS static __forceinline__ __host__ __device__
#  include <curand_kernel.h>
#endif

#include "culayers/c/dropout.h"
#include "culayers/dropout.hpp"
#include "kernels/dropout/dropout_kernels.cuh"
#include "kernels/dropout/philox.cuh"
#include "tests/kernels/dropout/dropout_test_util.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace {

namespace kd = culayers::kernels::dropout;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::dropout::seed_trace;

struct KnownAnswer {
  std::uint32_t ctr[4];
  std::uint32_t key[2];
  std::uint32_t out[4];
};

// Random123 kat_vectors, philox4x32 with 10 rounds (the published Random123 test vectors).
constexpr KnownAnswer kKnownAnswers[] = {
    {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};
constexpr int kKnownAnswerCount = 3;

// The inputs again as literals: a host constexpr array is not visible to device code.
CULAYERS_HD kd::PhiloxWords known_answer(int k) {
  switch (k) {
  case 0:
    return kd::philox4x32_10(kd::PhiloxWords{{0, 0, 0, 0}}, 0, 0);
  case 1:
    return kd::philox4x32_10(kd::PhiloxWords{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
                             0xffffffffu, 0xffffffffu);
  default:
    return kd::philox4x32_10(kd::PhiloxWords{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
                             0xa4093822u, 0x299f31d0u);
  }
}

CULAYERS_GLOBAL void known_answer_kernel(std::uint32_t* out) {
  const int k = static_cast<int>(threadIdx.x);
  if (k < kKnownAnswerCount) {
    const kd::PhiloxWords w = known_answer(k);
    for (int j = 0; j < 4; ++j) {
      culayers::kernels::store(out + 4 * k + j, w.w[j]);
    }
  }
}

TEST(DropoutPhilox, KnownAnswersHost) {
  for (int k = 0; k < kKnownAnswerCount; ++k) {
    kd::PhiloxWords c;
    for (int j = 0; j < 4; ++j) {
      c.w[j] = kKnownAnswers[k].ctr[j];
    }
    const kd::PhiloxWords w = kd::philox4x32_10(c, kKnownAnswers[k].key[0], kKnownAnswers[k].key[1]);
    const kd::PhiloxWords literal = known_answer(k);
    EXPECT_EQ(std::memcmp(&w, &literal, sizeof(w)), 0) << "literal inputs of vector " << k;
    for (int j = 0; j < 4; ++j) {
      EXPECT_EQ(w.w[j], kKnownAnswers[k].out[j]) << "vector " << k << " word " << j;
    }
  }
}

TEST(DropoutPhilox, KnownAnswersDevice) {
  DeviceBuffer<std::uint32_t> out(4 * kKnownAnswerCount);
  out.fill_bytes(0);
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH(known_answer_kernel, dim3(1), dim3(32), 0, nullptr, out.get()));
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<std::uint32_t> got = out.download();
  for (int k = 0; k < kKnownAnswerCount; ++k) {
    for (int j = 0; j < 4; ++j) {
      EXPECT_EQ(got[4 * k + j], kKnownAnswers[k].out[j]) << "vector " << k << " word " << j;
    }
  }
}

// The worked example of docs/semantics.md: curand_init(42, 5, 8) then curand4 = Philox(counter {2, 0, 5, 0},
// key {42, 0}).
TEST(DropoutPhilox, CurandWorkedExample) {
  const std::uint32_t want[4] = {0x3695fa92, 0xf838528a, 0xf171847b, 0xb1fa02ce};
  const kd::PhiloxWords w = kd::philox_group(42, 5, 2);
  curandStatePhilox4_32_10_t state;
  curand_init(42ull, 5ull, 8ull, &state);
  const uint4 c = curand4(&state);
  const std::uint32_t cw[4] = {c.x, c.y, c.z, c.w};
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(w.w[j], want[j]) << j;
    EXPECT_EQ(cw[j], want[j]) << j;
    EXPECT_EQ(kd::philox_draw(42, 5, 8 + static_cast<std::uint64_t>(j)), want[j]) << j;
  }
}

// r(i) = curand() right after curand_init(seed, stream, offset + i), for random 64-bit seeds and
// streams and offsets anywhere in cuRAND's range (including ones whose group needs both counter words).
TEST(DropoutPhilox, MatchesCurandOnRandomTriples) {
  auto rng = rng_for_test();
  int mismatches = 0;
  for (int t = 0; t < 2000; ++t) {
    const std::uint64_t seed = rng();
    const std::uint64_t stream = t % 3 == 0 ? rng() % 1000 : rng();
    const std::uint64_t offset = t % 2 == 0 ? (rng() >> 2) : rng() % 4096;
    for (std::uint64_t i = 0; i < 6; ++i) {
      curandStatePhilox4_32_10_t state;
      curand_init(seed, stream, offset + i, &state);
      const std::uint32_t want = curand(&state);
      const std::uint32_t got = kd::philox_draw(seed, stream, offset + i);
      const std::uint32_t ref = culayers::test::dropout_ref::draw(seed, stream, offset + i);
      if ((got != want || ref != want) && mismatches++ < 5) {
        ADD_FAILURE() << "seed " << seed << " stream " << stream << " q " << offset + i << ": philox_draw "
                      << got << ", reference " << ref << ", curand " << want << "; " << seed_trace();
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
}

// The public host helper (and its C twin) returns the same draws, for any alignment of `first`.
TEST(DropoutPhilox, HostDrawsMatchTheKernelsDraws) {
  auto rng = rng_for_test();
  for (int t = 0; t < 50; ++t) {
    const std::uint64_t seed = rng();
    const std::uint64_t stream = rng();
    const std::uint64_t first = rng() >> (t % 2 == 0 ? 2 : 40);
    const std::size_t count = static_cast<std::size_t>(rng() % 23);
    std::vector<std::uint32_t> got(count + 1, 0xdeadbeef);
    std::vector<std::uint32_t> got_c(count + 1, 0xdeadbeef);
    culayers::dropout::philox_draws(seed, stream, first, count, got.data());
    culayersDropoutPhiloxDraws(seed, stream, first, count, got_c.data());
    for (std::size_t j = 0; j < count; ++j) {
      ASSERT_EQ(got[j], kd::philox_draw(seed, stream, first + j)) << "first " << first << " j " << j;
      ASSERT_EQ(got_c[j], got[j]);
    }
    EXPECT_EQ(got[count], 0xdeadbeef) << "wrote past count";
    EXPECT_EQ(got_c[count], 0xdeadbeef) << "wrote past count";
  }
}

TEST(DropoutPhilox, SelectWordMatchesIndexing) {
  const kd::PhiloxWords w = kd::philox_group(7, 9, 11);
  for (std::uint64_t q = 0; q < 8; ++q) {
    EXPECT_EQ(kd::select_word(w, q), w.w[q & 3]) << q;
  }
}

TEST(DropoutPhilox, ThresholdRule) {
  EXPECT_EQ(kd::keep_threshold(1.0), kd::kThresholdKeepAll);
  EXPECT_EQ(kd::keep_threshold(0.5), 1ull << 31);
  EXPECT_EQ(kd::keep_threshold(0.0), 0u);
  EXPECT_EQ(kd::keep_threshold(-1.0), 0u);
  EXPECT_EQ(kd::keep_threshold(1e-12), 0u);                            // 0.0043 rounds to 0: drop everything
  EXPECT_EQ(kd::keep_threshold(0x1p-33), 1u);                          // 0.5 + 0.5 -> 1
  EXPECT_EQ(kd::keep_threshold(1.0 - 0x1p-34), kd::kThresholdKeepAll); // rounds up to 2^32
  EXPECT_EQ(kd::keep_threshold(0.9), 3865470566u);                     // floor(0.9 * 2^32 + 0.5)
  EXPECT_EQ(kd::keep_scale(0.5), 2.0f);
  EXPECT_EQ(kd::keep_scale(0.9), static_cast<float>(1.0 / 0.9));
  EXPECT_TRUE(kd::keep_draw(0xfffffffeu, kd::kThresholdKeepAll - 1));
  EXPECT_FALSE(kd::keep_draw(0xffffffffu, kd::kThresholdKeepAll - 1));
  EXPECT_TRUE(kd::keep_draw(0xffffffffu, kd::kThresholdKeepAll));
  EXPECT_FALSE(kd::keep_draw(0u, 0u));
  // The public host helpers are the same formulas.
  EXPECT_EQ(culayers::dropout::keep_threshold(0.8731), kd::keep_threshold(0.8731));
  EXPECT_EQ(culayers::dropout::keep_scale(0.8731), kd::keep_scale(0.8731));
}

// The multiply-high division of the broadcast paths, against '/', for divisors across the range
// (powers of two and their neighbours, the largest 32-bit values) and numerators below 2^32.
TEST(DropoutPhilox, FastDivisionMatchesDivide) {
  auto rng = rng_for_test();
  std::vector<std::uint64_t> divisors = {1, 2, 3, 5, 7, 10, 56 * 56, 1000, 65535, 65536, 65537};
  for (int s = 2; s < 32; ++s) {
    divisors.push_back((1ull << s) - 1);
    divisors.push_back(1ull << s);
    divisors.push_back((1ull << s) + 1);
  }
  divisors.push_back(0xfffffffeull);
  divisors.push_back(0xffffffffull);
  for (int k = 0; k < 100; ++k) {
    divisors.push_back(1 + rng() % 0xffffffffull);
  }
  int failures = 0;
  for (std::uint64_t d : divisors) {
    const kd::DivMod dm = kd::DivMod::make(d);
    std::vector<std::uint64_t> ns = {0, 1, d - 1, d, d + 1, 2 * d - 1, 0xfffffffeull, 0xffffffffull};
    for (int k = 0; k < 200; ++k) {
      ns.push_back(rng() & 0xffffffffull);
    }
    for (std::uint64_t n : ns) {
      if (n > 0xffffffffull) {
        continue;
      }
      const std::uint64_t got = dm.div<false>(n);
      if (got != n / d && failures++ < 5) {
        ADD_FAILURE() << n << " / " << d << ": got " << got << ", want " << n / d;
      }
      EXPECT_EQ(dm.div<true>(n), n / d);
    }
  }
  EXPECT_EQ(failures, 0) << seed_trace();
}

// The broadcast paths' noise-index map (NoiseMap, locate) on the host: for random canonical shapes (outer
// dims and an inner dim, each drawn or broadcast), the 32-bit and the 64-bit arithmetic both equal the noise
// index computed from the element's digits, and the 64-bit one also on shapes of 2^32 elements or more
// (only the generic kernel runs those, and no test tensor on the emulator is that large).
TEST(DropoutPhilox, NoiseMapLocatesEveryElementInBothWidths) {
  auto rng = rng_for_test();
  int failures = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const bool huge = trial % 4 == 3;
    const int m = 1 + static_cast<int>(rng() % 6); // dims after canonicalization: m - 1 outer + inner
    std::vector<std::uint64_t> extent(static_cast<std::size_t>(m));
    std::vector<bool> drawn(static_cast<std::size_t>(m));
    std::uint64_t n = 1;
    for (int j = 0; j < m; ++j) {
      extent[static_cast<std::size_t>(j)] = huge ? 2 + rng() % 3000 : 1 + rng() % 9;
      drawn[static_cast<std::size_t>(j)] = rng() % 2 == 0;
      n *= extent[static_cast<std::size_t>(j)];
    }
    if (huge && n <= 0xffffffffull) {
      extent[0] *= (0x100000000ull / n) + 1; // past 2^32
      n = 1;
      for (std::uint64_t e : extent) {
        n *= e;
      }
    }
    kd::NoiseMap map{};
    map.nd = m - 1;
    std::vector<std::uint64_t> stride(static_cast<std::size_t>(m)); // noise strides, 0 when broadcast
    std::uint64_t st = 1;
    for (int j = m - 1; j >= 0; --j) {
      stride[static_cast<std::size_t>(j)] = drawn[static_cast<std::size_t>(j)] ? st : 0;
      st *= drawn[static_cast<std::size_t>(j)] ? extent[static_cast<std::size_t>(j)] : 1;
    }
    for (int j = 0; j < m - 1; ++j) {
      map.outer[j] = kd::DivMod::make(extent[static_cast<std::size_t>(j)]);
      map.outer_stride[j] =
          stride[static_cast<std::size_t>(j)] /
          (drawn[static_cast<std::size_t>(m - 1)] ? extent[static_cast<std::size_t>(m - 1)] : 1);
    }
    const std::uint64_t inner = extent[static_cast<std::size_t>(m - 1)];
    map.inner = kd::DivMod::make(inner);
    map.inner_kept = drawn[static_cast<std::size_t>(m - 1)] ? 1u : 0u;
    map.inner_noise = map.inner_kept != 0 ? inner : 1;
    for (int k = 0; k < 64; ++k) {
      const std::uint64_t i = k == 0   ? 0
                              : k == 1 ? n - 1
                                       : (static_cast<std::uint64_t>(rng()) << 20 ^ rng()) % n;
      std::uint64_t want = 0;
      std::uint64_t rest = i;
      for (int j = m - 1; j >= 0; --j) {
        want += (rest % extent[static_cast<std::size_t>(j)]) * stride[static_cast<std::size_t>(j)];
        rest /= extent[static_cast<std::size_t>(j)];
      }
      const std::uint64_t want_left = inner - i % inner;
      std::uint64_t left = 0;
      const std::uint64_t got_wide = kd::locate<true>(map, i, &left);
      if ((got_wide != want || left != want_left) && failures++ < 5) {
        ADD_FAILURE() << "64-bit: trial " << trial << " element " << i << ": got " << got_wide << " (left "
                      << left << "), want " << want << " (left " << want_left << ")";
      }
      if (n <= 0xffffffffull) {
        const std::uint64_t got = kd::locate<false>(map, i, &left);
        if ((got != want || left != want_left) && failures++ < 5) {
          ADD_FAILURE() << "32-bit: trial " << trial << " element " << i << ": got " << got << ", want "
                        << want;
        }
      }
    }
  }
  EXPECT_EQ(failures, 0) << seed_trace();
}

} // namespace
