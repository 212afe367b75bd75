// Double-precision CPU oracle of group normalization (culayers/group_norm.hpp) and the float32 error model
// its tests share: statistics over the valid positions of each group, the normalized (and activated)
// forward, the backward (dx, dgamma, dbeta) with the header's formula, both layouts, optional gamma/beta
// and mask. Host-only: no device code, no CUDA runtime calls. The dtype helpers (Dtype<T>, ulp, round_to,
// bits, kU32) are the masked-reduction reference's.
#pragma once

#include "culayers/group_norm.hpp"

#include "tests/reference/masked_reduce_reference.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace culayers::test::gn {

using culayers::group_norm::Activation;
using culayers::group_norm::Path;
using masked::bits;
using masked::Dtype;
using masked::kU32;
using masked::round_to;
using masked::ulp;

// ---- the problem ------------------------------------------------------------------------------------------

/// One group-normalization problem in double: shape, layout, parameters (empty = absent) and mask.
struct Problem {
  Layout layout = Layout::kChannelsFirst;
  std::int64_t batch = 1;
  std::int64_t channels = 1;
  std::int64_t spatial = 1;
  std::int64_t groups = 1;
  double epsilon = static_cast<double>(1e-3f); // the float the kernel gets, exactly
  std::vector<double> gamma;                   // [C] or empty (scale 1)
  std::vector<double> beta;                    // [C] or empty (center 0)
  Activation activation = Activation::kNone;
  std::vector<std::uint8_t> mask; // [N, spatial] (channels last) or empty; nonzero = valid

  std::int64_t channels_per_group() const { return channels / groups; }
  std::size_t numel() const { return static_cast<std::size_t>(batch * channels * spatial); }
  std::size_t num_groups() const { return static_cast<std::size_t>(batch * groups); }
  /// Offset of element (n, c, s) in x / y / dy / dx.
  std::size_t index(std::int64_t n, std::int64_t c, std::int64_t s) const {
    return static_cast<std::size_t>(layout == Layout::kChannelsFirst ? (n * channels + c) * spatial + s
                                                                     : (n * spatial + s) * channels + c);
  }
  bool valid(std::int64_t n, std::int64_t s) const {
    return mask.empty() || mask[static_cast<std::size_t>(n * spatial + s)] != 0;
  }
  double gamma_at(std::int64_t c) const { return gamma.empty() ? 1.0 : gamma[static_cast<std::size_t>(c)]; }
  double beta_at(std::int64_t c) const { return beta.empty() ? 0.0 : beta[static_cast<std::size_t>(c)]; }
  /// Calls f(n, g, c, s, index) for every element, group by group.
  template <class F>
  void for_each(F&& f) const {
    const std::int64_t cpg = channels_per_group();
    for (std::int64_t n = 0; n < batch; ++n) {
      for (std::int64_t g = 0; g < groups; ++g) {
        for (std::int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
          for (std::int64_t s = 0; s < spatial; ++s) {
            f(n, g, c, s, index(n, c, s));
          }
        }
      }
    }
  }
};

/// A mask [N, spatial]: sample 1 fully masked, sample 2 with exactly one valid position (when they exist),
/// the others about 60% valid; valid bytes are any nonzero value.
inline std::vector<std::uint8_t> make_mask(std::mt19937_64& rng, std::int64_t batch, std::int64_t spatial) {
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(batch * spatial), 0);
  std::bernoulli_distribution keep(0.6);
  std::uniform_int_distribution<int> value(1, 255);
  std::uniform_int_distribution<std::int64_t> pick(0, spatial > 0 ? spatial - 1 : 0);
  for (std::int64_t n = 0; n < batch; ++n) {
    const std::int64_t only = pick(rng);
    for (std::int64_t s = 0; s < spatial; ++s) {
      bool on = keep(rng);
      if (n == 1) {
        on = false;
      } else if (n == 2) {
        on = s == only;
      }
      mask[static_cast<std::size_t>(n * spatial + s)] = on ? static_cast<std::uint8_t>(value(rng)) : 0;
    }
  }
  return mask;
}

