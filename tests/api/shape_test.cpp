#include <cstdint>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "culayers/types.hpp"

namespace {

using culayers::kMaxRank;
using culayers::Shape;
using culayers::Status;

constexpr std::int64_t kInt64Max = INT64_MAX;

std::string to_string(const Shape& shape) {
  std::ostringstream os;
  os << shape;
  return os.str();
}

TEST(ApiShape, DefaultIsScalar) {
  constexpr Shape s;
  static_assert(s.rank() == 0 && s.numel() == 1 && s.is_valid());
  EXPECT_EQ(s.rank(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.dim(0), -1);
  EXPECT_EQ(s.dim(-1), -1);
  EXPECT_EQ(to_string(s), "[]");
}

TEST(ApiShape, DimsAndNegativeAxes) {
  constexpr Shape s{2, 3, 4};
  static_assert(s.numel() == 24 && s.dim(-1) == 4);
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.dims()[0], 2);
  EXPECT_EQ(s.dims()[1], 3);
  EXPECT_EQ(s.dims()[2], 4);
  EXPECT_EQ(s.dim(0), 2);
  EXPECT_EQ(s.dim(2), 4);
  EXPECT_EQ(s.dim(-1), 4);
  EXPECT_EQ(s.dim(-2), 3);
  EXPECT_EQ(s.dim(-3), 2);
  EXPECT_EQ(s.dim(3), -1);
  EXPECT_EQ(s.dim(-4), -1);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(to_string(s), "[2, 3, 4]");
}

TEST(ApiShape, MixedIntegerTypesConvert) {
  const std::size_t n = 5;
  const unsigned char c = 7;
  const Shape s{n, c, std::int64_t{1} << 40};
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.dim(0), 5);
  EXPECT_EQ(s.dim(1), 7);
  EXPECT_EQ(s.dim(2), std::int64_t{1} << 40);
  EXPECT_EQ(s.numel(), 35 * (std::int64_t{1} << 40));
}

TEST(ApiShape, ProductAroundAnAxis) {
  constexpr Shape s{2, 3, 5, 7};
  // [outer, R, inner] around axis 2.
  EXPECT_EQ(s.product(0, 2), 6);
  EXPECT_EQ(s.product(2, 3), 5);
  EXPECT_EQ(s.product(3, 4), 7);
  EXPECT_EQ(s.product(4, 4), 1);
  EXPECT_EQ(s.product(0, 0), 1);
  EXPECT_EQ(s.product(0, 4), 210);
  EXPECT_EQ(s.product(3, 2), -1);
  EXPECT_EQ(s.product(-1, 2), -1);
  EXPECT_EQ(s.product(0, 5), -1);
}

TEST(ApiShape, ZeroExtents) {
  const Shape s{4, 0, 3};
  EXPECT_EQ(s.numel(), 0);
  EXPECT_TRUE(s.is_valid());
  EXPECT_EQ(s.product(0, 1), 4);
  EXPECT_EQ(s.product(1, 3), 0);
  // Zero elements, but the other extents still fit: valid.
  EXPECT_EQ((Shape{0, kInt64Max}).numel(), 0);
  EXPECT_TRUE((Shape{0, kInt64Max}).is_valid());
}

TEST(ApiShape, NumelOverflowIsDetected) {
  EXPECT_EQ((Shape{kInt64Max}).numel(), kInt64Max);
  EXPECT_EQ((Shape{std::int64_t{1} << 31, std::int64_t{1} << 31}).numel(), std::int64_t{1} << 62);
  EXPECT_EQ((Shape{std::int64_t{1} << 32, std::int64_t{1} << 31}).numel(), -1); // exactly 2^63
  EXPECT_EQ((Shape{kInt64Max, 2}).numel(), -1);
  EXPECT_EQ((Shape{3, kInt64Max / 3 + 1}).numel(), -1);
  EXPECT_EQ((Shape{3, kInt64Max / 3}).numel(), kInt64Max / 3 * 3);
  // A zero extent does not excuse an overflow among the others (their strides would overflow).
  EXPECT_EQ((Shape{0, kInt64Max, 2}).numel(), -1);
  EXPECT_FALSE((Shape{0, kInt64Max, 2}).is_valid());

  const Shape big{kInt64Max, 2};
  EXPECT_FALSE(big.is_valid());
  EXPECT_EQ(big.validate("masked_sum", "x"), Status::kErrorSizeLimit);
  EXPECT_STREQ(culayers::last_error_message(),
               "masked_sum: x: element count of shape [9223372036854775807, 2] overflows int64");
}

