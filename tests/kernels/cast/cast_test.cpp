// The cast op (culayers/cast.hpp) and its C API on both backends: every pair of float32, float16 and
// bfloat16 against a rounding reference written here from the formats' definitions (round to nearest even,
// overflow to Inf, gradual underflow, NaN stays NaN), on random bit patterns of the source (every class of
// value: NaN, Inf, subnormals, zeros) and on exact ties; misaligned views (every vector width), tails, a
// capped grid (the grid-stride loop), in place; bad arguments with nothing written.
#include "culayers/c/cast.h"

#include "culayers/cast.hpp"

#include "tests/support/capi_support.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

namespace cc = culayers::cast;
using culayers::DType;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::seed_note;

constexpr DType kDTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

std::size_t size_of(DType d) {
  return d == DType::kFloat32 ? 4 : 2;
}

// ---- the formats ------------------------------------------------------------------------------------------

struct Format {
  int mant; // explicit mantissa bits
  int bias;
};
Format format_of(DType d) {
  switch (d) {
  case DType::kFloat16:
    return {10, 15};
  case DType::kBFloat16:
    return {7, 127};
  default:
    return {23, 127};
  }
}
int exp_bits(DType d) {
  return d == DType::kFloat16 ? 5 : 8;
}

/// Element i of a raw buffer as its bit pattern.
std::uint32_t bits_at(const std::vector<unsigned char>& raw, DType d, std::size_t i) {
  if (size_of(d) == 4) {
    std::uint32_t b = 0;
    std::memcpy(&b, raw.data() + 4 * i, 4);
    return b;
  }
  std::uint16_t b = 0;
  std::memcpy(&b, raw.data() + 2 * i, 2);
  return b;
}

void put_bits(std::vector<unsigned char>* raw, DType d, std::size_t i, std::uint32_t b) {
  if (size_of(d) == 4) {
    std::memcpy(raw->data() + 4 * i, &b, 4);
  } else {
    const auto h = static_cast<std::uint16_t>(b);
    std::memcpy(raw->data() + 2 * i, &h, 2);
  }
}

bool is_nan_bits(std::uint32_t b, DType d) {
  const Format f = format_of(d);
  const std::uint32_t exp_all = (1u << exp_bits(d)) - 1;
  return ((b >> f.mant) & exp_all) == exp_all && (b & ((1u << f.mant) - 1)) != 0;
}

/// The NaN every conversion to d writes (culayers/cast.hpp).
std::uint32_t canonical_nan_bits(DType d) {
  return d == DType::kFloat32 ? 0x7fffffffu : 0x7fffu;
}

/// The exact value of a bit pattern (NaN for NaN patterns).
double value_of(std::uint32_t b, DType d) {
  const Format f = format_of(d);
  const int eb = exp_bits(d);
  const bool neg = ((b >> (f.mant + eb)) & 1u) != 0;
  const std::uint32_t e = (b >> f.mant) & ((1u << eb) - 1);
  const std::uint32_t m = b & ((1u << f.mant) - 1);
  double v = 0.0;
  if (e == (1u << eb) - 1) {
    v = m != 0 ? std::nan("") : HUGE_VAL;
  } else if (e == 0) {
    v = std::ldexp(static_cast<double>(m), 1 - f.bias - f.mant);
  } else {
    v = std::ldexp(static_cast<double>(m + (1u << f.mant)), static_cast<int>(e) - f.bias - f.mant);
  }
  return neg ? -v : v;
}

/// The bit pattern of `v` (exact in double) rounded to nearest even in d: overflow to Inf, gradual
/// underflow, signed zeros. NaN: the canonical quiet NaN (the caller accepts any NaN).
std::uint32_t round_to(double v, DType d) {
  const Format f = format_of(d);
  const int eb = exp_bits(d);
  const std::uint32_t sign = std::signbit(v) ? 1u << (f.mant + eb) : 0u;
  const std::uint32_t inf = ((1u << eb) - 1) << f.mant;
  if (std::isnan(v)) {
    return inf | (1u << (f.mant - 1));
  }
  const double a = std::fabs(v);
  if (std::isinf(a)) {
    return sign | inf;
  }
  const int emin = 1 - f.bias;
  const int emax = f.bias;
  int e2 = 0;
  (void)std::frexp(a, &e2); // a = m * 2^e2, m in [0.5, 1)
  int exponent = std::max(e2 - 1, emin);
  // Multiples of the quantum 2^(exponent - mant): exact in double, ties to even by nearbyint.
  double k = std::nearbyint(std::ldexp(a, f.mant - exponent));
  if (k >= std::ldexp(1.0, f.mant + 1)) {
    k /= 2; // rounded up into the next binade (k is even there)
    ++exponent;
  }
  if (exponent > emax) {
    return sign | inf;
  }
  const auto kk = static_cast<std::uint32_t>(k);
  if (kk < (1u << f.mant)) {
    return sign | kk; // subnormal (or zero)
  }
  return sign | (static_cast<std::uint32_t>(exponent + f.bias) << f.mant) | (kk - (1u << f.mant));
}

