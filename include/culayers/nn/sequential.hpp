// Sequential: a stack of layers called in order with mask propagation (Keras's Sequential model).
//
//  - add() appends a layer (names must be unique; "<layer name>/<weight name>" names the weights in a
//    safetensors file). build(input_shape) builds every layer in turn from the previous output shape.
//  - call(ctx, x, mask) runs the layers on ctx.stream in ctx.phase: each layer's output and output mask
//    feed the next one (a layer that does not support masking rejects a mask, as Keras 2). After
//    warm-up a call allocates nothing and never synchronizes, so a training-phase call can be captured
//    in a CUDA graph; each replay runs the update ops (counters, moving averages) like an eager call.
//  - summary() prints Keras's table (layer (type), output shape, parameter counts).
//  - to_json()/from_json() use Keras's layout {"class_name": "Sequential", "config": {"name": ...,
//    "layers": [{"class_name": ..., "config": ...}, ...]}} plus "build_input_shape" once built (batch
//    axis null), so a loaded model is built and ready for load_weights().
//  - save_weights()/load_weights() write and read every layer's weights as safetensors tensors named
//    "<layer name>/<weight name>"; loading checks every name, dtype and shape before writing anything.
#ifndef CULAYERS_NN_SEQUENTIAL_HPP_
#define CULAYERS_NN_SEQUENTIAL_HPP_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "culayers/nn/layer.hpp"
#include "culayers/nn/safetensors.hpp"
#include "culayers/nn/tensor.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {

/// Registers the built-in layer classes (Masking, Dropout, DecayingDropout, GroupNormalization -- also as
/// TensorFlow Addons' "Addons>GroupNormalization" --, BatchNormalization, MaskedGlobalPooling1D -- also
/// as Keras's "GlobalAveragePooling1D" --, MaskedFlatten) with the registry. Idempotent and
/// thread-safe; from_json() and layer_from_json() call it, so users need it only to replace a class.
void register_builtin_layers();

/// Time one layer took in a profiled call.
struct LayerTiming {
  std::string name;
  std::string class_name;
  float milliseconds = 0.0f;
};

class Sequential {
 public:
  /// An empty `name` becomes "sequential" plus a counter, as Keras names models.
  explicit Sequential(std::string name = "");
  ~Sequential();
  Sequential(const Sequential&) = delete;
  Sequential& operator=(const Sequential&) = delete;

  const std::string& name() const noexcept { return name_; }

  /// Appends a layer. kErrorInvalidValue for a null layer, a duplicate name, or after build().
  [[nodiscard]] Status add(std::unique_ptr<Layer> layer);

  std::size_t size() const noexcept { return layers_.size(); }
  Layer& layer(std::size_t i) { return *layers_.at(i); }
  const Layer& layer(std::size_t i) const { return *layers_.at(i); }
  /// The layer called `name`, or null.
  Layer* find_layer(const std::string& name) noexcept;

  /// Builds every layer for inputs of `input_shape` (batch first; the batch extent is not part of the
  /// model: later calls may use any batch size). Synchronizes `stream` (weights are initialized there).
  /// All or nothing: a layer already built must accept its input shape in this chain, and when a layer
  /// fails, the layers this build built are unbuilt again (so a first call with a wrong shape leaves the
  /// model as it was).
  [[nodiscard]] Status build(const Shape& input_shape, cudaStream_t stream = nullptr);
  bool built() const noexcept { return built_; }
  /// The shape build() saw.
  const Shape& input_shape() const noexcept { return input_shape_; }
  /// Each layer's output shape for a model input of `input_shape` (the last one is the model's).
  [[nodiscard]] Status compute_output_shapes(const Shape& input_shape, std::vector<Shape>* out) const;
  [[nodiscard]] Status compute_output_shape(const Shape& input_shape, Shape* out) const;

  /// The phase call(stream, ...) uses (Keras's learning phase default): inference.
  Phase default_phase() const noexcept { return default_phase_; }
  void set_default_phase(Phase phase) noexcept { default_phase_ = phase; }

