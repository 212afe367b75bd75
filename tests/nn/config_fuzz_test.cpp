// Robustness of everything that reads a model from outside: Sequential::from_json / from_json_string, the
// model C API (culayersModelCreate, culayersModelRun) and safetensors weights (parse_safetensors,
// set_weights). A deterministic mutation fuzzer, seeded from the run's base seed: valid configs and weight
// images are mutated (JSON values swapped for other types and extreme numbers, keys dropped or added,
// subtrees moved, bytes of the text flipped, cut or repeated) and every mutant must either be refused with
// an error status and a message, writing nothing, or give a model that behaves: its own config and weights
// load again, a call either fails cleanly or returns an output of the shape compute_output_shape states,
// and the device is left without a fault or a sticky error, and without leaked allocations.
//
// On the emulated backend the device memory is limited to a few MiB for these tests, so a mutant asking for
// a huge weight is refused quickly (an out-of-memory path of the library) instead of allocating gigabytes.
// CULAYERS_FUZZ_ITERATIONS=N multiplies the iterations (a longer local run); a failure prints the mutant.
#include "culayers/c/model.h"
#include "culayers/nn/layer.hpp"
#include "culayers/nn/safetensors.hpp"
#include "culayers/nn/sequential.hpp"

#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace nn = culayers::nn;
using culayers::ConstTensorView;
using culayers::DType;
using culayers::Shape;
using culayers::Status;
using nn::Json;

/// The largest model input a mutant is called with (elements): enough for every seed's shapes.
constexpr std::int64_t kMaxCallElements = std::int64_t{1} << 14;

/// CULAYERS_FUZZ_ITERATIONS (a multiplier, default 1).
int iteration_scale() {
  const char* v = std::getenv("CULAYERS_FUZZ_ITERATIONS");
  const long n = v != nullptr ? std::strtol(v, nullptr, 10) : 1;
  return n >= 1 && n <= 100000 ? static_cast<int>(n) : 1;
}

/// Emulated backend: the device memory limit for one test (the live allocations plus `bytes`), restored
/// after it, and the emulator's report of each refused allocation kept off stderr (a fault still fails the
/// test, with the emulator's message). Does nothing on a GPU.
class DeviceMemoryLimit {
 public:
  explicit DeviceMemoryLimit(std::size_t bytes) {
#if CULAYERS_TEST_EMULATED
    std::size_t free_bytes = 0;
    std::size_t total = 0;
    EXPECT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
    previous_ = culayers_emu::set_device_memory_limit(total - free_bytes + bytes);
    culayers_emu::set_report_to_stderr(false);
#else
    (void)bytes;
#endif
  }
  ~DeviceMemoryLimit() {
#if CULAYERS_TEST_EMULATED
    (void)culayers_emu::set_device_memory_limit(previous_);
    culayers_emu::set_report_to_stderr(true);
#endif
  }
  DeviceMemoryLimit(const DeviceMemoryLimit&) = delete;
  DeviceMemoryLimit& operator=(const DeviceMemoryLimit&) = delete;

 private:
  std::size_t previous_ = 0;
};

/// The emulator's last message (a kernel fault's report), for a failure message; "" on a GPU.
std::string emulator_message() {
#if CULAYERS_TEST_EMULATED
  return culayers_emu::last_error_message();
#else
  return "";
#endif
}

/// On a GPU there is no device memory limit to refuse a huge weight quickly: a mutant holding a number
/// between 2^16 and 2^40 (a channel count of 2^31 would allocate gigabytes of device memory and generate its
/// initial values on the host) is skipped there. The emulated run loads every mutant.
bool skipped_on_this_backend(const Json& j) {
#if CULAYERS_TEST_EMULATED
  (void)j;
  return false;
#else
  if (j.is_number()) {
    const double v = std::fabs(j.get<double>());
    return v > 65536.0 && v < 1099511627776.0;
  }
  if (j.is_structured()) {
    for (const Json& child : j) {
      if (skipped_on_this_backend(child)) {
        return true;
      }
    }
  }
  return false;
#endif
}

/// Live device allocations (emulated backend; 0 on a GPU, where the check is skipped).
std::size_t live_allocations() {
#if CULAYERS_TEST_EMULATED
  return culayers_emu::live_allocations();
#else
  return 0;
#endif
}

Json layer(const char* class_name, Json config) {
  return Json{{"class_name", class_name}, {"config", std::move(config)}};
}

Json model(const char* name, Json layers, Json build_shape) {
  Json config = {{"name", name}, {"layers", std::move(layers)}};
  if (!build_shape.is_null()) {
    config["build_input_shape"] = std::move(build_shape);
  }
  return Json{{"class_name", "Sequential"}, {"config", std::move(config)}};
}