// ---- activations ------------------------------------------------------------------------------------------

inline double sigmoid(double v) {
  return 1.0 / (1.0 + std::exp(-v));
}
inline double activate(Activation act, double pre) {
  switch (act) {
  case Activation::kSiLU:
    return pre * sigmoid(pre);
  case Activation::kReLU:
    return pre > 0.0 || std::isnan(pre) ? pre : 0.0; // NaN propagates, as in the kernels
  default:
    return pre;
  }
}
/// d act / d pre; ReLU passes the gradient where pre > 0 only (the header's convention at 0).
inline double activate_grad(Activation act, double pre) {
  switch (act) {
  case Activation::kSiLU: {
    const double s = sigmoid(pre);
    return s * (1.0 + pre * (1.0 - s));
  }
  case Activation::kReLU:
    return pre > 0.0 ? 1.0 : 0.0;
  default:
    return 1.0;
  }
}

// ---- forward ---------------------------------------------------------------------------------------------

/// Per (n, g): mean and biased variance over the valid positions (two passes in double), rstd, the number
/// of valid elements M and the largest |x| and |x - mean| among them (for the error model). A fully masked
/// group has mean 0, variance 0, rstd 1 / sqrt(epsilon).
struct Stats {
  std::vector<double> mean;
  std::vector<double> var;
  std::vector<double> rstd;
  std::vector<std::int64_t> count;
  std::vector<double> max_abs;
  std::vector<double> max_dev;
};

inline Stats statistics(const Problem& p, const std::vector<double>& x) {
  const std::size_t ng = p.num_groups();
  Stats st;
  st.mean.assign(ng, 0.0);
  st.var.assign(ng, 0.0);
  st.rstd.assign(ng, 0.0);
  st.count.assign(ng, 0);
  st.max_abs.assign(ng, 0.0);
  st.max_dev.assign(ng, 0.0);
  std::vector<double> sum(ng, 0.0);
  p.for_each([&](std::int64_t n, std::int64_t g, std::int64_t, std::int64_t s, std::size_t i) {
    if (p.valid(n, s)) {
      const std::size_t k = static_cast<std::size_t>(n * p.groups + g);
      sum[k] += x[i];
      st.count[k] += 1;
      st.max_abs[k] = std::max(st.max_abs[k], std::fabs(x[i]));
    }
  });
  for (std::size_t k = 0; k < ng; ++k) {
    st.mean[k] = st.count[k] > 0 ? sum[k] / static_cast<double>(st.count[k]) : 0.0;
  }
  std::vector<double> m2(ng, 0.0);
  p.for_each([&](std::int64_t n, std::int64_t g, std::int64_t, std::int64_t s, std::size_t i) {
    if (p.valid(n, s)) {
      const std::size_t k = static_cast<std::size_t>(n * p.groups + g);
      const double d = x[i] - st.mean[k];
      m2[k] += d * d;
      st.max_dev[k] = std::max(st.max_dev[k], std::fabs(d));
    }
  });
  for (std::size_t k = 0; k < ng; ++k) {
    st.var[k] = st.count[k] > 0 ? m2[k] / static_cast<double>(st.count[k]) : 0.0;
    st.rstd[k] = 1.0 / std::sqrt(st.var[k] + p.epsilon);
  }
  return st;
}

/// xhat, pre-activation and y of every element for the given statistics ([N, G] each).
struct Normalized {
  std::vector<double> xhat;
  std::vector<double> pre;
  std::vector<double> y;
};

