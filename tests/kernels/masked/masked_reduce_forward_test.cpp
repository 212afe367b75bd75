// Forward masked reductions (culayers/masked_reduce.hpp) on both backends: every op x dtype x validity on
// shapes that reach the narrow, wide and split paths, misaligned views, NaN/Inf in masked positions,
// empty rows and the fill value, argument errors that must leave outputs untouched, out-of-range lengths,
// determinism, and (emulated build) the byte model.
#include "culayers/masked_reduce.hpp"

#include "tests/reference/masked_reduce_reference.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

namespace mr = culayers::masked_reduce;
namespace tm = culayers::test::masked;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::seed_note;
using mr::Path;
using mr::ReduceOp;
using mr::Validity;
using tm::Dtype;

constexpr ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kMean, ReduceOp::kMax, ReduceOp::kMin,
                             ReduceOp::kMoments};
constexpr Validity kValidities[] = {Validity::kNone, Validity::kMask, Validity::kLengths};

const char* op_name(ReduceOp op) {
  switch (op) {
  case ReduceOp::kSum:
    return "sum";
  case ReduceOp::kMean:
    return "mean";
  case ReduceOp::kMax:
    return "max";
  case ReduceOp::kMin:
    return "min";
  case ReduceOp::kMoments:
    return "moments";
  }
  return "?";
}
const char* validity_name(Validity v) {
  return v == Validity::kNone ? "none" : (v == Validity::kMask ? "mask" : "lengths");
}
bool is_extremum(ReduceOp op) {
  return op == ReduceOp::kMax || op == ReduceOp::kMin;
}

// ---- one forward run -------------------------------------------------------------------------------------

struct Config {
  ReduceOp op = ReduceOp::kSum;
  Validity validity = Validity::kNone;
  std::int64_t outer = 1;
  std::int64_t reduce = 1;
  std::int64_t inner = 1;
  float fill = 0.0f;
  mr::Tuning tuning{};
  bool counts = true;
  bool indices = true; // max/min only
  int x_offset = 0;    // elements: misaligned views
  int out_offset = 0;  // elements, of out, mean, variance and indices
  int mask_offset = 0; // bytes: a mask view that is not aligned to the narrow lanes' vectors
  bool error_counter = true;
};

/// A run of `op` over [outer, reduce, inner] with `validity` and `tuning`; the other fields keep their
/// defaults.
Config make_config(ReduceOp op, Validity validity, std::int64_t outer, std::int64_t reduce,
                   std::int64_t inner, const mr::Tuning& tuning = {}) {
  Config c;
  c.op = op;
  c.validity = validity;
  c.outer = outer;
  c.reduce = reduce;
  c.inner = inner;
  c.tuning = tuning;
  return c;
}

std::string describe(const Config& c) {
  return std::string(op_name(c.op)) + " validity=" + validity_name(c.validity) + " [" +
         std::to_string(c.outer) + ", " + std::to_string(c.reduce) + ", " + std::to_string(c.inner) + "]";
}

template <class T>
struct Result {
  Status status = Status::kSuccess;
  Path path = Path::kAuto;
  std::vector<T> out;
  std::vector<float> mean;
  std::vector<float> variance;
  std::vector<std::int32_t> counts;
  std::vector<std::int32_t> indices;
  std::uint32_t length_errors = 0;
};

