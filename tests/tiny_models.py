"""Tiny seeded models and data shared by several test modules (defined once, here)."""

import numpy as np

from pocketflow_tf import training
from pocketflow_tf.compat import keras

L = keras.layers


def quadrant_data(n=256, seed=0, size=8):
    """4 classes on ``size x size x 1`` images: the class is the brightest quadrant.

    Pixels are noise in ``[0, 0.3)`` with 0.7 added to the quadrant of the class, so that a
    4x4 max-pool (or a small conv net) separates the classes. Seeded: the same arguments
    give the same arrays in every test module.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.random((n, size, size, 1), dtype=np.float32) * 0.3
    half = size // 2
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, r * half : r * half + half, col * half : col * half + half, 0] += 0.7
    return x, y.astype(np.int64)


def _normalized_input(shape, seed):
    """Seeds Keras and returns ``(input, input rescaled to [-1, 1])``, as every recipe has."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape)
    return inp, L.Rescaling(2.0, offset=-1.0, name="normalize")(inp)


def small_resnet(seed=0):
    """Stem -> one residual block -> GAP -> logits on 12x12x1: residual and plain groups."""
    inp, x = _normalized_input((12, 12, 1), seed)
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU()(x)
    y = L.Conv2D(16, 3, padding="same", use_bias=False, name="a")(x)
    y = L.BatchNormalization(name="a_bn")(y)
    y = L.ReLU()(y)
    y = L.Conv2D(16, 3, padding="same", use_bias=False, name="b")(y)
    y = L.BatchNormalization(name="b_bn")(y)
    x = L.ReLU()(L.Add(name="merge")([x, y]))
    x = L.Conv2D(16, 3, strides=2, padding="same", name="c")(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="logits")(x))


def residual_net(seed=0):
    """Rescaling -> conv-BN-ReLU -> residual conv -> GAP -> logits, 8x8x1 in."""
    inp, x = _normalized_input((8, 8, 1), seed)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(x)
    x = L.ReLU()(L.BatchNormalization(name="bn1")(x))
    y = L.Conv2D(8, 3, padding="same", name="c2")(x)
    x = L.ReLU()(L.Add()([x, y]))
    x = L.MaxPooling2D(4)(x)
    x = L.Flatten()(x)
    return keras.Model(inp, L.Dense(4, name="logits")(x))


def two_conv_net(seed=0):
    """conv8-BN-ReLU -> conv16 (bias)-BN-ReLU -> 4x4 max-pool -> Dense(4) "fc", 8x8x1 in.

    Every learner can work on it: ``c1`` has channels to prune, ``c2`` (1,152 weights) is
    large enough to sparsify and is neither the first nor the last layer.
    """
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = L.ReLU()(L.BatchNormalization(name="bn1")(x))
    x = L.Conv2D(16, 3, padding="same", name="c2")(x)
    x = L.ReLU()(L.BatchNormalization(name="bn2")(x))
    x = L.MaxPooling2D(4)(x)
    x = L.Flatten()(x)
    return keras.Model(inp, L.Dense(4, name="fc")(x))


class SubclassedNet(keras.Model):
    """A subclassed model (no graph of layers to read): what graph-based methods refuse."""

    def __init__(self):
        super().__init__()
        self.d = L.Dense(2)

    def call(self, x):
        return self.d(x)


def auto_budget(*, proxy_steps=4, samples=64, latency_rounds=3, final_latency_rounds=3, **more):
    """``compress()`` keywords for a tiny automated run: a final fine-tune of one epoch of
    Adam, ``proxy_steps`` fine-tuning steps per trial, ``samples`` calibration and evaluation
    samples; ``more`` adds or overrides keywords (``max_trials``, ``int8_final``...)."""
    adam = training.TrainConfig(
        epochs=1, batch_size=32, learning_rate=1e-2, optimizer="adam", weight_decay=0.0
    )
    sampled = ("proxy_calib_samples", "final_calib_samples", "eval_samples")
    rounds = {"latency_rounds": latency_rounds, "final_latency_rounds": final_latency_rounds}
    budget = {
        "train_config": adam,
        "proxy_steps": proxy_steps,
        "final_epochs": 1,
        "verbose": 0,
        **rounds,
    }
    return {**budget, **dict.fromkeys(sampled, samples), **more}