inline Normalized normalize(const Problem& p, const std::vector<double>& x, const std::vector<double>& mean,
                            const std::vector<double>& rstd) {
  Normalized out;
  out.xhat.assign(p.numel(), 0.0);
  out.pre.assign(p.numel(), 0.0);
  out.y.assign(p.numel(), 0.0);
  p.for_each([&](std::int64_t n, std::int64_t g, std::int64_t c, std::int64_t, std::size_t i) {
    const std::size_t k = static_cast<std::size_t>(n * p.groups + g);
    out.xhat[i] = (x[i] - mean[k]) * rstd[k];
    out.pre[i] = out.xhat[i] * p.gamma_at(c) + p.beta_at(c);
    out.y[i] = activate(p.activation, out.pre[i]);
  });
  return out;
}

// ---- backward --------------------------------------------------------------------------------------------

/// The header's backward, in double, for the given statistics (the forward's outputs):
///   g = dy * act'(pre) * gamma, dx = rstd * (g - w / M * (sum(g) + xhat * sum(g * xhat))),
///   dgamma = sum dpre * xhat, dbeta = sum dpre,
/// plus, when `tolerances`, the float32 error bound of each output (see backward_error below).
struct Gradients {
  std::vector<double> dx;
  std::vector<double> dgamma;
  std::vector<double> dbeta;
  std::vector<double> tol_dx;
  std::vector<double> tol_dgamma;
  std::vector<double> tol_dbeta;
};

/// Bound on the float32 error of a sum of n terms, relative to the sum of their magnitudes. Rounding
/// errors of round-to-nearest behave as independent zero-mean variables (Higham and Mary, "A new approach
/// to probabilistic rounding error analysis", SISC 2019): a sum of n terms errs by at most
/// lambda * sqrt(n) * u * sum|t| except with probability about 2 exp(-lambda^2 / 2); lambda = 4, plus 16 u
/// for the levels of the tree / shuffle / chunk merges. The kernels' chains are far shorter than n (n / 32
/// per lane at most), so this is loose in practice; worst-case n * u would make float32 tests toothless for
/// groups of thousands of elements.
inline double accumulation_bound(double n) {
  return 4.0 * (std::sqrt(n) + 16.0) * kU32;
}

/// Error model of the float32 statistics of one group (M valid elements, largest |x| and |x - mean|),
/// in the units the tests compare: mean (absolute), rstd (relative) and the mean's error after
/// normalization (absolute, in units of xhat).
struct GroupError {
  double mean_abs = 0.0;
  double rstd_rel = 0.0;
  double xhat_abs = 0.0;
};

inline GroupError forward_group_error(std::int64_t count, double max_abs, double max_dev, double rstd) {
  GroupError e;
  if (count == 0) {
    // Fully masked: mean exactly 0, variance exactly 0; rstd = 1 / sqrt(eps) within the square root's
    // rounding (rsqrtf: 2 ulp on the GPU).
    e.rstd_rel = 4.0 * kU32;
    return e;
  }
  const double acc = accumulation_bound(static_cast<double>(count));
  // Mean: a float32 sum (or Welford updates) of M terms of magnitude <= max|x|, then a division.
  e.mean_abs = acc * max_abs + kU32 * max_abs;
  // Variance: sum of (x - mean)^2 (each difference correctly rounded: relative error u); Welford's and
  // Chan's merges also carry the mean's error into the cross terms, which is relative error acc times the
  // condition number (1 + max|x| / max|x - mean|) (Chan, Golub and LeVeque 1983). rstd = 1 / sqrt(var +
  // eps) halves the variance's relative error; the factor 2 is kept as margin, plus 4 u for var + eps and
  // the (reciprocal) square root.
  const double kappa = max_dev > 0.0 ? max_abs / max_dev : 1.0;
  e.rstd_rel = acc * (2.0 + kappa) + 4.0 * kU32;
  e.xhat_abs = e.mean_abs * rstd;
  return e;
}

/// Error bound of pre = (x - mean) * rstd * gamma + beta in float32 given the group's statistics error:
/// the mean's error scaled by rstd, xhat times rstd's relative error, and four roundings (subtract,
/// two multiplies or an FMA, add).
inline double pre_error(const GroupError& e, double xhat, double gamma, double beta) {
  return std::fabs(gamma) * (e.xhat_abs + std::fabs(xhat) * e.rstd_rel) +
         4.0 * kU32 * (std::fabs(xhat * gamma) + std::fabs(beta));
}

