// Host-side launch planning: the grid size that fills the last waves of two kernels that share it.
#pragma once

#include "culayers/status.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {

/// Pieces an axis of `axis` units is cut into when `wanted` pieces are asked for: pieces of
/// ceil(axis / wanted) units, so ceil(axis / ceil(axis / wanted)) of them (at most `wanted`; 1 for an empty
/// axis).
inline std::int64_t pieces(std::int64_t axis, std::int64_t wanted) {
  const std::int64_t a = std::max<std::int64_t>(axis, 1);
  const std::int64_t w = std::max<std::int64_t>(wanted, 1);
  const std::int64_t piece = (a + w - 1) / w;
  return (a + piece - 1) / piece;
}

/// The count (chunks per group, or tiles per sample) from `lo` to `hi` whose grid, `unit` x
/// pieces(axis, count) blocks (the chunks or tiles the axis is actually cut into, `unit` groups or samples
/// each), wastes the least of two kernels' last waves, for a plan whose two kernels run the same grid;
/// `slots[k]`: blocks one wave of kernel k holds (SMs x blocks per SM), `passes[k]`: its tensor passes. The
/// model: a wave takes a full wave's time however few blocks it has (a memory-bound kernel with one block per
/// SM streams at a fraction of the bandwidth), so kernel k takes passes[k] x ceil(grid / slots[k]) x slots[k]
/// / grid of its ideal time. Why: the two kernels' residencies differ (registers), so one grid can fill one
/// kernel's waves and not the other's: group norm's split path on the VAE shape in bf16 (32 groups, S = 66
/// chunks each, 2112 blocks) ran its statistics kernel (4 blocks per SM on an H100) in 4 whole waves and its
/// normalize kernel (3 per SM) in 5.33; S = 99 gives 6 and 8. Between two grids that fill some kernel's last
/// wave exactly, every kernel's cost falls as the grid grows, so the candidates are `lo`, `hi` and, for each
/// kernel and whole number of its waves m, the largest count whose grid is at most m waves (the grid is
/// at most count x `unit`). The smallest candidate within 0.5 % of the least candidate cost is taken (more
/// chunks mean more partials and merges). A kernel with more than 64 waves between `lo` and `hi` is not
/// enumerated: its last wave is under 2 % of its time.
inline std::int64_t balance_waves(std::int64_t lo, std::int64_t hi, std::int64_t unit, std::int64_t axis,
                                  const std::int64_t (&slots)[2], const double (&passes)[2]) {
  if (hi <= lo || unit <= 0 || slots[0] <= 0 || slots[1] <= 0) {
    return lo;
  }
  const auto cost = [&](std::int64_t count) {
    const double grid = static_cast<double>(unit * pieces(axis, count));
    double total = 0.0;
    for (int k = 0; k < 2; ++k) {
      const double wave = static_cast<double>(slots[k]);
      total += passes[k] * std::ceil(grid / wave) * wave / grid;
    }
    return total;
  };
  std::int64_t candidates[2 * 66 + 2] = {lo, hi};
  int n = 2;
  for (int k = 0; k < 2; ++k) {
    const std::int64_t first = std::max<std::int64_t>(lo * unit / slots[k], 1);
    const std::int64_t last = (hi * unit + slots[k] - 1) / slots[k];
    for (std::int64_t m = first; m <= last && last - first <= 64; ++m) {
      candidates[n++] = std::clamp(m * slots[k] / unit, lo, hi);
    }
  }
  double least = cost(lo);
  for (int i = 1; i < n; ++i) {
    least = std::min(least, cost(candidates[i]));
  }
  std::int64_t best = hi;
  for (int i = 0; i < n; ++i) {
    if (candidates[i] < best && cost(candidates[i]) <= least * 1.005) {
      best = candidates[i];
    }
  }
  return best;
}

} // namespace kernels
CULAYERS_NAMESPACE_END
