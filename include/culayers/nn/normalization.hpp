// Normalization layers (Keras semantics, see docs/semantics.md, "Group normalization" and "Layers"):
// GroupNormalization on the group_norm op, BatchNormalization on masked_reduce's moments and the
// batch_norm ops.
//
// Both layers own float32 [C] weights whatever the layer's dtype (Keras's mixed-precision convention),
// support masking (the mask passes through unchanged) and, once warmed up for an input shape, call without
// allocating or synchronizing: every buffer (the output, statistics, op workspaces) comes from the layer's
// output_buffer slots, and the first call for a shape acquires the buffers of both phases, so a later
// training-phase call (with its update op) can be captured in a CUDA graph whatever phase warmed it up.
//
// GroupNormalization(groups = 32, axis = -1, epsilon = 1e-3, center, scale, beta/gamma initializers,
// activation): axis -1 (channels last, (B, *spatial, C)) or 1 (channels first, (B, C, *spatial)), any
// rank >= 2, no transpose copy. groups = -1 means one group per channel. C not divisible by groups, or
// fewer channels than groups: kErrorInvalidShape at build. Weights "gamma" (scale) and "beta" (center),
// [C]. A mask [B, T] is honoured for channels-last rank-3 input (B, T, C): masked steps are left out of the
// statistics and still normalized (a fully masked group has mean 0 and variance 0); any other input with a
// mask is kErrorNotSupported naming the mask. The activation (linear, SiLU, ReLU) is fused into the store.
// Config keys: tf.keras's ("groups", "axis", "epsilon", "center", "scale", "beta_initializer",
// "gamma_initializer") plus "activation" ("linear", "silu" (or "swish" when read), "relu"), written only
// when it is not linear (Keras's from_config rejects the key, so a plain layer's config stays readable
// there); "groups" is reported as configured (-1 stays -1).
//
// BatchNormalization(axis = -1, momentum = 0.99, epsilon = 1e-3, center, scale, beta / gamma /
// moving_mean / moving_variance initializers): input of rank >= 2 with the channels on any axis but the
// batch axis (axis 0 is kErrorInvalidValue naming "axis"): -1 (channels last, (B, ..., C)), 1 (channels
// first, (B, C, *spatial)) or any axis in between, no transpose copy. Weights, in Keras's order: "gamma"
// (scale), "beta" (center) (trainable), "moving_mean" (zeros), "moving_variance" (ones) (non-trainable),
// [C] float32.
//  - Training phase of a trainable layer: per-channel mean and biased variance over every axis but the
//    channel axis, the input normalized with them, then the update op (device work, reading the number of
//    valid positions on the device): moving = moving * momentum + batch * (1 - momentum), the moving
//    variance fed the unbiased batch variance, and nothing when fewer than 2 positions are valid. A
//    fully masked batch normalizes with mean 0 and variance 0 (as a fully masked group in group norm).
//    With x viewed as [rows, C, inner] (rows: the axes before the channel axis, inner: those after it):
//      * inner = 1 (channels last): one pass of masked_reduce kMoments on x viewed as [1, rows, C] (the
//        mask [B, T] of a rank-3 input viewed as [1, B*T]);
//      * inner > 1 (channels first or a middle axis): kMoments per (row, channel) plane on x viewed as
//        [rows * C, inner, 1] (its narrow-row and split-R paths keep the GPU busy for few large planes
//        and for many small ones), then batch_norm_merge_moments (Chan's merge in double, rows x C
//        floats). Either way x is read once for the statistics and once by the apply.
//  - Inference phase, and (as Keras does since TF 2.0) the training phase of a layer with trainable =
//    false: normalized with the moving statistics; no update.
//  - Masked steps are normalized like the others with the batch's statistics, which never include them:
//    a NaN sitting in a masked step stays in that step's output and reaches nothing else.
//  - A mask is supported for rank-3 input with the channels last only; any other input with a mask is
//    kErrorNotSupported naming the mask (Keras requires a mask of rank input rank - 1; masks here are
//    [B, T], which does not broadcast against (B, C, T)).
//  - The statistics reduce up to 2^31 - 1 rows (channels last) or planes of up to 2^31 - 1 elements
//    (channels first) -- masked_reduce's limit on R: a larger training-phase batch fails with the moments
//    op's error, prefixed with the layer's name; inference has no such limit. The count the update op
//    reads saturates at 2^31 - 1 (where n / (n - 1) is 1 in float anyway).
// Config keys: Keras's ("axis", "momentum", "epsilon", "center", "scale", "beta_initializer",
// "gamma_initializer", "moving_mean_initializer", "moving_variance_initializer"); "axis" may also be read
// as a one-element list (tf.keras 2 writes a list).
//
// from_config: the layer-class factories (use with register_layer_class); kErrorParse naming the key for a
// value of the wrong type or out of range; kErrorNotSupported for Keras BatchNormalization options that
// change the computation and are not implemented ("renorm" true, a non-null "virtual_batch_size" or
// "adjustment"); other keys are passed over (Keras's regularizers and constraints do not change the
// forward; the renorm_* settings matter only with renorm; layer_from_json's ConfigReadOptions reports a
// regularizer or constraint that is set, and lists or refuses a key Keras does not know either).
#ifndef CULAYERS_NN_NORMALIZATION_HPP_
#define CULAYERS_NN_NORMALIZATION_HPP_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "culayers/group_norm.hpp"
#include "culayers/nn/initializer.hpp"
#include "culayers/nn/layer.hpp"
#include "culayers/nn/tensor.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {

