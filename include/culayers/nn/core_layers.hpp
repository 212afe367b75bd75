// Core Keras-like layers on the masked-reduction and dropout ops: Masking, Dropout, DecayingDropout,
// MaskedGlobalPooling1D and MaskedFlatten (semantics: docs/semantics.md, "Masked reductions", "Dropout",
// "Layers").
//
// Common to every class here:
//  - The constructor takes an options struct, a name (empty: a Keras-like default) and the compute dtype
//    (float32, float16 or bfloat16; x must be of that dtype). Constructors never fail: options are
//    checked by check_options(), which build() (so the first call) and from_config() run, and which
//    callers may run up front. A bad option is an error "<layer name>: <option>: <reason>" (from_config:
//    kErrorParse with the same message) and nothing is allocated or launched.
//  - get_config() has "name", "trainable", "dtype" and the layer's own keys as Keras names them;
//    from_config() reads them back (unknown extra keys are passed over; layer_from_json's
//    ConfigReadOptions lists or refuses them), so get_config -> from_config gives a layer that computes
//    the same outputs.
//  - Masks are uint8 [batch, steps] (nonzero = valid). A warmed-up call allocates nothing and never
//    synchronizes: every per-call value the device needs lives in device memory, so a training-phase
//    call, update ops included, can be captured in a CUDA graph and replayed.
#ifndef CULAYERS_NN_CORE_LAYERS_HPP_
#define CULAYERS_NN_CORE_LAYERS_HPP_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "culayers/dropout.hpp"
#include "culayers/nn/layer.hpp"
#include "culayers/nn/tensor.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {

// ---- Masking --------------------------------------------------------------------------------------------

struct MaskingOptions {
  /// Steps whose every value equals this are masked. Compared in x's dtype (rounded to float32, then to
  /// the dtype); NaN equals nothing, so a NaN mask value masks no step.
  double mask_value = 0.0;
};

/// Keras Masking(mask_value). Produces its own mask and ignores an incoming one (as Keras):
///  - rank >= 3, x = (batch, steps, features...): mask[b, t] = any over the features of
///    x[b, t, ...] != mask_value; y = x with the masked steps written as +0.0.
///  - rank 2, x = (batch, steps) (**decision**): every value is a step of its own, so mask[b, t] =
///    (x[b, t] != mask_value) and masked values become +0.0. (Keras would reduce the last axis and give a
///    [batch] mask, which the [batch, steps] mask contract of this front end cannot carry.)
///  - rank < 2: kErrorInvalidShape naming the input.
/// y and the mask live in layer-owned buffers. Config key: "mask_value".
class Masking final : public Layer {
 public:
  explicit Masking(MaskingOptions options = {}, std::string name = {}, DType dtype = DType::kFloat32);

  const MaskingOptions& options() const noexcept { return options_; }
  double mask_value() const noexcept { return options_.mask_value; }

  bool supports_masking() const noexcept override { return true; }
  /// Masking produces its own mask, whatever comes in.
  bool compute_mask(bool input_has_mask) const noexcept override {
    (void)input_has_mask;
    return true;
  }
  /// The input shape (rank >= 2).
  [[nodiscard]] Status compute_output_shape(const Shape& input_shape, Shape* out) const override;
  /// mask_value must be NaN, infinite or within float32's range; the dtype a float type.
  [[nodiscard]] Status check_options() const;

  [[nodiscard]] static Status from_config(const Json& config, std::unique_ptr<Layer>* out);

 protected:
  [[nodiscard]] Status do_build(const Shape& input_shape, cudaStream_t stream) override;
  /// Same rank as the built input; every extent may change between calls (Keras gives the layer no
  /// input spec), e.g. the number of steps of a padded batch.
  [[nodiscard]] Status check_input_shape(const Shape& built, const Shape& shape) const override;
  [[nodiscard]] Status do_call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                               LayerOutput* out) override;
  void add_config(Json& config) const override;

 private:
  MaskingOptions options_;
};

// ---- Dropout and DecayingDropout --------------------------------------------------------------------------

/// Keras's noise_shape: absent (null) = x's shape; otherwise one entry per axis of x, where an absent
/// entry (null) stands for x's extent on that axis (usually the batch axis) and a given one must be 1
/// (the mask is broadcast along that axis) or x's extent.
using NoiseShape = std::optional<std::vector<std::optional<std::int64_t>>>;

/// Options of Dropout. keep rate = 1 - rate.
struct DropoutOptions {
  double rate = 0.5;                   ///< in [0, 1)
  NoiseShape noise_shape{};            ///< entries null or >= 1
  std::optional<std::uint64_t> seed{}; ///< Philox key; absent: drawn from std::random_device
};

