// Element types, layouts, shapes and non-owning tensor views shared by every culayers op.
//
// Host-only and CUDA-free on purpose: engines include this to describe their buffers without
// pulling in cuda_runtime.h, and .cu sources include it to receive those descriptions.
#ifndef CULAYERS_TYPES_HPP_
#define CULAYERS_TYPES_HPP_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <type_traits>

#include "culayers/status.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN

/// Element type of a tensor. Numbers are part of the ABI (culayersDType_t mirrors them) and are
/// never renumbered.
enum class DType : int {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
  kInt32 = 3,
  kUInt8 = 4,
  kInt64 = 5,
};

/// True for the enumerators of DType; false for any other value cast to DType.
constexpr bool is_valid(DType dtype) noexcept {
  return static_cast<int>(dtype) >= static_cast<int>(DType::kFloat32) &&
         static_cast<int>(dtype) <= static_cast<int>(DType::kInt64);
}

/// Size of one element in bytes; 0 for a value that is not a DType enumerator.
constexpr std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
  case DType::kFloat32:
    return 4;
  case DType::kFloat16:
    return 2;
  case DType::kBFloat16:
    return 2;
  case DType::kInt32:
    return 4;
  case DType::kUInt8:
    return 1;
  case DType::kInt64:
    return 8;
  }
  return 0;
}

/// True for the activation types (float32, float16, bfloat16).
constexpr bool is_floating_point(DType dtype) noexcept {
  return dtype == DType::kFloat32 || dtype == DType::kFloat16 || dtype == DType::kBFloat16;
}

/// Lower-case name as used by NumPy/Keras ("float32", "bfloat16", "uint8", ...): a static string,
/// never null; "unknown dtype" for a value that is not an enumerator.
const char* dtype_name(DType dtype) noexcept;

/// Streams dtype_name(dtype).
std::ostream& operator<<(std::ostream& os, DType dtype);

/// Position of the channel axis. Numbers are part of the ABI (culayersLayout_t mirrors them).
enum class Layout : int {
  kChannelsFirst = 0, ///< [N, C, *spatial]
  kChannelsLast = 1,  ///< [N, *spatial, C]
};

/// True for the enumerators of Layout.
constexpr bool is_valid(Layout layout) noexcept {
  return layout == Layout::kChannelsFirst || layout == Layout::kChannelsLast;
}

/// Keras data_format spelling ("channels_first" / "channels_last"): a static string, never null;
/// "unknown layout" for a value that is not an enumerator.
const char* layout_name(Layout layout) noexcept;

/// Streams layout_name(layout).
std::ostream& operator<<(std::ostream& os, Layout layout);

/// Largest rank a Shape or tensor view can hold. Fixed so views are trivially copyable values that
/// can be passed to kernels by value without allocation.
inline constexpr int kMaxRank = 8;

/// True if `axis` names a dimension of a rank-`rank` tensor, counting from the end when negative
/// (-1 is the last axis).
constexpr bool is_valid_axis(int axis, int rank) noexcept {
  return axis >= -rank && axis < rank;
}

/// Maps `axis` in [-rank, rank) to [0, rank) and stores it in *out. Returns kErrorInvalidValue
/// (message names `op`) if `axis` is out of range, kErrorNullPointer if `out` is null; *out is left
/// unchanged on failure.
[[nodiscard]] Status normalize_axis(int axis, int rank, int* out, const char* op) noexcept;

namespace detail {

/// a * b for a, b >= 0; false instead of signed overflow.
constexpr bool checked_mul(std::int64_t a, std::int64_t b, std::int64_t* out) noexcept {
  if (a != 0 && b > INT64_MAX / a) {
    return false;
  }
  *out = a * b;
  return true;
}

/// a + b for a, b >= 0; false instead of signed overflow.
constexpr bool checked_add(std::int64_t a, std::int64_t b, std::int64_t* out) noexcept {
  if (b > INT64_MAX - a) {
    return false;
  }
  *out = a + b;
  return true;
}

} // namespace detail

/// Dimensions of a tensor, outermost first; rank 0 is a scalar (numel 1).
///
/// The rank is always in [0, kMaxRank]: the variadic constructor checks it at compile time and
/// make() at run time. Dimensions are not checked on construction (values often come straight from
/// an engine); a Shape is *valid* when every dimension is >= 0 and the product of the non-zero
/// dimensions fits in int64 (so contiguous strides never overflow). Ops reject invalid shapes via
/// validate() before touching memory.
class Shape {
 public:
  /// Rank-0 shape (a scalar).
  constexpr Shape() noexcept = default;