  /// Runs every layer (builds on first use). `out` views the last layer's output and output mask (valid
  /// until the next call). kErrorInvalidValue for an empty model. Every layer's kernels are enqueued
  /// before any layer's training-phase steps and update ops (iteration counters, random streams, moving
  /// statistics), so a call that fails before its updates (a later layer's buffer allocation running out
  /// of memory, say) leaves the schedules and moving statistics as they were; the layers that ran did run
  /// (their outputs, a dropout state's record of its last forward and a frozen DecayingDropout's redraw
  /// count are the failed call's).
  [[nodiscard]] Status call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                            LayerOutput* out);
  /// As above in default_phase() with the default allocator.
  [[nodiscard]] Status call(cudaStream_t stream, const ConstTensorView& x, const ConstTensorView& mask,
                            LayerOutput* out);
  /// A call that also measures each layer with CUDA events (synchronizes at the end: a diagnostic, not a
  /// hot-path call; a layer's time includes its call steps and update ops, which run after every forward as
  /// in call()).
  [[nodiscard]] Status profile(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                               LayerOutput* out, std::vector<LayerTiming>* timings);

  /// Device bytes the layers' calls keep between calls (Layer::buffer_bytes, summed over the layers).
  std::size_t buffer_bytes() const noexcept;
  /// Layer::release_buffers on every layer: the memory calls keep goes back to the allocator (ordered after
  /// each buffer's last call), the views the last call returned and any CUDA graph captured from an earlier
  /// call become invalid (never replay such a graph), and the next call allocates again (it is not a
  /// warmed-up call). Weights and state stay.
  void release_buffers() noexcept;

  std::int64_t count_params() const noexcept;
  std::int64_t count_trainable_params() const noexcept;
  /// Keras's model.summary() table. Output shapes need a built model ("?" otherwise); the batch axis
  /// prints as None.
  std::string summary(int line_length = 80) const;

  /// {"class_name": "Sequential", "config": {"name", "layers", ["build_input_shape"]}}.
  Json to_json() const;
  /// A new model from to_json()'s layout, built from its input shape in Keras's order: a first "InputLayer"
  /// entry's "batch_input_shape" / "batch_shape" (it adds no layer), else the first layer's
  /// "batch_input_shape" (tf.keras 2), else "build_input_shape", else Keras 3's "build_config":
  /// {"input_shape"} beside "config"; the others must not contradict it (same rank, equal known extents
  /// past the batch; one that is not a shape list is ignored). A null extent past the batch (variable-length
  /// steps) leaves the model to be built by its first call. Layer "dtype"s may be names or Keras dtype
  /// policy objects ({"class_name": "DTypePolicy" or "Policy", "config": {"name": ...}}; "mixed_float16"
  /// computes in float16). kErrorParse for a malformed document (an InputLayer that is not first),
  /// kErrorNotSupported for a sparse or ragged InputLayer, kErrorUnknownClass naming an unknown layer
  /// class.
  [[nodiscard]] static Status from_json(const Json& json, std::unique_ptr<Sequential>* out,
                                        cudaStream_t stream = nullptr);
  /// As above, with `options` for the keys it does not use (ConfigReadOptions, culayers/nn/layer.hpp): the
  /// model's own keys, each layer entry's and each layer config's, an InputLayer's included. With
  /// reject_unknown_keys an unknown key anywhere is kErrorParse naming its path, before any weight is made.
  /// The model's own "trainable" and "dtype" are not applied (each layer's config has its own; Keras writes
  /// a frozen model's layers frozen too): "trainable": false is reported as a Keras key.
  [[nodiscard]] static Status from_json(const Json& json, const ConfigReadOptions& options,
                                        std::unique_ptr<Sequential>* out, cudaStream_t stream = nullptr);
  /// from_json() on a JSON text (kErrorParse with the parser's message when it is not JSON, or nests
  /// deeper than 64 levels).
  [[nodiscard]] static Status from_json_string(const std::string& text, std::unique_ptr<Sequential>* out,
                                               cudaStream_t stream = nullptr);
  [[nodiscard]] static Status from_json_string(const std::string& text, const ConfigReadOptions& options,
                                               std::unique_ptr<Sequential>* out,
                                               cudaStream_t stream = nullptr);

  /// Every weight as "<layer>/<weight>" host tensors (synchronizes `stream`). Needs a built model. The
  /// weights a call changes (moving statistics, dropout counters) are read on `stream`: it must be ordered
  /// after the model's last call (that call's stream, or one synchronized after it), as must set_weights'
  /// stream, whose writes a call still running on another stream would race.
  [[nodiscard]] Status get_weights(SafetensorsFile* out, cudaStream_t stream = nullptr);
  /// Writes every weight from `file`: each model weight must be present with its dtype and shape (or a
  /// layout its layer converts: Layer::convert_weight_data, e.g. DecayingDropout's float32 (1,) counter of
  /// the Keras tutorial) and the file must hold no other tensor; all of it is checked before anything is
  /// written. Synchronizes.
  [[nodiscard]] Status set_weights(const SafetensorsFile& file, cudaStream_t stream = nullptr);
  [[nodiscard]] Status save_weights(const std::string& path, cudaStream_t stream = nullptr);
  [[nodiscard]] Status load_weights(const std::string& path, cudaStream_t stream = nullptr);

 private:
  /// Unbuilds `layers` (those one build built) and clears the list.
  static void unbuild_all(std::vector<Layer*>* layers) noexcept;
  /// build(), listing the layers it built (all unbuilt again when it fails).
  [[nodiscard]] Status build_layers(const Shape& input_shape, cudaStream_t stream,
                                    std::vector<Layer*>* built_here);
  /// call() and profile()'s first step: builds on first use, then check_chain; a failed check undoes that
  /// build.
  [[nodiscard]] Status build_and_check(const CallContext& ctx, const ConstTensorView& x, bool has_mask);
  /// Every check each layer's call would make, along the chain of output shapes, dtypes and masks.
  [[nodiscard]] Status check_chain(const Shape& input_shape, DType dtype, bool has_mask, Phase phase) const;

  std::string name_;
  std::vector<std::unique_ptr<Layer>> layers_;
  bool built_ = false;
  Shape input_shape_{};
  Phase default_phase_ = Phase::kInference;
};

} // namespace nn
CULAYERS_NAMESPACE_END

#endif // CULAYERS_NN_SEQUENTIAL_HPP_
