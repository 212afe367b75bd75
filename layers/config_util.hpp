// Internal helpers the built-in layers share: reading Keras config keys with clear errors, option checks
// and shape text. Not installed; layers/*.cpp only.
#ifndef CULAYERS_LAYERS_CONFIG_UTIL_HPP_
#define CULAYERS_LAYERS_CONFIG_UTIL_HPP_

#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "culayers/group_norm.hpp"
#include "culayers/masked_reduce.hpp"
#include "culayers/nn/initializer.hpp"
#include "culayers/nn/layer.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {
namespace config_util {

/// What parse_json_checked enforces while it reads the text, before any value is built.
struct JsonChecks {
  int max_depth = 64;                 ///< nesting of objects and arrays
  bool reject_duplicate_keys = false; ///< nlohmann keeps the last of duplicate keys silently
  std::size_t max_array_values = 0;   ///< values one array may hold; 0: no limit
  /// Keys one object inside the root object's members may hold (the members' own objects and deeper); 0: no
  /// limit. The own object of the member named `unlimited_member` (when not empty) is exempt (e.g. a
  /// free-form metadata object); objects nested in it are not.
  std::size_t max_nested_object_keys = 0;
  std::string unlimited_member;
};

/// Why parse_json_checked rejected a text: the kind, and for kSyntax the parser's message, for kObjectKeys
/// the member whose object holds too many keys, for kDuplicate
/// the key.
struct JsonFailure {
  /// kRejected: a MemberSink returned false (it keeps its own reason).
  enum class Kind { kSyntax, kDepth, kDuplicate, kArrayLength, kObjectKeys, kRejected } kind = Kind::kSyntax;
  std::string detail;
};

/// Receives each member of a top-level object as soon as its value is complete (parse_json_members);
/// returning false stops the parse.
using MemberSink = std::function<bool(const std::string& key, Json&& value)>;

namespace json_detail {

/// The SAX handler of parse_json_checked and parse_json_members: enforces `checks` and, with a sink, builds
/// one top-level member's value at a time and hands it over when it is complete (the whole tree is never
/// built, so memory is bounded by the largest member rather than the document).
class Checker {
 public:
  using Kind = JsonFailure::Kind;
  Checker(const JsonChecks& c, JsonFailure* f, const MemberSink* sink) : checks_(c), why_(f), sink_(sink) {}
  // Values are built only while a member is (sink_ set and the root an object); a check-only pass builds
  // nothing.
  bool null() { return value() && (!building() || add(Json(nullptr))); }
  bool boolean(bool b) { return value() && (!building() || add(Json(b))); }
  bool number_integer(Json::number_integer_t v) { return value() && (!building() || add(Json(v))); }
  bool number_unsigned(Json::number_unsigned_t v) { return value() && (!building() || add(Json(v))); }
  bool number_float(Json::number_float_t v, const Json::string_t&) {
    return value() && (!building() || add(Json(v)));
  }
  bool string(Json::string_t& v) { return value() && (!building() || add(Json(std::move(v)))); }
  bool binary(Json::binary_t& v) { return value() && (!building() || add(Json::binary(std::move(v)))); }
  bool start_object(std::size_t) { return enter(false) && open_container(false); }
  bool start_array(std::size_t) { return enter(true) && open_container(true); }
  bool end_object() { return close_container() && leave(); }
  bool end_array() { return close_container() && leave(); }
  bool key(Json::string_t& k) {
    Open& o = open_.back();
    // Objects inside the root object's members; the exempt member's own object only (what it nests is
    // limited as any other's).
    if (checks_.max_nested_object_keys > 0 && root_is_object_ && open_.size() >= 2 &&
        ++o.keys_seen > checks_.max_nested_object_keys &&
        !(open_.size() == 2 && !checks_.unlimited_member.empty() &&
          member_key_ == checks_.unlimited_member)) {
      return fail(Kind::kObjectKeys, member_key_);
    }
    if (checks_.reject_duplicate_keys && !o.keys.insert(k).second) {
      return fail(Kind::kDuplicate, k);
    }
    if (open_.size() == 1) {
      member_key_ = k; // also without a sink: the key limit names the member
    } else if (building()) {
      pending_key_ = k;
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    return fail(Kind::kSyntax, e.what());
  }
  bool root_is_object() const { return root_is_object_; }

 private:
  struct Open {
    bool array;
    std::size_t values;
    std::size_t keys_seen;
    std::set<std::string> keys;
  };
  bool value() {
    if (!open_.empty() && open_.back().array && checks_.max_array_values > 0 &&
        ++open_.back().values > checks_.max_array_values) {
      return fail(Kind::kArrayLength, std::to_string(checks_.max_array_values));
    }
    return true;
  }
  bool enter(bool array) {
    if (!value()) {
      return false;
    }
    if (static_cast<int>(open_.size()) >= checks_.max_depth) {
      return fail(Kind::kDepth, std::to_string(checks_.max_depth));
    }
    open_.push_back(Open{array, 0, 0, {}});
    return true;
  }
  bool leave() {
    open_.pop_back();
    return true;
  }
  // Member building (sink_ set). A value at depth 1 (directly in the root) is a member; deeper values go
  // into the open container on top of `building_` (the pointers stay valid: a container is only appended
  // to while none of its children is open).
  Json* insert(Json&& v) {
    Json& parent = *building_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    Json& slot = parent[pending_key_];
    slot = std::move(v);
    return &slot;
  }
  bool building() const { return sink_ != nullptr && root_is_object_; }
  bool add(Json&& v) { // building() holds
    if (open_.size() == 1) {
      return deliver(std::move(v));
    }
    insert(std::move(v));
    return true;
  }
  bool open_container(bool array) { // after enter(): open_ holds the new container
    if (open_.size() == 1) {
      root_is_object_ = !array;
      return true;
    }
    if (!building()) {
      return true;
    }
    Json c = array ? Json::array() : Json::object();
    if (open_.size() == 2) {
      member_ = std::move(c);
      building_.assign(1, &member_);
    } else {
      building_.push_back(insert(std::move(c)));
    }
    return true;
  }
  bool close_container() {
    if (building_.empty()) { // not building (no sink, or outside the root object's members)
      return true;
    }
    building_.pop_back();
    return building_.empty() ? deliver(std::move(member_)) : true;
  }
  bool deliver(Json&& v) {
    if (!(*sink_)(member_key_, std::move(v))) {
      return fail(Kind::kRejected, member_key_);
    }
    return true;
  }
  bool fail(Kind kind, std::string detail) {
    why_->kind = kind;
    why_->detail = std::move(detail);
    return false;
  }
  const JsonChecks& checks_;
  JsonFailure* why_;
  const MemberSink* sink_;
  std::vector<Open> open_;
  bool root_is_object_ = false;
  std::string member_key_;  // the top-level key whose value is being built
  std::string pending_key_; // the key of the next value inside it
  Json member_;
  std::vector<Json*> building_;
};

inline bool has_nul(const char* begin, const char* end, JsonFailure* why) {
  if (const void* nul = std::memchr(begin, 0, static_cast<std::size_t>(end - begin)); nul != nullptr) {
    why->kind = JsonFailure::Kind::kSyntax;
    why->detail = "NUL byte at offset " + std::to_string(static_cast<const char*>(nul) - begin);
    return true;
  }
  return false;
}

} // namespace json_detail

/// Reads JSON text in two linear passes: a SAX pass that builds nothing and checks `checks` (and that the
/// text is JSON: a number that overflows a double is an error, as is a NUL byte, where nlohmann-json would
/// stop as if the input ended), then the plain parse. Why not a parser callback: nlohmann-json's callback
/// parser rescans the parent's elements after every object it closes, so a text of n objects took time
/// ~n^2 (80 000 empty objects, 2 s; a 100 MB text, days), and the whole tree was built before any check.
/// Never throws nlohmann-json's exceptions: false, with `why` filled.
inline bool parse_json_checked(const char* begin, const char* end, const JsonChecks& checks, Json* out,
                               JsonFailure* why) {
  if (json_detail::has_nul(begin, end, why)) {
    return false;
  }
  json_detail::Checker checker(checks, why, nullptr);
  try {
    if (!Json::sax_parse(begin, end, &checker)) {
      return false;
    }
    *out = Json::parse(begin, end);
  } catch (const Json::exception& e) { // not expected after the SAX pass accepted the text
    why->kind = JsonFailure::Kind::kSyntax;
    why->detail = e.what();
    return false;
  }
  return true;
}

/// One pass over JSON text with the checks of parse_json_checked that builds no document: each member of
/// a top-level object goes to `sink`, in text order, as soon as its value is complete (a rejected member
/// stops the parse: false with Kind::kRejected). For large documents of many small members (a
/// safetensors header: up to 100 MB of tensor entries), where the whole tree would take ~10x the text's
/// size before the first check. One member is held whole while it is read: bound its size with max_depth,
/// max_array_values and max_nested_object_keys together (each alone leaves it unbounded). *root_is_object
/// tells whether the text was an object (nothing reaches the sink otherwise).
inline bool parse_json_members(const char* begin, const char* end, const JsonChecks& checks,
                               const MemberSink& sink, bool* root_is_object, JsonFailure* why) {
  *root_is_object = false;
  if (json_detail::has_nul(begin, end, why)) {
    return false;
  }
  json_detail::Checker checker(checks, why, &sink);
  try {
    if (!Json::sax_parse(begin, end, &checker)) {
      return false;
    }
  } catch (const Json::exception& e) {
    why->kind = JsonFailure::Kind::kSyntax;
    why->detail = e.what();
    return false;
  }
  *root_is_object = checker.root_is_object();
  return true;
}

/// Parses JSON text with the nesting depth bounded (configs nest a few levels; a hostile document nested
/// thousands deep would otherwise make copying or destroying the value recurse off the stack).
/// kErrorParse "<what>: ..." when the text is not JSON (a NUL byte, a number beyond a double's range
/// included) or nests deeper than `max_depth`.
inline Status parse_json(const std::string& text, const char* what, Json* out, int max_depth = 64) {
  JsonChecks checks;
  checks.max_depth = max_depth;
  JsonFailure why;
  if (parse_json_checked(text.data(), text.data() + text.size(), checks, out, &why)) {
    return Status::kSuccess;
  }
  if (why.kind == JsonFailure::Kind::kDepth) {
    return ::culayers::detail::set_error(Status::kErrorParse, "%s: the JSON nests deeper than %d levels",
                                         what, max_depth);
  }
  return ::culayers::detail::set_error(Status::kErrorParse, "%s: not valid JSON: %s", what,
                                       why.detail.c_str());
}

/// `v` as a signed 64-bit integer: false unless it is a JSON integer that fits (nlohmann-json's
/// get<int64_t>() wraps an unsigned value above INT64_MAX to a negative one, e.g. 2^64 - 2 to -2).
inline bool int64_value(const Json& v, std::int64_t* out) {
  if (!v.is_number_integer() ||
      (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))) {
    return false;
  }
  *out = v.get<std::int64_t>();
  return true;
}

/// A double for a config: finite values as JSON numbers; NaN, +Inf and -Inf as the strings "NaN",
/// "Infinity" and "-Infinity" (the tokens Python's json module writes for them, which a Keras config may
/// hold but JSON cannot: nlohmann-json writes a non-finite number as null, which would not read back).
inline Json json_double(double v) {
  if (std::isnan(v)) {
    return "NaN";
  }
  if (std::isinf(v)) {
    return v > 0 ? "Infinity" : "-Infinity";
  }
  return v;
}

/// The inverse of json_double: a JSON number, or one of its three strings. False for anything else.
inline bool double_value(const Json& v, double* out) {
  if (v.is_number()) {
    *out = v.get<double>();
    return true;
  }
  if (v.is_string()) {
    const std::string& text = v.get_ref<const std::string&>();
    if (text == "NaN") {
      *out = std::nan("");
      return true;
    }
    if (text == "Infinity" || text == "-Infinity") {
      *out = text[0] == '-' ? -HUGE_VAL : HUGE_VAL;
      return true;
    }
  }
  return false;
}

/// The op's size limits, for a layer's check_call: a model's chain check refuses a call that an op would
/// refuse before any layer runs. The op's message (it names the limit), prefixed with the layer and x.
inline Status as_layer_error(const std::string& name, Status s) {
  return ok(s) ? s : ::culayers::detail::set_error(s, "%s: x: %s", name.c_str(), last_error_message());
}

/// The masked reductions' size limits (masked_reduce::check_sizes) for a valid shape viewed as
/// [outer, steps, inner]; with `reduction` false, the Masking op's (masked_reduce::check_masking_sizes).
inline Status check_masked_sizes(const std::string& name, const Shape& shape, bool reduction = true) {
  if (!shape.is_valid() || shape.rank() < 2) {
    return Status::kSuccess; // the call's own shape checks report these
  }
  const std::int64_t outer = shape.dim(0);
  const std::int64_t steps = shape.dim(1);
  const std::int64_t inner = shape.product(2, shape.rank());
  return as_layer_error(name, reduction
                                  ? ::culayers::masked_reduce::check_sizes(outer, steps, inner)
                                  : ::culayers::masked_reduce::check_masking_sizes(outer, steps, inner));
}

/// Group normalization's size limits (group_norm::check_sizes) for a valid shape.
inline Status check_group_norm_sizes(const std::string& name, std::int64_t batch, std::int64_t channels,
                                     std::int64_t spatial, std::int64_t groups) {
  if (batch < 0 || channels < 0 || spatial < 0) {
    return Status::kSuccess; // an invalid shape: the call's own shape checks report it
  }
  return as_layer_error(name, ::culayers::group_norm::check_sizes(batch, channels, spatial, groups));
}

/// The parts of a model document whose keys check_document_keys knows.
/// (The order of check_document_keys's table.)
enum class DocumentPart { kModel, kModelConfig, kLayerEntry, kInputLayerConfig, kBuildConfig };

/// The unused-key check of from_json (config_keys.cpp): walks `object`'s keys (at `path`, belonging to the
/// layer named `layer` or "" for the model), appends each unused one to options.unused_keys and, with
/// options.reject_unknown_keys, refuses the first unknown one (kErrorParse "<op>: <path>: unknown key ...").
/// A value that is not an object is passed over (its reader reports it).
[[nodiscard]] Status check_document_keys(DocumentPart part, const Json& object, const std::string& path,
                                         const std::string& layer, const char* op,
                                         const ConfigReadOptions& options);
/// The same for a layer's config read as class `class_name` (the document's): the base keys, the built-in
/// class's keys, and what the new layer's own get_config() writes. Both check the initializer and
/// dtype-policy objects a used key holds.
[[nodiscard]] Status check_layer_config_keys(const Json& config, const std::string& class_name,
                                             const Layer& layer, const std::string& path, const char* op,
                                             const ConfigReadOptions& options);
/// layer_from_json for a layer entry at `path` ("" alone, "config.layers[2]" in a model), its key errors
/// prefixed with `op`; appends to options.unused_keys without clearing it.
[[nodiscard]] Status layer_from_json_at(const Json& json, const ConfigReadOptions& options,
                                        const std::string& path, const char* op, std::unique_ptr<Layer>* out);

/// A nondeterministic seed (Keras's seed=None). std::random_device may throw where the platform has no
/// entropy source: then the clock, a process-wide counter and an address are mixed (SplitMix64's finalizer).
inline std::uint64_t random_seed() {
  try {
    std::random_device rd;
    return static_cast<std::uint64_t>(rd()) << 32 ^ rd();
  } catch (...) {
    static std::atomic<std::uint64_t> counter{0};
    int local = 0;
    std::uint64_t z =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
        (counter.fetch_add(1) * 0x9e3779b97f4a7c15ull) ^ reinterpret_cast<std::uintptr_t>(&local);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
}

/// The keys BatchNormalization and GroupNormalization share: `epsilon` (a positive finite number),
/// `center` and `scale` (booleans) into o->epsilon, o->center, o->scale; absent keys leave them unchanged.
template <class Options>
Status read_epsilon_center_scale(const char* cls, const Json& config, Options* o);

/// The most recent error again, as kErrorParse (an option check failing inside from_config).
inline Status as_parse_error() {
  return ::culayers::detail::set_error(Status::kErrorParse, "%s", last_error_message());
}

namespace factory_detail {
template <class L, class = void>
struct HasCheckOptions : std::false_type {};
template <class L>
struct HasCheckOptions<L, std::void_t<decltype(std::declval<const L&>().check_options())>> : std::true_type {
};
} // namespace factory_detail

/// The frame every built-in layer factory shares: `out` checked, the base keys (name, trainable, dtype)
/// read, `read(Options*)` fills the options from the class's own keys (its errors returned as they are),
/// then the layer L(options, name, dtype) is made, its trainable flag set and, where L has check_options(),
/// its options checked (a bad option is kErrorParse) before it is handed out. `cls` is the class name errors
/// give (the document's: an alias names itself).
template <class L, class Options, class Read>
Status make_layer_from_config(const char* cls, const Json& config, std::unique_ptr<Layer>* out, Read&& read) {
  if (out == nullptr) {
    return ::culayers::detail::set_error(Status::kErrorNullPointer, "%s config: out: is null", cls);
  }
  std::string name;
  bool trainable = true;
  DType dtype = DType::kFloat32;
  if (Status s = read_base_config(config, &name, &trainable, &dtype); !ok(s)) {
    return s;
  }
  Options options;
  if (Status s = read(&options); !ok(s)) {
    return s;
  }
  auto layer = std::make_unique<L>(std::move(options), name, dtype);
  layer->set_trainable(trainable);
  if constexpr (factory_detail::HasCheckOptions<L>::value) {
    if (Status s = layer->check_options(); !ok(s)) {
      return as_parse_error();
    }
  }
  *out = std::move(layer);
  return Status::kSuccess;
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

template <class Options>
Status read_epsilon_center_scale(const char* cls, const Json& config, Options* o) {
  if (const auto it = config.find("epsilon"); it != config.end()) {
    if (!it->is_number() || !valid_epsilon(it->get<double>())) {
      return bad_key(cls, "epsilon", "is not a positive finite number");
    }
    o->epsilon = it->get<double>();
  }
  if (Status s = read_bool(cls, config, "center", &o->center); !ok(s)) {
    return s;
  }
  return read_bool(cls, config, "scale", &o->scale);
}

} // namespace config_util
} // namespace nn
CULAYERS_NAMESPACE_END

#endif // CULAYERS_LAYERS_CONFIG_UTIL_HPP_
