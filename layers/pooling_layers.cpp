// MaskedGlobalPooling1D (the masked-reduction forward op) and MaskedFlatten (a view of x plus the
// mask-expansion op) (include/culayers/nn/core_layers.hpp).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "culayers/masked_reduce.hpp"
#include "culayers/nn/core_layers.hpp"
#include "layers/config_util.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {

using ::culayers::detail::set_error;

namespace {

constexpr PoolingMode kModes[] = {PoolingMode::kMean, PoolingMode::kSum, PoolingMode::kMax,
                                  PoolingMode::kMin};

masked_reduce::ReduceOp reduce_op(PoolingMode mode) {
  switch (mode) {
  case PoolingMode::kSum:
    return masked_reduce::ReduceOp::kSum;
  case PoolingMode::kMax:
    return masked_reduce::ReduceOp::kMax;
  case PoolingMode::kMin:
    return masked_reduce::ReduceOp::kMin;
  case PoolingMode::kMean:
    break;
  }
  return masked_reduce::ReduceOp::kMean;
}

} // namespace

const char* pooling_mode_name(PoolingMode mode) noexcept {
  switch (mode) {
  case PoolingMode::kMean:
    return "mean";
  case PoolingMode::kSum:
    return "sum";
  case PoolingMode::kMax:
    return "max";
  case PoolingMode::kMin:
    return "min";
  }
  return "unknown mode";
}

// ---- MaskedGlobalPooling1D --------------------------------------------------------------------------------

MaskedGlobalPooling1D::MaskedGlobalPooling1D(MaskedGlobalPooling1DOptions options, std::string name,
                                             DType dtype)
    : Layer("MaskedGlobalPooling1D", std::move(name)), options_(options) {
  set_dtype(dtype);
}

Status MaskedGlobalPooling1D::check_options() const {
  const char* n = name().c_str();
  if (Status s = config_util::check_float_dtype(name(), dtype()); !ok(s)) {
    return s;
  }
  bool known = false;
  for (PoolingMode m : kModes) {
    known = known || m == options_.mode;
  }
  if (!known) {
    return set_error(Status::kErrorInvalidValue, "%s: mode: %d is not mean, sum, max or min", n,
                     static_cast<int>(options_.mode));
  }
  if (options_.axis != 1) {
    return set_error(Status::kErrorNotSupported,
                     "%s: axis: %d; only axis 1 (the steps of (batch, steps, features...)) is supported", n,
                     options_.axis);
  }
  return Status::kSuccess;
}

Status MaskedGlobalPooling1D::compute_output_shape(const Shape& input_shape, Shape* out) const {
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: compute_output_shape: out: is null", name().c_str());
  }
  const int rank = input_shape.rank();
  if (rank < 2) {
    return set_error(Status::kErrorInvalidShape,
                     "%s: input_shape: rank %d; pooling needs (batch, steps, features...) or (batch, steps)",
                     name().c_str(), rank);
  }
  std::int64_t dims[kMaxRank] = {};
  dims[0] = input_shape.dim(0);
  for (int i = 2; i < rank; ++i) {
    dims[i - 1] = input_shape.dim(i);
  }
  return Shape::make(dims, rank - 1, out);
}

Status MaskedGlobalPooling1D::check_input_shape(const Shape& built, const Shape& shape) const {
  if (Status s = config_util::check_fixed_axes(name(), built, shape, 2); !ok(s)) {
    return s;
  }
  return config_util::check_masked_sizes(name(), shape);
}

Status MaskedGlobalPooling1D::do_build(const Shape& input_shape, cudaStream_t stream) {
  (void)stream;
  if (Status s = check_options(); !ok(s)) {
    return s;
  }
  Shape unused;
  return compute_output_shape(input_shape, &unused);
}