// The reference itself, on values whose roundings are known.
TEST(CastReference, KnownRoundings) {
  EXPECT_EQ(round_to(1.0, DType::kFloat16), 0x3c00u);
  EXPECT_EQ(round_to(65504.0, DType::kFloat16), 0x7bffu);
  EXPECT_EQ(round_to(65519.99, DType::kFloat16), 0x7bffu);
  EXPECT_EQ(round_to(65520.0, DType::kFloat16), 0x7c00u); // the tie above the largest rounds to Inf
  EXPECT_EQ(round_to(std::ldexp(1.0, -24), DType::kFloat16), 0x0001u);
  EXPECT_EQ(round_to(std::ldexp(1.0, -25), DType::kFloat16), 0x0000u); // tie to even: zero
  EXPECT_EQ(round_to(std::ldexp(3.0, -25), DType::kFloat16), 0x0002u); // tie to even: 2
  EXPECT_EQ(round_to(-0.0, DType::kFloat16), 0x8000u);
  EXPECT_EQ(round_to(1.0 + std::ldexp(1.0, -8), DType::kBFloat16), 0x3f80u); // tie to even: 1
  EXPECT_EQ(round_to(1.0 + std::ldexp(3.0, -8), DType::kBFloat16), 0x3f82u); // tie to even: up
  EXPECT_EQ(round_to(std::ldexp(1.0, -133), DType::kBFloat16), 0x0001u);
  EXPECT_EQ(round_to(3.0e38, DType::kBFloat16), 0x7f62u);
  EXPECT_EQ(round_to(-HUGE_VAL, DType::kBFloat16), 0xff80u);
  EXPECT_EQ(value_of(0x7bffu, DType::kFloat16), 65504.0);
  EXPECT_EQ(value_of(0x0001u, DType::kFloat16), std::ldexp(1.0, -24));
  EXPECT_EQ(value_of(0x3f80u, DType::kBFloat16), 1.0);
}

// ---- inputs -----------------------------------------------------------------------------------------------

/// `count` source elements: the specials first, then random bit patterns (every class of value), values in
/// the target's normal range, and exact ties between two consecutive target values.
std::vector<unsigned char> make_source(std::mt19937_64& rng, DType from, DType to, std::size_t count) {
  std::vector<unsigned char> raw(count * size_of(from));
  const double specials[] = {0.0,    -0.0,     1.0,    -1.0,   HUGE_VAL, -HUGE_VAL, std::nan(""),
                             65504., 65520.,   70000., 1e-7,   -3e-8,    3.0e38,    1.0e-40,
                             0.1,    -2.5e-39, 1e-45,  -65519, 448.25,   1.00390625};
  std::uniform_int_distribution<std::uint32_t> any_bits(0, size_of(from) == 4 ? 0xffffffffu : 0xffffu);
  std::uniform_int_distribution<int> kind(0, 3);
  std::uniform_real_distribution<double> mag(-30.0, 30.0);
  const Format tf = format_of(to);
  for (std::size_t i = 0; i < count; ++i) {
    double v = 0.0;
    bool have_value = true;
    if (i < sizeof(specials) / sizeof(specials[0])) {
      v = specials[i];
    } else {
      switch (kind(rng)) {
      case 0:
        put_bits(&raw, from, i, any_bits(rng));
        have_value = false;
        break;
      case 1:
        v = std::ldexp(1.0, 0) * std::exp2(mag(rng)) * (rng() % 2 ? 1.0 : -1.0);
        break;
      default: {
        // Halfway between two consecutive finite target values (exact in double).
        std::uint32_t t = static_cast<std::uint32_t>(rng()) & ((1u << (tf.mant + exp_bits(to))) - 1);
        if (is_nan_bits(t, to) || std::isinf(value_of(t, to)) || std::isinf(value_of(t + 1, to))) {
          t = 0x0100;
        }
        v = (value_of(t, to) + value_of(t + 1, to)) / 2;
        break;
      }
      }
    }
    if (have_value) {
      // The source's own rounding of v (exact when v is a tie representable in the source).
      put_bits(&raw, from, i, round_to(v, from));
    }
  }
  return raw;
}

