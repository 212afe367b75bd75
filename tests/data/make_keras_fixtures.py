#!/usr/bin/env python3
"""Writes the Keras fixtures of tests/nn/keras_fixtures_test.cpp: models built and run by Keras itself.

  make_keras_fixtures.py keras3     Keras 3 (KERAS_BACKEND picks the backend; jax when unset)
  make_keras_fixtures.py tf_keras2  tf.keras 2 (the tf_keras package on TensorFlow)

An optional second argument names the output directory (default: the framework's folder beside this
script). For each case NAME it writes:
  NAME.json                 model.to_json(), as Keras writes it
  NAME.weights.safetensors  every weight as "<layer name>/<weight name>" (culayers's names: the variable's
                            own name without any scope or ":0"), float32
  NAME.io.safetensors       "x" (the input, values exact in the input dtype named by the metadata key
                            "input_dtype"), "y_inference" (model(x, training=False)) and, for cases run
                            in training, "y_training" (model(x, training=True), one call) and the moving
                            statistics after that call as "after/<layer name>/<weight name>"
and cases.json (each case's name, output shape, whether it has a training call, whether its batch
statistics are masked, whether its training output is random (a dropout that drops; not written then),
the batch norms whose Keras moving variance took the unbiased variance, the paths of the Keras keys
culayers reports as not applied, and each DecayingDropout's keep rate for the next training call) and
MANIFEST.txt (the versions used).

Keras and its backend run on the CPU; e.g. in virtual environments:
  python3 -m venv /tmp/k3 && /tmp/k3/bin/pip install keras jax jaxlib safetensors numpy ml_dtypes
  KERAS_BACKEND=jax /tmp/k3/bin/python tests/data/make_keras_fixtures.py keras3
  python3 -m venv /tmp/k2 && /tmp/k2/bin/pip install tensorflow-cpu tf-keras safetensors
  /tmp/k2/bin/python tests/data/make_keras_fixtures.py tf_keras2
Inputs and weights come from a fixed NumPy seed, so a rerun with the same versions writes the same values.
"""
import json
import os
import sys

import numpy as np

FRAMEWORK = sys.argv[1] if len(sys.argv) > 1 else ""
if FRAMEWORK == "keras3":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
elif FRAMEWORK == "tf_keras2":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tf_keras as keras
else:
    sys.exit("usage: make_keras_fixtures.py keras3|tf_keras2 [OUTPUT_DIR]")
import ml_dtypes  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

RNG = np.random.default_rng(20261128)
L = keras.layers


def padded_batch(batch, steps, features, lengths):
    """N(0, 1) + 0.5 values; the steps past each row's length are exactly 0 (Masking's mask_value)."""
    x = (RNG.standard_normal((batch, steps, features)) + 0.5).astype(np.float32)
    for b, n in enumerate(lengths):
        x[b, n:, :] = 0.0
    return x


def decaying_dropout_class():
    """The tutorial's DecayingDropout (its keys, its float32 (1,) "iterations" counter, its schedule
    keep = initial_keep_rate * decay_rate ** ((iterations + 1) / decay_interval), the counter advanced by
    each training call), written for this framework's API: Keras writes its config as a custom layer's."""
    if FRAMEWORK == "keras3":
        register, ops, K = keras.saving.register_keras_serializable, keras.ops, None
    else:
        import tensorflow as tf

        register, ops, K = keras.utils.register_keras_serializable, None, tf

    @register(package="Custom")
    class DecayingDropout(L.Layer):
        def __init__(self, initial_keep_rate=1.0, decay_interval=10000, decay_rate=0.977, noise_shape=None,
                     seed=None, **kwargs):
            super().__init__(**kwargs)
            self.supports_masking = True
            self.initial_keep_rate = initial_keep_rate
            self.decay_interval = decay_interval
            self.decay_rate = min(1.0, max(0.0, decay_rate))
            self.noise_shape = noise_shape
            self.seed = seed

        def build(self, input_shape):
            self.iterations = self.add_weight(name="iterations", shape=(1,), dtype="float32", initializer="zeros",
                                              trainable=False)
            super().build(input_shape)

        def call(self, inputs, training=None):
            if not training:
                return inputs
            t = self.iterations + 1.0
            keep = self.initial_keep_rate * self.decay_rate ** (t / float(self.decay_interval))
            if ops is not None:
                noise = keras.random.uniform(ops.shape(inputs), seed=self.seed)
                outputs = ops.where(noise < keep, inputs / keep, 0.0)
            else:
                noise = K.random.uniform(K.shape(inputs), seed=self.seed)
                outputs = K.where(noise < keep, inputs / keep, 0.0)
            self.iterations.assign(self.iterations + 1.0)
            return outputs

        def get_config(self):
            config = {"initial_keep_rate": self.initial_keep_rate, "decay_interval": self.decay_interval,
                      "decay_rate": self.decay_rate, "noise_shape": self.noise_shape, "seed": self.seed}
            return dict(list(super().get_config().items()) + list(config.items()))

    return DecayingDropout


