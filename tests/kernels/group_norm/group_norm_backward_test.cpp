// Group normalization backward (culayers/group_norm.hpp) on both backends: dx, dgamma and dbeta against the
// double-precision reference for every layout x dtype x activation x affine x mask on every path
// (automatic and forced), with the statistics from the reference or from the forward kernel; the reference
// itself against central finite differences; fully masked groups; bit-identical repeated runs; misaligned
// views; empty tensors; (emulated build) the byte model of the cached paths.
#include "culayers/group_norm.hpp"

#include "tests/reference/group_norm_reference.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace {

namespace gnk = culayers::group_norm;
namespace gn = culayers::test::gn;
using culayers::Layout;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::seed_note;
using gn::Dtype;
using gnk::Activation;
using gnk::Path;
using gnk::Tuning;

constexpr Activation kActivations[] = {Activation::kNone, Activation::kSiLU, Activation::kReLU};
constexpr Layout kLayouts[] = {Layout::kChannelsFirst, Layout::kChannelsLast};

Tuning pinned(Tuning t = {}) {
  t.target_blocks = 64;              // split counts independent of the device
  t.tile_min_bytes = 4 * 32 * 1024;  // the size thresholds at their emulator defaults (4 SMs), so a
  t.split_min_bytes = 4 * 64 * 1024; // device of 1 or 2 SMs chooses as the emulator does
  return t;
}
Tuning forced(Path p) {
  Tuning t = pinned();
  t.path = p;
  return t;
}
Tuning with_splits(std::int64_t s) {
  Tuning t = pinned();
  t.splits = s;
  return t;
}
/// The tile path forced with `rows` rows per tile (0: automatic).
Tuning tile(std::int64_t rows) {
  Tuning t = forced(Path::kTile);
  t.tile_rows = rows;
  return t;
}

// ---- one backward run ------------------------------------------------------------------------------------

struct Config {
  Layout layout = Layout::kChannelsFirst;
  std::int64_t batch = 1;
  std::int64_t channels = 1;
  std::int64_t spatial = 1;
  std::int64_t groups = 1;
  Activation act = Activation::kNone;
  bool gamma = false;
  bool beta = false;
  bool mask = false;
  bool dgamma = true; // outputs requested
  bool dbeta = true;
  float epsilon = 1e-3f;
  Tuning tuning{};
  Path expect = Path::kAuto;
  int offset = 0;    // elements: x, dy and dx one past an aligned address
  int ws_offset = 0; // bytes: the workspace pointer (any alignment is allowed)
};

std::string describe(const Config& c) {
  std::string s = std::string(c.layout == Layout::kChannelsFirst ? "NC*S" : "N*SC") +
                  " N=" + std::to_string(c.batch) + " C=" + std::to_string(c.channels) +
                  " S=" + std::to_string(c.spatial) + " G=" + std::to_string(c.groups) +
                  " act=" + gn::activation_name(c.act) + (c.gamma ? " gamma" : "") + (c.beta ? " beta" : "") +
                  (c.mask ? " mask" : "") + (c.dgamma ? " dgamma" : "") + (c.dbeta ? " dbeta" : "") +
                  " path=" + gnk::path_name(c.tuning.path);
  if (c.tuning.splits != 0) {
    s += " splits=" + std::to_string(c.tuning.splits);
  }
  if (c.tuning.tile_rows != 0) {
    s += " tile_rows=" + std::to_string(c.tuning.tile_rows);
  }
  if (c.offset != 0) {
    s += " offset=" + std::to_string(c.offset);
  }
  return s;
}

/// A run of a gn::PlanShape (its layout, sizes and mask; the rest as in Config's defaults).
Config config_of(const gn::PlanShape& s) {
  Config c;
  c.layout = s.layout;
  c.batch = s.batch;
  c.channels = s.channels;
  c.groups = s.groups;
  c.spatial = s.spatial;
  c.mask = s.mask;
  return c;
}

/// Inputs of one backward: x and dy in T, float parameters, the mask, and the statistics (float, as the
/// forward hands them over).
template <class T>
struct Inputs {
  std::vector<T> x;
  std::vector<T> dy;
  std::vector<float> gamma;
  std::vector<float> beta;
  std::vector<std::uint8_t> mask;
  std::vector<float> mean;
  std::vector<float> rstd;
};

/// x ~ N(0.5, 2) and dy ~ N(0, 1) rounded to T; mean / rstd are the exact statistics rounded to float
/// (what a correct forward returns, within its tolerance). With ReLU, dy is zeroed where pre is so close
/// to 0 that float32 may see the other sign (the gradient would be ambiguous, not wrong).
template <class T>
Inputs<T> make_inputs(const Config& c, std::mt19937_64& rng) {
  Inputs<T> in;
  const std::size_t n = static_cast<std::size_t>(c.batch * c.channels * c.spatial);
  in.x = gn::normal_values<T>(rng, n, 0.5, 2.0);
  in.dy = gn::normal_values<T>(rng, n, 0.0, 1.0);
  if (c.gamma) {
    in.gamma = gn::float_values(rng, c.channels, 1.0, 0.5);
  }
  if (c.beta) {
    in.beta = gn::float_values(rng, c.channels, 0.0, 0.5);
  }
  if (c.mask) {
    in.mask = gn::make_mask(rng, c.batch, c.spatial);
  }
  const gn::Problem p = gn::problem_of(c, in);
  const gn::Stats st = gn::statistics(p, gn::to_double(in.x));
  for (std::size_t k = 0; k < st.mean.size(); ++k) {
    in.mean.push_back(static_cast<float>(st.mean[k]));
    in.rstd.push_back(static_cast<float>(st.rstd[k]));
  }
  if (c.act == Activation::kReLU) {
    const gn::Normalized f = gn::normalize(p, gn::to_double(in.x), gn::widen(in.mean), gn::widen(in.rstd));
    p.for_each([&](std::int64_t, std::int64_t, std::int64_t ch, std::int64_t, std::size_t i) {
      if (std::fabs(f.pre[i]) <=
          1e-4 * (1.0 + std::fabs(f.xhat[i] * p.gamma_at(ch)) + std::fabs(p.beta_at(ch)))) {
        in.dy[i] = Dtype<T>::from_double(0.0);
      }
    });
  }
  return in;
}

template <class T>
struct Result {
  Status status = Status::kSuccess;
  Path path = Path::kAuto;
  std::vector<T> dx;
  std::vector<float> dgamma;
  std::vector<float> dbeta;
  bool guards_intact = true;
};

template <class U>
DeviceBuffer<U> upload_at(const std::vector<U>& host, int offset, U guard) {
  std::vector<U> h(host.size() + static_cast<std::size_t>(offset) + 1, guard);
  std::copy(host.begin(), host.end(), h.begin() + offset);
  return DeviceBuffer<U>(h);
}

