#include <cstdint>
#include <type_traits>

#include <gtest/gtest.h>

#include "culayers/types.hpp"

namespace {

using culayers::ConstTensorView;
using culayers::DType;
using culayers::Shape;
using culayers::Status;
using culayers::TensorView;

constexpr std::int64_t kInt64Max = INT64_MAX;

// Views never dereference their pointer on the host; a local buffer stands in for device memory.
float g_buffer[64];

TEST(ApiTensorView, ContiguousStrides) {
  const TensorView v = TensorView::contiguous(g_buffer, DType::kFloat32, {2, 3, 4});
  EXPECT_EQ(v.data(), static_cast<void*>(g_buffer));
  EXPECT_EQ(v.dtype(), DType::kFloat32);
  EXPECT_EQ(v.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(v.rank(), 3);
  EXPECT_EQ(v.stride(0), 12);
  EXPECT_EQ(v.stride(1), 4);
  EXPECT_EQ(v.stride(2), 1);
  EXPECT_EQ(v.stride(-1), 1);
  EXPECT_EQ(v.stride(-3), 12);
  EXPECT_EQ(v.stride(3), -1);
  EXPECT_EQ(v.stride(-4), -1);
  EXPECT_EQ(v.dim(-1), 4);
  EXPECT_EQ(v.numel(), 24);
  EXPECT_EQ(v.byte_size(), 96);
  EXPECT_EQ(v.storage_bytes(), 96);
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_EQ(v.validate("op", "x"), Status::kSuccess);

  constexpr ConstTensorView c = ConstTensorView::contiguous(nullptr, DType::kFloat16, {5, 7});
  static_assert(c.strides()[0] == 7 && c.strides()[1] == 1 && c.byte_size() == 70 && c.is_contiguous());
}

TEST(ApiTensorView, ContiguousWithZeroExtentKeepsMeaningfulStrides) {
  const TensorView v = TensorView::contiguous(nullptr, DType::kBFloat16, {2, 0, 3});
  EXPECT_EQ(v.stride(0), 3);
  EXPECT_EQ(v.stride(1), 3);
  EXPECT_EQ(v.stride(2), 1);
  EXPECT_EQ(v.numel(), 0);
  EXPECT_EQ(v.byte_size(), 0);
  EXPECT_EQ(v.storage_bytes(), 0);
  EXPECT_TRUE(v.is_contiguous());
  // Nothing is addressed, so a null pointer is acceptable.
  EXPECT_EQ(v.validate("op", "x"), Status::kSuccess);
}

TEST(ApiTensorView, ScalarView) {
  const TensorView v = TensorView::contiguous(g_buffer, DType::kInt64, Shape{});
  EXPECT_EQ(v.rank(), 0);
  EXPECT_EQ(v.numel(), 1);
  EXPECT_EQ(v.byte_size(), 8);
  EXPECT_EQ(v.storage_bytes(), 8);
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_EQ(v.validate("op", "x"), Status::kSuccess);
}

TEST(ApiTensorView, DefaultViewIsRejected) {
  const ConstTensorView v;
  EXPECT_EQ(v.data(), nullptr);
  EXPECT_EQ(v.numel(), 1);
  EXPECT_EQ(v.validate("masked_max", "mask"), Status::kErrorNullPointer);
  EXPECT_STREQ(culayers::last_error_message(), "masked_max: mask: data is null for 1 elements");
}

TEST(ApiTensorView, StridedMakeAndContiguity) {
  TensorView t;
  // A transpose of a row-major [3, 2] buffer.
  ASSERT_EQ(TensorView::make(g_buffer, DType::kFloat32, {2, 3}, {1, 2}, &t), Status::kSuccess);
  EXPECT_EQ(t.stride(0), 1);
  EXPECT_EQ(t.stride(1), 2);
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.byte_size(), 24);
  EXPECT_EQ(t.storage_bytes(), 24); // last element at offset 1*1 + 2*2 = 5

  // Row-padded: 3 used of 5 per row.
  ASSERT_EQ(TensorView::make(g_buffer, DType::kFloat32, {4, 3}, {5, 1}, &t), Status::kSuccess);
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.byte_size(), 48);
  EXPECT_EQ(t.storage_bytes(), (3 * 5 + 2 + 1) * 4);

  // Broadcast along the outer axis.
  ASSERT_EQ(TensorView::make(g_buffer, DType::kUInt8, {4, 3}, {0, 1}, &t), Status::kSuccess);
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.byte_size(), 12);
  EXPECT_EQ(t.storage_bytes(), 3);

  // Extent-1 axes are never stepped over, so their stride does not matter.
  ASSERT_EQ(TensorView::make(g_buffer, DType::kFloat32, {1, 3, 1}, {999, 1, 77}, &t), Status::kSuccess);
  EXPECT_TRUE(t.is_contiguous());

  const std::int64_t strides[3] = {12, 4, 1};
  ASSERT_EQ(TensorView::make(g_buffer, DType::kFloat32, {2, 3, 4}, strides, &t), Status::kSuccess);
  EXPECT_TRUE(t.is_contiguous());
}

