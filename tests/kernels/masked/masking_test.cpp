// Keras Masking (mask creation, masked steps zeroed) and mask expansion on both backends, against the CPU
// reference, bit for bit: NaN rows are valid, -0.0 equals a 0 mask value (and is written back as +0 in
// a masked step), in-place and misaligned views, argument errors, and (emulated) the byte model.
#include "culayers/masked_reduce.hpp"

#include "tests/reference/masked_reduce_reference.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
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
using tm::Dtype;

enum class YMode { kNone, kSeparate, kInPlace };

/// Rows of x [rows, inner]: random valid rows, rows entirely equal to the mask value (masked), masked rows
/// of -0.0 when the mask value is 0, rows with a NaN, rows differing from the mask value in one element.
template <class T>
std::vector<T> masking_input(std::mt19937_64& rng, std::int64_t rows, std::int64_t inner, float mask_value) {
  std::vector<T> x = tm::exact_values<T>(rng, static_cast<std::size_t>(rows * inner));
  std::uniform_int_distribution<std::int64_t> col(0, std::max<std::int64_t>(inner - 1, 0));
  for (std::int64_t row = 0; row < rows; ++row) {
    T* p = x.data() + row * inner;
    switch (row % 5) {
    case 1: // masked
      std::fill(p, p + inner, Dtype<T>::from_double(mask_value));
      break;
    case 2: // masked: -0.0 == 0 (compared by value), or the mask value again
      std::fill(p, p + inner, Dtype<T>::from_double(mask_value == 0.0f ? -0.0 : mask_value));
      break;
    case 3: // one element differs: valid
      std::fill(p, p + inner, Dtype<T>::from_double(mask_value));
      p[col(rng)] = Dtype<T>::from_double(std::numeric_limits<double>::quiet_NaN());
      break;
    case 4: // one element differs by a value: valid
      std::fill(p, p + inner, Dtype<T>::from_double(mask_value));
      p[col(rng)] = Dtype<T>::from_double(mask_value + 0.5);
      break;
    default:
      break;
    }
  }
  return x;
}

