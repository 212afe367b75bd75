// Sequential (include/culayers/nn/sequential.hpp): layer stack, mask propagation, summary, JSON config,
// safetensors weights.
#include "culayers/nn/sequential.hpp"
#include "layers/config_util.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <deque>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

CULAYERS_NAMESPACE_BEGIN
namespace nn {

using ::culayers::detail::set_error;

namespace {

/// A failed runtime call as a Status; its error is cleared from the runtime (the Status reports it).
Status cuda_error(const char* what, cudaError_t e) {
  (void)cudaGetLastError();
  return set_error(Status::kErrorCudaRuntime, "sequential: %s: %s", what, cudaGetErrorString(e));
}

/// "(None, 8, 16)": the batch axis prints as None (it is not part of the model).
std::string shape_text(const Shape& shape) {
  std::string s = "(";
  for (int i = 0; i < shape.rank(); ++i) {
    if (i > 0) {
      s += ", ";
    }
    s += i == 0 ? std::string("None") : std::to_string(shape.dim(i));
  }
  if (shape.rank() == 1) {
    s += ",";
  }
  return s + ")";
}

/// 1234567 -> "1,234,567" (Keras prints parameter counts with thousands separators).
std::string grouped(std::int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) {
      out += ',';
    }
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

/// Left-aligned cells in fixed columns; a cell wider than its column pushes the rest right.
std::string row(const std::vector<std::string>& cells, const std::vector<int>& widths) {
  std::string line;
  int column = 0;
  for (std::size_t i = 0; i < cells.size(); ++i) {
    line += " " + cells[i];
    column += widths[i];
    if (line.size() < static_cast<std::size_t>(column)) {
      line.resize(static_cast<std::size_t>(column), ' ');
    } else {
      line += ' ';
    }
  }
  while (!line.empty() && line.back() == ' ') {
    line.pop_back();
  }
  return line + "\n";
}

} // namespace

Sequential::Sequential(std::string name)
    : name_(name.empty() ? detail::default_layer_name("Sequential") : std::move(name)) {}

Sequential::~Sequential() = default;

Status Sequential::add(std::unique_ptr<Layer> layer) {
  if (!layer) {
    return set_error(Status::kErrorNullPointer, "%s: add: layer: is null", name_.c_str());
  }
  if (built_) {
    return set_error(Status::kErrorInvalidValue, "%s: add: %s: the model is already built", name_.c_str(),
                     layer->name().c_str());
  }
  if (find_layer(layer->name()) != nullptr) {
    return set_error(
        Status::kErrorInvalidValue,
        "%s: add: a layer named \"%s\" is already in the model (weight names need unique layer names)",
        name_.c_str(), layer->name().c_str());
  }
  layers_.push_back(std::move(layer));
  return Status::kSuccess;
}

Layer* Sequential::find_layer(const std::string& name) noexcept {
  for (const auto& l : layers_) {
    if (l->name() == name) {
      return l.get();
    }
  }
  return nullptr;
}

Status Sequential::compute_output_shapes(const Shape& input_shape, std::vector<Shape>* out) const {
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: compute_output_shapes: out: is null", name_.c_str());
  }
  std::vector<Shape> shapes;
  Shape shape = input_shape;
  for (const auto& l : layers_) {
    Shape next{};
    if (Status s = l->compute_output_shape(shape, &next); !ok(s)) {
      return s;
    }
    shapes.push_back(next);
    shape = next;
  }
  *out = std::move(shapes);
  return Status::kSuccess;
}

Status Sequential::compute_output_shape(const Shape& input_shape, Shape* out) const {
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: compute_output_shape: out: is null", name_.c_str());
  }
  std::vector<Shape> shapes;
  if (Status s = compute_output_shapes(input_shape, &shapes); !ok(s)) {
    return s;
  }
  *out = shapes.empty() ? input_shape : shapes.back();
  return Status::kSuccess;
}

void Sequential::unbuild_all(std::vector<Layer*>* layers) noexcept {
  for (Layer* l : *layers) {
    l->unbuild();
  }
  layers->clear();
}