TEST(ApiShape, NegativeDimensionIsInvalid) {
  const Shape s{2, -1, 3};
  EXPECT_EQ(s.numel(), -1);
  EXPECT_FALSE(s.is_valid());
  EXPECT_EQ(s.validate("group_norm", "x"), Status::kErrorInvalidShape);
  EXPECT_STREQ(culayers::last_error_message(), "group_norm: x: dimension 1 is negative in shape [2, -1, 3]");
  EXPECT_EQ((Shape{2, 3}).validate("op", "x"), Status::kSuccess);
}

TEST(ApiShape, MakeChecksRank) {
  const std::int64_t dims[kMaxRank + 1] = {1, 2, 1, 2, 1, 2, 1, 2, 1};
  Shape out{5};

  EXPECT_EQ(Shape::make(dims, kMaxRank + 1, &out), Status::kErrorSizeLimit);
  EXPECT_STREQ(culayers::last_error_message(), "Shape::make: rank: 9 exceeds kMaxRank (8)");
  EXPECT_EQ(out, (Shape{5})); // untouched on failure

  EXPECT_EQ(Shape::make(dims, -1, &out), Status::kErrorInvalidShape);
  EXPECT_EQ(out, (Shape{5}));

  ASSERT_EQ(Shape::make(dims, kMaxRank, &out), Status::kSuccess);
  EXPECT_EQ(out.rank(), kMaxRank);
  EXPECT_EQ(out.numel(), 16);
  EXPECT_EQ(out, (Shape{1, 2, 1, 2, 1, 2, 1, 2}));

  ASSERT_EQ(Shape::make(nullptr, 0, &out), Status::kSuccess);
  EXPECT_EQ(out, Shape{});

  EXPECT_EQ(Shape::make({1, 2, 3, 4, 5, 6, 7, 8, 9}, &out), Status::kErrorSizeLimit);
  EXPECT_EQ(out, Shape{});
}

TEST(ApiShape, MakeChecksPointersAndDims) {
  Shape out{1};
  const std::int64_t dims[2] = {2, 3};
  EXPECT_EQ(Shape::make(dims, 2, nullptr), Status::kErrorNullPointer);
  EXPECT_STREQ(culayers::last_error_message(), "Shape::make: out: is null");
  EXPECT_EQ(Shape::make(nullptr, 2, &out), Status::kErrorNullPointer);
  EXPECT_STREQ(culayers::last_error_message(), "Shape::make: dims: is null for rank 2");

  EXPECT_EQ(Shape::make({4, -2}, &out), Status::kErrorInvalidShape);
  EXPECT_STREQ(culayers::last_error_message(), "Shape::make: dims: dimension 1 is negative in shape [4, -2]");
  EXPECT_EQ(Shape::make({kInt64Max, kInt64Max}, &out), Status::kErrorSizeLimit);
  EXPECT_EQ(out, (Shape{1}));

  ASSERT_EQ(Shape::make({6, 0, 2}, &out), Status::kSuccess);
  EXPECT_EQ(out, (Shape{6, 0, 2}));
}

TEST(ApiShape, Equality) {
  EXPECT_EQ((Shape{2, 3}), (Shape{2, 3}));
  EXPECT_NE((Shape{2, 3}), (Shape{3, 2}));
  EXPECT_NE((Shape{2, 3}), (Shape{2, 3, 1}));
  EXPECT_NE(Shape{}, (Shape{1}));
  static_assert(Shape{4, 5} == Shape{4, 5});
}

} // namespace