/// Uploads x (at x_offset elements into its buffer) and the validity data, runs the forward with every
/// optional output the config asks for (output buffers poisoned with 0xFF bytes: NaN, -1; the indices with
/// 0xA5 bytes, since -1 is what an empty row must get), synchronizes
/// and downloads.
template <class T>
Result<T> run_forward(const Config& c, const std::vector<T>& x, const tm::ValidityData& v) {
  Result<T> res;
  std::vector<T> x_host(static_cast<std::size_t>(c.x_offset) + x.size() + 1);
  std::copy(x.begin(), x.end(), x_host.begin() + c.x_offset);
  DeviceBuffer<T> d_x(x_host);
  std::vector<std::uint8_t> mask_host(static_cast<std::size_t>(c.mask_offset) + v.mask.size() + 1, 0);
  std::copy(v.mask.begin(), v.mask.end(), mask_host.begin() + c.mask_offset);
  DeviceBuffer<std::uint8_t> d_mask(mask_host);
  DeviceBuffer<std::int32_t> d_len(v.lengths.empty() ? std::vector<std::int32_t>{0} : v.lengths);
  const std::size_t n_out = static_cast<std::size_t>(c.outer * c.inner);
  DeviceBuffer<T> d_out(n_out + static_cast<std::size_t>(c.out_offset) + 1);
  const std::size_t off = static_cast<std::size_t>(c.out_offset);
  DeviceBuffer<float> d_mean(n_out + off + 1);
  DeviceBuffer<float> d_var(n_out + off + 1);
  DeviceBuffer<std::int32_t> d_counts(static_cast<std::size_t>(c.outer) + 1);
  DeviceBuffer<std::int32_t> d_idx(n_out + off + 1);
  DeviceBuffer<std::uint32_t> d_err(1);
  d_out.fill_bytes(0xff);
  d_mean.fill_bytes(0xff);
  d_var.fill_bytes(0xff);
  d_counts.fill_bytes(0xff);
  d_idx.fill_bytes(0xa5); // not 0xff: -1 is the index an empty row must get
  d_err.fill_bytes(0);

  mr::MaskedReduceArgs a;
  a.op = c.op;
  a.dtype = Dtype<T>::kDType;
  a.x = d_x.get() + c.x_offset;
  a.outer = c.outer;
  a.reduce = c.reduce;
  a.inner = c.inner;
  a.validity = c.validity;
  a.mask = c.validity == Validity::kMask ? d_mask.get() + c.mask_offset : nullptr;
  a.lengths = c.validity == Validity::kLengths ? d_len.get() : nullptr;
  a.length_errors = c.validity == Validity::kLengths && c.error_counter ? d_err.get() : nullptr;
  if (c.op == ReduceOp::kMoments) {
    a.mean = d_mean.get() + off;
    a.variance = d_var.get() + off;
  } else {
    a.out = d_out.get() + off;
  }
  a.fill_value = c.fill;
  a.counts = c.counts ? d_counts.get() : nullptr;
  a.indices = is_extremum(c.op) && c.indices ? d_idx.get() + off : nullptr;
  a.tuning = c.tuning;

  res.path = mr::selected_path(a);
  const std::size_t ws_bytes = mr::workspace_size(a);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  res.status = mr::run(a, ws.get(), ws_bytes, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  if (res.status != Status::kSuccess) {
    return res;
  }
  const std::vector<T> out_all = d_out.download();
  res.out.assign(out_all.begin() + c.out_offset,
                 out_all.begin() + c.out_offset + static_cast<std::ptrdiff_t>(n_out));
  // The n_out elements at the offset of a buffer's download.
  const auto slice = [&](const auto& all) {
    return std::vector<typename std::decay_t<decltype(all)>::value_type>(
        all.begin() + static_cast<std::ptrdiff_t>(off),
        all.begin() + static_cast<std::ptrdiff_t>(off + n_out));
  };
  res.mean = slice(d_mean.download());
  res.variance = slice(d_var.download());
  res.counts = d_counts.download();
  res.counts.resize(static_cast<std::size_t>(c.outer));
  res.indices = slice(d_idx.download());
  res.length_errors = d_err.download()[0];
  return res;
}

template <class T>
std::vector<double> to_double(const std::vector<T>& x) {
  std::vector<double> d(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    d[i] = Dtype<T>::to_double(x[i]);
  }
  return d;
}

/// Compares a run with the double-precision reference; returns the number of mismatches reported.
/// got is the non-finite `want` exactly: the same infinity, or a NaN for a NaN.
bool same_non_finite(double got, double want) {
  return std::isnan(want) ? std::isnan(got) : got == want;
}

template <class T>
int check_forward(const Config& c, const std::vector<T>& x, const tm::ValidityData& v, const Result<T>& got) {
  const tm::ForwardRef ref = tm::forward_reference(c.op, to_double(x), c.outer, c.reduce, c.inner, v, c.fill);
  int failures = 0;
  auto fail = [&](const std::string& what) {
    if (failures++ < 5) {
      ADD_FAILURE() << describe(c) << " " << Dtype<T>::kName << ": " << what << " (" << seed_note() << ")";
    }
  };
  if (c.counts) {
    for (std::int64_t o = 0; o < c.outer; ++o) {
      if (got.counts[static_cast<std::size_t>(o)] != ref.count[static_cast<std::size_t>(o)]) {
        fail("count[" + std::to_string(o) + "] = " + std::to_string(got.counts[static_cast<std::size_t>(o)]) +
             ", want " + std::to_string(ref.count[static_cast<std::size_t>(o)]));
      }
    }
  }
  // Chains of float32 additions per output are at most R long (plus the tree / butterfly / chunk merges,
  // at most 32 levels): recursive summation's bound |err| <= (n - 1) u sum|x| (Higham, Accuracy and
  // Stability, 4.3) with n = R + 32.
  const double chain = static_cast<double>(c.reduce + 32);
  // Data from tm::exact_values (multiples of 1/16 up to 8 in magnitude, R <= 2^15): every float32 sum is
  // exact whatever the order, so sums must equal the reference rounded once to T, and means be within the
  // float division's error of it; the summation bound is only for inexact data.
  bool exact_sums = c.reduce <= 32768;
  for (std::size_t i = 0; i < x.size() && exact_sums; ++i) {
    const double v = Dtype<T>::to_double(x[i]) * 16.0;
    exact_sums = v == std::floor(v) && std::fabs(v) <= 128.0;
  }
  for (std::int64_t o = 0; o < c.outer; ++o) {
    const std::int64_t n = ref.count[static_cast<std::size_t>(o)];
    for (std::int64_t i = 0; i < c.inner; ++i) {
      const std::size_t at = static_cast<std::size_t>(o * c.inner + i);
      const std::string where = "[" + std::to_string(o) + ", " + std::to_string(i) + "]";
      const double want = ref.value[at];
      if (c.op == ReduceOp::kMoments) {
        const double m = got.mean[at];
        const double var = got.variance[at];
        const double big = ref.abs_max[at];
        // Welford: every push moves the running mean by delta / count with a few roundings (and the
        // GPU's division is __fdividef, 2 ulp), so the mean's error grows at most linearly in the chain:
        // 4 chain u max|x|. The variance: the group-norm tests' error model (tests/reference/
        // group_norm_reference.hpp, forward_group_error): relative error acc (2 + kappa) with acc the
        // float32 accumulation bound 4 (sqrt(n) + 16) u and kappa = max|x| / max|x - mean| (Chan, Golub and
        // LeVeque), doubled as margin. (A bound in max|x|^2, as before, accepted any variance of data far
        // from 0: 1e4 + N(0, 1) below.) Constant rows and empty rows are exact.
        const double dev = ref.max_dev[at];
        const double acc = 4.0 * (std::sqrt(chain) + 16.0) * tm::kU32;
        const double kappa = dev > 0.0 ? big / dev : 1.0;
        const double tol_mean = n == 0 ? 0.0 : 4.0 * chain * tm::kU32 * big;
        const double tol_var =
            n == 0 ? 0.0 : 2.0 * acc * (2.0 + kappa) * ref.variance[at] + 4.0 * tm::kU32 * ref.variance[at];
        // A non-finite reference (an Inf or NaN at a valid step: the tolerances are infinite then) is matched
        // exactly: the same infinity, or NaN for NaN.
        if (!std::isfinite(want)
                ? !same_non_finite(m, want)
                : !(std::fabs(m - want) <= tol_mean) && !(std::isnan(m) && std::isnan(want))) {
          fail("mean" + where + " = " + std::to_string(m) + ", want " + std::to_string(want));
        }
        if (!std::isfinite(ref.variance[at]) ? !same_non_finite(var, ref.variance[at])
                                             : !(std::fabs(var - ref.variance[at]) <= tol_var) &&
                                                   !(std::isnan(var) && std::isnan(ref.variance[at]))) {
          fail("variance" + where + " = " + std::to_string(var) + ", want " +
               std::to_string(ref.variance[at]));
        }
        continue;
      }
      const double g = Dtype<T>::to_double(got.out[at]);
      if (is_extremum(c.op)) {
        // Max and min select an element (or write the fill): exact, compared bit for bit after the one
        // rounding of the reference (a no-op for elements).
        const T want_t = Dtype<T>::from_double(want);
        const bool both_nan = std::isnan(g) && std::isnan(want);
        if (!both_nan && tm::bits(got.out[at]) != tm::bits(want_t)) {
          fail(std::string(op_name(c.op)) + where + " = " + std::to_string(g) + ", want " +
               std::to_string(want));
        }
        if (c.indices && got.indices[at] != ref.index[at]) {
          fail("index" + where + " = " + std::to_string(got.indices[at]) + ", want " +
               std::to_string(ref.index[at]));
        }
        continue;
      }
      // Sum: the float32 accumulation bound above, then one rounding to T (one ulp of T when the perturbed
      // float lands on the other side of a rounding boundary). Mean: the same divided by n, plus the
      // float division's half ulp. Empty rows: exactly the fill rounded to T.
      double tol = 0.0;
      if (n > 0 && exact_sums) {
        // The exact sum rounded once to T (tol 0); the mean: a float division (up to 2 ulp), then T.
        tol = c.op == ReduceOp::kMean ? 2.0 * tm::kU32 * std::fabs(want) + tm::ulp<T>(want) : 0.0;
      } else if (n > 0) {
        tol = chain * tm::kU32 * ref.abs_sum[at];
        if (c.op == ReduceOp::kMean) {
          tol = tol / static_cast<double>(n) + tm::kU32 * std::fabs(want);
        }
        tol += tm::ulp<T>(want);
      }
      const double want_t = tm::round_to<T>(want);
      if (!std::isfinite(want) && !same_non_finite(g, want)) { // Inf or NaN at a valid step: exactly that
        fail(std::string(op_name(c.op)) + where + " = " + std::to_string(g) + ", want " +
             std::to_string(want));
      } else if (std::isfinite(want) && !(std::fabs(g - want_t) <= tol) &&
                 !(std::isnan(g) && std::isnan(want_t))) {
        fail(std::string(op_name(c.op)) + where + " = " + std::to_string(g) + ", want " +
             std::to_string(want_t) + " (tol " + std::to_string(tol) + ")");
      }
    }
  }
  return failures;
}

template <class T>
int run_and_check(const Config& c, const std::vector<T>& x, const tm::ValidityData& v, Path expect) {
  const Result<T> got = run_forward(c, x, v);
  EXPECT_EQ(got.status, Status::kSuccess) << describe(c) << ": " << culayers::last_error_message();
  if (got.status != Status::kSuccess) {
    return 1;
  }
  if (expect != Path::kAuto) {
    EXPECT_EQ(got.path, expect) << describe(c) << ": took " << mr::path_name(got.path) << ", expected "
                                << mr::path_name(expect);
  }
  if (c.validity == Validity::kLengths && c.error_counter) {
    EXPECT_EQ(got.length_errors, v.out_of_range()) << describe(c);
  }
  return check_forward(c, x, v, got);
}

// ---- the op x dtype x validity matrix --------------------------------------------------------------------

struct ShapeCase {
  std::int64_t outer;
  std::int64_t reduce;
  std::int64_t inner;
  Path expect;
  mr::Tuning tuning;
};

/// target_threads is pinned to 8192 so the automatic choice is the same on every device (the emulator
/// has 4 SMs, an H100 132): the paths below are the heuristic's answers for that target.
mr::Tuning pinned(mr::Tuning t = {}) {
  t.target_threads = 8192;
  return t;
}
mr::Tuning with_splits(std::int64_t s) {
  mr::Tuning t = pinned();
  t.splits = s;
  return t;
}
mr::Tuning with_min_rows(std::int64_t rows) {
  mr::Tuning t = pinned();
  t.min_rows_per_thread = rows;
  return t;
}
mr::Tuning forced(Path p) {
  mr::Tuning t = pinned();
  t.path = p;
  return t;
}
mr::Tuning wide_min_rows(std::int64_t rows) {
  mr::Tuning t = forced(Path::kWide);
  t.min_rows_per_thread = rows;
  return t;
}

// inner in {1, 3, 7, 64, 65, 768, 1033}, R in {1, 2, 31, 512, 4099}, outer 1..130, kept small enough that
// the whole matrix runs in seconds on the emulator; every path at least twice.
const ShapeCase kShapes[] = {
    {130, 31, 3, Path::kNarrow, pinned()},         // lane groups of 3 (8 groups), many rows
    {9, 64, 1, Path::kNarrow, pinned()},           // inner 1: vectors along R
    {1, 2, 7, Path::kNarrow, pinned()},            // 4 groups of 7 lanes
    {5, 1, 7, Path::kNarrow, pinned()},            // R = 1
    {2, 2, 768, Path::kWide, pinned()},            // 16-byte vectors, column blocks of 32 vectors
    {2, 9, 1033, Path::kWide, pinned()},           // odd inner: scalar, 33 column blocks
    {4, 1, 64, Path::kWide, pinned()},             // R = 1
    {2, 4099, 1, Path::kWide, pinned()},           // long R in one block: ty = 512
    {1, 512, 64, Path::kSplit, with_min_rows(1)},  // R split by the heuristic
    {3, 130, 65, Path::kSplit, with_splits(5)},    // forced chunks, odd inner
    {2, 31, 64, Path::kSplit, with_splits(3)},     // chunks of 11 steps
    {2, 2, 7, Path::kSplit, forced(Path::kSplit)}, // one step per chunk
    {64, 31, 65, Path::kWide, pinned()},           // 3 column blocks of 22 lanes for 65 columns, ty = 4
    {130, 2, 768, Path::kWide, pinned()},          // many rows: ty = 1
    {3, 512, 7, Path::kSplit, with_min_rows(1)},   // 7 column lanes x 73 R lanes, 5 chunks
    {1, 4099, 3, Path::kSplit, pinned()},          // long R, few outputs: split by the heuristic
    {2, 200, 33, Path::kSplit, with_splits(19)},   // combine: lanes of 3, 1 and 0 chunks; 33 = 32 + 1 columns
    {2, 2000, 64, Path::kWide, wide_min_rows(200)}, // ty = 10, 96-160 threads: several short mask tiles
    {96, 2048, 1, Path::kNarrow, pinned()}, // inner 1, long rows: narrow by bytes in flight (Tuning step 5)
};

template <class T>
class MaskedReduceForwardTyped : public ::testing::Test {};
using DTypes = ::testing::Types<float, __half, __nv_bfloat16>;
TYPED_TEST_SUITE(MaskedReduceForwardTyped, DTypes);

TYPED_TEST(MaskedReduceForwardTyped, MatrixAgainstReference) {
  using T = TypeParam;
  auto rng = rng_for_test();
  int failures = 0;
  for (const ShapeCase& s : kShapes) {
    const std::vector<T> x = tm::exact_values<T>(rng, static_cast<std::size_t>(s.outer * s.reduce * s.inner));
    for (Validity validity : kValidities) {
      const tm::ValidityData v = tm::make_validity(rng, validity, s.outer, s.reduce);
      for (ReduceOp op : kOps) {
        Config c = make_config(op, validity, s.outer, s.reduce, s.inner, s.tuning);
        c.fill = validity == Validity::kMask ? -7.5f : 0.0f; // settable fill (exact in every dtype)
        failures += run_and_check(c, x, v, s.expect);
        if (failures > 20) {
          FAIL() << "too many failures";
        }
      }
    }
  }
}

// Every vector width N each path can take: caps of 1 to 16 (Tuning::vector_width) on shapes whose inner
// (or R, for the narrow path's inner 1) allows them, inner sizes that allow only N = 2 or 4 (6, 12, 20),
// and x views 2 and 4 elements off the allocation (8- and 16-byte alignment only). The matrix above
// reaches the widest N of each dtype and N = 1; these reach the ones between.
TYPED_TEST(MaskedReduceForwardTyped, EveryVectorWidth) {
  using T = TypeParam;
  auto rng = rng_for_test();
  struct Case {
    std::int64_t outer, reduce, inner;
    mr::Tuning tuning;
  };
  const Case cases[] = {
      {4, 37, 768, forced(Path::kWide)}, {6, 64, 1, forced(Path::kNarrow)}, {3, 50, 6, forced(Path::kNarrow)},
      {3, 50, 6, forced(Path::kWide)},   {2, 300, 20, with_splits(4)},      {3, 41, 12, forced(Path::kWide)},
  };
  int failures = 0;
  for (const Case& k : cases) {
    const std::vector<T> x = tm::exact_values<T>(rng, static_cast<std::size_t>(k.outer * k.reduce * k.inner));
    for (const Validity validity : {Validity::kMask, Validity::kLengths}) {
      const tm::ValidityData v = tm::make_validity(rng, validity, k.outer, k.reduce);
      for (const int cap : {1, 2, 4, 8, 16}) {
        for (const int x_offset : {0, 2, 4}) {
          if (x_offset != 0 && cap != 16) {
            continue; // the offsets limit N themselves
          }
          for (ReduceOp op : kOps) {
            Config c = make_config(op, validity, k.outer, k.reduce, k.inner, k.tuning);
            c.tuning.vector_width = cap;
            c.x_offset = x_offset;
            SCOPED_TRACE(describe(c) + " cap " + std::to_string(cap) + " x offset " +
                         std::to_string(x_offset));
            failures += run_and_check(c, x, v, Path::kAuto);
            if (failures > 20) {
              FAIL() << "too many failures";
            }
          }
        }
      }
    }
  }
}

// Normal (inexact) data: sums now depend on the accumulation order, so this checks the float32 error
// bounds rather than exactness; moments see a nonzero mean.
TYPED_TEST(MaskedReduceForwardTyped, InexactDataWithinBounds) {
  using T = TypeParam;
  auto rng = rng_for_test();
  for (const ShapeCase& s : {kShapes[0], kShapes[5], kShapes[7], kShapes[8]}) {
    const std::vector<T> x =
        tm::normal_values<T>(rng, static_cast<std::size_t>(s.outer * s.reduce * s.inner), 3.0, 2.0);
    const tm::ValidityData v = tm::make_validity(rng, Validity::kMask, s.outer, s.reduce);
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMean, ReduceOp::kMoments}) {
      Config c = make_config(op, Validity::kMask, s.outer, s.reduce, s.inner, s.tuning);
      run_and_check(c, x, v, s.expect);
    }
  }
}