def randomize_weights(model):
    """Every weight drawn at random (gamma around 1, variances positive, a counter a whole number), so no
    default hides an error."""
    for layer in model.layers:
        values = []
        for v in layer.weights:
            shape = tuple(v.shape)
            if weight_name(v) == "iterations":
                values.append(np.full(shape, 41.0, dtype=np.float32))
            elif weight_name(v) in ("gamma", "moving_variance"):
                values.append(RNG.uniform(0.5, 1.5, shape).astype(np.float32))
            else:
                values.append(RNG.uniform(-0.5, 0.5, shape).astype(np.float32))
        if values:
            layer.set_weights(values)


def weight_name(v):
    """The variable's own name: Keras 3 "gamma"; tf.keras 2 "batch_normalization/gamma:0"."""
    return v.name.split("/")[-1].split(":")[0]


def weights_of(model, prefix=""):
    return {f"{prefix}{layer.name}/{weight_name(v)}": np.asarray(v.numpy(), dtype=np.float32)
            for layer in model.layers for v in layer.weights}


def unapplied_keys(config):
    """The paths of the keys culayers reports as Keras keys it does not apply (docs/semantics.md 6.3) in a
    model's JSON: regularizers and constraints that are set, and a frozen model's "trainable"."""
    paths = []
    if config["config"].get("trainable") is False:
        paths.append("config.trainable")
    for i, entry in enumerate(config["config"]["layers"]):
        for key, value in sorted(entry["config"].items()):
            if value is not None and (key.endswith("_regularizer") or key.endswith("_constraint")):
                paths.append("config.layers[%d].config.%s" % (i, key))
    return paths


def write_case(out_dir, cases, name, model, x, training, masked=False, input_dtype="float32",
               random_training=False):
    randomize_weights(model)
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        f.write(model.to_json())
    save_file(weights_of(model), os.path.join(out_dir, name + ".weights.safetensors"))
    y = np.asarray(model(x, training=False), dtype=np.float32)
    io = {"x": x, "y_inference": y}
    if training:
        y_training = np.asarray(model(x, training=True), dtype=np.float32)
        if not random_training:  # a dropout that drops draws other masks than culayers's
            io["y_training"] = y_training
        for key, value in weights_of(model, "after/").items():
            if key.endswith(("/moving_mean", "/moving_variance", "/iterations")):
                io[key] = value
    save_file(io, os.path.join(out_dir, name + ".io.safetensors"), metadata={"input_dtype": input_dtype})
    # tf.keras 2's fused batch norm (4D input, channels on axis 1 or 3) feeds its moving variance the
    # unbiased batch variance, as culayers does; every other Keras batch norm the biased one.
    unbiased = [layer.name for layer in model.layers if getattr(layer, "fused", False)]
    # The tutorial's schedule after the training call: the keep rate the next call would use, from the
    # layer's own keys and counter, in double.
    keep_rates = {layer.name: layer.initial_keep_rate * layer.decay_rate ** (
        (float(np.asarray(layer.iterations.numpy())[0]) + 1.0) / float(layer.decay_interval))
        for layer in model.layers if hasattr(layer, "initial_keep_rate")} if training else {}
    cases.append({"name": name, "output_shape": list(y.shape), "training": training, "masked": masked,
                  "random_training": random_training, "unbiased_moving_variance": unbiased,
                  "keras_keys_not_applied": unapplied_keys(json.loads(model.to_json())),
                  "decaying_dropout_keep_rates": keep_rates})