  /// Shape{n, c, h, w}: compile-time-checked rank; each value is converted to int64. Implicit so a
  /// braced list converts where a Shape is expected: contiguous(ptr, dtype, {n, c}).
  template <class... Ints,
            std::enable_if_t<(sizeof...(Ints) >= 1) && (std::is_integral_v<Ints> && ...), int> = 0>
  constexpr Shape(Ints... dims) noexcept
      : rank_(static_cast<int>(sizeof...(Ints))), dims_{static_cast<std::int64_t>(dims)...} {
    static_assert(sizeof...(Ints) <= kMaxRank, "culayers::Shape: rank exceeds kMaxRank");
  }

  /// Checked factory for run-time ranks. Fails with kErrorNullPointer (null `out`, or null `dims`
  /// with rank > 0), kErrorInvalidShape (rank < 0 or a negative dimension) or kErrorSizeLimit
  /// (rank > kMaxRank, or the element count overflows int64). *out is unchanged on failure.
  [[nodiscard]] static Status make(const std::int64_t* dims, int rank, Shape* out) noexcept;
  [[nodiscard]] static Status make(std::initializer_list<std::int64_t> dims, Shape* out) noexcept;

  constexpr int rank() const noexcept { return rank_; }

  /// The rank() dimensions, outermost first.
  constexpr const std::int64_t* dims() const noexcept { return dims_; }

  /// Extent of `axis`, counting from the end when negative (-1 is the innermost). Returns -1 (never
  /// a valid extent) when !is_valid_axis(axis, rank()), so an unchecked axis fails validation
  /// instead of reading out of bounds.
  constexpr std::int64_t dim(int axis) const noexcept {
    const int a = axis < 0 ? axis + rank_ : axis;
    return (a >= 0 && a < rank_) ? dims_[a] : -1;
  }

  /// Product of the dimensions in [begin, end) (1 when empty): with x viewed as [outer, R, inner]
  /// around `axis`, outer = product(0, axis) and inner = product(axis + 1, rank()). Returns -1 if
  /// the range is not within [0, rank()], a dimension in it is negative, or the product of its
  /// non-zero dimensions overflows int64.
  constexpr std::int64_t product(int begin, int end) const noexcept {
    if (begin < 0 || end > rank_ || begin > end) {
      return -1;
    }
    std::int64_t nonzero = 1;
    bool has_zero = false;
    for (int i = begin; i < end; ++i) {
      if (dims_[i] < 0) {
        return -1;
      }
      if (dims_[i] == 0) {
        has_zero = true;
      } else if (!detail::checked_mul(nonzero, dims_[i], &nonzero)) {
        return -1;
      }
    }
    return has_zero ? 0 : nonzero;
  }

  /// Number of elements; -1 if the shape is invalid (negative dimension or int64 overflow).
  constexpr std::int64_t numel() const noexcept { return product(0, rank_); }

  /// See the class comment.
  constexpr bool is_valid() const noexcept { return numel() >= 0; }

  /// Status::kSuccess if is_valid(); otherwise kErrorInvalidShape (negative dimension) or
  /// kErrorSizeLimit (overflow) with a last_error_message() of the form "op: name: reason".
  [[nodiscard]] Status validate(const char* op, const char* name) const noexcept;

  /// Same rank and same dimensions.
  friend constexpr bool operator==(const Shape& a, const Shape& b) noexcept {
    if (a.rank_ != b.rank_) {
      return false;
    }
    for (int i = 0; i < a.rank_; ++i) {
      if (a.dims_[i] != b.dims_[i]) {
        return false;
      }
    }
    return true;
  }
  friend constexpr bool operator!=(const Shape& a, const Shape& b) noexcept { return !(a == b); }

 private:
  int rank_ = 0;
  std::int64_t dims_[kMaxRank] = {};
};

/// Streams "[d0, d1, ...]" ("[]" for a scalar).
std::ostream& operator<<(std::ostream& os, const Shape& shape);

