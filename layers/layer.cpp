// The Layer base and the layer-class registry (include/culayers/nn/layer.hpp).
#include "culayers/nn/layer.hpp"

#include "culayers/cast.hpp"

#include "culayers/nn/sequential.hpp" // register_builtin_layers
#include "layers/config_util.hpp"

#include <atomic>
#include <cctype>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

CULAYERS_NAMESPACE_BEGIN
namespace nn {

using ::culayers::detail::set_error;

namespace {

/// "GroupNormalization" -> "group_normalization" (Keras's default-name rule).
std::string snake_case(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (std::isupper(c) != 0) {
      if (i > 0 && (std::islower(static_cast<unsigned char>(s[i - 1])) != 0 ||
                    (i + 1 < s.size() && std::islower(static_cast<unsigned char>(s[i + 1])) != 0))) {
        out += '_';
      }
      out += static_cast<char>(std::tolower(c));
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

} // namespace

std::string detail::default_layer_name(const std::string& class_name) {
  static std::mutex mutex;
  static std::map<std::string, int> counters;
  const std::string base = snake_case(class_name);
  std::lock_guard<std::mutex> lock(mutex);
  const int n = counters[base]++;
  return n == 0 ? base : base + "_" + std::to_string(n);
}

namespace {

/// `v` rounded to float32 to nearest even, overflowing to an infinity as the hardware's conversion does
/// (a C++ conversion of a finite double beyond float's range is undefined behaviour).
float to_float(double v) {
  constexpr double kMax = 0x1.fffffep127;       // FLT_MAX
  constexpr double kHalfUlpUp = 0x1.ffffffp127; // FLT_MAX + half an ulp: rounds to the even neighbour, inf
  const float sign = std::signbit(v) ? -1.0f : 1.0f;
  if (std::fabs(v) >= kHalfUlpUp) {
    return sign * HUGE_VALF;
  }
  return std::fabs(v) > kMax ? sign * FLT_MAX : static_cast<float>(v);
}

/// `v` as an integer of [lo, hi] when it is one exactly (integer weights: counters).
template <class Int>
bool to_integer(double v, Int* out) {
  constexpr double lo = static_cast<double>(std::numeric_limits<Int>::min());
  constexpr double hi_exclusive = static_cast<double>(std::numeric_limits<Int>::max()) + 1.0; // 2^k exactly
  if (!(v >= lo && v < hi_exclusive) || std::trunc(v) != v) {
    return false;
  }
  *out = static_cast<Int>(v);
  return true;
}

/// Host values converted once to `dtype`: floating types round to nearest even (overflowing to an
/// infinity); an integer weight takes only values that are integers in its range (kErrorInvalidValue).
Status encode(const std::vector<double>& values, DType dtype, std::vector<unsigned char>* out) {
  const std::size_t size = dtype_size(dtype);
  out->resize(values.size() * size);
  const auto not_integer = [&](std::size_t i) {
    return set_error(Status::kErrorInvalidValue, "initializer value %g is not a %s", values[i],
                     dtype_name(dtype));
  };
  for (std::size_t i = 0; i < values.size(); ++i) {
    unsigned char* p = out->data() + i * size;
    switch (dtype) {
    case DType::kFloat32: {
      const float v = to_float(values[i]);
      std::memcpy(p, &v, size);
      break;
    }
    case DType::kFloat16: {
      const __half v = __double2half(values[i]);
      std::memcpy(p, &v, size);
      break;
    }
    case DType::kBFloat16: {
      const __nv_bfloat16 v = __double2bfloat16(values[i]);
      std::memcpy(p, &v, size);
      break;
    }
    case DType::kInt32: {
      std::int32_t v = 0;
      if (!to_integer(values[i], &v)) {
        return not_integer(i);
      }
      std::memcpy(p, &v, size);
      break;
    }
    case DType::kUInt8: {
      std::uint8_t v = 0;
      if (!to_integer(values[i], &v)) {
        return not_integer(i);
      }
      std::memcpy(p, &v, size);
      break;
    }
    case DType::kInt64: {
      std::int64_t v = 0;
      if (!to_integer(values[i], &v)) {
        return not_integer(i);
      }
      std::memcpy(p, &v, size);
      break;
    }
    default:
      return set_error(Status::kErrorInvalidDType, "dtype %d is not a weight dtype", static_cast<int>(dtype));
    }
  }
  return Status::kSuccess;
}

struct Registry {
  std::mutex mutex;
  std::map<std::string, LayerFactory> factories;
};

Registry& registry() {
  static Registry r;
  return r;
}

} // namespace

Layer::Layer(std::string class_name, std::string name)
    : class_name_(std::move(class_name)),
      name_(name.empty() ? detail::default_layer_name(class_name_) : std::move(name)) {}

Layer::~Layer() = default;

Status Layer::build(const Shape& input_shape, cudaStream_t stream) {
  if (built_) {
    return set_error(Status::kErrorInvalidValue, "%s: build: the layer is already built", name_.c_str());
  }
  if (Status s = input_shape.validate(name_.c_str(), "input_shape"); !ok(s)) {
    return s;
  }
  int device = 0;
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) {
    (void)cudaGetLastError();
    return set_error(Status::kErrorCudaRuntime, "%s: build: cudaGetDevice: %s", name_.c_str(),
                     cudaGetErrorString(e));
  }
  if (Status s = do_build(input_shape, stream); !ok(s)) {
    weights_.clear();
    updates_.clear();
    call_steps_.clear();
    return s;
  }
  // Weight initialization was enqueued from host buffers that go away now: wait for it.
  if (const cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) {
    (void)cudaGetLastError();
    // Unbuilt as after a failed do_build: a later build starts from nothing (the weights' names free, the
    // call steps registered once).
    weights_.clear();
    updates_.clear();
    call_steps_.clear();
    return set_error(Status::kErrorCudaRuntime, "%s: build: %s", name_.c_str(), cudaGetErrorString(e));
  }
  built_ = true;
  built_shape_ = input_shape;
  device_ = device;
  return Status::kSuccess;
}

Status Layer::do_build(const Shape& input_shape, cudaStream_t stream) {
  (void)input_shape;
  (void)stream;
  return Status::kSuccess;
}

Status Layer::compute_output_shape(const Shape& input_shape, Shape* out) const {
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: compute_output_shape: out: is null", name_.c_str());
  }
  *out = input_shape;
  return Status::kSuccess;
}

Status Layer::check_input_shape(const Shape& built, const Shape& shape) const {
  return config_util::check_fixed_axes(name_, built, shape, 1);
}

Status Layer::check_call(const Shape& shape, DType dtype, bool has_mask, Phase phase) const {
  const char* n = name_.c_str();
  // Keras's autocast: a floating input of another dtype is cast to the compute dtype by call_forward.
  if (dtype != dtype_ && !(is_floating_point(dtype) && is_floating_point(dtype_))) {
    return set_error(Status::kErrorInvalidDType,
                     "%s: x: dtype %s, the layer computes in %s (only floating inputs are cast to it)", n,
                     dtype_name(dtype), dtype_name(dtype_));
  }
  if (has_mask) {
    if (!supports_masking()) {
      return set_error(Status::kErrorNotSupported,
                       "%s: mask: layer %s does not support masking, but was passed an input mask", n,
                       class_name_.c_str());
    }
    if (shape.rank() < 2) {
      return set_error(Status::kErrorInconsistentArguments,
                       "%s: mask: the input has rank %d; a mask needs "
                       "[batch, steps, ...]",
                       n, shape.rank());
    }
    if (Status s = check_mask(shape); !ok(s)) {
      return s;
    }
  }
  if (built_) { // (before the build, the build's own checks come first)
    if (Status s = check_input_shape(built_shape_, shape); !ok(s)) {
      return s;
    }
    return check_phase(shape, phase);
  }
  return Status::kSuccess;
}

Status Layer::call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                   LayerOutput* out) {
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: out: is null", name_.c_str());
  }
  LayerOutput result{};
  if (Status s = call_forward(ctx, x, mask, &result); !ok(s)) {
    return s;
  }
  if (Status s = run_updates(ctx); !ok(s)) {
    return s;
  }
  *out = result;
  return Status::kSuccess;
}