// ---- misaligned views -------------------------------------------------------------------------------------

// x and out offset by one element: no vector access is legal any more, so every path must fall back to
// scalars (the emulator reports any misaligned vector access as a launch failure).
TYPED_TEST(MaskedReduceForwardTyped, MisalignedViewsUseScalars) {
  using T = TypeParam;
  auto rng = rng_for_test();
  const ShapeCase cases[] = {kShapes[1],
                             kShapes[4],
                             kShapes[8],
                             {2, 31, 64, Path::kWide, forced(Path::kWide)},
                             // The last shape's rows misaligned: narrow lanes would load single elements too,
                             // so the bytes-in-flight rule keeps the wide path.
                             {96, 2048, 1, Path::kWide, pinned()}};
  for (const ShapeCase& s : cases) {
    const std::vector<T> x = tm::exact_values<T>(rng, static_cast<std::size_t>(s.outer * s.reduce * s.inner));
    const tm::ValidityData v = tm::make_validity(rng, Validity::kMask, s.outer, s.reduce);
    for (ReduceOp op : {ReduceOp::kMean, ReduceOp::kMax, ReduceOp::kMoments}) {
      Config c = make_config(op, Validity::kMask, s.outer, s.reduce, s.inner, s.tuning);
      // Both misaligned, and each alone: vector loads with scalar stores, and scalar loads with vector
      // stores. (The expected paths are those of misaligned rows; with x aligned the path is the aligned
      // one, which the matrix above pins.)
      for (const auto& [x_offset, out_offset] : {std::pair{1, 1}, std::pair{0, 1}, std::pair{1, 0}}) {
        c.x_offset = x_offset;
        c.out_offset = out_offset;
        run_and_check(c, x, v, x_offset == 1 ? s.expect : Path::kAuto);
      }
    }
  }
}

// The narrow path reads a lane's N mask bytes in one access when the mask rows are N-byte aligned, else one
// byte at a time: both against the reference, with mask bytes other than 1 marking valid steps (offset 4
// is aligned for float32's 4-step pieces, not for the 8-step pieces of the 16-bit types).
TYPED_TEST(MaskedReduceForwardTyped, NarrowMaskVectorsAndMisalignedMasks) {
  using T = TypeParam;
  auto rng = rng_for_test();
  for (const std::int64_t reduce : {512, 72}) {
    const std::int64_t outer = 7;
    const std::vector<T> x = tm::exact_values<T>(rng, static_cast<std::size_t>(outer * reduce));
    tm::ValidityData v = tm::make_validity(rng, Validity::kMask, outer, reduce);
    for (std::size_t i = 0; i < v.mask.size(); i += 3) {
      v.mask[i] = v.mask[i] != 0 ? static_cast<std::uint8_t>(1 + i % 200) : 0;
    }
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMoments}) {
      for (const int mask_offset : {0, 1, 4}) {
        Config c = make_config(op, Validity::kMask, outer, reduce, 1, pinned());
        c.mask_offset = mask_offset;
        SCOPED_TRACE("mask offset " + std::to_string(mask_offset));
        run_and_check(c, x, v, Path::kNarrow);
      }
    }
  }
}

// Moments of data far from 0 (1e4 + N(0, 1), float32) on every path: the variance within the conditioning
// bound of check_forward, which a one-pass E[x^2] - E[x]^2 (off by about u 1e8 = 6 here) does not meet.
TEST(MaskedReduceForward, MomentsOfDataFarFromZero) {
  auto rng = rng_for_test();
  std::normal_distribution<double> normal(0.0, 1.0);
  for (const ShapeCase& s :
       {kShapes[0], kShapes[1], kShapes[4], kShapes[5], kShapes[7], kShapes[9], kShapes[15], kShapes[16]}) {
    std::vector<float> x(static_cast<std::size_t>(s.outer * s.reduce * s.inner));
    for (float& v : x) {
      v = static_cast<float>(1e4 + normal(rng));
    }
    for (Validity validity : {Validity::kNone, Validity::kMask}) {
      Config c = make_config(ReduceOp::kMoments, validity, s.outer, s.reduce, s.inner, s.tuning);
      run_and_check(c, x, tm::make_validity(rng, validity, s.outer, s.reduce), s.expect);
    }
  }
}