// ---- one run ----------------------------------------------------------------------------------------------

struct CastRun {
  DType from = DType::kFloat32;
  DType to = DType::kFloat32;
  std::size_t count = 0;
  std::size_t x_offset = 0; // elements past a 256-byte aligned address
  std::size_t y_offset = 0;
  int max_blocks = 0;
  int vector_width = 0;
};

std::string describe(const CastRun& r) {
  return std::string(culayers::dtype_name(r.from)) + " -> " + culayers::dtype_name(r.to) +
         " count=" + std::to_string(r.count) + " offsets=" + std::to_string(r.x_offset) + "/" +
         std::to_string(r.y_offset) + " max_blocks=" + std::to_string(r.max_blocks) +
         " vw<=" + std::to_string(r.vector_width) + " (" + seed_note() + ")";
}

constexpr std::size_t kGuard = 16; // elements of poison after y

/// Runs the cast and checks every element of y against the reference and the guards around it.
void run_and_check(const CastRun& r, const std::vector<unsigned char>& src) {
  const std::size_t xe = size_of(r.from);
  const std::size_t ye = size_of(r.to);
  DeviceBuffer<unsigned char> x((r.x_offset + r.count) * xe + 1);
  std::vector<unsigned char> xhost(x.size(), 0);
  std::copy(src.begin(), src.begin() + static_cast<std::ptrdiff_t>(r.count * xe),
            xhost.begin() + static_cast<std::ptrdiff_t>(r.x_offset * xe)); // (memcpy: null src when empty)
  x.upload(xhost);
  DeviceBuffer<unsigned char> y((r.y_offset + r.count + kGuard) * ye);
  y.fill_bytes(0xa5);
  cc::CastArgs a;
  a.x_dtype = r.from;
  a.x = x.get() + r.x_offset * xe;
  a.y_dtype = r.to;
  a.y = y.get() + r.y_offset * ye;
  a.count = static_cast<std::int64_t>(r.count);
  a.max_blocks = r.max_blocks;
  a.vector_width = r.vector_width;
  // The width: 16 bytes of the wider dtype, capped, halved until both views are aligned to it (the
  // buffers themselves are 256-byte aligned).
  int want_vec = static_cast<int>(16 / std::max(xe, ye));
  if (r.vector_width > 0) {
    want_vec = std::min(want_vec, r.vector_width);
  }
  while (want_vec > 1 && (r.x_offset % static_cast<std::size_t>(want_vec) != 0 ||
                          r.y_offset % static_cast<std::size_t>(want_vec) != 0)) {
    want_vec /= 2;
  }
  EXPECT_EQ(cc::selected_vector_width(a), want_vec) << describe(r);
  ASSERT_EQ(cc::run(a, nullptr, 0, nullptr), Status::kSuccess)
      << describe(r) << ": " << culayers::last_error_message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<unsigned char> out = y.download();
  for (std::size_t i = 0; i < r.y_offset * ye; ++i) {
    ASSERT_EQ(out[i], 0xa5) << describe(r) << ": wrote before y";
  }
  for (std::size_t i = (r.y_offset + r.count) * ye; i < out.size(); ++i) {
    ASSERT_EQ(out[i], 0xa5) << describe(r) << ": wrote past y";
  }
  std::vector<unsigned char> body(out.begin() + static_cast<std::ptrdiff_t>(r.y_offset * ye),
                                  out.begin() + static_cast<std::ptrdiff_t>((r.y_offset + r.count) * ye));
  int failures = 0;
  for (std::size_t i = 0; i < r.count && failures < 5; ++i) {
    const std::uint32_t in = bits_at(src, r.from, i);
    const std::uint32_t got = bits_at(body, r.to, i);
    bool good = false;
    std::uint32_t want = 0;
    if (r.from == r.to) {
      want = in;
      good = got == in; // a copy: NaN payloads too
    } else if (is_nan_bits(in, r.from)) {
      want = canonical_nan_bits(r.to); // the same bits on every backend
      good = got == want;
    } else {
      want = round_to(value_of(in, r.from), r.to);
      good = got == want;
    }
    if (!good) {
      ++failures;
      ADD_FAILURE() << describe(r) << ": element " << i << " in 0x" << std::hex << in << " got 0x" << got
                    << " want 0x" << want << std::dec << " (" << value_of(in, r.from) << ")";
    }
  }
}