/// Error bound of act(pre) given pre's error: none and ReLU are 1-Lipschitz and exact; SiLU's slope is at
/// most 1.1 in magnitude, and pre / (1 + exp(-pre)) in float32 adds a relative (8 + 2 |pre|) u of the
/// result: written for a fast exp (__expf: 2 + 1.2 |pre| ulp) and __fdividef (2 ulp); the forward kernels
/// use expf (2 ulp) and __fdividef, well inside it (the backward's derivative uses __expf, below).
inline double activation_error(Activation act, double pre, double y, double pre_err) {
  if (act == Activation::kSiLU) {
    return 1.1 * pre_err + (8.0 + 2.0 * std::fabs(pre)) * kU32 * std::fabs(y);
  }
  return pre_err;
}

/// Absolute error bound of act'(pre) computed in float32 from a pre with error pre_err: SiLU's derivative
/// s (1 + pre (1 - s)) through a fast exp (relative (8 + 2 |pre|) u on each factor, so absolute
/// (8 + 2 |pre|) u (1 + |pre|)) plus |silu''| <= 0.5 times pre's error; none and ReLU are exact (the tests
/// zero dy where ReLU's pre is too close to 0 for its sign to be certain).
inline double activation_grad_error(Activation act, double pre, double pre_err) {
  if (act == Activation::kSiLU) {
    return (8.0 + 2.0 * std::fabs(pre)) * kU32 * (1.0 + std::fabs(pre)) + 0.5 * pre_err;
  }
  return 0.0;
}