/// Valid configs covering every built-in layer class and the ways a config may be written (Keras 2 and 3
/// input layers, dtype policy objects, variable steps, channels first).
std::vector<Json> seed_configs() {
  std::vector<Json> seeds;
  seeds.push_back(
      model("demo",
            Json::array({layer("Masking", {{"name", "masking"}, {"mask_value", 0.0}}),
                         layer("GroupNormalization", {{"name", "gn"}, {"groups", 4}, {"activation", "silu"}}),
                         layer("DecayingDropout", {{"name", "dd"},
                                                   {"initial_keep_rate", 0.9},
                                                   {"decay_interval", 4},
                                                   {"decay_rate", 0.5},
                                                   {"seed", 1234}}),
                         layer("BatchNormalization", {{"name", "bn"}, {"momentum", 0.8}}),
                         layer("MaskedGlobalPooling1D", {{"name", "pool"}, {"mode", "mean"}})}),
            Json::array({nullptr, 6, 8})));
  seeds.push_back(model(
      "channels_first",
      Json::array(
          {layer("Dropout", {{"name", "drop"}, {"rate", 0.25}, {"noise_shape", {nullptr, 4, 1, 1}}}),
           layer("GroupNormalization", {{"name", "gn"}, {"groups", 2}, {"axis", 1}, {"activation", "relu"}}),
           layer("BatchNormalization", {{"name", "bn"}, {"axis", 1}, {"center", false}}),
           layer("MaskedFlatten", {{"name", "flat"}})}),
      Json::array({nullptr, 4, 3, 5})));
  // Keras 3: an InputLayer with batch_shape and DTypePolicy objects; variable steps (built by the first
  // call).
  const Json policy = {
      {"module", "keras"}, {"class_name", "DTypePolicy"}, {"config", {{"name", "mixed_bfloat16"}}}};
  seeds.push_back(model(
      "keras3",
      Json::array(
          {layer("InputLayer",
                 {{"name", "input"}, {"batch_shape", {nullptr, nullptr, 8}}, {"dtype", "bfloat16"}}),
           layer("Masking", {{"name", "masking"}, {"mask_value", 0.0}, {"dtype", policy}}),
           layer("GroupNormalization", {{"name", "gn"}, {"groups", 8}, {"scale", false}, {"dtype", policy}}),
           layer("DecayingDropout",
                 {{"name", "dd"}, {"initial_keep_rate", 0.75}, {"decay_interval", 1}, {"dtype", policy}}),
           layer("MaskedGlobalPooling1D", {{"name", "pool"}, {"mode", "max"}, {"dtype", policy}})}),
      nullptr));
  // tf.keras 2: batch_input_shape and a Policy object; float16 throughout.
  const Json policy2 = {{"class_name", "Policy"}, {"config", {{"name", "float16"}}}};
  seeds.push_back(model(
      "keras2",
      Json::array({layer("InputLayer",
                         {{"name", "in"}, {"batch_input_shape", {nullptr, 5, 6}}, {"dtype", "float16"}}),
                   layer("BatchNormalization", {{"name", "bn"}, {"dtype", policy2}, {"epsilon", 0.01}}),
                   layer("Dropout", {{"name", "drop"}, {"rate", 0.5}, {"seed", 7}, {"dtype", policy2}}),
                   layer("MaskedGlobalPooling1D", {{"name", "pool"}, {"mode", "sum"}, {"dtype", policy2}})}),
      nullptr));
  // And every config Keras 3 and tf.keras 2 wrote for the Keras fixtures (tests/data/<framework>/*.json),
  // as Keras wrote them: modules, registered names, build configs, initializer and policy objects.
  const std::size_t own = seeds.size();
  for (const char* framework : {"keras3", "tf_keras2"}) {
    const std::filesystem::path dir = culayers::test::test_data_dir() / framework;
    std::vector<std::filesystem::path> files;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (entry.path().extension() == ".json" && entry.path().filename() != "cases.json") {
        files.push_back(entry.path());
      }
    }
    std::sort(files.begin(), files.end()); // a fixed seed order: runs repeat with CULAYERS_TEST_SEED
    for (const std::filesystem::path& f : files) {
      std::ifstream in(f, std::ios::binary);
      seeds.push_back(
          Json::parse(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>())));
    }
  }
  EXPECT_GE(seeds.size(), own + 20) << "the Keras fixtures' configs were not found";
  return seeds;
}

/// Every node of `root`, pre-order (pointers valid until the tree changes).
void collect_nodes(Json& node, std::vector<Json*>* out) {
  out->push_back(&node);
  if (node.is_structured()) {
    for (Json& child : node) {
      collect_nodes(child, out);
    }
  }
}

/// Every object key in `node`.
void collect_keys(const Json& node, std::set<std::string>* out) {
  if (node.is_object()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      out->insert(it.key());
      collect_keys(it.value(), out);
    }
  } else if (node.is_array()) {
    for (const Json& child : node) {
      collect_keys(child, out);
    }
  }
}

/// Values a mutation puts in place of another: every JSON type, numbers at and past the limits of the
/// integer types a config field may be read into, non-finite doubles (a Json tree may hold them though a
/// text cannot), names the configs use, and shapes.
std::vector<Json> value_palette() {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<Json> v = {
      nullptr,
      true,
      false,
      0,
      1,
      -1,
      2,
      3,
      4,
      8,
      std::int64_t{1} << 31,
      (std::int64_t{1} << 32) + 1,
      std::numeric_limits<std::int64_t>::max(),
      std::numeric_limits<std::int64_t>::min(),
      std::numeric_limits<std::uint64_t>::max(),
      0.5,
      -0.5,
      1.0,
      2.5,
      1e-300,
      1e300,
      -1e300,
      std::nan(""),
      inf,
      -inf,
      "",
      "x",
      "silu",
      "relu",
      "swish",
      "linear",
      "mean",
      "max",
      "min",
      "sum",
      "float16",
      "bfloat16",
      "float64",
      "int32",
      "mixed_float16",
      "zeros",
      "ones",
      "random_normal",
      "GroupNormalization",
      "Dropout",
      "Sequential",
      "InputLayer",
      std::string(300, 'a'),
      std::string("a\0b", 3),
      Json::array(),
      Json::object(),
      Json::array({nullptr}),
      Json::array({1, 2}),
      Json::array({nullptr, 6, 8}),
      Json::array({nullptr, 1, 8}),
      Json::array({nullptr, 0, 8}),
      Json::array({-1}),
      Json::array({nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1}),
      Json{{"class_name", "DTypePolicy"}, {"config", {{"name", "float16"}}}},
      Json{{"class_name", "Constant"}, {"config", {{"value", 2.0}}}}};
  return v;
}

struct Mutator {
  std::mt19937_64& rng;
  std::vector<Json> palette;
  std::vector<Json> donors; // subtrees of every seed
  std::vector<std::string> keys;

  /// Uniform in [0, n) (0 when n is 0).
  std::size_t pick(std::size_t n) {
    return n == 0 ? 0 : std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
  }

