// Backward of the masked reductions on both backends: every op x dtype x validity against the
// double-precision reference (max/min through the forward's indices, with many ties: the first index
// wins), dx written everywhere (+0 at masked positions, beyond the lengths and in empty rows), counts from
// the forward or from the workspace, misaligned views, out-of-range lengths, argument errors.
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
#include <vector>

namespace {

namespace mr = culayers::masked_reduce;
namespace tm = culayers::test::masked;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using mr::ReduceOp;
using mr::Validity;
using tm::Dtype;

constexpr ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kMean, ReduceOp::kMax, ReduceOp::kMin,
                             ReduceOp::kMoments};
constexpr Validity kValidities[] = {Validity::kNone, Validity::kMask, Validity::kLengths};

const char* op_name(ReduceOp op) {
  static const char* const names[] = {"sum", "mean", "max", "min", "moments"};
  return names[static_cast<int>(op)];
}
const char* validity_name(Validity v) {
  return v == Validity::kNone ? "none" : (v == Validity::kMask ? "mask" : "lengths");
}
bool is_extremum(ReduceOp op) {
  return op == ReduceOp::kMax || op == ReduceOp::kMin;
}

struct Config {
  ReduceOp op = ReduceOp::kSum;
  Validity validity = Validity::kNone;
  std::int64_t outer = 1;
  std::int64_t reduce = 1;
  std::int64_t inner = 1;
  bool pass_counts = false; // give the forward's counts (else mean/moments with a mask use the workspace)
  bool dmean = true;
  bool dvar = true;
  std::int64_t row_chunks = 0;
  int dx_offset = 0; // elements: misaligned dx (and x) views
  int dy_offset = 0; // elements: misaligned dy / indices / dmean / dvar / mean
};

std::string describe(const Config& c) {
  return std::string(op_name(c.op)) + " validity=" + validity_name(c.validity) + " [" +
         std::to_string(c.outer) + ", " + std::to_string(c.reduce) + ", " + std::to_string(c.inner) + "]" +
         (c.pass_counts ? " counts given" : "") +
         (c.row_chunks ? " chunks=" + std::to_string(c.row_chunks) : "") + (c.dx_offset ? " dx+1" : "") +
         (c.dy_offset ? " dy+1" : "") + (c.dmean ? "" : " no dmean") + (c.dvar ? "" : " no dvar");
}

template <class T>
std::vector<double> to_double(const std::vector<T>& x) {
  std::vector<double> d(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    d[i] = Dtype<T>::to_double(x[i]);
  }
  return d;
}

/// A device copy of `host` starting `offset` elements into its buffer.
template <class U>
DeviceBuffer<U> upload_at(const std::vector<U>& host, int offset) {
  std::vector<U> h(host.size() + static_cast<std::size_t>(offset) + 1);
  std::copy(host.begin(), host.end(), h.begin() + offset);
  return DeviceBuffer<U>(h);
}

