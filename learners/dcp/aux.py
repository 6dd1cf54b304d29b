"""Auxiliary classifiers of DCP: one small head per stage boundary, trained on frozen features.

A head is ``BatchNorm -> ReLU -> GlobalAveragePooling -> Dense(num_classes)``, as in the DCP
paper. Its BatchNorm starts from the statistics of the features it reads and then runs in
inference mode, so the head behaves the same when it trains and when it judges a pruned
network (a BN in training mode would re-normalise away part of what pruning changed).
Heads are trained on features cached from the frozen baseline, which makes training them
cost no backbone passes beyond one.

Example:
    >>> import numpy as np
    >>> head = build_head((4, 4, 8), 3, "aux1")
    >>> head.output_shape, dense_of(head).name
    ((None, 3), 'aux1_fc')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pocketflow_tf import errors
from pocketflow_tf.compat import keras, tf

_POOL = {
    2: keras.layers.GlobalAveragePooling1D,
    3: keras.layers.GlobalAveragePooling2D,
    4: keras.layers.GlobalAveragePooling3D,
}


def build_head(feature_shape: Sequence[int], num_classes: int, name: str) -> keras.Model:
    """Builds an auxiliary classifier for features of shape ``feature_shape`` (no batch).

    Args:
        feature_shape: Shape of one sample's features, channels last.
        num_classes: Number of logits.
        name: Prefix of the head's layer names.

    Raises:
        InvalidArgumentError: Features of rank > 4 (no pooling layer for them).

    Example:
        >>> build_head((16,), 10, "h").output_shape
        (None, 10)
    """
    feature_shape = tuple(int(d) for d in feature_shape)
    if len(feature_shape) > 4:
        raise errors.InvalidArgumentError(
            "feature_shape", feature_shape, "features of rank 1 to 4 (channels last)"
        )
    inp = keras.Input(feature_shape, name=f"{name}_in")
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(inp)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    if len(feature_shape) > 1:
        x = _POOL[len(feature_shape)](name=f"{name}_pool")(x)
    out = keras.layers.Dense(num_classes, name=f"{name}_fc")(x)
    return keras.Model(inp, out, name=name)


def dense_of(head: keras.Model) -> keras.layers.Dense:
    """The head's classifier layer (its kernel rows are the boundary's channels).

    Example:
        >>> dense_of(build_head((8,), 2, "h")).kernel.shape.as_list()
        [8, 2]
    """
    return head.layers[-1]


def train_head(
    head: keras.Model,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int = 0,
) -> float:
    """Fits ``head`` to ``(features, labels)`` with Adam; returns its accuracy on them.

    The BatchNorm statistics are set from ``features`` first and stay fixed (inference
    mode); gamma, beta and the classifier are trained.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, 64)
        >>> f = rng.normal(size=(64, 4)).astype("float32") + y[:, None]
        >>> h = build_head((4,), 2, "h")
        >>> train_head(h, f, y, steps=100, learning_rate=0.05, batch_size=32) > 0.7
        True
    """
    bn = head.layers[1]
    axes = tuple(range(features.ndim - 1))
    gamma, beta, _, _ = bn.get_weights()
    mean = features.mean(axis=axes).astype(np.float32)
    var = features.var(axis=axes).astype(np.float32)
    bn.set_weights([gamma, beta, mean, var])
    n = len(features)
    batch_size = min(batch_size, n)
    if steps > 0:
        opt = keras.optimizers.Adam(learning_rate)
        variables = head.trainable_variables
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function(autograph=False)
        def step(f, y):
            with tf.GradientTape() as tape:
                loss = ce(y, head(f, training=False))
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss

        rng = np.random.default_rng(seed)
        order = rng.permutation(n)
        at = 0
        for _ in range(steps):
            if at + batch_size > n:
                order, at = rng.permutation(n), 0
            idx = order[at : at + batch_size]
            at += batch_size
            step(tf.constant(features[idx]), tf.constant(labels[idx]))
    logits = np.concatenate(
        [head(features[i : i + 256], training=False).numpy() for i in range(0, n, 256)]
    )
    return float(np.mean(np.argmax(logits, axis=-1) == labels))
