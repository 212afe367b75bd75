// Config keys from_json does not use (ConfigReadOptions, culayers/nn/layer.hpp; the model C API's options):
// every key Keras 3 and tf.keras 2 write is known, a misspelt key is listed (and refused when asked), a
// Keras key culayers does not apply is reported only when it holds other than its default, and a
// registered class's keys are what its get_config() writes.
#include "culayers/c/model.h"
#include "culayers/nn/layer.hpp"
#include "culayers/nn/normalization.hpp"
#include "culayers/nn/sequential.hpp"

#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

namespace nn = culayers::nn;
using culayers::ConstTensorView;
using culayers::Shape;
using culayers::Status;
using nn::Json;

/// "path (unknown)" / "path (Keras)" per unused key, with its layer: compact to compare.
std::vector<std::string> listed(const std::vector<nn::UnusedConfigKey>& keys) {
  std::vector<std::string> out;
  for (const nn::UnusedConfigKey& k : keys) {
    out.push_back(k.path + " @" + k.layer + (k.keras_key ? " (Keras)" : " (unknown)"));
  }
  return out;
}

Json keras3_initializer(const char* cls) {
  return {{"module", "keras.initializers"},
          {"class_name", cls},
          {"config", Json::object()},
          {"registered_name", nullptr}};
}

Json keras3_entry(const char* cls, Json config, Json input_shape) {
  return {{"module", "keras.layers"},
          {"class_name", cls},
          {"config", std::move(config)},
          {"registered_name", nullptr},
          {"build_config", {{"input_shape", std::move(input_shape)}}}};
}

/// A built Keras 3 model as model.to_json() writes it: every key of every class, with Keras's defaults.
Json keras3_model() {
  const Json policy = {{"module", "keras"},
                       {"class_name", "DTypePolicy"},
                       {"config", {{"name", "float32"}}},
                       {"registered_name", nullptr}};
  const Json shape = Json::array({nullptr, 6, 8});
  Json layers = Json::array();
  layers.push_back({{"class_name", "InputLayer"},
                    {"config",
                     {{"batch_shape", shape},
                      {"dtype", "float32"},
                      {"sparse", false},
                      {"ragged", false},
                      {"name", "input_layer"},
                      {"optional", false}}}});
  layers.push_back(keras3_entry(
      "Masking", {{"name", "masking"}, {"trainable", true}, {"dtype", policy}, {"mask_value", 0.0}}, shape));
  layers.push_back(keras3_entry("GroupNormalization",
                                {{"name", "group_normalization"},
                                 {"trainable", true},
                                 {"dtype", policy},
                                 {"groups", 4},
                                 {"axis", -1},
                                 {"epsilon", 0.001},
                                 {"center", true},
                                 {"scale", true},
                                 {"beta_initializer", keras3_initializer("Zeros")},
                                 {"gamma_initializer", keras3_initializer("Ones")},
                                 {"beta_regularizer", nullptr},
                                 {"gamma_regularizer", nullptr},
                                 {"beta_constraint", nullptr},
                                 {"gamma_constraint", nullptr}},
                                shape));
  layers.push_back(keras3_entry("Dropout",
                                {{"name", "dropout"},
                                 {"trainable", true},
                                 {"dtype", policy},
                                 {"rate", 0.25},
                                 {"seed", nullptr},
                                 {"noise_shape", nullptr}},
                                shape));
  layers.push_back(keras3_entry("BatchNormalization",
                                {{"name", "batch_normalization"},
                                 {"trainable", true},
                                 {"dtype", policy},
                                 {"axis", -1},
                                 {"momentum", 0.99},
                                 {"epsilon", 0.001},
                                 {"center", true},
                                 {"scale", true},
                                 {"beta_initializer", keras3_initializer("Zeros")},
                                 {"gamma_initializer", keras3_initializer("Ones")},
                                 {"moving_mean_initializer", keras3_initializer("Zeros")},
                                 {"moving_variance_initializer", keras3_initializer("Ones")},
                                 {"beta_regularizer", nullptr},
                                 {"gamma_regularizer", nullptr},
                                 {"beta_constraint", nullptr},
                                 {"gamma_constraint", nullptr},
                                 {"synchronized", false},
                                 {"renorm", false},
                                 {"renorm_clipping", nullptr},
                                 {"renorm_momentum", 0.99}},
                                shape));
  return {{"module", "keras"},
          {"class_name", "Sequential"},
          {"config", {{"name", "sequential"}, {"trainable", true}, {"dtype", policy}, {"layers", layers}}},
          {"registered_name", nullptr},
          {"build_config", {{"input_shape", shape}}},
          {"compile_config",
           {{"optimizer", "adam"}, {"loss", "mse"}, {"metrics", nullptr}, {"run_eagerly", false}}}};
}

