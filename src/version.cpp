#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN

// Defined out of line on purpose: these report the version the library was built with, which can
// differ from kHeaderVersion when an application picks up mismatched headers.
int version() noexcept {
  return CULAYERS_VERSION;
}

const char* version_string() noexcept {
  return CULAYERS_VERSION_STRING;
}

CULAYERS_NAMESPACE_END