template <class T>
void run_masking_case(std::mt19937_64& rng, std::int64_t outer, std::int64_t reduce, std::int64_t inner,
                      float mask_value, YMode ymode, int offset) {
  const std::string what = std::string(Dtype<T>::kName) + " [" + std::to_string(outer) + ", " +
                           std::to_string(reduce) + ", " + std::to_string(inner) + "] mask_value " +
                           std::to_string(mask_value) + " y " + std::to_string(static_cast<int>(ymode)) +
                           " offset " + std::to_string(offset);
  SCOPED_TRACE(what);
  const std::int64_t rows = outer * reduce;
  const std::vector<T> x = masking_input<T>(rng, rows, inner, mask_value);
  std::vector<T> x_host(x.size() + static_cast<std::size_t>(offset) + 1);
  std::copy(x.begin(), x.end(), x_host.begin() + offset);
  DeviceBuffer<T> d_x(x_host);
  DeviceBuffer<T> d_y(x.size() + static_cast<std::size_t>(offset) + 1);
  DeviceBuffer<std::uint8_t> d_mask(static_cast<std::size_t>(rows));
  d_y.fill_bytes(0xff);
  d_mask.fill_bytes(0xcc);
  mr::MaskingArgs a;
  a.dtype = Dtype<T>::kDType;
  a.x = d_x.get() + offset;
  a.outer = outer;
  a.reduce = reduce;
  a.inner = inner;
  a.mask_value = mask_value;
  a.mask = d_mask.get();
  a.y =
      ymode == YMode::kNone ? nullptr : (ymode == YMode::kInPlace ? d_x.get() + offset : d_y.get() + offset);
  ASSERT_EQ(mr::workspace_size(a), 0u);
  ASSERT_EQ(mr::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  std::vector<std::uint8_t> want_mask;
  std::vector<T> want_y;
  tm::masking_reference(x, rows, inner, mask_value, &want_mask, &want_y);
  EXPECT_EQ(d_mask.download(), want_mask);
  if (ymode != YMode::kNone) {
    const std::vector<T> all = (ymode == YMode::kInPlace ? d_x : d_y).download();
    int bad = 0;
    for (std::size_t i = 0; i < want_y.size() && bad < 5; ++i) {
      if (tm::bits(all[i + static_cast<std::size_t>(offset)]) != tm::bits(want_y[i])) {
        ++bad;
        ADD_FAILURE() << "y[" << i << "] bits 0x" << std::hex
                      << tm::bits(all[i + static_cast<std::size_t>(offset)]) << ", want 0x"
                      << tm::bits(want_y[i]) << std::dec;
      }
    }
  }
}

template <class T>
class MaskedReduceMaskingTyped : public ::testing::Test {};
using DTypes = ::testing::Types<float, __half, __nv_bfloat16>;
TYPED_TEST_SUITE(MaskedReduceMaskingTyped, DTypes);

// Teams of 1 to 32 lanes per row (inner 1, 3, 64, 768, 1033), vector widths from alignment, both mask
// values, y absent / separate / in place, misaligned views.
TYPED_TEST(MaskedReduceMaskingTyped, AgainstReference) {
  using T = TypeParam;
  auto rng = rng_for_test();
  struct Shape {
    std::int64_t outer, reduce, inner;
  };
  const Shape shapes[] = {{3, 7, 1}, {2, 5, 3}, {2, 11, 64}, {1, 6, 1033}, {2, 5, 768}};
  for (const Shape& s : shapes) {
    for (float mv : {0.0f, 1.5f}) {
      for (YMode y : {YMode::kNone, YMode::kSeparate, YMode::kInPlace}) {
        run_masking_case<T>(rng, s.outer, s.reduce, s.inner, mv, y, 0);
      }
    }
    run_masking_case<T>(rng, s.outer, s.reduce, s.inner, 0.0f, YMode::kSeparate, 1);
  }
}

// The mask value is compared in x's dtype: 0.1 rounds to the dtype first, so an x holding that rounded
// value is masked.
TEST(MaskedReduceMasking, MaskValueComparedInDtype) {
  auto rng = rng_for_test();
  run_masking_case<__half>(rng, 2, 5, 8, 0.1f, YMode::kSeparate, 0);
  run_masking_case<__nv_bfloat16>(rng, 2, 5, 8, 0.1f, YMode::kSeparate, 0);
}

TEST(MaskedReduceMasking, ArgumentErrors) {
  DeviceBuffer<float> x(128); // x is the first 64 floats; the rest hosts views next to it
  DeviceBuffer<std::uint8_t> mask(16);
  mask.fill_bytes(0xa5);
  mr::MaskingArgs a;
  a.x = x.get();
  a.outer = 2;
  a.reduce = 8;
  a.inner = 4;
  a.mask = mask.get();
  ASSERT_EQ(mr::can_implement(a), Status::kSuccess);
  mr::MaskingArgs b = a;
  b.mask = nullptr;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorNullPointer);
  b = a;
  b.x = nullptr;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorNullPointer);
  b = a;
  b.dtype = culayers::DType::kInt64;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorInvalidDType);
  b = a;
  b.inner = -1;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorInvalidShape);
  b = a;
  b.y = reinterpret_cast<char*>(x.get()) + 2;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorMisaligned);
  EXPECT_EQ(std::string(culayers::last_error_message()).rfind("masking: ", 0), 0u);
  // y == x is the in-place form; y partly over x, or the mask over x or y, is rejected.
  b = a;
  b.y = x.get();
  EXPECT_EQ(mr::can_implement(b), Status::kSuccess) << culayers::last_error_message();
  b.y = x.get() + 4;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorInconsistentArguments);
  EXPECT_NE(std::string(culayers::last_error_message()).find("y: overlaps x"), std::string::npos)
      << culayers::last_error_message();
  b = a;
  b.y = x.get() + 64; // x is 2 x 8 x 4 = 64 floats: y just after it
  EXPECT_EQ(mr::can_implement(b), Status::kSuccess) << culayers::last_error_message();
  b.mask = reinterpret_cast<std::uint8_t*>(x.get() + 100);
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorInconsistentArguments);
  EXPECT_NE(std::string(culayers::last_error_message()).find("mask: overlaps y"), std::string::npos)
      << culayers::last_error_message();
  b.y = nullptr;
  b.mask = reinterpret_cast<std::uint8_t*>(x.get() + 63);
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorInconsistentArguments);
  EXPECT_NE(std::string(culayers::last_error_message()).find("mask: overlaps x"), std::string::npos)
      << culayers::last_error_message();
  b = a;
  b.reduce = 0; // x, y and the mask empty: no tensor to overflow, whatever outer x inner is
  b.outer = std::int64_t{1} << 40;
  b.inner = std::int64_t{1} << 40;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
  b = a;
  b.inner = 0; // x and y empty, but the mask [outer, R] overflows
  b.outer = std::int64_t{1} << 40;
  b.reduce = std::int64_t{1} << 30;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorSizeLimit);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (std::uint8_t m : mask.download()) {
    ASSERT_EQ(m, 0xa5);
  }
  b = a;
  b.outer = 0; // nothing to do
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kSuccess);
}