Status Sequential::build(const Shape& input_shape, cudaStream_t stream) {
  std::vector<Layer*> built_here;
  return build_layers(input_shape, stream, &built_here);
}

Status Sequential::build_layers(const Shape& input_shape, cudaStream_t stream,
                                std::vector<Layer*>* built_here) {
  if (built_) {
    return set_error(Status::kErrorInvalidValue, "%s: build: already built", name_.c_str());
  }
  if (layers_.empty()) {
    return set_error(Status::kErrorInvalidValue, "%s: build: the model has no layers", name_.c_str());
  }
  if (Status s = input_shape.validate(name_.c_str(), "input_shape"); !ok(s)) {
    return s;
  }
  // All or nothing: a layer that is already built (added built, or built by hand) must take this shape,
  // and when a later layer fails, the layers this call built are unbuilt again; otherwise a failed build
  // (or a first call with a wrong shape) would leave early layers built for a shape the model never
  // takes, and a later build for another shape would skip them.
  const auto undo = [built_here](Status s) {
    unbuild_all(built_here);
    return s;
  };
  Shape shape = input_shape;
  for (const auto& l : layers_) {
    if (!l->built()) {
      if (Status s = l->build(shape, stream); !ok(s)) {
        return undo(s);
      }
      built_here->push_back(l.get());
    } else if (Status s = l->check_call(shape, l->dtype(), false, Phase::kInference); !ok(s)) {
      return undo(s);
    }
    Shape next{};
    if (Status s = l->compute_output_shape(shape, &next); !ok(s)) {
      return undo(s);
    }
    shape = next;
  }
  built_ = true;
  input_shape_ = input_shape;
  return Status::kSuccess;
}

Status Sequential::check_chain(const Shape& input_shape, DType dtype, bool has_mask, Phase phase) const {
  Shape shape = input_shape;
  for (const auto& l : layers_) {
    if (Status s = l->check_call(shape, dtype, has_mask, phase); !ok(s)) {
      return s;
    }
    Shape next{};
    if (Status s = l->compute_output_shape(shape, &next); !ok(s)) {
      return s;
    }
    shape = next;
    dtype = l->dtype(); // every layer computes and writes in its dtype (its input is cast to it)
    has_mask = l->compute_mask(has_mask);
  }
  return Status::kSuccess;
}

Status Sequential::build_and_check(const CallContext& ctx, const ConstTensorView& x, bool has_mask) {
  std::vector<Layer*> built_now; // a first call builds; if its checks then fail, that build is undone
  const bool builds = !built_;
  if (builds) {
    if (Status s = build_layers(x.shape(), ctx.stream, &built_now); !ok(s)) {
      return s;
    }
  }
  // Check the whole chain before enqueuing anything, so a call that fails runs no layer and no update op.
  if (Status s = check_chain(x.shape(), x.dtype(), has_mask, ctx.phase); !ok(s)) {
    if (builds) {
      unbuild_all(&built_now);
      built_ = false;
      input_shape_ = Shape{};
    }
    return s;
  }
  return Status::kSuccess;
}

Status Sequential::call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                        LayerOutput* out) {
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: out: is null", name_.c_str());
  }
  if (layers_.empty()) {
    return set_error(Status::kErrorInvalidValue, "%s: call: the model has no layers", name_.c_str());
  }
  if (Status s = build_and_check(ctx, x, mask.data() != nullptr); !ok(s)) {
    return s;
  }
  // Every layer's forward first, then their call steps and update ops: a call that fails part-way (a
  // buffer allocation in a later layer, say) has changed no layer's state (counters, random streams,
  // moving statistics). Each layer's steps and updates touch only its own state, so running them after
  // the later layers' kernels computes what layer-by-layer calls would.
  LayerOutput current{x, mask};
  for (const auto& l : layers_) {
    LayerOutput next{};
    if (Status s = l->call_forward(ctx, current.y, current.mask, &next); !ok(s)) {
      return s;
    }
    current = next;
  }
  for (const auto& l : layers_) {
    if (Status s = l->run_updates(ctx); !ok(s)) {
      return s;
    }
  }
  *out = current;
  return Status::kSuccess;
}