  /// One to four changes to the tree.
  void mutate_tree(Json& root) {
    const std::size_t changes = 1 + pick(4);
    for (std::size_t c = 0; c < changes; ++c) {
      std::vector<Json*> nodes;
      collect_nodes(root, &nodes);
      Json& node = *nodes[pick(nodes.size())];
      switch (pick(6)) {
      case 0:
      case 1:
        node = palette[pick(palette.size())];
        break;
      case 2:
        node = donors[pick(donors.size())];
        break;
      case 3: // drop a key or an element
        if (node.is_object() && !node.empty()) {
          auto it = node.begin();
          std::advance(it, static_cast<std::ptrdiff_t>(pick(node.size())));
          node.erase(it);
        } else if (node.is_array() && !node.empty()) {
          node.erase(node.begin() + static_cast<std::ptrdiff_t>(pick(node.size())));
        }
        break;
      case 4: // add a key or an element
        if (node.is_object()) {
          node[keys[pick(keys.size())]] = palette[pick(palette.size())];
        } else if (node.is_array()) {
          Json element = node.empty() ? palette[pick(palette.size())]
                                      : node[pick(node.size())]; // a copy: push_back may reallocate
          node.push_back(std::move(element));
        }
        break;
      default: // swap two elements of an array (layer order, shape extents)
        if (node.is_array() && node.size() >= 2) {
          std::swap(node[pick(node.size())], node[pick(node.size())]);
        }
        break;
      }
    }
  }

  /// One to three byte-level changes to a text.
  std::string mutate_text(std::string text) {
    static const std::string kTokens[] = {"{",    "}",       "[",  "]", "\"", ",",     ":",  "-",
                                          "0",    "9",       "e",  "E", ".",  "1e999", "-0", "null",
                                          "true", "\\u0000", "\\", " ", "\n", "\xff"};
    const std::size_t changes = 1 + pick(3);
    for (std::size_t c = 0; c < changes && !text.empty(); ++c) {
      const std::size_t at = pick(text.size());
      switch (pick(5)) {
      case 0:
        text[at] = static_cast<char>(pick(256));
        break;
      case 1:
        text.insert(at, kTokens[pick(std::size(kTokens))]);
        break;
      case 2:
        text.erase(at, 1 + pick(8));
        break;
      case 3:
        text.insert(at, text.substr(pick(text.size()), 1 + pick(16)));
        break;
      default:
        text.resize(at);
        break;
      }
    }
    return text;
  }
};

Mutator make_mutator(std::mt19937_64& rng, const std::vector<Json>& seeds) {
  Mutator m{rng, value_palette(), {}, {}};
  std::set<std::string> keys = {"name",        "dtype",       "trainable", "groups",
                                "axis",        "epsilon",     "momentum",  "mode",
                                "rate",        "noise_shape", "seed",      "build_input_shape",
                                "batch_shape", "layers"};
  for (const Json& s : seeds) {
    Json copy = s;
    std::vector<Json*> nodes;
    collect_nodes(copy, &nodes);
    for (const Json* n : nodes) {
      m.donors.push_back(*n);
    }
    collect_keys(s, &keys);
  }
  m.keys.assign(keys.begin(), keys.end());
  return m;
}

/// Random bytes for a model input of `dtype`: finite values of either sign (float16 and bfloat16 drawn as
/// bit patterns with a bounded exponent), a few exact zeros (Masking's padding).
std::vector<std::uint8_t> random_input(std::mt19937_64& rng, DType dtype, std::int64_t n) {
  const std::size_t size = culayers::dtype_size(dtype);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(n) * size);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (std::int64_t i = 0; i < n; ++i) {
    const bool zero = rng() % 8 == 0;
    std::uint8_t* p = bytes.data() + static_cast<std::size_t>(i) * size;
    if (dtype == DType::kFloat32) {
      const float v = zero ? 0.0f : normal(rng);
      std::memcpy(p, &v, sizeof(v));
    } else if (dtype == DType::kBFloat16) {
      const float v = zero ? 0.0f : normal(rng);
      std::uint32_t bits = 0;
      std::memcpy(&bits, &v, sizeof(bits));
      const auto half = static_cast<std::uint16_t>(bits >> 16);
      std::memcpy(p, &half, sizeof(half));
    } else if (dtype == DType::kFloat16) {
      // sign, exponent 0..17 (|v| < 8), any mantissa
      const auto half = static_cast<std::uint16_t>(
          zero ? 0u : ((rng() & 1u) << 15) | ((rng() % 18u) << 10) | (rng() & 0x3ffu));
      std::memcpy(p, &half, sizeof(half));
    } else {
      for (std::size_t b = 0; b < size; ++b) {
        p[b] = static_cast<std::uint8_t>(rng());
      }
    }
  }
  return bytes;
}

/// Whether a refusal's status is one an input can cause. A kernel fault, a CUDA runtime error or an
/// internal error is a library bug whatever the input (on the emulator a fault in a kernel returns
/// kErrorCudaLaunch from the op that launched it, with immediate streams).
bool input_error(Status s) {
  return s != Status::kSuccess && s != Status::kErrorCudaLaunch && s != Status::kErrorCudaRuntime &&
         s != Status::kErrorInternal && s != Status::kErrorNoDevice;
}

/// The message of the last error, and a fresh start for the next one: a check that a refusal left a
/// message must not pass on an earlier refusal's (successful calls do not clear it).
std::string take_message() {
  std::string m = culayers::last_error_message();
  culayers::detail::clear_error();
  return m;
}

/// Tallies of what the mutants did, so a run that stopped reaching the interesting paths (every mutant
/// refused, no call run) fails instead of passing vacuously.
struct Tally {
  int mutants = 0;
  int skipped = 0; // skipped_on_this_backend
  int loaded = 0;
  int calls_ok = 0;
  int calls_refused = 0;
  int reloads_out_of_memory = 0; // exercise()'s reload of a model's own config ran out of device memory
  int unknown_keys = 0;          // loads that listed an unknown key (refused by a strict load)
  std::map<int, int> refusals;   // status -> count

  std::string str() const {
    std::string s = std::to_string(mutants) + " mutants (" + std::to_string(skipped) + " skipped), " +
                    std::to_string(loaded) + " loaded, " + std::to_string(calls_ok) + " calls ran, " +
                    std::to_string(calls_refused) + " calls refused, " +
                    std::to_string(reloads_out_of_memory) + " reloads out of memory, " +
                    std::to_string(unknown_keys) + " with unknown keys; refusals by status:";
    for (const auto& [status, count] : refusals) {
      s += " " + std::string(culayers::status_string(static_cast<Status>(status))) + "=" +
           std::to_string(count);
    }
    return s;
  }
};

