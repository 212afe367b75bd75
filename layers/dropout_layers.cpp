// Dropout and DecayingDropout on the dropout ops and their device-resident DropoutState
// (include/culayers/nn/core_layers.hpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "culayers/dropout.hpp"
#include "culayers/nn/core_layers.hpp"
#include "layers/config_util.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {

using ::culayers::detail::set_error;

namespace {

Status check_noise_shape_option(const std::string& name, const NoiseShape& noise_shape) {
  if (!noise_shape) {
    return Status::kSuccess;
  }
  if (noise_shape->size() > static_cast<std::size_t>(kMaxRank)) {
    return set_error(Status::kErrorInvalidValue, "%s: noise_shape: %zu entries exceed the maximum rank %d",
                     name.c_str(), noise_shape->size(), kMaxRank);
  }
  for (std::size_t i = 0; i < noise_shape->size(); ++i) {
    const auto& e = (*noise_shape)[i];
    if (e && *e < 1) {
      return set_error(Status::kErrorInvalidValue,
                       "%s: noise_shape: entry %zu is %lld; it must be null or >= 1", name.c_str(), i,
                       static_cast<long long>(*e));
    }
  }
  return Status::kSuccess;
}

/// Keras's _get_noise_shape: null entries take x's extent. A rank-0 result means x's shape.
/// The noise shape for an input of shape `x`. With `check_batch` false (shape inference and build, where
/// the batch extent is a placeholder) an explicit batch entry is not compared with x's; calls check it.
Status resolve_noise_shape(const std::string& name, const NoiseShape& noise_shape, const Shape& x, Shape* out,
                           bool check_batch = true) {
  if (!noise_shape) {
    *out = Shape{};
    return Status::kSuccess;
  }
  const int rank = static_cast<int>(noise_shape->size());
  if (rank != x.rank()) {
    return set_error(Status::kErrorInvalidShape, "%s: noise_shape: %d entries for an input of rank %d",
                     name.c_str(), rank, x.rank());
  }
  std::int64_t dims[kMaxRank] = {};
  for (int i = 0; i < rank; ++i) {
    const auto& e = (*noise_shape)[static_cast<std::size_t>(i)];
    dims[i] = e ? *e : x.dim(i);
    if (i == 0 && !check_batch) {
      dims[i] = x.dim(i);
    }
    if (dims[i] != 1 && dims[i] != x.dim(i)) {
      return set_error(Status::kErrorInvalidShape,
                       "%s: noise_shape: entry %d is %lld; it must be null, 1 or the input's %lld",
                       name.c_str(), i, static_cast<long long>(dims[i]), static_cast<long long>(x.dim(i)));
    }
  }
  return Shape::make(dims, rank, out);
}

/// A dropout layer's check_phase: when the call draws (`draws`: training, a nonzero rate), the noise shape
/// resolved as the call will resolve it, batch entry included.
Status check_training_noise(const std::string& name, const NoiseShape& noise_shape, const Shape& shape,
                            bool draws) {
  Shape unused;
  return draws ? resolve_noise_shape(name, noise_shape, shape, &unused) : Status::kSuccess;
}

Json noise_shape_to_json(const NoiseShape& noise_shape) {
  if (!noise_shape) {
    return nullptr;
  }
  Json list = Json::array();
  for (const auto& e : *noise_shape) {
    list.push_back(e ? Json(*e) : Json(nullptr));
  }
  return list;
}

Json seed_to_json(const std::optional<std::uint64_t>& seed) {
  return seed ? Json(*seed) : Json(nullptr);
}

/// A non-negative JSON integer (as int64 or uint64 in nlohmann's types).
bool read_count(const Json& v, std::uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<std::uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {
    *out = static_cast<std::uint64_t>(v.get<std::int64_t>());
    return true;
  }
  return false;
}

Status read_noise_shape(const char* cls, const Json& config, NoiseShape* out) {
  const auto it = config.find("noise_shape");
  if (it == config.end() || it->is_null()) {
    return Status::kSuccess;
  }
  if (!it->is_array()) {
    return set_error(Status::kErrorParse, "%s config: \"noise_shape\": is not null or a list", cls);
  }
  std::vector<std::optional<std::int64_t>> dims;
  for (const Json& e : *it) {
    std::uint64_t d = 0;
    if (e.is_null()) {
      dims.emplace_back();
    } else if (read_count(e, &d) && d <= static_cast<std::uint64_t>(INT64_MAX)) {
      dims.emplace_back(static_cast<std::int64_t>(d));
    } else {
      return set_error(Status::kErrorParse,
                       "%s config: \"noise_shape\": entries must be null or non-negative integers", cls);
    }
  }
  *out = std::move(dims);
  return Status::kSuccess;
}

Status read_seed(const char* cls, const Json& config, std::optional<std::uint64_t>* out) {
  const auto it = config.find("seed");
  if (it == config.end() || it->is_null()) {
    return Status::kSuccess;
  }
  std::uint64_t seed = 0;
  std::int64_t negative = 0;
  if (config_util::int64_value(*it, &negative) && negative < 0) {
    // Keras takes any integer seed; culayers's seeds are 64-bit patterns: a negative one is taken as its
    // two's complement (written back as that unsigned number, which reads back to the same seed).
    seed = static_cast<std::uint64_t>(negative);
  } else if (!read_count(*it, &seed)) {
    return set_error(Status::kErrorParse, "%s config: \"seed\": is not null or an integer", cls);
  }
  *out = seed;
  return Status::kSuccess;
}

/// One DropoutState in device memory, allocated at build (a setup step).
Status allocate_state(const std::string& name, Tensor* state, cudaStream_t stream) {
  if (Status s = Tensor::empty(Shape{static_cast<std::int64_t>(sizeof(dropout::DropoutState))}, DType::kUInt8,
                               state, stream);
      !ok(s)) {
    return set_error(s, "%s: dropout state: %s", name.c_str(), last_error_message());
  }
  return Status::kSuccess;
}

dropout::DropoutState* state_ptr(Tensor& state) {
  return static_cast<dropout::DropoutState*>(state.data());
}

Status init_dropout_state(const std::string& name, Tensor& state, std::uint64_t seed,
                          double initial_keep_rate, double decay_rate, std::int64_t decay_interval,
                          std::int64_t iterations, cudaStream_t stream, std::uint64_t redraws = 0) {
  dropout::DropoutInitArgs init;
  init.state = state_ptr(state);
  init.seed = seed;
  init.initial_keep_rate = initial_keep_rate;
  init.decay_rate = decay_rate;
  init.decay_interval = decay_interval;
  init.iterations = iterations;
  init.redraws = redraws;
  if (Status s = dropout::run(init, nullptr, 0, stream); !ok(s)) {
    return set_error(s, "%s: %s", name.c_str(), last_error_message());
  }
  return Status::kSuccess;
}

/// The training-phase forward: y = dropout(x) with the state's current call (`noise` resolved).
dropout::DropoutForwardArgs forward_args(const Shape& noise, Tensor& state, const ConstTensorView& x,
                                         Tensor* y) {
  dropout::DropoutForwardArgs f;
  f.x = x.data();
  f.y = y->data();
  f.dtype = x.dtype();
  f.shape = x.shape();
  f.noise_shape = noise;
  f.state = state_ptr(state);
  return f;
}

Status dropout_forward(const std::string& name, const Shape& noise, Tensor& state, const CallContext& ctx,
                       const ConstTensorView& x, Tensor* y) {
  if (Status s = dropout::run(forward_args(noise, state, x, y), nullptr, 0, ctx.stream); !ok(s)) {
    return set_error(s, "%s: %s", name.c_str(), last_error_message());
  }
  return Status::kSuccess;
}

/// One of the state ops that take only the state: the update op (dropout::DropoutUpdateArgs, iterations
/// += 1) or the redraw op (dropout::DropoutRedrawArgs, a fresh stream without a schedule step).
template <class StateOpArgs>
Status run_state_op(const std::string& name, Tensor& state, cudaStream_t stream, StateOpArgs a = {}) {
  a.state = state_ptr(state);
  if (Status s = dropout::run(a, nullptr, 0, stream); !ok(s)) {
    return set_error(s, "%s: %s", name.c_str(), last_error_message());
  }
  return Status::kSuccess;
}

Status read_dropout_state(const std::string& name, const Tensor& state, dropout::DropoutState* host,
                          cudaStream_t stream) {
  if (host == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: read_state: host: is null", name.c_str());
  }
  if (!state.defined()) {
    return set_error(Status::kErrorInvalidValue, "%s: read_state: the layer is not built", name.c_str());
  }
  cudaError_t e =
      cudaMemcpyAsync(host, state.data(), sizeof(dropout::DropoutState), cudaMemcpyDeviceToHost, stream);
  if (e == cudaSuccess) {
    e = cudaStreamSynchronize(stream);
  }
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return set_error(Status::kErrorCudaRuntime, "%s: read_state: %s", name.c_str(), cudaGetErrorString(e));
  }
  return Status::kSuccess;
}