// ---- NaN and Inf in masked positions ---------------------------------------------------------------------

// Masked positions holding NaN, +Inf or -Inf must give the same output bits as the same run with zeros
// there: they are skipped, never multiplied by zero. Every path, every op, both validity kinds.
TYPED_TEST(MaskedReduceForwardTyped, NonFiniteInMaskedPositionsChangeNoBit) {
  using T = TypeParam;
  auto rng = rng_for_test();
  // Narrow (lane groups, inner 1), wide scalar and 16-byte vector columns, the long-R wide block (ty = 512)
  // and several mask tiles, split with scalar and vector columns. (Each has outer >= 2: row 1 is always
  // empty, so something is masked.)
  const ShapeCase cases[] = {kShapes[0], kShapes[1], kShapes[4],  kShapes[5],
                             kShapes[7], kShapes[9], kShapes[10], kShapes[17]};
  const double specials[] = {std::numeric_limits<double>::quiet_NaN(),
                             std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::infinity()};
  for (const ShapeCase& s : cases) {
    for (Validity validity : {Validity::kMask, Validity::kLengths}) {
      const tm::ValidityData v = tm::make_validity(rng, validity, s.outer, s.reduce);
      std::vector<T> zeros = tm::exact_values<T>(rng, static_cast<std::size_t>(s.outer * s.reduce * s.inner));
      std::vector<T> poisoned = zeros;
      int k = 0;
      for (std::int64_t o = 0; o < s.outer; ++o) {
        for (std::int64_t r = 0; r < s.reduce; ++r) {
          if (v.valid(o, r)) {
            continue;
          }
          for (std::int64_t i = 0; i < s.inner; ++i) {
            const std::size_t at = static_cast<std::size_t>((o * s.reduce + r) * s.inner + i);
            zeros[at] = Dtype<T>::from_double(0.0);
            poisoned[at] = Dtype<T>::from_double(specials[k++ % 3]);
          }
        }
      }
      ASSERT_GT(k, 0) << "the validity data must mask something";
      for (ReduceOp op : kOps) {
        Config c = make_config(op, validity, s.outer, s.reduce, s.inner, s.tuning);
        const Result<T> a = run_forward(c, zeros, v);
        const Result<T> b = run_forward(c, poisoned, v);
        ASSERT_EQ(a.status, Status::kSuccess) << culayers::last_error_message();
        ASSERT_EQ(b.status, Status::kSuccess) << culayers::last_error_message();
        EXPECT_EQ(a.path, s.expect) << describe(c);
        const std::size_t n = static_cast<std::size_t>(s.outer * s.inner);
        int bad = 0;
        for (std::size_t i = 0; i < n && bad < 5; ++i) {
          const bool same = op == ReduceOp::kMoments ? (tm::bits(a.mean[i]) == tm::bits(b.mean[i]) &&
                                                        tm::bits(a.variance[i]) == tm::bits(b.variance[i]))
                                                     : tm::bits(a.out[i]) == tm::bits(b.out[i]);
          const bool same_idx = !is_extremum(op) || a.indices[i] == b.indices[i];
          if (!same || !same_idx) {
            ++bad;
            ADD_FAILURE() << describe(c) << " " << Dtype<T>::kName << ": output " << i
                          << " changed when masked positions hold NaN/Inf";
          }
        }
        EXPECT_EQ(a.counts, b.counts) << describe(c);
      }
    }
  }
}

// NaN in a valid position propagates: sum/mean/moments give NaN, max/min select it (first NaN's index).
TEST(MaskedReduceForward, NanInValidPositionPropagates) {
  auto rng = rng_for_test();
  const std::int64_t outer = 2;
  const std::int64_t reduce = 31;
  const std::int64_t inner = 3;
  std::vector<float> x = tm::exact_values<float>(rng, static_cast<std::size_t>(outer * reduce * inner));
  x[static_cast<std::size_t>((0 * reduce + 5) * inner + 1)] = std::nanf("");
  x[static_cast<std::size_t>((0 * reduce + 9) * inner + 1)] = std::nanf("");
  const tm::ValidityData v = tm::make_validity(rng, Validity::kNone, outer, reduce);
  for (const mr::Tuning& t : {forced(Path::kNarrow), forced(Path::kWide), with_splits(4)}) {
    for (ReduceOp op : kOps) {
      Config c = make_config(op, Validity::kNone, outer, reduce, inner, t);
      const Result<float> got = run_forward(c, x, v);
      ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
      const float value = op == ReduceOp::kMoments ? got.mean[1] : got.out[1];
      EXPECT_TRUE(std::isnan(value)) << describe(c);
      if (is_extremum(op)) {
        EXPECT_EQ(got.indices[1], 5) << describe(c) << ": the first NaN wins";
      }
      EXPECT_FALSE(std::isnan(op == ReduceOp::kMoments ? got.mean[0] : got.out[0])) << describe(c);
      check_forward(c, x, v, got);
    }
  }
}

// Moments next to float32's limits (docs/semantics.md, "Moments' range"): a large constant row keeps its
// mean and a zero variance on every path (no overflow from the magnitude alone); a row whose sum of squared
// deviations overflows gives +Inf variance (never a finite wrong value or NaN) and a finite mean.
TEST(MaskedReduceForward, MomentsNearFloatMax) {
  const std::int64_t outer = 3;
  const std::int64_t reduce = 1000;
  const std::int64_t inner = 3;
  std::vector<float> x(static_cast<std::size_t>(outer * reduce * inner));
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t r = 0; r < reduce; ++r) {
      for (std::int64_t i = 0; i < inner; ++i) {
        // Row 0: 3e38 at every step. Row 1: +-1e19 alternating (variance 1e38, n * variance 1e41). Row 2:
        // +-3e38 alternating, then 2 at the last step (differences overflow float32: the mean is
        // 2 / 1000 and stays finite and of the right sign; the variance is infinite).
        x[static_cast<std::size_t>((o * reduce + r) * inner + i)] =
            o == 0   ? 3e38f
            : o == 1 ? (r % 2 == 0 ? 1e19f : -1e19f)
                     : (r == reduce - 1 ? 2.0f : (r % 2 == 0 ? 3e38f : -3e38f));
      }
    }
  }
  auto rng = rng_for_test();
  const tm::ValidityData v = tm::make_validity(rng, Validity::kNone, outer, reduce);
  for (const mr::Tuning& t : {forced(Path::kNarrow), forced(Path::kWide), with_splits(4)}) {
    Config c = make_config(ReduceOp::kMoments, Validity::kNone, outer, reduce, inner, t);
    const Result<float> got = run_forward(c, x, v);
    ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
    for (std::int64_t i = 0; i < inner; ++i) {
      EXPECT_EQ(got.mean[static_cast<std::size_t>(i)], 3e38f) << describe(c);
      EXPECT_EQ(got.variance[static_cast<std::size_t>(i)], 0.0f) << describe(c);
      const float mean = got.mean[static_cast<std::size_t>(inner + i)];
      EXPECT_TRUE(std::isfinite(mean) && std::fabs(mean) <= 1e19f * 1e-6f)
          << describe(c) << ": mean " << mean;
      EXPECT_EQ(got.variance[static_cast<std::size_t>(inner + i)], std::numeric_limits<float>::infinity())
          << describe(c);
      // Row 2: every merge or update of finite values whose difference overflows stays finite; the
      // rounding of +-3e38 steps leaves a mean far from 0.002 but finite, and never an infinity.
      const float mean2 = got.mean[static_cast<std::size_t>(2 * inner + i)];
      EXPECT_TRUE(std::isfinite(mean2) && std::fabs(mean2) <= 3e38f) << describe(c) << ": mean " << mean2;
      EXPECT_EQ(got.variance[static_cast<std::size_t>(2 * inner + i)], std::numeric_limits<float>::infinity())
          << describe(c);
    }
  }
}

