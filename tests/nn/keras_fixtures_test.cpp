// Models written and run by Keras itself (tests/data/keras3 and tests/data/tf_keras2, made by
// tests/data/make_keras_fixtures.py with the versions each MANIFEST.txt names): culayers reads each config
// with every key known (a strict read), loads the weights under their Keras names, and must compute what
// Keras computed: the inference output, and for the cases run in training the training output (batch
// statistics, masked where Keras masked them) and the moving statistics after that call. Keras feeds its
// moving variance the biased batch variance where culayers feeds the unbiased one (docs/semantics.md
// §6.4): the expected moving variance is Keras's with that factor applied.
#include "culayers/nn/core_layers.hpp"
#include "culayers/nn/layer.hpp"
#include "culayers/nn/normalization.hpp"
#include "culayers/nn/safetensors.hpp"
#include "culayers/nn/sequential.hpp"

#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace nn = culayers::nn;
using culayers::ConstTensorView;
using culayers::DType;
using culayers::Shape;
using culayers::Status;
using nn::Json;

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<float> floats_of(const nn::SafetensorsTensor& t) {
  EXPECT_EQ(t.dtype, DType::kFloat32) << t.name;
  std::vector<float> v(t.data.size() / sizeof(float));
  std::memcpy(v.data(), t.data.data(), v.size() * sizeof(float));
  return v;
}