namespace detail {

/// Shared check behind TensorView::validate() and ConstTensorView::validate().
[[nodiscard]] Status validate_view(const void* data, DType dtype, const Shape& shape,
                                   const std::int64_t* strides, const char* op, const char* name) noexcept;

/// Non-owning description of a strided tensor in device (or emulated device) memory: data pointer,
/// dtype, shape and per-axis strides counted in elements (not bytes), all 64-bit so tensors beyond
/// 2^31 elements index correctly. Use the aliases TensorView (writable) and ConstTensorView
/// (read-only); a TensorView converts implicitly to a ConstTensorView.
///
/// A view is *valid* when its dtype is an enumerator, its shape is valid, every stride is >= 0
/// (zero strides broadcast; negative strides are not supported), the memory it spans fits in int64
/// bytes, and data is non-null unless numel() == 0. contiguous() and the accessors do not check;
/// make() and validate() do, and every op validates its views before launching.
template <class VoidPtr>
class BasicTensorView {
  static_assert(std::is_same_v<VoidPtr, void*> || std::is_same_v<VoidPtr, const void*>,
                "BasicTensorView is instantiated only as TensorView and ConstTensorView");

 public:
  /// Null data, float32, rank 0: invalid until assigned (validate() reports the null pointer).
  constexpr BasicTensorView() noexcept = default;

  /// TensorView -> ConstTensorView. The reverse is not provided: it would drop const.
  template <
      class OtherPtr,
      std::enable_if_t<std::is_same_v<VoidPtr, const void*> && std::is_same_v<OtherPtr, void*>, int> = 0>
  constexpr BasicTensorView(const BasicTensorView<OtherPtr>& other) noexcept
      : data_(other.data_), dtype_(other.dtype_), shape_(other.shape_) {
    for (int i = 0; i < kMaxRank; ++i) {
      strides_[i] = other.strides_[i];
    }
  }

  /// Row-major (C order) view: the innermost axis has stride 1, and each outer stride is the product
  /// of the inner extents, with zero extents counted as 1 so strides stay meaningful for empty
  /// tensors. Unchecked; for an invalid shape the result fails validate().
  static constexpr BasicTensorView contiguous(VoidPtr data, DType dtype, const Shape& shape) noexcept {
    BasicTensorView view;
    view.data_ = data;
    view.dtype_ = dtype;
    view.shape_ = shape;
    std::int64_t stride = 1;
    for (int i = shape.rank() - 1; i >= 0; --i) {
      view.strides_[i] = stride;
      const std::int64_t extent = shape.dims()[i] > 1 ? shape.dims()[i] : 1;
      if (stride >= 0 && !checked_mul(stride, extent, &stride)) {
        stride = -1; // poison: validate() rejects negative strides
      }
    }
    return view;
  }

  /// Checked factory for strided views: `strides` holds shape.rank() values in elements. Fails with
  /// kErrorNullPointer (null `out`, null `strides` with rank > 0), kErrorInconsistentArguments (the
  /// list length differs from the rank) or any error of validate(). *out is unchanged on failure.
  [[nodiscard]] static Status make(VoidPtr data, DType dtype, const Shape& shape, const std::int64_t* strides,
                                   BasicTensorView* out) noexcept {
    const char* op = kMakeName;
    if (out == nullptr) {
      return set_error(Status::kErrorNullPointer, "%s: out: is null", op);
    }
    if (strides == nullptr && shape.rank() > 0) {
      return set_error(Status::kErrorNullPointer, "%s: strides: is null for rank %d", op, shape.rank());
    }
    const Status status = validate_view(data, dtype, shape, strides, op, "view");
    if (!ok(status)) {
      return status;
    }
    BasicTensorView view;
    view.data_ = data;
    view.dtype_ = dtype;
    view.shape_ = shape;
    for (int i = 0; i < shape.rank(); ++i) {
      view.strides_[i] = strides[i];
    }
    *out = view;
    return Status::kSuccess;
  }

  [[nodiscard]] static Status make(VoidPtr data, DType dtype, const Shape& shape,
                                   std::initializer_list<std::int64_t> strides,
                                   BasicTensorView* out) noexcept {
    if (static_cast<std::size_t>(shape.rank()) != strides.size()) {
      return set_error(Status::kErrorInconsistentArguments, "%s: strides: %zu values given for rank %d",
                       kMakeName, strides.size(), shape.rank());
    }
    return make(data, dtype, shape, strides.begin(), out);
  }

  constexpr VoidPtr data() const noexcept { return data_; }

  /// data() as T* (const T* for a ConstTensorView). Precondition: T matches dtype().
  template <class T>
  auto data_as() const noexcept {
    using Ptr = std::conditional_t<std::is_same_v<VoidPtr, const void*>, const T*, T*>;
    return static_cast<Ptr>(data_);
  }