/// The input shape to call a loaded model with: the built shape with batch `batch`, else (a model built by
/// its first call) the config's build shape with its null extents set to small sizes. Empty when the shape
/// is unknown or larger than kMaxCallElements.
Shape call_shape(const nn::Sequential& m, const Json& config, std::mt19937_64& rng) {
  const std::int64_t batch = 1 + static_cast<std::int64_t>(rng() % 3);
  std::vector<std::int64_t> dims;
  if (m.built()) {
    const Shape& s = m.input_shape();
    for (int i = 0; i < s.rank(); ++i) {
      dims.push_back(i == 0 ? batch : s.dim(i));
    }
  } else {
    const Json* shape = nullptr;
    if (const auto c = config.find("config"); c != config.end() && c->is_object()) {
      if (const auto layers = c->find("layers");
          layers != c->end() && layers->is_array() && !layers->empty() && (*layers)[0].is_object()) {
        const Json& first = (*layers)[0];
        if (const auto lc = first.find("config"); lc != first.end() && lc->is_object()) {
          for (const char* key : {"batch_shape", "batch_input_shape"}) {
            if (const auto it = lc->find(key); it != lc->end()) {
              shape = &*it;
            }
          }
        }
      }
    }
    if (shape == nullptr || !shape->is_array() || shape->empty() || shape->size() > 8) {
      return Shape{};
    }
    for (std::size_t i = 0; i < shape->size(); ++i) {
      const Json& d = (*shape)[i];
      if (d.is_null()) {
        dims.push_back(i == 0 ? batch : 1 + static_cast<std::int64_t>(rng() % 7));
      } else if (d.is_number_integer() && d.get<std::int64_t>() >= 0 &&
                 d.get<std::int64_t>() <= kMaxCallElements) {
        dims.push_back(d.get<std::int64_t>());
      } else {
        return Shape{};
      }
    }
  }
  std::int64_t n = 1;
  for (const std::int64_t d : dims) {
    if (d != 0 && n > kMaxCallElements / d) { // checked before the product (a built extent may be 2^62)
      return Shape{};
    }
    n *= d;
  }
  Shape s;
  EXPECT_EQ(Shape::make(dims.data(), static_cast<int>(dims.size()), &s), Status::kSuccess);
  return s;
}