def main():
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                FRAMEWORK)
    os.makedirs(out_dir, exist_ok=True)
    cases = []

    # A padded sequence batch: Masking's mask reaches BatchNormalization (moments over valid steps in
    # training) and GlobalAveragePooling1D (the mean over valid steps). Dropout is the identity in
    # inference; at rate 0 it is the identity in training too, so the training output is deterministic.
    x = padded_batch(4, 7, 6, [7, 3, 5, 1])
    model = keras.Sequential([keras.Input((7, 6)), L.Masking(0.0), L.Dropout(0.0),
                              L.BatchNormalization(momentum=0.8, epsilon=1e-3), L.GlobalAveragePooling1D()],
                             name="masked_pooling")
    write_case(out_dir, cases, "masked_pooling", model, x, training=True, masked=True)

    # Masked batch statistics with the per-step output kept (every position normalized).
    x = padded_batch(3, 9, 8, [9, 4, 6])
    model = keras.Sequential([keras.Input((9, 8)), L.Masking(0.0), L.BatchNormalization(momentum=0.75)],
                             name="masked_batch_norm")
    write_case(out_dir, cases, "masked_batch_norm", model, x, training=True, masked=True)

    # Images, channels last: group norms of 4 channels per group and of one channel per group (groups=-1,
    # no center), then a batch norm on the last axis.
    x = (RNG.standard_normal((2, 5, 6, 16)) * 2.0 + 1.0).astype(np.float32)
    model = keras.Sequential([keras.Input((5, 6, 16)), L.GroupNormalization(groups=4, epsilon=1e-3),
                              L.GroupNormalization(groups=-1, center=False, epsilon=1e-5),
                              L.BatchNormalization(axis=-1, momentum=0.9)], name="images_channels_last")
    write_case(out_dir, cases, "images_channels_last", model, x, training=True)

    # Images, channels first (axis=1).
    x = (RNG.standard_normal((3, 12, 4, 5)) - 0.5).astype(np.float32)
    model = keras.Sequential([keras.Input((12, 4, 5)), L.GroupNormalization(groups=3, axis=1),
                              L.BatchNormalization(axis=1, momentum=0.5, scale=False)],
                             name="images_channels_first")
    write_case(out_dir, cases, "images_channels_first", model, x, training=True)

    # A batch norm on a middle axis (the channels of (B, H, C, W) on axis 2).
    x = (RNG.standard_normal((2, 3, 10, 7)) * 1.5).astype(np.float32)
    model = keras.Sequential([keras.Input((3, 10, 7)), L.BatchNormalization(axis=2, momentum=0.6)],
                             name="batch_norm_middle_axis")
    write_case(out_dir, cases, "batch_norm_middle_axis", model, x, training=True)

    # A sequence without padding: group norm over (steps, channels of a group), then the mean over steps.
    x = (RNG.standard_normal((5, 11, 12)) * 0.7).astype(np.float32)
    model = keras.Sequential([keras.Input((11, 12)), L.GroupNormalization(groups=6), L.Dropout(0.5),
                              L.GlobalAveragePooling1D()], name="sequence_group_norm")
    write_case(out_dir, cases, "sequence_group_norm", model, x, training=False)

    # Features without steps (B, C): a group norm with no spatial axis, then a batch norm. The initializers
    # are Keras objects with configs (read, then overwritten by the weights), and the regularizers and
    # constraints set here are Keras keys culayers does not apply: listed, not refused.
    x = (RNG.standard_normal((6, 12)) * 3.0).astype(np.float32)
    model = keras.Sequential([keras.Input((12,)),
                              L.GroupNormalization(groups=4, gamma_initializer=keras.initializers.Constant(1.5),
                                                   beta_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=3),
                                                   gamma_regularizer=keras.regularizers.L2(0.01)),
                              L.BatchNormalization(momentum=0.7, gamma_initializer="glorot_uniform",
                                                   moving_variance_initializer=keras.initializers.RandomUniform(
                                                       0.5, 1.5, seed=7),
                                                   beta_constraint=keras.constraints.NonNeg())],
                             name="features_regularized")
    write_case(out_dir, cases, "features_regularized", model, x, training=True)

    # A frozen model (trainable = False): a training call normalizes with the moving statistics and
    # updates nothing, in Keras (since tf.keras 2.0) as in culayers.
    x = (RNG.standard_normal((4, 5, 8)) + 2.0).astype(np.float32)
    model = keras.Sequential([keras.Input((5, 8)), L.BatchNormalization(momentum=0.5)], name="frozen")
    model.trainable = False
    write_case(out_dir, cases, "frozen", model, x, training=True)

    # The tutorial's DecayingDropout as a custom layer: its config, its float32 (1,) counter (41 before the
    # training call, 42 after), the identity in inference. Its training output is random (not compared).
    decaying_dropout = decaying_dropout_class()
    x = padded_batch(2, 6, 4, [6, 2])
    model = keras.Sequential([keras.Input((6, 4)), L.Masking(0.0),
                              decaying_dropout(initial_keep_rate=0.9, decay_interval=100, decay_rate=0.5,
                                               noise_shape=None, seed=5)], name="decaying_dropout")
    write_case(out_dir, cases, "decaying_dropout", model, x, training=True, masked=True, random_training=True)

    # Mixed precision: the layers compute in the half type (variables stay float32), each layer's output
    # rounded to it; x is drawn exact in the half type.
    for policy, half, input_dtype in (("mixed_float16", np.float16, "float16"),
                                      ("mixed_bfloat16", ml_dtypes.bfloat16, "bfloat16")):
        x = (RNG.standard_normal((3, 6, 16)) * 2.0 + 1.0).astype(half).astype(np.float32)
        model = keras.Sequential([keras.Input((6, 16)), L.GroupNormalization(groups=4, dtype=policy),
                                  L.BatchNormalization(momentum=0.9, dtype=policy)], name=policy)
        write_case(out_dir, cases, policy, model, x, training=True, input_dtype=input_dtype)

    # Keras's mixed-precision recipe: half-precision layers, the last layer in float32. Each layer casts its
    # input to its compute dtype (autocast): the float32 input (not exact in float16) to float16 at the
    # first layer, the float16 activations back to float32 at the last.
    x = (RNG.standard_normal((3, 6, 16)) * 2.0 + 1.0).astype(np.float32)
    model = keras.Sequential([keras.Input((6, 16)), L.GroupNormalization(groups=4, dtype="mixed_float16"),
                              L.BatchNormalization(momentum=0.9, dtype="mixed_float16"),
                              L.GroupNormalization(groups=2, dtype="float32")], name="mixed_float32_last")
    write_case(out_dir, cases, "mixed_float32_last", model, x, training=True, input_dtype="float32")

    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
        f.write("\n")
    if FRAMEWORK == "keras3":
        import jax

        versions = "keras %s (backend %s), jax %s" % (keras.__version__, keras.backend.backend(), jax.__version__)
    else:
        import tensorflow as tf

        versions = "tf_keras %s, tensorflow %s" % (keras.__version__, tf.__version__)
    with open(os.path.join(out_dir, "MANIFEST.txt"), "w") as f:
        f.write("Written by make_keras_fixtures.py %s with %s, numpy %s.\n" % (FRAMEWORK, versions, np.__version__))
    print("wrote", ", ".join(c["name"] for c in cases), "into", out_dir)


if __name__ == "__main__":
    main()
