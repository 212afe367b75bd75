// Which config keys from_json uses, and what it does with the others (ConfigReadOptions,
// culayers/nn/layer.hpp). The Keras key sets come from Keras 3's and tf.keras 2's get_config() of each class
// and from their model serialization (to_json()); a key either writes that culayers does not read is listed
// with the value at which leaving it unapplied changes nothing.
#include "layers/config_util.hpp"

#include <cctype>
#include <cstring>
#include <string>
#include <vector>

CULAYERS_NAMESPACE_BEGIN
namespace nn {
namespace config_util {

namespace {

using ::culayers::detail::set_error;

/// One key of a config object. `unapplied_unless` null: the key is used (culayers reads it, or it is a
/// Keras key that cannot change what culayers computes, such as "fused"); otherwise the JSON text of the
/// Keras default: the key is known but not applied, and reported when it holds anything else.
struct KeyRule {
  const char* key;
  const char* unapplied_unless;
};

// Every layer config (Keras's base Layer). "batch_input_shape" gives the model's input shape on the first
// layer (tf.keras 2); "dynamic" (older tf.keras 2) only forces eager execution; "activity_regularizer"
// (Keras 3, and tf.keras 2 subclasses) adds a training loss.
const KeyRule kLayerBase[] = {
    {"name", nullptr},    {"trainable", nullptr},
    {"dtype", nullptr},   {"batch_input_shape", nullptr},
    {"dynamic", nullptr}, {"activity_regularizer", "null"},
};

// Regularizers and constraints (GroupNormalization, BatchNormalization): they act in training steps.
const KeyRule kAffineTraining[] = {
    {"beta_regularizer", "null"},
    {"gamma_regularizer", "null"},
    {"beta_constraint", "null"},
    {"gamma_constraint", "null"},
};

const KeyRule kMasking[] = {{"mask_value", nullptr}};
const KeyRule kDropout[] = {{"rate", nullptr}, {"noise_shape", nullptr}, {"seed", nullptr}};
const KeyRule kDecayingDropout[] = {
    {"initial_keep_rate", nullptr}, {"decay_interval", nullptr}, {"decay_rate", nullptr},
    {"noise_shape", nullptr},       {"seed", nullptr},
};
const KeyRule kGroupNormalization[] = {
    {"groups", nullptr},
    {"axis", nullptr},
    {"epsilon", nullptr},
    {"center", nullptr},
    {"scale", nullptr},
    {"beta_initializer", nullptr},
    {"gamma_initializer", nullptr},
    {"activation", nullptr}, // culayers's fused activation
};
// "renorm", "virtual_batch_size" and "adjustment" are read (refused unless off). "renorm_clipping" and
// "renorm_momentum" matter only with renorm; "fused" picks an implementation. "synchronized" (Keras 3)
// synchronizes the batch statistics across devices in distributed training.
const KeyRule kBatchNormalization[] = {
    {"axis", nullptr},
    {"momentum", nullptr},
    {"epsilon", nullptr},
    {"center", nullptr},
    {"scale", nullptr},
    {"beta_initializer", nullptr},
    {"gamma_initializer", nullptr},
    {"moving_mean_initializer", nullptr},
    {"moving_variance_initializer", nullptr},
    {"renorm", nullptr},
    {"virtual_batch_size", nullptr},
    {"adjustment", nullptr},
    {"renorm_clipping", nullptr},
    {"renorm_momentum", nullptr},
    {"fused", nullptr},
    {"synchronized", "false"},
};
const KeyRule kMaskedGlobalPooling1D[] = {{"mode", nullptr}, {"axis", nullptr}};
const KeyRule kGlobalAveragePooling1D[] = {{"data_format", nullptr}, {"keepdims", nullptr}};

// The model document: tf.keras 2 writes "keras_version" and "backend"; Keras 3 "module", "registered_name",
// "build_config" (read for the input shape) and, once compiled, "compile_config" (optimizer and loss).
const KeyRule kModel[] = {
    {"class_name", nullptr}, {"config", nullptr},          {"build_config", nullptr},
    {"module", nullptr},     {"registered_name", nullptr}, {"keras_version", nullptr},
    {"backend", nullptr},    {"compile_config", nullptr},
};
// The Sequential's config. Keras 3 adds the model's own "trainable" and "dtype" (a model's "dtype" policy
// is not its layers'; each layer config has its own, and a frozen model's layers are written frozen).
const KeyRule kModelConfig[] = {
    {"name", nullptr},  {"layers", nullptr},   {"build_input_shape", nullptr},
    {"dtype", nullptr}, {"trainable", "true"},
};
// A layer entry of "layers" (Keras 3, and tf.keras 2 from 2.13: "module", "registered_name",
// "build_config").
const KeyRule kLayerEntry[] = {
    {"class_name", nullptr},      {"config", nullptr},       {"module", nullptr},
    {"registered_name", nullptr}, {"build_config", nullptr},
};
// An InputLayer's config. Its "dtype" is the input's, not a computation's (the first layer's dtype is the
// model's input dtype). Keras 3's "optional" allows a missing input; tf.keras 2 writes "type_spec" (and no
// shape) for an input made from a type spec.
const KeyRule kInputLayerConfig[] = {
    {"batch_shape", nullptr}, {"batch_input_shape", nullptr},
    {"sparse", nullptr},      {"ragged", nullptr},
    {"dtype", nullptr},       {"name", nullptr},
    {"optional", "false"},    {"type_spec", "null"},
};

// A serialized Keras object nested in a config (an initializer, a dtype policy): Keras 3 adds "module" and
// "registered_name" beside "class_name" and "config".
const KeyRule kKerasObject[] = {
    {"class_name", nullptr}, {"config", nullptr}, {"module", nullptr}, {"registered_name", nullptr}};
// Their configs by class (Keras 3's and tf.keras 2's get_config()): the initializer classes culayers reads
// (nn/initializer.hpp; another class is refused by the reader) and the dtype policies.
const KeyRule kConstantConfig[] = {{"value", nullptr}};
const KeyRule kRandomUniformConfig[] = {{"minval", nullptr}, {"maxval", nullptr}, {"seed", nullptr}};
const KeyRule kRandomNormalConfig[] = {{"mean", nullptr}, {"stddev", nullptr}, {"seed", nullptr}};
// GlorotUniform: Keras 3.15 added "input_axes" / "output_axes" (which axes count as fan-in and fan-out),
// null by default; culayers computes the fans of its [C] weights as Keras's default does.
const KeyRule kGlorotConfig[] = {{"seed", nullptr}, {"input_axes", "null"}, {"output_axes", "null"}};
const KeyRule kPolicyConfig[] = {{"name", nullptr}};
// A model's "build_config" (Keras 3): "input_shape" builds a Sequential.
const KeyRule kBuildConfig[] = {{"input_shape", nullptr}};

struct RuleSet {
  const KeyRule* rules;
  std::size_t count;
};

template <std::size_t N>
RuleSet rules(const KeyRule (&r)[N]) {
  return RuleSet{r, N};
}

/// The rules of the config of a nested Keras object of class `class_name` (Zeros and Ones: no keys);
/// false for a class without rules here.
bool object_config_rules(const std::string& class_name, RuleSet* out) {
  static const struct {
    const char* class_name;
    RuleSet rules;
  } kClasses[] = {
      {"Zeros", RuleSet{nullptr, 0}},
      {"Ones", RuleSet{nullptr, 0}},
      {"Constant", rules(kConstantConfig)},
      {"RandomUniform", rules(kRandomUniformConfig)},
      {"RandomNormal", rules(kRandomNormalConfig)},
      {"GlorotUniform", rules(kGlorotConfig)},
      {"DTypePolicy", rules(kPolicyConfig)},
      {"FloatDTypePolicy", rules(kPolicyConfig)},
      {"Policy", rules(kPolicyConfig)},
  };
  for (const auto& c : kClasses) {
    if (class_name == c.class_name) {
      *out = c.rules;
      return true;
    }
  }
  return false;
}

/// The built-in classes' own keys (beyond kLayerBase), by the class name the document gives (so a
/// registered replacement of a built-in class keeps the Keras keys of the class it replaces); false for
/// another class.
bool class_rules(const std::string& class_name, std::vector<RuleSet>* out) {
  if (class_name == "Masking") {
    out->push_back(rules(kMasking));
  } else if (class_name == "Dropout") {
    out->push_back(rules(kDropout));
  } else if (class_name == "DecayingDropout") {
    out->push_back(rules(kDecayingDropout));
  } else if (class_name == "GroupNormalization" || class_name == "Addons>GroupNormalization") {
    out->push_back(rules(kGroupNormalization));
    out->push_back(rules(kAffineTraining));
  } else if (class_name == "BatchNormalization") {
    out->push_back(rules(kBatchNormalization));
    out->push_back(rules(kAffineTraining));
  } else if (class_name == "MaskedGlobalPooling1D") {
    out->push_back(rules(kMaskedGlobalPooling1D));
  } else if (class_name == "GlobalAveragePooling1D") {
    out->push_back(rules(kGlobalAveragePooling1D));
  } else if (class_name == "MaskedFlatten") {
    // only the base keys
  } else {
    return false;
  }
  return true;
}

/// `path` + key: ".key" for a plain identifier, else `["key"]` (JSON-quoted).
std::string key_path(const std::string& path, const std::string& key) {
  bool plain = !key.empty();
  for (const char c : key) {
    plain = plain && (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_');
  }
  if (plain) {
    return path.empty() ? key : path + "." + key;
  }
  return path + "[" + Json(key).dump(-1, ' ', true, Json::error_handler_t::replace) + "]";
}

/// The rule for `key` in `sets`, or null.
const KeyRule* find_rule(const std::vector<RuleSet>& sets, const std::string& key) {
  for (const RuleSet& set : sets) {
    for (std::size_t i = 0; i < set.count; ++i) {
      if (key == set.rules[i].key) {
        return &set.rules[i];
      }
    }
  }
  return nullptr;
}

/// Whether a used key's value may be a serialized Keras object whose keys are checked too.
bool holds_keras_object(const std::string& key) {
  static constexpr char kSuffix[] = "_initializer";
  constexpr std::size_t n = sizeof(kSuffix) - 1;
  return key == "dtype" || (key.size() > n && key.compare(key.size() - n, n, kSuffix) == 0);
}

Status check_object(const Json& object, const std::vector<RuleSet>& sets, const Json* also_used,
                    const std::string& path, const std::string& layer, const char* op,
                    const std::string& what, const ConfigReadOptions& options);

/// A serialized Keras object at `path` (an initializer or a dtype policy): its own keys, and its config's
/// for a class with rules. Anything else (a name string, null) is passed over.
Status check_keras_object(const Json& value, const std::string& path, const std::string& layer,
                          const char* op, const ConfigReadOptions& options) {
  if (!value.is_object() || !value.contains("class_name") || !value["class_name"].is_string()) {
    return Status::kSuccess;
  }
  const std::string class_name = value["class_name"].get<std::string>();
  if (Status s = check_object(value, {rules(kKerasObject)}, nullptr, path, layer, op,
                              "a " + class_name + " object", options);
      !ok(s)) {
    return s;
  }
  RuleSet config_rules{};
  const auto config = value.find("config");
  if (config == value.end() || !object_config_rules(class_name, &config_rules)) {
    return Status::kSuccess;
  }
  return check_object(*config, {config_rules}, nullptr, key_path(path, "config"), layer, op,
                      "the config of a " + class_name + " object", options);
}

/// Walks `object`'s keys against `sets` and `also_used` (a layer's get_config(): what a registered class
/// writes, it uses), then into the Keras objects the used keys hold.
Status check_object(const Json& object, const std::vector<RuleSet>& sets, const Json* also_used,
                    const std::string& path, const std::string& layer, const char* op,
                    const std::string& what, const ConfigReadOptions& options) {
  if (!object.is_object()) {
    return Status::kSuccess; // the readers report a malformed value themselves
  }
  for (auto it = object.begin(); it != object.end(); ++it) {
    const std::string& key = it.key();
    const std::string where = key_path(path, key);
    const KeyRule* rule = find_rule(sets, key);
    const bool written = also_used != nullptr && also_used->is_object() && also_used->contains(key);
    if (written || (rule != nullptr &&
                    (rule->unapplied_unless == nullptr || *it == Json::parse(rule->unapplied_unless)))) {
      if (holds_keras_object(key)) {
        if (Status s = check_keras_object(*it, where, layer, op, options); !ok(s)) {
          return s;
        }
      }
      continue;
    }
    const bool keras_key = rule != nullptr;
    if (options.unused_keys != nullptr) {
      options.unused_keys->push_back(UnusedConfigKey{where, layer, key, keras_key});
    }
    if (!keras_key && options.reject_unknown_keys) {
      return set_error(Status::kErrorParse, "%s: %s: unknown key of %s (neither culayers nor Keras reads it)",
                       op, where.c_str(), what.c_str());
    }
  }
  return Status::kSuccess;
}

} // namespace

Status check_document_keys(DocumentPart part, const Json& object, const std::string& path,
                           const std::string& layer, const char* op, const ConfigReadOptions& options) {
  static const struct {
    RuleSet rules;
    const char* what;
  } kParts[] = {
      {rules(kModel), "the model"},
      {rules(kModelConfig), "the Sequential config"},
      {rules(kLayerEntry), "a layer entry"},
      {rules(kInputLayerConfig), "an InputLayer config"},
      {rules(kBuildConfig), "the model's build_config"},
  };
  const auto& p = kParts[static_cast<int>(part)];
  return check_object(object, {p.rules}, nullptr, path, layer, op, p.what, options);
}

Status check_layer_config_keys(const Json& config, const std::string& class_name, const Layer& layer,
                               const std::string& path, const char* op, const ConfigReadOptions& options) {
  std::vector<RuleSet> sets{rules(kLayerBase)};
  const bool builtin = class_rules(class_name, &sets);
  // The built-in layer class a document class reads as (Keras's classes read by another culayers class).
  const std::string builtin_layer = class_name == "GlobalAveragePooling1D"      ? "MaskedGlobalPooling1D"
                                    : class_name == "Addons>GroupNormalization" ? "GroupNormalization"
                                                                                : class_name;
  // A registered class, or a replacement of a built-in one, uses what its get_config() writes. A built-in
  // class's keys are its table alone: the layer it makes may write keys its document class does not have
  // (MaskedGlobalPooling1D's "mode" is no key of GlobalAveragePooling1D, whose factory ignores it).
  const bool replaced = !builtin || layer.class_name() != builtin_layer;
  const Json written = replaced ? layer.get_config() : Json();
  return check_object(config, sets, replaced ? &written : nullptr, path, layer.name(), op,
                      class_name + " \"" + layer.name() + "\"" + (builtin ? "" : " (by its get_config())"),
                      options);
}

} // namespace config_util
} // namespace nn
CULAYERS_NAMESPACE_END
