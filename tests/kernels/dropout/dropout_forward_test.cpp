// Dropout forward: bit-exact against the CPU reference for every dtype, vector width, grid size,
// pointer misalignment and element count (not multiples of 4 included), broadcast noise shapes on
// every path, keep fractions within binomial bounds, keep = 1 as an exact copy, T = 0 as all zeros,
// in place, the optional mask, and (emulated build) the byte model.
#include "culayers/dropout.hpp"
#include "kernels/dropout/philox.cuh"
#include "tests/kernels/dropout/dropout_test_util.hpp"
#include "tests/reference/dropout_reference.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

namespace cd = culayers::dropout;
namespace ref = culayers::test::dropout_ref;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::dropout::compare_bits;
using culayers::test::dropout::current_params;
using culayers::test::dropout::DeviceState;
using culayers::test::dropout::DTypeOf;
using culayers::test::dropout::fixed_rate;
using culayers::test::dropout::mask_mismatch;
using culayers::test::dropout::random_bits;
using culayers::test::dropout::random_input;
using culayers::test::dropout::seed_trace;
using culayers::test::dropout::shape_of;

struct Options {
  std::vector<std::int64_t> noise;
  std::uint64_t offset = 0;
  int width = 0;
  int max_blocks = 0;
  bool with_mask = true;
  bool in_place = false;
  int x_shift = 0; // elements added to the x pointer (misalignment)
  int y_shift = 0;
  int mask_shift = 0;
};

template <class T>
struct Result {
  Status status = Status::kErrorInternal;
  std::vector<T> y;
  std::vector<std::uint8_t> mask;
};

constexpr int kPad = 8; // spare elements so that pointers can be shifted