struct GroupNormalizationOptions {
  std::int64_t groups = 32; ///< >= 1, or -1: one group per channel
  int axis = -1;            ///< -1 (or rank - 1): channels last; 1: channels first
  double epsilon = 1e-3;    ///< > 0 and finite (used as float32)
  bool center = true;       ///< "beta" weight
  bool scale = true;        ///< "gamma" weight
  Initializer beta_initializer = Initializer::zeros();
  Initializer gamma_initializer = Initializer::ones();
  group_norm::Activation activation = group_norm::Activation::kNone;
};

class GroupNormalization final : public Layer {
 public:
  /// Options are validated when the layer is built (kErrorInvalidValue / kErrorInvalidShape naming the
  /// option). An empty name becomes a unique default ("group_normalization", ...).
  explicit GroupNormalization(const GroupNormalizationOptions& options = {}, std::string name = {},
                              DType dtype = DType::kFloat32);

  const GroupNormalizationOptions& options() const noexcept { return options_; }
  bool supports_masking() const noexcept override { return true; }

  /// The factory of class "GroupNormalization".
  [[nodiscard]] static Status from_config(const Json& config, std::unique_ptr<Layer>* out);

 protected:
  [[nodiscard]] Status do_build(const Shape& input_shape, cudaStream_t stream) override;
  /// Keras's InputSpec of these layers: the same rank and the same number of channels; the batch and
  /// the spatial / time extents may change from call to call.
  [[nodiscard]] Status check_input_shape(const Shape& built, const Shape& shape) const override;
  /// Masked statistics: channels-last input of rank 3 only (kErrorNotSupported naming "mask").
  [[nodiscard]] Status check_mask(const Shape& shape) const override;
  [[nodiscard]] Status do_call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                               LayerOutput* out) override;
  void add_config(Json& config) const override;

 private:
  GroupNormalizationOptions options_;
  Layout layout_ = Layout::kChannelsLast; // resolved at build
  std::int64_t groups_ = 0;               // resolved at build
};

struct BatchNormalizationOptions {
  int axis = -1;          ///< the channel axis: any but the batch axis (-1: last, 1: channels first)
  double momentum = 0.99; ///< in [0, 1] (used as float32)
  double epsilon = 1e-3;  ///< > 0 and finite (used as float32)
  bool center = true;     ///< "beta" weight
  bool scale = true;      ///< "gamma" weight
  Initializer beta_initializer = Initializer::zeros();
  Initializer gamma_initializer = Initializer::ones();
  Initializer moving_mean_initializer = Initializer::zeros();
  Initializer moving_variance_initializer = Initializer::ones();
};

class BatchNormalization final : public Layer {
 public:
  /// Options are validated when the layer is built (kErrorInvalidValue / kErrorNotSupported naming the
  /// option). An empty name becomes a unique default ("batch_normalization", ...).
  explicit BatchNormalization(const BatchNormalizationOptions& options = {}, std::string name = {},
                              DType dtype = DType::kFloat32);

  const BatchNormalizationOptions& options() const noexcept { return options_; }
  bool supports_masking() const noexcept override { return true; }
  /// Loaded moving statistics must be usable: "moving_mean" finite, "moving_variance" finite and >= 0
  /// (kErrorInvalidValue naming the weight and channel; a NaN there would turn every inference output of
  /// its channel into NaN). Keras loads any value. A model whose training made them NaN saves them, but
  /// does not load that file back.
  [[nodiscard]] Status check_weight_data(const std::string& weight_name, const void* data,
                                         std::size_t bytes) const override;

  /// The factory of class "BatchNormalization".
  [[nodiscard]] static Status from_config(const Json& config, std::unique_ptr<Layer>* out);

 protected:
  [[nodiscard]] Status do_build(const Shape& input_shape, cudaStream_t stream) override;
  /// Keras's InputSpec of these layers: the same rank and the same number of channels; the batch and
  /// the spatial / time extents may change from call to call.
  [[nodiscard]] Status check_input_shape(const Shape& built, const Shape& shape) const override;
  /// Masked statistics: rank-3 input with the channels on the last axis only (kErrorNotSupported naming
  /// "mask"; Keras's mask of shape [batch, steps] does not broadcast against [batch, channels, steps]).
  [[nodiscard]] Status check_mask(const Shape& shape) const override;
  /// Training (trainable): the batch statistics' size limits (the masked moments': at most 2^31 - 1 rows
  /// channels last, or positions per plane channels first).
  [[nodiscard]] Status check_phase(const Shape& shape, Phase phase) const override;
  [[nodiscard]] Status do_call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                               LayerOutput* out) override;
  void add_config(Json& config) const override;

 private:
  [[nodiscard]] Status update_moving_statistics(const CallContext& ctx);

  BatchNormalizationOptions options_;
  int axis_ = 0; // resolved at build
  std::int64_t channels_ = 0;
  // The statistics of the last training-phase call (layer-owned buffers), read by the update op.
  float* batch_mean_ = nullptr;
  float* batch_variance_ = nullptr;
  std::int32_t* batch_count_ = nullptr;
};

} // namespace nn
CULAYERS_NAMESPACE_END

#endif // CULAYERS_NN_NORMALIZATION_HPP_
