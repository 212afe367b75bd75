// BatchNormalization (include/culayers/nn/normalization.hpp) on masked_reduce's moments and the
// batch_norm ops.
#include "culayers/batch_norm.hpp"
#include "culayers/masked_reduce.hpp"
#include "culayers/nn/normalization.hpp"
#include "layers/config_util.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

CULAYERS_NAMESPACE_BEGIN
namespace nn {

using ::culayers::detail::set_error;

namespace {

constexpr const char* kClassName = "BatchNormalization";

// Output slots: the output, the batch statistics (written by every training-phase call, read by the update
// op that follows it) and the moments workspace.
constexpr int kSlotY = 0;
constexpr int kSlotMean = 1;
constexpr int kSlotVariance = 2;
constexpr int kSlotCount = 3;
constexpr int kSlotWorkspace = 4;
// Channels first (inner > 1): the per-(row, channel) moments merged into kSlotMean / kSlotVariance.
constexpr int kSlotPlaneMean = 5;
constexpr int kSlotPlaneVariance = 6;

bool valid_momentum(double m) {
  return m >= 0.0 && m <= 1.0;
}

} // namespace

BatchNormalization::BatchNormalization(const BatchNormalizationOptions& options, std::string name,
                                       DType dtype)
    : Layer(kClassName, std::move(name)), options_(options) {
  set_dtype(dtype);
}

Status BatchNormalization::do_build(const Shape& input_shape, cudaStream_t stream) {
  const char* n = this->name().c_str();
  const int rank = input_shape.rank();
  if (rank < 2) {
    return set_error(Status::kErrorInvalidShape,
                     "%s: input: rank %d; BatchNormalization needs rank >= 2 (batch, ..., channels)", n,
                     rank);
  }
  if (!config_util::valid_epsilon(options_.epsilon)) {
    return set_error(Status::kErrorInvalidValue, "%s: epsilon: %g, must be positive and finite in float32", n,
                     options_.epsilon);
  }
  if (!valid_momentum(options_.momentum)) {
    return set_error(Status::kErrorInvalidValue, "%s: momentum: %g is not in [0, 1]", n, options_.momentum);
  }
  // A moving variance must start >= 0 (add_weight checks the values drawn). An initializer that can draw a
  // negative value is refused by its kind and parameters, before any draw: otherwise an unseeded one made
  // the same config build or fail depending on the draw.
  const Initializer& vi = options_.moving_variance_initializer;
  const bool may_be_negative =
      (vi.kind == Initializer::Kind::kRandomUniform && vi.minval < 0.0) ||
      (vi.kind == Initializer::Kind::kRandomNormal && (vi.mean < 0.0 || vi.stddev > 0.0)) ||
      vi.kind == Initializer::Kind::kGlorotUniform;
  if (may_be_negative) {
    return set_error(
        Status::kErrorInvalidValue,
        "%s: moving_variance_initializer: %s may draw negative variances (use Ones, a Constant >= 0 "
        "or RandomUniform with minval >= 0)",
        n, vi.to_json().dump().c_str());
  }
  const int axis = options_.axis < 0 ? options_.axis + rank : options_.axis;
  if (axis < 0 || axis >= rank) {
    return set_error(Status::kErrorInvalidValue, "%s: axis: %d is out of range for an input of rank %d", n,
                     options_.axis, rank);
  }
  if (axis == 0) {
    return set_error(Status::kErrorInvalidValue,
                     "%s: axis: %d is the batch axis; the channel axis is one of 1 .. %d (or -1)", n,
                     options_.axis, rank - 1);
  }
  axis_ = axis;
  const std::int64_t channels = input_shape.dim(axis);
  if (channels < 1) {
    return set_error(Status::kErrorInvalidShape, "%s: input: the channel axis has %lld elements", n,
                     static_cast<long long>(channels));
  }
  channels_ = channels;
  const Shape shape{channels};
  if (options_.scale) {
    if (Status s = add_weight("gamma", shape, DType::kFloat32, options_.gamma_initializer, true, stream);
        !ok(s)) {
      return s;
    }
  }
  if (options_.center) {
    if (Status s = add_weight("beta", shape, DType::kFloat32, options_.beta_initializer, true, stream);
        !ok(s)) {
      return s;
    }
  }
  if (Status s =
          add_weight("moving_mean", shape, DType::kFloat32, options_.moving_mean_initializer, false, stream);
      !ok(s)) {
    return s;
  }
  if (Status s = add_weight("moving_variance", shape, DType::kFloat32, options_.moving_variance_initializer,
                            false, stream);
      !ok(s)) {
    return s;
  }
  add_update("moving_statistics", [this](const CallContext& ctx) { return update_moving_statistics(ctx); });
  return Status::kSuccess;
}

Status BatchNormalization::check_input_shape(const Shape& built, const Shape& shape) const {
  return config_util::check_channel_axis(name(), built, shape, axis_);
}

Status BatchNormalization::check_mask(const Shape& shape) const {
  return config_util::check_sequence_mask(name(), options_.axis, shape);
}

Status BatchNormalization::check_phase(const Shape& shape, Phase phase) const {
  if (phase != Phase::kTraining || !trainable()) {
    return Status::kSuccess; // the moving statistics: no reduction
  }
  if (!shape.is_valid()) {
    return Status::kSuccess; // the call's own shape checks report it
  }
  // As do_call views x for the moments: channels last [1, rows, C], otherwise [rows x C, inner, 1]
  // (rows x C x inner is x's element count, so rows x C cannot overflow here).
  const std::int64_t rows = shape.product(0, axis_);
  const std::int64_t inner = shape.product(axis_ + 1, shape.rank());
  return inner != 1 ? config_util::check_masked_sizes(name(), Shape{rows * channels_, inner, 1})
                    : config_util::check_masked_sizes(name(), Shape{1, rows, channels_});
}

Status BatchNormalization::do_call(const CallContext& ctx, const ConstTensorView& x,
                                   const ConstTensorView& mask, LayerOutput* out) {
  const char* n = this->name().c_str();
  const Shape& shape = x.shape();
  const int rank = shape.rank();
  // x as [rows, C, inner]: inner = 1 is channels last. inner = 0 (an empty spatial axis) also takes the
  // planes path: empty planes, merged into mean 0, variance 0, count 0.
  const std::int64_t rows = shape.product(0, axis_);
  const std::int64_t inner = shape.product(axis_ + 1, rank);
  const bool planes = inner != 1;
  const Shape stats_shape{channels_};
  const Shape plane_shape{rows * channels_};
  // Every buffer of both phases, so a warmed-up call of either phase allocates nothing (their data pointers
  // are collected first: each slot's memory changes only when that slot's shape or dtype changes).
  void* buffers[7] = {};
  const struct {
    int slot;
    Shape shape;
    DType dtype;
    bool used;
  } wanted[] = {{kSlotY, shape, x.dtype(), true},
                {kSlotMean, stats_shape, DType::kFloat32, true},
                {kSlotVariance, stats_shape, DType::kFloat32, true},
                {kSlotCount, Shape{1}, DType::kInt32, true},
                {kSlotPlaneMean, plane_shape, DType::kFloat32, planes},
                {kSlotPlaneVariance, plane_shape, DType::kFloat32, planes}};
  for (const auto& w : wanted) {
    if (!w.used) {
      continue;
    }
    Tensor* t = nullptr;
    if (Status s = output_buffer(ctx, w.slot, w.shape, w.dtype, &t); !ok(s)) {
      return s;
    }
    buffers[w.slot] = t->data();
  }
  void* const y = buffers[kSlotY];

  // Statistics over every axis but the channel axis. Channels last: x as [1, rows, C]; the [B, T] mask of
  // a (B, T, C) input is [1, B * T] in the same row order. Otherwise one moment per (row, channel) plane:
  // x as [rows * C, inner, 1], merged per channel below.
  masked_reduce::MaskedReduceArgs m;
  m.op = masked_reduce::ReduceOp::kMoments;
  m.dtype = x.dtype();
  m.x = x.data();
  if (planes) {
    m.outer = rows * channels_;
    m.reduce = inner;
    m.inner = 1;
    m.mean = static_cast<float*>(buffers[kSlotPlaneMean]);
    m.variance = static_cast<float*>(buffers[kSlotPlaneVariance]);
  } else {
    m.outer = 1;
    m.reduce = rows;
    m.inner = channels_;
    if (mask.data() != nullptr) {
      m.validity = masked_reduce::Validity::kMask;
      m.mask = static_cast<const std::uint8_t*>(mask.data());
    }
    m.mean = static_cast<float*>(buffers[kSlotMean]);
    m.variance = static_cast<float*>(buffers[kSlotVariance]);
    m.counts = static_cast<std::int32_t*>(buffers[kSlotCount]);
  }
  // Keras: a frozen layer normalizes with its moving statistics even in the training phase.
  const bool batch_statistics = ctx.phase == Phase::kTraining && trainable();
  // The moments are checked in either phase (their workspace is sized by a first inference call too), but
  // a call that does not compute them succeeds whatever they say, leaving the caller's message as it was.
  const std::string message_before = batch_statistics ? std::string() : std::string(last_error_message());
  const Status moments_ok = masked_reduce::can_implement(m);
  if (batch_statistics && !ok(moments_ok)) { // (e.g. more than 2^31 - 1 rows); inference does not need them
    return set_error(moments_ok, "%s: %s", n, last_error_message());
  }
  if (!ok(moments_ok)) {
    (void)set_error(moments_ok, "%s", message_before.c_str());
  }
  // Its size depends on the device and x's alignment: the slot only grows (workspace_buffer).
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  if (Status s = workspace_buffer(ctx, kSlotWorkspace, ok(moments_ok) ? masked_reduce::workspace_size(m) : 0,
                                  &workspace, &workspace_bytes);
      !ok(s)) {
    return s;
  }

  const Weight* gamma = find_weight("gamma");
  const Weight* beta = find_weight("beta");
  batch_norm::BatchNormApplyArgs a;
  a.dtype = x.dtype();
  a.x = x.data();
  a.rows = rows;
  a.channels = channels_;
  a.inner = inner;
  a.gamma = gamma != nullptr ? static_cast<const float*>(gamma->value.data()) : nullptr;
  a.beta = beta != nullptr ? static_cast<const float*>(beta->value.data()) : nullptr;
  a.epsilon = static_cast<float>(options_.epsilon);
  a.y = y;
  // Channels first: the per-plane moments merged per channel (count rows * inner for the update op).
  batch_norm::BatchNormMergeMomentsArgs g;
  g.rows = rows;
  g.channels = channels_;
  g.count_per_row = inner;
  g.mean = m.mean;
  g.variance = m.variance;
  g.mean_out = static_cast<float*>(buffers[kSlotMean]);
  g.variance_out = static_cast<float*>(buffers[kSlotVariance]);
  g.count_out = static_cast<std::int32_t*>(buffers[kSlotCount]);
  if (batch_statistics) {
    a.mean = static_cast<const float*>(buffers[kSlotMean]);
    a.variance = static_cast<const float*>(buffers[kSlotVariance]);
  } else {
    a.mean = static_cast<const float*>(find_weight("moving_mean")->value.data());
    a.variance = static_cast<const float*>(find_weight("moving_variance")->value.data());
  }
  // Every op's arguments are checked before the first one is enqueued (they cannot fail for a checked
  // input; a failure here would be a bug, reported without side effects).
  for (const Status s : {batch_norm::can_implement(a),
                         batch_statistics && planes ? batch_norm::can_implement(g) : Status::kSuccess}) {
    if (!ok(s)) {
      return set_error(s, "%s: %s", n, last_error_message());
    }
  }
  if (batch_statistics) {
    // inner = 0: no element; the merge alone writes mean 0, variance 0, count 0 without reading.
    if (inner != 0) {
      if (Status s = masked_reduce::run(m, workspace, workspace_bytes, ctx.stream); !ok(s)) {
        return set_error(s, "%s: %s", n, last_error_message());
      }
    }
    if (planes) {
      if (Status s = batch_norm::run(g, nullptr, 0, ctx.stream); !ok(s)) {
        return set_error(s, "%s: %s", n, last_error_message());
      }
    }
    batch_mean_ = static_cast<float*>(buffers[kSlotMean]);
    batch_variance_ = static_cast<float*>(buffers[kSlotVariance]);
    batch_count_ = static_cast<std::int32_t*>(buffers[kSlotCount]);
  }
  if (Status s = batch_norm::run(a, nullptr, 0, ctx.stream); !ok(s)) {
    return set_error(s, "%s: %s", n, last_error_message());
  }
  out->y = ConstTensorView::contiguous(y, x.dtype(), shape);
  return Status::kSuccess;
}

Status BatchNormalization::update_moving_statistics(const CallContext& ctx) {
  const char* n = this->name().c_str();
  if (batch_mean_ == nullptr) {
    return set_error(Status::kErrorInternal, "%s: update: no training-phase statistics to update from", n);
  }
  batch_norm::BatchNormMovingUpdateArgs u;
  u.channels = channels_;
  u.momentum = static_cast<float>(options_.momentum);
  u.mean = batch_mean_;
  u.variance = batch_variance_;
  u.count = batch_count_;
  u.moving_mean = static_cast<float*>(find_weight("moving_mean")->value.data());
  u.moving_variance = static_cast<float*>(find_weight("moving_variance")->value.data());
  if (Status s = batch_norm::run(u, nullptr, 0, ctx.stream); !ok(s)) {
    return set_error(s, "%s: %s", n, last_error_message());
  }
  return Status::kSuccess;
}

Status BatchNormalization::check_weight_data(const std::string& weight_name, const void* data,
                                             std::size_t bytes) const {
  const bool mean = weight_name == "moving_mean";
  if ((!mean && weight_name != "moving_variance") || data == nullptr) {
    return Status::kSuccess;
  }
  const std::size_t n = bytes / sizeof(float);
  for (std::size_t c = 0; c < n; ++c) {
    float v = 0.0f;
    std::memcpy(&v, static_cast<const unsigned char*>(data) + c * sizeof(float), sizeof(v));
    if (!std::isfinite(v) || (!mean && v < 0.0f)) {
      return set_error(Status::kErrorInvalidValue, "%s: %s: channel %zu holds %g (%s)", name().c_str(),
                       weight_name.c_str(), c, static_cast<double>(v),
                       mean ? "not finite" : "not a finite variance >= 0");
    }
  }
  return Status::kSuccess;
}

void BatchNormalization::add_config(Json& config) const {
  config["axis"] = options_.axis;
  config["momentum"] = options_.momentum;
  config["epsilon"] = options_.epsilon;
  config["center"] = options_.center;
  config["scale"] = options_.scale;
  config["beta_initializer"] = options_.beta_initializer.to_json();
  config["gamma_initializer"] = options_.gamma_initializer.to_json();
  config["moving_mean_initializer"] = options_.moving_mean_initializer.to_json();
  config["moving_variance_initializer"] = options_.moving_variance_initializer.to_json();
}

Status BatchNormalization::from_config(const Json& config, std::unique_ptr<Layer>* out) {
  return config_util::make_layer_from_config<BatchNormalization, BatchNormalizationOptions>(
      kClassName, config, out, [&](BatchNormalizationOptions* o) -> Status {
        // Keras options that change what the layer computes, which this layer does not implement: accepted
        // only at their defaults (off / null), so a config that uses them fails instead of running plain
        // batch norm.
        for (const auto& [key, off] : {std::pair<const char*, Json>{"renorm", false},
                                       {"virtual_batch_size", nullptr},
                                       {"adjustment", nullptr}}) {
          if (const auto it = config.find(key); it != config.end() && *it != off) {
            return set_error(Status::kErrorNotSupported, "%s config: \"%s\": %s is not supported (only %s)",
                             kClassName, key, it->dump().c_str(), off.dump().c_str());
          }
        }
        if (const auto it = config.find("axis"); it != config.end()) {
          // tf.keras 2 writes the axis as a list after build: accept one element.
          const Json& v = it->is_array() && it->size() == 1 ? (*it)[0] : *it;
          std::int64_t axis = 0;
          if (!config_util::int64_value(v, &axis) || axis < -kMaxRank || axis >= kMaxRank) {
            return config_util::bad_key(kClassName, "axis", "is not an integer axis (or a list of one)");
          }
          o->axis = static_cast<int>(axis);
        }
        if (const auto it = config.find("momentum"); it != config.end()) {
          if (!it->is_number() || !valid_momentum(it->get<double>())) {
            return config_util::bad_key(kClassName, "momentum", "is not a number in [0, 1]");
          }
          o->momentum = it->get<double>();
        }
        if (Status s = config_util::read_epsilon_center_scale(kClassName, config, o); !ok(s)) {
          return s;
        }
        for (const auto& [key, init] :
             {std::pair<const char*, Initializer*>{"beta_initializer", &o->beta_initializer},
              {"gamma_initializer", &o->gamma_initializer},
              {"moving_mean_initializer", &o->moving_mean_initializer},
              {"moving_variance_initializer", &o->moving_variance_initializer}}) {
          if (Status s = config_util::read_initializer(kClassName, config, key, init); !ok(s)) {
            return s;
          }
        }
        return Status::kSuccess;
      });
}

} // namespace nn
CULAYERS_NAMESPACE_END