Status Layer::run_updates(const CallContext& ctx) {
  if (ctx.phase != Phase::kTraining) {
    return Status::kSuccess;
  }
  for (const Update& u : call_steps_) {
    if (Status s = u.op(ctx); !ok(s)) {
      return s;
    }
  }
  if (trainable_) {
    for (const Update& u : updates_) {
      if (Status s = u.op(ctx); !ok(s)) {
        return s;
      }
    }
  }
  return Status::kSuccess;
}

namespace {

/// A layer-owned buffer of `shape` and `dtype` in *t: kept when it already is one, else reallocated from
/// ctx's allocator (output buffers and the autocast buffer). The old buffer is freed on this call's stream,
/// not on the stream of its previous call: a reader on another stream is ordered before this call (a
/// same-shape call would overwrite the buffer in place), so not necessarily before work on the previous
/// stream that could reuse the memory.
Status keep_buffer(const CallContext& ctx, const Shape& shape, DType dtype, Tensor* t) {
  if (t->defined() && t->shape() == shape && t->dtype() == dtype) {
    return Status::kSuccess;
  }
  Tensor fresh;
  if (Status s = Tensor::empty(shape, dtype, &fresh, ctx.stream, &ctx.alloc()); !ok(s)) {
    return s;
  }
  t->release_on(ctx.stream);
  *t = std::move(fresh);
  return Status::kSuccess;
}

} // namespace