inline Gradients backward_reference(const Problem& p, const std::vector<double>& x,
                                    const std::vector<double>& dy, const std::vector<double>& mean,
                                    const std::vector<double>& rstd, bool tolerances = true) {
  const Normalized f = normalize(p, x, mean, rstd);
  const std::size_t ng = p.num_groups();
  const std::size_t nel = p.numel();
  const std::int64_t cpg = p.channels_per_group();
  Gradients out;
  std::vector<double> dpre(nel, 0.0);
  std::vector<double> g(nel, 0.0);
  std::vector<double> err_dpre(nel, 0.0); // float32 error of dpre (recomputed pre, act', product)
  std::vector<double> sum_g(ng, 0.0);
  std::vector<double> sum_gx(ng, 0.0);
  std::vector<double> abs_g(ng, 0.0);
  std::vector<double> abs_gx(ng, 0.0);
  std::vector<double> err_g(ng, 0.0);  // sum of the terms' own errors
  std::vector<double> err_gx(ng, 0.0); // ditto for g * xhat
  std::vector<std::int64_t> valid_count(ng, 0);
  const GroupError exact_stats{}; // mean and rstd are inputs: exact for both sides
  p.for_each([&](std::int64_t n, std::int64_t gi, std::int64_t c, std::int64_t s, std::size_t i) {
    const std::size_t k = static_cast<std::size_t>(n * p.groups + gi);
    const double a = activate_grad(p.activation, f.pre[i]);
    dpre[i] = dy[i] * a;
    g[i] = dpre[i] * p.gamma_at(c);
    sum_g[k] += g[i];
    sum_gx[k] += g[i] * f.xhat[i];
    valid_count[k] += p.valid(n, s) ? 1 : 0; // one per valid element: M = valid positions x C/G
    if (tolerances) {
      const double pe = pre_error(exact_stats, f.xhat[i], p.gamma_at(c), p.beta_at(c));
      // dy * act' * gamma: two roundings of the products plus act's own error.
      err_dpre[i] =
          std::fabs(dy[i]) * (activation_grad_error(p.activation, f.pre[i], pe) + 3.0 * kU32 * std::fabs(a));
      const double eg = err_dpre[i] * std::fabs(p.gamma_at(c)) + kU32 * std::fabs(g[i]);
      abs_g[k] += std::fabs(g[i]);
      abs_gx[k] += std::fabs(g[i] * f.xhat[i]);
      err_g[k] += eg;
      // xhat recomputed in float32: x - mean and the product by rstd, 2 u relative (3 u with margin).
      err_gx[k] += eg * std::fabs(f.xhat[i]) + 4.0 * kU32 * std::fabs(g[i] * f.xhat[i]);
    }
  });
  out.dx.assign(nel, 0.0);
  if (tolerances) {
    out.tol_dx.assign(nel, 0.0);
  }
  const double group_size = static_cast<double>(cpg * p.spatial);
  p.for_each([&](std::int64_t n, std::int64_t gi, std::int64_t c, std::int64_t s, std::size_t i) {
    const std::size_t k = static_cast<std::size_t>(n * p.groups + gi);
    const double m = static_cast<double>(valid_count[k]);
    const double w = (m > 0.0 && p.valid(n, s)) ? 1.0 : 0.0;
    const double inv_m = m > 0.0 ? 1.0 / m : 0.0;
    out.dx[i] = rstd[k] * (g[i] - w * inv_m * (sum_g[k] + f.xhat[i] * sum_gx[k]));
    if (tolerances) {
      // dx = rstd * (g - w/M (S1 + xhat S2)): the sums' accumulation errors (accumulation_bound over the
      // group's elements) and their terms' own errors, xhat's recomputation error times |S2|, and six
      // roundings of the final expression.
      const double acc = accumulation_bound(group_size);
      const double d_s1 = acc * abs_g[k] + err_g[k];
      const double d_s2 = acc * abs_gx[k] + err_gx[k];
      const double eg = err_dpre[i] * std::fabs(p.gamma_at(c)) + kU32 * std::fabs(g[i]);
      const double xh = std::fabs(f.xhat[i]);
      out.tol_dx[i] =
          rstd[k] * (eg + w * inv_m * (d_s1 + xh * d_s2 + 4.0 * kU32 * xh * std::fabs(sum_gx[k]))) +
          6.0 * kU32 * rstd[k] *
              (std::fabs(g[i]) + w * inv_m * (std::fabs(sum_g[k]) + xh * std::fabs(sum_gx[k])));
    }
  });
  const std::size_t nc = static_cast<std::size_t>(p.channels);
  out.dgamma.assign(nc, 0.0);
  out.dbeta.assign(nc, 0.0);
  std::vector<double> abs_dg(nc, 0.0);
  std::vector<double> abs_db(nc, 0.0);
  std::vector<double> err_dg(nc, 0.0);
  std::vector<double> err_db(nc, 0.0);
  p.for_each([&](std::int64_t, std::int64_t, std::int64_t c, std::int64_t, std::size_t i) {
    const std::size_t cc = static_cast<std::size_t>(c);
    out.dgamma[cc] += dpre[i] * f.xhat[i];
    out.dbeta[cc] += dpre[i];
    if (tolerances) {
      abs_dg[cc] += std::fabs(dpre[i] * f.xhat[i]);
      abs_db[cc] += std::fabs(dpre[i]);
      err_dg[cc] += err_dpre[i] * std::fabs(f.xhat[i]) + 4.0 * kU32 * std::fabs(dpre[i] * f.xhat[i]);
      err_db[cc] += err_dpre[i];
    }
  });
  if (tolerances) {
    // Per channel: N * spatial terms, accumulated in float32 in whatever fixed order.
    const double acc = accumulation_bound(static_cast<double>(p.batch * p.spatial));
    out.tol_dgamma.assign(nc, 0.0);
    out.tol_dbeta.assign(nc, 0.0);
    for (std::size_t c = 0; c < nc; ++c) {
      out.tol_dgamma[c] = acc * abs_dg[c] + err_dg[c];
      out.tol_dbeta[c] = acc * abs_db[c] + err_db[c];
    }
  }
  return out;
}