Status Sequential::call(cudaStream_t stream, const ConstTensorView& x, const ConstTensorView& mask,
                        LayerOutput* out) {
  CallContext ctx{};
  ctx.stream = stream;
  ctx.phase = default_phase_;
  return call(ctx, x, mask, out);
}

Status Sequential::profile(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                           LayerOutput* out, std::vector<LayerTiming>* timings) {
  if (out == nullptr || timings == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: profile: %s: is null", name_.c_str(),
                     out == nullptr ? "out" : "timings");
  }
  if (layers_.empty()) {
    return set_error(Status::kErrorInvalidValue, "%s: profile: the model has no layers", name_.c_str());
  }
  if (Status s = build_and_check(ctx, x, mask.data() != nullptr); !ok(s)) {
    return s;
  }
  // As call(): every forward, then every layer's steps and updates. Events 0..L bound the forwards,
  // events L..2L the layers' updates; a layer's time is the sum of its two intervals.
  const std::size_t count = layers_.size();
  std::vector<cudaEvent_t> events(2 * count + 1, nullptr);
  Status result = Status::kSuccess;
  for (auto& e : events) {
    if (cudaError_t err = cudaEventCreate(&e); err != cudaSuccess) {
      result = cuda_error("cudaEventCreate", err);
      break;
    }
  }
  const auto record = [&](std::size_t k) {
    if (cudaError_t err = cudaEventRecord(events[k], ctx.stream); err != cudaSuccess) {
      result = cuda_error("cudaEventRecord", err);
    }
  };
  LayerOutput current{x, mask};
  if (ok(result)) {
    record(0);
  }
  for (std::size_t i = 0; ok(result) && i < count; ++i) {
    LayerOutput next{};
    result = layers_[i]->call_forward(ctx, current.y, current.mask, &next);
    if (ok(result)) {
      current = next;
      record(i + 1);
    }
  }
  for (std::size_t i = 0; ok(result) && i < count; ++i) {
    result = layers_[i]->run_updates(ctx);
    if (ok(result)) {
      record(count + i + 1);
    }
  }
  std::vector<LayerTiming> t;
  if (ok(result)) {
    if (cudaError_t err = cudaEventSynchronize(events.back()); err != cudaSuccess) {
      result = cuda_error("cudaEventSynchronize", err);
    }
  }
  for (std::size_t i = 0; ok(result) && i < count; ++i) {
    float forward_ms = 0.0f;
    float update_ms = 0.0f;
    if (cudaError_t err = cudaEventElapsedTime(&forward_ms, events[i], events[i + 1]); err != cudaSuccess) {
      result = cuda_error("cudaEventElapsedTime", err);
    } else if (cudaError_t err2 = cudaEventElapsedTime(&update_ms, events[count + i], events[count + i + 1]);
               err2 != cudaSuccess) {
      result = cuda_error("cudaEventElapsedTime", err2);
    }
    t.push_back(LayerTiming{layers_[i]->name(), layers_[i]->class_name(), forward_ms + update_ms});
  }
  for (cudaEvent_t e : events) {
    if (e != nullptr) {
      (void)cudaEventDestroy(e);
    }
  }
  if (ok(result)) {
    *out = current;
    *timings = std::move(t);
  }
  return result;
}

std::size_t Sequential::buffer_bytes() const noexcept {
  std::size_t bytes = 0;
  for (const auto& l : layers_) {
    bytes += l->buffer_bytes();
  }
  return bytes;
}

void Sequential::release_buffers() noexcept {
  for (const auto& l : layers_) {
    l->release_buffers();
  }
}

std::int64_t Sequential::count_params() const noexcept {
  std::int64_t n = 0;
  for (const auto& l : layers_) {
    n += l->count_params();
  }
  return n;
}

std::int64_t Sequential::count_trainable_params() const noexcept {
  std::int64_t n = 0;
  for (const auto& l : layers_) {
    for (const Weight* w : l->trainable_weights()) {
      n += w->value.numel();
    }
  }
  return n;
}