/// Runs the backward with dx, dgamma and dbeta poisoned with 0xFF bytes (NaN): every element must be
/// written, nothing around them.
template <class T>
Result<T> run_backward(const Config& c, const Inputs<T>& in) {
  Result<T> res;
  const std::size_t n = in.x.size();
  const T guard = Dtype<T>::from_double(3.0);
  DeviceBuffer<T> d_x = upload_at(in.x, c.offset, guard);
  DeviceBuffer<T> d_dy = upload_at(in.dy, c.offset, guard);
  DeviceBuffer<float> d_gamma(in.gamma.empty() ? std::vector<float>{0.0f} : in.gamma);
  DeviceBuffer<float> d_beta(in.beta.empty() ? std::vector<float>{0.0f} : in.beta);
  DeviceBuffer<std::uint8_t> d_mask(in.mask.empty() ? std::vector<std::uint8_t>{0} : in.mask);
  DeviceBuffer<float> d_mean(in.mean.empty() ? std::vector<float>{0.0f} : in.mean);
  DeviceBuffer<float> d_rstd(in.rstd.empty() ? std::vector<float>{0.0f} : in.rstd);
  DeviceBuffer<T> d_dx(static_cast<std::size_t>(c.offset) + n + 1);
  DeviceBuffer<float> d_dgamma(static_cast<std::size_t>(c.channels) + 1);
  DeviceBuffer<float> d_dbeta(static_cast<std::size_t>(c.channels) + 1);
  d_dx.fill_bytes(0xff);
  d_dgamma.fill_bytes(0xff);
  d_dbeta.fill_bytes(0xff);

  gnk::GroupNormBackwardArgs a;
  a.dtype = Dtype<T>::kDType;
  a.layout = c.layout;
  a.x = d_x.get() + c.offset;
  a.dy = d_dy.get() + c.offset;
  a.batch = c.batch;
  a.channels = c.channels;
  a.spatial = c.spatial;
  a.groups = c.groups;
  a.mean = d_mean.get();
  a.rstd = d_rstd.get();
  a.gamma = in.gamma.empty() ? nullptr : d_gamma.get();
  a.beta = in.beta.empty() ? nullptr : d_beta.get();
  a.activation = c.act;
  a.mask = in.mask.empty() ? nullptr : d_mask.get();
  a.dx = d_dx.get() + c.offset;
  a.dgamma = c.dgamma ? d_dgamma.get() : nullptr;
  a.dbeta = c.dbeta ? d_dbeta.get() : nullptr;
  a.tuning = c.tuning;

  res.path = gnk::selected_path(a);
  const std::size_t ws_bytes = gnk::workspace_size(a);
  DeviceBuffer<unsigned char> ws(ws_bytes + static_cast<std::size_t>(c.ws_offset));
  res.status = gnk::run(a, ws_bytes > 0 ? ws.get() + c.ws_offset : nullptr, ws_bytes, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << describe(c);
  if (res.status != Status::kSuccess) {
    return res;
  }
  const std::vector<T> dx_all = d_dx.download();
  res.dx.assign(dx_all.begin() + c.offset, dx_all.begin() + c.offset + static_cast<std::ptrdiff_t>(n));
  const std::uint32_t poison = sizeof(T) == 4 ? 0xffffffffu : 0xffffu;
  for (std::size_t i = 0; i < dx_all.size(); ++i) {
    const bool inside = i >= static_cast<std::size_t>(c.offset) && i < static_cast<std::size_t>(c.offset) + n;
    res.guards_intact = res.guards_intact && (inside || gn::bits(dx_all[i]) == poison);
  }
  res.dgamma = d_dgamma.download();
  res.dbeta = d_dbeta.download();
  const std::size_t nc = static_cast<std::size_t>(c.channels);
  for (std::size_t ch = 0; ch <= nc; ++ch) {
    const bool written_g = c.dgamma && ch < nc;
    const bool written_b = c.dbeta && ch < nc;
    res.guards_intact = res.guards_intact && (written_g || gn::bits(res.dgamma[ch]) == 0xffffffffu) &&
                        (written_b || gn::bits(res.dbeta[ch]) == 0xffffffffu);
  }
  res.dgamma.resize(nc);
  res.dbeta.resize(nc);
  return res;
}

/// Compares with the double reference run on the same (float) statistics. Tolerances: gn::backward_reference
/// bounds the float32 error of each output (the sums' accumulation over the group, or over N x spatial per
/// channel, the terms' own roundings, act' recomputed from pre with a fast exp for SiLU, the final
/// expression's roundings); dx is then rounded once to T (one ulp of T at |want| + tol, as in the forward),
/// dgamma / dbeta to float32 (one float32 ulp).
template <class T>
int check_backward(const Config& c, const Inputs<T>& in, const Result<T>& got) {
  const gn::Problem p = gn::problem_of(c, in);
  const gn::Gradients want = gn::backward_reference(p, gn::to_double(in.x), gn::to_double(in.dy),
                                                    gn::widen(in.mean), gn::widen(in.rstd));
  int failures = 0;
  auto fail = [&](const std::string& what) {
    if (failures++ < 5) {
      ADD_FAILURE() << describe(c) << " " << Dtype<T>::kName << " (path " << gnk::path_name(got.path)
                    << "): " << what << " (" << seed_note() << ")";
    }
  };
  if (!got.guards_intact) {
    fail("wrote outside dx / dgamma / dbeta (or into an output not requested)");
  }
  p.for_each([&](std::int64_t n, std::int64_t, std::int64_t ch, std::int64_t s, std::size_t i) {
    if (failures >= 5) {
      return;
    }
    const double tol = want.tol_dx[i] + gn::ulp<T>(std::fabs(want.dx[i]) + want.tol_dx[i]);
    const double v = Dtype<T>::to_double(got.dx[i]);
    if (!(std::fabs(v - want.dx[i]) <= tol)) {
      fail("dx[n=" + std::to_string(n) + " c=" + std::to_string(ch) + " s=" + std::to_string(s) + "] = " +
           std::to_string(v) + ", want " + std::to_string(want.dx[i]) + " (tol " + std::to_string(tol) + ")");
    }
  });
  for (std::size_t ch = 0; ch < static_cast<std::size_t>(c.channels); ++ch) {
    const double tg = want.tol_dgamma[ch] + gn::ulp<float>(std::fabs(want.dgamma[ch]) + want.tol_dgamma[ch]);
    const double tb = want.tol_dbeta[ch] + gn::ulp<float>(std::fabs(want.dbeta[ch]) + want.tol_dbeta[ch]);
    if (c.dgamma && !(std::fabs(got.dgamma[ch] - want.dgamma[ch]) <= tg)) {
      fail("dgamma[" + std::to_string(ch) + "] = " + std::to_string(got.dgamma[ch]) + ", want " +
           std::to_string(want.dgamma[ch]) + " (tol " + std::to_string(tg) + ")");
    }
    if (c.dbeta && !(std::fabs(got.dbeta[ch] - want.dbeta[ch]) <= tb)) {
      fail("dbeta[" + std::to_string(ch) + "] = " + std::to_string(got.dbeta[ch]) + ", want " +
           std::to_string(want.dbeta[ch]) + " (tol " + std::to_string(tb) + ")");
    }
  }
  return failures;
}

template <class T>
int run_and_check(const Config& c, std::mt19937_64& rng) {
  const Inputs<T> in = make_inputs<T>(c, rng);
  const Result<T> got = run_backward(c, in);
  EXPECT_EQ(got.status, Status::kSuccess) << describe(c) << ": " << culayers::last_error_message();
  if (got.status != Status::kSuccess) {
    return 1;
  }
  if (c.expect != Path::kAuto) {
    EXPECT_EQ(got.path, c.expect) << describe(c) << ": selected " << gnk::path_name(got.path) << ", expected "
                                  << gnk::path_name(c.expect);
  }
  return check_backward(c, in, got);
}

// The workspace may have any alignment (workspace_size includes the slack): the split and tile paths, and the
// counts the masked backward keeps in the workspace, give the reference's answer with the workspace at odd
// byte offsets, bit for bit as at offset 0.
TEST(GroupNormBackward, WorkspaceAtAnyOffset) {
  auto rng = rng_for_test();
  const struct {
    Layout layout;
    bool mask;
    Tuning tuning;
    Path path;
  } cases[] = {{Layout::kChannelsFirst, false, with_splits(3), Path::kSplit},
               {Layout::kChannelsLast, true, with_splits(4), Path::kSplit},
               {Layout::kChannelsLast, true, tile(3), Path::kTile}};
  for (const auto& k : cases) {
    Config c;
    c.layout = k.layout;
    c.batch = 2;
    c.channels = 24;
    c.groups = 3;
    c.spatial = 17;
    c.act = Activation::kSiLU;
    c.gamma = true;
    c.beta = true;
    c.mask = k.mask;
    c.tuning = k.tuning;
    c.expect = k.path;
    const Inputs<float> in = make_inputs<float>(c, rng);
    const Result<float> base = run_backward(c, in);
    ASSERT_EQ(base.status, Status::kSuccess) << culayers::last_error_message();
    EXPECT_EQ(base.path, k.path) << describe(c);
    EXPECT_EQ(check_backward(c, in, base), 0) << describe(c);
    for (int offset : {1, 3, 255}) {
      c.ws_offset = offset;
      const Result<float> got = run_backward(c, in);
      ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
      for (std::size_t i = 0; i < got.dx.size(); ++i) {
        ASSERT_EQ(gn::bits(got.dx[i]), gn::bits(base.dx[i]))
            << describe(c) << ", offset " << offset << ", dx[" << i << "]";
      }
      for (std::size_t i = 0; i < got.dgamma.size(); ++i) {
        ASSERT_EQ(gn::bits(got.dgamma[i]), gn::bits(base.dgamma[i])) << describe(c) << ", offset " << offset;
        ASSERT_EQ(gn::bits(got.dbeta[i]), gn::bits(base.dbeta[i])) << describe(c) << ", offset " << offset;
      }
    }
  }
}

// ---- the reference against finite differences -----------------------------------------------------------

/// L = sum(w * y) for the forward of `p` (its own double statistics).
double loss(const gn::Problem& p, const std::vector<double>& x, const std::vector<double>& w,
            std::vector<double>* pre = nullptr) {
  const gn::Stats st = gn::statistics(p, x);
  const gn::Normalized f = gn::normalize(p, x, st.mean, st.rstd);
  if (pre != nullptr) {
    *pre = f.pre;
  }
  double l = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    l += w[i] * f.y[i];
  }
  return l;
}

