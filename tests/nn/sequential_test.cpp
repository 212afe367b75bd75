// Sequential (culayers/nn/sequential.hpp) and the model C API (culayers/c/model.h): mask propagation,
// summary, JSON configs and safetensors weights round trips, phase and trainable rules, and the graph
// capture equivalence of a whole training-phase call (N replays == N eager calls).
#include "culayers/nn/sequential.hpp"

#include "culayers/c/model.h"
#include "culayers/nn/core_layers.hpp"
#include "culayers/nn/layer.hpp"
#include "culayers/nn/safetensors.hpp"

#include "tests/support/test_support.hpp"

#include <cuda_fp16.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

namespace nn = culayers::nn;
using culayers::ConstTensorView;
using culayers::DType;
using culayers::Shape;
using culayers::Status;
using culayers::test::DeviceBuffer;
using nn::Json;

constexpr int kB = 3;
constexpr int kT = 6;
constexpr int kF = 8;

/// The demo's stack: Masking -> GroupNormalization(SiLU) -> DecayingDropout -> BatchNormalization ->
/// MaskedGlobalPooling1D, as a Keras-layout config. Names are fixed so two models share weight names.
Json demo_config(const std::string& name = "demo") {
  Json layers = Json::array();
  layers.push_back({{"class_name", "Masking"}, {"config", {{"name", "masking"}, {"mask_value", 0.0}}}});
  layers.push_back({{"class_name", "GroupNormalization"},
                    {"config", {{"name", "gn"}, {"groups", 4}, {"activation", "silu"}, {"epsilon", 1e-3}}}});
  layers.push_back({{"class_name", "DecayingDropout"},
                    {"config",
                     {{"name", "dd"},
                      {"initial_keep_rate", 0.9},
                      {"decay_interval", 4},
                      {"decay_rate", 0.5},
                      {"seed", 1234}}}});
  layers.push_back({{"class_name", "BatchNormalization"}, {"config", {{"name", "bn"}, {"momentum", 0.8}}}});
  layers.push_back(
      {{"class_name", "MaskedGlobalPooling1D"}, {"config", {{"name", "pool"}, {"mode", "mean"}}}});
  return Json{{"class_name", "Sequential"}, {"config", {{"name", name}, {"layers", layers}}}};
}

Json with_build_shape(Json config) {
  config["config"]["build_input_shape"] = Json::array({nullptr, kT, kF});
  return config;
}

/// A padded batch: row b has lengths[b] valid steps of N(0, 1) + 2 values; padded steps are exactly 0
/// (Masking's mask_value).
std::vector<float> padded_batch(std::mt19937_64& rng, const std::vector<int>& lengths) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(kB) * kT * kF, 0.0f);
  for (int b = 0; b < kB; ++b) {
    for (int t = 0; t < lengths[static_cast<std::size_t>(b)]; ++t) {
      for (int f = 0; f < kF; ++f) {
        x[(static_cast<std::size_t>(b) * kT + t) * kF + f] = normal(rng) + 2.0f;
      }
    }
  }
  return x;
}

std::unique_ptr<nn::Sequential> make_model(const Json& config) {
  std::unique_ptr<nn::Sequential> model;
  const Status s = nn::Sequential::from_json(config, &model);
  EXPECT_EQ(s, Status::kSuccess) << culayers::last_error_message();
  return model;
}

std::vector<std::uint8_t> read_back(const ConstTensorView& v) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(v.shape().numel()) *
                                culayers::dtype_size(v.dtype()));
  if (!out.empty()) {
    EXPECT_EQ(cudaMemcpy(out.data(), v.data(), out.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  }
  return out;
}

std::vector<std::uint8_t> weight_bytes(nn::Sequential& model, const std::string& layer,
                                       const std::string& weight) {
  nn::Layer* l = model.find_layer(layer);
  EXPECT_NE(l, nullptr) << layer;
  if (l == nullptr) {
    return {};
  }
  EXPECT_EQ(l->sync_weights(nullptr), Status::kSuccess);
  const nn::Weight* w = l->find_weight(weight);
  EXPECT_NE(w, nullptr) << layer << "/" << weight;
  if (w == nullptr) {
    return {};
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return read_back(w->value.view());
}

/// A dropout layer's whole device state (culayers/dropout.hpp): the schedule and current call, and the
/// record of the most recent forward (last_*), so a forward that ran changes it as an update does.
std::vector<std::uint8_t> dropout_state(nn::Sequential& model, const std::string& layer) {
  culayers::dropout::DropoutState s{};
  nn::Layer* l = model.find_layer(layer);
  Status st = Status::kErrorInvalidValue;
  if (auto* dd = dynamic_cast<nn::DecayingDropout*>(l)) {
    st = dd->read_state(&s, nullptr);
  } else if (auto* d = dynamic_cast<nn::Dropout*>(l)) {
    st = d->read_state(&s, nullptr);
  }
  EXPECT_EQ(st, Status::kSuccess) << layer << ": " << culayers::last_error_message();
  std::vector<std::uint8_t> bytes(sizeof(s));
  std::memcpy(bytes.data(), &s, sizeof(s));
  return bytes;
}

// The directories temp_path created, removed when the test binary exits (each run used to leave three
// behind in the system's temporary directory).
class TempDirs {
 public:
  ~TempDirs() {
    for (const std::filesystem::path& d : dirs_) {
      std::error_code ignored;
      std::filesystem::remove_all(d, ignored);
    }
  }
  void add(const std::filesystem::path& d) { dirs_.insert(d); }

 private:
  std::set<std::filesystem::path> dirs_;
};

std::string temp_path(const std::string& leaf) {
  static TempDirs created;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("culayers_seq_" + std::to_string(::getpid()) + "_" + info->name());
  std::filesystem::create_directories(dir);
  created.add(dir);
  return (dir / leaf).string();
}

struct Inputs {
  std::vector<float> host;
  DeviceBuffer<float> x;
  ConstTensorView view;
};

Inputs make_inputs(std::mt19937_64& rng, const std::vector<int>& lengths = {kT, 4, 1}) {
  Inputs in{padded_batch(rng, lengths), DeviceBuffer<float>(static_cast<std::size_t>(kB) * kT * kF), {}};
  in.x.upload(in.host);
  in.view = ConstTensorView::contiguous(in.x.get(), DType::kFloat32, Shape{kB, kT, kF});
  return in;
}

TEST(Sequential, AddRejectsNullDuplicatesAndLateLayers) {
  nn::Sequential model("m");
  EXPECT_EQ(model.add(nullptr), Status::kErrorNullPointer);
  std::unique_ptr<nn::Layer> a;
  ASSERT_EQ(nn::layer_from_json({{"class_name", "MaskedFlatten"}, {"config", {{"name", "flat"}}}}, &a),
            Status::kSuccess);
  ASSERT_EQ(model.add(std::move(a)), Status::kSuccess);
  std::unique_ptr<nn::Layer> b;
  ASSERT_EQ(nn::layer_from_json({{"class_name", "MaskedFlatten"}, {"config", {{"name", "flat"}}}}, &b),
            Status::kSuccess);
  EXPECT_EQ(model.add(std::move(b)), Status::kErrorInvalidValue);
  EXPECT_NE(std::string(culayers::last_error_message()).find("\"flat\""), std::string::npos);
  ASSERT_EQ(model.build(Shape{2, 3, 4}), Status::kSuccess);
  std::unique_ptr<nn::Layer> c;
  ASSERT_EQ(nn::layer_from_json({{"class_name", "MaskedFlatten"}, {"config", {{"name", "flat2"}}}}, &c),
            Status::kSuccess);
  EXPECT_EQ(model.add(std::move(c)), Status::kErrorInvalidValue);
  EXPECT_EQ(model.size(), 1u);

  nn::Sequential empty("empty");
  nn::LayerOutput out{};
  DeviceBuffer<float> x(8);
  EXPECT_EQ(empty.call(nullptr, ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 4}), {}, &out),
            Status::kErrorInvalidValue);
  EXPECT_EQ(empty.build(Shape{2, 4}), Status::kErrorInvalidValue);
}

TEST(Sequential, DefaultNamesFollowKeras) {
  nn::Sequential a;
  nn::Sequential b;
  EXPECT_EQ(a.name().rfind("sequential", 0), 0u);
  EXPECT_NE(a.name(), b.name());
}

TEST(Sequential, SummaryListsLayersShapesAndParameterCounts) {
  auto model = make_model(with_build_shape(demo_config()));
  ASSERT_TRUE(model && model->built());
  // GroupNormalization: gamma + beta (8 + 8); BatchNormalization: gamma, beta, moving mean/variance (4 x 8);
  // DecayingDropout: its iterations counter (1).
  EXPECT_EQ(model->count_params(), 16 + 32 + 1);
  EXPECT_EQ(model->count_trainable_params(), 16 + 16);
  const std::string s = model->summary();
  for (const char* needle :
       {"Model: \"demo\"", "masking (Masking)", "gn (GroupNormalization)", "dd (DecayingDropout)",
        "bn (BatchNormalization)", "pool (MaskedGlobalPooling1D)", "(None, 6, 8)", "(None, 8)",
        "Total params: 49", "Trainable params: 32", "Non-trainable params: 17", "Layer (type)",
        "Output Shape", "Param #"}) {
    EXPECT_NE(s.find(needle), std::string::npos) << needle << "\n" << s;
  }
  std::vector<Shape> shapes;
  ASSERT_EQ(model->compute_output_shapes(Shape{5, kT, kF}, &shapes), Status::kSuccess);
  ASSERT_EQ(shapes.size(), 5u);
  EXPECT_EQ(shapes.back(), (Shape{5, kF}));
}