#if CULAYERS_TEST_EMULATED
// x read once; mask and y written once when masked steps already hold +0 (mask value 0); with another
// mask value the masked steps are rewritten with zeros (the only extra bytes).
TEST(MaskedReduceMasking, ByteModel) {
  auto rng = rng_for_test();
  const std::int64_t rows = 40;
  const std::int64_t inner = 64;
  for (float mv : {0.0f, 2.0f}) {
    std::vector<float> x = tm::exact_values<float>(rng, static_cast<std::size_t>(rows * inner));
    for (std::int64_t row = 0; row < rows; row += 3) {
      std::fill(x.begin() + row * inner, x.begin() + (row + 1) * inner, mv);
    }
    DeviceBuffer<float> d_x(x);
    DeviceBuffer<float> d_y(x.size());
    DeviceBuffer<std::uint8_t> d_mask(static_cast<std::size_t>(rows));
    mr::MaskingArgs a;
    a.x = d_x.get();
    a.outer = 4;
    a.reduce = 10;
    a.inner = inner;
    a.mask_value = mv;
    a.mask = d_mask.get();
    a.y = d_y.get();
    culayers_emu::reset_byte_counters();
    ASSERT_EQ(mr::run(a, nullptr, 0, nullptr), Status::kSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const culayers_emu::ByteCounters b = culayers_emu::byte_counters();
    const std::uint64_t x_bytes = static_cast<std::uint64_t>(rows * inner) * 4;
    const std::uint64_t masked_rows = (rows + 2) / 3;
    EXPECT_EQ(b.read, x_bytes);
    const std::uint64_t rewrite = mv == 0.0f ? 0 : masked_rows * static_cast<std::uint64_t>(inner) * 4;
    EXPECT_EQ(b.written, x_bytes + static_cast<std::uint64_t>(rows) + rewrite) << "mask value " << mv;
  }
}
#endif

// ---- mask expansion -------------------------------------------------------------------------------------

TEST(MaskedReduceMaskExpand, AgainstReference) {
  auto rng = rng_for_test();
  std::uniform_int_distribution<int> byte(0, 3);
  for (std::int64_t features : {1, 3, 16, 17, 64}) {
    for (const auto& [outer, steps] : {std::pair<std::int64_t, std::int64_t>{2, 3}, {3, 7}}) {
      for (int offset : {0, 1}) {
        std::vector<std::uint8_t> mask(static_cast<std::size_t>(outer * steps));
        for (auto& m : mask) {
          m = static_cast<std::uint8_t>(byte(rng) == 0 ? 0
                                                       : byte(rng) + 1); // nonzero bytes copied as they are
        }
        DeviceBuffer<std::uint8_t> d_mask(mask);
        const std::size_t total = mask.size() * static_cast<std::size_t>(features);
        DeviceBuffer<std::uint8_t> d_out(total + 2);
        d_out.fill_bytes(0xee);
        mr::MaskExpandArgs a;
        a.mask = d_mask.get();
        a.out = d_out.get() + offset;
        a.outer = outer;
        a.steps = steps;
        a.features = features;
        ASSERT_EQ(mr::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        const std::vector<std::uint8_t> got = d_out.download();
        const std::vector<std::uint8_t> want = tm::expand_reference(mask, features);
        EXPECT_EQ(std::vector<std::uint8_t>(got.begin() + offset,
                                            got.begin() + offset + static_cast<std::ptrdiff_t>(total)),
                  want)
            << "features " << features << " offset " << offset;
        EXPECT_EQ(got[static_cast<std::size_t>(offset) + total], 0xee) << "wrote past the end";
        if (offset == 1) {
          EXPECT_EQ(got[0], 0xee) << "wrote before the start";
        }
      }
    }
  }
}

TEST(MaskedReduceMaskExpand, ArgumentErrors) {
  DeviceBuffer<std::uint8_t> buf(256);
  mr::MaskExpandArgs a;
  a.mask = buf.get();
  a.out = buf.get() + 64;
  a.outer = 2;
  a.steps = 4;
  a.features = 8;
  EXPECT_EQ(mr::can_implement(a), Status::kSuccess);
  mr::MaskExpandArgs b = a;
  b.out = buf.get() + 4; // overlaps the mask
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorInconsistentArguments);
  b = a;
  b.mask = nullptr;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorNullPointer);
  b = a;
  b.features = -2;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorInvalidShape);
  b = a;
  b.outer = std::int64_t{1} << 40;
  b.steps = std::int64_t{1} << 30;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorSizeLimit);
  EXPECT_EQ(std::string(culayers::last_error_message()).rfind("mask_expand: ", 0), 0u);
  // An empty output, but the mask [outer, steps] x 16 bytes still overflows (Masking's limits).
  b.features = 0;
  b.outer = std::int64_t{1} << 40;
  b.steps = std::int64_t{1} << 30;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kErrorSizeLimit);
  EXPECT_EQ(mr::check_masking_sizes(b.outer, b.steps, b.features), Status::kErrorSizeLimit);
  b = a;
  b.features = 0;
  EXPECT_EQ(mr::run(b, nullptr, 0, nullptr), Status::kSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

} // namespace