Status Layer::call_forward(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                           LayerOutput* out) {
  const char* n = name_.c_str();
  if (ctx.phase != Phase::kInference && ctx.phase != Phase::kTraining) {
    return set_error(Status::kErrorInvalidValue, "%s: ctx.phase: %d is not a Phase", n,
                     static_cast<int>(ctx.phase));
  }
  if (built_) {
    int device = 0;
    if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) {
      (void)cudaGetLastError();
      return set_error(Status::kErrorCudaRuntime, "%s: cudaGetDevice: %s", n, cudaGetErrorString(e));
    }
    if (device != device_) {
      return set_error(Status::kErrorInvalidValue,
                       "%s: the current device is %d, but the layer was built on device %d (its weights and "
                       "buffers live there)",
                       n, device, device_);
    }
  }
  if (x.data() == nullptr && x.shape().numel() != 0) {
    return set_error(Status::kErrorNullPointer, "%s: x: is null", n);
  }
  if (!x.is_contiguous()) {
    return set_error(Status::kErrorInvalidLayout, "%s: x: must be contiguous", n);
  }
  const bool has_mask = mask.data() != nullptr;
  if (Status s = check_call(x.shape(), x.dtype(), has_mask, ctx.phase); !ok(s)) {
    return s;
  }
  if (has_mask &&
      (mask.dtype() != DType::kUInt8 || mask.shape().rank() != 2 || mask.shape().dim(0) != x.shape().dim(0) ||
       mask.shape().dim(1) != x.shape().dim(1) || !mask.is_contiguous())) {
    return set_error(Status::kErrorInconsistentArguments,
                     "%s: mask: expected contiguous uint8 [batch, steps] matching x's first two axes", n);
  }
  if (!built_) {
    if (Status s = build(x.shape(), ctx.stream); !ok(s)) {
      return s;
    }
    // The checks that need the built layer (the op's limits for this shape, the phase) now run too; a first
    // call they reject leaves the layer unbuilt, as Sequential's first call does.
    if (Status s = check_call(x.shape(), x.dtype(), has_mask, ctx.phase); !ok(s)) {
      unbuild();
      return s;
    }
  }
  // Keras's autocast: x in another floating dtype is converted into a layer-owned buffer first (kept
  // while the shape and dtype stay, like an output buffer), and the layer runs on that.
  ConstTensorView input = x;
  if (x.dtype() != dtype_) {
    Tensor& t = autocast_input_;
    if (Status s = keep_buffer(ctx, x.shape(), dtype_, &t); !ok(s)) {
      const std::string why = last_error_message();
      return set_error(s, "%s: x: the buffer to cast it to %s: %s", n, dtype_name(dtype_), why.c_str());
    }
    cast::CastArgs c;
    c.x_dtype = x.dtype();
    c.x = x.data();
    c.y_dtype = dtype_;
    c.y = t.data();
    c.count = x.shape().numel();
    if (Status s = cast::run(c, nullptr, 0, ctx.stream); !ok(s)) {
      const std::string why = last_error_message();
      return set_error(s, "%s: x: casting %s to %s: %s", n, dtype_name(x.dtype()), dtype_name(dtype_),
                       why.c_str());
    }
    input = ConstTensorView::contiguous(t.data(), dtype_, x.shape());
  }
  LayerOutput result{};
  if (supports_masking()) {
    result.mask = mask; // passed through unless do_call computes its own
  }
  const Status st = do_call(ctx, input, mask, &result);
  // This call's stream is now the last to use the layer's memory: free it there (Tensor::release_on).
  // (A buffer the call replaced was freed on this stream too: output_buffer.)
  for (const auto& w : weights_) {
    w->value.release_on(ctx.stream);
  }
  for (Tensor& t : outputs_) {
    t.release_on(ctx.stream);
  }
  autocast_input_.release_on(ctx.stream);
  if (!ok(st)) {
    return st;
  }
  *out = result;
  return Status::kSuccess;
}