TEST(Sequential, MaskPropagatesAndPaddedStepsDoNotMatter) {
  // Masking -> MaskedGlobalPooling1D(mean): Masking's mask reaches the pooling, which averages only the
  // valid steps (a row with none gives the fill value 0) and consumes the mask.
  Json cfg = {
      {"class_name", "Sequential"},
      {"config",
       {{"name", "pool_only"},
        {"layers",
         {{{"class_name", "Masking"}, {"config", {{"name", "m"}}}},
          {{"class_name", "MaskedGlobalPooling1D"}, {"config", {{"name", "p"}, {"mode", "mean"}}}}}}}}};
  auto model = make_model(cfg);
  ASSERT_TRUE(model);
  auto rng = culayers::test::rng_for_test();
  const std::vector<int> lengths = {kT, 4, 0};
  Inputs in = make_inputs(rng, lengths);
  nn::LayerOutput out{};
  ASSERT_EQ(model->call(nullptr, in.view, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(out.mask.data(), nullptr); // the pooling consumed the mask
  ASSERT_EQ(out.y.shape(), (Shape{kB, kF}));
  std::vector<float> y(static_cast<std::size_t>(kB) * kF);
  ASSERT_EQ(cudaMemcpy(y.data(), out.y.data(), y.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int b = 0; b < kB; ++b) {
    for (int f = 0; f < kF; ++f) {
      double sum = 0;
      for (int t = 0; t < lengths[static_cast<std::size_t>(b)]; ++t) {
        sum += in.host[(static_cast<std::size_t>(b) * kT + t) * kF + f];
      }
      const int n = lengths[static_cast<std::size_t>(b)];
      const double want = n == 0 ? 0.0 : sum / n; // an empty row gives the fill value 0
      EXPECT_NEAR(y[static_cast<std::size_t>(b) * kF + f], want, 1e-5) << b << "," << f;
    }
  }
}

TEST(Sequential, ConfigAndWeightsRoundTripGiveIdenticalOutputs) {
  auto model = make_model(demo_config("original"));
  ASSERT_TRUE(model);
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  nn::CallContext train{};
  train.phase = nn::Phase::kTraining;
  nn::LayerOutput out{};
  for (int i = 0; i < 3; ++i) { // moves the counter and the moving statistics away from their initial values
    ASSERT_EQ(model->call(train, in.view, {}, &out), Status::kSuccess) << culayers::last_error_message();
  }
  ASSERT_EQ(model->call(nullptr, in.view, {}, &out), Status::kSuccess);
  const std::vector<std::uint8_t> want = read_back(out.y);

  const Json saved = model->to_json();
  EXPECT_EQ(saved["class_name"], "Sequential");
  EXPECT_EQ(saved["config"]["build_input_shape"], Json::array({nullptr, kT, kF}));
  const std::string weights = temp_path("w.safetensors");
  ASSERT_EQ(model->save_weights(weights), Status::kSuccess) << culayers::last_error_message();

  std::unique_ptr<nn::Sequential> loaded;
  ASSERT_EQ(nn::Sequential::from_json_string(saved.dump(2), &loaded), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(loaded->to_json(), saved); // the config round-trips exactly
  ASSERT_EQ(loaded->load_weights(weights), Status::kSuccess) << culayers::last_error_message();
  for (const char* w : {"moving_mean", "moving_variance", "gamma", "beta"}) {
    EXPECT_EQ(weight_bytes(*loaded, "bn", w), weight_bytes(*model, "bn", w)) << w;
  }
  EXPECT_EQ(weight_bytes(*loaded, "dd", "iterations"), weight_bytes(*model, "dd", "iterations"));
  nn::LayerOutput out2{};
  ASSERT_EQ(loaded->call(nullptr, in.view, {}, &out2), Status::kSuccess);
  EXPECT_EQ(read_back(out2.y), want);

  // Training continues from the loaded counter: the next training call of both models draws the same
  // dropout mask and moves the statistics identically.
  ASSERT_EQ(model->call(train, in.view, {}, &out), Status::kSuccess);
  ASSERT_EQ(loaded->call(train, in.view, {}, &out2), Status::kSuccess);
  EXPECT_EQ(read_back(out2.y), read_back(out.y));
  EXPECT_EQ(weight_bytes(*loaded, "bn", "moving_mean"), weight_bytes(*model, "bn", "moving_mean"));
}

TEST(Sequential, LoadWeightsChecksEverythingBeforeWriting) {
  auto model = make_model(with_build_shape(demo_config()));
  ASSERT_TRUE(model);
  nn::SafetensorsFile good;
  ASSERT_EQ(model->get_weights(&good), Status::kSuccess);
  ASSERT_NE(good.find("bn/moving_variance"), nullptr);
  ASSERT_NE(good.find("gn/gamma"), nullptr);
  ASSERT_NE(good.find("dd/iterations"), nullptr);
  const std::vector<std::uint8_t> before = weight_bytes(*model, "gn", "gamma");

  auto expect_rejected = [&](nn::SafetensorsFile file, Status want, const char* needle) {
    // Make gn/gamma different so a partial write would show.
    if (auto* t = const_cast<nn::SafetensorsTensor*>(file.find("gn/gamma"));
        t != nullptr && t->dtype == DType::kFloat32) {
      for (auto& byte : t->data) {
        byte = 0x3f;
      }
    }
    EXPECT_EQ(model->set_weights(file), want) << needle;
    EXPECT_NE(std::string(culayers::last_error_message()).find(needle), std::string::npos)
        << culayers::last_error_message();
    EXPECT_EQ(weight_bytes(*model, "gn", "gamma"), before) << needle;
  };
  {
    nn::SafetensorsFile f = good;
    f.tensors.erase(f.tensors.begin() + static_cast<std::ptrdiff_t>(f.find("bn/beta") - f.tensors.data()));
    expect_rejected(f, Status::kErrorInvalidValue, "bn/beta");
  }
  {
    nn::SafetensorsFile f = good;
    auto* t = const_cast<nn::SafetensorsTensor*>(f.find("bn/beta"));
    t->dtype = DType::kFloat16;
    t->data.resize(t->data.size() / 2);
    expect_rejected(f, Status::kErrorInvalidDType, "bn/beta");
  }
  {
    nn::SafetensorsFile f = good;
    auto* t = const_cast<nn::SafetensorsTensor*>(f.find("bn/beta"));
    t->shape = Shape{kF / 2, 2};
    expect_rejected(f, Status::kErrorInvalidShape, "bn/beta");
  }
  {
    nn::SafetensorsFile f = good;
    nn::SafetensorsTensor extra;
    extra.name = "bn/unexpected";
    extra.dtype = DType::kFloat32;
    extra.shape = Shape{1};
    extra.data.resize(4);
    f.tensors.push_back(extra);
    expect_rejected(f, Status::kErrorInvalidValue, "bn/unexpected");
  }
  {
    // A name twice (possible in a file built in code; the reader rejects it in files).
    nn::SafetensorsFile f = good;
    f.tensors.push_back(*f.find("gn/gamma"));
    expect_rejected(f, Status::kErrorInvalidValue, "\"gn/gamma\" appears twice");
  }
  {
    // A negative counter is rejected before anything is written (DecayingDropout's check_weight_data).
    nn::SafetensorsFile f = good;
    auto* t = const_cast<nn::SafetensorsTensor*>(f.find("dd/iterations"));
    const std::int64_t negative = -3;
    std::memcpy(t->data.data(), &negative, sizeof(negative));
    expect_rejected(f, Status::kErrorInvalidValue, "iterations");
  }
  // A file that is not safetensors at all.
  const std::string bad = temp_path("bad.safetensors");
  {
    std::ofstream o(bad, std::ios::binary);
    o << "this is not a safetensors file";
  }
  EXPECT_EQ(model->load_weights(bad), Status::kErrorParse);
  EXPECT_EQ(model->load_weights(temp_path("missing.safetensors")), Status::kErrorIO);
  EXPECT_EQ(weight_bytes(*model, "gn", "gamma"), before);

  nn::Sequential unbuilt("unbuilt");
  EXPECT_EQ(unbuilt.set_weights(good), Status::kErrorInvalidValue);
}

// A build that fails leaves no layer built (GroupNormalization(groups = 3) cannot take 8 channels): a
// later build for a shape every layer takes succeeds, and one that the first layer alone accepted is still
// refused. The same through a first call with the wrong shape.
TEST(Sequential, FailedBuildUnbuildsItsLayers) {
  const auto gn = [](const char* name, int groups) {
    return Json{{"class_name", "GroupNormalization"}, {"config", {{"name", name}, {"groups", groups}}}};
  };
  const Json cfg = {{"class_name", "Sequential"},
                    {"config", {{"name", "two"}, {"layers", {gn("gn0", 4), gn("gn1", 3)}}}}};
  auto model = make_model(cfg);
  ASSERT_TRUE(model && !model->built());
  EXPECT_EQ(model->build(Shape{2, 5, 8}), Status::kErrorInvalidShape); // gn1: 3 groups for 8 channels
  EXPECT_FALSE(model->built());
  EXPECT_FALSE(model->find_layer("gn0")->built());
  EXPECT_TRUE(model->find_layer("gn0")->weights().empty());
  ASSERT_EQ(model->build(Shape{2, 5, 12}), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(model->find_layer("gn0")->built_shape(), (Shape{2, 5, 12}));
  EXPECT_EQ(model->find_layer("gn0")->find_weight("gamma")->value.shape(), (Shape{12}));
  EXPECT_EQ(model->to_json()["config"]["build_input_shape"], Json::array({nullptr, 5, 12}));

  // The first call builds: a wrong shape fails and leaves the model unbuilt, then the right one works.
  auto again = make_model(cfg);
  ASSERT_TRUE(again);
  std::vector<float> host(static_cast<std::size_t>(2 * 5 * 12), 1.0f);
  DeviceBuffer<float> x(host);
  nn::LayerOutput out{};
  // (8 channels: gn0 builds, gn1's 3 groups do not divide them, so gn0's build is undone.)
  EXPECT_NE(
      again->call(nullptr, ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 6, 8}), {}, &out),
      Status::kSuccess);
  EXPECT_FALSE(again->find_layer("gn0")->built());
  EXPECT_EQ(
      again->call(nullptr, ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{2, 5, 12}), {}, &out),
      Status::kSuccess)
      << culayers::last_error_message();

  // A first call whose build succeeds but whose checks then fail (an int32 input: only floating inputs
  // are cast) undoes that build too: the model is not left built for the rejected shape.
  const Json bn_cfg = {
      {"class_name", "Sequential"},
      {"config",
       {{"name", "bn_only"},
        {"layers", {{{"class_name", "BatchNormalization"}, {"config", {{"name", "bn"}}}}}}}}};
  auto bn_model = make_model(bn_cfg);
  ASSERT_TRUE(bn_model);
  DeviceBuffer<std::int32_t> ints(64);
  EXPECT_EQ(
      bn_model->call(nullptr, ConstTensorView::contiguous(ints.get(), DType::kInt32, Shape{4, 16}), {}, &out),
      Status::kErrorInvalidDType);
  EXPECT_FALSE(bn_model->built());
  EXPECT_FALSE(bn_model->find_layer("bn")->built());
  std::vector<nn::LayerTiming> timings;
  EXPECT_EQ(bn_model->profile(nn::CallContext{},
                              ConstTensorView::contiguous(ints.get(), DType::kInt32, Shape{4, 16}), {}, &out,
                              &timings),
            Status::kErrorInvalidDType); // profile() likewise
  EXPECT_FALSE(bn_model->built());
  EXPECT_EQ(
      bn_model->call(nullptr, ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{4, 8}), {}, &out),
      Status::kSuccess)
      << culayers::last_error_message();

  // A layer built by hand before it is added must take its shape in the chain.
  std::unique_ptr<nn::Layer> built;
  ASSERT_EQ(nn::layer_from_json(gn("solo", 2), &built), Status::kSuccess);
  ASSERT_EQ(built->build(Shape{1, 4, 6}), Status::kSuccess);
  nn::Sequential manual("manual");
  ASSERT_EQ(manual.add(std::move(built)), Status::kSuccess);
  EXPECT_EQ(manual.build(Shape{1, 4, 8}), Status::kErrorInvalidShape);
  EXPECT_FALSE(manual.built());
  EXPECT_TRUE(manual.find_layer("solo")->built()); // not built by that build: left as it was
  EXPECT_EQ(manual.build(Shape{3, 4, 6}), Status::kSuccess) << culayers::last_error_message();
}

// The ops' size limits are part of the chain check: a call a later layer's op would refuse (here, empty
// tensors whose extents exceed them) runs no layer: DecayingDropout's whole state, the record of its last
// forward included, is unchanged (its counter alone would be: updates run after every layer's forward).
// MaskedGlobalPooling1D: more than 2^31 - 1 steps; GroupNormalization: N x G above 2^31 - 1.
TEST(Sequential, OpSizeLimitsAreCheckedBeforeAnyLayerRuns) {
  const Json dd = {
      {"class_name", "DecayingDropout"},
      {"config", {{"name", "dd"}, {"initial_keep_rate", 0.9}, {"decay_interval", 4}, {"seed", 3}}}};
  const struct {
    Json last;
    Shape built;
    Shape shape;
  } cases[] = {
      {{{"class_name", "MaskedGlobalPooling1D"}, {"config", {{"name", "pool"}}}},
       Shape{2, 3, 0},
       Shape{1, std::int64_t{1} << 31, 0}},
      // No rows, but steps x features x 16 overflows int64 (the op checks each pair of extents).
      {{{"class_name", "MaskedGlobalPooling1D"}, {"config", {{"name", "pool"}}}},
       Shape{2, 3, std::int64_t{1} << 29},
       Shape{0, (std::int64_t{1} << 31) - 1, std::int64_t{1} << 29}},
      {{{"class_name", "GroupNormalization"}, {"config", {{"name", "gn"}, {"groups", 1}}}},
       Shape{2, 3, 1},
       Shape{std::int64_t{1} << 31, 0, 1}},
  };
  DeviceBuffer<float> x(4);
  for (const auto& c : cases) {
    const Json cfg = {{"class_name", "Sequential"},
                      {"config", {{"name", "limits"}, {"layers", {dd, c.last}}}}};
    auto model = make_model(cfg);
    ASSERT_TRUE(model);
    ASSERT_EQ(model->build(c.built), Status::kSuccess) << culayers::last_error_message();
    const auto it0 = dropout_state(*model, "dd");
    nn::CallContext train{};
    train.phase = nn::Phase::kTraining;
    nn::LayerOutput out{};
    EXPECT_EQ(model->call(train, ConstTensorView::contiguous(x.get(), DType::kFloat32, c.shape), {}, &out),
              Status::kErrorSizeLimit)
        << c.last.dump() << ": " << culayers::last_error_message();
    EXPECT_EQ(dropout_state(*model, "dd"), it0) << c.last.dump();
  }
}

TEST(Sequential, BadConfigsAreClearErrors) {
  std::unique_ptr<nn::Sequential> model;
  EXPECT_EQ(nn::Sequential::from_json_string("{not json", &model), Status::kErrorParse);
  // A number beyond a double's range is a parse error (nlohmann-json throws out_of_range for it), through
  // C++ and C alike; so is anything after a NUL byte (nlohmann-json would stop there as at the end).
  const std::string huge = "{\"class_name\": \"Sequential\", \"config\": {\"name\": \"m\", \"x\": 1e400}}";
  EXPECT_EQ(nn::Sequential::from_json_string(huge, &model), Status::kErrorParse);
  EXPECT_NE(std::string(culayers::last_error_message()).find("number overflow"), std::string::npos)
      << culayers::last_error_message();
  culayersModel_t handle = nullptr;
  EXPECT_EQ(culayersModelCreate(&handle, huge.c_str(), nullptr, nullptr), CULAYERS_STATUS_PARSE);
  const std::string after_nul =
      with_build_shape(demo_config()).dump() + std::string(1, '\0') + "{\"ignored\": true}";
  EXPECT_EQ(nn::Sequential::from_json_string(after_nul, &model), Status::kErrorParse);
  EXPECT_NE(std::string(culayers::last_error_message()).find("NUL byte"), std::string::npos)
      << culayers::last_error_message();
  EXPECT_EQ(handle, nullptr);
  EXPECT_EQ(nn::Sequential::from_json(Json::array(), &model), Status::kErrorParse);
  EXPECT_EQ(nn::Sequential::from_json({{"class_name", "Functional"}, {"config", Json::object()}}, &model),
            Status::kErrorUnknownClass);
  EXPECT_EQ(nn::Sequential::from_json({{"class_name", "Sequential"}, {"config", {{"layers", 3}}}}, &model),
            Status::kErrorParse);
  Json unknown = demo_config();
  unknown["config"]["layers"][1]["class_name"] = "LayerNormalization";
  EXPECT_EQ(nn::Sequential::from_json(unknown, &model), Status::kErrorUnknownClass);
  EXPECT_NE(std::string(culayers::last_error_message()).find("LayerNormalization"), std::string::npos);
  Json bad_shape = with_build_shape(demo_config());
  bad_shape["config"]["build_input_shape"] = Json::array({nullptr, -1, kF});
  EXPECT_EQ(nn::Sequential::from_json(bad_shape, &model), Status::kErrorParse);
  Json bad_groups = with_build_shape(demo_config());
  bad_groups["config"]["layers"][1]["config"]["groups"] = 3; // 8 channels are not divisible by 3
  EXPECT_EQ(nn::Sequential::from_json(bad_groups, &model), Status::kErrorInvalidShape);
  EXPECT_EQ(model, nullptr);
}

// Configs as Keras writes them: tf.keras 2 puts an InputLayer with "batch_input_shape" first (and writes a
// mixed-precision policy as a Policy object), Keras 3 an InputLayer with "batch_shape" and every dtype as
// a DTypePolicy object. The InputLayer adds no layer; its shape builds the model unless an extent past the
// batch is null (variable steps: the first call builds it).
TEST(Sequential, KerasWrittenConfigsLoad) {
  const Json input2 = {{"class_name", "InputLayer"},
                       {"config",
                        {{"batch_input_shape", Json::array({nullptr, kT, kF})},
                         {"dtype", "float32"},
                         {"sparse", false},
                         {"ragged", false},
                         {"name", "input_1"}}}};
  Json keras2 = demo_config();
  keras2["config"]["layers"].insert(keras2["config"]["layers"].begin(), input2);
  // Every layer mixed (the Keras 2 document as written: one policy throughout).
  for (std::size_t i = 1; i < keras2["config"]["layers"].size(); ++i) {
    keras2["config"]["layers"][i]["config"]["dtype"] = {{"class_name", "Policy"},
                                                        {"config", {{"name", "mixed_float16"}}}};
  }
  std::unique_ptr<nn::Sequential> model = make_model(keras2);
  ASSERT_TRUE(model);
  nn::ConfigReadOptions strict; // every key these configs hold is one culayers or Keras knows
  strict.reject_unknown_keys = true;
  EXPECT_EQ(nn::Sequential::from_json(keras2, strict, &model), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(model->size(), 5u) << "the InputLayer adds no layer";
  EXPECT_TRUE(model->built());
  EXPECT_EQ(model->to_json()["config"]["build_input_shape"], Json::array({nullptr, kT, kF}));
  EXPECT_EQ(model->layer(1).dtype(), DType::kFloat16) << "mixed_float16 computes in float16";
  EXPECT_EQ(model->layer(0).dtype(), DType::kFloat16);

  const Json policy = {{"module", "keras"},
                       {"class_name", "DTypePolicy"},
                       {"config", {{"name", "float32"}}},
                       {"registered_name", nullptr}};
  Json keras3 = demo_config();
  for (Json& l : keras3["config"]["layers"]) {
    l["config"]["dtype"] = policy;
  }
  keras3["config"]["layers"].insert(
      keras3["config"]["layers"].begin(),
      Json{{"class_name", "InputLayer"},
           {"config",
            {{"batch_shape", Json::array({nullptr, nullptr, kF})}, {"dtype", policy}, {"name", "in"}}}});
  model = make_model(keras3);
  ASSERT_TRUE(model);
  EXPECT_EQ(nn::Sequential::from_json(keras3, strict, &model), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(model->size(), 5u);
  EXPECT_FALSE(model->built()) << "variable steps: built by the first call";
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  nn::LayerOutput out{};
  ASSERT_EQ(model->call(nullptr, in.view, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_TRUE(model->built());
  EXPECT_EQ(out.y.shape(), (Shape{kB, kF}));

  // An InputLayer elsewhere, a sparse one, a policy without a name: clear errors.
  Json late = demo_config();
  late["config"]["layers"].push_back(input2);
  EXPECT_EQ(nn::Sequential::from_json(late, &model), Status::kErrorParse);
  EXPECT_NE(std::string(culayers::last_error_message()).find("InputLayer must come first"),
            std::string::npos);
  Json sparse = keras2;
  sparse["config"]["layers"][0]["config"]["sparse"] = true;
  EXPECT_EQ(nn::Sequential::from_json(sparse, &model), Status::kErrorNotSupported);
  sparse["config"]["layers"][0]["config"]["sparse"] = "yes";
  EXPECT_EQ(nn::Sequential::from_json(sparse, &model), Status::kErrorParse);
  sparse["config"]["layers"][0]["config"] = 7;
  EXPECT_EQ(nn::Sequential::from_json(sparse, &model), Status::kErrorParse);
  Json nameless = demo_config();
  nameless["config"]["layers"][0]["config"]["dtype"] = {{"class_name", "DTypePolicy"},
                                                        {"config", Json::object()}};
  EXPECT_EQ(nn::Sequential::from_json(nameless, &model), Status::kErrorParse);
  Json int8 = demo_config();
  int8["config"]["layers"][0]["config"]["dtype"] = "mixed_int8";
  EXPECT_EQ(nn::Sequential::from_json(int8, &model), Status::kErrorParse);
}

// A model's input shape may be written four times; Keras's order picks the one that builds the model: the
// InputLayer's, else the first layer's "batch_input_shape" (tf.keras 2), else "build_input_shape", else
// Keras 3's "build_config" {"input_shape"} beside "config". The others must not contradict it (same rank,
// equal extents past the batch where both are known); one that is not a shape list is ignored.
TEST(Sequential, InputShapesFromEveryKerasKeyMustAgree) {
  const Json input = {{"class_name", "InputLayer"},
                      {"config", {{"batch_shape", Json::array({nullptr, kT, kF})}, {"name", "in"}}}};
  Json both = demo_config(); // as Keras 3 writes a built model
  both["config"]["layers"].insert(both["config"]["layers"].begin(), input);
  both["config"]["build_input_shape"] = Json::array({nullptr, kT, kF});

  struct Loads {
    const char* what;
    Json config;
    bool built;
  };
  Json batch = both; // the batch axis may differ: it is not part of the model
  batch["config"]["build_input_shape"] = Json::array({32, kT, kF});
  Json build_config = demo_config(); // Keras 3's build_config alone builds the model
  build_config["build_config"] = {{"input_shape", Json::array({nullptr, kT, kF})}};
  Json tuple = demo_config(); // a tuple as Keras 3 may serialize it
  tuple["build_config"] = {
      {"input_shape",
       {{"class_name", "__tuple__"}, {"config", {{"value", Json::array({nullptr, kT, kF})}}}}}};
  Json first_layer = demo_config(); // tf.keras 2 without an InputLayer entry
  first_layer["config"]["layers"][0]["config"]["batch_input_shape"] = Json::array({nullptr, kT, kF});
  Json first_after_input = both; // after an InputLayer Keras ignores it
  first_after_input["config"]["layers"][1]["config"]["batch_input_shape"] =
      Json::array({nullptr, kT, kF + 1});
  Json relaxed = both; // tf.keras 2: the InputLayer relaxed to variable steps, the first call's shape kept
  relaxed["config"]["layers"][0]["config"]["batch_shape"] = Json::array({nullptr, nullptr, kF});
  relaxed["config"]["build_input_shape"] = Json::array({32, kT + 3, kF});
  relaxed["build_config"] = {{"input_shape", Json::array({32, kT + 3, kF})}};
  Json known_input = both; // the InputLayer's known steps win over a null elsewhere
  known_input["config"]["build_input_shape"] = Json::array({nullptr, nullptr, kF});
  Json not_a_shape = both; // a later source that is not a shape list is ignored
  not_a_shape["build_config"] = {{"input_shape", "(None, 6, 8)"}};
  const Loads loads[] = {
      {"InputLayer and build_input_shape", both, true},
      {"another batch", batch, true},
      {"build_config alone", build_config, true},
      {"a __tuple__", tuple, true},
      {"the first layer's", first_layer, true},
      {"the first layer's after an InputLayer", first_after_input, true},
      {"relaxed InputLayer", relaxed, false},
      {"known steps against null", known_input, true},
      {"a later source not a shape", not_a_shape, true},
  };
  std::unique_ptr<nn::Sequential> model;
  for (const Loads& l : loads) {
    model = make_model(l.config);
    ASSERT_TRUE(model) << l.what;
    EXPECT_EQ(model->built(), l.built) << l.what;
    if (l.built) {
      EXPECT_EQ(model->to_json()["config"]["build_input_shape"], Json::array({nullptr, kT, kF})) << l.what;
    }
  }

  struct Refused {
    const char* what;
    Json config;
    const char* message;
  };
  Json steps = both;
  steps["config"]["build_input_shape"] = Json::array({nullptr, kT + 1, kF});
  Json rank = both;
  rank["config"]["build_input_shape"] = Json::array({nullptr, kT * kF});
  Json config_vs_build = build_config;
  config_vs_build["config"]["build_input_shape"] = Json::array({nullptr, kT, kF + 1});
  Json first_vs_build = first_layer;
  first_vs_build["config"]["build_input_shape"] = Json::array({nullptr, kT, kF + 1});
  Json bad_build_config = demo_config();
  bad_build_config["build_config"] = {{"input_shape", Json::array({nullptr, -2, kF})}};
  const Refused refused[] = {
      {"steps differ", steps,
       "InputLayer \"batch_shape\" [null,6,8] and \"build_input_shape\" [null,7,8] disagree"},
      {"ranks differ", rank, "disagree"},
      {"build_config differs", config_vs_build,
       "\"build_input_shape\" [null,6,9] and \"build_config\" \"input_shape\" [null,6,8] disagree"},
      {"the first layer's differs", first_vs_build,
       "the first layer's \"batch_input_shape\" [null,6,8] and \"build_input_shape\" [null,6,9] disagree"},
      {"a bad build_config alone", bad_build_config,
       "\"build_config\" \"input_shape\"[1] is not a non-negative integer"},
  };
  for (const Refused& c : refused) {
    model.reset();
    EXPECT_EQ(nn::Sequential::from_json(c.config, &model), Status::kErrorParse) << c.what;
    EXPECT_NE(std::string(culayers::last_error_message()).find(c.message), std::string::npos)
        << c.what << ": " << culayers::last_error_message();
    EXPECT_EQ(model, nullptr) << c.what;
  }
}

// A layer without a name takes Keras's default name from a per-process counter; one that the document
// gives another layer would make the load fail or not depending on what the process made before, so it
// takes the next free default name instead, on every load.
TEST(Sequential, UnnamedLayersNeverTakeANameTheDocumentGives) {
  Json config = Json::parse(R"({"class_name": "Sequential", "config": {"name": "names", "layers": [
      {"class_name": "Dropout", "config": {"rate": 0.1, "typo": 1}},
      {"class_name": "Dropout", "config": {"name": "dropout", "rate": 0.2}},
      {"class_name": "Dropout"},
      {"class_name": "Dropout", "config": {"name": "", "rate": 0.3}}],
      "build_input_shape": [null, 4]}})");
  // Whatever the counter holds: names up to dropout_40 exist in the document.
  for (int k = 1; k <= 40; ++k) {
    config["config"]["layers"].push_back(Json{
        {"class_name", "Dropout"}, {"config", {{"name", "dropout_" + std::to_string(k)}, {"rate", 0.0}}}});
  }
  for (int load = 0; load < 3; ++load) {
    std::vector<nn::UnusedConfigKey> unused;
    nn::ConfigReadOptions options;
    options.unused_keys = &unused;
    std::unique_ptr<nn::Sequential> model;
    ASSERT_EQ(nn::Sequential::from_json(config, options, &model), Status::kSuccess)
        << "load " << load << ": " << culayers::last_error_message();
    std::set<std::string> names;
    for (std::size_t i = 0; i < model->size(); ++i) {
      EXPECT_TRUE(names.insert(model->layer(i).name()).second) << model->layer(i).name();
    }
    EXPECT_EQ(model->layer(1).name(), "dropout");
    for (const std::size_t i : {std::size_t{0}, std::size_t{2}, std::size_t{3}}) {
      const std::string& n = model->layer(i).name();
      EXPECT_EQ(n.rfind("dropout_", 0), 0u) << n;
      EXPECT_GT(std::stoi(n.substr(8)), 40) << n << ": a name the document gives";
    }
    EXPECT_EQ(static_cast<nn::Dropout&>(model->layer(3)).rate(), 0.3);
    ASSERT_EQ(unused.size(), 1u);
    EXPECT_EQ(unused[0].layer, model->layer(0).name()) << "the list names the layer as it was loaded";
  }
}

TEST(Sequential, InferenceRunsNoUpdateAndDropoutIsIdentity) {
  auto model = make_model(with_build_shape(demo_config()));
  ASSERT_TRUE(model);
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  const auto mean0 = weight_bytes(*model, "bn", "moving_mean");
  const auto it0 = weight_bytes(*model, "dd", "iterations");
  const auto state0 = dropout_state(*model, "dd");
  nn::LayerOutput out{};
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(model->call(nullptr, in.view, {}, &out), Status::kSuccess);
  }
  EXPECT_EQ(weight_bytes(*model, "bn", "moving_mean"), mean0);
  EXPECT_EQ(dropout_state(*model, "dd"), state0); // inference: no forward kernel either

  // trainable = false on the model's layers: training-phase calls run no update either.
  for (std::size_t i = 0; i < model->size(); ++i) {
    model->layer(i).set_trainable(false);
  }
  nn::CallContext train{};
  train.phase = nn::Phase::kTraining;
  ASSERT_EQ(model->call(train, in.view, {}, &out), Status::kSuccess);
  EXPECT_EQ(weight_bytes(*model, "bn", "moving_mean"), mean0);
  EXPECT_EQ(weight_bytes(*model, "dd", "iterations"), it0);
}

// A whole training-phase call captured in a CUDA graph and replayed N times advances DecayingDropout's
// counter and keep rate and BatchNormalization's moving statistics exactly as N eager calls.
TEST(Sequential, GraphReplaysEqualEagerTrainingCalls) {
  const culayers::test::Stream stream_owner; // before the models: their layers free their buffers on it
  auto eager = make_model(with_build_shape(demo_config("eager")));
  auto graphed = make_model(with_build_shape(demo_config("graphed")));
  ASSERT_TRUE(eager && graphed);
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  const cudaStream_t stream = stream_owner.get();
  nn::CallContext train{};
  train.stream = stream;
  train.phase = nn::Phase::kTraining;
  nn::LayerOutput eo{};
  nn::LayerOutput go{};
  // Warm-up: the first call allocates the layers' buffers — for both phases, so an inference-phase
  // warm-up is enough for a training-phase call to allocate nothing (and be capturable).
  nn::CallContext infer = train;
  infer.phase = nn::Phase::kInference;
  ASSERT_EQ(eager->call(infer, in.view, {}, &eo), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(graphed->call(infer, in.view, {}, &go), Status::kSuccess) << culayers::last_error_message();

  cudaGraph_t graph = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const Status captured = graphed->call(train, in.view, {}, &go);
  CULAYERS_ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  ASSERT_EQ(captured, Status::kSuccess) << culayers::last_error_message();
  cudaGraphExec_t exec = nullptr;
  CULAYERS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));

  constexpr int kReplays = 9; // crosses two decay intervals (4)
  for (int i = 0; i < kReplays; ++i) {
    ASSERT_EQ(eager->call(train, in.view, {}, &eo), Status::kSuccess);
    CULAYERS_ASSERT_CUDA(cudaGraphLaunch(exec, stream));
    CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream));
    EXPECT_EQ(read_back(go.y), read_back(eo.y)) << "replay " << i;
  }
  for (const char* w : {"moving_mean", "moving_variance"}) {
    EXPECT_EQ(weight_bytes(*graphed, "bn", w), weight_bytes(*eager, "bn", w)) << w;
  }
  const auto iterations = weight_bytes(*graphed, "dd", "iterations");
  EXPECT_EQ(iterations, weight_bytes(*eager, "dd", "iterations"));
  std::int64_t k = -1;
  ASSERT_EQ(iterations.size(), sizeof(k));
  std::memcpy(&k, iterations.data(), sizeof(k));
  EXPECT_EQ(k, kReplays);
  // The moving statistics did move (the test would pass trivially otherwise).
  auto fresh = make_model(with_build_shape(demo_config("fresh")));
  EXPECT_NE(weight_bytes(*graphed, "bn", "moving_mean"), weight_bytes(*fresh, "bn", "moving_mean"));

  CULAYERS_ASSERT_CUDA(cudaGraphExecDestroy(exec));
  CULAYERS_ASSERT_CUDA(cudaGraphDestroy(graph));
}