Status MaskedGlobalPooling1D::do_call(const CallContext& ctx, const ConstTensorView& x,
                                      const ConstTensorView& mask, LayerOutput* out) {
  const Shape& shape = x.shape();
  Shape out_shape;
  if (Status s = compute_output_shape(shape, &out_shape); !ok(s)) {
    return s;
  }
  Tensor* y = nullptr;
  if (Status s = output_buffer(ctx, 0, out_shape, dtype(), &y); !ok(s)) {
    return s;
  }
  masked_reduce::MaskedReduceArgs args;
  args.op = reduce_op(options_.mode);
  args.dtype = dtype();
  args.x = x.data();
  args.outer = shape.dim(0);
  args.reduce = shape.dim(1);
  args.inner = shape.product(2, shape.rank());
  if (mask.data() != nullptr) {
    args.validity = masked_reduce::Validity::kMask;
    args.mask = mask.data_as<std::uint8_t>();
  }
  args.out = y->data();
  args.fill_value = 0.0f; // rows without a valid step
  // Its size follows x's alignment (the vector width): the slot only grows (workspace_buffer).
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  if (Status s = workspace_buffer(ctx, 1, masked_reduce::workspace_size(args), &workspace, &workspace_bytes);
      !ok(s)) {
    return s;
  }
  if (Status s = masked_reduce::run(args, workspace, workspace_bytes, ctx.stream); !ok(s)) {
    return set_error(s, "%s: %s", name().c_str(), last_error_message());
  }
  out->y = y->view();
  out->mask = ConstTensorView{}; // consumed
  return Status::kSuccess;
}

void MaskedGlobalPooling1D::add_config(Json& config) const {
  config["mode"] = pooling_mode_name(options_.mode);
  config["axis"] = options_.axis;
}

Status MaskedGlobalPooling1D::from_config(const Json& config, std::unique_ptr<Layer>* out) {
  const char* cls = "MaskedGlobalPooling1D";
  return config_util::make_layer_from_config<MaskedGlobalPooling1D, MaskedGlobalPooling1DOptions>(
      cls, config, out, [&](MaskedGlobalPooling1DOptions* o) -> Status {
        if (const auto it = config.find("mode"); it != config.end()) {
          bool found = false;
          if (it->is_string()) {
            const std::string mode = it->get<std::string>();
            for (PoolingMode m : kModes) {
              if (mode == pooling_mode_name(m)) {
                o->mode = m;
                found = true;
              }
            }
          }
          if (!found) {
            return set_error(Status::kErrorParse,
                             "%s config: \"mode\": %s is not \"mean\", \"sum\", \"max\" or \"min\"", cls,
                             it->dump().c_str());
          }
        }
        if (const auto it = config.find("axis"); it != config.end()) {
          std::int64_t axis = 0;
          if (!config_util::int64_value(*it, &axis) || axis < INT32_MIN || axis > INT32_MAX) {
            return set_error(Status::kErrorParse, "%s config: \"axis\": is not an integer", cls);
          }
          o->axis = static_cast<int>(axis);
        }
        return Status::kSuccess;
      });
}

Status MaskedGlobalPooling1D::from_keras_average_config(const Json& config, std::unique_ptr<Layer>* out) {
  const char* cls = "GlobalAveragePooling1D";
  // The mean over axis 1: the options' defaults.
  return config_util::make_layer_from_config<MaskedGlobalPooling1D, MaskedGlobalPooling1DOptions>(
      cls, config, out, [&](MaskedGlobalPooling1DOptions*) -> Status {
        if (const auto it = config.find("data_format"); it != config.end() && !it->is_null()) {
          if (!it->is_string() || (*it != "channels_last" && *it != "channels_first")) {
            return config_util::bad_key(cls, "data_format", "is not \"channels_last\" or \"channels_first\"");
          }
          if (*it == "channels_first") {
            return set_error(
                Status::kErrorNotSupported,
                "%s config: \"data_format\": channels_first is not supported (the steps must be axis 1, "
                "the axis of the [batch, steps] mask)",
                cls);
          }
        }
        bool keepdims = false;
        if (Status s = config_util::read_bool(cls, config, "keepdims", &keepdims); !ok(s)) {
          return s;
        }
        if (keepdims) {
          return set_error(Status::kErrorNotSupported, "%s config: \"keepdims\": true is not supported", cls);
        }
        return Status::kSuccess;
      });
}