/// Output shape of both dropout layers (the input's), with the noise shape's rank checked when known.
Status dropout_output_shape(const std::string& name, const NoiseShape& noise_shape, const Shape& input_shape,
                            Shape* out) {
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: compute_output_shape: out: is null", name.c_str());
  }
  Shape unused;
  if (Status s = resolve_noise_shape(name, noise_shape, input_shape, &unused, /*check_batch=*/false);
      !ok(s)) {
    return s;
  }
  *out = input_shape;
  return Status::kSuccess;
}

} // namespace

// ---- Dropout ----------------------------------------------------------------------------------------------

Dropout::Dropout(DropoutOptions options, std::string name, DType dtype)
    : Layer("Dropout", std::move(name)), options_(std::move(options)),
      effective_seed_(options_.seed ? *options_.seed : config_util::random_seed()) {
  set_dtype(dtype);
}

Status Dropout::check_options() const {
  if (Status s = config_util::check_float_dtype(name(), dtype()); !ok(s)) {
    return s;
  }
  if (!(options_.rate >= 0.0 && options_.rate < 1.0)) {
    return set_error(Status::kErrorInvalidValue, "%s: rate: %g is not in [0, 1)", name().c_str(),
                     options_.rate);
  }
  return check_noise_shape_option(name(), options_.noise_shape);
}