// Infinities at valid steps. Every forward path's max/min walk starts from -inf (max) / +inf (min) with
// no index, so a lane whose valid elements all equal the start value must still report its first valid
// step (with a mask: not the lane's first step, possibly in a later mask tile), and a start-valued
// element must not hide a later number, zero or NaN. Columns by col % 8: 0 all -inf; 1 all +inf; 2 -inf
// but one number; 3 +inf but one number; 4 -inf with a NaN and a number; 5 +inf with a NaN; 6 +-0 among
// -inf and +inf; 7 plain numbers; 8 numbers with one +inf or -inf at a random step (sum, mean and
// moments must give that infinity wherever it sits in a lane's walk or a merge). Every lane of R sees each
// pattern (ty > 1 on the wide path, several chunks on the split path, lane groups or 8-step vectors on the
// narrow path). The long shapes' masks hide a prefix of each row (1030, all, 700 and 1100 steps), longer than
// the wide kernel's first mask tile in rows 0 and 3.
TYPED_TEST(MaskedReduceForwardTyped, InfinitiesAtValidSteps) {
  using T = TypeParam;
  auto rng = rng_for_test();
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  struct Case {
    std::int64_t outer, reduce, inner;
  };
  for (const Case& s : {Case{5, 97, 64}, Case{5, 97, 7}, Case{4, 1200, 64}, Case{4, 1200, 1}, Case{9, 97, 1},
                        Case{3, 300, 9}}) {
    const std::int64_t outer = s.outer;
    const std::int64_t reduce = s.reduce;
    const std::int64_t inner = s.inner;
    std::vector<T> x = tm::exact_values<T>(rng, static_cast<std::size_t>(outer * reduce * inner));
    std::uniform_int_distribution<std::int64_t> step(0, reduce - 1);
    std::uniform_int_distribution<int> coin(0, 1);
    for (std::int64_t o = 0; o < outer; ++o) {
      for (std::int64_t i = 0; i < inner; ++i) {
        auto at = [&](std::int64_t r) -> T& {
          return x[static_cast<std::size_t>((o * reduce + r) * inner + i)];
        };
        // Single-column rows cycle the patterns over rows instead.
        const int pattern = static_cast<int>((inner == 1 ? o : i) % 9);
        if (pattern == 7) {
          continue;
        }
        if (pattern == 8) {
          at(step(rng)) = Dtype<T>::from_double(coin(rng) == 0 ? -inf : inf);
          continue;
        }
        for (std::int64_t r = 0; r < reduce; ++r) {
          const bool neg = pattern == 0 || pattern == 2 || pattern == 4 || (pattern == 6 && coin(rng) == 0);
          at(r) = Dtype<T>::from_double(neg ? -inf : inf);
        }
        if (pattern == 2 || pattern == 3) {
          at(step(rng)) = Dtype<T>::from_double(static_cast<double>(step(rng)) / 8.0 - 6.0);
        } else if (pattern == 4 || pattern == 5) {
          at(step(rng)) = Dtype<T>::from_double(nan);
          at(step(rng)) = Dtype<T>::from_double(1.5);
        } else if (pattern == 6) {
          for (int k = 0; k < 6; ++k) {
            at(step(rng)) = Dtype<T>::from_double(coin(rng) == 0 ? -0.0 : 0.0);
          }
        }
      }
    }
    struct Run {
      mr::Tuning tuning;
      Path expect;
    };
    const std::vector<Run> runs = inner <= 32 ? std::vector<Run>{{forced(Path::kNarrow), Path::kNarrow},
                                                                 {forced(Path::kWide), Path::kWide},
                                                                 {with_splits(3), Path::kSplit}}
                                              : std::vector<Run>{{forced(Path::kWide), Path::kWide},
                                                                 {wide_min_rows(4), Path::kWide},
                                                                 {with_splits(3), Path::kSplit}};
    for (const Validity kind : kValidities) {
      tm::ValidityData v = tm::make_validity(rng, kind, outer, reduce);
      if (kind == Validity::kMask && reduce > 1024) {
        const std::int64_t hidden[] = {1030, reduce, 700, 1100};
        for (std::int64_t o = 0; o < outer; ++o) {
          for (std::int64_t r = 0; r < hidden[o % 4]; ++r) {
            v.mask[static_cast<std::size_t>(o * reduce + r)] = 0;
          }
        }
      }
      for (const Run& run : runs) {
        // Every op: max / min select by the extremum rule; sum, mean and moments give what the double sum
        // gives (Inf, -Inf, or NaN for both signs or a NaN) whatever the path and wherever the Inf sits in
        // a thread's walk (moments once gave NaN for an Inf merged before finite values); moments'
        // variance is NaN.
        for (const ReduceOp op : kOps) {
          Config c = make_config(op, kind, outer, reduce, inner, run.tuning);
          const Result<T> got = run_forward(c, x, v);
          ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
          ASSERT_EQ(got.path, run.expect) << describe(c);
          SCOPED_TRACE(mr::path_name(got.path));
          EXPECT_EQ(check_forward(c, x, v, got), 0);
        }
      }
    }
  }
}

// ---- empty rows, fill, zero sizes -----------------------------------------------------------------------

TYPED_TEST(MaskedReduceForwardTyped, EmptyRowsGiveFillAndZeroCount) {
  using T = TypeParam;
  auto rng = rng_for_test();
  for (const ShapeCase& s : {kShapes[0], kShapes[4], kShapes[10]}) {
    tm::ValidityData v = tm::make_validity(rng, Validity::kMask, s.outer, s.reduce);
    std::fill(v.mask.begin(), v.mask.end(), 0); // every row empty
    const std::vector<T> x = tm::exact_values<T>(rng, static_cast<std::size_t>(s.outer * s.reduce * s.inner));
    for (ReduceOp op : kOps) {
      Config c = make_config(op, Validity::kMask, s.outer, s.reduce, s.inner, s.tuning);
      c.fill = 3.25f;
      const Result<T> got = run_forward(c, x, v);
      ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
      EXPECT_EQ(got.path, s.expect) << describe(c);
      for (std::size_t o = 0; o < got.counts.size(); ++o) {
        ASSERT_EQ(got.counts[o], 0) << describe(c);
      }
      for (std::size_t i = 0; i < static_cast<std::size_t>(s.outer * s.inner); ++i) {
        if (op == ReduceOp::kMoments) {
          ASSERT_EQ(got.mean[i], 3.25f) << describe(c);
          ASSERT_EQ(got.variance[i], 3.25f) << describe(c);
        } else {
          ASSERT_EQ(Dtype<T>::to_double(got.out[i]), 3.25) << describe(c);
        }
        if (is_extremum(op)) {
          ASSERT_EQ(got.indices[i], -1) << describe(c);
        }
      }
    }
  }
}