TEST(Sequential, ProfileTimesEveryLayer) {
  auto model = make_model(with_build_shape(demo_config()));
  ASSERT_TRUE(model);
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  nn::CallContext ctx{};
  nn::LayerOutput out{};
  std::vector<nn::LayerTiming> timings;
  ASSERT_EQ(model->profile(ctx, in.view, {}, &out, &timings), Status::kSuccess)
      << culayers::last_error_message();
  ASSERT_EQ(timings.size(), model->size());
  for (std::size_t i = 0; i < timings.size(); ++i) {
    EXPECT_EQ(timings[i].name, model->layer(i).name());
    EXPECT_GE(timings[i].milliseconds, 0.0f);
  }
}

TEST(Sequential, DeeplyNestedJsonIsAParseErrorNotACrash) {
  std::string deep(100000, '[');
  deep += std::string(100000, ']');
  std::unique_ptr<nn::Sequential> model;
  EXPECT_EQ(nn::Sequential::from_json_string(deep, &model), Status::kErrorParse);
  EXPECT_NE(std::string(culayers::last_error_message()).find("deeper"), std::string::npos)
      << culayers::last_error_message();
  culayersModel_t handle = nullptr;
  EXPECT_EQ(culayersModelCreate(&handle, deep.c_str(), nullptr, nullptr), CULAYERS_STATUS_PARSE);
  EXPECT_EQ(handle, nullptr);
}