  constexpr DType dtype() const noexcept { return dtype_; }
  constexpr const Shape& shape() const noexcept { return shape_; }
  constexpr int rank() const noexcept { return shape_.rank(); }

  /// shape().dim(axis): negative axes count from the end; -1 for an out-of-range axis.
  constexpr std::int64_t dim(int axis) const noexcept { return shape_.dim(axis); }

  /// Stride of `axis` in elements; negative axes count from the end; -1 for an out-of-range axis.
  constexpr std::int64_t stride(int axis) const noexcept {
    const int a = axis < 0 ? axis + rank() : axis;
    return (a >= 0 && a < rank()) ? strides_[a] : -1;
  }

  /// The rank() strides in elements, outermost first.
  constexpr const std::int64_t* strides() const noexcept { return strides_; }

  /// shape().numel(): -1 for an invalid shape.
  constexpr std::int64_t numel() const noexcept { return shape_.numel(); }

  /// numel() * dtype_size(dtype()): the bytes of the elements themselves (not of the strided span);
  /// -1 if the shape or dtype is invalid or the product overflows int64.
  constexpr std::int64_t byte_size() const noexcept {
    const std::int64_t n = numel();
    std::int64_t bytes = 0;
    if (n < 0 || !is_valid(dtype_) ||
        !checked_mul(n, static_cast<std::int64_t>(dtype_size(dtype_)), &bytes)) {
      return -1;
    }
    return bytes;
  }

  /// Bytes from data() to one past the last addressed element (what must be allocated behind
  /// data()); 0 when numel() == 0; -1 if the shape or dtype is invalid, a stride of a non-empty
  /// axis is negative, or the span overflows int64.
  constexpr std::int64_t storage_bytes() const noexcept {
    const std::int64_t n = numel();
    if (n < 0 || !is_valid(dtype_)) {
      return -1;
    }
    if (n == 0) {
      return 0;
    }
    std::int64_t last = 0; // offset of the last addressed element
    for (int i = 0; i < rank(); ++i) {
      std::int64_t term = 0;
      if (strides_[i] < 0 || !checked_mul(shape_.dims()[i] - 1, strides_[i], &term) ||
          !checked_add(last, term, &last)) {
        return -1;
      }
    }
    std::int64_t bytes = 0;
    if (!checked_add(last, 1, &last) ||
        !checked_mul(last, static_cast<std::int64_t>(dtype_size(dtype_)), &bytes)) {
      return -1;
    }
    return bytes;
  }

  /// Row-major dense: axes of extent 1 may have any stride (they are never stepped over) and empty
  /// views are contiguous, matching PyTorch. False for an invalid shape.
  constexpr bool is_contiguous() const noexcept {
    const std::int64_t n = numel();
    if (n <= 0) {
      return n == 0;
    }
    std::int64_t expected = 1; // cannot overflow: the product of all extents fits (n > 0)
    for (int i = rank() - 1; i >= 0; --i) {
      const std::int64_t extent = shape_.dims()[i];
      if (extent != 1 && strides_[i] != expected) {
        return false;
      }
      expected *= extent;
    }
    return true;
  }

  /// Status::kSuccess if the view is valid (see the class comment); otherwise kErrorInvalidDType,
  /// kErrorInvalidShape, kErrorSizeLimit, kErrorNotSupported (negative stride) or kErrorNullPointer,
  /// with a last_error_message() of the form "op: name: reason".
  [[nodiscard]] Status validate(const char* op, const char* name) const noexcept {
    return validate_view(data_, dtype_, shape_, strides_, op, name);
  }

 private:
  template <class>
  friend class BasicTensorView;

  static constexpr const char* kMakeName =
      std::is_same_v<VoidPtr, void*> ? "TensorView::make" : "ConstTensorView::make";

  VoidPtr data_ = nullptr;
  DType dtype_ = DType::kFloat32;
  Shape shape_;
  std::int64_t strides_[kMaxRank] = {};
};

} // namespace detail

/// Writable view of device memory (see detail::BasicTensorView).
using TensorView = detail::BasicTensorView<void*>;

/// Read-only view of device memory; every TensorView converts to one.
using ConstTensorView = detail::BasicTensorView<const void*>;

static_assert(std::is_trivially_copyable_v<Shape> && std::is_trivially_copyable_v<TensorView> &&
                  std::is_trivially_copyable_v<ConstTensorView>,
              "views are passed by value, including to kernels");

CULAYERS_NAMESPACE_END

#endif // CULAYERS_TYPES_HPP_
