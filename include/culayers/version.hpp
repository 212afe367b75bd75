// C++ view of the library version and the versioned namespace macros.
#ifndef CULAYERS_VERSION_HPP_
#define CULAYERS_VERSION_HPP_

#include "culayers/version.h"

// The ABI namespace is derived from MAJOR/MINOR (0.1.x -> v0_1): two copies of culayers with
// different minor versions linked into one engine then have distinct symbols instead of ODR clashes,
// while `culayers::` still names the current one.
#define CULAYERS_DETAIL_ABI_NAME_(major, minor) v##major##_##minor
#define CULAYERS_DETAIL_ABI_NAME(major, minor) CULAYERS_DETAIL_ABI_NAME_(major, minor)
#define CULAYERS_ABI_NAMESPACE CULAYERS_DETAIL_ABI_NAME(CULAYERS_VERSION_MAJOR, CULAYERS_VERSION_MINOR)

// Every public declaration lives between these two macros.
#define CULAYERS_NAMESPACE_BEGIN                                                                             \
  namespace culayers {                                                                                       \
  inline namespace CULAYERS_ABI_NAMESPACE {
#define CULAYERS_NAMESPACE_END                                                                               \
  }                                                                                                          \
  }

CULAYERS_NAMESPACE_BEGIN

/// Version the headers were compiled against (CULAYERS_VERSION), for compile-time checks.
inline constexpr int kHeaderVersion = CULAYERS_VERSION;

/// Version of the compiled library (CULAYERS_VERSION of the build). Compare with kHeaderVersion to
/// detect headers and library from different releases. Thread-safe; never fails.
int version() noexcept;

/// "MAJOR.MINOR.PATCH" of the compiled library; a static string, never null.
const char* version_string() noexcept;

CULAYERS_NAMESPACE_END

#endif // CULAYERS_VERSION_HPP_
