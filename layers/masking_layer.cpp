// Keras Masking on the Masking op of the masked-reduction family (include/culayers/nn/core_layers.hpp).
#include <cfloat>
#include <cmath>
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

constexpr const char* kClassName = "Masking";

} // namespace

Masking::Masking(MaskingOptions options, std::string name, DType dtype)
    : Layer(kClassName, std::move(name)), options_(options) {
  set_dtype(dtype);
}

Status Masking::check_options() const {
  const char* n = name().c_str();
  if (!is_floating_point(dtype())) {
    return set_error(Status::kErrorInvalidDType, "%s: dtype: %s is not float32, float16 or bfloat16", n,
                     dtype_name(dtype()));
  }
  const double v = options_.mask_value;
  if (std::isfinite(v) && std::fabs(v) > static_cast<double>(FLT_MAX)) {
    return set_error(Status::kErrorInvalidValue, "%s: mask_value: %g is outside float32's range", n, v);
  }
  return Status::kSuccess;
}

Status Masking::compute_output_shape(const Shape& input_shape, Shape* out) const {
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: compute_output_shape: out: is null", name().c_str());
  }
  if (input_shape.rank() < 2) {
    return set_error(Status::kErrorInvalidShape,
                     "%s: input_shape: rank %d; Masking needs (batch, steps, features...) or (batch, steps)",
                     name().c_str(), input_shape.rank());
  }
  *out = input_shape;
  return Status::kSuccess;
}

Status Masking::check_input_shape(const Shape& built, const Shape& shape) const {
  if (Status s = config_util::check_fixed_axes(name(), built, shape, built.rank()); !ok(s)) {
    return s;
  }
  return config_util::check_masked_sizes(name(), shape, false); // the Masking op's limits
}

Status Masking::do_build(const Shape& input_shape, cudaStream_t stream) {
  (void)stream;
  if (Status s = check_options(); !ok(s)) {
    return s;
  }
  Shape unused;
  return compute_output_shape(input_shape, &unused);
}

Status Masking::do_call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                        LayerOutput* out) {
  (void)mask; // Keras's Masking ignores the incoming mask and computes its own
  const Shape& shape = x.shape();
  const std::int64_t batch = shape.dim(0);
  const std::int64_t steps = shape.dim(1);
  // The mask slot (1), then the output slot (0); asking for one slot never moves another's tensor.
  Tensor* m = nullptr;
  if (Status s = output_buffer(ctx, 1, Shape{batch, steps}, DType::kUInt8, &m); !ok(s)) {
    return s;
  }
  Tensor* y = nullptr;
  if (Status s = output_buffer(ctx, 0, shape, dtype(), &y); !ok(s)) {
    return s;
  }
  masked_reduce::MaskingArgs args;
  args.dtype = dtype();
  args.x = x.data();
  args.outer = batch;
  args.reduce = steps;
  args.inner = shape.product(2, shape.rank()); // 1 for rank 2: every value is a step
  args.mask_value = static_cast<float>(options_.mask_value);
  args.mask = static_cast<std::uint8_t*>(m->data());
  args.y = y->data();
  if (Status s = masked_reduce::run(args, nullptr, 0, ctx.stream); !ok(s)) {
    return set_error(s, "%s: %s", name().c_str(), last_error_message());
  }
  out->y = y->view();
  out->mask = m->view();
  return Status::kSuccess;
}

void Masking::add_config(Json& config) const {
  config["mask_value"] = config_util::json_double(options_.mask_value); // NaN / Inf as strings
}

Status Masking::from_config(const Json& config, std::unique_ptr<Layer>* out) {
  return config_util::make_layer_from_config<Masking, MaskingOptions>(
      kClassName, config, out, [&](MaskingOptions* o) -> Status {
        if (const auto it = config.find("mask_value"); it != config.end()) {
          if (!config_util::double_value(*it, &o->mask_value)) {
            return set_error(
                Status::kErrorParse,
                "%s config: \"mask_value\": is not a number (or \"NaN\", \"Infinity\", \"-Infinity\")",
                kClassName);
          }
        }
        return Status::kSuccess;
      });
}

} // namespace nn
CULAYERS_NAMESPACE_END