Status Dropout::compute_output_shape(const Shape& input_shape, Shape* out) const {
  return dropout_output_shape(name(), options_.noise_shape, input_shape, out);
}

Status Dropout::check_input_shape(const Shape& built, const Shape& shape) const {
  return config_util::check_fixed_axes(name(), built, shape, built.rank());
}

Status Dropout::check_phase(const Shape& shape, Phase phase) const {
  return check_training_noise(name(), options_.noise_shape, shape,
                              phase == Phase::kTraining && options_.rate != 0.0);
}

Status Dropout::do_build(const Shape& input_shape, cudaStream_t stream) {
  if (Status s = check_options(); !ok(s)) {
    return s;
  }
  Shape unused;
  if (Status s = compute_output_shape(input_shape, &unused); !ok(s)) {
    return s;
  }
  if (Status s = allocate_state(name(), &state_, stream); !ok(s)) {
    return s;
  }
  if (Status s = init_dropout_state(name(), state_, effective_seed_, 1.0 - options_.rate, 1.0, 1, 0, stream);
      !ok(s)) {
    return s;
  }
  // Part of every training call, not an update op: Keras's Dropout draws new randomness on every training
  // call, trainable or not. The next call uses the next Philox stream (rate 0, the identity, draws nothing).
  if (options_.rate != 0.0) {
    add_call_step("next_stream", [this](const CallContext& ctx) {
      return run_state_op<dropout::DropoutUpdateArgs>(name(), state_, ctx.stream);
    });
  }
  return Status::kSuccess;
}

Status Dropout::do_call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                        LayerOutput* out) {
  (void)mask;                    // passed through by the base
  state_.release_on(ctx.stream); // the last stream to use the state (see Layer::call)
  // The training-phase output buffer is taken in either phase, so a model warmed up by inference calls
  // allocates nothing in a later training call either (which may be under graph capture).
  const bool identity = ctx.phase != Phase::kTraining || options_.rate == 0.0;
  Shape noise;
  if (!identity) { // checked before the buffer is taken: a failing call leaves the previous output alone
    if (Status s = resolve_noise_shape(name(), options_.noise_shape, x.shape(), &noise); !ok(s)) {
      return s;
    }
  }
  Tensor* y = nullptr;
  if (Status s = output_buffer(ctx, 0, x.shape(), dtype(), &y); !ok(s)) {
    return s;
  }
  if (identity) {
    out->y = x; // no kernel, the output aliases the input
    return Status::kSuccess;
  }
  if (Status s = dropout_forward(name(), noise, state_, ctx, x, y); !ok(s)) {
    return s;
  }
  out->y = y->view(); // the move to the next stream is a call step (do_build)
  return Status::kSuccess;
}

Status Dropout::read_state(dropout::DropoutState* host, cudaStream_t stream) const {
  return read_dropout_state(name(), state_, host, stream);
}

