"""Shared fixtures: seeded tiny models and data, and quieter TensorFlow logs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pocketflow_tf.compat import keras  # noqa: E402  (selects tf-keras before TF loads)


@pytest.fixture
def tiny_data():
    """A separable 4-class problem on 8x8x1 images (class = brightest quadrant)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 256)
    x = rng.random((256, 8, 8, 1), dtype=np.float32) * 0.3
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, r * 4 : r * 4 + 4, col * 4 : col * 4 + 4, 0] += 0.7
    return x, y.astype(np.int64)


@pytest.fixture
def tiny_model():
    """Conv-BN-ReLU -> 4x4 max-pool -> Dense(4) logits, seeded."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(4)(x)  # one value per quadrant: the task is learnable
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))