// The reference backward (with exact statistics) is the gradient of L = sum(dy * y): central differences
// in double, Richardson-extrapolated from steps h = 1e-5 and h / 2 (truncation ~ h^4 |L^(5)|, cancellation
// ~ 1e-16 |L| / h ~ 1e-11), agree to 1e-6 (1 + |grad|). (A plain central difference, truncation
// h^2 |L'''| / 6, missed by 1.6e-6 for one seed in thousands: a group with a single valid position has
// var = 0 and rstd = 1 / sqrt(eps) = 31.6, so SiLU's pre moves 31.6 times faster and L''' is that much
// larger.) Both layouts, each activation, a mask with a fully masked sample and one with a single
// valid position. For ReLU, a coordinate whose perturbation flips the sign of some pre-activation (the kink)
// is skipped.
TEST(GroupNormReference, BackwardMatchesFiniteDifferences) {
  auto rng = rng_for_test();
  std::normal_distribution<double> normal(0.0, 1.0);
  for (Layout layout : kLayouts) {
    for (Activation act : kActivations) {
      gn::Problem p;
      p.layout = layout;
      p.batch = 3;
      p.channels = 4;
      p.groups = 2;
      p.spatial = 5;
      p.activation = act;
      for (int c = 0; c < 4; ++c) {
        p.gamma.push_back(1.0 + 0.5 * normal(rng));
        p.beta.push_back(0.5 * normal(rng));
      }
      if (layout == Layout::kChannelsLast) {
        p.mask = gn::make_mask(rng, p.batch, p.spatial);
      }
      std::vector<double> x(p.numel());
      std::vector<double> dy(p.numel());
      for (std::size_t i = 0; i < x.size(); ++i) {
        x[i] = 0.3 + 1.5 * normal(rng);
        dy[i] = normal(rng);
      }
      const gn::Stats st = gn::statistics(p, x);
      const gn::Gradients grad = gn::backward_reference(p, x, dy, st.mean, st.rstd, false);
      const double h = 1e-5;
      std::vector<double> pre0;
      loss(p, x, dy, &pre0);
      auto crosses_kink = [&](const std::vector<double>& a, const std::vector<double>& b) {
        if (act != Activation::kReLU) {
          return false;
        }
        for (std::size_t i = 0; i < a.size(); ++i) {
          if ((a[i] > 0.0) != (pre0[i] > 0.0) || (b[i] > 0.0) != (pre0[i] > 0.0)) {
            return true;
          }
        }
        return false;
      };
      const std::string what = std::string(layout == Layout::kChannelsFirst ? "NC*S" : "N*SC mask") +
                               " act " + gn::activation_name(act);
      // Richardson's extrapolation of the central difference: (4 D(h / 2) - D(h)) / 3, from the loss at
      // +-h and +-h / 2 of one coordinate (eval(step) = the loss with that coordinate moved by step, and its
      // pre-activations); *kink: some evaluation crossed ReLU's kink.
      const auto richardson = [&](const std::function<double(double, std::vector<double>*)>& eval,
                                  bool* kink) {
        double d[2];
        *kink = false;
        for (int k = 0; k < 2; ++k) {
          const double step = k == 0 ? h : h / 2;
          std::vector<double> pp;
          std::vector<double> pm;
          const double lp = eval(step, &pp);
          const double lm = eval(-step, &pm);
          *kink = *kink || crosses_kink(pp, pm);
          d[k] = (lp - lm) / (2.0 * step);
        }
        return (4.0 * d[1] - d[0]) / 3.0;
      };
      int checked = 0;
      for (std::size_t i = 0; i < x.size(); ++i) {
        bool kink = false;
        const double fd = richardson(
            [&](double step, std::vector<double>* pre) {
              std::vector<double> xs = x;
              xs[i] += step;
              return loss(p, xs, dy, pre);
            },
            &kink);
        if (kink) {
          continue;
        }
        ++checked;
        EXPECT_NEAR(grad.dx[i], fd, 1e-6 * (1.0 + std::fabs(fd))) << what << ": dx[" << i << "]";
      }
      EXPECT_GT(checked, static_cast<int>(x.size()) / 2) << what;
      for (std::size_t c = 0; c < p.gamma.size(); ++c) {
        for (int which = 0; which < 2; ++which) {
          bool kink = false;
          const double fd = richardson(
              [&](double step, std::vector<double>* pre) {
                gn::Problem ps = p;
                (which == 0 ? ps.gamma : ps.beta)[c] += step;
                return loss(ps, x, dy, pre);
              },
              &kink);
          if (kink) {
            continue;
          }
          const double g = which == 0 ? grad.dgamma[c] : grad.dbeta[c];
          EXPECT_NEAR(g, fd, 1e-6 * (1.0 + std::fabs(fd)))
              << what << (which == 0 ? ": dgamma[" : ": dbeta[") << c << "]";
        }
      }
    }
  }
}

// ---- against the reference, every path -------------------------------------------------------------------

struct ShapeCase {
  std::int64_t batch, channels, groups, spatial;
  Tuning tuning;
  Path expect;
  bool all_activations; // false: one activation per layout / mask combination, in rotation (emulator time)
};

Tuning auto_split() {
  Tuning t = pinned();
  t.min_split_elements = 512;
  t.split_min_bytes = 1; // the small-tensor rule off (the forward's SmallTensorTakesTheBlockPath)
  return t;
}