template <class T>
Result<T> run_forward(const std::vector<T>& x, const std::vector<std::int64_t>& dims, DeviceState& state,
                      const Options& o) {
  const std::size_t n = x.size();
  DeviceBuffer<T> xb(n + kPad);
  DeviceBuffer<T> yb(n + kPad);
  DeviceBuffer<std::uint8_t> mb(n + kPad);
  std::vector<T> padded(n + kPad);
  std::copy(x.begin(), x.end(), padded.begin() + o.x_shift);
  xb.upload(padded);
  yb.fill_bytes(0xA5);
  mb.fill_bytes(0xA5);
  cd::DropoutForwardArgs a;
  a.x = xb.get() + o.x_shift;
  a.y = o.in_place ? xb.get() + o.x_shift : yb.get() + o.y_shift;
  a.dtype = DTypeOf<T>::kValue;
  a.shape = shape_of(dims);
  if (!o.noise.empty()) {
    a.noise_shape = shape_of(o.noise);
  }
  a.state = state.get();
  a.offset = o.offset;
  a.mask = o.with_mask ? mb.get() + o.mask_shift : nullptr;
  a.max_blocks = o.max_blocks;
  a.force_vector_width = o.width;
  Result<T> r;
  r.status = cd::run(a, nullptr, 0, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<T> yall = o.in_place ? xb.download() : yb.download();
  const int ys = o.in_place ? o.x_shift : o.y_shift;
  r.y.assign(yall.begin() + ys, yall.begin() + ys + static_cast<std::ptrdiff_t>(n));
  if (o.with_mask) {
    const std::vector<std::uint8_t> mall = mb.download();
    r.mask.assign(mall.begin() + o.mask_shift, mall.begin() + o.mask_shift + static_cast<std::ptrdiff_t>(n));
  }
  return r;
}

/// Runs the forward and checks y and the mask against the reference, bit for bit.
template <class T>
void check_forward(const std::vector<T>& x, const std::vector<std::int64_t>& dims, DeviceState& state,
                   const Options& o, const std::string& what) {
  const ref::CallParams p = current_params(state.read(), o.offset);
  const Result<T> r = run_forward(x, dims, state, o);
  ASSERT_EQ(r.status, Status::kSuccess) << what << ": " << culayers::last_error_message();
  const std::vector<std::uint8_t> keep = ref::mask(p, dims, o.noise);
  const std::vector<T> want = ref::apply(x, keep, p.scale);
  const std::string ydiff = compare_bits(r.y, want, x.size());
  EXPECT_TRUE(ydiff.empty()) << what << ": y: " << ydiff << "; " << seed_trace();
  if (o.with_mask) {
    const std::string mdiff = mask_mismatch(r.mask, keep);
    EXPECT_TRUE(mdiff.empty()) << what << ": " << mdiff << "; " << seed_trace();
  }
}

template <class T>
void widths_grids_sizes() {
  auto rng = rng_for_test();
  DeviceState state(fixed_rate(rng(), 0.8731, static_cast<std::int64_t>(rng() % 1000)));
  ASSERT_EQ(state.init_status(), Status::kSuccess) << culayers::last_error_message();
  for (std::int64_t n : {1, 3, 4, 7, 8, 9, 31, 33, 65, 511, 1025, 4099}) {
    const std::vector<T> x = random_input<T>(rng, static_cast<std::size_t>(n));
    for (int width : {0, 1, 2, 4, 8}) {
      if (width > DTypeOf<T>::kMaxWidth) {
        continue;
      }
      for (int blocks : {0, 1, 3}) {
        Options o;
        o.width = width;
        o.max_blocks = blocks;
        check_forward(x, {n}, state, o,
                      "n " + std::to_string(n) + " width " + std::to_string(width) + " max_blocks " +
                          std::to_string(blocks));
      }
    }
  }
}

TEST(DropoutForward, MatchesReferenceAcrossWidthsGridsSizesFloat) {
  widths_grids_sizes<float>();
}
TEST(DropoutForward, MatchesReferenceAcrossWidthsGridsSizesHalf) {
  widths_grids_sizes<__half>();
}
TEST(DropoutForward, MatchesReferenceAcrossWidthsGridsSizesBFloat16) {
  widths_grids_sizes<__nv_bfloat16>();
}

// Misaligned x, y or mask pointers force narrower vectors (down to the scalar path); the words must
// not change. Also a non-zero call offset.
template <class T>
void misaligned() {
  auto rng = rng_for_test();
  DeviceState state(fixed_rate(rng(), 0.5));
  const std::int64_t n = 1031;
  const std::vector<T> x = random_input<T>(rng, n);
  for (int xs : {0, 1, 2, 3}) {
    for (int ys : {0, 1, 2}) {
      for (int ms : {0, 1, 3}) {
        Options o;
        o.x_shift = xs;
        o.y_shift = ys;
        o.mask_shift = ms;
        o.offset = 4 * static_cast<std::uint64_t>(xs + ys);
        check_forward(x, {n}, state, o,
                      "shifts x " + std::to_string(xs) + " y " + std::to_string(ys) + " mask " +
                          std::to_string(ms));
      }
    }
  }
}

TEST(DropoutForward, MisalignedPointersFloat) {
  misaligned<float>();
}
TEST(DropoutForward, MisalignedPointersBFloat16) {
  misaligned<__nv_bfloat16>();
}

TEST(DropoutForward, InPlaceAndWithoutMask) {
  auto rng = rng_for_test();
  DeviceState state(fixed_rate(rng(), 0.7));
  const std::vector<__half> x = random_input<__half>(rng, 2051);
  Options o;
  o.in_place = true;
  check_forward(x, {2051}, state, o, "in place");
  o.with_mask = false;
  check_forward(x, {2051}, state, o, "in place, no mask");
  o.in_place = false;
  o.x_shift = 1;
  check_forward(x, {2051}, state, o, "no mask, misaligned x");
}

// The forward records its parameters in last_* and touches nothing else of the state.
TEST(DropoutForward, RecordsLastCall) {
  auto rng = rng_for_test();
  cd::DropoutInitArgs init = fixed_rate(rng(), 0.6, 17);
  init.decay_rate = 0.9;
  init.decay_interval = 5;
  DeviceState state(init);
  const cd::DropoutState initial = state.read();
  EXPECT_EQ(initial.last_iteration, -1);
  EXPECT_EQ(initial.last_stream, initial.stream);
  EXPECT_EQ(initial.last_threshold, initial.threshold);
  // A redraw first, so the current call's stream differs from the last_* that init wrote: the forward must
  // copy it (a forward that recorded only last_iteration would leave last_stream at 17).
  ASSERT_EQ(state.redraw(), Status::kSuccess);
  const cd::DropoutState before = state.read();
  ASSERT_EQ(before.stream, (std::uint64_t{1} << 63) + 1);
  ASSERT_EQ(before.last_stream, 17u);
  const std::vector<float> x = random_input<float>(rng, 100);
  Options o;
  (void)run_forward(x, {100}, state, o);
  cd::DropoutState after = state.read();
  EXPECT_EQ(after.last_iteration, 17);
  EXPECT_EQ(after.last_stream, before.stream);
  EXPECT_EQ(after.last_threshold, before.threshold);
  EXPECT_EQ(after.last_scale, before.scale);
  EXPECT_EQ(after.last_keep_rate, before.keep_rate);
  // The only fields that differ from `before`: last_iteration and last_stream.
  after.last_iteration = before.last_iteration;
  after.last_stream = before.last_stream;
  EXPECT_EQ(std::memcmp(&after, &before, sizeof(before)), 0);
}

TEST(DropoutForward, EmptyTensorRecordsAndWritesNothing) {
  auto rng = rng_for_test();
  DeviceState state(fixed_rate(rng(), 0.6, 3));
  cd::DropoutForwardArgs a;
  a.dtype = culayers::DType::kBFloat16;
  a.shape = shape_of({4, 0, 3});
  a.state = state.get();
  ASSERT_EQ(cd::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(state.read().last_iteration, 3);
  cd::DropoutBackwardArgs b;
  b.dtype = a.dtype;
  b.shape = a.shape;
  b.state = state.get();
  EXPECT_EQ(cd::run(b, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
}

// Keep fractions on 2^20 elements: the number kept is Binomial(n, T / 2^32); it must lie within 5
// standard deviations of n T / 2^32 (a false failure has probability below 6e-7), and the mask must
// equal the reference exactly.
TEST(DropoutForward, KeepFractionsWithinBinomialBounds) {
  auto rng = rng_for_test();
  const std::int64_t n = 1 << 20;
  const std::vector<__nv_bfloat16> x = random_input<__nv_bfloat16>(rng, n);
  cd::DropoutInitArgs decayed = fixed_rate(rng(), 0.95, 12345);
  decayed.decay_rate = 0.977;
  decayed.decay_interval = 1000; // keep = 0.95 * 0.977^12.346 = 0.7155...: not dyadic
  for (const cd::DropoutInitArgs& init : {fixed_rate(rng(), 0.5), fixed_rate(rng(), 0.9), decayed}) {
    DeviceState state(init);
    const cd::DropoutState s = state.read();
    const double p = static_cast<double>(s.threshold) / 4294967296.0;
    EXPECT_NEAR(p, s.keep_rate, 0x1p-33);
    Options o;
    const auto r = run_forward(x, {n}, state, o);
    ASSERT_EQ(r.status, Status::kSuccess) << culayers::last_error_message();
    std::int64_t kept = 0;
    for (std::uint8_t m : r.mask) {
      kept += m;
    }
    const double mean = static_cast<double>(n) * p;
    const double sigma = std::sqrt(static_cast<double>(n) * p * (1.0 - p));
    EXPECT_LE(std::fabs(static_cast<double>(kept) - mean), 5.0 * sigma)
        << "keep rate " << s.keep_rate << ": kept " << kept << " of " << n << ", expected " << mean << " +- "
        << sigma << "; " << seed_trace();
    const std::vector<std::uint8_t> want = ref::mask(current_params(s), {n}, {});
    EXPECT_TRUE(mask_mismatch(r.mask, want).empty()) << mask_mismatch(r.mask, want) << "; " << seed_trace();
  }
}

// keep = 1: T = 2^32, scale 1: every element kept and copied bit for bit, NaN payloads included.
template <class T>
void keep_one_is_copy() {
  auto rng = rng_for_test();
  DeviceState state(fixed_rate(rng(), 1.0));
  const std::vector<T> x = random_bits<T>(rng, 4097);
  for (int width : {0, 1}) {
    Options o;
    o.width = width;
    const auto r = run_forward(x, {4097}, state, o);
    ASSERT_EQ(r.status, Status::kSuccess) << culayers::last_error_message();
    EXPECT_TRUE(compare_bits(r.y, x, x.size()).empty()) << compare_bits(r.y, x, x.size());
    for (std::uint8_t m : r.mask) {
      ASSERT_EQ(m, 1);
    }
  }
}

TEST(DropoutForward, KeepOneIsBitExactCopyFloat) {
  keep_one_is_copy<float>();
}
TEST(DropoutForward, KeepOneIsBitExactCopyHalf) {
  keep_one_is_copy<__half>();
}
TEST(DropoutForward, KeepOneIsBitExactCopyBFloat16) {
  keep_one_is_copy<__nv_bfloat16>();
}

// T = 0 (a keep rate below 2^-33, or a decay rate clamped to 0): every output is +0.0, never NaN,
// whatever the input (NaN and Inf included), and the mask is all zeros.
template <class T>
void threshold_zero() {
  auto rng = rng_for_test();
  cd::DropoutInitArgs decayed_to_zero = fixed_rate(rng(), 0.5);
  decayed_to_zero.decay_rate = -3.0; // clamped to 0: keep = 0.5 * 0^(1/interval) = 0
  for (const cd::DropoutInitArgs& init : {fixed_rate(rng(), 1e-12), decayed_to_zero}) {
    DeviceState state(init);
    ASSERT_EQ(state.read().threshold, 0u);
    std::vector<T> x = random_bits<T>(rng, 1029);
    const float specials[] = {NAN, INFINITY, -INFINITY, -0.0f, 65504.0f};
    for (std::size_t i = 0; i < 5; ++i) {
      x[i] = culayers::kernels::from_float<T>(specials[i]);
    }
    Options o;
    const auto r = run_forward(x, {1029}, state, o);
    ASSERT_EQ(r.status, Status::kSuccess) << culayers::last_error_message();
    for (std::size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(culayers::test::dropout::bits_of(r.y[i]), 0u) << i;
      ASSERT_EQ(r.mask[i], 0) << i;
    }
  }
}

TEST(DropoutForward, ThresholdZeroGivesPositiveZerosFloat) {
  threshold_zero<float>();
}
TEST(DropoutForward, ThresholdZeroGivesPositiveZerosBFloat16) {
  threshold_zero<__nv_bfloat16>();
}

// Broadcast noise shapes on every path, against the explicitly broadcast reference mask:
// row (innermost drawn dim F % 4 == 0), run (innermost dim broadcast) and generic (F % 4 != 0).
struct BroadcastCase {
  std::vector<std::int64_t> dims;
  std::vector<std::int64_t> noise;
  int widest = 0; ///< the widest forced vector width the case accepts (capped at the dtype's); 0: not checked
};

template <class T>
void broadcast_shapes() {
  auto rng = rng_for_test();
  DeviceState state(fixed_rate(rng(), 0.6, 5));
  const BroadcastCase cases[] = {
      {{4, 9, 16}, {4, 1, 16}, 8},           // (B, 1, F) over (B, T, F): row, F % 8 == 0
      {{3, 5, 12}, {3, 1, 12}, 4},           // row, F % 8 == 4
      {{2, 3, 7, 7}, {2, 3, 1, 1}, 8},       // (N, C, 1, 1) over (N, C, H, W): run, E = 49
      {{2, 5, 3, 3}, {2, 5, 1, 1}, 8},       // run, E = 9 (chunks cross runs)
      {{3, 4, 2}, {3, 4, 1}, 2},             // run, E = 2 (V capped at 2)
      {{4, 5, 6}, {4, 1, 6}, 1},             // generic: F = 6
      {{2, 5, 3, 7}, {2, 1, 3, 1}, 4},       // generic mix: middle and trailing broadcast
      {{3, 4, 5}, {1, 1, 1}, 8},             // one draw for everything: run with no outer dims
      {{5, 8, 4}, {1, 8, 4}, 8},             // leading broadcast: row with F = 32
      {{1, 6, 1, 8}, {1, 6, 1, 1}, 8},       // extent-1 dims of x dropped: run, E = 8
      {{2, 1, 3, 8}, {1, 1, 3, 8}, 8},       // row after dropping the extent-1 dim
      {{2, 3, 5, 4}, {2, 1, 5, 1}, 4},       // alternating, innermost broadcast: run, E = 4, three outer dims
      {{3, 2, 4, 2, 8}, {3, 1, 4, 1, 8}, 8}, // two broadcast dims between drawn ones: row
  };
  for (const BroadcastCase& c : cases) {
    const std::vector<T> x = random_input<T>(rng, static_cast<std::size_t>(ref::numel(c.dims)));
    int widest = 0; // the widest forced width can_implement accepted (a planner that refused the vector
                    // widths of the row and run paths would otherwise only skip them)
    for (int width : {0, 1, 2, 4, 8}) {
      if (width > DTypeOf<T>::kMaxWidth) {
        continue;
      }
      for (int blocks : {0, 2}) {
        Options o;
        o.noise = c.noise;
        o.width = width;
        o.max_blocks = blocks;
        o.offset = 8;
        // A forced width may exceed what the noise shape allows on the vector paths: skip those.
        cd::DropoutForwardArgs probe;
        probe.dtype = DTypeOf<T>::kValue;
        probe.shape = shape_of(c.dims);
        probe.noise_shape = shape_of(c.noise);
        probe.state = state.get();
        DeviceBuffer<T> tmp(x.size());
        probe.x = tmp.get();
        probe.y = tmp.get();
        probe.force_vector_width = width;
        if (cd::can_implement(probe) != Status::kSuccess) {
          EXPECT_NE(width, 0) << culayers::last_error_message();
          continue;
        }
        widest = std::max(widest, width);
        std::string what = "dims [";
        for (auto d : c.dims) {
          what += std::to_string(d) + " ";
        }
        what += "] noise [";
        for (auto d : c.noise) {
          what += std::to_string(d) + " ";
        }
        what += "] width " + std::to_string(width) + " blocks " + std::to_string(blocks);
        check_forward(x, c.dims, state, o, what);
      }
    }
    EXPECT_EQ(widest, std::min(c.widest, DTypeOf<T>::kMaxWidth)) << "case " << (&c - cases);
  }
}

TEST(DropoutForward, BroadcastNoiseShapesFloat) {
  broadcast_shapes<float>();
}
TEST(DropoutForward, BroadcastNoiseShapesBFloat16) {
  broadcast_shapes<__nv_bfloat16>();
}

// The benchmark's broadcast shapes, scaled down so the emulator runs them quickly.
TEST(DropoutForward, BroadcastBenchmarkShapesScaledDown) {
  auto rng = rng_for_test();
  DeviceState state(fixed_rate(rng(), 0.9));
  const BroadcastCase cases[] = {{{4, 64, 128}, {4, 1, 128}}, {{4, 16, 14, 14}, {4, 16, 1, 1}}};
  for (const BroadcastCase& c : cases) {
    const std::vector<__nv_bfloat16> x = random_input<__nv_bfloat16>(rng, ref::numel(c.dims));
    Options o;
    o.noise = c.noise;
    check_forward(x, c.dims, state, o, "benchmark shape");
  }
}

// The vector paths walk tiles of 4 x 256 chunks, one per block with the automatic grid; a grid of
// max_blocks smaller than the tile count makes each block stride over several tiles, and the last
// chunks % 1024 chunks and n % C elements take the remainder loops. Shapes with 1 to 7 whole tiles plus a
// partial one on the plain, row and run paths (the run one with chunks straddling runs of E = 517). The
// row path reuses a thread's previous keep bits when its next chunk has the same draws: the first row
// shape has tiles whose chunks share noise rows and tiles that cross into the next one, the second none
// that share.
template <class T>
void strided_tiles() {
  auto rng = rng_for_test();
  DeviceState state(fixed_rate(rng(), 0.8731, 77));
  const BroadcastCase cases[] = {
      {{3 * 8192 + 8 * 300 + 5}, {}}, // plain: 3 full V = 8 tiles, 300 chunks, 5 tail elements
      {{3, 40, 256}, {3, 1, 256}},    // row, F = 256: a thread's chunks share a noise row (memo hits)
      {{6, 10, 256}, {1, 10, 256}},   // row, leading broadcast: a thread's chunks never share one
      {{5, 12, 517}, {5, 12, 1}},     // run, E = 517
  };
  for (const BroadcastCase& c : cases) {
    const std::vector<T> x = random_input<T>(rng, static_cast<std::size_t>(ref::numel(c.dims)));
    for (int width : {0, 4}) {
      for (int blocks : {0, 1, 2, 5}) {
        Options o;
        o.noise = c.noise;
        o.width = width;
        o.max_blocks = blocks;
        o.offset = 4;
        check_forward(x, c.dims, state, o,
                      "dims[0] " + std::to_string(c.dims[0]) + " width " + std::to_string(width) +
                          " blocks " + std::to_string(blocks));
      }
    }
  }
}

TEST(DropoutForward, TilesStridedOverSmallGridsFloat) {
  strided_tiles<float>();
}
TEST(DropoutForward, TilesStridedOverSmallGridsBFloat16) {
  strided_tiles<__nv_bfloat16>();
}

// Two tensors served by one (seed, stream): the second starts at offset round_up(n, 4) and gets the
// draws that follow the first's.
TEST(DropoutForward, OffsetContinuesTheDrawSequence) {
  auto rng = rng_for_test();
  DeviceState state(fixed_rate(rng(), 0.5));
  const std::vector<float> x = random_input<float>(rng, 64);
  Options whole;
  const auto all = run_forward(x, {64}, state, whole);
  std::vector<float> second(x.begin() + 20, x.end());
  Options tail;
  tail.offset = 20;
  const auto part = run_forward(second, {44}, state, tail);
  ASSERT_EQ(part.status, Status::kSuccess);
  for (std::size_t i = 0; i < 44; ++i) {
    EXPECT_EQ(part.mask[i], all.mask[i + 20]) << i;
  }
}

std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) {
    h = (h ^ p[i]) * 0x100000001b3ull;
  }
  return h;
}

// Base offsets whose draws straddle Philox counter group 2^32 (q >> 2 crosses into the counter's high word)
// and wrap past 2^64, through every path's kernel (plain with a scalar tail and each forced width, row, run,
// generic, a strided small grid): a truncation of the offset, the group index or a tile base to 32 bits
// shows up here and nowhere else (every other kernel test draws below 2^5).
template <class T>
void high_offsets() {
  auto rng = rng_for_test();
  const BroadcastCase cases[] = {
      {{4099}, {}}, {{3, 9, 16}, {3, 1, 16}}, {{2, 3, 7, 7}, {2, 3, 1, 1}}, {{4, 5, 6}, {4, 1, 6}}};
  for (const std::uint64_t base : {(std::uint64_t{1} << 34) - 8, ~std::uint64_t{0} - 15}) {
    cd::DropoutInitArgs init = fixed_rate(rng(), 0.6, 3);
    init.offset = base;
    DeviceState state(init);
    ASSERT_EQ(state.init_status(), Status::kSuccess) << culayers::last_error_message();
    for (const BroadcastCase& c : cases) {
      const std::vector<T> x = random_input<T>(rng, static_cast<std::size_t>(ref::numel(c.dims)));
      for (int width : {0, 1}) {
        for (int blocks : {0, 1}) {
          Options o;
          o.noise = c.noise;
          o.width = width;
          o.max_blocks = blocks;
          o.offset = 4;
          check_forward(x, c.dims, state, o,
                        "base offset " + std::to_string(base) + " dims[0] " + std::to_string(c.dims[0]) +
                            " width " + std::to_string(width) + " blocks " + std::to_string(blocks));
        }
      }
    }
  }
}

TEST(DropoutForward, OffsetsInTheHighCounterWordFloat) {
  high_offsets<float>();
}
TEST(DropoutForward, OffsetsInTheHighCounterWordHalf) {
  high_offsets<__half>();
}

// Pinned bits: a fixed seed, stream and input give these exact mask and output hashes on every backend
// (the values were produced by this implementation and are checked against the CPU reference above; a
// change here means masks changed between builds, backends or versions).
TEST(DropoutForward, GoldenHashesAreIdenticalOnEveryBackend) {
  cd::DropoutInitArgs init = fixed_rate(0x0123456789abcdefull, 0.8731, 5);
  init.offset = 16;
  DeviceState state(init);
  const std::int64_t n = 4099;
  std::vector<float> x(n);
  for (std::int64_t i = 0; i < n; ++i) {
    x[static_cast<std::size_t>(i)] = static_cast<float>(i % 97 - 48) * 0.03125f;
  }
  Options o;
  o.offset = 8;
  check_forward(x, {n}, state, o, "golden case against the reference");
  const auto r = run_forward(x, {n}, state, o);
  ASSERT_EQ(r.status, Status::kSuccess);
  const std::uint64_t mask_hash = fnv1a(r.mask.data(), r.mask.size());
  const std::uint64_t y_hash = fnv1a(r.y.data(), r.y.size() * sizeof(float));
  EXPECT_EQ(mask_hash, 0xbe68a6e942a0d38bull) << std::hex << "mask hash 0x" << mask_hash;
  EXPECT_EQ(y_hash, 0x11dd00852bf1cfc5ull) << std::hex << "y hash 0x" << y_hash;
}

#if CULAYERS_TEST_EMULATED
// Coalescing (the emulator's sector model, culayers::test::expect_coalesced): the plain path's x loads and y
// stores, and the broadcast path's ((B, 1, F) noise over (B, T, F)), use at least 95 % of the 32-byte
// sectors their warp accesses touch (measured 1.0 for x and y; the state's per-thread reads are a
// broadcast, under 5 % of the bytes).
TEST(DropoutForward, CoalescedAccesses) {
  auto rng = rng_for_test();
  DeviceState state(fixed_rate(rng(), 0.5));
  const std::int64_t n = 1 << 14;
  DeviceBuffer<__nv_bfloat16> x(random_input<__nv_bfloat16>(rng, n));
  DeviceBuffer<__nv_bfloat16> y(n);
  DeviceBuffer<std::uint8_t> mask(n);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  for (const bool broadcast : {false, true}) {
    cd::DropoutForwardArgs a;
    a.x = x.get();
    a.y = y.get();
    a.mask = mask.get();
    a.dtype = culayers::DType::kBFloat16;
    a.shape = broadcast ? shape_of({4, 16, 256}) : shape_of({n});
    if (broadcast) {
      a.noise_shape = shape_of({4, 1, 256});
    }
    a.state = state.get();
    const culayers::test::Coalescing co = culayers::test::measure_coalescing(
        [&] { ASSERT_EQ(cd::run(a, nullptr, 0, nullptr), Status::kSuccess); });
    culayers::test::expect_coalesced(co, 0.95, 0.95, broadcast ? "broadcast" : "plain");
  }
}

// Byte model (emulated build): the forward reads x once and writes y once; besides, each thread reads
// the call's 36 bytes of state, thread 0 reads 16 more and records 36 bytes of last_*.
TEST(DropoutForward, ByteModel) {
  auto rng = rng_for_test();
  DeviceState state(fixed_rate(rng(), 0.5));
  const std::int64_t n = 1 << 14;
  DeviceBuffer<__nv_bfloat16> x(random_input<__nv_bfloat16>(rng, n));
  DeviceBuffer<__nv_bfloat16> y(n);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  cd::DropoutForwardArgs a;
  a.x = x.get();
  a.y = y.get();
  a.dtype = culayers::DType::kBFloat16;
  a.shape = shape_of({n});
  a.state = state.get();
  a.max_blocks = 2;
  culayers_emu::reset_byte_counters();
  ASSERT_EQ(cd::run(a, nullptr, 0, nullptr), Status::kSuccess);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const culayers_emu::ByteCounters b = culayers_emu::byte_counters();
  const std::uint64_t threads = 2 * 256;
  EXPECT_EQ(b.read, static_cast<std::uint64_t>(n) * 2 + threads * 36 + 16);
  EXPECT_EQ(b.written, static_cast<std::uint64_t>(n) * 2 + 36);
}
#endif

} // namespace