/// A built tf.keras 2 model as model.to_json() writes it (no InputLayer entry: the first layer holds the
/// input shape; BatchNormalization's axis a list after build).
Json tf_keras2_model() {
  const Json zeros = {{"class_name", "Zeros"}, {"config", Json::object()}};
  const Json ones = {{"class_name", "Ones"}, {"config", Json::object()}};
  Json layers = Json::array();
  layers.push_back({{"class_name", "Masking"},
                    {"config",
                     {{"name", "masking"},
                      {"trainable", true},
                      {"batch_input_shape", Json::array({nullptr, 6, 8})},
                      {"dtype", "float32"},
                      {"mask_value", 0.0}}}});
  layers.push_back({{"class_name", "GroupNormalization"},
                    {"config",
                     {{"name", "group_normalization"},
                      {"trainable", true},
                      {"dtype", "float32"},
                      {"groups", 2},
                      {"axis", -1},
                      {"epsilon", 0.001},
                      {"center", true},
                      {"scale", true},
                      {"beta_initializer", zeros},
                      {"gamma_initializer", ones},
                      {"beta_regularizer", nullptr},
                      {"gamma_regularizer", nullptr},
                      {"beta_constraint", nullptr},
                      {"gamma_constraint", nullptr}}}});
  layers.push_back({{"class_name", "BatchNormalization"},
                    {"config",
                     {{"name", "batch_normalization"},
                      {"trainable", false},
                      {"dtype", "float32"},
                      {"axis", Json::array({2})},
                      {"momentum", 0.99},
                      {"epsilon", 0.001},
                      {"center", true},
                      {"scale", true},
                      {"beta_initializer", zeros},
                      {"gamma_initializer", ones},
                      {"moving_mean_initializer", zeros},
                      {"moving_variance_initializer", ones},
                      {"beta_regularizer", nullptr},
                      {"gamma_regularizer", nullptr},
                      {"beta_constraint", nullptr},
                      {"gamma_constraint", nullptr}}}});
  return {{"class_name", "Sequential"},
          {"config",
           {{"name", "sequential"}, {"layers", layers}, {"build_input_shape", Json::array({nullptr, 6, 8})}}},
          {"keras_version", "2.15.0"},
          {"backend", "tensorflow"}};
}

Status load(const Json& config, bool strict, std::vector<nn::UnusedConfigKey>* unused,
            std::unique_ptr<nn::Sequential>* out) {
  nn::ConfigReadOptions options;
  options.reject_unknown_keys = strict;
  options.unused_keys = unused;
  culayers::detail::clear_error();
  return nn::Sequential::from_json(config, options, out);
}

