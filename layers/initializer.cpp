// Keras weight initializers (include/culayers/nn/initializer.hpp).
#include "culayers/nn/initializer.hpp"
#include "layers/config_util.hpp"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>

CULAYERS_NAMESPACE_BEGIN
namespace nn {

using ::culayers::detail::set_error;

namespace {

constexpr const char* kOp = "initializer";
constexpr double kPi = 3.14159265358979323846;

/// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit counter through a bijective mixer; every seed gives a
/// full-period stream, which is all an initializer needs.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in (0, 1): 53 random bits, offset by half a step so neither end is reached.
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1p-53; }

 private:
  std::uint64_t state_;
};

struct KindName {
  Initializer::Kind kind;
  const char* class_name;
  const char* identifier; // Keras's string alias
};

constexpr KindName kKinds[] = {
    {Initializer::Kind::kZeros, "Zeros", "zeros"},
    {Initializer::Kind::kOnes, "Ones", "ones"},
    {Initializer::Kind::kConstant, "Constant", "constant"},
    {Initializer::Kind::kRandomUniform, "RandomUniform", "random_uniform"},
    {Initializer::Kind::kRandomNormal, "RandomNormal", "random_normal"},
    {Initializer::Kind::kGlorotUniform, "GlorotUniform", "glorot_uniform"},
};

bool is_random(Initializer::Kind k) {
  return k == Initializer::Kind::kRandomUniform || k == Initializer::Kind::kRandomNormal ||
         k == Initializer::Kind::kGlorotUniform;
}

/// Reads an optional number member; kErrorParse if present and not a number.
Status read_number(const Json& config, const char* key, double* out) {
  const auto it = config.find(key);
  if (it == config.end()) {
    return Status::kSuccess;
  }
  if (!config_util::double_value(*it, out)) {
    return set_error(Status::kErrorParse,
                     "%s: config: \"%s\" is not a number (or \"NaN\", \"Infinity\", \"-Infinity\")", kOp,
                     key);
  }
  return Status::kSuccess;
}

} // namespace

Initializer Initializer::ones() {
  Initializer i;
  i.kind = Kind::kOnes;
  return i;
}

namespace {

// The parameters a random kind draws with (from_json and generate both check them): finite (Constant alone
// may hold NaN or an infinity, as a Masking value may), minval <= maxval with a finite range (an infinite
// range draws NaN), stddev >= 0.
Status check_parameters(const Initializer& init, const char* name) {
  using Kind = Initializer::Kind;
  if ((init.kind == Kind::kRandomUniform && !(std::isfinite(init.minval) && std::isfinite(init.maxval))) ||
      (init.kind == Kind::kRandomNormal && !(std::isfinite(init.mean) && std::isfinite(init.stddev)))) {
    return set_error(Status::kErrorInvalidValue, "%s: %s: parameters must be finite", kOp, name);
  }
  if (init.kind == Kind::kRandomUniform && !(init.minval <= init.maxval)) {
    return set_error(Status::kErrorInvalidValue, "%s: %s: minval %g > maxval %g", kOp, name, init.minval,
                     init.maxval);
  }
  if (init.kind == Kind::kRandomUniform && !std::isfinite(init.maxval - init.minval)) {
    return set_error(Status::kErrorInvalidValue, "%s: %s: maxval - minval (%g - %g) overflows a double", kOp,
                     name, init.maxval, init.minval);
  }
  if (init.kind == Kind::kRandomNormal && !(init.stddev >= 0.0)) {
    return set_error(Status::kErrorInvalidValue, "%s: %s: stddev %g < 0", kOp, name, init.stddev);
  }
  return Status::kSuccess;
}

} // namespace

Initializer Initializer::constant(double value) {
  Initializer i;
  i.kind = Kind::kConstant;
  i.value = value;
  return i;
}

Initializer Initializer::random_uniform(double minval, double maxval, std::optional<std::uint64_t> seed) {
  Initializer i;
  i.kind = Kind::kRandomUniform;
  i.minval = minval;
  i.maxval = maxval;
  i.seed = seed;
  return i;
}

Initializer Initializer::random_normal(double mean, double stddev, std::optional<std::uint64_t> seed) {
  Initializer i;
  i.kind = Kind::kRandomNormal;
  i.mean = mean;
  i.stddev = stddev;
  i.seed = seed;
  return i;
}

Initializer Initializer::glorot_uniform(std::optional<std::uint64_t> seed) {
  Initializer i;
  i.kind = Kind::kGlorotUniform;
  i.seed = seed;
  return i;
}

const char* Initializer::class_name() const noexcept {
  for (const KindName& k : kKinds) {
    if (k.kind == kind) {
      return k.class_name;
    }
  }
  return "unknown initializer";
}

Json Initializer::to_json() const {
  Json config = Json::object();
  switch (kind) {
  case Kind::kConstant:
    config["value"] = config_util::json_double(value);
    break;
  case Kind::kRandomUniform:
    config["minval"] = config_util::json_double(minval);
    config["maxval"] = config_util::json_double(maxval);
    break;
  case Kind::kRandomNormal:
    config["mean"] = config_util::json_double(mean);
    config["stddev"] = config_util::json_double(stddev);
    break;
  default:
    break;
  }
  if (is_random(kind)) {
    config["seed"] = seed ? Json(*seed) : Json(nullptr);
  }
  return Json{{"class_name", class_name()}, {"config", config}};
}