// ---- MaskedFlatten ----------------------------------------------------------------------------------------

MaskedFlatten::MaskedFlatten(MaskedFlattenOptions options, std::string name, DType dtype)
    : Layer("MaskedFlatten", std::move(name)), options_(options) {
  set_dtype(dtype);
}

Status MaskedFlatten::check_options() const {
  return config_util::check_float_dtype(name(), dtype());
}

Status MaskedFlatten::compute_output_shape(const Shape& input_shape, Shape* out) const {
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: compute_output_shape: out: is null", name().c_str());
  }
  if (input_shape.rank() < 1) {
    return set_error(Status::kErrorInvalidShape, "%s: input_shape: a scalar has no batch axis to keep",
                     name().c_str());
  }
  const std::int64_t features = input_shape.product(1, input_shape.rank());
  if (features < 0) {
    return set_error(Status::kErrorInvalidShape, "%s: input_shape: invalid dimensions", name().c_str());
  }
  *out = Shape{input_shape.dim(0), features};
  return Status::kSuccess;
}

Status MaskedFlatten::check_input_shape(const Shape& built, const Shape& shape) const {
  return config_util::check_fixed_axes(name(), built, shape, built.rank());
}

Status MaskedFlatten::do_build(const Shape& input_shape, cudaStream_t stream) {
  (void)stream;
  if (Status s = check_options(); !ok(s)) {
    return s;
  }
  Shape unused;
  return compute_output_shape(input_shape, &unused);
}

Status MaskedFlatten::do_call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                              LayerOutput* out) {
  const Shape& shape = x.shape();
  Shape out_shape;
  if (Status s = compute_output_shape(shape, &out_shape); !ok(s)) {
    return s;
  }
  LayerOutput result;
  result.y = ConstTensorView::contiguous(x.data(), dtype(), out_shape); // x is contiguous: a view
  const std::int64_t features = shape.rank() >= 2 ? shape.product(2, shape.rank()) : 1;
  // The expanded mask's buffer is taken on every call of a shape with trailing features, mask or not: a
  // call for a shape already seen allocates nothing, so a warm-up without a mask keeps a later call with
  // one capturable (as every layer takes both phases' buffers on a first call).
  Tensor* m = nullptr;
  if (features != 1) {
    if (Status s = output_buffer(ctx, 0, out_shape, DType::kUInt8, &m); !ok(s)) {
      return s;
    }
  }
  if (mask.data() != nullptr) {
    // The base checked mask = [batch, steps] with steps = x's axis 1 (so rank >= 2).
    if (features == 1) {
      result.mask = mask; // already one flag per output element
    } else {
      masked_reduce::MaskExpandArgs args;
      args.mask = mask.data_as<std::uint8_t>();
      args.out = static_cast<std::uint8_t*>(m->data());
      args.outer = shape.dim(0);
      args.steps = shape.dim(1);
      args.features = features;
      if (Status s = masked_reduce::run(args, nullptr, 0, ctx.stream); !ok(s)) {
        return set_error(s, "%s: %s", name().c_str(), last_error_message());
      }
      result.mask = m->view();
    }
  }
  *out = result;
  return Status::kSuccess;
}

Status MaskedFlatten::from_config(const Json& config, std::unique_ptr<Layer>* out) {
  // No keys of its own.
  return config_util::make_layer_from_config<MaskedFlatten, MaskedFlattenOptions>(
      "MaskedFlatten", config, out, [](MaskedFlattenOptions*) { return Status::kSuccess; });
}

} // namespace nn
CULAYERS_NAMESPACE_END