// The forward's coverage: C = G, spatial 1 and 7x7, G = 1, and the automatic warp, block and split paths;
// then small shapes forced down each path, with 3 and 7 chunks. (Thousands of groups: ThousandsOfGroups.)
const ShapeCase kShapes[] = {
    {2, 8, 8, 49, pinned(), Path::kWarp, true},
    {3, 12, 4, 1, pinned(), Path::kWarp, true},
    {4, 6, 3, 7, pinned(), Path::kWarp, true},
    {3, 64, 4, 49, pinned(), Path::kWarp, true},
    {2, 16, 2, 300, pinned(), Path::kBlock, true},
    {3, 32, 32, 1, pinned(), Path::kWarp, true},
    {1, 4, 1, 1000, auto_split(), Path::kSplit, false}, // one group: too few bytes in flight for a block
    {3, 12, 3, 25, forced(Path::kWarp), Path::kWarp, true},
    {3, 12, 3, 25, forced(Path::kBlock), Path::kBlock, true},
    {3, 12, 3, 25, with_splits(3), Path::kSplit, false},
    {3, 32, 4, 16, with_splits(7), Path::kSplit, false},
    {3, 32, 4, 16, forced(Path::kBlock), Path::kBlock, false},
    {3, 4, 2, 1, with_splits(3), Path::kSplit, false}, // more chunks than elements
};

template <class T>
class GroupNormBackwardTyped : public ::testing::Test {};
using DTypes = ::testing::Types<float, __half, __nv_bfloat16>;
TYPED_TEST_SUITE(GroupNormBackwardTyped, DTypes);

// Every layout x activation on every shape; gamma / beta given or not and dgamma / dbeta requested or not
// in rotation; channels last with and without a mask.
TYPED_TEST(GroupNormBackwardTyped, MatrixAgainstReference) {
  using T = TypeParam;
  auto rng = rng_for_test();
  int k = 0;
  int rotation = 0;
  int failures = 0;
  for (const ShapeCase& s : kShapes) {
    for (Layout layout : kLayouts) {
      for (bool mask : {false, true}) {
        if (mask && layout == Layout::kChannelsFirst) {
          continue;
        }
        ++rotation;
        for (Activation act : kActivations) {
          if (!s.all_activations && act != kActivations[rotation % 3]) {
            continue;
          }
          Config c;
          c.layout = layout;
          c.batch = s.batch;
          c.channels = s.channels;
          c.groups = s.groups;
          c.spatial = s.spatial;
          c.act = act;
          c.gamma = (k % 4) != 0;
          c.beta = (k % 4) >= 2;
          c.dgamma = (k % 5) != 3;
          c.dbeta = (k % 5) != 4;
          c.mask = mask;
          c.tuning = s.tuning;
          c.expect = gn::shape_case_path(s.expect, s.tuning, culayers::test::sm_count());
          ++k;
          failures += run_and_check<T>(c, rng);
          if (failures > 20) {
            FAIL() << "too many failures";
          }
        }
      }
    }
  }
}

// ---- tile path -------------------------------------------------------------------------------------------

// The tile path forced on every shape of gn::kTileShapes with each rows-per-tile choice (half of them
// with a mask, half without: gn::tile_rows_half), with and without a mask
// (make_mask: sample 1 fully masked, sample 2 a single valid row, masked rows inside tiles and at their
// tails); activations, gamma / beta given or not and dgamma / dbeta requested or not in rotation.
TYPED_TEST(GroupNormBackwardTyped, TilePathForced) {
  using T = TypeParam;
  auto rng = rng_for_test();
  int k = 0;
  int failures = 0;
  for (const gn::TileShape& s : gn::kTileShapes) {
    for (bool mask : {false, true}) {
      if (mask && s.layout == Layout::kChannelsFirst) {
        continue;
      }
      for (std::int64_t rows : gn::tile_rows_for(s.spatial, gn::tile_rows_half(s, mask))) {
        Config c;
        c.layout = s.layout;
        c.batch = s.batch;
        c.channels = s.channels;
        c.groups = s.groups;
        c.spatial = s.spatial;
        c.act = kActivations[k % 3];
        c.gamma = (k / 3) % 4 != 0;
        c.beta = (k / 3) % 4 >= 2;
        c.dgamma = (k % 5) != 3;
        c.dbeta = (k % 5) != 4;
        c.mask = mask;
        c.tuning = tile(rows);
        c.expect = Path::kTile;
        ++k;
        failures += run_and_check<T>(c, rng);
        if (failures > 20) {
          FAIL() << "too many failures";
        }
      }
    }
  }
}

// The automatic choice on the emulator (4 SMs: tile when x >= 128 KB, channels last, E > 1024, group slices
// under 128 bytes): float32 [3, 200, 64] with G = 8 (150 KB, 32-byte slices) takes the tile path and matches
// the reference (mask, SiLU, gamma and beta); channels first, or half the size, it does not. 16-bit: twice
// the rows for the same bytes.
TYPED_TEST(GroupNormBackwardTyped, TilePathAutomatic) {
  using T = TypeParam;
  auto rng = rng_for_test();
  Config c;
  c.layout = Layout::kChannelsLast;
  c.batch = 3;
  c.channels = 64;
  c.groups = 8;
  c.spatial = sizeof(T) == 4 ? 200 : 400;
  c.act = Activation::kSiLU;
  c.gamma = true;
  c.beta = true;
  c.mask = true;
  c.expect = Path::kTile;
  c.tuning.tile_min_bytes = 128 * 1024; // the emulator's default (4 SMs x 32 KB), on every device
  EXPECT_EQ(run_and_check<T>(c, rng), 0) << describe(c);

  const std::size_t n = static_cast<std::size_t>(c.batch * c.channels * c.spatial);
  DeviceBuffer<T> x(n);
  DeviceBuffer<T> dx(n);
  DeviceBuffer<float> stats(static_cast<std::size_t>(c.batch * c.groups));
  gnk::GroupNormBackwardArgs a;
  a.dtype = Dtype<T>::kDType;
  a.x = x.get();
  a.dy = x.get();
  a.dx = dx.get();
  a.mean = stats.get();
  a.rstd = stats.get();
  a.batch = c.batch;
  a.channels = c.channels;
  a.groups = c.groups;
  a.spatial = c.spatial;
  a.layout = Layout::kChannelsLast;
  a.tuning = c.tuning;
  EXPECT_EQ(gnk::selected_path(a), Path::kTile);
  EXPECT_GT(gnk::workspace_size(a), 0u) << "the tile path's partials, even without dgamma / dbeta";
  a.layout = Layout::kChannelsFirst;
  EXPECT_NE(gnk::selected_path(a), Path::kTile) << "channels first";
  EXPECT_NE(gnk::selected_path(a), Path::kAuto) << "channels first";
  a.layout = Layout::kChannelsLast;
  a.spatial = c.spatial / 2;
  EXPECT_NE(gnk::selected_path(a), Path::kTile) << "below the size threshold";
  EXPECT_NE(gnk::selected_path(a), Path::kAuto) << "below the size threshold";
}

// Random problems (gn::random_case) with random gamma / beta / dgamma / dbeta and misaligned views, each
// against the reference; a forced path must be the one selected.
TYPED_TEST(GroupNormBackwardTyped, RandomProblemsAgainstReference) {
  using T = TypeParam;
  auto rng = rng_for_test();
  std::uniform_int_distribution<int> coin(0, 1);
  int failures = 0;
  for (int k = 0; k < 40; ++k) {
    Config c;
    gn::apply_random_case(gn::random_case(rng), c);
    c.gamma = coin(rng) == 1;
    c.beta = coin(rng) == 1;
    c.dgamma = coin(rng) == 1;
    c.dbeta = coin(rng) == 1;
    c.offset = coin(rng);
    failures += run_and_check<T>(c, rng);
    if (failures > 20) {
      FAIL() << "too many failures";
    }
  }
}

