// The Keras-like Layer base (Keras 2 semantics, C++ idioms; see docs/semantics.md, "The layer contract"):
//
//  - build(input_shape) runs once and creates the weights through add_weight(name, shape, dtype,
//    initializer, trainable); a later call whose input does not match the built shape is a clear error.
//  - call(ctx, x, mask) builds on first use, then only enqueues work on ctx.stream: outputs live in
//    buffers the layer owns (reallocated only when the output shape changes, so a warmed-up call
//    allocates nothing and never synchronizes, and can be captured in a CUDA graph).
//  - Autocast (Keras's): a floating input in another dtype than the layer's is cast to the layer's dtype
//    before the layer runs (culayers/cast.hpp), so layers of different dtypes chain as in Keras.
//  - A mask arriving at a layer that does not support masking is an error (Keras 2); a layer that
//    supports masking passes it through unless it computes its own (compute_mask).
//  - Update ops registered with add_update run on the stream after a training-phase call's do_call of a
//    trainable layer, in registration order (call steps, add_call_step, first, trainable or not); never in
//    inference. A Sequential runs every layer's do_call before any layer's steps and updates.
//  - Devices and streams: a layer's weights and buffers live on the device that was current at build;
//    calling it with another current device is an error (kErrorInvalidValue), and ctx.stream must belong
//    to that device. Calls may use different streams; each call makes its stream the one the layer's
//    memory is later freed on (Tensor::release_on), so that stream must outlive the layer (or the next
//    call on another stream), and work on two streams that touch the same layer must be ordered by the
//    caller (an event), as for any shared buffer.
//  - get_config() uses Keras's keys; layer_from_json / layer_to_json use Keras's
//    {"class_name": ..., "config": {...}} layout through a registry of layer classes.
#ifndef CULAYERS_NN_LAYER_HPP_
#define CULAYERS_NN_LAYER_HPP_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "culayers/nn/initializer.hpp"
#include "culayers/nn/tensor.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {

/// A layer's weight: its device value and how it was made.
struct Weight {
  std::string name; ///< unique within the layer ("gamma", "moving_mean", ...)
  Tensor value;
  bool trainable = true;
  Initializer initializer{};
};

/// What a call produces. Views stay valid until the layer's next call (or the input's lifetime, for a
/// passed-through mask). An absent mask has a null data pointer.
struct LayerOutput {
  ConstTensorView y{};
  ConstTensorView mask{};
};

class Layer {
 public:
  /// `class_name` as Keras spells it ("GroupNormalization"); an empty `name` becomes a unique default
  /// (the class name in snake case plus a counter, as Keras names layers).
  Layer(std::string class_name, std::string name);
  virtual ~Layer();
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  const std::string& class_name() const noexcept { return class_name_; }
  const std::string& name() const noexcept { return name_; }
  bool trainable() const noexcept { return trainable_; }
  void set_trainable(bool trainable) noexcept { trainable_ = trainable; }
  /// The layer's compute dtype (Keras "dtype"): of its inputs and outputs.
  DType dtype() const noexcept { return dtype_; }
  bool built() const noexcept { return built_; }
  /// The input shape build() saw (batch first).
  const Shape& built_shape() const noexcept { return built_shape_; }

  /// Creates the weights for inputs of `input_shape` (batch first); once. Weights are initialized on
  /// `stream` (which is synchronized: build is a setup step, not a hot-path call). kErrorInvalidValue if
  /// already built.
  [[nodiscard]] Status build(const Shape& input_shape, cudaStream_t stream = nullptr);

  /// The output shape for inputs of `input_shape`.
  [[nodiscard]] virtual Status compute_output_shape(const Shape& input_shape, Shape* out) const;

  /// Whether the layer accepts a mask (Keras's supports_masking).
  virtual bool supports_masking() const noexcept { return false; }

  /// Whether the output carries a mask, given whether the input does (Keras's compute_mask, at the level
  /// of shapes: the mask itself is computed on the device by the call). Default: a layer that supports
  /// masking passes the mask through; one that does not never produces one.
  virtual bool compute_mask(bool input_has_mask) const noexcept {
    return supports_masking() && input_has_mask;
  }