/// A device tensor of float32, float16 or bfloat16, as floats.
std::vector<float> download(const ConstTensorView& v) {
  const auto n = static_cast<std::size_t>(v.shape().numel());
  std::vector<float> out(n);
  if (n == 0) {
    return out;
  }
  if (v.dtype() == DType::kFloat32) {
    EXPECT_EQ(cudaMemcpy(out.data(), v.data(), n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
  std::vector<std::uint16_t> bits(n);
  EXPECT_EQ(cudaMemcpy(bits.data(), v.data(), n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  for (std::size_t i = 0; i < n; ++i) {
    if (v.dtype() == DType::kFloat16) {
      __half_raw raw;
      raw.x = bits[i];
      out[i] = __half2float(__half(raw));
    } else {
      const std::uint32_t f = static_cast<std::uint32_t>(bits[i]) << 16;
      std::memcpy(&out[i], &f, 4);
    }
  }
  return out;
}

/// x, whose values the fixture made exact in `dtype`, as that dtype's bytes.
std::vector<std::uint8_t> encode(const std::vector<float>& x, DType dtype) {
  std::vector<std::uint8_t> bytes(x.size() * culayers::dtype_size(dtype));
  if (dtype == DType::kFloat32) {
    std::memcpy(bytes.data(), x.data(), bytes.size());
    return bytes;
  }
  for (std::size_t i = 0; i < x.size(); ++i) {
    std::uint32_t f = 0;
    std::memcpy(&f, &x[i], 4);
    std::uint16_t h = static_cast<std::uint16_t>(f >> 16); // bfloat16: the dropped half is 0 (checked)
    bool exact = (f & 0xffffu) == 0;
    if (dtype == DType::kFloat16) {
      const __half v = __float2half_rn(x[i]);
      h = static_cast<__half_raw>(v).x;
      exact = __half2float(v) == x[i];
    }
    EXPECT_TRUE(exact) << "x[" << i << "] = " << x[i] << " is not exact in " << culayers::dtype_name(dtype);
    std::memcpy(&bytes[i * 2], &h, 2);
  }
  return bytes;
}

/// |got - want| <= tol (1 + |want|) everywhere, tol by the output's dtype (CULAYERS_FIXTURE_TRACE=1 prints
/// the worst ratio of each comparison):
///  - float32, 4e-6 (about 32 units of float32 roundoff): both sides compute in float32 with other
///    summation orders (XLA's, TensorFlow's, culayers's); the worst seen with the committed fixtures is
///    3e-7;
///  - float16 and bfloat16, 4 units of roundoff (2^-11, 2^-8; two units in the last place): each side rounds
///    every layer's output to the half type (Keras's mixed precision, culayers's layer dtype), so an
///    intermediate may differ by a unit in the last place, which the next layer may carry into the output
///    besides the output's own rounding. Keras 3's outputs agree bit for bit; tf.keras 2's are within 62 %
///    of this (its group norm computes in the half type). A model takes the tolerance of its least precise
///    layer (a float32 last layer reads half-precision activations).
double tolerance(DType dtype) {
  switch (dtype) {
  case DType::kFloat16:
    return 4.0 * std::ldexp(1.0, -11);
  case DType::kBFloat16:
    return 4.0 * std::ldexp(1.0, -8);
  default:
    return 4e-6;
  }
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what,
                  double tol_rel) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double scale = 1.0 + std::fabs(static_cast<double>(want[i]));
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    worst = std::max(worst, err / scale);
    ASSERT_LE(err, tol_rel * scale) << what << "[" << i << "]: culayers " << got[i] << ", Keras " << want[i];
  }
  if (std::getenv("CULAYERS_FIXTURE_TRACE") != nullptr) {
    std::printf("[ keras ] %s: worst |difference| / (1 + |Keras|) = %.3g (tolerance %.3g)\n", what.c_str(),
                worst, tol_rel);
  }
}

/// One model of a fixture directory's cases.json.
struct Case {
  std::string name;
  Shape output;  // the model's output shape for the fixture's input
  bool training; // the fixture has a training call
  bool masked;   // a Masking layer first: batch statistics over the valid steps of [batch, steps, F]
  std::vector<std::string> unbiased;    // batch norms whose Keras moving variance took the unbiased variance
  std::vector<std::string> not_applied; // paths of the Keras keys culayers must report as not applied
  bool random_training = false;         // a dropout drops in the training call: its output is not compared
  Json keep_rates;                      // {layer: keep rate of the next training call} of DecayingDropouts
};

std::vector<Case> read_cases(const std::filesystem::path& dir) {
  std::vector<Case> cases;
  const Json list = Json::parse(read_text(dir / "cases.json"), nullptr, false);
  EXPECT_TRUE(list.is_array()) << dir / "cases.json";
  if (!list.is_array()) {
    return cases;
  }
  for (const Json& c : list) {
    std::vector<std::int64_t> dims = c.at("output_shape").get<std::vector<std::int64_t>>();
    Shape shape{};
    EXPECT_EQ(Shape::make(dims.data(), static_cast<int>(dims.size()), &shape), Status::kSuccess);
    cases.push_back({c.at("name").get<std::string>(), shape, c.at("training").get<bool>(),
                     c.at("masked").get<bool>(),
                     c.at("unbiased_moving_variance").get<std::vector<std::string>>(),
                     c.at("keras_keys_not_applied").get<std::vector<std::string>>(),
                     c.at("random_training").get<bool>(), c.at("decaying_dropout_keep_rates")});
  }
  return cases;
}

/// The positions each BatchNormalization channel's batch statistics counted: the valid steps (a step is
/// valid when any of its features differs from 0, Masking's rule) or every position but the channel axis.
std::int64_t statistics_count(const Case& c, const Shape& x_shape, const std::vector<float>& x,
                              std::int64_t channels) {
  if (!c.masked) {
    return x_shape.numel() / channels;
  }
  const std::int64_t features = x_shape.numel() / (x_shape.dim(0) * x_shape.dim(1));
  std::int64_t valid = 0;
  for (std::int64_t step = 0; step < x_shape.dim(0) * x_shape.dim(1); ++step) {
    bool any = false;
    for (std::int64_t f = 0; f < features; ++f) {
      any = any || x[static_cast<std::size_t>(step * features + f)] != 0.0f;
    }
    valid += any ? 1 : 0;
  }
  return valid;
}

/// Every case of the fixture directory `framework` (tests/data/<framework>).
void check_fixtures(const std::string& framework) {
  const std::filesystem::path dir = culayers::test::test_data_dir() / framework;
  const std::vector<Case> cases = read_cases(dir);
  EXPECT_GE(cases.size(), 12u) << dir;
  for (const Case& c : cases) {
    SCOPED_TRACE(framework + "/" + c.name);
    // The config as Keras wrote it, read strictly: every key is one culayers or Keras knows; the Keras keys
    // culayers does not apply (set regularizers and constraints, a frozen model's "trainable") are listed.
    std::vector<nn::UnusedConfigKey> unused;
    nn::ConfigReadOptions strict;
    strict.reject_unknown_keys = true;
    strict.unused_keys = &unused;
    std::unique_ptr<nn::Sequential> model;
    ASSERT_EQ(nn::Sequential::from_json_string(read_text(dir / (c.name + ".json")), strict, &model),
              Status::kSuccess)
        << culayers::last_error_message();
    std::vector<std::string> listed;
    for (const nn::UnusedConfigKey& k : unused) {
      EXPECT_TRUE(k.keras_key) << "unknown key " << k.path;
      listed.push_back(k.path);
    }
    EXPECT_EQ(listed, c.not_applied);
    ASSERT_TRUE(model->built());
    ASSERT_EQ(model->load_weights((dir / (c.name + ".weights.safetensors")).string()), Status::kSuccess)
        << culayers::last_error_message();
    nn::SafetensorsFile io;
    ASSERT_EQ(nn::read_safetensors((dir / (c.name + ".io.safetensors")).string(), &io), Status::kSuccess)
        << culayers::last_error_message();
    const nn::SafetensorsTensor* x_file = io.find("x");
    ASSERT_NE(x_file, nullptr);
    const std::vector<float> x = floats_of(*x_file);
    // The input dtype as Keras was given it: the first layer's compute dtype (x exact in it), or float32 for
    // a case whose first layer casts it (Keras's autocast, and culayers's).
    DType dtype = DType::kFloat32;
    if (const auto it = io.metadata.find("input_dtype"); it != io.metadata.end()) {
      ASSERT_TRUE(it->second == "float32" || it->second == "float16" || it->second == "bfloat16")
          << it->second;
      dtype = it->second == "float16"    ? DType::kFloat16
              : it->second == "bfloat16" ? DType::kBFloat16
                                         : DType::kFloat32;
    }
    EXPECT_TRUE(model->layer(0).dtype() == dtype || dtype == DType::kFloat32) << culayers::dtype_name(dtype);
    const std::vector<std::uint8_t> x_bytes = encode(x, dtype);
    culayers::test::DeviceBuffer<std::uint8_t> x_dev(x_bytes.size());
    x_dev.upload(x_bytes);
    const ConstTensorView xv = ConstTensorView::contiguous(x_dev.get(), dtype, x_file->shape);
    // By the least precise layer: a float32 last layer after half-precision ones reads their rounded
    // outputs (Keras's mixed precision with a float32 last layer).
    double tol = 0.0;
    for (std::size_t i = 0; i < model->size(); ++i) {
      tol = std::max(tol, tolerance(model->layer(i).dtype()));
    }

    nn::CallContext infer{};
    nn::LayerOutput out{};
    ASSERT_EQ(model->call(infer, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
    ASSERT_EQ(out.y.shape(), c.output);
    ASSERT_NE(io.find("y_inference"), nullptr);
    expect_close(download(out.y), floats_of(*io.find("y_inference")), "inference output", tol);
    if (!c.training) {
      EXPECT_EQ(io.find("y_training"), nullptr);
      continue;
    }

    // One training call: the output from batch statistics (none where a dropout drops: its masks are
    // Keras's own random draws), then the state it left: moving statistics and dropout counters.
    nn::SafetensorsFile before;
    ASSERT_EQ(model->get_weights(&before), Status::kSuccess);
    nn::CallContext train{};
    train.phase = nn::Phase::kTraining;
    ASSERT_EQ(model->call(train, xv, {}, &out), Status::kSuccess) << culayers::last_error_message();
    if (!c.random_training) {
      ASSERT_NE(io.find("y_training"), nullptr);
      expect_close(download(out.y), floats_of(*io.find("y_training")), "training output", tol);
    }
    nn::SafetensorsFile after;
    ASSERT_EQ(model->get_weights(&after), Status::kSuccess);
    int compared = 0;
    for (std::size_t i = 0; i < model->size(); ++i) {
      if (const auto* dd = dynamic_cast<const nn::DecayingDropout*>(&model->layer(i)); dd != nullptr) {
        // Keras's float32 (1,) counter, loaded as the int64 count (Layer::convert_weight_data), advanced by
        // the training call as Keras advanced its own.
        const std::string key = dd->name() + "/iterations";
        const nn::SafetensorsTensor* count = after.find(key);
        ASSERT_NE(count, nullptr);
        std::int64_t got = -1;
        ASSERT_EQ(count->data.size(), sizeof(got));
        std::memcpy(&got, count->data.data(), sizeof(got));
        ASSERT_NE(io.find("after/" + key), nullptr);
        EXPECT_EQ(static_cast<float>(got), floats_of(*io.find("after/" + key)).at(0)) << key;
        // The schedule from the config's keys: the next call's keep rate, the tutorial's formula evaluated
        // by the fixture script in double (the state keeps it in double).
        culayers::dropout::DropoutState state{};
        ASSERT_EQ(dd->read_state(&state, nullptr), Status::kSuccess);
        ASSERT_TRUE(c.keep_rates.contains(dd->name())) << dd->name();
        EXPECT_NEAR(state.keep_rate, c.keep_rates[dd->name()].get<double>(), 1e-12) << dd->name();
        ++compared;
        continue;
      }
      const auto* bn = dynamic_cast<const nn::BatchNormalization*>(&model->layer(i));
      if (bn == nullptr) {
        continue;
      }
      const std::string layer = bn->name();
      if (!bn->trainable()) { // frozen: the training call left the moving statistics as they were
        for (const char* w : {"/moving_mean", "/moving_variance"}) {
          EXPECT_EQ(floats_of(*after.find(layer + w)), floats_of(*before.find(layer + w))) << layer << w;
          EXPECT_EQ(floats_of(*io.find("after/" + layer + w)), floats_of(*before.find(layer + w)))
              << layer << w;
        }
        ++compared;
        continue;
      }
      const double m = bn->options().momentum;
      for (const std::string& key :
           {"after/" + layer + "/moving_mean", "after/" + layer + "/moving_variance"}) {
        ASSERT_NE(io.find(key), nullptr) << key;
      }
      for (const std::string& key : {layer + "/moving_mean", layer + "/moving_variance"}) {
        ASSERT_NE(before.find(key), nullptr) << key;
        ASSERT_NE(after.find(key), nullptr) << key;
      }
      // Keras: mv = m mv0 + (1 - m) var, var biased (tf.keras 2's fused batch norm: unbiased); culayers: the
      // unbiased var. A batch norm computing in a half type reads half inputs, each of which may differ by
      // a unit in the last place from Keras's (the previous layer's rounding): the batch statistics may
      // move by as much relative to the inputs' scale, the moving ones by (1 - m) of that. Hence float32's
      // tolerance plus (1 - m) x 4 units of the half type's roundoff (tf.keras 2's bfloat16 case: 5.6e-4
      // seen against 1.6e-3; a variance without the n / (n - 1) factor would be off by 6e-3 there).
      const bool keras_unbiased = std::find(c.unbiased.begin(), c.unbiased.end(), layer) != c.unbiased.end();
      const double half_roundoff = bn->dtype() == DType::kFloat16    ? std::ldexp(1.0, -11)
                                   : bn->dtype() == DType::kBFloat16 ? std::ldexp(1.0, -8)
                                                                     : 0.0;
      const double stats_tol = tolerance(DType::kFloat32) + (1.0 - m) * 4.0 * half_roundoff;
      expect_close(floats_of(*after.find(layer + "/moving_mean")),
                   floats_of(*io.find("after/" + layer + "/moving_mean")), layer + " moving mean", stats_tol);
      const std::vector<float> mv0 = floats_of(*before.find(layer + "/moving_variance"));
      const std::vector<float> mv_keras = floats_of(*io.find("after/" + layer + "/moving_variance"));
      const std::int64_t n = statistics_count(c, x_file->shape, x, static_cast<std::int64_t>(mv0.size()));
      ASSERT_GT(n, 1);
      std::vector<float> want(mv0.size());
      for (std::size_t ch = 0; ch < mv0.size(); ++ch) {
        const double var = (mv_keras[ch] - m * mv0[ch]) / (1.0 - m);
        const double bessel = keras_unbiased ? 1.0 : static_cast<double>(n) / (n - 1.0);
        want[ch] = static_cast<float>(m * mv0[ch] + (1.0 - m) * var * bessel);
      }
      expect_close(floats_of(*after.find(layer + "/moving_variance")), want, layer + " moving variance",
                   stats_tol);
      ++compared;
    }
    EXPECT_GT(compared, 0) << "a training case without a batch norm or a dropout counter compares no state";
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(KerasFixtures, Keras3ModelsLoadStrictlyAndComputeWhatKerasComputed) {
  check_fixtures("keras3");
}

TEST(KerasFixtures, TfKeras2ModelsLoadStrictlyAndComputeWhatKerasComputed) {
  check_fixtures("tf_keras2");
}

// Keras's GlobalAveragePooling1D reads as the masked mean; the options culayers does not implement are
// refused by name.
TEST(KerasFixtures, GlobalAveragePooling1DReadsAsTheMaskedMean) {
  std::unique_ptr<nn::Layer> layer;
  ASSERT_EQ(nn::layer_from_json(Json::parse(R"({"class_name": "GlobalAveragePooling1D",
      "config": {"name": "gap", "data_format": "channels_last", "keepdims": false}})"),
                                &layer),
            Status::kSuccess)
      << culayers::last_error_message();
  const auto* pool = dynamic_cast<const nn::MaskedGlobalPooling1D*>(layer.get());
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(nn::layer_to_json(*layer)["class_name"], "MaskedGlobalPooling1D");
  EXPECT_EQ(nn::layer_to_json(*layer)["config"]["mode"], "mean");
  // "mode" and "axis" are MaskedGlobalPooling1D's keys, not Keras's GlobalAveragePooling1D's: its factory
  // reads neither, so a strict read refuses them (the layer's own get_config() does not make them used).
  nn::ConfigReadOptions strict;
  strict.reject_unknown_keys = true;
  for (const char* key : {"mode", "axis"}) {
    Json j = Json::parse(R"({"class_name": "GlobalAveragePooling1D", "config": {"name": "gap"}})");
    j["config"][key] = std::string(key) == "mode" ? Json("max") : Json(2);
    EXPECT_EQ(nn::layer_from_json(j, strict, &layer), Status::kErrorParse) << key;
    EXPECT_NE(
        std::string(culayers::last_error_message()).find(std::string("config.") + key + ": unknown key"),
        std::string::npos)
        << culayers::last_error_message();
  }
  EXPECT_EQ(nn::layer_from_json(Json::parse(R"({"class_name": "GlobalAveragePooling1D",
      "config": {"data_format": "channels_first"}})"),
                                &layer),
            Status::kErrorNotSupported);
  EXPECT_NE(std::string(culayers::last_error_message()).find("\"data_format\": channels_first"),
            std::string::npos);
  EXPECT_EQ(nn::layer_from_json(Json::parse(R"({"class_name": "GlobalAveragePooling1D",
      "config": {"keepdims": true}})"),
                                &layer),
            Status::kErrorNotSupported);
  EXPECT_EQ(nn::layer_from_json(Json::parse(R"({"class_name": "GlobalAveragePooling1D",
      "config": {"data_format": "nwc"}})"),
                                &layer),
            Status::kErrorParse);
  EXPECT_EQ(nn::layer_from_json(Json::parse(R"({"class_name": "GlobalAveragePooling1D",
      "config": {"keepdims": 0}})"),
                                &layer),
            Status::kErrorParse);
}

} // namespace