/// A loaded model must behave: its config and weights load again, and calls in both phases either fail
/// with a status or give the output shape compute_output_shape states, leaving no device error behind.
void exercise(nn::Sequential& m, const Json& input_config, std::mt19937_64& rng, Tally* tally,
              const std::string& what) {
  const Json saved = m.to_json();
  { // the copy is released before the calls below (the emulated device memory is a few MiB)
    std::unique_ptr<nn::Sequential> again;
    const Status reload = nn::Sequential::from_json(saved, &again);
    if (reload == Status::kErrorOutOfMemory) {
      ++tally->reloads_out_of_memory; // a second copy of a model near the memory limit: must stay rare
      return;
    }
    ASSERT_EQ(reload, Status::kSuccess)
        << what << "\nits to_json does not load again: " << saved.dump() << "\n"
        << take_message();
    EXPECT_EQ(again->to_json(), saved) << what;
    if (m.built()) {
      nn::SafetensorsFile weights;
      ASSERT_EQ(m.get_weights(&weights), Status::kSuccess) << what << ": " << take_message();
      std::vector<std::uint8_t> image;
      ASSERT_EQ(nn::serialize_safetensors(weights, &image), Status::kSuccess) << what;
      nn::SafetensorsFile parsed;
      ASSERT_EQ(nn::parse_safetensors(image.data(), image.size(), &parsed), Status::kSuccess) << what;
      EXPECT_EQ(again->set_weights(parsed), Status::kSuccess) << what << ": " << take_message();
    }
  }
  if (m.size() == 0) {
    return;
  }
  const Shape shape = call_shape(m, input_config, rng);
  if (shape.rank() == 0) {
    return;
  }
  const DType dtype = m.layer(0).dtype();
  const std::vector<std::uint8_t> host = random_input(rng, dtype, shape.numel());
  // Room for the mismatched calls' views below (up to twice the elements in 8-byte dtypes).
  const std::size_t capacity = static_cast<std::size_t>(2 * shape.numel() + 2) * 8;
  culayers::test::DeviceBuffer<std::uint8_t> x(capacity);
  x.upload(host);
  const std::int64_t steps = shape.rank() >= 2 ? shape.dim(1) : 0;
  // Room for a mask with one more step, or one int32 per row (the mismatched calls below).
  culayers::test::DeviceBuffer<std::uint8_t> mask(
      static_cast<std::size_t>(shape.dim(0) * (steps + 1) * 4 + 4));
  const bool with_mask = shape.rank() >= 2 && rng() % 2 == 0;
  if (with_mask) {
    std::vector<std::uint8_t> flags(static_cast<std::size_t>(shape.dim(0) * steps));
    for (std::uint8_t& f : flags) {
      f = static_cast<std::uint8_t>(rng() % 4 != 0);
    }
    mask.upload(flags);
  }
  const ConstTensorView xv = ConstTensorView::contiguous(x.get(), dtype, shape);
  const ConstTensorView mv =
      with_mask ? ConstTensorView::contiguous(mask.get(), DType::kUInt8, Shape{shape.dim(0), steps})
                : ConstTensorView{};
  // One call: refused with a message, or an output of the shape compute_output_shape states.
  auto call = [&](nn::Phase phase, const ConstTensorView& xin, const ConstTensorView& min,
                  const std::string& call_what) {
    nn::CallContext ctx;
    ctx.phase = phase;
    nn::LayerOutput out;
    culayers::detail::clear_error();
    const Status s = m.call(ctx, xin, min, &out);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess) << call_what;
    if (s != Status::kSuccess) {
      ++tally->calls_refused;
      const std::string message = take_message();
      EXPECT_TRUE(input_error(s)) << call_what << "\n" << culayers::status_string(s) << ": " << message;
      EXPECT_NE(message, "") << call_what;
      return false;
    }
    ++tally->calls_ok;
    Shape expected;
    EXPECT_EQ(m.compute_output_shape(xin.shape(), &expected), Status::kSuccess) << call_what;
    EXPECT_EQ(out.y.shape(), expected) << call_what;
    EXPECT_TRUE(out.y.numel() == 0 || out.y.data() != nullptr) << call_what;
    return true;
  };
  bool accepted = false;
  for (const nn::Phase phase : {nn::Phase::kTraining, nn::Phase::kInference, nn::Phase::kTraining}) {
    accepted = call(phase, xv, mv, what);
  }
  // Calls that do not match the model (another dtype, an extent or the rank changed, a mask of another
  // shape or dtype, a strided view): refused or computed, and a model that accepted the matching call
  // still accepts it afterwards.
  for (int k = 0; k < 2; ++k) {
    Shape other = shape;
    DType other_dtype = dtype;
    ConstTensorView other_mask = mv;
    std::int64_t dims[culayers::kMaxRank] = {};
    std::copy(shape.dims(), shape.dims() + shape.rank(), dims);
    int rank = shape.rank();
    std::string change;
    bool strided = false; // every other element of x
    switch (rng() % 5) {
    case 0: {
      static constexpr DType kDTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kInt32,
                                          DType::kUInt8};
      other_dtype = kDTypes[rng() % std::size(kDTypes)];
      change = std::string("dtype ") + culayers::dtype_name(other_dtype);
      break;
    }
    case 1: {
      const int d = static_cast<int>(rng() % static_cast<std::uint64_t>(rank));
      dims[d] = rng() % 2 == 0 ? dims[d] * 2 : std::max<std::int64_t>(dims[d] - 1, 0);
      change = "extent " + std::to_string(d) + " to " + std::to_string(dims[d]);
      break;
    }
    case 2:
      if (rank < culayers::kMaxRank && rng() % 2 == 0) {
        dims[rank++] = 1;
        change = "a trailing 1";
      } else if (rank >= 2) {
        dims[rank - 2] *= dims[rank - 1];
        --rank;
        change = "the last two extents merged";
      }
      break;
    case 3:
      if (rank >= 2) {
        const std::int64_t mask_dims[2] = {shape.dim(0), shape.dim(1) + 1};
        Shape ms;
        EXPECT_EQ(Shape::make(mask_dims, 2, &ms), Status::kSuccess);
        const bool as_int = rng() % 2 == 0;
        other_mask = ConstTensorView::contiguous(mask.get(), as_int ? DType::kInt32 : DType::kUInt8,
                                                 as_int ? Shape{shape.dim(0)} : ms);
        change = as_int ? "an int32 mask" : "a mask with one more step";
      }
      break;
    default:
      strided = true;
      change = "a strided view";
      break;
    }
    ASSERT_EQ(Shape::make(dims, rank, &other), Status::kSuccess) << what << ": " << change;
    ConstTensorView other_x = ConstTensorView::contiguous(x.get(), other_dtype, other);
    if (strided) {
      std::int64_t strides[culayers::kMaxRank] = {};
      std::int64_t stride = 2; // every other element
      for (int d = rank - 1; d >= 0; --d) {
        strides[d] = stride;
        stride *= std::max<std::int64_t>(dims[d], 1);
      }
      ASSERT_EQ(ConstTensorView::make(x.get(), dtype, other, strides, &other_x), Status::kSuccess) << what;
    }
    const std::size_t need =
        static_cast<std::size_t>(other.numel()) * culayers::dtype_size(other_dtype) * (strided ? 2 : 1);
    if (need > capacity) {
      continue; // the view would reach past x's buffer
    }
    (void)call(rng() % 2 == 0 ? nn::Phase::kTraining : nn::Phase::kInference, other_x, other_mask,
               what + "\nmismatched call: " + change);
  }
  if (accepted) {
    EXPECT_TRUE(call(nn::Phase::kInference, xv, mv, what + "\nthe matching call after the mismatched ones"))
        << culayers::last_error_message();
  }
  const cudaError_t sync = cudaDeviceSynchronize();
  ASSERT_EQ(sync, cudaSuccess) << what << ": " << cudaGetErrorName(sync) << " " << emulator_message();
}

/// The same checks through the C API: culayersModelRun on an input of `shape` either fails with a status or
/// succeeds, leaving no device error behind.
void exercise_c(culayersModel_t handle, const Shape& shape, DType out_dtype, std::mt19937_64& rng,
                Tally* tally, const std::string& what) {
  culayersDType_t in_dtype = CULAYERS_DTYPE_FLOAT32;
  ASSERT_EQ(culayersModelGetInputDType(handle, &in_dtype), CULAYERS_STATUS_SUCCESS) << what;
  int out_rank = 0;
  std::int64_t out_dims[CULAYERS_MAX_RANK] = {};
  culayers::detail::clear_error();
  if (const culayersStatus_t ss =
          culayersModelGetOutputShape(handle, shape.rank(), shape.dims(), &out_rank, out_dims);
      ss != CULAYERS_STATUS_SUCCESS) {
    ++tally->calls_refused;
    const std::string message = take_message();
    EXPECT_TRUE(input_error(static_cast<Status>(ss))) << what << "\n" << ss << ": " << message;
    EXPECT_NE(message, "") << what;
    return;
  }
  std::int64_t out_elements = 1;
  for (int d = 0; d < out_rank; ++d) {
    out_elements *= out_dims[d];
  }
  const std::vector<std::uint8_t> host = random_input(rng, static_cast<DType>(in_dtype), shape.numel());
  culayers::test::DeviceBuffer<std::uint8_t> x(std::max<std::size_t>(host.size(), 1));
  x.upload(host);
  const std::size_t y_bytes = static_cast<std::size_t>(out_elements) * culayers::dtype_size(out_dtype);
  culayers::test::DeviceBuffer<std::uint8_t> y(std::max<std::size_t>(y_bytes, 1));
  const std::size_t mask_elements =
      shape.rank() >= 2 ? static_cast<std::size_t>(shape.dim(0) * shape.dim(1)) : 1;
  culayers::test::DeviceBuffer<std::uint8_t> y_mask(mask_elements);
  culayersModelRunArgs_t args;
  culayersModelRunArgsInit(&args);
  args.x = x.get();
  args.dtype = in_dtype;
  args.rank = shape.rank();
  std::copy(shape.dims(), shape.dims() + shape.rank(), args.dims);
  args.y = y.get();
  args.y_bytes = y_bytes;
  args.y_mask = y_mask.get();
  args.y_mask_bytes = mask_elements;
  for (const culayersPhase_t phase : {CULAYERS_PHASE_TRAINING, CULAYERS_PHASE_INFERENCE}) {
    args.phase = phase;
    int wrote_mask = -1;
    culayers::detail::clear_error();
    const culayersStatus_t rs = culayersModelRun(handle, &args, &wrote_mask, nullptr);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess) << what;
    if (rs != CULAYERS_STATUS_SUCCESS) {
      ++tally->calls_refused;
      const std::string message = take_message();
      EXPECT_TRUE(input_error(static_cast<Status>(rs))) << what << "\n" << rs << ": " << message;
      EXPECT_NE(message, "") << what;
      continue;
    }
    ++tally->calls_ok;
    EXPECT_TRUE(wrote_mask == 0 || wrote_mask == 1) << what;
  }
  const cudaError_t sync = cudaDeviceSynchronize();
  ASSERT_EQ(sync, cudaSuccess) << what << ": " << cudaGetErrorName(sync) << " " << emulator_message();
}