TEST(ConfigKeys, EveryKeyKerasWritesIsKnown) {
  struct Case {
    const char* what;
    Json config;
  };
  std::vector<Case> cases = {{"Keras 3", keras3_model()}, {"tf.keras 2", tf_keras2_model()}};
  // The tf.keras 2 entry format from 2.13 (module and registered_name beside class_name and config), an
  // older tf.keras 2's "dynamic", and keys culayers reads that Keras writes only when they are set.
  Json tf213 = tf_keras2_model();
  for (Json& l : tf213["config"]["layers"]) {
    l["module"] = "keras.layers";
    l["registered_name"] = nullptr;
    l["build_config"] = {{"input_shape", Json::array({nullptr, 6, 8})}};
    l["config"]["dynamic"] = false;
  }
  tf213["config"]["layers"][1]["config"]["activation"] = "linear";
  tf213["config"]["layers"][2]["config"]["virtual_batch_size"] = nullptr;
  tf213["config"]["layers"][2]["config"]["adjustment"] = nullptr;
  tf213["config"]["layers"][2]["config"]["fused"] = true;
  tf213["config"]["layers"][2]["config"]["renorm"] = false;
  tf213["config"]["layers"][2]["config"]["renorm_momentum"] = 0.99;
  cases.push_back({"tf.keras 2.13 entries", tf213});
  // TensorFlow Addons' GroupNormalization in a tf.keras 2 model: the same keys as Keras's.
  Json addons = tf_keras2_model();
  addons["config"]["layers"][1]["class_name"] = "Addons>GroupNormalization";
  cases.push_back({"Addons>GroupNormalization", addons});
  // culayers's own classes, every key present.
  Json own = {{"class_name", "Sequential"},
              {"config",
               {{"name", "own"},
                {"build_input_shape", Json::array({nullptr, 6, 8})},
                {"layers",
                 {{{"class_name", "DecayingDropout"},
                   {"config",
                    {{"name", "dd"},
                     {"initial_keep_rate", 0.9},
                     {"decay_interval", 4},
                     {"decay_rate", 0.5},
                     {"noise_shape", nullptr},
                     {"seed", 7}}}},
                  {{"class_name", "MaskedGlobalPooling1D"},
                   {"config", {{"name", "pool"}, {"mode", "max"}, {"axis", 1}}}}}}}}};
  cases.push_back({"culayers classes", own});
  Json flatten = own;
  flatten["config"]["layers"][1] = {{"class_name", "MaskedFlatten"}, {"config", {{"name", "flat"}}}};
  cases.push_back({"MaskedFlatten", flatten});

  for (const Case& c : cases) {
    std::vector<nn::UnusedConfigKey> unused{{"stale", "", "stale", false}}; // cleared first
    std::unique_ptr<nn::Sequential> model;
    ASSERT_EQ(load(c.config, true, &unused, &model), Status::kSuccess)
        << c.what << ": " << culayers::last_error_message();
    EXPECT_EQ(listed(unused), std::vector<std::string>{}) << c.what;
    // What culayers writes back is read back with every key used.
    const Json written = model->to_json();
    if (c.config["config"]["layers"].size() > 1 &&
        c.config["config"]["layers"][1]["class_name"] == "Addons>GroupNormalization") {
      EXPECT_EQ(written["config"]["layers"][1]["class_name"], "GroupNormalization") << c.what;
      Json keras = c.config;
      keras["config"]["layers"][1]["class_name"] = "GroupNormalization";
      std::unique_ptr<nn::Sequential> same;
      ASSERT_EQ(load(keras, true, nullptr, &same), Status::kSuccess) << culayers::last_error_message();
      EXPECT_EQ(same->to_json(), written) << "Addons' class reads as Keras's";
    }
    ASSERT_EQ(load(written, true, &unused, &model), Status::kSuccess)
        << c.what << " as culayers writes it: " << culayers::last_error_message();
    EXPECT_EQ(listed(unused), std::vector<std::string>{}) << c.what << " as culayers writes it";
  }
}