// R = 0: every row is empty (fill written, counts 0); outer = 0 or inner = 0: nothing to do, nothing written.
TEST(MaskedReduceForward, ZeroSizes) {
  for (const Path p : {Path::kAuto, Path::kNarrow, Path::kWide, Path::kSplit}) {
    Config c = make_config(ReduceOp::kMax, Validity::kNone, 3, 0, 5);
    c.fill = -2.0f;
    c.tuning = forced(p);
    std::mt19937_64 rng(1);
    const Result<float> got =
        run_forward(c, std::vector<float>{}, tm::make_validity(rng, Validity::kNone, 3, 0));
    ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
    SCOPED_TRACE(mr::path_name(got.path));
    for (float v : got.out) {
      EXPECT_EQ(v, -2.0f);
    }
    for (std::int32_t n : got.counts) {
      EXPECT_EQ(n, 0);
    }
    for (std::int32_t i : got.indices) {
      EXPECT_EQ(i, -1);
    }
  }
  for (const std::int64_t outer : {0, 4}) {
    mr::MaskedReduceArgs a;
    a.outer = outer;
    a.reduce = 7;
    a.inner = outer == 0 ? 9 : 0;
    DeviceBuffer<float> x(16);
    a.x = x.get();
    EXPECT_EQ(mr::run(a, nullptr, 0, nullptr), Status::kSuccess) << "outer/inner 0: out may be null";
    EXPECT_EQ(mr::workspace_size(a), 0u);
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// ---- argument errors leave outputs untouched ------------------------------------------------------------

struct ErrorCase {
  const char* what;
  Status expect;
  std::function<void(mr::MaskedReduceArgs&)> mutate;
  const char* message = nullptr; ///< when set, the error message must contain it (names the argument)
};

TEST(MaskedReduceForward, ArgumentErrorsLeaveOutputsUntouched) {
  const std::int64_t outer = 3;
  const std::int64_t reduce = 31;
  const std::int64_t inner = 64;
  DeviceBuffer<float> x(static_cast<std::size_t>(outer * reduce * inner) + 4);
  DeviceBuffer<std::uint8_t> mask(static_cast<std::size_t>(outer * reduce));
  DeviceBuffer<std::int32_t> lengths(static_cast<std::size_t>(outer));
  DeviceBuffer<float> out(static_cast<std::size_t>(outer * inner) + 4);
  DeviceBuffer<float> mean(static_cast<std::size_t>(outer * inner));
  DeviceBuffer<float> variance(static_cast<std::size_t>(outer * inner));
  DeviceBuffer<std::int32_t> counts(static_cast<std::size_t>(outer));
  DeviceBuffer<std::int32_t> indices(static_cast<std::size_t>(outer * inner));
  x.fill_bytes(0);
  mask.fill_bytes(1);
  float* s_out = out.get();
  float* s_mean = mean.get();
  float* s_variance = variance.get();
  std::int32_t* s_indices = indices.get();
  const std::int32_t* s_lengths = lengths.get();
  const float* s_x = x.get();
  std::uint8_t* s_mask = mask.get();

  const ErrorCase cases[] = {
      {"x null", Status::kErrorNullPointer, [&](mr::MaskedReduceArgs& a) { a.x = nullptr; }},
      {"out null", Status::kErrorNullPointer, [&](mr::MaskedReduceArgs& a) { a.out = nullptr; }},
      {"mask null", Status::kErrorNullPointer, [&](mr::MaskedReduceArgs& a) { a.mask = nullptr; }},
      {"lengths null", Status::kErrorNullPointer,
       [&](mr::MaskedReduceArgs& a) {
         a.validity = Validity::kLengths;
         a.mask = nullptr;
       }},
      {"dtype int32", Status::kErrorInvalidDType,
       [&](mr::MaskedReduceArgs& a) { a.dtype = culayers::DType::kInt32; }},
      {"dtype 77", Status::kErrorInvalidDType,
       [&](mr::MaskedReduceArgs& a) { a.dtype = static_cast<culayers::DType>(77); }},
      {"outer -1", Status::kErrorInvalidShape, [&](mr::MaskedReduceArgs& a) { a.outer = -1; }},
      {"R -1", Status::kErrorInvalidShape, [&](mr::MaskedReduceArgs& a) { a.reduce = -1; }},
      {"inner -5", Status::kErrorInvalidShape, [&](mr::MaskedReduceArgs& a) { a.inner = -5; }},
      {"R > int32", Status::kErrorSizeLimit,
       [&](mr::MaskedReduceArgs& a) { a.reduce = std::int64_t{1} << 31; }},
      {"overflow", Status::kErrorSizeLimit,
       [&](mr::MaskedReduceArgs& a) {
         a.outer = std::int64_t{1} << 40;
         a.inner = std::int64_t{1} << 20;
       }},
      {"op 9", Status::kErrorInvalidValue, [&](mr::MaskedReduceArgs& a) { a.op = static_cast<ReduceOp>(9); }},
      {"validity 5", Status::kErrorInvalidValue,
       [&](mr::MaskedReduceArgs& a) { a.validity = static_cast<Validity>(5); }},
      {"mask without kMask", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceArgs& a) { a.validity = Validity::kNone; }},
      {"lengths with kMask", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceArgs& a) { a.lengths = s_lengths; }},
      {"indices for sum", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceArgs& a) {
         a.op = ReduceOp::kSum;
         a.indices = s_indices;
       }},
      {"moments with out", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceArgs& a) {
         a.op = ReduceOp::kMoments;
         a.indices = nullptr;
         a.mean = s_mean;
         a.variance = s_variance; // its own buffer: only `out` is wrong here
       },
       "out: must be null for moments"},
      {"moments without variance", Status::kErrorNullPointer,
       [&](mr::MaskedReduceArgs& a) {
         a.op = ReduceOp::kMoments;
         a.indices = nullptr;
         a.out = nullptr;
         a.mean = s_mean;
       }},
      {"mean for max", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceArgs& a) { a.mean = s_mean; }},
      {"x misaligned", Status::kErrorMisaligned,
       [&](mr::MaskedReduceArgs& a) { a.x = reinterpret_cast<const char*>(s_x) + 1; }},
      {"out misaligned", Status::kErrorMisaligned,
       [&](mr::MaskedReduceArgs& a) { a.out = reinterpret_cast<char*>(s_out) + 2; }},
      {"vector_width 3", Status::kErrorInvalidValue,
       [&](mr::MaskedReduceArgs& a) { a.tuning.vector_width = 3; }},
      {"narrow with inner 64", Status::kErrorInvalidValue,
       [&](mr::MaskedReduceArgs& a) { a.tuning.path = Path::kNarrow; }},
      {"splits with wide", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceArgs& a) {
         a.tuning.path = Path::kWide;
         a.tuning.splits = 2;
       }},
      {"negative threshold", Status::kErrorInvalidValue,
       [&](mr::MaskedReduceArgs& a) { a.tuning.narrow_max_row = -1; }, "tuning.narrow_max_row: -1"},
      {"path 7", Status::kErrorInvalidValue,
       [&](mr::MaskedReduceArgs& a) { a.tuning.path = static_cast<Path>(7); }},
      {"splits too many", Status::kErrorInvalidValue,
       [&](mr::MaskedReduceArgs& a) { a.tuning.splits = 100000; }},
      {"min_rows_per_thread above 2^31 - 1", Status::kErrorInvalidValue,
       [&](mr::MaskedReduceArgs& a) { a.tuning.min_rows_per_thread = std::int64_t{1} << 62; }},
      {"target_threads above a full grid's threads", Status::kErrorInvalidValue,
       [&](mr::MaskedReduceArgs& a) { a.tuning.target_threads = std::numeric_limits<std::int64_t>::max(); }},
      // R = 0 makes x empty, but the outputs are still outer x inner.
      {"outputs overflow with R = 0", Status::kErrorSizeLimit,
       [&](mr::MaskedReduceArgs& a) {
         a.reduce = 0;
         a.outer = std::int64_t{1} << 33;
         a.inner = std::int64_t{1} << 33;
       }},
      {"counts misaligned", Status::kErrorMisaligned,
       [&](mr::MaskedReduceArgs& a) {
         a.counts = reinterpret_cast<std::int32_t*>(reinterpret_cast<char*>(a.counts) + 2);
       },
       "counts: not aligned"},
      {"indices misaligned", Status::kErrorMisaligned,
       [&](mr::MaskedReduceArgs& a) {
         a.indices = reinterpret_cast<std::int32_t*>(reinterpret_cast<char*>(s_indices) + 2);
       },
       "indices: not aligned"},
      {"length_errors misaligned", Status::kErrorMisaligned,
       [&](mr::MaskedReduceArgs& a) {
         a.validity = Validity::kLengths;
         a.mask = nullptr;
         a.lengths = s_lengths;
         a.length_errors = reinterpret_cast<std::uint32_t*>(reinterpret_cast<char*>(s_indices) + 1);
       },
       "length_errors: not aligned"},
      {"out overlaps x", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceArgs& a) { a.out = const_cast<float*>(s_x) + 64; }, "out: overlaps x"},
      {"indices overlap out", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceArgs& a) { a.indices = reinterpret_cast<std::int32_t*>(s_out) + 3; },
       "out: overlaps indices"},
      {"counts overlap the mask", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceArgs& a) { a.counts = reinterpret_cast<std::int32_t*>(s_mask + 4); },
       "counts: overlaps mask"},
      {"length_errors inside counts", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceArgs& a) {
         a.validity = Validity::kLengths;
         a.mask = nullptr;
         a.lengths = s_lengths;
         a.length_errors = reinterpret_cast<std::uint32_t*>(a.counts) + 2;
       },
       "counts: overlaps length_errors"},
      {"moments: variance overlaps mean", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceArgs& a) {
         a.op = ReduceOp::kMoments;
         a.indices = nullptr;
         a.out = nullptr;
         a.mean = s_mean;
         a.variance = s_mean + outer * inner - 1;
       },
       "mean: overlaps variance"},
  };
  for (const ErrorCase& e : cases) {
    out.fill_bytes(0xa5);
    mean.fill_bytes(0xa5);
    variance.fill_bytes(0xa5);
    counts.fill_bytes(0xa5);
    indices.fill_bytes(0xa5);
    mr::MaskedReduceArgs a;
    a.op = ReduceOp::kMax;
    a.x = x.get();
    a.outer = outer;
    a.reduce = reduce;
    a.inner = inner;
    a.validity = Validity::kMask;
    a.mask = mask.get();
    a.out = out.get();
    a.counts = counts.get();
    a.indices = indices.get();
    e.mutate(a);
    culayers::detail::clear_error();
    EXPECT_EQ(mr::can_implement(a), e.expect) << e.what;
    DeviceBuffer<unsigned char> d_ws(1 << 20);
    EXPECT_EQ(mr::run(a, d_ws.get(), d_ws.size(), nullptr), e.expect) << e.what;
    EXPECT_EQ(std::string(culayers::last_error_message()).rfind("masked_reduce: ", 0), 0u)
        << e.what << ": " << culayers::last_error_message();
    culayers::test::expect_message_contains(e.message, e.what);
    EXPECT_EQ(mr::workspace_size(a), 0u) << e.what;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    auto untouched = [&](const void* dev, std::size_t n) {
      std::vector<unsigned char> host(n);
      EXPECT_EQ(cudaMemcpy(host.data(), dev, n, cudaMemcpyDeviceToHost), cudaSuccess);
      for (unsigned char b : host) {
        if (b != 0xa5) {
          return false;
        }
      }
      return true;
    };
    EXPECT_TRUE(untouched(out.get(), out.bytes())) << e.what << ": out was written";
    EXPECT_TRUE(untouched(mean.get(), mean.bytes())) << e.what << ": mean was written";
    EXPECT_TRUE(untouched(variance.get(), variance.bytes())) << e.what << ": variance was written";
    EXPECT_TRUE(untouched(counts.get(), counts.bytes())) << e.what << ": counts were written";
    EXPECT_TRUE(untouched(indices.get(), indices.bytes())) << e.what << ": indices were written";
  }
}