TEST(Sequential, StepCountMayChangeBetweenCalls) {
  // Built for T steps, called with fewer: padded batches of another length run through every layer.
  auto model = make_model(with_build_shape(demo_config()));
  ASSERT_TRUE(model);
  constexpr int kShortT = kT - 2;
  auto rng = culayers::test::rng_for_test();
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> host(static_cast<std::size_t>(kB) * kShortT * kF);
  for (auto& v : host) {
    v = normal(rng) + 2.0f;
  }
  DeviceBuffer<float> x(host.size());
  x.upload(host);
  nn::LayerOutput out{};
  nn::CallContext train{};
  train.phase = nn::Phase::kTraining;
  ASSERT_EQ(model->call(train, ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{kB, kShortT, kF}),
                        {}, &out),
            Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(out.y.shape(), (Shape{kB, kF}));
  // The feature axis stays fixed.
  EXPECT_EQ(model->call(train,
                        ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{kB, kShortT * 2, kF / 2}),
                        {}, &out),
            Status::kErrorInvalidShape);
}

TEST(Sequential, ExplicitBatchInANoiseShapeRoundTrips) {
  Json cfg = {
      {"class_name", "Sequential"},
      {"config",
       {{"name", "noise"},
        {"layers",
         {{{"class_name", "Dropout"},
           {"config", {{"name", "drop"}, {"rate", 0.5}, {"seed", 7}, {"noise_shape", {kB, 1, nullptr}}}}}}},
        {"build_input_shape", {nullptr, kT, kF}}}}};
  auto model = make_model(cfg);
  ASSERT_TRUE(model && model->built());
  std::unique_ptr<nn::Sequential> again;
  ASSERT_EQ(nn::Sequential::from_json(model->to_json(), &again), Status::kSuccess)
      << culayers::last_error_message();
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  nn::CallContext train{};
  train.phase = nn::Phase::kTraining;
  nn::LayerOutput a{};
  nn::LayerOutput b{};
  ASSERT_EQ(model->call(train, in.view, {}, &a), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(again->call(train, in.view, {}, &b), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(read_back(a.y), read_back(b.y));
  // The batch entry is checked when the layer is called: another batch size does not broadcast.
  EXPECT_EQ(
      model->call(train, ConstTensorView::contiguous(in.x.get(), DType::kFloat32, Shape{1, kT, kF}), {}, &a),
      Status::kErrorInvalidShape);
}

// A noise shape's batch entry is checked with the rest of the chain, in training only: a batch it does not
// broadcast to stops the call before the DecayingDropout in front of it runs (its state, the record of its
// last forward included, is unchanged); in inference
// (identity) the entry does not matter. An invalid phase is an error before anything runs.
TEST(Sequential, NoiseShapeBatchIsCheckedBeforeAnyLayerRuns) {
  Json cfg = {
      {"class_name", "Sequential"},
      {"config",
       {{"name", "chain"},
        {"layers",
         {{{"class_name", "DecayingDropout"},
           {"config", {{"name", "dd"}, {"initial_keep_rate", 0.9}, {"decay_interval", 4}, {"seed", 3}}}},
          {{"class_name", "Dropout"},
           {"config", {{"name", "drop"}, {"rate", 0.5}, {"seed", 7}, {"noise_shape", {kB, 1, nullptr}}}}}}},
        {"build_input_shape", {nullptr, kT, kF}}}}};
  auto model = make_model(cfg);
  ASSERT_TRUE(model && model->built());
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  const auto it0 = dropout_state(*model, "dd");
  const ConstTensorView one = ConstTensorView::contiguous(in.x.get(), DType::kFloat32, Shape{1, kT, kF});
  nn::CallContext train{};
  train.phase = nn::Phase::kTraining;
  nn::LayerOutput out{};
  EXPECT_EQ(model->call(train, one, {}, &out), Status::kErrorInvalidShape);
  EXPECT_NE(std::string(culayers::last_error_message()).find("drop: noise_shape"), std::string::npos)
      << culayers::last_error_message();
  EXPECT_EQ(dropout_state(*model, "dd"), it0);
  nn::CallContext infer{};
  EXPECT_EQ(model->call(infer, one, {}, &out), Status::kSuccess) << culayers::last_error_message();
  nn::CallContext bad{};
  bad.phase = static_cast<nn::Phase>(7);
  EXPECT_EQ(model->call(bad, in.view, {}, &out), Status::kErrorInvalidValue);
  EXPECT_NE(std::string(culayers::last_error_message()).find("ctx.phase"), std::string::npos)
      << culayers::last_error_message();
  EXPECT_EQ(dropout_state(*model, "dd"), it0);
  ASSERT_EQ(model->call(train, in.view, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_NE(dropout_state(*model, "dd"), it0);
}

TEST(Sequential, AFailingCallRunsNoLayerAndNoUpdate) {
  // Masking produces a mask; BatchNormalization over axis 1 of a rank-3 input refuses one (a mask goes with
  // channels-last sequences only): the chain check stops the call at bn before DecayingDropout, ahead of it,
  // runs (its forward or its update op).
  Json layers = Json::array();
  layers.push_back({{"class_name", "Masking"}, {"config", {{"name", "masking"}, {"mask_value", 0.0}}}});
  layers.push_back(
      {{"class_name", "DecayingDropout"},
       {"config", {{"name", "dd"}, {"initial_keep_rate", 0.9}, {"decay_interval", 4}, {"seed", 1234}}}});
  layers.push_back({{"class_name", "BatchNormalization"}, {"config", {{"name", "bn"}, {"axis", 1}}}});
  auto model = make_model(with_build_shape(
      Json{{"class_name", "Sequential"}, {"config", {{"name", "late"}, {"layers", layers}}}}));
  ASSERT_TRUE(model);
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  const auto it0 = dropout_state(*model, "dd");
  nn::CallContext train{};
  train.phase = nn::Phase::kTraining;
  nn::LayerOutput out{};
  EXPECT_EQ(model->call(train, in.view, {}, &out), Status::kErrorNotSupported);
  culayers::test::expect_message_contains(
      "bn: mask: a [batch, steps] mask is supported only for channels-last", "the chain check at bn");
  EXPECT_EQ(dropout_state(*model, "dd"), it0);

  // A non-floating input (only floating inputs are cast to a layer's dtype): refused by the chain check
  // before anything runs.
  auto typed = make_model(with_build_shape(demo_config("typed")));
  ASSERT_TRUE(typed);
  const auto t0 = dropout_state(*typed, "dd");
  EXPECT_EQ(
      typed->call(train, ConstTensorView::contiguous(in.x.get(), DType::kInt32, Shape{kB, kT, kF}), {}, &out),
      Status::kErrorInvalidDType);
  culayers::test::expect_message_contains("masking: x: dtype int32", "an int32 input");
  EXPECT_EQ(dropout_state(*typed, "dd"), t0);

  // A mask of the wrong shape fails the call before anything runs; a mask
  // given to a chain whose first layer (Masking) produces its own is fine.
  auto good = make_model(with_build_shape(demo_config("float32s")));
  ASSERT_TRUE(good);
  const auto g0 = dropout_state(*good, "dd");
  DeviceBuffer<std::uint8_t> wrong(static_cast<std::size_t>(kB) * (kT + 1));
  wrong.fill_bytes(1);
  EXPECT_EQ(good->call(train, in.view,
                       ConstTensorView::contiguous(wrong.get(), DType::kUInt8, Shape{kB, kT + 1}), &out),
            Status::kErrorInconsistentArguments);
  EXPECT_NE(std::string(culayers::last_error_message()).find("mask"), std::string::npos)
      << culayers::last_error_message();
  EXPECT_EQ(dropout_state(*good, "dd"), g0);
  DeviceBuffer<std::uint8_t> right(static_cast<std::size_t>(kB) * kT);
  right.fill_bytes(1);
  EXPECT_EQ(good->call(train, in.view, ConstTensorView::contiguous(right.get(), DType::kUInt8, Shape{kB, kT}),
                       &out),
            Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_NE(dropout_state(*good, "dd"), g0);
}

// Layers of different dtypes chain as in Keras: each layer casts its floating input to its own dtype. The
// demo model with BatchNormalization in float16 between float32 layers (a training call: batch statistics,
// dropout) gives the bits of running its three parts as separate models with the casts done on the host
// (round to nearest even, as the cast op; float16 to float32 is exact); a float16 input to the float32
// model is cast at its first layer.
TEST(Sequential, LayersOfDifferentDtypesCastBetweenThem) {
  auto rng = culayers::test::rng_for_test();
  const Inputs in = make_inputs(rng);
  Json mixed = demo_config("mixed");
  mixed["config"]["layers"][3]["config"]["dtype"] = "float16";
  auto model = make_model(with_build_shape(mixed));
  ASSERT_TRUE(model);
  nn::CallContext train{};
  train.phase = nn::Phase::kTraining;
  nn::LayerOutput out{};
  ASSERT_EQ(model->call(train, in.view, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(out.y.dtype(), DType::kFloat32);
  std::vector<float> got(static_cast<std::size_t>(out.y.shape().numel()));
  ASSERT_EQ(cudaMemcpy(got.data(), out.y.data(), got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);

  // The same layers as three models: [masking, gn, dd] float32, [bn] float16, [pool] float32.
  const auto part = [&](const std::string& name, std::size_t first, std::size_t last) {
    Json p = mixed;
    Json layers = Json::array();
    for (std::size_t i = first; i < last; ++i) {
      layers.push_back(mixed["config"]["layers"][i]);
    }
    p["config"]["name"] = name;
    p["config"]["layers"] = layers;
    return make_model(p);
  };
  auto front = part("front", 0, 3);
  auto middle = part("middle", 3, 4);
  auto back = part("back", 4, 5);
  ASSERT_TRUE(front && middle && back);
  nn::LayerOutput a{};
  ASSERT_EQ(front->call(train, in.view, {}, &a), Status::kSuccess) << culayers::last_error_message();
  std::vector<float> af(static_cast<std::size_t>(a.y.shape().numel()));
  ASSERT_EQ(cudaMemcpy(af.data(), a.y.data(), af.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<__half> ah(af.size());
  for (std::size_t i = 0; i < af.size(); ++i) {
    ah[i] = __float2half_rn(af[i]);
  }
  DeviceBuffer<__half> ad(ah);
  nn::LayerOutput b{};
  ASSERT_EQ(
      middle->call(train, ConstTensorView::contiguous(ad.get(), DType::kFloat16, a.y.shape()), a.mask, &b),
      Status::kSuccess)
      << culayers::last_error_message();
  std::vector<__half> bh(static_cast<std::size_t>(b.y.shape().numel()));
  ASSERT_EQ(cudaMemcpy(bh.data(), b.y.data(), bh.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<float> bf(bh.size());
  for (std::size_t i = 0; i < bh.size(); ++i) {
    bf[i] = __half2float(bh[i]);
  }
  DeviceBuffer<float> bd(bf);
  nn::LayerOutput c{};
  ASSERT_EQ(
      back->call(train, ConstTensorView::contiguous(bd.get(), DType::kFloat32, b.y.shape()), b.mask, &c),
      Status::kSuccess)
      << culayers::last_error_message();
  std::vector<float> want(static_cast<std::size_t>(c.y.shape().numel()));
  ASSERT_EQ(cudaMemcpy(want.data(), c.y.data(), want.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << "the mixed model's output";
  EXPECT_EQ(dropout_state(*model, "dd"), dropout_state(*front, "dd"));

  // A float16 input to the float32 demo model: cast exactly as the host would, then the same output as
  // the float32 input of those values.
  auto f32 = make_model(with_build_shape(demo_config("float32s")));
  auto ref = make_model(with_build_shape(demo_config("reference")));
  ASSERT_TRUE(f32 && ref);
  std::vector<__half> xh(in.host.size());
  std::vector<float> xr(in.host.size());
  for (std::size_t i = 0; i < xh.size(); ++i) {
    xh[i] = __float2half_rn(in.host[i]);
    xr[i] = __half2float(xh[i]);
  }
  DeviceBuffer<__half> xhd(xh);
  DeviceBuffer<float> xrd(xr);
  nn::LayerOutput o1{};
  nn::LayerOutput o2{};
  ASSERT_EQ(f32->call(nn::CallContext{},
                      ConstTensorView::contiguous(xhd.get(), DType::kFloat16, in.view.shape()), {}, &o1),
            Status::kSuccess)
      << culayers::last_error_message();
  ASSERT_EQ(ref->call(nn::CallContext{},
                      ConstTensorView::contiguous(xrd.get(), DType::kFloat32, in.view.shape()), {}, &o2),
            Status::kSuccess);
  std::vector<float> y1(static_cast<std::size_t>(o1.y.shape().numel()));
  std::vector<float> y2(y1.size());
  ASSERT_EQ(cudaMemcpy(y1.data(), o1.y.data(), y1.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(y2.data(), o2.y.data(), y2.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * 4), 0) << "a float16 input";
}

// Tracks the bytes allocated through it and not yet freed.
class LiveBytesAllocator final : public nn::Allocator {
 public:
  Status allocate(void** ptr, std::size_t bytes, cudaStream_t stream) override {
    const Status s = nn::default_allocator().allocate(ptr, bytes, stream);
    if (ok(s)) {
      live += bytes;
      ++allocations;
    }
    return s;
  }
  void deallocate(void* ptr, std::size_t bytes, cudaStream_t stream) noexcept override {
    live -= bytes;
    nn::default_allocator().deallocate(ptr, bytes, stream);
  }
  std::size_t live = 0;
  int allocations = 0;
};

// The buffers calls keep (outputs, workspaces, the autocast buffer, which stays while later calls pass the
// layer's own dtype) are what buffer_bytes() counts, release_buffers() hands all of them back to the
// allocator, and the next call allocates them again and gives the same bits.
TEST(Sequential, ReleasedBuffersGoBackAndTheNextCallMatches) {
  auto rng = culayers::test::rng_for_test();
  const Inputs in = make_inputs(rng);
  std::vector<__half> xh(in.host.size());
  for (std::size_t i = 0; i < xh.size(); ++i) {
    xh[i] = __float2half_rn(in.host[i]);
  }
  DeviceBuffer<__half> xhd(xh);
  const ConstTensorView half_view = ConstTensorView::contiguous(xhd.get(), DType::kFloat16, in.view.shape());
  LiveBytesAllocator allocator; // before the model: the model frees its buffers through it
  auto model = make_model(with_build_shape(demo_config("release")));
  ASSERT_TRUE(model);
  EXPECT_EQ(model->buffer_bytes(), 0u);
  nn::CallContext train{};
  train.phase = nn::Phase::kTraining;
  train.allocator = &allocator;
  nn::LayerOutput out{};
  ASSERT_EQ(model->call(train, half_view, {}, &out), Status::kSuccess) << culayers::last_error_message();
  const std::size_t with_cast = model->buffer_bytes();
  EXPECT_EQ(with_cast, allocator.live) << "buffer_bytes() against what the allocator handed out";
  EXPECT_GE(with_cast, xh.size() * sizeof(float)) << "the first layer's autocast buffer";
  // A call in the model's own dtype keeps the autocast buffer (so alternating input dtypes allocate nothing).
  ASSERT_EQ(model->call(train, in.view, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(model->buffer_bytes(), with_cast);
  EXPECT_EQ(allocator.live, with_cast);
  const auto twin = make_model(with_build_shape(demo_config("release")));
  ASSERT_TRUE(twin);

  model->release_buffers();
  EXPECT_EQ(model->buffer_bytes(), 0u);
  EXPECT_EQ(allocator.live, 0u);
  model->release_buffers(); // twice is fine
  EXPECT_EQ(model->buffer_bytes(), 0u);

  // The next call allocates again and matches a twin model that never released anything (same seeds: the
  // twin runs the same two calls first, so both are at the third training call of their schedules).
  const int before = allocator.allocations;
  ASSERT_EQ(model->call(train, in.view, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_GT(allocator.allocations, before);
  EXPECT_EQ(model->buffer_bytes(), allocator.live);
  EXPECT_LT(model->buffer_bytes(), with_cast) << "no autocast buffer for a float32 input";
  const auto got = read_back(out.y);
  nn::CallContext twin_ctx{};
  twin_ctx.phase = nn::Phase::kTraining;
  nn::LayerOutput twin_out{};
  ASSERT_EQ(twin->call(twin_ctx, half_view, {}, &twin_out), Status::kSuccess);
  ASSERT_EQ(twin->call(twin_ctx, in.view, {}, &twin_out), Status::kSuccess);
  ASSERT_EQ(twin->call(twin_ctx, in.view, {}, &twin_out), Status::kSuccess);
  EXPECT_EQ(got, read_back(twin_out.y));

  model.reset(); // frees the rest through the allocator while it is alive
  EXPECT_EQ(allocator.live, 0u);
}

// After a release, a smaller batch keeps only what it needs, workspaces included (which otherwise only
// grow, NnLayer.WorkspacesGrowAndReleaseEmptiesThem): BatchNormalization's training statistics over 32768
// rows take a larger workspace than over 512 on the default emulated device, so
// the released model holds what a model that only saw the small batch holds.
TEST(Sequential, ReleasedWorkspacesShrinkWithTheBatch) {
  const Json cfg = {
      {"class_name", "Sequential"},
      {"config",
       {{"name", "bn_only"},
        {"layers", Json::array({{{"class_name", "BatchNormalization"}, {"config", {{"name", "bn"}}}}})},
        {"build_input_shape", Json::array({nullptr, 512, 64})}}}};
  auto model = make_model(cfg);
  auto fresh = make_model(cfg);
  ASSERT_TRUE(model && fresh);
  auto rng = culayers::test::rng_for_test();
  std::vector<float> host(64 * 512 * 64);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : host) {
    v = normal(rng);
  }
  DeviceBuffer<float> x(host);
  nn::CallContext train{};
  train.phase = nn::Phase::kTraining;
  nn::LayerOutput out{};
  ASSERT_EQ(
      model->call(train, ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{64, 512, 64}), {}, &out),
      Status::kSuccess)
      << culayers::last_error_message();
  const std::size_t big = model->buffer_bytes();
  model->release_buffers();
  const ConstTensorView small = ConstTensorView::contiguous(x.get(), DType::kFloat32, Shape{1, 512, 64});
  ASSERT_EQ(model->call(train, small, {}, &out), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(fresh->call(train, small, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(model->buffer_bytes(), fresh->buffer_bytes());
  // Besides the outputs (64 and 1 x 512 x 64 floats), the big call kept at least as much (its workspace,
  // larger where the device splits the 32768 rows into more chunks than the 512: 4 SMs, not 1).
  EXPECT_GE(big - 64u * 512u * 64u * 4u, fresh->buffer_bytes() - 512u * 64u * 4u);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
}

// Counts allocations and fails the one numbered `fail_at` (0-based; -1: none) with kErrorOutOfMemory.
class FailingAllocator final : public nn::Allocator {
 public:
  Status allocate(void** ptr, std::size_t bytes, cudaStream_t stream) override {
    if (count_++ == fail_at) {
      return culayers::detail::set_error(Status::kErrorOutOfMemory, "test allocator: allocation %d refused",
                                         fail_at);
    }
    return nn::default_allocator().allocate(ptr, bytes, stream);
  }
  void deallocate(void* ptr, std::size_t bytes, cudaStream_t stream) noexcept override {
    nn::default_allocator().deallocate(ptr, bytes, stream);
  }
  int count() const { return count_; }
  int fail_at = -1;

 private:
  int count_ = 0;
};

// A training call that runs out of memory in its last layer has run the earlier layers' kernels, but no
// call step or update op: the schedules (DecayingDropout's counter, Dropout's random stream) and
// BatchNormalization's moving statistics are as before, so the next calls give what they give on a twin
// model that never saw the failed call.
TEST(Sequential, OutOfMemoryPartWayChangesNoState) {
  FailingAllocator probe_alloc; // before the models: they free their buffers through them
  FailingAllocator failing_alloc;
  Json cfg = demo_config("oom");
  cfg["config"]["layers"].insert(
      cfg["config"]["layers"].begin() + 3,
      Json{{"class_name", "Dropout"}, {"config", {{"name", "drop"}, {"rate", 0.25}, {"seed", 99}}}});
  cfg = with_build_shape(cfg);
  auto model = make_model(cfg);
  auto twin = make_model(cfg);
  auto probe = make_model(cfg);
  ASSERT_TRUE(model && twin && probe);
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  const ConstTensorView first_row =
      ConstTensorView::contiguous(in.x.get(), DType::kFloat32, Shape{1, kT, kF});
  nn::CallContext train{};
  train.phase = nn::Phase::kTraining;
  nn::LayerOutput out{};
  // The same warm-up for the three: a batch of one, so the full batch below reallocates every output.
  for (nn::Sequential* m : {model.get(), twin.get(), probe.get()}) {
    ASSERT_EQ(m->call(train, first_row, {}, &out), Status::kSuccess) << culayers::last_error_message();
  }
  // How many allocations the full-batch call makes; the failing call refuses the last (the pooling
  // layer's, after every other layer's forward).
  nn::CallContext counted = train;
  counted.allocator = &probe_alloc;
  ASSERT_EQ(probe->call(counted, in.view, {}, &out), Status::kSuccess) << culayers::last_error_message();
  ASSERT_GE(probe_alloc.count(), 4);
  failing_alloc.fail_at = probe_alloc.count() - 1;
  nn::CallContext failing = train;
  failing.allocator = &failing_alloc;
  const auto dd0 = dropout_state(*model, "dd");
  const auto drop0 = dropout_state(*model, "drop");
  const auto mean0 = weight_bytes(*model, "bn", "moving_mean");
  const auto var0 = weight_bytes(*model, "bn", "moving_variance");
  EXPECT_EQ(model->call(failing, in.view, {}, &out), Status::kErrorOutOfMemory);
  EXPECT_EQ(failing_alloc.count(), probe_alloc.count());
  // Right after the failure: the dropouts' schedule and current call (the first 80 bytes of the state:
  // iterations, stream, threshold, ...) and the moving statistics are unchanged. Their forwards did run:
  // the record of the last forward (last_*, read by a backward) is the failed call's, as documented.
  const auto dd1 = dropout_state(*model, "dd");
  const auto drop1 = dropout_state(*model, "drop");
  const std::size_t kSchedule = offsetof(culayers::dropout::DropoutState, last_stream);
  EXPECT_TRUE(std::equal(dd1.begin(), dd1.begin() + kSchedule, dd0.begin()));
  EXPECT_TRUE(std::equal(drop1.begin(), drop1.begin() + kSchedule, drop0.begin()));
  EXPECT_NE(dd1, dd0) << "the failure came before DecayingDropout's forward: the test checks nothing";
  EXPECT_NE(drop1, drop0) << "the failure came before Dropout's forward: the test checks nothing";
  EXPECT_EQ(weight_bytes(*model, "bn", "moving_mean"), mean0);
  EXPECT_EQ(weight_bytes(*model, "bn", "moving_variance"), var0);

  nn::LayerOutput model_out{};
  nn::LayerOutput twin_out{};
  for (int call = 0; call < 2; ++call) {
    ASSERT_EQ(model->call(train, in.view, {}, &model_out), Status::kSuccess)
        << culayers::last_error_message();
    ASSERT_EQ(twin->call(train, in.view, {}, &twin_out), Status::kSuccess) << culayers::last_error_message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(read_back(model_out.y), read_back(twin_out.y)) << "call " << call;
  }
  EXPECT_EQ(weight_bytes(*model, "dd", "iterations"), weight_bytes(*twin, "dd", "iterations"));
  for (const char* w : {"moving_mean", "moving_variance"}) {
    EXPECT_EQ(weight_bytes(*model, "bn", w), weight_bytes(*twin, "bn", w)) << w;
  }
  culayers::dropout::DropoutState model_state{};
  culayers::dropout::DropoutState twin_state{};
  auto* model_drop = dynamic_cast<nn::Dropout*>(model->find_layer("drop"));
  auto* twin_drop = dynamic_cast<nn::Dropout*>(twin->find_layer("drop"));
  ASSERT_TRUE(model_drop && twin_drop);
  ASSERT_EQ(model_drop->read_state(&model_state, nullptr), Status::kSuccess);
  ASSERT_EQ(twin_drop->read_state(&twin_state, nullptr), Status::kSuccess);
  EXPECT_EQ(std::memcmp(&model_state, &twin_state, sizeof(model_state)), 0);
}

/// Run arguments for x [kB, kT, kF] (float32, inference, no mask) into y of y_bytes bytes.
culayersModelRunArgs_t run_args(const void* x, void* y, std::size_t y_bytes) {
  culayersModelRunArgs_t args;
  culayersModelRunArgsInit(&args);
  args.x = x;
  args.rank = 3;
  args.dims[0] = kB;
  args.dims[1] = kT;
  args.dims[2] = kF;
  args.y = y;
  args.y_bytes = y_bytes;
  return args;
}

// The C API loads the same model from files and computes the same bits as the C++ model.
TEST(ModelCApi, LoadsRunsAndMatchesCpp) {
  auto model = make_model(with_build_shape(demo_config("capi")));
  ASSERT_TRUE(model);
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  nn::CallContext train{};
  train.phase = nn::Phase::kTraining;
  nn::LayerOutput out{};
  ASSERT_EQ(model->call(train, in.view, {}, &out), Status::kSuccess);
  const std::string config_path = temp_path("model.json");
  const std::string weights_path = temp_path("model.safetensors");
  {
    std::ofstream o(config_path);
    o << model->to_json().dump(2);
  }
  ASSERT_EQ(model->save_weights(weights_path), Status::kSuccess);
  ASSERT_EQ(model->call(nullptr, in.view, {}, &out), Status::kSuccess);
  const auto want = read_back(out.y);

  culayersModel_t handle = nullptr;
  ASSERT_EQ(culayersModelCreateFromFile(&handle, config_path.c_str(), weights_path.c_str(), nullptr),
            CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  culayersDType_t dtype = CULAYERS_DTYPE_INT32;
  ASSERT_EQ(culayersModelGetInputDType(handle, &dtype), CULAYERS_STATUS_SUCCESS);
  EXPECT_EQ(dtype, CULAYERS_DTYPE_FLOAT32);
  const std::int64_t dims[3] = {kB, kT, kF};
  int out_rank = 0;
  std::int64_t out_dims[CULAYERS_MAX_RANK] = {};
  ASSERT_EQ(culayersModelGetOutputShape(handle, 3, dims, &out_rank, out_dims), CULAYERS_STATUS_SUCCESS);
  ASSERT_EQ(out_rank, 2);
  EXPECT_EQ(out_dims[0], kB);
  EXPECT_EQ(out_dims[1], kF);

  DeviceBuffer<float> y(static_cast<std::size_t>(kB) * kF);
  culayersModelRunArgs_t args = run_args(in.x.get(), y.get(), y.size() * sizeof(float));
  int wrote_mask = -1;
  ASSERT_EQ(culayersModelRun(handle, &args, &wrote_mask, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(wrote_mask, 0);
  std::vector<std::uint8_t> got(want.size());
  ASSERT_EQ(cudaMemcpy(got.data(), y.get(), got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got, want);

  // The buffers runs keep: counted, released, allocated again by the next run with the same output.
  size_t kept = 0;
  ASSERT_EQ(culayersModelGetBufferBytes(handle, &kept), CULAYERS_STATUS_SUCCESS);
  EXPECT_GT(kept, 0u);
  ASSERT_EQ(culayersModelReleaseBuffers(handle), CULAYERS_STATUS_SUCCESS);
  ASSERT_EQ(culayersModelGetBufferBytes(handle, &kept), CULAYERS_STATUS_SUCCESS);
  EXPECT_EQ(kept, 0u);
  y.upload(std::vector<float>(y.size(), -7.0f));
  ASSERT_EQ(culayersModelRun(handle, &args, nullptr, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  ASSERT_EQ(cudaMemcpy(got.data(), y.get(), got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got, want) << "a run after releasing the buffers";
  ASSERT_EQ(culayersModelGetBufferBytes(handle, &kept), CULAYERS_STATUS_SUCCESS);
  EXPECT_GT(kept, 0u);
  EXPECT_EQ(culayersModelGetBufferBytes(nullptr, &kept), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayersModelGetBufferBytes(handle, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayersModelReleaseBuffers(nullptr), CULAYERS_STATUS_NULL_POINTER);

  // Errors write nothing: a too-small output, a bad phase, a wrong dtype.
  const std::vector<float> sentinel(y.size(), -7.0f);
  y.upload(sentinel);
  culayersModelRunArgs_t bad = args;
  bad.y_bytes = 4;
  EXPECT_EQ(culayersModelRun(handle, &bad, nullptr, nullptr), CULAYERS_STATUS_INVALID_VALUE);
  bad = args;
  const int seven = 7; // what a C caller could store; a C++ cast to the enum would be out of its range
  std::memcpy(&bad.phase, &seven, sizeof(seven));
  EXPECT_EQ(culayersModelRun(handle, &bad, nullptr, nullptr), CULAYERS_STATUS_INVALID_VALUE);
  bad = args;
  bad.dtype = CULAYERS_DTYPE_INT32; // floating inputs are cast to the first layer's dtype; int32 is not
  EXPECT_EQ(culayersModelRun(handle, &bad, nullptr, nullptr), CULAYERS_STATUS_INVALID_DTYPE);
  bad = args;
  bad.rank = 0;
  EXPECT_EQ(culayersModelRun(handle, &bad, nullptr, nullptr), CULAYERS_STATUS_INVALID_SHAPE);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(y.download(), sentinel);
  EXPECT_EQ(culayersModelRun(nullptr, &args, nullptr, nullptr), CULAYERS_STATUS_NULL_POINTER);

  size_t length = 0;
  ASSERT_EQ(culayersModelGetSummary(handle, nullptr, 0, &length), CULAYERS_STATUS_SUCCESS);
  std::string summary(length + 1, '\0');
  ASSERT_EQ(culayersModelGetSummary(handle, summary.data(), summary.size(), nullptr),
            CULAYERS_STATUS_SUCCESS);
  EXPECT_NE(summary.find("bn (BatchNormalization)"), std::string::npos);
  culayersModelDestroy(handle);
  culayersModelDestroy(nullptr);

  // Creation errors leave *model alone.
  culayersModel_t none = nullptr;
  EXPECT_EQ(culayersModelCreate(&none, "{\"class_name\": 1}", nullptr, nullptr), CULAYERS_STATUS_PARSE);
  EXPECT_EQ(culayersModelCreate(&none, demo_config().dump().c_str(), nullptr, nullptr),
            CULAYERS_STATUS_INVALID_VALUE); // no build_input_shape
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("input shape is missing"), std::string::npos)
      << culayersGetLastErrorMessage();
  Json variable_steps = demo_config();
  variable_steps["config"]["build_input_shape"] = Json::array({nullptr, nullptr, kF});
  EXPECT_EQ(culayersModelCreate(&none, variable_steps.dump().c_str(), nullptr, nullptr),
            CULAYERS_STATUS_INVALID_VALUE);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("variable extent"), std::string::npos)
      << culayersGetLastErrorMessage();
  EXPECT_EQ(culayersModelCreateFromFile(&none, temp_path("nope.json").c_str(), nullptr, nullptr),
            CULAYERS_STATUS_IO);
  const std::string dir = temp_path("a_directory");
  std::filesystem::create_directories(dir);
  EXPECT_EQ(culayersModelCreateFromFile(&none, dir.c_str(), nullptr, nullptr), CULAYERS_STATUS_IO)
      << culayersGetLastErrorMessage(); // not an empty config (a parse error)
  EXPECT_EQ(culayersModelCreate(&none, with_build_shape(demo_config()).dump().c_str(),
                                temp_path("nope.safetensors").c_str(), nullptr),
            CULAYERS_STATUS_IO);
  EXPECT_EQ(none, nullptr);
}

/// A model that is the identity in inference: one Dropout, built for [kB, kT, kF].
Json identity_config() {
  return {{"class_name", "Sequential"},
          {"config",
           {{"name", "identity"},
            {"layers",
             {{{"class_name", "Dropout"}, {"config", {{"name", "drop"}, {"rate", 0.25}, {"seed", 5}}}}}},
            {"build_input_shape", {nullptr, kT, kF}}}}};
}

// A model that is the identity in inference (dropout only) returns x and the input mask themselves: run
// with y == x and y_mask == mask, it copies nothing (a copy onto itself is undefined in CUDA; the emulator
// rejects overlapping copies, so this fails if either copy is issued). In training it writes y.
TEST(ModelCApi, IdentityModelRunsInPlace) {
  const Json cfg = identity_config();
  culayersModel_t handle = nullptr;
  ASSERT_EQ(culayersModelCreate(&handle, cfg.dump().c_str(), nullptr, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  const std::vector<std::uint8_t> mask_host{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0};
  ASSERT_EQ(mask_host.size(), static_cast<std::size_t>(kB) * kT);
  DeviceBuffer<std::uint8_t> mask(mask_host);
  culayersModelRunArgs_t args = run_args(in.x.get(), in.x.get(), in.host.size() * sizeof(float));
  args.mask = mask.get();
  args.y_mask = mask.get();
  args.y_mask_bytes = mask_host.size();
  int wrote_mask = -1;
  ASSERT_EQ(culayersModelRun(handle, &args, &wrote_mask, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(wrote_mask, 1); // the input mask, passed through into the same buffer
  EXPECT_EQ(in.x.download(), in.host);
  EXPECT_EQ(mask.download(), mask_host);

  // Training draws a mask: into a separate y (y == x would be in place, which the Dropout op allows but the
  // model's output buffer is not x), some elements zeroed, the rest scaled by 1 / 0.75.
  DeviceBuffer<float> y(in.host.size());
  args.y = y.get();
  args.phase = CULAYERS_PHASE_TRAINING;
  ASSERT_EQ(culayersModelRun(handle, &args, &wrote_mask, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> got = y.download();
  int dropped = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] == 0.0f && in.host[i] != 0.0f) {
      ++dropped;
    } else {
      EXPECT_EQ(got[i], in.host[i] * static_cast<float>(1.0 / 0.75)) << i; // scale = (float)(1 / p)
    }
  }
  EXPECT_GT(dropped, 0);
  EXPECT_EQ(in.x.download(), in.host);
  culayersModelDestroy(handle);
}

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A training-phase culayersModelRun that fails its checks runs nothing: the weights the model saves
// (DecayingDropout's counter, BatchNormalization's moving statistics) are byte for byte as before, and y is
// not written; each error has its own status. A valid call then moves them (so the comparison can see it).
TEST(ModelCApi, TrainingRunErrorsChangeNothing) {
  culayersModel_t handle = nullptr;
  ASSERT_EQ(culayersModelCreate(&handle, with_build_shape(demo_config("capi_errors")).dump().c_str(), nullptr,
                                nullptr),
            CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  DeviceBuffer<float> y(static_cast<std::size_t>(kB) * kF);
  const std::vector<float> sentinel(y.size(), -7.0f);
  y.upload(sentinel);
  culayersModelRunArgs_t args = run_args(in.x.get(), y.get(), y.size() * sizeof(float));
  args.phase = CULAYERS_PHASE_TRAINING;
  const std::string before = temp_path("errors_before.safetensors");
  ASSERT_EQ(culayersModelSaveWeights(handle, before.c_str(), nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  const int seven = 7;
  const struct {
    const char* what;
    culayersStatus_t want;
    std::function<void(culayersModelRunArgs_t&)> mutate;
  } cases[] = {
      {"y_bytes too small", CULAYERS_STATUS_INVALID_VALUE, [](culayersModelRunArgs_t& a) { a.y_bytes = 4; }},
      {"phase 7", CULAYERS_STATUS_INVALID_VALUE,
       [&](culayersModelRunArgs_t& a) { std::memcpy(&a.phase, &seven, sizeof(seven)); }},
      {"dtype int32", CULAYERS_STATUS_INVALID_DTYPE,
       [](culayersModelRunArgs_t& a) { a.dtype = CULAYERS_DTYPE_INT32; }},
      {"rank 0", CULAYERS_STATUS_INVALID_SHAPE, [](culayersModelRunArgs_t& a) { a.rank = 0; }},
      {"features 5", CULAYERS_STATUS_INVALID_SHAPE, [](culayersModelRunArgs_t& a) { a.dims[2] = 5; }},
      {"y inside x", CULAYERS_STATUS_INCONSISTENT_ARGUMENTS,
       [&](culayersModelRunArgs_t& a) { a.y = in.x.get() + 1; }},
  };
  for (const auto& c : cases) {
    culayersModelRunArgs_t bad = args;
    c.mutate(bad);
    EXPECT_EQ(culayersModelRun(handle, &bad, nullptr, nullptr), c.want)
        << c.what << ": " << culayersGetLastErrorMessage();
  }
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(y.download(), sentinel);
  const std::string after = temp_path("errors_after.safetensors");
  ASSERT_EQ(culayersModelSaveWeights(handle, after.c_str(), nullptr), CULAYERS_STATUS_SUCCESS);
  EXPECT_EQ(file_bytes(after), file_bytes(before)) << "a failing call moved a counter or a statistic";
  ASSERT_EQ(culayersModelRun(handle, &args, nullptr, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  const std::string moved = temp_path("errors_moved.safetensors");
  ASSERT_EQ(culayersModelSaveWeights(handle, moved.c_str(), nullptr), CULAYERS_STATUS_SUCCESS);
  EXPECT_NE(file_bytes(moved), file_bytes(before)) << "a valid training call must move the saved state";

  // The saved weights load into a new model that computes the same bits (inference uses the moving
  // statistics the training call moved).
  culayersModel_t reloaded = nullptr;
  ASSERT_EQ(culayersModelCreate(&reloaded, with_build_shape(demo_config("capi_errors")).dump().c_str(),
                                moved.c_str(), nullptr),
            CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  DeviceBuffer<float> y2(y.size());
  culayersModelRunArgs_t infer = args;
  infer.phase = CULAYERS_PHASE_INFERENCE;
  ASSERT_EQ(culayersModelRun(handle, &infer, nullptr, nullptr), CULAYERS_STATUS_SUCCESS);
  infer.y = y2.get();
  ASSERT_EQ(culayersModelRun(reloaded, &infer, nullptr, nullptr), CULAYERS_STATUS_SUCCESS);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> a = y.download();
  const std::vector<float> b = y2.download();
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  culayersModelDestroy(reloaded);
  culayersModelDestroy(handle);
}

// call(stream, x, mask, &out) runs in default_phase(): inference unless set (no counter or statistic moves),
// training after set_default_phase(kTraining) (both move).
TEST(Sequential, DefaultPhaseCallsRunInThatPhase) {
  auto model = make_model(with_build_shape(demo_config("phases")));
  ASSERT_TRUE(model);
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng);
  nn::LayerOutput out{};
  EXPECT_EQ(model->default_phase(), nn::Phase::kInference);
  const auto it0 = dropout_state(*model, "dd");
  const std::vector<std::uint8_t> mm0 = weight_bytes(*model, "bn", "moving_mean");
  ASSERT_EQ(model->call(nullptr, in.view, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_EQ(dropout_state(*model, "dd"), it0);
  EXPECT_EQ(weight_bytes(*model, "bn", "moving_mean"), mm0);
  model->set_default_phase(nn::Phase::kTraining);
  ASSERT_EQ(model->call(nullptr, in.view, {}, &out), Status::kSuccess) << culayers::last_error_message();
  EXPECT_NE(dropout_state(*model, "dd"), it0);
  EXPECT_NE(weight_bytes(*model, "bn", "moving_mean"), mm0);
}

// The output mask is copied into the caller's y_mask when the model produces one: Masking's own mask
// [batch, steps], and MaskedFlatten's expanded one [batch, steps x features]; a y_mask one byte short is an
// error before anything runs (neither y nor y_mask written).
TEST(ModelCApi, OutputMasksAreCopiedIntoYMask) {
  auto rng = culayers::test::rng_for_test();
  Inputs in = make_inputs(rng); // rows of kT, 4 and 1 valid steps; padded steps are exactly 0
  const std::vector<int> lengths = {kT, 4, 1};
  Json masking = {{"class_name", "Masking"}, {"config", {{"name", "masking"}, {"mask_value", 0.0}}}};
  Json flatten = {{"class_name", "MaskedFlatten"}, {"config", {{"name", "flat"}}}};
  for (const bool flat : {false, true}) {
    SCOPED_TRACE(flat ? "Masking, MaskedFlatten" : "Masking");
    Json layers = Json::array({masking});
    if (flat) {
      layers.push_back(flatten);
    }
    const Json cfg = {
        {"class_name", "Sequential"},
        {"config", {{"name", "masks"}, {"layers", layers}, {"build_input_shape", {nullptr, kT, kF}}}}};
    culayersModel_t handle = nullptr;
    ASSERT_EQ(culayersModelCreate(&handle, cfg.dump().c_str(), nullptr, nullptr), CULAYERS_STATUS_SUCCESS)
        << culayersGetLastErrorMessage();
    const std::size_t per_row = flat ? static_cast<std::size_t>(kT) * kF : static_cast<std::size_t>(kT);
    std::vector<std::uint8_t> want(static_cast<std::size_t>(kB) * per_row, 0);
    for (int b = 0; b < kB; ++b) {
      for (std::size_t j = 0; j < per_row; ++j) {
        const std::size_t t = flat ? j / static_cast<std::size_t>(kF) : j;
        want[static_cast<std::size_t>(b) * per_row + j] = t < static_cast<std::size_t>(lengths[b]) ? 1 : 0;
      }
    }
    DeviceBuffer<float> y(in.host.size());
    DeviceBuffer<std::uint8_t> y_mask(want.size());
    const std::vector<float> y_sentinel(y.size(), -7.0f);
    const std::vector<std::uint8_t> m_sentinel(want.size(), 0xa5);
    y.upload(y_sentinel);
    y_mask.upload(m_sentinel);
    culayersModelRunArgs_t args = run_args(in.x.get(), y.get(), y.size() * sizeof(float));
    args.y_mask = y_mask.get();
    args.y_mask_bytes = want.size() - 1;
    int wrote_mask = -1;
    EXPECT_EQ(culayersModelRun(handle, &args, &wrote_mask, nullptr), CULAYERS_STATUS_INVALID_VALUE);
    EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("y_mask_bytes"), std::string::npos)
        << culayersGetLastErrorMessage();
    EXPECT_EQ(wrote_mask, -1);
    CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
    EXPECT_EQ(y.download(), y_sentinel);
    EXPECT_EQ(y_mask.download(), m_sentinel);
    args.y_mask_bytes = want.size();
    ASSERT_EQ(culayersModelRun(handle, &args, &wrote_mask, nullptr), CULAYERS_STATUS_SUCCESS)
        << culayersGetLastErrorMessage();
    CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
    EXPECT_EQ(wrote_mask, 1);
    EXPECT_EQ(y_mask.download(), want);
    EXPECT_EQ(y.download(), in.host) << "Masking with mask value 0 leaves padded-with-0 input as it is";
    culayersModelDestroy(handle);
  }
}

// culayersModelRun copies the output (and the output mask) after the model ran: y may equal x and y_mask
// may equal mask, but any other overlap among y, y_mask, x and mask is refused before anything runs (a
// copy would read or clobber another's bytes; an overlapping copy is undefined in CUDA), in either phase,
// and the buffers are left as they were.
TEST(ModelCApi, RunRefusesOverlappingOutputs) {
  const Json cfg = identity_config();
  culayersModel_t handle = nullptr;
  ASSERT_EQ(culayersModelCreate(&handle, cfg.dump().c_str(), nullptr, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  auto rng = culayers::test::rng_for_test();
  const std::size_t n = static_cast<std::size_t>(kB) * kT * kF;
  const std::size_t steps = static_cast<std::size_t>(kB) * kT;
  // One buffer holding x and room past it; one holding the mask and room past it (room for a whole y too:
  // every range a case passes lies inside its own allocation, so it overlaps only what the case means it
  // to, whatever the allocator placed next to it).
  std::vector<float> host = padded_batch(rng, {kT, 4, 1});
  host.resize(2 * n, 3.0f);
  DeviceBuffer<float> xs(host);
  std::vector<std::uint8_t> mask_host(n * sizeof(float) + 2 * steps, 1);
  DeviceBuffer<std::uint8_t> masks(mask_host);
  DeviceBuffer<float> y(n);
  const std::vector<float> y_host(n, -7.0f);
  y.upload(y_host);
  culayersModelRunArgs_t args = run_args(xs.get(), y.get(), n * sizeof(float));
  args.mask = masks.get();
  args.y_mask = masks.get() + steps; // its own bytes: fine
  args.y_mask_bytes = steps;
  auto* y_bytes = reinterpret_cast<std::uint8_t*>(y.get());
  const struct {
    const char* what;
    void* y;
    std::uint8_t* y_mask;
    const char* message;
  } cases[] = {
      {"y one element into x", xs.get() + 1, args.y_mask, "y: overlaps x"},
      {"y over the mask", masks.get(), args.y_mask, "y: overlaps mask"},
      {"y_mask inside y", y.get(), y_bytes + 8, "y: overlaps y_mask"},
      {"y_mask one byte into mask", y.get(), masks.get() + 1, "y_mask: overlaps mask"},
      {"y_mask inside x", y.get(), reinterpret_cast<std::uint8_t*>(xs.get() + 4), "y_mask: overlaps x"},
  };
  for (const culayersPhase_t phase : {CULAYERS_PHASE_INFERENCE, CULAYERS_PHASE_TRAINING}) {
    for (const auto& c : cases) {
      culayersModelRunArgs_t bad = args;
      bad.phase = phase;
      bad.y = c.y;
      bad.y_mask = c.y_mask;
      int wrote_mask = -1;
      EXPECT_EQ(culayersModelRun(handle, &bad, &wrote_mask, nullptr), CULAYERS_STATUS_INCONSISTENT_ARGUMENTS)
          << c.what;
      EXPECT_NE(std::string(culayersGetLastErrorMessage()).find(c.message), std::string::npos)
          << c.what << ": " << culayersGetLastErrorMessage();
      EXPECT_EQ(wrote_mask, -1) << c.what;
    }
  }
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(xs.download(), host);
  EXPECT_EQ(masks.download(), mask_host);
  EXPECT_EQ(y.download(), y_host);
  // The allowed cases still run: y == x, y_mask == mask, and separate buffers.
  culayersModelRunArgs_t same = args;
  same.y = xs.get();
  same.y_mask = masks.get();
  EXPECT_EQ(culayersModelRun(handle, &same, nullptr, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  EXPECT_EQ(culayersModelRun(handle, &args, nullptr, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(y.download(), std::vector<float>(host.begin(), host.begin() + static_cast<std::ptrdiff_t>(n)));
  culayersModelDestroy(handle);

  // A model whose output carries no mask (pooling consumes it) writes nothing to y_mask, so y_mask is not
  // checked: here it even lies inside y.
  const Json pooled = {
      {"class_name", "Sequential"},
      {"config",
       {{"name", "pooled"},
        {"layers",
         {{{"class_name", "MaskedGlobalPooling1D"}, {"config", {{"name", "pool"}, {"mode", "mean"}}}}}},
        {"build_input_shape", {nullptr, kT, kF}}}}};
  ASSERT_EQ(culayersModelCreate(&handle, pooled.dump().c_str(), nullptr, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  culayersModelRunArgs_t consumed = args;
  consumed.y_bytes = static_cast<std::size_t>(kB) * kF * sizeof(float);
  consumed.y_mask = reinterpret_cast<std::uint8_t*>(y.get()) + 4;
  int wrote_mask = -1;
  EXPECT_EQ(culayersModelRun(handle, &consumed, &wrote_mask, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  EXPECT_EQ(wrote_mask, 0);
  culayersModelDestroy(handle);
}

} // namespace
