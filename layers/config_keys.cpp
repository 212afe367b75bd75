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

struct RuleSet {
  const KeyRule* rules;
  std::size_t count;
};

template <std::size_t N>
RuleSet rules(const KeyRule (&r)[N]) {
  return RuleSet{r, N};
}

/// The built-in classes' own keys (beyond kLayerBase); false for another class.
bool class_rules(const std::string& class_name, std::vector<RuleSet>* out) {
  if (class_name == "Masking") {
    out->push_back(rules(kMasking));
  } else if (class_name == "Dropout") {
    out->push_back(rules(kDropout));
  } else if (class_name == "DecayingDropout") {
    out->push_back(rules(kDecayingDropout));
  } else if (class_name == "GroupNormalization") {
    out->push_back(rules(kGroupNormalization));
    out->push_back(rules(kAffineTraining));
  } else if (class_name == "BatchNormalization") {
    out->push_back(rules(kBatchNormalization));
    out->push_back(rules(kAffineTraining));
  } else if (class_name == "MaskedGlobalPooling1D") {
    out->push_back(rules(kMaskedGlobalPooling1D));
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

/// Walks `object`'s keys against `sets` (and `also_used`, a registered class's get_config() keys).
Status check_object(const Json& object, const std::vector<RuleSet>& sets, const Json* also_used,
                    const std::string& path, const std::string& layer, const char* op, const char* what,
                    const ConfigReadOptions& options) {
  if (!object.is_object()) {
    return Status::kSuccess; // the readers report a malformed value themselves
  }
  for (auto it = object.begin(); it != object.end(); ++it) {
    const std::string& key = it.key();
    const KeyRule* rule = find_rule(sets, key);
    if (rule == nullptr && also_used != nullptr && also_used->is_object() && also_used->contains(key)) {
      continue;
    }
    if (rule != nullptr &&
        (rule->unapplied_unless == nullptr || *it == Json::parse(rule->unapplied_unless))) {
      continue;
    }
    const bool keras_key = rule != nullptr;
    const std::string where = key_path(path, key);
    if (options.unused_keys != nullptr) {
      options.unused_keys->push_back(UnusedConfigKey{where, layer, key, keras_key});
    }
    if (!keras_key && options.reject_unknown_keys) {
      return set_error(Status::kErrorParse, "%s: %s: unknown key of %s (neither culayers nor Keras reads it)",
                       op, where.c_str(), what);
    }
  }
  return Status::kSuccess;
}

} // namespace

Status check_document_keys(DocumentPart part, const Json& object, const std::string& path,
                           const std::string& layer, const char* op, const ConfigReadOptions& options) {
  std::vector<RuleSet> sets;
  const char* what = "";
  switch (part) {
  case DocumentPart::kModel:
    sets.push_back(rules(kModel));
    what = "the model";
    break;
  case DocumentPart::kModelConfig:
    sets.push_back(rules(kModelConfig));
    what = "the Sequential config";
    break;
  case DocumentPart::kLayerEntry:
    sets.push_back(rules(kLayerEntry));
    what = "a layer entry";
    break;
  case DocumentPart::kInputLayerConfig:
    sets.push_back(rules(kInputLayerConfig));
    what = "an InputLayer config";
    break;
  }
  return check_object(object, sets, nullptr, path, layer, op, what, options);
}

Status check_layer_config_keys(const Json& config, const Layer& layer, const std::string& path,
                               const char* op, const ConfigReadOptions& options) {
  std::vector<RuleSet> sets{rules(kLayerBase)};
  const bool builtin = class_rules(layer.class_name(), &sets);
  // A registered class (or a replaced built-in one) uses what its get_config() writes.
  const Json written = layer.get_config();
  const std::string what =
      layer.class_name() + " \"" + layer.name() + "\"" + (builtin ? "" : " (by its get_config())");
  return check_object(config, sets, &written, path, layer.name(), op, what.c_str(), options);
}

} // namespace config_util
} // namespace nn
CULAYERS_NAMESPACE_END