// ---- tests ------------------------------------------------------------------------------------------------

// Every pair of dtypes on 4099 elements (a tail for every vector width) with the widest vectors.
TEST(Cast, EveryPairAgainstTheReference) {
  auto rng = rng_for_test();
  for (DType from : kDTypes) {
    for (DType to : kDTypes) {
      CastRun r;
      r.from = from;
      r.to = to;
      r.count = 4099;
      run_and_check(r, make_source(rng, from, to, r.count));
    }
  }
}

// Views offset by 0, 1, 2 and 4 elements (x and y separately, so the narrower alignment wins) under every
// forced width (1, 2, 4, 8 where 8 fits 16 bytes, and automatic): every vector width of every pair runs,
// and selected_vector_width says which; counts from 0 to past a vector multiple; and a grid of 1 or 3
// blocks striding over 20 000 elements.
TEST(Cast, MisalignedViewsTailsAndAGridStride) {
  auto rng = rng_for_test();
  int k = 0;
  const std::size_t offsets[][2] = {{0, 0}, {1, 1}, {2, 2}, {4, 4}, {0, 2}, {4, 0}, {2, 1}};
  for (DType from : kDTypes) {
    for (DType to : kDTypes) {
      const std::size_t wide = std::max(size_of(from), size_of(to));
      for (std::size_t count : {0u, 3u, 17u, 1000u}) {
        const std::vector<unsigned char> src = make_source(rng, from, to, count);
        for (const auto& o : offsets) {
          for (int vw : {0, 1, 2, 4, 8}) {
            if (static_cast<std::size_t>(vw) * wide > 16) {
              continue;
            }
            CastRun r;
            r.from = from;
            r.to = to;
            r.count = count;
            r.x_offset = o[0];
            r.y_offset = o[1];
            r.vector_width = vw;
            ++k;
            run_and_check(r, src);
          }
        }
      }
      CastRun r;
      r.from = from;
      r.to = to;
      r.count = 20000;
      r.max_blocks = 1 + 2 * (k++ % 2);
      run_and_check(r, make_source(rng, from, to, r.count));
    }
  }
}

// The vector width follows the wider dtype and the alignment of both pointers.
TEST(Cast, SelectedVectorWidth) {
  DeviceBuffer<unsigned char> x(1024);
  DeviceBuffer<unsigned char> y(1024);
  cc::CastArgs a;
  a.count = 100;
  a.x = x.get();
  a.y = y.get();
  a.x_dtype = DType::kFloat32;
  a.y_dtype = DType::kFloat16;
  EXPECT_EQ(cc::selected_vector_width(a), 4);
  a.x_dtype = DType::kBFloat16;
  EXPECT_EQ(cc::selected_vector_width(a), 8);
  a.y = y.get() + 4; // 2 float16 elements past 16-byte alignment
  EXPECT_EQ(cc::selected_vector_width(a), 2);
  a.vector_width = 1;
  EXPECT_EQ(cc::selected_vector_width(a), 1);
  a.vector_width = 0;
  a.x_dtype = DType::kInt32;
  EXPECT_EQ(cc::selected_vector_width(a), 0);
  EXPECT_EQ(cc::workspace_size(a), 0u);
}

// y == x: float16 <-> bfloat16 and a float32 copy in place.
TEST(Cast, InPlaceWhenTheSizesAgree) {
  auto rng = rng_for_test();
  const struct {
    DType from, to;
  } pairs[] = {{DType::kFloat16, DType::kBFloat16},
               {DType::kBFloat16, DType::kFloat16},
               {DType::kFloat32, DType::kFloat32}};
  for (const auto& p : pairs) {
    const std::size_t n = 3001;
    const std::vector<unsigned char> src = make_source(rng, p.from, p.to, n);
    DeviceBuffer<unsigned char> buf(src);
    cc::CastArgs a;
    a.x_dtype = p.from;
    a.y_dtype = p.to;
    a.x = buf.get();
    a.y = buf.get();
    a.count = static_cast<std::int64_t>(n);
    ASSERT_EQ(cc::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
    const std::vector<unsigned char> out = buf.download();
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t in = bits_at(src, p.from, i);
      const std::uint32_t got = bits_at(out, p.to, i);
      if (p.from == p.to) {
        ASSERT_EQ(got, in) << i;
      } else if (is_nan_bits(in, p.from)) {
        ASSERT_EQ(got, canonical_nan_bits(p.to)) << i;
      } else {
        ASSERT_EQ(got, round_to(value_of(in, p.from), p.to))
            << culayers::dtype_name(p.from) << " -> " << culayers::dtype_name(p.to) << " element " << i;
      }
    }
  }
}