/// The failure text naming a mutant. With CULAYERS_FUZZ_TRACE=1 every mutant is also printed to stderr
/// before it runs (for a crash or a hang, which no failure message reports).
std::string describe(const char* kind, int iteration, const std::string& mutant) {
  std::string what = std::string(kind) + " mutant " + std::to_string(iteration) + " (" +
                     culayers::test::seed_note() + "): " + mutant.substr(0, 4000);
  static const bool trace = [] {
    const char* v = std::getenv("CULAYERS_FUZZ_TRACE");
    return v != nullptr && v[0] != '\0' && v[0] != '0';
  }();
  if (trace) {
    std::fprintf(stderr, "%s\n", what.c_str());
    std::fflush(stderr);
  }
  return what;
}

/// The checks every refused load shares: a status that names a failure, a message, nothing written.
void expect_clean_refusal(Status s, const std::string& message, const std::unique_ptr<nn::Sequential>& out,
                          Tally* tally, const std::string& what) {
  EXPECT_TRUE(input_error(s)) << what << "\n" << culayers::status_string(s) << ": " << message;
  EXPECT_EQ(out, nullptr) << what;
  EXPECT_NE(message, "") << what;
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << what << ": a refused config left a CUDA error behind";
  ++tally->refusals[static_cast<int>(s)];
}

/// A strict load (reject_unknown_keys) of `mutant` must agree with its lenient load (`lenient`, which
/// listed `unused`): refused at the first unknown key the lenient load listed, else the same outcome and
/// the same list. A lenient load that failed fails strictly too, earlier at an unknown key or the same way.
void expect_strict_load_agrees(const Json& mutant, Status lenient,
                               const std::vector<nn::UnusedConfigKey>& unused, Tally* tally,
                               const std::string& what) {
  const nn::UnusedConfigKey* first_unknown = nullptr;
  for (const nn::UnusedConfigKey& k : unused) {
    EXPECT_FALSE(k.key.empty()) << what;
    EXPECT_TRUE(
        k.path.size() >= k.key.size() &&
        (k.path.compare(k.path.size() - k.key.size(), k.key.size(), k.key) == 0 || k.path.back() == ']'))
        << what << ": " << k.path << " does not end with " << k.key;
    if (!k.keras_key && first_unknown == nullptr) {
      first_unknown = &k;
    }
  }
  std::vector<nn::UnusedConfigKey> strict_unused;
  nn::ConfigReadOptions options;
  options.reject_unknown_keys = true;
  options.unused_keys = &strict_unused;
  std::unique_ptr<nn::Sequential> m;
  culayers::detail::clear_error();
  const Status strict = nn::Sequential::from_json(mutant, options, &m);
  const std::string message = take_message();
  const bool refused_at_unknown =
      strict == Status::kErrorParse && message.find(": unknown key of ") != std::string::npos;
  if (lenient == Status::kSuccess && first_unknown != nullptr) {
    ++tally->unknown_keys;
    EXPECT_TRUE(refused_at_unknown) << what << "\n" << culayers::status_string(strict) << ": " << message;
    EXPECT_NE(message.find(first_unknown->path + ": unknown key"), std::string::npos) << what << "\n"
                                                                                      << message;
    EXPECT_EQ(strict_unused.size(), static_cast<std::size_t>(first_unknown - unused.data()) + 1) << what;
    EXPECT_EQ(m, nullptr) << what;
  } else if (lenient == Status::kSuccess) {
    EXPECT_EQ(strict, Status::kSuccess) << what << "\n" << message;
    EXPECT_EQ(strict_unused.size(), unused.size()) << what;
  } else {
    EXPECT_TRUE(strict == lenient || refused_at_unknown)
        << what << "\nlenient: " << culayers::status_string(lenient)
        << ", strict: " << culayers::status_string(strict) << ": " << message;
    EXPECT_EQ(m, nullptr) << what;
  }
}