void Dropout::add_config(Json& config) const {
  config["rate"] = options_.rate;
  config["noise_shape"] = noise_shape_to_json(options_.noise_shape);
  config["seed"] = seed_to_json(options_.seed);
}

Status Dropout::from_config(const Json& config, std::unique_ptr<Layer>* out) {
  const char* cls = "Dropout";
  return config_util::make_layer_from_config<Dropout, DropoutOptions>(
      cls, config, out, [&](DropoutOptions* o) -> Status {
        if (Status s = config_util::read_double(cls, config, "rate", &o->rate); !ok(s)) {
          return s;
        }
        if (Status s = read_noise_shape(cls, config, &o->noise_shape); !ok(s)) {
          return s;
        }
        if (Status s = read_seed(cls, config, &o->seed); !ok(s)) {
          return s;
        }
        return Status::kSuccess;
      });
}

// ---- DecayingDropout --------------------------------------------------------------------------------------

DecayingDropout::DecayingDropout(DecayingDropoutOptions options, std::string name, DType dtype)
    : Layer("DecayingDropout", std::move(name)), options_(std::move(options)),
      effective_seed_(options_.seed ? *options_.seed : config_util::random_seed()) {
  set_dtype(dtype);
  // As the original layer: the decay rate is clamped into [0, 1] (NaN stays NaN: check_options rejects it).
  if (!std::isnan(options_.decay_rate)) {
    options_.decay_rate = std::min(1.0, std::max(0.0, options_.decay_rate));
  }
}

Status DecayingDropout::check_options() const {
  const char* n = name().c_str();
  if (Status s = config_util::check_float_dtype(name(), dtype()); !ok(s)) {
    return s;
  }
  if (!(options_.initial_keep_rate > 0.0 && options_.initial_keep_rate <= 1.0)) {
    return set_error(Status::kErrorInvalidValue, "%s: initial_keep_rate: %g is not in (0, 1]", n,
                     options_.initial_keep_rate);
  }
  if (options_.decay_interval <= 0) {
    return set_error(Status::kErrorInvalidValue, "%s: decay_interval: %lld is not positive", n,
                     static_cast<long long>(options_.decay_interval));
  }
  if (std::isnan(options_.decay_rate)) {
    return set_error(Status::kErrorInvalidValue, "%s: decay_rate: is NaN", n);
  }
  return check_noise_shape_option(name(), options_.noise_shape);
}

Status DecayingDropout::compute_output_shape(const Shape& input_shape, Shape* out) const {
  return dropout_output_shape(name(), options_.noise_shape, input_shape, out);
}

Status DecayingDropout::init_state(std::int64_t iterations, std::uint64_t redraws, cudaStream_t stream) {
  return init_dropout_state(name(), state_, effective_seed_, options_.initial_keep_rate, options_.decay_rate,
                            options_.decay_interval, iterations, stream, redraws);
}

Status DecayingDropout::check_input_shape(const Shape& built, const Shape& shape) const {
  return config_util::check_fixed_axes(name(), built, shape, built.rank());
}

Status DecayingDropout::check_phase(const Shape& shape, Phase phase) const {
  return check_training_noise(name(), options_.noise_shape, shape, phase == Phase::kTraining);
}

Status DecayingDropout::check_weight_data(const std::string& weight_name, const void* data,
                                          std::size_t bytes) const {
  if (weight_name != "iterations") {
    return Status::kSuccess;
  }
  std::int64_t iterations = 0;
  if (data == nullptr || bytes != sizeof(iterations)) {
    return set_error(Status::kErrorInvalidValue, "%s: iterations: expected one int64 value (%zu bytes given)",
                     name().c_str(), bytes);
  }
  std::memcpy(&iterations, data, sizeof(iterations));
  if (iterations < 0) {
    return set_error(Status::kErrorInvalidValue, "%s: iterations: %lld is negative", name().c_str(),
                     static_cast<long long>(iterations));
  }
  return Status::kSuccess;
}