// N x G in the thousands (2048 groups of 2 elements): both layouts, one configuration each.
TEST(GroupNormBackward, ThousandsOfGroups) {
  auto rng = rng_for_test();
  for (Layout layout : kLayouts) {
    Config c;
    c.layout = layout;
    c.batch = 512;
    c.channels = 8;
    c.groups = 4;
    c.spatial = 1;
    c.act = layout == Layout::kChannelsLast ? Activation::kSiLU : Activation::kReLU;
    c.gamma = true;
    c.beta = layout == Layout::kChannelsLast;
    c.mask = layout == Layout::kChannelsLast;
    c.tuning = pinned();
    c.expect = Path::kWarp;
    if (layout == Layout::kChannelsLast) {
      run_and_check<__half>(c, rng);
    } else {
      run_and_check<float>(c, rng);
    }
  }
}

// Huge groups over few positions (gn::kHugeGroupShapes): the split path cuts the channel axis (see the
// forward's test of the same name), and dgamma / dbeta sum the per-channel partial rows of each spatial
// chunk, which the channel chunks write in disjoint column ranges; then forced counts that cut both axes
// (2 spatial chunks of 3 channel ranges: partial rows n x 2 + 0..1), in both layouts. The emulator's
// block count shows the chunks: more than the positions.
TYPED_TEST(GroupNormBackwardTyped, HugeGroupsOverFewPositionsSplitTheChannelAxisToo) {
  using T = TypeParam;
  auto rng = rng_for_test();
  int k = 0;
  for (const gn::PlanShape& s : gn::kHugeGroupShapes) {
    Config c = config_of(s);
    c.act = kActivations[k % 3];
    c.gamma = k % 2 == 0;
    c.beta = k != 1;
    ++k;
    c.tuning = forced(Path::kSplit);
    c.tuning.min_split_elements = 256;
    c.expect = Path::kSplit;
    EXPECT_EQ(run_and_check<T>(c, rng), 0) << describe(c);
    // Without dgamma / dbeta the backward runs its two split kernels only, each over N x G x S blocks (the
    // emulator counts them): more than the positions shows the channel axis was cut.
    c.dgamma = false;
    c.dbeta = false;
    const std::uint64_t before = culayers::test::emulated_blocks();
    EXPECT_EQ(run_and_check<T>(c, rng), 0) << describe(c);
    const std::uint64_t blocks = culayers::test::emulated_blocks() - before;
    EXPECT_TRUE(CULAYERS_TEST_EMULATED == 0 ||
                blocks > 2 * static_cast<std::uint64_t>(c.batch * c.groups * c.spatial))
        << describe(c) << ": " << blocks << " blocks";
  }
  for (const Layout layout : kLayouts) {
    Config c;
    c.layout = layout;
    c.batch = 2;
    c.channels = 6;
    c.groups = 2;
    c.spatial = 3; // 3 x 3 scalar elements per group
    c.mask = layout == Layout::kChannelsLast;
    c.act = Activation::kSiLU;
    c.gamma = true;
    c.beta = true;
    c.tuning = with_splits(6);
    c.tuning.path = Path::kSplit;
    c.expect = Path::kSplit;
    EXPECT_EQ(run_and_check<T>(c, rng), 0) << describe(c);
  }
}

// x, dy and dx one element past an aligned address: scalar accesses only, same answer; each path.
TYPED_TEST(GroupNormBackwardTyped, MisalignedViews) {
  using T = TypeParam;
  auto rng = rng_for_test();
  for (Layout layout : kLayouts) {
    for (const Tuning& t : {forced(Path::kWarp), forced(Path::kBlock), with_splits(3), tile(5)}) {
      if (t.path == Path::kTile && layout == Layout::kChannelsFirst) {
        continue; // the tile path needs the channels-last view (here V = C = 32 scalars per row)
      }
      Config c;
      c.layout = layout;
      c.batch = 3;
      c.channels = 32;
      c.groups = 4;
      c.spatial = 16;
      c.act = Activation::kSiLU;
      c.gamma = true;
      c.beta = true;
      c.mask = layout == Layout::kChannelsLast;
      c.tuning = t;
      c.expect = gn::expected_path(t);
      c.offset = 1;
      run_and_check<T>(c, rng);
    }
  }
}

// Forward kernel -> backward kernel: the statistics the backward gets are the forward's float32 outputs;
// the reference uses the same floats.
/// Runs the forward kernel (float16, SiLU, affine, a mask in channels last) and checks the backward chained
/// on its statistics.
void chained_forward_backward(std::mt19937_64& rng, Layout layout, const Tuning& t, std::int64_t channels,
                              std::int64_t groups) {
  using T = __half;
  {
    {
      Config c;
      c.layout = layout;
      c.batch = 3;
      c.channels = channels;
      c.groups = groups;
      c.spatial = 30;
      c.act = Activation::kSiLU;
      c.gamma = true;
      c.beta = true;
      c.mask = layout == Layout::kChannelsLast;
      c.tuning = t;
      Inputs<T> in = make_inputs<T>(c, rng);
      DeviceBuffer<T> d_x(in.x);
      DeviceBuffer<T> d_y(in.x.size());
      DeviceBuffer<float> d_gamma(in.gamma);
      DeviceBuffer<float> d_beta(in.beta);
      DeviceBuffer<std::uint8_t> d_mask(in.mask.empty() ? std::vector<std::uint8_t>{0} : in.mask);
      DeviceBuffer<float> d_mean(in.mean.size());
      DeviceBuffer<float> d_rstd(in.rstd.size());
      gnk::GroupNormArgs f;
      f.dtype = culayers::DType::kFloat16;
      f.layout = layout;
      f.x = d_x.get();
      f.batch = c.batch;
      f.channels = c.channels;
      f.spatial = c.spatial;
      f.groups = c.groups;
      f.gamma = d_gamma.get();
      f.beta = d_beta.get();
      f.activation = c.act;
      f.mask = in.mask.empty() ? nullptr : d_mask.get();
      f.y = d_y.get();
      f.mean = d_mean.get();
      f.rstd = d_rstd.get();
      f.tuning = t;
      const std::size_t ws_bytes = gnk::workspace_size(f);
      DeviceBuffer<unsigned char> ws(ws_bytes);
      ASSERT_EQ(gnk::run(f, ws_bytes > 0 ? ws.get() : nullptr, ws_bytes, nullptr), Status::kSuccess)
          << culayers::last_error_message();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      in.mean = d_mean.download();
      in.rstd = d_rstd.download();
      const Result<T> got = run_backward(c, in);
      ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
      check_backward(c, in, got);
    }
  }
}

// The backward's block path staging x and dy beyond the 48 KB available without the opt-in attribute
// (float32, E = 8 x 1024 = 8192 elements, 2 x 32 KB staged): run() sets the attribute; results match.
TEST(GroupNormBackward, BlockPathAboveDefaultSharedMemory) {
  auto rng = rng_for_test();
  for (Layout layout : kLayouts) {
    Config c;
    c.layout = layout;
    c.batch = 2;
    c.channels = 16;
    c.groups = 2;
    c.spatial = 1024;
    c.gamma = true;
    c.beta = true;
    c.tuning = forced(Path::kBlock);
    c.expect = Path::kBlock;
    EXPECT_EQ(run_and_check<float>(c, rng), 0) << describe(c);
  }
}