std::string Sequential::summary(int line_length) const {
  if (line_length < 40) {
    line_length = 40;
  }
  // Keras's column positions (.33, .55, .67, 1.0 of the line) for the three columns.
  const std::vector<int> widths = {line_length * 45 / 100, line_length * 33 / 100,
                                   line_length - line_length * 45 / 100 - line_length * 33 / 100};
  std::vector<Shape> shapes;
  const bool have_shapes = built_ && ok(compute_output_shapes(input_shape_, &shapes));
  std::string s = "Model: \"" + name_ + "\"\n";
  const std::string thin(static_cast<std::size_t>(line_length), '_');
  const std::string thick(static_cast<std::size_t>(line_length), '=');
  s += thin + "\n";
  s += row({"Layer (type)", "Output Shape", "Param #"}, widths);
  s += thick + "\n";
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = *layers_[i];
    const std::string shape =
        have_shapes ? shape_text(shapes[i]) : std::string(l.built() ? "?" : "(unbuilt)");
    s += row({l.name() + " (" + l.class_name() + ")", shape, grouped(l.count_params())}, widths);
    s += (i + 1 < layers_.size() ? "\n" : "");
  }
  s += thick + "\n";
  const std::int64_t total = count_params();
  const std::int64_t trainable = count_trainable_params();
  s += "Total params: " + grouped(total) + "\n";
  s += "Trainable params: " + grouped(trainable) + "\n";
  s += "Non-trainable params: " + grouped(total - trainable) + "\n";
  s += thin + "\n";
  return s;
}

Json Sequential::to_json() const {
  Json layers = Json::array();
  for (const auto& l : layers_) {
    layers.push_back(layer_to_json(*l));
  }
  Json config = {{"name", name_}, {"layers", layers}};
  if (built_) {
    Json shape = Json::array();
    for (int i = 0; i < input_shape_.rank(); ++i) {
      if (i == 0) {
        shape.push_back(nullptr);
      } else {
        shape.push_back(input_shape_.dim(i));
      }
    }
    config["build_input_shape"] = shape;
  }
  return Json{{"class_name", "Sequential"}, {"config", config}};
}

Status Sequential::from_json(const Json& json, std::unique_ptr<Sequential>* out, cudaStream_t stream) {
  return from_json(json, ConfigReadOptions{}, out, stream);
}

