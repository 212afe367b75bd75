// GroupNormalization (include/culayers/nn/normalization.hpp) on the group_norm op.
#include "culayers/group_norm.hpp"
#include "culayers/nn/normalization.hpp"
#include "layers/config_util.hpp"

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

CULAYERS_NAMESPACE_BEGIN
namespace nn {

using ::culayers::detail::set_error;

namespace {

constexpr const char* kClassName = "GroupNormalization";

const char* activation_name(group_norm::Activation a) {
  switch (a) {
  case group_norm::Activation::kSiLU:
    return "silu";
  case group_norm::Activation::kReLU:
    return "relu";
  default:
    return "linear";
  }
}

} // namespace

GroupNormalization::GroupNormalization(const GroupNormalizationOptions& options, std::string name,
                                       DType dtype)
    : Layer(kClassName, std::move(name)), options_(options) {
  set_dtype(dtype);
}

Status GroupNormalization::do_build(const Shape& input_shape, cudaStream_t stream) {
  const char* n = this->name().c_str();
  const int rank = input_shape.rank();
  if (rank < 2) {
    return set_error(Status::kErrorInvalidShape,
                     "%s: input: rank %d; GroupNormalization needs rank >= 2 (batch, ..., channels)", n,
                     rank);
  }
  if (!config_util::valid_epsilon(options_.epsilon)) {
    return set_error(Status::kErrorInvalidValue, "%s: epsilon: %g, must be positive and finite in float32", n,
                     options_.epsilon);
  }
  const int axis = options_.axis < 0 ? options_.axis + rank : options_.axis;
  if (axis < 0 || axis >= rank) {
    return set_error(Status::kErrorInvalidValue, "%s: axis: %d is out of range for an input of rank %d", n,
                     options_.axis, rank);
  }
  if (axis == rank - 1) {
    layout_ = Layout::kChannelsLast; // for rank 2, axis 1 is also the last axis: the same memory
  } else if (axis == 1) {
    layout_ = Layout::kChannelsFirst;
  } else {
    return set_error(
        Status::kErrorNotSupported,
        "%s: axis: %d; only the last axis (channels last) or axis 1 (channels first) is supported", n,
        options_.axis);
  }
  const std::int64_t channels = input_shape.dim(axis);
  if (channels < 1) {
    return set_error(Status::kErrorInvalidShape, "%s: input: the channel axis has %lld elements", n,
                     static_cast<long long>(channels));
  }
  const std::int64_t groups = options_.groups == -1 ? channels : options_.groups;
  if (groups < 1) {
    return set_error(Status::kErrorInvalidValue, "%s: groups: %lld; must be >= 1, or -1 (one per channel)", n,
                     static_cast<long long>(options_.groups));
  }
  if (groups > channels) {
    return set_error(Status::kErrorInvalidShape, "%s: groups: %lld groups is more than the %lld channels", n,
                     static_cast<long long>(groups), static_cast<long long>(channels));
  }
  if (channels % groups != 0) {
    return set_error(Status::kErrorInvalidShape, "%s: groups: %lld channels are not divisible by %lld groups",
                     n, static_cast<long long>(channels), static_cast<long long>(groups));
  }
  groups_ = groups;
  if (options_.scale) {
    if (Status s =
            add_weight("gamma", Shape{channels}, DType::kFloat32, options_.gamma_initializer, true, stream);
        !ok(s)) {
      return s;
    }
  }
  if (options_.center) {
    if (Status s =
            add_weight("beta", Shape{channels}, DType::kFloat32, options_.beta_initializer, true, stream);
        !ok(s)) {
      return s;
    }
  }
  return Status::kSuccess;
}

Status GroupNormalization::check_input_shape(const Shape& built, const Shape& shape) const {
  const bool last = layout_ == Layout::kChannelsLast;
  if (Status s = config_util::check_channel_axis(name(), built, shape, last ? built.rank() - 1 : 1); !ok(s)) {
    return s;
  }
  const int rank = shape.rank();
  return config_util::check_group_norm_sizes(name(), shape.dim(0), last ? shape.dim(rank - 1) : shape.dim(1),
                                             last ? shape.product(1, rank - 1) : shape.product(2, rank),
                                             groups_);
}

Status GroupNormalization::check_mask(const Shape& shape) const {
  return config_util::check_sequence_mask(name(), options_.axis, shape);
}

Status GroupNormalization::do_call(const CallContext& ctx, const ConstTensorView& x,
                                   const ConstTensorView& mask, LayerOutput* out) {
  const char* n = this->name().c_str();
  const Shape& shape = x.shape();
  const int rank = shape.rank();
  const bool last = layout_ == Layout::kChannelsLast;
  // The output slot's data pointer (stable until this slot is asked for with another shape or dtype).
  void* y = nullptr;
  {
    Tensor* t = nullptr;
    if (Status s = output_buffer(ctx, 0, shape, x.dtype(), &t); !ok(s)) {
      return s;
    }
    y = t->data();
  }
  group_norm::GroupNormArgs a;
  a.dtype = x.dtype();
  a.layout = layout_;
  a.x = x.data();
  a.batch = shape.dim(0);
  a.channels = last ? shape.dim(rank - 1) : shape.dim(1);
  a.spatial = last ? shape.product(1, rank - 1) : shape.product(2, rank);
  a.groups = groups_;
  a.epsilon = static_cast<float>(options_.epsilon);
  const Weight* gamma = find_weight("gamma");
  const Weight* beta = find_weight("beta");
  a.gamma = gamma != nullptr ? static_cast<const float*>(gamma->value.data()) : nullptr;
  a.beta = beta != nullptr ? static_cast<const float*>(beta->value.data()) : nullptr;
  a.activation = options_.activation;
  a.mask = mask.data() != nullptr ? static_cast<const std::uint8_t*>(mask.data()) : nullptr;
  a.y = y;
  if (Status s = group_norm::can_implement(a); !ok(s)) {
    return set_error(s, "%s: %s", n, last_error_message());
  }
  // Its size depends on the device and the pointers' alignment: the slot only grows (workspace_buffer).
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  if (Status s = workspace_buffer(ctx, 1, group_norm::workspace_size(a), &workspace, &workspace_bytes);
      !ok(s)) {
    return s;
  }
  if (Status s = group_norm::run(a, workspace, workspace_bytes, ctx.stream); !ok(s)) {
    return set_error(s, "%s: %s", n, last_error_message());
  }
  out->y = ConstTensorView::contiguous(y, x.dtype(), shape);
  return Status::kSuccess;
}

void GroupNormalization::add_config(Json& config) const {
  config["groups"] = options_.groups;
  config["axis"] = options_.axis;
  config["epsilon"] = options_.epsilon;
  config["center"] = options_.center;
  config["scale"] = options_.scale;
  config["beta_initializer"] = options_.beta_initializer.to_json();
  config["gamma_initializer"] = options_.gamma_initializer.to_json();
  // Only a fused activation is written: Keras's GroupNormalization has no such key, and its from_config
  // rejects unknown keys, so a config without one stays readable there.
  if (options_.activation != group_norm::Activation::kNone) {
    config["activation"] = activation_name(options_.activation);
  }
}

Status GroupNormalization::from_config(const Json& config, std::unique_ptr<Layer>* out) {
  return config_util::make_layer_from_config<GroupNormalization, GroupNormalizationOptions>(
      kClassName, config, out, [&](GroupNormalizationOptions* o) -> Status {
        if (const auto it = config.find("groups"); it != config.end()) {
          std::int64_t groups = 0;
          if (!config_util::int64_value(*it, &groups) || (groups < 1 && groups != -1)) {
            return config_util::bad_key(kClassName, "groups", "is not an integer >= 1 or -1");
          }
          o->groups = groups;
        }
        if (const auto it = config.find("axis"); it != config.end()) {
          std::int64_t axis = 0;
          if (!config_util::int64_value(*it, &axis) || axis < -kMaxRank || axis >= kMaxRank) {
            return config_util::bad_key(kClassName, "axis", "is not an integer axis");
          }
          o->axis = static_cast<int>(axis);
        }
        if (Status s = config_util::read_epsilon_center_scale(kClassName, config, o); !ok(s)) {
          return s;
        }
        if (Status s =
                config_util::read_initializer(kClassName, config, "beta_initializer", &o->beta_initializer);
            !ok(s)) {
          return s;
        }
        if (Status s =
                config_util::read_initializer(kClassName, config, "gamma_initializer", &o->gamma_initializer);
            !ok(s)) {
          return s;
        }
        if (const auto it = config.find("activation"); it != config.end() && !it->is_null()) {
          const std::string act = it->is_string() ? it->get<std::string>() : std::string();
          if (act == "linear") {
            o->activation = group_norm::Activation::kNone;
          } else if (act == "silu" || act == "swish") {
            o->activation = group_norm::Activation::kSiLU;
          } else if (act == "relu") {
            o->activation = group_norm::Activation::kReLU;
          } else {
            return config_util::bad_key(kClassName, "activation",
                                        "is not \"linear\", \"silu\" (\"swish\") or \"relu\"");
          }
        }
        return Status::kSuccess;
      });
}

} // namespace nn
CULAYERS_NAMESPACE_END