std::size_t Layer::buffer_bytes() const noexcept {
  std::size_t bytes = autocast_input_.bytes();
  for (const Tensor& t : outputs_) {
    bytes += t.bytes();
  }
  return bytes;
}

void Layer::release_buffers() noexcept {
  for (Tensor& t : outputs_) {
    t.reset(); // on the stream of the last call that used it (call_forward named it: release_on)
  }
  autocast_input_.reset();
}

std::vector<const Weight*> Layer::trainable_weights() const {
  std::vector<const Weight*> out;
  for (const auto& w : weights_) {
    if (w->trainable && trainable_) {
      out.push_back(w.get());
    }
  }
  return out;
}

std::vector<const Weight*> Layer::non_trainable_weights() const {
  std::vector<const Weight*> out;
  for (const auto& w : weights_) {
    if (!w->trainable || !trainable_) {
      out.push_back(w.get());
    }
  }
  return out;
}

Weight* Layer::find_weight(const std::string& name) noexcept {
  for (const auto& w : weights_) {
    if (w->name == name) {
      return w.get();
    }
  }
  return nullptr;
}

const Weight* Layer::find_weight(const std::string& name) const noexcept {
  return const_cast<Layer*>(this)->find_weight(name);
}

std::int64_t Layer::count_params() const noexcept {
  std::int64_t n = 0;
  for (const auto& w : weights_) {
    n += w->value.numel();
  }
  return n;
}

Json Layer::get_config() const {
  Json config = {{"name", name_}, {"trainable", trainable_}, {"dtype", dtype_name(dtype_)}};
  add_config(config);
  return config;
}

