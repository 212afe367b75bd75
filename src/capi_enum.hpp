// Reading the enum fields and parameters of the C API. A C caller may store any int in an enum (C enums
// are ints); in C++, loading a value outside the enum's range as a C enum type (no fixed underlying type)
// is undefined behaviour. enum_value() copies the bytes into an int instead of loading the enum, so the
// validation that follows sees the caller's value and reports it.
#ifndef CULAYERS_SRC_CAPI_ENUM_HPP_
#define CULAYERS_SRC_CAPI_ENUM_HPP_

#include <cstring>
#include <type_traits>

namespace culayers::capi {

template <class E>
int enum_value(const E& e) noexcept {
  static_assert(std::is_enum_v<E> && sizeof(E) == sizeof(int), "an int-sized enum");
  int v = 0;
  std::memcpy(&v, &e, sizeof(v));
  return v;
}

} // namespace culayers::capi

#endif // CULAYERS_SRC_CAPI_ENUM_HPP_
