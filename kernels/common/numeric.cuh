// Conversions between the activation dtypes and the float32 accumulator.
#pragma once

#include "kernels/common/portability.cuh"

#include "culayers/types.hpp"

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

/// Host dispatch over the activation dtypes: f(T{}) with T the C++ type of `d` (float32, float16,
/// bfloat16; the caller validated d, anything else is taken as bfloat16).
template <class F>
auto with_activation_type(DType d, F&& f) -> decltype(f(float{})) {
  switch (d) {
  case DType::kFloat32:
    return f(float{});
  case DType::kFloat16:
    return f(__half{});
  default:
    return f(__nv_bfloat16{});
  }
}

} // namespace kernels
CULAYERS_NAMESPACE_END