/// Keras Dropout(rate, noise_shape, seed) on the dropout op with a fixed keep rate (a DropoutState with
/// decay_rate 1, created on the device when the layer is built).
///  - Inference phase: the identity; no kernel runs and y aliases x.
///  - Training phase: the forward kernel, then the dropout update kernel as a call step (add_call_step:
///    run after the call's forward, in a model after every layer's forward, whether or not the layer is
///    trainable; Keras's Dropout draws fresh randomness on every call and has no update op), so training
///    call k draws Philox stream k and two calls never share a mask.
///  - rate 0: the identity in both phases, as Keras (no kernel, the stream does not advance).
/// y lives in a layer-owned buffer (training). The incoming mask passes through unchanged.
///
/// seed (**decision**): an absent seed is drawn once, at construction, from std::random_device; the
/// layer then keeps it (effective_seed()). get_config reports the seed *argument*, as Keras does: null
/// for an unseeded layer, so a layer made from that config draws a seed of its own. Seed a layer whose
/// masks must be reproducible. Config keys: "rate", "noise_shape", "seed".
class Dropout final : public Layer {
 public:
  explicit Dropout(DropoutOptions options = {}, std::string name = {}, DType dtype = DType::kFloat32);

  const DropoutOptions& options() const noexcept { return options_; }
  double rate() const noexcept { return options_.rate; }
  const NoiseShape& noise_shape() const noexcept { return options_.noise_shape; }
  const std::optional<std::uint64_t>& seed() const noexcept { return options_.seed; }
  /// The Philox key the layer uses: seed(), or the value drawn at construction.
  std::uint64_t effective_seed() const noexcept { return effective_seed_; }

  bool supports_masking() const noexcept override { return true; }
  /// The input shape.
  [[nodiscard]] Status compute_output_shape(const Shape& input_shape, Shape* out) const override;
  [[nodiscard]] Status check_options() const;

  /// Copies the device state (the keep rate, the counter of training calls, the parameters of the next
  /// and of the most recent call) into *host. Synchronizes `stream` (demos and tests, not the hot path).
  /// kErrorInvalidValue before the layer is built.
  [[nodiscard]] Status read_state(dropout::DropoutState* host, cudaStream_t stream) const;

  [[nodiscard]] static Status from_config(const Json& config, std::unique_ptr<Layer>* out);

 protected:
  [[nodiscard]] Status do_build(const Shape& input_shape, cudaStream_t stream) override;
  /// Same rank as the built input; every extent may change between calls (Keras gives the layer no
  /// input spec), e.g. the number of steps of a padded batch.
  [[nodiscard]] Status check_input_shape(const Shape& built, const Shape& shape) const override;
  [[nodiscard]] Status check_phase(const Shape& shape, Phase phase) const override;
  [[nodiscard]] Status do_call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                               LayerOutput* out) override;
  void add_config(Json& config) const override;

 private:
  DropoutOptions options_;
  std::uint64_t effective_seed_ = 0;
  Tensor state_; ///< one DropoutState (128 bytes) in device memory
};

/// Options of DecayingDropout (docs/semantics.md, "Dropout" and "Layers"; Keras defaults).
struct DecayingDropoutOptions {
  double initial_keep_rate = 1.0;      ///< in (0, 1]
  std::int64_t decay_interval = 10000; ///< > 0
  double decay_rate = 0.977;           ///< clamped to [0, 1] by the constructor; not NaN
  NoiseShape noise_shape{};
  std::optional<std::uint64_t> seed{}; ///< as DropoutOptions::seed
};