// ---- conversions ------------------------------------------------------------------------------------------

template <class T>
std::vector<double> to_double(const std::vector<T>& v) {
  std::vector<double> d(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    d[i] = Dtype<T>::to_double(v[i]);
  }
  return d;
}

/// Normally distributed values rounded to T (exactly representable inputs for the double reference).
template <class T>
std::vector<T> normal_values(std::mt19937_64& rng, std::size_t n, double mean = 0.0, double stddev = 1.0) {
  return masked::normal_values<T>(rng, n, mean, stddev);
}

/// A [C] float parameter drawn from N(mean, stddev), as the kernel's float and the reference's double.
inline std::vector<float> float_values(std::mt19937_64& rng, std::int64_t n, double mean, double stddev) {
  std::normal_distribution<double> d(mean, stddev);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& e : v) {
    e = static_cast<float>(d(rng));
  }
  return v;
}

inline std::vector<double> widen(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

/// "none", "silu" or "relu" (test names and messages).
inline const char* activation_name(Activation a) {
  return a == Activation::kNone ? "none" : (a == Activation::kSiLU ? "silu" : "relu");
}

/// The reference problem of a kernel test's configuration `c` (layout, extents, epsilon, activation) and
/// inputs `in` (float gamma / beta, empty when not passed; the mask).
template <class Config, class Inputs>
Problem problem_of(const Config& c, const Inputs& in) {
  Problem p;
  p.layout = c.layout;
  p.batch = c.batch;
  p.channels = c.channels;
  p.spatial = c.spatial;
  p.groups = c.groups;
  p.epsilon = static_cast<double>(c.epsilon);
  p.gamma = widen(in.gamma);
  p.beta = widen(in.beta);
  p.activation = c.act;
  p.mask = in.mask;
  return p;
}

// ---- shapes for the split path's channel-axis cut and for the grid-stride tests (forward and backward) ----

/// A group norm problem's shape, whether it gets a mask (channels last only) and, for the grid-stride
/// tests, the path forced with its chunk count or tile rows (0: automatic).
struct PlanShape {
  Layout layout;
  std::int64_t batch, channels, groups, spatial;
  bool mask;
  Path path = Path::kAuto;
  std::int64_t splits = 0;
  std::int64_t tile_rows = 0;
};

/// Huge groups over few positions, which the split path cuts along the channel axis: channels last over 3
/// positions with a mask (C/G = 4100, vectors; a ragged last channel chunk), channels first over 2
/// positions (C/G = 2000 rows; one column vector) and over 6 (3 column vectors, kept whole), no spatial
/// dimensions (the channels-last view, one row), odd C/G (scalar accesses) over 4 and 2 positions with a
/// mask. With min_split_elements 256 and target_blocks 64 each takes more chunks than positions.
inline const PlanShape kHugeGroupShapes[] = {
    {Layout::kChannelsLast, 2, 4100, 1, 3, true},   {Layout::kChannelsFirst, 1, 6000, 3, 2, false},
    {Layout::kChannelsFirst, 1, 6000, 3, 6, false}, {Layout::kChannelsFirst, 3, 3000, 2, 1, false},
    {Layout::kChannelsLast, 1, 1037, 1, 4, true},   {Layout::kChannelsLast, 1, 3001, 1, 2, true}};

/// Every path with enough units that a grid capped at 1 or 3 blocks strides (warp teams: 4 and 12 over 48
/// groups): warp, block, split (5 chunks), split cutting the channel axis (6 chunks over 3 positions) and
/// tile (4 rows per tile), in both layouts where the path allows.
inline const PlanShape kGridStrideShapes[] = {
    {Layout::kChannelsFirst, 6, 32, 8, 9, false, Path::kWarp},
    {Layout::kChannelsLast, 6, 32, 8, 9, true, Path::kWarp},
    {Layout::kChannelsFirst, 5, 12, 3, 40, false, Path::kBlock},
    {Layout::kChannelsLast, 5, 12, 3, 40, true, Path::kBlock},
    {Layout::kChannelsFirst, 3, 8, 2, 60, false, Path::kSplit, 5},
    {Layout::kChannelsLast, 3, 8, 2, 60, true, Path::kSplit, 5},
    {Layout::kChannelsLast, 2, 64, 2, 3, true, Path::kSplit, 6},
    {Layout::kChannelsLast, 3, 16, 4, 50, true, Path::kTile, 0, 4},
};

// ---- shapes for the tile path's tests (forward and backward) --------------------------------------------

/// A forced tile path's shape. N = vector width (the widest of 16 bytes dividing C/G and C), V = C / N
/// column vectors per row (one thread each), k = max(1, 256 / V) rows at once, C/G / N vectors per group.
struct TileShape {
  Layout layout;
  std::int64_t batch, channels, groups, spatial;
};
inline constexpr TileShape kTileShapes[] = {
    {Layout::kChannelsLast, 3, 24, 3, 13},    // C/G = 8: V = 6, k = 42 (fp32) or V = 3, k = 85 (16-bit)
    {Layout::kChannelsLast, 3, 40, 4, 11},    // C/G = 10: N = 2, 5 vectors per group, V = 20, k = 12
    {Layout::kChannelsLast, 3, 15, 5, 9},     // C/G = 3: N = 1 (scalars), 3 vectors per group, V = 15, k = 17
    {Layout::kChannelsLast, 3, 96, 16, 12},   // C/G = 6: N = 2, V = 48, k = 5 (odd: uneven row-tree levels)
    {Layout::kChannelsLast, 3, 300, 100, 4},  // C/G = 3: N = 1, V = 300, k = 1
    {Layout::kChannelsLast, 3, 1024, 512, 3}, // C/G = 2: N = 2, V = 512 (the largest), k = 1
    {Layout::kChannelsLast, 2, 16, 4, 70},    // C/G = 4: V = 4, k = 64; 1 row per tile: T = 70 partials per
                                              // group, 3 for some lanes of the merge warp
    {Layout::kChannelsFirst, 4, 40, 4, 1},    // channels first without spatial dims: the channels-last memory
};

/// Rows per tile to force on `spatial` rows: one, a count that does not divide spatial (a short last tile),
/// more than spatial (one tile) and 0 (automatic). `half` 0 or 1 gives two of them ({1, more than spatial}
/// or {not dividing, automatic}: a test alternating halves with and without a mask covers all four per
/// shape at half the emulator time); -1 all four.
inline std::vector<std::int64_t> tile_rows_for(std::int64_t spatial, int half = -1) {
  if (half == 0) {
    return {1, spatial + 3};
  }
  if (half == 1) {
    return {spatial / 2 + 1, 0};
  }
  return {1, spatial / 2 + 1, spatial + 3, 0};
}

/// The half of tile_rows_for that shape `s` of kTileShapes takes with or without a mask: the two mask
/// settings take different halves; channels first (no mask) takes all four.
inline int tile_rows_half(const TileShape& s, bool mask) {
  if (s.layout == Layout::kChannelsFirst) {
    return -1;
  }
  const auto index = static_cast<int>(&s - kTileShapes);
  return (index + (mask ? 1 : 0)) % 2;
}

/// The path a tuning forces: its path, else the split path when it fixes a chunk count, else none (kAuto:
/// the planner decides, and a test checks the path it expects by other means).
inline group_norm::Path expected_path(const group_norm::Tuning& t) {
  if (t.path != group_norm::Path::kAuto) {
    return t.path;
  }
  return t.splits > 0 ? group_norm::Path::kSplit : group_norm::Path::kAuto;
}

/// The path expected for a shape the automatic choice splits because its one to three groups, resident at
/// once, keep too few bytes in flight for the block path (Tuning's rule 4, which has no knob): kSplit on a
/// device of 4 SMs or more (the emulator's default; GPUs have more). On 1 or 2 SMs those groups do keep
/// the device's bytes in flight, the block path is the right choice, and the path is not checked (kAuto;
/// the answer still is).
inline group_norm::Path in_flight_split(int sm_count) {
  return sm_count >= 4 ? group_norm::Path::kSplit : group_norm::Path::kAuto;
}

/// The path a shape case with `tuning` must take: `expect`, except that an automatic split (no path or
/// chunk count forced) is a split by the in-flight rule (in_flight_split).
inline group_norm::Path shape_case_path(group_norm::Path expect, const group_norm::Tuning& tuning,
                                        int sm_count) {
  const bool in_flight =
      expect == group_norm::Path::kSplit && expected_path(tuning) == group_norm::Path::kAuto;
  return in_flight ? in_flight_split(sm_count) : expect;
}

// ---- randomized sweeps (forward and backward) ------------------------------------------------------------

/// One random small problem for the randomized sweeps: layout, sizes (C/G up to 8 and up to 120 positions,
/// so a group fits the warp path and any forced path is legal; spatial 0 only with the automatic path),
/// activation, mask (channels last), and a tuning: automatic, or warp / block / split (1 to 9 chunks,
/// possibly more than elements) / tile (channels-last view only; 0 to spatial + 2 rows per tile), with a
/// vector-width cap of 0, 1, 2, 4 or 8.
struct RandomCase {
  Layout layout = Layout::kChannelsFirst;
  std::int64_t batch = 1, channels = 1, groups = 1, spatial = 1;
  group_norm::Activation act = group_norm::Activation::kNone;
  bool mask = false;
  group_norm::Tuning tuning{};
};

/// Copies a RandomCase into a test's Config (the forward's or the backward's: both name these fields);
/// the forced path, if any, is what selected_path must report.
template <class Config>
void apply_random_case(const RandomCase& r, Config& c) {
  c.layout = r.layout;
  c.batch = r.batch;
  c.channels = r.channels;
  c.groups = r.groups;
  c.spatial = r.spatial;
  c.act = r.act;
  c.mask = r.mask;
  c.tuning = r.tuning;
  c.expect = expected_path(r.tuning);
}

inline RandomCase random_case(std::mt19937_64& rng) {
  auto pick = [&rng](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  RandomCase r;
  r.layout = pick(0, 1) == 0 ? Layout::kChannelsFirst : Layout::kChannelsLast;
  r.batch = pick(1, 4);
  r.groups = pick(1, 6);
  r.channels = r.groups * pick(1, 8);
  const int dims = static_cast<int>(pick(0, 3));
  r.spatial = 1;
  for (int d = 0; d < dims && r.spatial < 120; ++d) {
    r.spatial = std::min<std::int64_t>(120, r.spatial * pick(1, 12));
  }
  r.act = static_cast<group_norm::Activation>(pick(0, 2));
  r.mask = r.layout == Layout::kChannelsLast && pick(0, 1) == 1;
  group_norm::Tuning& t = r.tuning;
  t.target_blocks = 64; // split counts independent of the device
  const bool cl_view = r.layout == Layout::kChannelsLast || r.spatial == 1;
  switch (pick(0, cl_view ? 4 : 3)) {
  case 0:
    t.path = group_norm::Path::kAuto;
    if (pick(0, 7) == 0) {
      r.spatial = 0; // every group empty
    }
    break;
  case 1:
    t.path = group_norm::Path::kWarp;
    break;
  case 2:
    t.path = group_norm::Path::kBlock;
    break;
  case 3:
    t.path = group_norm::Path::kSplit;
    t.splits = pick(0, 9); // 0: automatic chunk count
    break;
  default:
    t.path = group_norm::Path::kTile;
    t.tile_rows = pick(0, r.spatial + 2);
    break;
  }
  static constexpr int kWidths[] = {0, 1, 2, 4, 8};
  t.vector_width = kWidths[pick(0, 4)];
  return r;
}

} // namespace culayers::test::gn