  /// Every check call() makes before it enqueues anything, for an input of `shape` and `dtype` with or
  /// without a mask in `phase`: the dtype (floating: cast to dtype() by the call), the Keras 2 mask rule, and
  /// once built the input shape against the built one and the layer's phase-dependent checks (check_phase).
  /// Lets a model check a whole chain of layers before running any of them.
  [[nodiscard]] Status check_call(const Shape& shape, DType dtype, bool has_mask,
                                  Phase phase = Phase::kInference) const;

  /// Checks host bytes about to be written into weight `weight_name` (loading weights, and a weight's
  /// initial values in add_weight), beyond dtype and shape: e.g. a counter must not be negative. Default:
  /// anything goes.
  [[nodiscard]] virtual Status check_weight_data(const std::string& weight_name, const void* data,
                                                 std::size_t bytes) const {
    (void)weight_name;
    (void)data;
    (void)bytes;
    return Status::kSuccess;
  }

  /// Converts a weight saved in another layout than this layer's (another Keras version's dtype or shape)
  /// for Sequential::set_weights / load_weights, which call it only when the dtype or shape differs from
  /// the weight's. *converted = false: not a layout the layer converts (set_weights reports the mismatch);
  /// true: *bytes holds the weight in its own dtype and shape. An error: the layout is one the layer
  /// converts but the value cannot be (named in the message). Default: converts nothing.
  [[nodiscard]] virtual Status convert_weight_data(const std::string& weight_name, DType dtype,
                                                   const Shape& shape, const std::vector<std::uint8_t>& data,
                                                   std::vector<std::uint8_t>* bytes, bool* converted) const {
    (void)weight_name;
    (void)dtype;
    (void)shape;
    (void)data;
    (void)bytes;
    *converted = false;
    return Status::kSuccess;
  }

  /// Enqueues the layer on ctx.stream (see the file comment). x must be contiguous and floating: another
  /// dtype than dtype() is first cast to it (Keras's autocast) into a layer-owned buffer, one more read
  /// and write of x; mask (optional) uint8 [batch, steps].
  [[nodiscard]] Status call(const CallContext& ctx, const ConstTensorView& x, const ConstTensorView& mask,
                            LayerOutput* out);

  /// Device bytes held by the buffers calls keep between calls (outputs, workspaces, the autocast
  /// buffer); weights and the layer's own state are not counted.
  std::size_t buffer_bytes() const noexcept;
  /// Frees the buffers buffer_bytes() counts, each on the stream of the last call that used it (so after
  /// that call's work); weights and state stay. The views the last call returned become invalid, as does a
  /// CUDA graph captured from an earlier call (it holds the freed buffers: never replay it), and the next
  /// call allocates its buffers again: it is not a warmed-up call (do not capture it in a CUDA graph).
  /// For an engine that ran the layer at a larger batch, or with inputs of another dtype (the autocast
  /// buffer stays allocated while calls pass the layer's own dtype), and wants the memory back.
  void release_buffers() noexcept;

  const std::vector<std::unique_ptr<Weight>>& weights() const noexcept { return weights_; }
  std::vector<const Weight*> trainable_weights() const;
  std::vector<const Weight*> non_trainable_weights() const;
  /// The weight called `name`, or null.
  Weight* find_weight(const std::string& name) noexcept;
  const Weight* find_weight(const std::string& name) const noexcept;
  /// Elements over all weights (Keras's count_params).
  std::int64_t count_params() const noexcept;
  /// Registered update ops.
  std::size_t update_count() const noexcept { return updates_.size(); }

  /// {"name", "trainable", "dtype"} plus the layer's own keys (Keras's names).
  Json get_config() const;

  /// Brings the weights up to date with device state kept elsewhere (DecayingDropout's counter lives in
  /// its dropout state): called before weights are read out (saved). Enqueued on `stream`; default: none.
  [[nodiscard]] virtual Status sync_weights(cudaStream_t stream) {
    (void)stream;
    return Status::kSuccess;
  }
  /// The reverse: called after weights were written from outside (loaded), so derived device state
  /// follows them. May synchronize `stream` (a setup step); default: none.
  [[nodiscard]] virtual Status weights_loaded(cudaStream_t stream) {
    (void)stream;
    return Status::kSuccess;
  }

