// Conversions between the activation dtypes and the float32 accumulator.
#pragma once

#include "kernels/common/portability.cuh"

#include "culayers/status.hpp"
#include "culayers/types.hpp"

#include <utility>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {

template <class T>
struct Convert;

template <>
struct Convert<float> {
  static CULAYERS_HD float to_float(float v) { return v; }
  static CULAYERS_HD float from_float(float v) { return v; }
};

template <>
struct Convert<__half> {
  static CULAYERS_HD float to_float(__half v) { return __half2float(v); }
  static CULAYERS_HD __half from_float(float v) { return __float2half_rn(v); }
};

template <>
struct Convert<__nv_bfloat16> {
  static CULAYERS_HD float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  static CULAYERS_HD __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
};

template <class T>
CULAYERS_HD float to_float(T v) {
  return Convert<T>::to_float(v);
}

template <class T>
CULAYERS_HD T from_float(float v) {
  return Convert<T>::from_float(v);
}

/// What a dtype dispatch returns for a dtype that is not an activation dtype, by result type: the
/// callers validate the dtype first, so reaching this is a library defect, and it must fail loudly rather
/// than run a kernel on the wrong element type.
template <class R>
struct UnknownDTypeResult;

template <>
struct UnknownDTypeResult<Status> {
  static Status get(DType d) {
    return ::culayers::detail::set_error(Status::kErrorInvalidDType,
                                         "dtype dispatch: dtype %d is not float32, float16 or bfloat16",
                                         static_cast<int>(d));
  }
};

template <>
struct UnknownDTypeResult<cudaError_t> {
  static cudaError_t get(DType) { return cudaErrorInvalidValue; }
};

/// Host dispatch over the activation dtypes: f(T{}) with T the C++ type of `d` (float32, float16,
/// bfloat16). Any other value of `d` runs nothing and returns `unknown`.
template <class F>
auto with_activation_type(DType d, F&& f, decltype(std::declval<F>()(float{})) unknown) -> decltype(unknown) {
  switch (d) {
  case DType::kFloat32:
    return f(float{});
  case DType::kFloat16:
    return f(__half{});
  case DType::kBFloat16:
    return f(__nv_bfloat16{});
  default:
    return unknown;
  }
}

/// As above for a callable returning Status (kErrorInvalidDType, with a message naming the dtype, for
/// another dtype) or cudaError_t (cudaErrorInvalidValue).
template <class F>
auto with_activation_type(DType d, F&& f) -> decltype(f(float{})) {
  using R = decltype(f(float{}));
  if (!is_floating_point(d)) {
    return UnknownDTypeResult<R>::get(d);
  }
  return with_activation_type(d, std::forward<F>(f), R{});
}

} // namespace kernels
CULAYERS_NAMESPACE_END