TEST(ConfigFuzz, MutatedConfigTreesLoadOrFailCleanly) {
  DeviceMemoryLimit limit(std::size_t{4} << 20);
  std::mt19937_64 rng = culayers::test::rng_for_test();
  std::vector<Json> seeds = seed_configs();
  for (const Json& s : seed_configs()) { // each seed also as culayers writes it back (every key present)
    std::unique_ptr<nn::Sequential> m;
    ASSERT_EQ(nn::Sequential::from_json(s, &m), Status::kSuccess)
        << s.dump() << ": " << culayers::last_error_message();
    seeds.push_back(m->to_json());
  }
  Mutator mutator = make_mutator(rng, seeds);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess); // frees still queued (deferred streams) happen first
  const std::size_t live_before = live_allocations();
  Tally tally;
  const int iterations = 2000 * iteration_scale();
  for (int i = 0; i < iterations && !::testing::Test::HasFatalFailure(); ++i) {
    Json mutant = seeds[mutator.pick(seeds.size())];
    mutator.mutate_tree(mutant);
    const std::string what = describe("tree", i, mutant.dump());
    ++tally.mutants;
    if (skipped_on_this_backend(mutant)) {
      ++tally.skipped;
      continue;
    }
    std::unique_ptr<nn::Sequential> m;
    std::vector<nn::UnusedConfigKey> unused;
    nn::ConfigReadOptions listing;
    listing.unused_keys = &unused;
    culayers::detail::clear_error();
    const Status s = nn::Sequential::from_json(mutant, listing, &m);
    if (s != Status::kSuccess) {
      expect_clean_refusal(s, take_message(), m, &tally, what);
    } else {
      ++tally.loaded;
      exercise(*m, mutant, rng, &tally, what);
      m.reset();
    }
    // After the lenient model is gone: the strict load gets the same device memory (4 MiB here).
    expect_strict_load_agrees(mutant, s, unused, &tally, what);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;
    EXPECT_EQ(live_allocations(), live_before) << what << ": device memory leaked";
  }
  std::printf("[ config trees ] %s\n", tally.str().c_str());
  EXPECT_GT(tally.loaded, tally.mutants / 10) << tally.str();
  EXPECT_LE(tally.reloads_out_of_memory, tally.loaded / 100) << tally.str();
  EXPECT_GT(tally.calls_ok, 0) << tally.str();
  EXPECT_GT(tally.refusals.size(), 3u) << tally.str();
  EXPECT_GT(tally.unknown_keys, tally.mutants / 100) << tally.str();
}

// Found by the fuzzer: a weight was initialized on the host (8 bytes per element) before its device tensor
// was allocated, so 2^40 channels threw std::bad_alloc out of from_json (or, with overcommit, allocated and
// touched host memory until the process was killed). The device allocation now comes first and refuses it.
TEST(ConfigFuzz, AWeightBeyondDeviceMemoryIsRefusedBeforeItsHostValues) {
  Json config = seed_configs()[0];
  config["config"]["build_input_shape"] = Json::array({nullptr, 6, std::int64_t{1} << 40});
  config["config"]["layers"][1]["config"]["groups"] = 1;
  std::unique_ptr<nn::Sequential> m;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess); // frees still queued (deferred streams) happen first
  const std::size_t live_before = live_allocations();
  EXPECT_EQ(nn::Sequential::from_json(config, &m), Status::kErrorOutOfMemory)
      << culayers::last_error_message();
  EXPECT_NE(std::string(culayers::last_error_message()).find("gn: add_weight: gamma: "), std::string::npos)
      << culayers::last_error_message(); // names the layer and the weight
  EXPECT_EQ(m, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(live_allocations(), live_before);
}

TEST(ConfigFuzz, MutatedConfigTextsThroughCppAndCLoadOrFailCleanly) {
  DeviceMemoryLimit limit(std::size_t{4} << 20);
  std::mt19937_64 rng = culayers::test::rng_for_test();
  const std::vector<Json> seeds = seed_configs();
  Mutator mutator = make_mutator(rng, seeds);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess); // frees still queued (deferred streams) happen first
  const std::size_t live_before = live_allocations();
  Tally tally;
  Tally c_tally; // the C API's runs (the C API models' loads are counted in tally)
  const int iterations = 2000 * iteration_scale();
  for (int i = 0; i < iterations && !::testing::Test::HasFatalFailure(); ++i) {
    Json tree = seeds[mutator.pick(seeds.size())];
    if (i % 2 == 0) {
      mutator.mutate_tree(tree);
    }
    const std::string text = mutator.mutate_text(tree.dump(i % 3 == 0 ? 2 : -1));
    const std::string what = describe("text", i, text);
    ++tally.mutants;
    if (skipped_on_this_backend(Json::parse(text, nullptr, false))) {
      ++tally.skipped;
      continue;
    }
    std::unique_ptr<nn::Sequential> m;
    culayers::detail::clear_error();
    const Status s = nn::Sequential::from_json_string(text, &m);
    const std::string message = take_message();
    // The C API reads the text up to its first NUL byte: the same text when it has none.
    if (text.find('\0') == std::string::npos) {
      culayersModel_t handle = nullptr;
      const culayersStatus_t cs = culayersModelCreate(&handle, text.c_str(), nullptr, nullptr);
      if (cs == CULAYERS_STATUS_SUCCESS) {
        EXPECT_EQ(s, Status::kSuccess) << what << ": the C API loaded what C++ refused";
        culayersDType_t dtype = CULAYERS_DTYPE_FLOAT32;
        EXPECT_EQ(culayersModelGetInputDType(handle, &dtype), CULAYERS_STATUS_SUCCESS) << what;
        std::vector<char> summary(1 << 14);
        EXPECT_EQ(culayersModelGetSummary(handle, summary.data(), summary.size(), nullptr),
                  CULAYERS_STATUS_SUCCESS)
            << what;
        if (s == Status::kSuccess && m->size() > 0) {
          const Shape shape = call_shape(*m, Json::object(), rng);
          if (shape.rank() > 0) {
            exercise_c(handle, shape, m->layer(m->size() - 1).dtype(), rng, &c_tally, what);
          }
        }
        culayersModelDestroy(handle);
      } else {
        EXPECT_EQ(handle, nullptr) << what;
        EXPECT_TRUE(input_error(static_cast<Status>(cs))) << what << ": C refused with " << cs;
        // C++ may load a config the C API refuses: one it leaves unbuilt (C needs a built model), or a
        // second copy past the emulated device's few MiB.
        EXPECT_TRUE(s != Status::kSuccess || (!m->built() && cs == CULAYERS_STATUS_INVALID_VALUE) ||
                    cs == CULAYERS_STATUS_OUT_OF_MEMORY)
            << what << ": C refused (" << cs << ") what C++ loaded";
      }
    }
    if (s != Status::kSuccess) {
      expect_clean_refusal(s, message, m, &tally, what);
    } else {
      ++tally.loaded;
      exercise(*m, Json::parse(text, nullptr, false), rng, &tally, what);
      m.reset();
    }
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;
    EXPECT_EQ(live_allocations(), live_before) << what << ": device memory leaked";
  }
  std::printf("[ config texts ] %s\n[ config texts, C API runs ] %s\n", tally.str().c_str(),
              c_tally.str().c_str());
  EXPECT_GT(c_tally.calls_ok, 0) << c_tally.str();
  EXPECT_GT(tally.loaded, tally.mutants / 50) << tally.str(); // most byte changes break the JSON
  EXPECT_GT(tally.refusals.size(), 1u) << tally.str();
}