Status DecayingDropout::convert_weight_data(const std::string& weight_name, DType dtype, const Shape& shape,
                                            const std::vector<std::uint8_t>& data,
                                            std::vector<std::uint8_t>* bytes, bool* converted) const {
  *converted = false;
  if (weight_name != "iterations" || dtype != DType::kFloat32 || shape.numel() != 1 || shape.rank() > 1 ||
      data.size() != sizeof(float)) {
    return Status::kSuccess;
  }
  float v = 0.0f;
  std::memcpy(&v, data.data(), sizeof(v));
  // 2^63 is exact in float: a whole number below it fits in int64.
  if (!(v >= 0.0f) || v >= 9223372036854775808.0f || std::floor(v) != v) {
    return set_error(Status::kErrorInvalidValue,
                     "%s: iterations: the float32 count %.9g is not a whole number in "
                     "[0, 2^63)",
                     name().c_str(), static_cast<double>(v));
  }
  const auto count = static_cast<std::int64_t>(v);
  bytes->resize(sizeof(count));
  std::memcpy(bytes->data(), &count, sizeof(count));
  *converted = true;
  return Status::kSuccess;
}

Status DecayingDropout::do_build(const Shape& input_shape, cudaStream_t stream) {
  if (Status s = check_options(); !ok(s)) {
    return s;
  }
  Shape unused;
  if (Status s = compute_output_shape(input_shape, &unused); !ok(s)) {
    return s;
  }
  if (Status s = add_weight("iterations", Shape{}, DType::kInt64, Initializer::zeros(), false, stream);
      !ok(s)) {
    return s;
  }
  if (Status s = allocate_state(name(), &state_, stream); !ok(s)) {
    return s;
  }
  if (Status s = init_state(0, 0, stream); !ok(s)) {
    return s;
  }
  // iterations += 1 on the device, after each training-phase call of the trainable layer.
  add_update("iterations", [this](const CallContext& ctx) {
    return run_state_op<dropout::DropoutUpdateArgs>(name(), state_, ctx.stream);
  });
  return Status::kSuccess;
}

Status DecayingDropout::do_call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                                LayerOutput* out) {
  (void)mask;                    // passed through by the base
  state_.release_on(ctx.stream); // the last stream to use the state (see Layer::call)
  const bool identity = ctx.phase != Phase::kTraining;
  Shape noise;
  if (!identity) {
    if (Status s = resolve_noise_shape(name(), options_.noise_shape, x.shape(), &noise); !ok(s)) {
      return s;
    }
  }
  Tensor* y = nullptr; // taken in either phase (see Dropout::do_call)
  if (Status s = output_buffer(ctx, 0, x.shape(), dtype(), &y); !ok(s)) {
    return s;
  }
  if (identity) {
    out->y = x;
    return Status::kSuccess;
  }
  // A frozen layer runs no update op, so its schedule stays at iteration k; Keras still draws new noise
  // on every training call: a frozen call takes a fresh stream (2^63 + r) at the same keep rate, never a
  // schedule stream, and puts stream k back after its forward. So the state is on the schedule after every
  // call, whatever mix of eager calls and graph replays (captured frozen or not) ran: the next trainable
  // call k draws from stream k (the spec's "stream of call k is k", and the mask a layer loaded at iteration
  // k draws too).
  const bool frozen = !trainable();
  if (frozen) {
    // The forward's arguments are checked before the redraw: a call the op rejects launches nothing (and
    // leaves the redraw counter alone).
    if (Status s = dropout::can_implement(forward_args(noise, state_, x, y)); !ok(s)) {
      return set_error(s, "%s: %s", name().c_str(), last_error_message());
    }
    if (Status s = run_state_op<dropout::DropoutRedrawArgs>(name(), state_, ctx.stream); !ok(s)) {
      return s;
    }
  }
  const Status forward = dropout_forward(name(), noise, state_, ctx, x, y);
  if (frozen) { // also after a failed forward: the state goes back on the schedule either way
    const std::string forward_message = ok(forward) ? std::string() : std::string(last_error_message());
    dropout::DropoutRedrawArgs back;
    back.to_schedule = true;
    if (Status s = run_state_op(name(), state_, ctx.stream, back); !ok(s) && ok(forward)) {
      return s;
    }
    if (!ok(forward)) { // the forward's failure is the call's: its message, not the redraw's
      return set_error(forward, "%s", forward_message.c_str());
    }
  }
  if (!ok(forward)) {
    return forward;
  }
  out->y = y->view();
  return Status::kSuccess;
}