TEST(ConfigKeys, UnknownKeysAreListedAndRefusedWhenAsked) {
  // One misspelt key in each part of the document, with what a lenient load lists and a strict one says.
  struct Typo {
    std::function<void(Json&)> apply;
    const char* listed;
    const char* message;
  };
  // In reading order: the model's keys, its config's (and the objects they hold), build_config's, then each
  // layer entry's and its config's; each object's keys sorted.
  const Typo typos[] = {
      {[](Json& j) { j["a b"] = 1; }, "[\"a b\"] @ (unknown)", "[\"a b\"]: unknown key of the model"},
      {[](Json& j) { j["modul"] = "keras"; }, "modul @ (unknown)", "modul: unknown key of the model"},
      {[](Json& j) { j["config"]["dtype"]["config"]["nme"] = "float32"; }, // a dtype policy's config
       "config.dtype.config.nme @ (unknown)",
       "config.dtype.config.nme: unknown key of the config of a DTypePolicy object"},
      {[](Json& j) { j["config"]["nmae"] = "typo"; }, "config.nmae @ (unknown)",
       "config.nmae: unknown key of the Sequential config"},
      {[](Json& j) { j["build_config"]["input_shap"] = nullptr; }, "build_config.input_shap @ (unknown)",
       "build_config.input_shap: unknown key of the model's build_config"},
      {[](Json& j) { j["config"]["layers"][0]["modle"] = "keras.layers"; }, // the InputLayer's entry
       "config.layers[0].modle @input_layer (unknown)",
       "config.layers[0].modle: unknown key of a layer entry"},
      {[](Json& j) { j["config"]["layers"][0]["config"]["batch_shap"] = 1; },
       "config.layers[0].config.batch_shap @input_layer (unknown)",
       "config.layers[0].config.batch_shap: unknown key of an InputLayer config"},
      {[](Json& j) { j["config"]["layers"][2]["confg"] = Json::object(); },
       "config.layers[2].confg @group_normalization (unknown)",
       "config.layers[2].confg: unknown key of a layer entry"},
      {[](Json& j) { j["config"]["layers"][2]["config"]["epsilom"] = 0.1; },
       "config.layers[2].config.epsilom @group_normalization (unknown)",
       "config.layers[2].config.epsilom: unknown key of GroupNormalization \"group_normalization\""},
      {[](Json& j) {
         j["config"]["layers"][2]["config"]["gamma_initializer"] = {
             {"class_name", "RandomNormal"}, {"config", {{"mean", 1.0}, {"stdev", 0.1}}}};
       },
       "config.layers[2].config.gamma_initializer.config.stdev @group_normalization (unknown)",
       "config.layers[2].config.gamma_initializer.config.stdev: unknown key of the config of a RandomNormal "
       "object"},
      {[](Json& j) { j["config"]["layers"][4]["config"]["beta_initializer"]["modul"] = "keras"; },
       "config.layers[4].config.beta_initializer.modul @batch_normalization (unknown)",
       "config.layers[4].config.beta_initializer.modul: unknown key of a Zeros object"},
      {[](Json& j) { j["config"]["layers"][4]["config"]["moving mean"] = 0; }, // not an identifier
       "config.layers[4].config[\"moving mean\"] @batch_normalization (unknown)",
       "config.layers[4].config[\"moving mean\"]: unknown key of BatchNormalization \"batch_normalization\""},
  };
  Json config = keras3_model();
  std::vector<std::string> expected;
  for (const Typo& t : typos) {
    t.apply(config);
    expected.push_back(t.listed);
  }

  // Passed over by default (as before), and listed in document order.
  std::vector<nn::UnusedConfigKey> unused;
  std::unique_ptr<nn::Sequential> model;
  ASSERT_EQ(load(config, false, &unused, &model), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(listed(unused), expected);
  ASSERT_FALSE(unused.empty());
  EXPECT_EQ(unused[8].key, "epsilom");
  EXPECT_TRUE(model->built());
  // Without a list, the same load.
  ASSERT_EQ(load(config, false, nullptr, &model), Status::kSuccess) << culayers::last_error_message();

  // Refused when asked: the first unknown key, by path; nothing is made; the list holds what came before.
  model.reset();
  ASSERT_EQ(load(config, true, &unused, &model), Status::kErrorParse);
  EXPECT_EQ(
      std::string(culayers::last_error_message()),
      "sequential from_json: [\"a b\"]: unknown key of the model (neither culayers nor Keras reads it)");
  EXPECT_EQ(model, nullptr);
  EXPECT_EQ(listed(unused), std::vector<std::string>{expected[0]});
  // Each one alone is refused with its own path, and listed alone by a lenient load.
  for (const Typo& t : typos) {
    Json one = keras3_model();
    t.apply(one);
    model.reset();
    EXPECT_EQ(load(one, true, nullptr, &model), Status::kErrorParse) << t.message;
    EXPECT_NE(std::string(culayers::last_error_message()).find(t.message), std::string::npos)
        << culayers::last_error_message();
    EXPECT_EQ(model, nullptr) << t.message;
    ASSERT_EQ(load(one, false, &unused, &model), Status::kSuccess) << t.message;
    EXPECT_EQ(listed(unused), std::vector<std::string>{t.listed});
  }

  // The text reader clears the list too, also when the text is not JSON.
  unused = {{"stale", "", "stale", false}};
  nn::ConfigReadOptions options;
  options.unused_keys = &unused;
  EXPECT_EQ(nn::Sequential::from_json_string("{", options, &model), Status::kErrorParse);
  EXPECT_TRUE(unused.empty());
  ASSERT_EQ(nn::Sequential::from_json_string(config.dump(), options, &model), Status::kSuccess);
  EXPECT_EQ(listed(unused), expected);
}

TEST(ConfigKeys, KerasKeysNotAppliedAreReportedWhenSet) {
  const Json l2 = {{"module", "keras.regularizers"},
                   {"class_name", "L2"},
                   {"config", {{"l2", 0.01}}},
                   {"registered_name", nullptr}};
  const Json non_neg = {{"module", "keras.constraints"},
                        {"class_name", "NonNeg"},
                        {"config", Json::object()},
                        {"registered_name", nullptr}};
  Json config = keras3_model();
  config["config"]["trainable"] = false;
  config["config"]["layers"][0]["config"]["optional"] = true;
  config["config"]["layers"][1]["config"]["activity_regularizer"] = l2;
  config["config"]["layers"][2]["config"]["gamma_regularizer"] = l2;
  config["config"]["layers"][2]["config"]["beta_constraint"] = non_neg;
  config["config"]["layers"][4]["config"]["synchronized"] = true;
  config["config"]["layers"][4]["config"]["beta_regularizer"] = l2;
  // Inert at any value: no report.
  config["config"]["layers"][4]["config"]["renorm_momentum"] = 0.5;
  config["config"]["layers"][4]["config"]["renorm_clipping"] = {{"rmax", 3}};
  config["compile_config"]["loss"] = "mae";
  std::vector<nn::UnusedConfigKey> unused;
  std::unique_ptr<nn::Sequential> model;
  ASSERT_EQ(load(config, true, &unused, &model), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(listed(unused), (std::vector<std::string>{
                                "config.trainable @ (Keras)",
                                "config.layers[0].config.optional @input_layer (Keras)",
                                "config.layers[1].config.activity_regularizer @masking (Keras)",
                                "config.layers[2].config.beta_constraint @group_normalization (Keras)",
                                "config.layers[2].config.gamma_regularizer @group_normalization (Keras)",
                                "config.layers[4].config.beta_regularizer @batch_normalization (Keras)",
                                "config.layers[4].config.synchronized @batch_normalization (Keras)",
                            }));
  // A type spec InputLayer (tf.keras 2) gives no shape: reported, and the model waits for its first call.
  Json spec = keras3_model();
  spec.erase("build_config");
  spec["config"]["layers"][0]["config"] = {{"name", "in"}, {"type_spec", {{"class_name", "TensorSpec"}}}};
  for (Json& l : spec["config"]["layers"]) {
    l.erase("build_config");
  }
  ASSERT_EQ(load(spec, true, &unused, &model), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(listed(unused), std::vector<std::string>{"config.layers[0].config.type_spec @in (Keras)"});
  EXPECT_FALSE(model->built());
}

/// A layer class of the test's own: its get_config() writes "alpha" (read) and "synchronized" (as if it
/// implemented it).
class AlphaLayer final : public nn::Layer {
 public:
  AlphaLayer(std::string name, double alpha) : Layer("AlphaLayer", std::move(name)), alpha_(alpha) {}

 protected:
  Status do_call(const nn::CallContext&, const ConstTensorView& x, const ConstTensorView&,
                 nn::LayerOutput* out) override {
    out->y = x;
    return Status::kSuccess;
  }
  void add_config(Json& config) const override {
    config["alpha"] = alpha_;
    config["synchronized"] = true;
  }

 private:
  double alpha_;
};

Status make_alpha_layer(const Json& config, std::unique_ptr<nn::Layer>* out) {
  std::string name;
  bool trainable = true;
  culayers::DType dtype = culayers::DType::kFloat32;
  if (Status s = nn::read_base_config(config, &name, &trainable, &dtype); !culayers::ok(s)) {
    return s;
  }
  *out = std::make_unique<AlphaLayer>(name, config.value("alpha", 1.0));
  return Status::kSuccess;
}

TEST(ConfigKeys, RegisteredClassesUseTheKeysTheirGetConfigWrites) {
  ASSERT_EQ(nn::register_layer_class("AlphaLayer", make_alpha_layer), Status::kSuccess);
  const Json json = {{"class_name", "AlphaLayer"},
                     {"module", "my_layers"},
                     {"config", {{"name", "a"}, {"alpha", 2.0}, {"beta", 3.0}, {"trainable", true}}}};
  std::vector<nn::UnusedConfigKey> unused;
  nn::ConfigReadOptions options;
  options.unused_keys = &unused;
  std::unique_ptr<nn::Layer> layer;
  ASSERT_EQ(nn::layer_from_json(json, options, &layer), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(listed(unused), std::vector<std::string>{"config.beta @a (unknown)"});
  options.reject_unknown_keys = true;
  layer.reset();
  EXPECT_EQ(nn::layer_from_json(json, options, &layer), Status::kErrorParse);
  EXPECT_EQ(std::string(culayers::last_error_message()),
            "layer_from_json: config.beta: unknown key of AlphaLayer \"a\" (by its get_config()) (neither "
            "culayers nor Keras reads it)");
  EXPECT_EQ(layer, nullptr);
  Json known = json;
  known["config"].erase("beta");
  known["config"]["activity_regularizer"] = nullptr; // a base Keras key at its default
  ASSERT_EQ(nn::layer_from_json(known, options, &layer), Status::kSuccess) << culayers::last_error_message();
  EXPECT_TRUE(unused.empty());
  // A registered class replacing a built-in one: the Keras keys of the class the document names, and what
  // its get_config() writes (here "synchronized", which Keras's BatchNormalization has and culayers's does
  // not apply: the replacement writes it, so it is used).
  struct Restore {
    ~Restore() {
      EXPECT_EQ(nn::register_layer_class("BatchNormalization", &nn::BatchNormalization::from_config),
                Status::kSuccess);
    }
  } restore;
  ASSERT_EQ(nn::register_layer_class("BatchNormalization", make_alpha_layer), Status::kSuccess);
  const Json replaced = {{"class_name", "BatchNormalization"},
                         {"config",
                          {{"name", "r"},
                           {"alpha", 2.0},
                           {"momentum", 0.9},
                           {"beta_regularizer", {{"class_name", "L2"}}},
                           {"synchronized", true},
                           {"gamma", 1}}}};
  options.reject_unknown_keys = false;
  ASSERT_EQ(nn::layer_from_json(replaced, options, &layer), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(layer->class_name(), "AlphaLayer");
  EXPECT_EQ(listed(unused),
            (std::vector<std::string>{"config.beta_regularizer @r (Keras)", "config.gamma @r (unknown)"}));
  options.reject_unknown_keys = true;
  EXPECT_EQ(nn::layer_from_json(replaced, options, &layer), Status::kErrorParse);
  EXPECT_NE(std::string(culayers::last_error_message())
                .find("config.gamma: unknown key of BatchNormalization \"r\""),
            std::string::npos)
      << culayers::last_error_message();

  // A built-in class alone: the entry's and the config's keys; an entry without a config.
  options.reject_unknown_keys = false;
  const Json no_config = {{"class_name", "Masking"}, {"confg", {{"mask_value", 1.0}}}};
  ASSERT_EQ(nn::layer_from_json(no_config, options, &layer), Status::kSuccess);
  EXPECT_EQ(listed(unused), std::vector<std::string>{"confg @" + layer->name() + " (unknown)"});
  // A null out is refused, and the list is cleared all the same.
  EXPECT_EQ(nn::layer_from_json(no_config, options, nullptr), Status::kErrorNullPointer);
  EXPECT_TRUE(unused.empty());
  const Json dropout = {{"class_name", "Dropout"},
                        {"registred_name", nullptr},
                        {"config", {{"name", "d"}, {"rate", 0.5}, {"noise_shap", nullptr}}}};
  ASSERT_EQ(nn::layer_from_json(dropout, options, &layer), Status::kSuccess);
  EXPECT_EQ(listed(unused),
            (std::vector<std::string>{"registred_name @d (unknown)", "config.noise_shap @d (unknown)"}));
}

std::string unused_text(culayersModel_t model) {
  std::size_t length = 0;
  EXPECT_EQ(culayersModelGetUnusedConfigKeys(model, nullptr, 0, &length), CULAYERS_STATUS_SUCCESS);
  std::string text(length + 1, '\0');
  EXPECT_EQ(culayersModelGetUnusedConfigKeys(model, text.data(), text.size(), nullptr),
            CULAYERS_STATUS_SUCCESS);
  text.resize(length);
  return text;
}

TEST(ConfigKeys, CApiOptionsRefuseOrListUnusedKeys) {
  Json config = keras3_model();
  config["config"]["layers"][2]["config"]["epsilom"] = 0.1;
  config["config"]["layers"][2]["config"]["gamma_regularizer"] = {{"class_name", "L2"}};
  const std::string text = config.dump();

  culayersModelOptions_t options;
  std::memset(&options, 0x5a, sizeof(options));
  culayersModelOptionsInit(&options);
  EXPECT_EQ(options.reject_unknown_config_keys, 0);
  culayersModelOptionsInit(nullptr); // a no-op

  culayersModel_t model = nullptr;
  ASSERT_EQ(culayersModelCreateWithOptions(&model, text.c_str(), nullptr, &options, nullptr),
            CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  EXPECT_EQ(unused_text(model), "config.layers[2].config.epsilom (unknown)\n"
                                "config.layers[2].config.gamma_regularizer (Keras, not applied)\n");
  // Truncated into a small buffer, with the full length.
  char small[8];
  std::size_t length = 0;
  ASSERT_EQ(culayersModelGetUnusedConfigKeys(model, small, sizeof(small), &length), CULAYERS_STATUS_SUCCESS);
  EXPECT_EQ(std::string(small), "config.");
  EXPECT_EQ(length, unused_text(model).size());
  EXPECT_EQ(culayersModelGetUnusedConfigKeys(nullptr, small, sizeof(small), &length),
            CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayersModelGetUnusedConfigKeys(model, nullptr, 4, &length), CULAYERS_STATUS_NULL_POINTER);
  culayersModelDestroy(model);

  // The plain create is the lenient one and lists the same.
  model = nullptr;
  ASSERT_EQ(culayersModelCreate(&model, text.c_str(), nullptr, nullptr), CULAYERS_STATUS_SUCCESS);
  EXPECT_NE(unused_text(model).find("epsilom (unknown)"), std::string::npos);
  culayersModelDestroy(model);

  // Refused when asked; *model untouched.
  options.reject_unknown_config_keys = 1;
  culayersModel_t untouched = reinterpret_cast<culayersModel_t>(static_cast<std::uintptr_t>(0x1234));
  EXPECT_EQ(culayersModelCreateWithOptions(&untouched, text.c_str(), nullptr, &options, nullptr),
            CULAYERS_STATUS_PARSE);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("config.layers[2].config.epsilom: unknown key"),
            std::string::npos)
      << culayersGetLastErrorMessage();
  EXPECT_EQ(untouched, reinterpret_cast<culayersModel_t>(static_cast<std::uintptr_t>(0x1234)));
  EXPECT_EQ(culayersModelCreateWithOptions(nullptr, text.c_str(), nullptr, &options, nullptr),
            CULAYERS_STATUS_NULL_POINTER);

  // From a file, both ways.
  const std::string path =
      ::testing::TempDir() + "culayers_config_keys_" + std::to_string(::getpid()) + ".json";
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(text.data(), 1, text.size(), f), text.size());
    std::fclose(f);
  }
  EXPECT_EQ(culayersModelCreateFromFileWithOptions(&untouched, path.c_str(), nullptr, &options, nullptr),
            CULAYERS_STATUS_PARSE);
  options.reject_unknown_config_keys = 0;
  model = nullptr;
  ASSERT_EQ(culayersModelCreateFromFileWithOptions(&model, path.c_str(), nullptr, &options, nullptr),
            CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  EXPECT_NE(unused_text(model).find("epsilom (unknown)"), std::string::npos);
  culayersModelDestroy(model);
  std::remove(path.c_str());
  EXPECT_EQ(culayersModelCreateFromFileWithOptions(&untouched, path.c_str(), nullptr, nullptr, nullptr),
            CULAYERS_STATUS_IO);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

} // namespace
