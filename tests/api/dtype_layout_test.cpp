#include <cstddef>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "culayers/types.hpp"

namespace {

using culayers::DType;
using culayers::Layout;

struct DTypeRow {
  DType dtype;
  int number;
  std::size_t size;
  const char* name;
  bool floating;
};

// Numbers are ABI (mirrored by culayersDType_t); names follow NumPy so configs and logs read alike.
constexpr DTypeRow kDTypes[] = {
    {DType::kFloat32, 0, 4, "float32", true},   {DType::kFloat16, 1, 2, "float16", true},
    {DType::kBFloat16, 2, 2, "bfloat16", true}, {DType::kInt32, 3, 4, "int32", false},
    {DType::kUInt8, 4, 1, "uint8", false},      {DType::kInt64, 5, 8, "int64", false},
};

TEST(ApiDType, NumbersSizesAndNames) {
  for (const DTypeRow& row : kDTypes) {
    EXPECT_EQ(static_cast<int>(row.dtype), row.number) << row.name;
    EXPECT_EQ(culayers::dtype_size(row.dtype), row.size) << row.name;
    EXPECT_STREQ(culayers::dtype_name(row.dtype), row.name);
    EXPECT_EQ(culayers::is_floating_point(row.dtype), row.floating) << row.name;
    EXPECT_TRUE(culayers::is_valid(row.dtype)) << row.name;
    std::ostringstream os;
    os << row.dtype;
    EXPECT_EQ(os.str(), row.name);
  }
  static_assert(culayers::dtype_size(DType::kBFloat16) == 2);
  static_assert(culayers::dtype_size(DType::kInt64) == 8);
}

TEST(ApiDType, InvalidValues) {
  for (int value : {-1, 6, 7, 100}) {
    const auto dtype = static_cast<DType>(value);
    EXPECT_FALSE(culayers::is_valid(dtype)) << value;
    EXPECT_EQ(culayers::dtype_size(dtype), 0u) << value;
    EXPECT_STREQ(culayers::dtype_name(dtype), "unknown dtype") << value;
    EXPECT_FALSE(culayers::is_floating_point(dtype)) << value;
  }
}

TEST(ApiLayout, NumbersAndNames) {
  EXPECT_EQ(static_cast<int>(Layout::kChannelsFirst), 0);
  EXPECT_EQ(static_cast<int>(Layout::kChannelsLast), 1);
  EXPECT_STREQ(culayers::layout_name(Layout::kChannelsFirst), "channels_first");
  EXPECT_STREQ(culayers::layout_name(Layout::kChannelsLast), "channels_last");
  EXPECT_TRUE(culayers::is_valid(Layout::kChannelsFirst));
  EXPECT_TRUE(culayers::is_valid(Layout::kChannelsLast));
  EXPECT_FALSE(culayers::is_valid(static_cast<Layout>(2)));
  EXPECT_FALSE(culayers::is_valid(static_cast<Layout>(-1)));
  EXPECT_STREQ(culayers::layout_name(static_cast<Layout>(2)), "unknown layout");
  std::ostringstream os;
  os << Layout::kChannelsLast;
  EXPECT_EQ(os.str(), "channels_last");
}

TEST(ApiAxis, NormalizeAxis) {
  int axis = -100;
  EXPECT_EQ(culayers::normalize_axis(-1, 3, &axis, "op"), culayers::Status::kSuccess);
  EXPECT_EQ(axis, 2);
  EXPECT_EQ(culayers::normalize_axis(-3, 3, &axis, "op"), culayers::Status::kSuccess);
  EXPECT_EQ(axis, 0);
  EXPECT_EQ(culayers::normalize_axis(2, 3, &axis, "op"), culayers::Status::kSuccess);
  EXPECT_EQ(axis, 2);

  axis = 42;
  EXPECT_EQ(culayers::normalize_axis(3, 3, &axis, "masked_mean"), culayers::Status::kErrorInvalidValue);
  EXPECT_EQ(axis, 42);
  EXPECT_STREQ(culayers::last_error_message(), "masked_mean: axis: 3 is out of range for rank 3");
  EXPECT_EQ(culayers::normalize_axis(-4, 3, &axis, "op"), culayers::Status::kErrorInvalidValue);
  EXPECT_EQ(culayers::normalize_axis(0, 0, &axis, "op"), culayers::Status::kErrorInvalidValue);
  EXPECT_EQ(axis, 42);
  EXPECT_EQ(culayers::normalize_axis(0, 3, nullptr, "op"), culayers::Status::kErrorNullPointer);
  EXPECT_STREQ(culayers::last_error_message(), "op: out: is null");

  static_assert(culayers::is_valid_axis(-2, 2) && !culayers::is_valid_axis(-3, 2) &&
                !culayers::is_valid_axis(2, 2) && !culayers::is_valid_axis(0, 0));
}

} // namespace