Status Initializer::from_json(const Json& json, Initializer* out) {
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: out: is null", kOp);
  }
  Initializer init;
  if (json.is_string()) {
    const std::string id = json.get<std::string>();
    for (const KindName& k : kKinds) {
      if (id == k.identifier || id == k.class_name) {
        init.kind = k.kind;
        *out = init;
        return Status::kSuccess;
      }
    }
    return set_error(Status::kErrorUnknownClass, "%s: unknown initializer \"%s\"", kOp, id.c_str());
  }
  if (!json.is_object() || !json.contains("class_name") || !json["class_name"].is_string()) {
    return set_error(Status::kErrorParse,
                     "%s: config: expected {\"class_name\": ..., \"config\": {...}} or a name", kOp);
  }
  const std::string name = json["class_name"].get<std::string>();
  bool found = false;
  for (const KindName& k : kKinds) {
    if (name == k.class_name) {
      init.kind = k.kind;
      found = true;
    }
  }
  if (!found) {
    return set_error(Status::kErrorUnknownClass, "%s: unknown initializer class \"%s\"", kOp, name.c_str());
  }
  const Json config = json.contains("config") ? json["config"] : Json::object();
  if (!config.is_object()) {
    return set_error(Status::kErrorParse, "%s: config: \"config\" of %s is not an object", kOp, name.c_str());
  }
  for (const auto& [key, ptr] : {std::pair<const char*, double*>{"value", &init.value},
                                 {"minval", &init.minval},
                                 {"maxval", &init.maxval},
                                 {"mean", &init.mean},
                                 {"stddev", &init.stddev}}) {
    if (Status s = read_number(config, key, ptr); !ok(s)) {
      return s;
    }
  }
  if (const auto it = config.find("seed"); it != config.end() && !it->is_null()) {
    if (!(it->is_number_unsigned() || (it->is_number_integer() && it->get<std::int64_t>() >= 0))) {
      return set_error(Status::kErrorParse, "%s: config: \"seed\" is not a non-negative integer", kOp);
    }
    init.seed = it->get<std::uint64_t>();
  }
  if (Status s = check_parameters(init, name.c_str()); !ok(s)) {
    return s;
  }
  *out = init;
  return Status::kSuccess;
}

Status Initializer::validate() const {
  if (static_cast<int>(kind) < static_cast<int>(Kind::kZeros) ||
      static_cast<int>(kind) > static_cast<int>(Kind::kGlorotUniform)) {
    return set_error(Status::kErrorInvalidValue, "%s: kind: %d is not an initializer", kOp,
                     static_cast<int>(kind));
  }
  return check_parameters(*this, class_name());
}

Status Initializer::generate(const Shape& shape, std::vector<double>* out) const {
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: out: is null", kOp);
  }
  if (Status s = shape.validate(kOp, "shape"); !ok(s)) {
    return s;
  }
  if (Status s = validate(); !ok(s)) {
    return s;
  }
  const std::int64_t n = shape.numel();
  std::vector<double> values(static_cast<std::size_t>(n));
  // config_util::random_seed: std::random_device may throw where the platform has no entropy source, and
  // no exception may leave this Status-returning API.
  const std::uint64_t s = seed ? *seed : config_util::random_seed();
  SplitMix64 rng(s);
  switch (kind) {
  case Kind::kZeros:
    break;
  case Kind::kOnes:
    values.assign(values.size(), 1.0);
    break;
  case Kind::kConstant:
    values.assign(values.size(), value);
    break;
  case Kind::kRandomUniform:
    for (double& v : values) {
      v = minval + (maxval - minval) * rng.uniform();
    }
    break;
  case Kind::kRandomNormal:
    // Box-Muller: two uniforms give two independent standard normals.
    for (std::size_t i = 0; i < values.size(); i += 2) {
      const double r = std::sqrt(-2.0 * std::log(rng.uniform()));
      const double t = 2.0 * kPi * rng.uniform();
      values[i] = mean + stddev * r * std::cos(t);
      if (i + 1 < values.size()) {
        values[i + 1] = mean + stddev * r * std::sin(t);
      }
    }
    break;
  case Kind::kGlorotUniform: {
    const int rank = shape.rank();
    double fan_in = 1.0;
    double fan_out = 1.0;
    if (rank == 1) {
      fan_in = fan_out = static_cast<double>(shape.dim(0));
    } else if (rank == 2) {
      fan_in = static_cast<double>(shape.dim(0));
      fan_out = static_cast<double>(shape.dim(1));
    } else if (rank > 2) {
      const double receptive = static_cast<double>(shape.product(0, rank - 2));
      fan_in = static_cast<double>(shape.dim(-2)) * receptive;
      fan_out = static_cast<double>(shape.dim(-1)) * receptive;
    }
    const double limit = fan_in + fan_out > 0.0 ? std::sqrt(6.0 / (fan_in + fan_out)) : 0.0;
    for (double& v : values) {
      v = -limit + 2.0 * limit * rng.uniform();
    }
    break;
  }
  default:
    return set_error(Status::kErrorInvalidValue, "%s: kind: %d is not an initializer", kOp,
                     static_cast<int>(kind));
  }
  *out = std::move(values);
  return Status::kSuccess;
}

bool operator==(const Initializer& a, const Initializer& b) {
  return a.kind == b.kind && a.value == b.value && a.minval == b.minval && a.maxval == b.maxval &&
         a.mean == b.mean && a.stddev == b.stddev && a.seed == b.seed;
}

} // namespace nn
CULAYERS_NAMESPACE_END