/// DecayingDropout: training call k (k = the `iterations` counter when the call starts) drops with keep
/// rate initial_keep_rate * decay_rate ^ ((k + 1) / decay_interval) (double precision, continuous
/// exponent) and Philox stream k; inference is the identity (no kernel, y aliases x).
///
/// Weight "iterations": int64, shape [] (a scalar), non-trainable, zeros. Its source of truth is the
/// DropoutState on the device: the update op (the dropout update kernel, registered with add_update, so
/// it runs after each training-phase call of a trainable layer and never in inference) advances the
/// state, sync_weights() copies the state's counter into the weight (before saving) and weights_loaded()
/// re-initializes the state from the weight (after loading).
///
/// A non-trainable DecayingDropout does not advance (**decision**, Keras runs no update op of a frozen
/// layer): every training-phase call keeps the keep rate of iteration k, but draws a fresh mask (as
/// Keras's dropout draws new noise on every call): each such call runs the redraw op before its forward,
/// so it draws from stream 2^63 + r (r counts the layer's redraws, and the count survives
/// weights_loaded), never from a schedule stream, and returns the state to stream k after it (the redraw
/// op with to_schedule), so the state is on the schedule after every call, captured graphs included. The
/// next trainable call draws from stream k, as if the frozen calls had not happened, then the update op
/// advances the schedule.
///
/// decay_rate is clamped to [0, 1] at construction (as the original layer); get_config reports the
/// clamped value. The seed follows Dropout's rule. The incoming mask passes through unchanged. Config
/// keys: "initial_keep_rate", "decay_interval", "decay_rate", "noise_shape", "seed".
class DecayingDropout final : public Layer {
 public:
  explicit DecayingDropout(DecayingDropoutOptions options = {}, std::string name = {},
                           DType dtype = DType::kFloat32);

  const DecayingDropoutOptions& options() const noexcept { return options_; }
  double initial_keep_rate() const noexcept { return options_.initial_keep_rate; }
  std::int64_t decay_interval() const noexcept { return options_.decay_interval; }
  /// The clamped decay rate.
  double decay_rate() const noexcept { return options_.decay_rate; }
  const NoiseShape& noise_shape() const noexcept { return options_.noise_shape; }
  const std::optional<std::uint64_t>& seed() const noexcept { return options_.seed; }
  std::uint64_t effective_seed() const noexcept { return effective_seed_; }

  bool supports_masking() const noexcept override { return true; }
  [[nodiscard]] Status compute_output_shape(const Shape& input_shape, Shape* out) const override;
  [[nodiscard]] Status check_options() const;

  /// Enqueues a device-to-device copy of the state's counter into the "iterations" weight; no sync.
  /// Nothing to do before the layer is built.
  [[nodiscard]] Status sync_weights(cudaStream_t stream) override;
  /// Reads the "iterations" weight and re-initializes the state at that count (the next training call
  /// uses keep rate and stream of that iteration); synchronizes `stream`. kErrorInvalidValue for a
  /// negative count (the state is left as it was). Nothing to do before the layer is built.
  [[nodiscard]] Status weights_loaded(cudaStream_t stream) override;
  /// "iterations" must hold one non-negative int64 (checked before Sequential::set_weights writes anything).
  [[nodiscard]] Status check_weight_data(const std::string& weight_name, const void* data,
                                         std::size_t bytes) const override;
  /// "iterations" as the Keras layer of the tutorial saves it, float32 of shape (1,) (or a float32 scalar),
  /// converts to the int64 count when it holds a whole number in [0, 2^63); another value is
  /// kErrorInvalidValue naming it.
  [[nodiscard]] Status convert_weight_data(const std::string& weight_name, DType dtype, const Shape& shape,
                                           const std::vector<std::uint8_t>& data,
                                           std::vector<std::uint8_t>* bytes, bool* converted) const override;
  /// As Dropout::read_state.
  [[nodiscard]] Status read_state(dropout::DropoutState* host, cudaStream_t stream) const;

  [[nodiscard]] static Status from_config(const Json& config, std::unique_ptr<Layer>* out);

 protected:
  [[nodiscard]] Status do_build(const Shape& input_shape, cudaStream_t stream) override;
  /// Same rank as the built input; every extent may change between calls (Keras gives the layer no
  /// input spec), e.g. the number of steps of a padded batch.
  [[nodiscard]] Status check_input_shape(const Shape& built, const Shape& shape) const override;
  [[nodiscard]] Status check_phase(const Shape& shape, Phase phase) const override;
  [[nodiscard]] Status do_call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                               LayerOutput* out) override;
  void add_config(Json& config) const override;

 private:
  [[nodiscard]] Status init_state(std::int64_t iterations, std::uint64_t redraws, cudaStream_t stream);

  DecayingDropoutOptions options_;
  std::uint64_t effective_seed_ = 0;
  Tensor state_;
};

// ---- MaskedGlobalPooling1D ----------------------------------------------------------------------------

enum class PoolingMode : int { kMean = 0, kSum = 1, kMax = 2, kMin = 3 };

/// "mean", "sum", "max", "min" (a static string; "unknown mode" otherwise).
const char* pooling_mode_name(PoolingMode mode) noexcept;

struct MaskedGlobalPooling1DOptions {
  PoolingMode mode = PoolingMode::kMean;
  /// The reduced axis. Only 1 (the steps axis of (batch, steps, features...)) is supported
  /// (**decision**: the [batch, steps] mask describes that axis only); others: kErrorNotSupported.
  int axis = 1;
};