Status Layer::add_weight(const std::string& name, const Shape& shape, DType dtype,
                         const Initializer& initializer, bool trainable, cudaStream_t stream, Weight** out) {
  const char* n = name_.c_str();
  if (name.empty() || find_weight(name) != nullptr) {
    return set_error(Status::kErrorInvalidValue, "%s: add_weight: name \"%s\" is empty or already used", n,
                     name.c_str());
  }
  // An error of the steps below, prefixed with the layer and the weight.
  auto named = [&](Status s) {
    return set_error(s, "%s: add_weight: %s: %s", n, name.c_str(), last_error_message());
  };
  if (Status s = initializer.validate(); !ok(s)) {
    return named(s);
  }
  auto w = std::make_unique<Weight>();
  w->name = name;
  w->trainable = trainable;
  w->initializer = initializer;
  // The device tensor before the initial values: a weight larger than the device's free memory is refused
  // before they are generated on the host (8 bytes per element there).
  if (Status s = Tensor::empty(shape, dtype, &w->value, stream); !ok(s)) {
    return named(s);
  }
  std::vector<unsigned char> bytes;
  try {
    std::vector<double> values;
    if (Status s = initializer.generate(shape, &values); !ok(s)) {
      return named(s);
    }
    if (Status s = encode(values, dtype, &bytes); !ok(s)) {
      return named(s);
    }
  } catch (const std::bad_alloc&) {
    return set_error(Status::kErrorOutOfMemory, "%s: add_weight: %s: no host memory for %lld initial values",
                     n, name.c_str(), static_cast<long long>(shape.numel()));
  }
  // The initial values pass the checks loaded values must pass (a moving variance initializer that draws
  // negative values), so a built model's weights always load back.
  if (Status s = check_weight_data(name, bytes.data(), bytes.size()); !ok(s)) {
    return set_error(s, "%s (from its initializer)", last_error_message());
  }
  if (Status s = w->value.copy_from_host(bytes.data(), bytes.size(), stream); !ok(s)) {
    return named(s);
  }
  // The host bytes must outlive the copy: synchronize here (build time only).
  if (const cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) {
    (void)cudaGetLastError();
    return set_error(Status::kErrorCudaRuntime, "%s: add_weight: %s", n, cudaGetErrorString(e));
  }
  if (out != nullptr) {
    *out = w.get();
  }
  weights_.push_back(std::move(w));
  return Status::kSuccess;
}

void Layer::add_update(std::string name, UpdateOp op) {
  updates_.push_back(Update{std::move(name), std::move(op)});
}

void Layer::add_call_step(std::string name, UpdateOp op) {
  call_steps_.push_back(Update{std::move(name), std::move(op)});
}

Status Layer::workspace_buffer(const CallContext& ctx, int slot, std::size_t needed, void** data,
                               std::size_t* bytes) {
  *data = nullptr;
  *bytes = 0;
  const std::size_t have = slot >= 0 && static_cast<std::size_t>(slot) < outputs_.size()
                               ? outputs_[static_cast<std::size_t>(slot)].bytes()
                               : 0;
  const std::size_t want = needed > have ? needed : have;
  if (want == 0) {
    return Status::kSuccess;
  }
  Tensor* t = nullptr;
  if (Status s = output_buffer(ctx, slot, Shape{static_cast<std::int64_t>(want)}, DType::kUInt8, &t);
      !ok(s)) {
    return s;
  }
  *data = t->data();
  *bytes = t->bytes();
  return Status::kSuccess;
}

Status Layer::output_buffer(const CallContext& ctx, int slot, const Shape& shape, DType dtype, Tensor** out) {
  if (slot < 0 || out == nullptr) {
    return set_error(Status::kErrorInvalidValue, "%s: output_buffer: bad slot or null out", name_.c_str());
  }
  if (static_cast<std::size_t>(slot) >= outputs_.size()) {
    outputs_.resize(static_cast<std::size_t>(slot) + 1);
  }
  Tensor& t = outputs_[static_cast<std::size_t>(slot)];
  if (Status s = keep_buffer(ctx, shape, dtype, &t); !ok(s)) {
    return s;
  }
  *out = &t;
  return Status::kSuccess;
}

Status register_layer_class(const std::string& class_name, LayerFactory factory) {
  if (class_name.empty() || !factory) {
    return set_error(Status::kErrorInvalidValue, "layer registry: empty class name or factory");
  }
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.factories[class_name] = std::move(factory);
  return Status::kSuccess;
}

void detail::register_layer_class_if_absent(const std::string& class_name, LayerFactory factory) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.factories.emplace(class_name, std::move(factory)); // no-op when the class is there
}

bool is_layer_class_registered(const std::string& class_name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.factories.count(class_name) != 0;
}

Status layer_from_json(const Json& json, std::unique_ptr<Layer>* out) {
  return layer_from_json(json, ConfigReadOptions{}, out);
}

Status layer_from_json(const Json& json, const ConfigReadOptions& options, std::unique_ptr<Layer>* out) {
  if (options.unused_keys != nullptr) {
    options.unused_keys->clear();
  }
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "layer_from_json: out: is null");
  }
  return config_util::layer_from_json_at(json, options, "", "layer_from_json", out);
}