TEST(ApiTensorView, MakeRejectsBadInput) {
  TensorView t = TensorView::contiguous(g_buffer, DType::kInt32, {7});
  const TensorView before = t;
  auto unchanged = [&] {
    EXPECT_EQ(t.shape(), before.shape());
    EXPECT_EQ(t.dtype(), before.dtype());
    EXPECT_EQ(t.stride(0), before.stride(0));
  };

  EXPECT_EQ(TensorView::make(g_buffer, DType::kFloat32, {2, 3}, {3, 1}, nullptr), Status::kErrorNullPointer);
  EXPECT_STREQ(culayers::last_error_message(), "TensorView::make: out: is null");

  EXPECT_EQ(TensorView::make(g_buffer, DType::kFloat32, {2, 3}, {3}, &t),
            Status::kErrorInconsistentArguments);
  EXPECT_STREQ(culayers::last_error_message(), "TensorView::make: strides: 1 values given for rank 2");
  unchanged();

  const std::int64_t* no_strides = nullptr;
  EXPECT_EQ(TensorView::make(g_buffer, DType::kFloat32, {2, 3}, no_strides, &t), Status::kErrorNullPointer);
  unchanged();

  EXPECT_EQ(TensorView::make(g_buffer, DType::kFloat32, {2, 3}, {-3, 1}, &t), Status::kErrorNotSupported);
  EXPECT_STREQ(culayers::last_error_message(),
               "TensorView::make: view: stride 0 is negative (-3); negative strides are not supported");
  unchanged();

  EXPECT_EQ(TensorView::make(g_buffer, static_cast<DType>(9), {2, 3}, {3, 1}, &t),
            Status::kErrorInvalidDType);
  EXPECT_STREQ(culayers::last_error_message(), "TensorView::make: view: invalid dtype value 9");
  unchanged();

  EXPECT_EQ(TensorView::make(g_buffer, DType::kFloat32, {2, -3}, {3, 1}, &t), Status::kErrorInvalidShape);
  unchanged();

  EXPECT_EQ(TensorView::make(nullptr, DType::kFloat32, {2, 3}, {3, 1}, &t), Status::kErrorNullPointer);
  EXPECT_STREQ(culayers::last_error_message(), "TensorView::make: view: data is null for 6 elements");
  unchanged();

  ConstTensorView c;
  EXPECT_EQ(ConstTensorView::make(nullptr, DType::kFloat32, {2}, {1}, &c), Status::kErrorNullPointer);
  EXPECT_STREQ(culayers::last_error_message(), "ConstTensorView::make: view: data is null for 2 elements");
}

TEST(ApiTensorView, SpanOverflowIsDetected) {
  TensorView t;
  // The element count fits, but the strided span does not.
  EXPECT_EQ(TensorView::make(g_buffer, DType::kUInt8, {3, 2}, {kInt64Max / 2 + 1, 1}, &t),
            Status::kErrorSizeLimit);
  EXPECT_STREQ(culayers::last_error_message(),
               "TensorView::make: view: memory spanned by shape [3, 2] with strides [4611686018427387904, 1] "
               "overflows int64");

  // The element count fits in int64, its size in bytes does not.
  const TensorView big = TensorView::contiguous(g_buffer, DType::kFloat32, {kInt64Max / 4 + 1});
  EXPECT_EQ(big.numel(), kInt64Max / 4 + 1);
  EXPECT_EQ(big.byte_size(), -1);
  EXPECT_EQ(big.storage_bytes(), -1);
  EXPECT_EQ(big.validate("dropout", "x"), Status::kErrorSizeLimit);

  // Largest float32 view whose bytes still fit.
  const TensorView edge = TensorView::contiguous(g_buffer, DType::kFloat32, {kInt64Max / 4});
  EXPECT_EQ(edge.byte_size(), kInt64Max / 4 * 4);
  EXPECT_EQ(edge.validate("dropout", "x"), Status::kSuccess);

  // Contiguous strides of an overflowing shape are poisoned, not wrapped.
  const TensorView bad = TensorView::contiguous(g_buffer, DType::kFloat32, {2, 4, kInt64Max / 2});
  EXPECT_EQ(bad.numel(), -1);
  EXPECT_EQ(bad.stride(1), kInt64Max / 2);
  EXPECT_EQ(bad.stride(0), -1);
  EXPECT_FALSE(bad.is_contiguous());
  EXPECT_EQ(bad.validate("op", "x"), Status::kErrorSizeLimit);
}

TEST(ApiTensorView, ConvertsToConstOnly) {
  static_assert(std::is_convertible_v<TensorView, ConstTensorView>);
  static_assert(!std::is_convertible_v<ConstTensorView, TensorView>);
  static_assert(std::is_same_v<decltype(std::declval<TensorView>().data_as<float>()), float*>);
  static_assert(std::is_same_v<decltype(std::declval<ConstTensorView>().data_as<float>()), const float*>);
  static_assert(std::is_same_v<decltype(std::declval<ConstTensorView>().data()), const void*>);

  TensorView t;
  ASSERT_EQ(TensorView::make(g_buffer + 1, DType::kFloat16, {4, 3}, {5, 1}, &t), Status::kSuccess);
  const ConstTensorView c = t;
  EXPECT_EQ(c.data(), static_cast<const void*>(g_buffer + 1));
  EXPECT_EQ(c.data_as<float>(), g_buffer + 1);
  EXPECT_EQ(c.dtype(), DType::kFloat16);
  EXPECT_EQ(c.shape(), (Shape{4, 3}));
  EXPECT_EQ(c.stride(0), 5);
  EXPECT_EQ(c.stride(1), 1);
  EXPECT_EQ(c.storage_bytes(), t.storage_bytes());
  EXPECT_FALSE(c.is_contiguous());
}

TEST(ApiTensorView, ValidateNamesOpAndArgument) {
  const TensorView v = TensorView::contiguous(g_buffer, DType::kFloat32, {3, -1});
  EXPECT_EQ(v.validate("group_norm_forward", "gamma"), Status::kErrorInvalidShape);
  EXPECT_STREQ(culayers::last_error_message(),
               "group_norm_forward: gamma: dimension 1 is negative in shape [3, -1]");
}

} // namespace