/// The seed's masked MeanPool generalized: x (batch, steps, features...) reduced over the steps with the
/// masked-reduction op (outer = batch, R = steps, inner = product of the features; the mask as validity,
/// every step valid without one). Masked steps are skipped (a NaN there changes nothing); a row with no
/// valid step gives 0 (Keras would give NaN for mean); max/min propagate NaN of valid steps. Accumulates
/// in float32, writes x's dtype. Output (batch, features...) (rank 2 input: (batch)); rank < 2 is
/// kErrorInvalidShape. The mask is consumed: the output has none. Config keys: "mode", "axis".
class MaskedGlobalPooling1D final : public Layer {
 public:
  explicit MaskedGlobalPooling1D(MaskedGlobalPooling1DOptions options = {}, std::string name = {},
                                 DType dtype = DType::kFloat32);

  const MaskedGlobalPooling1DOptions& options() const noexcept { return options_; }
  PoolingMode mode() const noexcept { return options_.mode; }
  int axis() const noexcept { return options_.axis; }

  bool supports_masking() const noexcept override { return true; }
  /// The mask is consumed: the output has none.
  bool compute_mask(bool input_has_mask) const noexcept override {
    (void)input_has_mask;
    return false;
  }
  [[nodiscard]] Status compute_output_shape(const Shape& input_shape, Shape* out) const override;
  [[nodiscard]] Status check_options() const;

  [[nodiscard]] static Status from_config(const Json& config, std::unique_ptr<Layer>* out);
  /// The factory of Keras's "GlobalAveragePooling1D" (registered under that name): the masked mean over
  /// the steps, which is what Keras computes with a mask (the sum over valid steps divided by their
  /// count; Keras multiplies by the mask, so an empty row, or a NaN or Inf at a masked step, gives NaN
  /// there). Keys "data_format" ("channels_last";
  /// "channels_first" is kErrorNotSupported: the steps must be axis 1) and "keepdims" (false; true is
  /// kErrorNotSupported). Written back as MaskedGlobalPooling1D with mode "mean".
  [[nodiscard]] static Status from_keras_average_config(const Json& config, std::unique_ptr<Layer>* out);

 protected:
  [[nodiscard]] Status do_build(const Shape& input_shape, cudaStream_t stream) override;
  /// Same rank and features as the built input; batch and steps may change between calls.
  [[nodiscard]] Status check_input_shape(const Shape& built, const Shape& shape) const override;
  [[nodiscard]] Status do_call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                               LayerOutput* out) override;
  void add_config(Json& config) const override;

 private:
  MaskedGlobalPooling1DOptions options_;
};

// ---- MaskedFlatten --------------------------------------------------------------------------------------

/// MaskedFlatten has no options (Keras Flatten's data_format is not supported: channels-last only).
struct MaskedFlattenOptions {};

/// Row-major flatten (batch, d1, ..., dn) -> (batch, d1 * ... * dn) (rank 1: (batch, 1)); y is a view of x
/// (no copy, no kernel). With a mask [batch, steps] the output mask is expanded to the output's shape,
/// mask_out[b, t * F + f] = mask[b, t] with F = d2 * ... * dn (the mask-expansion op, into a layer-owned
/// buffer; for rank 2 inputs F = 1 and the mask passes through as it is). No mask in, no mask out.
class MaskedFlatten final : public Layer {
 public:
  explicit MaskedFlatten(MaskedFlattenOptions options = {}, std::string name = {},
                         DType dtype = DType::kFloat32);

  const MaskedFlattenOptions& options() const noexcept { return options_; }

  bool supports_masking() const noexcept override { return true; }
  [[nodiscard]] Status compute_output_shape(const Shape& input_shape, Shape* out) const override;
  [[nodiscard]] Status check_options() const;

  [[nodiscard]] static Status from_config(const Json& config, std::unique_ptr<Layer>* out);

 protected:
  [[nodiscard]] Status do_build(const Shape& input_shape, cudaStream_t stream) override;
  /// Same rank as the built input; every extent may change between calls (Keras gives the layer no
  /// input spec), e.g. the number of steps of a padded batch.
  [[nodiscard]] Status check_input_shape(const Shape& built, const Shape& shape) const override;
  [[nodiscard]] Status do_call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                               LayerOutput* out) override;

 private:
  MaskedFlattenOptions options_;
};

} // namespace nn
CULAYERS_NAMESPACE_END

#endif // CULAYERS_NN_CORE_LAYERS_HPP_