Status Sequential::from_json(const Json& json, const ConfigReadOptions& options,
                             std::unique_ptr<Sequential>* out, cudaStream_t stream) {
  if (options.unused_keys != nullptr) {
    options.unused_keys->clear();
  }
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "sequential from_json: out: is null");
  }
  constexpr const char* kOp = "sequential from_json";
  if (!json.is_object() || !json.contains("class_name") || !json["class_name"].is_string()) {
    return set_error(Status::kErrorParse,
                     "sequential from_json: expected {\"class_name\": \"Sequential\", \"config\": {...}}");
  }
  if (json["class_name"].get<std::string>() != "Sequential") {
    return set_error(Status::kErrorUnknownClass,
                     "sequential from_json: class_name is \"%s\", not \"Sequential\"",
                     json["class_name"].get<std::string>().c_str());
  }
  if (!json.contains("config") || !json["config"].is_object()) {
    return set_error(Status::kErrorParse, "sequential from_json: \"config\" is missing or not an object");
  }
  const Json& config = json["config"];
  if (Status s =
          config_util::check_document_keys(config_util::DocumentPart::kModel, json, "", "", kOp, options);
      !ok(s)) {
    return s;
  }
  if (Status s = config_util::check_document_keys(config_util::DocumentPart::kModelConfig, config, "config",
                                                  "", kOp, options);
      !ok(s)) {
    return s;
  }
  if (const auto bc = json.find("build_config"); bc != json.end()) {
    if (Status s = config_util::check_document_keys(config_util::DocumentPart::kBuildConfig, *bc,
                                                    "build_config", "", kOp, options);
        !ok(s)) {
      return s;
    }
  }
  std::string name;
  if (const auto it = config.find("name"); it != config.end() && !it->is_null()) {
    if (!it->is_string()) {
      return set_error(Status::kErrorParse, "sequential from_json: \"name\" is not a string");
    }
    name = it->get<std::string>();
  }
  const auto layers_it = config.find("layers");
  if (layers_it == config.end() || !layers_it->is_array()) {
    return set_error(Status::kErrorParse, "sequential from_json: \"layers\" is missing or not an array");
  }
  auto model = std::make_unique<Sequential>(name);
  // Keras writes the model's input as an InputLayer entry first (tf.keras 2: "batch_input_shape", Keras 3:
  // "batch_shape"): its shape builds the model when there is no "build_input_shape"; it adds no layer.
  const Json* input_shape = nullptr;
  const char* input_shape_key = "build_input_shape";
  const Json* first_layer_shape = nullptr; // the first layer's "batch_input_shape" (tf.keras 2)
  // The names the document gives its layers (a layer without one must not take one of them).
  auto has_name = [](const Json& entry) {
    const auto c = entry.is_object() ? entry.find("config") : entry.end();
    return entry.is_object() && c != entry.end() && c->is_object() && c->contains("name") &&
           (*c)["name"].is_string() && !(*c)["name"].get<std::string>().empty();
  };
  std::set<std::string> names;
  for (const Json& entry : *layers_it) {
    if (has_name(entry)) {
      names.insert(entry["config"]["name"].get<std::string>());
    }
  }
  for (std::size_t i = 0; i < layers_it->size(); ++i) {
    const Json& lj = (*layers_it)[i];
    const std::string entry_path = "config.layers[" + std::to_string(i) + "]";
    if (lj.is_object() && lj.value("class_name", Json()) == "InputLayer") {
      const Json empty = Json::object();
      const Json& ic = lj.contains("config") ? lj["config"] : empty;
      if (i != 0) {
        return set_error(Status::kErrorParse,
                         "sequential from_json: \"layers\"[%zu]: an InputLayer must come first", i);
      }
      if (!ic.is_object()) {
        return set_error(Status::kErrorParse,
                         "sequential from_json: InputLayer: \"config\" is not an object");
      }
      for (const char* key : {"sparse", "ragged"}) {
        if (const auto it = ic.find(key); it != ic.end() && !it->is_null()) {
          if (!it->is_boolean()) {
            return set_error(Status::kErrorParse, "sequential from_json: InputLayer: \"%s\" is not a boolean",
                             key);
          }
          if (it->get<bool>()) {
            return set_error(Status::kErrorNotSupported,
                             "sequential from_json: InputLayer: %s inputs are not supported", key);
          }
        }
      }
      const auto input_name = ic.find("name");
      const std::string layer_name =
          input_name != ic.end() && input_name->is_string() ? input_name->get<std::string>() : std::string();
      if (Status s = config_util::check_document_keys(config_util::DocumentPart::kLayerEntry, lj, entry_path,
                                                      layer_name, kOp, options);
          !ok(s)) {
        return s;
      }
      if (Status s = config_util::check_document_keys(config_util::DocumentPart::kInputLayerConfig, ic,
                                                      entry_path + ".config", layer_name, kOp, options);
          !ok(s)) {
        return s;
      }
      for (const char* key : {"batch_input_shape", "batch_shape"}) {
        if (const auto it = ic.find(key); it != ic.end() && !it->is_null()) {
          input_shape = &*it;
          input_shape_key = key;
        }
      }
      continue;
    }
    std::unique_ptr<Layer> layer;
    const std::size_t listed_before = options.unused_keys != nullptr ? options.unused_keys->size() : 0;
    if (Status s = config_util::layer_from_json_at(lj, options, entry_path, kOp, &layer); !ok(s)) {
      return s;
    }
    // A layer without a name in the document gets Keras's default name, from a per-process counter: one
    // that another layer of this document already holds would make the load fail or not depending on how
    // many layers the process made before. It takes the next free default name instead.
    if (!has_name(lj) && (names.count(layer->name()) != 0)) {
      std::string free_name;
      do {
        free_name = detail::default_layer_name(layer->class_name());
      } while (names.count(free_name) != 0);
      Json renamed = lj;
      renamed["config"]["name"] = free_name;
      ConfigReadOptions quiet = options; // its keys were listed by the first read
      quiet.unused_keys = nullptr;
      if (Status s = config_util::layer_from_json_at(renamed, quiet, entry_path, kOp, &layer); !ok(s)) {
        return s;
      }
      for (std::size_t k = listed_before; options.unused_keys != nullptr && k < options.unused_keys->size();
           ++k) {
        (*options.unused_keys)[k].layer = free_name;
      }
    }
    names.insert(layer->name());
    if (i == 0) { // tf.keras 2 writes the input shape into the first layer's config (no InputLayer before it)
      if (const auto c = lj.find("config"); c != lj.end() && c->is_object()) {
        if (const auto it = c->find("batch_input_shape"); it != c->end() && !it->is_null()) {
          first_layer_shape = &*it;
        }
      }
    }
    if (Status s = model->add(std::move(layer)); !ok(s)) {
      return s;
    }
  }
  // The input shape may be written up to four times. Keras's order decides which builds the model: the
  // InputLayer's; else the first layer's "batch_input_shape" (tf.keras 2 makes the InputLayer from it);
  // else "build_input_shape" (culayers, Keras 3, tf.keras 2); else Keras 3's "build_config"
  // {"input_shape"} beside the model's "config" (what Keras builds an unbuilt model from). Keras ignores
  // the others; here they must not contradict it: the same rank, and equal extents past the batch axis
  // where both are known (tf.keras 2 relaxes the InputLayer's changing extents to null while
  // "build_input_shape" keeps the first call's). One that is not a shape list is ignored, as Keras does.
  struct ShapeSource {
    std::string key;
    const Json* shape;
  };
  std::vector<ShapeSource> sources;
  if (input_shape != nullptr) {
    sources.push_back({std::string("InputLayer \"") + input_shape_key + "\"", input_shape});
  }
  if (first_layer_shape != nullptr) {
    sources.push_back({"the first layer's \"batch_input_shape\"", first_layer_shape});
  }
  if (const auto it = config.find("build_input_shape"); it != config.end() && !it->is_null()) {
    sources.push_back({"\"build_input_shape\"", &*it});
  }
  if (const auto bc = json.find("build_config"); bc != json.end() && bc->is_object()) {
    if (const auto it = bc->find("input_shape"); it != bc->end() && !it->is_null()) {
      sources.push_back({"\"build_config\" \"input_shape\"", &*it});
    }
  }
  // A shape's extents, null as -1 (a null past the batch axis: variable-length steps, built by the first
  // call). Keras 3 may write a tuple as {"class_name": "__tuple__", "config": {"value": [...]}}.
  auto parse_shape = [](const ShapeSource& src, std::vector<std::int64_t>* dims) -> Status {
    const Json* shape = src.shape;
    if (shape->is_object()) {
      const auto cls = shape->find("class_name");
      const auto cfg = shape->find("config");
      if (cls != shape->end() && cls->is_string() && *cls == "__tuple__" && cfg != shape->end() &&
          cfg->is_object() && cfg->contains("value")) {
        shape = &(*cfg)["value"];
      }
    }
    const Json& j = *shape;
    if (!j.is_array() || j.empty() || j.size() > static_cast<std::size_t>(kMaxRank)) {
      return set_error(Status::kErrorParse, "sequential from_json: %s is not a list of 1 to %d dimensions",
                       src.key.c_str(), kMaxRank);
    }
    for (std::size_t i = 0; i < j.size(); ++i) {
      const Json& d = j[i];
      if (d.is_null()) {
        dims->push_back(-1);
      } else if (std::int64_t v = 0; config_util::int64_value(d, &v) && v >= 0) {
        dims->push_back(v);
      } else {
        return set_error(Status::kErrorParse,
                         "sequential from_json: %s[%zu] is not a non-negative integer or null",
                         src.key.c_str(), i);
      }
    }
    return Status::kSuccess;
  };
  std::vector<std::int64_t> dims;
  if (!sources.empty()) {
    if (Status s = parse_shape(sources[0], &dims); !ok(s)) {
      return s;
    }
  }
  for (std::size_t k = 1; k < sources.size(); ++k) {
    std::vector<std::int64_t> these;
    if (!ok(parse_shape(sources[k], &these))) {
      ::culayers::detail::clear_error(); // not a shape: ignored
      continue;
    }
    bool agree = these.size() == dims.size();
    for (std::size_t d = 1; agree && d < dims.size(); ++d) {
      agree = dims[d] < 0 || these[d] < 0 || dims[d] == these[d];
    }
    if (!agree) {
      return set_error(Status::kErrorParse, "sequential from_json: %s %s and %s %s disagree",
                       sources[0].key.c_str(), sources[0].shape->dump().c_str(), sources[k].key.c_str(),
                       sources[k].shape->dump().c_str());
    }
  }
  if (!dims.empty()) {
    const bool variable = std::any_of(dims.begin() + 1, dims.end(), [](std::int64_t d) { return d < 0; });
    dims[0] = 1; // the batch axis is not part of the model
    std::replace(dims.begin(), dims.end(), std::int64_t{-1}, std::int64_t{1}); // checked, not built
    Shape shape{};
    if (Status s = Shape::make(dims.data(), static_cast<int>(dims.size()), &shape); !ok(s)) {
      return set_error(s, "sequential from_json: %s: invalid shape", sources[0].key.c_str());
    }
    if (Status s = variable ? Status::kSuccess : model->build(shape, stream); !ok(s)) {
      return s;
    }
  }
  *out = std::move(model);
  return Status::kSuccess;
}

