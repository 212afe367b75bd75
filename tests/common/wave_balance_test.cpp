// Tests of kernels/common/wave_balance.hpp: the grid size that fills two kernels' last waves, against a
// brute-force search over every count in the range with the same cost model (double precision).
#include "kernels/common/wave_balance.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>

namespace {

namespace ck = culayers::kernels;
using culayers::test::rng_for_test;

// Pieces an axis is cut into when `wanted` are asked for: pieces of ceil(axis / wanted) units.
std::int64_t cut(std::int64_t axis, std::int64_t wanted) {
  const std::int64_t piece = (axis + wanted - 1) / wanted;
  return (axis + piece - 1) / piece;
}

// The model the function documents: passes[k] x ceil(grid / slots[k]) x slots[k] / grid, summed, with
// grid = unit x the pieces `count` cuts the axis into.
double model_cost(std::int64_t count, std::int64_t unit, std::int64_t axis, const std::int64_t (&slots)[2],
                  const double (&passes)[2]) {
  const double grid = static_cast<double>(unit * cut(axis, count));
  double total = 0.0;
  for (int k = 0; k < 2; ++k) {
    const double waves = std::ceil(grid / static_cast<double>(slots[k]));
    total += passes[k] * waves * static_cast<double>(slots[k]) / grid;
  }
  return total;
}

TEST(WaveBalance, PiecesAreTheChunksAnAxisIsCutInto) {
  EXPECT_EQ(ck::pieces(65, 64), 33); // chunks of 2
  EXPECT_EQ(ck::pieces(65, 65), 65);
  EXPECT_EQ(ck::pieces(131072, 99), 99);
  EXPECT_EQ(ck::pieces(10, 20), 10); // more wanted than the axis has
  EXPECT_EQ(ck::pieces(0, 5), 1);    // an empty axis: one empty piece
  EXPECT_EQ(ck::pieces(7, 0), 1);
}

// Group norm's split path on the VAE shape in bf16 on an H100 (132 SMs): 32 groups, S = 66 chunks from the
// 2-wave target, the statistics kernel 4 blocks per SM (528 a wave), the normalize kernel 3 (396).
TEST(WaveBalance, VaeSplitTakesWholeWavesOfBothKernels) {
  const std::int64_t slots[2] = {528, 396};
  const double passes[2] = {1.0, 2.0};
  const std::int64_t axis = 1024 * 1024 / 8; // column vectors of a 1024 x 1024 channel, 8 per vector
  EXPECT_EQ(ck::balance_waves(66, 132, 32, axis, slots, passes), 99); // 3168 blocks: 6 and 8 waves
  // Backward: both kernels 2 blocks per SM; 2112 blocks are 8 whole waves of each, so S stays.
  const std::int64_t even[2] = {264, 264};
  const double backward[2] = {2.0, 3.0};
  EXPECT_EQ(ck::balance_waves(66, 132, 32, axis, even, backward), 66);
  // A range that cannot reach 99 keeps the best it has: S = 66 (4 and 5.33 waves) against 67-98.
  const std::int64_t best_below = ck::balance_waves(66, 98, 32, axis, slots, passes);
  EXPECT_GE(best_below, 66);
  EXPECT_LE(best_below, 98);
  for (std::int64_t s = 66; s <= 98; ++s) {
    EXPECT_LE(model_cost(best_below, 32, axis, slots, passes), model_cost(s, 32, axis, slots, passes) * 1.005)
        << s;
  }
}

TEST(WaveBalance, EmptyOrInvertedRangesAndUnknownSlotsKeepLo) {
  const std::int64_t slots[2] = {528, 396};
  const std::int64_t unknown[2] = {0, 396};
  const double passes[2] = {1.0, 2.0};
  const std::int64_t axis = 131072;
  EXPECT_EQ(ck::balance_waves(66, 66, 32, axis, slots, passes), 66);
  EXPECT_EQ(ck::balance_waves(66, 10, 32, axis, slots, passes), 66);
  EXPECT_EQ(ck::balance_waves(66, 132, 0, axis, slots, passes), 66);
  EXPECT_EQ(ck::balance_waves(66, 132, 32, axis, unknown, passes), 66);
}

// Random ranges, units, residencies and axes, short (the rounding of pieces matters: tiles of a few rows,
// chunks of an axis barely longer than the count) and long (grid = count x unit): the result lies in
// [lo, hi] and costs at most 0.5 % more than the cheapest count of the range (brute force), where each
// kernel has at most 64 waves in the range (the ones the function enumerates).
TEST(WaveBalance, MatchesBruteForce) {
  auto rng = rng_for_test();
  std::uniform_int_distribution<int> sms_d(1, 160);
  std::uniform_int_distribution<int> per_sm_d(1, 8);
  std::uniform_int_distribution<int> unit_d(1, 96);
  std::uniform_int_distribution<int> lo_d(1, 300);
  std::uniform_int_distribution<std::int64_t> spatial_d(1, 100000);
  int checked = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    const std::int64_t sms = sms_d(rng);
    const std::int64_t slots[2] = {sms * per_sm_d(rng), sms * per_sm_d(rng)};
    const double passes[2] = {trial % 2 == 0 ? 1.0 : 2.0, trial % 2 == 0 ? 2.0 : 3.0};
    const std::int64_t unit = unit_d(rng);
    const std::int64_t lo = lo_d(rng);
    const std::int64_t hi = lo + std::uniform_int_distribution<std::int64_t>(0, lo)(rng);
    const bool short_axis = trial % 3 == 0;
    const std::int64_t axis =
        short_axis ? std::max<std::int64_t>(hi, spatial_d(rng) % (4 * hi + 1)) : std::int64_t{1} << 40;
    if (hi * unit / slots[0] - lo * unit / slots[0] > 63 ||
        hi * unit / slots[1] - lo * unit / slots[1] > 63) {
      continue;
    }
    ++checked;
    const std::int64_t got = ck::balance_waves(lo, hi, unit, axis, slots, passes);
    ASSERT_GE(got, lo);
    ASSERT_LE(got, hi);
    double least = model_cost(lo, unit, axis, slots, passes);
    for (std::int64_t c = lo; c <= hi; ++c) {
      least = std::min(least, model_cost(c, unit, axis, slots, passes));
    }
    EXPECT_LE(model_cost(got, unit, axis, slots, passes), least * 1.005 + 1e-12)
        << "trial " << trial << ": lo " << lo << " hi " << hi << " unit " << unit << " axis " << axis
        << " slots " << slots[0] << "/" << slots[1];
  }
  EXPECT_GT(checked, 1000);
}

} // namespace