// Bad arguments: a status naming the argument, nothing launched or written.
TEST(Cast, BadArgumentsWriteNothing) {
  DeviceBuffer<unsigned char> x(4096);
  DeviceBuffer<unsigned char> y(4096);
  x.fill_bytes(0x11);
  const auto valid = [&] {
    cc::CastArgs a;
    a.x_dtype = DType::kFloat32;
    a.x = x.get();
    a.y_dtype = DType::kBFloat16;
    a.y = y.get();
    a.count = 512;
    return a;
  };
  struct Case {
    const char* what;
    cc::CastArgs args;
    Status want;
    const char* says;
  };
  std::vector<Case> cases;
  cc::CastArgs a = valid();
  a.x_dtype = DType::kInt32;
  cases.push_back({"int32 x", a, Status::kErrorInvalidDType, "cast: x_dtype: int32"});
  a = valid();
  a.y_dtype = DType::kUInt8;
  cases.push_back({"uint8 y", a, Status::kErrorInvalidDType, "cast: y_dtype: uint8"});
  a = valid();
  a.count = -1;
  cases.push_back({"negative count", a, Status::kErrorInvalidShape, "cast: count"});
  a = valid();
  a.count = std::int64_t{1} << 62;
  cases.push_back({"huge count", a, Status::kErrorSizeLimit, "cast: count"});
  a = valid();
  a.x = nullptr;
  cases.push_back({"null x", a, Status::kErrorNullPointer, "cast: x: is null"});
  a = valid();
  a.y = nullptr;
  cases.push_back({"null y", a, Status::kErrorNullPointer, "cast: y: is null"});
  a = valid();
  a.x = x.get() + 2;
  cases.push_back({"misaligned x", a, Status::kErrorMisaligned, "cast: x: not aligned"});
  a = valid();
  a.y = y.get() + 1;
  cases.push_back({"misaligned y", a, Status::kErrorMisaligned, "cast: y: not aligned"});
  a = valid();
  a.y = const_cast<void*>(a.x); // same address, different sizes
  cases.push_back({"y == x, sizes differ", a, Status::kErrorInconsistentArguments, "cast: y: overlaps x"});
  a = valid();
  a.x_dtype = DType::kFloat16;
  a.y_dtype = DType::kFloat16;
  a.x = y.get();
  a.y = y.get() + 2;
  cases.push_back({"partial overlap", a, Status::kErrorInconsistentArguments, "cast: y: overlaps x"});
  a = valid();
  a.vector_width = 8; // 8 floats = 32 bytes
  cases.push_back({"vector width", a, Status::kErrorInvalidValue, "cast: vector_width: 8"});
  a = valid();
  a.vector_width = 3;
  cases.push_back({"vector width 3", a, Status::kErrorInvalidValue, "cast: vector_width: 3"});
  a = valid();
  a.max_blocks = -1;
  cases.push_back({"max_blocks", a, Status::kErrorInvalidValue, "cast: max_blocks"});
  for (const Case& c : cases) {
    y.fill_bytes(0x5a);
    EXPECT_EQ(cc::can_implement(c.args), c.want) << c.what;
    EXPECT_EQ(cc::run(c.args, nullptr, 0, nullptr), c.want) << c.what;
    EXPECT_NE(std::string(culayers::last_error_message()).find(c.says), std::string::npos)
        << c.what << ": " << culayers::last_error_message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    for (unsigned char b : y.download()) {
      ASSERT_EQ(b, 0x5a) << c.what << ": wrote y";
    }
  }
  // count 0: nothing to do, null pointers allowed.
  cc::CastArgs empty;
  EXPECT_EQ(cc::run(empty, nullptr, 0, nullptr), Status::kSuccess);
}

// ---- C API ------------------------------------------------------------------------------------------------

