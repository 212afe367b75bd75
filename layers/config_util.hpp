// Internal helpers the built-in layers share: reading Keras config keys with clear errors, option checks
// and shape text. Not installed; layers/*.cpp only.
#ifndef CULAYERS_LAYERS_CONFIG_UTIL_HPP_
#define CULAYERS_LAYERS_CONFIG_UTIL_HPP_

#include <cmath>
#include <string>

#include "culayers/nn/initializer.hpp"
#include "culayers/nn/layer.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {
namespace config_util {

/// The most recent error again, as kErrorParse (an option check failing inside from_config).
inline Status as_parse_error() {
  return ::culayers::detail::set_error(Status::kErrorParse, "%s", last_error_message());
}

/// kErrorParse "<cls> config: \"<key>\": <what>".
inline Status bad_key(const char* cls, const char* key, const char* what) {
  return ::culayers::detail::set_error(Status::kErrorParse, "%s config: \"%s\": %s", cls, key, what);
}

/// Absent keys leave *out unchanged.
inline Status read_bool(const char* cls, const Json& config, const char* key, bool* out) {
  if (const auto it = config.find(key); it != config.end()) {
    if (!it->is_boolean()) {
      return bad_key(cls, key, "is not a boolean");
    }
    *out = it->get<bool>();
  }
  return Status::kSuccess;
}

inline Status read_double(const char* cls, const Json& config, const char* key, double* out) {
  if (const auto it = config.find(key); it != config.end()) {
    if (!it->is_number()) {
      return bad_key(cls, key, "is not a number");
    }
    *out = it->get<double>();
  }
  return Status::kSuccess;
}

/// A Keras initializer config ({"class_name", "config"} or a string identifier).
inline Status read_initializer(const char* cls, const Json& config, const char* key, Initializer* out) {
  if (const auto it = config.find(key); it != config.end()) {
    if (Status s = Initializer::from_json(*it, out); !ok(s)) {
      return ::culayers::detail::set_error(s, "%s config: \"%s\": %s", cls, key, last_error_message());
    }
  }
  return Status::kSuccess;
}

/// kErrorInvalidDType "<name>: dtype: ..." unless float32, float16 or bfloat16.
inline Status check_float_dtype(const std::string& name, DType dtype) {
  if (!is_floating_point(dtype)) {
    return ::culayers::detail::set_error(Status::kErrorInvalidDType,
                                         "%s: dtype: %s is not float32, float16 or bfloat16", name.c_str(),
                                         dtype_name(dtype));
  }
  return Status::kSuccess;
}

/// epsilon > 0 and finite, also once rounded to float32 (what the ops get).
inline bool valid_epsilon(double e) {
  return e > 0.0 && std::isfinite(e) && static_cast<float>(e) > 0.0f && std::isfinite(static_cast<float>(e));
}

/// "(2, 3, 8)".
inline std::string shape_string(const Shape& s) {
  std::string out = "(";
  for (int i = 0; i < s.rank(); ++i) {
    out += (i > 0 ? ", " : "") + std::to_string(s.dim(i));
  }
  return out + ")";
}

} // namespace config_util
} // namespace nn
CULAYERS_NAMESPACE_END

#endif // CULAYERS_LAYERS_CONFIG_UTIL_HPP_