/// A weights image with its header as `header` (the length prefix recomputed) and `data` after it.
std::vector<std::uint8_t> with_header(const std::string& header, const std::vector<std::uint8_t>& data) {
  std::vector<std::uint8_t> image(8 + header.size());
  const std::uint64_t n = header.size();
  for (int b = 0; b < 8; ++b) {
    image[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(n >> (8 * b));
  }
  std::memcpy(image.data() + 8, header.data(), header.size());
  image.insert(image.end(), data.begin(), data.end());
  return image;
}

TEST(WeightsFuzz, MutatedSafetensorsImagesLoadOrFailCleanly) {
  DeviceMemoryLimit limit(std::size_t{4} << 20);
  std::mt19937_64 rng = culayers::test::rng_for_test();
  const std::vector<Json> seeds = seed_configs();
  Mutator mutator = make_mutator(rng, seeds);
  Tally tally;
  int parsed_ok = 0;
  int set_ok = 0;
  for (const std::size_t seed_index :
       {std::size_t{0}, std::size_t{1}}) { // the two seeds built by their config
    std::unique_ptr<nn::Sequential> m;
    ASSERT_EQ(nn::Sequential::from_json(seeds[seed_index], &m), Status::kSuccess)
        << culayers::last_error_message();
    nn::SafetensorsFile weights;
    ASSERT_EQ(m->get_weights(&weights), Status::kSuccess) << culayers::last_error_message();
    std::vector<std::uint8_t> image;
    ASSERT_EQ(nn::serialize_safetensors(weights, &image), Status::kSuccess);
    std::uint64_t header_size = 0;
    for (int b = 7; b >= 0; --b) {
      header_size = header_size << 8 | image[static_cast<std::size_t>(b)];
    }
    const std::string header(image.begin() + 8, image.begin() + 8 + static_cast<std::ptrdiff_t>(header_size));
    const std::vector<std::uint8_t> data(image.begin() + 8 + static_cast<std::ptrdiff_t>(header_size),
                                         image.end());
    const Json header_tree = Json::parse(header);
    const int iterations = 1500 * iteration_scale();
    for (int i = 0; i < iterations && !::testing::Test::HasFatalFailure(); ++i) {
      std::vector<std::uint8_t> mutant;
      switch (i % 3) {
      case 0: { // the header's JSON tree (what gets past the JSON parser)
        Json tree = header_tree;
        mutator.mutate_tree(tree);
        mutant = with_header(tree.dump(), data);
        break;
      }
      case 1: { // the header's text, length prefix recomputed
        mutant = with_header(mutator.mutate_text(header), data);
        break;
      }
      default: { // raw bytes anywhere, the length prefix included
        mutant = image;
        const std::size_t changes = 1 + mutator.pick(4);
        for (std::size_t c = 0; c < changes && !mutant.empty(); ++c) {
          const std::size_t at = mutator.pick(std::min<std::size_t>(mutant.size(), 8 + header.size() + 16));
          if (rng() % 8 == 0) {
            mutant.resize(at);
          } else {
            mutant[at] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
          }
        }
        break;
      }
      }
      const std::string what = describe("weights", i, std::string(mutant.begin(), mutant.end()));
      ++tally.mutants;
      nn::SafetensorsFile file;
      culayers::detail::clear_error();
      const Status ps = nn::parse_safetensors(mutant.data(), mutant.size(), &file);
      if (ps != Status::kSuccess) {
        const std::string message = take_message();
        EXPECT_TRUE(input_error(ps)) << what << "\n" << culayers::status_string(ps) << ": " << message;
        EXPECT_NE(message, "") << what;
        ++tally.refusals[static_cast<int>(ps)];
        continue;
      }
      ++parsed_ok;
      const std::vector<std::uint8_t> before = [&] {
        nn::SafetensorsFile current;
        EXPECT_EQ(m->get_weights(&current), Status::kSuccess);
        std::vector<std::uint8_t> bytes;
        EXPECT_EQ(nn::serialize_safetensors(current, &bytes), Status::kSuccess);
        return bytes;
      }();
      culayers::detail::clear_error();
      const Status ss = m->set_weights(file);
      if (ss != Status::kSuccess) {
        const std::string message = take_message();
        EXPECT_TRUE(input_error(ss)) << what << "\n" << culayers::status_string(ss) << ": " << message;
        EXPECT_NE(message, "") << what;
        ++tally.refusals[static_cast<int>(ss)];
        // All of it is checked before anything is written.
        nn::SafetensorsFile current;
        ASSERT_EQ(m->get_weights(&current), Status::kSuccess);
        std::vector<std::uint8_t> after;
        ASSERT_EQ(nn::serialize_safetensors(current, &after), Status::kSuccess);
        EXPECT_EQ(after, before) << what << ": refused weights changed the model";
        continue;
      }
      ++set_ok;
      ++tally.loaded;
      exercise(*m, seeds[seed_index], rng, &tally, what);
      ASSERT_EQ(m->set_weights(weights), Status::kSuccess) << culayers::last_error_message(); // back to valid
    }
  }
  std::printf("[ weights ] %s; %d parsed, %d set\n", tally.str().c_str(), parsed_ok, set_ok);
  EXPECT_GT(set_ok, 0) << tally.str();
  EXPECT_GT(parsed_ok, set_ok) << tally.str();
  EXPECT_GT(tally.refusals.size(), 1u) << tally.str();
}

} // namespace