 protected:
  /// Creates weights (add_weight) and update ops (add_update). Called by build(): once, or again after a
  /// model's build failed at a later layer and unbuilt this one (weights and update ops dropped), so it
  /// must set every shape-dependent member afresh.
  [[nodiscard]] virtual Status do_build(const Shape& input_shape, cudaStream_t stream);
  /// Whether inputs of `shape` can follow a build with `built`. Default: same rank and the same extent on
  /// every axis but the batch axis (0).
  [[nodiscard]] virtual Status check_input_shape(const Shape& built, const Shape& shape) const;
  /// Whether an input of `shape` may come with a [batch, steps] mask (called by check_call for a layer
  /// that supports masking, built or not). Default: yes.
  [[nodiscard]] virtual Status check_mask(const Shape& shape) const {
    (void)shape;
    return Status::kSuccess;
  }
  /// Checks that hold only in some phase (called by check_call once built), e.g. a dropout layer's noise
  /// shape against the batch, which matters only in training. Default: none.
  [[nodiscard]] virtual Status check_phase(const Shape& shape, Phase phase) const {
    (void)shape;
    (void)phase;
    return Status::kSuccess;
  }
  /// The call itself (inputs validated, layer built).
  [[nodiscard]] virtual Status do_call(const CallContext& ctx, const ConstTensorView& x,
                                       const ConstTensorView& mask, LayerOutput* out) = 0;
  /// Adds the layer's own config keys.
  virtual void add_config(Json& config) const { (void)config; }

  void set_dtype(DType dtype) noexcept { dtype_ = dtype; }

  /// Creates a weight initialized on `stream` (enqueued; build() synchronizes). Names must be unique.
  [[nodiscard]] Status add_weight(const std::string& name, const Shape& shape, DType dtype,
                                  const Initializer& initializer, bool trainable, cudaStream_t stream,
                                  Weight** out = nullptr);

  using UpdateOp = std::function<Status(const CallContext& ctx)>;
  /// Registers an update op (an iteration counter, a moving average): run after every training-phase
  /// call of the layer while it is trainable.
  void add_update(std::string name, UpdateOp op);
  /// Registers a step of every training-phase call, trainable or not, that changes state the next call
  /// reads (plain Dropout's move to the next random stream). Like the update ops, it runs after do_call,
  /// and in a model after every layer's do_call: a model call that fails part-way runs none of them.
  void add_call_step(std::string name, UpdateOp op);

  /// A layer-owned device buffer for output `slot`: kept while shape and dtype stay the same, otherwise
  /// reallocated from ctx's allocator (the only allocation a call may make). The returned Tensor* stays
  /// valid for the layer's lifetime (asking for other slots never moves it); its memory changes only
  /// when the same slot is asked for with another shape or dtype.
  [[nodiscard]] Status output_buffer(const CallContext& ctx, int slot, const Shape& shape, DType dtype,
                                     Tensor** out);
  /// A workspace in output slot `slot` of at least `needed` bytes: the slot only grows, so a warmed-up call
  /// never reallocates it (a workspace's size can follow the device and the pointers' alignment, not only
  /// the shape), and release_buffers() empties it. *data / *bytes: the slot afterwards (null / 0 while no
  /// call has needed one).
  [[nodiscard]] Status workspace_buffer(const CallContext& ctx, int slot, std::size_t needed, void** data,
                                        std::size_t* bytes);

 private:
  friend class Sequential; // unbuild(): a model's build that fails takes back the layers it built

  /// Undoes a successful build() that no call has used since (weights and update ops dropped, built() false),
  /// so the layer can be built again for another shape. do_build sets all of a layer's shape-dependent
  /// state afresh, so nothing else needs resetting.
  void unbuild() noexcept {
    weights_.clear();
    updates_.clear();
    call_steps_.clear();
    built_ = false;
    built_shape_ = Shape{};
    device_ = -1;
  }

  std::string class_name_;
  std::string name_;
  bool trainable_ = true;
  DType dtype_ = DType::kFloat32;
  bool built_ = false;
  Shape built_shape_{};
  int device_ = -1; // current at build
  std::vector<std::unique_ptr<Weight>> weights_;
  struct Update {
    std::string name;
    UpdateOp op;
  };
  std::vector<Update> updates_;
  std::vector<Update> call_steps_; // add_call_step: training phase, trainable or not; before updates_