// The split path's workspace: missing or too small is an error before anything runs; any alignment works.
TEST(MaskedReduceForward, WorkspaceChecksAndAnyAlignment) {
  auto rng = rng_for_test();
  const std::int64_t outer = 2;
  const std::int64_t reduce = 64;
  const std::int64_t inner = 7;
  const std::vector<float> x = tm::exact_values<float>(rng, static_cast<std::size_t>(outer * reduce * inner));
  DeviceBuffer<float> d_x(x);
  DeviceBuffer<float> d_out(static_cast<std::size_t>(outer * inner));
  mr::MaskedReduceArgs a;
  a.op = ReduceOp::kSum;
  a.x = d_x.get();
  a.outer = outer;
  a.reduce = reduce;
  a.inner = inner;
  a.out = d_out.get();
  a.tuning.splits = 4;
  const std::size_t need = mr::workspace_size(a);
  ASSERT_GT(need, 0u);
  DeviceBuffer<unsigned char> ws(need + 256);
  d_out.fill_bytes(0xa5);
  EXPECT_EQ(mr::run(a, nullptr, need, nullptr), Status::kErrorNullPointer);
  EXPECT_EQ(mr::run(a, ws.get(), need - 1, nullptr), Status::kErrorWorkspaceTooSmall);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (float v : d_out.download()) {
    std::uint32_t b;
    std::memcpy(&b, &v, 4);
    ASSERT_EQ(b, 0xa5a5a5a5u);
  }
  const tm::ForwardRef ref =
      tm::forward_reference(ReduceOp::kSum, to_double(x), outer, reduce, inner,
                            tm::make_validity(rng, Validity::kNone, outer, reduce), 0.0);
  for (int offset : {0, 1, 3, 4, 12, 36, 255}) { // unaligned workspace pointers; out poisoned before each run
    d_out.fill_bytes(0xa5);
    ASSERT_EQ(mr::run(a, ws.get() + offset, need, nullptr), Status::kSuccess)
        << culayers::last_error_message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> got = d_out.download();
    for (std::size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], ref.value[i]) << "workspace offset " << offset << ": exact data, the sum is exact";
    }
  }
}

// ---- lengths outside [0, R] -----------------------------------------------------------------------------

// Clamped (negative -> 0, above R -> R) and counted once per offending row in the device-side counter, on
// every path; the op never reads the lengths on the host.
TEST(MaskedReduceForward, OutOfRangeLengthsAreClampedAndCounted) {
  auto rng = rng_for_test();
  const std::int64_t reduce = 31;
  const std::vector<std::int32_t> lengths = {
      -3, 40, 31, 0, 7, std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max(),
      32, -1};
  const std::int64_t outer = static_cast<std::int64_t>(lengths.size());
  tm::ValidityData v;
  v.kind = Validity::kLengths;
  v.outer = outer;
  v.reduce = reduce;
  v.lengths = lengths;
  ASSERT_EQ(v.out_of_range(), 6u);
  for (const std::int64_t inner : {3, 64}) {
    const std::vector<float> x =
        tm::exact_values<float>(rng, static_cast<std::size_t>(outer * reduce * inner));
    for (const mr::Tuning& t : {forced(Path::kNarrow), forced(Path::kWide), with_splits(3)}) {
      if (t.path == Path::kNarrow && inner > 32) {
        continue;
      }
      for (ReduceOp op : {ReduceOp::kMean, ReduceOp::kMin}) {
        Config c = make_config(op, Validity::kLengths, outer, reduce, inner, t);
        const Result<float> got = run_forward(c, x, v);
        ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
        EXPECT_EQ(got.length_errors, 6u) << describe(c) << " path " << mr::path_name(got.path);
        EXPECT_EQ(got.counts, (std::vector<std::int32_t>{0, 31, 31, 0, 7, 0, 31, 31, 0})) << describe(c);
        check_forward(c, x, v, got);
        c.error_counter = false; // the counter is optional
        EXPECT_EQ(run_forward(c, x, v).status, Status::kSuccess);
      }
    }
  }
}

// ---- determinism ----------------------------------------------------------------------------------------

// Inexact data (sums depend on the order): repeated runs give identical bits on every path.
TEST(MaskedReduceForward, RepeatedRunsAreBitIdentical) {
  auto rng = rng_for_test();
  const ShapeCase cases[] = {kShapes[0], kShapes[5], kShapes[7], kShapes[8], kShapes[9]};
  for (const ShapeCase& s : cases) {
    const std::vector<__nv_bfloat16> x = tm::normal_values<__nv_bfloat16>(
        rng, static_cast<std::size_t>(s.outer * s.reduce * s.inner), 1.0, 3.0);
    const tm::ValidityData v = tm::make_validity(rng, Validity::kMask, s.outer, s.reduce);
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMoments, ReduceOp::kMax}) {
      Config c = make_config(op, Validity::kMask, s.outer, s.reduce, s.inner, s.tuning);
      const Result<__nv_bfloat16> a = run_forward(c, x, v);
      const Result<__nv_bfloat16> b = [&] { // emulated: another lane / warp order
        culayers::test::ScheduleSeed seed(0x5eed1234);
        return run_forward(c, x, v);
      }();
      ASSERT_EQ(a.status, Status::kSuccess);
      ASSERT_EQ(b.status, Status::kSuccess);
      ASSERT_EQ(a.path, s.expect);
      for (std::size_t i = 0; i < a.mean.size(); ++i) {
        const bool same = op == ReduceOp::kMoments ? (tm::bits(a.mean[i]) == tm::bits(b.mean[i]) &&
                                                      tm::bits(a.variance[i]) == tm::bits(b.variance[i]))
                                                   : tm::bits(a.out[i]) == tm::bits(b.out[i]);
        ASSERT_TRUE(same) << describe(c) << " output " << i << " differs between runs";
      }
      EXPECT_EQ(a.indices, b.indices);
    }
  }
}

// ---- TSan subset -----------------------------------------------------------------------------------------

// Small grids on every path for the TSan preset (which runs only *Tsan* tests): the wide kernel's
// shared-memory tree and mask tiles (barriers), the narrow kernel's shuffles, the split path's combine.
TEST(MaskedReduceTsan, SmallGridsEveryPath) {
  auto rng = rng_for_test();
  const ShapeCase cases[] = {{2, 40, 5, Path::kNarrow, forced(Path::kNarrow)},
                             {2, 40, 5, Path::kWide, forced(Path::kWide)},
                             {2, 40, 5, Path::kSplit, with_splits(3)}};
  for (const ShapeCase& s : cases) {
    const std::vector<float> x =
        tm::normal_values<float>(rng, static_cast<std::size_t>(s.outer * s.reduce * s.inner));
    for (Validity validity : {Validity::kMask, Validity::kLengths}) {
      const tm::ValidityData v = tm::make_validity(rng, validity, s.outer, s.reduce);
      for (ReduceOp op : {ReduceOp::kMean, ReduceOp::kMax, ReduceOp::kMoments}) {
        Config c = make_config(op, validity, s.outer, s.reduce, s.inner, s.tuning);
        run_and_check(c, x, v, s.expect);
      }
    }
  }
}

// ---- graph capture ---------------------------------------------------------------------------------------

