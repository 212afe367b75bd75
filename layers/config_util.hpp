// Internal helpers the built-in layers share: reading Keras config keys with clear errors, option checks
// and shape text. Not installed; layers/*.cpp only.
#ifndef CULAYERS_LAYERS_CONFIG_UTIL_HPP_
#define CULAYERS_LAYERS_CONFIG_UTIL_HPP_

#include <cmath>
#include <cstdint>
#include <string>

#include "culayers/nn/initializer.hpp"
#include "culayers/nn/layer.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {
namespace config_util {

/// Parses JSON text with the nesting depth bounded (configs nest a few levels; a hostile document nested
/// thousands deep would otherwise make copying or destroying the value recurse off the stack).
/// kErrorParse "<what>: ..." when the text is not JSON or nests deeper than `max_depth`.
inline Status parse_json(const std::string& text, const char* what, Json* out, int max_depth = 64) {
  struct TooDeep {};
  int depth = 0;
  const Json::parser_callback_t bound = [&](int, Json::parse_event_t event, Json&) {
    if (event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) {
      if (++depth > max_depth) {
        throw TooDeep{};
      }
    } else if (event == Json::parse_event_t::object_end || event == Json::parse_event_t::array_end) {
      --depth;
    }
    return true;
  };
  try {
    *out = Json::parse(text, bound);
  } catch (const Json::parse_error& e) {
    return ::culayers::detail::set_error(Status::kErrorParse, "%s: not valid JSON: %s", what, e.what());
  } catch (const TooDeep&) {
    return ::culayers::detail::set_error(Status::kErrorParse, "%s: the JSON nests deeper than %d levels",
                                         what, max_depth);
  }
  return Status::kSuccess;
}

/// The most recent error again, as kErrorParse (an option check failing inside from_config).
inline Status as_parse_error() {
  return ::culayers::detail::set_error(Status::kErrorParse, "%s", last_error_message());
}

/// "(2, 3, 8)".
inline std::string shape_string(const Shape& s) {
  std::string out = "(";
  for (int i = 0; i < s.rank(); ++i) {
    out += (i > 0 ? ", " : "") + std::to_string(s.dim(i));
  }
  return out + ")";
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

/// The mask check of the normalization layers (Layer::check_mask): a [batch, steps] mask only for input of
/// rank 3 with the channels last, `axis` being the layer's configured channel axis (resolved against this
/// shape as do_build resolves it: the layer may not be built yet).
inline Status check_sequence_mask(const std::string& name, int axis, const Shape& shape) {
  const int rank = shape.rank();
  const bool last = axis == -1 || axis == rank - 1;
  if (!last || rank != 3) {
    return ::culayers::detail::set_error(
        Status::kErrorNotSupported,
        "%s: mask: a [batch, steps] mask is supported only for channels-last input of rank 3 (batch, steps, "
        "channels); this input has rank %d and channel axis %d",
        name.c_str(), rank, axis);
  }
  return Status::kSuccess;
}

/// The input-shape check of layers whose extents may change between calls: the same rank as the built
/// shape, and the same extent on every axis from `first_fixed_axis` on (rank or more: none fixed).
inline Status check_fixed_axes(const std::string& name, const Shape& built, const Shape& shape,
                               int first_fixed_axis) {
  bool same = built.rank() == shape.rank();
  for (int i = first_fixed_axis; same && i < shape.rank(); ++i) {
    same = built.dim(i) == shape.dim(i);
  }
  if (!same) {
    return ::culayers::detail::set_error(
        Status::kErrorInvalidShape, "%s: input: shape %s is incompatible with the built shape %s%s",
        name.c_str(), shape_string(shape).c_str(), shape_string(built).c_str(),
        first_fixed_axis >= built.rank() ? " (the rank differs)"
        : first_fixed_axis == 1          ? " (only the batch extent may change)"
                                         : " (only the batch and step extents may change)");
  }
  return Status::kSuccess;
}

/// The input-shape check of the normalization layers: the same rank as the built shape and the same number
/// of channels on `axis` (a resolved, non-negative axis); every other extent may change between calls.
inline Status check_channel_axis(const std::string& name, const Shape& built, const Shape& shape, int axis) {
  const int rank = built.rank();
  if (shape.rank() != rank || shape.dim(axis) != built.dim(axis)) {
    return ::culayers::detail::set_error(
        Status::kErrorInvalidShape,
        "%s: input: shape %s is incompatible with the built shape %s (rank %d, %lld channels on axis %d)",
        name.c_str(), shape_string(shape).c_str(), shape_string(built).c_str(), rank,
        static_cast<long long>(built.dim(axis)), axis);
  }
  return Status::kSuccess;
}

/// epsilon > 0 and finite, also once rounded to float32 (what the ops get).
inline bool valid_epsilon(double e) {
  return e > 0.0 && std::isfinite(e) && static_cast<float>(e) > 0.0f && std::isfinite(static_cast<float>(e));
}

} // namespace config_util
} // namespace nn
CULAYERS_NAMESPACE_END

#endif // CULAYERS_LAYERS_CONFIG_UTIL_HPP_
