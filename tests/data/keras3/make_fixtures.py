#!/usr/bin/env python3
"""Writes the Keras 3 fixtures of tests/nn/keras_fixtures_test.cpp: models built and run by Keras itself.

For each case NAME it writes, into the directory given (default: this script's):
  NAME.json                 model.to_json(), as Keras writes it
  NAME.weights.safetensors  every weight as "<layer name>/<weight name>" (the culayers naming: Keras 3's
                            variable.path without the model's prefix), float32
  NAME.io.safetensors       "x" (the input), "y_inference" (model(x, training=False)) and, for cases run
                            in training, "y_training" (model(x, training=True), one call) and the moving
                            statistics after that call as "after/<layer name>/<weight name>"

Run it where Keras 3 is installed (the CPU is enough), e.g. in a virtual environment:
  python3 -m venv /tmp/kvenv && /tmp/kvenv/bin/pip install keras jax jaxlib safetensors numpy
  KERAS_BACKEND=jax /tmp/kvenv/bin/python tests/data/keras3/make_fixtures.py
The committed files were written with the versions printed into MANIFEST.txt. Inputs and weights come
from a fixed NumPy seed, so a rerun with the same versions writes the same values.
"""
import json
import os
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

RNG = np.random.default_rng(20261128)


def padded_batch(batch, steps, features, lengths):
    """N(0, 1) + 0.5 values; the steps past each row's length are exactly 0 (Masking's mask_value)."""
    x = (RNG.standard_normal((batch, steps, features)) + 0.5).astype(np.float32)
    for b, n in enumerate(lengths):
        x[b, n:, :] = 0.0
    return x


def randomize_weights(model):
    """Every weight drawn at random (gamma around 1, variances positive), so no default hides an error."""
    for layer in model.layers:
        values = []
        for v in layer.weights:
            shape = tuple(v.shape)
            if v.name in ("gamma", "moving_variance"):
                values.append(RNG.uniform(0.5, 1.5, shape).astype(np.float32))
            else:
                values.append(RNG.uniform(-0.5, 0.5, shape).astype(np.float32))
        if values:
            layer.set_weights(values)


def weights_of(model, prefix=""):
    return {f"{prefix}{layer.name}/{v.name}": np.asarray(v.numpy(), dtype=np.float32)
            for layer in model.layers for v in layer.weights}


def write_case(out_dir, name, model, x, training, input_dtype="float32"):
    randomize_weights(model)
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        f.write(model.to_json())
    save_file(weights_of(model), os.path.join(out_dir, name + ".weights.safetensors"))
    io = {"x": x, "y_inference": np.asarray(model(x, training=False), dtype=np.float32)}
    if training:
        io["y_training"] = np.asarray(model(x, training=True), dtype=np.float32)
        for key, value in weights_of(model, "after/").items():
            if key.endswith("/moving_mean") or key.endswith("/moving_variance"):
                io[key] = value
    # Half outputs are exact in float32; "input_dtype" tells the test which type to feed x in (the first
    # layer's compute dtype: Keras casts the float32 input to it, x holds values exact in it).
    save_file(io, os.path.join(out_dir, name + ".io.safetensors"), metadata={"input_dtype": input_dtype})
    json.loads(model.to_json())  # written text is JSON
    return name


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    layers = keras.layers
    written = []

    # A padded sequence batch: Masking's mask reaches BatchNormalization (moments over valid steps in
    # training) and GlobalAveragePooling1D (the mean over valid steps). Dropout is the identity in
    # inference; the training call has it at rate 0 so its output is deterministic.
    x = padded_batch(4, 7, 6, [7, 3, 5, 1])
    model = keras.Sequential([keras.Input((7, 6)), layers.Masking(0.0), layers.Dropout(0.0),
                              layers.BatchNormalization(momentum=0.8, epsilon=1e-3),
                              layers.GlobalAveragePooling1D()], name="masked_pooling")
    written.append(write_case(out_dir, "masked_pooling", model, x, training=True))

    # Masked batch statistics with the per-step output kept (every position normalized).
    x = padded_batch(3, 9, 8, [9, 4, 6])
    model = keras.Sequential([keras.Input((9, 8)), layers.Masking(0.0),
                              layers.BatchNormalization(momentum=0.75, epsilon=1e-3)], name="masked_batch_norm")
    written.append(write_case(out_dir, "masked_batch_norm", model, x, training=True))

    # Images, channels last: group norms of 4 channels per group and of one channel per group (groups=-1,
    # no center), then a batch norm on the last axis.
    x = (RNG.standard_normal((2, 5, 6, 16)) * 2.0 + 1.0).astype(np.float32)
    model = keras.Sequential([keras.Input((5, 6, 16)), layers.GroupNormalization(groups=4, epsilon=1e-3),
                              layers.GroupNormalization(groups=-1, center=False, epsilon=1e-5),
                              layers.BatchNormalization(axis=-1, momentum=0.9)], name="images_channels_last")
    written.append(write_case(out_dir, "images_channels_last", model, x, training=True))

    # Images, channels first (axis=1).
    x = (RNG.standard_normal((3, 12, 4, 5)) - 0.5).astype(np.float32)
    model = keras.Sequential([keras.Input((12, 4, 5)), layers.GroupNormalization(groups=3, axis=1),
                              layers.BatchNormalization(axis=1, momentum=0.5, scale=False)],
                             name="images_channels_first")
    written.append(write_case(out_dir, "images_channels_first", model, x, training=True))

    # A sequence without padding: group norm over (steps, channels of a group), then a masked-free mean.
    x = (RNG.standard_normal((5, 11, 12)) * 0.7).astype(np.float32)
    model = keras.Sequential([keras.Input((11, 12)), layers.GroupNormalization(groups=6),
                              layers.Dropout(0.5), layers.GlobalAveragePooling1D()], name="sequence_group_norm")
    written.append(write_case(out_dir, "sequence_group_norm", model, x, training=False))

    # Mixed precision: the layers compute in the half type (variables stay float32), each layer's output
    # rounded to it; x is drawn exact in the half type.
    import ml_dtypes

    for policy, half, name in (("mixed_float16", np.float16, "mixed_float16"),
                               ("mixed_bfloat16", ml_dtypes.bfloat16, "mixed_bfloat16")):
        x = (RNG.standard_normal((3, 6, 16)) * 2.0 + 1.0).astype(half).astype(np.float32)
        model = keras.Sequential([keras.Input((6, 16)), layers.GroupNormalization(groups=4, dtype=policy),
                                  layers.BatchNormalization(momentum=0.9, dtype=policy)], name=name)
        written.append(write_case(out_dir, name, model, x, training=True,
                                  input_dtype="float16" if half is np.float16 else "bfloat16"))

    import jax  # the backend these were computed with

    with open(os.path.join(out_dir, "MANIFEST.txt"), "w") as f:
        f.write("Written by make_fixtures.py with keras %s (backend %s), jax %s, numpy %s.\n"
                % (keras.__version__, keras.backend.backend(), jax.__version__, np.__version__))
        f.write("Cases: %s\n" % ", ".join(written))
    print("wrote", ", ".join(written), "into", out_dir)


if __name__ == "__main__":
    main()