Status Sequential::from_json_string(const std::string& text, std::unique_ptr<Sequential>* out,
                                    cudaStream_t stream) {
  return from_json_string(text, ConfigReadOptions{}, out, stream);
}

Status Sequential::from_json_string(const std::string& text, const ConfigReadOptions& options,
                                    std::unique_ptr<Sequential>* out, cudaStream_t stream) {
  if (options.unused_keys != nullptr) {
    options.unused_keys->clear(); // also when the text does not parse
  }
  Json json;
  if (Status s = config_util::parse_json(text, "sequential from_json", &json); !ok(s)) {
    return s;
  }
  return from_json(json, options, out, stream);
}

Status Sequential::get_weights(SafetensorsFile* out, cudaStream_t stream) {
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: get_weights: out: is null", name_.c_str());
  }
  if (!built_) {
    return set_error(Status::kErrorInvalidValue, "%s: get_weights: the model is not built", name_.c_str());
  }
  SafetensorsFile file;
  file.metadata["format"] = "culayers";
  file.metadata["model"] = name_;
  for (const auto& l : layers_) {
    if (Status s = l->sync_weights(stream); !ok(s)) {
      return s;
    }
  }
  for (const auto& l : layers_) {
    for (const auto& w : l->weights()) {
      SafetensorsTensor t;
      t.name = l->name() + "/" + w->name;
      t.dtype = w->value.dtype();
      t.shape = w->value.shape();
      t.data.resize(w->value.bytes());
      if (Status s = w->value.copy_to_host(t.data.data(), t.data.size(), stream); !ok(s)) {
        return s;
      }
      file.tensors.push_back(std::move(t));
    }
  }
  if (cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) {
    return cuda_error("cudaStreamSynchronize", e);
  }
  *out = std::move(file);
  return Status::kSuccess;
}

