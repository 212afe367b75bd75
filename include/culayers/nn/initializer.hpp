// Keras weight initializers (keras.initializers): Zeros, Ones, Constant, RandomUniform, RandomNormal and
// GlorotUniform, with Keras's class names, config keys and defaults, so configs round-trip through JSON.
//
// Values are generated on the host in double precision from a SplitMix64 stream (the same seed gives the
// same values on every platform and backend), rounded once to the weight's dtype and uploaded when the
// layer is built. An initializer without a seed draws one from std::random_device when it runs (Keras:
// unseeded initializers differ run to run); seed it for reproducible weights.
#ifndef CULAYERS_NN_INITIALIZER_HPP_
#define CULAYERS_NN_INITIALIZER_HPP_

#include <cstdint>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {

using Json = nlohmann::json;

struct Initializer {
  enum class Kind : int {
    kZeros = 0,
    kOnes = 1,
    kConstant = 2,
    kRandomUniform = 3,
    kRandomNormal = 4,
    kGlorotUniform = 5
  };

  Kind kind = Kind::kZeros;
  double value = 0.0;                  ///< Constant
  double minval = -0.05;               ///< RandomUniform (Keras default)
  double maxval = 0.05;                ///< RandomUniform (Keras default)
  double mean = 0.0;                   ///< RandomNormal (Keras default)
  double stddev = 0.05;                ///< RandomNormal (Keras default)
  std::optional<std::uint64_t> seed{}; ///< random kinds

  static Initializer zeros() { return Initializer{}; }
  static Initializer ones();
  static Initializer constant(double value);
  static Initializer random_uniform(double minval, double maxval, std::optional<std::uint64_t> seed = {});
  static Initializer random_normal(double mean, double stddev, std::optional<std::uint64_t> seed = {});
  static Initializer glorot_uniform(std::optional<std::uint64_t> seed = {});

  /// Keras's class name: "Zeros", "Ones", "Constant", "RandomUniform", "RandomNormal", "GlorotUniform".
  const char* class_name() const noexcept;

  /// {"class_name": ..., "config": {...}} with Keras's keys (value; minval, maxval; mean, stddev; seed, null
  /// when absent).
  Json to_json() const;

  /// Parses to_json()'s layout, or a bare Keras identifier string ("zeros", "ones", "glorot_uniform",
  /// "random_uniform", "random_normal"). kErrorParse for a malformed config, kErrorUnknownClass for an
  /// unknown class name; *out is unchanged on failure.
  [[nodiscard]] static Status from_json(const Json& json, Initializer* out);

  /// kErrorInvalidValue unless the kind and its parameters are usable (a random kind's parameters finite,
  /// minval <= maxval with a finite range, stddev >= 0), as generate() checks them first. (Whether the
  /// values fit a weight's dtype is known only once they are generated.)
  [[nodiscard]] Status validate() const;

  /// The values of a weight of `shape` in row-major order (double precision). GlorotUniform draws from
  /// U(-l, l) with l = sqrt(6 / (fan_in + fan_out)) and Keras's fans: rank 1: (d0, d0); rank 2: (d0, d1);
  /// rank k > 2: receptive field r = d0...d(k-3), fan_in = d(k-2) r, fan_out = d(k-1) r.
  [[nodiscard]] Status generate(const Shape& shape, std::vector<double>* out) const;
};

bool operator==(const Initializer& a, const Initializer& b);
inline bool operator!=(const Initializer& a, const Initializer& b) {
  return !(a == b);
}

} // namespace nn
CULAYERS_NAMESPACE_END

#endif // CULAYERS_NN_INITIALIZER_HPP_