Status DecayingDropout::sync_weights(cudaStream_t stream) {
  Weight* w = find_weight("iterations");
  if (!built() || w == nullptr) {
    return Status::kSuccess;
  }
  const auto* src =
      static_cast<const unsigned char*>(state_.data()) + offsetof(dropout::DropoutState, iterations);
  if (const cudaError_t e =
          cudaMemcpyAsync(w->value.data(), src, sizeof(std::int64_t), cudaMemcpyDeviceToDevice, stream);
      e != cudaSuccess) {
    (void)cudaGetLastError();
    return set_error(Status::kErrorCudaRuntime, "%s: sync_weights: %s", name().c_str(),
                     cudaGetErrorString(e));
  }
  return Status::kSuccess;
}

Status DecayingDropout::weights_loaded(cudaStream_t stream) {
  const Weight* w = find_weight("iterations");
  if (!built() || w == nullptr) {
    return Status::kSuccess;
  }
  if (w->value.dtype() != DType::kInt64 || w->value.numel() != 1) {
    return set_error(Status::kErrorInvalidValue, "%s: iterations: expected one int64 value", name().c_str());
  }
  std::int64_t iterations = 0;
  if (Status s = w->value.copy_to_host(&iterations, sizeof(iterations), stream); !ok(s)) {
    return set_error(s, "%s: weights_loaded: %s", name().c_str(), last_error_message());
  }
  if (const cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) {
    (void)cudaGetLastError();
    return set_error(Status::kErrorCudaRuntime, "%s: weights_loaded: %s", name().c_str(),
                     cudaGetErrorString(e));
  }
  if (iterations < 0) {
    return set_error(Status::kErrorInvalidValue, "%s: iterations: %lld is negative", name().c_str(),
                     static_cast<long long>(iterations));
  }
  // The redraw counter is kept (it is not a weight): a frozen layer's calls after a reload do not repeat
  // the redraw streams its earlier frozen calls used.
  dropout::DropoutState current{};
  if (Status s = read_dropout_state(name(), state_, &current, stream); !ok(s)) {
    return s;
  }
  if (Status s = init_state(iterations, current.redraws, stream); !ok(s)) {
    return s;
  }
  // A setup step: later calls may come on another stream, so the new state must be in place.
  if (const cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) {
    (void)cudaGetLastError();
    return set_error(Status::kErrorCudaRuntime, "%s: weights_loaded: %s", name().c_str(),
                     cudaGetErrorString(e));
  }
  return Status::kSuccess;
}

Status DecayingDropout::read_state(dropout::DropoutState* host, cudaStream_t stream) const {
  return read_dropout_state(name(), state_, host, stream);
}

void DecayingDropout::add_config(Json& config) const {
  config["initial_keep_rate"] = options_.initial_keep_rate;
  config["decay_interval"] = options_.decay_interval;
  config["decay_rate"] = options_.decay_rate;
  config["noise_shape"] = noise_shape_to_json(options_.noise_shape);
  config["seed"] = seed_to_json(options_.seed);
}

Status DecayingDropout::from_config(const Json& config, std::unique_ptr<Layer>* out) {
  const char* cls = "DecayingDropout";
  return config_util::make_layer_from_config<DecayingDropout, DecayingDropoutOptions>(
      cls, config, out, [&](DecayingDropoutOptions* o) -> Status {
        if (Status s = config_util::read_double(cls, config, "initial_keep_rate", &o->initial_keep_rate);
            !ok(s)) {
          return s;
        }
        if (Status s = config_util::read_double(cls, config, "decay_rate", &o->decay_rate); !ok(s)) {
          return s;
        }
        if (const auto it = config.find("decay_interval"); it != config.end()) {
          // The tutorial's layer divides by float(decay_interval), so Keras takes 1e4 as well as 10000: a
          // float with a whole value in int64's range reads as that integer.
          const bool whole_float = it->is_number_float() && std::isfinite(it->get<double>()) &&
                                   std::floor(it->get<double>()) == it->get<double>() &&
                                   std::fabs(it->get<double>()) < 9223372036854775808.0;
          if (whole_float) {
            o->decay_interval = static_cast<std::int64_t>(it->get<double>());
          } else if (!config_util::int64_value(*it, &o->decay_interval)) {
            return set_error(Status::kErrorParse, "%s config: \"decay_interval\": is not a whole number",
                             cls);
          }
        }
        if (Status s = read_noise_shape(cls, config, &o->noise_shape); !ok(s)) {
          return s;
        }
        if (Status s = read_seed(cls, config, &o->seed); !ok(s)) {
          return s;
        }
        return Status::kSuccess;
      });
}

} // namespace nn
CULAYERS_NAMESPACE_END