Status Sequential::set_weights(const SafetensorsFile& file, cudaStream_t stream) {
  if (!built_) {
    return set_error(Status::kErrorInvalidValue,
                     "%s: set_weights: the model is not built (build it or load a config with "
                     "\"build_input_shape\" first)",
                     name_.c_str());
  }
  // Check everything before writing anything.
  std::set<std::string> expected;
  std::vector<std::pair<Weight*, const std::vector<std::uint8_t>*>> plan;
  std::deque<std::vector<std::uint8_t>> converted_data; // a deque: the plan keeps pointers into it
  for (const auto& l : layers_) {
    for (const auto& w : l->weights()) {
      const std::string key = l->name() + "/" + w->name;
      expected.insert(key);
      const SafetensorsTensor* t = file.find(key);
      if (t == nullptr) {
        return set_error(Status::kErrorInvalidValue, "%s: set_weights: weight \"%s\" is missing",
                         name_.c_str(), key.c_str());
      }
      const std::vector<std::uint8_t>* data = &t->data;
      if (t->dtype != w->value.dtype() || t->shape != w->value.shape()) {
        // Another layout of the weight (another Keras version's): the layer may convert it.
        std::vector<std::uint8_t> bytes;
        bool converted = false;
        if (Status s = l->convert_weight_data(w->name, t->dtype, t->shape, t->data, &bytes, &converted);
            !ok(s)) {
          return s; // the layer's message names it and the weight
        }
        if (converted) {
          if (bytes.size() != w->value.bytes()) {
            return set_error(Status::kErrorInternal,
                             "%s: set_weights: \"%s\": converted to %zu bytes, not %zu", name_.c_str(),
                             key.c_str(), bytes.size(), static_cast<std::size_t>(w->value.bytes()));
          }
          converted_data.push_back(std::move(bytes));
          data = &converted_data.back();
        }
      }
      if (data == &t->data && t->dtype != w->value.dtype()) {
        return set_error(Status::kErrorInvalidDType, "%s: set_weights: \"%s\": dtype %s, the model has %s",
                         name_.c_str(), key.c_str(), dtype_name(t->dtype), dtype_name(w->value.dtype()));
      }
      if (data == &t->data && (t->shape != w->value.shape() || t->data.size() != w->value.bytes())) {
        std::ostringstream got;
        std::ostringstream want;
        got << t->shape;
        want << w->value.shape();
        return set_error(Status::kErrorInvalidShape, "%s: set_weights: \"%s\": shape %s, the model has %s",
                         name_.c_str(), key.c_str(), got.str().c_str(), want.str().c_str());
      }
      if (Status s = l->check_weight_data(w->name, data->data(), data->size()); !ok(s)) {
        return s;
      }
      plan.emplace_back(w.get(), data);
    }
  }
  std::set<std::string> seen;
  for (const SafetensorsTensor& t : file.tensors) {
    // A file read from disk cannot repeat a name (the reader rejects duplicate keys); one built in code
    // could, and find() would take the first silently.
    if (!seen.insert(t.name).second) {
      return set_error(Status::kErrorInvalidValue, "%s: set_weights: \"%s\" appears twice", name_.c_str(),
                       t.name.c_str());
    }
    if (expected.count(t.name) == 0) {
      return set_error(Status::kErrorInvalidValue, "%s: set_weights: \"%s\" is not a weight of this model",
                       name_.c_str(), t.name.c_str());
    }
  }
  for (const auto& [w, data] : plan) {
    if (Status s = w->value.copy_from_host(data->data(), data->size(), stream); !ok(s)) {
      return s;
    }
  }
  // The host bytes belong to the caller: wait for the copies before returning.
  if (cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) {
    return cuda_error("cudaStreamSynchronize", e);
  }
  for (const auto& l : layers_) {
    if (Status s = l->weights_loaded(stream); !ok(s)) {
      return s;
    }
  }
  return Status::kSuccess;
}

Status Sequential::save_weights(const std::string& path, cudaStream_t stream) {
  SafetensorsFile file;
  if (Status s = get_weights(&file, stream); !ok(s)) {
    return s;
  }
  return write_safetensors(path, file);
}

Status Sequential::load_weights(const std::string& path, cudaStream_t stream) {
  if (!built_) {
    return set_error(Status::kErrorInvalidValue, "%s: load_weights: the model is not built", name_.c_str());
  }
  SafetensorsFile file;
  if (Status s = read_safetensors(path, &file); !ok(s)) {
    return s;
  }
  return set_weights(file, stream);
}

} // namespace nn
CULAYERS_NAMESPACE_END