// run() only enqueues (no synchronization, allocation or device query after the first call): it can be
// captured into a CUDA graph, and replays give the same bits as a direct run (split path: two kernels).
TEST(MaskedReduceForward, GraphCaptureReplaysSameBits) {
  auto rng = rng_for_test();
  const std::int64_t outer = 3;
  const std::int64_t reduce = 130;
  const std::int64_t inner = 65;
  const std::vector<float> x =
      tm::normal_values<float>(rng, static_cast<std::size_t>(outer * reduce * inner));
  const tm::ValidityData v = tm::make_validity(rng, Validity::kMask, outer, reduce);
  DeviceBuffer<float> d_x(x);
  DeviceBuffer<std::uint8_t> d_mask(v.mask);
  DeviceBuffer<float> direct(static_cast<std::size_t>(outer * inner));
  DeviceBuffer<float> replayed(static_cast<std::size_t>(outer * inner));
  mr::MaskedReduceArgs a;
  a.op = ReduceOp::kMean;
  a.x = d_x.get();
  a.outer = outer;
  a.reduce = reduce;
  a.inner = inner;
  a.validity = Validity::kMask;
  a.mask = d_mask.get();
  a.tuning.splits = 5;
  a.out = direct.get();
  const std::size_t ws_bytes = mr::workspace_size(a);
  ASSERT_GT(ws_bytes, 0u);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  ASSERT_EQ(mr::run(a, ws.get(), ws_bytes, nullptr), Status::kSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  replayed.fill_bytes(0xff);
  a.out = replayed.get();
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const Status st = mr::run(a, ws.get(), ws_bytes, stream);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(st, Status::kSuccess) << culayers::last_error_message();
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int replay = 0; replay < 2; ++replay) {
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    const std::vector<float> want = direct.download();
    const std::vector<float> got = replayed.download();
    for (std::size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(tm::bits(got[i]), tm::bits(want[i])) << "replay " << replay << " output " << i;
    }
    replayed.fill_bytes(0xff);
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

// ---- byte model (emulated build) -------------------------------------------------------------------------

#if CULAYERS_TEST_EMULATED
struct Bytes {
  std::uint64_t read;
  std::uint64_t written;
};

template <class T>
Bytes measure(const Config& c, const std::vector<T>& x, const tm::ValidityData& v, Path expect) {
  // Uploads and the poison fills in run_forward go through the runtime, not the kernels' load/store
  // helpers, so only the op's own global accesses are counted.
  culayers_emu::reset_byte_counters();
  const Result<T> got = run_forward(c, x, v);
  const culayers_emu::ByteCounters b = culayers_emu::byte_counters();
  EXPECT_EQ(got.status, Status::kSuccess);
  EXPECT_EQ(got.path, expect) << describe(c);
  check_forward(c, x, v, got);
  return Bytes{b.read, b.written};
}

// x is read once, and only at valid steps; each mask byte (or length) once; each output written once.
TEST(MaskedReduceForward, ByteModelReadsXOnce) {
  auto rng = rng_for_test();
  using T = __nv_bfloat16;
  const std::uint64_t elem = sizeof(T);
  struct Case {
    std::int64_t outer, reduce, inner;
    Path expect;
    mr::Tuning tuning;
    std::uint64_t validity_reads; // each block of a row stages the row's mask bytes (or length) once
  };
  // Wide with one column block per row (32 vectors of 8) and no split, so each mask byte and length is
  // staged once; wide with 3 column blocks of 32 vectors (768 columns), each staging them once; narrow
  // with scalar lanes (inner 3).
  const Case cases[] = {{3, 40, 256, Path::kWide, forced(Path::kWide), 1},
                        {3, 40, 768, Path::kWide, forced(Path::kWide), 3},
                        {20, 31, 3, Path::kNarrow, pinned(), 1}};
  for (const Case& k : cases) {
    const std::vector<T> x = tm::exact_values<T>(rng, static_cast<std::size_t>(k.outer * k.reduce * k.inner));
    for (Validity validity : kValidities) {
      const tm::ValidityData v = tm::make_validity(rng, validity, k.outer, k.reduce);
      std::uint64_t valid_steps = 0;
      for (std::int64_t o = 0; o < k.outer; ++o) {
        valid_steps += static_cast<std::uint64_t>(v.count(o));
      }
      const std::uint64_t validity_bytes =
          k.validity_reads * (validity == Validity::kMask ? static_cast<std::uint64_t>(k.outer * k.reduce)
                              : validity == Validity::kLengths ? 4 * static_cast<std::uint64_t>(k.outer)
                                                               : 0);
      const std::uint64_t outs = static_cast<std::uint64_t>(k.outer * k.inner);
      for (ReduceOp op : {ReduceOp::kMean, ReduceOp::kMax, ReduceOp::kMoments}) {
        Config c = make_config(op, validity, k.outer, k.reduce, k.inner, k.tuning);
        const Bytes b = measure(c, x, v, k.expect);
        const std::uint64_t want_read =
            valid_steps * static_cast<std::uint64_t>(k.inner) * elem + validity_bytes;
        std::uint64_t want_written = 4 * static_cast<std::uint64_t>(k.outer); // counts
        want_written += op == ReduceOp::kMoments ? 8 * outs : outs * elem;
        want_written += op == ReduceOp::kMax ? 4 * outs : 0; // indices
        EXPECT_EQ(b.read, want_read) << describe(c) << " path " << mr::path_name(k.expect);
        EXPECT_EQ(b.written, want_written) << describe(c);
      }
    }
  }
  // Validity none: exactly the bytes of x.
  {
    Config c = make_config(ReduceOp::kSum, Validity::kNone, 4, 64, 1);
    c.counts = false;
    c.tuning = pinned();
    const std::vector<T> x = tm::exact_values<T>(rng, 256);
    const Bytes b = measure(c, x, tm::make_validity(rng, Validity::kNone, 4, 64), Path::kNarrow);
    EXPECT_EQ(b.read, 256 * elem);
    EXPECT_EQ(b.written, 4 * elem);
  }
  // Split: x (valid steps) and the mask once; the partials are written once; the combine reads the values
  // once and each chunk's count once per 32-column block of the row (2 blocks per row here).
  {
    Config c = make_config(ReduceOp::kMoments, Validity::kMask, 2, 100, 64, with_splits(4));
    const std::vector<T> x = tm::exact_values<T>(rng, static_cast<std::size_t>(2 * 100 * 64));
    const tm::ValidityData v = tm::make_validity(rng, Validity::kMask, 2, 100);
    const Bytes b = measure(c, x, v, Path::kSplit);
    const std::uint64_t x_bytes = static_cast<std::uint64_t>(v.count(0) + v.count(1)) * 64 * elem;
    const std::uint64_t outputs = 2 * 64 * 8 + 2 * 4;
    // mean and m2 per (row, chunk, column) and one count per (row, chunk): 4 chunks of 25 steps.
    const std::uint64_t values = 2u * 4 * 64 * 8;
    const std::uint64_t counts = 2u * 4 * 4;
    EXPECT_EQ(b.written - outputs, values + counts) << "partials written once";
    EXPECT_EQ(b.read - x_bytes - 200, values + 2 * counts)
        << "values read once, counts once per column block";
  }
}
// Coalescing (the emulator's sector model, culayers::test::expect_coalesced): every load line that moves at
// least 5 % of the loads' bytes (x, and the mask on the narrow path) uses at least 90 % of the 32-byte
// sectors its warp accesses touch on the wide, narrow and split paths with vector rows, every op and
// validity (measured 0.93-1.0). The narrow path's mask bytes are read N per access (0.30 with one byte
// per access). Stores are not held to it: the outputs are R times smaller than x, and max / moments write
// several arrays per column (0.5-0.98 measured). Not held either: rows of an odd width (inner 65 on the
// wide path, 3 on the narrow one: 0.27-0.53, scalar accesses). (Overall ratios move with the random
// lengths: the split path's partials, 1/8 of their sectors, weigh more when few steps are valid.)
TEST(MaskedReduceForward, CoalescedLoads) {
  auto rng = rng_for_test();
  using T = __nv_bfloat16;
  struct Case {
    std::int64_t outer, reduce, inner;
    mr::Tuning tuning;
    Path expect;
  };
  const Case cases[] = {
      {4, 40, 768, forced(Path::kWide), Path::kWide},
      {4, 40, 256, forced(Path::kWide), Path::kWide},
      {64, 512, 1, pinned(), Path::kNarrow},
      {2, 400, 64, with_splits(4), Path::kSplit},
  };
  for (const Case& k : cases) {
    for (ReduceOp op : {ReduceOp::kMean, ReduceOp::kMax, ReduceOp::kMoments}) {
      for (Validity validity : {Validity::kMask, Validity::kLengths}) {
        const std::vector<T> x =
            tm::exact_values<T>(rng, static_cast<std::size_t>(k.outer * k.reduce * k.inner));
        const tm::ValidityData v = tm::make_validity(rng, validity, k.outer, k.reduce);
        Config c = make_config(op, validity, k.outer, k.reduce, k.inner, k.tuning);
        Result<T> got;
        const culayers::test::Coalescing co =
            culayers::test::measure_coalescing([&] { got = run_forward(c, x, v); });
        EXPECT_EQ(got.path, k.expect) << describe(c);
        culayers::test::expect_coalesced(co, 0.9, 0.0, describe(c));
      }
    }
  }
}

// Wave balance (Tuning step 4): 20 rows of one column block for 8192 / 512 = 16 resident 512-thread blocks
// would take two waves; the plan drops to 384-thread blocks (21 slots, one wave): 8 vectors x 48 lanes in
// 16-bit types, 16 x 24 in float32. Read from the emulator's launch counters; results still checked.
template <class T>
void wave_balanced_block() {
  auto rng = rng_for_test();
  const std::vector<T> x = tm::exact_values<T>(rng, static_cast<std::size_t>(20 * 1024 * 64));
  for (Validity validity : {Validity::kNone, Validity::kMask}) {
    const tm::ValidityData v = tm::make_validity(rng, validity, 20, 1024);
    Config c = make_config(ReduceOp::kMean, validity, 20, 1024, 64, pinned());
    const culayers_emu::Stats before = culayers_emu::stats();
    const Result<T> got = run_forward(c, x, v);
    const culayers_emu::Stats after = culayers_emu::stats();
    ASSERT_EQ(got.status, Status::kSuccess) << culayers::last_error_message();
    EXPECT_EQ(got.path, Path::kWide);
    EXPECT_EQ(after.launches - before.launches, 1u) << describe(c);
    EXPECT_EQ(after.blocks - before.blocks, 20u) << describe(c);
    EXPECT_EQ(after.threads - before.threads, 20u * 384u) << describe(c);
    check_forward(c, x, v, got);
  }
}

TEST(MaskedReduceForward, WaveBalancedBlockFloat) {
  wave_balanced_block<float>();
}
TEST(MaskedReduceForward, WaveBalancedBlockBFloat16) {
  wave_balanced_block<__nv_bfloat16>();
}
#endif

} // namespace