  /// call() up to and including do_call (checks, the first build, the kernels), without the call steps
  /// and update ops; *out is written on success. A model runs this for every layer, then run_updates.
  [[nodiscard]] Status call_forward(const CallContext& ctx, const ConstTensorView& x,
                                    const ConstTensorView& mask, LayerOutput* out);
  /// The rest of a call: in the training phase, the call steps, then (trainable only) the update ops.
  [[nodiscard]] Status run_updates(const CallContext& ctx);
  std::deque<Tensor> outputs_; // a deque: growing it never moves the buffers handed out earlier
  Tensor autocast_input_;      // x cast to dtype_ when a call passes another floating dtype
};

namespace detail {
/// Keras's default name for an object of `class_name`: snake case, then "_1", "_2", ... for later ones
/// (one counter per class in the process; thread-safe).
std::string default_layer_name(const std::string& class_name);
} // namespace detail

/// Makes a layer from its config ({"name", "trainable", "dtype", ...}); the factory of a layer class.
using LayerFactory = std::function<Status(const Json& config, std::unique_ptr<Layer>* out)>;

namespace detail {
/// Registers `factory` unless `class_name` already has one, in one step under the registry's lock (the
/// built-in classes: a user's replacement registered first, even from another thread, is kept).
void register_layer_class_if_absent(const std::string& class_name, LayerFactory factory);
} // namespace detail

/// A config key that layer_from_json / Sequential::from_json read past without using.
struct UnusedConfigKey {
  std::string path;  ///< where it is: `config.layers[2].config.epsilom`, `config.dtype`, ...
  std::string layer; ///< the layer's name ("" for the model's own keys)
  std::string key;
  /// false: a key neither culayers nor Keras knows for this class (a misspelling, or a key of a newer
  /// Keras). true: a Keras key culayers does not apply, set to other than its default (a regularizer or a
  /// constraint: they act in training steps, which the layers here do not have).
  bool keras_key = false;
};

/// How layer_from_json and Sequential::from_json treat config keys they do not use. By default an unknown
/// key is passed over, as a reader of files from newer Keras versions must; Keras itself refuses unknown
/// keyword arguments, so a misspelt key ("epsilom") would otherwise change nothing, silently.
struct ConfigReadOptions {
  /// Refuse a key neither culayers nor Keras knows for its place (kErrorParse naming its path) before
  /// anything is built. Checked: the model document, its config and "build_config", the layer entries, the
  /// layer and InputLayer configs, and the initializer and dtype-policy objects in them; not the values of
  /// keys culayers passes over ("compile_config", a regularizer's config).
  bool reject_unknown_keys = false;
  /// When not null: cleared, then receives every unused key in reading order (the model's keys, its
  /// config's, its build_config's, then each layer entry's and its config's, nested initializer and
  /// dtype-policy objects after the key holding them; each object's keys sorted, as JSON objects are read),
  /// also when the read fails (up to the failure).
  std::vector<UnusedConfigKey>* unused_keys = nullptr;
};

/// Adds (or replaces) a layer class in the process-wide registry.
[[nodiscard]] Status register_layer_class(const std::string& class_name, LayerFactory factory);
/// Whether `class_name` is registered.
bool is_layer_class_registered(const std::string& class_name);
/// {"class_name": ..., "config": ...} -> a new layer (not built); the built-in classes are registered on
/// first use (register_builtin_layers() in culayers/nn/sequential.hpp). kErrorUnknownClass names the class;
/// kErrorParse for a malformed document.
[[nodiscard]] Status layer_from_json(const Json& json, std::unique_ptr<Layer>* out);
/// As above, with `options` for the keys it does not use. A key is used when the class reads it (a
/// built-in class: its documented keys; a registered class: the keys of the new layer's get_config()), or
/// when it is a Keras key that does not change the computation ("fused", "renorm_momentum", regularizers
/// and constraints -- these last reported as keras_key when set). Outer keys Keras writes beside
/// "class_name" and "config" ("module", "registered_name", "build_config") are known too.
[[nodiscard]] Status layer_from_json(const Json& json, const ConfigReadOptions& options,
                                     std::unique_ptr<Layer>* out);
/// The layer as {"class_name": ..., "config": get_config()}.
Json layer_to_json(const Layer& layer);

/// Reads the base keys ("name", "trainable", "dtype") of a layer config; absent keys leave the outputs
/// unchanged (for factories). kErrorParse for a key of the wrong type or an unknown dtype.
[[nodiscard]] Status read_base_config(const Json& config, std::string* name, bool* trainable, DType* dtype);

} // namespace nn
CULAYERS_NAMESPACE_END

#endif // CULAYERS_NN_LAYER_HPP_