/// Runs forward (for indices, mean and counts) and backward on device, compares dx with the reference.
template <class T>
void run_and_check(const Config& c, std::mt19937_64& rng) {
  SCOPED_TRACE(describe(c) + " " + Dtype<T>::kName);
  const std::size_t n_x = static_cast<std::size_t>(c.outer * c.reduce * c.inner);
  const std::size_t n_out = static_cast<std::size_t>(c.outer * c.inner);
  // Few levels for max/min: many ties, so the first index must win.
  const std::vector<T> x = tm::exact_values<T>(rng, n_x, is_extremum(c.op) ? 2 : 128);
  const tm::ValidityData v = tm::make_validity(rng, c.validity, c.outer, c.reduce);
  DeviceBuffer<T> d_x = upload_at(x, c.dx_offset);
  DeviceBuffer<std::uint8_t> d_mask(v.mask.empty() ? std::vector<std::uint8_t>{0} : v.mask);
  DeviceBuffer<std::int32_t> d_len(v.lengths.empty() ? std::vector<std::int32_t>{0} : v.lengths);

  // Forward: indices (max/min), mean (moments), counts.
  DeviceBuffer<T> d_fout(n_out + 1);
  DeviceBuffer<float> d_fmean(n_out + 1);
  DeviceBuffer<float> d_fvar(n_out + 1);
  DeviceBuffer<std::int32_t> d_idx(n_out + 1);
  DeviceBuffer<std::int32_t> d_counts(static_cast<std::size_t>(c.outer) + 1);
  mr::MaskedReduceArgs f;
  f.op = c.op;
  f.dtype = Dtype<T>::kDType;
  f.x = d_x.get() + c.dx_offset;
  f.outer = c.outer;
  f.reduce = c.reduce;
  f.inner = c.inner;
  f.validity = c.validity;
  f.mask = c.validity == Validity::kMask ? d_mask.get() : nullptr;
  f.lengths = c.validity == Validity::kLengths ? d_len.get() : nullptr;
  if (c.op == ReduceOp::kMoments) {
    f.mean = d_fmean.get();
    f.variance = d_fvar.get();
  } else {
    f.out = d_fout.get();
  }
  f.counts = d_counts.get();
  f.indices = is_extremum(c.op) ? d_idx.get() : nullptr;
  DeviceBuffer<unsigned char> fws(mr::workspace_size(f));
  ASSERT_EQ(mr::run(f, fws.get(), fws.size(), nullptr), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<std::int32_t> indices = d_idx.download();
  indices.resize(n_out);
  std::vector<float> fmean = d_fmean.download();
  fmean.resize(n_out);
  const tm::ForwardRef fref = tm::forward_reference(c.op, to_double(x), c.outer, c.reduce, c.inner, v, 0.0);
  if (is_extremum(c.op)) {
    ASSERT_EQ(indices, fref.index) << "forward indices (ties: the first valid index wins)";
  }

  // Gradients: exact values so the reference needs no tolerance beyond the op's own arithmetic.
  const std::vector<T> dy = tm::exact_values<T>(rng, n_out);
  std::vector<float> dmean(n_out);
  std::vector<float> dvar(n_out);
  for (std::size_t i = 0; i < n_out; ++i) {
    dmean[i] = static_cast<float>(std::uniform_int_distribution<int>(-64, 64)(rng)) / 8.0f;
    dvar[i] = static_cast<float>(std::uniform_int_distribution<int>(-64, 64)(rng)) / 8.0f;
  }
  DeviceBuffer<T> d_dy = upload_at(dy, c.dy_offset);
  DeviceBuffer<std::int32_t> d_bidx = upload_at(indices, c.dy_offset);
  DeviceBuffer<float> d_dmean = upload_at(dmean, c.dy_offset);
  DeviceBuffer<float> d_dvar = upload_at(dvar, c.dy_offset);
  DeviceBuffer<float> d_mean = upload_at(fmean, c.dy_offset);
  DeviceBuffer<T> d_dx(n_x + static_cast<std::size_t>(c.dx_offset) + 1);
  DeviceBuffer<std::uint32_t> d_err(1);
  d_dx.fill_bytes(0xff); // NaN everywhere: every element must be written
  d_err.fill_bytes(0);

  mr::MaskedReduceBackwardArgs b;
  b.op = c.op;
  b.dtype = Dtype<T>::kDType;
  b.outer = c.outer;
  b.reduce = c.reduce;
  b.inner = c.inner;
  b.validity = c.validity;
  b.mask = f.mask;
  b.lengths = f.lengths;
  b.length_errors = c.validity == Validity::kLengths ? d_err.get() : nullptr;
  if (c.op == ReduceOp::kMoments) {
    b.dmean = c.dmean ? d_dmean.get() + c.dy_offset : nullptr;
    b.dvar = c.dvar ? d_dvar.get() + c.dy_offset : nullptr;
    b.mean = c.dvar ? d_mean.get() + c.dy_offset : nullptr;
    b.x = c.dvar ? static_cast<const void*>(d_x.get() + c.dx_offset) : nullptr;
  } else {
    b.dy = d_dy.get() + c.dy_offset;
    b.indices = is_extremum(c.op) ? d_bidx.get() + c.dy_offset : nullptr;
  }
  b.counts = c.pass_counts ? d_counts.get() : nullptr;
  b.dx = d_dx.get() + c.dx_offset;
  b.row_chunks = c.row_chunks;
  const std::size_t ws_bytes = mr::workspace_size(b);
  const bool needs_ws = (c.op == ReduceOp::kMean || c.op == ReduceOp::kMoments) &&
                        c.validity == Validity::kMask && !c.pass_counts;
  EXPECT_EQ(ws_bytes > 0, needs_ws);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  ASSERT_EQ(mr::run(b, ws.get(), ws_bytes, nullptr), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<T> dx_all = d_dx.download();
  const std::vector<T> dx(dx_all.begin() + c.dx_offset,
                          dx_all.begin() + c.dx_offset + static_cast<std::ptrdiff_t>(n_x));
  EXPECT_EQ(d_err.download()[0], 0u);

  std::vector<double> dmean_d(dmean.begin(), dmean.end());
  std::vector<double> dvar_d(dvar.begin(), dvar.end());
  std::vector<double> mean_d(fmean.begin(), fmean.end());
  const std::vector<double> ref = tm::backward_reference(
      c.op, c.outer, c.reduce, c.inner, v, to_double(dy), indices, c.dmean ? dmean_d : std::vector<double>{},
      c.dvar ? dvar_d : std::vector<double>{}, mean_d, to_double(x));

  int failures = 0;
  for (std::int64_t o = 0; o < c.outer && failures < 5; ++o) {
    const double n = static_cast<double>(v.count(o));
    for (std::int64_t r = 0; r < c.reduce && failures < 5; ++r) {
      for (std::int64_t i = 0; i < c.inner && failures < 5; ++i) {
        const std::size_t xi = static_cast<std::size_t>((o * c.reduce + r) * c.inner + i);
        const std::size_t at = static_cast<std::size_t>(o * c.inner + i);
        const double got = Dtype<T>::to_double(dx[xi]);
        const double want = ref[xi];
        const std::string where =
            "dx[" + std::to_string(o) + ", " + std::to_string(r) + ", " + std::to_string(i) + "]";
        if (!v.valid(o, r)) {
          // Masked positions and empty rows: exactly +0 (written, not left untouched).
          if (tm::bits(dx[xi]) != 0u) {
            ++failures;
            ADD_FAILURE() << where << " is masked: bits 0x" << std::hex << tm::bits(dx[xi]) << std::dec
                          << ", want +0";
          }
          continue;
        }
        double tol = 0.0;
        switch (c.op) {
        case ReduceOp::kSum:
        case ReduceOp::kMax:
        case ReduceOp::kMin:
          tol = 0.0; // dy copied (or routed): exact
          break;
        case ReduceOp::kMean:
          // One float32 division (correctly rounded) then one rounding to T: the two roundings can land
          // one ulp of T apart from rounding the exact quotient once.
          tol = tm::ulp<T>(want);
          break;
        case ReduceOp::kMoments: {
          // a + b (x - m) with a = dmean / n, b = 2 dvar / n: five float32 operations (or fewer with FMA),
          // each within u of its result: 6 u (|a| + |b| (|x| + |m|)); then one rounding to T.
          const double a = c.dmean ? std::fabs(dmean[at]) / n : 0.0;
          const double bb = c.dvar ? 2.0 * std::fabs(dvar[at]) / n : 0.0;
          tol = 6.0 * tm::kU32 * (a + bb * (std::fabs(Dtype<T>::to_double(x[xi])) + std::fabs(fmean[at]))) +
                tm::ulp<T>(want);
          break;
        }
        }
        const double want_t = tm::round_to<T>(want);
        if (!(std::fabs(got - want_t) <= tol)) {
          ++failures;
          ADD_FAILURE() << where << " = " << got << ", want " << want_t << " (tol " << tol << ")";
        }
      }
    }
  }
}

struct ShapeCase {
  std::int64_t outer;
  std::int64_t reduce;
  std::int64_t inner;
  std::int64_t row_chunks;
};

// The forward's shape coverage: narrow inner (tx < 32 lanes of columns), vectors, several column blocks,
// long R, and R split into chunks.
const ShapeCase kShapes[] = {
    {130, 31, 3, 0}, {9, 64, 1, 0}, {2, 2, 768, 0}, {2, 9, 1033, 0}, {1, 512, 64, 4}, {3, 130, 65, 0},
    {2, 4099, 1, 0}, {4, 1, 7, 0},  {3, 20, 6, 0},  {2, 17, 12, 0}, // inner allowing only N = 2, and N = 4 in
                                                                    // 16-bit types
};

template <class T>
class MaskedReduceBackwardTyped : public ::testing::Test {};
using DTypes = ::testing::Types<float, __half, __nv_bfloat16>;
TYPED_TEST_SUITE(MaskedReduceBackwardTyped, DTypes);

TYPED_TEST(MaskedReduceBackwardTyped, MatrixAgainstReference) {
  using T = TypeParam;
  auto rng = rng_for_test();
  int k = 0;
  for (const ShapeCase& s : kShapes) {
    for (Validity validity : kValidities) {
      for (ReduceOp op : kOps) {
        Config c;
        c.op = op;
        c.validity = validity;
        c.outer = s.outer;
        c.reduce = s.reduce;
        c.inner = s.inner;
        c.row_chunks = s.row_chunks;
        // counts is an input of mean and moments with a mask only (an error elsewhere).
        c.pass_counts = (k++ % 2) == 0 && validity == Validity::kMask &&
                        (op == ReduceOp::kMean || op == ReduceOp::kMoments);
        run_and_check<T>(c, rng);
        if (::testing::Test::HasFailure()) {
          return;
        }
      }
    }
  }
}

// Mean and moments with a mask and no counts input: the counts come from the mask, counted in 4 KB chunks
// of a row by many blocks (R = 9000: two full chunks and a partial one per row).
TYPED_TEST(MaskedReduceBackwardTyped, CountsFromTheMaskAcrossChunks) {
  using T = TypeParam;
  auto rng = rng_for_test();
  for (ReduceOp op : {ReduceOp::kMean, ReduceOp::kMoments}) {
    Config c;
    c.op = op;
    c.validity = Validity::kMask;
    c.outer = 3;
    c.reduce = 9000;
    c.inner = 2;
    c.pass_counts = false;
    run_and_check<T>(c, rng);
    if (::testing::Test::HasFailure()) {
      return;
    }
  }
}

// Captured in a CUDA graph, the backward that counts the mask itself replays with the same bits: the
// counts workspace is zeroed by the captured memset on every replay (it is poisoned before each one).
TEST(MaskedReduceBackward, CountsFromTheMaskReplayInAGraph) {
  auto rng = rng_for_test();
  const std::int64_t outer = 3;
  const std::int64_t reduce = 5000;
  const std::int64_t inner = 4;
  const tm::ValidityData v = tm::make_validity(rng, Validity::kMask, outer, reduce);
  const std::vector<float> dy = tm::exact_values<float>(rng, static_cast<std::size_t>(outer * inner));
  DeviceBuffer<std::uint8_t> d_mask(v.mask);
  DeviceBuffer<float> d_dy(dy);
  DeviceBuffer<float> direct(static_cast<std::size_t>(outer * reduce * inner));
  DeviceBuffer<float> replayed(direct.size());
  mr::MaskedReduceBackwardArgs b;
  b.op = ReduceOp::kMean;
  b.dtype = culayers::DType::kFloat32;
  b.outer = outer;
  b.reduce = reduce;
  b.inner = inner;
  b.validity = Validity::kMask;
  b.mask = d_mask.get();
  b.dy = d_dy.get();
  b.dx = direct.get();
  const std::size_t ws_bytes = mr::workspace_size(b);
  ASSERT_GT(ws_bytes, 0u);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  ws.fill_bytes(0x5a);
  ASSERT_EQ(mr::run(b, ws.get(), ws_bytes, nullptr), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> want = direct.download();

  culayers::test::Stream stream;
  b.dx = replayed.get();
  ASSERT_EQ(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const Status st = mr::run(b, ws.get(), ws_bytes, stream.get());
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream.get(), &graph), cudaSuccess);
  ASSERT_EQ(st, Status::kSuccess) << culayers::last_error_message();
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int replay = 0; replay < 2; ++replay) {
    ws.fill_bytes(0xa5);
    replayed.fill_bytes(0xff);
    ASSERT_EQ(cudaGraphLaunch(exec, stream.get()), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream.get()), cudaSuccess);
    const std::vector<float> got = replayed.download();
    ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << "replay " << replay;
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
}

// Moments with only dmean or only dvar (the other gradient is zero; x and mean not needed without dvar).
TYPED_TEST(MaskedReduceBackwardTyped, MomentsWithOneGradient) {
  using T = TypeParam;
  auto rng = rng_for_test();
  for (const ShapeCase& s : {kShapes[0], kShapes[2]}) {
    for (bool with_dvar : {false, true}) {
      Config c;
      c.op = ReduceOp::kMoments;
      c.validity = Validity::kMask;
      c.outer = s.outer;
      c.reduce = s.reduce;
      c.inner = s.inner;
      c.dmean = !with_dvar;
      c.dvar = with_dvar;
      run_and_check<T>(c, rng);
    }
  }
}

// dx and x, or dy and the float inputs, offset by one element: scalar accesses only (the emulator reports
// misaligned vector accesses).
TYPED_TEST(MaskedReduceBackwardTyped, MisalignedViews) {
  using T = TypeParam;
  auto rng = rng_for_test();
  for (ReduceOp op : kOps) {
    for (int which = 0; which < 2; ++which) {
      Config c;
      c.op = op;
      c.validity = Validity::kMask;
      c.outer = 2;
      c.reduce = 9;
      c.inner = 64;
      c.dx_offset = which == 0 ? 1 : 0;
      c.dy_offset = which == 1 ? 1 : 0;
      run_and_check<T>(c, rng);
    }
  }
}

// Out-of-range lengths: clamped like the forward and counted once per row.
TEST(MaskedReduceBackward, OutOfRangeLengthsAreClampedAndCounted) {
  const std::int64_t reduce = 9;
  const std::int64_t inner = 5;
  const std::vector<std::int32_t> lengths = {-4, 12, 9, 3, std::numeric_limits<std::int32_t>::min()};
  const std::int64_t outer = static_cast<std::int64_t>(lengths.size());
  const std::size_t n_x = static_cast<std::size_t>(outer * reduce * inner);
  DeviceBuffer<std::int32_t> d_len(lengths);
  DeviceBuffer<float> d_dy(std::vector<float>(static_cast<std::size_t>(outer * inner), 2.0f));
  DeviceBuffer<float> d_dx(n_x);
  DeviceBuffer<std::uint32_t> d_err(std::vector<std::uint32_t>{5}); // counts on top of what is there
  mr::MaskedReduceBackwardArgs b;
  b.op = ReduceOp::kMean;
  b.outer = outer;
  b.reduce = reduce;
  b.inner = inner;
  b.validity = Validity::kLengths;
  b.lengths = d_len.get();
  b.length_errors = d_err.get();
  b.dy = d_dy.get();
  b.dx = d_dx.get();
  for (std::int64_t chunks : {0, 3}) {
    b.row_chunks = chunks;
    d_dx.fill_bytes(0xff);
    ASSERT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> dx = d_dx.download();
    const std::int64_t clamped[] = {0, 9, 9, 3, 0};
    for (std::int64_t o = 0; o < outer; ++o) {
      for (std::int64_t r = 0; r < reduce; ++r) {
        for (std::int64_t i = 0; i < inner; ++i) {
          const float want = r < clamped[o] ? 2.0f / static_cast<float>(clamped[o]) : 0.0f;
          ASSERT_EQ(dx[static_cast<std::size_t>((o * reduce + r) * inner + i)], want) << o << " " << r;
        }
      }
    }
  }
  EXPECT_EQ(d_err.download()[0], 5u + 2 * 3) << "3 rows out of range, 2 runs";
}

TEST(MaskedReduceBackward, ArgumentErrorsLeaveDxUntouched) {
  const std::int64_t outer = 2;
  const std::int64_t reduce = 7;
  const std::int64_t inner = 8;
  DeviceBuffer<float> x(static_cast<std::size_t>(outer * reduce * inner));
  DeviceBuffer<float> dy(static_cast<std::size_t>(outer * inner));
  DeviceBuffer<float> dx(static_cast<std::size_t>(outer * reduce * inner));
  DeviceBuffer<std::int32_t> idx(static_cast<std::size_t>(outer * inner));
  DeviceBuffer<std::uint8_t> mask(static_cast<std::size_t>(outer * reduce));
  float* p_dy = dy.get();
  const float* p_x = x.get();
  std::int32_t* p_idx = idx.get();
  struct Case {
    const char* what;
    Status expect;
    std::function<void(mr::MaskedReduceBackwardArgs&)> mutate;
    const char* message = nullptr; ///< when set, the error message must contain it (names the argument)
  };
  const Case cases[] = {
      {"dx null", Status::kErrorNullPointer, [&](mr::MaskedReduceBackwardArgs& b) { b.dx = nullptr; }},
      {"dy null", Status::kErrorNullPointer, [&](mr::MaskedReduceBackwardArgs& b) { b.dy = nullptr; }},
      {"indices null for max", Status::kErrorNullPointer,
       [&](mr::MaskedReduceBackwardArgs& b) { b.op = ReduceOp::kMax; }},
      {"indices for sum", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceBackwardArgs& b) { b.indices = p_idx; }},
      {"moments without gradients", Status::kErrorNullPointer,
       [&](mr::MaskedReduceBackwardArgs& b) {
         b.op = ReduceOp::kMoments;
         b.dy = nullptr;
       }},
      {"moments dvar without x", Status::kErrorNullPointer,
       [&](mr::MaskedReduceBackwardArgs& b) {
         b.op = ReduceOp::kMoments;
         b.dy = nullptr;
         b.dvar = p_dy;
         b.mean = p_dy;
       }},
      {"x for sum", Status::kErrorInconsistentArguments, [&](mr::MaskedReduceBackwardArgs& b) { b.x = p_x; }},
      {"dtype uint8", Status::kErrorInvalidDType,
       [&](mr::MaskedReduceBackwardArgs& b) { b.dtype = culayers::DType::kUInt8; }},
      {"R negative", Status::kErrorInvalidShape, [&](mr::MaskedReduceBackwardArgs& b) { b.reduce = -7; }},
      {"mask null", Status::kErrorNullPointer,
       [&](mr::MaskedReduceBackwardArgs& b) { b.validity = Validity::kMask; }},
      {"dx misaligned", Status::kErrorMisaligned,
       [&](mr::MaskedReduceBackwardArgs& b) { b.dx = reinterpret_cast<char*>(b.dx) + 1; }},
      {"vector_width 6", Status::kErrorInvalidValue,
       [&](mr::MaskedReduceBackwardArgs& b) { b.vector_width = 6; }},
      {"row_chunks -1", Status::kErrorInvalidValue,
       [&](mr::MaskedReduceBackwardArgs& b) { b.row_chunks = -1; }},
      {"counts misaligned", Status::kErrorMisaligned,
       [&](mr::MaskedReduceBackwardArgs& b) {
         b.op = ReduceOp::kMean;
         b.validity = Validity::kMask;
         b.mask = mask.get();
         b.counts = reinterpret_cast<const std::int32_t*>(reinterpret_cast<const char*>(p_idx) + 2);
       },
       "counts: not aligned"},
      {"counts for sum", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceBackwardArgs& b) {
         b.validity = Validity::kMask;
         b.mask = mask.get();
         b.counts = p_idx;
       },
       "counts: only used by mean and moments with a mask"},
      {"counts for mean with lengths", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceBackwardArgs& b) {
         b.op = ReduceOp::kMean;
         b.validity = Validity::kLengths;
         b.lengths = p_idx;
         b.counts = p_idx;
       },
       "counts: only used by mean and moments with a mask"},
      {"length_errors misaligned", Status::kErrorMisaligned,
       [&](mr::MaskedReduceBackwardArgs& b) {
         b.validity = Validity::kLengths;
         b.lengths = p_idx;
         b.length_errors = reinterpret_cast<std::uint32_t*>(reinterpret_cast<char*>(p_idx) + 1);
       },
       "length_errors: not aligned"},
      {"dx overlaps dy", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceBackwardArgs& b) { b.dy = reinterpret_cast<float*>(b.dx) + 5; },
       "dx: overlaps dy"},
      {"moments: dx is x", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceBackwardArgs& b) {
         b.op = ReduceOp::kMoments;
         b.dy = nullptr;
         b.dvar = p_dy;
         b.mean = p_dy;
         b.x = b.dx;
       },
       "dx: overlaps x"},
      {"dx overlaps the mask", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceBackwardArgs& b) {
         b.validity = Validity::kMask;
         b.mask = reinterpret_cast<const std::uint8_t*>(b.dx) + 3;
       },
       "dx: overlaps mask"},
      {"dx overlaps max's indices", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceBackwardArgs& b) {
         b.op = ReduceOp::kMax;
         b.indices = reinterpret_cast<const std::int32_t*>(b.dx) + 8;
       },
       "dx: overlaps indices"},
      {"length_errors inside dx", Status::kErrorInconsistentArguments,
       [&](mr::MaskedReduceBackwardArgs& b) {
         b.validity = Validity::kLengths;
         b.lengths = p_idx;
         b.length_errors = reinterpret_cast<std::uint32_t*>(b.dx) + 1;
       },
       "dx: overlaps length_errors"},
  };
  for (const Case& e : cases) {
    dx.fill_bytes(0xa5);
    mr::MaskedReduceBackwardArgs b;
    b.op = ReduceOp::kSum;
    b.outer = outer;
    b.reduce = reduce;
    b.inner = inner;
    b.dy = dy.get();
    b.dx = dx.get();
    e.mutate(b);
    EXPECT_EQ(mr::can_implement(b), e.expect) << e.what;
    EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), e.expect) << e.what;
    EXPECT_EQ(std::string(culayers::last_error_message()).rfind("masked_reduce_backward: ", 0), 0u)
        << e.what << ": " << culayers::last_error_message();
    culayers::test::expect_message_contains(e.message, e.what);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<unsigned char> host(dx.bytes());
    ASSERT_EQ(cudaMemcpy(host.data(), dx.get(), host.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    for (unsigned char byte : host) {
      ASSERT_EQ(byte, 0xa5) << e.what << ": dx was written";
    }
  }
  // Mean with a mask and no counts needs the workspace.
  mr::MaskedReduceBackwardArgs b;
  b.op = ReduceOp::kMean;
  b.outer = outer;
  b.reduce = reduce;
  b.inner = inner;
  b.validity = Validity::kMask;
  b.mask = mask.get();
  b.dy = dy.get();
  b.dx = dx.get();
  const std::size_t need = mr::workspace_size(b);
  ASSERT_GT(need, 0u);
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorNullPointer);
  DeviceBuffer<unsigned char> ws(need);
  EXPECT_EQ(mr::run(b, ws.get(), need - 1, nullptr), Status::kErrorWorkspaceTooSmall);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

} // namespace