TEST(GroupNormBackward, ChainedWithForwardKernel) {
  auto rng = rng_for_test();
  for (Layout layout : kLayouts) {
    for (const Tuning& t : {forced(Path::kWarp), forced(Path::kBlock), with_splits(5), tile(7)}) {
      if (t.path == Path::kTile && layout == Layout::kChannelsFirst) {
        continue; // the tile path needs the channels-last view
      }
      chained_forward_backward(rng, layout, t, 16, 4);
    }
  }
}

// For the TSan preset (which runs only *Tsan* tests): every path of both directions with small grids, and
// both shapes of the channels-last per-channel merge (tx < 32: shuffles then one slot row per warp; tx >= 32:
// one slot row per ty, with vector width 1 and 40 channels per group), so a missing barrier or __syncwarp
// around the shared-memory slots or the staged group shows up as a data race.
TEST(GroupNormTsan, ForwardAndBackwardEveryPath) {
  auto rng = rng_for_test();
  for (Layout layout : kLayouts) {
    for (Tuning t : {forced(Path::kWarp), forced(Path::kBlock), with_splits(3), tile(7)}) {
      if (t.path == Path::kTile && layout == Layout::kChannelsFirst) {
        continue; // the tile path needs the channels-last view
      }
      chained_forward_backward(rng, layout, t, 16, 4);
      t.vector_width = 1;
      chained_forward_backward(rng, layout, t, 40, 1);
    }
  }
}

// A fully masked group: M = 0, so dx = rstd * g exactly as the header says (no mean / variance terms),
// with rstd = 1 / sqrt(eps); dgamma and dbeta still sum over its positions. Each path.
TEST(GroupNormBackward, FullyMaskedGroupEveryPath) {
  auto rng = rng_for_test();
  for (const Tuning& t : {forced(Path::kWarp), forced(Path::kBlock), with_splits(3), tile(1), tile(7)}) {
    for (Activation act : kActivations) {
      Config c;
      c.layout = Layout::kChannelsLast;
      c.batch = 3;
      c.channels = 8;
      c.groups = 2;
      c.spatial = 20;
      c.act = act;
      c.gamma = true;
      c.beta = true;
      c.mask = true; // sample 1 fully masked (gn::make_mask)
      c.tuning = t;
      const Inputs<float> in = make_inputs<float>(c, rng);
      ASSERT_EQ(in.mean[2], 0.0f);
      const Result<float> got = run_backward(c, in);
      ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
      EXPECT_EQ(got.path, gn::expected_path(t)) << describe(c);
      check_backward(c, in, got);
      // Sample 1 directly: dx = rstd * dy * act'(pre) * gamma.
      const gn::Problem p = gn::problem_of(c, in);
      const double rstd = in.rstd[2];
      int bad = 0;
      for (std::int64_t ch = 0; ch < c.channels && bad < 3; ++ch) {
        for (std::int64_t s = 0; s < c.spatial && bad < 3; ++s) {
          const std::size_t i = p.index(1, ch, s);
          const double x = in.x[i];
          const double pre = x * rstd * p.gamma_at(ch) + p.beta_at(ch);
          const double want = rstd * in.dy[i] * gn::activate_grad(act, pre) * p.gamma_at(ch);
          // Four float32 roundings plus SiLU's derivative (see gn::activation_grad_error), times rstd ~ 31.6.
          const double tol = 8.0 * gn::kU32 * std::fabs(want) +
                             rstd * std::fabs(in.dy[i] * p.gamma_at(ch)) *
                                 gn::activation_grad_error(act, pre, 4.0 * gn::kU32 * (std::fabs(pre) + 1.0));
          if (!(std::fabs(got.dx[i] - want) <= tol)) {
            ++bad;
            ADD_FAILURE() << describe(c) << ": fully masked dx[c=" << ch << " s=" << s << "] = " << got.dx[i]
                          << ", want rstd * g = " << want;
          }
        }
      }
    }
  }
}

// ReLU's gate in the backward is the forward's: where the forward's pre-activation, (x - mean) *
// fl(gamma * rstd) + beta, is exactly 0 (y = +0), no gradient flows. The values (found by a search over
// float32 numbers): x - mean = 1.5, rstd = 0x1.025352p-1, gamma = 0x1.1df476p+1, beta = -1.5 * fl(gamma *
// rstd) (exact), where xhat * gamma + beta is 1.2e-7 with rounded products and 1.4e-7 fused: a backward
// that recomputed pre from xhat opened the gate and returned dbeta = the element count.
TEST(GroupNormBackward, ReluGateIsTheForwards) {
  const float rstd = 0x1.025352p-1f;
  const float gamma = 0x1.1df476p+1f;
  const float beta = -1.5f * (gamma * rstd);
  for (Layout layout : kLayouts) {
    for (const Tuning& t : {forced(Path::kWarp), forced(Path::kBlock), with_splits(3), tile(5)}) {
      if (t.path == Path::kTile && layout == Layout::kChannelsFirst) {
        continue;
      }
      Config c;
      c.layout = layout;
      c.channels = 2;
      c.spatial = 37;
      c.act = Activation::kReLU;
      c.gamma = true;
      c.beta = true;
      c.tuning = t;
      Inputs<float> in;
      in.x.assign(74, 1.5f);
      in.dy.assign(74, 1.0f);
      in.gamma = {gamma, gamma};
      in.beta = {beta, beta};
      in.mean = {0.0f};
      in.rstd = {rstd};
      const Result<float> got = run_backward(c, in);
      ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
      EXPECT_EQ(got.path, gn::expected_path(t)) << describe(c);
      EXPECT_TRUE(got.guards_intact) << describe(c);
      for (std::size_t i = 0; i < got.dx.size(); ++i) {
        ASSERT_EQ(got.dx[i], 0.0f) << describe(c) << ": dx[" << i << "]";
      }
      for (std::size_t ch = 0; ch < 2; ++ch) {
        EXPECT_EQ(got.dgamma[ch], 0.0f) << describe(c) << ": dgamma[" << ch << "]";
        EXPECT_EQ(got.dbeta[ch], 0.0f) << describe(c) << ": dbeta[" << ch << "]";
      }
    }
  }
}

// The grid-stride loops of the backward: every path with its grid capped at 1 and 3 blocks
// (tuning.max_blocks; the tile path's dx kernel keeps its dgamma / dbeta blocks and strides its dx blocks)
// over gn::kGridStrideShapes gives the reference's answer and the uncapped run's bits.
TEST(GroupNormBackward, GridStrideLoopsGiveTheSameBits) {
  using culayers::test::emulated_blocks;
  auto rng = rng_for_test();
  for (const gn::PlanShape& s : gn::kGridStrideShapes) {
    Config c = config_of(s);
    c.act = Activation::kSiLU;
    c.gamma = true;
    c.beta = true;
    c.tuning = pinned();
    c.tuning.path = s.path;
    c.tuning.splits = s.splits;
    c.tuning.tile_rows = s.tile_rows;
    c.expect = s.path;
    const Inputs<float> in = make_inputs<float>(c, rng);
    const std::uint64_t blocks0 = emulated_blocks();
    const Result<float> full = run_backward(c, in);
    const std::uint64_t full_blocks = emulated_blocks() - blocks0;
    ASSERT_EQ(full.status, Status::kSuccess) << describe(c) << ": " << culayers::last_error_message();
    for (const std::int64_t cap : {1, 3}) {
      c.tuning.max_blocks = cap;
      const std::uint64_t blocks1 = emulated_blocks();
      const Result<float> capped = run_backward(c, in);
      // The cap took effect (fewer blocks ran; emulated build only, 0 = 0 elsewhere).
      EXPECT_TRUE(CULAYERS_TEST_EMULATED == 0 || emulated_blocks() - blocks1 < full_blocks)
          << describe(c) << " max_blocks " << cap << ": " << emulated_blocks() - blocks1
          << " blocks, uncapped " << full_blocks;
      ASSERT_EQ(capped.status, Status::kSuccess) << culayers::last_error_message();
      EXPECT_EQ(check_backward(c, in, capped), 0) << describe(c) << " max_blocks " << cap;
      EXPECT_EQ(std::memcmp(capped.dx.data(), full.dx.data(), full.dx.size() * sizeof(float)), 0)
          << describe(c) << " max_blocks " << cap << ": dx differs from the uncapped grid's";
      EXPECT_EQ(std::memcmp(capped.dgamma.data(), full.dgamma.data(), full.dgamma.size() * sizeof(float)), 0)
          << describe(c) << " max_blocks " << cap;
      EXPECT_EQ(std::memcmp(capped.dbeta.data(), full.dbeta.data(), full.dbeta.size() * sizeof(float)), 0)
          << describe(c) << " max_blocks " << cap;
    }
  }
}

