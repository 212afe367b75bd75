// Philox4x32-10 and the dropout keep rule, as __host__ __device__ functions: the kernels, the CPU
// reference of the tests and the host helpers all call these, so a keep decision is a pure function of
// (seed, stream, offset, i) on every backend (specification: docs/semantics.md, "Dropout").
//
//   key  = (lo32(seed), hi32(seed))
//   q    = offset + i                       (offset counts 32-bit draws; a multiple of 4)
//   ctr  = (lo32(q >> 2), hi32(q >> 2), lo32(stream), hi32(stream))
//   r(i) = Philox4x32_10(ctr, key)[q & 3]
//   keep = r < T,  T = floor(p * 2^32 + 0.5) in double (T = 2^32 keeps everything)
//
// This equals cuRAND's curand() right after curand_init(seed, stream, offset + i) (tests check it).
#pragma once

#include "kernels/common/portability.cuh"

#include "culayers/version.hpp"

#include <cmath>
#include <cstdint>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace dropout {

// Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC'11): multipliers and Weyl key bumps.
inline constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u;
inline constexpr std::uint32_t kPhiloxM1 = 0xCD9E8D57u;
inline constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u;
inline constexpr std::uint32_t kPhiloxW1 = 0xBB67AE85u;
inline constexpr int kPhiloxRounds = 10;

/// Threshold that keeps every element (r < 2^32 always holds).
inline constexpr std::uint64_t kThresholdKeepAll = 1ull << 32;

/// Four 32-bit words: a Philox counter or output, word 0 first.
struct PhiloxWords {
  std::uint32_t w[4];
};

/// One Philox round. On the device, mul.hi.u32 and mul.lo.u32 (what cuRAND uses too; the 64-bit product
/// written in C++ came out of NVVM as 64-bit multiplies and xors); on the host, the 64-bit product.
CULAYERS_HD PhiloxWords philox_round(PhiloxWords c, std::uint32_t k0, std::uint32_t k1) {
#if defined(__CUDA_ARCH__)
  const std::uint32_t hi0 = __umulhi(kPhiloxM0, c.w[0]);
  const std::uint32_t lo0 = kPhiloxM0 * c.w[0];
  const std::uint32_t hi1 = __umulhi(kPhiloxM1, c.w[2]);
  const std::uint32_t lo1 = kPhiloxM1 * c.w[2];
#else
  const std::uint64_t p0 = static_cast<std::uint64_t>(kPhiloxM0) * c.w[0];
  const std::uint64_t p1 = static_cast<std::uint64_t>(kPhiloxM1) * c.w[2];
  const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32);
  const std::uint32_t lo0 = static_cast<std::uint32_t>(p0);
  const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32);
  const std::uint32_t lo1 = static_cast<std::uint32_t>(p1);
#endif
  PhiloxWords out;
  out.w[0] = hi1 ^ c.w[1] ^ k0;
  out.w[1] = lo1;
  out.w[2] = hi0 ^ c.w[3] ^ k1;
  out.w[3] = lo0;
  return out;
}

/// Philox4x32 with ten rounds; the key is bumped between consecutive rounds (not before the first).
CULAYERS_HD PhiloxWords philox4x32_10(PhiloxWords ctr, std::uint32_t k0, std::uint32_t k1) {
  CULAYERS_PRAGMA_UNROLL
  for (int r = 0; r < kPhiloxRounds; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    ctr = philox_round(ctr, k0, k1);
  }
  return ctr;
}

/// The four draws q = 4 * group .. 4 * group + 3 of (seed, stream).
CULAYERS_HD PhiloxWords philox_group(std::uint64_t seed, std::uint64_t stream, std::uint64_t group) {
  PhiloxWords ctr;
  ctr.w[0] = static_cast<std::uint32_t>(group);
  ctr.w[1] = static_cast<std::uint32_t>(group >> 32);
  ctr.w[2] = static_cast<std::uint32_t>(stream);
  ctr.w[3] = static_cast<std::uint32_t>(stream >> 32);
  return philox4x32_10(ctr, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
}

/// Word `index & 3` of `words`, by selects (a runtime index into a register array would spill it to
/// local memory on the GPU).
CULAYERS_HD std::uint32_t select_word(const PhiloxWords& words, std::uint64_t index) {
  const unsigned k = static_cast<unsigned>(index & 3u);
  const std::uint32_t lo = (k & 1u) ? words.w[1] : words.w[0];
  const std::uint32_t hi = (k & 1u) ? words.w[3] : words.w[2];
  return (k & 2u) ? hi : lo;
}

/// Draw number q of (seed, stream): one Philox call per word (scalar paths and tails; the vector paths
/// use all four words of one call and must agree with this bit for bit).
CULAYERS_HD std::uint32_t philox_draw(std::uint64_t seed, std::uint64_t stream, std::uint64_t q) {
  return select_word(philox_group(seed, stream, q >> 2), q);
}

/// T = floor(p * 2^32 + 0.5) computed in double: keep probability T / 2^32, within 2^-33 of p.
/// p <= 0 (and NaN) gives 0 (drop everything); p >= 1 gives 2^32 (keep everything).
CULAYERS_HD std::uint64_t keep_threshold(double p) {
  if (!(p > 0.0)) {
    return 0;
  }
  if (p >= 1.0) {
    return kThresholdKeepAll;
  }
  return static_cast<std::uint64_t>(::floor(p * 4294967296.0 + 0.5));
}

/// The factor kept values are multiplied by: (float)(1 / p). Infinite for p = 0 (nothing is kept then,
/// so it is never applied).
CULAYERS_HD float keep_scale(double p) {
  return static_cast<float>(1.0 / p);
}

/// r < T with T in [0, 2^32].
CULAYERS_HD bool keep_draw(std::uint32_t r, std::uint64_t threshold) {
  return static_cast<std::uint64_t>(r) < threshold;
}

/// DecayingDropout's keep rate at training call k (the value of `iterations` when the call starts):
/// initial * decay_rate ^ ((k + 1) / decay_interval), continuous exponent, in double. decay_rate = 1 is
/// the fixed rate `initial` exactly. Preconditions: decay_interval > 0, decay_rate in [0, 1].
CULAYERS_HD double decayed_keep_rate(double initial, double decay_rate, std::int64_t decay_interval,
                                     std::int64_t k) {
  if (decay_rate == 1.0) {
    return initial;
  }
  const double exponent = (static_cast<double>(k) + 1.0) / static_cast<double>(decay_interval);
  return initial * ::pow(decay_rate, exponent);
}

} // namespace dropout
} // namespace kernels
CULAYERS_NAMESPACE_END
