#include "culayers/types.hpp"

#include <cinttypes>
#include <cstdio>
#include <ostream>

CULAYERS_NAMESPACE_BEGIN

namespace {

// Large enough for kMaxRank 20-digit dimensions with separators; messages must not allocate.
struct ShapeText {
  char text[kMaxRank * 22 + 4];
};

ShapeText format_dims(const std::int64_t* dims, int rank) {
  ShapeText out{};
  std::size_t used = 0;
  used += static_cast<std::size_t>(std::snprintf(out.text, sizeof(out.text), "["));
  for (int i = 0; i < rank && used < sizeof(out.text); ++i) {
    used += static_cast<std::size_t>(
        std::snprintf(out.text + used, sizeof(out.text) - used, "%s%" PRId64, i == 0 ? "" : ", ", dims[i]));
  }
  if (used < sizeof(out.text)) {
    std::snprintf(out.text + used, sizeof(out.text) - used, "]");
  }
  return out;
}

const char* or_default(const char* s, const char* fallback) {
  return s != nullptr ? s : fallback;
}

// Shared by Shape::make, Shape::validate and views so every op reports shape problems alike.
Status check_dims(const std::int64_t* dims, int rank, const char* op, const char* name) {
  op = or_default(op, "culayers");
  name = or_default(name, "shape");
  for (int i = 0; i < rank; ++i) {
    if (dims[i] < 0) {
      return detail::set_error(Status::kErrorInvalidShape, "%s: %s: dimension %d is negative in shape %s", op,
                               name, i, format_dims(dims, rank).text);
    }
  }
  std::int64_t nonzero = 1;
  for (int i = 0; i < rank; ++i) {
    if (dims[i] != 0 && !detail::checked_mul(nonzero, dims[i], &nonzero)) {
      return detail::set_error(Status::kErrorSizeLimit, "%s: %s: element count of shape %s overflows int64",
                               op, name, format_dims(dims, rank).text);
    }
  }
  return Status::kSuccess;
}

} // namespace

const char* dtype_name(DType dtype) noexcept {
  switch (dtype) {
  case DType::kFloat32:
    return "float32";
  case DType::kFloat16:
    return "float16";
  case DType::kBFloat16:
    return "bfloat16";
  case DType::kInt32:
    return "int32";
  case DType::kUInt8:
    return "uint8";
  case DType::kInt64:
    return "int64";
  }
  return "unknown dtype";
}

std::ostream& operator<<(std::ostream& os, DType dtype) {
  return os << dtype_name(dtype);
}

const char* layout_name(Layout layout) noexcept {
  switch (layout) {
  case Layout::kChannelsFirst:
    return "channels_first";
  case Layout::kChannelsLast:
    return "channels_last";
  }
  return "unknown layout";
}

std::ostream& operator<<(std::ostream& os, Layout layout) {
  return os << layout_name(layout);
}

Status normalize_axis(int axis, int rank, int* out, const char* op) noexcept {
  op = or_default(op, "culayers");
  if (out == nullptr) {
    return detail::set_error(Status::kErrorNullPointer, "%s: out: is null", op);
  }
  if (!is_valid_axis(axis, rank)) {
    return detail::set_error(Status::kErrorInvalidValue, "%s: axis: %d is out of range for rank %d", op, axis,
                             rank);
  }
  *out = axis < 0 ? axis + rank : axis;
  return Status::kSuccess;
}

Status Shape::make(const std::int64_t* dims, int rank, Shape* out) noexcept {
  constexpr const char* kOp = "Shape::make";
  if (out == nullptr) {
    return detail::set_error(Status::kErrorNullPointer, "%s: out: is null", kOp);
  }
  if (rank < 0) {
    return detail::set_error(Status::kErrorInvalidShape, "%s: rank: %d is negative", kOp, rank);
  }
  if (rank > kMaxRank) {
    return detail::set_error(Status::kErrorSizeLimit, "%s: rank: %d exceeds kMaxRank (%d)", kOp, rank,
                             kMaxRank);
  }
  if (dims == nullptr && rank > 0) {
    return detail::set_error(Status::kErrorNullPointer, "%s: dims: is null for rank %d", kOp, rank);
  }
  const Status status = check_dims(dims, rank, kOp, "dims");
  if (!ok(status)) {
    return status;
  }
  Shape shape;
  shape.rank_ = rank;
  for (int i = 0; i < rank; ++i) {
    shape.dims_[i] = dims[i];
  }
  *out = shape;
  return Status::kSuccess;
}

Status Shape::make(std::initializer_list<std::int64_t> dims, Shape* out) noexcept {
  // Compare as size_t first: a list longer than INT_MAX must not wrap into a small rank.
  if (dims.size() > static_cast<std::size_t>(kMaxRank)) {
    return detail::set_error(Status::kErrorSizeLimit, "Shape::make: rank: %zu exceeds kMaxRank (%d)",
                             dims.size(), kMaxRank);
  }
  return make(dims.begin(), static_cast<int>(dims.size()), out);
}

Status Shape::validate(const char* op, const char* name) const noexcept {
  return check_dims(dims_, rank_, op, name);
}

std::ostream& operator<<(std::ostream& os, const Shape& shape) {
  return os << format_dims(shape.dims(), shape.rank()).text;
}

namespace detail {

Status validate_view(const void* data, DType dtype, const Shape& shape, const std::int64_t* strides,
                     const char* op, const char* name) noexcept {
  op = or_default(op, "culayers");
  name = or_default(name, "tensor");
  if (!is_valid(dtype)) {
    return set_error(Status::kErrorInvalidDType, "%s: %s: invalid dtype value %d", op, name,
                     static_cast<int>(dtype));
  }
  Status status = check_dims(shape.dims(), shape.rank(), op, name);
  if (!ok(status)) {
    return status;
  }
  if (shape.rank() > 0 && strides == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: %s: strides are null for rank %d", op, name,
                     shape.rank());
  }
  for (int i = 0; i < shape.rank(); ++i) {
    if (strides[i] < 0) {
      return set_error(Status::kErrorNotSupported,
                       "%s: %s: stride %d is negative (%" PRId64 "); negative strides are not supported", op,
                       name, i, strides[i]);
    }
  }
  const std::int64_t numel = shape.numel();
  if (numel == 0) {
    return Status::kSuccess; // nothing is addressed, so any pointer (null included) will do
  }
  // Byte offsets of every addressed element must fit in int64, so kernels' 64-bit index math and
  // pointer arithmetic cannot wrap.
  std::int64_t last = 0;
  bool fits = true;
  for (int i = 0; i < shape.rank() && fits; ++i) {
    std::int64_t term = 0;
    fits = checked_mul(shape.dims()[i] - 1, strides[i], &term) && checked_add(last, term, &last);
  }
  std::int64_t bytes = 0;
  fits = fits && checked_add(last, 1, &last) &&
         checked_mul(last, static_cast<std::int64_t>(dtype_size(dtype)), &bytes);
  if (!fits) {
    return set_error(Status::kErrorSizeLimit,
                     "%s: %s: memory spanned by shape %s with strides %s overflows int64", op, name,
                     format_dims(shape.dims(), shape.rank()).text, format_dims(strides, shape.rank()).text);
  }
  if (data == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: %s: data is null for %" PRId64 " elements", op, name,
                     numel);
  }
  return Status::kSuccess;
}

} // namespace detail

CULAYERS_NAMESPACE_END