Status config_util::layer_from_json_at(const Json& json, const ConfigReadOptions& options,
                                       const std::string& path, const char* op, std::unique_ptr<Layer>* out) {
  if (!json.is_object() || !json.contains("class_name") || !json["class_name"].is_string()) {
    return set_error(Status::kErrorParse,
                     "layer_from_json: expected {\"class_name\": ..., \"config\": {...}}");
  }
  register_builtin_layers();
  const std::string class_name = json["class_name"].get<std::string>();
  static const Json empty_config = Json::object();
  const Json& config = json.contains("config") ? json["config"] : empty_config;
  if (!config.is_object()) {
    return set_error(Status::kErrorParse, "layer_from_json: %s: \"config\" is not an object",
                     class_name.c_str());
  }
  LayerFactory factory;
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    const auto it = r.factories.find(class_name);
    if (it == r.factories.end()) {
      return set_error(Status::kErrorUnknownClass, "layer_from_json: unknown layer class \"%s\"",
                       class_name.c_str());
    }
    factory = it->second;
  }
  std::unique_ptr<Layer> layer;
  if (Status s = factory(config, &layer); !ok(s)) {
    return s;
  }
  if (!layer) {
    return set_error(Status::kErrorInternal, "layer_from_json: the %s factory made no layer",
                     class_name.c_str());
  }
  if (Status s = config_util::check_document_keys(config_util::DocumentPart::kLayerEntry, json, path,
                                                  layer->name(), op, options);
      !ok(s)) {
    return s;
  }
  if (json.contains("config")) {
    const std::string config_path = path.empty() ? std::string("config") : path + ".config";
    if (Status s = config_util::check_layer_config_keys(config, class_name, *layer, config_path, op, options);
        !ok(s)) {
      return s;
    }
  }
  *out = std::move(layer);
  return Status::kSuccess;
}

Json layer_to_json(const Layer& layer) {
  return Json{{"class_name", layer.class_name()}, {"config", layer.get_config()}};
}

Status read_base_config(const Json& config, std::string* name, bool* trainable, DType* dtype) {
  if (!config.is_object()) {
    return set_error(Status::kErrorParse, "layer config: not an object");
  }
  if (const auto it = config.find("name"); it != config.end()) {
    if (!it->is_string()) {
      return set_error(Status::kErrorParse, "layer config: \"name\" is not a string");
    }
    *name = it->get<std::string>();
  }
  if (const auto it = config.find("trainable"); it != config.end()) {
    if (!it->is_boolean()) {
      return set_error(Status::kErrorParse, "layer config: \"trainable\" is not a boolean");
    }
    *trainable = it->get<bool>();
  }
  if (const auto it = config.find("dtype"); it != config.end() && !it->is_null()) {
    // A name, or a dtype policy object as Keras 3 ({"class_name": "DTypePolicy", "config": {"name": ...}})
    // and tf.keras 2's mixed precision ({"class_name": "Policy", ...}) write it. A mixed policy computes
    // in its half type (the layers' weights are float32 anyway).
    const Json* named = &*it;
    if (it->is_object()) {
      const auto cfg = it->find("config");
      named = cfg != it->end() && cfg->is_object() && cfg->contains("name") ? &(*cfg)["name"] : nullptr;
    }
    if (named == nullptr || !named->is_string()) {
      return set_error(
          Status::kErrorParse,
          "layer config: \"dtype\" is not a string or a dtype policy {\"config\": {\"name\": ...}}");
    }
    std::string d = named->get<std::string>();
    if (d.rfind("mixed_", 0) == 0) {
      d = d.substr(6);
    }
    bool found = false;
    for (DType t : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      if (d == dtype_name(t)) {
        *dtype = t;
        found = true;
      }
    }
    if (!found) {
      return set_error(Status::kErrorParse,
                       "layer config: \"dtype\" \"%s\" is not float32, float16 or bfloat16 (or mixed_...)",
                       named->get<std::string>().c_str());
    }
  }
  return Status::kSuccess;
}

} // namespace nn
CULAYERS_NAMESPACE_END