TEST(CastCapi, DefaultsMatchCpp) {
  culayersCastArgs_t c;
  std::memset(&c, 0x5a, sizeof(c));
  culayersCastArgsInit(&c);
  const cc::CastArgs cpp;
  EXPECT_EQ(static_cast<int>(c.x_dtype), static_cast<int>(cpp.x_dtype));
  EXPECT_EQ(static_cast<int>(c.y_dtype), static_cast<int>(cpp.y_dtype));
  EXPECT_EQ(c.x, nullptr);
  EXPECT_EQ(c.y, nullptr);
  EXPECT_EQ(c.count, 0);
  EXPECT_EQ(c.vector_width, 0);
  EXPECT_EQ(c.max_blocks, 0);
  culayersCastArgsInit(nullptr); // does nothing
}

TEST(CastCapi, SameBitsAsCppAndErrors) {
  auto rng = rng_for_test();
  const std::size_t n = 1025;
  const std::vector<unsigned char> src = make_source(rng, DType::kFloat32, DType::kBFloat16, n);
  DeviceBuffer<unsigned char> x(src);
  DeviceBuffer<unsigned char> y_c(n * 2);
  DeviceBuffer<unsigned char> y_cpp(n * 2);
  culayersCastArgs_t c;
  culayersCastArgsInit(&c);
  c.x_dtype = CULAYERS_DTYPE_FLOAT32;
  c.y_dtype = CULAYERS_DTYPE_BFLOAT16;
  c.x = x.get();
  c.y = y_c.get();
  c.count = static_cast<int64_t>(n);
  EXPECT_EQ(culayersCastCanImplement(&c), CULAYERS_STATUS_SUCCESS);
  EXPECT_EQ(culayers::test::c_workspace_bytes(culayersCastWorkspaceSize, &c), 0u);
  culayers::test::expect_workspace_null_checks(culayersCastWorkspaceSize, &c);
  ASSERT_EQ(culayersCast(&c, nullptr, 0, nullptr), CULAYERS_STATUS_SUCCESS) << culayersGetLastErrorMessage();
  cc::CastArgs a;
  a.x_dtype = DType::kFloat32;
  a.y_dtype = DType::kBFloat16;
  a.x = x.get();
  a.y = y_cpp.get();
  a.count = static_cast<std::int64_t>(n);
  ASSERT_EQ(cc::run(a, nullptr, 0, nullptr), Status::kSuccess);
  EXPECT_EQ(y_c.download(), y_cpp.download());

  EXPECT_EQ(culayersCast(nullptr, nullptr, 0, nullptr), CULAYERS_STATUS_NULL_POINTER);
  y_c.fill_bytes(0x5a);
  c.y_dtype = static_cast<culayersDType_t>(CULAYERS_DTYPE_INT32);
  EXPECT_EQ(culayersCast(&c, nullptr, 0, nullptr), CULAYERS_STATUS_INVALID_DTYPE);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("cast: y_dtype"), std::string::npos)
      << culayersGetLastErrorMessage();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (unsigned char b : y_c.download()) {
    ASSERT_EQ(b, 0x5a);
  }
}

#if CULAYERS_TEST_EMULATED
// Coalescing (the emulator's sector model, culayers::test::expect_coalesced): the cast's loads and stores
// use every byte of the 32-byte sectors their warp accesses touch, for each dtype pair at its vector width
// (measured 1.0).
TEST(Cast, CoalescedAccesses) {
  const std::int64_t n = 4096;
  DeviceBuffer<unsigned char> x(static_cast<std::size_t>(n) * 4);
  DeviceBuffer<unsigned char> y(static_cast<std::size_t>(n) * 4);
  x.fill_bytes(0x3c); // finite values in every dtype
  for (const auto& [from, to] :
       {std::pair{DType::kFloat32, DType::kBFloat16}, std::pair{DType::kBFloat16, DType::kFloat32},
        std::pair{DType::kFloat16, DType::kBFloat16}}) {
    cc::CastArgs a;
    a.x_dtype = from;
    a.x = x.get();
    a.y_dtype = to;
    a.y = y.get();
    a.count = n;
    const culayers::test::Coalescing co = culayers::test::measure_coalescing(
        [&] { ASSERT_EQ(cc::run(a, nullptr, 0, nullptr), Status::kSuccess); });
    culayers::test::expect_coalesced(
        co, 0.99, 0.99, std::string(culayers::dtype_name(from)) + " to " + culayers::dtype_name(to));
  }
}
#endif

} // namespace