// ---- determinism ------------------------------------------------------------------------------------------

/// Runs the backward twice, the second time with the emulator's schedule permuted, and expects the same bits
/// (and the selected path, when the configuration names one); checks the first run against the reference.
template <class T>
void expect_repeatable(const Config& c, const Inputs<T>& in) {
  const Result<T> a = [&] {
    culayers::test::ScheduleSeed seed(0);
    return run_backward(c, in);
  }();
  const Result<T> b = [&] {
    culayers::test::ScheduleSeed seed(0x5eed1234);
    return run_backward(c, in);
  }();
  ASSERT_EQ(a.status, Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(b.status, Status::kSuccess) << culayers::last_error_message();
  if (c.expect != Path::kAuto) {
    EXPECT_EQ(a.path, c.expect) << describe(c);
  }
  for (std::size_t i = 0; i < a.dx.size(); ++i) {
    ASSERT_EQ(gn::bits(a.dx[i]), gn::bits(b.dx[i]))
        << describe(c) << ": dx[" << i << "] differs between runs";
  }
  for (std::size_t ch = 0; ch < a.dgamma.size(); ++ch) {
    ASSERT_EQ(gn::bits(a.dgamma[ch]), gn::bits(b.dgamma[ch])) << describe(c) << ": dgamma[" << ch << "]";
    ASSERT_EQ(gn::bits(a.dbeta[ch]), gn::bits(b.dbeta[ch])) << describe(c) << ": dbeta[" << ch << "]";
  }
  check_backward(c, in, a);
}

// Same bits every run for dx, dgamma and dbeta on every path (the split path's partials and the per-channel
// partials merged in a fixed order, never float atomics); in the emulated build the second run permutes the
// lane / warp schedule.
TEST(GroupNormBackward, RepeatedRunsAreBitIdentical) {
  auto rng = rng_for_test();
  using T = __nv_bfloat16;
  for (Layout layout : kLayouts) {
    for (const Tuning& t :
         {forced(Path::kWarp), forced(Path::kBlock), with_splits(5), auto_split(), tile(7), tile(0)}) {
      if (t.path == Path::kTile && layout == Layout::kChannelsFirst) {
        continue; // the tile path needs the channels-last view
      }
      Config c;
      c.layout = layout;
      c.batch = 3;
      c.channels = 8;
      c.groups = 2;
      c.spatial = 250;
      c.act = Activation::kSiLU;
      c.gamma = true;
      c.beta = true;
      c.mask = layout == Layout::kChannelsLast;
      c.tuning = t;
      c.expect = gn::expected_path(t);
      if (c.expect == Path::kAuto) { // auto_split(): a shape the planner splits (kShapes' one-group case)
        c.batch = 1;
        c.channels = 4;
        c.groups = 1;
        c.spatial = 1000;
        c.expect = gn::in_flight_split(culayers::test::sm_count());
      }
      expect_repeatable(c, make_inputs<T>(c, rng));
    }
  }
  // The tile path where its in-block reductions have the most structure: several vectors per group summed by
  // the group's first lane (C/G = 10) and an odd number of thread rows (V = 48, k = 5); float32 too.
  for (const gn::TileShape& s : {gn::kTileShapes[1], gn::kTileShapes[3]}) {
    Config c;
    c.layout = s.layout;
    c.batch = s.batch;
    c.channels = s.channels;
    c.groups = s.groups;
    c.spatial = 40;
    c.act = Activation::kSiLU;
    c.gamma = true;
    c.beta = true;
    c.mask = true;
    c.tuning = tile(3);
    c.expect = Path::kTile;
    expect_repeatable(c, make_inputs<T>(c, rng));
    expect_repeatable(c, make_inputs<float>(c, rng));
  }
}

// ---- empty tensors ---------------------------------------------------------------------------------------

// batch 0 or spatial 0 succeeds and writes no dx, automatic or with the tile path forced (channels last).
// dgamma / dbeta are sums over no positions: the header promises they are written as +0 (a caller
// accumulating them gets defined values).
TEST(GroupNormBackward, EmptyTensor) {
  DeviceBuffer<float> x(64);
  DeviceBuffer<float> dy(64);
  DeviceBuffer<float> mean(16);
  DeviceBuffer<float> rstd(16);
  DeviceBuffer<float> dx(64);
  DeviceBuffer<float> dgamma(8);
  DeviceBuffer<float> dbeta(8);
  for (const Path path : {Path::kAuto, Path::kTile}) {
    for (const Layout layout : kLayouts) {
      if (path == Path::kTile && layout == Layout::kChannelsFirst) {
        continue; // the tile path needs the channels-last view
      }
      for (int which = 0; which < 2; ++which) {
        dx.fill_bytes(0xa5);
        dgamma.fill_bytes(0xa5);
        dbeta.fill_bytes(0xa5);
        gnk::GroupNormBackwardArgs a;
        a.layout = layout;
        a.x = x.get();
        a.dy = dy.get();
        a.mean = mean.get();
        a.rstd = rstd.get();
        a.dx = dx.get();
        a.dgamma = dgamma.get();
        a.dbeta = dbeta.get();
        a.batch = which == 0 ? 0 : 2;
        a.channels = 8;
        a.spatial = which == 0 ? 5 : 0;
        a.groups = 4;
        a.tuning.path = path;
        if (which == 1 && layout == Layout::kChannelsLast) {
          // Nothing is read without elements: the statistics (and the other inputs) may be absent.
          a.x = nullptr;
          a.dy = nullptr;
          a.mean = nullptr;
          a.rstd = nullptr;
        }
        const std::string what =
            std::string(which == 0 ? "batch 0" : "spatial 0") + " path " + gnk::path_name(path);
        EXPECT_EQ(gnk::can_implement(a), Status::kSuccess) << what << ": " << culayers::last_error_message();
        const std::size_t ws_bytes = gnk::workspace_size(a);
        // Only dgamma / dbeta's kernel runs (over no rows): no workspace, no path.
        EXPECT_EQ(ws_bytes, 0u) << what;
        EXPECT_EQ(gnk::selected_path(a), Path::kAuto) << what;
        DeviceBuffer<unsigned char> ws(ws_bytes);
        EXPECT_EQ(gnk::run(a, ws_bytes > 0 ? ws.get() : nullptr, ws_bytes, nullptr), Status::kSuccess)
            << what << ": " << culayers::last_error_message();
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        for (float v : dx.download()) {
          ASSERT_EQ(gn::bits(v), 0xa5a5a5a5u) << what << ": dx was written";
        }
        for (const DeviceBuffer<float>* b : {&dgamma, &dbeta}) {
          const std::vector<float> v = b->download();
          const bool zeros = std::all_of(v.begin(), v.end(), [](float e) { return gn::bits(e) == 0u; });
          EXPECT_TRUE(zeros) << what << ": dgamma / dbeta not +0";
        }
      }
    }
  }
}

// ---- byte model (emulated build) -------------------------------------------------------------------------

#if CULAYERS_TEST_EMULATED
// The warp and block paths stage x and dy on chip: each is read once and dx written once. No gamma / beta /
// mask / dgamma / dbeta, so the only other loads are mean and rstd, which a kernel may load once per thread
// (L1 broadcasts on a GPU): at most 8 bytes x 1024 threads per group, i.e. 8 KiB per group against 16 KiB
// of x per group here (float32, E = 4096). So the loads lie in [x + dy, x + dy + one more x): a second pass
// over x or dy would reach 3 x.
TEST(GroupNormBackward, ByteModelCachedPaths) {
  auto rng = rng_for_test();
  using T = float;
  Tuning warp = pinned();
  warp.warp_max_elements = 4096; // the warp path for a group of 4096
  for (Layout layout : kLayouts) {
    for (const Path path : {Path::kWarp, Path::kBlock}) {
      Config c;
      c.layout = layout;
      c.batch = 1;
      c.channels = 16;
      c.groups = 2;
      c.spatial = 512; // E = 8 x 512 = 4096
      c.dgamma = false;
      c.dbeta = false;
      c.tuning = path == Path::kWarp ? warp : forced(path);
      c.expect = path;
      const Inputs<T> in = make_inputs<T>(c, rng);
      const std::uint64_t bytes = in.x.size() * sizeof(T);
      culayers_emu::reset_byte_counters();
      const Result<T> got = run_backward(c, in);
      const culayers_emu::ByteCounters b = culayers_emu::byte_counters();
      ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
      EXPECT_EQ(got.path, path) << describe(c);
      check_backward(c, in, got);
      EXPECT_GE(b.read, 2 * bytes) << describe(c);
      EXPECT_LT(b.read, 3 * bytes) << describe(c) << ": x or dy read more than once?";
      EXPECT_EQ(b.written, bytes) << describe(c) << ": dx once";
    }
  }
}

// Coalescing (the emulator's sector model, culayers::test::expect_coalesced): every load and store line that
// moves x, dy or dx (at least 5 % of the loads' or stores' bytes) uses at least 95 % of the 32-byte sectors
// its warp accesses touch, with and without dgamma / dbeta, on the paths that carry the benchmark shapes:
// channels first with 1024-position rows (block and split), channels last with C = 64 (warp, block: a
// 128-byte row per warp access) and on the tile path (C = 64 and 320). Measured: 1.0 for each such line.
// (The per-group and per-chunk arrays read 4 bytes per lane, 1/8 of their sectors; they are under 3 % of
// the bytes. The channels-last block path with C / G = 10, C = 320, reads 0.41: not held, see
// docs/performance.md section 8.)
TEST(GroupNormBackward, CoalescedAccesses) {
  auto rng = rng_for_test();
  using T = __nv_bfloat16;
  struct Case {
    const char* name;
    Layout layout;
    std::int64_t c, g, spatial;
    Tuning tuning;
    Path expect;
  };
  const Case cases[] = {
      {"nchw block 32x32", Layout::kChannelsFirst, 64, 32, 1024, forced(Path::kBlock), Path::kBlock},
      {"nchw split 32x32", Layout::kChannelsFirst, 64, 32, 1024, with_splits(4), Path::kSplit},
      {"nhwc warp C64", Layout::kChannelsLast, 64, 4, 49, forced(Path::kWarp), Path::kWarp},
      {"nhwc block C64", Layout::kChannelsLast, 64, 4, 49, forced(Path::kBlock), Path::kBlock},
      {"nhwc tile C64", Layout::kChannelsLast, 64, 8, 200, tile(64), Path::kTile},
      {"nhwc tile C320", Layout::kChannelsLast, 320, 32, 256, tile(64), Path::kTile},
  };
  for (const Case& k : cases) {
    for (bool params : {false, true}) {
      Config c;
      c.layout = k.layout;
      c.batch = 2;
      c.channels = k.c;
      c.groups = k.g;
      c.spatial = k.spatial;
      c.dgamma = params;
      c.dbeta = params;
      c.tuning = k.tuning;
      c.expect = k.expect;
      const Inputs<T> in = make_inputs<T>(c, rng);
      Result<T> got;
      const culayers::test::Coalescing co =
          culayers::test::measure_coalescing([&] { got = run_backward(c, in); });
      EXPECT_EQ(got.path, c.expect) << k.name;
      culayers::test::expect_coalesced(co, 0.95, 0.95, std::string(k.name) + (params ? " dgamma dbeta" : ""));
    }
  }
}

// The tile path reads x and dy exactly twice each (sums, then dx) and writes dx once. From the kernels
// (float32 C = 16, G = 2: N = 4, V = 4 vectors per row, 2 per group, k = 64, 256 threads; 1024 rows in T = 2
// tiles of 512; no gamma / beta / mask):
//   stores: dx, a triple (12 bytes) per (n, g, tile), the merged triple per group: exactly
//           x + 12 N G T + 12 N G; with dgamma / dbeta also the per-channel partials (2 x 4 bytes per channel
//           and tile) and dgamma / dbeta themselves;
//   loads:  x and dy twice, the merge kernel's triples (12 N G T), and per thread and tile mean and rstd
//           (sums kernel) and mean, rstd and the group's totals (dx kernel): 28 x 256 x N T bytes at most
//           (L1 broadcasts on a GPU), under half of x, so a third pass over x or dy cannot hide in it.
TEST(GroupNormBackward, ByteModelTile) {
  auto rng = rng_for_test();
  using T = float;
  for (bool wanted : {false, true}) {
    Config c;
    c.layout = Layout::kChannelsLast;
    c.batch = 1;
    c.channels = 16;
    c.groups = 2;
    c.spatial = 1024;
    c.dgamma = wanted;
    c.dbeta = wanted;
    c.tuning = tile(512);
    c.expect = Path::kTile;
    const Inputs<T> in = make_inputs<T>(c, rng);
    const std::uint64_t bytes = in.x.size() * sizeof(T);
    const std::uint64_t groups = static_cast<std::uint64_t>(c.batch * c.groups);
    const std::uint64_t tiles = 2;
    const std::uint64_t partials = 12u * groups * tiles;
    const std::uint64_t per_thread = 28u * 256u * static_cast<std::uint64_t>(c.batch) * tiles;
    const std::uint64_t channel_partials = wanted ? 8u * static_cast<std::uint64_t>(c.channels) * tiles : 0u;
    const std::uint64_t channel_outputs = wanted ? 8u * static_cast<std::uint64_t>(c.channels) : 0u;
    culayers_emu::reset_byte_counters();
    const Result<T> got = run_backward(c, in);
    const culayers_emu::ByteCounters b = culayers_emu::byte_counters();
    ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
    EXPECT_EQ(got.path, Path::kTile) << describe(c);
    EXPECT_EQ(check_backward(c, in, got), 0) << describe(c);
    EXPECT_EQ(b.written, bytes + partials + 12u * groups + channel_partials + channel_outputs)
        << describe(c) << ": dx once, the partials once";
    EXPECT_GE(b.read, 4 * bytes + partials + channel_partials) << describe(c) << ": x and dy twice each";
    EXPECT_LE(b.read, 4 * bytes + partials + channel_partials + per_thread)
        << describe(c) << ": x or dy read more than twice?";
  }
}
#endif

} // namespace
